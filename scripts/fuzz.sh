#!/usr/bin/env bash
# Runs every libFuzzer harness (fuzz/fuzz_*.cpp) for SECONDS each (default 20),
# as many at a time as there are cores (each fuzzes on one), from its committed
# seeds (fuzz/corpus/NAME) plus what earlier runs found (build-asan/fuzz-corpus/NAME).
# A crash, leak, timeout (10 s per input) or allocation over 2 GB fails the run
# (no harness starts after it), leaving the input in build-asan/fuzz-artifacts/.
# Prints the executions of each harness.
# FUZZ_FRESH=1: start from the committed seeds only, as CI's clean clone does (what earlier runs found
# is neither read nor added to), so that a local run explores what CI's 5 s will.
#   scripts/fuzz.sh [SECONDS] [HARNESS ...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
shift || true
scripts/setup.sh
scripts/configure_asan.sh
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.cpp; do harnesses+=("$(basename "$f" .cpp)"); done
fi
cmake --build build-asan -j "$(nproc)" --target "${harnesses[@]}"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
mkdir -p build-asan/fuzz-artifacts
# One harness; a non-zero status when it found something.
fuzz_one() {
  local h=$1 corpus="build-asan/fuzz-corpus/$1" log="build-asan/fuzz-artifacts/$1.log" runs
  if [ "${FUZZ_FRESH:-0}" = 1 ]; then
    corpus="build-asan/fuzz-fresh/$h"
    rm -rf "$corpus"
  fi
  mkdir -p "$corpus"
  if ! build-asan/fuzz/"$h" "$corpus" "fuzz/corpus/$h" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=2048 -artifact_prefix=build-asan/fuzz-artifacts/"$h"- \
      -print_final_stats=1 >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "fuzz: $h failed (input and log in build-asan/fuzz-artifacts/)" >&2
    return 1
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  echo "fuzz: $h: ${runs:-?} executions in ${seconds} s, no crash"
}
export -f fuzz_one
export seconds
# xargs runs nproc at a time, and starts none after one exits 255.
printf '%s\n' "${harnesses[@]}" | xargs -P "$(nproc)" -I{} bash -c 'fuzz_one "$1" || exit 255' _ {}
