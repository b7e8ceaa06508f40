#pragma once
// The bodies of <pqscope/replica_set.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/replica_set.hpp>

namespace pqscope {

namespace detail {
// The primary's connections report where each commit ended (write() passes it on).
inline connection_options with_commit_positions(connection_options o) {
  o.commit_positions = true;
  return o;
}
}  // namespace detail

PQSCOPE_DECL replica_set::replica_set(std::string primary, std::vector<std::string> standbys,
                                      replica_set_options options)
    : options_(std::move(options)),
      primary_(std::make_unique<pool>(std::move(primary), options_.pool, detail::with_commit_positions(options_.connection))),
      router_(standbys.size(), options_.recheck_after) {
  if (options_.replica_wait.count() < 0 || options_.recheck_after.count() < 0)
    throw usage_error("replica_set_options: replica_wait and recheck_after must not be negative");
  standbys_.reserve(standbys.size());
  for (std::string& s : standbys)
    standbys_.push_back(std::make_unique<pool>(std::move(s), options_.pool, options_.connection));
}

PQSCOPE_DECL std::optional<lease> replica_set::lease_standby(std::size_t i) {
  try {
    return standbys_[i]->acquire();
  } catch (const connection_error&) {
    router_.down(i);
  } catch (const pool_timeout&) {
    // busy, not down: the next one may have room
  }
  return std::nullopt;
}

PQSCOPE_DECL lease replica_set::primary() { return primary_->acquire(); }

PQSCOPE_DECL lease replica_set::standby() {
  for (std::size_t i : router_.plan(wal_position{}))
    if (std::optional<lease> l = lease_standby(i)) return std::move(*l);
  return primary_->acquire();
}

}  // namespace pqscope
