#pragma once
// The bodies of asio/replica_set.hpp that are not templates. Header-only, like all
// of the asio front end: included at the end of asio/replica_set.hpp.

#include <pqscope/asio/replica_set.hpp>

namespace pqscope::asio {

inline replica_set_options replica_set::checked(replica_set_options o) {
  if (o.replica_wait.count() < 0 || o.recheck_after.count() < 0)
    throw usage_error("replica_set_options: replica_wait and recheck_after must not be negative");
  return o;
}

inline replica_set::replica_set(const executor_type& ex, std::string primary, std::vector<std::string> standbys,
                                replica_set_options options)
    : ex_(ex), options_(checked(std::move(options))), router_(standbys.size(), options_.recheck_after) {
  // The primary's connections report where each commit ended (async_write passes it on).
  connection_options on_primary = options_.connection;
  on_primary.commit_positions = true;
  primary_ = std::make_shared<pool>(ex_, std::move(primary), options_.pool, std::move(on_primary));
  standbys_.reserve(standbys.size());
  for (std::string& s : standbys)
    standbys_.push_back(std::make_shared<pool>(ex_, std::move(s), options_.pool, options_.connection));
}

inline boost::asio::awaitable<lease> replica_set::any_standby() {
  for (std::size_t i : router_.plan(wal_position{}))
    if (std::optional<lease> l = co_await lease_standby<executor_type>(i)) co_return std::move(*l);
  co_return co_await primary_->async_acquire(boost::asio::use_awaitable);
}

inline std::vector<std::shared_ptr<pool>> replica_set::pools() const {
  std::vector<std::shared_ptr<pool>> all{primary_};
  all.insert(all.end(), standbys_.begin(), standbys_.end());
  return all;
}

inline void replica_set::close() noexcept {
  primary_->close();
  for (const std::shared_ptr<pool>& p : standbys_) p->close();
}

inline boost::asio::awaitable<void> replica_set::shutdown_all(std::vector<std::shared_ptr<pool>> pools) {
  // Every pool stops at once; then the waits overlap, and the last one to drain ends it.
  for (const std::shared_ptr<pool>& p : pools) p->close();
  for (const std::shared_ptr<pool>& p : pools) co_await p->async_shutdown(boost::asio::use_awaitable);
}

}  // namespace pqscope::asio
