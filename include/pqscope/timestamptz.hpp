#pragma once
// pqscope::timestamptz: PostgreSQL's timestamptz as the server keeps it, 64-bit
// microseconds since 2000-01-01 00:00 UTC. That spans the server's whole range,
// 4714-11-24 BC to 294276-12-31 AD, and its two infinities; a system_clock time_point
// does not (nanoseconds end in 2262, microseconds since 1970 in 294247).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/text_codecs.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>

namespace pqscope {

class timestamptz {
 public:
  constexpr timestamptz() noexcept = default;  // 2000-01-01 00:00:00 UTC, PostgreSQL's epoch

  // From a system_clock time point; the part below a microsecond is dropped (rounded
  // toward the past), as for time point parameters. conversion_error before 4714 BC.
  template <class D>
  timestamptz(std::chrono::time_point<std::chrono::system_clock, D> t)  // NOLINT(google-explicit-constructor)
      : timestamptz(from_unix_micros(std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count())) {}

  // conversion_error outside PostgreSQL's range.
  [[nodiscard]] static timestamptz from_micros_since_2000(std::int64_t micros);
  [[nodiscard]] static timestamptz from_unix_micros(std::int64_t micros_since_1970);
  [[nodiscard]] static constexpr timestamptz infinity() noexcept { return timestamptz(plus_infinity_); }
  [[nodiscard]] static constexpr timestamptz minus_infinity() noexcept { return timestamptz(minus_infinity_); }

  [[nodiscard]] constexpr bool is_finite() const noexcept { return !is_infinity() && !is_minus_infinity(); }
  [[nodiscard]] constexpr bool is_infinity() const noexcept { return micros_ == plus_infinity_; }
  [[nodiscard]] constexpr bool is_minus_infinity() const noexcept { return micros_ == minus_infinity_; }

  // PostgreSQL's own value: microseconds since 2000-01-01 00:00 UTC; for the
  // infinities, the int64 limits, as the server stores them.
  [[nodiscard]] constexpr std::int64_t micros_since_2000() const noexcept { return micros_; }

  // The time point; conversion_error when infinite or when its duration cannot hold
  // the value (nanoseconds: the years 1677 to 2262; microseconds: up to 294247 AD).
  template <class D = std::chrono::system_clock::duration>
  [[nodiscard]] std::chrono::time_point<std::chrono::system_clock, D> to_time_point() const {
    static_assert(detail::divides_micro<D>::value,
                  "pqscope: timestamptz::to_time_point needs a duration that holds whole microseconds");
    if (!is_finite()) throw conversion_error(std::string("timestamptz::to_time_point(): the timestamp is ") +
                                             (is_infinity() ? "'infinity'" : "'-infinity'"));
    return detail::time_point_from_micros<std::chrono::time_point<std::chrono::system_clock, D>>(micros_,
                                                                                                to_string());
  }

  // As the server writes it with DateStyle ISO, in UTC: "294276-12-31 23:59:59.999999+00".
  [[nodiscard]] std::string to_string() const;
  // The same into p (room for detail::timestamp_text_size bytes); returns where it ends.
  char* write(char* p) const noexcept;

  // Ordered as the server orders them: -infinity first, infinity last.
  friend constexpr bool operator==(timestamptz a, timestamptz b) noexcept { return a.micros_ == b.micros_; }
  friend constexpr bool operator!=(timestamptz a, timestamptz b) noexcept { return a.micros_ != b.micros_; }
  friend constexpr bool operator<(timestamptz a, timestamptz b) noexcept { return a.micros_ < b.micros_; }
  friend constexpr bool operator<=(timestamptz a, timestamptz b) noexcept { return a.micros_ <= b.micros_; }
  friend constexpr bool operator>(timestamptz a, timestamptz b) noexcept { return a.micros_ > b.micros_; }
  friend constexpr bool operator>=(timestamptz a, timestamptz b) noexcept { return a.micros_ >= b.micros_; }

 private:
  // PostgreSQL's DT_NOBEGIN and DT_NOEND.
  static constexpr std::int64_t minus_infinity_ = std::numeric_limits<std::int64_t>::min();
  static constexpr std::int64_t plus_infinity_ = std::numeric_limits<std::int64_t>::max();
  explicit constexpr timestamptz(std::int64_t micros) noexcept : micros_(micros) {}
  std::int64_t micros_ = 0;
};

// Sent as timestamptz in UTC with an explicit offset; read from timestamptz in any
// TimeZone or from timestamp without time zone taken as UTC (DateStyle ISO), as the
// time point parameters are.
template <>
struct value_traits<timestamptz> {
  static constexpr unsigned oid = 1184;
  static std::string to_text(const timestamptz& t) { return t.to_string(); }
  static timestamptz from_text(std::string_view s);
  // COPY rows: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = detail::timestamp_text_size;
  static char* write_unescaped(char* p, const timestamptz& t) noexcept { return t.write(p); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/timestamptz.ipp>
#endif
