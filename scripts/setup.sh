#!/usr/bin/env bash
# Installs the Debian packages podkv builds with (idempotent). Uses sudo when not root.
set -euo pipefail
packages=(build-essential cmake pkg-config git xz-utils
  nlohmann-json3-dev libcli11-dev libpcre2-dev libsentencepiece-dev
  libopenblas-dev libgtest-dev libgmock-dev libbenchmark-dev libcairo2-dev
  libcpp-httplib-dev
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
# The official openai npm client for the podkv serve tests (version pinned in
# tests/node/package-lock.json; the tests skip when node or it is absent).
if command -v npm >/dev/null 2>&1 && [ ! -d "$(dirname "$0")/../tests/node/node_modules/openai" ]; then
  npm ci --prefix "$(dirname "$0")/../tests/node" --no-audit --no-fund --loglevel=error ||
    echo "warning: npm ci in tests/node failed: the openai client test will be skipped" >&2
fi
