#!/usr/bin/env bash
# Fails when a locked dependency declares a higher `rust-version` than a workspace crate.
#
#   scripts/check-msrv.sh
#
# Cargo.lock is what CI builds and tests, so its dependencies' own `rust-version` fields
# give the lowest Rust the workspace can honestly claim. Every package of the lock file's
# resolution with all features counts (dev and build dependencies and other platforms'
# too), so that no feature combination needs a newer Rust than the crates say.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

check=$(cat <<'EOF'
import json, sys

def parse(v):
    # '1.88' and '1.88.0' are the same version.
    parts = [int(p) for p in v.split('.')]
    return tuple(parts + [0] * (3 - len(parts)))

meta = json.load(sys.stdin)
members = set(meta['workspace_members'])
ours = [p for p in meta['packages'] if p['id'] in members]
deps = [p for p in meta['packages'] if p['id'] not in members and p.get('rust_version')]
need = max(deps, key=lambda p: parse(p['rust_version']))
print('highest rust-version among %d locked dependencies: %s (%s %s)'
      % (len(deps), need['rust_version'], need['name'], need['version']))
bad = False
for p in ours:
    declared = p.get('rust_version')
    if declared is not None and parse(declared) >= parse(need['rust_version']):
        continue
    bad = True
    print('%s declares rust-version %s, but these dependencies need more:'
          % (p['name'], declared), file=sys.stderr)
    for d in sorted(deps, key=lambda d: (parse(d['rust_version']), d['name'])):
        if declared is None or parse(d['rust_version']) > parse(declared):
            print('  %s %s: %s' % (d['name'], d['version'], d['rust_version']), file=sys.stderr)
if bad:
    sys.exit('raise rust-version in Cargo.toml ([workspace.package]) to at least %s'
             % need['rust_version'])
print('every workspace crate declares at least that')
EOF
)
cargo metadata --format-version 1 --locked --all-features | python3 -c "$check"
