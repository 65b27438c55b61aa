#!/usr/bin/env python3
"""A --framed endpoint: message boundaries and types survive, so a text
message may contain newlines and binary messages arrive whole.

    wspipe --port 8080 --framed examples/framed-upper.py

Each message is a type byte (1 text, 2 binary), a 32-bit big-endian length
and the payload, both ways. This one answers text in upper case and binary
with its length."""
import struct
import sys

stdin, stdout = sys.stdin.buffer, sys.stdout.buffer


def read_exactly(n):
    data = stdin.read(n)
    return data if data is not None and len(data) == n else None


while True:
    header = read_exactly(5)
    if header is None:
        break
    kind, length = struct.unpack(">BI", header)
    payload = read_exactly(length)
    if payload is None:
        break
    if kind == 1:
        reply = (1, payload.decode("utf-8").upper().encode("utf-8"))
    else:
        reply = (1, f"{length} bytes".encode())
    stdout.write(struct.pack(">BI", reply[0], len(reply[1])) + reply[1])
    stdout.flush()
