#pragma once
// Passwords never reach a message pqscope makes, nor a conninfo() accessor.
//
// libpq quotes the part of a malformed conninfo it could not read (a password with a
// bad %-escape; a whole URI with an unclosed IPv6 bracket), so every message made
// while checking a conninfo or connecting with it goes through redact(), and the
// conninfo() accessors return redacted_conninfo(). Both front ends (the blocking
// driver and the Asio link) call these; nothing else builds such messages.
//
// The scan is lenient on purpose: the strings whose errors quote a password are the
// malformed ones, which PQconninfoParse refuses to take apart for us.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// One secret value in a conninfo: where it is written (quotes and escapes included)
// and the texts a message might show of it.
struct conninfo_secret {
  std::size_t begin = 0, end = 0;
  std::vector<std::string> forms;  // as written, as libpq reads it, and pieces of it
};

PQSCOPE_DECL std::vector<conninfo_secret> conninfo_secrets(std::string_view conninfo);
// The conninfo with each password (password, sslpassword) replaced by ***; the same
// string when it has none.
PQSCOPE_DECL std::string redacted_conninfo(std::string_view conninfo);
// The message with the conninfo (whole, as libpq quotes a bad URI) and every form of
// its passwords replaced. A short password may blank out more than itself: that is
// the price of never showing it.
PQSCOPE_DECL std::string redact(std::string message, std::string_view conninfo);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/conninfo_redaction.ipp>
#endif
