#define BOOST_TEST_MODULE types
#include <boost/test/unit_test.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

// Everyday types as parameters and as field::as<T>(): time points, dates, bytea and
// one-dimensional arrays. Random values come from a seeded generator (the seed is
// printed with any failure; PQSCOPE_TYPES_SEED picks another). Each value goes to the
// server and back, and the server's own reading of it (epoch, day number, hex, the
// unnested elements) is compared too, so that a mistake made the same way in both
// directions still shows.

namespace {

using pqscope::connection;
using pqtest::for_each_target;
using sys_time = std::chrono::system_clock::time_point;  // nanoseconds with libstdc++
using us_time = std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds>;
using bytes = std::vector<std::byte>;

constexpr int values_per_type = 200;  // per type and target
constexpr int arrays_per_type = 100;  // per array type and target, up to 8 elements each

std::uint64_t seed() {
  const char* s = std::getenv("PQSCOPE_TYPES_SEED");
  return s != nullptr && *s != '\0' ? std::strtoull(s, nullptr, 10) : 20240611;
}

// ---- printing, for failure messages

template <class T>
std::string show(const std::optional<T>& v);
template <class T>
std::string show(const std::vector<T>& v);

std::string show(bool v) { return v ? "true" : "false"; }
template <class T, std::enable_if_t<std::is_integral_v<T>, int> = 0>
std::string show(T v) {
  return std::to_string(v);
}
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
std::string show(T v) {
  std::ostringstream os;
  os.precision(std::numeric_limits<T>::max_digits10);
  os << v << " (hexfloat " << std::hexfloat << v << ")";
  return os.str();
}
std::string show(const std::string& s) {
  std::string out = "\"";
  for (const char ch : s) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || ch == '"' || ch == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}
template <class D>
std::string show(std::chrono::time_point<std::chrono::system_clock, D> t) {
  return std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count()) +
         " us since 1970 (" + pqscope::value_traits<us_time>::to_text(std::chrono::floor<std::chrono::microseconds>(t)) +
         ")";
}
std::string show(const pqscope::timestamp_or_infinity& t) {
  return t.is_finite() ? show(t.value()) : t.is_infinity() ? "infinity" : "-infinity";
}
std::string show(const pqscope::date& d) {
  return std::to_string(d.year) + "-" + std::to_string(d.month) + "-" + std::to_string(d.day);
}
std::string show(const bytes& b) {
  std::string out = "bytes[" + std::to_string(b.size()) + "] ";
  for (const std::byte x : b) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(x));
    out += buf;
  }
  return out;
}
template <class T>
std::string show(const std::optional<T>& v) {
  return v ? show(*v) : "NULL";
}
template <class T>
std::string show(const std::vector<T>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + show(static_cast<const T&>(v[i]));
  return out + "]";
}
std::string show(const std::vector<bool>& v) {
  std::string out = "[";
  for (std::size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + show(static_cast<bool>(v[i]));
  return out + "]";
}

// ---- exact equality: floating point bit for bit (any NaN equals any NaN)

template <class T>
bool same(const std::optional<T>& a, const std::optional<T>& b);
template <class T>
bool same(const std::vector<T>& a, const std::vector<T>& b);

template <class T>
bool same(const T& a, const T& b) {
  if constexpr (std::is_floating_point_v<T>)
    return (std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b));
  else
    return a == b;
}
template <class T>
bool same(const std::optional<T>& a, const std::optional<T>& b) {
  return a.has_value() == b.has_value() && (!a || same(*a, *b));
}
template <class T>
bool same(const std::vector<T>& a, const std::vector<T>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!same(static_cast<const T&>(a[i]), static_cast<const T&>(b[i]))) return false;
  return true;
}
bool same(const std::vector<bool>& a, const std::vector<bool>& b) { return a == b; }

// Reports a mismatch with the value and the seed; after a few, stays quiet for this type.
class checker {
 public:
  explicit checker(std::string what) : what_(std::move(what)) {}
  template <class T>
  void expect_same(const T& sent, const T& got, const std::string& how) {
    expect(same(sent, got), sent, "got " + show(got), how);
  }
  template <class T>
  void expect(bool ok, const T& sent, const std::string& got, const std::string& how) {
    ++checks_;
    if (ok || ++failures_ > 5) return;
    BOOST_ERROR(what_ << ", " << how << ": sent " << show(sent) << ", " << got << " (seed " << seed() << ")");
  }
  ~checker() {
    BOOST_TEST(failures_ == 0, what_ << ": " << failures_ << " of " << checks_ << " checks failed (seed " << seed() << ")");
    BOOST_TEST_MESSAGE(what_ << ": " << checks_ << " checks");
  }
  checker(const checker&) = delete;
  checker& operator=(const checker&) = delete;

 private:
  std::string what_;
  int checks_ = 0, failures_ = 0;
};

// ---- random values

using rng = std::mt19937_64;

template <class T>
T uniform(rng& r, T lo, T hi) {
  return std::uniform_int_distribution<T>(lo, hi)(r);
}
bool chance(rng& r, int percent) { return uniform(r, 0, 99) < percent; }

template <class T>
struct tag {};

