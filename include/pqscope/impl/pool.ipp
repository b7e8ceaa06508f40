#pragma once
// The bodies of <pqscope/pool.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/pool.hpp>

#include <libpq-fe.h>
#include <sys/types.h>

#include <condition_variable>
#include <mutex>

namespace pqscope::detail {

struct pool_state {
  pool_state(std::string ci, const pool_options& o, connection_options co)
      : conninfo(std::move(ci)), opts(o), conn_opts(std::move(co)) {}

  const std::string conninfo;
  const pool_options opts;
  const connection_options conn_opts;  // for every connection the pool opens
  const pid_t pid = current_pid();

  std::mutex m;
  std::condition_variable freed;  // an idle connection or a free slot appeared
  std::vector<pool_entry> idle;   // most recently returned last
  std::size_t open = 0;           // idle + leased + being opened; never above max_size
  bool closed = false;            // the pool object was destroyed
  pool_stats stats;

  [[nodiscard]] bool in_creating_process() const noexcept { return pid == current_pid(); }

  // Clean enough for the next lease: nothing of this lease's work can reach it.
  static bool reusable(const connection& c) noexcept;

  [[nodiscard]] bool expired(const pool_entry& e, pool_clock::time_point now) const noexcept;

  // Never throws: called from lease destructors. Connections are closed outside the lock.
  void give_back(pool_entry e) noexcept;
};

PQSCOPE_DECL bool pool_state::reusable(const connection& c) noexcept {
  PGconn* h = c.native_handle();
  return h != nullptr && c.depth() == 0 && PQstatus(h) == CONNECTION_OK &&
         PQtransactionStatus(h) == PQTRANS_IDLE &&
         // an exchange cut short leaves pipeline mode on
         PQpipelineStatus(h) == PQ_PIPELINE_OFF;
}

PQSCOPE_DECL bool pool_state::expired(const pool_entry& e, pool_clock::time_point now) const noexcept {
  return opts.max_lifetime.count() > 0 && now - e.created >= opts.max_lifetime;
}

PQSCOPE_DECL void pool_state::give_back(pool_entry e) noexcept {
  // In a forked child the mutex may be held by a parent thread that does not
  // exist here; the connection's destructor abandons the parent's session.
  if (!in_creating_process()) return;
  const bool clean = e.conn && reusable(*e.conn);
  const auto now = pool_clock::now();
  std::unique_lock<std::mutex> lock(m);
  if (!clean) ++stats.closed_dirty;
  if (clean && !closed && !expired(e, now)) {
    e.last_used = now;
    try {
      idle.push_back(std::move(e));
      freed.notify_one();
      return;
    } catch (...) {  // out of memory: close it instead
    }
  } else if (clean && !closed) {
    ++stats.closed_expired;
  }
  --open;
  freed.notify_one();
  lock.unlock();
  e.conn.reset();
}

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL lease::lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry)
    : state_(std::move(state)), entry_(std::move(entry)) {}

PQSCOPE_DECL lease::lease(lease&& other) noexcept
    : state_(std::move(other.state_)), entry_(std::move(other.entry_)), status_(other.status_) {
  other.entry_ = detail::pool_entry{};
  other.status_ = status::moved_from;
}

