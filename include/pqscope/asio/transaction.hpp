#pragma once
// Scopes on an asynchronous connection: the transaction object and async_atomic().
// As in transaction.hpp, these are faces of the scope machine: the outermost scope
// is a transaction, a nested one a savepoint, and nesting is tracked on the
// connection, so coroutines nest scopes without knowing about each other.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/transaction.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/asio/connection.hpp>

namespace pqscope::asio {

namespace detail {
struct scope_access;
}

// One scope, opened by the constructor (nothing is sent: BEGIN or SAVEPOINT rides
// with the next statement). End it with co_await async_commit() or async_rollback().
//
// A destructor cannot await: a scope object destroyed open (an exception past it,
// a coroutine destroyed mid-scope) is rolled back without being awaited. A nested
// scope ends at once (its ROLLBACK TO rides with the next statement, as on the
// blocking connection); the outermost one's ROLLBACK is sent at once, in the
// background, and the connection's next operation waits for it, so the session is
// never left idle in a transaction. async_atomic() awaits its rollbacks.
class transaction {
 public:
  explicit transaction(connection& c, const transaction_options& options = {})
      : transaction(checked(detail::connection_access::of(c), options), options, {}) {}
  transaction(transaction&& other) noexcept
      // NOLINTNEXTLINE(performance-move-constructor-init): kept, so that a moved-from scope still reports its misuse through the handler
      : s_(other.s_),
        id_(std::exchange(other.id_, 0)),
        outermost_(other.outermost_),
        record_(std::exchange(other.record_, moved_from())) {}
  transaction& operator=(transaction&&) = delete;
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  ~transaction() {
    if (record_ && record_->st == detail::scope_record::state::open && s_ && s_->machine.index_of(id_))
      s_->abandon(id_);
  }

  // Outermost: COMMIT, then the on_commit callbacks. Nested: RELEASE SAVEPOINT (sent
  // with the next statement). A doomed scope rolls back and fails with
  // transaction_aborted. Either way the scope has ended when the operation
  // completes, except for usage_error. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_commit(Token&& token) {
    return end(true, std::forward<Token>(token));
  }
  // Outermost: ROLLBACK, awaited. Nested: ROLLBACK TO SAVEPOINT, sent with the next statement.
  template <class Token>
  auto async_rollback(Token&& token) {
    return end(false, std::forward<Token>(token));
  }

  [[nodiscard]] bool is_outermost() const noexcept { return outermost_; }

 private:
  friend struct detail::scope_access;
  using state = detail::scope_record::state;

  transaction(std::shared_ptr<detail::session> s, const transaction_options& options,
              pqscope::detail::attempt_info attempt)
      : s_(std::move(s)), record_(std::make_shared<detail::scope_record>()) {
    id_ = s_->idle_machine("opening a scope").open(options, attempt);
    outermost_ = s_->machine.depth() == 1;
  }

  static std::shared_ptr<detail::session> checked(std::shared_ptr<detail::session> s,
                                                  const transaction_options& options) {
    if (options.retries != 0 || options.batch || options.replica_wait.count() != 0)
      throw usage_error(std::string("transaction_options::") +
                        (options.batch ? "batch" : options.retries != 0 ? "retries" : "replica_wait") +
                        " may run a function again, which a transaction object cannot do: use "
                        "pqscope::asio::async_atomic");
    return s;
  }

  static std::shared_ptr<detail::scope_record> moved_from() {
    auto r = std::make_shared<detail::scope_record>();
    r->st = state::moved_from;
    return r;
  }

  // The checks of transaction::finish(), then the end itself.
  struct end_checked : detail::end_work {
    using end_work::end_work;
    bool start(detail::session& s) {
      const char* what = commit ? "async_commit()" : "async_rollback()";
      switch (record->st) {
        case state::open: break;
        case state::ending: throw usage_error(std::string(what) + ": this scope is already being ended");
        case state::committed: throw usage_error(std::string(what) + ": this scope has already been committed");
        case state::rolled_back: throw usage_error(std::string(what) + ": this scope has already been rolled back");
        case state::moved_from: throw usage_error(std::string(what) + ": this transaction object was moved from");
      }
      if (!s.machine.index_of(id)) {
        record->st = state::rolled_back;
        throw usage_error(std::string(what) + ": this scope was already rolled back, because a scope enclosing it "
                                              "ended first");
      }
      return end_work::start(s);
    }
    void settle(detail::session& s) {
      if (record->st == state::ending) end_work::settle(s);
    }
  };

  template <class Token>
  auto end(bool commit, Token&& token) {
    return detail::start(s_, end_checked{id_, commit, record_}, std::forward<Token>(token));
  }

  std::shared_ptr<detail::session> s_;
  std::uint64_t id_ = 0;
  bool outermost_ = false;
  std::shared_ptr<detail::scope_record> record_;
};

