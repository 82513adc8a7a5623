# shellcheck shell=bash
# Environment shared by the project's scripts and test runs.
#
#   source scripts/env.sh
#
# Exports the project root, the tool directory, the DTM binary path, the database
# ports and the database URLs. Every value that is already set in the environment is
# kept (except the root and the tool directory, which always derive from this
# file's location).
# This file only sets variables: it does not change shell options, so it is safe to
# source from an interactive shell as well as from `set -euo pipefail` scripts.

DTM_PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export DTM_PROJECT_ROOT
export DTM_TOOLS_DIR="$DTM_PROJECT_ROOT/.tools"

# Real DTM server (built by scripts/install-dtm.sh).
export DTM_VERSION="${DTM_VERSION:-v1.19.0}"
export DTM_BIN="${DTM_BIN:-$DTM_TOOLS_DIR/bin/dtm}"

# Database servers (started by scripts/start-dbs.sh), all on 127.0.0.1.
export MYSQL_PORT="${MYSQL_PORT:-3306}"
export PG_PORT="${PG_PORT:-5432}"
export REDIS_PORT="${REDIS_PORT:-6379}"
export MONGO_PORT="${MONGO_PORT:-27017}"

export MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:$MYSQL_PORT}"
export PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:$PG_PORT/postgres}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}"
export MONGO_URL="${MONGO_URL:-mongodb://127.0.0.1:$MONGO_PORT/?directConnection=true}"
