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

// What only the function bodies need (PQSCOPE_SEPARATE_COMPILATION: only the
// implementation unit sees them).
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#endif

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

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

PQSCOPE_DECL transaction::transaction(std::shared_ptr<detail::sync_session> s, const transaction_options& options,
                                      detail::attempt_info attempt)
    : machine_(std::move(s)) {
  if (!machine_) throw usage_error("transaction on a moved-from connection");
  detail::sync_session::call guard(*machine_, "opening a scope");
  id_ = machine_->machine.open(options, attempt);
  outermost_ = machine_->machine.depth() == 1;
}

PQSCOPE_DECL std::shared_ptr<detail::sync_session> transaction::checked(std::shared_ptr<detail::sync_session> s,
                                                                        const transaction_options& options) {
  if (options.retries != 0 || options.batch)
    throw usage_error(std::string("transaction_options::") + (options.batch ? "batch" : "retries") +
                      " may run a function again, which a transaction object cannot do: use pqscope::atomic or "
                      "pqscope::transactional");
  return s;
}

PQSCOPE_DECL bool transaction::end_attempt() {
  if (state_ == state::open && machine_->machine.index_of(id_)) {
    state_ = state::rolled_back;
    machine_->abandon(id_);
    if (!machine_->machine.voided()) machine_->machine.check_usable();
  }
  return machine_->machine.voided().has_value();
}

PQSCOPE_DECL void transaction::finish(bool commit) {
  const char* what = commit ? "commit()" : "rollback()";
  switch (state_) {
    case state::open: break;
    case state::committed: throw usage_error(std::string(what) + ": this scope has already been committed");
    case state::rolled_back: throw usage_error(std::string(what) + ": this scope has already been rolled back");
    case state::moved_from: throw usage_error(std::string(what) + ": this transaction object was moved from");
  }
  if (!machine_->machine.index_of(id_)) {
    state_ = state::rolled_back;
    throw usage_error(std::string(what) + ": this scope was already rolled back, because a scope enclosing it "
                                          "ended first");
  }
  bool committed = false;
  detail::sync_session::call guard(*machine_, what);
  try {
    machine_->end(id_, commit, &committed);
    state_ = commit ? state::committed : state::rolled_back;
  } catch (...) {
    // The scope has ended if it left the stack; an on_commit callback may have
    // thrown after a successful COMMIT.
    if (!machine_->machine.index_of(id_)) state_ = committed ? state::committed : state::rolled_back;
    throw;
  }
}
#endif

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

PQSCOPE_DECL bool is_retryable(const std::exception_ptr& e);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool is_retryable(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const serialization_failure&) {
    return true;
  } catch (const deadlock_detected&) {
    return true;
  } catch (const transaction_aborted& t) {  // an inner scope caught it and carried on
    return t.first_sqlstate() == "40001" || t.first_sqlstate() == "40P01";
  } catch (...) {
    return false;
  }
}
#endif

// Jitter needs spread, not quality: splitmix64 over a per-thread state seeded from
// the clock, the process and the thread (no <random>, ~47k lines per includer).
PQSCOPE_DECL std::uint64_t jitter_bits() noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::uint64_t jitter_bits() noexcept {
  static thread_local std::uint64_t state =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (static_cast<std::uint64_t>(::getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(&state);
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
#endif

// Jittered exponential backoff: spreads out clients that conflicted with each other.
PQSCOPE_DECL std::chrono::milliseconds retry_delay(const transaction_options& o, int attempt);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::chrono::milliseconds retry_delay(const transaction_options& o, int attempt) {
  const auto base = std::max<std::int64_t>(o.retry_base_delay.count(), 0);
  const auto cap = std::max<std::int64_t>(o.retry_max_delay.count(), 0);
  const std::int64_t d = std::min<std::int64_t>(cap, base << std::min(attempt, 20));
  const std::uint64_t span = static_cast<std::uint64_t>(d - d / 2) + 1;  // [d/2, d]
  return std::chrono::milliseconds(d / 2 + static_cast<std::int64_t>(jitter_bits() % span));
}
#endif

// Sleeps without <thread> (~17k lines per includer).
PQSCOPE_DECL void pause(std::chrono::milliseconds d) noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void pause(std::chrono::milliseconds d) noexcept {
  if (d.count() <= 0) return;
  timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>((d.count() % 1000) * 1000000)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}
#endif

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
  transaction_options scope = options;
  scope.retries = 0;
  scope.batch = false;
  const std::shared_ptr<detail::sync_session> session = detail::connection_access::session(c);
  if (!session) throw usage_error("atomic() on a moved-from connection");
  // One call from start to end: another thread cannot slip a statement into this transaction.
  detail::sync_session::call guard(*session, "atomic()");
  const bool outermost = session->machine.depth() == 0;
  bool replay = false;  // the previous attempt was voided: run unbatched, where errors surface in place
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
          const bool conflict = failed.sqlstate == "40001" || failed.sqlstate == "40P01";
          if (!(conflict && attempt < options.retries)) {
            replay = true;
            continue;
          }
        } else if (!outermost || attempt >= options.retries || !detail::is_retryable(std::current_exception())) {
          throw;
        }
      }
    }  // the failed attempt is rolled back here, before the pause
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
