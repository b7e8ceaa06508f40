# A newer Boost's headers next to Debian 12's 1.74, for the tests of Asio's
# per-operation cancellation (Boost 1.77+; pqscope::asio supports it where it
# exists). Debian 12 packages Boost 1.81 as libboost1.81-dev, which conflicts with
# the default 1.74 one, so it is not installed: its headers are unpacked once into
# $PQSCOPE_CACHE (default /var/cache/pqscope), and a second call costs nothing.
# Sourced by scripts/dev.sh.
#
#   ensure_boost_new   sets BOOST_NEW_INCLUDE to the include directory (unpacking it if needed)

PQSCOPE_CACHE=${PQSCOPE_CACHE:-/var/cache/pqscope}
BOOST_NEW_INCLUDE=""

ensure_boost_new() {
  local dir="$PQSCOPE_CACHE/boost-1.81" work log
  if [ -f "$dir/include/boost/version.hpp" ] && grep -q 'define BOOST_VERSION 108100' "$dir/include/boost/version.hpp"; then
    BOOST_NEW_INCLUDE="$dir/include"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "Boost 1.81's headers are not unpacked yet in $dir, and fetching them needs root (apt-get)" >&2
    return 1
  fi
  echo "unpacking Debian 12's libboost1.81-dev headers into $dir (once)"
  work=$(mktemp -d)
  log=$(mktemp)
  if ! {
    (cd "$work" && { apt-get download libboost1.81-dev || { apt-get update -qq && apt-get download libboost1.81-dev; }; }) &&
      dpkg-deb -x "$work"/libboost1.81-dev_*.deb "$work/root" &&
      rm -rf "$dir" && mkdir -p "$dir" && mv "$work/root/usr/include" "$dir/include"
  } >"$log" 2>&1; then
    echo "fetching Boost 1.81's headers failed; the last lines of $log:" >&2
    tail -n 20 "$log" >&2
    rm -rf "$work"
    return 1
  fi
  rm -rf "$work" "$log"
  BOOST_NEW_INCLUDE="$dir/include"
}
