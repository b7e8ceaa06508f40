#pragma once
// Which node of a replica set serves a read: the routing of pqscope::replica_set and
// pqscope::asio::replica_set, without I/O, shared by both. Thread-safe.
//
// Standbys are tried round robin. A standby that failed to connect (or failed under
// a read) is passed over for recheck_after; one that was behind a read's position
// is passed over, for reads that need more than it had replayed, for as long. The
// first read after that tries it again: no background thread watches the nodes.

#include <chrono>
#include <cstddef>
#include <exception>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope {

// Counters since the replica set was created.
struct replica_set_stats {
  std::uint64_t writes = 0;             // write() calls that committed
  std::uint64_t reads_on_standby = 0;   // read() calls served by a standby
  std::uint64_t reads_on_primary = 0;   // read() calls no standby could serve (fallback_to_primary)
  std::uint64_t standby_behind = 0;     // standbys found behind a read's position
  std::uint64_t standby_down = 0;       // standbys found unreachable or failing
};

namespace detail {

struct replica_router_state;

class replica_router {
 public:
  using clock = std::chrono::steady_clock;

  replica_router(std::size_t standbys, std::chrono::milliseconds recheck_after);

  [[nodiscard]] std::size_t standbys() const noexcept { return n_; }

  // The standbys to try for a read that must see `at_least`, in order.
  [[nodiscard]] std::vector<std::size_t> plan(wal_position at_least) const;
  // The standby to wait on when none could serve: of those not down, the one known
  // to have replayed the most.
  [[nodiscard]] std::optional<std::size_t> closest() const;

  void served(std::size_t i, wal_position at_least) noexcept;
  void behind(std::size_t i, wal_position replayed) noexcept;
  void down(std::size_t i) noexcept;
  void on_primary() noexcept;
  void wrote() noexcept;

  [[nodiscard]] replica_set_stats stats() const;

 private:
  std::size_t n_;
  std::shared_ptr<replica_router_state> state_;  // behind a pointer: <mutex> stays in the .ipp
};

// One read's way through a replica set, shared by both front ends, which run each
// attempt and report how it went: the standbys in the router's order; then, when
// none served, the closest one once more with the wait (without fallback, asked at
// least once: the plan may have passed over every standby as behind); then the
// primary, or replica_behind / connection_error when fallback_to_primary is off.
class read_route {
 public:
  struct attempt {
    std::size_t node;
    transaction_options options;
  };

  // `options`: the call's; `set_wait`: the set's replica_wait, for a call that sets none.
  read_route(replica_router& router, const transaction_options& options, wal_position seen,
             std::chrono::milliseconds set_wait, bool fallback, bool has_standbys);

  // The next standby to run the read on, and how; nothing once none is left.
  [[nodiscard]] std::optional<attempt> next();
  void served(std::size_t node) noexcept;
  // The attempt on `node` failed with `e`: a standby behind or down is marked, and the
  // route goes on; anything else (in_doubt_error, the function's own errors) is rethrown.
  void failed(std::size_t node, const std::exception_ptr& e);
  // No standby served: the options for the primary, or the refusal without fallback.
  [[nodiscard]] transaction_options to_primary();

 private:
  replica_router& router_;
  transaction_options options_;
  std::chrono::milliseconds wait_;
  bool fallback_, has_standbys_;
  std::vector<std::size_t> plan_;
  std::size_t at_ = 0;
  bool waited_ = false;
  std::optional<replica_behind> last_behind_;
};

}  // namespace detail
}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/replica_router.ipp>
#endif
