# Throwaway PostgreSQL + PgBouncer (transaction pooling) for tests, demo and bench,
# and on request a streaming-replication standby (PQSCOPE_SERVERS_STANDBY=1; the
# PgBouncers reach it as database pqscope_standby) and Pgpool-II in front
# (PQSCOPE_SERVERS_PGPOOL=1) and PgBouncer 1.24 beside 1.18
# (PQSCOPE_SERVERS_PGBOUNCER124=1). Sourced by scripts/dev.sh (and
# scripts/lib/replica_pair.sh). All run as the postgres user (they refuse root), in
# a temporary folder, on loopback ports picked free for this run; stop_servers (set
# as an EXIT trap by the caller) stops them and removes the folder.

PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PG_BIN/initdb" ] || PG_BIN=/usr/lib/postgresql/15/bin

SERVERS_DIR=""
# shellcheck source=pgbouncer_124.sh
. "$(dirname "${BASH_SOURCE[0]}")/pgbouncer_124.sh"

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# A loopback port nobody listens on, away from 5432/6432. Another run may pick the
# same one between this check and the bind: start_* retry with a new port then.
free_port() {
  python3 - <<'PY'
import random, socket
while True:
    p = random.randint(20000, 59999)
    if p in (25432, 26432):  # ports people use by hand for dev servers
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
PY
}

# The server options of every throwaway node. fsync off: a throwaway server;
# max_connections covers the load tests. wal_level replica and the initdb defaults
# (max_wal_senders 10, replication allowed from loopback) let a standby follow it.
pg_options() { # port, socket dir
  echo "-c listen_addresses=127.0.0.1 -c port=$1 -c unix_socket_directories=$2 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=${PG_MAX_CONNECTIONS:-200} \
    -c shared_buffers=${PG_SHARED_BUFFERS:-64MB} -c wal_level=replica -c hot_standby=on"
}

# Starts the cluster in $1 on a free port, logging to $2; sets PG_STARTED_PORT.
start_node() { # data dir, log file, socket dir
  local try port
  for try in 1 2 3 4 5; do
    port=$(free_port)
    if as_pg "$PG_BIN/pg_ctl" -D "$1" -l "$2" -w -t 60 start -o "$(pg_options "$port" "$3")" >/dev/null; then
      PG_STARTED_PORT=$port
      return 0
    fi
    echo "postgres ($1) did not start on port $port (try $try); retrying" >&2
    tail -n 5 "$2" >&2 || true
  done
  return 1
}

start_postgres() {
  as_pg "$PG_BIN/initdb" -D "$SERVERS_DIR/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >"$SERVERS_DIR/initdb.log" 2>&1 || { cat "$SERVERS_DIR/initdb.log"; return 1; }
  start_node "$SERVERS_DIR/data" "$SERVERS_DIR/postgres.log" "$SERVERS_DIR" || return 1
  PG_PORT=$PG_STARTED_PORT
  as_pg psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE pqscope" >/dev/null
}

# A streaming-replication standby of the primary on port $1, in $2 (a base backup
# over loopback, then a hot standby that follows it); sets PG_STARTED_PORT.
start_standby_of() { # primary port, data dir, log file, socket dir
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$1" -U postgres -D "$2" -R -X stream --no-sync \
    -c fast >"$3.basebackup" 2>&1 || { cat "$3.basebackup"; return 1; }
  # The standby names itself, so a primary can list it in synchronous_standby_names.
  echo "cluster_name = 'standby'" | as_pg tee -a "$2/postgresql.conf" >/dev/null
  start_node "$2" "$3" "$4" || return 1
  local i
  for i in $(seq 1 100); do
    [ "$(as_pg psql -X -At -h 127.0.0.1 -p "$PG_STARTED_PORT" -U postgres -d postgres \
        -c "SELECT status FROM pg_stat_wal_receiver" 2>/dev/null)" = streaming ] && return 0
    sleep 0.1
  done
  echo "the standby in $2 is not streaming" >&2
  return 1
}

