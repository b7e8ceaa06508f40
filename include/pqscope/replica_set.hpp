#pragma once
// A primary and its streaming standbys, each with a pool: writes go to the primary,
// reads to a standby that has replayed what the caller must see (read-your-writes).
//
//   pqscope::replica_set db{"host=db1,db2 target_session_attrs=read-write dbname=app",
//                           {"host=db2 dbname=app", "host=db3 dbname=app"}};
//   pqscope::wal_position seen;   // carry it along: a cookie, a header, a job's payload
//   db.write(seen, [](pqscope::connection& c) { c.execute("UPDATE ..."); });
//   auto n = db.read(seen, [](pqscope::connection& c) { return c.query_value<long>("SELECT ..."); });
//
// write() runs atomic() on the primary with connection_options::commit_positions,
// and merges the commit's WAL position into `seen`. read() runs a read-only
// atomic() with at_least = seen on a standby, whose BEGIN batch checks the
// standby's replay position (no extra round trip, see transaction_options::at_least).
// Standbys are tried round robin; one that is down or behind is passed over and
// tried again after recheck_after. When none can serve, the read waits up to
// replica_wait on the closest one, then runs on the primary (fallback_to_primary)
// or throws replica_behind.
//
// A read's function may run more than once, on several nodes (a standby behind, or
// failing under it): keep what it does outside the database idempotent.
// Each node may sit behind its own PgBouncer (pool_mode = transaction): its conninfo
// then names the PgBouncer. Not for Pgpool-II with load balancing, which would send
// the check and the reads to nodes of its own choosing.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/connection.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/pool.hpp>
#include <pqscope/transaction.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/replica_router.hpp>

namespace pqscope {

struct replica_set_options {
  // For each node's pool, and each connection (commit_positions is turned on for the
  // primary's whatever this says).
  pool_options pool;
  connection_options connection;
  // A read that no standby could serve at once waits this long on the closest one
  // (see transaction_options::replica_wait) before falling back. transaction_options
  // given to read() may set their own.
  std::chrono::milliseconds replica_wait{0};
  // Then it runs on the primary; false: replica_behind is thrown.
  bool fallback_to_primary = true;
  // A standby found down, or behind a read's position, is passed over this long.
  std::chrono::milliseconds recheck_after{1000};
};

class replica_set {
 public:
  // No connection is opened here. standbys may be empty: every read goes to the primary.
  explicit replica_set(std::string primary, std::vector<std::string> standbys, replica_set_options options = {});

  // atomic(primary, options, fn); the commit's WAL position is merged into `seen`.
  template <class Fn>
  auto write(wal_position& seen, Fn&& fn, transaction_options options = {});
  template <class Fn>
  auto write(Fn&& fn, transaction_options options = {}) {
    wal_position ignored;
    return write(ignored, std::forward<Fn>(fn), options);
  }

  // A read-only atomic(standby, options, fn) on a standby that has replayed `seen`
  // (merged with options.at_least), or on the primary (see the top of this file).
  template <class Fn>
  auto read(wal_position seen, Fn&& fn, transaction_options options = {});
  template <class Fn>
  auto read(Fn&& fn, transaction_options options = {}) {
    return read(wal_position{}, std::forward<Fn>(fn), options);
  }

  // Leases for work of one's own: the primary's, and a standby's (round robin,
  // passing over those found down; the primary's when none answers). No position
  // is checked: pass transaction_options::at_least to its scopes for that.
  [[nodiscard]] lease primary();
  [[nodiscard]] lease standby();

  [[nodiscard]] std::size_t standbys() const noexcept { return standbys_.size(); }
  [[nodiscard]] pool& primary_pool() noexcept { return *primary_; }
  [[nodiscard]] pool& standby_pool(std::size_t i) { return *standbys_.at(i); }
  [[nodiscard]] replica_set_stats stats() const { return router_.stats(); }

 private:
  // What a read on standby i did: served (result set), behind, or the standby failed.
  template <class R>
  struct outcome {
    std::optional<R> value;
    bool behind = false;
  };
  template <class Fn>
  using result_of = detail::call_result_t<Fn, connection>;

  // Leases standby i, or nothing when it cannot connect (it is marked down).
  std::optional<lease> lease_standby(std::size_t i);

  replica_set_options options_;
  std::unique_ptr<pool> primary_;
  std::vector<std::unique_ptr<pool>> standbys_;
  detail::replica_router router_;
};

namespace detail {
// void results travel as this through the router's loop.
struct no_value {};
template <class R>
using stored_t = std::conditional_t<std::is_void_v<R>, no_value, std::decay_t<R>>;

template <class Fn>
auto run_stored(Fn& fn) {
  using R = decltype(fn());
  if constexpr (std::is_void_v<R>) {
    fn();
    return no_value{};
  } else {
    return fn();
  }
}
}  // namespace detail

template <class Fn>
auto replica_set::write(wal_position& seen, Fn&& fn, transaction_options options) {
  lease l = primary_->acquire();
  connection& c = *l;
  using R = result_of<Fn>;
  if constexpr (std::is_void_v<R>) {
    atomic(c, options, fn);
    seen.merge(c.last_commit_position());
    router_.wrote();
  } else {
    R value = atomic(c, options, fn);
    seen.merge(c.last_commit_position());
    router_.wrote();
    return value;
  }
}

template <class Fn>
auto replica_set::read(wal_position seen, Fn&& fn, transaction_options options) {
  using R = result_of<Fn>;
  detail::read_route route(router_, options, seen, options_.replica_wait, options_.fallback_to_primary,
                           !standbys_.empty());
  while (const auto a = route.next()) {
    std::optional<lease> l = lease_standby(a->node);
    if (!l) continue;
    try {
      auto run = [&]() -> decltype(auto) { return atomic(**l, a->options, fn); };
      detail::stored_t<R> v = detail::run_stored(run);
      route.served(a->node);
      if constexpr (!std::is_void_v<R>) return R(std::move(v));
      else return;
    } catch (...) {
      route.failed(a->node, std::current_exception());
    }
  }
  const transaction_options on_primary = route.to_primary();
  lease l = primary_->acquire();
  return atomic(*l, on_primary, fn);
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/replica_set.ipp>
#endif
