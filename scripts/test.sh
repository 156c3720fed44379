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

# Each test that could not run writes its name here (libtest hides what a
# passing test prints), so the count is said where a person sees it.
skipped=$(mktemp)
trap 'rm -f "$skipped"' EXIT
export CROSSBACK_SKIPPED_LOG=$skipped
cargo test --workspace --locked
n=$(sort -u "$skipped" | grep -c . || true)
if [ "$n" -gt 0 ]; then
  echo "test.sh: $n tests did NOT run (they need root: loop devices, mounts); run scripts/test.sh as root for all of them" >&2
  [ "${CROSSBACK_REQUIRE_ROOT_TESTS:-0}" != 1 ] || exit 1
else
  echo "test.sh: every test ran"
fi

if [ "$(id -u)" -eq 0 ]; then
  scripts/oracle-check.sh "${CARGO_TARGET_DIR:-target}/debug/crossback"
else
  echo "test.sh: oracle check SKIPPED (needs root)" >&2
fi