template <class T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool>, int> = 0>
T random_value(rng& r, tag<T>) {
  if (chance(r, 10)) return chance(r, 50) ? std::numeric_limits<T>::min() : std::numeric_limits<T>::max();
  if (chance(r, 30)) return static_cast<T>(uniform<int>(r, -100, 100));
  return uniform(r, std::numeric_limits<T>::min(), std::numeric_limits<T>::max());
}
bool random_value(rng& r, tag<bool>) { return chance(r, 50); }
// Any bit pattern: normal, subnormal, zero of either sign, infinities, NaN.
template <class T, std::enable_if_t<std::is_floating_point_v<T>, int> = 0>
T random_value(rng& r, tag<T>) {
  using bits_t = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
  T v{};
  if (chance(r, 30)) return static_cast<T>(uniform<int>(r, -1000, 1000)) / static_cast<T>(8);
  const auto bits = static_cast<bits_t>(r());
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// Text built from pieces an array literal or a quoting mistake would trip on.
std::string random_value(rng& r, tag<std::string>) {
  static const char* const pieces[] = {"a",  "Z",    "0",  " ",    ",",  "{",    "}",  "\"",   "\\", "\\\\",
                                       "'",  "NULL", "null", "\t", "\n", "\r",  "é",  "日本", "🐘", "$1",
                                       "[",  "]",    ":",  "=",    "x y", "\\x", "NaN", "-",    "\"\"", "{}"};
  if (chance(r, 5)) return "";
  if (chance(r, 5)) return "NULL";
  std::string s;
  const int n = uniform(r, 1, 8);
  for (int i = 0; i < n; ++i) s += pieces[uniform<std::size_t>(r, 0, std::size(pieces) - 1)];
  return s;
}

// Microseconds since 1970 across a range: mostly around today, often far away, in
// whole seconds or with few fractional digits as often as with six.
std::int64_t random_micros(rng& r, std::int64_t lo, std::int64_t hi) {
  constexpr std::int64_t us_per_year = 31'556'952'000'000;
  std::int64_t v = 0;
  switch (uniform(r, 0, 3)) {
    case 0: v = uniform(r, lo, hi); break;
    case 1: v = uniform(r, -200 * us_per_year, 200 * us_per_year); break;  // 1770 .. 2170
    case 2: v = uniform(r, -5 * us_per_year, 60 * us_per_year); break;
    default: v = uniform(r, std::max(lo, -4000 * us_per_year), std::int64_t{0}); break;  // before 1970, some BC
  }
  switch (uniform(r, 0, 3)) {
    case 0: v -= ((v % 1'000'000) + 1'000'000) % 1'000'000; break;  // whole seconds
    case 1: v -= ((v % 1'000) + 1'000) % 1'000; break;              // milliseconds
    default: break;
  }
  return std::min(std::max(v, lo), hi);
}

// std::chrono::system_clock::time_point, whole microseconds (what the server keeps).
constexpr std::int64_t sys_lo = std::numeric_limits<std::int64_t>::min() / 1000 + 1;
constexpr std::int64_t sys_hi = std::numeric_limits<std::int64_t>::max() / 1000 - 1;
sys_time random_value(rng& r, tag<sys_time>) {
  return sys_time(std::chrono::microseconds(random_micros(r, sys_lo, sys_hi)));
}
// Microsecond time points reach PostgreSQL's whole range below 294247 AD: 4714-11-24 BC onwards.
constexpr std::int64_t pg_min_micros = -210866803200000000;
us_time random_value(rng& r, tag<us_time>) {
  return us_time(std::chrono::microseconds(
      random_micros(r, pg_min_micros, std::numeric_limits<std::int64_t>::max() - 1)));
}
pqscope::timestamp_or_infinity random_value(rng& r, tag<pqscope::timestamp_or_infinity>) {
  if (chance(r, 10)) return pqscope::timestamp_or_infinity::infinity();
  if (chance(r, 10)) return pqscope::timestamp_or_infinity::minus_infinity();
  return random_value(r, tag<sys_time>{});
}

constexpr std::int64_t pg_min_date = -2440588;  // 4714-11-24 BC
constexpr std::int64_t pg_max_date = 2145031948;  // 5874897-12-31
pqscope::date random_value(rng& r, tag<pqscope::date>) {
  switch (uniform(r, 0, 2)) {
    case 0: return pqscope::date::from_days_since_epoch(uniform(r, pg_min_date, pg_max_date));
    case 1: return pqscope::date::from_days_since_epoch(uniform<std::int64_t>(r, -80000, 80000));
    default: return pqscope::date::from_days_since_epoch(uniform<std::int64_t>(r, pg_min_date, -719000));  // BC
  }
}

bytes random_value(rng& r, tag<bytes>) {
  bytes b(uniform<std::size_t>(r, 0, chance(r, 10) ? 2000 : 40));
  for (auto& x : b) x = static_cast<std::byte>(uniform(r, 0, 255));
  return b;
}

template <class T>
std::optional<T> random_value(rng& r, tag<std::optional<T>>) {
  if (chance(r, 20)) return std::nullopt;
  return random_value(r, tag<T>{});
}
template <class T>
std::vector<T> random_value(rng& r, tag<std::vector<T>>) {
  std::vector<T> v;
  const int n = chance(r, 10) ? 0 : uniform(r, 1, 8);
  for (int i = 0; i < n; ++i) v.push_back(random_value(r, tag<T>{}));
  return v;
}

template <class T>
struct optional_inner {
  using type = T;
};
template <class T>
struct optional_inner<std::optional<T>> {
  using type = T;
};
template <class T>
constexpr bool is_optional_v = !std::is_same_v<typename optional_inner<T>::type, T>;

template <class T>
std::vector<T> random_values(rng& r, int n) {
  std::vector<T> v;
  for (int i = 0; i < n; ++i) v.push_back(random_value(r, tag<T>{}));
  return v;
}

std::int64_t micros_of(sys_time t) {
  return std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
}
std::int64_t micros_of(us_time t) { return t.time_since_epoch().count(); }

std::string hex_of(const bytes& b) {
  std::string out;
  for (const std::byte x : b) {
    char buf[4];
    std::snprintf(buf, sizeof buf, "%02x", static_cast<unsigned>(x));
    out += buf;
  }
  return out;
}

// Sends v as $1::pg_type and reads it back as T.
template <class T>
void echo_all(connection& c, const std::vector<T>& values, const std::string& pg_type, const std::string& what) {
  checker ck{what + " as " + pg_type};
  for (const T& v : values) ck.expect_same(v, c.query_value<T>("SELECT $1::" + pg_type, v), "SELECT $1::" + pg_type);
}

// The elements of an array parameter as the server split them, through unnest(), each
// read as a scalar: proves the literal pqscope wrote, independently of its array parser.
template <class E>
void check_elements(connection& c, checker& ck, const std::vector<E>& sent, const std::string& pg_type) {
  using scalar = typename optional_inner<E>::type;
  const pqscope::result r =
      c.execute("SELECT x FROM unnest($1::" + pg_type + "[]) WITH ORDINALITY AS u(x, i) ORDER BY i", sent);
  std::vector<E> got;
  for (const pqscope::row& row : r) {
    if constexpr (is_optional_v<E>)
      got.push_back(row[0].as<std::optional<scalar>>());
    else
      got.push_back(row[0].as<scalar>());
  }
  ck.expect_same(sent, got, "unnest($1::" + pg_type + "[])");
}

// Random arrays of E: echoed as pg_type[], split by the server, and of the right array type.
template <class E>
void arrays_round_trip(connection& c, rng& r, const std::string& pg_type, const std::string& pg_array_name) {
  checker ck{"std::vector<" + pg_type + (is_optional_v<E> ? " or NULL>" : ">")};
  for (int i = 0; i < arrays_per_type; ++i) {
    const auto v = random_value(r, tag<std::vector<E>>{});
    ck.expect_same(v, c.query_value<std::vector<E>>("SELECT $1::" + pg_type + "[]", v), "SELECT $1::" + pg_type + "[]");
    check_elements(c, ck, v, pg_type);
  }
  if (!pg_array_name.empty())
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::vector<E>{}) == pg_array_name);
}

