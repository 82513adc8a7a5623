#!/usr/bin/env bash
# The quick-start demo: installs the real DTM server if needed, then runs the quick_start
# example, which starts DTM and the example bank service and runs two sagas.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$DTM_PROJECT_ROOT"
"$here/install-dtm.sh"
echo "==> building and running the quick_start example"
exec cargo run --quiet -p dtm-examples --bin quick_start
