#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn TestSuite's fuzzing client against
# wspipe in text mode (`cat`), binary mode (`--binary cat`) and framed mode
# (`--framed cat`, message-preserving: every case must pass), then checks
# every result against autobahn/expected-failures.json.
#
#   scripts/autobahn.sh            sections 1-7 and 10 (what CI runs)
#   scripts/autobahn.sh --all      also 9 (limits/performance, slow) and
#                                  12/13 (permessage-deflate, not negotiated)
#   scripts/autobahn.sh --mode text|binary|framed   one mode only
#   scripts/autobahn.sh --debug    test the debug build (the one `cargo test`
#                                  makes: no second build right after it)
#                                  instead of a release build
#
# wstest is Python 2 code: it is installed once into .venv-autobahn/ (a
# Python 2.7 virtualenv made from pyenv's 2.7.18); later runs reuse it.
# Reports (HTML and JSON) go to target/autobahn/MODE/SHARD/reports/servers/.
#
# Environment:
#   AUTOBAHN_VENV      where wstest is installed (default .venv-autobahn)
#   AUTOBAHN_OUT       where reports and logs go (default target/autobahn)
#   AUTOBAHN_PYTHON27  a Python 2.7 interpreter (default: pyenv's 2.7.18)
#   AUTOBAHN_TIMEOUT   seconds one wstest run may take (default 600, --all 3600)
#
# See docs/conformance.md.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

all=0
profile=release
modes=(text binary framed)
usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --all) all=1 ;;
    --debug) profile=debug ;;
    --mode)
      [ $# -ge 2 ] || { usage >&2; exit 2; }
      case "$2" in
        text | binary | framed) modes=("$2") ;;
        *) echo "autobahn.sh: --mode is text, binary or framed, not '$2'" >&2; exit 2 ;;
      esac
      shift
      ;;
    --mode=*)
      m="${1#--mode=}"
      case "$m" in
        text | binary | framed) modes=("$m") ;;
        *) echo "autobahn.sh: --mode is text, binary or framed, not '$m'" >&2; exit 2 ;;
      esac
      ;;
    -h | --help) usage; exit 0 ;;
    *) echo "autobahn.sh: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

venv="${AUTOBAHN_VENV:-$root/.venv-autobahn}"
out="${AUTOBAHN_OUT:-$root/target/autobahn}"
if [ "$all" -eq 1 ]; then
  wstest_timeout="${AUTOBAHN_TIMEOUT:-3600}"
else
  wstest_timeout="${AUTOBAHN_TIMEOUT:-600}"
fi
# Autobahn's section 9 sends messages of up to 16 MiB (one line each in text
# mode): both limits get room above that.
max_message=$((32 * 1024 * 1024))

started=$SECONDS
log() { printf '[autobahn %3ds] %s\n' "$((SECONDS - started))" "$*"; }
die() { echo "autobahn.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- wstest ---

# The Python 2 packages wstest 0.8.2 runs with, as pip resolved them for
# Python 2.7.18; pinned so every machine gets the same set.
constraints() {
  cat <<'EOF'
attrs==21.4.0
autobahn==0.10.9
autobahntestsuite==0.8.2
Automat==22.10.0
cffi==1.15.1
constantly==15.1.0
cryptography==3.3.2
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
incremental==22.10.0
ipaddress==1.0.23
Jinja2==2.11.3
klein==20.6.0
linecache2==1.0.0
MarkupSafe==1.1.1
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
PyHamcrest==1.10.1
pyOpenSSL==21.0.0
service-identity==21.1.0
six==1.17.0
traceback2==1.4.0
Tubes==0.2.1
Twisted==20.3.0
txaio==2.1.0
typing==3.10.0.0
ujson==2.0.3
unittest2==1.1.0
Werkzeug==1.0.1
wsaccel==0.6.6
zope.interface==5.5.2
EOF
}
stamp="autobahntestsuite==0.8.2 $(constraints | cksum | cut -d' ' -f1)"

find_python27() {
  if [ -n "${AUTOBAHN_PYTHON27:-}" ]; then
    echo "$AUTOBAHN_PYTHON27"
    return
  fi
  local pyenv_root=""
  if command -v pyenv >/dev/null 2>&1; then
    pyenv_root="$(pyenv root)"
  elif [ -x "${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv" ]; then
    pyenv_root="$("${PYENV_ROOT:-$HOME/.pyenv}/bin/pyenv" root)"
  else
    pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}"
  fi
  echo "$pyenv_root/versions/2.7.18/bin/python"
}