// The message of the conversion_error that reading T from the query throws.
template <class T>
std::string conversion_message(connection& c, const std::string& sql) {
  try {
    (void)c.query_value<T>(sql);
  } catch (const pqscope::conversion_error& e) {
    return e.what();
  }
  return "no conversion_error";
}

// Column j of the row, read as the type it was written from.
template <class Tuple, std::size_t... J>
void compare_row(checker& ck, const Tuple& sent, const pqscope::row& got, std::index_sequence<J...>) {
  (ck.expect_same(std::get<J>(sent), got[J].as<std::tuple_element_t<J, Tuple>>(),
                  "column " + std::string(got[J].name())),
   ...);
}

}  // namespace

BOOST_AUTO_TEST_CASE(scalars_round_trip_with_random_values) {
  BOOST_TEST_MESSAGE("seed " << seed());
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    rng r{seed()};
    echo_all(c, random_values<std::int16_t>(r, values_per_type), "int2", "std::int16_t");
    echo_all(c, random_values<std::int32_t>(r, values_per_type), "int4", "std::int32_t");
    echo_all(c, random_values<std::int64_t>(r, values_per_type), "int8", "std::int64_t");
    echo_all(c, random_values<std::uint64_t>(r, values_per_type), "numeric", "std::uint64_t");
    echo_all(c, random_values<float>(r, values_per_type), "float4", "float");
    echo_all(c, random_values<double>(r, values_per_type), "float8", "double");
    echo_all(c, random_values<bool>(r, 20), "bool", "bool");
    const auto strings = random_values<std::string>(r, values_per_type);
    echo_all(c, strings, "text", "std::string");
    checker ck{"std::string length"};
    for (const auto& s : strings)
      ck.expect(c.query_value<long>("SELECT octet_length($1::text)", s) == static_cast<long>(s.size()), s,
                "another length", "octet_length");
  });
}

