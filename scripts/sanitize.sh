#!/usr/bin/env bash
# The test suite under AddressSanitizer + UndefinedBehaviorSanitizer (clang),
# in build-asan/. The same build holds the libFuzzer harnesses (scripts/fuzz.sh).
# Extra arguments go to ctest (e.g. -R Tokenizer).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/configure_asan.sh
cmake --build build-asan -j "$(nproc)"
# fontconfig (reached through Cairo when a plot draws text) keeps its caches in
# allocations it never frees: the one leak suppressed (scripts/lsan.supp).
export LSAN_OPTIONS="suppressions=$PWD/scripts/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:strict_string_checks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# (OMP_WAIT_POLICY=PASSIVE for each test comes from CMakeLists.txt, as in the release run.)
# PODKV_SANITIZE_EXCLUDE=REGEX leaves tests out. By default three. LongModel
# (LongModel.* and LongModelNumerics.*): three 4096-token prompts, and 1,536
# tokens under four KV entry types, through the 23.7M shipped model take minutes
# under the sanitizers, on code that smaller tests run here in full (bf16
# weights, PoD from a pod.json, StreamingLLM, f16/bf16/q8_0 entries); the
# release run has them. (D4 of
# issue 16, a null pointer offset in attention's selection scores, went with
# the engine-core rewrite, which indexes the score output only where it exists.)
# TrainCli.LearnsPasskeyFromScratch (600 training steps, 68 s under the sanitizers on 2 cores)
# is left out too, to keep CI under its 30 minutes: its code (the training step, the optimizer,
# the synthetic tasks) runs under the sanitizers in the shorter Train* tests.
exclude="${PODKV_SANITIZE_EXCLUDE-LongModel|TrainCli.LearnsPasskeyFromScratch}"
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" --timeout 900 ${exclude:+-E "$exclude"} "$@"
