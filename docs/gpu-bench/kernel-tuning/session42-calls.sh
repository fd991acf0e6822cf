#!/usr/bin/env bash
# Session 42's device calls: session41-calls.sh (renamed; `git show 24bcfba:docs/gpu-bench/kernel-tuning/
# session41-calls.sh`) plus PART=sweep. Session 41's: session40-calls.sh (renamed; `git show 32b9218:docs/gpu-bench/kernel-tuning/
# session40-calls.sh`) plus PART=merge. Session 40's: session39-calls.sh (renamed; `git show 84c6a6a:docs/gpu-bench/kernel-tuning/
# session39-calls.sh`) plus PART=kernels. Session 39's: session38-calls.sh (renamed; `git show d4191cd:docs/gpu-bench/kernel-tuning/
# session38-calls.sh`) plus PART=h200. Session 38's: session37-calls.sh (renamed; `git show 1777730:docs/gpu-bench/kernel-tuning/
# session37-calls.sh`) plus PART=qbf16. Session 37's: session35-calls.sh (renamed; `git show abdd298:docs/gpu-bench/kernel-tuning/
# session35-calls.sh`) plus PART=ab. Session 35's: session34-calls.sh (renamed; `git show f74bce5:docs/gpu-bench/kernel-tuning/
# session34-calls.sh`) plus PART=walk. Session 34's: session33-calls.sh (renamed; `git show
# b221cdd:docs/gpu-bench/kernel-tuning/session33-calls.sh`) plus PART=probe. Session 33's: session32-calls.sh (renamed; `git show 931523b:docs/gpu-bench/kernel-tuning/
# session32-calls.sh`) plus PART=refresh; session31-calls.sh's parts came with it (`git show
# 63ac81b:docs/gpu-bench/kernel-tuning/session31-calls.sh`). Copy this to .data/run/ (ignored) and run it from the
# repository root on the device machine, with `carry` [".deps", ".data/run"] and, since a tree that
# travels is limited to 64 MiB, docs/ and the long models' weights out of the index while the call
# runs (commit nothing meanwhile):
#   printf '/docs/\n/models/podkv-long/model.safetensors\n/models/podkv-long-pod/model.safetensors\n' >.git/info/exclude
#   git rm -r -q --cached docs models/podkv-long/model.safetensors models/podkv-long-pod/model.safetensors
#   ... the call ...
#   git reset -q docs models && : >.git/info/exclude
# BASE=1 builds build-base beside build-cuda from .data/run/base-src.tar.gz (`git archive HEAD --
# CMakeLists.txt src tools scripts configs | gzip` of the tree to compare against).
#   PART=qbf16    BASE=1 TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is (Q in bf16 from
#                 the RoPE kernel on the prompt path; build-base: the tree before): the gtests CudaPromptPath.*,
#                 CudaGraphs.* and Models/CudaFixture.*; the attention and kv_write op cases; prefill at 4K and
#                 32K, the default against PODKV_CUDA_PREFILL_Q_BF16=0, build-base and the experiment
#                 PODKV_CUDA_PREFILL_QKV_BF16=1 (q | k | v from their GEMM in bf16), three interleaved passes;
#                 the --profile regions of a 32K prompt; transformers' SDPA alternating with podkv; then
#                 scripts/test_gpu.sh whole as time allows
#   PART=h200     TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is, the issue's benchmark on
#                 the card this call gets (meant for an H200: part 3's 96 GiB of cache does not fit an H100):
#                 scripts/bench_gpu.sh parts 1 and 4, the step's kernel durations (Nsight Compute), parts 2
#                 and 3, and part 5 as time allows (then PART=test on the warm machine: scripts/test_gpu.sh)
#   PART=pairs    TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": two warps a decode split
#                 (PODKV_CUDA_DECODE_PAIRS=1, off by default): the attention op cases with it at the default
#                 stages and with two stages (and tile copies), the gtests Models/CudaFixture.* and CudaGraphs.*
#                 with it and two stages; batch-1 decode at 4K, the default, DECODE_STAGES=2 and DECODE_STAGES=2
#                 with pairs, three interleaved passes; the three at 32K once; Nsight Compute's durations of the
#                 attention kernel and its merge at 4K for the three
#   PART=stages2  TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": decode attention's ring in two
#                 stages by default (it was three): scripts/test_gpu.sh whole (its attention cases also with
#                 PODKV_CUDA_DECODE_STAGES=3), then decode against PODKV_CUDA_DECODE_STAGES=3 interleaved: batch 1
#                 at 4K and 32K (three passes), batches 8 and 32 at 8K and 8 at 32K, dense and PoD (two passes);
#                 then on an H200 scripts/bench_gpu.sh as time allows
#   PART=next     CUDA_FLAGS=-lineinfo (podkv_cli only; written in session 39 for the next call, not yet run):
#                 where decode attention's time goes at batch 1 (session 39: two warps a split took only 3% off
#                 the kernel): Nsight Compute's SourceCounters, WarpStateStats and InstructionStats of one
#                 decode_mma_kernel launch at 4K with its SASS (decode_mma_sass.csv, decode_mma_details.txt);
#                 then PODKV_CUDA_PDL=1 against the default at 4K and 32K (three interleaved passes; session 31:
#                 1.005x / 0.98x, before the chain's RoPE and two ring stages), and a 32K prompt in chunks of
#                 4096 and 8192 beside transformers' SDPA, alternating
#   PART=h200b    (podkv_cli only; needs_h200) bench_gpu.sh parts 2 and 3 first (96 GiB of cache: batches of 64 and
#                 128, the largest batch at 32K), then part 1 as time allows
#   PART=merge    TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": split-KV attention's merge as the decode
#                 chain's first stage (the fusion "merge", on by default) against its own kernel
#                 (PODKV_CUDA_DECODE_FUSE=swiglu,chain,rope): the decode_chain op cases (with the merge cases),
#                 the attention op cases under every copy (runs, bulk, tile, lane, no ring) and without the
#                 merge's prefetch, rms_norm; the gtests CudaDecodeChain.*, CudaFusedOps.*, CudaGraphs.* and
#                 Models/CudaFixture.*; Nsight Compute's kernel durations of a 4K decode step both ways;
#                 batch-1 decode at 4K (three interleaved passes) and 32K (two)
#   PART=merge2   (podkv_cli only): the merge in the chain with the o projection's first weights asked into L2
#                 while it merges (PODKV_CUDA_CHAIN_MERGE_PREFETCH=0, 4096, 8192 bytes a row) against the merge
#                 kernel: batch-1 decode at 4K, three interleaved passes, 32K once; Nsight Compute's kernel
#                 durations of a 4K decode step with the merge kernel and in the chain (8192)
#   PART=sweep    TARGETS="podkv_cli podkv_test_backend_ops" (meant for an H200): the decode chain with eight
#                 chunks per lane in flight (PODKV_CUDA_CHAIN_GROUP=8) and in 16-warp blocks
#                 (PODKV_CUDA_CHAIN_WARPS=16): the kv_write op cases, the decode_chain op cases under each; then
#                 batch-1 decode at 4K under every decode knob (chain group, warps, blocks, slices, prefetch;
#                 attention's split keys, stages, copies), two
#                 interleaved passes; the default and the chain's group of 8 at 32K (run on the tree
#                 before the defaults changed: group 4, no prefetch; PODKV_CUDA_CHAIN_WARPS=16 is gone)
#   PART=verify   TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is (the chain's group a
#                 template argument, PODKV_CUDA_CHAIN_GROUP=8 a knob; 16-warp blocks dropped): the kv_write and
#                 decode_chain op cases (the latter also with the group of 8), the gtests CudaDecodeChain.*,
#                 CudaGraphs.* and Models/CudaFixture.* with either group; then batch-1 decode at 4K (three
#                 interleaved passes) and 32K (two): the default, PODKV_CUDA_CHAIN_PREFETCH=1024, and that with
#                 PODKV_CUDA_CHAIN_GROUP=8 (the defaults then: group 4, no prefetch; now group 8 and 1024)
#   PART=trace    PATCHES=session42-chain-trace-untested CUDA_FLAGS=-DPODKV_CHAIN_TRACE (podkv_cli only; written in
#                 session 42, not yet run; copy the patch beside this script): where a chain launch's time goes,
#                 block by block (%globaltimer at each stage's begin and end): batch-1 decode at 4K and 32K with
#                 the defaults, and at 4K with PODKV_CUDA_CHAIN_GROUP=4 PODKV_CUDA_CHAIN_PREFETCH=0 (the kernel
#                 before session 42); each trace summarised by chain_trace.py and kept gzipped
#   PART=h200final TARGETS="podkv_cli podkv_test_backend_ops podkv_tests" (needs_h200): the tree as it is:
#                 scripts/test_gpu.sh whole, then scripts/bench_gpu.sh parts 1, 4, the step's kernel durations,
#                 parts 2 and 3 (96 GiB of cache on the H200) and part 5 as time allows
#   PART=pdl      TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": programmatic dependent launch on
#                 (PODKV_CUDA_PDL=1, off by default; session 40: 1.003x-1.006x at batch 1) for everything:
#                 scripts/test_gpu.sh whole with it, then batch-1 decode at 4K (three interleaved passes)
#                 and 32K (two) with and without it, batches 8 and 32 at 8K dense and PoD, and prefill at
#                 4K and 32K (two passes each)
#   PART=pdlfinal TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is (decode's launches
#                 programmatic dependents by default): scripts/test_gpu.sh whole, then batch-1 decode at 4K
#                 with the default and PODKV_CUDA_PDL=0 as time allows
#   PART=decodesass CUDA_FLAGS=-lineinfo (podkv_cli only; written in session 40, not yet run): Nsight Compute's SourceCounters, WarpStateStats and
#                 InstructionStats of one decode_mma_kernel launch at batch 1 and 4K on the tree as it is
#                 (the runs copies), with its SASS (decode_mma_sass.csv.gz, decode_mma_details.txt)
#   PART=final    TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is: scripts/test_gpu.sh
#                 whole, then scripts/bench_gpu.sh part 1 as time allows; PART=final2 (the same warm
#                 machine): bench_gpu.sh part 4, the step's kernel durations, parts 2 and 3, then 5
#   PART=runs     TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": decode tiles by one bulk copy per kind
#                 and page (PODKV_CUDA_DECODE_COPY=runs, the new default) against one per lane and entry
#                 (=bulk, the default before): the attention op cases with runs (two and three stages,
#                 16-key chunks) and bulk, the gtests CudaGraphs.* and Models/CudaFixture.*; Nsight Compute's
#                 kernel durations of a 4K decode step both ways; batch-1 decode at 4K and 32K, three
#                 interleaved passes; batches 8 and 32 at 8K and 8 at 32K, dense and PoD, one pass each
#   PART=kernels  CUDA_FLAGS=-lineinfo (podkv_cli only): the duration and DRAM bytes of every kernel of a 4K
#                 prompt (Nsight Compute, ncu_prompt4k.csv: which of the prompt's elementwise kernels run far
#                 from the copy rate), then PART=next's decode source counters, PDL A/B and 32K chunks
#                 (without SDPA)
#   PART=elementwise BASE=1 TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is (RMSNorm on
#                 16-byte loads, the prompt RoPE kernel's loads four units at a time; build-base: the tree
#                 before): the rms_norm, kv_write and rope op cases, the gtests CudaFusedOps.*,
#                 CudaPromptPath.* and CudaGraphs.*; every kernel of a 4K prompt
#                 (Nsight Compute); prefill at 4K and 32K against build-base, three interleaved passes, and
#                 32K in chunks of 8192; transformers' SDPA alternating with podkv
#   PART=lean     TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the tree as it is (lean prompt steps: no
#                 room for float32 q, k, v, attention output or MLP scratch): the gtests CudaPromptPath.*,
#                 CudaGraphs.* and Models/CudaFixture.*; prefill at 4K and 32K, the default against
#                 PODKV_CUDA_PREFILL_Q_BF16=0 (full buffers), two interleaved passes; a 32K prompt in chunks of
#                 8192 beside transformers' SDPA; then scripts/test_gpu.sh whole as time allows
#   PART=ab       PATCHES=session37-stage-preload-untested (`git show 72814ab:docs/gpu-bench/kernel-tuning/session37-stage-preload-untested.patch`; its prefill part since landed) BASE=1 TARGETS="podkv_cli podkv_test_backend_ops
#                 podkv_tests": the patch applied (build-base: the tree without it): the gtests CudaPromptPath.*, CudaDecodeChain.*,
#                 CudaGraphs.* and Models/CudaFixture.*; the attention and decode_chain op cases; prefill at
#                 4K and 32K, the default (the attention output staged in bf16 by the prefill kernels)
#                 against PODKV_CUDA_PREFILL_STAGE_ATTENTION=0 (float32 out, then stage_rows) and build-base,
#                 three interleaved passes; batch-1 decode at 4K, the default (the chain's first group of each
#                 stage preloaded before its wait) against PODKV_CUDA_CHAIN_PRELOAD=0 and build-base, three
#                 passes, and at 32K one; the --profile regions of a 32K prompt both ways; transformers' SDPA
#                 alternating with podkv; then scripts/test_gpu.sh whole as time allows
#   PART=measure  TARGETS="podkv_cli podkv_test_backend_ops" BASE=1: the attention op cases
#                 (defaults, and two stages with 16-key chunks: rows of more than 128 chunks); batch-1
#                 decode at 4K, two passes, interleaved with build-base and with the decode switches
#                 DECODE_STAGES=2 (two attention blocks per multiprocessor), alone and with
#                 DECODE_SPLIT_KEYS=32 (which then gives the 4K row twice the splits), and DECODE_COPY=tile;
#                 32K against build-base; then scripts/bench_gpu.sh part 1, part 4, the step's kernel
#                 durations (Nsight Compute) and parts 2 and 3 as time allows (session 32's call 1;
#                 calls 2 to 4 on the same warm machine were one-line commands: session32-calls/)
#   PART=refresh  TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": scripts/test_gpu.sh (all of it),
#                 batch-1 decode at 4K and 32K with PODKV_CUDA_ATTN_PREFETCH_MB off, 34 and 16, interleaved,
#                 then scripts/bench_gpu.sh part 1, part 4, the step's kernel durations and parts 2 and 3
#                 (session 33's call 1: the README's table for the card it gets)
#   PART=check    TARGETS="podkv_cli podkv_test_backend_ops podkv_tests" BASE=1: the attention (also with
#                 two stages and 16-key chunks), kv_write, rope and decode_chain op cases and the CUDA
#                 gtests, batch-1 decode at 4K (three passes) and 32K interleaved with build-base, and on an
#                 H200 also scripts/bench_gpu.sh part 1, part 4, the kernel durations and parts 2 and 3
#   PART=prefill  (podkv_cli only) a 32K prompt in chunks of 4096 (the default), 8192, 16384 and 32768,
#                 two interleaved passes; scripts/bench_gpu.sh part 5 (podkv's attention region of a 32K
#                 prompt, PyTorch's SDPA kernels alone on one layer's 32K prompt); on an H200 also parts
#                 1, 4, the kernel durations and parts 2 and 3
#   PART=chunks   (podkv_cli only) Nsight Compute durations of every prefill attention launch of a 32K
#                 prompt, in chunks of 4096 (8 launches a layer) and of 32768 (one), and the --profile
#                 regions of both: how the kernel's rate depends on the chunk (ncu_chunks_*.csv)
#   PART=untested PATCHES="session33-lookahead-untested session33-decode-inexact-untested" (session 34's
#                 call 2; since renamed session33-*-experiment.patch)
#                 TARGETS="podkv_cli podkv_test_backend_ops": the patches applied (copy them beside this
#                 script), the attention op cases with PODKV_CUDA_PREFILL_LOOKAHEAD=2, =1,
#                 PODKV_CUDA_DECODE_EXACT=0 and the defaults; prefill at 4K and 32K in the three lookahead
#                 settings and batch-1 decode at 4K and 32K and batch 8 at 8K with and without
#                 DECODE_EXACT=0, interleaved passes (one build: the switches off are the baseline); the
#                 --profile regions of a 32K prompt; Nsight Compute's per-launch prefill durations with
#                 LOOKAHEAD=${LOOKAHEAD:-2} (ncu_chunks_lookahead.csv; session33-calls/ncu_chunks_4096.csv is
#                 the kernel before). Either patch alone works too: the other's runs then time the defaults
#   PART=probe    (podkv_cli only) where the prefill attention kernel's time goes, beside cuDNN's: Nsight
#                 Compute's SpeedOfLight, MemoryWorkloadAnalysis, LaunchStats, Occupancy, SchedulerStats
#                 and WarpStateStats of one steady launch (200: the 7th chunk of a 32K prompt) of
#                 prefill_producer_kernel, then of the cuDNN kernel that PyTorch's SDPA runs on one
#                 layer's 32K causal prompt (GQA 32/8, head_dim 128), each --print-details all; and the
#                 SM clock and power (nvidia-smi, every 50 ms) while a 32K prompt runs
#   PART=sass     CUDA_FLAGS=-lineinfo (podkv_cli only): the stall samples of every SASS instruction of
#                 one steady prefill_producer_kernel launch (launch 200 of a 32K prompt; Nsight Compute's
#                 SourceCounters, prefill_sass.csv and prefill_cuda.csv) and cuobjdump's SASS of the
#                 kernel's object (prefill_producer.sass)
#   PART=counted  TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": the 64-key loop with its uniform
#                 trip count (the default since this change) against PODKV_CUDA_PREFILL_COUNTED=0 (the
#                 loop before): the attention op cases with =0, prefill at 4K and 32K in three
#                 interleaved passes, cuobjdump's SASS of the kernel, then scripts/test_gpu.sh whole
#   PART=loop     TARGETS="podkv_cli podkv_test_backend_ops": the 64-key loop's forms (kernels.h:
#                 WgmmaPrefill::loop; PART=counted ran at 0e06fac, where PODKV_CUDA_PREFILL_COUNTED=0 was
#                 today's PODKV_CUDA_PREFILL_LOOP=0 and its default today's 1): the attention op cases
#                 with the default (2), then a 32K prompt with PODKV_CUDA_PREFILL_LOOP=2 and 1 in three
#                 interleaved passes, a 4K prompt with 2 and 1, and a 32K prompt with 0 as time allows
#   PART=step128  PATCHES=session34-step128-counted-experiment TARGETS="podkv_cli podkv_test_backend_ops": the
#                 patch (the 128-key loop and its copying warps on a counted trip count too) applied;
#                 the attention op cases with PODKV_CUDA_PREFILL_STEP=128, with that and
#                 PODKV_CUDA_PREFILL_COUNTED=0, and the defaults; a 32K prompt with the default (64-key,
#                 counted), STEP=128 and STEP=128 COUNTED=0 in three interleaved passes, then 4K
#   PART=walk     BASE=1 TARGETS="podkv_cli podkv_test_backend_ops": the 64-key loop's tiles by TileWalk
#                 (the computing and the copying warps) against build-base (the tree before): the
#                 attention op cases (defaults, and PODKV_CUDA_PREFILL_COUNTED=0, the cursor's loop
#                 in the computing warps), cuobjdump's SASS of the kernel, then prefill at 4K and 32K,
#                 new and base interleaved, three passes
#   PART=poly     TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": a quarter of the 64-key loop's
#                 2^x on the FMA pipe (the default in this build) against PODKV_CUDA_PREFILL_POLY_EXP2=0 (all
#                 on the special function unit): the attention op cases with both, prefill at 4K and
#                 32K in three interleaved passes, then scripts/test_gpu.sh whole
#   PART=pages    PATCHES=session35-whole-pages-experiment TARGETS="podkv_cli podkv_test_backend_ops podkv_tests":
#                 the patch (the 64-key kernel's copying warps copy a tile from its page after one
#                 lookup, where pages hold multiples of 64 tokens) applied; the attention op cases with
#                 the defaults, PODKV_CUDA_PREFILL_WHOLE_PAGES=0 and PODKV_CUDA_PREFILL_STEP=128; prefill
#                 at 4K and 32K with and without it, three interleaved passes; then scripts/test_gpu.sh
#                 whole (session 35, call 6: correct, 1.00x; the patch kept as an experiment)
#   PART=sums     PATCHES=session35-tensor-sums-untested TARGETS="podkv_cli podkv_test_backend_ops podkv_tests":
#                 the patch (where no gates are asked, the 64-key loop sums P's rows on the tensor cores:
#                 4 wgmma m64n8k16 against a tile of ones, not 31 adds per tile) applied; the attention
#                 op cases with the defaults and PODKV_CUDA_PREFILL_TENSOR_SUMS=0 (11 of the 100 ask no
#                 gates, b45e66c); prefill at 4K and 32K with and without it, three interleaved passes;
#                 then scripts/test_gpu.sh whole (session 36, call 2: correct, 1.003x at 32K; the patch
#                 kept as session35-tensor-sums-experiment.patch, give that name to PATCHES)
#   PART=sdpa     (podkv_cli only) prefill at 4K and 32K against transformers' SDPA in the same call
#                 (scripts/bench_gpu_peer.py --attn sdpa, prefill only), podkv and SDPA alternating,
#                 two passes each
#   PART=test     scripts/test_gpu.sh on the tree as it is, then one timing
#   PART=all      BASE=1 TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": PATCHES (names of
#                 NAME.patch files beside this script, applied in order, or found applied) on the tree,
#                 then scripts/test_gpu.sh on it (all of it), then timings against build-base as time
#                 allows (LIMIT, default 560 s)
#   PART=land     the same patches, then only the attention / kv_write / rope / decode_chain op cases
#                 and the CUDA gtests, then timings and the step's kernel durations
#   PART=numerics TARGETS=podkv_tests: Book/LongModelNumerics.Cuda*/MODEL (MODEL=dense or pod), on a tree
#                 with that model's weights and without tests/fixtures/models (the 64 MiB limit)
#   PART=source   CUDA_FLAGS=-lineinfo: Nsight source views of the decode attention and prefill kernels
# PODKV_CUDA_PREFILL_COUNTED, which PART=counted, step128 and walk set, is gone since session 35's
# final review (the cursor's loop, settled at 0.98x): on a later tree those runs time the defaults.
# PODKV_CUDA_ATTN_PREFETCH_MB, which PART=refresh, land and the timings set, is gone since d3ccdbf
# (session 33): on a later tree those runs time the defaults under another label.
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
# Keep a warm machine's objects: files unchanged since the last build get an old mtime.
sums=$build/.srcsums
list() { find . \( -path ./build-cuda -o -path ./.deps -o -path ./.data -o -path ./build -o -path ./build-asan \) -prune -o -type f -print | sort; }
if [ -f "$sums" ]; then
  list | xargs sha1sum >/tmp/now.sums
  n=0; while read -r sum file; do grep -qxF "$sum  $file" "$sums" && { touch -d '2001-01-01' "$file"; n=$((n+1)); }; done </tmp/now.sums
  echo "warm: $n unchanged files kept old"
