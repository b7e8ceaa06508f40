#pragma once
// What pqscope reads off a statement's text before sending it: transaction
// control that would go behind the scope machine's back, COPY, the $n
// placeholders, and where the statements of a script begin and end. All of it
// from the tokens of sql_lexer.hpp, which follows the server's lexical rules.
// The server-state check after every batch backs these checks up.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_lexer.hpp>

namespace pqscope::detail {

// ASCII classes, as the server's lexer uses them (the C library's are locale-aware
// calls, and this runs for every statement).
constexpr bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool ascii_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool ascii_space(char c) { return sql_space(c); }
constexpr char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

// The tokens of a text and its statements, as [first, last) token ranges: split
// at semicolons, except inside a BEGIN ATOMIC ... END function body; empty
// statements dropped. broken: the text ends inside a comment, string or quoted
// name (the server rejects all of it).
struct sql_statements {
  std::vector<sql_token> tokens;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  bool broken = false;
};
// atomic_bodies false: every semicolon ends a statement (a PL/pgSQL body).
PQSCOPE_DECL sql_statements read_statements(std::string_view sql, bool standard_strings = true,
                                            bool atomic_bodies = true);

// Non-empty (the keyword) when the text's first statement starts, commits or
// rolls back a transaction or a savepoint.
PQSCOPE_DECL std::string_view transaction_control_keyword(std::string_view sql);

// 'i' for COPY ... FROM STDIN, 'o' for COPY ... TO STDOUT (the copy sub-protocol,
// which a pipeline cannot carry), '\0' for anything else.
PQSCOPE_DECL char copy_stream_direction(std::string_view sql);
PQSCOPE_DECL bool is_copy_stream(std::string_view sql);

// A script (several statements, one simple-protocol query): the first statement
// that controls the transaction or streams COPY, as written; empty if none. The
// text is read both with and without standard_conforming_strings, so that a
// statement is found whichever the session has.
PQSCOPE_DECL std::string script_control_statement(std::string_view sql);
PQSCOPE_DECL std::string script_copy_statement(std::string_view sql);
// usage_error, naming `what`, for a script with such a statement.
PQSCOPE_DECL void check_script(std::string_view sql, const char* what);

// The highest $n placeholder in a statement: the number of parameters the server
// will want. Placeholders inside literals, quoted identifiers and comments do not
// count. Returns -1 for SQL it cannot read to the end (an unterminated quote or
// comment): the server will say what is wrong.
PQSCOPE_DECL int highest_placeholder(std::string_view s);

// The statement's placeholders must match the parameters given, both ways: the
// server's own message ("bind message supplies 1 parameters, but prepared
// statement \"\" requires 2") names a prepared statement the caller never made,
// and too many are accepted silently.
// `wanted` is highest_placeholder(sql), when the caller knows it.
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given, int wanted);
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/sql_text.ipp>
#endif
