#!/usr/bin/env bash
# Decode-step tuning on the GPU machine, everything in one run (issue 12's
# decode at batch 1): which one-row GEMV and which decode-attention split size
# are fastest, measured against a baseline build in the same run.
#   1. builds BUILD_DIR (CUDA: podkv, podkv_tests, podkv_test_backend_ops) and,
#      when BASE_SRC (a .tar.gz of an earlier tree: git archive HEAD -- CMakeLists.txt
#      src tools scripts/check_layers.py configs) is given, a baseline podkv from it;
#   2. correctness before speed: every CUDA op against the CPU reference
#      (podkv_test_backend_ops --backend cuda, the defaults), the matmul cases
#      again under every PODKV_CUDA_GEMV_ROW variant ("0": gemv_bf16x8_kernel),
#      the fused-op test (CudaFusedOps) and the CUDA fixture tests (logits against
#      transformers and the CPU, greedy generation);
#   3. podkv bench decode at batch 1, DEPTHS tokens of context, the Llama-3-8B shape
#      with random bf16 weights (configs/llama-3-8b-32k): the baseline and this
#      build's default (twice, interleaved), every GEMV variant, every split size
#      (PODKV_CUDA_DECODE_SPLIT_KEYS); each row names its setting;
#   4. Nsight Compute's GPU time per kernel of one decode run (when ncu is installed).
# Writes OUT_DIR/tuning.md (the table), OUT_DIR/*.log.
#   scripts/decode_tuning_gpu.sh BUILD_DIR OUT_DIR
#   (env: BASE_SRC, VARIANTS ["0 1,2 1,4 1,8 2,2 2,4 2,8 4,2 4,4 4,8"], SPLIT_KEYS ["32 64 128 256"],
#    DEPTHS [4096], KERNELS_ONLY [0]: 1 builds podkv alone and runs step 4 only)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:?usage: decode_tuning_gpu.sh BUILD_DIR OUT_DIR}
out=${2:?usage: decode_tuning_gpu.sh BUILD_DIR OUT_DIR}
mkdir -p "$out"
read -r -a variants <<<"${VARIANTS:-0 1,2 1,4 1,8 2,2 2,4 2,8 4,2 4,4 4,8}"
read -r -a split_keys <<<"${SPLIT_KEYS:-32 64 128 256}"
. "$root/scripts/use_deps_pcre2.sh"  # PCRE2's header from .deps/ on a machine without libpcre2-dev
use_deps_pcre2 "$root"
configure=(-DPODKV_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DPODKV_BENCH=OFF)

# ---- 1. builds (the baseline in the background)
base=""
if [ -n "${BASE_SRC:-}" ]; then
  base=$out/base
  rm -rf "$base" && mkdir -p "$base/src"
  tar -xzf "$BASE_SRC" -C "$base/src"
  (cmake -S "$base/src" -B "$base/build" "${configure[@]}" -DPODKV_TESTS=OFF >"$out/base_build.log" 2>&1 &&
    cmake --build "$base/build" -j 6 --target podkv_cli >>"$out/base_build.log" 2>&1) &
fi
targets=(podkv_cli podkv_tests podkv_test_backend_ops)
[ "${KERNELS_ONLY:-0}" = 1 ] && targets=(podkv_cli)
cmake -S "$root" -B "$build" "${configure[@]}" >"$out/build.log" 2>&1 &&
  cmake --build "$build" -j 10 --target "${targets[@]}" >>"$out/build.log" 2>&1 ||
  { grep -E "error|Error" "$out/build.log" | head -30; exit 1; }
wait
[ -z "$base" ] || [ -x "$base/build/podkv" ] || { echo "baseline build failed:"; grep -E "error|Error" "$out/base_build.log" | head; base=""; }
echo "builds: done"

status=0
if [ "${KERNELS_ONLY:-0}" != 1 ]; then
# ---- 2. correctness
if "$build/podkv_test_backend_ops" --backend cuda >"$out/backend_ops.log" 2>&1; then
  echo "every op, defaults: $(tail -1 "$out/backend_ops.log")"
else
  echo "every op, defaults: FAILED"; grep -v " OK$" "$out/backend_ops.log" | head -10; status=1
