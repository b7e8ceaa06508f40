#pragma once
// The bodies of <pqscope/timestamptz.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <algorithm>

#include <pqscope/timestamptz.hpp>

namespace pqscope {

PQSCOPE_DECL timestamptz timestamptz::from_micros_since_2000(std::int64_t micros) {
  // The infinities are values of their own, not the ends of the range.
  if (micros < detail::pg_min_timestamp || micros >= detail::pg_end_timestamp)
    throw conversion_error("timestamptz: " + std::to_string(micros) +
                           " microseconds since 2000 is outside PostgreSQL's range (4714-11-24 00:00:00 BC to "
                           "294276-12-31 23:59:59.999999 UTC); use infinity() or minus_infinity() for those");
  return timestamptz(micros);
}

PQSCOPE_DECL timestamptz timestamptz::from_unix_micros(std::int64_t micros_since_1970) {
  if (micros_since_1970 < detail::min_timestamp_micros)
    throw conversion_error("timestamptz: " + std::to_string(micros_since_1970) +
                           " microseconds since 1970 is before PostgreSQL's earliest timestamp, 4714-11-24 00:00:00 "
                           "BC UTC");
  // No overflow: the subtraction only moves the value toward zero here.
  return from_micros_since_2000(micros_since_1970 - detail::pg_epoch_micros);
}

PQSCOPE_DECL char* timestamptz::write(char* p) const noexcept {
  if (is_finite()) return detail::write_timestamp(p, micros_);
  const std::string_view word = is_infinity() ? "infinity" : "-infinity";
  return std::copy(word.begin(), word.end(), p);
}

PQSCOPE_DECL std::string timestamptz::to_string() const {
  char out[detail::timestamp_text_size];
  return std::string(out, write(out));
}

PQSCOPE_DECL timestamptz value_traits<timestamptz>::from_text(std::string_view s) {
  const detail::timestamp_text t = detail::parse_timestamp(s);
  if (t.infinite > 0) return timestamptz::infinity();
  if (t.infinite < 0) return timestamptz::minus_infinity();
  return timestamptz::from_micros_since_2000(t.micros);
}

}  // namespace pqscope
