#!/usr/bin/env bash
# Session 52, call 1: session 51's two untested experiments, one after the other, on their prebuilt
# binaries (carry [".data/binz56", ".data/binz57", ".data/run"]):
#   OUT=$OUT bash .data/run/session52-combo-call.sh
set -uo pipefail
out=${OUT:-/tmp/out}
mkdir -p "$out/variants" "$out/fusion"
OUT=$out/fusion timeout -k 5 250 bash .data/run/session51-split-sum-fusion-call.sh; echo "fusion rc $?" >"$out/rc.txt"
OUT=$out/variants timeout -k 5 250 bash .data/run/session51-gemv-variants-call.sh; echo "variants rc $?" >>"$out/rc.txt"
