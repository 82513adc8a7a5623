#!/usr/bin/env bash
# Checks each feature of each published crate on its own, so that no feature compiles only
# because another one (a default, or one a sibling crate turns on) happens to be enabled.
#
#   scripts/check-features.sh
#
# For every workspace crate that is published, reads its features from `cargo metadata` and
# runs `cargo clippy --lib --no-default-features` alone and with each feature, so the lints
# hold in every feature set too. Warnings fail the run as errors do (an item used only under
# another feature shows up as unused here), unless ALLOW_WARNINGS=1. Every check runs; the
# failing ones are listed at the end.
#
# [package.metadata.check-features] of a crate can say more:
# - needs-one-of: a crate that cannot build without one of some features (dtm-workflow
#   needs a transport: http or grpc) has its other features checked with each of those,
#   and its bare build skipped;
# - also: further feature sets checked as they are (a whole build without HTTP);
# - all-targets: the bare build also checks the crate's tests and examples.
#
# Each check also selects dtm-feature-pin (scripts/feature-pin.sh), which asks for the
# third-party dependencies at the features of a whole build, so that they compile once
# instead of once per check. The crates a feature of ours turns on or configures are not
# pinned: each check still sees them as its feature set alone asks.
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
    conf = (p.get('metadata') or {}).get('check-features') or {}
    needs = conf.get('needs-one-of', [])
    features = sorted(f for f in p['features'] if f != 'default')
    combos = [] if needs else [[]]
    for f in features:
        combos += [[f]] if not needs or f in needs else [[f, n] for n in needs]
    combos += [c.split(',') for c in conf.get('also', [])]
    for combo in combos:
        targets = 'all' if not combo and conf.get('all-targets') else 'lib'
        print(p['name'], targets, ','.join(combo))
EOF
)
start=$(date +%s)
checks=0
failed=()
warned=()
log=$(mktemp)
deny=(-- -D warnings)
if [ "${ALLOW_WARNINGS:-}" = 1 ]; then
  deny=()
fi
trap 'rm -f "$log"' EXIT
while read -r crate targets features; do
  args=(-p "$crate" --lib --no-default-features)
  if [ "$targets" = all ]; then
    args=(-p "$crate" --all-targets --no-default-features)
  fi
  if [ -n "$features" ]; then
    args+=(--features "$crate/${features//,/,$crate/}")
  fi
  # The dependencies at the whole build's features, compiled once for every check (see
  # scripts/feature-pin.sh); PIN=0 checks without.
  if [ "${PIN:-1}" = 1 ]; then
    args+=(-p dtm-feature-pin)
  fi
  checks=$((checks + 1))
  began=$(date +%s)
  ok=1
  cargo clippy --quiet "${args[@]}" "${deny[@]}" >"$log" 2>&1 || ok=0
  # Each check with its time, so a slow one shows.
  echo "cargo clippy ${args[*]} ($(( $(date +%s) - began )) s)"
  if [ "$ok" = 0 ]; then
    cat "$log" >&2
    failed+=("${args[*]}")
  # Cargo replays a cached crate's warnings, so a second run still sees them.
  elif grep -q '^warning' "$log"; then
    cat "$log" >&2
    warned+=("${args[*]}")
  fi
done < <(cargo metadata --format-version 1 --no-deps --locked | python3 -c "$plan")
echo "$checks feature checks in $(( $(date +%s) - start )) s: ${#failed[@]} failed, ${#warned[@]} with warnings"
for a in "${failed[@]}"; do echo "  failed: cargo clippy $a" >&2; done
for a in "${warned[@]}"; do echo "  warnings: cargo clippy $a" >&2; done
if [ ${#failed[@]} -gt 0 ] || { [ ${#warned[@]} -gt 0 ] && [ "${ALLOW_WARNINGS:-}" != 1 ]; }; then
  exit 1
fi