wstest="$venv/py27/bin/wstest"
wstest_installed() {
  [ -x "$wstest" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$stamp" ] &&
    "$wstest" --autobahnversion >/dev/null 2>&1
}

# Finds Python 2.7 (sets py27) or says how to get it; checked before any
# long step so a machine without it fails at once.
check_python27() {
  py27="$(find_python27)"
  if [ ! -x "$py27" ] || ! "$py27" -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; then
    die "Python 2.7 not found at $py27.
  wstest (autobahntestsuite 0.8.2) is Python 2 code and needs a Python 2.7
  interpreter. This machine image normally has pyenv's 2.7.18 (check with
  'pyenv root' and 'pyenv versions'); elsewhere run 'pyenv install 2.7.18' or
  point AUTOBAHN_PYTHON27 at a python2.7."
  fi
}

install_wstest() {
  if wstest_installed; then
    log "wstest: using $venv"
    return
  fi
  command -v python3 >/dev/null || die "python3 is needed to create the virtualenv"
  log "wstest: installing autobahntestsuite 0.8.2 into $venv (Python 2.7: $py27)"
  rm -rf "$venv"
  mkdir -p "$venv"
  # virtualenv < 20.22 is the last that can create a Python 2.7 environment;
  # it lives in a small Python 3 venv of its own.
  timeout 300 python3 -m venv "$venv/boot"
  timeout 300 "$venv/boot/bin/pip" install -q 'virtualenv<20.22'
  timeout 300 "$venv/boot/bin/virtualenv" -q -p "$py27" "$venv/py27"
  constraints >"$venv/constraints.txt"
  timeout 900 "$venv/py27/bin/pip" install -q --no-python-version-warning \
    -c "$venv/constraints.txt" autobahntestsuite==0.8.2
  "$wstest" --autobahnversion >/dev/null 2>&1 || die "wstest was installed but does not run: $wstest"
  echo "$stamp" >"$venv/.installed"
  log "wstest: installed"
}

# ---------------------------------------------------------------- wspipe ---

build_wspipe() {
  log "building wspipe ($profile)"
  if [ "$profile" = release ]; then
    cargo build --release --quiet -p wspipe --bin wspipe
  else
    # With the test targets, so that dev-dependencies unify features as in
    # `cargo test`: right after it this is a no-op, not a second build.
    cargo build --quiet --tests -p wspipe
  fi
  wspipe="${CARGO_TARGET_DIR:-$root/target}/$profile/wspipe"
  [ -x "$wspipe" ] || die "no binary at $wspipe after the build"
}

