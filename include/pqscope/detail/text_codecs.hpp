#pragma once
// PostgreSQL text formats that need more than one line: calendar arithmetic and
// ISO timestamps, bytea (hex and escape), and one-dimensional array literals.
// No value_traits here; params.hpp builds the traits on these functions.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope {
namespace detail {

// The value as it goes into an error message: quoted, and cut short if long.
PQSCOPE_DECL std::string quote_value(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string quote_value(std::string_view s) {
  constexpr std::size_t limit = 80;
  if (s.size() <= limit) return "\"" + std::string(s) + "\"";
  return "\"" + std::string(s.substr(0, limit)) + "\"... (" + std::to_string(s.size()) + " bytes)";
}
#endif

// ---- calendar: the proleptic Gregorian calendar PostgreSQL uses, astronomical years (0 is 1 BC)

constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

constexpr bool is_leap_year(std::int64_t y) noexcept { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

constexpr unsigned days_in_month(std::int64_t y, unsigned m) noexcept {
  constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

// Days from 1970-01-01 to y-m-d (negative before). m and d must be valid.
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  // Leap years in [0, y): year 0 is one, and floor division counts the rest on either side of it.
  const std::int64_t leaps = floor_div(y - 1, 4) - floor_div(y - 1, 100) + floor_div(y - 1, 400) + 1;
  constexpr unsigned before_month[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  constexpr std::int64_t year_0_to_1970 = 719528;
  return 365 * y + leaps + before_month[m - 1] + (m > 2 && is_leap_year(y) ? 1 : 0) + d - 1 - year_0_to_1970;
}

struct civil_date {
  std::int64_t year;
  unsigned month, day;
};

constexpr civil_date civil_from_days(std::int64_t days) noexcept {
  // 146097 days make 400 years; the estimate is off by a year at most, then corrected.
  const std::int64_t cycles = floor_div(days, 146097);
  std::int64_t y = 1970 + cycles * 400 + (days - cycles * 146097) * 400 / 146097;
  while (days_from_civil(y, 1, 1) > days) --y;
  while (days_from_civil(y + 1, 1, 1) <= days) ++y;
  auto rest = static_cast<unsigned>(days - days_from_civil(y, 1, 1));
  unsigned m = 1;
  while (rest >= days_in_month(y, m)) rest -= days_in_month(y, m++);
  return {y, m, rest + 1};
}

constexpr std::int64_t micros_per_second = 1'000'000;
constexpr std::int64_t micros_per_day = 86'400 * micros_per_second;
// PostgreSQL's earliest timestamp, 4714-11-24 BC 00:00 UTC; its latest (294276 AD) lies
// beyond what int64 microseconds since 1970 can hold, so no time_point reaches it.
constexpr std::int64_t min_timestamp_micros = days_from_civil(-4713, 11, 24) * micros_per_day;
// PostgreSQL's date range: 4714-11-24 BC to 5874897-12-31.
constexpr std::int64_t min_date_days = days_from_civil(-4713, 11, 24);
constexpr std::int64_t max_date_days = days_from_civil(5874897, 12, 31);

PQSCOPE_DECL void append_number(std::string& out, std::uint64_t v, int width);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void append_number(std::string& out, std::uint64_t v, int width) {
  char buf[24];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = n; i < width; ++i) out += '0';
  while (n > 0) out += buf[--n];
}
#endif

// "YYYY-MM-DD" with " BC" left to the caller: years before 1 AD are written as PostgreSQL
// writes them, 1 - y with the suffix.
PQSCOPE_DECL void append_civil_date(std::string& out, const civil_date& c);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void append_civil_date(std::string& out, const civil_date& c) {
  append_number(out, static_cast<std::uint64_t>(c.year > 0 ? c.year : 1 - c.year), 4);
  out += '-';
  append_number(out, c.month, 2);
  out += '-';
  append_number(out, c.day, 2);
}
#endif

// ISO 8601 in UTC with an explicit offset, so the server reads the same instant
// whatever its DateStyle order and TimeZone: "2024-01-02 03:04:05.123456+00".
PQSCOPE_DECL std::string format_timestamp(std::int64_t micros);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string format_timestamp(std::int64_t micros) {
  std::int64_t days = micros / micros_per_day;
  std::int64_t in_day = micros % micros_per_day;
  if (in_day < 0) {
    in_day += micros_per_day;
    --days;
  }
  const civil_date c = civil_from_days(days);
  std::string out;
  out.reserve(40);
  append_civil_date(out, c);
  const auto secs = static_cast<std::uint64_t>(in_day / micros_per_second);
  const auto frac = static_cast<std::uint64_t>(in_day % micros_per_second);
  out += ' ';
  append_number(out, secs / 3600, 2);
  out += ':';
  append_number(out, secs / 60 % 60, 2);
  out += ':';
  append_number(out, secs % 60, 2);
  if (frac != 0) {
    out += '.';
    append_number(out, frac, 6);
  }
  out += "+00";
  if (c.year <= 0) out += " BC";
  return out;
}
#endif

PQSCOPE_DECL std::string format_date(const civil_date& c);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string format_date(const civil_date& c) {
  std::string out;
  append_civil_date(out, c);
  if (c.year <= 0) out += " BC";
  return out;
}
#endif

// Reads fixed-format text left to right; every step says whether it matched.
class text_cursor {
 public:
  explicit text_cursor(std::string_view s) noexcept : s_(s) {}
  [[nodiscard]] bool done() const noexcept { return i_ == s_.size(); }
  [[nodiscard]] bool peek(char c) const noexcept { return i_ < s_.size() && s_[i_] == c; }
  [[nodiscard]] bool peek_digit() const noexcept { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }
  bool eat(char c) noexcept {
    if (!peek(c)) return false;
    ++i_;
    return true;
  }
  bool eat(std::string_view word) noexcept {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  // Between min and max decimal digits; `count` tells how many were read.
  bool digits(int min, int max, std::int64_t& out, int* count = nullptr) noexcept {
    int n = 0;
    out = 0;
    while (n < max && i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      out = out * 10 + (s_[i_++] - '0');
      ++n;
    }
    if (count != nullptr) *count = n;
    return n >= min;
  }

 private:
  std::string_view s_;
  std::size_t i_ = 0;
};

PQSCOPE_DECL std::string iso_format_hint(const char* format);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string iso_format_hint(const char* format) {
  return std::string("pqscope reads PostgreSQL's ISO output (") + format +
         "), which the server writes only with DateStyle ISO (the default, 'ISO, MDY'; SET DateStyle = 'ISO')";
}
#endif

// "YYYY-MM-DD" at the cursor, years of four or more digits; checked for a real day.
PQSCOPE_DECL bool read_civil_date(text_cursor& c, civil_date& out);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool read_civil_date(text_cursor& c, civil_date& out) {
  std::int64_t y = 0, m = 0, d = 0;
  if (!c.digits(4, 9, y) || !c.eat('-') || !c.digits(2, 2, m) || !c.eat('-') || !c.digits(2, 2, d)) return false;
  if (m < 1 || m > 12 || d < 1) return false;
  out = {y, static_cast<unsigned>(m), static_cast<unsigned>(d)};
  return true;
}
#endif

// " BC" turns the year PostgreSQL wrote into an astronomical one; then the day is checked.
PQSCOPE_DECL bool finish_civil_date(text_cursor& c, civil_date& out);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool finish_civil_date(text_cursor& c, civil_date& out) {
  if (c.eat(" BC")) {
    if (out.year == 0) return false;
    out.year = 1 - out.year;
  }
  return out.day <= days_in_month(out.year, out.month);
}
#endif

PQSCOPE_DECL civil_date parse_date(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL civil_date parse_date(std::string_view s) {
  text_cursor c{s};
  civil_date d{};
  if (s == "infinity" || s == "-infinity")
    throw conversion_error("cannot read date " + quote_value(s) +
                           " as pqscope::date: an infinite date has no calendar day; read it as std::string");
  if (!read_civil_date(c, d) || !finish_civil_date(c, d) || !c.done())
    throw conversion_error("cannot read " + quote_value(s) + " as a date (pqscope::date): " + iso_format_hint("YYYY-MM-DD[ BC]"));
  return d;
}
#endif

struct timestamp_text {
  int infinite;         // 0 finite, +1 'infinity', -1 '-infinity'
  std::int64_t micros;  // since 1970-01-01 00:00 UTC, when finite
};

// Timestamps as PostgreSQL writes them with DateStyle ISO: timestamptz with any UTC
// offset (+05:30, -08, +00:09:21 for local mean time), timestamp without one (read as UTC),
// 0 to 6 fractional digits, years before 1 AD with " BC".
PQSCOPE_DECL timestamp_text parse_timestamp(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL timestamp_text parse_timestamp(std::string_view s) {
  if (s == "infinity") return {1, 0};
  if (s == "-infinity") return {-1, 0};
  text_cursor c{s};
  civil_date d{};
  std::int64_t hh = 0, mi = 0, ss = 0, frac = 0;
  int frac_digits = 0;
  bool ok = read_civil_date(c, d) && (c.eat(' ') || c.eat('T')) && c.digits(2, 2, hh) && c.eat(':') &&
            c.digits(2, 2, mi) && c.eat(':') && c.digits(2, 2, ss);
  if (ok && c.eat('.')) ok = c.digits(1, 6, frac, &frac_digits) && !c.peek_digit();  // 7+ digits: refused
  for (int i = frac_digits; i < 6; ++i) frac *= 10;
  std::int64_t offset = 0;  // seconds east of UTC
  if (ok && (c.peek('+') || c.peek('-'))) {
    const bool west = c.eat('-');
    if (!west) c.eat('+');
    std::int64_t oh = 0, om = 0, os = 0;
    ok = c.digits(2, 2, oh) && (!c.eat(':') || (c.digits(2, 2, om) && (!c.eat(':') || c.digits(2, 2, os))));
    ok = ok && om < 60 && os < 60;
    offset = (oh * 3600 + om * 60 + os) * (west ? -1 : 1);
  }
  ok = ok && finish_civil_date(c, d) && c.done() && hh < 24 && mi < 60 && ss < 60;
  if (!ok) throw conversion_error("cannot read " + quote_value(s) + " as a timestamp: " +
                           iso_format_hint("YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]"));
  const std::int64_t in_day = ((hh * 60 + mi) * 60 + ss) * micros_per_second + frac;
  std::int64_t micros = 0;
  if (__builtin_mul_overflow(days_from_civil(d.year, d.month, d.day), micros_per_day, &micros) ||
      __builtin_add_overflow(micros, in_day - offset * micros_per_second, &micros))
    throw conversion_error("timestamp " + quote_value(s) +
                           " is beyond what 64-bit microseconds since 1970 can hold (about 292,000 years)");
  return {0, micros};
}
#endif

// ---- bytea

PQSCOPE_DECL std::string bytea_to_text(const std::byte* p, std::size_t n);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string bytea_to_text(const std::byte* p, std::size_t n) {
  constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 + 2 * n);
  out += "\\x";
  for (std::size_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned>(p[i]);
    out += hex[b >> 4];
    out += hex[b & 15U];
  }
  return out;
}
#endif

PQSCOPE_DECL int hex_value(char c) noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
#endif

// Both of PostgreSQL's output formats: hex ("\x0aff", the default bytea_output) and escape
// ("\012\377", printable bytes as themselves, a backslash doubled).
PQSCOPE_DECL std::vector<std::byte> bytea_from_text(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::vector<std::byte> bytea_from_text(std::string_view s) {
  std::vector<std::byte> out;
  auto fail = [&](const char* why) {
    return conversion_error("cannot read " + quote_value(s) + " as bytea (std::vector<std::byte>): " + why);
  };
  if (s.substr(0, 2) == "\\x") {
    if (s.size() % 2 != 0) throw fail("odd number of hex digits");
    out.reserve((s.size() - 2) / 2);
    for (std::size_t i = 2; i < s.size(); i += 2) {
      const int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
      if (hi < 0 || lo < 0) throw fail("not a hex digit");
      out.push_back(static_cast<std::byte>(hi * 16 + lo));
    }
    return out;
  }
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out.push_back(static_cast<std::byte>(s[i]));
    } else if (i + 1 < s.size() && s[i + 1] == '\\') {
      out.push_back(std::byte{'\\'});
      ++i;
    } else if (i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
               s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(static_cast<std::byte>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      throw fail("a backslash must start \\\\ or a three-digit octal escape");
    }
  }
  return out;
}
#endif

// ---- one-dimensional arrays

PQSCOPE_DECL bool is_array_space(char c) noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool is_array_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
#endif

PQSCOPE_DECL bool is_null_word(std::string_view s) noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool is_null_word(std::string_view s) noexcept {
  if (s.size() != 4) return false;
  for (std::size_t i = 0; i < 4; ++i)
    if ((s[i] | 0x20) != "null"[i]) return false;
  return true;
}
#endif

// Appends one element to an array literal, double-quoted when the server would otherwise
// read it differently: empty, the word NULL in any case, a delimiter, brace, quote,
// backslash or white space; inside quotes only " and \ need a backslash.
PQSCOPE_DECL void append_array_element(std::string& out, std::string_view text);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void append_array_element(std::string& out, std::string_view text) {
  bool quote = text.empty() || is_null_word(text);
  for (const char ch : text)
    if (ch == ',' || ch == '{' || ch == '}' || ch == '"' || ch == '\\' || is_array_space(ch)) quote = true;
  if (!quote) {
    out += text;
    return;
  }
  out += '"';
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  out += '"';
}
#endif

// The element delimiter in the text of an array type (pg_type.typdelim of its element).
// Every built-in type has ',' but box, whose text has commas of its own: box[] (OID
// 1020) uses ';'. A table of OIDs is enough for the built-in types because the server
// reports a domain-typed column as its base type (a domain over box[] arrives as 1020).
// It cannot cover array types created later (an array of a domain over box, an extension
// type declared with another DELIMITER): their OIDs vary per database, so they read
// with ','; the README says to cast such a column to box[] (or text[]).
constexpr char array_delimiter(unsigned array_oid) noexcept { return array_oid == 1020 ? ';' : ','; }

// Splits the server's text for a one-dimensional array into its elements and calls
// on_element(index, text, is_null) for each, index from 0. More dimensions, or a
// lower bound other than 1 ("[0:2]={...}"), are a conversion_error. `delimiter`
// separates the elements (array_delimiter()).
template <class OnElement>
void parse_array(std::string_view s, const char* type_name, OnElement&& on_element, char delimiter = ',') {
  auto fail = [&](const std::string& why) {
    return conversion_error("cannot read " + quote_value(s) + " as " + type_name + ": " + why);
  };
  std::size_t i = 0;
  if (!s.empty() && s[0] == '[') {
    // Dimension decoration, written only when some lower bound is not 1: "[lo:hi][lo:hi]=".
    int dims = 0;
    std::string lower_bound;
    while (i < s.size() && s[i] == '[') {
      const std::size_t colon = s.find(':', i), close = s.find(']', i);
      if (colon == std::string_view::npos || close == std::string_view::npos || colon > close)
        throw fail("malformed dimensions");
      if (++dims == 1) lower_bound = std::string(s.substr(i + 1, colon - i - 1));
      i = close + 1;
    }
    if (i >= s.size() || s[i] != '=') throw fail("malformed dimensions");
    ++i;
    if (dims != 1)
      throw fail("it has " + std::to_string(dims) + " dimensions; pqscope reads one-dimensional arrays only");
    if (lower_bound != "1")
      throw fail("its lower bound is " + lower_bound +
                 ", not 1; pqscope reads arrays indexed from 1 only (select arr[:], which starts at 1)");
  }
  if (i >= s.size() || s[i] != '{') throw fail("an array starts with {");
  int depth = 0;
  for (std::size_t j = i; j < s.size() && s[j] == '{'; ++j) ++depth;
  if (depth > 1)
    throw fail("it has " + std::to_string(depth) + " dimensions; pqscope reads one-dimensional arrays only");
  ++i;
  auto skip_space = [&] {
    while (i < s.size() && is_array_space(s[i])) ++i;
  };
  skip_space();
  if (i < s.size() && s[i] == '}') {
    if (i + 1 != s.size()) throw fail("text after the closing }");
    return;
  }
  std::string element;
  for (std::size_t index = 0;; ++index) {
    skip_space();
    element.clear();
    bool quoted = false, escaped = false;
    if (i < s.size() && s[i] == '"') {
      quoted = true;
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\' && ++i == s.size()) break;
        element += s[i];
      }
      if (i >= s.size()) throw fail("unterminated quoted element");
      ++i;
      skip_space();
    } else {
      std::size_t kept = 0;  // trailing white space of an unquoted element is not part of it
      for (; i < s.size() && s[i] != delimiter && s[i] != '}'; ++i) {
        if (s[i] == '{' || s[i] == '"')
          throw fail(s[i] == '{' ? "a nested { (more than one dimension)" : "a quote inside an unquoted element");
        if (s[i] == '\\') {
          if (++i == s.size()) break;
          escaped = true;
          element += s[i];
          kept = element.size();
          continue;
        }
        element += s[i];
        if (!is_array_space(s[i])) kept = element.size();
      }
      element.resize(kept);
      if (element.empty()) throw fail("an empty unquoted element");
    }
    if (i >= s.size()) throw fail("missing closing }");
    const bool is_null = !quoted && !escaped && is_null_word(element);
    on_element(index, std::string_view(element), is_null);
    if (s[i] == '}') {
      if (i + 1 != s.size()) throw fail("text after the closing }");
      return;
    }
    if (s[i] != delimiter) throw fail(std::string("expected '") + delimiter + "' or } after element " +
                                      std::to_string(index + 1));
    ++i;  // the delimiter
  }
}

}  // namespace detail
}  // namespace pqscope
