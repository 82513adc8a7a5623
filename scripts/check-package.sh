#!/usr/bin/env bash
# Packages each published crate as `cargo publish` would, then checks each one alone from
# its tarball, against the others' tarballs: what `cargo publish --workspace --dry-run`
# verifies (every file a build needs is in the package, the manifest stands on its own),
# checked (`cargo check`) instead of built, so that it reuses the dependencies the other
# checks compiled instead of building them all again with each crate's own features.
#
#   scripts/check-package.sh
#
# `cargo package` also refuses what the registry would (path-only dependencies, missing
# metadata). Each crate is checked with its default features and default targets (its
# library, its binaries), as the dry run builds it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD

# The published members, as `cargo publish --workspace` picks them (not publish = false).
mapfile -t published < <(cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
meta = json.load(sys.stdin)
members = set(meta["workspace_members"])
for p in meta["packages"]:
    if p["id"] in members and p["publish"] != []:
        print(p["name"])
')
# Stale tarballs of an earlier run would be checked too.
rm -rf target/package
cargo package --no-verify --locked --quiet "${published[@]/#/--package=}"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
names=()
for tarball in target/package/*.crate; do
  tar -xzf "$tarball" -C "$work"
  dir=$(basename "$tarball" .crate)
  names+=("$(sed -n 's/^name = "\(.*\)"$/\1/p' "$work/$dir/Cargo.toml" | head -n 1)")
done
# The extracted crates as one workspace, each standing in for its registry version.
{
  echo '[workspace]'
  echo 'resolver = "2"'
  echo 'members = ['
  for tarball in target/package/*.crate; do
    echo "  \"$(basename "$tarball" .crate)\","
  done
  echo ']'
  echo '[patch.crates-io]'
  i=0
  for tarball in target/package/*.crate; do
    echo "${names[$i]} = { path = \"$(basename "$tarball" .crate)\" }"
    i=$((i + 1))
  done
  # The workspace's profiles: they are part of every artifact's identity, so with them the
  # dependencies the other checks compiled are used as they are.
  awk '/^\[/ { p = ($0 ~ /^\[profile/) } p' Cargo.toml
} >"$work/Cargo.toml"
# The workspace's lock: the same dependency versions as every other check.
cp Cargo.lock "$work/"
for name in "${names[@]}"; do
  echo "cargo check -p $name (from its tarball)"
  CARGO_TARGET_DIR="$root/target" cargo check --quiet --manifest-path "$work/Cargo.toml" \
    -p "$name"
done
echo "${#names[@]} packaged crates checked from their tarballs"