fi
# PART=land and PART=all apply PATCHES (copied beside this script), in order: each applied here, or
# found applied; anything else stops the call.
if [ "${PART:-test}" = land ] || [ "${PART:-test}" = all ] || [ "${PART:-test}" = untested ] || [ "${PART:-test}" = step128 ] ||
  [ "${PART:-test}" = pages ] || [ "${PART:-test}" = sums ] || [ "${PART:-test}" = ab ] || [ "${PART:-test}" = trace ]; then
  for name in ${PATCHES:-}; do
    patch=$(dirname "$0")/$name.patch
    if patch -p1 -R --dry-run -s -F3 -f <"$patch" >/dev/null 2>&1; then echo "patch $name: already applied"
    elif patch -p1 -s -F3 -f --no-backup-if-mismatch <"$patch"; then echo "patch $name: applied"
    else echo "FAILED: $name neither applies nor is applied"; exit 1; fi
  done
fi
targets=${TARGETS:-podkv_cli}
base=$root/build-base
if [ -n "${BASE:-}" ] && [ ! -x "$base/podkv" ]; then
  rm -rf "$base" && mkdir -p "$base/src" && tar -xzf .data/run/base-src.tar.gz -C "$base/src"
  (cmake -S "$base/src" -B "$base" -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=OFF >/tmp/base.log 2>&1 &&
    cmake --build "$base" -j ${BASE_JOBS:-4} --target podkv_cli >>/tmp/base.log 2>&1; echo "base build rc $? ($SECONDS s)") &
