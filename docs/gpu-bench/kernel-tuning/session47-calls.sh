#!/usr/bin/env bash
# Session 47's device calls (session46-calls.sh's helpers with this session's parts). Copy this to .data/run/
# (ignored) and run it from the repository root on the device machine, with `carry` [".deps",
# ".data/run"] and docs/ and the long models' weights out of the index while the call runs (the 64 MiB
# limit on a tree that travels; commit nothing meanwhile):
#   printf '/docs/\n/models/podkv-long/model.safetensors\n/models/podkv-long-pod/model.safetensors\n' >.git/info/exclude
#   git rm -r -q --cached docs models/podkv-long/model.safetensors models/podkv-long-pod/model.safetensors
#   ... the call ...
#   git reset -q docs models && : >.git/info/exclude
# Parts:
#   PART=fold       decode attention merging its own chunks (PODKV_CUDA_DECODE_FOLD): the attention op cases
#                   with it and without (and with 16-key chunks), the gtests that reach it, batch-1 decode
#                   at 4K (three interleaved passes) and 32K (two) with it against PODKV_CUDA_DECODE_FOLD=0,
#                   then bench_gpu.sh part 1, the Qwen3-8B shape and the kernel durations as time allows
#   PART=h200final  (needs_h200) session 46's: the CudaFusedOps and CudaFixture gtests, part 1, the Qwen3-8B
#                   shape, the durations, the chain A/B at 4K, part 4 as time allows
#   PART=test       scripts/test_gpu.sh whole on the tree as it is
#   PART=ab         (a warm machine after PART=test) the Qwen3 A/B below, part 1, the Qwen3-8B shape, the sweep
#   PART=tg         batch-1 decode at 4K alone, with and without the fold
#   PART=prebuilt   (PREBUILT=.data/bin) with binaries built on the workstation: the kv_write op cases, the
#                   Qwen3 fixture's logits one token per step against the CPU and transformers, its norms
#                   in the RoPE launch against their own launch, the Qwen3 A/B, the sweep as time allows
#   PART=qwen       Qwen3's q and k norms inside the split + RoPE + KV write (PODKV_CUDA_QK_NORM_FUSE): the
#                   kv_write op cases (the fused norms against head_rms_norm's launch, exactly), the fused
#                   ops and fixture gtests, the Qwen3-8B shape's batch-1 decode at 4K with it against
#                   PODKV_CUDA_QK_NORM_FUSE=0 (two interleaved passes), then a sweep of the decode knobs on
#                   the Llama-3-8B shape at 4K
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
if [ -n "${PREBUILT:-}" ]; then
  # Binaries built on the workstation and carried in $PREBUILT (PART=prebuilt).
  build=$root/$PREBUILT
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
# Batch-1 decode at DEPTH, the defaults against PODKV_CUDA_DECODE_FOLD=0, PASSES interleaved passes.
fold_ab() {
  for pass in $(seq 1 "${PASSES:-2}"); do
    for setting in PODKV_NONE=0 PODKV_CUDA_DECODE_FOLD=0; do
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
                 PODKV_CUDA_DECODE_SPLIT_KEYS=128 PODKV_CUDA_DECODE_STAGES=3 PODKV_CUDA_MERGE_PREFETCH=0 PODKV_NONE=0; do
    # shellcheck disable=SC2086
    tg "4096, $setting" $setting
  done
}
# The Qwen3 fixture's logits one token per step (decode steps: the chain with bf16 weights, the
# per-launch kernels with f32), the norms inside the RoPE launch and apart, against the CPU and
# transformers (scripts/compare_logits.py), and the two settings against each other exactly.
qwen_logits() {
  local dir=tests/fixtures/models/qwen3_qk_norm e=/tmp/qwen-e2e; mkdir -p $e
  local ref=$dir/reference.safetensors
  "$build/podkv" logits -m $dir --ids-file $ref --chunk 1 --out $e/cpu.safetensors --kv-dtype f32 --device cpu
  for setting in PODKV_NONE=0 PODKV_CUDA_QK_NORM_FUSE=0; do
    env $setting "$build/podkv" logits -m $dir --ids-file $ref --chunk 1 --out $e/f32.$setting.safetensors --kv-dtype f32 \
      --device cuda --cuda-weights f32
    env $setting "$build/podkv" logits -m $dir --ids-file $ref --chunk 1 --out $e/bf16.$setting.safetensors \
      --kv-dtype bf16 --device cuda
  done
  echo "cuda f32 (norms in the RoPE launch) against cpu, against transformers:"
  python3 scripts/compare_logits.py $e/f32.PODKV_NONE=0.safetensors $e/cpu.safetensors --tol 1e-4
  python3 scripts/compare_logits.py $e/f32.PODKV_NONE=0.safetensors $ref --tol 1e-3
  echo "cuda bf16 against transformers with bf16 weights:"
  python3 scripts/compare_logits.py $e/bf16.PODKV_NONE=0.safetensors $dir/reference_bf16w.safetensors --tol 8e-2 --top1 0.95
  echo "norms in the RoPE launch against their own launch (f32, bf16: the same bits):"
  python3 scripts/compare_logits.py $e/f32.PODKV_NONE=0.safetensors $e/f32.PODKV_CUDA_QK_NORM_FUSE=0.safetensors --tol 0
  python3 scripts/compare_logits.py $e/bf16.PODKV_NONE=0.safetensors $e/bf16.PODKV_CUDA_QK_NORM_FUSE=0.safetensors --tol 0
  cmp $e/f32.PODKV_NONE=0.safetensors $e/f32.PODKV_CUDA_QK_NORM_FUSE=0.safetensors && echo "f32 files identical"
  cmp $e/bf16.PODKV_NONE=0.safetensors $e/bf16.PODKV_CUDA_QK_NORM_FUSE=0.safetensors && echo "bf16 files identical"
}
case ${PART:-test} in
fold)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_DECODE_FOLD=0 attention" "PODKV_CUDA_DECODE_SPLIT_KEYS=16 attention" \
      "PODKV_CUDA_DECODE_FOLD=0 PODKV_CUDA_DECODE_SPLIT_KEYS=16 attention"
  within 150 "$build/podkv_tests" --gtest_filter='CudaDecodeFold.*:Models/CudaFixture.*:CudaDecodeChain.*:CudaGraphs.*:CudaPromptPath.*' \
    >"$out/gtests.txt" 2>&1
  echo "gtests rc $?: $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"; grep -E "FAILED" "$out/gtests.txt" | head
  PASSES=3 DEPTH=4096 fold_ab; PASSES=2 DEPTH=32735 fold_ab
  bench 1 150; qwen3_bench; durations bf16; cat "$out/bench.txt"
  ;;