BOOST_AUTO_TEST_CASE(time_points_round_trip_with_random_values) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    rng r{seed()};
    auto check = [&](const auto& values, const std::string& what) {
      using tp = typename std::decay_t<decltype(values)>::value_type;
      checker ck{what};
      for (const tp& v : values) {
        // Both directions against the server's own arithmetic: the epoch it reads from our
        // text, and our reading of the text it writes for that instant.
        const pqscope::row row =
            c.execute("SELECT $1::timestamptz, (extract(epoch FROM $1::timestamptz) * 1000000)::int8", v)[0];
        ck.expect(row[1].as<std::int64_t>() == micros_of(v), v, "server epoch " + row[1].as<std::string>() + " us",
                  "extract(epoch)");
        ck.expect_same(v, row[0].as<tp>(), "SELECT $1::timestamptz");
      }
    };
    check(random_values<sys_time>(r, values_per_type), "system_clock::time_point");
    check(random_values<us_time>(r, values_per_type), "time_point<system_clock, microseconds>");
    // The edges of each range, and the last microsecond before the epoch.
    check(std::vector<sys_time>{sys_time(std::chrono::microseconds(sys_lo)), sys_time(std::chrono::microseconds(sys_hi)),
                                sys_time(std::chrono::microseconds(-1)), sys_time{}},
          "system_clock::time_point edges");
    check(std::vector<us_time>{us_time(std::chrono::microseconds(pg_min_micros)),
                               us_time(std::chrono::microseconds(std::numeric_limits<std::int64_t>::max() - 1))},
          "microsecond time_point edges");
    // extract(epoch) rounds the very last microsecond int64 holds; the echo is exact.
    echo_all(c, std::vector<us_time>{us_time::max()}, "timestamptz", "time_point<microseconds>::max()");

    // Nanoseconds are dropped toward the past, as std::chrono::floor does.
    const sys_time ns = sys_time(std::chrono::nanoseconds(1'700'000'000'123'456'789));
    BOOST_TEST((c.query_value<sys_time>("SELECT $1", ns) == std::chrono::floor<std::chrono::microseconds>(ns)));
    const sys_time before = sys_time(std::chrono::nanoseconds(-1));
    BOOST_TEST(micros_of(c.query_value<sys_time>("SELECT $1", before)) == -1);
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", ns) == "timestamp with time zone");

    // Beyond the range of the type it is read into, or of PostgreSQL: conversion_error.
    BOOST_CHECK_THROW((void)c.query_value<sys_time>("SELECT '2300-01-01 00:00:00+00'::timestamptz"),
                      pqscope::conversion_error);
    BOOST_CHECK_THROW((void)c.query_value<sys_time>("SELECT '1600-01-01 00:00:00+00'::timestamptz"),
                      pqscope::conversion_error);
    BOOST_TEST(micros_of(c.query_value<us_time>("SELECT '2300-01-01 00:00:00+00'::timestamptz")) ==
               10'413'792'000'000'000);
    BOOST_CHECK_THROW(c.execute("SELECT $1", us_time(std::chrono::microseconds(pg_min_micros - 1))),
                      pqscope::conversion_error);
  });
}

BOOST_AUTO_TEST_CASE(time_points_are_the_same_instant_in_every_time_zone) {
  // Zones with half and quarter hours, far east and west, and local mean time before
  // 1911 in Paris (an offset in seconds: +00:09:21).
  const std::vector<std::string> zones = {"UTC",          "America/Los_Angeles", "Asia/Kathmandu",
                                          "Asia/Kolkata", "Europe/Paris",        "Pacific/Kiritimati",
                                          "America/St_Johns", "Australia/Lord_Howe", "Pacific/Pago_Pago"};
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    rng r{seed()};
    const auto values = random_values<sys_time>(r, 40);
    for (const auto& zone : zones) {
      BOOST_TEST_CONTEXT("TimeZone " << zone) {
        pqscope::transaction tx{c};
        c.set_local("TimeZone", zone);
        checker ck{"time_point in " + zone};
        for (const sys_time& v : values) {
          ck.expect_same(v, c.query_value<sys_time>("SELECT $1::timestamptz", v), "SELECT $1::timestamptz");
          ck.expect(c.query_value<std::int64_t>("SELECT (extract(epoch FROM $1::timestamptz) * 1000000)::int8", v) ==
                        micros_of(v),
                    v, "another epoch", "extract(epoch)");
          // timestamp without time zone is read as UTC: the UTC wall time is the same instant.
          ck.expect_same(v, c.query_value<sys_time>("SELECT $1::timestamptz AT TIME ZONE 'UTC'", v),
                         "AT TIME ZONE 'UTC'");
        }
        tx.commit();
      }
    }
    pqscope::transaction tx{c};
    c.set_local("TimeZone", "Europe/Paris");
    const sys_time y1900 = sys_time(std::chrono::seconds(-2208988800));
    BOOST_TEST(c.query_value<std::string>("SELECT $1::timestamptz::text", y1900) == "1900-01-01 00:09:21+00:09:21");
    BOOST_TEST(micros_of(c.query_value<sys_time>("SELECT '1900-01-01 00:09:21+00:09:21'::timestamptz")) ==
               micros_of(y1900));
    c.set_local("TimeZone", "Asia/Kathmandu");
    BOOST_TEST(c.query_value<std::string>("SELECT $1::timestamptz::text", sys_time{}) == "1970-01-01 05:30:00+05:30");
    BOOST_TEST(c.query_value<std::string>("SELECT $1::timestamptz::text", sys_time(std::chrono::hours(24 * 365 * 30))) ==
               "1999-12-25 05:45:00+05:45");
    tx.commit();
  });
}

