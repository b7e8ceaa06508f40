#pragma once
// The bodies of asio/pool.hpp: the queue of waiters, connects with their pauses,
// health checks, and what happens to a connection that comes back. Header-only,
// like all of the asio front end: included at the end of asio/pool.hpp.
//
// Every decision is taken under the pool's lock by dispatch(), which only moves
// things between lists and counts; what it decided (completions to post,
// connections to close, connects and checks to start) is carried out after the
// lock is let go (carry_out), so that no handler, no libpq call and no close ever
// runs under it.
//
// First come, first served: waiters queue in arrival order; a connection that
// becomes ready (returned, connected, checked) goes to the oldest. The first
// pending() waiters are "covered": a connect or a check is on its way for each,
// and, as in the blocking pool, acquire_timeout does not cut short a wait for a
// connect already started (connect_timeout bounds it). All waiters have the same
// timeout, so deadlines grow along the queue: one timer, for the first waiter not
// covered, is all the queue needs.

#include <pqscope/asio/pool.hpp>

#include <libpq-fe.h>

#include <algorithm>
#include <iterator>

#include <pqscope/detail/libpq_connect.hpp>

namespace pqscope::asio::detail {

// A failed connect is tried again after 50 ms, then 100, 200, ... up to 2 s, and
// only while someone waits: a server that is down sees one attempt per pause,
// not one per waiter.
inline std::chrono::milliseconds pool_pause(unsigned failures) {
  const unsigned doublings = std::min(failures == 0 ? 0U : failures - 1, 6U);
  return std::min(std::chrono::milliseconds(50) * (1U << doublings), std::chrono::milliseconds(2000));
}

// Clean enough for the next lease: nothing of this lease's work can reach it. On
// the connection's strand (a background rollback writes what is read here).
inline bool pool_reusable(const connection& c) {
  PGconn* h = c.native_handle();
  if (h == nullptr || c.depth() != 0 || !c.is_open()) return false;
  const std::shared_ptr<session> s = connection_access::of(c);
  return !s->user_busy && !s->background && s->machine.opened_by_this_process() && PQstatus(h) == CONNECTION_OK &&
         PQtransactionStatus(h) == PQTRANS_IDLE &&
         // an exchange cut short leaves pipeline mode on
         PQpipelineStatus(h) == PQ_PIPELINE_OFF;
}

struct pool_state::effects {
  waiter_list done;               // their ending is set: delivered after the lock
  std::vector<pool_entry> close;  // closed after the lock
  std::vector<pool_entry> check;  // idle connections to check before a lease
  std::size_t connects = 0;       // connects to start
  unsigned round = 0;             // failures_ when they were decided
  std::string timeout_message;    // for the waiters that timed out
};

inline pool_state::pool_state(const boost::asio::any_io_executor& ex, std::string info, const pool_options& options,
                              connection_options connection)
    : executor(ex),
      conninfo(std::move(info)),
      opts(options),
      conn_opts(std::move(connection)),
      deadline_timer_(ex),
      retry_timer_(ex) {
  idle_.reserve(std::min<std::size_t>(opts.max_size, 64));
}

inline bool pool_state::needs_check(const pool_entry& e, pool_clock::time_point now) const noexcept {
  return opts.health_check_after.count() == 0 || now - e.last_used > opts.health_check_after;
}

inline bool pool_state::expired(const pool_entry& e, pool_clock::time_point now) const noexcept {
  return opts.max_lifetime.count() > 0 && now - e.created >= opts.max_lifetime;
}

inline bool pool_state::may_connect(pool_clock::time_point now) const noexcept {
  // After a failure: one attempt at a time, and not before its pause is over.
  return failures_ == 0 || (connecting_ == 0 && now >= retry_at_);
}

// ---- under the lock ----------------------------------------------------------------

inline void pool_state::dispatch(effects& fx, pool_clock::time_point now) {
  if (closed_) return;
  sweep(fx, now);
  while (waiters_.size() > pending() && !idle_.empty()) {
    pool_entry e = std::move(idle_.back());
    idle_.pop_back();
    if (needs_check(e, now)) {
      ++checking_;
      fx.check.push_back(std::move(e));
    } else {
      ++stats_.reused;
      serve_head(fx, std::move(e));
    }
  }
  fx.round = failures_;
  while (waiters_.size() > pending() && open_ < opts.max_size && may_connect(now)) {
    ++open_;
    ++connecting_;
    ++fx.connects;
  }
  arm_timers(now);
}

inline void pool_state::sweep(effects& fx, pool_clock::time_point now) {
  for (auto it = idle_.begin(); it != idle_.end();) {
    const bool idle_too_long = opts.idle_timeout.count() > 0 && now - it->last_used >= opts.idle_timeout;
    if (idle_too_long || expired(*it, now)) {
      fx.close.push_back(std::move(*it));
      it = idle_.erase(it);
      --open_;
      ++stats_.closed_expired;
    } else {
      ++it;
    }
  }
}

inline void pool_state::serve_head(effects& fx, pool_entry e) {
  pool_waiter& w = *waiters_.front();
  w.entry = std::move(e);
  w.end = pool_waiter::ending::served;
  w.list = nullptr;
  fx.done.splice(fx.done.end(), waiters_, waiters_.begin());
}

inline void pool_state::fail_head(effects& fx, std::exception_ptr e) {
  pool_waiter& w = *waiters_.front();
  w.error = std::move(e);
  w.end = pool_waiter::ending::failed;
  w.list = nullptr;
  fx.done.splice(fx.done.end(), waiters_, waiters_.begin());
}

inline void pool_state::expire_waiters(effects& fx, pool_clock::time_point now) {
  if (waiters_.size() <= pending()) return;
  auto it = std::next(waiters_.begin(), static_cast<std::ptrdiff_t>(pending()));
  while (it != waiters_.end() && (*it)->deadline <= now) {
    const auto next = std::next(it);
    (*it)->end = pool_waiter::ending::timed_out;
    (*it)->list = nullptr;
    ++stats_.timeouts;
    fx.done.splice(fx.done.end(), waiters_, it);
    it = next;
  }
  if (fx.timeout_message.empty() && !fx.done.empty()) {
    fx.timeout_message = "no connection came free within " + std::to_string(opts.acquire_timeout.count()) +
                         " ms (max_size " + std::to_string(opts.max_size) + ", all leased)";
    if (failures_ > 0) fx.timeout_message += "; the last attempt to connect failed: " + last_failure_;
  }
}

inline void pool_state::arm_timers(pool_clock::time_point now) {
  // The first waiter no connect or check is on its way to is the next to time out.
  const pool_waiter* first = nullptr;
  if (waiters_.size() > pending()) first = std::next(waiters_.begin(), static_cast<std::ptrdiff_t>(pending()))->get();
  if (first != nullptr && (!deadline_armed_ || first->deadline < deadline_at_)) {
    deadline_armed_ = true;
    deadline_at_ = first->deadline;
    deadline_timer_.expires_at(deadline_at_);
    deadline_timer_.async_wait([s = weak_from_this(), g = ++deadline_generation_](const error_code&) {
      if (auto p = s.lock()) p->on_deadline(g);
    });
  } else if (first == nullptr && deadline_armed_) {
    // Nobody can time out: a pending wait would keep io_context::run() busy for nothing.
    deadline_armed_ = false;
    ++deadline_generation_;
    deadline_timer_.cancel();
  }
  const bool want_retry = failures_ > 0 && first != nullptr && connecting_ == 0 && now < retry_at_;
  if (want_retry && !retry_armed_) {
    retry_armed_ = true;
    retry_timer_.expires_at(retry_at_);
    retry_timer_.async_wait([s = weak_from_this(), g = ++retry_generation_](const error_code&) {
      if (auto p = s.lock()) p->on_retry(g);
    });
  } else if (!want_retry && retry_armed_) {
    retry_armed_ = false;
    ++retry_generation_;
    retry_timer_.cancel();
  }
}

inline void pool_state::check_drained(effects& fx) {
  if (!closed_ || open_ != 0) return;
  for (auto& w : drain_) {
    w->end = pool_waiter::ending::drained;
    w->list = nullptr;
  }
  fx.done.splice(fx.done.end(), drain_);
}

// ---- after the lock ----------------------------------------------------------------

inline void pool_state::carry_out(effects& fx) noexcept {
  for (const std::shared_ptr<pool_waiter>& w : fx.done) {
    try {
      switch (w->end) {
        case pool_waiter::ending::served:
          w->deliver(nullptr, lease(shared_from_this(), std::move(w->entry)));
          break;
        case pool_waiter::ending::failed: w->deliver(w->error, lease()); break;
        case pool_waiter::ending::timed_out:
          w->deliver(std::make_exception_ptr(pool_timeout(fx.timeout_message)), lease());
          break;
        case pool_waiter::ending::canceled:
          w->deliver(std::make_exception_ptr(query_canceled(
                         w->shutdown ? "async_shutdown() was canceled while it waited for the last connection"
                                     : "async_acquire() was canceled while it waited for a connection",
                         "57014")),
                     lease());
          break;
        case pool_waiter::ending::closed:
          w->deliver(std::make_exception_ptr(usage_error("the pool was closed while async_acquire() waited")), lease());
          break;
        case pool_waiter::ending::drained: w->deliver(nullptr, lease()); break;
        case pool_waiter::ending::none: break;
      }
    } catch (...) {
      // Out of memory: the handler goes with its waiter; a connection in it goes back.
    }
  }
  fx.done.clear();
  fx.close.clear();
  for (pool_entry& e : fx.check) start_check(std::move(e));
  fx.check.clear();
  for (std::size_t k = 0; k < fx.connects; ++k) start_connect(fx.round);
  fx.connects = 0;
}

// A connect or a check that could not even start (out of memory): its place is given up.
inline void pool_state::start_connect(unsigned round) noexcept {
  try {
    auto strand = boost::asio::make_strand(executor);
    pool_entry e;
    e.conn = std::make_unique<connection>(boost::asio::any_io_executor(strand), conninfo, conn_opts);
    // Started on the connection's strand, where every step of it runs.
    boost::asio::post(strand, [self = shared_from_this(), e = std::move(e), round]() mutable {
      connection& c = *e.conn;
      try {
        c.async_connect([self, e = std::move(e), round](std::exception_ptr failure) mutable {
          self->connected(std::move(e), std::move(failure), round);
        });
      } catch (...) {
        self->connected(pool_entry{}, std::current_exception(), round);
      }
    });
  } catch (...) {
    connected(pool_entry{}, std::current_exception(), round);
  }
}

inline void pool_state::start_check(pool_entry e) noexcept {
  try {
    const auto strand = e.conn->get_executor();
    boost::asio::post(strand, [self = shared_from_this(), e = std::move(e)]() mutable {
      connection& c = *e.conn;
      try {
        // As the blocking pool: one round trip; a session the server ended, or that a
        // restart or an idle-session timeout killed, fails it.
        c.async_execute("SELECT 1", [self, e = std::move(e)](const std::exception_ptr& failure, const result&) mutable {
          const bool healthy = !failure && pool_reusable(*e.conn);
          self->checked(std::move(e), healthy);
        });
      } catch (...) {
        self->checked(pool_entry{}, false);
      }
    });
  } catch (...) {
    checked(pool_entry{}, false);
  }
}

// ---- on a connection's strand ------------------------------------------------------

inline void pool_state::connected(pool_entry e, std::exception_ptr failure, unsigned round) {
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    --connecting_;
    if (failure) {
      --open_;
      // Attempts started together fail together: one step of the pause for them all.
      failures_ = std::max(failures_, round + 1);
      retry_at_ = now + pool_pause(failures_);
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& x) {
        last_failure_ = x.what();
      } catch (...) {
        last_failure_ = "unknown failure";
      }
      // The oldest waiter learns why, as a blocking acquire() would; the others wait
      // for the next attempt (or their timeout).
      if (!closed_ && !waiters_.empty()) fail_head(fx, std::move(failure));
    } else {
      failures_ = 0;
      ++stats_.created;
      e.created = e.last_used = now;
      if (closed_) {
        --open_;
        fx.close.push_back(std::move(e));
      } else if (!waiters_.empty()) {
        serve_head(fx, std::move(e));
      } else {
        idle_.push_back(std::move(e));
      }
    }
    dispatch(fx, now);
    check_drained(fx);
  }
  carry_out(fx);
}

