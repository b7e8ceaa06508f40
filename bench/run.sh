#!/usr/bin/env bash
# Runs pqscope_bench against the servers named by PQSCOPE_TEST_DIRECT and
# PQSCOPE_TEST_PGBOUNCER, then draws results/bench.png.
#   bench/run.sh <dir holding pqscope_bench> <results dir> [extra pqscope_bench args]
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

args=(--out "$OUT")
[ -n "${PQSCOPE_TEST_DIRECT:-}" ] && args+=(--direct "$PQSCOPE_TEST_DIRECT")
[ -n "${PQSCOPE_TEST_PGBOUNCER:-}" ] && args+=(--pgbouncer "$PQSCOPE_TEST_PGBOUNCER")
[ -n "${PQSCOPE_TEST_PGBOUNCER_ADMIN:-}" ] && args+=(--pgbouncer-admin "$PQSCOPE_TEST_PGBOUNCER_ADMIN")

# The chart is drawn even when a check failed, then the failure is passed on.
status=0
"$BIN_DIR/pqscope_bench" "${args[@]}" "$@" || status=$?

# The asynchronous rows (pqscope::asio on one thread), through PgBouncer only.
if [ -x "$BIN_DIR/pqscope_bench_async" ] && [ -n "${PQSCOPE_TEST_PGBOUNCER:-}" ]; then
  "$BIN_DIR/pqscope_bench_async" --pgbouncer "$PQSCOPE_TEST_PGBOUNCER" --out "$OUT" || status=$?
fi

# One million rows loaded in one transaction (COPY writer, libpqxx stream_to, batched
# INSERTs, raw libpq), through PgBouncer only.
if [ -x "$BIN_DIR/pqscope_bench_copy" ] && [ -n "${PQSCOPE_TEST_PGBOUNCER:-}" ]; then
  copy_args=(--pgbouncer "$PQSCOPE_TEST_PGBOUNCER" --out "$OUT")
  [ -n "${PQSCOPE_TEST_PGBOUNCER_ADMIN:-}" ] && copy_args+=(--pgbouncer-admin "$PQSCOPE_TEST_PGBOUNCER_ADMIN")
  "$BIN_DIR/pqscope_bench_copy" "${copy_args[@]}" || status=$?
fi

# Prepared statements directly and through PgBouncer 1.24 (pqscope, raw libpq, libpqxx,
# pgbench), when the servers include PgBouncer 1.24 (scripts/dev.sh servers --pgbouncer124).
if [ -x "$BIN_DIR/pqscope_bench_prepared" ] && [ -n "${PQSCOPE_TEST_PGBOUNCER124:-}" ]; then
  prep_args=(--pgbouncer124 "$PQSCOPE_TEST_PGBOUNCER124" --out "$OUT")
  [ -n "${PQSCOPE_TEST_DIRECT:-}" ] && prep_args+=(--direct "$PQSCOPE_TEST_DIRECT")
  "$BIN_DIR/pqscope_bench_prepared" "${prep_args[@]}" || status=$?
fi

if [ -s "$OUT/plot.dat" ]; then
  if command -v gnuplot >/dev/null; then
    gnuplot -e "dir='$OUT'" "$HERE/plot.gp"
    echo "chart: $OUT/bench.png"
  else
    echo "gnuplot not found: no chart (apt-get install gnuplot-nox)" >&2
  fi
fi
echo "results: $OUT/bench.md, $OUT/bench.csv$([ -f "$OUT/bench_async.md" ] && echo ", $OUT/bench_async.md")$([ -f "$OUT/bench_copy.md" ] && echo ", $OUT/bench_copy.md")$([ -f "$OUT/bench_prepared.md" ] && echo ", $OUT/bench_prepared.md")"
exit "$status"
