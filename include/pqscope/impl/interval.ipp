#pragma once
// The bodies of <pqscope/interval.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/interval.hpp>
#include <pqscope/detail/text_codecs.hpp>

#include <cstring>

namespace pqscope {

// detail::put_digits is text_codecs.ipp's, compiled wherever these bodies are.
namespace detail {

PQSCOPE_DECL void throw_interval_conversion(std::int32_t months, std::int32_t days, std::int64_t microseconds,
                                            const char* why) {
  throw conversion_error("interval of " + std::to_string(months) + " months, " + std::to_string(days) + " days and " +
                         std::to_string(microseconds) + " microseconds cannot be a std::chrono duration: " + why);
}

inline std::uint64_t interval_magnitude(std::int64_t v) noexcept {
  return v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
}

// "+N unit " or "-N unit ".
inline char* put_interval_field(char* p, std::int64_t v, std::string_view unit) noexcept {
  *p++ = v < 0 ? '-' : '+';
  p = put_digits(p, interval_magnitude(v), 1);
  *p++ = ' ';
  std::memcpy(p, unit.data(), unit.size());
  return p + unit.size();
}

// The fields read so far, wider than interval's: the range is checked once, at the end.
struct interval_sum {
  int128 months = 0, days = 0, micros = 0;
};

constexpr std::int64_t micros_per_minute = 60 * micros_per_second;
constexpr std::int64_t micros_per_hour = 60 * micros_per_minute;

// Reads interval text left to right; every step says whether it matched.
class interval_reader : public text_cursor {
 public:
  using text_cursor::text_cursor;
  // -1 for '-', +1 for '+', 0 for neither (nothing eaten).
  int sign() noexcept { return eat('-') ? -1 : eat('+') ? 1 : 0; }
  // 1 to 18 digits: more than any field the server writes, less than int64 overflows at.
  bool number(std::int64_t& out) noexcept {
    int n = 0;
    out = 0;
    while (n < 18 && peek_digit()) {
      out = out * 10 + (s_[i_++] - '0');
      ++n;
    }
    return n > 0 && !peek_digit();
  }
  // Digits after a decimal point, 1 to 6 of them, as microseconds: a seventh would be
  // below a microsecond, which the server never writes.
  bool fraction(std::int64_t& micros) noexcept {
    std::int64_t v = 0;
    int n = 0;
    while (n < 6 && peek_digit()) {
      v = v * 10 + (s_[i_++] - '0');
      ++n;
    }
    if (n == 0 || peek_digit()) return false;
    for (; n < 6; ++n) v *= 10;
    micros = v;
    return true;
  }
  // Exactly two digits below `limit` (minutes and seconds of a time field).
  bool two_digits(std::int64_t limit, std::int64_t& out) noexcept {
    if (s_.size() - i_ < 2 || !peek_digit() || s_[i_ + 1] < '0' || s_[i_ + 1] > '9') return false;
    out = (s_[i_] - '0') * 10 + (s_[i_ + 1] - '0');
    i_ += 2;
    return out < limit;
  }
  // A lowercase word, up to a space or the end.
  std::string_view word() noexcept {
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= 'a' && s_[i_] <= 'z') ++i_;
    return s_.substr(start, i_ - start);
  }
  // H:MM:SS[.ffffff], hours of any length, without its sign: microseconds.
  bool time(int128& micros) noexcept {
    std::int64_t h = 0, m = 0, sec = 0, f = 0;
    if (!number(h) || !eat(':') || !two_digits(60, m) || !eat(':') || !two_digits(60, sec)) return false;
    if (eat('.') && !fraction(f)) return false;
    micros = int128{h} * micros_per_hour + int128{m} * micros_per_minute + int128{sec} * micros_per_second + f;
    return true;
  }
  // Whether a time field (digits then ':') starts here, past any sign.
  [[nodiscard]] bool at_time() const noexcept {
    std::size_t j = i_;
    if (j < s_.size() && (s_[j] == '-' || s_[j] == '+')) ++j;
    while (j < s_.size() && s_[j] >= '0' && s_[j] <= '9') ++j;
    return j < s_.size() && s_[j] == ':';
  }
};

// Adds n[.fraction] of unit u (0 years, 1 months, 2 days, 3 hours, 4 minutes, 5 seconds).
inline void add_interval_unit(interval_sum& out, int u, int sign, std::int64_t n, std::int64_t fraction) {
  int128 v = n;
  switch (u) {
    case 0: v *= 12; break;
    case 3: v *= micros_per_hour; break;
    case 4: v *= micros_per_minute; break;
    case 5: v = v * micros_per_second + fraction; break;
    default: break;
  }
  if (sign < 0) v = -v;
  (u <= 1 ? out.months : u == 2 ? out.days : out.micros) += v;
}

// "mon" or "mons" for unit "mon".
inline bool is_unit(std::string_view word, std::string_view unit) noexcept {
  return word == unit || (word.size() == unit.size() + 1 && word.back() == 's' && word.substr(0, unit.size()) == unit);
}

// IntervalStyle postgres, postgres_verbose and interval::to_string(): signed numbers
// with units, in order from years to seconds, each unit once, then (not in the
// verbose "@" form) an optional signed time field. Every field carries its own sign;
// a trailing " ago" (verbose form) negates them all.
inline bool read_interval_units(interval_reader& r, interval_sum& out) {
  const bool verbose = r.eat('@');
  if (verbose && !r.eat(' ')) return false;
  int rank = -1;  // the unit read last
  bool any = false;
  while (!r.done()) {
    if (any && !r.eat(' ')) return false;
    if (verbose && any && r.peek('a')) {
      if (r.word() != "ago" || !r.done()) return false;
      out.months = -out.months;
      out.days = -out.days;
      out.micros = -out.micros;
      return true;
    }
    if (!verbose && r.at_time()) {
      const int sign = r.sign();
      int128 micros = 0;
      if (rank >= 3 || !r.time(micros)) return false;
      out.micros += sign < 0 ? -micros : micros;
      rank = 5;
      any = true;
      continue;
    }
    const int sign = r.sign();
    std::int64_t n = 0, fraction = 0;
    if (!r.number(n)) return false;
    const bool has_fraction = r.eat('.');
    if (has_fraction && !r.fraction(fraction)) return false;
    if (verbose && !any && n == 0 && !has_fraction && sign == 0 && r.done()) return true;  // "@ 0"
    if (!r.eat(' ')) return false;
    const std::string_view word = r.word();
    static constexpr std::string_view units[] = {"year", "mon", "day", "hour", "min", "sec"};
    int u = 0;
    while (u < 6 && !is_unit(word, units[u])) ++u;
    if (u == 6 || u <= rank || (has_fraction && u != 5)) return false;
    rank = u;
    add_interval_unit(out, u, sign, n, fraction);
    any = true;
  }
  return any;
}

// IntervalStyle sql_standard: "0", or year-month "Y-M", days "D" (a time follows) and
// a time "H:MM:SS[.ffffff]", in that order, separated by spaces. As PostgreSQL reads
// it, a field without a sign takes a leading '-' of the first ("-1 2:03:04" is -1 day
// -2:03:04); the server signs every field when their signs differ.
inline bool read_interval_sql(interval_reader& r, interval_sum& out) {
  int first_sign = 0;
  int rank = -1;  // 0 year-month, 1 days, 2 time
  for (;;) {
    const bool time = r.at_time();
    int sign = r.sign();
    if (rank == -1) first_sign = sign;
    if (sign == 0) sign = first_sign;
    if (time) {
      int128 micros = 0;
      if (rank >= 2 || !r.time(micros)) return false;
      out.micros = sign < 0 ? -micros : micros;
      rank = 2;
    } else {
      std::int64_t n = 0;
      if (!r.number(n)) return false;
      if (r.eat('-')) {  // Y-M, M below 12
        std::int64_t m = 0;
        if (rank >= 0 || !r.number(m) || m >= 12) return false;
        out.months = (int128{n} * 12 + m) * (sign < 0 ? -1 : 1);
        rank = 0;
      } else if (rank == -1 && n == 0 && sign == 0 && r.done()) {
        return true;  // "0"
      } else {  // days: a time must follow, which the rank checks of the next field see to
        if (rank >= 1 || r.done()) return false;
        out.days = int128{n} * (sign < 0 ? -1 : 1);
        rank = 1;
      }
    }
    if (r.done()) return true;
    if (!r.eat(' ')) return false;
  }
}

// IntervalStyle iso_8601: P[nY][nM][nD][T[nH][nM][n[.f]S]], every number signed on
// its own; a negative fraction of a second is written "-0.5S".
inline bool read_interval_iso(interval_reader& r, interval_sum& out) {
  if (!r.eat('P')) return false;
  bool any = false, time = false;
  int rank = -1;  // 0 Y, 1 M, 2 D, then after T: 3 H, 4 M, 5 S
  while (!r.done()) {
    if (!time && r.eat('T')) {
      time = true;
      rank = 2;
      if (r.done()) return false;
      continue;
    }
    const int sign = r.sign();
    std::int64_t n = 0, fraction = 0;
    if (!r.number(n)) return false;
    const bool has_fraction = r.eat('.');
    if (has_fraction && !r.fraction(fraction)) return false;
    const char* designators = time ? "HMS" : "YMD";
    int u = 0;
    while (u < 3 && !r.eat(designators[u])) ++u;
    if (u == 3) return false;
    u += time ? 3 : 0;
    if (u <= rank || (has_fraction && u != 5)) return false;
    rank = u;
    add_interval_unit(out, u, sign, n, fraction);
    any = true;
  }
  return any;
}

}  // namespace detail

