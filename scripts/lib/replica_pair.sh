#!/usr/bin/env bash
# A throwaway primary and its streaming-replication standby, each with a PgBouncer
# (transaction pooling) in front, and a Pgpool-II (streaming_replication mode,
# load balancing on) in front of both, for tests that stop and promote nodes. Every
# pair lives in its own folder and on its own free loopback ports, as the
# postgres user, apart from the shared servers of scripts/dev.sh.
#
#   replica_pair.sh start DIR [--apply-delay VALUE]
#                                      DIR must not exist; writes DIR/env (shell
#                                      assignments: PRIMARY_PORT, STANDBY_PORT,
#                                      PGB_PRIMARY_PORT, PGB_STANDBY_PORT, PGPOOL_PORT).
#                                      --apply-delay: the standby's recovery_min_apply_delay,
#                                      as SHOW writes it (500ms, 2s): it replays each commit
#                                      that long after the primary wrote it
#   replica_pair.sh stop-primary DIR   the primary stops at once (as a crash would)
#   replica_pair.sh promote DIR        the standby becomes a primary, and waits for it
#   replica_pair.sh pgbouncer-reconnect DIR   RECONNECT on the standby's PgBouncer: it
#                                      reports the server's in_hot_standby as cached at its
#                                      first server login until its server connections are renewed
#   replica_pair.sh pause-replication DIR   the standby stops receiving WAL
#   replica_pair.sh resume-replication DIR  and starts again
#   replica_pair.sh stop DIR           stops everything and removes DIR
set -euo pipefail

# shellcheck source=servers.sh
. "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/servers.sh"

# Smaller than the shared servers: a pair serves one test process.
PG_MAX_CONNECTIONS=40
PG_SHARED_BUFFERS=16MB

pair_psql() { # port, sql
  as_pg psql -X -q -At -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "$2"
}

start_pair_pgbouncer() { # dir, name, upstream port; sets PGB_STARTED_PORT
  local dir=$1 name=$2 upstream=$3 try port i
  for try in 1 2 3 4 5; do
    port=$(free_port)
    cat >"$dir/$name.ini" <<INI
[databases]
pqscope = host=127.0.0.1 port=$upstream dbname=pqscope

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
admin_users = postgres
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 100
ignore_startup_parameters = extra_float_digits
server_login_retry = 1
logfile = $dir/$name.log
pidfile = $dir/$name.pid
INI
    chown postgres "$dir/$name.ini" 2>/dev/null || true
    if as_pg pgbouncer -d -q "$dir/$name.ini"; then
      for i in $(seq 1 50); do
        if psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d pqscope -c "SELECT 1" >/dev/null 2>&1; then
          PGB_STARTED_PORT=$port
          return 0
        fi
        sleep 0.1
      done
    fi
    [ -f "$dir/$name.pid" ] && kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
  done
  echo "pgbouncer $name did not start" >&2
  return 1
}

# Reads go to the standby (the primary's weight is 0) unless the client's
# application_name starts with "on_primary" (app_name_redirect_preference_list).
start_pair_pgpool() { # dir, primary port, standby port; sets PGPOOL_STARTED_PORT
  local dir=$1 try port pcp_port i
  mkdir -p "$dir/pgpool.d"
  : >"$dir/pgpool.pcp.conf"
  for try in 1 2 3 4 5; do
    port=$(free_port)
    pcp_port=$(free_port)
    cat >"$dir/pgpool.conf" <<CONF
backend_clustering_mode = 'streaming_replication'
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
pcp_listen_addresses = '127.0.0.1'
pcp_port = $pcp_port
pcp_socket_dir = '$dir'
backend_hostname0 = '127.0.0.1'
backend_port0 = $2
backend_weight0 = 0
backend_flag0 = 'ALWAYS_PRIMARY|DISALLOW_TO_FAILOVER'
backend_hostname1 = '127.0.0.1'
backend_port1 = $3
backend_weight1 = 1
backend_flag1 = 'DISALLOW_TO_FAILOVER'
app_name_redirect_preference_list = 'on_primary.*:primary'
enable_pool_hba = off
pool_passwd = ''
num_init_children = 8
max_pool = 1
load_balance_mode = on
sr_check_period = 0
health_check_period = 0
failover_on_backend_error = off
pid_file_name = '$dir/pgpool.pid'
logdir = '$dir/pgpool.d'
log_min_messages = warning
CONF
    chown -R postgres "$dir/pgpool.conf" "$dir/pgpool.pcp.conf" "$dir/pgpool.d" 2>/dev/null || true
    as_pg pgpool -n -D -f "$dir/pgpool.conf" -F "$dir/pgpool.pcp.conf" >"$dir/pgpool.log" 2>&1 &
    for i in $(seq 1 100); do
      if psql -X -q -h 127.0.0.1 -p "$port" -U postgres -d pqscope -c "SELECT 1" >/dev/null 2>&1; then
        PGPOOL_STARTED_PORT=$port
        return 0
      fi
      sleep 0.1
    done
    [ -f "$dir/pgpool.pid" ] && kill -INT "$(cat "$dir/pgpool.pid")" 2>/dev/null || true
  done
  echo "pgpool did not start" >&2
  return 1
}

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { sed -n '2,/^set /{/^#/p}' "$0" >&2; exit 2; }
shift 2
apply_delay=""
while [ $# -gt 0 ]; do
  case "$cmd $1" in
    "start --apply-delay")
      [ $# -ge 2 ] || { echo "--apply-delay needs a value" >&2; exit 2; }
      apply_delay=$2
      shift 2
      ;;
    *)
      echo "unknown argument for $cmd: $1" >&2
      exit 2
      ;;
  esac
