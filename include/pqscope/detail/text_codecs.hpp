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
  // H. Hinnant's algorithm: eras of 400 years (146097 days) from 0000-03-01, so that
  // the leap day ends a year. No loop: this runs for every timestamp a COPY writes.
  const std::int64_t z = days + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);                 // [0, 146096]
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);             // [0, 365]
  const unsigned mp = (5 * doy + 2) / 153;                                  // March = 0
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0), m, d};
}

constexpr std::int64_t micros_per_second = 1'000'000;
constexpr std::int64_t micros_per_day = 86'400 * micros_per_second;
// PostgreSQL's earliest timestamp, 4714-11-24 BC 00:00 UTC; its latest (294276 AD) lies
// beyond what int64 microseconds since 1970 can hold, so no time_point reaches it.
constexpr std::int64_t min_timestamp_micros = days_from_civil(-4713, 11, 24) * micros_per_day;
// The server counts microseconds from 2000-01-01 (its epoch), which is how its whole range
// fits in 64 bits; the text codecs count from there too. [min, end) is that range.
constexpr std::int64_t pg_epoch_days = days_from_civil(2000, 1, 1);
constexpr std::int64_t pg_epoch_micros = pg_epoch_days * micros_per_day;
constexpr std::int64_t pg_min_timestamp = min_timestamp_micros - pg_epoch_micros;
constexpr std::int64_t pg_end_timestamp = (days_from_civil(294277, 1, 1) - pg_epoch_days) * micros_per_day;
// PostgreSQL's date range: 4714-11-24 BC to 5874897-12-31.
constexpr std::int64_t min_date_days = days_from_civil(-4713, 11, 24);
constexpr std::int64_t max_date_days = days_from_civil(5874897, 12, 31);

PQSCOPE_DECL void append_number(std::string& out, std::uint64_t v, int width);

// "YYYY-MM-DD" with " BC" left to the caller: years before 1 AD are written as PostgreSQL
// writes them, 1 - y with the suffix.
PQSCOPE_DECL void append_civil_date(std::string& out, const civil_date& c);

// Microseconds since 2000 (finite, in PostgreSQL's range) in ISO 8601, in UTC with an
// explicit offset, so the server reads the same instant whatever its DateStyle order and
// TimeZone: "2024-01-02 03:04:05.123456+00", at p, which has room for
// timestamp_text_size bytes. Returns the end.
constexpr std::size_t timestamp_text_size = 48;
PQSCOPE_DECL char* write_timestamp(char* p, std::int64_t pg_micros) noexcept;

PQSCOPE_DECL std::string format_date(const civil_date& c);

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

 protected:  // readers of other formats extend it (impl/interval.ipp)
  std::string_view s_;
  std::size_t i_ = 0;
};

PQSCOPE_DECL std::string iso_format_hint(const char* format);

// "YYYY-MM-DD" at the cursor, years of four or more digits; checked for a real day.
PQSCOPE_DECL bool read_civil_date(text_cursor& c, civil_date& out);

// " BC" turns the year PostgreSQL wrote into an astronomical one; then the day is checked.
PQSCOPE_DECL bool finish_civil_date(text_cursor& c, civil_date& out);

PQSCOPE_DECL civil_date parse_date(std::string_view s);

struct timestamp_text {
  int infinite;         // 0 finite, +1 'infinity', -1 '-infinity'
  std::int64_t micros;  // since 2000-01-01 00:00 UTC (PostgreSQL's epoch), when finite
};

// Timestamps as PostgreSQL writes them with DateStyle ISO: timestamptz with any UTC
// offset (+05:30, -08, +00:09:21 for local mean time), timestamp without one (read as UTC),
// 0 to 6 fractional digits, years before 1 AD with " BC".
PQSCOPE_DECL timestamp_text parse_timestamp(std::string_view s);

// ---- bytea

PQSCOPE_DECL std::string bytea_to_text(const std::byte* p, std::size_t n);

PQSCOPE_DECL int hex_value(char c) noexcept;

// Both of PostgreSQL's output formats: hex ("\x0aff", the default bytea_output) and escape
// ("\012\377", printable bytes as themselves, a backslash doubled).
PQSCOPE_DECL std::vector<std::byte> bytea_from_text(std::string_view s);

// ---- one-dimensional arrays

PQSCOPE_DECL bool is_array_space(char c) noexcept;

PQSCOPE_DECL bool is_null_word(std::string_view s) noexcept;

// Appends one element to an array literal, double-quoted when the server would otherwise
// read it differently: empty, the word NULL in any case, a delimiter, brace, quote,
// backslash or white space; inside quotes only " and \ need a backslash.
PQSCOPE_DECL void append_array_element(std::string& out, std::string_view text);

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

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/text_codecs.ipp>
#endif
