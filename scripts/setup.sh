#!/usr/bin/env bash
# Installs the Debian packages podkv builds with (idempotent). Uses sudo when not root.
set -euo pipefail
packages=(build-essential cmake pkg-config git xz-utils
  nlohmann-json3-dev libcli11-dev libpcre2-dev libsentencepiece-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev libcairo2-dev
  clang libclang-rt-14-dev libomp-dev)  # the sanitizer and fuzz build (scripts/sanitize.sh, scripts/fuzz.sh)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi
