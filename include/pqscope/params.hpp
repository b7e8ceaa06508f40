#pragma once
// Values in and out of PostgreSQL's text format, and the customization point.
// Built in: bool, integers, floating point, std::string(_view), system_clock time
// points and timestamp_or_infinity (timestamptz), date, bytea (std::vector<std::byte>,
// bytes_view) and one-dimensional arrays (std::vector<T>, std::vector<std::optional<T>>).
//
// To pass or read a type of your own, specialize pqscope::value_traits:
//
//   template <> struct pqscope::value_traits<money> {
//     static constexpr unsigned oid = 0;                     // optional: parameter type, 0 = let the server infer
//     static std::string to_text(const money& m);            // for parameters
//     static money from_text(std::string_view text);         // for result fields
//   };
//
// Either function may be left out if that direction is not needed. Throw
// pqscope::conversion_error from from_text for text you cannot parse. NULL is
// handled by the library: use std::optional<money>.

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <ratio>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/text_codecs.hpp>
#include <pqscope/errors.hpp>

namespace pqscope {

template <class T, class Enable = void>
struct value_traits;  // no definition: a type without traits is a compile error naming value_traits<T>

template <>
struct value_traits<bool> {
  static constexpr unsigned oid = 16;
  static std::string to_text(bool v) { return v ? "t" : "f"; }
  static bool from_text(std::string_view s);
};

// All integer types except plain char (a character, not a number: pass std::string(1, c)
// or an int) and bool.
template <class T>
struct value_traits<T, std::enable_if_t<std::is_integral_v<T> && sizeof(T) <= 8 && !std::is_same_v<T, bool> &&
                                        !std::is_same_v<T, char>>> {
  // The narrowest PostgreSQL type that holds every value of T; uint64 needs numeric.
  static constexpr unsigned oid = sizeof(T) < 4 && std::is_signed_v<T> ? 21                // int2
                                  : (sizeof(T) < 4 || (sizeof(T) == 4 && std::is_signed_v<T>)) ? 23  // int4
                                  : (sizeof(T) == 8 && std::is_unsigned_v<T>) ? 1700       // numeric
                                                                               : 20;        // int8
  // A parameter list writes it with std::to_chars into its own buffer: no string made.
  using to_chars_number = void;
  static std::string to_text(T v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
  }
  static T from_text(std::string_view s) {
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range ||
        (r.ec == std::errc() && r.ptr == s.data() + s.size())) {
      if (r.ec == std::errc()) return v;
      throw conversion_error("value " + std::string(s) + " does not fit in the requested " +
                             std::to_string(sizeof(T) * 8) + "-bit " +
                             (std::is_signed_v<T> ? "signed" : "unsigned") + " integer (range " +
                             std::to_string(+std::numeric_limits<T>::min()) + ".." +
                             std::to_string(+std::numeric_limits<T>::max()) + "); read a wider type");
    }
    throw conversion_error("cannot read \"" + std::string(s) + "\" as an integer");
  }
};

template <class T>
struct value_traits<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static constexpr unsigned oid = sizeof(T) == 4 ? 700 : 701;  // float4 / float8
  static std::string to_text(T v) {
    char buf[unescaped_size];
    return std::string(buf, write_unescaped(buf, v));
  }
  // The text at p (room for unescaped_size bytes), for a COPY row: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = 64;
  static char* write_unescaped(char* p, T v) noexcept {
    auto put = [&](const char* s, std::size_t n) {
      std::memcpy(p, s, n);
      return p + n;
    };
    // Compared, not std::isnan/isinf: <cmath> would cost every includer ~8k lines.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wfloat-equal"
#endif
    if (v != v) return put("NaN", 3);  // NOLINT(misc-redundant-expression): true only for NaN
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    if (v > std::numeric_limits<T>::max()) return put("Infinity", 8);
    if (v < std::numeric_limits<T>::lowest()) return put("-Infinity", 9);
    return std::to_chars(p, p + unescaped_size, v).ptr;  // shortest text that reads back exactly
  }
  static T from_text(std::string_view s) {
    if (s == "NaN") return std::numeric_limits<T>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<T>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<T>::infinity();
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return v;
    if (r.ec == std::errc::result_out_of_range)
      throw conversion_error("value " + std::string(s) + " is out of range for a " +
                             std::to_string(sizeof(T) * 8) + "-bit floating-point number");
    throw conversion_error("cannot read \"" + std::string(s) + "\" as a floating-point number");
  }
};

template <>
struct value_traits<std::string> {
  static constexpr unsigned oid = 0;  // unknown: the server infers text, varchar, json, ...
  static const std::string& to_text(const std::string& v) { return v; }
  static std::string from_text(std::string_view s) { return std::string(s); }
};

// A view into the result's memory: valid while the result (or a row or field of it) lives.
template <>
struct value_traits<std::string_view> {
  static constexpr unsigned oid = 0;
  static std::string_view to_text(std::string_view v) { return v; }
  static std::string_view from_text(std::string_view s) { return s; }
};

namespace detail {

template <class T, class = void>
struct has_to_text : std::false_type {};
template <class T>
struct has_to_text<T, std::void_t<decltype(value_traits<T>::to_text(std::declval<const T&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_from_text : std::false_type {};
template <class T>
struct has_from_text<T, std::void_t<decltype(value_traits<T>::from_text(std::string_view{}))>>
    : std::true_type {};

// Arrays: from_text(text, delimiter) takes the element delimiter of the column's type.
template <class T, class = void>
struct has_delimited_from_text : std::false_type {};
template <class T>
struct has_delimited_from_text<T, std::void_t<decltype(value_traits<T>::from_text(std::string_view{}, ','))>>
    : std::true_type {};

template <class T, class = void>
struct traits_oid : std::integral_constant<unsigned, 0> {};
template <class T>
struct traits_oid<T, std::void_t<decltype(value_traits<T>::oid)>>
    : std::integral_constant<unsigned, value_traits<T>::oid> {};

// value_traits<T> is pqscope's own for an integer (a user's specialization is not).
template <class T, class = void>
struct is_chars_number : std::false_type {};
template <class T>
struct is_chars_number<T, std::void_t<typename value_traits<T>::to_chars_number>> : std::true_type {};

// value_traits<T>::write_unescaped: text written in place that COPY need not escape.
template <class T, class = void>
struct has_write_unescaped : std::false_type {};
template <class T>
struct has_write_unescaped<T, std::void_t<decltype(value_traits<T>::write_unescaped(std::declval<char*>(),
                                                                                    std::declval<const T&>()))>>
    : std::true_type {};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// Durations that hold whole microseconds exactly (microseconds, nanoseconds, ...).
template <class D>
struct divides_micro
    : std::bool_constant<std::is_integral_v<typename D::rep> &&
                         std::ratio_divide<std::micro, typename D::period>::den == 1> {};

template <class T>
struct optional_inner {
  using type = T;
};
template <class T>
struct optional_inner<std::optional<T>> {
  using type = T;
};

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

// The array type of an element type; 0 (let the server infer) for the ones not listed.
// Element oids stay below 4000: detail/column_types reverses this table by scanning them.
constexpr unsigned array_oid(unsigned element_oid) noexcept {
  switch (element_oid) {
    case 16: return 1000;    // bool
    case 17: return 1001;    // bytea
    case 20: return 1016;    // int8
    case 21: return 1005;    // int2
    case 23: return 1007;    // int4
    case 25: return 1009;    // text
    case 114: return 199;    // json
    case 700: return 1021;   // float4
    case 701: return 1022;   // float8
    case 1043: return 1015;  // varchar
    case 1082: return 1182;  // date
    case 1114: return 1115;  // timestamp
    case 1184: return 1185;  // timestamptz
    case 1186: return 1187;  // interval
    case 1700: return 1231;  // numeric
    case 2950: return 2951;  // uuid
    case 3220: return 3221;  // pg_lsn
    case 3802: return 3807;  // jsonb
    default: return 0;
  }
}

// Microseconds since 2000 (PostgreSQL's epoch) as a time_point of duration D;
// conversion_error if D cannot hold them.
template <class TimePoint>
TimePoint time_point_from_micros(std::int64_t pg_micros, std::string_view text) {
  using duration = typename TimePoint::duration;
  using rep = typename duration::rep;
  constexpr auto ticks_per_micro = std::ratio_divide<std::micro, typename duration::period>::num;
  std::int64_t micros = 0, ticks = 0;
  if (__builtin_add_overflow(pg_micros, pg_epoch_micros, &micros) ||
      __builtin_mul_overflow(micros, static_cast<std::int64_t>(ticks_per_micro), &ticks) ||
      ticks < static_cast<std::int64_t>(std::numeric_limits<rep>::min()) ||
      (ticks > 0 && static_cast<std::uint64_t>(ticks) > static_cast<std::uint64_t>(std::numeric_limits<rep>::max())))
    throw conversion_error("timestamp " + quote_value(text) +
                           " is outside the range of the time_point's duration (with nanoseconds, as "
                           "std::chrono::system_clock has on libstdc++, the years 1677 to 2262); "
                           "pqscope::timestamptz holds PostgreSQL's whole range");
  return TimePoint(duration(static_cast<rep>(ticks)));
}

}  // namespace detail

// ---- dates and times

// A calendar day, as PostgreSQL's date (oid 1082): proleptic Gregorian, 4714 BC to
// 5874897 AD. The year is astronomical: 0 is 1 BC, -1 is 2 BC.
struct date {
  int year = 1970;
  unsigned month = 1;  // 1..12
  unsigned day = 1;    // 1..31

  [[nodiscard]] constexpr bool is_valid() const noexcept {
    return month >= 1 && month <= 12 && day >= 1 && day <= detail::days_in_month(year, month);
  }
  // Days since 1970-01-01, negative before; conversion_error for an invalid date.
  [[nodiscard]] constexpr std::int64_t days_since_epoch() const {
    if (!is_valid())
      throw conversion_error("invalid date: year " + std::to_string(year) + ", month " + std::to_string(month) +
                             ", day " + std::to_string(day));
    return detail::days_from_civil(year, month, day);
  }
  // The inverse, for days within PostgreSQL's range.
  [[nodiscard]] static constexpr date from_days_since_epoch(std::int64_t days) noexcept {
    const detail::civil_date c = detail::civil_from_days(days);
    return date{static_cast<int>(c.year), c.month, c.day};
  }

  friend constexpr bool operator==(const date& a, const date& b) noexcept {
    return a.year == b.year && a.month == b.month && a.day == b.day;
  }
  friend constexpr bool operator!=(const date& a, const date& b) noexcept { return !(a == b); }
  friend constexpr bool operator<(const date& a, const date& b) noexcept {
    return a.year != b.year ? a.year < b.year : a.month != b.month ? a.month < b.month : a.day < b.day;
  }
};

template <>
struct value_traits<date> {
  static constexpr unsigned oid = 1082;
  static std::string to_text(const date& d);
  static date from_text(std::string_view s);
};

// std::chrono::system_clock::time_point (and any system_clock time_point whose duration
// holds whole microseconds) as timestamptz. Sent in UTC with an explicit offset, so the
// server's TimeZone and DateStyle order do not matter; the part below a microsecond is
// dropped (rounded toward the past). Read from timestamptz in any TimeZone, or from
// timestamp without time zone taken as UTC; needs DateStyle ISO. 'infinity' is a
// conversion_error: read it as timestamp_or_infinity.
template <class D>
struct value_traits<std::chrono::time_point<std::chrono::system_clock, D>,
                    std::enable_if_t<detail::divides_micro<D>::value>> {
  using time_point = std::chrono::time_point<std::chrono::system_clock, D>;
  static constexpr unsigned oid = 1184;
  static std::string to_text(const time_point& t) {
    char out[detail::timestamp_text_size];
    return std::string(out, write_unescaped(out, t));
  }
  // The text at p (room for unescaped_size bytes), for a COPY row: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = detail::timestamp_text_size;
  static char* write_unescaped(char* p, const time_point& t) {
    const auto micros = std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
    if (micros < detail::min_timestamp_micros)
      throw conversion_error("time point " + std::to_string(micros) +
                             " us since 1970 is before PostgreSQL's earliest timestamp, 4714-11-24 00:00:00 BC UTC");
    return detail::write_timestamp(p, micros - detail::pg_epoch_micros);
  }
  static time_point from_text(std::string_view s) {
    const detail::timestamp_text t = detail::parse_timestamp(s);
    if (t.infinite != 0)
      throw conversion_error("cannot read timestamp " + detail::quote_value(s) +
                             " as a std::chrono::system_clock::time_point; read it as "
                             "pqscope::timestamp_or_infinity");
    return detail::time_point_from_micros<time_point>(t.micros, s);
  }
};

// A timestamptz that may also be 'infinity' or '-infinity'. Converts implicitly from a
// time_point; ordered -infinity < every time point < infinity.
class timestamp_or_infinity {
 public:
  using time_point = std::chrono::system_clock::time_point;

  constexpr timestamp_or_infinity() noexcept = default;  // the epoch
  constexpr timestamp_or_infinity(time_point t) noexcept : time_(t) {}  // NOLINT(google-explicit-constructor)
  [[nodiscard]] static constexpr timestamp_or_infinity infinity() noexcept { return timestamp_or_infinity(1); }
  [[nodiscard]] static constexpr timestamp_or_infinity minus_infinity() noexcept {
    return timestamp_or_infinity(-1);
  }

  [[nodiscard]] constexpr bool is_finite() const noexcept { return infinite_ == 0; }
  [[nodiscard]] constexpr bool is_infinity() const noexcept { return infinite_ > 0; }
  [[nodiscard]] constexpr bool is_minus_infinity() const noexcept { return infinite_ < 0; }
  // The time point; conversion_error when infinite.
  [[nodiscard]] time_point value() const;

  friend constexpr bool operator==(const timestamp_or_infinity& a, const timestamp_or_infinity& b) noexcept {
    return a.infinite_ == b.infinite_ && (a.infinite_ != 0 || a.time_ == b.time_);
  }
  friend constexpr bool operator!=(const timestamp_or_infinity& a, const timestamp_or_infinity& b) noexcept {
    return !(a == b);
  }
  friend constexpr bool operator<(const timestamp_or_infinity& a, const timestamp_or_infinity& b) noexcept {
    return a.infinite_ != b.infinite_ ? a.infinite_ < b.infinite_ : a.infinite_ == 0 && a.time_ < b.time_;
  }

 private:
  explicit constexpr timestamp_or_infinity(int infinite) noexcept : infinite_(infinite) {}
  time_point time_{};
  int infinite_ = 0;  // +1 infinity, -1 -infinity
};

template <>
struct value_traits<timestamp_or_infinity> {
  static constexpr unsigned oid = 1184;
  static std::string to_text(const timestamp_or_infinity& t);
  static timestamp_or_infinity from_text(std::string_view s);
};

// ---- bytea

// Bytes for a bytea parameter, without copying them into a vector first. Holds a pointer:
// the bytes must outlive the call.
class bytes_view {
 public:
  constexpr bytes_view() noexcept = default;
  bytes_view(const void* data, std::size_t size) noexcept : data_(static_cast<const std::byte*>(data)), size_(size) {}
  bytes_view(const std::vector<std::byte>& v) noexcept  // NOLINT(google-explicit-constructor)
      : data_(v.data()), size_(v.size()) {}
  [[nodiscard]] constexpr const std::byte* data() const noexcept { return data_; }
  [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

template <>
struct value_traits<bytes_view> {
  static constexpr unsigned oid = 17;
  static std::string to_text(bytes_view b) { return detail::bytea_to_text(b.data(), b.size()); }
};

// Every byte value 0-255; sent in hex, read in hex or escape format (bytea_output).
template <>
struct value_traits<std::vector<std::byte>> {
  static constexpr unsigned oid = 17;
  static std::string to_text(const std::vector<std::byte>& v) { return detail::bytea_to_text(v.data(), v.size()); }
  static std::vector<std::byte> from_text(std::string_view s);
};

// ---- one-dimensional arrays

// std::vector<T> and std::vector<std::optional<T>> as T[] (element NULLs through the
// optional), for every T with value_traits. Sent as an array literal with each element
// quoted as needed; read from the server's output, indexed from 1, one dimension.
template <class T>
struct value_traits<std::vector<T>, std::enable_if_t<!std::is_same_v<T, std::byte>>> {
  using element = typename detail::optional_inner<T>::type;
  static_assert(!std::is_same_v<element, char> && !std::is_same_v<element, signed char> &&
                    !std::is_same_v<element, unsigned char>,
                "pqscope: a vector of char, signed char or unsigned char is ambiguous: std::vector<std::byte> is "
                "bytea, std::string is text, std::vector<short> or std::vector<int> is an array of numbers");
  static_assert(!detail::is_vector<element>::value || std::is_same_v<element, std::vector<std::byte>>,
                "pqscope: arrays of more than one dimension are not supported");
  static constexpr unsigned oid = detail::array_oid(detail::traits_oid<element>::value);

  static std::string to_text(const std::vector<T>& v) {
    static_assert(detail::has_to_text<element>::value,
                  "pqscope: no value_traits<T>::to_text for this array's element type");
    std::string out = "{";
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) out += ',';
      if constexpr (detail::is_optional<T>::value) {
        if (v[i])
          append(out, *v[i]);
        else
          out += "NULL";
      } else {
        append(out, v[i]);
      }
    }
    out += '}';
    return out;
  }

  static std::vector<T> from_text(std::string_view s) { return from_text(s, ','); }
  // `delimiter`: what separates the elements (';' for box[]); field::as<T>() passes the
  // column type's (detail::array_delimiter).
  static std::vector<T> from_text(std::string_view s, char delimiter) {
    static_assert(detail::has_from_text<element>::value,
                  "pqscope: no value_traits<T>::from_text for this array's element type");
    static_assert(!std::is_same_v<element, std::string_view>,
                  "pqscope: read arrays of text as std::vector<std::string> (an element may be unescaped, so it "
                  "cannot point into the result)");
    std::vector<T> out;
    detail::parse_array(s, "a one-dimensional array (std::vector)",
                        [&](std::size_t index, std::string_view text, bool is_null) {
                          const std::string where = "element " + std::to_string(index + 1) + " of array " +
                                                    detail::quote_value(s);
                          if (is_null) {
                            if constexpr (detail::is_optional<T>::value) {
                              out.emplace_back();
                              return;
                            } else {
                              throw conversion_error(where +
                                                     " is NULL; read the array as std::vector<std::optional<T>>");
                            }
                          }
                          try {
                            out.push_back(T(value_traits<element>::from_text(text)));
                          } catch (const conversion_error& e) {
                            throw conversion_error(where + ": " + e.what());
                          }
                        },
                        delimiter);
    return out;
  }

 private:
  static void append(std::string& out, const element& e) {
    decltype(auto) text = value_traits<element>::to_text(e);
    detail::append_array_element(out, std::string_view(text));
  }
};

class params;

namespace detail {

// PostgreSQL's limit on the parameters of one statement (the protocol counts them in 16 bits).
inline constexpr std::size_t max_params = 65535;

// Parameters of one statement, in the form libpq takes them. Values that are not
// already NUL-terminated strings are copied into `storage_`, which of() reserves
// up front (one string per parameter at most), so that it never reallocates and
// the pointers in `values_` stay valid.
class param_list {
 public:
  param_list() = default;
  param_list(const param_list&) = delete;
  param_list& operator=(const param_list&) = delete;
  // Moves rebase the values kept in the list's own buffer.
  param_list(param_list&& o) noexcept { take(o); }
  param_list& operator=(param_list&& o) noexcept {
    if (this != &o) take(o);
    return *this;
  }
  ~param_list() = default;

  template <class... Ts>
  static param_list of(const Ts&... vs) {
    param_list p;
    p.owned_capacity_ = sizeof...(Ts);
    (p.add(vs), ...);
    return p;
  }

  // The same list made again for new values, keeping its memory (COPY rows).
  template <class... Ts>
  void assign(const Ts&... vs) {
    storage_.clear();
    values_.clear();
    types_.clear();
    n_ = 0;
    inline_used_ = 0;
    owned_capacity_ = sizeof...(Ts);
    (add(vs), ...);
  }

  template <class T>
  void add(const T& v) {
    using U = std::decay_t<T>;
    if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t>) {
      push_null(0);
    } else if constexpr (is_optional<U>::value) {
      if (v)
        add(*v);
      else
        push_null(traits_oid<typename U::value_type>::value);
    } else if constexpr (std::is_array_v<T> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>) {
      // a string literal or char buffer: never null; read up to its first NUL, and
      // never past its end when it has none
      const std::size_t n = ::strnlen(v, std::extent_v<T>);
      push_text(std::string_view(v, n), 0, /*terminated=*/n < std::extent_v<T>);
    } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
      if (v == nullptr)
        push_null(0);
      else
        push_text(std::string_view(v), 0, /*terminated=*/true);
    } else if constexpr (std::is_same_v<U, std::string>) {
      push_text(v, 0, true);
    } else if constexpr (std::is_same_v<U, params>) {
      splice(v);
    } else if constexpr (is_chars_number<U>::value) {
      char buf[24];
      const auto r = std::to_chars(buf, buf + sizeof buf, v);
      push_number(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)), value_traits<U>::oid);
    } else if constexpr (std::is_same_v<U, char>) {
      static_assert(!std::is_same_v<U, char>,
                    "pqscope: pass a char as std::string(1, c) (text) or as an int (number)");
    } else {
      static_assert(has_to_text<U>::value,
                    "pqscope: no value_traits<T>::to_text for this parameter type; specialize "
                    "pqscope::value_traits<T> (see params.hpp)");
      decltype(auto) text = value_traits<U>::to_text(v);
      using R = std::decay_t<decltype(text)>;
      if constexpr (std::is_same_v<R, std::string> && !std::is_reference_v<decltype(text)>)
        push_owned(std::move(text), traits_oid<U>::value);  // a fresh string: moved, not copied
      else if constexpr (std::is_same_v<R, std::string>)
        push_owned(std::string(text), traits_oid<U>::value);
      else
        push_text(std::string_view(text), traits_oid<U>::value, false);
    }
  }

  [[nodiscard]] int size() const noexcept { return static_cast<int>(n_); }
  [[nodiscard]] const char* const* values() const noexcept {
    return n_ == 0 ? nullptr : n_ <= inline_params ? inline_values_ : values_.data();
  }
  [[nodiscard]] const unsigned* types() const noexcept {
    return n_ == 0 ? nullptr : n_ <= inline_params ? inline_types_ : types_.data();
  }

 private:
  void push(const char* value, unsigned oid);
  void push_null(unsigned oid);
  void check_nul(std::string_view s) const;
  void push_text(std::string_view s, unsigned oid, bool terminated);
  void push_owned(std::string s, unsigned oid);
  // Digits (no NUL to look for), inline if they fit.
  void push_number(std::string_view digits, unsigned oid);
  // Into the inline buffer if it fits; nullptr if not.
  const char* copy_inline(std::string_view s) noexcept;
  void take(param_list& o) noexcept;
  // Every value of a params list, pointing into it (it lives as long as the call).
  void splice(const params& p);

  // The pointers and types of the first few parameters stay inline: no allocation
  // for them. Converted values live in storage_, whose buffer stays put when the
  // list moves, so the pointers into it stay valid; it is reserved once, for every
  // parameter, before the first one is stored. Short converted values (numbers,
  // mostly) are kept in inline_text_ instead.
  static constexpr std::size_t inline_params = 8;
  static constexpr std::size_t inline_text = 96;
  std::size_t n_ = 0;
  std::size_t inline_used_ = 0;
  char inline_text_[inline_text] = {};
  std::size_t owned_capacity_ = 0;
  const char* inline_values_[inline_params] = {};
  unsigned inline_types_[inline_params] = {};
  std::vector<std::string> storage_;
  std::vector<const char*> values_;  // all of them, past inline_params
  std::vector<unsigned> types_;
};