server_pids=()
wstest_pids=()
cleanup() {
  local pid live=()
  for pid in "${wstest_pids[@]}" "${server_pids[@]}"; do
    kill "$pid" 2>/dev/null && live+=("$pid")
  done
  for pid in "${live[@]}"; do
    { wait "$pid" || true; } 2>/dev/null
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

declare -A server_pid
# Starts wspipe for MODE on a free loopback port; sets `port`.
start_server() {
  local mode="$1" dir="$out/$1" flags=()
  [ "$mode" = binary ] && flags+=(--binary)
  [ "$mode" = framed ] && flags+=(--framed)
  : >"$dir/wspipe.log"
  "$wspipe" --port 0 --address 127.0.0.1 "${flags[@]}" \
    --maxframesize "$max_message" --maxlinesize "$max_message" \
    cat >"$dir/wspipe.log" 2>&1 &
  server_pids+=($!)
  server_pid[$mode]=$!
  local pid=$! i
  port=""
  for ((i = 0; i < 100; i++)); do
    port="$(sed -n 's|.*serving on ws://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p' "$dir/wspipe.log" | head -n1 || true)"
    [ -n "$port" ] && return
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$dir/wspipe.log" >&2
  die "wspipe ($mode) did not start"
}

# Each mode's cases run in shards, one wstest each, side by side against the
# same server: most of the time goes to the fuzzer's timers, waiting for
# echoes that cannot come (see autobahn/expected-failures.json), and section
# 6 alone is as long as all the others together. A named shard runs that
# section only; "rest" runs everything else the spec selects.
if [ "$all" -eq 1 ]; then
  shards=(6 9 rest)
else
  shards=(6 rest)
fi

# Writes the spec of MODE's SHARD: the real url, the shard's cases, and for
# --all no exclusions.
write_spec() {
  local mode="$1" shard="$2" url="$3"
  python3 - "autobahn/fuzzingclient-$mode.json" "$out/$mode/$shard/spec.json" \
    "$url" "$all" "$shard" "${shards[@]}" <<'EOF'
import json, sys
src, dst, url, run_all, shard = sys.argv[1:6]
named = [s for s in sys.argv[6:] if s != "rest"]
with open(src) as f:
    spec = json.load(f)
spec.pop("_comment", None)
spec["servers"][0]["url"] = url
if run_all == "1":
    spec["exclude-cases"] = []
if shard == "rest":
    spec["exclude-cases"] = spec.get("exclude-cases", []) + [s + ".*" for s in named]
else:
    spec["cases"] = [shard + ".*"]
with open(dst, "w") as f:
    json.dump(spec, f, indent=2)
EOF
}

# ------------------------------------------------------------------- run ---

wstest_installed || check_python27
# The install (mostly downloads) and the build overlap.
mkdir -p "$out"
install_wstest >"$out/install.log" 2>&1 &
install_pid=$!
build_wspipe
install_rc=0
wait "$install_pid" || install_rc=$?
cat "$out/install.log"
[ "$install_rc" -eq 0 ] || exit "$install_rc"

declare -A run_pid
for mode in "${modes[@]}"; do
  rm -rf "${out:?}/$mode"
  mkdir -p "$out/$mode"
  start_server "$mode"
  log "$mode mode: wspipe on 127.0.0.1:$port; wstest running in shards: ${shards[*]}"
  for shard in "${shards[@]}"; do
    dir="$out/$mode/$shard"
    mkdir -p "$dir"
    write_spec "$mode" "$shard" "ws://127.0.0.1:$port/"
    (cd "$dir" && exec timeout -k 10 "$wstest_timeout" "$wstest" -m fuzzingclient -s spec.json) \
      >"$dir/wstest.log" 2>&1 &
    run_pid[$mode/$shard]=$!
    wstest_pids+=($!)
  done
done

failed=0
indexes=()
for mode in "${modes[@]}"; do
  for shard in "${shards[@]}"; do
    dir="$out/$mode/$shard"
    rc=0
    wait "${run_pid[$mode/$shard]}" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
      log "$mode/$shard: wstest TIMED OUT after ${wstest_timeout}s; last lines of $dir/wstest.log:"
      tail -n 3 "$dir/wstest.log" | sed 's/^/    /'
      failed=1
    elif [ "$rc" -ne 0 ]; then
      log "$mode/$shard: wstest exited with status $rc; last lines of $dir/wstest.log:"
      tail -n 20 "$dir/wstest.log" | sed 's/^/    /'
      failed=1
    else
      planned="$(sed -n 's/.*will run \([0-9][0-9]*\) test cases.*/\1/p' "$dir/wstest.log" | head -n1 || true)"
      ran="$(grep -c '^Running test case' "$dir/wstest.log" || true)"
      if [ -z "$planned" ] || [ "$ran" != "$planned" ]; then
        log "$mode/$shard: wstest ran ${ran:-0} of ${planned:-?} cases"
        failed=1
      else
        log "$mode/$shard: wstest done ($ran cases)"
      fi
    fi
    indexes+=("$dir/reports/servers/index.json")
  done
  # A server that died or panicked under the fuzzer is a failure whatever
  # the cases say.
  if ! kill -0 "${server_pid[$mode]}" 2>/dev/null; then
    log "$mode mode: wspipe EXITED during the run; last lines of $out/$mode/wspipe.log:"
    tail -n 20 "$out/$mode/wspipe.log" | sed 's/^/    /'
    failed=1
  fi
  if grep -q 'panicked' "$out/$mode/wspipe.log"; then
    log "$mode mode: wspipe PANICKED during the run:"
    grep -A 3 'panicked' "$out/$mode/wspipe.log" | head -n 20 | sed 's/^/    /'
    failed=1
  fi
done
cleanup
server_pids=()
wstest_pids=()

log "reports: $out/<mode>/<shard>/reports/servers/index.html"
log "checking results against autobahn/expected-failures.json"
check=0
python3 scripts/autobahn_check.py --expected autobahn/expected-failures.json "${indexes[@]}" || check=$?
if [ "$failed" -ne 0 ] || [ "$check" -ne 0 ]; then
  log "FAILED after $((SECONDS - started))s"
  exit 1
fi
