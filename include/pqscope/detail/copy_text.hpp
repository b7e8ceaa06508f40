#pragma once
// COPY's text format: one row per line, fields separated by tabs, \N for NULL,
// and backslash escapes for the characters that would break the line up.

#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_text.hpp>

namespace pqscope::detail {

// The rows a copy_writer gathers before sending them: appends write in place,
// without a library call per field or per separator.
class copy_buffer {
 public:
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::string_view view() const noexcept { return {data_.get(), size_}; }
  void clear() noexcept { size_ = 0; }
  void truncate(std::size_t n) noexcept { size_ = n < size_ ? n : size_; }
  // Room for n more bytes at the end; write them, then commit() where they end.
  char* room(std::size_t n) {
    if (cap_ - size_ < n) grow(n);
    return data_.get() + size_;
  }
  void commit(const char* end) noexcept { size_ = static_cast<std::size_t>(end - data_.get()); }
  void put(char c) { *room(1) = c, ++size_; }
  void append(const char* s, std::size_t n) {
    std::memcpy(room(n), s, n);
    size_ += n;
  }
  // One field's text, escaped for COPY's text format.
  void append_escaped(std::string_view text) {
    char* p = room(2 * text.size());
    for (const char c : text) {
      switch (c) {
        case '\\': *p++ = '\\'; *p++ = '\\'; break;
        case '\n': *p++ = '\\'; *p++ = 'n'; break;
        case '\r': *p++ = '\\'; *p++ = 'r'; break;
        case '\t': *p++ = '\\'; *p++ = 't'; break;
        default: *p++ = c;
      }
    }
    commit(p);
  }

 private:
  PQSCOPE_DECL void grow(std::size_t n);
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0, cap_ = 0;
};

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
