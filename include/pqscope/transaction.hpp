#pragma once
// Transaction scopes: the transaction object, atomic() and transactional().
// The logic lives in detail/scope_machine.hpp; these are its faces.

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

#include <pqscope/connection.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/sync_session.hpp>

namespace pqscope {

namespace detail {
struct connection_access {
  template <class Driver>
  static std::shared_ptr<sync_session> session(basic_connection<Driver>& c) {
    return c.s_;
  }
};
}  // namespace detail

// One scope. The outermost scope on a connection is a transaction (BEGIN ...
// COMMIT), a nested one a savepoint; the caller never passes the parent: nesting
// is tracked on the connection, so functions compose without knowing each other.
// Destroyed without commit() or rollback(), it rolls back and never throws.
class transaction {
 public:
  template <class Driver>
  explicit transaction(basic_connection<Driver>& c, const transaction_options& options = {})
      : transaction(checked(c.s_, options), options, {}) {}
  transaction(transaction&& other) noexcept
      : machine_(std::move(other.machine_)),
        id_(std::exchange(other.id_, 0)),
        outermost_(other.outermost_),
        state_(std::exchange(other.state_, state::moved_from)) {}
  transaction& operator=(transaction&&) = delete;
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  ~transaction() {
    if (state_ == state::open) machine_->abandon(id_);
  }

  // Outermost: COMMIT, then the on_commit callbacks. Nested: RELEASE SAVEPOINT
  // (sent with the next statement). A doomed scope rolls back and throws
  // transaction_aborted. Either way the scope has ended when commit() returns or
  // throws, except for usage_error (an inner scope is still open).
  void commit() { finish(true); }
  // Outermost: ROLLBACK at once. Nested: ROLLBACK TO SAVEPOINT, sent with the next statement.
  void rollback() { finish(false); }

  [[nodiscard]] bool is_outermost() const noexcept { return outermost_; }

 private:
  template <class Driver, class Fn>
  friend auto atomic(basic_connection<Driver>& c, const transaction_options& options, Fn&& fn);

  enum class state { open, committed, rolled_back, moved_from };

  transaction(std::shared_ptr<detail::sync_session> s, const transaction_options& options,
              detail::attempt_info attempt);

  static std::shared_ptr<detail::sync_session> checked(std::shared_ptr<detail::sync_session> s,
                                                       const transaction_options& options);

  // atomic(): ends the attempt if the function left it open (rolling back, after
  // the statements still queued went out), and tells whether a failed batched send
  // voided it. Throws only connection_error.
  bool end_attempt();

  void finish(bool commit);

