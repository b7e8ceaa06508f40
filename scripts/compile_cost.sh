#!/usr/bin/env bash
# Compile cost of pqscope next to libpqxx, side by side in one run (g++, -O2):
#   1. #include <pqxx/pqxx> alone                     vs the single header + a database object
#   2. examples/quickstart.cpp (pqscope)              vs the same program against libpqxx
# each pqscope file twice: header-only (the default) and with PQSCOPE_SEPARATE_COMPILATION
# (the user's translation unit only; the implementation unit, src/pqscope.cpp, is timed
# in the same loop and reported on its own row: a program compiles it once).
# Each file is compiled RUNS times (default 5), interleaved; medians in seconds,
# their ratios, and preprocessed line counts. pqscope_std_headers is the floor of the include:
# only the standard and libpq headers that the single header includes. Needs libpqxx-dev (scripts/dev.sh bench installs it).
#   scripts/compile_cost.sh [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${1:-5}
CXX=${CXX:-g++}
PGINC=$(pg_config --includedir)
DIR="$ROOT/bench/compile_cost"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

declare -A SRC FLAGS
SRC[pqxx_include]="$DIR/include_only_pqxx.cpp";  FLAGS[pqxx_include]=""
SRC[pqscope_include]="$DIR/include_pqscope.cpp"; FLAGS[pqscope_include]="-I$ROOT/single_include -I$PGINC"
SRC[pqxx_quickstart]="$DIR/quickstart_pqxx.cpp"; FLAGS[pqxx_quickstart]=""
SRC[pqscope_quickstart]="$ROOT/examples/quickstart.cpp"; FLAGS[pqscope_quickstart]="-I$ROOT/single_include -I$PGINC"
SEP="-DPQSCOPE_SEPARATE_COMPILATION -I$ROOT/single_include -I$PGINC"
SRC[pqscope_include_sep]="$DIR/include_pqscope.cpp"; FLAGS[pqscope_include_sep]="$SEP"
SRC[pqscope_quickstart_sep]="$ROOT/examples/quickstart.cpp"; FLAGS[pqscope_quickstart_sep]="$SEP"
SRC[pqscope_impl_sep]="$ROOT/src/pqscope.cpp"; FLAGS[pqscope_impl_sep]="$SEP"
# The floor: the standard and libpq headers the single header includes, and nothing of pqscope.
grep -h '^#include <' "$ROOT/single_include/pqscope/pqscope.hpp" | sort -u > "$OUT/std_headers.cpp"
echo 'int main() { return 0; }' >> "$OUT/std_headers.cpp"
SRC[pqscope_std_headers]="$OUT/std_headers.cpp"; FLAGS[pqscope_std_headers]="-I$PGINC"
ORDER=(pqxx_include pqscope_std_headers pqscope_include pqscope_include_sep pqxx_quickstart pqscope_quickstart
       pqscope_quickstart_sep pqscope_impl_sep)

for name in "${ORDER[@]}"; do : > "$OUT/$name.times"; done
for ((i = 0; i < RUNS; ++i)); do
  for name in "${ORDER[@]}"; do
    # shellcheck disable=SC2086
    s=$(date +%s.%N); $CXX -std=c++17 -O2 ${FLAGS[$name]} -c "${SRC[$name]}" -o "$OUT/$name.o"; e=$(date +%s.%N)
    echo "$e - $s" | bc >> "$OUT/$name.times"
  done
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
lines() {
  # shellcheck disable=SC2086
  $CXX -std=c++17 -E ${FLAGS[$1]} "${SRC[$1]}" | wc -l
}
printf "%s, %s, %d runs each, interleaved; %s\n" "$($CXX --version | head -n1)" "-O2" "$RUNS" "$(nproc) CPUs"
printf "%-24s %10s %12s %10s\n" file "median s" "preproc lines" "object KB"
for name in "${ORDER[@]}"; do
  printf "%-24s %10.2f %12d %10d\n" "$name" "$(median "$OUT/$name.times")" "$(lines "$name")" \
    "$(( $(stat -c %s "$OUT/$name.o") / 1024 ))"
done
ratio() { echo "scale=2; $(median "$OUT/$1.times") / $(median "$OUT/$2.times")" | bc; }
echo "single header + database / pqxx include alone:   $(ratio pqscope_include pqxx_include) header-only," \
     "$(ratio pqscope_include_sep pqxx_include) separate compilation"
echo "quickstart pqscope / quickstart libpqxx:          $(ratio pqscope_quickstart pqxx_quickstart) header-only," \
     "$(ratio pqscope_quickstart_sep pqxx_quickstart) separate compilation (+ $(printf %.2f "$(median "$OUT/pqscope_impl_sep.times")") s" \
     "once per program for the implementation unit)"
