#!/usr/bin/env bash
# Kernel tuning on the GPU machine (issue 12), everything in one run: which
# variant of a CUDA kernel is fastest, measured against this build's default
# (and a baseline build, when given) in the same run. PARTS picks the sections:
#   decode   podkv bench decode at batch 1, DEPTHS tokens of context: the default
#            (twice, the baseline interleaved), every one-row GEMV variant
#            (PODKV_CUDA_GEMV_ROW), every decode-attention split size
#            (PODKV_CUDA_DECODE_SPLIT_KEYS);
#   prefill  podkv bench prefill at PREFILL_LENGTHS tokens under every prefill-attention
#            variant (PODKV_CUDA_PREFILL=G,U; PODKV_CUDA_PREFILL_WGMMA=0), the default's GPU time by region
#            (--profile), and transformers' SDPA prefill on the same shape (PEER=1);
#   batches  decode at BATCHES [8,32] sequences of BATCH_DEPTHS [8192] tokens, dense and PoD
#            (uniform blocks of 3, sink 16, recent 4080) side by side, --kv-memory 96G;
#   kernels  Nsight Compute's GPU time per kernel of one decode run (when ncu is installed;
#            NCU_CLOCKS=boost: the GPU's own clocks and warm caches).
# SETTINGS (default none) are ENV=VALUE settings, each timed as its own row in the decode (twice,
# interleaved with the default) and batches sections (e.g. SETTINGS="PODKV_CUDA_GEMV_ROW=2,2").
# Every timing is the Llama-3-8B shape with random bf16 weights (configs/llama-3-8b-32k),
# bf16 KV entries, 64-token pages. Before any timing, correctness: every CUDA op
# against the CPU reference (podkv_test_backend_ops --backend cuda, the defaults),
# the matmul cases under every GEMV variant, the attention cases under every
# prefill variant, the fused-op test (CudaFusedOps) and the CUDA fixture tests
# (logits against transformers and the CPU, greedy generation).
# BASE_SRC (a .tar.gz of an earlier tree: git archive HEAD -- CMakeLists.txt src
# tools scripts/check_layers.py configs) adds a baseline podkv built from it.
# Writes OUT_DIR/tuning.md (decode), prefill.md and transformers_prefill.json, batches.md,
# kernels.md and ncu.csv, and the logs (*.log). At most 8 files come back from the GPU
# machine: delete what is not wanted before the call ends.
#   scripts/tuning_gpu.sh BUILD_DIR OUT_DIR
#   (env: PARTS ["decode prefill kernels"] (batches: only when named), BASE_SRC, VARIANTS ["0 1,2 1,4 1,8 2,2 2,4 2,8 4,2 4,4 4,8"],
#    SPLIT_KEYS ["32 64 128 256"], DEPTHS [4096], PREFILL_VARIANTS ["1,0 1,1 2,0 2,1"],
#    PREFILL_LENGTHS [4096,32768], PEER [1], CHECKS [1]: 0 skips the correctness step, SETTINGS, NCU_CLOCKS;
#    an empty VARIANTS, SPLIT_KEYS or PREFILL_VARIANTS runs none of them)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: tuning_gpu.sh BUILD_DIR OUT_DIR}
out=${2:?usage: tuning_gpu.sh BUILD_DIR OUT_DIR}
mkdir -p "$out"
parts=${PARTS:-decode prefill kernels}
want() { [[ " $parts " == *" $1 "* ]]; }
read -r -a variants <<<"${VARIANTS-0 1,2 1,4 1,8 2,2 2,4 2,8 4,2 4,4 4,8}"
read -r -a split_keys <<<"${SPLIT_KEYS-32 64 128 256}"
read -r -a settings <<<"${SETTINGS-}"
read -r -a prefill_variants <<<"${PREFILL_VARIANTS-1,0 1,1 2,0 2,1}"
want decode || variants=()
want prefill || prefill_variants=()
. "$root/scripts/use_deps_pcre2.sh"  # PCRE2's header from .deps/ on a machine without libpcre2-dev
use_deps_pcre2 "$root"
# With a .deps/ from scripts/fill_deps.sh, cpp-httplib's .pc sits beside PCRE2's: pointed at .deps/ too.
. "$root/scripts/use_deps_httplib.sh"
use_deps_httplib "$root"
configure=(-DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF)
config="$root/configs/llama-3-8b-32k"
common=(-m "$config" --device cuda --random-weights --kv-dtype bf16 --page-tokens 64)

# ---- builds (the baseline in the background)
base=""
if [ -n "${BASE_SRC:-}" ]; then
  base=$out/base
  rm -rf "$base" && mkdir -p "$base/src"
  tar -xzf "$BASE_SRC" -C "$base/src"
  (cmake -S "$base/src" -B "$base/build" "${configure[@]}" -DPODKV_TESTS=OFF >"$out/base_build.log" 2>&1 &&
    cmake --build "$base/build" -j 6 --target podkv_cli >>"$out/base_build.log" 2>&1) &
