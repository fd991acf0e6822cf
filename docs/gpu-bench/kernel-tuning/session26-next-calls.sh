#!/usr/bin/env bash
# Ran in session 27 (session27-2026-12-05.md: calls 1-5 used PART=first, decode, land, gputests,
# confirm); the four patches then landed, so on later trees the apply step stops (the chain's defaults
# changed after them: 5e28ac6). Kept as the record of those calls.
# The device calls that test and time the untested patches of sessions 25 and 26 (both written with
# no GPU lent; see session25-2026-12-04.md and session26-2026-12-05.md). It replaced session 25's
# script (removed). All four apply to the commit that added this script, together or alone:
#   session26-decode-chain-untested.patch  src/cuda/decode_chain.cu (+ decode_chain_plan.h,
#       gemv_row.cuh), CudaBackendOps::decode_chain, CudaBackend::run_layers, two tests: a decode
#       row's o, gate | up, down and the next layer's q | k | v in one cooperative launch, a grid
#       barrier between them, each block asking its next share of weights into L2 before it waits
#       (on by default; PODKV_CUDA_DECODE_FUSE=swiglu: the per-launch kernels as before;
#       PODKV_CUDA_CHAIN_WARPS=8 blocks of 8 warps, three per multiprocessor, instead of one of 24;
#       PODKV_CUDA_CHAIN_BLOCKS=N, PODKV_CUDA_CHAIN_PREFETCH=B bytes per row asked into L2,
#       PODKV_CUDA_CHAIN_SLICES=N, PODKV_CUDA_CHAIN_COOPERATIVE=0: a plain launch);
#   session25-decode-untested.patch  src/cuda/attention_decode.cu (+ sm90a/barriers.cuh, wgmma.cuh):
#       decode_mma_kernel with 32-bit index arithmetic, the tile's pages looked up once per tile,
#       and its tiles brought in by bulk copies, one entry per lane into padded rows
#       (PODKV_CUDA_DECODE_COPY=bulk, the default on compute capability 9.0+; =tile: 16-byte
#       cp.async per lane from the tile's pages; =lane: each lane looks its own entries up, as with
#       pages under 16 tokens); the merge loading its chunks' outputs before the statistics'
#       reductions (PODKV_CUDA_MERGE_PREFETCH=0: after, as before);
#   session25-gemm-tuning-untested.patch  src/cuda/gemm_lt.{h,cpp}, tests/test_cuda_gemm.cpp: the
#       bf16 GEMMs through cuBLASLt, the algorithm of 1024+ rows timed once per power-of-two bucket
#       (PODKV_CUDA_GEMM_TUNE=0: cublasGemmEx as before; =first: cuBLASLt's first candidate);
#   session25-prefill-loop-untested.patch  src/cuda/sm90a/attention_prefill_producer.cu,
#       wgmma_tile.cuh: the default 64-key prefill loop with its wgmma descriptors computed once and
#       its stage and phase as running counters (no switch: timed against build-base).
# The device gets neither .git nor (kept under the 64 MiB a call carries) docs/ and the large model
# files, so first, here:
#   mkdir -p .data/run && cp docs/gpu-bench/kernel-tuning/session2[56]-* .data/run/
#   git archive HEAD -- CMakeLists.txt src tools scripts/check_layers.py configs | gzip >.data/run/base-src.tar.gz
#   scripts/fill_deps.sh
#   git rm -r -q --cached docs models/podkv-long/model.safetensors models/podkv-long-pod/model.safetensors
#   (and those three paths in .git/info/exclude; `git reset -q docs models` and the exclude file back after)
# then `run` from the repository root with carry [".deps", ".data/run"], one part per call so each
# stays well under 600 s:
#   PART=check timeout -k 5 560 bash .data/run/session26-next-calls.sh; tail -c 8000 $OUT/summary.txt
#   PART=land    the chain's settings timed, the best exported for its tests and podkv vs SDPA
#   PART=confirm the committed defaults: the chain's tests, decode with the chain and without
#   PART=gputests  scripts/test_gpu.sh alone (under settings exported by the command)
#   PART=first   (device time short) the check's core tests, then decode and prefill timings, then the
#                rest, each step only while the call has time
#   PART=check   apply the patches, build them and (in the background) the tree without them
#                (build-base, from base-src.tar.gz); every CUDA op with the defaults and the
#                attention / matmul cases under each switch; the new and the affected gtests, the
#                chain's tests again under each of its knobs
# Every GPU command runs under `timeout` (a grid barrier that never opens would otherwise take the
# whole call); the logs go to /tmp/logs and come back as one $OUT/logs.tgz beside summary.txt.
#   PART=decode  batch-1 decode at 4K and 32K: build-base and the patched build's settings,
#                interleaved, two passes (the chain on and off, its knobs, the decode attention's);
#                batch 32 at 8K with and without the GEMM tuning; a --profile at 4K with the chain
#   PART=prefill prefill at 4K and 32K: build-base, the patched build with and without the GEMM
#                tuning, two passes; --profile of 32K under each
#   PART=final   (once the switches that lose are settled) scripts/test_gpu.sh on the patched
#                build, then prefill and batch-1 decode interleaved with transformers' SDPA
#                prefill in the same call: the closing evidence for landing
# Builds stay on the machine between calls while it is held (30 s idle): run the parts back to back
# (a fresh machine builds again: the copy of the tree it gets has the patches unapplied).
# Then, if the patches hold: commit them (without their switches where they lose), run
# scripts/test_gpu.sh, and time the README's table with the SDPA peer in the same call.
set -uo pipefail
root=$(pwd)
out=${OUT:-/tmp/out}
logs=/tmp/logs
mkdir -p "$out" "$logs"
exec >"$out/summary.txt" 2>&1
trap 'tar -czf "$out/logs.tgz" -C /tmp logs 2>/dev/null' EXIT
build=$root/build-cuda base=$root/build-base
here=$(cd "$(dirname "$0")" && pwd)  # the patches and base-src.tar.gz beside this script
. scripts/use_deps_pcre2.sh && use_deps_pcre2 "$root"
. scripts/use_deps_httplib.sh && use_deps_httplib "$root"
configure=(-DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF)
if [ "${PART:-check}" != land ] && [ "${PART:-check}" != gputests ] && [ "${PART:-check}" != confirm ] && [ ! -x "$base/podkv" ] && [ -f "$here/base-src.tar.gz" ]; then
  rm -rf "$base" && mkdir -p "$base/src"
  tar -xzf "$here/base-src.tar.gz" -C "$base/src"
  (cmake -S "$base/src" -B "$base" "${configure[@]}" -DPODKV_TESTS=OFF >"$logs/base_build.log" 2>&1 &&
    cmake --build "$base" -j 6 --target podkv_cli >>"$logs/base_build.log" 2>&1) &
