#!/usr/bin/env bash
# Session 28's device calls (session28-2026-12-05.md). Copy to .data/run/s28.sh (ignored, carried with
# .deps) and run from the repository root, with docs/ and the large model files out of the carried tree
# (session26-next-calls.sh's header says how):
#   PART=probe   f0e83d3's decode switches and Nsight Compute readings (call 1)
#   PART=check   BASE=1 TARGETS="podkv_cli podkv_test_backend_ops podkv_tests": op tests, gtests,
#                timings against build-base (from .data/run/base-src.tar.gz: `git archive HEAD --
#                CMakeLists.txt src tools scripts configs | gzip`), kernel durations (call 2)
#   PART=source  CUDA_FLAGS=-lineinfo: Nsight source views of the attention and prefill kernels (never ran)
#   PART=land    BASE=1 TARGETS=all: applies session28-decode-untested.patch (copy it to .data/run/ too),
#                scripts/test_gpu.sh, then the default against PODKV_CUDA_PDL=1, the L2 prefetch and
#                DECODE_COPY=tile, interleaved with build-base (never ran: no machine was lent)
# A warm machine keeps build-cuda: files unchanged since its last build get an old mtime, so only the
# changed ones compile again. Writes $OUT/summary.txt (+ files).
set -uo pipefail
root=$(pwd); out=${OUT:-/tmp/out}; mkdir -p "$out"
exec >"$out/summary.txt" 2>&1
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
# PART=land builds and tests session28-decode-untested.patch (copied beside this script): applied here,
# or found applied; anything else stops the call.
if [ "${PART:-probe}" = land ]; then
  patch=$(dirname "$0")/session28-decode-untested.patch
  if patch -p1 -R --dry-run -s -f <"$patch" >/dev/null 2>&1; then echo "patch: already applied"
  elif patch -p1 -s -f <"$patch"; then echo "patch: applied"
  else echo "FAILED: the patch neither applies nor is applied"; exit 1; fi
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
case ${PART:-probe} in
probe)
  tg base PODKV_NONE=0
  which ncu || ls /opt/nvidia/nsight-compute/*/ncu
  NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -1)
  echo "-- ncu durations, decode 4K (all kernels)"
  within 150 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k.csv" 2>"$out/ncu_decode4k.err"; echo "rc $?"
  python3 - "$out/ncu_decode4k.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki = hdr.index("Kernel Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
print("kernels:", len(rows))
last = rows[-400:]
# find the last decode step: from the last 'decode_chain' back
agg = collections.OrderedDict()
for r in rows[-140:]:
    name = r[ki].split("(")[0].split("<")[0][-40:]
    v = float(r[vi].replace(",", "")); unit = r[ui]
    us = v / 1000 if unit == "nsecond" else v if unit == "usecond" else v * 1000
    a = agg.setdefault(name, [0, 0.0]); a[0] += 1; a[1] += us
tot = sum(a[1] for a in agg.values())
for k, (n, us) in agg.items(): print(f"{k:42s} n={n:4d} total={us:9.1f} us  mean={us/n:7.2f} us")
print(f"sum of last 140 kernels: {tot:.1f} us")
PY
  echo "-- ncu detail: decode_mma_kernel, merge_kernel"
  within 90 "$NCU" --clock-control none --cache-control none -k regex:"decode_mma_kernel|merge_kernel" --launch-skip 64 --launch-count 2 \
    --section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_attn4k.txt" 2>&1; echo "rc $?"
  for v in "PODKV_CUDA_DECODE_COPY=tile" "PODKV_CUDA_DECODE_COPY=lane" "PODKV_CUDA_DECODE_STAGES=2" "PODKV_CUDA_DECODE_STAGES=4" \
           "PODKV_CUDA_DECODE_SPLIT_KEYS=32" "PODKV_CUDA_DECODE_SPLIT_KEYS=128"; do tg "$v" "$v"; done
  tg base PODKV_NONE=0
  echo "-- ncu detail: prefill attention, last chunk of 32K"
  within 150 "$NCU" --clock-control none --cache-control none -k regex:"prefill_producer_kernel" --launch-skip 229 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis --section SchedulerStats --section MemoryWorkloadAnalysis --section InstructionStats \
    "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 >"$out/ncu_prefill32k.txt" 2>&1; echo "rc $?"
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
  wait; echo "waited for base ($SECONDS s)"
  within 220 scripts/test_gpu.sh "$build" /tmp/gpu-logs >"$out/test_gpu.txt" 2>&1; echo "test_gpu rc $?"; tail -5 "$out/test_gpu.txt"
  for pass in 1 2; do
    tg new PODKV_NONE=0; tg "new PDL=1" PODKV_CUDA_PDL=1; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
    tg "new prefetch 34 MB" PODKV_CUDA_ATTN_PREFETCH_MB=34; tg "new prefetch 16 MB" PODKV_CUDA_ATTN_PREFETCH_MB=16
    tg "new tile" PODKV_CUDA_DECODE_COPY=tile
  done
  DEPTH=32735 tg "new 32K" PODKV_NONE=0; DEPTH=32735 tg "new 32K PDL=1" PODKV_CUDA_PDL=1; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  DEPTH=32735 tg "new 32K" PODKV_NONE=0
  NCU=$(command -v ncu)
  echo "-- ncu durations, decode 4K (all kernels)"
  within 60 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k.csv" 2>"$out/ncu_decode4k.err"; echo "rc $?"
  ;;
check)
  NCU=$(command -v ncu)
  ops=$build/podkv_test_backend_ops
  for op in attention kv_write rope; do
    within 120 env OMP_WAIT_POLICY=PASSIVE "$ops" --op $op --backend cuda >/tmp/op_$op.log 2>&1; echo "op $op rc $?: $(tail -1 /tmp/op_$op.log)"; grep FAIL /tmp/op_$op.log | head -5
  done
  (within 150 "$build/podkv_tests" --gtest_filter='Models/CudaFixture.*:CudaFusedOps.*:CudaDecodeChain.*:CudaGraphs.*:CudaSampling.*') >/tmp/gt.log 2>&1
  echo "gtests rc $?"; grep -E "^\[  (PASSED|FAILED) |FAILED  \]|Failure" /tmp/gt.log | head -20; cp /tmp/gt.log "$out/gtests.log"
  wait; echo "waited for base ($SECONDS s)"
  for pass in 1 2; do
    tg new PODKV_NONE=0; tg "new PDL=0" PODKV_CUDA_PDL=0; [ -x "$base/podkv" ] && BIN=$base tg base PODKV_NONE=0
  done
  DEPTH=32735 tg "new 32K" PODKV_NONE=0; DEPTH=32735 tg "new 32K PDL=0" PODKV_CUDA_PDL=0; [ -x "$base/podkv" ] && DEPTH=32735 BIN=$base tg "base 32K" PODKV_NONE=0
  echo "-- ncu durations, decode 4K (all kernels)"
  within 100 "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >"$out/ncu_decode4k.csv" 2>"$out/ncu_decode4k.err"; echo "rc $?"
  echo "-- decode_mma_kernel source counters"
  within 100 "$NCU" --clock-control none --cache-control none -k regex:decode_mma_kernel --launch-skip 64 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section InstructionStats --import-source yes -f -o "$out/decode_mma" \
    "$build/podkv" "${a[@]}" -p 0 -n 3 -d 4096 -r 1 >/tmp/ncu1.log 2>&1; echo "rc $?"; tail -3 /tmp/ncu1.log
  "$NCU" -i "$out/decode_mma.ncu-rep" --page source --csv --print-source cuda >"$out/decode_mma_cuda.csv" 2>&1
  "$NCU" -i "$out/decode_mma.ncu-rep" --page details --print-details all >"$out/decode_mma_details.txt" 2>&1
  echo "-- prefill producer source counters (last chunk of 32K)"
  within 200 "$NCU" --clock-control none --cache-control none -k regex:prefill_producer_kernel --launch-skip 229 --launch-count 1 \
    --section WarpStateStats --section SourceCounters --section InstructionStats --import-source yes -f -o "$out/prefill" \
    "$build/podkv" "${a[@]}" -p 32768 -n 0 -r 1 >/tmp/ncu3.log 2>&1; echo "rc $?"; tail -3 /tmp/ncu3.log
  "$NCU" -i "$out/prefill.ncu-rep" --page source --csv --print-source cuda >"$out/prefill_cuda.csv" 2>&1
  "$NCU" -i "$out/prefill.ncu-rep" --page details --print-details all >"$out/prefill_details.txt" 2>&1
  ;;
esac
echo "done ($SECONDS s)"
