#!/usr/bin/env bash
# pqscope developer entry point.
#
#   scripts/dev.sh demo              install what is missing, build, start a throwaway
#                                    PostgreSQL + PgBouncer, run the showcase example
#   scripts/dev.sh test [--sanitize] the same set-up, then the whole suite with CTest
#   scripts/dev.sh bench [SECTIONS] [ARGS]
#                                    build bench/ and run it directly and through PgBouncer;
#                                    writes bench/results/ (table, CSV, PNG chart). SECTIONS, comma-
#                                    separated, of main, async, copy, prepared, replicas (default all):
#                                    only those are built and run, ARGS go to the one named
#                                    (e.g. scripts/dev.sh bench replicas)
#   scripts/dev.sh bench-compare REV [ROUNDS] [ARGS]
#                                    the benchmark at REV and in the working tree, side by side
#   scripts/dev.sh client-cpu [N]    the client's instructions per statement and per COPY row under
#                                    callgrind, pqscope next to raw libpq (bench/results/client_cpu.md)
#   scripts/dev.sh fuzz [SECONDS]    random programs against the semantic model (default 60 s per target)
#   scripts/dev.sh compile-cost [--against REV] [N]
#                                    compile time of the single header and the quick start next to
#                                    libpqxx (and next to the same files at REV)
#   scripts/dev.sh memcheck          the behaviour tests under valgrind memcheck
#   scripts/dev.sh build [--sanitize]
#   scripts/dev.sh servers [--standby] [--pgpool] [--pgbouncer124] [--ha] -- CMD...
#                                    run CMD with the PQSCOPE_TEST_* variables set; --standby adds
#                                    a streaming-replication standby, --pgpool Pgpool-II in front,
#                                    --pgbouncer124 PgBouncer 1.24 (built once from Debian 13's source),
#                                    --ha a pg_auto_failover formation (monitor, primary, synchronous
#                                    standby: PQSCOPE_TEST_HA_*, see scripts/lib/ha.sh)
#   scripts/dev.sh ha-demo [ROUNDS]  a pg_auto_failover formation: commits in a loop while the primary
#                                    is killed; times the failover and checks no acknowledged row is lost
#   scripts/dev.sh test-ha [RUNS]    build tests/ha_failover and run it RUNS times (default 1) against one
#                                    pg_auto_failover formation: transfers in several processes through a
#                                    replica_set while the primary is killed; nothing acknowledged is lost
#   scripts/dev.sh amalgamate        regenerate the single headers in single_include/pqscope/
#   scripts/dev.sh deps              install the Debian packages the scripts need
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"
# shellcheck source=lib/boost_new.sh
. "$ROOT/scripts/lib/boost_new.sh"
# shellcheck source=lib/ha.sh
. "$ROOT/scripts/lib/ha.sh"

PACKAGES=(cmake ninja-build g++ clang clang-tidy python3 pkg-config libpq-dev postgresql-15 pgbouncer pgpool2 libboost-test-dev libboost-dev
  libpg-query-dev nlohmann-json3-dev)
JOBS=$(nproc 2>/dev/null || echo 2)

deps() {
  local missing=() p
  for p in "${PACKAGES[@]}" "$@"; do
    # "install ok installed" only: a removed package can leave its config files behind.
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package may start a system-wide pgbouncer on 6432; the scripts run their own.
  if [[ " ${missing[*]} " == *" pgbouncer "* ]] && command -v service >/dev/null; then
    service pgbouncer stop >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" pgpool2 "* ]] && command -v service >/dev/null; then
    service pgpool2 stop >/dev/null 2>&1 || true
  fi
}

MODE=normal  # normal | sanitize (ASan + UBSan build)