inline void pool_state::checked(pool_entry e, bool healthy) {
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    --checking_;
    if (!healthy || closed_) {
      if (!healthy) ++stats_.health_check_failures;
      --open_;
      fx.close.push_back(std::move(e));
    } else {
      e.last_used = now;
      if (!waiters_.empty()) {
        ++stats_.reused;
        serve_head(fx, std::move(e));
      } else {
        idle_.push_back(std::move(e));
      }
    }
    dispatch(fx, now);
    check_drained(fx);
  }
  carry_out(fx);
}

// What a returned connection needs before the next lease. A session that is idle
// with no scope open goes back as it is. A scope's ROLLBACK still on its way (its
// transaction object was destroyed open, before the lease: the connection sent the
// ROLLBACK at once, in the background) is waited for, and then the connection is
// as clean as any: waiting costs nothing, closing would cost the next lease a
// connect. Anything else is closed, as the blocking pool does, and the server rolls
// back what was open: a scope still open means a transaction object that outlives
// the lease still points at this session and could act on it later, from another
// thread, in the middle of the next holder's work; closed, the session is its alone.
inline void pool_state::returned(pool_entry e) {
  connection& c = *e.conn;
  const std::shared_ptr<session> s = connection_access::of(c);
  if (c.depth() == 0 && c.is_open() && s->background && !s->user_busy) {
    // Sends nothing: it waits at the connection's gate behind the rollback.
    c.async_flush([self = shared_from_this(), e = std::move(e)](const std::exception_ptr&) mutable {
      self->take_back(std::move(e));
    });
    return;
  }
  take_back(std::move(e));
}