# A PgBouncer in transaction pooling mode in front of the primary: $1 the binary, $2
# names its files in $SERVERS_DIR, $3 extra [pgbouncer] settings. PGB_EXTRA_DATABASES,
# when set, adds [databases] lines (the standby's). Sets PGB_STARTED_PORT.
start_pgbouncer_as() { # binary, name, extra settings
  local bin=$1 name=$2 extra=$3 try port
  echo '"postgres" ""' >"$SERVERS_DIR/userlist.txt"
  for try in 1 2 3 4 5; do
    port=$(free_port)
    cat >"$SERVERS_DIR/$name.ini" <<INI
[databases]
pqscope = host=127.0.0.1 port=$PG_PORT dbname=pqscope
; one server connection: shows what one client leaves behind for the next
pqscope_pool1 = host=127.0.0.1 port=$PG_PORT dbname=pqscope pool_size=1
; statement pooling, which forbids transactions: how a scope fails there
pqscope_statement = host=127.0.0.1 port=$PG_PORT dbname=pqscope pool_mode=statement
${PGB_EXTRA_DATABASES:-}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir = $SERVERS_DIR
auth_type = trust
auth_file = $SERVERS_DIR/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
logfile = $SERVERS_DIR/$name.log
pidfile = $SERVERS_DIR/$name.pid
$extra
INI
    chown postgres "$SERVERS_DIR/$name.ini" "$SERVERS_DIR/userlist.txt" 2>/dev/null || true
    if as_pg "$bin" -d -q "$SERVERS_DIR/$name.ini"; then
      local i
      for i in $(seq 1 50); do
        if psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d pqscope -c "SELECT 1" >/dev/null 2>&1; then
          PGB_STARTED_PORT=$port
          return 0
        fi
        sleep 0.1
      done
    fi
    echo "$name did not start on port $port (try $try); retrying" >&2
    tail -n 5 "$SERVERS_DIR/$name.log" >&2 || true
    [ -f "$SERVERS_DIR/$name.pid" ] && kill "$(cat "$SERVERS_DIR/$name.pid")" 2>/dev/null || true
  done
  return 1
}

# Pgpool-II in front of the primary on $PG_PORT: $1 names its files in
# $SERVERS_DIR, $2 is backend_clustering_mode, $3 its children (each serves one
# client at a time: Pgpool-II pools sessions). One backend, flagged ALWAYS_PRIMARY,
# so no streaming-replication check is needed; load balancing and the connection
# cache on, as deployed. Sets PGPOOL_STARTED_PORT.
start_pgpool() { # name, mode, children
  local name=$1 mode=$2 children=$3 try i port pcp_port
  : >"$SERVERS_DIR/$name.pcp.conf"
  for try in 1 2 3 4 5; do
    port=$(free_port)
    pcp_port=$(free_port)
    cat >"$SERVERS_DIR/$name.conf" <<CONF
backend_clustering_mode = '$mode'
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$SERVERS_DIR'
pcp_listen_addresses = '127.0.0.1'
pcp_port = $pcp_port
pcp_socket_dir = '$SERVERS_DIR'
backend_hostname0 = '127.0.0.1'
backend_port0 = $PG_PORT
backend_weight0 = 1
backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'
enable_pool_hba = off
pool_passwd = ''
num_init_children = $children
max_pool = 1
connection_cache = on
load_balance_mode = on
sr_check_period = 0
health_check_period = 0
failover_on_backend_error = off
pid_file_name = '$SERVERS_DIR/$name.pid'
logdir = '$SERVERS_DIR/$name.d'
log_min_messages = warning
CONF
    mkdir -p "$SERVERS_DIR/$name.d"
    chown -R postgres "$SERVERS_DIR/$name.conf" "$SERVERS_DIR/$name.pcp.conf" "$SERVERS_DIR/$name.d" 2>/dev/null || true
    as_pg pgpool -n -D -f "$SERVERS_DIR/$name.conf" -F "$SERVERS_DIR/$name.pcp.conf" >"$SERVERS_DIR/$name.log" 2>&1 &
    for i in $(seq 1 100); do
      if psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d pqscope -c "SELECT 1" >/dev/null 2>&1; then
        PGPOOL_STARTED_PORT=$port
        return 0
      fi
      sleep 0.1
    done
    echo "pgpool $name did not start on port $port (try $try); retrying" >&2
    tail -n 5 "$SERVERS_DIR/$name.log" >&2 || true
    stop_pgpool "$name"
  done
  return 1
}

stop_pgpool() { # name
  [ -f "$SERVERS_DIR/$1.pid" ] || return 0
  local pid
  pid=$(tr -d '\0' <"$SERVERS_DIR/$1.pid")
  kill -INT "$pid" 2>/dev/null || true  # fast shutdown: children end with their clients
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  rm -f "$SERVERS_DIR/$1.pid"
}