done

case "$cmd" in
  start)
    mkdir "$dir"
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    as_pg "$PG_BIN/initdb" -D "$dir/primary" -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; exit 1; }
    start_node "$dir/primary" "$dir/primary.log" "$dir"
    primary=$PG_STARTED_PORT
    pair_psql "$primary" "CREATE DATABASE pqscope"
    start_standby_of "$primary" "$dir/standby" "$dir/standby.log" "$dir"
    standby=$PG_STARTED_PORT
    if [ -n "$apply_delay" ]; then
      # Reloadable: set on the running standby. A reload reaches new sessions a moment
      # later: wait until one shows the value.
      echo "ALTER SYSTEM SET recovery_min_apply_delay = :'v'" |
        as_pg psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$standby" -U postgres -d postgres -v v="$apply_delay" >/dev/null
      pair_psql "$standby" "SELECT pg_reload_conf()" >/dev/null
      for i in $(seq 1 100); do
        shown=$(pair_psql "$standby" "SHOW recovery_min_apply_delay")
        [ "$shown" = "$apply_delay" ] && break
        sleep 0.1
      done
      if [ "$shown" != "$apply_delay" ]; then
        echo "the standby shows recovery_min_apply_delay = $shown, not $apply_delay (give it as SHOW writes it)" >&2
        exit 1
      fi
    fi
    echo '"postgres" ""' >"$dir/userlist.txt"
    start_pair_pgbouncer "$dir" pgbouncer_primary "$primary"
    pgb_primary=$PGB_STARTED_PORT
    start_pair_pgbouncer "$dir" pgbouncer_standby "$standby"
    pgb_standby=$PGB_STARTED_PORT
    pgpool_port=0
    if command -v pgpool >/dev/null; then
      start_pair_pgpool "$dir" "$primary" "$standby"
      pgpool_port=$PGPOOL_STARTED_PORT
    fi
    printf 'PRIMARY_PORT=%s\nSTANDBY_PORT=%s\nPGB_PRIMARY_PORT=%s\nPGB_STANDBY_PORT=%s\nPGPOOL_PORT=%s\n' \
      "$primary" "$standby" "$pgb_primary" "$pgb_standby" "$pgpool_port" >"$dir/env"
    ;;
  stop-primary)
    as_pg "$PG_BIN/pg_ctl" -D "$dir/primary" -m immediate -w stop >/dev/null
    ;;
  promote)
    as_pg "$PG_BIN/pg_ctl" -D "$dir/standby" -w -t 60 promote >/dev/null
    ;;
  pgbouncer-reconnect)
    . "$dir/env"
    as_pg psql -X -q -h 127.0.0.1 -p "$PGB_STANDBY_PORT" -U postgres -d pgbouncer -c RECONNECT >/dev/null
    ;;
  pause-replication)
    . "$dir/env"
    pair_psql "$STANDBY_PORT" "SHOW primary_conninfo" >"$dir/primary_conninfo"
    pair_psql "$STANDBY_PORT" "ALTER SYSTEM SET primary_conninfo = ''" >/dev/null
    pair_psql "$STANDBY_PORT" "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 100); do
      [ "$(pair_psql "$STANDBY_PORT" "SELECT count(*) FROM pg_stat_wal_receiver")" = 0 ] && exit 0
      sleep 0.1
    done
    echo "the standby still receives WAL" >&2
    exit 1
    ;;
  resume-replication)
    . "$dir/env"
    echo "ALTER SYSTEM SET primary_conninfo = :'v'" |
      as_pg psql -X -q -h 127.0.0.1 -p "$STANDBY_PORT" -U postgres -d postgres -v v="$(cat "$dir/primary_conninfo")" >/dev/null
    pair_psql "$STANDBY_PORT" "SELECT pg_reload_conf()" >/dev/null
    for i in $(seq 1 100); do
      [ "$(pair_psql "$STANDBY_PORT" "SELECT status FROM pg_stat_wal_receiver")" = streaming ] && exit 0
      sleep 0.1
    done
    echo "the standby does not stream again" >&2
    exit 1
    ;;
  stop)
    [ -d "$dir" ] || exit 0
    if [ -f "$dir/pgpool.pid" ]; then
      pid=$(tr -d '\0' <"$dir/pgpool.pid")
      kill -INT "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
    for name in pgbouncer_primary pgbouncer_standby; do
      [ -f "$dir/$name.pid" ] && kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
    done
    for node in standby primary; do
      if [ -f "$dir/$node/postmaster.pid" ]; then
        as_pg "$PG_BIN/pg_ctl" -D "$dir/$node" -m immediate -w stop >/dev/null 2>&1 || true
      fi
    done
    rm -rf "$dir"
    ;;
  *)
    echo "unknown command: $cmd" >&2
    exit 2
    ;;
esac
