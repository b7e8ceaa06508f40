# PgBouncer 1.24 next to Debian 12's 1.18: the first version that tracks protocol-
# level prepared statements in transaction pooling by default (max_prepared_statements,
# 1.21+). Debian 13's binary package needs its libc, so it is built from Debian 13's
# source package, once: the result is kept in $PQSCOPE_CACHE (default
# /var/cache/pqscope) and a second call costs nothing. Sourced by scripts/lib/servers.sh.
#
#   ensure_pgbouncer_124   sets PGBOUNCER_124 to the binary (building it if needed)

PQSCOPE_CACHE=${PQSCOPE_CACHE:-/var/cache/pqscope}
PGBOUNCER_124=""

ensure_pgbouncer_124() {
  local prefix="$PQSCOPE_CACHE/pgbouncer-1.24" build log
  if [ -x "$prefix/bin/pgbouncer" ] && "$prefix/bin/pgbouncer" --version 2>/dev/null | grep -q 'PgBouncer 1\.24'; then
    PGBOUNCER_124="$prefix/bin/pgbouncer"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "PgBouncer 1.24 is not built yet in $prefix, and building it needs root (apt-get)" >&2
    return 1
  fi
  echo "building PgBouncer 1.24 from Debian 13's source package into $prefix (once, about two minutes)"
  # Source packages only: nothing is installed from trixie.
  local list=/etc/apt/sources.list.d/pqscope-trixie-src.sources
  if [ ! -f "$list" ]; then
    cat >"$list" <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  fi
  export DEBIAN_FRONTEND=noninteractive
  log=$(mktemp)
  build=$(mktemp -d)
  if ! {
    apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends libevent-dev libc-ares-dev libssl-dev pkg-config dpkg-dev make gcc &&
      (cd "$build" && apt-get source --download-only pgbouncer/trixie && dpkg-source -x pgbouncer_*.dsc src) &&
      (cd "$build/src" && ./configure --prefix="$prefix" --without-systemd && make -j "$(nproc)" && make install)
  } >"$log" 2>&1; then
    echo "building PgBouncer 1.24 failed; the last lines of $log:" >&2
    tail -n 20 "$log" >&2
    rm -rf "$build"
    return 1
  fi
  rm -rf "$build" "$log"
  "$prefix/bin/pgbouncer" --version | grep -q 'PgBouncer 1\.24' || {
    echo "the PgBouncer built in $prefix is not 1.24: $("$prefix/bin/pgbouncer" --version | head -n 1)" >&2
    return 1
  }
  PGBOUNCER_124="$prefix/bin/pgbouncer"
}
