#!/usr/bin/env bash
# What the tests run against, installed and started: the real DTM server, the Go interop
# service, MariaDB, PostgreSQL, Redis and the MongoDB-wire server. Every step is skipped
# when already done, so scripts/test.sh runs it each time and CI runs it early, in the
# background, while the code is checked.
#
#   scripts/test-env.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"
echo "==> installing the DTM server $DTM_VERSION (skipped when present)"
"$here/install-dtm.sh"
echo "==> building the Go interop service (skipped when up to date)"
"$here/build-go-service.sh"
echo "==> starting MariaDB, PostgreSQL, Redis and the MongoDB-wire server (skipped when running)"
"$here/start-dbs.sh"
