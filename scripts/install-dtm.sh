#!/usr/bin/env bash
# Installs the real DTM server (Go) into <root>/.tools/bin/dtm.
#
#   scripts/install-dtm.sh
#
# Idempotent: does nothing when that binary exists and `dtm -v` prints the pinned
# version. A DTM_BIN the user set (elsewhere than .tools/bin/dtm) is used instead, if it is
# the pinned version, and refused with a clear message otherwise. Otherwise builds it with the machine's Go (>= 1.22, GOTOOLCHAIN=local):
#   1. `go install github.com/dtm-labs/dtm@<version>`;
#   2. if that fails (the module proxy may refuse the version list with
#      "403 Forbidden" while it still serves the module itself), falls back to
#      `go mod download -json github.com/dtm-labs/dtm@<version>` and `go build` in
#      the downloaded module directory.
# A cold build compiles ~200 modules and takes several minutes on 2 cores; Go's
# module and build caches make later builds fast.
#
# It also copies the module's SQL files (sqls/: DTM's own store schemas, e.g.
# dtmsvr.storage.mysql.sql, which dtm-testkit's tests compare its schema with) to
# <root>/.tools/dtm-sqls/ (skipped when that copy is already of the pinned version).
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

readonly MODULE="github.com/dtm-labs/dtm"
readonly VERSION="$DTM_VERSION"
readonly BIN_DIR="$DTM_TOOLS_DIR/bin"
readonly BIN="$BIN_DIR/dtm"
readonly LOG="$DTM_TOOLS_DIR/install-dtm.log"

