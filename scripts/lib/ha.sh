#!/usr/bin/env bash
# A throwaway pg_auto_failover formation for failover tests: a monitor and two
# PostgreSQL nodes (a primary and a synchronous standby), each node kept by its own
# `pg_autoctl run`. As the postgres user, in a temporary folder (data, sockets,
# pg_autoctl's configuration and pid files, logs), on free loopback ports; the
# monitor's timeouts are shortened so that a killed primary is replaced in seconds.
#
# Sourced (by scripts/dev.sh; it sources servers.sh first, or this file does):
#   start_ha_formation    starts it, waits for primary + secondary, and exports
#                         PQSCOPE_TEST_HA_CONNINFO  both nodes, target_session_attrs=read-write
#                         PQSCOPE_TEST_HA_NODES     the nodes' ports, node1 then node2
#                         PQSCOPE_TEST_HA_MONITOR   the monitor's URI
#                         PQSCOPE_TEST_HA_DIR       the folder, for the commands below
#                         PQSCOPE_TEST_HA_CTL       this script, for the commands below
#   stop_ha_formation     stops everything it started and removes the folder (idempotent;
#                         set it as an EXIT trap)
#   ha_kill_primary [--postgres-only]
#                         crashes the current primary and prints "killed NAME PORT"
#   ha_restart_node NAME  runs that node again; it rejoins as a standby (waits for it)
#   ha_wait_formation [SECONDS]   waits for a primary and a secondary
#   ha_wait_primary [SECONDS]     waits for a node that takes writes, prints "NAME PORT"
#   ha_primary            prints the primary's "NAME PORT"
#   ha_state              one line per node: name, port, reported state, goal state
#
# Run, for another process (a test) or by hand:
#   ha.sh demo [ROUNDS]              start one, commit in a loop through the multi-host
#                                    conninfo, kill the primary, time the failover, check
#                                    the acknowledged rows, restart the old primary; stop
#   ha.sh start DIR                  a formation of the caller's in DIR (which must not
#                                    exist), left running; DIR/env has HA_MONITOR_PORT,
#                                    HA_PORT_node1, HA_PORT_node2, HA_MONITOR_URI
#   ha.sh stop DIR                   stops it and removes DIR
#   ha.sh kill-primary DIR [--postgres-only]
#   ha.sh restart-node DIR NAME
#   ha.sh wait-formation DIR [SECONDS]
#   ha.sh wait-primary DIR [SECONDS]
#   ha.sh primary DIR
#   ha.sh state DIR
#
# A crash is the whole node going away: ha_kill_primary sends SIGKILL to its
# pg_autoctl, postmaster and backends at once. The monitor's health checks then fail
# and the node stops reporting, which is what lets the monitor promote the standby
# (about 5 s with the settings below). The clients' connections to it are closed at
# once: a silent network death (no reset) is not simulated.
#
# Idle, a formation costs about a tenth of a core: each pg_autoctl calls the monitor
# every second on new connections, whatever the settings below.

HA_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# servers.sh sets SERVERS_DIR when sourced: source it only where it is not yet.
# shellcheck source=servers.sh
declare -F as_pg >/dev/null || . "$HA_LIB_DIR/servers.sh"

HA_DIR=${HA_DIR:-}
HA_NODES=(node1 node2)
HA_MONITOR_PORT="" HA_PORT_node1="" HA_PORT_node2=""  # also in $HA_DIR/env
HA_COMMON="user=postgres connect_timeout=10"

# The monitor's failure detection (defaults in brackets). A node is failed once its
# health check failed (a connection attempt every period, given up after
# max_retries more attempts retry_delay apart) and its pg_autoctl has not reported
# for node_considered_unhealthy_timeout; the standby is then promoted once the old
# primary had primary_demote_timeout to demote itself. Each pg_autoctl reports every
# second: a timeout much below 2 s risks a failover of a node that is only slow.
HA_MONITOR_SETTINGS=(
  "pgautofailover.health_check_period = 1000"              # [5000 ms]
  "pgautofailover.health_check_timeout = 2000"             # [5000 ms] per attempt
  "pgautofailover.health_check_max_retries = 2"            # [2]
  "pgautofailover.health_check_retry_delay = 250"          # [2000 ms]
  "pgautofailover.node_considered_unhealthy_timeout = 3000" # [20000 ms]
  "pgautofailover.primary_demote_timeout = 2000"           # [30000 ms]
  "pgautofailover.startup_grace_period = 3000"             # [10000 ms]
  "shared_buffers = '16MB'"
)

