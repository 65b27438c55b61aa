#!/usr/bin/env bash
# Fuzz smoke test: builds the cargo-fuzz targets in fuzz/ and runs each one
# for a short while, failing on any crash (panic, sanitizer report, timeout,
# out-of-memory). See docs/fuzzing.md.
#
#   scripts/fuzz-smoke.sh                 every target, 30 s each
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh fuzz_lines fuzz_env
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). It runs on the
# stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc take the nightly-only
# flags cargo-fuzz passes (-Zsanitizer=address and friends).
#
# The committed seeds in fuzz/corpus/TARGET are read, never written: what a
# run discovers goes to fuzz/target/corpus/TARGET (kept between runs,
# ignored by git), crash reproducers to fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-30}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2
  exit 1
fi

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "fuzz: no targets found (cargo fuzz list)" >&2
  exit 1
fi

echo "fuzz: building ${targets[*]}"
cargo fuzz build

failed=()
for target in "${targets[@]}"; do
  work="target/corpus/$target"
  mkdir -p "$work" "corpus/$target"
  log="target/fuzz-$target.log"
  echo "fuzz: $target for ${seconds}s (log: fuzz/$log)"
  # -timeout: one input taking over 10 s is a hang; -rss_limit_mb: 2 GiB.
  if cargo fuzz run "$target" "$work" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    # The last status line: executions, coverage, corpus size.
    grep -E '^#[0-9]+' "$log" | tail -1 || true
    grep -E '^stat::number_of_executed_units' "$log" || true
  else
    echo "fuzz: $target FAILED; the end of its log:" >&2
    tail -60 "$log" >&2
    failed+=("$target")
  fi
done

passed=$(( ${#targets[@]} - ${#failed[@]} ))
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]} (reproducers in fuzz/artifacts/)" >&2
  echo "fuzz: $passed passed, ${#failed[@]} failed"
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a crash"
echo "fuzz: $passed passed, 0 failed"