// How many parameters values... make: one each, a params list its size.
template <class T>
std::size_t param_count_of(const T& v) noexcept;
template <class... Ts>
std::size_t param_count(const Ts&... vs) noexcept {
  return (std::size_t{0} + ... + param_count_of(vs));
}

}  // namespace detail

// Parameters built at run time, for a statement whose parameter count is known only
// then: a VALUES list of N rows, an IN list of N values. add() converts a value as
// execute() would (any parameter type, NULL included), and the list goes wherever a
// statement takes parameters, alone or among others:
//   pqscope::params p;
//   for (const auto& [id, name] : rows) p.add(id).add(name);
//   c.execute("INSERT INTO t (id, name) VALUES " + pqscope::values_list(rows.size(), 2), p);
// The placeholder count is checked as for any statement, against the whole count.
// PostgreSQL takes 65,535 parameters at the most: past that, add() throws usage_error.
class params {
 public:
  params() = default;

  template <class T>
  params& add(const T& v) {
    static_assert(!std::is_same_v<T, params>, "pqscope: params::add(params): pass both to execute() instead");
    detail::param_list one;
    one.assign(v);
    push(one.values()[0], one.types()[0]);
    return *this;
  }

  [[nodiscard]] std::size_t size() const noexcept { return types_.size(); }
  [[nodiscard]] bool empty() const noexcept { return types_.empty(); }
  void clear() noexcept {
    text_.clear();
    null_.clear();
    types_.clear();
  }
  void reserve(std::size_t n) {
    text_.reserve(n);
    null_.reserve(n);
    types_.reserve(n);
  }

 private:
  friend class detail::param_list;
  void push(const char* value, unsigned oid);

  std::vector<std::string> text_;  // "" for NULL
  std::vector<bool> null_;
  std::vector<unsigned> types_;
};

// "($1, $2), ($3, $4), ..." : `rows` groups of `columns` placeholders, numbered from
// `first`, for a VALUES list whose values are a params list.
PQSCOPE_DECL std::string values_list(std::size_t rows, std::size_t columns, std::size_t first = 1);

template <class T>
std::size_t detail::param_count_of(const T& v) noexcept {
  if constexpr (std::is_same_v<T, params>)
    return v.size();
  else
    return 1;
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/params.ipp>
#endif
