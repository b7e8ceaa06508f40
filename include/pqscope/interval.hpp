#pragma once
// pqscope::interval: PostgreSQL's interval, its three fields kept apart as the server
// keeps them, for parameters, results, arrays (interval[]) and COPY. std::chrono
// durations with an integer count go in and out as interval too, exactly or not at all.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <ratio>
#include <string>
#include <string_view>
#include <type_traits>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope {

namespace detail {

// Wide enough for days * 86,400,000,000 + microseconds, scaled to any std::ratio
// (GCC and Clang, as the overflow builtins pqscope uses elsewhere).
__extension__ typedef __int128 int128;

// conversion_error("interval of 1 months, 2 days and 3 microseconds cannot be a std::chrono duration: <why>").
[[noreturn]] PQSCOPE_DECL void throw_interval_conversion(std::int32_t months, std::int32_t days,
                                                         std::int64_t microseconds, const char* why);

}  // namespace detail

// The fields are not normalized into one another: a month is not 30 days (it is 28
// to 31 of them) and a day is not 24 hours (it is 23 or 25 across a daylight-saving
// change when added to a timestamptz), so PostgreSQL keeps all three.
struct interval {
  std::int32_t months = 0;
  std::int32_t days = 0;
  std::int64_t microseconds = 0;

  // What the server writes under each IntervalStyle: postgres (the default,
  // "1 year 2 mons -3 days +04:05:06.789"), postgres_verbose ("@ 1 year 2 mons ..."),
  // sql_standard ("+1-2 -3 +4:05:06.789") and iso_8601 ("P1Y2M-3DT4H5M6.789S"); and
  // what to_string() writes. Anything else, a fraction below a microsecond, or a
  // value beyond the fields is a conversion_error.
  [[nodiscard]] static interval parse(std::string_view text);

  // "+14 mons -3 days +04:05:06.789000": every field signed, so that the server reads
  // the same three fields whatever its IntervalStyle. (The lowest microseconds, which
  // the server reads in no time field, go as "-2562047788 hours -54.775808 secs".)
  [[nodiscard]] std::string to_string() const;
  // The same into p (room for max_text_size bytes); returns where it ends. The longest
  // is "-2147483648 mons -2147483648 days -2562047788 hours -54.775808 secs" (67).
  char* write(char* p) const noexcept;
  static constexpr std::size_t max_text_size = 72;

  // The length, with a day as 24 hours (as PostgreSQL's extract(epoch) counts it).
  // conversion_error when months is not 0 (a month has no fixed length), when D
  // cannot hold the value, or when D's unit cannot hold it exactly (1.5 s as
  // std::chrono::seconds): nothing is rounded.
  template <class D = std::chrono::microseconds>
  [[nodiscard]] D to_duration() const;

  // The duration as microseconds (months and days 0: a duration has a fixed length).
  // conversion_error for a part below a microsecond or beyond int64 microseconds
  // (about 292,000 years).
  template <class Rep, class Period>
  [[nodiscard]] static interval from_duration(std::chrono::duration<Rep, Period> d);

  // Field by field. PostgreSQL's own `=` normalizes first (30 days = 1 month, 24 hours
  // = 1 day), so '1 mon' = '30 days' there; here they differ.
  friend constexpr bool operator==(const interval& a, const interval& b) noexcept {
    return a.months == b.months && a.days == b.days && a.microseconds == b.microseconds;
  }
  friend constexpr bool operator!=(const interval& a, const interval& b) noexcept { return !(a == b); }
};

template <class D>
D interval::to_duration() const {
  using rep = typename D::rep;
  static_assert(std::is_integral_v<rep> && std::is_same_v<D, std::chrono::duration<rep, typename D::period>>,
                "pqscope: interval::to_duration<D>(): D is a std::chrono::duration with an integer count");
  if (months != 0) detail::throw_interval_conversion(months, days, microseconds, "a month has no fixed length");
  using ticks_per_micro = std::ratio_divide<std::micro, typename D::period>;
  // Below 2^68 in magnitude: no overflow here.
  const detail::int128 total = detail::int128{days} * 86'400'000'000 + microseconds;
  detail::int128 scaled = 0;
  if (__builtin_mul_overflow(total, detail::int128{ticks_per_micro::num}, &scaled) ||
      scaled / ticks_per_micro::den < static_cast<detail::int128>(std::numeric_limits<rep>::min()) ||
      scaled / ticks_per_micro::den > static_cast<detail::int128>(std::numeric_limits<rep>::max()))
    detail::throw_interval_conversion(months, days, microseconds, "it is beyond the range of the duration type");
  if (scaled % ticks_per_micro::den != 0)
    detail::throw_interval_conversion(months, days, microseconds,
                                      "it is not a whole number of the duration type's units");
  return D(static_cast<rep>(scaled / ticks_per_micro::den));
}

template <class Rep, class Period>
interval interval::from_duration(std::chrono::duration<Rep, Period> d) {
  static_assert(std::is_integral_v<Rep>,
                "pqscope: interval::from_duration(): a duration with an integer count (convert a floating-point one "
                "with std::chrono::round first)");
  using micros_per_tick = std::ratio_divide<Period, std::micro>;
  const auto refuse = [&](const char* why) -> interval {
    throw conversion_error("std::chrono duration of " + std::to_string(d.count()) + " ticks of " +
                           std::to_string(Period::num) + "/" + std::to_string(Period::den) +
                           " s cannot be an interval: " + why);
  };
  detail::int128 scaled = 0;
  if (__builtin_mul_overflow(detail::int128{d.count()}, detail::int128{micros_per_tick::num}, &scaled) ||
      scaled / micros_per_tick::den < std::numeric_limits<std::int64_t>::min() ||
      scaled / micros_per_tick::den > std::numeric_limits<std::int64_t>::max())
    return refuse("it is beyond an interval's 64-bit microseconds");
  if (scaled % micros_per_tick::den != 0) return refuse("it has a part below a microsecond");
  return interval{0, 0, static_cast<std::int64_t>(scaled / micros_per_tick::den)};
}

template <>
struct value_traits<interval> {
  static constexpr unsigned oid = 1186;
  static std::string to_text(const interval& v) { return v.to_string(); }
  static interval from_text(std::string_view s) { return interval::parse(s); }
  // COPY rows: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = interval::max_text_size;
  static char* write_unescaped(char* p, const interval& v) noexcept { return v.write(p); }
};

// std::chrono::duration with an integer count as interval, through interval::from_duration
// and interval::to_duration: a result with months, or one the duration cannot hold
// exactly, is a conversion_error.
template <class Rep, class Period>
struct value_traits<std::chrono::duration<Rep, Period>, std::enable_if_t<std::is_integral_v<Rep>>> {
  using duration = std::chrono::duration<Rep, Period>;
  static constexpr unsigned oid = 1186;
  static std::string to_text(const duration& d) { return interval::from_duration(d).to_string(); }
  static duration from_text(std::string_view s) { return interval::parse(s).to_duration<duration>(); }
  static constexpr std::size_t unescaped_size = interval::max_text_size;
  static char* write_unescaped(char* p, const duration& d) { return interval::from_duration(d).write(p); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/interval.ipp>
#endif
