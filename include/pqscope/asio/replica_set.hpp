#pragma once
// pqscope::asio::replica_set: pqscope::replica_set (replica_set.hpp) on Asio pools,
// from coroutines. Writes go to the primary, reads to a standby that has replayed
// what the caller must see (read-your-writes).
//
//   pqscope::asio::replica_set db{io.get_executor(), "host=db1 dbname=app", {"host=db2 dbname=app"}};
//   pqscope::wal_position seen;   // carry it along: a cookie, a header, a job's payload
//   co_await db.async_write(seen, [&](pqscope::asio::connection& c) -> awaitable<void> { ... });
//   long n = co_await db.async_read(seen, [&](pqscope::asio::connection& c) -> awaitable<long> { ... });
//
// The same routing as the blocking replica set (detail/replica_router.hpp, shared
// by both): the same replica_set_options, the same stats, the same order of tries.
// One pqscope::asio::pool per node, all on the replica set's executor; pool_options
// are the blocking pool's, so replica_set_options::pool serves both kinds.
//
// A read's function may run more than once, on several nodes: keep what it does
// outside the database idempotent. The replica set, and the `seen` given to
// async_write(), must outlive the awaitables they return (co_await them at once).
// Any number of coroutines, on any threads, may share one replica set: the pools
// and the routing state are thread-safe, the rest does not change.

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/pool.hpp>
#include <pqscope/replica_set.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/detail/replica_router.hpp>
#include <pqscope/asio/connection.hpp>
#include <pqscope/asio/pool.hpp>
#include <pqscope/asio/transaction.hpp>

namespace pqscope::asio {

namespace detail {
template <class Fn>
using atomic_value_t = typename awaitable_parts<returned_awaitable_t<Fn>>::value_type;
template <class Fn>
using atomic_executor_t = typename awaitable_parts<returned_awaitable_t<Fn>>::executor_type;
}  // namespace detail

class replica_set {
 public:
  using executor_type = boost::asio::any_io_executor;

  // No connection is opened here. standbys may be empty: every read goes to the
  // primary. A negative replica_wait or recheck_after is a usage_error.
  replica_set(const executor_type& ex, std::string primary, std::vector<std::string> standbys,
              replica_set_options options = {});
  template <class ExecutionContext,
            std::enable_if_t<std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  replica_set(ExecutionContext& ctx, std::string primary, std::vector<std::string> standbys,
              replica_set_options options = {})
      : replica_set(executor_type(ctx.get_executor()), std::move(primary), std::move(standbys), std::move(options)) {}
  // Pools and routing state belong to this object: awaitables in flight point to it.
  replica_set(const replica_set&) = delete;
  replica_set& operator=(const replica_set&) = delete;
  replica_set(replica_set&&) = delete;
  replica_set& operator=(replica_set&&) = delete;
  ~replica_set() = default;  // each pool's destructor closes it

  [[nodiscard]] executor_type get_executor() const { return ex_; }

  // co_await async_atomic(primary, options, fn) on a lease of the primary's pool; the
  // commit's WAL position is merged into `seen` (which must outlive the awaitable).
  // fn as for async_atomic: takes connection& or nothing, returns awaitable<T>.
  template <class Fn>
  auto async_write(wal_position& seen, Fn fn, transaction_options options = {}) {
    return write_to(&seen, std::move(fn), options);
  }
  template <class Fn>
  auto async_write(Fn fn, transaction_options options = {}) {
    return write_to(nullptr, std::move(fn), options);
  }

  // A read-only async_atomic(standby, options, fn) on a standby that has replayed
  // `seen` (merged with options.at_least), or on the primary: the blocking read()'s
  // order of tries (see replica_set.hpp). fn may run on several nodes, one after the other.
  template <class Fn>
  auto async_read(wal_position seen, Fn fn, transaction_options options = {})
      -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>>;
  template <class Fn>
  auto async_read(Fn fn, transaction_options options = {}) {
    return async_read(wal_position{}, std::move(fn), options);
  }

  // Leases for work of one's own: the primary's, and a standby's (round robin,
  // passing over those found down; the primary's when none answers). No position
  // is checked: pass transaction_options::at_least to its scopes for that.
  // Completion: void(std::exception_ptr, lease).
  template <class Token>
  auto async_primary(Token&& token) {
    return primary_->async_acquire(std::forward<Token>(token));
  }
  template <class Token>
  auto async_standby(Token&& token) {
    return boost::asio::co_spawn(ex_, any_standby(), std::forward<Token>(token));
  }

  // Closes every pool (see pool::close()) now, without waiting.
  void close() noexcept;
  // close(), then completes once every pool has closed every connection it opened
  // (pool::async_shutdown of each). Completion: void(std::exception_ptr).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::co_spawn(ex_, shutdown_all(pools()), std::forward<Token>(token));
  }