  std::shared_ptr<detail::sync_session> machine_;
  std::uint64_t id_ = 0;
  bool outermost_ = false;
  state state_ = state::open;
};

namespace detail {

// std::apply calls as std::invoke does (member pointers too) and is declared in
// <tuple>: std::invoke would take <functional>, about 8,000 lines per includer.
template <class Fn, class Conn>
decltype(auto) call_with_optional_connection(Fn& fn, Conn& c) {
  if constexpr (std::is_invocable_v<Fn&, Conn&>) {
    return std::apply(fn, std::forward_as_tuple(c));
  } else {
    static_assert(std::is_invocable_v<Fn&>,
                  "pqscope::atomic: the function must take the connection (Connection&) or nothing");
    return std::apply(fn, std::tuple<>());
  }
}

// What fn returns, called as atomic() calls it on a Conn. One alias for every
// caller: g++ 12 took two decltypes of this call, spelled alike but naming
// different connection types, for one type (async_atomic then failed to compile).
template <class Fn, class Conn>
using call_result_t = decltype(call_with_optional_connection(std::declval<Fn&>(), std::declval<Conn&>()));

PQSCOPE_DECL bool is_retryable(const std::exception_ptr& e);

// Jitter needs spread, not quality: splitmix64 over a per-thread state seeded from
// the clock, the process and the thread (no <random>, ~47k lines per includer).
PQSCOPE_DECL std::uint64_t jitter_bits() noexcept;

// Jittered exponential backoff: spreads out clients that conflicted with each other.
PQSCOPE_DECL std::chrono::milliseconds retry_delay(const transaction_options& o, int attempt);

// How many times one atomic() runs its function again because the session lost a
// statement pqscope had prepared (prepared_statement_lost): once after DISCARD ALL or
// DDL; a function that changes its own tables' shape each time would never end.
inline constexpr int max_reruns = 3;

// transaction_options::replica_wait for one atomic() call.
struct replica_waiter {
  std::chrono::steady_clock::time_point deadline{};
  int pauses = 0;
  // After a failure: the pause before running the function again when it is
  // replica_behind and the wait is not spent (short ones: the next attempt's check
  // is the poll); zero otherwise.
  std::chrono::milliseconds next(const transaction_options& o, const std::exception_ptr& e);
};

// Sleeps without <thread> (~17k lines per includer).
PQSCOPE_DECL void pause(std::chrono::milliseconds d) noexcept;

}  // namespace detail

// Runs fn in a scope: commits when fn returns (and returns its value), rolls back
// and rethrows when it throws. fn takes the connection or nothing. With
// options.retries > 0 and no scope open around it, fn is re-run after
// serialization_failure or deadlock_detected; nested, the error propagates to the
// outermost atomic(), which alone can retry.
//
// options.batch (outermost only): statements are queued and sent together (see
// transaction_options::batch). If a send fails, the attempt is rolled back and fn
// runs again unbatched; a serialization failure or deadlock is retried batched.
template <class Driver, class Fn>
auto atomic(basic_connection<Driver>& c, const transaction_options& options, Fn&& fn) {
  if (options.retries < 0) throw usage_error("transaction_options::retries must not be negative");
  if (options.replica_wait.count() < 0) throw usage_error("transaction_options::replica_wait must not be negative");
  transaction_options scope = options;
  scope.retries = 0;
  scope.batch = false;
  scope.replica_wait = std::chrono::milliseconds{0};
  const std::shared_ptr<detail::sync_session> session = detail::connection_access::session(c);
  if (!session) throw usage_error("atomic() on a moved-from connection");
  // One call from start to end: another thread cannot slip a statement into this transaction.
  detail::sync_session::call guard(*session, "atomic()");
  const bool outermost = session->machine.depth() == 0;
  bool replay = false;  // the previous attempt was voided: run unbatched, where errors surface in place
  int reruns = 0;       // attempts run again because the session lost a prepared statement
  detail::replica_waiter waiter;
  std::chrono::milliseconds behind{0};  // the standby was behind: pause this long, then run again
  std::size_t number = 0;
  for (int attempt = 0;; ++number) {
    const bool batched = outermost && options.batch && !replay;
    if (replay) session->machine.count_replay();
    replay = false;
    {
      transaction tx{session, scope, {batched, number}};
      try {
        using R = decltype(detail::call_with_optional_connection(fn, c));
        if constexpr (std::is_void_v<R>) {
          detail::call_with_optional_connection(fn, c);
          tx.commit();
          return;
        } else {
          std::decay_t<R> value = detail::call_with_optional_connection(fn, c);
          tx.commit();
          return value;
        }
      } catch (...) {
        if (batched && tx.end_attempt()) {
          // Whatever fn saw or caught, a failed send voids the attempt.
          const auto& failed = *session->machine.voided();
          if (failed.cause) {
            behind = waiter.next(options, failed.cause);
            if (behind.count() == 0) std::rethrow_exception(failed.cause);
          } else if (!((failed.sqlstate == "40001" || failed.sqlstate == "40P01") && attempt < options.retries)) {
            replay = true;
            continue;
          }
        } else if (outermost && (behind = waiter.next(options, std::current_exception())).count() > 0) {
          // paused below, once the scope has ended
        } else if (outermost && reruns < detail::max_reruns && session->machine.take_lost_statement()) {
          ++reruns;  // prepared anew on the next attempt, at once
          continue;
        } else if (!outermost || attempt >= options.retries || !detail::is_retryable(std::current_exception())) {
          throw;
        }
      }
    }  // the failed attempt is rolled back here, before the pause
    if (behind.count() > 0) {
      detail::pause(std::exchange(behind, std::chrono::milliseconds{0}));
      continue;
    }
    detail::pause(detail::retry_delay(options, attempt));
    ++attempt;
  }
}

template <class Driver, class Fn>
auto atomic(basic_connection<Driver>& c, Fn&& fn) {
  return atomic(c, transaction_options{}, std::forward<Fn>(fn));
}

// Wraps fn(connection&, args...) so that every call runs in atomic(): the result
// takes the same arguments and returns what fn returns.
template <class Fn>
auto transactional(Fn fn, transaction_options options = {}) {
  return [fn = std::move(fn), options](auto& conn, auto&&... args) {
    return atomic(conn, options,
                  [&]() -> decltype(auto) { return std::apply(fn, std::forward_as_tuple(conn, args...)); });
  };
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/transaction.ipp>
#endif
