#!/usr/bin/env bash
# Benchmarks wspipe against websocketd, nginx's nchan module (channels) and
# an in-process echo server, wspipe's --shared against --pubsub and
# per-connection mode, and 1 and 3 instances through Redis (scale-out)
# against one without, on this machine and prints a markdown report.
# See docs/benchmarks.md.
#
#   scripts/bench.sh            full suite (about 8 minutes on 2 cores)
#   scripts/bench.sh --smoke    tiny counts, for CI (well under a minute)
#
# Any other arguments go to wspipe-bench (try: scripts/bench.sh --help).
# Progress goes to stderr, the report to stdout.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null; then
    sudo "$@"
  else
    echo "bench.sh: need root (or sudo) to run: $*" >&2
    exit 1
  fi
}

# The peers: websocketd, nginx with the nchan module (scenario 8), and
# redis-server (scenario 10; the bench starts its own on a port of its own).
missing=()
command -v websocketd >/dev/null || missing+=(websocketd)
[ -x /usr/sbin/nginx ] || missing+=(nginx)
[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ] || missing+=(libnginx-mod-nchan)
[ -x /usr/bin/redis-server ] || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Refresh the package lists only if apt does not know the packages yet.
  for pkg in "${missing[@]}"; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
      as_root apt-get update >&2
      break
    fi
  done
  as_root apt-get install -y "${missing[@]}" >&2
  # Debian's package starts the system nginx on port 80: the bench runs
  # its own, so leave none running that was not running before.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    as_root service nginx stop >/dev/null 2>&1 || true
  fi
  # Likewise the system Redis on port 6379.
  if [[ " ${missing[*]} " == *" redis-server "* ]]; then
    as_root service redis-server stop >/dev/null 2>&1 || true
  fi
fi

for tool in cat seq true; do
  command -v "$tool" >/dev/null || { echo "bench.sh: missing $tool" >&2; exit 1; }
done

echo "== building (release)" >&2
# wspipe exactly as `cargo build --release` builds it, then the bench on its
# own, so the bench's features never leak into the wspipe binary.
cargo build --release >&2
cargo build --release -p wspipe-bench >&2

WSPIPE_BENCH_REV="$(git describe --always --dirty 2>/dev/null || echo unknown)"
export WSPIPE_BENCH_REV

echo "== running" >&2
# The bench finds wspipe next to itself (target/release/wspipe).
exec target/release/wspipe-bench "$@"