fi
cmake -S . -B "$build" ${CUDA_FLAGS:+-DCMAKE_CUDA_FLAGS="$CUDA_FLAGS"} -DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF -DPODKV_TESTS=ON >/tmp/configure.log 2>&1 ||
  { tail -20 /tmp/configure.log; exit 1; }
cmake --build "$build" -j ${JOBS:-14} --target $targets >/tmp/build.log 2>&1 || { grep -E "error" /tmp/build.log | head -30; exit 1; }
list | xargs sha1sum >"$sums"
echo "build ok ($SECONDS s)"
a=(bench -m configs/llama-3-8b-32k --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)
tg() { local label=$1; shift; echo "-- $label"; within 90 env "$@" "${BIN:-$build}/podkv" "${a[@]}" -p 0 -n 32 -d ${DEPTH:-4096} -r 2 | grep -E "tg" ; }
# The most telling first (time may run out): new against base at 4K and 32K, then the switches.
timings() {
  four() { tg new PODKV_NONE=0; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
    tg "new tile" PODKV_CUDA_DECODE_COPY=tile; tg "new, no rope in the chain" PODKV_CUDA_DECODE_FUSE=swiglu,chain; }
  four
  DEPTH=32735 tg "new 32K" PODKV_NONE=0; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  four
  tg "new PDL=1" PODKV_CUDA_PDL=1; tg "new prefetch 34 MB" PODKV_CUDA_ATTN_PREFETCH_MB=34
  DEPTH=32735 tg "new 32K, no rope in the chain" PODKV_CUDA_DECODE_FUSE=swiglu,chain
}
ops() {
  for check in "${@}"; do
    setting=${check% *} op=${check##* }
    # shellcheck disable=SC2086  # a setting may be several VAR=value words
    within 150 env OMP_WAIT_POLICY=PASSIVE $setting "$build/podkv_test_backend_ops" --op $op --backend cuda >/tmp/op.log 2>&1
    echo "op $op ($setting) rc $?: $(tail -1 /tmp/op.log)"; grep FAIL /tmp/op.log | head -5
  done
}
durations() {
  echo "-- ncu durations, decode 4K ($SECONDS s)"
  within 90 "$(command -v ncu)" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k.csv" 2>/tmp/ncu.err; echo "rc $?"; tail -3 /tmp/ncu.err
}
bench() { echo "-- bench_gpu.sh PARTS=\"$1\" ($SECONDS s)"; within $2 env PARTS="$1" scripts/bench_gpu.sh "$build" /tmp/bench >>"$out/bench.txt" 2>&1
  echo "rc $? ($SECONDS s)"; }
# The whole benchmark, its cheap parts first (time may run out); on_h200: the card this call got.
bench_all() { bench 1 150; bench 4 150; durations; bench "2 3" 300; }
on_h200() { nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H200; }
# scripts/test_gpu.sh whole, its last lines and any failure (330 s at most).
test_gpu_whole() {
  within 330 scripts/test_gpu.sh "$build" /tmp/gpu-logs >"$out/test_gpu.txt" 2>&1; echo "test_gpu rc $? ($SECONDS s)"
  tail -8 "$out/test_gpu.txt"; grep -B2 -A8 "FAIL" "$out/test_gpu.txt" | head -40
}
# The --profile regions of a 32K prompt under each setting given (a setting may be several VAR=value words).
profile_32k() {
  for setting in "$@"; do
    echo "-- --profile, 32K prompt, $setting"
    # shellcheck disable=SC2086
    within 60 env $setting "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 --profile | grep -A1 "GPU time"
  done
}
# Prefill at 4K and 32K (BIN: another build's podkv); then a switch against the default: three
# interleaved passes, then scripts/test_gpu.sh whole.
pp() { echo "-- $1"; shift; within 60 env "$@" "${BIN:-$build}/podkv" "${a[@]}" -p 4096,32768 -n 0 -r 2 | grep -E "pp"; }
# A 32K prompt in chunks of each size given (two repetitions each).
prompt_32k_chunks() {
  for chunk in "$@"; do
    echo "-- 32K prompt, chunks of $chunk"
    within 60 "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 2 --prefill-chunk $chunk | grep -E "pp32768"
  done
}
switch_ab() {
  for pass in 1 2 3; do pp "$1" PODKV_NONE=0; pp "$2" "$3"; done
  test_gpu_whole
}
# podkv's prefill and transformers' SDPA on the same shapes, alternating, two passes.
sdpa_passes() {
  for pass in 1 2; do
    pp "podkv" PODKV_NONE=0
    echo "-- transformers SDPA ($SECONDS s)"
    within 200 python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out "$out/sdpa$pass.json" --prefill 4096,32768 \
      --decode "" --attn sdpa >"$out/sdpa$pass.txt" 2>&1; echo "rc $? ($SECONDS s)"; grep -v "^ *$" "$out/sdpa$pass.txt" | tail -4
  done
}
# The duration and DRAM bytes of every kernel launch of a 4K prompt (Nsight Compute).
prompt_kernels() {
  echo "-- ncu durations and DRAM bytes, 4K prompt ($SECONDS s)"
  within 150 "$(command -v ncu)" --clock-control none --cache-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum \
    --csv "$build/podkv" "${a[@]}" -p 4096 -n 0 -r 1 >"$out/ncu_prompt4k.csv" 2>/tmp/ncu.err; echo "rc $?"; tail -3 /tmp/ncu.err
  gzip -f "$out/ncu_prompt4k.csv"
}
# Nsight Compute's SourceCounters, WarpStateStats and InstructionStats of one decode_mma_kernel launch
# at batch 1 and 4K, with its SASS (decode_mma_sass.csv.gz, decode_mma_details.txt).
decode_sass() {
  local NCU
  NCU=$(command -v ncu)
  echo "-- decode_mma_kernel source counters, 4K ($SECONDS s)"
  within 150 "$NCU" --clock-control none --cache-control none -k regex:decode_mma_kernel --launch-skip 64 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section InstructionStats --import-source yes -f -o /tmp/decode_mma \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >/tmp/ncu1.log 2>&1; echo "rc $?"; tail -3 /tmp/ncu1.log
  "$NCU" -i /tmp/decode_mma.ncu-rep --page source --csv --print-source sass >"$out/decode_mma_sass.csv" 2>&1
  "$NCU" -i /tmp/decode_mma.ncu-rep --page details --print-details all >"$out/decode_mma_details.txt" 2>&1
  gzip -f "$out/decode_mma_sass.csv"
}
case ${PART:-test} in
merge)
  ops "PODKV_NONE=0 decode_chain" "PODKV_NONE=0 attention" "PODKV_CUDA_DECODE_COPY=bulk attention" \
    "PODKV_CUDA_DECODE_COPY=tile attention" "PODKV_CUDA_DECODE_COPY=lane attention" "PODKV_CUDA_DECODE_STAGES=0 attention" \
    "PODKV_CUDA_MERGE_PREFETCH=0 attention" "PODKV_NONE=0 rms_norm"
  within 240 "$build/podkv_tests" --gtest_filter='CudaDecodeChain.*:CudaFusedOps.*:CudaGraphs.*:Models/CudaFixture.*' >/tmp/gt.log 2>&1
  echo "gtests rc $?: $(grep -E '^\[  (PASSED|FAILED)' /tmp/gt.log | tr '\n' ' ')"; grep -E "^\[  FAILED" /tmp/gt.log | head
  grep -E "^\[ +(OK|FAILED) +\] .*Merge" /tmp/gt.log | head -12
  for fuse in swiglu,chain,rope,merge swiglu,chain,rope; do
    echo "-- ncu durations, decode 4K, DECODE_FUSE=$fuse ($SECONDS s)"
    within 90 env PODKV_CUDA_DECODE_FUSE=$fuse "$(command -v ncu)" --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k_$fuse.csv" 2>/tmp/ncu.err
    echo "rc $?"
  done
  for pass in 1 2 3; do tg "batch 1 at 4K, merge in the chain" PODKV_NONE=0; tg "batch 1 at 4K, merge kernel" PODKV_CUDA_DECODE_FUSE=swiglu,chain,rope; done
  for pass in 1 2; do
    DEPTH=32735 tg "batch 1 at 32K, merge in the chain" PODKV_NONE=0; DEPTH=32735 tg "batch 1 at 32K, merge kernel" PODKV_CUDA_DECODE_FUSE=swiglu,chain,rope
  done
  ;;