fi
# A patch is applied, or found applied (it reverses cleanly), or the script stops: a tree with one
# patch half there would build the wrong thing, or not at all.
applies() { if command -v git >/dev/null; then git apply --check "$@" "$patch" 2>/dev/null; else
  patch -p1 -N --dry-run $([ "${1:-}" = -R ] && echo -R) <"$patch" >/dev/null 2>&1; fi; }
for p in session26-decode-chain-untested session25-decode-untested session25-gemm-tuning-untested \
         session25-prefill-loop-untested; do
  patch=$here/$p.patch
  if applies -R; then echo "$p: already applied"
  elif applies; then
    if command -v git >/dev/null; then git apply "$patch"; else patch -p1 -N <"$patch" >/dev/null; fi
    echo "applied $p"
  else echo "FAILED: $p neither applies nor is applied"; exit 1; fi
done
cmake -S . -B "$build" "${configure[@]}" -DPODKV_TESTS=ON >"$logs/configure.log" 2>&1 ||
  { tail -20 "$logs/configure.log"; exit 1; }
cmake --build "$build" -j 10 --target podkv_cli podkv_tests podkv_test_backend_ops >"$logs/build.log" 2>&1 ||
  { grep -E "error|Error" "$logs/build.log" | head -30; exit 1; }
wait
[ -x "$base/podkv" ] || { echo "baseline build failed:"; grep -E "error|Error" "$logs/base_build.log" | head; }
echo "builds: ok ($SECONDS s)"
ops=$build/podkv_test_backend_ops
args=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
bench() { timeout -k 5 90 "$@"; }  # one podkv bench run

# within(N, cmd...): cmd under a timeout of N s or what is left of the call's 530 s, whichever is less;
# nothing when under 15 s are left (PART=first orders its steps by what matters most).
within() { local n=$1 rem=$((530 - SECONDS)); shift; [ $rem -ge 15 ] || { echo "skipped (time): $*"; return 124; }
  timeout -k 5 $((n < rem ? n : rem)) "$@"; }
