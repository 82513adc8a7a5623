#!/usr/bin/env bash
# Checks each feature of each published crate on its own, so that no feature compiles only
# because another one (a default, or one a sibling crate turns on) happens to be enabled.
#
#   scripts/check-features.sh
#
# For every workspace crate that is published, reads its features from `cargo metadata` and
# runs `cargo check --lib --no-default-features` alone and with each feature. Warnings fail
# the run as errors do (an item used only under another feature shows up as unused here),
# unless ALLOW_WARNINGS=1. Every check runs; the failing ones are listed at the end.
#
# A crate that cannot build without one of some features (dtm-workflow needs a transport:
# http or grpc) lists them under [package.metadata.check-features] needs-one-of; its other
# features are then checked with each of those, and the bare build is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

plan=$(cat <<'EOF'
import json, sys

meta = json.load(sys.stdin)
members = set(meta['workspace_members'])
for p in meta['packages']:
    # publish = false is [] in cargo metadata; null means publishable.
    if p['id'] not in members or p['publish'] == []:
        continue
    needs = ((p.get('metadata') or {}).get('check-features') or {}).get('needs-one-of', [])
    features = sorted(f for f in p['features'] if f != 'default')
    combos = [] if needs else [[]]
    for f in features:
        combos += [[f]] if not needs or f in needs else [[f, n] for n in needs]
    for combo in combos:
        print(p['name'], ','.join(combo))
EOF
)
start=$(date +%s)
checks=0
failed=()
warned=()
log=$(mktemp)
trap 'rm -f "$log"' EXIT
while read -r crate features; do
  args=(-p "$crate" --lib --no-default-features)
  if [ -n "$features" ]; then
    args+=(--features "$features")
  fi
  echo "cargo check ${args[*]}"
  checks=$((checks + 1))
  if ! cargo check --quiet "${args[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    failed+=("${args[*]}")
  # Cargo replays a cached crate's warnings, so a second run still sees them.
  elif grep -q '^warning' "$log"; then
    cat "$log" >&2
    warned+=("${args[*]}")
  fi
done < <(cargo metadata --format-version 1 --no-deps --locked | python3 -c "$plan")
echo "$checks feature checks in $(( $(date +%s) - start )) s: ${#failed[@]} failed, ${#warned[@]} with warnings"
for a in "${failed[@]}"; do echo "  failed: cargo check $a" >&2; done
for a in "${warned[@]}"; do echo "  warnings: cargo check $a" >&2; done
if [ ${#failed[@]} -gt 0 ] || { [ ${#warned[@]} -gt 0 ] && [ "${ALLOW_WARNINGS:-}" != 1 ]; }; then
  exit 1
fi
