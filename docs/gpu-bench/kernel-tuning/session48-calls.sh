#!/usr/bin/env bash
# Session 48's device calls (session47-calls.sh's helpers with this session's parts). Copy this to .data/run/
# (ignored) and run it from the repository root on the device machine, with `carry` [".deps",
# ".data/run"] and docs/ and the long models' weights out of the index while the call runs (the 64 MiB
# limit on a tree that travels; commit nothing meanwhile):
#   printf '/docs/\n/models/podkv-long/model.safetensors\n/models/podkv-long-pod/model.safetensors\n' >.git/info/exclude
#   git rm -r -q --cached docs models/podkv-long/model.safetensors models/podkv-long-pod/model.safetensors
#   ... the call ...
#   git reset -q docs models && : >.git/info/exclude
# Session 48 got no machine (twenty-five tries): every part below is still to run.
# Parts:
#   PART=dyn        (PATCH) the decode chain's tasks handed out by a counter per stage (PODKV_CUDA_CHAIN_DYNAMIC, on
#                   by default): the decode_chain op cases and the chain gtests with it and without, batch-1
#                   decode at 4K (three interleaved passes) and 32K (two) against PODKV_CUDA_CHAIN_DYNAMIC=0
#   PART=test       scripts/test_gpu.sh whole on the tree as it is, then bench_gpu.sh part 1 as time allows
#   PART=all        (PATCH) the decode_chain op cases both ways, the logits bytes, decode at 4K against
#                   PODKV_CUDA_CHAIN_DYNAMIC=0 (two passes), then scripts/test_gpu.sh whole as time allows
#   PART=ab         (a warm machine after PART=test) the Qwen3 A/B, part 1, the Qwen3-8B shape, the sweep,
#                   the chain A/B at 32K, batch-8 kernel durations
# A warm machine keeps build-cuda: files unchanged since its last build get an old mtime, so only the
# changed ones compile again. Writes $OUT/summary.txt (+ files).
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
# PATCH=.data/run/session48-chain-dynamic-untested.patch (copied there: docs/ stays out of the tree
# that travels): applied to the tree before the build (PART=dyn and all need it; with PREBUILT, build
# the binaries from the patched tree).
if [ -n "${PATCH:-}" ]; then patch -p1 -s <"$PATCH" && echo "applied $PATCH" || { echo "patch $PATCH failed"; exit 1; }; fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader
build=$root/build-cuda
limit=${LIMIT:-560}
within() { local n=$1 rem=$((limit - SECONDS)); shift; [ $rem -ge 15 ] || { echo "skipped (time): $*"; return 124; }
  timeout -k 5 $((n < rem ? n : rem)) "$@"; }
. scripts/use_deps_pcre2.sh && use_deps_pcre2 "$root"
. scripts/use_deps_httplib.sh && use_deps_httplib "$root"
if [ -n "${PREBUILT_TGZ:-}" ]; then
  # The binaries as a gzipped tar (the carry limit): unpacked to /tmp/prebuilt, used as PREBUILT below.
  mkdir -p /tmp/prebuilt && tar xzf "$root/$PREBUILT_TGZ" -C /tmp/prebuilt && PREBUILT=/tmp/prebuilt