case ${PART:-check} in
land)
  # The chain's settings at 4K and 32K, two passes; the best at 4K (sum of both passes) is exported
  # for the rest: the fixtures and graphs tests, --profile, then podkv against transformers' SDPA.
  declare -A sum
  settings=("PODKV_CUDA_DECODE_FUSE=swiglu" "PODKV_CUDA_NONE=0" "PODKV_CUDA_CHAIN_PREFETCH=0"
            "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=2"
            "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=2 PODKV_CUDA_CHAIN_PREFETCH=0"
            "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=2 PODKV_CUDA_CHAIN_PREFETCH=1024"
            "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=1"
            "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=1 PODKV_CUDA_CHAIN_PREFETCH=0")
  for pass in 1 2; do
    for setting in "${settings[@]}"; do
      lines=$(within 60 env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| .*tg")
      echo "== pass $pass: $setting"; echo "$lines"
      v=$(echo "$lines" | head -1 | awk -F'|' '{ print $8 + 0 }')
      sum[$setting]=$(awk -v a="${sum[$setting]:-0}" -v b="${v:-0}" 'BEGIN { print a + b }')
    done
  done
  best=${settings[0]}
  for setting in "${settings[@]}"; do
    awk -v a="${sum[$setting]}" -v b="${sum[$best]}" 'BEGIN { exit !(a > b) }' && best=$setting
  done
  echo "PICKED: $best (4K sum of two passes ${sum[$best]}; chain off ${sum[${settings[0]}]})"
  export $best
  within 120 "$build/podkv_tests" --gtest_filter='CudaDecodeChain.*:Models/CudaFixture.*:CudaGraphs.*' \
    >"$logs/gtests_picked.log" 2>&1
  echo "gtests with $best: $(grep -E "PASSED|FAILED" "$logs/gtests_picked.log" | head -3 | tr '\n' ' ')"
  grep -A8 "Failure" "$logs/gtests_picked.log" | head -20
  echo "== batch 1 at 4K by region ($best)"
  within 60 "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096 -r 1 --profile 2>&1 | grep -A16 "by region"
  for pass in 1 2; do
    echo "== podkv, pass $pass ($best)"
    within 90 "$build/podkv" "${args[@]}" -p 4096,32768 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| "
    if [ $pass = 1 ]; then
      echo "== transformers SDPA"
      within 150 python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out "$logs/sdpa.json" \
        --prefill 4096,32768 --decode "" --attn sdpa 2>&1 | tail -8
    fi
  done
  echo "land: done ($SECONDS s)"
  ;;
confirm)
  # The defaults as committed (no knob set): the chain's and the fixtures' tests, then decode with the
  # chain and without, interleaved.
  within 120 "$build/podkv_tests" --gtest_filter='CudaDecodeChain.*:DecodeChainPlan.*:Models/CudaFixture.*:CudaGraphs.*' \
    >"$logs/gtests_defaults.log" 2>&1
  echo "gtests: $(grep -E "PASSED|FAILED" "$logs/gtests_defaults.log" | head -3 | tr '\n' ' ')"
  grep -A8 "Failure" "$logs/gtests_defaults.log" | head -20
  for setting in "PODKV_CUDA_NONE=0" "PODKV_CUDA_DECODE_FUSE=swiglu" "PODKV_CUDA_NONE=0" "PODKV_CUDA_DECODE_FUSE=swiglu"; do
    echo "== decode: $setting"
    within 60 env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| .*tg"
  done
  echo "confirm: done ($SECONDS s)"
  ;;
gputests)
  # scripts/test_gpu.sh alone, under the settings exported by the command line.
  within 500 scripts/test_gpu.sh "$build" "$logs/test_gpu" >"$logs/test_gpu.txt" 2>&1
  echo "test_gpu: rc $? ($SECONDS s)"; grep -E "cases, |PASSED|FAILED|test_gpu:|NOT RUN" "$logs/test_gpu.txt" | head -40
  ;;