namespace detail {

struct scope_access {
  static transaction open(std::shared_ptr<session> s, const transaction_options& o, pqscope::detail::attempt_info a) {
    return transaction(std::move(s), o, a);
  }
  static bool still_open(const transaction& tx) {
    return tx.record_->st == scope_record::state::open && tx.s_->machine.index_of(tx.id_).has_value();
  }
  static std::uint64_t id(const transaction& tx) { return tx.id_; }
  static void mark_rolled_back(transaction& tx) { tx.record_->st = scope_record::state::rolled_back; }
};

template <class A>
struct awaitable_parts {
  static_assert(!std::is_same_v<A, A>,
                "pqscope::asio::async_atomic: the function must return boost::asio::awaitable<T> "
                "(a coroutine); a plain function belongs in pqscope::atomic");
};
template <class T, class Ex>
struct awaitable_parts<boost::asio::awaitable<T, Ex>> {
  using value_type = T;
  using executor_type = Ex;
};

template <class Fn>
using returned_awaitable_t = std::decay_t<pqscope::detail::call_result_t<Fn, connection>>;

}  // namespace detail

// co_await async_atomic(c, options, fn): runs fn in a scope, commits when its
// awaitable returns (and returns its value), rolls back and rethrows when it
// throws; the rollback is awaited before the exception leaves. fn takes the
// connection (connection&) or nothing, and returns boost::asio::awaitable<T>.
// Every option means what it means for pqscope::atomic(): retries re-run fn after
// serialization_failure or deadlock_detected (outermost only), after a pause on an
// Asio timer; batch queues statements (see connection::async_execute) and runs fn
// again unbatched if a send fails. fn is moved into the coroutine; the connection
// must outlive it. Nesting: call async_atomic inside fn.
template <class Fn>
auto async_atomic(connection& c, transaction_options options, Fn fn)
    -> boost::asio::awaitable<typename detail::awaitable_parts<detail::returned_awaitable_t<Fn>>::value_type,
                              typename detail::awaitable_parts<detail::returned_awaitable_t<Fn>>::executor_type> {
  using parts = detail::awaitable_parts<detail::returned_awaitable_t<Fn>>;
  using T = typename parts::value_type;
  using Ex = typename parts::executor_type;
  const boost::asio::use_awaitable_t<Ex> awaited{};

  if (options.retries < 0) throw usage_error("transaction_options::retries must not be negative");
  if (options.replica_wait.count() < 0) throw usage_error("transaction_options::replica_wait must not be negative");
  transaction_options scope = options;
  scope.retries = 0;
  scope.batch = false;
  scope.replica_wait = std::chrono::milliseconds{0};
  const bool outermost = c.depth() == 0;
  const std::shared_ptr<detail::session> s = detail::connection_access::of(c);
  bool replay = false;  // the previous attempt was voided: run unbatched, where errors surface in place
  int reruns = 0;       // attempts run again because the session lost a prepared statement
  pqscope::detail::replica_waiter waiter;
  std::chrono::milliseconds behind{0};  // the standby was behind: pause this long, then run again
  std::size_t number = 0;
  for (int attempt = 0;; ++number) {
    const bool batched = outermost && options.batch && !replay;
    if (replay) s->machine.count_replay();
    replay = false;
    {
      transaction tx = detail::scope_access::open(s, scope, {batched, number});
      std::exception_ptr failure;
      try {
        if constexpr (std::is_void_v<T>) {
          co_await pqscope::detail::call_with_optional_connection(fn, c);
          co_await tx.async_commit(awaited);
          co_return;
        } else {
          T value = co_await pqscope::detail::call_with_optional_connection(fn, c);
          co_await tx.async_commit(awaited);
          co_return value;
        }
      } catch (...) {
        failure = std::current_exception();
      }
      // The attempt failed: what fn left open is rolled back now, and awaited.
      const bool was_open = detail::scope_access::still_open(tx);
      if (was_open) {
        detail::scope_access::mark_rolled_back(tx);
        co_await detail::start(s, detail::abandon_work{detail::scope_access::id(tx)}, awaited);
      }
      if (batched) {
        if (was_open && !s->machine.voided()) s->machine.check_usable();  // connection_error replaces the failure
        if (const auto& failed = s->machine.voided()) {
          // Whatever fn saw or caught, a failed send voids the attempt.
          if (failed->cause) {
            behind = waiter.next(options, failed->cause);
            if (behind.count() == 0) std::rethrow_exception(failed->cause);
          } else if (!((failed->sqlstate == "40001" || failed->sqlstate == "40P01") && attempt < options.retries)) {
            replay = true;
            continue;
          }
        } else if (outermost && (behind = waiter.next(options, failure)).count() > 0) {
          // paused below
        } else if (!outermost || attempt >= options.retries || !pqscope::detail::is_retryable(failure)) {
          std::rethrow_exception(failure);
        }
      } else if (outermost && (behind = waiter.next(options, failure)).count() > 0) {
        // paused below
      } else if (outermost && reruns < pqscope::detail::max_reruns && s->machine.take_lost_statement()) {
        ++reruns;  // prepared anew on the next attempt, at once
        continue;
      } else if (!outermost || attempt >= options.retries || !pqscope::detail::is_retryable(failure)) {
        std::rethrow_exception(failure);
      }
    }
    boost::asio::basic_waitable_timer<std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>,
                                      Ex>
        pause(co_await boost::asio::this_coro::executor);
    const bool waiting = behind.count() > 0;
    pause.expires_after(waiting ? std::exchange(behind, std::chrono::milliseconds{0})
                                : pqscope::detail::retry_delay(options, attempt));
    co_await pause.async_wait(awaited);
    if (!waiting) ++attempt;
  }
}

template <class Fn>
auto async_atomic(connection& c, Fn fn) {
  return async_atomic(c, transaction_options{}, std::move(fn));
}

}  // namespace pqscope::asio
