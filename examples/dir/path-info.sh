#!/usr/bin/env bash
# ws://HOST:PORT/path-info/any/thing?x=1: shows how the URL was split.
echo "SCRIPT_NAME=$SCRIPT_NAME"
echo "PATH_INFO=$PATH_INFO"
echo "QUERY_STRING=$QUERY_STRING"