# pg_autoctl's command line: its configuration, state and pid files go under the
# folder (XDG_*), Postgres puts its socket there (PG_REGRESS_SOCK_DIR: `postgres
# -k`), and pg_autoctl reaches its local Postgres through it (PGHOST). Sets HA_ARGV.
ha_argv() { # pg_autoctl arguments
  HA_ARGV=(env PATH="$PG_BIN:$PATH" HOME="$HA_DIR" XDG_CONFIG_HOME="$HA_DIR/xdg/config"
    XDG_DATA_HOME="$HA_DIR/xdg/data" XDG_RUNTIME_DIR="$HA_DIR/xdg/run"
    PG_REGRESS_SOCK_DIR="$HA_DIR" PGHOST="$HA_DIR" pg_autoctl "$@")
}

# pg_autoctl as the postgres user, in the foreground.
ha_autoctl() {
  ha_argv "$@"
  as_pg "${HA_ARGV[@]}"
}

# Runs `pg_autoctl ARGS` in the background in a session of its own, so that its
# process group is the node (pg_autoctl, its services and the postmaster): $NAME.pid
# holds its id, $NAME.log gathers its output.
ha_spawn() { # name, pg_autoctl arguments
  local name=$1 i
  shift
  rm -f "$HA_DIR/$name.pid"
  ha_argv "$@"
  # shellcheck disable=SC2016
  as_pg setsid sh -c 'echo $$ >"$0"; exec "$@"' "$HA_DIR/$name.pid" "${HA_ARGV[@]}" \
    >>"$HA_DIR/$name.log" 2>&1 </dev/null &
  for i in $(seq 1 100); do
    [ -s "$HA_DIR/$name.pid" ] && return 0
    sleep 0.05
  done
  echo "ha: pg_autoctl for $name did not start" >&2
  return 1
}