PQSCOPE_DECL lease& lease::operator=(lease&& other) noexcept {
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

PQSCOPE_DECL connection& lease::get() {
  check();
  return *entry_.conn;
}

PQSCOPE_DECL void lease::release() {
  check();
  give_back();
  status_ = status::released;
}

PQSCOPE_DECL void lease::check() const {
  if (status_ == status::released) throw usage_error("this lease was released; acquire() another");
  if (status_ == status::moved_from) throw usage_error("this lease was moved from");
}

PQSCOPE_DECL void lease::give_back() noexcept {
  if (entry_.conn && state_) state_->give_back(std::move(entry_));
  entry_ = detail::pool_entry{};
  state_.reset();
}

PQSCOPE_DECL pool::pool(std::string conninfo, pool_options options, connection_options connection) {
  detail::check_conninfo(conninfo);
  if (options.max_size == 0) throw usage_error("pool_options::max_size must be at least 1");
  if (options.acquire_timeout.count() < 0 || options.idle_timeout.count() < 0 ||
      options.max_lifetime.count() < 0 || options.health_check_after.count() < 0)
    throw usage_error("pool_options: durations must not be negative");
  state_ = std::make_shared<detail::pool_state>(std::move(conninfo), options, std::move(connection));
}

PQSCOPE_DECL pool::~pool() {
  if (!state_->in_creating_process()) return;  // the idle connections are abandoned with the state
  std::vector<detail::pool_entry> doomed;
  {
    std::lock_guard<std::mutex> lock(state_->m);
    state_->closed = true;
    doomed.swap(state_->idle);
    state_->open -= doomed.size();
  }
}

PQSCOPE_DECL std::size_t pool::max_size() const noexcept { return state_->opts.max_size; }

PQSCOPE_DECL lease pool::acquire() {
  detail::pool_state& s = *state_;
  if (!s.in_creating_process())
    throw usage_error("this pool was created by process " + std::to_string(s.pid) +
                      "; its connections belong to that process: create the pool after fork()");
  // A timeout too long to add (milliseconds::max() for "no bound") waits forever.
  const auto now = detail::pool_clock::now();
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(detail::pool_clock::time_point::max() - now);
  const auto deadline =
      s.opts.acquire_timeout < room ? now + s.opts.acquire_timeout : detail::pool_clock::time_point::max();
  for (;;) {
    std::vector<detail::pool_entry> doomed;  // closed after the lock is let go
    std::unique_lock<std::mutex> lock(s.m);
    for (;;) {
      sweep(doomed);
      if (!s.idle.empty() || s.open < s.opts.max_size) break;
      if (!s.freed.wait_until(lock, deadline, [&] { return !s.idle.empty() || s.open < s.opts.max_size; })) {
        ++s.stats.timeouts;
        throw pool_timeout("no connection came free within " + std::to_string(s.opts.acquire_timeout.count()) +
                           " ms (max_size " + std::to_string(s.opts.max_size) + ", all leased)");
      }
    }

    if (s.idle.empty()) {
      ++s.open;  // reserve the slot, then connect without the lock
      lock.unlock();
      doomed.clear();
      return lease(state_, open_new());
    }

    detail::pool_entry e = std::move(s.idle.back());
    s.idle.pop_back();
    const auto now = detail::pool_clock::now();
    const bool check = s.opts.health_check_after.count() == 0 || now - e.last_used > s.opts.health_check_after;
    lock.unlock();
    doomed.clear();
    if (!check || healthy(*e.conn)) {
      lock.lock();
      ++s.stats.reused;
      lock.unlock();
      return lease(state_, std::move(e));
    }
    lock.lock();
    ++s.stats.health_check_failures;
    --s.open;
    s.freed.notify_one();
    lock.unlock();
    e.conn.reset();
    // and round again: another idle connection, or a new one in the freed slot
  }
}

PQSCOPE_DECL std::size_t pool::size() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->open;
}

PQSCOPE_DECL std::size_t pool::idle() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->idle.size();
}

PQSCOPE_DECL pool_stats pool::stats() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->stats;
}

PQSCOPE_DECL void pool::sweep(std::vector<detail::pool_entry>& doomed) {
  detail::pool_state& s = *state_;
  const auto now = detail::pool_clock::now();
  std::size_t before = doomed.size();
  for (auto it = s.idle.begin(); it != s.idle.end();) {
    const bool idle_too_long = s.opts.idle_timeout.count() > 0 && now - it->last_used >= s.opts.idle_timeout;
    if (idle_too_long || s.expired(*it, now)) {
      doomed.push_back(std::move(*it));
      it = s.idle.erase(it);
    } else {
      ++it;
    }
  }
  const std::size_t n = doomed.size() - before;
  if (n == 0) return;
  s.open -= n;
  s.stats.closed_expired += n;
  s.freed.notify_all();  // more slots than this caller needs may have come free
}

PQSCOPE_DECL detail::pool_entry pool::open_new() {
  detail::pool_state& s = *state_;
  try {
    detail::pool_entry e;
    e.conn = std::make_unique<connection>(s.conninfo, s.conn_opts);
    e.created = e.last_used = detail::pool_clock::now();
    std::lock_guard<std::mutex> lock(s.m);
    ++s.stats.created;
    return e;
  } catch (...) {
    std::lock_guard<std::mutex> lock(s.m);
    --s.open;
    s.freed.notify_one();
    throw;
  }
}

PQSCOPE_DECL bool pool::healthy(connection& c) noexcept {
  try {
    c.execute("SELECT 1");
    return detail::pool_state::reusable(c);
  } catch (...) {
    return false;
  }
}

}  // namespace pqscope
