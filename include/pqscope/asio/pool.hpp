#pragma once
// pqscope::asio::pool: a bounded pool of asynchronous connections to PostgreSQL
// itself, with the blocking pool's meaning (pool.hpp) where the two overlap: the
// same pool_options, pool_stats and pool_timeout, the same rule for what goes back.
//
//   pqscope::asio::pool p{io.get_executor(), "host=db dbname=app", {.max_size = 16}};
//   {
//     pqscope::asio::lease c = co_await p.async_acquire(use_awaitable);  // waits up to acquire_timeout
//     co_await pqscope::asio::async_atomic(*c, [&]() -> awaitable<void> { ... });
//   }                                                                    // back to the pool
//
// Waiters are served first come, first served. A connection goes back to the pool
// only when nothing of the lease's work can reach the next holder (see
// pool_state::returned in impl/pool.ipp); anything else is closed, which makes the
// server roll back. No background task: idle and expired connections are closed
// when the pool next looks at them (an acquire, a return), as in the blocking pool.
//
// Threads: the pool's own state sits behind a mutex, and no handler is ever called
// under it, nor from inside the call that started the operation: every completion
// is posted to the handler's executor. Each connection the pool opens gets a strand
// of its own (of the pool's executor): what the pool does with it between leases
// (connect, health check, waiting out a rollback) runs there. A lease holder uses
// the connection from its own executor, one operation at a time, as any connection.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/version.hpp>
#if BOOST_ASIO_VERSION >= 101900
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/cancellation_type.hpp>
#endif

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/pool.hpp>
#include <pqscope/detail/process.hpp>
#include <pqscope/asio/connection.hpp>

namespace pqscope::asio {

class lease;
class pool;

namespace detail {

using pool_clock = std::chrono::steady_clock;

struct pool_entry {
  // On the heap so that a connection& taken from a lease survives moving the lease.
  std::unique_ptr<connection> conn;
  pool_clock::time_point created;
  pool_clock::time_point last_used;
};

// One async_acquire() or async_shutdown() that has not completed. The queue holds
// it; a cancellation slot only points at it (weak_ptr).
class pool_waiter {
 public:
  pool_waiter() = default;
  pool_waiter(const pool_waiter&) = delete;
  pool_waiter& operator=(const pool_waiter&) = delete;
  pool_waiter(pool_waiter&&) = delete;
  pool_waiter& operator=(pool_waiter&&) = delete;
  virtual ~pool_waiter() = default;

  // Posts the outcome to the handler's executor (never runs it here); called once,
  // never under the pool's lock. `l` is ignored by async_shutdown's waiters.
  virtual void deliver(std::exception_ptr e, lease l) = 0;

  // How it ends: decided under the lock, delivered after it (carry_out).
  enum class ending { none, served, failed, timed_out, canceled, closed, drained };

  pool_clock::time_point deadline;
  std::list<std::shared_ptr<pool_waiter>>* list = nullptr;  // the queue it waits in, if any
  std::list<std::shared_ptr<pool_waiter>>::iterator at;     // its place there
  ending end = ending::none;
  bool shutdown = false;     // an async_shutdown(), not an acquire
  std::exception_ptr error;  // failed: the connect's error
  pool_entry entry;          // served: the connection
};

using waiter_list = std::list<std::shared_ptr<pool_waiter>>;

// What the lease, the pool object and the operations in flight share: the pool
// outlives its object while a lease or an operation still needs it.
class pool_state : public std::enable_shared_from_this<pool_state> {
 public:
  pool_state(const boost::asio::any_io_executor& ex, std::string conninfo, const pool_options& options,
             connection_options connection);
  pool_state(const pool_state&) = delete;
  pool_state& operator=(const pool_state&) = delete;
  pool_state(pool_state&&) = delete;
  pool_state& operator=(pool_state&&) = delete;
  ~pool_state() = default;

  // async_acquire(): a connection now (posted), or a place at the end of the queue.
  void acquire(const std::shared_ptr<pool_waiter>& w);
  // async_shutdown(): close(), then completes once every connection has been closed.
  void shutdown(const std::shared_ptr<pool_waiter>& w);
  // A cancellation slot asked: the waiter leaves the queue (if it is still there).
  void cancel(const std::weak_ptr<pool_waiter>& w) noexcept;
  // From a lease, on any thread; the rest happens on the connection's strand.
  void give_back(pool_entry e) noexcept;
  // Waiters fail, idle connections are closed, leases close theirs on return.
  void close() noexcept;

  [[nodiscard]] std::size_t size();
  [[nodiscard]] std::size_t idle();
  [[nodiscard]] std::size_t waiting();
  [[nodiscard]] pool_stats stats();

