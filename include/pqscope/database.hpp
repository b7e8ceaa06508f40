#pragma once
// Connection settings. No socket: copy it freely, share it between threads, and
// across fork(): each process (or thread) connects on its own.

#include <memory>
#include <string>

#include <pqscope/connection.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>

namespace pqscope {

class database {
 public:
  // conninfo: "postgresql://user@host:port/db?..." or "host=... dbname=...".
  // A malformed string is a usage_error here, before any connection is tried.
  explicit database(std::string conninfo) : conninfo_(std::make_shared<const std::string>(std::move(conninfo))) {
    detail::check_conninfo(*conninfo_);
  }

  [[nodiscard]] connection connect() const { return connection{*conninfo_}; }
  [[nodiscard]] const std::string& conninfo() const noexcept { return *conninfo_; }

 private:
  std::shared_ptr<const std::string> conninfo_;
};

}  // namespace pqscope