first)
  # The session's first call when device time is short: the chain's correctness, then its timing,
  # then the rest of check, each step only if the call has time left for it.
  status=0
  OMP_WAIT_POLICY=PASSIVE within 150 "$ops" --backend cuda >"$logs/ops.log" 2>&1 || status=1
  echo "every CUDA op, defaults: $(tail -1 "$logs/ops.log")"; grep FAIL "$logs/ops.log" | head
  within 150 "$build/podkv_tests" \
    --gtest_filter='CudaDecodeChain.*:DecodeChainPlan.*:CudaGemm.*:Models/CudaFixture.*:CudaGraphs.*:CudaFusedOps.*' \
    >"$logs/gtests.log" 2>&1 || status=1
  grep -E "FAILED|PASSED" "$logs/gtests.log" | head -20; grep -A8 "Failure" "$logs/gtests.log" | head -40
  echo "tests: status $status ($SECONDS s)"
  for setting in base "PODKV_CUDA_NONE=0" "PODKV_CUDA_DECODE_FUSE=swiglu"; do
    echo "== decode: $setting ($SECONDS s)"
    if [ "$setting" = base ]; then within 90 "$base/podkv" "${args[@]}" -p 0 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| .*tg"
    else within 90 env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| .*tg"; fi
  done
  for setting in base "PODKV_CUDA_NONE=0" "PODKV_CUDA_GEMM_TUNE=0"; do
    echo "== prefill: $setting ($SECONDS s)"
    if [ "$setting" = base ]; then within 90 "$base/podkv" "${args[@]}" -p 4096,32768 -n 0 -r 2 2>&1 | grep -E "^\| .*pp"
    else within 90 env $setting "$build/podkv" "${args[@]}" -p 4096,32768 -n 0 -r 2 2>&1 | grep -E "^\| .*pp"; fi
  done
  for setting in "PODKV_CUDA_NONE=0" "PODKV_CUDA_DECODE_FUSE=swiglu"; do
    echo "== decode at 4K by region: $setting"
    within 60 env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096 -r 1 --profile 2>&1 | grep -A16 "by region"
  done
  for check in "PODKV_CUDA_DECODE_COPY=tile attention" "PODKV_CUDA_MERGE_PREFETCH=0 attention" \
               "PODKV_CUDA_GEMM_TUNE=0 matmul"; do
    setting=${check% *} op=${check##* }
    log=$logs/ops_${setting%%=*}_${setting##*=}.log
    OMP_WAIT_POLICY=PASSIVE within 60 env "$setting" "$ops" --op "$op" --backend cuda >"$log" 2>&1 || status=1
    echo "$op with $setting: $(tail -1 "$log")"; grep FAIL "$log" | head -5
  done
  echo "first: status $status ($SECONDS s)"
  ;;
check)
  status=0
  OMP_WAIT_POLICY=PASSIVE timeout -k 5 150 "$ops" --backend cuda >"$logs/ops.log" 2>&1 || status=1
  echo "every CUDA op, defaults: $(tail -1 "$logs/ops.log")"; grep FAIL "$logs/ops.log" | head
  for check in "PODKV_CUDA_DECODE_COPY=tile attention" "PODKV_CUDA_DECODE_COPY=lane attention" \
               "PODKV_CUDA_DECODE_STAGES=2 attention" "PODKV_CUDA_DECODE_STAGES=4 attention" \
               "PODKV_CUDA_DECODE_STAGES=0 attention" "PODKV_CUDA_MERGE_PREFETCH=0 attention" \
               "PODKV_CUDA_PREFILL_STEP=128 attention" "PODKV_CUDA_PREFILL_PRODUCER=0 attention" \
               "PODKV_CUDA_GEMM_TUNE=0 matmul" "PODKV_CUDA_GEMM_TUNE=first matmul"; do
    setting=${check% *} op=${check##* }
    log=$logs/ops_${setting%%=*}_${setting##*=}.log
    OMP_WAIT_POLICY=PASSIVE timeout -k 5 60 env "$setting" "$ops" --op "$op" --backend cuda >"$log" 2>&1 || status=1
    echo "$op with $setting: $(tail -1 "$log")"; grep FAIL "$log" | head -5
  done
  timeout -k 5 200 "$build/podkv_tests" \
    --gtest_filter='CudaDecodeChain.*:DecodeChainPlan.*:CudaGemm.*:CudaFusedOps.*:CudaGraphs.*:Models/CudaFixture.*:CudaSampling.*:*CudaAnalyze*' \
    >"$logs/gtests.log" 2>&1 || status=1
  grep -E "FAILED|PASSED" "$logs/gtests.log" | head -20; grep -A8 "Failure" "$logs/gtests.log" | head -40
  # The chain under each of its knobs (another kernel, another grid, other slices): its own tests.
  for setting in "PODKV_CUDA_CHAIN_WARPS=8" "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=2" \
                 "PODKV_CUDA_CHAIN_SLICES=1" "PODKV_CUDA_CHAIN_SLICES=8" "PODKV_CUDA_CHAIN_PREFETCH=0" \
                 "PODKV_CUDA_CHAIN_COOPERATIVE=0"; do
    log=$logs/chain_$(echo "$setting" | tr ' =' '__').log
    timeout -k 5 60 env $setting "$build/podkv_tests" --gtest_filter='CudaDecodeChain.*' >"$log" 2>&1 || status=1
    echo "the chain's tests with $setting: $(grep -E "PASSED|FAILED" "$log" | head -2 | tr '\n' ' ')"
    grep -A8 "Failure" "$log" | head -12
  done
  echo "check: status $status ($SECONDS s)"
  ;;
decode)
  # base: the tree without the patches; PODKV_CUDA_NONE=0: the patched build's defaults (a no-op
  # variable); =swiglu: the patched build without the chain. Two passes at 4K and 32K.
  for pass in 1 2; do
    for setting in base "PODKV_CUDA_NONE=0" "PODKV_CUDA_DECODE_FUSE=swiglu"; do
      echo "== pass $pass: $setting"
      if [ "$setting" = base ]; then bench "$base/podkv" "${args[@]}" -p 0 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| .*tg"
      else bench env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| .*tg"; fi
    done
  done
  # The knobs, once each at 4K, between two runs of the defaults.
  for setting in "PODKV_CUDA_NONE=0" "PODKV_CUDA_CHAIN_WARPS=8" "PODKV_CUDA_CHAIN_WARPS=8 PODKV_CUDA_CHAIN_BLOCKS=2" \
                 "PODKV_CUDA_CHAIN_PREFETCH=0" "PODKV_CUDA_CHAIN_PREFETCH=16384" "PODKV_CUDA_CHAIN_SLICES=1" \
                 "PODKV_CUDA_CHAIN_COOPERATIVE=0" "PODKV_CUDA_DECODE_COPY=tile" "PODKV_CUDA_MERGE_PREFETCH=0" \
                 "PODKV_CUDA_NONE=0"; do
    echo "== 4K: $setting"
    bench env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096 -r 2 2>&1 | grep -E "^\| .*tg"
  done
  for setting in "PODKV_CUDA_NONE=0" "PODKV_CUDA_GEMM_TUNE=0"; do
    echo "== batch 32 at 8K: $setting"
    bench env $setting "$build/podkv" "${args[@]}" -p 0 -n 16 -d 8192 -b 32 --kv-memory 96G -r 2 2>&1 | grep -E "^\| .*tg"
  done
  for setting in "PODKV_CUDA_NONE=0" "PODKV_CUDA_DECODE_FUSE=swiglu"; do
    echo "== batch 1 at 4K by region: $setting"
    bench env $setting "$build/podkv" "${args[@]}" -p 0 -n 32 -d 4096 -r 1 --profile 2>&1 | grep -A16 "by region"
  done
  echo "decode: done ($SECONDS s)"
  ;;
prefill)
  for pass in 1 2; do
    for setting in base "PODKV_CUDA_NONE=0" "PODKV_CUDA_GEMM_TUNE=0"; do
      echo "== pass $pass: $setting"
      if [ "$setting" = base ]; then bench "$base/podkv" "${args[@]}" -p 4096,32768 -n 0 -r 2 2>&1 | grep -E "^\| .*pp"
      else bench env $setting "$build/podkv" "${args[@]}" -p 4096,32768 -n 0 -r 2 2>&1 | grep -E "^\| .*pp"; fi
    done
  done
  for setting in "PODKV_CUDA_NONE=0" "PODKV_CUDA_GEMM_TUNE=0"; do
    echo "== 32K by region: $setting"
    bench env $setting "$build/podkv" "${args[@]}" -p 32768 -n 0 -r 1 --profile 2>&1 | grep -A20 "by region"
  done
  echo "prefill: done ($SECONDS s)"
  ;;
final)
  timeout -k 5 330 scripts/test_gpu.sh "$build" "$logs/test_gpu" >"$logs/test_gpu.txt" 2>&1
  echo "test_gpu: rc $? ($SECONDS s)"; grep -E "cases, |PASSED|FAILED|test_gpu:" "$logs/test_gpu.txt" | head -30
  for pass in 1 2; do
    echo "== podkv, pass $pass"
    bench "$build/podkv" "${args[@]}" -p 4096,32768 -n 32 -d 4096,32735 -r 2 2>&1 | grep -E "^\| "
    if [ $pass = 1 ]; then
      echo "== transformers SDPA"
      timeout -k 5 150 python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out "$logs/sdpa.json" \
        --prefill 4096,32768 --decode "" --attn sdpa 2>&1 | tail -8
    fi
  done
  echo "final: done ($SECONDS s)"
  ;;
esac