fi
for v in "${variants[@]}"; do
  log=$out/matmul_variant_${v/,/x}.log
  if PODKV_CUDA_GEMV_ROW=$v "$build/podkv_test_backend_ops" --op matmul --backend cuda >"$log" 2>&1; then
    echo "matmul, PODKV_CUDA_GEMV_ROW=$v: $(tail -1 "$log")"
  else
    echo "matmul, PODKV_CUDA_GEMV_ROW=$v: FAILED"; grep -v " OK$" "$log" | head -5; status=1
  fi
done
(cd "$root" && "$build/podkv_tests" --gtest_filter='CudaFusedOps.*:Models/CudaFixture.*') >"$out/cuda_tests.log" 2>&1 || status=1
grep -E "FAILED|PASSED|Failure" "$out/cuda_tests.log" | head -20
[ "$status" = 0 ] || { echo "correctness failed: no timings"; exit 1; }

# ---- 3. decode at batch 1, 4K
bench=(bench -m "$root/configs/llama-3-8b-32k" --device cuda --random-weights --kv-dtype bf16 --page-tokens 64
  -p 0 -n 32 -d "${DEPTHS:-4096}" -r 3)
row() {  # row LABEL ENV... -- PODKV: the bench's decode rows with the setting's label
  local label=$1; shift
  local envs=()
  while [ "$1" != -- ]; do envs+=("$1"); shift; done
  shift
  env "${envs[@]}" "$1" "${bench[@]}" 2>>"$out/bench_errors.log" | grep "| tg32 @ " |
    awk -v label="$label" -F'|' '{ line = "| " label " |"; for (i = 6; i < NF; ++i) line = line $i "|"; print line }'
}
{
  echo "decode, batch 1, Llama-3-8B shape, random bf16 weights, bf16 KV (podkv bench ${bench[*]:1})"
  echo
  echo "| setting | test | batch | t/s | time vs dense | GB/s | of copy | of read | GFLOP/s | of GEMM |"
  echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for pass in 1 2; do
    [ -z "$base" ] || row "baseline (BASE_SRC), pass $pass" X=1 -- "$base/build/podkv"
    row "this build, default, pass $pass" X=1 -- "$build/podkv"
  done
  for v in "${variants[@]}"; do row "PODKV_CUDA_GEMV_ROW=$v" PODKV_CUDA_GEMV_ROW="$v" -- "$build/podkv"; done
  for k in "${split_keys[@]}"; do row "PODKV_CUDA_DECODE_SPLIT_KEYS=$k" PODKV_CUDA_DECODE_SPLIT_KEYS="$k" -- "$build/podkv"; done
} | tee "$out/tuning.md"

fi  # KERNELS_ONLY

# ---- 4. GPU time per kernel (graph nodes profiled one by one)
if command -v ncu >/dev/null; then
  # Nsight Compute: the GPU time of each kernel of two decode steps (replayed one by one, so
  # without launch gaps), summed per kernel name.
  timeout 120 ncu --graph-profiling node --metrics gpu__time_duration.sum --csv -k regex:'^(?!fill_random)' -c 2000 \
    "$build/podkv" bench -m "$root/configs/llama-3-8b-32k" --device cuda --random-weights --kv-dtype bf16 \
    --page-tokens 64 -p 0 -n 2 -d 4096 -r 1 >"$out/ncu.csv" 2>"$out/ncu.log"
  python3 - "$out/ncu.csv" <<'PY' | tee "$out/kernels.md"
import csv, sys, collections
rows = [r for r in csv.reader(l for l in open(sys.argv[1]) if l.startswith('"'))]
head, body = rows[0], rows[1:]
ki, vi = head.index("Kernel Name"), head.index("Metric Value")
total, count = collections.Counter(), collections.Counter()
for r in body:
    name = r[ki].replace("(anonymous namespace)::", "").replace("void ", "").split("(")[0].split("<")[0]
    total[name] += float(r[vi].replace(",", "")); count[name] += 1
ns = sum(total.values())
print(f"GPU time per kernel (ncu, {sum(count.values())} launches):")
for name, t in total.most_common():
    print(f"  {name:40s} {count[name]:6d} launches {t / 1e3:10.1f} us {100 * t / ns:5.1f}%")
PY
else
  echo "no ncu on this machine: no per-kernel times"
fi
exit "$status"