BOOST_AUTO_TEST_CASE(time_points_need_datestyle_iso_to_be_read) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    // 2 January, not 1 February: the parameter is ISO with an offset, so DateStyle's
    // order and TimeZone do not change what the server reads.
    const sys_time jan2 = sys_time(std::chrono::seconds(1704164645) + std::chrono::microseconds(123456));
    for (const char* style : {"SQL, DMY", "SQL, MDY", "Postgres, DMY", "German", "ISO, DMY", "ISO, YMD"}) {
      BOOST_TEST_CONTEXT("DateStyle " << style) {
        pqscope::transaction tx{c};
        c.set_local("DateStyle", style);
        c.set_local("TimeZone", "America/New_York");
        BOOST_TEST(c.query_value<std::int64_t>("SELECT (extract(epoch FROM $1::timestamptz) * 1000000)::int8", jan2) ==
                   micros_of(jan2));
        BOOST_TEST(c.query_value<int>("SELECT extract(month FROM $1::timestamptz AT TIME ZONE 'UTC')::int", jan2) == 1);
        BOOST_TEST(c.query_value<bool>("SELECT $1 = DATE '2024-01-02'", pqscope::date{2024, 1, 2}));
        if (std::string_view(style).substr(0, 3) == "ISO") {
          BOOST_TEST(micros_of(c.query_value<sys_time>("SELECT $1::timestamptz", jan2)) == micros_of(jan2));
        } else {
          try {
            (void)c.query_value<sys_time>("SELECT $1::timestamptz AS created_at", jan2);
            BOOST_ERROR("a non-ISO timestamp was read");
          } catch (const pqscope::conversion_error& e) {
            const std::string what = e.what();
            BOOST_TEST(what.find("DateStyle") != std::string::npos, what);
            BOOST_TEST(what.find("created_at") != std::string::npos, what);
          }
          BOOST_CHECK_THROW((void)c.query_value<pqscope::date>("SELECT DATE '2024-01-02'"), pqscope::conversion_error);
        }
        tx.commit();
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(infinity_only_when_asked_for) {
  using pqscope::timestamp_or_infinity;
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    for (const char* sql : {"SELECT 'infinity'::timestamptz", "SELECT '-infinity'::timestamptz",
                            "SELECT 'infinity'::timestamp"}) {
      try {
        (void)c.query_value<sys_time>(sql);
        BOOST_ERROR("infinity read as a time_point: " << sql);
      } catch (const pqscope::conversion_error& e) {
        BOOST_TEST(std::string(e.what()).find("timestamp_or_infinity") != std::string::npos, e.what());
      }
    }
    BOOST_TEST(c.query_value<timestamp_or_infinity>("SELECT 'infinity'::timestamptz").is_infinity());
    BOOST_TEST(c.query_value<timestamp_or_infinity>("SELECT '-infinity'::timestamptz").is_minus_infinity());
    const auto finite = c.query_value<timestamp_or_infinity>("SELECT 'epoch'::timestamptz");
    BOOST_TEST(finite.is_finite());
    BOOST_TEST(micros_of(finite.value()) == 0);
    BOOST_CHECK_THROW((void)timestamp_or_infinity::infinity().value(), pqscope::conversion_error);
    BOOST_TEST(c.query_value<bool>("SELECT $1 = 'infinity'::timestamptz AND $2 = '-infinity'::timestamptz",
                                   timestamp_or_infinity::infinity(), timestamp_or_infinity::minus_infinity()));
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", timestamp_or_infinity::infinity()) ==
               "timestamp with time zone");
    BOOST_TEST((timestamp_or_infinity::minus_infinity() < timestamp_or_infinity(sys_time::min())));
    BOOST_TEST((timestamp_or_infinity(sys_time::max()) < timestamp_or_infinity::infinity()));

    rng r{seed()};
    echo_all(c, random_values<timestamp_or_infinity>(r, 50), "timestamptz", "timestamp_or_infinity");
    arrays_round_trip<timestamp_or_infinity>(c, r, "timestamptz", "timestamp with time zone[]");
    BOOST_CHECK_THROW((void)c.query_value<std::vector<sys_time>>("SELECT ARRAY['epoch', 'infinity']::timestamptz[]"),
                      pqscope::conversion_error);
    BOOST_CHECK_THROW((void)c.query_value<pqscope::date>("SELECT 'infinity'::date"), pqscope::conversion_error);
  });
}

BOOST_AUTO_TEST_CASE(dates_round_trip_with_random_values) {
  using pqscope::date;
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    rng r{seed()};
    auto values = random_values<date>(r, values_per_type);
    values.insert(values.end(), {date{-4713, 11, 24}, date{5874897, 12, 31}, date{0, 2, 29}, date{-1, 12, 31},
                                 date{1, 1, 1}, date{1969, 12, 31}, date{2000, 2, 29}, date{1900, 3, 1}});
    checker ck{"pqscope::date"};
    for (const date& d : values) {
      const auto row = c.execute("SELECT $1::date, $1::date - DATE '1970-01-01'", d)[0];
      ck.expect(row[1].as<std::int64_t>() == d.days_since_epoch(), d, "server day " + row[1].as<std::string>(),
                "date - 1970-01-01");
      ck.expect_same(d, row[0].as<date>(), "SELECT $1::date");
      ck.expect_same(d, date::from_days_since_epoch(d.days_since_epoch()), "from_days_since_epoch");
    }
    BOOST_TEST(c.query_value<std::string>("SELECT $1::text", date{-43, 3, 15}) == "0044-03-15 BC");
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", date{}) == "date");
    BOOST_CHECK_THROW(c.execute("SELECT $1", date{2023, 2, 29}), pqscope::conversion_error);
    BOOST_CHECK_THROW(c.execute("SELECT $1", date{2024, 13, 1}), pqscope::conversion_error);
    BOOST_CHECK_THROW(c.execute("SELECT $1", date{-4713, 11, 23}), pqscope::conversion_error);
    arrays_round_trip<date>(c, r, "date", "date[]");
  });
}

