#pragma once
// Connecting with libpq, as both front ends do it (driver.hpp blocks, asio/link.hpp
// does not): the conninfo checked before anything is tried, the time bounds added
// to a conninfo that sets none, and what a connection says about itself after.
// Passwords never reach a message: see conninfo_redaction.hpp.

#include <chrono>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/conninfo_redaction.hpp>

namespace pqscope::detail {

// A malformed connection string is the caller's mistake: usage_error before connecting.
PQSCOPE_DECL void check_conninfo(const std::string& conninfo);

// What pqscope adds to a conninfo that sets none of these (nor their environment
// variables): a dead peer, a black-holed path or a server that accepts and never
// answers is noticed in seconds, not after the kernel's minutes (or hours, for an
// idle connection's keepalive).
struct network_default {
  const char* key;
  const char* value;
};
inline constexpr network_default network_defaults[] = {
    {"connect_timeout", "10"},      // seconds, per host and address tried (libpq has no default)
    {"keepalives_idle", "15"},      // seconds of silence before the first probe (kernel: 7200)
    {"keepalives_interval", "5"},   // seconds between probes (kernel: 75)
    {"keepalives_count", "3"},      // probes before giving up (kernel: 9)
    {"tcp_user_timeout", "30000"},  // ms that sent data may stay unacknowledged (kernel: about 15 min)
};

// connect_timeout (whole seconds, libpq's unit) for a network_timeout: rounded
// up, at least 2 (libpq treats 1 as 2).
PQSCOPE_DECL std::string connect_timeout_for(std::chrono::milliseconds t);

// Whether the conninfo, or the environment variable of `key` (PGCONNECT_TIMEOUT,
// ...), sets it.
PQSCOPE_DECL bool conninfo_sets(const std::string& conninfo, const char* key);

// The keyword and value arrays of PQconnectdbParams / PQconnectStartParams: the
// network defaults the conninfo leaves unset (connect_timeout from `timeout` when
// it is not 0), then the conninfo itself (expand_dbname: what it sets wins), then
// the fallback application name. Pinned in place: the arrays point into it.
class connect_params {
 public:
  PQSCOPE_DECL connect_params(const std::string& conninfo, const std::string& fallback_application_name,
                              std::chrono::milliseconds timeout);
  connect_params(const connect_params&) = delete;
  connect_params& operator=(const connect_params&) = delete;
  connect_params(connect_params&&) = delete;
  connect_params& operator=(connect_params&&) = delete;
  ~connect_params() = default;

  [[nodiscard]] const char* const* keys() const noexcept { return keys_.data(); }
  [[nodiscard]] const char* const* values() const noexcept { return values_.data(); }

 private:
  std::vector<std::string> owned_;  // values that must outlive the call
  std::vector<const char*> keys_, values_;
};

// "could not connect: " and libpq's message, with any password in it masked.
PQSCOPE_DECL std::string connect_failure(PGconn* c, const std::string& conninfo);

// A conninfo string that opens another session like `c` (the in-doubt resolver of
// a borrowed connection).
PQSCOPE_DECL std::string conninfo_of(PGconn* c);

// The session's application_name: the server's, else the conninfo's, else the fallback.
PQSCOPE_DECL std::string application_name_of(PGconn* c);

// The connection's connect_timeout as libpq applies it (0: none).
PQSCOPE_DECL std::chrono::milliseconds connect_timeout_of(PGconn* c);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/libpq_connect.ipp>
#endif
