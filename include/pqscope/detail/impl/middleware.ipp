#pragma once
// The bodies of <pqscope/detail/middleware.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/middleware.hpp>

#include <strings.h>

namespace pqscope::detail {

PQSCOPE_DECL bool opens_transaction(const std::vector<statement>& batch) {
  for (const statement& s : batch) {
    const char* p = s.sql;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '(') ++p;
    if (strncasecmp(p, "BEGIN", 5) == 0 || strncasecmp(p, "START", 5) == 0) return true;
  }
  return false;
}

PQSCOPE_DECL std::string diagnose_middleware(const std::string& pool_version, const std::string& clustering_mode) {
  // Only raw mode opens transactions of its own; in any other mode a statement
  // of the application did, and the generic message says so.
  if (pool_version.empty() || clustering_mode != "raw") return {};
  return "Pgpool-II (" + pool_version + ") opened it: in raw mode (backend_clustering_mode = 'raw') it wraps the "
         "first write of a session sent with the extended protocol in a BEGIN of its own and never ends that "
         "transaction. Run Pgpool-II in streaming_replication mode, or connect to PostgreSQL directly";
}

}  // namespace pqscope::detail