BOOST_AUTO_TEST_CASE(bytea_holds_every_byte_value) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    bytes all(256);
    for (int i = 0; i < 256; ++i) all[static_cast<std::size_t>(i)] = static_cast<std::byte>(i);
    BOOST_TEST(c.query_value<bytes>("SELECT $1", all) == all);
    BOOST_TEST(c.query_value<std::string>("SELECT encode($1, 'hex')", all) == hex_of(all));
    BOOST_TEST(c.query_value<bytes>("SELECT decode($1, 'hex')", hex_of(all)) == all);
    BOOST_TEST(c.query_value<bytes>("SELECT $1", pqscope::bytes_view(all.data(), all.size())) == all);
    const char raw[] = "a\0b\\c";
    BOOST_TEST(c.query_value<std::int64_t>("SELECT length($1)", pqscope::bytes_view(raw, 5)) == 5);
    BOOST_TEST(c.query_value<bytes>("SELECT $1", bytes{}).empty());
    BOOST_TEST(!c.query_value<std::optional<bytes>>("SELECT $1", std::optional<bytes>()).has_value());
    // A byte vector is bytea, never an array of numbers.
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", all) == "bytea");
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", pqscope::bytes_view(all)) == "bytea");
    {
      // The escape output format reads the same.
      pqscope::transaction tx{c};
      c.set_local("bytea_output", "escape");
      BOOST_TEST(c.query_value<std::string>("SELECT $1::bytea::text", bytes{std::byte{0}, std::byte{'\\'}}) ==
                 "\\000\\\\");
      BOOST_TEST(c.query_value<bytes>("SELECT $1", all) == all);
      tx.commit();
    }
    BOOST_TEST(c.query_value<bytes>("SELECT 'ab'::text") == (bytes{std::byte{'a'}, std::byte{'b'}}));  // escape form
    BOOST_CHECK_THROW((void)c.query_value<bytes>("SELECT 'a\\q'::text"), pqscope::conversion_error);
    BOOST_CHECK_THROW((void)c.query_value<bytes>("SELECT '\\x0g'::text"), pqscope::conversion_error);

    rng r{seed()};
    checker ck{"bytea"};
    for (const bytes& b : random_values<bytes>(r, values_per_type)) {
      const auto row = c.execute("SELECT $1::bytea, encode($1::bytea, 'hex')", b)[0];
      ck.expect(row[1].as<std::string>() == hex_of(b), b, "server hex " + row[1].as<std::string>(), "encode");
      ck.expect_same(b, row[0].as<bytes>(), "SELECT $1::bytea");
    }
    arrays_round_trip<bytes>(c, r, "bytea", "bytea[]");
  });
}

BOOST_AUTO_TEST_CASE(arrays_round_trip_with_random_values) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    rng r{seed()};
    arrays_round_trip<std::int16_t>(c, r, "int2", "smallint[]");
    arrays_round_trip<std::int32_t>(c, r, "int4", "integer[]");
    arrays_round_trip<std::optional<std::int32_t>>(c, r, "int4", "integer[]");
    arrays_round_trip<std::int64_t>(c, r, "int8", "bigint[]");
    arrays_round_trip<std::uint64_t>(c, r, "numeric", "numeric[]");
    arrays_round_trip<float>(c, r, "float4", "real[]");
    arrays_round_trip<double>(c, r, "float8", "double precision[]");
    arrays_round_trip<std::optional<double>>(c, r, "float8", "double precision[]");
    arrays_round_trip<bool>(c, r, "bool", "boolean[]");
    arrays_round_trip<std::optional<bool>>(c, r, "bool", "boolean[]");
    arrays_round_trip<std::string>(c, r, "text", "");  // untyped, like std::string
    arrays_round_trip<std::optional<std::string>>(c, r, "text", "");
    arrays_round_trip<std::string>(c, r, "varchar", "");
    arrays_round_trip<sys_time>(c, r, "timestamptz", "timestamp with time zone[]");
    arrays_round_trip<std::optional<us_time>>(c, r, "timestamptz", "timestamp with time zone[]");
    arrays_round_trip<std::optional<bytes>>(c, r, "bytea", "bytea[]");
  });
}

BOOST_AUTO_TEST_CASE(array_text_is_quoted_exactly) {
  using ostr = std::optional<std::string>;
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    // The word NULL, a NULL element, empty strings and every character array syntax uses.
    const std::vector<ostr> tricky = {"NULL", std::nullopt, "null", "", " ", "a,b", "{x}", "\"", "\\", "\\\\\"",
                                      " lead", "trail ", "tab\there", "line\nbreak", "日本語 🐘", "[0:1]={1}", "NuLl"};
    BOOST_TEST(same(c.query_value<std::vector<ostr>>("SELECT $1::text[]", tricky), tricky));
    BOOST_TEST(c.query_value<int>("SELECT cardinality($1::text[])", tricky) == static_cast<int>(tricky.size()));
    BOOST_TEST(c.query_value<bool>("SELECT $1::text[] = ARRAY['NULL', NULL, 'null', '', ' ', 'a,b', '{x}', '\"', "
                                   "'\\', '\\\\\"', ' lead', 'trail ', E'tab\\there', E'line\\nbreak', "
                                   "'日本語 🐘', '[0:1]={1}', 'NuLl']",
                                   tricky));
    BOOST_TEST(c.query_value<bool>("SELECT ($1::text[])[2] IS NULL AND ($1::text[])[1] = 'NULL'", tricky));
    // What the server wrote for each, read by pqscope.
    BOOST_TEST(same(c.query_value<std::vector<ostr>>("SELECT ARRAY['NULL', NULL, '', 'a b', 'x\"y\\z', '{}']"),
                    std::vector<ostr>{"NULL", std::nullopt, "", "a b", "x\"y\\z", "{}"}));
    // A parameter of views writes the same literal.
    const std::vector<std::string_view> views = {"a,b", "NULL", ""};
    BOOST_TEST(c.query_value<std::vector<std::string>>("SELECT $1::text[]", views) ==
               (std::vector<std::string>{"a,b", "NULL", ""}));
    // uuid, json and jsonb arrays as text.
    BOOST_TEST(c.query_value<std::vector<std::string>>("SELECT ARRAY['{\"a\": [1, \"x,y\"]}'::jsonb]") ==
               (std::vector<std::string>{"{\"a\": [1, \"x,y\"]}"}));
    const std::vector<std::string> docs = {"{\"k\": \"v,\\\"w\\\"\"}", "[1, 2]", "null"};
    BOOST_TEST(c.query_value<std::vector<std::string>>("SELECT $1::jsonb[]", docs) == docs);
  });
}

