#!/bin/bash
# make fuzz: every cargo-fuzz target (fuzz/fuzz_targets/) for FUZZ_SECONDS
# each (default 600), FUZZ_JOBS at a time (default: the number of cores).
# The corpus grows in fuzz/corpus/<target>/ (commit what is worth keeping:
# `make test` replays it); a crash is saved in fuzz/artifacts/<target>/ and
# fails the run. Logs and a summary: target/fuzz/.
#
#   scripts/fuzz.sh [target ...]      (default: every target)
#
# Needs nightly Rust (rustup toolchain install nightly) and cargo-fuzz
# (installed here when missing). Built without a sanitizer: the parsers are
# safe Rust, so AddressSanitizer would only halve the executions per second;
# optimised, with debug assertions and overflow checks on (as release
# builds keep overflow checks).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.1
seconds=${FUZZ_SECONDS:-600}
jobs=${FUZZ_JOBS:-$(nproc)}
out=target/fuzz
mkdir -p "$out"

rustup run nightly rustc --version >/dev/null 2>&1 || {
  echo "fuzz: nightly Rust is needed: rustup toolchain install nightly --profile minimal" >&2
  exit 2
}
cargo fuzz --version >/dev/null 2>&1 || cargo install --locked "cargo-fuzz@$CARGO_FUZZ_VERSION"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi

# one build for every target, then the runs
cargo +nightly fuzz build --fuzz-dir fuzz --sanitizer none --release --debug-assertions

run_one() {
  local t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local start
  start=$(date +%s)
  if cargo +nightly fuzz run --fuzz-dir fuzz --sanitizer none --release --debug-assertions "$t" -- \
      -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
      >"$out/$t.log" 2>&1; then
    echo "$t: ok, $(( $(date +%s) - start )) s, $(grep -m1 '^stat::number_of_executed_units' "$out/$t.log" | awk '{print $2}') executions, $(ls "fuzz/corpus/$t" | wc -l) corpus files"
  else
    echo "$t: FAILED after $(( $(date +%s) - start )) s: see $out/$t.log and fuzz/artifacts/$t/"
    return 1
  fi
}

running=0
for t in "${targets[@]}"; do
  run_one "$t" >"$out/$t.result" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait
for t in "${targets[@]}"; do cat "$out/$t.result"; done | tee "$out/summary.txt"
! grep -q FAILED "$out/summary.txt"