start_servers() {
  SERVERS_DIR=$(mktemp -d /tmp/pqscope-servers.XXXXXX)
  chmod 755 "$SERVERS_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$SERVERS_DIR"
  start_postgres
  local common="host=127.0.0.1 user=postgres connect_timeout=10" standby_port=""
  # The standby first, so that the PgBouncers can list it (database pqscope_standby).
  PGB_EXTRA_DATABASES=""
  if [ "${PQSCOPE_SERVERS_STANDBY:-0}" = 1 ]; then
    start_standby_of "$PG_PORT" "$SERVERS_DIR/standby" "$SERVERS_DIR/standby.log" "$SERVERS_DIR"
    standby_port=$PG_STARTED_PORT
    PGB_EXTRA_DATABASES="pqscope_standby = host=127.0.0.1 port=$standby_port dbname=pqscope"
  fi
  # Debian 12's PgBouncer: no prepared statements in transaction pooling.
  start_pgbouncer_as pgbouncer pgbouncer ""
  PGB_PORT=$PGB_STARTED_PORT
  echo "servers: PostgreSQL on 127.0.0.1:$PG_PORT, PgBouncer (transaction pooling) on 127.0.0.1:$PGB_PORT, in $SERVERS_DIR"
  # Tests that need a primary/standby pair of their own (they stop and promote
  # nodes) start one with this script; see scripts/lib/replica_pair.sh.
  export PQSCOPE_TEST_REPLICA_PAIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/replica_pair.sh"
  if [ -n "$standby_port" ]; then
    export PQSCOPE_TEST_STANDBY="$common port=$standby_port dbname=pqscope"
    export PQSCOPE_TEST_PGBOUNCER_STANDBY="$common port=$PGB_PORT dbname=pqscope_standby"
    echo "servers: streaming-replication standby on 127.0.0.1:$standby_port (through PgBouncer: database pqscope_standby)"
  fi
  if [ "${PQSCOPE_SERVERS_PGPOOL:-0}" = 1 ]; then
    # Enough children for two test processes at once, each with a few sessions.
    local sr_port
    start_pgpool pgpool streaming_replication 32
    sr_port=$PGPOOL_STARTED_PORT
    export PQSCOPE_TEST_PGPOOL="$common port=$sr_port dbname=pqscope"
    start_pgpool pgpool_raw raw 4
    export PQSCOPE_TEST_PGPOOL_RAW="$common port=$PGPOOL_STARTED_PORT dbname=pqscope"
    echo "servers: Pgpool-II on 127.0.0.1:$sr_port (streaming_replication mode) and :$PGPOOL_STARTED_PORT (raw mode)"
  fi
  if [ "${PQSCOPE_SERVERS_PGBOUNCER124:-0}" = 1 ]; then
    # PgBouncer 1.24 (built once, see pgbouncer_124.sh): tracks protocol-level prepared
    # statements in transaction pooling, as 1.24 does by default.
    ensure_pgbouncer_124
    start_pgbouncer_as "$PGBOUNCER_124" pgbouncer124 "max_prepared_statements = 200"
    export PQSCOPE_TEST_PGBOUNCER124="$common port=$PGB_STARTED_PORT dbname=pqscope"
    export PQSCOPE_TEST_PGBOUNCER124_POOL1="$common port=$PGB_STARTED_PORT dbname=pqscope_pool1"
    export PQSCOPE_TEST_PGBOUNCER124_ADMIN="$common port=$PGB_STARTED_PORT dbname=pgbouncer"
    echo "servers: PgBouncer 1.24 (transaction pooling, max_prepared_statements = 200) on 127.0.0.1:$PGB_STARTED_PORT"
  fi
  export PQSCOPE_TEST_DIRECT="$common port=$PG_PORT dbname=pqscope"
  export PQSCOPE_TEST_PGBOUNCER="$common port=$PGB_PORT dbname=pqscope"
  export PQSCOPE_TEST_PGBOUNCER_POOL1="$common port=$PGB_PORT dbname=pqscope_pool1"
  export PQSCOPE_TEST_PGBOUNCER_STATEMENT="$common port=$PGB_PORT dbname=pqscope_statement"
  export PQSCOPE_TEST_PGBOUNCER_ADMIN="$common port=$PGB_PORT dbname=pgbouncer"
  export PQSCOPE_TEST_PGBOUNCER_PIDFILE="$SERVERS_DIR/pgbouncer.pid"
}

stop_servers() {
  [ -n "$SERVERS_DIR" ] && [ -d "$SERVERS_DIR" ] || return 0
  stop_pgpool pgpool
  stop_pgpool pgpool_raw
  local b
  for b in pgbouncer pgbouncer124; do
    [ -f "$SERVERS_DIR/$b.pid" ] && kill "$(cat "$SERVERS_DIR/$b.pid")" 2>/dev/null || true
  done
  local d
  for d in "$SERVERS_DIR/standby" "$SERVERS_DIR/data"; do
    if [ -f "$d/postmaster.pid" ]; then
      as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
    fi
  done
  rm -rf "$SERVERS_DIR"
  SERVERS_DIR=""
}
