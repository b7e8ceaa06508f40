# Throwaway PostgreSQL + PgBouncer (transaction pooling) for tests, demo and bench.
# Sourced by scripts/dev.sh. Both run as the postgres user (they refuse root), in a
# temporary folder, on loopback ports picked free for this run; stop_servers (set
# as an EXIT trap by the caller) stops them and removes the folder.

PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)}
[ -x "$PG_BIN/initdb" ] || PG_BIN=/usr/lib/postgresql/15/bin

SERVERS_DIR=""

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

start_postgres() {
  as_pg "$PG_BIN/initdb" -D "$SERVERS_DIR/data" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
    >"$SERVERS_DIR/initdb.log" 2>&1 || { cat "$SERVERS_DIR/initdb.log"; return 1; }
  local try
  for try in 1 2 3 4 5; do
    PG_PORT=$(free_port)
    # fsync off: a throwaway server; max_connections covers the load tests.
    if as_pg "$PG_BIN/pg_ctl" -D "$SERVERS_DIR/data" -l "$SERVERS_DIR/postgres.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -c port=$PG_PORT -c unix_socket_directories=$SERVERS_DIR \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 \
            -c shared_buffers=64MB" >/dev/null; then
      as_pg psql -X -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -c "CREATE DATABASE pqscope" >/dev/null
      return 0
    fi
    echo "postgres did not start on port $PG_PORT (try $try); retrying" >&2
    tail -n 5 "$SERVERS_DIR/postgres.log" >&2 || true
  done
  return 1
}

start_pgbouncer() {
  local try
  echo '"postgres" ""' >"$SERVERS_DIR/userlist.txt"
  for try in 1 2 3 4 5; do
    PGB_PORT=$(free_port)
    cat >"$SERVERS_DIR/pgbouncer.ini" <<INI
[databases]
pqscope = host=127.0.0.1 port=$PG_PORT dbname=pqscope
; one server connection: shows what one client leaves behind for the next
pqscope_pool1 = host=127.0.0.1 port=$PG_PORT dbname=pqscope pool_size=1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGB_PORT
unix_socket_dir = $SERVERS_DIR
auth_type = trust
auth_file = $SERVERS_DIR/userlist.txt
admin_users = postgres
pool_mode = transaction
default_pool_size = 4
max_client_conn = 500
ignore_startup_parameters = extra_float_digits
logfile = $SERVERS_DIR/pgbouncer.log
pidfile = $SERVERS_DIR/pgbouncer.pid
INI
    chown postgres "$SERVERS_DIR/pgbouncer.ini" "$SERVERS_DIR/userlist.txt" 2>/dev/null || true
    if as_pg pgbouncer -d -q "$SERVERS_DIR/pgbouncer.ini"; then
      local i
      for i in $(seq 1 50); do
        if psql -X -q -h 127.0.0.1 -p "$PGB_PORT" -U postgres -d pqscope -c "SELECT 1" >/dev/null 2>&1; then
          return 0
        fi
        sleep 0.1
      done
    fi
    echo "pgbouncer did not start on port $PGB_PORT (try $try); retrying" >&2
    tail -n 5 "$SERVERS_DIR/pgbouncer.log" >&2 || true
    [ -f "$SERVERS_DIR/pgbouncer.pid" ] && kill "$(cat "$SERVERS_DIR/pgbouncer.pid")" 2>/dev/null || true
  done
  return 1
}

start_servers() {
  SERVERS_DIR=$(mktemp -d /tmp/pqscope-servers.XXXXXX)
  chmod 755 "$SERVERS_DIR"
  [ "$(id -u)" = 0 ] && chown postgres "$SERVERS_DIR"
  start_postgres
  start_pgbouncer
  local common="host=127.0.0.1 user=postgres connect_timeout=10"
  export PQSCOPE_TEST_DIRECT="$common port=$PG_PORT dbname=pqscope"
  export PQSCOPE_TEST_PGBOUNCER="$common port=$PGB_PORT dbname=pqscope"
  export PQSCOPE_TEST_PGBOUNCER_POOL1="$common port=$PGB_PORT dbname=pqscope_pool1"
  export PQSCOPE_TEST_PGBOUNCER_ADMIN="$common port=$PGB_PORT dbname=pgbouncer"
  export PQSCOPE_TEST_PGBOUNCER_PIDFILE="$SERVERS_DIR/pgbouncer.pid"
  echo "servers: PostgreSQL on 127.0.0.1:$PG_PORT, PgBouncer (transaction pooling) on 127.0.0.1:$PGB_PORT, in $SERVERS_DIR"
}

stop_servers() {
  [ -n "$SERVERS_DIR" ] && [ -d "$SERVERS_DIR" ] || return 0
  if [ -f "$SERVERS_DIR/pgbouncer.pid" ]; then
    kill "$(cat "$SERVERS_DIR/pgbouncer.pid")" 2>/dev/null || true
  fi
  if [ -f "$SERVERS_DIR/data/postmaster.pid" ]; then
    as_pg "$PG_BIN/pg_ctl" -D "$SERVERS_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$SERVERS_DIR"
  SERVERS_DIR=""
}