merge2)
  kernel=PODKV_CUDA_DECODE_FUSE=swiglu,chain,rope
  for pass in 1 2 3; do
    tg "batch 1 at 4K, merge kernel" $kernel
    for bytes in 0 4096 8192; do tg "batch 1 at 4K, merge in the chain, prefetch $bytes" PODKV_CUDA_CHAIN_MERGE_PREFETCH=$bytes; done
  done
  DEPTH=32735 tg "batch 1 at 32K, merge kernel" $kernel
  DEPTH=32735 tg "batch 1 at 32K, merge in the chain, prefetch 8192" PODKV_CUDA_CHAIN_MERGE_PREFETCH=8192
  for setting in "kernel $kernel" "chain PODKV_CUDA_CHAIN_MERGE_PREFETCH=8192"; do
    echo "-- ncu durations, decode 4K, merge ${setting% *} ($SECONDS s)"
    within 90 env ${setting#* } "$(command -v ncu)" --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_merge_${setting%% *}.csv" 2>/tmp/ncu.err
    echo "rc $?"
  done
  ;;
decodesass)
  decode_sass
  ;;
h200b)
  bench "2 3" 220; bench 1 100
  ;;
final)
  test_gpu_whole
  bench 1 150
  ;;
final2)
  bench 4 150; durations; bench "2 3" 300; bench 5 120
  ;;