BOOST_AUTO_TEST_CASE(arrays_the_server_writes) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    using oint = std::optional<int>;
    BOOST_TEST(same(c.query_value<std::vector<oint>>("SELECT ARRAY[1, NULL, 3]"), std::vector<oint>{1, std::nullopt, 3}));
    BOOST_TEST(same(c.query_value<std::vector<oint>>("SELECT ARRAY[NULL]::int[]"), std::vector<oint>{std::nullopt}));
    BOOST_TEST(c.query_value<std::vector<int>>("SELECT '{}'::int[]").empty());
    BOOST_TEST(c.query_value<std::vector<std::string>>("SELECT '{}'::text[]").empty());
    BOOST_TEST(!c.query_value<std::optional<std::vector<int>>>("SELECT NULL::int[]").has_value());
    BOOST_TEST(c.query_value<std::vector<int>>("SELECT ('[0:2]={1,2,3}'::int[])[:]") == (std::vector<int>{1, 2, 3}));
    BOOST_TEST(c.query_value<std::vector<double>>("SELECT ARRAY[1.5, 'NaN', '-Infinity']::float8[]").size() == 3u);
    BOOST_TEST(c.query_value<std::vector<bool>>("SELECT ARRAY[true, false]") == (std::vector<bool>{true, false}));
    BOOST_TEST(c.query_value<std::vector<std::int64_t>>("SELECT array_agg(g) FROM generate_series(1, 1000) g").size() ==
               1000u);

    const std::string null_element = conversion_message<std::vector<int>>(c, "SELECT ARRAY[1, NULL, 3] AS tags");
    BOOST_TEST(null_element.find("element 2") != std::string::npos, null_element);
    BOOST_TEST(null_element.find("std::optional") != std::string::npos, null_element);
    BOOST_TEST(null_element.find("tags") != std::string::npos, null_element);
    const std::string lower = conversion_message<std::vector<int>>(c, "SELECT '[0:1]={1,2}'::int[]");
    BOOST_TEST(lower.find("lower bound is 0") != std::string::npos, lower);
    const std::string two_d = conversion_message<std::vector<int>>(c, "SELECT '{{1,2},{3,4}}'::int[]");
    BOOST_TEST(two_d.find("2 dimensions") != std::string::npos, two_d);
    const std::string two_d_bounds = conversion_message<std::vector<int>>(c, "SELECT '[0:1][1:2]={{1,2},{3,4}}'::int[]");
    BOOST_TEST(two_d_bounds.find("2 dimensions") != std::string::npos, two_d_bounds);
    const std::string three_d = conversion_message<std::vector<int>>(c, "SELECT '{{{1}}}'::int[]");
    BOOST_TEST(three_d.find("3 dimensions") != std::string::npos, three_d);
    const std::string bad_element = conversion_message<std::vector<int>>(c, "SELECT ARRAY['1', 'x']::text[]");
    BOOST_TEST(bad_element.find("element 2") != std::string::npos, bad_element);
    BOOST_TEST(conversion_message<std::vector<int>>(c, "SELECT '{1,2}'::text").find("no conversion_error") != std::string::npos);
    BOOST_TEST(conversion_message<std::vector<int>>(c, "SELECT 'not an array'::text").find("array") != std::string::npos);
  });
}

// box is the one built-in type whose array elements are separated by ';' (its text has
// commas of its own): read by ',' the two boxes below were 8 "elements". The element
// texts must round-trip: each one, sent back as a box, is the box the server had.
BOOST_AUTO_TEST_CASE(box_arrays_split_on_their_own_delimiter) {
  using ostr = std::optional<std::string>;
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    const std::string two = "SELECT ARRAY['(1,2),(3,4)'::box, '(5,6),(7,8)'::box]";
    const auto boxes = c.query_value<std::vector<std::string>>(two);
    BOOST_TEST(boxes == (std::vector<std::string>{"(3,4),(1,2)", "(7,8),(5,6)"}),
               "read " << boxes.size() << " element(s)");
    for (std::size_t i = 0; i < boxes.size(); ++i)
      BOOST_TEST(c.query_value<bool>("SELECT $1::box ~= (" + two + ")[" + std::to_string(i + 1) + "]", boxes[i]));
    // Sent back whole: as text[] (a parameter of strings), cast by the server (box[] has
    // no equality operator: compare the texts).
    BOOST_TEST(c.query_value<bool>("SELECT $1::text[]::box[]::text = (" + two + ")::text", boxes));
    // NULL elements, and a box[] reached through a row and a named column.
    const auto with_null = c.query_value<std::vector<ostr>>("SELECT ARRAY[NULL, '(1,1),(0,0)'::box, NULL]");
    BOOST_TEST(same(with_null, std::vector<ostr>{std::nullopt, "(1,1),(0,0)", std::nullopt}));
    const pqscope::result r = c.execute("SELECT ARRAY['(0,0),(1,1)'::box] AS one, '{}'::box[] AS none, "
                                        "ARRAY[1, 2] AS ints");
    BOOST_TEST(r[0]["one"].as<std::vector<std::string>>() == (std::vector<std::string>{"(1,1),(0,0)"}));
    BOOST_TEST(r[0]["none"].as<std::vector<std::string>>().empty());
    BOOST_TEST(r[0]["ints"].as<std::vector<int>>() == (std::vector<int>{1, 2}));  // the others still split on ','
    BOOST_TEST(!c.query_value<std::optional<std::vector<std::string>>>("SELECT NULL::box[]").has_value());
    // A domain over box[] arrives as box[] (the server reports the base type).
    const std::string domain = pqtest::unique_name("pqscope_boxes");
    pqtest::observer().execute("CREATE DOMAIN " + domain + " AS box[]");
    try {
      BOOST_TEST(c.query_value<std::vector<std::string>>("SELECT (" + two + ")::" + domain).size() == 2u);
    } catch (const std::exception& e) {
      BOOST_ERROR(e.what());
    }
    pqtest::observer().execute("DROP DOMAIN " + domain);
    // Nested: two dimensions are refused, as for every array.
    const std::string nested =
        conversion_message<std::vector<std::string>>(c, "SELECT ARRAY[ARRAY['(1,2),(3,4)'::box], ARRAY['(5,6),(7,8)'::box]]");
    BOOST_TEST(nested.find("2 dimensions") != std::string::npos, nested);
  });
}

