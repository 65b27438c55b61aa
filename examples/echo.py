#!/usr/bin/env python3
"""Echoes every message back. Flushes after each line: a program that
buffers its output (as Python and C do when stdout is a pipe) would
otherwise hold replies back until its buffer fills."""
import sys

for line in sys.stdin:
    sys.stdout.write(line)
    sys.stdout.flush()
