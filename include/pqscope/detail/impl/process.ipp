#pragma once
// The bodies of <pqscope/detail/process.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/process.hpp>

#include <pthread.h>
#include <unistd.h>

#include <atomic>

namespace pqscope::detail {

PQSCOPE_DECL std::atomic<pid_t>& pid_slot() noexcept {
  static std::atomic<pid_t> pid{::getpid()};
  return pid;
}
PQSCOPE_DECL pid_t current_pid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { pid_slot().store(::getpid(), std::memory_order_relaxed); });
    pid_slot().store(::getpid(), std::memory_order_relaxed);  // in case a fork came before registration
    return true;
  }();
  (void)registered;
  return pid_slot().load(std::memory_order_relaxed);
}

}  // namespace pqscope::detail
