#!/usr/bin/env bash
# The quick-start demo: installs the real DTM server if needed (a DTM_BIN you already have
# is used as it is), starts Redis if it is not running, then runs the dtm-demo crate: three
# sagas between two accounts, each branch guarded by the branch barrier on Redis. It prints
# balances, branch calls with the barrier's outcome and DTM's final status, and exits
# non-zero if any of them is not the expected one.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$DTM_PROJECT_ROOT"
"$here/install-dtm.sh"
"$here/start-dbs.sh" redis
echo "==> building and running the demo (dtm-demo: about 100 crates, under a minute cold)"
exec cargo run --quiet -p dtm-demo
