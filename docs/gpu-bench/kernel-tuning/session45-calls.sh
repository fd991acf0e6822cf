#!/usr/bin/env bash
# Session 45's device calls (session43-calls.sh's helpers with this session's parts). Copy this to .data/run/
# (ignored) and run it from the repository root on the device machine, with `carry` [".deps",
# ".data/run"] and docs/ and the long models' weights out of the index while the call runs (the 64 MiB
# limit on a tree that travels; commit nothing meanwhile):
#   printf '/docs/\n/models/podkv-long/model.safetensors\n/models/podkv-long-pod/model.safetensors\n' >.git/info/exclude
#   git rm -r -q --cached docs models/podkv-long/model.safetensors models/podkv-long-pod/model.safetensors
#   ... the call ...
#   git reset -q docs models && : >.git/info/exclude
# Session 43's parts (probe, bounds, verify) and its chain-trace build stay in session43-calls.sh.
# Session 45's parts (its calls: h100, quant, early; written for an H200 that never came: first,
# h200bench, h200short):
#   PART=h100   scripts/test_gpu.sh whole, the chain A/B at 4K, Nsight durations with bf16 and f16 entries
#   PART=quant  scripts/test_gpu_quant.sh, decode attention's split keys and stages at 4K
#   PART=early  decode attention's first tiles before the wait (session45-decode-early-experiment.patch):
#               attention op cases with and without, 4K A/B (two passes), 32K (one), the chain's gtests
#   PART=first  (needs_h200) test_gpu.sh whole, then PART=h200bench's runs
#   PART=h200bench / h200short  the H200 benchmark of the tree (bench_gpu.sh parts 1, 4, 2 and 3; short: 1, 4)
#   PART=test   scripts/test_gpu.sh whole on the tree as it is, then one batch-1 timing at 4K
#   PART=bench  (needs_h200) scripts/test_gpu.sh whole, then scripts/bench_gpu.sh parts 1, 4, the step's
#               kernel durations (Nsight Compute), parts 2 and 3 as time allows
# A warm machine keeps build-cuda: files unchanged since its last build get an old mtime, so only the
# changed ones compile again. Writes $OUT/summary.txt (+ files).
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
build=$root/build-cuda
limit=${LIMIT:-560}
within() { local n=$1 rem=$((limit - SECONDS)); shift; [ $rem -ge 15 ] || { echo "skipped (time): $*"; return 124; }
  timeout -k 5 $((n < rem ? n : rem)) "$@"; }
. scripts/use_deps_pcre2.sh && use_deps_pcre2 "$root"
. scripts/use_deps_httplib.sh && use_deps_httplib "$root"
sums=$build/.srcsums
list() { find . \( -path ./build-cuda -o -path ./.deps -o -path ./.data -o -path ./build -o -path ./build-asan \) -prune -o -type f -print | sort; }
if [ -f "$sums" ]; then
  list | xargs sha1sum >/tmp/now.sums
  n=0; while read -r sum file; do grep -qxF "$sum  $file" "$sums" && { touch -d '2001-01-01' "$file"; n=$((n+1)); }; done </tmp/now.sums
  echo "warm: $n unchanged files kept old"
fi
cmake -S . -B "$build" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=ON \
  >/tmp/configure.log 2>&1 || { tail -20 /tmp/configure.log; exit 1; }
