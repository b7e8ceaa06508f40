#pragma once
// A bounded, thread-safe pool of connections to PostgreSQL itself.
//
// Behind PgBouncer keep pqscope::database (the null pool): PgBouncer already
// pools, and a second pool in front of it only pins server connections. Talking
// to PostgreSQL directly, a pool saves the connect (a fork of a backend) per unit
// of work and caps the backends one process can hold.
//
//   pqscope::pool p{"host=db dbname=app", {.max_size = 8}};   // C++20 designated init
//   {
//     auto c = p.acquire();              // waits up to acquire_timeout
//     pqscope::atomic(*c, [&] { ... });
//   }                                    // back to the pool, if clean
//
// A connection goes back to the pool only when nothing of the lease's work can
// reach the next one: its session is idle (no transaction, not even a failed one),
// no pqscope scope is open on it, and it was opened by this process. Anything else
// is closed, which makes the server roll back. Session state set outside a
// transaction (SET, LISTEN, temporary tables, advisory locks) does travel with the
// connection, as in any pool: prefer set_local() and scopes.
//
// No background thread: idle and expired connections are closed when the pool
// next looks at them (acquire, return).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <pqscope/connection.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/scope_machine.hpp>

// What only the function bodies need (PQSCOPE_SEPARATE_COMPILATION: only the
// implementation unit sees them).
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
#include <libpq-fe.h>
#include <sys/types.h>

#include <condition_variable>
#include <mutex>
#endif

namespace pqscope {

// acquire() waited acquire_timeout and no connection came free.
class pool_timeout : public error {
 public:
  using error::error;
};

// Durations must not be negative.
struct pool_options {
  // Connections open at once, leased or idle: the cap on this pool's backends.
  std::size_t max_size = 10;
  // How long acquire() waits for a free connection. The connect itself is bounded
  // by connect_timeout in the conninfo, not by this.
  std::chrono::milliseconds acquire_timeout{5000};
  // An idle connection unused this long is closed when next seen (0: never).
  std::chrono::milliseconds idle_timeout{60000};
  // A connection this old is closed instead of reused (0: never), so that server
  // side memory and settings changes do not live forever.
  std::chrono::milliseconds max_lifetime{1800000};
  // A connection idle longer than this is checked with a round trip ("SELECT 1")
  // before it is leased, since a server restart or an idle-session timeout kills
  // sessions silently; 0 = always.
  std::chrono::milliseconds health_check_after{1000};
};

// Counters since the pool was created.
struct pool_stats {
  std::uint64_t created = 0;                // connections opened
  std::uint64_t reused = 0;                 // leases served by an idle connection
  std::uint64_t closed_dirty = 0;           // returned mid-transaction, with scopes open, broken or from another process
  std::uint64_t closed_expired = 0;         // past max_lifetime, or idle past idle_timeout
  std::uint64_t health_check_failures = 0;  // idle connections found dead before a lease
  std::uint64_t timeouts = 0;               // acquire() calls that threw pool_timeout
};

namespace detail {

using pool_clock = std::chrono::steady_clock;

struct pool_entry {
  // On the heap so that a connection& taken from a lease survives moving the lease.
  std::unique_ptr<connection> conn;
  pool_clock::time_point created;
  pool_clock::time_point last_used;
};

// Everything a lease needs after the pool object is gone: leases share it.
// Defined with the implementation: only it needs <mutex> and <condition_variable>.
struct pool_state;

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

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
#endif

}  // namespace detail

class pool;

// One connection borrowed from a pool, returned when the lease is destroyed or
// released. Move-only; use it from one thread at a time, like a connection.
class lease {
 public:
  lease(lease&& other) noexcept;
  lease& operator=(lease&& other) noexcept;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  ~lease() { give_back(); }

  // usage_error once released or moved from.
  [[nodiscard]] connection& get();
  [[nodiscard]] connection& operator*() { return get(); }
  [[nodiscard]] connection* operator->() { return &get(); }

  // Returns the connection now rather than at the end of the lease's scope; using
  // the lease afterwards is a usage_error, and so is releasing it twice.
  void release();

 private:
  friend class pool;
  enum class status { active, released, moved_from };

  lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry);

  void check() const;

  void give_back() noexcept;

  std::shared_ptr<detail::pool_state> state_;
  detail::pool_entry entry_;  // conn == nullptr: none (an optional here trips g++'s maybe-uninitialized)
  status status_ = status::active;
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

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
#endif

class pool {
 public:
  // No connection is opened here; a malformed conninfo is a usage_error at once.
  explicit pool(std::string conninfo, pool_options options = {}, connection_options connection = {});
  // Leases point to the pool's state, not to the object, but a pool that moved
  // would still surprise whoever holds a reference to it.
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;
  // Closes the idle connections. Leases still out keep working; their connections
  // are closed when they end.
  ~pool();

  // An idle connection (checked first if it sat longer than health_check_after),
  // or a new one while fewer than max_size are open; otherwise waits up to
  // acquire_timeout and throws pool_timeout. connection_error if connecting fails.
  [[nodiscard]] lease acquire();

  // Connections open or being opened, leased or idle.
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::size_t idle() const;
  [[nodiscard]] std::size_t max_size() const noexcept;
  [[nodiscard]] pool_stats stats() const;

 private:
  // Under the lock: moves idle connections past idle_timeout or max_lifetime to `doomed`.
  void sweep(std::vector<detail::pool_entry>& doomed);

  // Called with a slot reserved; gives it back if the connect fails.
  detail::pool_entry open_new();

  static bool healthy(connection& c) noexcept;

  std::shared_ptr<detail::pool_state> state_;
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

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
  const auto deadline = detail::pool_clock::now() + s.opts.acquire_timeout;
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
#endif

}  // namespace pqscope
