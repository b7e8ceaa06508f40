#pragma once
// The rows the COPY benchmarks load, and the floor's way of writing them in COPY's
// text format (the least work: std::to_chars, the timestamp's digits written
// directly, a byte loop escaping the name). Shared by bench_copy.cpp and
// client_cpu.cpp, so that both measure against the same floor.

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace bench::copy_rows {

using sys_time = std::chrono::system_clock::time_point;

constexpr std::int64_t base_micros = 1704067200LL * 1000000;  // 2024-01-01 00:00:00 UTC
constexpr std::int64_t step_micros = 1000003;                 // a fraction of a second that varies

struct row {
  std::int64_t id;
  std::string name;
  int qty;
  double price;  // whole cents: cents / 100.0
  sys_time created;
};

inline std::vector<row> make_rows(std::int64_t n) {
  std::vector<row> rows;
  rows.reserve(static_cast<std::size_t>(n));
  std::uint64_t x = 0x9e3779b97f4a7c15ULL;
  for (std::int64_t id = 1; id <= n; ++id) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;  // an LCG: the same rows every run
    std::string name = "customer " + std::to_string(id);
    if (id % 7 == 0) name += "\tnote";
    if (id % 11 == 0) name += " C:\\data\\file";
    if (id % 101 == 0) name += "\nsecond line";
    if (id % 17 == 0) name += " caf\xc3\xa9";
    name.append(static_cast<std::size_t>((x >> 33) % 24), 'x');  // 10 to ~60 bytes: some fit SSO, some do not
    const int qty = static_cast<int>((x >> 20) % 1000) - 100;
    const double price = static_cast<double>((x >> 40) % 10000000) / 100.0;
    const sys_time created{std::chrono::microseconds(base_micros + id * step_micros)};
    rows.push_back({id, std::move(name), qty, price, created});
  }
  return rows;
}

struct civil {
  int y;
  unsigned m, d;
};
// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
inline civil civil_from_days(std::int64_t z) {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<int>(static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2)), m, d};
}

inline char* escape_name(char* p, const std::string& name) {
  for (char c : name) {
    switch (c) {
      case '\\': *p++ = '\\'; *p++ = '\\'; break;
      case '\t': *p++ = '\\'; *p++ = 't'; break;
      case '\n': *p++ = '\\'; *p++ = 'n'; break;
      case '\r': *p++ = '\\'; *p++ = 'r'; break;
      default: *p++ = c;
    }
  }
  return p;
}

struct split_time {
  civil date;
  int secs, micros;  // of the day
};
inline split_time split(sys_time t) {
  const std::int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(t.time_since_epoch()).count();
  const std::int64_t day_us = 86400LL * 1000000;
  const std::int64_t days = us >= 0 ? us / day_us : (us - day_us + 1) / day_us;
  const std::int64_t in_day = us - days * day_us;
  return {civil_from_days(days), static_cast<int>(in_day / 1000000), static_cast<int>(in_day % 1000000)};
}

inline char* digits(char* p, unsigned v, int width) {
  for (int i = width - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
  return p + width;
}

// One row in COPY's text format at p (room for it is the caller's); returns the end.
// The floor: std::to_chars for the numbers, the timestamp's digits written directly.
inline char* format_row(char* p, const row& r) {
  char* const room = p + 64;  // enough for any int64, int or %.2f price below 1e40
  p = std::to_chars(p, room, r.id).ptr;
  *p++ = '\t';
  p = escape_name(p, r.name);
  *p++ = '\t';
  p = std::to_chars(p, p + 16, r.qty).ptr;
  *p++ = '\t';
  p = std::to_chars(p, p + 64, r.price, std::chars_format::fixed, 2).ptr;
  *p++ = '\t';
  const split_time t = split(r.created);
  p = digits(p, static_cast<unsigned>(t.date.y), 4);
  *p++ = '-';
  p = digits(p, t.date.m, 2);
  *p++ = '-';
  p = digits(p, t.date.d, 2);
  *p++ = ' ';
  p = digits(p, static_cast<unsigned>(t.secs / 3600), 2);
  *p++ = ':';
  p = digits(p, static_cast<unsigned>(t.secs / 60 % 60), 2);
  *p++ = ':';
  p = digits(p, static_cast<unsigned>(t.secs % 60), 2);
  *p++ = '.';
  p = digits(p, static_cast<unsigned>(t.micros), 6);
  std::memcpy(p, "+00\n", 4);
  return p + 4;
}

}  // namespace bench::copy_rows
