#pragma once
// COPY's text format: one row per line, fields separated by tabs, \N for NULL,
// and backslash escapes for the characters that would break the line up.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_text.hpp>

namespace pqscope::detail {

// Appends one field's text, escaped.
inline void append_copy_field(std::string& out, std::string_view text) {
  std::size_t plain = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const char* esc = c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : nullptr;
    if (esc == nullptr) continue;
    out.append(text.data() + plain, i - plain);
    out.append(esc, 2);
    plain = i + 1;
  }
  out.append(text.data() + plain, text.size() - plain);
}

PQSCOPE_DECL int hex_digit(char c);

// Splits one line of COPY TO STDOUT output (its newline included or not) into
// fields, undoing the escapes; \N reads as NULL.
PQSCOPE_DECL void parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& fields);

// Which way a COPY statement streams: 'i' (FROM STDIN), 'o' (TO STDOUT) or 0.
// A quick look at the words; the server's answer has the last word.
PQSCOPE_DECL char copy_direction(std::string_view sql);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/copy_text.ipp>
#endif
