#!/usr/bin/env bash
# crossback's tests: the Rust test suite (unit and integration tests; most
# need root for loop devices), then the oracle check against GNU tar and
# the shared tree comparator. Run as root: scripts/test.sh (as root)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
  # As root nothing may be skipped: a skipped root test fails instead.
  export CROSSBACK_REQUIRE_ROOT_TESTS=1
else
  echo "test.sh: not root: the tests that need loop devices will be SKIPPED" >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
if grep -q "^SKIPPED" "$log" && [ "${CROSSBACK_REQUIRE_ROOT_TESTS:-0}" = 1 ]; then
  echo "test.sh: root-only tests were skipped" >&2
  exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
  scripts/oracle-check.sh "${CARGO_TARGET_DIR:-target}/debug/crossback"
else
  echo "test.sh: oracle check SKIPPED (needs root)" >&2
fi
