#!/usr/bin/env bash
# The chaos suite at the large size: 10,000 bank transfers (saga, TCC, msg, workflow across
# MariaDB, PostgreSQL, Redis and MongoDB) against the real DTM on its redis and MariaDB
# stores, while branch services, DTM and database connections are killed; prints the table
# (faults injected by kind, transfers by mode and final status, lost, doubled, not final).
#
#   scripts/chaos.sh                      # 10,000 transfers
#   CHAOS_TRANSFERS=2000 scripts/chaos.sh # any size; every CHAOS_* knob of
#                                         # tests/tests/chaos_suite/chaos.rs applies
#
# The table is also kept in $CHAOS_REPORT (default .tools/run/chaos-<time>.txt), the full
# test output next to it (.log). Exits with the test's status.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$here/env.sh"
cd "$DTM_PROJECT_ROOT"

"$here/install-dtm.sh"
"$here/start-dbs.sh"

export CHAOS_TRANSFERS="${CHAOS_TRANSFERS:-10000}"
export CHAOS_RATE="${CHAOS_RATE:-25}"
export CHAOS_CONCURRENCY="${CHAOS_CONCURRENCY:-32}"
export CHAOS_SETTLE_SECS="${CHAOS_SETTLE_SECS:-300}"
mkdir -p "$DTM_TOOLS_DIR/run"
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
export CHAOS_REPORT="${CHAOS_REPORT:-$DTM_TOOLS_DIR/run/chaos-$stamp.txt}"
log="${CHAOS_REPORT%.txt}.log"
: >"$CHAOS_REPORT"

echo "==> chaos: $CHAOS_TRANSFERS transfers at $CHAOS_RATE/s (log: $log)"
start=$SECONDS
set +e
cargo test --workspace --all-features --test chaos_suite chaos::bank_transfers_survive_crashes \
  -- --nocapture >"$log" 2>&1
rc=$?
set -e
cat "$CHAOS_REPORT"
if [[ ! -s "$CHAOS_REPORT" ]]; then
  tail -n 40 "$log"
fi
echo "==> chaos: $CHAOS_TRANSFERS transfers, $((SECONDS - start)) s, exit status $rc (table: $CHAOS_REPORT)"
exit "$rc"
