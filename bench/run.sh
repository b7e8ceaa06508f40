#!/usr/bin/env bash
# Runs pqscope_bench against the servers named by PQSCOPE_TEST_DIRECT and
# PQSCOPE_TEST_PGBOUNCER, then draws results/bench.png, and the other benchmark
# programs (sections) whose servers are there.
#   bench/run.sh <dir holding pqscope_bench> <results dir> [extra args]
# PQSCOPE_BENCH_ONLY picks sections, comma-separated, of: main (pqscope_bench), async,
# copy, prepared, replicas; unset: all. The extra arguments go to pqscope_bench, or
# to the program of the one section PQSCOPE_BENCH_ONLY names.
set -euo pipefail

if [ $# -lt 2 ]; then
  echo "usage: $0 <bench build dir> <results dir> [pqscope_bench args...]" >&2
  exit 2
fi
BIN_DIR=$1
OUT=$2
shift 2
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [ -z "${PQSCOPE_TEST_DIRECT:-}" ] && [ -z "${PQSCOPE_TEST_PGBOUNCER:-}" ]; then
  echo "neither PQSCOPE_TEST_DIRECT nor PQSCOPE_TEST_PGBOUNCER is set (scripts/dev.sh bench sets both)" >&2
  exit 2
fi
mkdir -p "$OUT"

ONLY=${PQSCOPE_BENCH_ONLY:-}
for section in ${ONLY//,/ }; do
  case "$section" in
    main | async | copy | prepared | replicas) ;;
    *) echo "PQSCOPE_BENCH_ONLY: unknown section $section (main, async, copy, prepared, replicas)" >&2; exit 2 ;;
  esac
done
want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
# The extra arguments' section: main, or the one section named.
EXTRA=("$@")
extra_for() { [ "${ONLY:-main}" = "$1" ]; }
written=()

# The chart is drawn even when a check failed, then the failure is passed on.
status=0
if want main; then
  args=(--out "$OUT")
  [ -n "${PQSCOPE_TEST_DIRECT:-}" ] && args+=(--direct "$PQSCOPE_TEST_DIRECT")
  [ -n "${PQSCOPE_TEST_PGBOUNCER:-}" ] && args+=(--pgbouncer "$PQSCOPE_TEST_PGBOUNCER")
  [ -n "${PQSCOPE_TEST_PGBOUNCER_ADMIN:-}" ] && args+=(--pgbouncer-admin "$PQSCOPE_TEST_PGBOUNCER_ADMIN")
  extra_for main && args+=("${EXTRA[@]}")
  "$BIN_DIR/pqscope_bench" "${args[@]}" || status=$?
  written+=("$OUT/bench.md" "$OUT/bench.csv")
fi

# The asynchronous rows (pqscope::asio on one thread), through PgBouncer only.
if want async && [ -x "$BIN_DIR/pqscope_bench_async" ] && [ -n "${PQSCOPE_TEST_PGBOUNCER:-}" ]; then
  async_args=(--pgbouncer "$PQSCOPE_TEST_PGBOUNCER" --out "$OUT")
  extra_for async && async_args+=("${EXTRA[@]}")
  "$BIN_DIR/pqscope_bench_async" "${async_args[@]}" || status=$?
  written+=("$OUT/bench_async.md")
fi

# One million rows loaded in one transaction (COPY writer, libpqxx stream_to, batched
# INSERTs, raw libpq), through PgBouncer only.
if want copy && [ -x "$BIN_DIR/pqscope_bench_copy" ] && [ -n "${PQSCOPE_TEST_PGBOUNCER:-}" ]; then
  copy_args=(--pgbouncer "$PQSCOPE_TEST_PGBOUNCER" --out "$OUT")
  [ -n "${PQSCOPE_TEST_PGBOUNCER_ADMIN:-}" ] && copy_args+=(--pgbouncer-admin "$PQSCOPE_TEST_PGBOUNCER_ADMIN")
  extra_for copy && copy_args+=("${EXTRA[@]}")
  "$BIN_DIR/pqscope_bench_copy" "${copy_args[@]}" || status=$?
  written+=("$OUT/bench_copy.md")
fi

# Prepared statements directly and through PgBouncer 1.24 (pqscope, raw libpq, libpqxx,
# pgbench), when the servers include PgBouncer 1.24 (scripts/dev.sh servers --pgbouncer124).
if want prepared && [ -x "$BIN_DIR/pqscope_bench_prepared" ] && [ -n "${PQSCOPE_TEST_PGBOUNCER124:-}" ]; then
  prep_args=(--pgbouncer124 "$PQSCOPE_TEST_PGBOUNCER124" --out "$OUT")
  [ -n "${PQSCOPE_TEST_DIRECT:-}" ] && prep_args+=(--direct "$PQSCOPE_TEST_DIRECT")
  extra_for prepared && prep_args+=("${EXTRA[@]}")
  "$BIN_DIR/pqscope_bench_prepared" "${prep_args[@]}" || status=$?
  written+=("$OUT/bench_prepared.md")
fi

# The read-your-writes check on a standby, and reads spread over the primary and the
# standby, when the servers include one (scripts/dev.sh servers --standby); the
# check also through PgBouncer when it lists the standby (database pqscope_standby).
if want replicas; then
  if [ -x "$BIN_DIR/pqscope_bench_replicas" ] && [ -n "${PQSCOPE_TEST_STANDBY:-}" ] && [ -n "${PQSCOPE_TEST_DIRECT:-}" ]; then
    rep_args=(--primary "$PQSCOPE_TEST_DIRECT" --standby "$PQSCOPE_TEST_STANDBY" --out "$OUT")
    [ -n "${PQSCOPE_TEST_PGBOUNCER_STANDBY:-}" ] && rep_args+=(--pgbouncer-standby "$PQSCOPE_TEST_PGBOUNCER_STANDBY")
    extra_for replicas && rep_args+=("${EXTRA[@]}")
    "$BIN_DIR/pqscope_bench_replicas" "${rep_args[@]}" || status=$?
    written+=("$OUT/bench_replicas.md")
  elif [ -n "$ONLY" ]; then
    echo "replicas: needs pqscope_bench_replicas, PQSCOPE_TEST_DIRECT and PQSCOPE_TEST_STANDBY (scripts/dev.sh servers --standby)" >&2
    status=2
  fi
fi

if want main && [ -s "$OUT/plot.dat" ]; then
  if command -v gnuplot >/dev/null; then
    gnuplot -e "dir='$OUT'" "$HERE/plot.gp"
    echo "chart: $OUT/bench.png"
  else
    echo "gnuplot not found: no chart (apt-get install gnuplot-nox)" >&2
  fi
fi
if [ ${#written[@]} -gt 0 ]; then
  list=$(printf ', %s' "${written[@]}")
  echo "results: ${list:2}"
fi
exit "$status"