  const boost::asio::any_io_executor executor;
  const std::string conninfo;
  const pool_options opts;
  const connection_options conn_opts;  // for every connection the pool opens
  const pid_t pid = pqscope::detail::current_pid();

 private:
  struct effects;  // what a decision under the lock left to do after it

  [[nodiscard]] std::size_t pending() const noexcept { return connecting_ + checking_; }
  [[nodiscard]] bool needs_check(const pool_entry& e, pool_clock::time_point now) const noexcept;
  [[nodiscard]] bool expired(const pool_entry& e, pool_clock::time_point now) const noexcept;
  [[nodiscard]] bool may_connect(pool_clock::time_point now) const noexcept;

  // Under the lock.
  void dispatch(effects& fx, pool_clock::time_point now);
  void sweep(effects& fx, pool_clock::time_point now);
  void serve_head(effects& fx, pool_entry e);
  void fail_head(effects& fx, std::exception_ptr e);
  void expire_waiters(effects& fx, pool_clock::time_point now);
  void arm_timers(pool_clock::time_point now);
  void check_drained(effects& fx);

  // After the lock: completions posted, connections closed, connects and checks started.
  void carry_out(effects& fx) noexcept;
  void start_connect(unsigned round) noexcept;
  void start_check(pool_entry e) noexcept;

  // On a connection's strand.
  void connected(pool_entry e, std::exception_ptr failure, unsigned round);
  void checked(pool_entry e, bool healthy);
  void returned(pool_entry e);
  void take_back(pool_entry e);

  void on_deadline(std::uint64_t generation);
  void on_retry(std::uint64_t generation);

  std::mutex m_;
  waiter_list waiters_;               // acquires, oldest first
  waiter_list drain_;                 // async_shutdown() calls waiting for the last connection
  std::vector<pool_entry> idle_;      // most recently returned last
  std::size_t open_ = 0;              // idle + leased + being opened, checked or settled; never above max_size
  std::size_t connecting_ = 0;        // connects in flight
  std::size_t checking_ = 0;          // health checks in flight
  unsigned failures_ = 0;             // connects failed in a row (counted once per round of attempts)
  pool_clock::time_point retry_at_{};  // no connect before this while failures_ > 0
  std::string last_failure_;          // why the last connect failed
  bool closed_ = false;
  pool_stats stats_;
  boost::asio::steady_timer deadline_timer_;  // the first waiter that no connection is on its way to
  boost::asio::steady_timer retry_timer_;     // the next connect after a failure
  bool deadline_armed_ = false, retry_armed_ = false;
  pool_clock::time_point deadline_at_{};
  std::uint64_t deadline_generation_ = 0, retry_generation_ = 0;
};

template <class Handler>
using pool_handler_executor = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;

}  // namespace detail

// A connection borrowed from a pqscope::asio::pool, given back when the lease is
// destroyed or released. Move-only. An empty lease (default-constructed: what a
// failed acquire completes with, or moved from) holds nothing. Use the connection
// from one executor at a time, and give the lease back only when no operation of
// yours is running on it.
class lease {
 public:
  lease() noexcept = default;
  lease(lease&& other) noexcept;
  lease& operator=(lease&& other) noexcept;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  ~lease() { give_back(); }

  // usage_error when the lease holds no connection (released, moved from, empty).
  [[nodiscard]] connection& get();
  [[nodiscard]] connection& operator*() { return get(); }
  [[nodiscard]] connection* operator->() { return &get(); }

  // Gives the connection back now; using the lease afterwards is a usage_error, and
  // so is releasing it twice.
  void release();

 private:
  friend class detail::pool_state;
  enum class status { empty, active, released, moved_from };

  lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry) noexcept;

  void check() const;
  void give_back() noexcept;

  std::shared_ptr<detail::pool_state> state_;
  detail::pool_entry entry_;
  status status_ = status::empty;
};

namespace detail {

// An operation's handler, kept until its outcome is posted to the handler's executor.
template <class Handler, bool Shutdown>
class pool_waiter_for final : public pool_waiter {
 public:
  pool_waiter_for(Handler h, const boost::asio::any_io_executor& fallback)
      : work_(boost::asio::get_associated_executor(h, fallback)), handler_(std::move(h)) {}

