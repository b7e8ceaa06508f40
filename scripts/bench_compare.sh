#!/usr/bin/env bash
# The benchmark of two revisions side by side, for a change that must not move the
# figures (a refactor) or must move them (an optimisation):
#   scripts/bench_compare.sh REV [ROUNDS] [pqscope_bench args...]
# builds bench/ at REV (a git worktree in a temporary folder) and in the working
# tree, starts one set of throwaway servers, and runs the two pqscope_bench binaries
# in alternation, ROUNDS times each (default 3), single client only (--seconds 0).
# Each run measures its own floor in the same process, so the ratios pqscope/floor
# and batched/floor1 compare across the two builds even when the machine's speed
# drifts; the table prints each ratio's median per build. Extra arguments go to
# pqscope_bench (e.g. --only transfer --iterations 600).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"
[ $# -ge 1 ] || { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
REV=$1
ROUNDS=${2:-3}
shift $(( $# >= 2 ? 2 : 1 ))
WORK=$(mktemp -d)
cleanup() {
  stop_servers || true
  git -C "$ROOT" worktree remove --force "$WORK/rev" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
git -C "$ROOT" worktree add --detach "$WORK/rev" "$REV" >/dev/null
build_bench() {  # build_bench SOURCE BUILD
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPQSCOPE_BUILD_TESTS=OFF -DPQSCOPE_BUILD_EXAMPLES=OFF \
    -DPQSCOPE_BUILD_BENCH=ON >/dev/null
  cmake --build "$2" --target pqscope_bench >/dev/null
}
build_bench "$WORK/rev" "$WORK/build-rev"
build_bench "$ROOT" "$WORK/build-now"
start_servers
for ((r = 1; r <= ROUNDS; r++)); do
  for which in rev now; do
    mkdir -p "$WORK/out-$which-$r"
    "$WORK/build-$which/bench/pqscope_bench" --direct "$PQSCOPE_TEST_DIRECT" --pgbouncer "$PQSCOPE_TEST_PGBOUNCER" \
      --seconds 0 --out "$WORK/out-$which-$r" "$@" >/dev/null
  done
done
python3 - "$WORK" "$ROUNDS" "$REV" <<'PY'
import csv, statistics, sys
from pathlib import Path
work, rounds, rev = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def ratios(which):
    out = {}
    for r in range(1, rounds + 1):
        us = {}
        for row in csv.DictReader(open(work / f"out-{which}-{r}" / "bench.csv")):
            if row["kind"] == "single" and row["median_us"]:
                us[(row["via"], row["shape"], row["impl"])] = float(row["median_us"])
        for (via, shape, impl), v in us.items():
            for name, num, den in (("pqscope/floor", "pqscope", "floor"), ("batched/floor1", "pqscope_batched", "floor1")):
                if impl == num and us.get((via, shape, den)):
                    out.setdefault(((via, shape), name), []).append(v / us[(via, shape, den)])
    return out
a, b = ratios("rev"), ratios("now")
print(f"| via | shape | ratio | {rev} (median of {rounds}) | working tree (median of {rounds}) |")
print("| --- | --- | --- | ---: | ---: |")
for k in sorted(set(a) & set(b)):
    (via, shape), name = k
    print(f"| {via} | {shape} | {name} | {statistics.median(a[k]):.2f} | {statistics.median(b[k]):.2f} |")
PY