runs)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_DECODE_COPY=bulk attention" "PODKV_CUDA_DECODE_STAGES=3 attention" \
    "PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=16 attention"
  within 200 "$build/podkv_tests" --gtest_filter='CudaGraphs.*:Models/CudaFixture.*' >/tmp/gt.log 2>&1
  echo "gtests rc $?: $(grep -E '^\[  (PASSED|FAILED)' /tmp/gt.log | tr '\n' ' ')"; grep -E "^\[  FAILED" /tmp/gt.log | head
  for copy in runs bulk; do
    echo "-- ncu durations, decode 4K, DECODE_COPY=$copy ($SECONDS s)"
    within 90 env PODKV_CUDA_DECODE_COPY=$copy "$(command -v ncu)" --clock-control none --cache-control none \
      --metrics gpu__time_duration.sum --csv "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k_$copy.csv" 2>/tmp/ncu.err
    echo "rc $?"
  done
  for pass in 1 2 3; do
    for depth in 4096 32735; do DEPTH=$depth tg "batch 1 at $depth, runs" PODKV_NONE=0; DEPTH=$depth tg "batch 1 at $depth, bulk" PODKV_CUDA_DECODE_COPY=bulk; done
  done
  pod=(--kv pod --pod-group 3 --sink 16 --recent 4080)
  bt() { echo "-- $1"; shift; within 120 env "$@" "$build/podkv" "${a[@]}" "${pod[@]}" -p 0 -n 16 -d 8192,32751 -b 8,32 -r 2 \
    --kv-memory 48G | grep -E "tg"; }
  bt "batches, runs" PODKV_NONE=0; bt "batches, bulk" PODKV_CUDA_DECODE_COPY=bulk
  ;;
elementwise)
  ops "PODKV_NONE=0 rms_norm" "PODKV_NONE=0 kv_write" "PODKV_NONE=0 rope"
  within 200 "$build/podkv_tests" --gtest_filter='CudaFusedOps.*:CudaPromptPath.*:CudaGraphs.*' \
    >/tmp/gt.log 2>&1; echo "gtests rc $?: $(grep -E '^\[  (PASSED|FAILED)' /tmp/gt.log | tr '\n' ' ')"; grep -E "^\[  FAILED" /tmp/gt.log | head
  prompt_kernels
  wait  # build-base
  for pass in 1 2 3; do
    pp "new" PODKV_NONE=0
    BIN=$base pp "base" PODKV_NONE=0
  done
  for pass in 1 2; do
    prompt_32k_chunks 4096 8192
    echo "-- transformers SDPA ($SECONDS s)"
    within 120 python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out "$out/sdpa$pass.json" --prefill 4096,32768 \
      --decode "" --attn sdpa 2>&1 | grep tokens_per_s
  done
  ;;
kernels)
  prompt_kernels
  ;&
next)
  decode_sass
  for pass in $(seq ${PASSES:-3}); do
    for depth in 4096 32735; do DEPTH=$depth tg "batch 1 at $depth, default" PODKV_NONE=0; DEPTH=$depth tg "batch 1 at $depth, PDL" PODKV_CUDA_PDL=1; done
  done
  for pass in 1 2; do
    prompt_32k_chunks 4096 8192
    [ "$PART" = kernels ] && continue
    echo "-- transformers SDPA ($SECONDS s)"
    within 120 python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out "$out/sdpa$pass.json" --prefill 32768 \
      --decode "" --attn sdpa 2>&1 | grep tokens_per_s
  done
  ;;
stages2)
  test_gpu_whole
  for pass in 1 2 3; do
    for depth in 4096 32735; do
      DEPTH=$depth tg "batch 1 at $depth, two stages (default)" PODKV_NONE=0
      DEPTH=$depth tg "batch 1 at $depth, three stages" PODKV_CUDA_DECODE_STAGES=3
    done
  done
  pod=(--kv pod --pod-group 3 --sink 16 --recent 4080)
  mem=$(on_h200 && echo 96G || echo 48G)
  bt() { echo "-- $1"; shift; within 120 env "$@" "$build/podkv" "${a[@]}" "${pod[@]}" -p 0 -n 16 -d 8192,32751 -b 8,32 -r 2 \
    --kv-memory $mem | grep -E "tg"; }
  for pass in 1 2; do bt "batches, two stages (default)" PODKV_NONE=0; bt "batches, three stages" PODKV_CUDA_DECODE_STAGES=3; done
  on_h200 && bench_all
  ;;
pairs)
  ops "PODKV_CUDA_DECODE_PAIRS=1 attention" "PODKV_CUDA_DECODE_PAIRS=1 PODKV_CUDA_DECODE_STAGES=2 attention" \
    "PODKV_CUDA_DECODE_PAIRS=1 PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_COPY=tile attention"
  (within 150 env PODKV_CUDA_DECODE_PAIRS=1 PODKV_CUDA_DECODE_STAGES=2 "$build/podkv_tests" \
    --gtest_filter='Models/CudaFixture.*:CudaGraphs.*') >/tmp/gt.log 2>&1
  echo "gtests (pairs, two stages) rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/gt.log | head -20
  for pass in 1 2 3; do
    tg "default" PODKV_NONE=0; tg "stages 2" PODKV_CUDA_DECODE_STAGES=2
    tg "stages 2, pairs" PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_PAIRS=1
  done
  DEPTH=32735 tg "32K default" PODKV_NONE=0; DEPTH=32735 tg "32K stages 2" PODKV_CUDA_DECODE_STAGES=2
  DEPTH=32735 tg "32K stages 2, pairs" PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_PAIRS=1
  for setting in PODKV_NONE=0 PODKV_CUDA_DECODE_STAGES=2 "PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_PAIRS=1"; do
    echo "-- ncu durations at 4K: $setting ($SECONDS s)"
    # shellcheck disable=SC2086
    within 60 env $setting "$(command -v ncu)" --clock-control none --cache-control none --metrics gpu__time_duration.sum \
      --csv -k regex:"decode_mma|merge_kernel" "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >/tmp/ncu.csv 2>/tmp/ncu.err
    python3 - /tmp/ncu.csv <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head = rows[0]; k = head.index("Kernel Name"); v = head.index("Metric Value"); u = head.index("Metric Unit")
t = collections.defaultdict(list)
for r in rows[1:]: t["attention" if "decode_mma" in r[k] else "merge"].append(float(r[v].replace(",", "")))
unit = rows[1][u] if len(rows) > 1 else "?"
for name, xs in t.items(): xs = xs[-64:]; print(f"  {name}: last {len(xs)} launches, mean {sum(xs) / len(xs):.1f} {unit}")
PY
  done
  ;;
h200)
  bench_all; bench 5 120; cat "$out/bench.txt"
  ;;
pdl)
  (export PODKV_CUDA_PDL=1; test_gpu_whole)
  for pass in 1 2 3; do tg "batch 1 at 4K, PDL" PODKV_CUDA_PDL=1; tg "batch 1 at 4K, no PDL" PODKV_NONE=0; done
  for pass in 1 2; do DEPTH=32735 tg "batch 1 at 32K, PDL" PODKV_CUDA_PDL=1; DEPTH=32735 tg "batch 1 at 32K, no PDL" PODKV_NONE=0; done
  pod=(--kv pod --pod-group 3 --sink 16 --recent 4080)
  bt() { echo "-- $1"; shift; within 120 env "$@" "$build/podkv" "${a[@]}" "${pod[@]}" -p 0 -n 16 -d 8192 -b 8,32 -r 2 \
    --kv-memory 48G | grep -E "tg"; }
  bt "batches at 8K, PDL" PODKV_CUDA_PDL=1; bt "batches at 8K, no PDL" PODKV_NONE=0
  for pass in 1 2; do pp "prefill, PDL" PODKV_CUDA_PDL=1; pp "prefill, no PDL" PODKV_NONE=0; done
  ;;
