#!/usr/bin/env bash
# Reads names, one per message, and greets each one.
while IFS= read -r name; do
  echo "Hello, $name!"
done
