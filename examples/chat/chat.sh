#!/bin/sh
# A chat room in a few lines of shell: every line a client sends goes to
# every client in the room, tagged with the sender's connection id. Every
# connection on /chat is a member of channel /chat; one `wspipe ctl publish
# /chat -` per connection streams its lines there (no process per line).
#
#   wspipe --port 8080 --control /tmp/wspipe-chat.sock \
#          --staticdir examples/chat/public examples/chat/chat.sh
#
# then open http://localhost:8080/ in two browser windows. The same room
# with no process at all (no ids, no join/leave lines):
#
#   wspipe --port 8080 --pubsub --staticdir examples/chat/public
echo "* you are $WSPIPE_CONNECTION_ID"
{
  echo "* $WSPIPE_CONNECTION_ID joined"
  while IFS= read -r line; do
    printf '%s: %s\n' "$WSPIPE_CONNECTION_ID" "$line"
  done
  echo "* $WSPIPE_CONNECTION_ID left"
} | "${WSPIPE_BIN:-wspipe}" ctl publish /chat - >/dev/null