pdlfinal)
  test_gpu_whole
  tg "batch 1 at 4K, default" PODKV_NONE=0; tg "batch 1 at 4K, PDL=0" PODKV_CUDA_PDL=0
  ;;
sweep)
  ops "PODKV_NONE=0 kv_write" "PODKV_NONE=0 decode_chain" "PODKV_CUDA_CHAIN_GROUP=8 decode_chain" "PODKV_CUDA_CHAIN_WARPS=16 decode_chain" \
    "PODKV_CUDA_CHAIN_WARPS=16 PODKV_CUDA_CHAIN_GROUP=8 decode_chain"
  for pass in 1 2; do
    for setting in PODKV_NONE=0 PODKV_CUDA_CHAIN_GROUP=8 PODKV_CUDA_CHAIN_WARPS=16 \
      "PODKV_CUDA_CHAIN_WARPS=16 PODKV_CUDA_CHAIN_GROUP=8" PODKV_CUDA_CHAIN_BLOCKS=3 PODKV_CUDA_CHAIN_PREFETCH=1024 PODKV_CUDA_CHAIN_PREFETCH=2048 \
      PODKV_CUDA_CHAIN_SLICES=2 PODKV_CUDA_CHAIN_SLICES=4 PODKV_CUDA_DECODE_SPLIT_KEYS=32 \
      PODKV_CUDA_DECODE_SPLIT_KEYS=128 PODKV_CUDA_DECODE_STAGES=3 PODKV_CUDA_DECODE_COPY=bulk; do
      # shellcheck disable=SC2086  # a setting may be several VAR=value words
      tg "4K, $setting" $setting
    done
  done
  DEPTH=32735 tg "32K, default" PODKV_NONE=0; DEPTH=32735 tg "32K, chain group 8" PODKV_CUDA_CHAIN_GROUP=8
  ;;
verify)
  ops "PODKV_NONE=0 kv_write" "PODKV_NONE=0 decode_chain" "PODKV_CUDA_CHAIN_GROUP=8 decode_chain"
  for setting in PODKV_NONE=0 PODKV_CUDA_CHAIN_GROUP=8; do
    within 150 env $setting "$build/podkv_tests" --gtest_filter='CudaDecodeChain.*:CudaGraphs.*:Models/CudaFixture.*' >/tmp/gt.log 2>&1
    echo "gtests ($setting) rc $?: $(grep -E '^\[  (PASSED|FAILED)' /tmp/gt.log | tr '\n' ' ')"; grep -E "^\[  FAILED" /tmp/gt.log | head
  done
  for pass in 1 2 3; do
    for depth in 4096 32735; do
      [ $pass = 3 ] && [ $depth = 32735 ] && continue
      DEPTH=$depth tg "$depth, default" PODKV_NONE=0; DEPTH=$depth tg "$depth, prefetch 1024" PODKV_CUDA_CHAIN_PREFETCH=1024
      DEPTH=$depth tg "$depth, prefetch 1024, group 8" PODKV_CUDA_CHAIN_PREFETCH=1024 PODKV_CUDA_CHAIN_GROUP=8
    done
  done
  ;;
trace)
  for run in "4096 default PODKV_NONE=0" "32735 default PODKV_NONE=0" \
    "4096 group4-noprefetch PODKV_CUDA_CHAIN_GROUP=4 PODKV_CUDA_CHAIN_PREFETCH=0"; do
    read -r depth label setting <<<"$run"
    echo "-- trace, $depth, $label ($SECONDS s)"
    # shellcheck disable=SC2086  # a setting may be several VAR=value words
    within 90 env $setting PODKV_CHAIN_TRACE_FILE=/tmp/trace.txt "$build/podkv" "${a[@]}" -p 0 -n 32 -d $depth -r 2 | grep tg
    python3 docs/gpu-bench/kernel-tuning/chain_trace.py /tmp/trace.txt
    gzip -9c /tmp/trace.txt >"$out/trace-$depth-$label.txt.gz"; rm -f /tmp/trace.txt
  done
  ;;
h200final)
  test_gpu_whole
  bench_all; bench 5 120; cat "$out/bench.txt"
  ;;
lean)
  (within 150 "$build/podkv_tests" --gtest_filter='CudaPromptPath.*:CudaGraphs.*:Models/CudaFixture.*') >/tmp/gt.log 2>&1
  echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|differ|activation" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  for pass in 1 2; do pp "prefill, lean (default)" PODKV_NONE=0; pp "prefill, q float32 (full buffers)" PODKV_CUDA_PREFILL_Q_BF16=0; done
  echo "-- 32K prompt, chunks of 8192"
  within 60 "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 2 --prefill-chunk 8192 | grep -E "pp32768"
  echo "-- transformers SDPA ($SECONDS s)"
  within 120 python3 scripts/bench_gpu_peer.py -m configs/llama-3-8b-32k --out "$out/sdpa.json" --prefill 32768 \
    --decode "" --attn sdpa 2>&1 | grep tokens_per_s
  test_gpu_whole
  ;;
qbf16)
  (within 150 "$build/podkv_tests" --gtest_filter='CudaPromptPath.*:CudaGraphs.*:Models/CudaFixture.*') >/tmp/gt.log 2>&1
  echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|differ" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  ops "PODKV_NONE=0 attention" "PODKV_NONE=0 kv_write"
  echo "kv_write cases of the prompt form: $(grep -c "bf16 q" /tmp/op.log)"; cp /tmp/op.log "$out/kv_write.log"
  wait; echo "waited for base ($SECONDS s)"; [ -x "$base/podkv" ] || { echo "no base build:"; tail -5 /tmp/base.log; }
  for pass in 1 2 3; do
    pp "prefill, q bf16 (default)" PODKV_NONE=0; pp "prefill, q float32" PODKV_CUDA_PREFILL_Q_BF16=0
    [ -x "$base/podkv" ] && BIN=$base pp "prefill, base" PODKV_NONE=0
    pp "prefill, qkv bf16 (experiment)" PODKV_CUDA_PREFILL_QKV_BF16=1
  done
  profile_32k PODKV_NONE=0 PODKV_CUDA_PREFILL_QKV_BF16=1
  sdpa_passes
  test_gpu_whole
  ;;
ab)
  (within 150 "$build/podkv_tests" --gtest_filter='CudaPromptPath.*:CudaDecodeChain.*:CudaGraphs.*:Models/CudaFixture.*') >/tmp/gt.log 2>&1
  echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure|differ" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  ops "PODKV_NONE=0 attention" "PODKV_NONE=0 decode_chain"
  wait; echo "waited for base ($SECONDS s)"; [ -x "$base/podkv" ] || { echo "no base build:"; tail -5 /tmp/base.log; }
  for pass in 1 2 3; do
    pp "prefill, staged (default)" PODKV_NONE=0; pp "prefill, stage_rows" PODKV_CUDA_PREFILL_STAGE_ATTENTION=0
    [ -x "$base/podkv" ] && BIN=$base pp "prefill, base" PODKV_NONE=0
  done
  for pass in 1 2 3; do
    tg "decode, preload (default)" PODKV_NONE=0; tg "decode, no preload" PODKV_CUDA_CHAIN_PRELOAD=0
    [ -x "$base/podkv" ] && BIN=$base tg "decode, base" PODKV_NONE=0
  done
  DEPTH=32735 tg "decode 32K, preload (default)" PODKV_NONE=0; DEPTH=32735 tg "decode 32K, no preload" PODKV_CUDA_CHAIN_PRELOAD=0
  [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "decode 32K, base" PODKV_NONE=0
  profile_32k PODKV_NONE=0 PODKV_CUDA_PREFILL_STAGE_ATTENTION=0
  sdpa_passes
  test_gpu_whole
  ;;
measure)
  [ -x "$build/podkv_test_backend_ops" ] && ops "PODKV_NONE=0 attention" \
    "PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=16 attention"
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2; do
    tg default PODKV_NONE=0; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
    tg "stages 2, split keys 32" PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=32
    [ $pass = 1 ] && { tg tile PODKV_CUDA_DECODE_COPY=tile; tg "stages 2" PODKV_CUDA_DECODE_STAGES=2; }
  done
  DEPTH=32735 tg "default 32K" PODKV_NONE=0; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  bench_all
  ;;
