#!/usr/bin/env bash
# Installs (if needed) and starts the database servers the tests use, all bound to
# 127.0.0.1, with their state under <root>/.tools/<server>/:
#
#   MariaDB 10.11   port $MYSQL_PORT (3306)  root, empty password, over TCP
#   PostgreSQL 15   port $PG_PORT    (5432)  user postgres, trust, max_prepared_transactions=100
#   Redis 7         port $REDIS_PORT (6379)  no persistence
#   SecantusDB      port $MONGO_PORT (27017) MongoDB wire protocol, replica set "secantus"
#
#   scripts/start-dbs.sh            # all four; then: source scripts/env.sh for the URLs
#   scripts/start-dbs.sh redis      # only the named ones: mariadb, postgres, redis, mongo
#
# Idempotent: a server that already answers on its port is left alone. The pids of the
# servers THIS script started are recorded in <root>/.tools/run/<server>.pid (details in
# <server>.info) so that scripts/stop-dbs.sh stops only those.
# Needs root to install packages (apt-get) and to start MariaDB or PostgreSQL (runuser);
# Redis and the MongoDB-wire server, once installed, start without it.
# DB_START_TIMEOUT (default 60 s) bounds each wait.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/env.sh
source "$SCRIPT_DIR/env.sh"
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

readonly RUN_DIR="$DTM_TOOLS_DIR/run"
readonly TIMEOUT="${DB_START_TIMEOUT:-60}"
readonly PG_BIN=/usr/lib/postgresql/15/bin
readonly SECANTUS_PIN="0.7.0b3"
T0=$SECONDS

log()  { printf '[start-dbs] %s\n' "$*"; }
warn() { printf '[start-dbs] WARNING: %s\n' "$*" >&2; }
die()  { printf '[start-dbs] ERROR: %s\n' "$*" >&2; exit 1; }

# Prints the last lines of a log file to stderr, then dies.
die_with_log() {  # $1 = log file, $2... = message
  local file="$1"; shift
  if [[ -f "$file" ]]; then
    printf '[start-dbs] ---- last lines of %s ----\n' "$file" >&2
    tail -n 40 "$file" >&2 || true
    printf '[start-dbs] ----\n' >&2
  fi
  die "$*"
}

# Which servers: the arguments, or all four.
want_mariadb="" want_postgres="" want_redis="" want_mongo=""
(($#)) || set -- mariadb postgres redis mongo
for name in "$@"; do
  case "$name" in
    mariadb|mysql) want_mariadb=1 ;;
    postgres|postgresql) want_postgres=1 ;;
    redis) want_redis=1 ;;
    mongo|mongodb|secantusdb) want_mongo=1 ;;
    *) die "unknown server '$name' (mariadb, postgres, redis, mongo)" ;;
  esac
done
need_root() { [[ "$(id -u)" == 0 ]] || die "must run as root to $1"; }

# apt-get, waiting (bounded) while another apt-get or dpkg holds its locks (an unattended
# upgrade on a fresh machine) instead of failing at once. apt waits itself for the dpkg lock
# (DPkg::Lock::Timeout); the lists and archive locks of older apt versions are retried here.
APT_LOCK_WAIT="${APT_LOCK_WAIT:-600}"
apt_get() {  # $1 = log file, $2... = apt-get arguments
  local logf="$1" waited=0
  shift
  while :; do
    if apt-get -o DPkg::Lock::Timeout="$APT_LOCK_WAIT" "$@" >"$logf" 2>&1; then
      return 0
    fi
    grep -q 'Could not get lock\|Unable to acquire the dpkg frontend lock\|Unable to lock' "$logf" || return 1
    ((waited < APT_LOCK_WAIT)) || return 1
    ((waited == 0)) && log "another apt-get or dpkg holds its lock: waiting (up to ${APT_LOCK_WAIT} s)"
    sleep 5
    waited=$((waited + 5))
  done
}
for v in MYSQL_PORT PG_PORT REDIS_PORT MONGO_PORT; do
  if ! [[ "${!v}" =~ ^[1-9][0-9]{0,4}$ ]] || ((${!v} < 1 || ${!v} > 65535)); then
    die "$v='${!v}' is not a port number (1-65535)"
  fi
