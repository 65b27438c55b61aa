#!/usr/bin/env bash
# ws://HOST:PORT/echo (found as echo.sh): echoes every line.
exec cat
