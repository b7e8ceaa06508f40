#pragma once
// The bodies of <pqscope/detail/text_codecs.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/text_codecs.hpp>

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL std::string quote_value(std::string_view s) {
  constexpr std::size_t limit = 80;
  if (s.size() <= limit) return "\"" + std::string(s) + "\"";
  return "\"" + std::string(s.substr(0, limit)) + "\"... (" + std::to_string(s.size()) + " bytes)";
}

// v's digits at p, at least `width` of them (zeros in front): the end.
inline char* put_digits(char* p, std::uint64_t v, int width) noexcept {
  char buf[20];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = n; i < width; ++i) *p++ = '0';
  while (n > 0) *p++ = buf[--n];
  return p;
}

PQSCOPE_DECL void append_number(std::string& out, std::uint64_t v, int width) {
  char buf[24];
  out.append(buf, static_cast<std::size_t>(put_digits(buf, v, width) - buf));
}

PQSCOPE_DECL void append_civil_date(std::string& out, const civil_date& c) {
  append_number(out, static_cast<std::uint64_t>(c.year > 0 ? c.year : 1 - c.year), 4);
  out += '-';
  append_number(out, c.month, 2);
  out += '-';
  append_number(out, c.day, 2);
}

// Exactly `width` digits of v (v < 10^width), written from the right.
inline char* put_fixed(char* p, std::uint64_t v, int width) noexcept {
  for (int i = width - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
  return p + width;
}

PQSCOPE_DECL char* write_timestamp(char* p, std::int64_t pg_micros) noexcept {
  std::int64_t days = pg_micros / micros_per_day;
  std::int64_t in_day = pg_micros % micros_per_day;
  if (in_day < 0) {
    in_day += micros_per_day;
    --days;
  }
  const civil_date c = civil_from_days(days + pg_epoch_days);
  const auto secs = static_cast<std::uint64_t>(in_day / micros_per_second);
  const auto frac = static_cast<std::uint64_t>(in_day % micros_per_second);
  const auto year = static_cast<std::uint64_t>(c.year > 0 ? c.year : 1 - c.year);
  p = year < 10000 ? put_fixed(p, year, 4) : put_digits(p, year, 4);
  *p++ = '-';
  p = put_fixed(p, c.month, 2);
  *p++ = '-';
  p = put_fixed(p, c.day, 2);
  *p++ = ' ';
  p = put_fixed(p, secs / 3600, 2);
  *p++ = ':';
  p = put_fixed(p, secs / 60 % 60, 2);
  *p++ = ':';
  p = put_fixed(p, secs % 60, 2);
  if (frac != 0) {
    *p++ = '.';
    p = put_fixed(p, frac, 6);
  }
  *p++ = '+';
  *p++ = '0';
  *p++ = '0';
  if (c.year <= 0) {
    *p++ = ' ';
    *p++ = 'B';
    *p++ = 'C';
  }
  return p;
}

PQSCOPE_DECL std::string format_date(const civil_date& c) {
  std::string out;
  append_civil_date(out, c);
  if (c.year <= 0) out += " BC";
  return out;
}

PQSCOPE_DECL std::string iso_format_hint(const char* format) {
  return std::string("pqscope reads PostgreSQL's ISO output (") + format +
         "), which the server writes only with DateStyle ISO (the default, 'ISO, MDY'; SET DateStyle = 'ISO')";
}

PQSCOPE_DECL bool read_civil_date(text_cursor& c, civil_date& out) {
  std::int64_t y = 0, m = 0, d = 0;
  if (!c.digits(4, 9, y) || !c.eat('-') || !c.digits(2, 2, m) || !c.eat('-') || !c.digits(2, 2, d)) return false;
  if (m < 1 || m > 12 || d < 1) return false;
  out = {y, static_cast<unsigned>(m), static_cast<unsigned>(d)};
  return true;
}

PQSCOPE_DECL bool finish_civil_date(text_cursor& c, civil_date& out) {
  if (c.eat(" BC")) {
    if (out.year == 0) return false;
    out.year = 1 - out.year;
  }
  return out.day <= days_in_month(out.year, out.month);
}

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
  if (__builtin_mul_overflow(days_from_civil(d.year, d.month, d.day) - pg_epoch_days, micros_per_day, &micros) ||
      __builtin_add_overflow(micros, in_day - offset * micros_per_second, &micros) || micros < pg_min_timestamp ||
      micros >= pg_end_timestamp)
    throw conversion_error("timestamp " + quote_value(s) +
                           " is outside PostgreSQL's range (4714-11-24 00:00:00 BC to 294276-12-31 23:59:59.999999 UTC)");
  return {0, micros};
}

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

PQSCOPE_DECL int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

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

PQSCOPE_DECL bool is_array_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

PQSCOPE_DECL bool is_null_word(std::string_view s) noexcept {
  if (s.size() != 4) return false;
  for (std::size_t i = 0; i < 4; ++i)
    if ((s[i] | 0x20) != "null"[i]) return false;
  return true;
}

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

}  // namespace pqscope::detail
