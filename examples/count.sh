#!/usr/bin/env bash
# Counts from 1 to 10, one number per message, then exits (close code 1000).
for ((i = 1; i <= 10; i++)); do
  echo "$i"
  sleep 0.5
done
