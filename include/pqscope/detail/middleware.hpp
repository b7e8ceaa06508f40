#pragma once
// Naming a middleware that changes what a session does. The one known case:
// Pgpool-II in raw mode wraps the first write of a session sent with the extended
// protocol in a BEGIN of its own and never ends it. A front end sees a batch that
// opens no transaction end inside one; it then sends the probes below, each alone
// in the simple protocol (a middleware's own commands are not understood in the
// extended one), and reads the answers with diagnose_middleware(). Only asked on
// that anomaly (plain PostgreSQL never does it), so the probes cost nothing in the
// common case; the transaction is rolled back after, whatever they say.

#include <string>
#include <vector>

#include <pqscope/reply.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// Whether a statement of the batch opens a transaction itself (BEGIN, START TRANSACTION).
[[nodiscard]] PQSCOPE_DECL bool opens_transaction(const std::vector<statement>& batch);

// Sent in this order; the second only when the first answered with a value.
inline constexpr const char* middleware_probes[] = {"SHOW pool_version", "PGPOOL SHOW backend_clustering_mode"};

// The diagnostic from the probes' first values ("" where a probe failed or was not
// sent): what opened the transaction, or "" when that is not known.
[[nodiscard]] PQSCOPE_DECL std::string diagnose_middleware(const std::string& pool_version,
                                                           const std::string& clustering_mode);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/middleware.ipp>
#endif