BOOST_AUTO_TEST_CASE(everyday_strings_and_numbers_keep_working) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    rng r{seed()};
    checker ck{"uuid as std::string"};
    for (int i = 0; i < 50; ++i) {
      char buf[40];
      const std::uint64_t a = r(), b = r();
      std::snprintf(buf, sizeof buf, "%08llx-%04llx-%04llx-%04llx-%012llx", static_cast<unsigned long long>(a >> 32),
                    static_cast<unsigned long long>((a >> 16) & 0xffff), static_cast<unsigned long long>(a & 0xffff),
                    static_cast<unsigned long long>(b >> 48), static_cast<unsigned long long>(b & 0xffffffffffff));
      const std::string u = buf;
      ck.expect(c.query_value<std::string>("SELECT $1::uuid", u) == u, u, "another uuid", "SELECT $1::uuid");
    }
    BOOST_TEST(c.query_value<std::string>("SELECT gen_random_uuid()").size() == 36u);
    // Written as jsonb writes it back: shorter keys first.
    const std::string doc = "{\"n\": [1, 2.5, null], \"u\": \"日本\", \"name\": \"x, \\\"y\\\"\"}";
    BOOST_TEST(c.query_value<std::string>("SELECT $1::json", doc) == doc);
    BOOST_TEST(c.query_value<std::string>("SELECT $1::jsonb ->> 'name'", doc) == "x, \"y\"");
    BOOST_TEST(c.query_value<std::string>("SELECT $1::jsonb", doc) == doc);
    BOOST_TEST(c.query_value<std::string>("SELECT 12345678901234567890.000000000001::numeric") ==
               "12345678901234567890.000000000001");
    BOOST_TEST(c.query_value<std::string>("SELECT $1::numeric * 2", std::string("0.1")) == "0.2");
    BOOST_TEST(c.query_value<bool>("SELECT $1", true));
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::vector<int>{}) == "integer[]");
  });
}

BOOST_AUTO_TEST_CASE(every_type_round_trips_through_a_table) {
  for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    pqtest::scratch_table tab{
        "id int PRIMARY KEY, i2 int2, i8 int8, n numeric, f4 float4, f8 float8, b bool, s text, ts timestamptz, "
        "tl timestamp, d date, by bytea, ai int4[], at text[], ats timestamptz[], aby bytea[], af float8[]"};
    rng r{seed()};
    using row_t = std::tuple<std::int16_t, std::int64_t, std::uint64_t, float, double, bool, std::optional<std::string>,
                             sys_time, us_time, pqscope::date, bytes, std::vector<std::optional<int>>,
                             std::vector<std::optional<std::string>>, std::vector<sys_time>, std::vector<bytes>,
                             std::optional<std::vector<double>>>;
    std::vector<row_t> rows;
    for (int i = 0; i < 60; ++i) {
      row_t v{random_value(r, tag<std::int16_t>{}),
              random_value(r, tag<std::int64_t>{}),
              random_value(r, tag<std::uint64_t>{}),
              random_value(r, tag<float>{}),
              random_value(r, tag<double>{}),
              random_value(r, tag<bool>{}),
              random_value(r, tag<std::optional<std::string>>{}),
              random_value(r, tag<sys_time>{}),
              random_value(r, tag<us_time>{}),
              random_value(r, tag<pqscope::date>{}),
              random_value(r, tag<bytes>{}),
              random_value(r, tag<std::vector<std::optional<int>>>{}),
              random_value(r, tag<std::vector<std::optional<std::string>>>{}),
              random_value(r, tag<std::vector<sys_time>>{}),
              random_value(r, tag<std::vector<bytes>>{}),
              random_value(r, tag<std::optional<std::vector<double>>>{})};
      rows.push_back(v);
      std::apply(
          [&](const auto&... col) {
            // The timestamp column takes the UTC wall time, which reads back as UTC.
            c.execute("INSERT INTO " + tab.name() +
                          " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10 AT TIME ZONE 'UTC', $11, $12, $13, $14, $15, "
                          "$16, $17)",
                      i, col...);
          },
          v);
    }
    const auto result = c.execute("SELECT i2, i8, n, f4, f8, b, s, ts, tl, d, by, ai, at, ats, aby, af FROM " +
                                  tab.name() + " ORDER BY id");
    BOOST_TEST(result.size() == rows.size());
    checker ck{"table row"};
    for (std::size_t i = 0; i < result.size() && i < rows.size(); ++i)
      compare_row(ck, rows[i], result[i], std::make_index_sequence<std::tuple_size_v<row_t>>{});
  });
}
