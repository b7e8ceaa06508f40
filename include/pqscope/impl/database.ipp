#pragma once
// The bodies of <pqscope/database.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/database.hpp>

namespace pqscope {

PQSCOPE_DECL database::database(std::string conninfo, connection_options options)
    : settings_(std::make_shared<const settings>(
          settings{detail::redacted_conninfo(conninfo), std::move(conninfo), std::move(options)})) {
  detail::check_conninfo(settings_->conninfo);
}

PQSCOPE_DECL connection database::connect() const { return connection{settings_->conninfo, settings_->options}; }

}  // namespace pqscope
