#pragma once
// The bodies of <pqscope/numeric.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/numeric.hpp>

#include <charconv>
#include <limits>
#include <system_error>

namespace pqscope {

namespace detail {

inline bool same_word(std::string_view a, std::string_view word) noexcept {
  if (a.size() != word.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != word[i]) return false;
  }
  return true;
}

// The parts of a finite numeric's text: its sign, its digits (the point removed)
// and the power of ten of the last one.
struct decimal_parts {
  bool negative = false;
  std::string digits;
  long long exponent = 0;
};

// false for text that is not a finite number in PostgreSQL 15's numeric syntax.
inline bool split_decimal(std::string_view s, decimal_parts& out) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) out.negative = s[i++] == '-';
  bool point = false, any = false;
  long long after_point = 0;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c >= '0' && c <= '9') {
      out.digits += c;
      any = true;
      if (point) ++after_point;
    } else if (c == '.' && !point) {
      point = true;
    } else {
      break;
    }
  }
  if (!any) return false;
  long long exp = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    // The server reads the exponent with strtol(), which skips white space first.
    while (i < s.size() && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) ++i;
    bool neg = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    const std::size_t start = i;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      if (exp > 1000000000) return false;  // far beyond numeric's range: the server refuses it too
      exp = exp * 10 + (s[i] - '0');
    }
    if (i == start) return false;
    if (neg) exp = -exp;
  }
  if (i != s.size()) return false;
  out.exponent = exp - after_point;
  return true;
}

// What the server stores: a display scale (digits after the point, as written,
// less the exponent) of at most 16,383, and a first non-zero digit at most 131,071
// places before the point (its weight in base 10,000 fits a 16-bit field).
inline bool within_numeric_range(const decimal_parts& p) noexcept {
  const long long scale = -p.exponent;  // digits after the point
  if (scale > 16383) return false;
  const std::size_t first = p.digits.find_first_not_of('0');
  if (first == std::string::npos) return true;  // zero
  const long long msd = p.exponent + static_cast<long long>(p.digits.size() - 1 - first);
  const long long weight = msd >= 0 ? msd / 4 : -((-msd + 3) / 4);
  return weight <= 32767;
}

inline std::string_view trim_spaces(std::string_view s) noexcept {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace detail

PQSCOPE_DECL numeric::numeric(std::string_view text) {
  const std::string_view s = detail::trim_spaces(text);
  std::string_view word = s;
  if (!word.empty() && (word[0] == '+' || word[0] == '-')) word.remove_prefix(1);
  detail::decimal_parts parts;
  const bool special = detail::same_word(s, "nan") || detail::same_word(word, "infinity") ||
                       detail::same_word(word, "inf");
  if (!special && !detail::split_decimal(s, parts))
    throw conversion_error("cannot read \"" + std::string(text.substr(0, 80)) + "\" as a numeric");
  if (!special && !detail::within_numeric_range(parts))
    throw conversion_error("numeric \"" + std::string(text.substr(0, 80)) +
                           "\" is beyond PostgreSQL's numeric range (131,072 digits before the point, 16,383 after)");
  text_ = std::string(s);
}

PQSCOPE_DECL bool numeric::is_nan() const noexcept { return detail::same_word(text_, "nan"); }

PQSCOPE_DECL bool numeric::is_infinite() const noexcept {
  std::string_view word = text_;
  if (!word.empty() && (word[0] == '+' || word[0] == '-')) word.remove_prefix(1);
  return detail::same_word(word, "infinity") || detail::same_word(word, "inf");
}

PQSCOPE_DECL std::string numeric::canonical() const {
  if (is_nan()) return "NaN";
  if (is_infinite()) return text_[0] == '-' ? "-Infinity" : "Infinity";
  detail::decimal_parts p;
  (void)detail::split_decimal(text_, p);
  std::size_t first = p.digits.find_first_not_of('0');
  if (first == std::string::npos) return "0";
  std::size_t last = p.digits.find_last_not_of('0');
  const long long exponent = p.exponent + static_cast<long long>(p.digits.size() - 1 - last);
  return (p.negative ? "-" : "") + p.digits.substr(first, last - first + 1) + "e" + std::to_string(exponent);
}

PQSCOPE_DECL std::string numeric::integer_text() const {
  auto refuse = [&](const char* why) -> std::string {
    throw conversion_error("numeric " + text_.substr(0, 80) + " " + why);
  };
  if (is_nan() || is_infinite()) return refuse("is not a number an integer can hold");
  detail::decimal_parts p;
  (void)detail::split_decimal(text_, p);
  const std::size_t first = p.digits.find_first_not_of('0');
  if (first == std::string::npos) return "0";
  const std::size_t last = p.digits.find_last_not_of('0');
  const long long exponent = p.exponent + static_cast<long long>(p.digits.size() - 1 - last);
  if (exponent < 0) return refuse("has a fraction; read it as numeric or double");
  const std::string digits = p.digits.substr(first, last - first + 1);
  if (static_cast<long long>(digits.size()) + exponent > 40) return refuse("does not fit in any integer type");
  return (p.negative ? "-" : "") + digits + std::string(static_cast<std::size_t>(exponent), '0');
}

PQSCOPE_DECL double numeric::to_double() const {
  if (is_nan()) return std::numeric_limits<double>::quiet_NaN();
  if (is_infinite())
    return text_[0] == '-' ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  // From its parts: the text may have spaces around or inside the exponent, which
  // the server reads and from_chars does not.
  detail::decimal_parts p;
  (void)detail::split_decimal(text_, p);
  const std::string plain = (p.negative ? "-" : "") + p.digits + "e" + std::to_string(p.exponent);
  double v = 0;
  const auto r = std::from_chars(plain.data(), plain.data() + plain.size(), v);
  if (r.ec == std::errc::result_out_of_range)
    throw conversion_error("numeric " + text_.substr(0, 80) + " is beyond the range of a double");
  if (r.ec != std::errc() || r.ptr != plain.data() + plain.size())
    throw conversion_error("cannot read numeric " + text_.substr(0, 80) + " as a double");
  return v;
}

}  // namespace pqscope