fi
if [ -n "${PREBUILT:-}" ]; then
  # Binaries built on the workstation and carried in $PREBUILT (no build here).
  case $PREBUILT in /*) build=$PREBUILT ;; *) build=$root/$PREBUILT ;; esac
  export LD_LIBRARY_PATH=/usr/local/cuda/lib64:/usr/local/cuda/targets/x86_64-linux/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  echo "prebuilt: $(ls "$build" | tr '\n' ' ')"
else
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
fi
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
# The Qwen3-8B shape (configs/qwen3-8b, random bf16 weights): prefill 4096 and batch-1 decode at 4K.
# Batch-1 decode of the Qwen3-8B shape at 4K under the settings given.
qwen3_tg() { local label=$1; shift; echo "-- qwen3-8b, $label"
  within 90 env "$@" "$build/podkv" bench -m configs/qwen3-8b --device cuda --random-weights --kv-dtype bf16 \
    --page-tokens 64 -p 0 -n 32 -d 4096 -r 2 | grep -E "tg" ; }
qwen3_bench() {
  echo "-- qwen3-8b ($SECONDS s)"
  within 120 "$build/podkv" bench -m configs/qwen3-8b --device cuda --random-weights --kv-dtype bf16 --page-tokens 64 \
    -p 4096 -n 32 -d 4096 -r 2 2>&1 | grep -E "pp|tg|copy"
}
# Batch-1 decode at DEPTH, the defaults against PODKV_CUDA_CHAIN_DYNAMIC=0, PASSES interleaved passes.
dyn_ab() {
  for pass in $(seq 1 "${PASSES:-2}"); do
    for setting in PODKV_NONE=0 PODKV_CUDA_CHAIN_DYNAMIC=0; do
      # shellcheck disable=SC2086
      tg "${DEPTH:-4096}, $setting" $setting
    done
  done
}
# Nsight Compute's kernel durations of batch-8 decode steps at 8K (the widest gap to the copy rate left
# in decode: session 42, 53% of copy on an H200).
durations_b8() {
  echo "-- ncu durations, decode batch 8 at 8K ($SECONDS s)"
  within 120 "$(command -v ncu)" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 8192 -b 8 -r 1 >"$out/ncu_decode8k_b8.csv" 2>/tmp/ncu.err; echo "rc $?"; tail -3 /tmp/ncu.err
}
# Qwen3-8B, batch 1 at 4K: the norms inside the split + RoPE + KV write against their own launch, two passes.
qwen_ab() {
  for pass in 1 2; do qwen3_tg "fused norms" PODKV_NONE=0; qwen3_tg "norms apart" PODKV_CUDA_QK_NORM_FUSE=0; done
}
# The decode knobs on the H200 (most were tuned on H100s), Llama-3-8B shape, batch 1 at 4K, one pass each.
sweep() {
  for setting in PODKV_NONE=0 PODKV_CUDA_CHAIN_PREFETCH=0 PODKV_CUDA_CHAIN_PREFETCH=2048 PODKV_CUDA_CHAIN_GROUP=4 \
                 PODKV_CUDA_CHAIN_WARPS=24 PODKV_CUDA_CHAIN_SLICES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=32 \
                 PODKV_CUDA_DECODE_SPLIT_KEYS=128 PODKV_CUDA_DECODE_STAGES=3 PODKV_CUDA_MERGE_PREFETCH=0 PODKV_CUDA_CHAIN_DYNAMIC=0 PODKV_NONE=0; do
    # shellcheck disable=SC2086
    tg "4096, $setting" $setting
  done
}
# Logits one token per step (every step a decode step through the chain, bf16 weights and cache) of two
# fixtures with the chain's tasks handed out by counters and fixed: the same bytes.
dyn_logits() {
  local e=/tmp/dyn-e2e; mkdir -p $e
  for m in llama_gqa qwen2_bias; do
    local dir=tests/fixtures/models/$m
    for setting in PODKV_NONE=0 PODKV_CUDA_CHAIN_DYNAMIC=0; do
      env $setting "$build/podkv" logits -m $dir --ids-file $dir/reference.safetensors --chunk 1 \
        --out $e/$m.$setting.safetensors --kv-dtype bf16 --device cuda >/dev/null 2>&1 || echo "logits $m $setting failed"
    done
    cmp $e/$m.PODKV_NONE=0.safetensors $e/$m.PODKV_CUDA_CHAIN_DYNAMIC=0.safetensors && echo "$m: dynamic and fixed tasks, the same logits bytes"
    python3 scripts/compare_logits.py $e/$m.PODKV_NONE=0.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95
  done
}
case ${PART:-test} in
dyn)
  ops "PODKV_NONE=0 decode_chain" "PODKV_CUDA_CHAIN_DYNAMIC=0 decode_chain"
  dyn_logits
  PASSES=3 DEPTH=4096 dyn_ab
  chain_gtests PODKV_NONE=0 PODKV_CUDA_CHAIN_DYNAMIC=0
  PASSES=2 DEPTH=32735 dyn_ab
  ;;
test)
  test_gpu_whole; bench 1 150; cat "$out/bench.txt"
  ;;
all)
  # One call for both (little device time): the chain's op cases both ways, the logits bytes, batch-1
  # decode at 4K (two interleaved passes), then scripts/test_gpu.sh whole as time allows.
  ops "PODKV_NONE=0 decode_chain" "PODKV_CUDA_CHAIN_DYNAMIC=0 decode_chain"
  dyn_logits
  PASSES=2 DEPTH=4096 dyn_ab
  test_gpu_whole
  ;;
ab)
  # After PART=test on the same warm machine: the Qwen3 A/B, part 1 and the Qwen3-8B shape, the sweep.
  qwen_ab; bench 1 150; qwen3_bench; cat "$out/bench.txt"; sweep
  echo "-- at 32K, the defaults against session 42's chain"; DEPTH=32735 chain_ab; durations_b8
  ;;
*)
  echo "unknown PART=${PART:-}"
  ;;
esac
echo "done ($SECONDS s)"
