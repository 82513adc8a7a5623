#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the real DTM server, installs and starts
# the databases, then runs every test of the workspace against them.
#
#   scripts/test.sh [extra cargo test args]
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
echo "==> installing the DTM server $DTM_VERSION (skipped when present)"
"$here/install-dtm.sh"
echo "==> building the Go interop service (skipped when up to date)"
"$here/build-go-service.sh"
echo "==> starting MariaDB, PostgreSQL, Redis and the MongoDB-wire server (skipped when running)"
"$here/start-dbs.sh"
if [ "${CI:-}" = "true" ]; then
  trap '"$here/stop-dbs.sh" || true' EXIT
fi

echo "==> building and running the tests"
cargo test --workspace --all-features --no-fail-fast "$@"
echo "==> test suite finished in $(( $(date +%s) - start )) s"