ha_group_alive() { # name
  local pid
  pid=$(cat "$HA_DIR/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 -- "-$pid" 2>/dev/null
}

ha_postmaster_pid() { # data dir; prints the pid of its running postmaster
  local pid
  pid=$(head -n1 "$1/postmaster.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

ha_pids_in() { # folder: the processes working in it
  find /proc -mindepth 2 -maxdepth 2 -name cwd -lname "$1" 2>/dev/null | cut -d/ -f3
}

ha_load_env() {
  [ -n "$HA_DIR" ] && [ -f "$HA_DIR/env" ] || { echo "ha: no formation in '${HA_DIR}'" >&2; return 1; }
  # shellcheck disable=SC1091
  . "$HA_DIR/env"
}

ha_psql() { # port, database, sql
  psql -X -q -At -h "$HA_DIR" -p "$1" -U postgres -d "$2" -c "$3"
}

ha_monitor_sql() { ha_psql "$HA_MONITOR_PORT" pg_auto_failover "$1"; }

ha_state() {
  ha_monitor_sql "SELECT nodename, nodeport, reportedstate, goalstate FROM pgautofailover.node ORDER BY nodeid" |
    tr '|' ' '
}

# The node that takes writes, once the monitor and the node agree on it.
ha_primary() {
  ha_monitor_sql "SELECT nodename || ' ' || nodeport FROM pgautofailover.node
    WHERE reportedstate = goalstate AND reportedstate IN ('single', 'wait_primary', 'primary')"
}

# Fails, showing its log, if a node's pg_autoctl ended without ha_kill_primary.
ha_nodes_alive() {
  local name
  for name in "${HA_NODES[@]}"; do
    if [ -f "$HA_DIR/$name.pid" ] && ! ha_group_alive "$name"; then
      echo "ha: pg_autoctl for $name exited:" >&2
      tail -n 20 "$HA_DIR/$name.log" >&2
      return 1
    fi
  done
}

# Waits until one node is primary and the other secondary, both as assigned.
ha_wait_formation() { # [seconds]
  local deadline=$((SECONDS + ${1:-120})) state=""
  while [ $SECONDS -lt $deadline ]; do
    state=$(ha_monitor_sql "SELECT string_agg(reportedstate::text, ',' ORDER BY reportedstate::text)
      FROM pgautofailover.node WHERE reportedstate = goalstate" 2>/dev/null || true)
    [ "$state" = "primary,secondary" ] && return 0
    ha_nodes_alive || return 1
    sleep 0.2
  done
  echo "ha: no primary + secondary after ${1:-120} s; the formation:" >&2
  ha_state >&2 || true
  return 1
}

# Waits until the monitor reports a node that takes writes (after a failover: the
# promoted standby, in wait_primary while the other node is down) and prints it.
ha_wait_primary() { # [seconds]
  local deadline=$((SECONDS + ${1:-60})) primary
  while [ $SECONDS -lt $deadline ]; do
    primary=$(ha_primary 2>/dev/null || true)
    if [ -n "$primary" ] && [ "$(echo "$primary" | wc -l)" = 1 ] &&
        [ "$(ha_psql "${primary#* }" postgres "SELECT pg_is_in_recovery()" 2>/dev/null)" = f ]; then
      echo "$primary"
      return 0
    fi
    sleep 0.2
  done
  echo "ha: no primary after ${1:-60} s:" >&2
  ha_state >&2 || true
  return 1
}

ha_wait_node_state() { # name, state, seconds
  local deadline=$((SECONDS + $3))
  while [ $SECONDS -lt $deadline ]; do
    [ "$(ha_monitor_sql "SELECT reportedstate FROM pgautofailover.node
         WHERE nodename = '$1' AND reportedstate = goalstate" 2>/dev/null || true)" = "$2" ] && return 0
    ha_nodes_alive || return 1
    sleep 0.2
  done
  echo "ha: $1 is not $2 after $3 s:" >&2
  tail -n 20 "$HA_DIR/$1.log" >&2
  return 1
}

start_ha_monitor() {
  local port try
  for try in 1 2 3; do
    port=$(free_port)
    rm -rf "$HA_DIR/monitor" "$HA_DIR/xdg/config/pg_autoctl" "$HA_DIR/xdg/data/pg_autoctl"
    # Without --run: it initialises the cluster, installs the extension and stops,
    # so that the settings below apply from the first start.
    if ha_autoctl create monitor --pgdata "$HA_DIR/monitor" --pgport "$port" --hostname 127.0.0.1 \
        --auth trust --no-ssl --pgctl "$PG_BIN/pg_ctl" >"$HA_DIR/monitor.log" 2>&1 </dev/null; then
      # pg_autoctl starts Postgres with -h LISTEN: loopback only, not its default '*'.
      ha_autoctl config set --pgdata "$HA_DIR/monitor" postgresql.listen_addresses 127.0.0.1 >/dev/null
      printf '%s\n' "${HA_MONITOR_SETTINGS[@]}" | as_pg tee -a "$HA_DIR/monitor/postgresql.conf" >/dev/null
      HA_MONITOR_PORT=$port
      ha_spawn monitor run --pgdata "$HA_DIR/monitor" || return 1
      local i
      for i in $(seq 1 300); do
        if ha_monitor_sql "SELECT 1 FROM pgautofailover.formation" >/dev/null 2>&1; then
          return 0
        fi
        ha_group_alive monitor || break
        sleep 0.1
      done
      ha_stop_group monitor
    fi
    echo "ha: the monitor did not start on port $port (try $try)" >&2
    tail -n 10 "$HA_DIR/monitor.log" >&2 || true
  done
  return 1
}

start_ha_node() { # name
  local name=$1 port
  port=$(free_port)
  printf -v "HA_PORT_$name" '%s' "$port"
  ha_spawn "$name" create postgres --pgdata "$HA_DIR/$name" --pgport "$port" --pgctl "$PG_BIN/pg_ctl" \
    --name "$name" --hostname 127.0.0.1 --listen 127.0.0.1 --dbname pqscope --username postgres \
    --monitor "$PQSCOPE_TEST_HA_MONITOR" --auth trust --no-ssl --run
}

start_ha_formation() { # [folder, which must not exist; a new one in /tmp by default]
  local t0=$SECONDS
  command -v pg_autoctl >/dev/null || {
    echo "ha: pg_autoctl is missing (Debian package postgresql-15-auto-failover)" >&2
    return 1
  }
  if [ -n "${1:-}" ]; then
    mkdir "$1" || return 1
    HA_DIR=$(cd "$1" && pwd)
  else
    HA_DIR=$(mktemp -d /tmp/pqscope-ha.XXXXXX)
  fi
  mkdir -p "$HA_DIR/xdg/config" "$HA_DIR/xdg/data" "$HA_DIR/xdg/run"
  chmod 755 "$HA_DIR"
  chmod 700 "$HA_DIR/xdg/run"
  [ "$(id -u)" = 0 ] && chown -R postgres "$HA_DIR"
  start_ha_monitor || return 1
  export PQSCOPE_TEST_HA_MONITOR="postgres://autoctl_node@127.0.0.1:$HA_MONITOR_PORT/pg_auto_failover?sslmode=disable"

  # The first node registers alone (state single) before the second one joins:
  # otherwise both could race to be the primary.
  start_ha_node node1 || return 1
  ha_wait_node_state node1 single 180 || return 1
  # Settings of a throwaway node, copied to the standby by its base backup.
  # fsync off: a node that is killed, not its machine, keeps what it wrote.
  # checkpoint_completion_target 0: pg_autoctl's pg_basebackup asks for a spread
  # checkpoint (no --checkpoint=fast), which otherwise delays the standby by 30-90 s.
  ha_psql "$HA_PORT_node1" postgres "ALTER SYSTEM SET fsync = off" >/dev/null
  ha_psql "$HA_PORT_node1" postgres "ALTER SYSTEM SET checkpoint_completion_target = 0" >/dev/null
  ha_psql "$HA_PORT_node1" postgres "SELECT pg_reload_conf()" >/dev/null
  start_ha_node node2 || return 1
  ha_wait_formation 180 || return 1

  {
    echo "HA_MONITOR_PORT=$HA_MONITOR_PORT"
    echo "HA_PORT_node1=$HA_PORT_node1"
    echo "HA_PORT_node2=$HA_PORT_node2"
    echo "HA_MONITOR_URI=$PQSCOPE_TEST_HA_MONITOR"
  } >"$HA_DIR/env"

  # A commit is acknowledged once the standby has it: check that it is so. With two
  # nodes the formation's number_sync_standbys is 0 and the standby has
  # replication-quorum true, so the primary names it in synchronous_standby_names
  # (ANY 1) while it is secondary; while it is down, the monitor empties that list
  # (state wait_primary) and commits go on without it.
  local sync repl
  sync=$(ha_psql "$HA_PORT_node1" postgres "SHOW synchronous_standby_names")
  repl=$(ha_psql "$HA_PORT_node1" postgres "SELECT current_setting('synchronous_commit') || ' ' ||
    (SELECT string_agg(sync_state, ',') FROM pg_stat_replication)")
  if [ -z "$sync" ] || [ "$repl" != "on quorum" ]; then
    echo "ha: the standby is not synchronous: synchronous_standby_names '$sync'," \
      "synchronous_commit and pg_stat_replication.sync_state: $repl" >&2
    return 1
  fi

  export PQSCOPE_TEST_HA_CONNINFO="host=127.0.0.1,127.0.0.1 port=$HA_PORT_node1,$HA_PORT_node2 dbname=pqscope $HA_COMMON target_session_attrs=read-write"
  export PQSCOPE_TEST_HA_NODES="$HA_PORT_node1 $HA_PORT_node2"
  export PQSCOPE_TEST_HA_DIR="$HA_DIR"
  export PQSCOPE_TEST_HA_CTL="$HA_LIB_DIR/ha.sh"
  echo "ha: pg_auto_failover monitor on 127.0.0.1:$HA_MONITOR_PORT, node1 (primary) on :$HA_PORT_node1," \
    "node2 (synchronous standby: $sync) on :$HA_PORT_node2, in $HA_DIR, up in $((SECONDS - t0)) s"
}

# Asks the node's pg_autoctl to stop (SIGQUIT: it stops its services and Postgres
# first; a signal to the whole group instead makes it restart the services it sees
# die), waits up to SECONDS for the group to end, then kills what is left, the
# postmaster too if it outlived its pg_autoctl.
ha_stop_group() { # name, [seconds]
  local name=$1 wait=${2:-10} pid i pm
  pid=$(cat "$HA_DIR/$name.pid" 2>/dev/null || true)
  if [ -n "$pid" ]; then
    kill -QUIT "$pid" 2>/dev/null || true
    for i in $(seq 1 $((wait * 10))); do
      kill -0 -- "-$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -KILL -- "-$pid" 2>/dev/null; then
      echo "ha: pg_autoctl for $name did not stop within $wait s: killed" >&2
    fi
  fi
  if pm=$(ha_postmaster_pid "$HA_DIR/$name"); then
    kill -KILL "$pm" 2>/dev/null || true
  fi
  # The backends lead process groups of their own and end when they notice that
  # the postmaster is gone; their working folder is the node's data folder.
  for i in $(seq 1 50); do
    [ -z "$(ha_pids_in "$HA_DIR/$name")" ] && break
    sleep 0.1
  done
  for pm in $(ha_pids_in "$HA_DIR/$name"); do kill -KILL "$pm" 2>/dev/null || true; done
  rm -f "$HA_DIR/$name.pid"
}

# Crashes the primary and prints "killed NAME PORT". By default the whole node at
# once, as a machine or container that dies: SIGKILL to its pg_autoctl, its
# postmaster and every backend, so that the clients' connections are closed at once
# and nothing restarts it; it stays down until ha_restart_node. --postgres-only kills
# the postmaster alone (its backends exit on their own): pg_autoctl, still running,
# restarts Postgres within a second or two, and the monitor fails over or not
# depending on whether it saw the node down meanwhile (both seen here); if it does,
# the old primary rejoins as a standby by itself.
ha_kill_primary() { # [--postgres-only]
  ha_load_env || return 1
  local primary name port pm pgid i
  primary=$(ha_primary)
  if [ -z "$primary" ] || [ "$(echo "$primary" | wc -l)" != 1 ]; then
    echo "ha: no single primary to kill:" >&2
    ha_state >&2
    return 1
  fi
  read -r name port <<<"$primary"
  pm=$(ha_postmaster_pid "$HA_DIR/$name") || { echo "ha: the postmaster of $name is not running" >&2; return 1; }
  if [ "${1:-}" = --postgres-only ]; then
    kill -KILL "$pm"
  else
    pgid=$(cat "$HA_DIR/$name.pid" 2>/dev/null) || { echo "ha: no pg_autoctl known for $name" >&2; return 1; }
    # shellcheck disable=SC2046
    kill -KILL -- "-$pgid" $(ha_pids_in "$HA_DIR/$name") 2>/dev/null || true
    rm -f "$HA_DIR/$name.pid"  # down on purpose
  fi
  # Its port is closed once the postmaster is gone.
  for i in $(seq 1 100); do
    kill -0 "$pm" 2>/dev/null || break
    sleep 0.02
  done
  echo "killed $name $port"
}

# Runs the node's pg_autoctl again: it finds the other node promoted, rewinds its
# data (pg_rewind) and rejoins as a standby. Waits until it is secondary unless
# --no-wait.
ha_restart_node() { # name, [--no-wait]
  ha_load_env || return 1
  local name=$1
  [ -d "$HA_DIR/$name" ] || { echo "ha: no node $name" >&2; return 1; }
  if ha_group_alive "$name"; then
    echo "ha: $name is running" >&2
    return 1
  fi
  ha_spawn "$name" run --pgdata "$HA_DIR/$name" || return 1
  [ "${2:-}" = --no-wait ] && return 0
  ha_wait_node_state "$name" secondary 180 && ha_wait_formation 60
}

stop_ha_formation() {
  [ -n "$HA_DIR" ] && [ -d "$HA_DIR" ] || { HA_DIR=""; return 0; }
  if [ ! -d "$HA_DIR/xdg" ]; then
    echo "ha: $HA_DIR is not a formation's folder: left alone" >&2
    HA_DIR=""
    return 1
  fi
  local name
  # All at once, so that no standby is promoted while the others stop.
  for name in "${HA_NODES[@]}" monitor; do
    kill -QUIT "$(cat "$HA_DIR/$name.pid" 2>/dev/null)" 2>/dev/null || true
  done
  for name in "${HA_NODES[@]}" monitor; do
    ha_stop_group "$name" 5
  done
  rm -rf "$HA_DIR"
  HA_DIR=""
  unset PQSCOPE_TEST_HA_CONNINFO PQSCOPE_TEST_HA_NODES PQSCOPE_TEST_HA_MONITOR PQSCOPE_TEST_HA_DIR PQSCOPE_TEST_HA_CTL
}

# --- the demo ---

ha_now() { date +%s.%N; }
ha_secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

# Commits one row at a time through the multi-host conninfo, each by a new psql
# session (reconnecting to whichever node takes writes), until $HA_DIR/demo.stop
# exists or LIMIT seconds pass: "ID TIME PORT" in demo.acked for every acknowledged
# commit, PORT that of the node that acknowledged it.
ha_demo_writer() { # first id, limit in seconds
  local i=$1 deadline=$((SECONDS + $2)) port
  while [ -d "$HA_DIR" ] && [ ! -e "$HA_DIR/demo.stop" ] && [ $SECONDS -lt $deadline ]; do
    if port=$(psql -X -q -At "$PQSCOPE_TEST_HA_CONNINFO" -c "INSERT INTO ha_demo VALUES ($i) RETURNING inet_server_port()" 2>/dev/null); then
      echo "$i $(ha_now) $port" >>"$HA_DIR/demo.acked"
    else
      echo "$i $(ha_now)" >>"$HA_DIR/demo.failed"
    fi
    i=$((i + 1))
    sleep 0.05
  done
}

ha_demo_stop_writer() {
  [ -n "${HA_DEMO_WRITER:-}" ] || return 0
  touch "$HA_DIR/demo.stop" 2>/dev/null || true
  kill "$HA_DEMO_WRITER" 2>/dev/null || true
  wait "$HA_DEMO_WRITER" 2>/dev/null || true
  HA_DEMO_WRITER=""
}

ha_demo() { # [rounds]
  local rounds=${1:-1} round t0 t_kill t_promoted t_commit victim victim_port new acked failed present in_doubt id_base=0
  HA_DEMO_WRITER=""
  trap 'ha_demo_stop_writer; stop_ha_formation' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  t0=$(ha_now)
  start_ha_formation
  echo "demo: formation up in $(ha_secs "$t0" "$(ha_now)") s"
  echo "demo: $PQSCOPE_TEST_HA_CONNINFO"
  ha_autoctl show state --pgdata "$HA_DIR/monitor"
  psql -X -q "$PQSCOPE_TEST_HA_CONNINFO" -c "CREATE TABLE ha_demo (id int PRIMARY KEY)"
  for round in $(seq 1 "$rounds"); do
    rm -f "$HA_DIR/demo.stop" "$HA_DIR/demo.acked" "$HA_DIR/demo.failed"
    touch "$HA_DIR/demo.acked" "$HA_DIR/demo.failed"
    ha_demo_writer $((id_base + 1)) 180 &
    HA_DEMO_WRITER=$!
    sleep 3
    read -r _ victim victim_port <<<"$(ha_kill_primary)"
    [ -n "$victim" ] || return 1
    t_kill=$(ha_now)
    echo "demo round $round: killed the primary $victim at $(date +%T)"
    t_promoted=""
    local deadline=$((SECONDS + 120))
    while [ $SECONDS -lt $deadline ]; do
      new=$(ha_primary 2>/dev/null || true)
      if [ -n "$new" ] && [ "${new%% *}" != "$victim" ]; then
        t_promoted=$(ha_now)
        break
      fi
      sleep 0.1
    done
    # The first commit acknowledged by the other node after the kill.
    t_commit=""
    while [ $SECONDS -lt $deadline ]; do
      t_commit=$(awk -v k="$t_kill" -v p="$victim_port" '$2 > k && $3 != p { print $2; exit }' "$HA_DIR/demo.acked")
      [ -n "$t_commit" ] && break
      sleep 0.1
    done
    sleep 1
    ha_demo_stop_writer
    [ -n "$t_promoted" ] || { echo "demo: no promotion within 120 s" >&2; ha_state >&2; return 1; }
    [ -n "$t_commit" ] || { echo "demo: no commit after the promotion within 120 s" >&2; return 1; }
    acked=$(wc -l <"$HA_DIR/demo.acked")
    failed=$(wc -l <"$HA_DIR/demo.failed")
    present=$(psql -X -q -At "$PQSCOPE_TEST_HA_CONNINFO" -c "SELECT count(*) FROM ha_demo
      WHERE id IN ($(cut -d' ' -f1 "$HA_DIR/demo.acked" | paste -sd,))")
    # A commit whose outcome the client did not learn (the connection died in it)
    # may have happened or not: either is right.
    in_doubt=0
    if [ "$failed" -gt 0 ]; then
      in_doubt=$(psql -X -q -At "$PQSCOPE_TEST_HA_CONNINFO" -c "SELECT count(*) FROM ha_demo
        WHERE id IN ($(cut -d' ' -f1 "$HA_DIR/demo.failed" | paste -sd,))")
    fi
    echo "demo round $round: ${new%% *} promoted $(ha_secs "$t_kill" "$t_promoted") s after the kill" \
      "(as the monitor reports it), first commit on it $(ha_secs "$t_kill" "$t_commit") s after;" \
      "$present of $acked acknowledged rows present; $failed commits failed meanwhile, $in_doubt of them present"
    [ "$present" = "$acked" ] || { echo "demo: acknowledged rows were lost" >&2; return 1; }
    id_base=$(psql -X -q -At "$PQSCOPE_TEST_HA_CONNINFO" -c "SELECT coalesce(max(id), 0) + 1000 FROM ha_demo")
    t0=$(ha_now)
    ha_restart_node "$victim"
    echo "demo round $round: $victim rejoined as secondary in $(ha_secs "$t0" "$(ha_now)") s"
    ha_autoctl show state --pgdata "$HA_DIR/monitor"
  done
  stop_ha_formation
  echo "demo: stopped"
}

# --- run as a command ---

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cmd=${1:-}
  shift || true
  case "$cmd" in
    demo) ha_demo "${1:-1}" ;;
    start)
      # Left running for the caller, who stops it with `stop DIR`; on a failure
      # here, stopped at once.
      trap 'stop_ha_formation' EXIT
      start_ha_formation "${1:?the formation folder to create}"
      trap - EXIT
      ;;
    stop)
      HA_DIR=${1:?the formation folder}
      stop_ha_formation
      ;;
    kill-primary | restart-node | wait-formation | wait-primary | primary | state)
      HA_DIR=${1:?the formation folder (PQSCOPE_TEST_HA_DIR)}
      shift
      ha_load_env
      case "$cmd" in
        kill-primary) ha_kill_primary "$@" ;;
        restart-node) ha_restart_node "$@" ;;
        wait-formation) ha_wait_formation "$@" ;;
        wait-primary) ha_wait_primary "$@" ;;
        primary) ha_primary ;;
        state) ha_state ;;
      esac
      ;;
    *) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0" >&2; exit 2 ;;
  esac
fi
