#pragma once
// Connection settings. No socket: copy it freely, share it between threads, and
// across fork(): each process (or thread) connects on its own.

#include <memory>
#include <string>

#include <pqscope/connection.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope {

namespace detail {
struct database_access;
}  // namespace detail

class database {
 public:
  // conninfo: "postgresql://user@host:port/db?..." or "host=... dbname=...".
  // A malformed string is a usage_error here, before any connection is tried.
  explicit database(std::string conninfo, connection_options options = {});

  [[nodiscard]] connection connect() const;
  // The conninfo with its passwords replaced by *** (connect() uses the original).
  [[nodiscard]] const std::string& conninfo() const noexcept { return settings_->shown; }
  [[nodiscard]] const connection_options& options() const noexcept { return settings_->options; }

 private:
  friend struct detail::database_access;
  struct settings {
    std::string shown;  // conninfo without its passwords (first: made before conninfo is moved in)
    std::string conninfo;
    connection_options options;
  };
  std::shared_ptr<const settings> settings_;
};

namespace detail {
// The conninfo with its password, for the front ends that connect with a database.
struct database_access {
  static const std::string& conninfo(const database& db) noexcept { return db.settings_->conninfo; }
};
}  // namespace detail

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/database.ipp>
#endif
