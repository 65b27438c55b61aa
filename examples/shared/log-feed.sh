#!/bin/sh
# A log feed: one `tail` for every client.
#
#   wspipe --port 8080 --shared --shared-keep --shared-restart \
#          examples/shared/log-feed.sh /var/log/syslog
#
# Each line appended to the file (default /var/log/syslog) reaches every
# connected client. With --shared-keep the one tail runs from the first
# client on, whoever comes and goes; with --shared-restart a tail that dies
# is started again and nobody is disconnected. -F follows the file across
# rotation. What clients send is not wanted: stdin is /dev/null, so wspipe
# sees a child that closed its input and lets their messages go.
exec tail -n 0 -F "${1:-/var/log/syslog}" </dev/null
