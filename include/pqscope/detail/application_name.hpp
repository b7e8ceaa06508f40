#pragma once
// The default application_name, "program:user@host", so that every client is
// recognisable in pg_stat_activity, also through PgBouncer.

#include <cstddef>
#include <string>

#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// PostgreSQL keeps NAMEDATALEN - 1 = 63 bytes; cut on a UTF-8 character boundary.
PQSCOPE_DECL std::string cut_utf8(std::string s, std::size_t max_bytes);

// argv[0] from /proc (plain read(2): <fstream> would cost every includer ~36k lines).
PQSCOPE_DECL std::string program_name();

PQSCOPE_DECL std::string default_application_name();

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/application_name.ipp>
#endif