inline void pool_state::take_back(pool_entry e) {
  const bool clean = pool_reusable(*e.conn);
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (!clean) ++stats_.closed_dirty;
    if (clean && !closed_ && !expired(e, now)) {
      e.last_used = now;
      idle_.push_back(std::move(e));
    } else {
      if (clean && !closed_) ++stats_.closed_expired;
      --open_;
      fx.close.push_back(std::move(e));
    }
    dispatch(fx, now);
    check_drained(fx);
  }
  carry_out(fx);
}

// ---- timers ------------------------------------------------------------------------

inline void pool_state::on_deadline(std::uint64_t generation) {
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (generation != deadline_generation_) return;  // re-armed or cancelled since
    deadline_armed_ = false;
    expire_waiters(fx, now);
    dispatch(fx, now);
  }
  carry_out(fx);
}

inline void pool_state::on_retry(std::uint64_t generation) {
  effects fx;
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (generation != retry_generation_) return;
    retry_armed_ = false;
    dispatch(fx, pool_clock::now());
  }
  carry_out(fx);
}

// ---- the public face ---------------------------------------------------------------

inline void pool_state::acquire(const std::shared_ptr<pool_waiter>& w) {
  if (pid != pqscope::detail::current_pid()) {
    // The connections belong to the parent; so does the lock, which a parent thread may hold.
    w->deliver(std::make_exception_ptr(usage_error(
                   "this pool was created by process " + std::to_string(pid) +
                   "; its connections belong to that process: create the pool after fork()")),
               lease());
    return;
  }
  effects fx;
  const auto now = pool_clock::now();
  bool refused = false;
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (closed_) {
      refused = true;
    } else {
      // A timeout too long to add (milliseconds::max() for "no bound") waits forever.
      const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(pool_clock::time_point::max() - now);
      w->deadline = opts.acquire_timeout < room ? now + opts.acquire_timeout : pool_clock::time_point::max();
      waiters_.push_back(w);
      w->list = &waiters_;
      w->at = std::prev(waiters_.end());
      dispatch(fx, now);
    }
  }
  if (refused) w->deliver(std::make_exception_ptr(usage_error("async_acquire(): the pool is closed")), lease());
  carry_out(fx);
}

