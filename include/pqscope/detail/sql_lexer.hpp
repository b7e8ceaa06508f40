#pragma once
// PostgreSQL's lexical rules (src/backend/parser/scan.l in PostgreSQL 15), as
// far as pqscope's checks need them: where comments, string constants, quoted
// names and dollar quotes begin and end, and what a name or a string stands for
// once decoded. The checks that read statements (transaction control, COPY, the
// pooler guard, placeholders, splitting scripts) all read tokens from here, so
// that none of them can disagree with the server about where code is.
//
// Differences from the server are all on the side of seeing more code, never
// less: a vertical tab separates tokens (PostgreSQL 15 rejects it), and numbers
// are read loosely (1x reads as 1 and x; the server rejects it or reads the same).
// The tests hold this lexer against libpg_query (PostgreSQL's own parser).

#include <cstddef>
#include <string>
#include <string_view>

#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

struct sql_token {
  enum kind_t : unsigned char {
    end,        // no more tokens
    ident,      // an unquoted name or keyword
    qident,     // "quoted name"
    uident,     // U&"quoted name" [UESCAPE 'c']
    string,     // 'standard' or N'national': backslash escapes only without standard_conforming_strings
    estring,    // E'escape string'
    ustring,    // U&'unicode string' [UESCAPE 'c']
    bitstring,  // B'0101' or X'1f': no escapes at all
    dstring,    // $tag$dollar-quoted$tag$
    param,      // $1
    number,
    symbol,     // one character of punctuation or of an operator; "::" is one
  };
  kind_t kind = end;
  std::string_view text;  // as written, prefix, quotes and any UESCAPE clause included
  std::string_view body;  // ident: the text; quoted forms: between the quotes, escapes as written
  char escape = '\\';     // uident, ustring: the Unicode escape character

  [[nodiscard]] bool is(char c) const noexcept { return kind == symbol && text.size() == 1 && text[0] == c; }
  // An unquoted word equal to `upper` (ASCII letters, compared case-insensitively).
  [[nodiscard]] bool keyword(std::string_view upper) const noexcept;
  [[nodiscard]] bool is_name() const noexcept { return kind == ident || kind == qident || kind == uident; }
  [[nodiscard]] bool is_string() const noexcept {
    return kind == string || kind == estring || kind == ustring || kind == dstring || kind == bitstring;
  }
};

class sql_lexer {
 public:
  // standard_strings: the session's standard_conforming_strings (on by default
  // since PostgreSQL 9.1); off, a backslash in a plain 'literal' escapes the quote.
  explicit sql_lexer(std::string_view sql, bool standard_strings = true) noexcept
      : s_(sql), standard_(standard_strings) {}

  // The next token; kind end at the end of the text, and also where the text
  // ends inside a comment, string or quoted name (then broken() is true: the
  // server rejects such a text whole).
  sql_token next() noexcept;
  [[nodiscard]] bool broken() const noexcept { return broken_; }
  [[nodiscard]] std::size_t offset() const noexcept { return pos_; }
  [[nodiscard]] bool standard_strings() const noexcept { return standard_; }

 private:
  void skip_blank() noexcept;
  std::size_t quoted_end(std::size_t from, char quote, bool backslash) noexcept;  // npos: unterminated
  void read_uescape(sql_token& t) noexcept;

  std::string_view s_;
  std::size_t pos_ = 0;
  bool standard_;
  bool broken_ = false;
};

// White space as the lexer skips it; a vertical tab counts (see the top).
constexpr bool sql_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// The name a name token stands for, as the server resolves it: unquoted names
// folded to lower case (ASCII letters: the server leaves other bytes alone in
// UTF-8 databases), quoted ones with "" undoubled, U&"..." decoded to UTF-8.
// False if `t` is no name or does not decode (the server rejects it then).
PQSCOPE_DECL bool token_name(const sql_token& t, std::string& out);
// Whether `t` names exactly `lower` (a lower-case ASCII name). Allocates only
// for U&"..." names.
PQSCOPE_DECL bool names(const sql_token& t, std::string_view lower);
// The value of a string constant, escapes decoded as the server decodes them
// with the given standard_conforming_strings. False if `t` is no string or an
// escape is invalid (the server rejects it then).
PQSCOPE_DECL bool token_string(const sql_token& t, bool standard_strings, std::string& out);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/sql_lexer.ipp>
#endif
