#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the real DTM server, installs and starts
# the databases, then runs every test of the workspace against them.
#
#   scripts/test.sh [extra cargo test args]   (DTM_TEST_THREADS: tests at once, default 6)
#
# Servers this script started are stopped again when CI=true (they stay up otherwise, so
# the next run starts in a second).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$DTM_PROJECT_ROOT"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install Rust (rustup) first" >&2
  exit 1
fi

start=$(date +%s)
"$here/test-env.sh"
if [ "${CI:-}" = "true" ]; then
  trap '"$here/stop-dbs.sh" || true' EXIT
fi

echo "==> building and running the tests"
# Most tests wait on DTM's cron, on child processes and on timers rather than on the CPU,
# so more run at once than there are cores, and the chaos suites (servers of their own,
# killed on a schedule; two at a time) run beside them.
# (With arguments, the run is the one they ask for, as it is.)
rc=0
if [ $# -eq 0 ]; then
  # The chaos suites run beside the others (their servers are their own), their output
  # kept apart and printed after. --workspace: the same feature resolution, so nothing is
  # built twice.
  cargo test --workspace --all-features --no-run --quiet
  chaos_log=$(mktemp)
  cargo test --workspace --all-features --test chaos_suite -- --test-threads=2 \
    >"$chaos_log" 2>&1 &
  chaos_pid=$!
  cargo test --workspace --all-features --no-fail-fast -- \
    --test-threads="${DTM_TEST_THREADS:-6}" --skip chaos:: || rc=$?
  chaos_rc=0
  wait "$chaos_pid" || chaos_rc=$?
  echo "==> the chaos suites"
  cat "$chaos_log"
  rm -f "$chaos_log"
  if [ "$chaos_rc" != 0 ]; then
    rc=$chaos_rc
  fi
else
  cargo test --workspace --all-features --no-fail-fast "$@" || rc=$?
fi
echo "==> test suite finished in $(( $(date +%s) - start )) s"
exit "$rc"
