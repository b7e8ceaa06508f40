#pragma once
// The bodies of <pqscope/detail/replica_router.hpp>.

#include <pqscope/detail/replica_router.hpp>

#include <algorithm>
#include <mutex>
#include <utility>

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

PQSCOPE_DECL read_route::read_route(replica_router& router, const transaction_options& options, wal_position seen,
                                    std::chrono::milliseconds set_wait, bool fallback, bool has_standbys)
    : router_(router),
      options_(options),
      wait_(options_.replica_wait.count() != 0 ? options_.replica_wait : set_wait),
      fallback_(fallback),
      has_standbys_(has_standbys) {
  if (options_.replica_wait.count() < 0) throw usage_error("transaction_options::replica_wait must not be negative");
  options_.read_only = true;
  options_.at_least.merge(seen);
  options_.replica_wait = std::chrono::milliseconds{0};  // the route waits, on the closest standby only
  plan_ = router_.plan(options_.at_least);
}

PQSCOPE_DECL std::optional<read_route::attempt> read_route::next() {
  if (at_ < plan_.size()) return attempt{plan_[at_++], options_};
  if (waited_) return std::nullopt;
  waited_ = true;
  if (options_.at_least.empty() || (wait_.count() <= 0 && fallback_)) return std::nullopt;
  const std::optional<std::size_t> i = router_.closest();
  if (!i || (wait_.count() <= 0 && std::find(plan_.begin(), plan_.end(), *i) != plan_.end())) return std::nullopt;
  attempt a{*i, options_};
  a.options.replica_wait = wait_;
  return a;
}

PQSCOPE_DECL void read_route::served(std::size_t node) noexcept { router_.served(node, options_.at_least); }

PQSCOPE_DECL void read_route::failed(std::size_t node, const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const replica_behind& b) {
    router_.behind(node, b.replayed());
    last_behind_ = b;
  } catch (const in_doubt_error&) {
    throw;  // a read-only COMMIT cannot be in doubt; never hide one
  } catch (const connection_error&) {
    router_.down(node);  // its work was read-only: run it elsewhere
  }
}

PQSCOPE_DECL transaction_options read_route::to_primary() {
  if (!fallback_ && has_standbys_) {
    if (last_behind_) throw replica_behind(last_behind_->replayed(), last_behind_->required());
    throw connection_error("replica_set: no standby could serve the read, and fallback_to_primary is off");
  }
  router_.on_primary();
  transaction_options o = options_;
  o.at_least = wal_position{};  // the primary has every commit it acknowledged
  return o;
}

}  // namespace pqscope::detail