PQSCOPE_DECL interval interval::parse(std::string_view text) {
  if (text == "infinity" || text == "-infinity")
    throw conversion_error("cannot read interval " + detail::quote_value(text) +
                           " as pqscope::interval: an infinite interval (PostgreSQL 17) has no value here");
  detail::interval_reader r(text);
  detail::interval_sum sum;
  bool ok = false;
  if (!text.empty() && text[0] == 'P')
    ok = detail::read_interval_iso(r, sum);
  else if (text.find_first_of("@abcdefghijklmnopqrstuvwxyz") != std::string_view::npos)
    ok = detail::read_interval_units(r, sum);
  else
    ok = detail::read_interval_sql(r, sum);
  if (!ok)
    throw conversion_error("cannot read " + detail::quote_value(text) +
                           " as an interval: not in a form the server writes under IntervalStyle postgres, "
                           "postgres_verbose, sql_standard or iso_8601");
  constexpr auto i32_min = std::numeric_limits<std::int32_t>::min(), i32_max = std::numeric_limits<std::int32_t>::max();
  constexpr auto i64_min = std::numeric_limits<std::int64_t>::min(), i64_max = std::numeric_limits<std::int64_t>::max();
  if (sum.months < i32_min || sum.months > i32_max || sum.days < i32_min || sum.days > i32_max ||
      sum.micros < i64_min || sum.micros > i64_max)
    throw conversion_error("interval " + detail::quote_value(text) +
                           " is beyond PostgreSQL's range (32-bit months and days, 64-bit microseconds)");
  return interval{static_cast<std::int32_t>(sum.months), static_cast<std::int32_t>(sum.days),
                  static_cast<std::int64_t>(sum.micros)};
}