done
mkdir -p "$RUN_DIR"

# One start/stop at a time. Every server below is launched with fd 9 closed, so the
# lock is released when this script ends.
exec 9>"$RUN_DIR/dbs.lock"
if ! flock -n 9; then
  log "another start-dbs.sh/stop-dbs.sh is running, waiting for it"
  flock 9
fi

# Short, stable id of this checkout (for paths outside it).
ROOT_ID="$(printf '%s' "$DTM_PROJECT_ROOT" | cksum | cut -d' ' -f1)"

# Records a server that this script started.
record() {  # $1 = name, $2 = pid, $3... = key=value lines for <name>.info
  local name="$1" pid="$2"; shift 2
  printf '%s\n' "$@" >"$RUN_DIR/$name.info"
  printf '%s\n' "$pid" >"$RUN_DIR/$name.pid"
}

# True when something accepts TCP connections on 127.0.0.1:$1.
port_open() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# True while the process runs. A zombie counts as gone: on this kind of machine pid 1
# reaps orphans only every ~2 s, and kill -0 still succeeds on a zombie.
alive() {
  kill -0 "$1" 2>/dev/null &&
    [[ "$(sed -n 's/^.*) \(.\).*$/\1/p' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# Waits until "$@" succeeds. Dies with the log tail when the deadline passes or when
# the server process (pid, if not empty) exits.
wait_ready() {  # $1 = name, $2 = pid or "", $3 = log file, $4... = check command
  local name="$1" pid="$2" file="$3"; shift 3
  local deadline=$((SECONDS + TIMEOUT))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$pid" ]] && ! alive "$pid"; then
      die_with_log "$file" "$name exited during start-up (pid $pid)"
    fi
    if ((SECONDS >= deadline)); then
      die_with_log "$file" "$name did not answer within ${TIMEOUT} s"
    fi
    sleep 0.2
  done
}

# A directory for a Unix socket: the preferred one, or one under /tmp when the path
# would exceed the ~107-byte limit of socket paths.
socket_dir() {  # $1 = preferred dir, $2 = name
  if (( ${#1} <= 80 )); then
    printf '%s\n' "$1"
  else
    printf '/tmp/dtm-sdk-%s-%s\n' "$ROOT_ID" "$2"
  fi
}

# ---------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------
# Python for the SecantusDB venv: python3 on PATH if it can make venvs, else Debian's.
PY="$(command -v python3 || true)"
if [[ -z "$PY" ]] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
  PY=/usr/bin/python3
fi

missing=()
if [[ -n "$want_mariadb" ]]; then
  for c in mariadbd mariadb-install-db mariadb-admin mariadb; do
    command -v "$c" >/dev/null || { missing+=(mariadb-server mariadb-client); break; }
  done
fi
if [[ -n "$want_postgres" ]]; then
  for c in initdb pg_ctl pg_isready psql; do
    [[ -x "$PG_BIN/$c" ]] || { missing+=(postgresql-15 postgresql-client-15); break; }
  done
fi
if [[ -n "$want_redis" ]]; then
  for c in redis-server redis-cli; do
    command -v "$c" >/dev/null || { missing+=(redis-server redis-tools); break; }
  done
fi
if [[ -n "$want_mongo" ]] && { ! [[ -x "$PY" ]] || ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; }; then
  missing+=(python3 python3-venv)
fi
# Prometheus: the metrics test (tests/tests/prometheus.rs) scrapes the SDK's metrics with a
# real server, which it starts itself; only the binary is needed here.
command -v prometheus >/dev/null || missing+=(prometheus)

if ((${#missing[@]})); then
  need_root "install ${missing[*]} with apt-get"
  log "installing Debian packages: ${missing[*]} (apt-get update + install, about a minute)"
  # Packages must not start their own services (which would take the default ports
  # with another configuration): block that with policy-rc.d if nothing does yet.
  policy_guard=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_guard=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  mkdir -p "$DTM_TOOLS_DIR"
  apt_get "$DTM_TOOLS_DIR/apt-update.log" update -qq ||
    die_with_log "$DTM_TOOLS_DIR/apt-update.log" "apt-get update failed"
  apt_get "$DTM_TOOLS_DIR/apt-install.log" install -y -qq --no-install-recommends "${missing[@]}" ||
    die_with_log "$DTM_TOOLS_DIR/apt-install.log" "apt-get install ${missing[*]} failed"
  if [[ -n "$policy_guard" ]]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  log "packages installed ($((SECONDS - T0)) s)"
fi

# ---------------------------------------------------------------------------------
# MariaDB
# ---------------------------------------------------------------------------------
mysql_tcp=(--protocol=TCP -h127.0.0.1 -P"$MYSQL_PORT" -uroot --connect-timeout=2)
mariadb_ping()  { mariadb-admin --no-defaults "${mysql_tcp[@]}" ping; }
mariadb_login() { mariadb --no-defaults "${mysql_tcp[@]}" -N -e 'select 1'; }

check_mariadb_login() {
  mariadb_login >/dev/null 2>&1 ||
    die "MariaDB on 127.0.0.1:$MYSQL_PORT answers, but 'mariadb -h127.0.0.1 -P$MYSQL_PORT -uroot' (empty password) cannot log in: $(mariadb_login 2>&1 | head -n1)"
}

start_mariadb() {
  local t=$SECONDS d="$DTM_TOOLS_DIR/mariadb" sock pid
  if mariadb_ping >/dev/null 2>&1; then
    check_mariadb_login
    log "MariaDB already answers on 127.0.0.1:$MYSQL_PORT, skipped"
    return
  fi
  port_open "$MYSQL_PORT" && die "port $MYSQL_PORT is taken by something that is not MariaDB/MySQL"
  need_root "start MariaDB"
  mkdir -p "$d"
  sock="$(socket_dir "$d" mariadb)"; mkdir -p "$sock"; sock="$sock/mysqld.sock"
  if [[ ! -f "$d/.initialized" ]]; then
    log "MariaDB: creating the data directory $d/data (mariadb-install-db)"
    rm -rf "$d/data"
    mariadb-install-db --no-defaults --datadir="$d/data" --user=root \
      --auth-root-authentication-method=normal --skip-test-db >"$d/install-db.log" 2>&1 ||
      die_with_log "$d/install-db.log" "mariadb-install-db failed"
    touch "$d/.initialized"
  fi
  log "MariaDB: starting on 127.0.0.1:$MYSQL_PORT (log $d/mariadbd.log)"
  rm -f "$sock"
  setsid mariadbd --no-defaults --datadir="$d/data" --user=root --socket="$sock" \
    --pid-file="$d/mariadbd.pid" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
    --character-set-server=utf8mb4 --log-error="$d/mariadbd.log" \
    </dev/null >>"$d/mariadbd.out" 2>&1 9>&- &
  pid=$!
  record mariadb "$pid" "port=$MYSQL_PORT" "socket=$sock" "datadir=$d/data"
  wait_ready MariaDB "$pid" "$d/mariadbd.log" mariadb_ping
  check_mariadb_login
  log "MariaDB: ready (pid $pid, $((SECONDS - t)) s)"
}

# ---------------------------------------------------------------------------------
# PostgreSQL 15
# ---------------------------------------------------------------------------------
pg_ready() { "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -t 2; }
pg_query() { "$PG_BIN/psql" -X -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atc "$1"; }

check_pg() {
  local mpt
  mpt="$(pg_query 'show max_prepared_transactions' 2>&1)" ||
    die "PostgreSQL on 127.0.0.1:$PG_PORT answers, but user postgres cannot log in without a password: $mpt"
  if ! [[ "$mpt" =~ ^[0-9]+$ ]] || ((mpt == 0)); then
    die "PostgreSQL on 127.0.0.1:$PG_PORT has max_prepared_transactions=$mpt; XA tests need > 0"
  fi
}

start_postgres() {
  local t=$SECONDS p="$DTM_TOOLS_DIR/postgres" sock pid opts
  if pg_ready; then
    check_pg
    log "PostgreSQL already answers on 127.0.0.1:$PG_PORT, skipped"
    return
  fi
  port_open "$PG_PORT" && die "port $PG_PORT is taken by something that is not PostgreSQL"
  need_root "start PostgreSQL (initdb and pg_ctl run as user postgres)"
  id postgres >/dev/null 2>&1 || die "there is no 'postgres' system user (package postgresql-15 creates it)"
  mkdir -p "$p"
  chown postgres:postgres "$p"
  if ! runuser -u postgres -- test -w "$p"; then
    # e.g. a checkout under /root (mode 700): the postgres user cannot reach it.
    local alt="/var/tmp/dtm-sdk-$ROOT_ID-postgres"
    warn "user postgres cannot write $p (a parent directory is closed to it); using $alt"
    p="$alt"
    mkdir -p "$p"
    chown postgres:postgres "$p"
  fi
  sock="$(socket_dir "$p" postgres)"
  mkdir -p "$sock"
  chown postgres:postgres "$sock"
  if [[ ! -f "$p/.initialized" ]]; then
    log "PostgreSQL: creating the cluster $p/data (initdb as user postgres)"
    rm -rf "$p/data"
    (cd "$p" && runuser -u postgres -- "$PG_BIN/initdb" -D "$p/data" -A trust -U postgres \
      -E UTF8 --locale=C.UTF-8 --no-sync) >"$p/initdb.log" 2>&1 ||
      die_with_log "$p/initdb.log" "initdb failed"
    touch "$p/.initialized"
  fi
  log "PostgreSQL: starting on 127.0.0.1:$PG_PORT (log $p/postgres.log)"
  opts="-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories='$sock'"
  opts+=" -c max_prepared_transactions=100"
  # pg_ctl detaches the postmaster (setsid) and waits (-w) until it accepts connections.
  (cd "$p" && runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$p/data" -l "$p/postgres.log" \
    -w -t "$TIMEOUT" -o "$opts" start) </dev/null >"$p/pg_ctl.log" 2>&1 9>&- ||
    die_with_log "$p/postgres.log" "pg_ctl start failed: $(tail -n1 "$p/pg_ctl.log")"
  pid="$(head -n1 "$p/data/postmaster.pid")"
  record postgres "$pid" "port=$PG_PORT" "socket=$sock" "datadir=$p/data"
  wait_ready PostgreSQL "$pid" "$p/postgres.log" pg_ready
  check_pg
  log "PostgreSQL: ready (pid $pid, $((SECONDS - t)) s)"
}

# ---------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------
redis_ping() { [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

start_redis() {
  local t=$SECONDS r="$DTM_TOOLS_DIR/redis" pid="" deadline
  if redis_ping; then
    log "Redis already answers on 127.0.0.1:$REDIS_PORT, skipped"
    return
  fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is taken by something that is not Redis"
  mkdir -p "$r"
  rm -f "$r/redis.pid"
  log "Redis: starting on 127.0.0.1:$REDIS_PORT (log $r/redis.log)"
  setsid redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
    --appendonly no --dir "$r" --pidfile "$r/redis.pid" --logfile "$r/redis.log" \
    </dev/null >>"$r/redis.out" 2>&1 9>&- ||
    die_with_log "$r/redis.out" "redis-server failed to start"
  deadline=$((SECONDS + TIMEOUT))
  until [[ -s "$r/redis.pid" ]]; do
    ((SECONDS < deadline)) || die_with_log "$r/redis.log" "redis-server wrote no pid file within ${TIMEOUT} s"
    sleep 0.1
  done
  pid="$(head -n1 "$r/redis.pid")"
  record redis "$pid" "port=$REDIS_PORT"
  wait_ready Redis "$pid" "$r/redis.log" redis_ping
  log "Redis: ready (pid $pid, $((SECONDS - t)) s)"
}

# ---------------------------------------------------------------------------------
# SecantusDB (MongoDB wire protocol)
# ---------------------------------------------------------------------------------
# Sends {hello: 1} as OP_MSG with the standard library only; succeeds on {ok: 1}.
mongo_hello() {
  "$PY" - "$MONGO_PORT" <<'PY'
import socket, struct, sys

def elem(t, name, payload):
    return bytes([t]) + name.encode() + b"\0" + payload

def doc(*elems):
    body = b"".join(elems)
    return struct.pack("<i", len(body) + 5) + body + b"\0"

query = doc(elem(0x10, "hello", struct.pack("<i", 1)),
            elem(0x02, "$db", struct.pack("<i", 6) + b"admin\0"))
msg = struct.pack("<I", 0) + b"\0" + query
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=3)
sock.sendall(struct.pack("<iiii", 16 + len(msg), 1, 0, 2013) + msg)

def recv(n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            sys.exit("connection closed")
        data += chunk
    return data

length, _, _, opcode = struct.unpack("<iiii", recv(16))
body = recv(length - 16)
if opcode != 2013 or body[4] != 0:
    sys.exit("not an OP_MSG reply")
d = body[5:]
end, i = struct.unpack("<i", d[:4])[0] - 1, 4
fixed = {1: 8, 7: 12, 8: 1, 9: 8, 10: 0, 16: 4, 17: 8, 18: 8, 19: 16}
while i < end:
    t = d[i]
    j = d.index(b"\0", i + 1)
    name, i = d[i + 1:j], j + 1
    if name == b"ok":
        ok = {1: lambda: struct.unpack("<d", d[i:i + 8])[0], 16: lambda: struct.unpack("<i", d[i:i + 4])[0],
              18: lambda: struct.unpack("<q", d[i:i + 8])[0], 8: lambda: d[i]}.get(t, lambda: 0)()
        sys.exit(0 if ok == 1 else "hello answered ok=%r" % ok)
    if t in fixed:
        i += fixed[t]
    elif t in (2, 13, 14):
        i += 4 + struct.unpack("<i", d[i:i + 4])[0]
    elif t in (3, 4):
        i += struct.unpack("<i", d[i:i + 4])[0]
    elif t == 5:
        i += 5 + struct.unpack("<i", d[i:i + 4])[0]
    else:
        break
sys.exit("no ok field in the hello reply")
PY
}

start_secantus() {
  local t=$SECONDS s="$DTM_TOOLS_DIR/secantusdb" pid
  if mongo_hello >/dev/null 2>&1; then
    log "MongoDB-compatible server already answers on 127.0.0.1:$MONGO_PORT, skipped"
    return
  fi
  port_open "$MONGO_PORT" && die "port $MONGO_PORT is taken by something that does not answer a MongoDB hello"
  mkdir -p "$s"
  if ! [[ -x "$s/venv/bin/secantusd-py" ]] || ! "$s/venv/bin/python" -c \
      "import importlib.metadata as m, sys; sys.exit(m.version('SecantusDB') != '$SECANTUS_PIN')" \
      >/dev/null 2>&1; then
    log "SecantusDB: creating $s/venv and installing SecantusDB==$SECANTUS_PIN from PyPI"
    rm -rf "$s/venv"
    "$PY" -m venv "$s/venv" >"$s/pip.log" 2>&1 || die_with_log "$s/pip.log" "python -m venv failed"
    "$s/venv/bin/python" -m pip install -q "SecantusDB==$SECANTUS_PIN" >>"$s/pip.log" 2>&1 ||
      die_with_log "$s/pip.log" "pip install SecantusDB==$SECANTUS_PIN failed"
  fi
  log "SecantusDB: starting on 127.0.0.1:$MONGO_PORT (log $s/secantusd.log)"
  setsid "$s/venv/bin/secantusd-py" --host 127.0.0.1 --port "$MONGO_PORT" --storage-path "$s/data" \
    </dev/null >>"$s/secantusd.log" 2>&1 9>&- &
  pid=$!
  record secantusdb "$pid" "port=$MONGO_PORT"
  wait_ready SecantusDB "$pid" "$s/secantusd.log" mongo_hello
  log "SecantusDB: ready (pid $pid, $((SECONDS - t)) s)"
}

up=()
[[ -z "$want_mariadb" ]] || { start_mariadb; up+=("mysql $MYSQL_PORT"); }
[[ -z "$want_postgres" ]] || { start_postgres; up+=("postgres $PG_PORT"); }
[[ -z "$want_redis" ]] || { start_redis; up+=("redis $REDIS_PORT"); }
[[ -z "$want_mongo" ]] || { start_secantus; up+=("mongo $MONGO_PORT"); }
log "answering on 127.0.0.1: $(IFS=,; printf '%s' "${up[*]}" | sed 's/,/, /g') ($((SECONDS - T0)) s)"
