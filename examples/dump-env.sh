#!/usr/bin/env bash
# Sends the CGI environment the server gave this connection, one VAR=value
# per message, then exits.
env | sort
