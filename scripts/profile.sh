#!/usr/bin/env bash
# Profiles one benchmark scenario with perf and splits the CPU time by who
# spent it: the server, its children, the bench client, idle.
#
#   scripts/profile.sh SCENARIO [BENCH ARGS...]
#   PER=1000 scripts/profile.sh 3          # churn: µs of CPU per session
#   PER=5200 scripts/profile.sh 1          # latency: per round trip (5000 + warm-up)
#
# Needs perf (Debian: linux-perf) and a kernel that lets this user record
# system-wide (root, or kernel.perf_event_paranoid <= 0). The recording
# stays in target/profile-SCENARIO.data for `perf report`.
set -euo pipefail
cd "$(dirname "$0")/.."

scenario=${1:?usage: scripts/profile.sh SCENARIO [BENCH ARGS...]}
shift
freq=${PERF_FREQ:-2000}
command -v perf >/dev/null || { echo "profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
command -v websocketd >/dev/null || { echo "profile.sh: websocketd not found (scripts/bench.sh installs it)" >&2; exit 1; }

cargo build --release --quiet
cargo build --release --quiet -p wspipe-bench
data=target/profile-$scenario.data
perf record --quiet -a -g -F "$freq" -o "$data" -- \
    target/release/wspipe-bench --only "$scenario" --runs 1 "$@" >&2
perf script -i "$data" -F pid,tid,comm,time 2>/dev/null |
    python3 scripts/perf_split.py --freq "$freq" ${PER:+--per "$PER"}
echo
echo "Symbols of one process: perf report -i $data --pid PID --no-children --sort sym"
