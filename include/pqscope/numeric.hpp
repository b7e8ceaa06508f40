#pragma once
// pqscope::numeric: PostgreSQL's numeric, kept as its exact decimal text, so that
// no value is rounded on its way through (money, quantities). Exact conversions to
// and from the integer types, a checked one to double. std::string keeps working
// for numeric columns as well.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope {

class numeric {
 public:
  numeric() = default;  // 0
  // Exact: every integer type but bool and char.
  template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool> &&
                                            !std::is_same_v<Int, char>,
                                        int> = 0>
  numeric(Int v) : text_(value_traits<Int>::to_text(v)) {}  // NOLINT: implicit, as the integer is exact
  // PostgreSQL's numeric input: an optional sign, digits with an optional decimal
  // point, an optional exponent (1.5e-3), or NaN, Infinity, -Infinity (any case;
  // inf for Infinity); spaces around it are dropped. The text is kept as written;
  // anything else is a conversion_error.
  explicit numeric(std::string_view text);

  [[nodiscard]] const std::string& str() const noexcept { return text_; }
  [[nodiscard]] bool is_nan() const noexcept;
  [[nodiscard]] bool is_infinite() const noexcept;

  // The exact integer: conversion_error if the value has a fraction, is NaN or
  // infinite, or does not fit in T (an integer type).
  template <class T>
  [[nodiscard]] T to() const {
    static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "numeric::to<T>(): T is an integer type");
    return value_traits<T>::from_text(integer_text());
  }
  // The nearest double: conversion_error if the value is beyond double's range (or
  // so small that it would read as 0). NaN and the infinities convert as such.
  [[nodiscard]] double to_double() const;

  // Equal values: 1.50 == 1.5, 0 == -0.0, NaN == NaN (as PostgreSQL compares them).
  friend bool operator==(const numeric& a, const numeric& b) { return a.canonical() == b.canonical(); }
  friend bool operator!=(const numeric& a, const numeric& b) { return !(a == b); }

 private:
  // The value as "-ddd" (digits without leading or trailing zeros) and an exponent,
  // "d...eN": equal values have equal forms.
  [[nodiscard]] std::string canonical() const;
  // The integer's digits, for value_traits<Int>::from_text; conversion_error if none.
  [[nodiscard]] std::string integer_text() const;

  std::string text_ = "0";
};

template <>
struct value_traits<numeric> {
  static constexpr unsigned oid = 1700;
  static const std::string& to_text(const numeric& n) { return n.str(); }
  static numeric from_text(std::string_view s) { return numeric(s); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/numeric.ipp>
#endif