  [[nodiscard]] std::size_t standbys() const noexcept { return standbys_.size(); }
  [[nodiscard]] pool& primary_pool() noexcept { return *primary_; }
  [[nodiscard]] pool& standby_pool(std::size_t i) { return *standbys_.at(i); }
  [[nodiscard]] replica_set_stats stats() const { return router_.stats(); }

 private:
  template <class Fn>
  auto write_to(wal_position* seen, Fn fn, transaction_options options)
      -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>>;

  // Leases standby i; nothing when it cannot connect (it is marked down) or its
  // pool is busy past acquire_timeout.
  template <class Ex>
  boost::asio::awaitable<std::optional<lease>, Ex> lease_standby(std::size_t i);

  // One try of a read: its value, or nothing (down, behind, failing under it: `route` marks it).
  template <class Stored, class Ex, class Call>
  boost::asio::awaitable<std::optional<Stored>, Ex> try_standby(const pqscope::detail::read_route::attempt& a,
                                                                  Call& call, pqscope::detail::read_route& route);

  boost::asio::awaitable<lease> any_standby();
  [[nodiscard]] std::vector<std::shared_ptr<pool>> pools() const;
  // Owns the pools it waits for: the replica set may be gone before they drain.
  static boost::asio::awaitable<void> shutdown_all(std::vector<std::shared_ptr<pool>> pools);
  static replica_set_options checked(replica_set_options o);

  executor_type ex_;
  replica_set_options options_;
  std::shared_ptr<pool> primary_;
  std::vector<std::shared_ptr<pool>> standbys_;
  pqscope::detail::replica_router router_;
};

template <class Fn>
auto replica_set::write_to(wal_position* seen, Fn fn, transaction_options options)
    -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>> {
  using T = detail::atomic_value_t<Fn>;
  using Ex = detail::atomic_executor_t<Fn>;
  lease l = co_await primary_->async_acquire(boost::asio::use_awaitable_t<Ex>{});
  connection& c = *l;
  if constexpr (std::is_void_v<T>) {
    co_await async_atomic(c, options, std::move(fn));
    if (seen != nullptr) seen->merge(c.last_commit_position());
    router_.wrote();
  } else {
    T value = co_await async_atomic(c, options, std::move(fn));
    if (seen != nullptr) seen->merge(c.last_commit_position());
    router_.wrote();
    co_return value;
  }
}

template <class Ex>
boost::asio::awaitable<std::optional<lease>, Ex> replica_set::lease_standby(std::size_t i) {
  std::exception_ptr failure;
  try {
    co_return co_await standbys_[i]->async_acquire(boost::asio::use_awaitable_t<Ex>{});
  } catch (...) {
    failure = std::current_exception();  // sorted out below: no co_await in a handler
  }
  try {
    std::rethrow_exception(failure);
  } catch (const connection_error&) {
    router_.down(i);
  } catch (const pool_timeout&) {
    // busy, not down: the next one may have room
  }
  co_return std::nullopt;
}

template <class Stored, class Ex, class Call>
boost::asio::awaitable<std::optional<Stored>, Ex> replica_set::try_standby(
    const pqscope::detail::read_route::attempt& a, Call& call, pqscope::detail::read_route& route) {
  std::optional<lease> l = co_await lease_standby<Ex>(a.node);
  if (!l) co_return std::nullopt;
  connection& c = **l;
  std::exception_ptr failure;
  std::optional<Stored> value;
  try {
    if constexpr (std::is_same_v<Stored, pqscope::detail::no_value>) {
      co_await async_atomic(c, a.options, call);
      value.emplace();
    } else {
      value.emplace(co_await async_atomic(c, a.options, call));
    }
  } catch (...) {
    failure = std::current_exception();  // sorted out below: no co_await in a handler
  }
  if (failure) {
    route.failed(a.node, failure);
    co_return std::nullopt;
  }
  route.served(a.node);
  co_return value;
}

template <class Fn>
auto replica_set::async_read(wal_position seen, Fn fn, transaction_options options)
    -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>> {
  using T = detail::atomic_value_t<Fn>;
  using Ex = detail::atomic_executor_t<Fn>;
  using stored = pqscope::detail::stored_t<T>;
  pqscope::detail::read_route route(router_, options, seen, options_.replica_wait,
                                    options_.fallback_to_primary, !standbys_.empty());
  // Each try runs fn from this frame, which outlives it (async_atomic takes its function by value).
  auto call = [&fn](connection& c) { return pqscope::detail::call_with_optional_connection(fn, c); };
  while (const auto a = route.next()) {
    if (std::optional<stored> v = co_await try_standby<stored, Ex>(*a, call, route)) {
      if constexpr (std::is_void_v<T>) {
        co_return;
      } else {
        co_return std::move(*v);
      }
    }
  }
  const transaction_options on_primary = route.to_primary();
  lease l = co_await primary_->async_acquire(boost::asio::use_awaitable_t<Ex>{});
  co_return co_await async_atomic(*l, on_primary, call);
}

}  // namespace pqscope::asio

#include <pqscope/asio/impl/replica_set.ipp>