h200final)
  within 120 "$build/podkv_tests" --gtest_filter='CudaFusedOps.*:Models/CudaFixture.*' >"$out/gtests.txt" 2>&1
  echo "gtests rc $?: $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"; grep -E "FAILED" "$out/gtests.txt" | head
  bench 1 150; qwen3_bench; durations bf16; chain_ab; bench 4 150; cat "$out/bench.txt"
  ;;
test)
  test_gpu_whole
  ;;
tg)
  PASSES=1 DEPTH=4096 fold_ab
  ;;
qwen)
  ops "PODKV_NONE=0 kv_write"
  within 150 "$build/podkv_tests" --gtest_filter='CudaFusedOps.*:Models/CudaFixture.*:CudaDecodeChain.*' >"$out/gtests.txt" 2>&1
  echo "gtests rc $?: $(grep -E '^\[  (PASSED|FAILED)' "$out/gtests.txt" | tr '\n' ' ')"; grep -E "FAILED" "$out/gtests.txt" | head
  qwen_ab; sweep
  ;;
prebuilt)
  # Little device time: binaries built here (PREBUILT=.data/bin: podkv and podkv_test_backend_ops, a
  # CUDA build without -march=native, Cairo, sentencepiece or cpp-httplib), no build on the device.
  ops "PODKV_NONE=0 kv_write"
  qwen_logits
  qwen_ab; sweep
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
