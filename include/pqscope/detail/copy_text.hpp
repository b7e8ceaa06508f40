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
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
#endif

// Splits one line of COPY TO STDOUT output (its newline included or not) into
// fields, undoing the escapes; \N reads as NULL.
PQSCOPE_DECL void parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& fields);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& fields) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  fields.clear();
  std::string cur;
  bool raw_null = false;  // the field so far is exactly \N
  std::size_t field_start = 0;
  auto end_field = [&](std::size_t at) {
    if (raw_null && at - field_start == 2)
      fields.emplace_back(std::nullopt);
    else
      fields.emplace_back(std::move(cur));
    cur.clear();
    raw_null = false;
  };
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\t') {
      end_field(i);
      field_start = i + 1;
      continue;
    }
    if (c != '\\' || i + 1 == line.size()) {
      cur += c;
      continue;
    }
    const char e = line[++i];
    switch (e) {
      case 'b': cur += '\b'; break;
      case 'f': cur += '\f'; break;
      case 'n': cur += '\n'; break;
      case 'r': cur += '\r'; break;
      case 't': cur += '\t'; break;
      case 'v': cur += '\v'; break;
      case 'N':
        if (i - 1 == field_start) raw_null = true;
        cur += 'N';  // kept in case more follows (then it is not a NULL marker)
        break;
      case 'x': {
        int v = 0, n = 0;
        while (n < 2 && i + 1 < line.size() && hex_digit(line[i + 1]) >= 0) v = v * 16 + hex_digit(line[++i]), ++n;
        if (n == 0)
          cur += 'x';
        else
          cur += static_cast<char>(v);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0', n = 1;
          while (n < 3 && i + 1 < line.size() && line[i + 1] >= '0' && line[i + 1] <= '7') v = v * 8 + (line[++i] - '0'), ++n;
          cur += static_cast<char>(v & 0xff);
        } else {
          cur += e;
        }
    }
  }
  end_field(line.size());
}
#endif

// Which way a COPY statement streams: 'i' (FROM STDIN), 'o' (TO STDOUT) or 0.
// A quick look at the words; the server's answer has the last word.
PQSCOPE_DECL char copy_direction(std::string_view sql);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL char copy_direction(std::string_view sql) { return copy_stream_direction(sql); }
#endif

}  // namespace pqscope::detail