  void deliver(std::exception_ptr e, lease l) override {
    auto ex = work_.get_executor();
    boost::asio::post(ex, [h = std::move(handler_), e = std::move(e), l = std::move(l)]() mutable {
#if BOOST_ASIO_VERSION >= 101900
      // The operation is over: a later cancellation must not reach the pool.
      boost::asio::get_associated_cancellation_slot(h).clear();
#endif
      if constexpr (Shutdown) {
        std::move(h)(std::move(e));
      } else {
        std::move(h)(std::move(e), std::move(l));
      }
    });
    work_.reset();
  }

#if BOOST_ASIO_VERSION >= 101900
  // Per-operation cancellation (Boost 1.77 and newer): a waiting operation leaves the
  // queue and completes with query_canceled. Installed before the waiter is queued,
  // from the starting thread, as Asio wants slots to be handled.
  static void connect_slot(const std::shared_ptr<pool_waiter_for>& self, const std::shared_ptr<pool_state>& state) {
    auto slot = boost::asio::get_associated_cancellation_slot(self->handler_);
    if (!slot.is_connected()) return;
    slot.assign([w = std::weak_ptr<pool_waiter>(self), s = std::weak_ptr<pool_state>(state)](
                    boost::asio::cancellation_type type) {
      if ((type & (boost::asio::cancellation_type::terminal | boost::asio::cancellation_type::partial |
                   boost::asio::cancellation_type::total)) == boost::asio::cancellation_type::none)
        return;
      if (auto p = s.lock()) p->cancel(w);
    });
  }
#endif

 private:
  // Keeps the handler's executor from running out of work while the operation waits.
  boost::asio::executor_work_guard<pool_handler_executor<Handler>> work_;
  Handler handler_;
};

template <bool Shutdown>
struct pool_initiation {
  template <class Handler>
  void operator()(Handler&& handler, const std::shared_ptr<pool_state>& state) const {
    using waiter = pool_waiter_for<std::decay_t<Handler>, Shutdown>;
    auto w = std::make_shared<waiter>(std::forward<Handler>(handler), state->executor);
#if BOOST_ASIO_VERSION >= 101900
    waiter::connect_slot(w, state);
#endif
    if constexpr (Shutdown)
      state->shutdown(std::move(w));
    else
      state->acquire(std::move(w));
  }
};

}  // namespace detail

// A bounded pool for talking to PostgreSQL directly (behind PgBouncer, give each
// coroutine its own pqscope::asio::connection: PgBouncer is the pool). The
// executor runs the pool's timers and the connections it opens (a strand of it
// each); the io_context behind it must outlive the pool and every lease.
class pool {
 public:
  using executor_type = boost::asio::any_io_executor;

  // No connection is opened here; a malformed conninfo, max_size == 0 or a negative
  // duration is a usage_error at once.
  pool(const executor_type& ex, std::string conninfo, pool_options options = {}, connection_options connection = {});
  template <class ExecutionContext,
            std::enable_if_t<std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  pool(ExecutionContext& ctx, std::string conninfo, pool_options options = {}, connection_options connection = {})
      : pool(executor_type(ctx.get_executor()), std::move(conninfo), options, std::move(connection)) {}
  // Leases point to the pool's state, not to the object.
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;
  // close(): waiters fail, idle connections are closed, leases still out keep
  // working and their connections are closed when they come back.
  ~pool() { close(); }

  [[nodiscard]] executor_type get_executor() const { return state_->executor; }

  // A connection: an idle one (checked with a round trip first if it sat longer
  // than health_check_after), or a new one while fewer than max_size are open;
  // otherwise waits, first come first served, up to acquire_timeout, then
  // pool_timeout (the wait for a connect already started on its behalf is bounded
  // by connect_timeout, as in the blocking pool). A failed connect fails the oldest
  // waiter with its connection_error; the next one is tried after a pause that
  // doubles with each failure in a row (50 ms up to 2 s), and only while someone
  // waits. usage_error once the pool is closed, and in a forked child. With Boost
  // 1.77 or newer a cancellation slot ends the wait: query_canceled.
  // Completion: void(std::exception_ptr, lease).
  template <class Token>
  auto async_acquire(Token&& token) {
    return boost::asio::async_initiate<Token, void(std::exception_ptr, lease)>(detail::pool_initiation<false>{},
                                                                                 token, state_);
  }

  // close(), then completes once every connection the pool opened is closed: the
  // last lease came back, the last connect or check ended. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_initiate<Token, void(std::exception_ptr)>(detail::pool_initiation<true>{}, token,
                                                                         state_);
  }

  // Stops the pool at once, without waiting: waiting acquires complete with
  // usage_error, idle connections are closed, later acquires fail with usage_error.
  void close() noexcept { state_->close(); }

  // Connections open or being opened, leased or idle.
  [[nodiscard]] std::size_t size() const { return state_->size(); }
  [[nodiscard]] std::size_t idle() const { return state_->idle(); }
  // Acquires waiting in the queue.
  [[nodiscard]] std::size_t waiting() const { return state_->waiting(); }
  [[nodiscard]] std::size_t max_size() const noexcept { return state_->opts.max_size; }
  [[nodiscard]] pool_stats stats() const { return state_->stats(); }

 private:
  std::shared_ptr<detail::pool_state> state_;
};

}  // namespace pqscope::asio

#include <pqscope/asio/impl/pool.ipp>
