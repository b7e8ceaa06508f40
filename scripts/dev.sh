#!/usr/bin/env bash
# pqscope developer entry point.
#
#   scripts/dev.sh demo              install what is missing, build, start a throwaway
#                                    PostgreSQL + PgBouncer, run the showcase example
#   scripts/dev.sh test [--sanitize] the same set-up, then the whole suite with CTest
#   scripts/dev.sh build [--sanitize]
#   scripts/dev.sh servers -- CMD... run CMD with the PQSCOPE_TEST_* variables set
#   scripts/dev.sh amalgamate        regenerate single_include/pqscope/pqscope.hpp
#   scripts/dev.sh deps              install the Debian packages the scripts need
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/servers.sh
. "$ROOT/scripts/lib/servers.sh"

PACKAGES=(cmake ninja-build g++ clang python3 libpq-dev postgresql-15 pgbouncer libboost-test-dev)
JOBS=$(nproc 2>/dev/null || echo 2)

deps() {
  local missing=() p
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
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
}

build() {
  local dir=build type=RelWithDebInfo extra=()
  if [ "${1:-}" = "--sanitize" ]; then
    dir=build-sanitize type=Debug extra=(-DPQSCOPE_SANITIZE=ON)
  fi
  BUILD_DIR="$ROOT/$dir"
  cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=$type "${extra[@]}" >/dev/null
  cmake --build "$BUILD_DIR" -j "$JOBS"
}

run_tests() {
  local log
  log=$(mktemp)
  trap 'stop_servers; rm -f "$log"' EXIT
  start_servers
  local rc=0
  (cd "$BUILD_DIR" && ctest --output-on-failure --timeout 600 -j "$JOBS") 2>&1 | tee "$log" || rc=$?
  rc=${PIPESTATUS[0]:-$rc}
  local passed failed total
  if summary=$(grep -Eo '[0-9]+% tests passed, [0-9]+ tests failed out of [0-9]+' "$log" | tail -n1); then
    failed=$(echo "$summary" | sed -E 's/.* ([0-9]+) tests failed out of ([0-9]+)/\1/')
    total=$(echo "$summary" | sed -E 's/.* out of ([0-9]+)/\1/')
    passed=$((total - failed))
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ] || rc=1
  else
    echo "0 passed, ctest did not finish"
    rc=1
  fi
  return $rc
}

cmd=${1:-help}
shift || true
case "$cmd" in
  deps) deps ;;
  build) deps; build "$@" ;;
  test)
    deps
    build "$@"
    run_tests
    ;;
  demo)
    deps
    build
    trap stop_servers EXIT
    start_servers
    "$BUILD_DIR/examples/showcase" "$PQSCOPE_TEST_PGBOUNCER" "$PQSCOPE_TEST_DIRECT"
    ;;
  servers)
    [ "${1:-}" = "--" ] && shift
    [ $# -gt 0 ] || { echo "usage: scripts/dev.sh servers -- COMMAND [ARGS...]" >&2; exit 2; }
    deps
    trap stop_servers EXIT
    start_servers
    "$@"
    ;;
  amalgamate) python3 "$ROOT/scripts/amalgamate.py" ;;
  help | -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' ;;
  *)
    echo "unknown command: $cmd (try scripts/dev.sh help)" >&2
    exit 2
    ;;
esac
