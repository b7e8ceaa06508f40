#pragma once
// Which process this is: a connection opened before a fork belongs to the parent,
// and the fork check runs on every statement and scope.

#include <sys/types.h>

#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// The process id, read once and refreshed in the child by a fork handler: getpid()
// is a system call (glibc no longer caches it) and the fork check runs on every
// statement and scope.
PQSCOPE_DECL pid_t current_pid() noexcept;

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/process.ipp>
#endif
