#!/usr/bin/env bash
# Installs the package scripts/deb.sh built and checks what a user gets:
# /usr/bin/wspipe serving an installed example to a real WebSocket client
# (the repository's examples/wsclient, built by `cargo test`), the man
# page through man -l, the completions, the units and the system user.
# Removes the package again (the wspipe user stays, as Debian does).
set -euo pipefail
cd "$(dirname "$0")/.."
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
fail() { echo "deb-check: $*" >&2; exit 1; }

deb=$(ls -t target/debian/wspipe_*.deb | head -1)
as_root dpkg -i "$deb"
trap 'as_root dpkg --purge wspipe >/dev/null || true' EXIT

/usr/bin/wspipe --version
getent passwd wspipe >/dev/null || fail "no wspipe system user"
for f in /usr/share/man/man1/wspipe.1.gz \
         /usr/share/bash-completion/completions/wspipe \
         /usr/share/zsh/vendor-completions/_wspipe \
         /usr/share/fish/vendor_completions.d/wspipe.fish \
         /usr/share/doc/wspipe/README.md \
         /usr/share/doc/wspipe/docs/channels.md \
         /usr/share/doc/wspipe/examples/count.sh \
         /usr/share/doc/wspipe/examples/shared/bot.sh; do
  [ -s "$f" ] || fail "missing $f"
done
unit=$(ls /lib/systemd/system/wspipe.service /usr/lib/systemd/system/wspipe.service 2>/dev/null | head -1)
[ -n "$unit" ] || fail "no wspipe.service installed"
grep -q 'ExecStart=/usr/bin/wspipe' "$unit" || fail "$unit does not run /usr/bin/wspipe"
ls /lib/systemd/system/wspipe.socket /usr/lib/systemd/system/wspipe.socket 2>/dev/null | grep -q . \
  || fail "no wspipe.socket installed"

# The man page renders, and documents the control CLI and socket activation.
page=$(MANWIDTH=100 man -l /usr/share/man/man1/wspipe.1.gz 2>/dev/null | col -b)
grep -q 'wspipe ctl' <<<"$page" || fail "man page lacks wspipe ctl"
grep -q 'LISTEN_FDS' <<<"$page" || fail "man page lacks socket activation"

# The installed binary serves an installed example.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log=$(mktemp)
/usr/bin/wspipe --port "$port" --address 127.0.0.1 /usr/share/doc/wspipe/examples/count.sh 2>"$log" &
server=$!
# Stopped however the checks below end, then the package removed.
trap 'kill "$server" 2>/dev/null || true; as_root dpkg --purge wspipe >/dev/null || true' EXIT
for _ in $(seq 100); do grep -q 'serving on' "$log" && break; sleep 0.1; done
grep -q 'serving on' "$log" || fail "server did not start: $(cat "$log")"
# The client closes when its stdin ends (and exits only once it has):
# stdin stays open past the example's 5 s.
out=$(sleep 8 | timeout 30 target/debug/examples/wsclient "ws://127.0.0.1:$port/" 2>&1)
kill "$server"; wait "$server" || true
server=
[ "$(grep -cx '[0-9]*' <<<"$out")" = 10 ] || fail "expected 10 lines, got: $out"
grep -q 'closed: 1000' <<<"$out" || fail "no normal close: $out"
echo "deb-check: $deb installs and serves"
