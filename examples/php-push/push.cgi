#!/bin/sh
# push.cgi: server-side push into wspipe from a web server (CGI/1.1).
#
#   curl --data 'hello everyone' http://localhost/push
#
# The POST body becomes one WebSocket message for every client connected to
# wspipe: it is handed to `wspipe ctl broadcast -` on wspipe's control socket.
# Answers 200 with {"ok":true,"delivered":N}, or an error status with
# {"ok":false,"error":"..."}.
#
# Settings, from the environment (Apache: SetEnv; see deploy/apache/):
#   WSPIPE_SOCKET  the control socket (wspipe --control PATH); default
#                  $WSPIPE_CONTROL, then /run/wspipe/control.sock
#   WSPIPE_BIN     the wspipe binary; default: `wspipe` on PATH
#   WSPIPE_PATH    optional: only clients connected on this URL path
# (Run by wspipe itself with --cgidir, WSPIPE_CONTROL and WSPIPE_BIN are
# already set.)
#
# Plain POSIX sh, no PHP needed (push.php beside it does the same in PHP).
# Whoever can reach this script can talk to every client: keep it behind
# `Require local`, authentication, or an internal-only virtual host.

socket=${WSPIPE_SOCKET:-${WSPIPE_CONTROL:-/run/wspipe/control.sock}}
bin=${WSPIPE_BIN:-wspipe}
# Largest message accepted, in bytes (wspipe's own limit is larger).
max=65536

# reply STATUS JSON
reply() {
    printf 'Status: %s\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n\r\n%s\n' "$1" "$2"
    exit 0
}

# A JSON string from arbitrary text: escape \ and ", drop control characters.
json_string() {
    printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

if [ "${REQUEST_METHOD:-}" != POST ]; then
    printf 'Status: 405 Method Not Allowed\r\nAllow: POST\r\nContent-Type: application/json\r\n\r\n{"ok":false,"error":"POST the message"}\n'
    exit 0
fi

len=${CONTENT_LENGTH:-}
case $len in
    '' | *[!0-9]*) reply '411 Length Required' '{"ok":false,"error":"Content-Length required"}' ;;
esac
if [ "$len" -gt "$max" ]; then
    reply '413 Content Too Large' "{\"ok\":false,\"error\":\"message larger than $max bytes\"}"
fi

# Exactly CONTENT_LENGTH bytes of stdin (RFC 3875: the server need not send
# an end of file after the body), straight into `wspipe ctl` (`-` reads the
# message from stdin; one trailing newline is dropped). `head -c` is not in
# POSIX but in every head we know of; dd is the portable fallback.
read_body() {
    if head -c 0 </dev/null >/dev/null 2>&1; then
        head -c "$len"
    else
        dd bs=1 count="$len" 2>/dev/null
    fi
}

errors=$(mktemp) || reply '500 Internal Server Error' '{"ok":false,"error":"mktemp failed"}'
trap 'rm -f "$errors"' EXIT
if [ -n "${WSPIPE_PATH:-}" ]; then
    out=$(read_body | "$bin" ctl --socket "$socket" broadcast --path "$WSPIPE_PATH" - 2>"$errors")
else
    out=$(read_body | "$bin" ctl --socket "$socket" broadcast - 2>"$errors")
fi
status=$?
error=$(cat "$errors")
# Errors also go to the web server's error log.
[ -n "$error" ] && printf 'push.cgi: %s\n' "$error" >&2

# `wspipe ctl` prints "delivered to N client(s)"; exit codes: 0 done,
# 1 some clients did not take the message in time, 2 bad request (e.g. not
# UTF-8), 3 no server at the socket.
delivered=$(printf '%s\n' "$out" | sed -n 's/^delivered to \([0-9][0-9]*\) client.*/\1/p')
case $status in
    0) reply '200 OK' "{\"ok\":true,\"delivered\":${delivered:-0}}" ;;
    # Delivered, but some clients were too slow to take it: not worth a
    # retry (the others would get the message twice).
    1) reply '200 OK' "{\"ok\":true,\"delivered\":${delivered:-0},\"warning\":$(json_string "$error")}" ;;
    2) reply '400 Bad Request' "{\"ok\":false,\"error\":$(json_string "$error")}" ;;
    3) reply '503 Service Unavailable' "{\"ok\":false,\"error\":$(json_string "$error")}" ;;
    *) reply '500 Internal Server Error' "{\"ok\":false,\"error\":$(json_string "$error")}" ;;
esac
