#!/bin/sh
# paced-stream.sh LINES BATCH CLIENTS: the shared child of the scale tests
# (tests/shared_lifecycle.rs, bench/tests/shared_scale.rs). It waits for
# one line (the start), writes "line 1" ... "line LINES" in batches of
# BATCH, and before each next batch waits until every one of CLIENTS
# clients has acknowledged the last (a client message each): the stream
# goes as fast as the slowest client reads, so no client's queue overflows
# and none may lose a line. Then "done".
lines=$1 batch=$2 clients=$3
read -r start
i=1
while [ "$i" -le "$lines" ]; do
  end=$((i + batch - 1))
  while [ "$i" -le "$end" ]; do echo "line $i"; i=$((i+1)); done
  acks=0
  while [ "$acks" -lt "$clients" ] && IFS= read -r ack; do acks=$((acks+1)); done
done
echo done
