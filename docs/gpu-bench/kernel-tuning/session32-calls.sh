#!/usr/bin/env bash
# Session 32's device calls (copy to .data/run/, run from the repository root with docs/ and the long
# models' weights out of the carried tree, as session31-calls.sh's header says):
#   PART=measure  TARGETS="podkv_cli podkv_test_backend_ops" TESTS=ON BASE=1: the attention op cases
#                 (defaults, and two stages with 16-key chunks: the merge of up to 257 chunks), then the
#                 tree on the GPU it gets: scripts/bench_gpu.sh part 1, then batch-1 decode
#                 at 4K interleaved with build-base and over the decode switches that were never timed on the H200 after
#                 session 29's patches landed (DECODE_COPY=tile, ATTN_PREFETCH_MB=16; DECODE_STAGES=2,
#                 which fits two attention blocks per multiprocessor, alone and with DECODE_SPLIT_KEYS=32,
#                 which then gives the 4K row twice the splits), part 4, the step's kernel durations
#                 (Nsight Compute), then parts 2 and 3 as time allows
#   PART=ab       BASE=1: the tree as it is against build-base (.data/run/base-src.tar.gz, `git archive
#                 HEAD -- CMakeLists.txt src tools scripts configs | gzip` of the tree before), after
#                 OPS="attention ..." op tests and GTESTS='filter', interleaved at 4K and 32K
# Writes $OUT/summary.txt and $OUT/bench.txt (+ the kernel durations).
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
build=$root/build-cuda
limit=${LIMIT:-560}
within() { local n=$1 rem=$((limit - SECONDS)); shift; [ $rem -ge 15 ] || { echo "skipped (time): $*"; return 124; }
  timeout -k 5 $((n < rem ? n : rem)) "$@"; }
. scripts/use_deps_pcre2.sh && use_deps_pcre2 "$root"
. scripts/use_deps_httplib.sh && use_deps_httplib "$root"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
base=$root/build-base
if [ -n "${BASE:-}" ] && [ ! -x "$base/podkv" ]; then
  rm -rf "$base" && mkdir -p "$base/src" && tar -xzf .data/run/base-src.tar.gz -C "$base/src"
  (cmake -S "$base/src" -B "$base" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=OFF >/tmp/base.log 2>&1 &&
    cmake --build "$base" -j ${BASE_JOBS:-4} --target podkv_cli >>/tmp/base.log 2>&1; echo "base build rc $? ($SECONDS s)") &
fi
cmake -S . -B "$build" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=${TESTS:-OFF} >/tmp/configure.log 2>&1 ||
  { tail -20 /tmp/configure.log; exit 1; }
cmake --build "$build" -j ${JOBS:-14} --target ${TARGETS:-podkv_cli} >/tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head -30; exit 1; }
echo "build ok ($SECONDS s)"
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
tg() { local label=$1; shift; echo "-- $label ($SECONDS s)"; within 90 env "$@" "${BIN:-$build}/podkv" "${a[@]}" -p 0 -n 32 -d ${DEPTH:-4096} -r 2 | grep -E "tg" ; }
durations() {
  echo "-- ncu durations, decode 4K ($SECONDS s)"
  within 90 "$(command -v ncu)" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k.csv" 2>/tmp/ncu.err; echo "rc $?"; tail -3 /tmp/ncu.err
}
bench() { echo "-- bench_gpu.sh PARTS=\"$1\" ($SECONDS s)"; within $2 env PARTS="$1" scripts/bench_gpu.sh "$build" /tmp/bench >>"$out/bench.txt" 2>&1
  echo "rc $? ($SECONDS s)"; }
ops() {
  for check in "${@}"; do
    setting=${check% *} op=${check##* }
    # shellcheck disable=SC2086
    within 150 env OMP_WAIT_POLICY=PASSIVE $setting "$build/podkv_test_backend_ops" --op $op --backend cuda >/tmp/op.log 2>&1
    echo "op $op ($setting) rc $?: $(tail -1 /tmp/op.log)"; grep FAIL /tmp/op.log | head -5
  done
}
case ${PART:-measure} in
measure)
  # TARGETS="podkv_cli podkv_test_backend_ops" TESTS=ON BASE=1: the attention ops first (the tree's
  # decode changes), then the same timings with the tree before beside them.
  [ -x "$build/podkv_test_backend_ops" ] && ops "PODKV_NONE=0 attention" \
    "PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=16 attention"
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2; do
    tg default PODKV_NONE=0; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
    tg "stages 2, split keys 32" PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=32
    [ $pass = 1 ] && { tg tile PODKV_CUDA_DECODE_COPY=tile; tg "stages 2" PODKV_CUDA_DECODE_STAGES=2; }
  done
  DEPTH=32735 tg "default 32K" PODKV_NONE=0; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  bench 1 150
  bench 4 150
  durations
  bench "2 3" 300
  ;;
ab)
  for op in ${OPS:-}; do ops "PODKV_NONE=0 $op"; done
  if [ -n "${GTESTS:-}" ]; then
    (within 150 "$build/podkv_tests" --gtest_filter="$GTESTS") >/tmp/gt.log 2>&1
    echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  fi
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2; do
    tg new PODKV_NONE=0; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
    DEPTH=32735 tg "new 32K" PODKV_NONE=0; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  done
  durations
  ;;
esac
echo "done ($SECONDS s)"
