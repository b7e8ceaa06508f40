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

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/pool.ipp>
#endif
