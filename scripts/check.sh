#!/usr/bin/env bash
# The README's test command, and what CI runs (.ci/run calls it): the test suite,
# the same tests under AddressSanitizer + UndefinedBehaviorSanitizer, and a short
# run of every fuzz harness. Each step prints its time.
set -euo pipefail
cd "$(dirname "$0")/.."
step() {
  local start=$SECONDS
  "$@"
  echo "check: '$*' took $((SECONDS - start)) s"
}
step scripts/test.sh
step scripts/sanitize.sh
step scripts/fuzz.sh 5