PQSCOPE_DECL char* interval::write(char* p) const noexcept {
  // Every field signed: under IntervalStyle sql_standard the server gives a field
  // without a sign the sign of a leading '-'.
  p = detail::put_interval_field(p, months, "mons ");
  p = detail::put_interval_field(p, days, "days ");
  std::uint64_t us = detail::interval_magnitude(microseconds);
  if (microseconds == std::numeric_limits<std::int64_t>::min()) {
    // The server reads a time field's magnitude into int64 before the sign, so it
    // refuses -2562047788:00:54.775808 (which it writes itself); in units it reads it.
    static constexpr char lowest[] = "-2562047788 hours -54.775808 secs";
    std::memcpy(p, lowest, sizeof lowest - 1);
    return p + sizeof lowest - 1;
  }
  *p++ = microseconds < 0 ? '-' : '+';
  const std::uint64_t per_hour = detail::micros_per_hour, per_minute = detail::micros_per_minute,
                      per_second = detail::micros_per_second;
  p = detail::put_digits(p, us / per_hour, 2);
  us %= per_hour;
  *p++ = ':';
  p = detail::put_digits(p, us / per_minute, 2);
  us %= per_minute;
  *p++ = ':';
  p = detail::put_digits(p, us / per_second, 2);
  us %= per_second;
  if (us != 0) {
    *p++ = '.';
    p = detail::put_digits(p, us, 6);
  }
  return p;
}

PQSCOPE_DECL std::string interval::to_string() const {
  char out[max_text_size];
  return std::string(out, write(out));
}

}  // namespace pqscope