check)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_DECODE_STAGES=2 PODKV_CUDA_DECODE_SPLIT_KEYS=16 attention" \
    "PODKV_NONE=0 kv_write" "PODKV_NONE=0 rope" "PODKV_NONE=0 decode_chain"
  (within 150 "$build/podkv_tests" --gtest_filter='DecodeChainPlan.*:Models/CudaFixture.*:CudaFusedOps.*:CudaDecodeChain.*:CudaGraphs.*:CudaSampling.*') >/tmp/gt.log 2>&1
  echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2 3; do tg new PODKV_NONE=0; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0; done
  DEPTH=32735 tg "new 32K" PODKV_NONE=0; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  on_h200 && bench_all
  ;;
prefill)
  for pass in 1 2; do
    prompt_32k_chunks 4096 8192 16384 32768
  done
  bench 5 120
  on_h200 && bench_all
  ;;
untested)
  ops "PODKV_CUDA_PREFILL_LOOKAHEAD=2 attention" "PODKV_CUDA_PREFILL_LOOKAHEAD=1 attention" \
    "PODKV_CUDA_DECODE_EXACT=0 attention" "PODKV_NONE=0 attention"
  pp() { echo "-- $1"; shift; within 60 env "$@" "$build/podkv" "${a[@]}" -p 4096,32768 -n 0 -r 2 | grep -E "pp"; }
  for pass in 1 2 3; do
    pp "lookahead 2" PODKV_CUDA_PREFILL_LOOKAHEAD=2; pp "lookahead 1" PODKV_CUDA_PREFILL_LOOKAHEAD=1; pp "default" PODKV_NONE=0
  done
  for pass in 1 2; do
    tg "decode inexact" PODKV_CUDA_DECODE_EXACT=0; tg "decode default" PODKV_NONE=0
    DEPTH=32735 tg "decode inexact 32K" PODKV_CUDA_DECODE_EXACT=0; DEPTH=32735 tg "decode default 32K" PODKV_NONE=0
    for setting in PODKV_CUDA_DECODE_EXACT=0 PODKV_NONE=0; do
      echo "-- batch 8 at 8K, $setting"
      within 60 env $setting "$build/podkv" "${a[@]}" -p 0 -n 16 -d 8192 -b 8 -r 2 | grep -E "tg"
    done
  done
  profile_32k PODKV_CUDA_PREFILL_LOOKAHEAD=2 PODKV_CUDA_PREFILL_LOOKAHEAD=1 PODKV_NONE=0
  echo "-- ncu durations of the prefill attention launches with the lookahead ($SECONDS s)"
  within 150 env PODKV_CUDA_PREFILL_LOOKAHEAD=${LOOKAHEAD:-2} "$(command -v ncu)" --clock-control none --cache-control none \
    --metrics gpu__time_duration.sum --csv -k regex:prefill_producer \
    "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 >"$out/ncu_chunks_lookahead.csv" 2>/tmp/ncu.err
  echo "rc $? ($SECONDS s)"; tail -2 /tmp/ncu.err
  ;;
probe)
  NCU=$(command -v ncu)
  sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy
    --section SchedulerStats --section WarpStateStats --section ComputeWorkloadAnalysis)
  echo "-- ncu, prefill_producer_kernel launch 200 of a 32K prompt ($SECONDS s)"
  within 120 "$NCU" --clock-control none --cache-control none -k regex:prefill_producer --launch-skip 200 --launch-count 1 \
    "${sections[@]}" --print-details all "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 >"$out/probe_podkv.txt" 2>&1
  echo "rc $? ($SECONDS s)"; grep -E "Duration|Throughput|L2 Hit|Registers|Block Size|Grid Size|Issue Slots Busy" "$out/probe_podkv.txt" | head -30
  cat >/tmp/sdpa.py <<'PY'
import torch, torch.nn.functional as F
n, h, kv, d = 32768, 32, 8, 128
q = torch.randn(1, h, n, d, device="cuda", dtype=torch.bfloat16)
k = torch.randn(1, kv, n, d, device="cuda", dtype=torch.bfloat16)
v = torch.randn(1, kv, n, d, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
torch.cuda.synchronize()
PY
  echo "-- ncu, PyTorch SDPA (default backend) 32K causal, kernels listed ($SECONDS s)"
  within 90 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv python3 /tmp/sdpa.py \
    >"$out/probe_sdpa_kernels.csv" 2>&1; echo "rc $?"; grep -v "==" "$out/probe_sdpa_kernels.csv" | cut -d, -f5,15 | sort | uniq -c | sort -rn | head
  echo "-- ncu, the SDPA kernel's sections (its third launch) ($SECONDS s)"
  within 120 "$NCU" --clock-control none --cache-control none -k regex:"${SDPA_KERNEL:-cudnn|fmha|flash|sm90}" --launch-skip 2 --launch-count 1 \
    "${sections[@]}" --print-details all python3 /tmp/sdpa.py >"$out/probe_sdpa.txt" 2>&1
  echo "rc $? ($SECONDS s)"; grep -E "^  [a-zA-Z_]|Duration|Throughput|L2 Hit|Registers|Block Size|Grid Size|Issue Slots Busy" "$out/probe_sdpa.txt" | head -30
  echo "-- SM clock and power during a 32K prompt ($SECONDS s)"
  nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 50 >"$out/probe_clocks.csv" 2>&1 &
  smi=$!
  within 60 "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 3 | grep -E "pp32768"
  kill $smi; sort -t, -k2 "$out/probe_clocks.csv" | cut -d, -f2 | uniq -c | sort -rn | head -8
  ;;
step128)
  ops "PODKV_CUDA_PREFILL_STEP=128 attention" "PODKV_CUDA_PREFILL_STEP=128 PODKV_CUDA_PREFILL_COUNTED=0 attention" \
    "PODKV_NONE=0 attention"
  p32() { echo "-- $1"; shift; within 40 env "$@" "$build/podkv" "${a[@]}" -p ${PROMPT:-32768} -n 0 -r 2 | grep -E "pp"; }
  for pass in 1 2 3; do
    p32 "64-key, counted (default)" PODKV_NONE=0; p32 "128-key, counted" PODKV_CUDA_PREFILL_STEP=128
    p32 "128-key, cursor loop" PODKV_CUDA_PREFILL_STEP=128 PODKV_CUDA_PREFILL_COUNTED=0
  done
  PROMPT=4096 p32 "64-key, counted (default), 4K" PODKV_NONE=0; PROMPT=4096 p32 "128-key, counted, 4K" PODKV_CUDA_PREFILL_STEP=128
  ;;
walk)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_PREFILL_COUNTED=0 attention"
  obj=$(find "$build" -name 'attention_prefill_producer.cu.o' | head -1)
  cuobjdump -sass "$obj" >"$out/prefill_producer.sass" 2>&1; gzip "$out/prefill_producer.sass"
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2 3; do pp "new" PODKV_NONE=0; [ -x "$base/podkv" ] && BIN=$base pp "base" PODKV_NONE=0; done
  ;;
poly)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_PREFILL_POLY_EXP2=0 attention"
  switch_ab "poly (default)" "special function unit" PODKV_CUDA_PREFILL_POLY_EXP2=0
  ;;
pages)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_PREFILL_WHOLE_PAGES=0 attention" "PODKV_CUDA_PREFILL_STEP=128 attention"
  switch_ab "whole pages (default)" "rows" PODKV_CUDA_PREFILL_WHOLE_PAGES=0
  ;;
sums)
  ops "PODKV_NONE=0 attention" "PODKV_CUDA_PREFILL_TENSOR_SUMS=0 attention"
  switch_ab "tensor sums (default)" "sums in the softmax" PODKV_CUDA_PREFILL_TENSOR_SUMS=0
  ;;
sdpa)
  sdpa_passes
  ;;
loop)
  ops "PODKV_NONE=0 attention"
  p32() { echo "-- $1"; shift; within 40 env "$@" "$build/podkv" "${a[@]}" -p ${PROMPT:-32768} -n 0 -r 2 | grep -E "pp"; }
  for pass in 1 2 3; do p32 "loop 2 (default)" PODKV_NONE=0; p32 "loop 1" PODKV_CUDA_PREFILL_LOOP=1; done
  PROMPT=4096 p32 "loop 2 (default), 4K" PODKV_NONE=0; PROMPT=4096 p32 "loop 1, 4K" PODKV_CUDA_PREFILL_LOOP=1
  p32 "loop 0" PODKV_CUDA_PREFILL_LOOP=0
  ;;
