#pragma once
// The bodies of <pqscope/detail/copy_text.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/copy_text.hpp>

namespace pqscope::detail {

PQSCOPE_DECL void copy_buffer::grow(std::size_t n) {
  std::size_t cap = cap_ == 0 ? std::size_t{1} << 16 : cap_;
  while (cap - size_ < n) cap *= 2;
  std::unique_ptr<char[]> bigger(new char[cap]);
  if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
  data_ = std::move(bigger);
  cap_ = cap;
}

PQSCOPE_DECL int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

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

PQSCOPE_DECL char copy_direction(std::string_view sql) { return copy_stream_direction(sql); }

}  // namespace pqscope::detail
