#pragma once
// The bodies of <pqscope/detail/replica_router.hpp>.

#include <pqscope/detail/replica_router.hpp>

#include <mutex>

namespace pqscope::detail {

struct replica_router_state {
  struct node {
    replica_router::clock::time_point down_until{};
    replica_router::clock::time_point behind_until{};
    wal_position replayed;  // the most this standby is known to have replayed
  };
  std::chrono::milliseconds recheck_after{0};
  mutable std::mutex m;
  std::vector<node> nodes;
  std::size_t next = 0;  // round robin
  replica_set_stats stats;
};

PQSCOPE_DECL replica_router::replica_router(std::size_t standbys, std::chrono::milliseconds recheck_after)
    : n_(standbys), state_(std::make_shared<replica_router_state>()) {
  state_->recheck_after = recheck_after;
  state_->nodes.resize(standbys);
}

PQSCOPE_DECL std::vector<std::size_t> replica_router::plan(wal_position at_least) const {
  std::vector<std::size_t> order;
  if (n_ == 0) return order;
  const auto now = clock::now();
  std::lock_guard<std::mutex> lock(state_->m);
  const std::size_t first = state_->next++ % n_;
  for (std::size_t k = 0; k < n_; ++k) {
    const std::size_t i = (first + k) % n_;
    const auto& nd = state_->nodes[i];
    if (now < nd.down_until) continue;
    if (now < nd.behind_until && nd.replayed < at_least) continue;
    order.push_back(i);
  }
  return order;
}

PQSCOPE_DECL std::optional<std::size_t> replica_router::closest() const {
  const auto now = clock::now();
  std::lock_guard<std::mutex> lock(state_->m);
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < n_; ++i) {
    const auto& nd = state_->nodes[i];
    if (now < nd.down_until) continue;
    if (!best || state_->nodes[*best].replayed < nd.replayed) best = i;
  }
  return best;
}

PQSCOPE_DECL void replica_router::served(std::size_t i, wal_position at_least) noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  auto& nd = state_->nodes[i];
  nd.replayed.merge(at_least);
  nd.down_until = nd.behind_until = clock::time_point{};
  ++state_->stats.reads_on_standby;
}

PQSCOPE_DECL void replica_router::behind(std::size_t i, wal_position replayed) noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  auto& nd = state_->nodes[i];
  nd.replayed.merge(replayed);
  nd.behind_until = clock::now() + state_->recheck_after;
  ++state_->stats.standby_behind;
}

PQSCOPE_DECL void replica_router::down(std::size_t i) noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  state_->nodes[i].down_until = clock::now() + state_->recheck_after;
  ++state_->stats.standby_down;
}

PQSCOPE_DECL void replica_router::on_primary() noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  ++state_->stats.reads_on_primary;
}

PQSCOPE_DECL void replica_router::wrote() noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  ++state_->stats.writes;
}

PQSCOPE_DECL replica_set_stats replica_router::stats() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->stats;
}

}  // namespace pqscope::detail
