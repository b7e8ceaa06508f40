#pragma once
// COPY rows in the text format, one at a time, without I/O: what write_row() does
// with values and what next<Ts...>() does with a line. Shared by the blocking COPY
// (copy.hpp) and the asio one (asio/copy.hpp), which only differ in how the bytes
// move.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/copy_text.hpp>

namespace pqscope::detail {

// Rows into COPY's text format, gathered in a buffer the front end sends.
class copy_row_encoder {
 public:
  // One row: one value per column, converted as parameters are; std::nullopt or
  // nullptr is NULL. A value that does not convert leaves no part of its row.
  template <class... Ts>
  void write_row(const Ts&... values) {
    const std::size_t start = buf_.size();
    try {
      std::size_t column = 0;
      ((column > 0 ? buf_.put('\t') : void(), put_field(values, column), ++column), ...);
    } catch (...) {
      buf_.truncate(start);
      throw;
    }
    buf_.put('\n');
  }
  void write_raw(std::string_view text) { buf_.append(text.data(), text.size()); }

  [[nodiscard]] copy_buffer& buffer() noexcept { return buf_; }
  [[nodiscard]] const copy_buffer& buffer() const noexcept { return buf_; }

 private:
  // One value, converted as a parameter is, straight into the row: numbers need no
  // escaping, strings are escaped from where they are, the rest through to_text().
  template <class T>
  void put_field(const T& v, std::size_t column) {
    using U = std::decay_t<T>;
    // A char buffer is read up to its end, as a parameter is; so is any other type
    // without a form of its own here.
    constexpr bool direct = !std::is_array_v<T> &&
                            (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t> ||
                             is_optional<U>::value || is_chars_number<U>::value || has_write_unescaped<U>::value ||
                             std::is_same_v<U, const char*> || std::is_same_v<U, char*> ||
                             std::is_same_v<U, std::string> || std::is_same_v<U, std::string_view>);
    if constexpr (!direct) {
      put_converted(v);
    } else if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t>) {
      buf_.append("\\N", 2);
    } else if constexpr (is_optional<U>::value) {
      if (v)
        put_field(*v, column);
      else
        buf_.append("\\N", 2);
    } else if constexpr (is_chars_number<U>::value) {
      char* at = buf_.room(24);
      buf_.commit(std::to_chars(at, at + 24, v).ptr);
    } else if constexpr (has_write_unescaped<U>::value) {
      buf_.commit(value_traits<U>::write_unescaped(buf_.room(value_traits<U>::unescaped_size), v));
    } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
      if (v == nullptr)
        buf_.append("\\N", 2);
      else
        put_text(std::string_view(v), column);
    } else {
      put_text(v, column);  // std::string, std::string_view
    }
  }
  // Through value_traits<T>::to_text, as a parameter is.
  template <class T>
  void put_converted(const T& v) {
    params_.assign(v);
    if (params_.values()[0] == nullptr)
      buf_.append("\\N", 2);
    else
      buf_.append_escaped(params_.values()[0]);
  }
  PQSCOPE_DECL void put_text(std::string_view text, std::size_t column);

  copy_buffer buf_;
  param_list params_;
};

// Lines of COPY TO STDOUT into fields, and fields into typed values.
class copy_row_decoder {
 public:
  // Line `number` (from 1) of the COPY, as Ts... (std::optional<T> for a column
  // that may be NULL). The values own their text: the next line reuses the fields.
  template <class... Ts>
  std::tuple<Ts...> row(std::string_view line, std::uint64_t number) {
    static_assert(!(is_text_view<Ts>::value || ...),
                  "pqscope: copy_reader::next<std::string_view>() would point into a buffer the next row "
                  "overwrites; read std::string (or std::optional<std::string>)");
    number_ = number;
    parse_copy_row(line, fields_);
    if (fields_.size() != sizeof...(Ts))
      throw conversion_error("COPY row " + std::to_string(number_) + " has " + std::to_string(fields_.size()) +
                             " column(s), but next<...>() asks for " + std::to_string(sizeof...(Ts)));
    return convert<Ts...>(std::index_sequence_for<Ts...>{});
  }

 private:
  template <class T>
  T field_as(std::size_t i) const {
    const std::optional<std::string>& f = fields_[i];
    if constexpr (is_optional<T>::value) {
      if (!f) return std::nullopt;
      return T(value_traits<typename T::value_type>::from_text(*f));
    } else {
      if (!f)
        throw conversion_error("column " + std::to_string(i) + " of COPY row " + std::to_string(number_) +
                               " is NULL; read it as std::optional<T>");
      return value_traits<T>::from_text(*f);
    }
  }
  template <class... Ts, std::size_t... I>
  std::tuple<Ts...> convert(std::index_sequence<I...>) const {
    return std::tuple<Ts...>(field_as<Ts>(I)...);
  }

  std::vector<std::optional<std::string>> fields_;
  std::uint64_t number_ = 0;
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/copy_rows.ipp>
#endif
