#pragma once
// The bodies of <pqscope/detail/conninfo_redaction.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/conninfo_redaction.hpp>

#include <algorithm>  // the function bodies only

namespace pqscope::detail {

namespace redaction {
inline bool is_secret_key(std::string_view k) noexcept { return k == "password" || k == "sslpassword"; }
inline bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
inline int hex(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
// %XX decoded; a malformed escape is kept as it is (libpq would refuse it, and quote it raw).
inline std::string percent_decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}
inline void add_form(conninfo_secret& s, std::string f) {
  if (!f.empty() && std::find(s.forms.begin(), s.forms.end(), f) == s.forms.end()) s.forms.push_back(std::move(f));
}
inline void replace_all(std::string& text, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size()))
    text.replace(at, what.size(), with);
}
}  // namespace redaction

PQSCOPE_DECL std::vector<conninfo_secret> conninfo_secrets(std::string_view s) {
  std::vector<conninfo_secret> out;
  std::size_t start = 0;
  for (std::string_view prefix : {"postgresql://", "postgres://"})
    if (s.substr(0, prefix.size()) == prefix) start = prefix.size();
  if (start != 0) {
    // URI. libpq takes user[:password] up to the first '@' before any '/'; a user who
    // left an '@' or '/' unescaped in the password meant the last '@' before the query,
    // and libpq then quotes pieces of it as host, port or database: cover both readings.
    const std::size_t query = s.find('?', start);
    const std::size_t at = s.substr(0, query).rfind('@');
    std::size_t after_userinfo = start;
    if (at != std::string_view::npos && at >= start) {
      after_userinfo = at + 1;
      const std::size_t colon = s.find(':', start);
      if (colon < at) {
        conninfo_secret sec;
        sec.begin = colon + 1;
        sec.end = at;
        const std::string_view raw = s.substr(sec.begin, sec.end - sec.begin);
        redaction::add_form(sec, std::string(raw));
        redaction::add_form(sec, redaction::percent_decoded(raw));
        for (std::size_t b = 0, e = 0; b <= raw.size(); b = e + 1) {
          e = std::min(raw.find_first_of("@/?", b), raw.size());
          redaction::add_form(sec, std::string(raw.substr(b, e - b)));
          redaction::add_form(sec, redaction::percent_decoded(raw.substr(b, e - b)));
        }
        if (!sec.forms.empty()) out.push_back(std::move(sec));
      }
    }
    // Query parameters: ...?password=pw&sslpassword=pw2
    const std::size_t q = s.find('?', after_userinfo);
    for (std::size_t b = q == std::string_view::npos ? s.size() : q + 1; b < s.size();) {
      const std::size_t e = std::min(s.find('&', b), s.size());
      const std::string_view param = s.substr(b, e - b);
      const std::size_t eq = param.find('=');
      const bool secret = eq != std::string_view::npos &&
                          redaction::is_secret_key(redaction::percent_decoded(param.substr(0, eq)));
      if (secret) {
        conninfo_secret sec;
        sec.begin = b + eq + 1;
        sec.end = e;
        const std::string_view raw = param.substr(eq + 1);
        redaction::add_form(sec, std::string(raw));
        redaction::add_form(sec, redaction::percent_decoded(raw));
        const std::size_t first = raw.find_first_not_of('=');  // password==pw is refused, quoting pieces
        if (first != std::string_view::npos) {
          redaction::add_form(sec, std::string(raw.substr(first)));
          redaction::add_form(sec, redaction::percent_decoded(raw.substr(first)));
        }
        if (!sec.forms.empty()) out.push_back(std::move(sec));
      }
      b = e + 1;
    }
    return out;
  }
  // key=value pairs, read as libpq's conninfo_parse reads them: a key ends at '=' or
  // white space; a value is 'quoted' (backslash escapes anything, an unclosed quote runs
  // to the end) or runs to white space (backslash escapes the next character).
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && redaction::is_space(s[i])) ++i;
    const std::size_t key_begin = i;
    while (i < s.size() && s[i] != '=' && !redaction::is_space(s[i])) ++i;
    const std::string_view key = s.substr(key_begin, i - key_begin);
    while (i < s.size() && redaction::is_space(s[i])) ++i;
    if (i >= s.size() || s[i] != '=') continue;  // malformed: libpq names the key only
    ++i;
    while (i < s.size() && redaction::is_space(s[i])) ++i;
    const std::size_t value_begin = i;
    std::string value;
    if (i < s.size() && s[i] == '\'') {
      for (++i; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          value += s[++i];
        } else if (s[i] == '\'') {
          ++i;
          break;
        } else {
          value += s[i];
        }
      }
    } else {
      for (; i < s.size() && !redaction::is_space(s[i]); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i];
      }
    }
    if (!redaction::is_secret_key(key)) continue;
    conninfo_secret sec;
    sec.begin = value_begin;
    sec.end = i;
    redaction::add_form(sec, std::string(s.substr(value_begin, i - value_begin)));
    redaction::add_form(sec, value);
    if (!sec.forms.empty()) out.push_back(std::move(sec));
  }
  return out;
}

PQSCOPE_DECL std::string redacted_conninfo(std::string_view conninfo) {
  std::string out(conninfo);
  const std::vector<conninfo_secret> secrets = conninfo_secrets(conninfo);
  // From the last to the first, so that earlier positions stay valid.
  for (auto it = secrets.rbegin(); it != secrets.rend(); ++it) out.replace(it->begin, it->end - it->begin, "***");
  return out;
}

PQSCOPE_DECL std::string redact(std::string message, std::string_view conninfo) {
  const std::vector<conninfo_secret> secrets = conninfo_secrets(conninfo);
  if (secrets.empty()) return message;
  redaction::replace_all(message, conninfo, redacted_conninfo(conninfo));
  std::vector<std::string> forms;
  for (const conninfo_secret& sec : secrets) forms.insert(forms.end(), sec.forms.begin(), sec.forms.end());
  // Longest first: a piece must not break up a longer form before it is replaced.
  std::sort(forms.begin(), forms.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& f : forms) redaction::replace_all(message, f, "***");
  return message;
}

}  // namespace pqscope::detail