fi
checks=${CHECKS:-1}
targets=(podkv_cli)
[ "$checks" = 1 ] && targets+=(podkv_tests podkv_test_backend_ops)
cmake -S "$root" -B "$build" "${configure[@]}" -DPODKV_TESTS=ON >"$out/build.log" 2>&1 &&
  cmake --build "$build" -j 14 --target "${targets[@]}" >>"$out/build.log" 2>&1 ||
  { grep -E "error|Error" "$out/build.log" | head -30; exit 1; }
wait
[ -z "$base" ] || [ -x "$base/build/podkv" ] || { echo "baseline build failed:"; grep -E "error|Error" "$out/base_build.log" | head; base=""; }
echo "builds: done ($SECONDS s)"

# ---- correctness
status=0
variant_check() {  # variant_check ENV_NAME VALUE OP: the op's cases under one variant
  local log=$out/${3}_${1}_${2/,/x}.log
  if env "$1=$2" "$build/podkv_test_backend_ops" --op "$3" --backend cuda >"$log" 2>&1; then
    echo "$3, $1=$2: $(tail -1 "$log")"
  else
    echo "$3, $1=$2: FAILED"; grep -v " OK$" "$log" | head -5; status=1
  fi
}
if [ "$checks" = 1 ]; then
  if "$build/podkv_test_backend_ops" --backend cuda >"$out/backend_ops.log" 2>&1; then
    echo "every op, defaults: $(tail -1 "$out/backend_ops.log")"
  else
    echo "every op, defaults: FAILED"; grep -v " OK$" "$out/backend_ops.log" | head -10; status=1
  fi
  for v in "${variants[@]}"; do variant_check PODKV_CUDA_GEMV_ROW "$v" matmul; done
  for v in "${prefill_variants[@]}"; do variant_check PODKV_CUDA_PREFILL "$v" attention; done
  want prefill && variant_check PODKV_CUDA_PREFILL_WGMMA 0 attention
  (cd "$root" && "$build/podkv_tests" --gtest_filter='CudaFusedOps.*:Models/CudaFixture.*') >"$out/cuda_tests.log" 2>&1 || status=1
  grep -E "FAILED|PASSED|Failure" "$out/cuda_tests.log" | head -20
  [ "$status" = 0 ] || { echo "correctness failed: no timings"; exit 1; }
  echo "checks: done ($SECONDS s)"
fi

# row LABEL TEST_PATTERN ENV... -- PODKV ARGS...: the bench's matching rows with the setting's label
# (from the test column on; FIRST_FIELD=5 keeps the kv column too)
row() {
  local label=$1 pattern=$2; shift 2
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" "$@" 2>>"$out/bench_errors.log" | grep "| $pattern" |
    awk -v label="$label" -v first="${FIRST_FIELD:-6}" -F'|' \
      '{ line = "| " label " |"; for (i = first; i < NF; ++i) line = line $i "|"; print line }'
}
table_head() {  # table_head [kv]: the columns row prints
  echo
  echo "| setting |${1:+ kv |} test | batch | t/s | time vs dense | GB/s | of copy | of read | GFLOP/s | of GEMM |"
  echo "| --- |${1:+ --- |} --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
}

# ---- decode at batch 1
if want decode; then
  decode=(bench "${common[@]}" -p 0 -n 32 -d "${DEPTHS:-4096}" -r 3)
  {
    echo "decode, batch 1 (podkv ${decode[*]})"
    table_head
    for pass in 1 2; do
      [ -z "$base" ] || row "baseline (BASE_SRC), pass $pass" "tg32 @ " X=1 -- "$base/build/podkv" "${decode[@]}"
      row "this build, default, pass $pass" "tg32 @ " X=1 -- "$build/podkv" "${decode[@]}"
      for setting in "${settings[@]}"; do row "$setting, pass $pass" "tg32 @ " "$setting" -- "$build/podkv" "${decode[@]}"; done
    done
    for v in "${variants[@]}"; do row "PODKV_CUDA_GEMV_ROW=$v" "tg32 @ " PODKV_CUDA_GEMV_ROW="$v" -- "$build/podkv" "${decode[@]}"; done
    for k in "${split_keys[@]}"; do
      row "PODKV_CUDA_DECODE_SPLIT_KEYS=$k" "tg32 @ " PODKV_CUDA_DECODE_SPLIT_KEYS="$k" -- "$build/podkv" "${decode[@]}"
    done
  } | tee "$out/tuning.md"
fi

