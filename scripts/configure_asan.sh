#!/usr/bin/env bash
# Configures build-asan/: clang, ASan + UBSan, libFuzzer coverage, tests and
# fuzz harnesses (no benchmarks). Used by scripts/sanitize.sh and scripts/fuzz.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build-asan/CMakeCache.txt ]; then
  CC=clang CXX=clang++ cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DPODKV_SANITIZE=ON -DPODKV_FUZZ=ON -DPODKV_BENCH=OFF -DPODKV_UNITY_LIBRARIES=ON >/dev/null
fi