inline void pool_state::shutdown(const std::shared_ptr<pool_waiter>& w) {
  close();
  effects fx;
  {
    const std::lock_guard<std::mutex> lock(m_);
    w->shutdown = true;
    drain_.push_back(w);
    w->list = &drain_;
    w->at = std::prev(drain_.end());
    check_drained(fx);
  }
  carry_out(fx);
}

inline void pool_state::cancel(const std::weak_ptr<pool_waiter>& weak) noexcept {
  const std::shared_ptr<pool_waiter> w = weak.lock();
  if (!w) return;
  effects fx;
  try {
    const std::lock_guard<std::mutex> lock(m_);
    if (w->list == nullptr) return;  // its outcome is on its way already
    fx.done.splice(fx.done.end(), *w->list, w->at);
    w->list = nullptr;
    w->end = pool_waiter::ending::canceled;
    dispatch(fx, pool_clock::now());  // a covered place may have come free, and the timer may move
  } catch (...) {
    // dispatch() ran out of memory: the waiter is out of the queue all the same
  }
  carry_out(fx);
}

inline void pool_state::give_back(pool_entry e) noexcept {
  // In a forked child the lock may be held by a parent thread that does not exist
  // here; the connection's destructor abandons the parent's session.
  if (pid != pqscope::detail::current_pid()) return;
  auto self = shared_from_this();
  try {
    const auto strand = e.conn->get_executor();
    auto back = [self, e = std::move(e)]() mutable { self->returned(std::move(e)); };
    boost::asio::post(strand, std::move(back));
  } catch (...) {
    // Out of memory: the connection is closed with the lambda that held it.
    const std::lock_guard<std::mutex> lock(m_);
    --open_;
    ++stats_.closed_dirty;
  }
}