counted)
  ops "PODKV_CUDA_PREFILL_COUNTED=0 attention"
  pp() { echo "-- $1"; shift; within 60 env "$@" "$build/podkv" "${a[@]}" -p 4096,32768 -n 0 -r 2 | grep -E "pp"; }
  for pass in 1 2 3; do pp "counted (default)" PODKV_NONE=0; pp "cursor loop" PODKV_CUDA_PREFILL_COUNTED=0; done
  obj=$(find "$build" -name 'attention_prefill_producer.cu.o' | head -1)
  cuobjdump -sass "$obj" >"$out/prefill_producer.sass" 2>&1; gzip "$out/prefill_producer.sass"
  test_gpu_whole
  ;;
sass)
  NCU=$(command -v ncu)
  obj=$(find "$build" -name 'attention_prefill_producer.cu.o' | head -1)
  cuobjdump -sass "$obj" >"$out/prefill_producer.sass" 2>&1; echo "cuobjdump rc $? ($obj)"
  within 200 "$NCU" --clock-control none --cache-control none -k regex:prefill_producer_kernel --launch-skip 200 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section InstructionStats --import-source yes -f -o /tmp/prefill \
    "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 >/tmp/ncu3.log 2>&1; echo "rc $? ($SECONDS s)"; tail -3 /tmp/ncu3.log
  "$NCU" -i /tmp/prefill.ncu-rep --page source --csv --print-source sass >"$out/prefill_sass.csv" 2>&1
  "$NCU" -i /tmp/prefill.ncu-rep --page source --csv --print-source cuda >"$out/prefill_cuda.csv" 2>&1
  "$NCU" -i /tmp/prefill.ncu-rep --page details --print-details all >"$out/prefill_details.txt" 2>&1
  gzip -k "$out/prefill_sass.csv"; ls -la "$out"
  ;;
chunks)
  NCU=$(command -v ncu)
  for chunk in 4096 32768; do
    echo "-- --profile, 32K prompt, chunks of $chunk"
    within 60 "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 --prefill-chunk $chunk --profile | grep -A1 "GPU time"
    echo "-- ncu durations of the prefill attention launches, chunks of $chunk ($SECONDS s)"
    within 150 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv -k regex:prefill_producer \
      "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 --prefill-chunk $chunk >"$out/ncu_chunks_$chunk.csv" 2>/tmp/ncu.err
    echo "rc $? ($SECONDS s)"; tail -2 /tmp/ncu.err
  done
  ;;
refresh)
  test_gpu_whole
  for pass in 1 2; do
    tg default PODKV_NONE=0; tg "prefetch 34 MB" PODKV_CUDA_ATTN_PREFETCH_MB=34; tg "prefetch 16 MB" PODKV_CUDA_ATTN_PREFETCH_MB=16
    DEPTH=32735 tg "default 32K" PODKV_NONE=0; DEPTH=32735 tg "prefetch 34 MB 32K" PODKV_CUDA_ATTN_PREFETCH_MB=34
  done
  bench_all
  ;;
numerics)
  (within 200 "$build/podkv_tests" --gtest_filter="Book/LongModelNumerics.Cuda*/${MODEL:-dense}") >"$out/numerics.log" 2>&1
  echo "numerics rc $?"; grep -E "numerics|OK|FAILED|PASSED|SKIPPED|Failure" "$out/numerics.log" | head -20
  ;;
all)
  within 330 env JOBS=12 scripts/test_gpu.sh "$build" /tmp/gpu-logs >"$out/test_gpu.txt" 2>&1; echo "test_gpu rc $? ($SECONDS s)"
  tail -8 "$out/test_gpu.txt"; grep -B2 -A8 "FAIL" "$out/test_gpu.txt" | head -40
  wait; echo "waited for base ($SECONDS s)"
  timings
  ;;
test)
  within 300 scripts/test_gpu.sh "$build" /tmp/gpu-logs >"$out/test_gpu.txt" 2>&1; echo "test_gpu rc $?"; tail -8 "$out/test_gpu.txt"
  tg "as built" PODKV_NONE=0
  ;;
source)
  NCU=$(command -v ncu)
  for pass in 1 2; do tg new PODKV_NONE=0; BIN=$base tg base PODKV_NONE=0; done
  echo "-- decode_mma_kernel source counters"
  within 120 "$NCU" --clock-control none --cache-control none -k regex:decode_mma_kernel --launch-skip 64 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section InstructionStats --import-source yes -f -o "$out/decode_mma" \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >/tmp/ncu1.log 2>&1; echo "rc $?"; tail -3 /tmp/ncu1.log
  "$NCU" -i "$out/decode_mma.ncu-rep" --page source --csv --print-source cuda >"$out/decode_mma_cuda.csv" 2>&1
  "$NCU" -i "$out/decode_mma.ncu-rep" --page source --csv --print-source sass >"$out/decode_mma_sass.csv" 2>&1
  "$NCU" -i "$out/decode_mma.ncu-rep" --page details --print-details all >"$out/decode_mma_details.txt" 2>&1
  echo "-- merge + rope/kv write details"
  within 60 "$NCU" --clock-control none --cache-control none -k regex:"merge_kernel|split_qkv_rope_kv_write|sample_rows" --launch-skip 60 --launch-count 3 \
    --section WarpStateStats --section SourceCounters --import-source yes -f -o "$out/small" \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >/tmp/ncu2.log 2>&1; echo "rc $?"
  "$NCU" -i "$out/small.ncu-rep" --page source --csv --print-source cuda >"$out/small_cuda.csv" 2>&1
  echo "-- prefill producer source counters (last chunk of 32K)"
  within 200 "$NCU" --clock-control none --cache-control none -k regex:prefill_producer_kernel --launch-skip 229 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section InstructionStats --import-source yes -f -o "$out/prefill" \
    "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 >/tmp/ncu3.log 2>&1; echo "rc $?"; tail -3 /tmp/ncu3.log
  "$NCU" -i "$out/prefill.ncu-rep" --page source --csv --print-source cuda >"$out/prefill_cuda.csv" 2>&1
  "$NCU" -i "$out/prefill.ncu-rep" --page source --csv --print-source sass >"$out/prefill_sass.csv" 2>&1
  "$NCU" -i "$out/prefill.ncu-rep" --page details --print-details all >"$out/prefill_details.txt" 2>&1
  ls -la "$out"
  ;;
land)
  # (the patch is applied before the build: see the top of the build step)
  ops=$build/podkv_test_backend_ops
  for op in attention kv_write rope decode_chain; do
    within 120 env OMP_WAIT_POLICY=PASSIVE "$ops" --op $op --backend cuda >/tmp/op_$op.log 2>&1; echo "op $op rc $?: $(tail -1 /tmp/op_$op.log)"; grep FAIL /tmp/op_$op.log | head -5
  done
  (within 150 "$build/podkv_tests" --gtest_filter='DecodeChainPlan.*:Models/CudaFixture.*:CudaFusedOps.*:CudaDecodeChain.*:CudaGraphs.*:CudaSampling.*') >/tmp/gt.log 2>&1
  echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2; do
    tg new PODKV_NONE=0; tg "new, no rope in the chain" PODKV_CUDA_DECODE_FUSE=swiglu,chain
    tg "new PDL=1" PODKV_CUDA_PDL=1; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
    tg "new prefetch 34 MB" PODKV_CUDA_ATTN_PREFETCH_MB=34; tg "new prefetch 16 MB" PODKV_CUDA_ATTN_PREFETCH_MB=16
    tg "new tile" PODKV_CUDA_DECODE_COPY=tile
  done
  DEPTH=32735 tg "new 32K" PODKV_NONE=0; DEPTH=32735 tg "new 32K, no rope in the chain" PODKV_CUDA_DECODE_FUSE=swiglu,chain
  DEPTH=32735 tg "new 32K PDL=1" PODKV_CUDA_PDL=1; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  NCU=$(command -v ncu)
  echo "-- ncu durations, decode 4K (all kernels)"
  within 60 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k.csv" 2>"$out/ncu_decode4k.err"; echo "rc $?"
  ;;
esac
echo "done ($SECONDS s)"
