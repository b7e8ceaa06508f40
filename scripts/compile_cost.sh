#!/usr/bin/env bash
# Compile cost of pqscope next to libpqxx, side by side in one run (g++, -O2):
#   1. #include <pqxx/pqxx> alone                     vs the single header + a database object
#   2. examples/quickstart.cpp (pqscope)              vs the same program against libpqxx
# each pqscope file twice: header-only (the default) and with PQSCOPE_SEPARATE_COMPILATION
# (the user's translation unit only; the implementation unit, src/pqscope.cpp, is timed
# in the same loop and reported on its own row: a program compiles it once).
# Each file is compiled RUNS times (default 5), interleaved; medians of the compiler's CPU
# time (user + system, in seconds: on a shared machine, wall time also counts the other
# jobs), their ratios, and preprocessed line counts. pqscope_std_headers is the floor of the
# include: the standard and libpq headers that the single header's declarations include
# (what a PQSCOPE_SEPARATE_COMPILATION unit sees), alone. Needs libpqxx-dev (scripts/dev.sh
# bench installs it).
# With --against REV, each pqscope row is also measured at that revision (a git
# worktree in a temporary folder), interleaved with the rest: before and after a change.
#   scripts/compile_cost.sh [--against REV] [RUNS]
set -euo pipefail
TIMEFORMAT='%3U %3S'
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGAINST=""
if [ "${1:-}" = --against ]; then
  AGAINST=${2:?"--against needs a revision"}
  shift 2
fi
RUNS=${1:-5}
CXX=${CXX:-g++}
PGINC=$(pg_config --includedir)
DIR="$ROOT/bench/compile_cost"
OUT=$(mktemp -d)
cleanup() {
  [ -z "$AGAINST" ] || git -C "$ROOT" worktree remove --force "$OUT/rev" >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT

declare -A SRC FLAGS
SRC[pqxx_include]="$DIR/include_only_pqxx.cpp";  FLAGS[pqxx_include]=""
SRC[pqscope_include]="$DIR/include_pqscope.cpp"; FLAGS[pqscope_include]="-I$ROOT/single_include -I$PGINC"
SRC[pqxx_quickstart]="$DIR/quickstart_pqxx.cpp"; FLAGS[pqxx_quickstart]=""
SRC[pqscope_quickstart]="$ROOT/examples/quickstart.cpp"; FLAGS[pqscope_quickstart]="-I$ROOT/single_include -I$PGINC"
SEP="-DPQSCOPE_SEPARATE_COMPILATION -I$ROOT/single_include -I$PGINC"
SRC[pqscope_include_sep]="$DIR/include_pqscope.cpp"; FLAGS[pqscope_include_sep]="$SEP"
SRC[pqscope_quickstart_sep]="$ROOT/examples/quickstart.cpp"; FLAGS[pqscope_quickstart_sep]="$SEP"
SRC[pqscope_impl_sep]="$ROOT/src/pqscope.cpp"; FLAGS[pqscope_impl_sep]="$SEP"
# The floor: the standard and libpq headers the single header's declarations include, and
# nothing of pqscope. The preprocessor lists them (-dI keeps the #include lines, after the
# line marker of the file they are in), so that those only the function bodies need, behind
# PQSCOPE_IMPLEMENTATION, stay out.
# shellcheck disable=SC2086
$CXX -std=c++17 -E -dI $SEP "$DIR/include_pqscope.cpp" |
  awk '/^# [0-9]+ "/ { file = $3; next } /^#include </ && file ~ /single_include\/pqscope\/pqscope\.hpp"$/ { print $1, $2 }' |
  sort -u > "$OUT/std_headers.cpp"
echo 'int main() { return 0; }' >> "$OUT/std_headers.cpp"
SRC[pqscope_std_headers]="$OUT/std_headers.cpp"; FLAGS[pqscope_std_headers]="-I$PGINC"
ORDER=(pqxx_include pqscope_std_headers pqscope_include pqscope_include_sep pqxx_quickstart pqscope_quickstart
       pqscope_quickstart_sep pqscope_impl_sep)
if [ -n "$AGAINST" ]; then
  git -C "$ROOT" worktree add --detach "$OUT/rev" "$AGAINST" >/dev/null
  for name in pqscope_include pqscope_include_sep pqscope_quickstart pqscope_quickstart_sep pqscope_impl_sep; do
    SRC[$name@rev]=${SRC[$name]/#$ROOT/$OUT/rev}
    FLAGS[$name@rev]=${FLAGS[$name]//$ROOT/$OUT/rev}
    ORDER+=("$name@rev")
  done
fi

for name in "${ORDER[@]}"; do : > "$OUT/$name.times"; done
for ((i = 0; i < RUNS; ++i)); do
  for name in "${ORDER[@]}"; do
    # CPU time of the compiler (bash's `time`: user + system of the command's processes).
    # shellcheck disable=SC2086
    { time $CXX -std=c++17 -O2 ${FLAGS[$name]} -c "${SRC[$name]}" -o "$OUT/$name.o"; } 2> "$OUT/time"
    tail -n 1 "$OUT/time" | awk '{ print $1 + $2 }' >> "$OUT/$name.times"
  done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
lines() {
  # shellcheck disable=SC2086
  $CXX -std=c++17 -E ${FLAGS[$1]} "${SRC[$1]}" | wc -l
}
printf "%s, %s, %d runs each, interleaved; %s\n" "$($CXX --version | head -n1)" "-O2" "$RUNS" "$(nproc) CPUs"
printf "%-28s %12s %13s %10s\n" file "median CPU s" "preproc lines" "object KB"
for name in "${ORDER[@]}"; do
  printf "%-28s %12.2f %13d %10d\n" "$name" "$(median "$OUT/$name.times")" "$(lines "$name")" \
    "$(( $(stat -c %s "$OUT/$name.o") / 1024 ))"
done
ratio() { printf %.2f "$(echo "scale=4; $(median "$OUT/$1.times") / $(median "$OUT/$2.times")" | bc)"; }
echo "single header + database / pqxx include alone:   $(ratio pqscope_include pqxx_include) header-only," \
     "$(ratio pqscope_include_sep pqxx_include) separate compilation"
echo "quickstart pqscope / quickstart libpqxx:          $(ratio pqscope_quickstart pqxx_quickstart) header-only," \
     "$(ratio pqscope_quickstart_sep pqxx_quickstart) separate compilation (+ $(printf %.2f "$(median "$OUT/pqscope_impl_sep.times")") s" \
     "once per program for the implementation unit)"
if [ -n "$AGAINST" ]; then
  for name in pqscope_include pqscope_include_sep pqscope_quickstart pqscope_quickstart_sep pqscope_impl_sep; do
    printf "%-28s %s of %s at %s\n" "$name" "$(ratio "$name" "$name@rev")" "$name" "$AGAINST"
  done
fi
