#!/usr/bin/env bash
# Stops the database servers that scripts/start-dbs.sh started, and only those: the
# ones recorded in <root>/.tools/run/<server>.pid. A server that was already running
# (start-dbs.sh skipped it) is left alone. Data directories are kept.
#
#   scripts/stop-dbs.sh
#
# Idempotent: with nothing recorded it does nothing.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$SCRIPT_DIR/env.sh"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly RUN_DIR="$DTM_TOOLS_DIR/run"
readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly STOP_TIMEOUT="${DB_STOP_TIMEOUT:-30}"

log()  { printf '[stop-dbs] %s\n' "$*"; }
warn() { printf '[stop-dbs] WARNING: %s\n' "$*" >&2; }

if [[ ! -d "$RUN_DIR" ]]; then
  log "nothing recorded in $RUN_DIR, nothing to stop"
  exit 0
fi

shopt -s nullglob
recorded=("$RUN_DIR"/*.pid)
if ((${#recorded[@]} == 0)); then
  log "no server recorded as started by start-dbs.sh, nothing to stop"
  exit 0
fi

exec 9>"$RUN_DIR/dbs.lock"
if ! flock -n 9; then
  log "another start-dbs.sh/stop-dbs.sh is running, waiting for it"
  flock 9
fi

info_get() {  # $1 = server, $2 = key
  sed -n "s/^$2=//p" "$RUN_DIR/$1.info" 2>/dev/null | head -n1
}

forget() { rm -f "$RUN_DIR/$1.pid" "$RUN_DIR/$1.info"; }

# True while the process runs. A zombie counts as gone: on this kind of machine pid 1
# reaps orphans only every ~2 s, and kill -0 still succeeds on a zombie.
alive() {
  kill -0 "$1" 2>/dev/null &&
    [[ "$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

wait_exit() {  # $1 = pid, $2 = seconds; true once the process is gone
  local deadline=$((SECONDS + $2))
  while alive "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

graceful_mariadb() {
  local sock port
  sock="$(info_get mariadb socket)"; port="$(info_get mariadb port)"
  if [[ -S "$sock" ]]; then
    mariadb-admin --no-defaults --socket="$sock" -uroot shutdown
  else
    mariadb-admin --no-defaults --protocol=TCP -h127.0.0.1 -P"$port" -uroot shutdown
  fi
}

graceful_postgres() {
  local datadir
  datadir="$(info_get postgres datadir)"
  [[ -n "$datadir" ]] || return 1
  (cd / && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$datadir" -m fast -w -t "$STOP_TIMEOUT" stop)
}

graceful_redis() {
  timeout 10 redis-cli -h 127.0.0.1 -p "$(info_get redis port)" shutdown nosave
}

graceful() {  # $1 = server, $2 = pid
  case "$1" in
    mariadb) graceful_mariadb ;;
    postgres) graceful_postgres ;;
    redis) graceful_redis ;;
    *) kill -TERM "$2" ;;
  esac
}

stop_one() {  # $1 = server, $2 = word its command line contains, $3 = label
  local name="$1" expect="$2" label="$3" pid cmdline
  [[ -f "$RUN_DIR/$name.pid" ]] || return 0
  pid="$(head -n1 "$RUN_DIR/$name.pid")"
  if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! alive "$pid"; then
    log "$label (pid ${pid:-?}) is not running; forgetting it"
    forget "$name"
    return 0
  fi
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  if [[ "$cmdline" != *"$expect"* ]]; then
    log "pid $pid is no longer $label (it is: ${cmdline:-?}); forgetting it"
    forget "$name"
    return 0
  fi
  log "stopping $label (pid $pid)"
  if ! graceful "$name" "$pid" >/dev/null 2>&1; then
    warn "graceful stop of $label failed, sending SIGTERM"
    kill -TERM "$pid" 2>/dev/null || true
  fi
  if ! wait_exit "$pid" "$STOP_TIMEOUT"; then
    warn "$label (pid $pid) still runs after ${STOP_TIMEOUT} s, sending SIGTERM"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_exit "$pid" 10; then
      warn "$label (pid $pid) ignores SIGTERM, sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_exit "$pid" 5 || { warn "could not stop pid $pid"; return 1; }
    fi
  fi
  forget "$name"
  log "$label stopped"
}

status=0
stop_one secantusdb secantusd SecantusDB || status=1
stop_one redis redis-server Redis || status=1
stop_one postgres postgres PostgreSQL || status=1
stop_one mariadb mariadbd MariaDB || status=1
exit "$status"