# ---- prefill
if want prefill; then
  prefill=(bench "${common[@]}" -p "${PREFILL_LENGTHS:-4096,32768}" -n 0 -r 2)
  {
    echo "prefill (podkv ${prefill[*]}); PODKV_CUDA_PREFILL=G,U: G warp groups of 4 query heads x 16 rows per"
    echo "block of the shared-tile kernel, U 1 = whole key tiles skip the element-wise mask"
    table_head
    [ -z "$base" ] || row "baseline (BASE_SRC)" "pp" X=1 -- "$base/build/podkv" "${prefill[@]}"
    row "this build, default" "pp" X=1 -- "$build/podkv" "${prefill[@]}"
    for v in "${prefill_variants[@]}"; do row "PODKV_CUDA_PREFILL=$v" "pp" PODKV_CUDA_PREFILL="$v" -- "$build/podkv" "${prefill[@]}"; done
    row "PODKV_CUDA_PREFILL_WGMMA=0 (mma.sync)" "pp" PODKV_CUDA_PREFILL_WGMMA=0 -- "$build/podkv" "${prefill[@]}"
    echo
    echo "the default's GPU time by region (--profile: regions timed one by one with events)"
    "$build/podkv" "${prefill[@]}" --profile 2>>"$out/bench_errors.log" | grep -A3 "GPU time"
  } | tee "$out/prefill.md"
  if [ "${PEER:-1}" = 1 ]; then
    PYTHONUNBUFFERED=1 python3 "$root/scripts/bench_gpu_peer.py" -m "$config" --out "$out/transformers_prefill.json" \
      --prefill "${PREFILL_LENGTHS:-4096,32768}" --decode "" --attn sdpa | tee -a "$out/prefill.md" || status=1
  fi
fi

# ---- decode batches, dense against PoD
if want batches; then
  batches=(bench "${common[@]}" --kv pod --pod-group 3 --sink 16 --recent 4080 -p 0 -n 16 -d "${BATCH_DEPTHS:-8192}"
    -b "${BATCHES:-8,32}" -r 2 --kv-memory 96G)
  {
    echo "decode batches, dense and PoD (podkv ${batches[*]})"
    table_head kv
    [ -z "$base" ] || FIRST_FIELD=5 row "baseline (BASE_SRC)" ".*tg16 @ " X=1 -- "$base/build/podkv" "${batches[@]}"
    FIRST_FIELD=5 row "this build, default" ".*tg16 @ " X=1 -- "$build/podkv" "${batches[@]}"
    for setting in "${settings[@]}"; do FIRST_FIELD=5 row "$setting" ".*tg16 @ " "$setting" -- "$build/podkv" "${batches[@]}"; done
  } | tee "$out/batches.md"
fi

# ---- GPU time per kernel (graph nodes profiled one by one)
if want kernels; then
  if command -v ncu >/dev/null; then
    # Nsight Compute: the GPU time of each kernel of two decode steps (replayed one by one, so
    # without launch gaps), summed per kernel name.
    # NCU_CLOCKS=boost: the GPU's own clocks and warm caches (--clock-control none --cache-control
    # none), closer to a real run than ncu's default base clocks and flushed caches.
    clocks=()
    [ "${NCU_CLOCKS:-base}" = boost ] && clocks=(--clock-control none --cache-control none)
    timeout 150 ncu "${clocks[@]}" --graph-profiling node --metrics gpu__time_duration.sum --csv -k regex:'^(?!fill_random)' -c 2000 \
      "$build/podkv" bench "${common[@]}" -p 0 -n 2 -d 4096 -r 1 >"$out/ncu.csv" 2>"$out/ncu.log" ||
      { echo "ncu failed:"; tail -5 "$out/ncu.log"; status=1; }
    python3 - "$out/ncu.csv" "${NCU_CLOCKS:-base}" <<'PY' | tee "$out/kernels.md" || status=1
import csv, sys, collections, re
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, body = rows[0], rows[1:]
ki, vi = head.index("Kernel Name"), head.index("Metric Value")
total, count = collections.Counter(), collections.Counter()
for r in body:
    # "void podkv::cuda::(anonymous namespace)::gemv_bf16_row_kernel<2, 4>(...)": the name with its template arguments
    name, depth = "", 0
    for ch in re.sub(r"\(anonymous namespace\)::|<unnamed>::|podkv::cuda::|podkv::|void ", "", r[ki]):
        if ch == "(" and depth == 0: break
        name += ch
        depth += (ch == "<") - (ch == ">")
    total[name] += float(r[vi].replace(",", "")); count[name] += 1
ns = sum(total.values())
clocks = "base clocks, caches flushed between kernels" if sys.argv[2] != "boost" else "the GPU's own clocks, warm caches"
print(f"GPU time per kernel (ncu: {clocks}; {sum(count.values())} launches, {ns / 1e3:.1f} us):")
for name, t in total.most_common():
    print(f"  {name[:60]:60s} {count[name]:6d} launches {t / 1e3:10.1f} us {100 * t / ns:5.1f}%")
PY
  else
    echo "no ncu on this machine: no per-kernel times"
  fi
fi
echo "tuning_gpu: $([ $status -eq 0 ] && echo done || echo FAILURES) ($SECONDS s)"
exit "$status"
