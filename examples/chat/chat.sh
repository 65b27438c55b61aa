#!/bin/sh
# A chat room in a few lines of shell: every line a client sends goes to
# every connected client, tagged with the sender's connection id. No shared
# file, no tail -f: wspipe's control socket does the fan-out.
#
#   wspipe --port 8080 --control /tmp/wspipe-chat.sock \
#          --staticdir examples/chat/public examples/chat/chat.sh
#
# then open http://localhost:8080/ in two browser windows.
ctl() { "${WSPIPE_BIN:-wspipe}" ctl "$@" >/dev/null; }

echo "* you are $WSPIPE_CONNECTION_ID"
ctl broadcast "* $WSPIPE_CONNECTION_ID joined"
while IFS= read -r line; do
  printf '%s: %s\n' "$WSPIPE_CONNECTION_ID" "$line" | ctl broadcast -
done
ctl broadcast "* $WSPIPE_CONNECTION_ID left"
