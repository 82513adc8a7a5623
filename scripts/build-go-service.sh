#!/usr/bin/env bash
# Builds the Go interop service (tests/go: a service on DTM's own Go SDK, the client
# packages of github.com/dtm-labs/dtm at the pinned server tag) into
# <root>/.tools/bin/go-interop.
#
#   scripts/build-go-service.sh
#
# Idempotent: rebuilds only when a source is newer than the binary. Uses the Go module
# cache that scripts/install-dtm.sh filled (the SDK is part of the server's module), so
# after that script it needs no download.
set -euo pipefail

# shellcheck source=scripts/env.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

readonly SRC="$DTM_PROJECT_ROOT/tests/go"
readonly BIN="$DTM_TOOLS_DIR/bin/go-interop"

log() { printf '[build-go-service] %s\n' "$*"; }
die() { printf '[build-go-service] ERROR: %s\n' "$*" >&2; exit 1; }

# The SDK must be the server's own version: the tests compare what both write.
grep -q "github.com/dtm-labs/dtm $DTM_VERSION\$" "$SRC/go.mod" \
  || die "tests/go/go.mod must require github.com/dtm-labs/dtm $DTM_VERSION (DTM_VERSION)"

if [[ -x "$BIN" ]] && [[ -z "$(find "$SRC" -newer "$BIN" -type f | head -n1)" ]]; then
  log "$BIN is up to date"
  exit 0
fi

GO="$(command -v go || true)"
[[ -n "$GO" || ! -x /usr/local/go/bin/go ]] || GO=/usr/local/go/bin/go
[[ -n "$GO" ]] || die "Go is not installed (see scripts/install-dtm.sh)"

mkdir -p "$DTM_TOOLS_DIR/bin" "$DTM_TOOLS_DIR/run"
exec 9>"$DTM_TOOLS_DIR/run/build-go-service.lock"
flock 9
tmp="$(mktemp "$DTM_TOOLS_DIR/bin/.go-interop.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
(cd "$SRC" && GOTOOLCHAIN=local GOFLAGS="-buildvcs=false -mod=readonly" "$GO" build -o "$tmp" .) \
  || die "go build in tests/go failed"
mv -f "$tmp" "$BIN"
log "built $BIN"