# build [TARGET...]: everything, or only the targets named.
build() {
  # The tests are built optimized (-O1) with line tables only (-g1): half the compile
  # time of -O2 -g, and backtraces still name files and lines. The benchmark has its
  # own Release build (build-bench); tests/warnings.cmake checks the headers at -O2.
  local dir=build type=RelWithDebInfo extra=(-DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG") targets=()
  if [ "$MODE" = sanitize ]; then
    dir=build-sanitize type=Debug extra=(-DPQSCOPE_SANITIZE=ON)
  fi
  BUILD_DIR="$ROOT/$dir"
  # Asio's per-operation cancellation is tested against a newer Boost (boost_new.sh).
  # Fetching it needs root once: without it (and not yet cached) those cases are
  # left out of this build, and the script says so; as root a failure stops the run.
  if ensure_boost_new; then
    extra+=(-DPQSCOPE_BOOST_NEW_INCLUDE="$BOOST_NEW_INCLUDE")
  elif [ "$(id -u)" = 0 ]; then
    exit 1
  else
    echo "the asio cancellation tests are left out of this build (run once as root to fetch Boost 1.81's headers)" >&2
  fi
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=$type "${extra[@]}" >/dev/null
  [ $# -gt 0 ] && targets=(--target "$@")
  cmake --build "$BUILD_DIR" -j "$JOBS" "${targets[@]}"
}

# Runs CTest against fresh servers and ends with one line: "N passed, M failed".
TEST_LOG=""
run_tests() {
  TEST_LOG=$(mktemp)
  trap 'stop_servers; rm -f "$TEST_LOG"' EXIT
  local log=$TEST_LOG
  start_servers
  local args=(--output-on-failure --timeout 900 -j "$JOBS")
  if [ "$MODE" = sanitize ]; then
    # The static checks (compiler warnings, consumers, clang-tidy) gain nothing from sanitizers.
    args+=(-LE static)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  fi
  (cd "$BUILD_DIR" && ctest "${args[@]}") 2>&1 | tee "$log" || true
  # Figures some tests print (load test throughput and latency, random programs tried).
  local last="$BUILD_DIR/Testing/Temporary/LastTest.log"
  if [ -f "$last" ] && grep -qE '^(load: |model/|network_timeout: )' "$last"; then
    echo "--- figures printed by the tests"
    grep -E '^(load: |model/|network_timeout: )' "$last" || true
  fi
  local summary failed total
  if summary=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n1); then
    failed=$(echo "$summary" | sed -E 's/.*passed, ([0-9]+) tests? failed.*/\1/')
    total=$(echo "$summary" | sed -E 's/.* out of ([0-9]+)/\1/')
    echo "$((total - failed)) passed, $failed failed"
    [ "$failed" = 0 ]
  else
    echo "0 passed, ctest did not finish"
    return 1
  fi
}

# The behaviour tests under valgrind memcheck; any report fails the run.
run_memcheck() {
  trap stop_servers EXIT
  start_servers
  local t failed=0 passed=0
  # Fewer random programs: valgrind runs them about thirty times slower. (asio_faults
  # is left out: its timeouts and heartbeat bounds are real-time.)
  export PQSCOPE_MODEL_PROGRAMS=300 PQSCOPE_ASIO_MODEL_PROGRAMS=60 PQSCOPE_GUARD_TEXTS=150 PQSCOPE_GUARD_ORACLE_TEXTS=2000 \
    PQSCOPE_ASIO_COPY_ROWS=20000 PQSCOPE_TYPES_TEXTS=300
  for t in scope_machine nesting autocommit misuse values types atomic connection round_trips faults model observer pool \
      pooler_guard guard_differential redaction batch subtransactions errors copy scripts borrow notifications asio_api \
      asio_model asio_scripts asio_copy notices runtime_params everyday_types interval json mapping commit_positions; do
    if valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect \
        --track-origins=yes "$BUILD_DIR/tests/test_$t" --report_level=no >"$BUILD_DIR/memcheck_$t.log" 2>&1; then
      passed=$((passed + 1))
      echo "memcheck $t: clean"
    else
      failed=$((failed + 1))
      echo "memcheck $t: FAILED"
      tail -n 60 "$BUILD_DIR/memcheck_$t.log"
    fi
  done
  echo "memcheck: $passed passed, $failed failed"
  [ "$failed" = 0 ]
}

cmd=${1:-help}
shift || true
case "$cmd" in
  deps) deps ;;
  build)
    [ "${1:-}" = "--sanitize" ] && MODE=sanitize
    deps
    build
    ;;
  test)
    [ "${1:-}" = "--sanitize" ] && MODE=sanitize
    deps
    build
    # The suites also run through Pgpool-II and PgBouncer 1.24 (more targets) in a full run,
    # and the replica set tests against a streaming standby.
    export PQSCOPE_SERVERS_PGPOOL=${PQSCOPE_SERVERS_PGPOOL:-1}
    export PQSCOPE_SERVERS_STANDBY=${PQSCOPE_SERVERS_STANDBY:-1}
    export PQSCOPE_SERVERS_PGBOUNCER124=${PQSCOPE_SERVERS_PGBOUNCER124:-1}
    run_tests
    ;;
  memcheck)
    deps valgrind
    build
    run_memcheck
    ;;
  demo)
    deps
    build showcase  # the demo needs one program, not the whole suite
    trap stop_servers EXIT
    start_servers
    "$BUILD_DIR/examples/showcase" "$PQSCOPE_TEST_PGBOUNCER" "$PQSCOPE_TEST_DIRECT"
    ;;
  servers)
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
      case "$1" in
        --standby) export PQSCOPE_SERVERS_STANDBY=1 ;;
        --pgpool) export PQSCOPE_SERVERS_PGPOOL=1 ;;
        --pgbouncer124) export PQSCOPE_SERVERS_PGBOUNCER124=1 ;;
        --ha) ha=1 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
      esac
      shift
    done
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { echo "usage: scripts/dev.sh servers -- COMMAND [ARGS...]" >&2; exit 2; }
    if [ "${ha:-0}" = 1 ]; then
      deps postgresql-15-auto-failover
      # The formation's processes run in sessions of their own: on INT or TERM, exit
      # through the EXIT trap so that they are stopped too.
      trap 'stop_ha_formation; stop_servers' EXIT
      trap 'exit 130' INT
      trap 'exit 143' TERM
      start_servers
      start_ha_formation
    else
      deps
      trap stop_servers EXIT
      start_servers
    fi
    "$@"
    ;;
  ha-demo)
    deps postgresql-15-auto-failover
    bash "$ROOT/scripts/lib/ha.sh" demo "$@"
    ;;
  test-ha)
    runs=${1:-1}
    deps postgresql-15-auto-failover
    build test_ha_failover
    # The formation alone (the test needs no other server); its processes run in
    # sessions of their own, so INT and TERM exit through the EXIT trap.
    trap stop_ha_formation EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    start_ha_formation
    # Each run leaves the formation whole (the killed node rejoins), so the next one
    # kills the other node.
    for run in $(seq 1 "$runs"); do
      echo "test-ha: run $run of $runs"
      "$BUILD_DIR/tests/test_ha_failover" --report_level=short
    done
    ;;
  bench)
    deps libpqxx-dev gnuplot-nox
    BUILD_DIR="$ROOT/build-bench"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPQSCOPE_BUILD_TESTS=OFF \
      -DPQSCOPE_BUILD_EXAMPLES=OFF -DPQSCOPE_BUILD_BENCH=ON >/dev/null
    # A first argument of section names: only those (bench/run.sh, PQSCOPE_BENCH_ONLY).
    sections=""
    if [[ "${1:-}" =~ ^(main|async|copy|prepared|replicas)(,(main|async|copy|prepared|replicas))*$ ]]; then
      sections=$1
      shift
    fi
    bench_targets=()
    for s in ${sections//,/ }; do
      case "$s" in
        main) bench_targets+=(pqscope_bench) ;;
        *) bench_targets+=("pqscope_bench_$s") ;;
      esac
    done
    [ ${#bench_targets[@]} -gt 0 ] && bench_targets=(--target "${bench_targets[@]}")
    cmake --build "$BUILD_DIR" -j "$JOBS" "${bench_targets[@]}"
    trap stop_servers EXIT
    # PgBouncer 1.24 too: the prepared-statement rows run through it. A standby for
    # the read-your-writes rows (PgBouncer lists it as database pqscope_standby).
    want_section() { [ -z "$sections" ] || [[ ",$sections," == *",$1,"* ]]; }
    pgb124=0 standby=0
    want_section prepared && pgb124=1
    want_section replicas && standby=1
    PQSCOPE_SERVERS_PGBOUNCER124=${PQSCOPE_SERVERS_PGBOUNCER124:-$pgb124} \
      PQSCOPE_SERVERS_STANDBY=${PQSCOPE_SERVERS_STANDBY:-$standby} start_servers
    PQSCOPE_BENCH_ONLY=$sections "$ROOT/bench/run.sh" "$BUILD_DIR/bench" "$ROOT/bench/results" "$@"
    ;;
  client-cpu)
    deps valgrind
    BUILD_DIR="$ROOT/build-bench"
    cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPQSCOPE_BUILD_TESTS=OFF \
      -DPQSCOPE_BUILD_EXAMPLES=OFF -DPQSCOPE_BUILD_BENCH=ON >/dev/null
    cmake --build "$BUILD_DIR" -j "$JOBS" --target pqscope_client_cpu
    trap stop_servers EXIT
    start_servers
    "$ROOT/scripts/client_cpu.sh" "$BUILD_DIR" "$@"
    ;;
  bench-compare)
    deps libpqxx-dev
    "$ROOT/scripts/bench_compare.sh" "$@"
    ;;
  fuzz)
    seconds=${1:-60}
    deps
    build
    trap stop_servers EXIT
    start_servers
    PQSCOPE_FUZZ_SECONDS=$seconds "$BUILD_DIR/tests/test_model" --run_test=random_seeds_for_a_while
    ;;
  amalgamate) python3 "$ROOT/scripts/amalgamate.py" ;;
  compile-cost)
    deps libpqxx-dev bc
    "$ROOT/scripts/compile_cost.sh" "$@"
    ;;
  help | -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    echo "unknown command: $cmd (try scripts/dev.sh help)" >&2
    exit 2
    ;;
esac
