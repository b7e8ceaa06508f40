#pragma once
// The bodies of <pqscope/transaction.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/transaction.hpp>

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace pqscope {

PQSCOPE_DECL transaction::transaction(std::shared_ptr<detail::sync_session> s, const transaction_options& options,
                                      detail::attempt_info attempt)
    : machine_(std::move(s)) {
  if (!machine_) throw usage_error("transaction on a moved-from connection");
  detail::sync_session::call guard(*machine_, "opening a scope");
  id_ = machine_->machine.open(options, attempt);
  outermost_ = machine_->machine.depth() == 1;
}

PQSCOPE_DECL std::shared_ptr<detail::sync_session> transaction::checked(std::shared_ptr<detail::sync_session> s,
                                                                        const transaction_options& options) {
  if (options.retries != 0 || options.batch || options.replica_wait.count() != 0)
    throw usage_error(std::string("transaction_options::") +
                      (options.batch ? "batch" : options.retries != 0 ? "retries" : "replica_wait") +
                      " may run a function again, which a transaction object cannot do: use pqscope::atomic or "
                      "pqscope::transactional");
  return s;
}

PQSCOPE_DECL bool transaction::end_attempt() {
  if (state_ == state::open && machine_->machine.index_of(id_)) {
    state_ = state::rolled_back;
    machine_->abandon(id_);
    if (!machine_->machine.voided()) machine_->machine.check_usable();
  }
  return machine_->machine.voided().has_value();
}

PQSCOPE_DECL void transaction::finish(bool commit) {
  const char* what = commit ? "commit()" : "rollback()";
  switch (state_) {
    case state::open: break;
    case state::committed: throw usage_error(std::string(what) + ": this scope has already been committed");
    case state::rolled_back: throw usage_error(std::string(what) + ": this scope has already been rolled back");
    case state::moved_from: throw usage_error(std::string(what) + ": this transaction object was moved from");
  }
  if (!machine_->machine.index_of(id_)) {
    state_ = state::rolled_back;
    throw usage_error(std::string(what) + ": this scope was already rolled back, because a scope enclosing it "
                                          "ended first");
  }
  bool committed = false;
  detail::sync_session::call guard(*machine_, what);
  try {
    machine_->end(id_, commit, &committed);
    state_ = commit ? state::committed : state::rolled_back;
  } catch (...) {
    // The scope has ended if it left the stack; an on_commit callback may have
    // thrown after a successful COMMIT.
    if (!machine_->machine.index_of(id_)) state_ = committed ? state::committed : state::rolled_back;
    throw;
  }
}

}  // namespace pqscope

namespace pqscope::detail {

PQSCOPE_DECL bool is_retryable(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const serialization_failure&) {
    return true;
  } catch (const deadlock_detected&) {
    return true;
  } catch (const transaction_aborted& t) {  // an inner scope caught it and carried on
    return t.first_sqlstate() == "40001" || t.first_sqlstate() == "40P01";
  } catch (...) {
    return false;
  }
}

PQSCOPE_DECL std::chrono::milliseconds replica_waiter::next(const transaction_options& o, const std::exception_ptr& e) {
  using std::chrono::milliseconds;
  if (o.replica_wait.count() <= 0 || o.at_least.empty()) return milliseconds{0};
  try {
    std::rethrow_exception(e);
  } catch (const replica_behind&) {
  } catch (...) {
    return milliseconds{0};
  }
  const auto now = std::chrono::steady_clock::now();
  if (pauses++ == 0) deadline = now + o.replica_wait;
  if (now >= deadline) return milliseconds{0};
  // 1, 2, 4, 8, then 10 ms: a standby that streams catches up within milliseconds.
  const milliseconds step{std::min(10, 1 << std::min(pauses - 1, 4))};
  const auto left = std::chrono::ceil<milliseconds>(deadline - now);
  return std::min(step, left);
}

PQSCOPE_DECL std::uint64_t jitter_bits() noexcept {
  static thread_local std::uint64_t state =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (static_cast<std::uint64_t>(::getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(&state);
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

PQSCOPE_DECL std::chrono::milliseconds retry_delay(const transaction_options& o, int attempt) {
  const auto base = std::max<std::int64_t>(o.retry_base_delay.count(), 0);
  const auto cap = std::max<std::int64_t>(o.retry_max_delay.count(), 0);
  const std::int64_t d = std::min<std::int64_t>(cap, base << std::min(attempt, 20));
  const std::uint64_t span = static_cast<std::uint64_t>(d - d / 2) + 1;  // [d/2, d]
  return std::chrono::milliseconds(d / 2 + static_cast<std::int64_t>(jitter_bits() % span));
}

PQSCOPE_DECL void pause(std::chrono::milliseconds d) noexcept {
  if (d.count() <= 0) return;
  timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>((d.count() % 1000) * 1000000)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace pqscope::detail
