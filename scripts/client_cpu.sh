#!/usr/bin/env bash
# The client's own instructions per transaction and per COPY row, pqscope against raw
# libpq doing the least possible, counted by callgrind (user space: pqscope, libpq,
# libc; not the kernel), one implementation per run of bench/client_cpu.cpp:
#   scripts/client_cpu.sh BUILD_DIR [N]
# with the servers of scripts/lib/servers.sh running (PQSCOPE_TEST_DIRECT). Each
# transfer implementation runs with 1 and with 9 UPDATEs per transaction: the slope
# is the cost of one statement, the rest the cost of the transaction around it.
# Writes bench/results/client_cpu.md.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$1/bench/pqscope_client_cpu
N=${2:-1000}
ROWS=$((N * 20))
OUT=$ROOT/bench/results/client_cpu.md
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# instructions IMPL COUNT [K]: instructions collected in the measured loop
instructions() {
  valgrind --tool=callgrind --collect-atstart=no --callgrind-out-file="$WORK/cg.out" \
    "$BIN" "$PQSCOPE_TEST_DIRECT" "$@" 2>&1 | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

{
  echo "# Client instructions per statement, per transaction and per COPY row"
  echo
  echo "callgrind (valgrind $(valgrind --version | sed 's/valgrind-//')), $(date -u '+%Y-%m-%d %H:%M UTC'), $N transactions and $ROWS rows per run;"
  echo "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores."
  echo
  echo "| implementation | 1 UPDATE per transaction | 9 UPDATEs | per statement | per transaction (frame) | nested transfer |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: |"
} >"$OUT"
declare -A stmt frame
for impl in floor floor_prepared pqscope pqscope_prepared; do
  one=$(instructions "$impl" "$N" 1)
  nine=$(instructions "$impl" "$N" 9)
  transfer=$(instructions "$impl" "$N")
  stmt[$impl]=$(((nine - one) / N / 8))
  frame[$impl]=$((one / N - stmt[$impl]))
  echo "| $impl | $((one / N)) | $((nine / N)) | ${stmt[$impl]} | ${frame[$impl]} | $((transfer / N)) |" >>"$OUT"
done
copy_floor=$(instructions copy_floor "$ROWS")
copy_pqscope=$(instructions copy_pqscope "$ROWS")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
{
  echo
  echo "Per statement, pqscope over the floor: $(ratio "${stmt[pqscope]}" "${stmt[floor]}") unnamed, $(ratio "${stmt[pqscope_prepared]}" "${stmt[floor_prepared]}") prepared;"
  echo "per transaction: $(ratio "${frame[pqscope]}" "${frame[floor]}") and $(ratio "${frame[pqscope_prepared]}" "${frame[floor_prepared]}")."
  echo
  echo "| COPY, per row | instructions |"
  echo "| --- | ---: |"
  echo "| copy_floor (to_chars, a byte loop, PQputCopyData) | $((copy_floor / ROWS)) |"
  echo "| copy_pqscope (copy_writer::write_row) | $((copy_pqscope / ROWS)) |"
  echo
  echo "write_row over the floor: $(ratio "$copy_pqscope" "$copy_floor")."
} >>"$OUT"
cat "$OUT"