cmake --build "$build" -j ${JOBS:-12} --target ${TARGETS:-podkv_cli} >/tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head -30; exit 1; }
list | xargs sha1sum >"$sums"
echo "build ok ($SECONDS s)"
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
# Batch-1 decode at DEPTH (default 4096) under the settings given; BIN: another build.
tg() { local label=$1; shift; echo "-- $label"; within 90 env "$@" "${BIN:-$build}/podkv" "${a[@]}" -p 0 -n 32 -d ${DEPTH:-4096} -r 2 | grep -E "tg" ; }
# Op cases: each argument "SETTINGS op" (settings may be several VAR=value words).
ops() {
  for check in "${@}"; do
    setting=${check% *} op=${check##* }
    # shellcheck disable=SC2086
    within 150 env OMP_WAIT_POLICY=PASSIVE $setting "$build/podkv_test_backend_ops" --op $op --backend cuda >/tmp/op.log 2>&1
    echo "op $op ($setting) rc $?: $(tail -1 /tmp/op.log)"; grep FAIL /tmp/op.log | head -5
  done
}
# The chain's gtests under each setting given.
chain_gtests() {
  for setting in "$@"; do
    # shellcheck disable=SC2086
    within 150 env $setting "$build/podkv_tests" --gtest_filter='CudaDecodeChain.*:CudaGraphs.*:Models/CudaFixture.*' >/tmp/gt.log 2>&1
    echo "gtests ($setting) rc $?: $(grep -E '^\[  (PASSED|FAILED)' /tmp/gt.log | tr '\n' ' ')"; grep -E "^\[  FAILED" /tmp/gt.log | head
  done
}
# Nsight Compute's kernel durations of a 4K decode run; $1 (optional) the KV entry type (f16: the CUDA-core
# decode kernel at batch 1 instead of the tensor-core one).
durations() {
  local kv=${1:-bf16} b=("${a[@]}"); b[7]=$kv
  echo "-- ncu durations, decode 4K, $kv entries ($SECONDS s)"
  within 90 "$(command -v ncu)" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${b[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k_$kv.csv" 2>/tmp/ncu.err; echo "rc $?"; tail -3 /tmp/ncu.err
}
bench() { echo "-- bench_gpu.sh PARTS=\"$1\" ($SECONDS s)"; within $2 env PARTS="$1" scripts/bench_gpu.sh "$build" /tmp/bench >>"$out/bench.txt" 2>&1
  echo "rc $? ($SECONDS s)"; }
test_gpu_whole() {
  within 330 scripts/test_gpu.sh "$build" /tmp/gpu-logs >"$out/test_gpu.txt" 2>&1; echo "test_gpu rc $? ($SECONDS s)"
  tail -8 "$out/test_gpu.txt"; grep -B2 -A8 "FAIL" "$out/test_gpu.txt" | head -40
}
# Batch-1 decode at 4K, the defaults against session 42's chain, two interleaved passes.
chain_ab() {
  local old="PODKV_CUDA_CHAIN_PDL=0 PODKV_CUDA_CHAIN_BARRIER=0"
  for pass in 1 2; do
    for setting in PODKV_NONE=0 "$old"; do
      # shellcheck disable=SC2086
      tg "4096, $setting" $setting
    done
  done
}
case ${PART:-test} in
first)
  # Session 45's first call (needs_h200): the landed tree whole against the CPU oracle, then the bench.
  test_gpu_whole
  bench 1 150; durations bf16; durations f16
  chain_ab
  bench 4 150; bench "2 3" 200; cat "$out/bench.txt"
  ;;
h200bench)
  # After PART=h100 passed on the same tree: the H200's benchmark of it, the A/B at 4K, the durations,
  # and decode attention's splits and stages at batch 1 on this card (one pass each).
  bench 1 150; durations bf16
  chain_ab
  for setting in PODKV_CUDA_DECODE_SPLIT_KEYS=128 PODKV_CUDA_DECODE_SPLIT_KEYS=32 PODKV_CUDA_DECODE_STAGES=4 PODKV_NONE=0; do
    tg "4096, $setting" $setting
  done
  bench 4 150; bench "2 3" 200; cat "$out/bench.txt"
  ;;
h200short)
  # The H200's benchmark of the tree when little device time is left: part 1, the durations, part 4.
  bench 1 150; durations bf16; bench 4 150; cat "$out/bench.txt"
  ;;
early)
  # Decode attention's first tiles copied before the wait for the chain (PODKV_CUDA_DECODE_EARLY, on by
  # default in this tree): the attention op cases under both, batch-1 decode at 4K interleaved (two
  # passes) and 32K (one), then the chain's gtests.
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_DECODE_EARLY=0 attention"
  for pass in 1 2; do
    for setting in PODKV_NONE=0 PODKV_CUDA_DECODE_EARLY=0; do
      # shellcheck disable=SC2086
      tg "4096, $setting" $setting
    done
  done
  for setting in PODKV_NONE=0 PODKV_CUDA_DECODE_EARLY=0; do
    # shellcheck disable=SC2086
    DEPTH=32735 tg "32735, $setting" $setting
  done
  [ -x "$build/podkv_tests" ] && chain_gtests PODKV_NONE=0
  ;;
quant)
  # IQ4's reference values from gguf-py (run before this script, the call's first command), the
  # quantized GGUF files on cuda against cpu (test_gpu.sh's step 10 alone), decode attention's splits and
  # stages at batch 1 (one pass each, interleaved with the default).
  within 200 scripts/test_gpu_quant.sh "$build" /tmp/gpu-logs >"$out/test_gpu_quant.txt" 2>&1; echo "test_gpu_quant rc $? ($SECONDS s)"
  cat "$out/test_gpu_quant.txt"
  for setting in PODKV_NONE=0 PODKV_CUDA_DECODE_SPLIT_KEYS=128 PODKV_CUDA_DECODE_SPLIT_KEYS=32 PODKV_CUDA_DECODE_STAGES=4 PODKV_NONE=0; do
    tg "4096, $setting" $setting
  done
  ;;
h100)
  # The same checks on an H100 when no H200 comes: the tests, the A/B at 4K, the two kernels' durations.
  test_gpu_whole
  chain_ab
  durations bf16; durations f16
  ;;
test)
  test_gpu_whole
  tg "batch 1 at 4K" PODKV_NONE=0
  ;;
bench)
  test_gpu_whole
  bench 1 150; bench 4 150; durations; bench "2 3" 300; cat "$out/bench.txt"
  ;;
*)
  echo "unknown PART=${PART:-}"
  ;;
esac
echo "done ($SECONDS s)"
