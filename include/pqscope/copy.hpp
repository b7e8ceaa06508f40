#pragma once
// COPY ... FROM STDIN and COPY ... TO STDOUT, in autocommit or at any depth.
//
// The COPY sub-protocol cannot run in a libpq pipeline, so a COPY is one exchange
// of its own: whatever the scopes have queued (BEGIN, SAVEPOINTs, and in a
// batched attempt the statements) goes out first, then pipeline mode is left for
// the COPY and entered again by the next batch. The scope machine sees a COPY as
// one statement: a COPY that fails dooms its scope like any statement.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>

namespace pqscope {

namespace detail {

// COPY's text format: columns split by tabs, rows by newlines, NULL as \N, and a
// backslash, tab, newline or carriage return inside a value escaped.
inline void append_copy_field(std::string& out, std::string_view v) {
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += c;
    }
  }
}

// One field of a row read from COPY ... TO STDOUT, unescaped; nullopt for \N.
inline std::vector<std::optional<std::string>> split_copy_row(std::string_view line) {
  std::vector<std::optional<std::string>> fields;
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  std::string cur;
  bool null_field = false;
  auto end_field = [&] {
    if (null_field)
      fields.emplace_back(std::nullopt);
    else
      fields.emplace_back(std::move(cur));
    cur.clear();
    null_field = false;
  };
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\t') {
      end_field();
      continue;
    }
    if (c != '\\' || i + 1 == line.size()) {
      cur += c;
      continue;
    }
    const char e = line[++i];
    switch (e) {
      case 'N':
        null_field = cur.empty();
        if (!null_field) cur += "\\N";
        break;
      case 't': cur += '\t'; break;
      case 'n': cur += '\n'; break;
      case 'r': cur += '\r'; break;
      case 'b': cur += '\b'; break;
      case 'f': cur += '\f'; break;
      case 'v': cur += '\v'; break;
      default:
        if (e >= '0' && e <= '7') {  // \ooo: a byte in octal
          int v = e - '0';
          for (int k = 0; k < 2 && i + 1 < line.size() && line[i + 1] >= '0' && line[i + 1] <= '7'; ++k)
            v = v * 8 + (line[++i] - '0');
          cur += static_cast<char>(v);
        } else if (e == 'x' && i + 1 < line.size() && std::isxdigit(static_cast<unsigned char>(line[i + 1]))) {
          int v = 0;
          for (int k = 0; k < 2 && i + 1 < line.size() && std::isxdigit(static_cast<unsigned char>(line[i + 1])); ++k) {
            const char h = line[++i];
            v = v * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
          }
          cur += static_cast<char>(v);
        } else {
          cur += e;  // any other escaped character stands for itself
        }
    }
  }
  end_field();
  return fields;
}

// The text COPY wants for one value, or nullopt for NULL: the same conversions as parameters.
template <class T>
std::optional<std::string> copy_text(const T& v) {
  const param_list p = param_list::of(v);
  const char* const* values = p.values();
  if (values == nullptr || values[0] == nullptr) return std::nullopt;
  return std::string(values[0]);
}

}  // namespace detail

// One row read by COPY ... TO STDOUT.
class copy_row {
 public:
  copy_row() = default;
  explicit copy_row(std::vector<std::optional<std::string>> fields) : fields_(std::move(fields)) {}

  [[nodiscard]] std::size_t size() const noexcept { return fields_.size(); }
  [[nodiscard]] bool is_null(std::size_t i) const { return !at(i).has_value(); }
  // The text of field i as COPY sent it, unescaped; empty for NULL.
  [[nodiscard]] std::string_view text(std::size_t i) const {
    const auto& f = at(i);
    return f ? std::string_view(*f) : std::string_view();
  }
  // Converts field i like field::as<T>(); std::optional<T> reads NULL as empty.
  template <class T>
  [[nodiscard]] T as(std::size_t i) const {
    const auto& f = at(i);
    if constexpr (detail::is_optional<T>::value) {
      if (!f) return std::nullopt;
      return T(value_traits<typename T::value_type>::from_text(*f));
    } else {
      if (!f) throw conversion_error("COPY field " + std::to_string(i) + " is NULL; read it as std::optional<T>");
      return value_traits<T>::from_text(*f);
    }
  }

 private:
  const std::optional<std::string>& at(std::size_t i) const {
    if (i >= fields_.size())
      throw usage_error("COPY field " + std::to_string(i) + " is out of range: the row has " +
                        std::to_string(fields_.size()) + " field(s)");
    return fields_[i];
  }
  std::vector<std::optional<std::string>> fields_;
};

}  // namespace pqscope