log() { printf '[install-dtm] %s\n' "$*"; }
die() { printf '[install-dtm] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the version line of a dtm binary, e.g. "dtm version: v1.19.0".
# (`dtm -v` also prints "invalid log level ..." on stderr, which is dropped.)
dtm_version_line() { (cd / && "$1" -v 2>/dev/null) | head -n1 || true; }

is_installed() {
  [[ -x "$BIN" ]] && [[ "$(dtm_version_line "$BIN")" == "dtm version: $VERSION" ]]
}

readonly SQLS_DIR="$DTM_TOOLS_DIR/dtm-sqls"
sqls_installed() {
  [[ -f "$SQLS_DIR/VERSION" ]] && [[ "$(cat "$SQLS_DIR/VERSION")" == "$VERSION" ]] \
    && [[ -f "$SQLS_DIR/dtmsvr.storage.mysql.sql" ]]
}

# Copies sqls/ of the module (downloaded into Go's module cache if needed) to $SQLS_DIR.
install_sqls() {
  local json dir
  sqls_installed && return 0
  if ! json="$(GOTOOLCHAIN=local "$GO" mod download -json "$MODULE@$VERSION" 2>&1)"; then
    printf '%s\n' "$json" >&2
    die "go mod download $MODULE@$VERSION failed (needed for its sqls/ directory)"
  fi
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}[[:space:]]*$/\1/p' | head -n1)"
  [[ -n "$dir" && -d "$dir/sqls" ]] || die "no sqls/ directory in the module download: $json"
  mkdir -p "$SQLS_DIR"
  cp -f "$dir"/sqls/*.sql "$dir"/sqls/*.js "$SQLS_DIR"/
  chmod -R u+w "$SQLS_DIR"
  printf '%s\n' "$VERSION" >"$SQLS_DIR/VERSION"
  log "copied DTM's SQL files to $SQLS_DIR"
}

find_go() {
  GO="$(command -v go || true)"
  if [[ -z "$GO" && -x /usr/local/go/bin/go ]]; then
    GO=/usr/local/go/bin/go
  fi
}

# A DTM the user already has (DTM_BIN pointing elsewhere than .tools/bin/dtm) is used as it
# is, if it is the pinned version: never rebuilt, never overwritten.
if [[ "$DTM_BIN" != "$BIN" ]]; then
  [[ -x "$DTM_BIN" ]] || die "DTM_BIN=$DTM_BIN is not an executable; unset DTM_BIN to build DTM $VERSION into $BIN"
  line="$(dtm_version_line "$DTM_BIN")"
  [[ "$line" == "dtm version: $VERSION" ]] \
    || die "DTM_BIN=$DTM_BIN is '${line:-of unknown version}', the tests need $VERSION; unset DTM_BIN to build it into $BIN"
  find_go
  if [[ -n "$GO" ]]; then
    install_sqls
  else
    log "no Go: DTM's SQL files (sqls/, which dtm-testkit's tests compare its schema with) were not copied"
  fi
  log "using DTM_BIN=$DTM_BIN ($VERSION), nothing to build"
  exit 0
fi

if is_installed; then
  if ! sqls_installed; then
    find_go
    [[ -n "$GO" ]] || die "Go is needed to fetch DTM's SQL files (sqls/); install Go >= 1.22"
    install_sqls
  fi
  log "$BIN is already $VERSION, nothing to do"
  exit 0
fi

# --- Go toolchain ----------------------------------------------------------------
find_go
if [[ -z "$GO" ]]; then
  die "Go is not installed (no 'go' on PATH nor /usr/local/go/bin/go).
  DTM $VERSION needs Go >= 1.22 (its go.mod says 'go 1.22'); Debian 12's golang
  package is 1.19, too old. Install a recent Go and put it on PATH, then rerun."
fi
go_version="$(GOTOOLCHAIN=local "$GO" env GOVERSION 2>/dev/null || true)"   # e.g. go1.26.8
if [[ ! "$go_version" =~ ^go1\.([0-9]+) ]] || (( BASH_REMATCH[1] < 22 )); then
  die "$GO is '${go_version:-unknown}', DTM $VERSION needs Go >= 1.22 (GOTOOLCHAIN=local: no toolchain download)."
fi
log "using $GO ($go_version)"

mkdir -p "$BIN_DIR" "$DTM_TOOLS_DIR/run"

# Only one build at a time (several test runners may call this script at once).
exec 9>"$DTM_TOOLS_DIR/run/install-dtm.lock"
if ! flock -n 9; then
  log "another install-dtm.sh is running, waiting for it"
  flock 9
fi
if is_installed; then
  install_sqls
  log "$BIN was installed by a concurrent run, nothing to do"
  exit 0
fi

tmp="$(mktemp -d "$BIN_DIR/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
: >"$LOG"
ldflags="-X main.Version=$VERSION"
start=$SECONDS

try_install() {
  log "path 1: go install $MODULE@$VERSION (log: $LOG)"
  GOTOOLCHAIN=local GOFLAGS=-buildvcs=false GOBIN="$tmp" \
    "$GO" install -ldflags "$1" "$MODULE@$VERSION" >>"$LOG" 2>&1
}

try_download_build() {
  local json dir
  log "path 2: go mod download $MODULE@$VERSION, then go build in the module directory"
  if ! json="$(GOTOOLCHAIN=local "$GO" mod download -json "$MODULE@$VERSION" 2>>"$LOG")"; then
    printf '%s\n' "$json" >>"$LOG"
    return 1
  fi
  dir="$(printf '%s\n' "$json" | sed -n 's/^[[:space:]]*"Dir":[[:space:]]*"\(.*\)",\{0,1\}[[:space:]]*$/\1/p' | head -n1)"
  if [[ -z "$dir" || ! -f "$dir/go.mod" ]]; then
    printf 'go mod download gave no module directory:\n%s\n' "$json" >>"$LOG"
    return 1
  fi
  log "module source: $dir; compiling (several minutes on a cold build cache)"
  (cd "$dir" && GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
    "$GO" build -ldflags "$1" -o "$tmp/dtm" .) >>"$LOG" 2>&1
}

build() {  # $1 = ldflags
  if try_install "$1"; then
    log "built with path 1 (go install)"
    return 0
  fi
  log "go install failed: $(grep -m1 -iE 'error|forbidden|cannot|fail' "$LOG" || tail -n1 "$LOG")"
  if try_download_build "$1"; then
    log "built with path 2 (go mod download + go build)"
    return 0
  fi
  return 1
}

log "building DTM $VERSION ..."
if ! build "$ldflags"; then
  if grep -q 'linkname' "$LOG"; then
    log "the linker rejected a go:linkname; retrying with -checklinkname=0"
    build "$ldflags -checklinkname=0" || { tail -n 30 "$LOG" >&2; die "build failed, see $LOG"; }
  else
    tail -n 30 "$LOG" >&2
    die "build failed, see $LOG"
  fi
fi

[[ -x "$tmp/dtm" ]] || die "the build produced no binary, see $LOG"
got="$(dtm_version_line "$tmp/dtm")"
[[ "$got" == "dtm version: $VERSION" ]] || die "built binary reports '$got', expected 'dtm version: $VERSION'"
mv -f "$tmp/dtm" "$BIN"
log "installed $BIN ($got) in $((SECONDS - start)) s"
install_sqls