inline void pool_state::close() noexcept {
  // In a forked child the lock may be held by a parent thread that does not exist
  // here; the idle connections are abandoned with the state.
  if (pid != pqscope::detail::current_pid()) return;
  effects fx;
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (!closed_) {
      closed_ = true;
      for (auto& w : waiters_) {
        w->end = pool_waiter::ending::closed;
        w->list = nullptr;
      }
      fx.done.splice(fx.done.end(), waiters_);
      open_ -= idle_.size();
      fx.close.swap(idle_);
      deadline_armed_ = retry_armed_ = false;
      ++deadline_generation_;
      ++retry_generation_;
      try {
        deadline_timer_.cancel();
        retry_timer_.cancel();
      } catch (...) {
        // the generations above void whatever fires
      }
    }
    check_drained(fx);
  }
  carry_out(fx);
}

inline std::size_t pool_state::size() {
  const std::lock_guard<std::mutex> lock(m_);
  return open_;
}

inline std::size_t pool_state::idle() {
  const std::lock_guard<std::mutex> lock(m_);
  return idle_.size();
}

inline std::size_t pool_state::waiting() {
  const std::lock_guard<std::mutex> lock(m_);
  return waiters_.size();
}

inline pool_stats pool_state::stats() {
  const std::lock_guard<std::mutex> lock(m_);
  return stats_;
}

}  // namespace pqscope::asio::detail

namespace pqscope::asio {

inline lease::lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry) noexcept
    : state_(std::move(state)), entry_(std::move(entry)), status_(status::active) {}

inline lease::lease(lease&& other) noexcept
    : state_(std::move(other.state_)), entry_(std::move(other.entry_)), status_(other.status_) {
  other.entry_ = detail::pool_entry{};
  other.status_ = status::moved_from;
}

inline lease& lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    give_back();
    state_ = std::move(other.state_);
    entry_ = std::move(other.entry_);
    status_ = other.status_;
    other.entry_ = detail::pool_entry{};
    other.status_ = status::moved_from;
  }
  return *this;
}

inline connection& lease::get() {
  check();
  return *entry_.conn;
}

inline void lease::release() {
  check();
  give_back();
  status_ = status::released;
}

inline void lease::check() const {
  switch (status_) {
    case status::active: return;
    case status::released: throw usage_error("this lease was released; async_acquire() another");
    case status::moved_from: throw usage_error("this lease was moved from");
    case status::empty: break;
  }
  throw usage_error("this lease holds no connection (an acquire that failed completes with an empty one)");
}

inline void lease::give_back() noexcept {
  if (entry_.conn && state_) state_->give_back(std::move(entry_));
  entry_ = detail::pool_entry{};
  state_.reset();
}

inline pool::pool(const executor_type& ex, std::string conninfo, pool_options options, connection_options connection) {
  pqscope::detail::check_conninfo(conninfo);
  if (options.max_size == 0) throw usage_error("pool_options::max_size must be at least 1");
  if (options.acquire_timeout.count() < 0 || options.idle_timeout.count() < 0 || options.max_lifetime.count() < 0 ||
      options.health_check_after.count() < 0)
    throw usage_error("pool_options: durations must not be negative");
  state_ = std::make_shared<detail::pool_state>(ex, std::move(conninfo), options, std::move(connection));
}

}  // namespace pqscope::asio
