#pragma once
// The two edits of the scope machine's queue that every body file makes: drop
// what a predicate picks, or only what trails the last user statement. Templates
// (their predicates are lambdas), included by the scope_machine_*.ipp files.

#include <algorithm>
#include <cstddef>

#include <pqscope/detail/scope_machine.hpp>

namespace pqscope::detail {

template <class Pred>
void scope_machine::drop_queued(Pred pred) {
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), pred), queue_.end());
}

template <class Pred>
void scope_machine::trim_tail(Pred pred) {
  std::size_t last_user = 0;
  for (std::size_t k = 0; k < queue_.size(); ++k)
    if (queue_[k].k == item::user) last_user = k + 1;
  queue_.erase(std::remove_if(queue_.begin() + static_cast<std::ptrdiff_t>(last_user), queue_.end(), pred),
               queue_.end());
}

}  // namespace pqscope::detail
