#pragma once
// The bodies of <pqscope/detail/sql_lexer.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/sql_lexer.hpp>

namespace pqscope::detail {

namespace lex {
constexpr bool ident_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}
constexpr bool digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool ident_cont(char c) noexcept { return ident_start(c) || digit(c) || c == '$'; }
constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
constexpr bool hex(char c) noexcept { return digit(c) || (lower(c) >= 'a' && lower(c) <= 'f'); }
constexpr int hex_value(char c) noexcept { return digit(c) ? c - '0' : lower(c) - 'a' + 10; }

inline void put_utf8(std::string& out, unsigned long cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A code point, joining a surrogate pair as the server does; false if invalid.
inline bool add_code_point(std::string& out, unsigned long cp, unsigned long& pending_high) {
  if (pending_high != 0) {
    if (cp < 0xDC00 || cp > 0xDFFF) return false;
    cp = 0x10000 + ((pending_high - 0xD800) << 10) + (cp - 0xDC00);
    pending_high = 0;
  } else if (cp >= 0xD800 && cp <= 0xDBFF) {
    pending_high = cp;
    return true;
  } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
    return false;
  }
  if (cp == 0 || cp > 0x10FFFF) return false;
  put_utf8(out, cp);
  return true;
}

// U&"..." and U&'...' bodies: \XXXX, \+XXXXXX, and the escape doubled.
inline bool decode_unicode(std::string_view body, char escape, char quote, std::string& out) {
  unsigned long high = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == quote) {  // doubled quote
      if (high != 0) return false;
      out += c;
      ++i;
      continue;
    }
    if (c != escape) {
      if (high != 0) return false;
      out += c;
      continue;
    }
    if (i + 1 < body.size() && body[i + 1] == escape) {
      if (high != 0) return false;
      out += escape;
      ++i;
      continue;
    }
    std::size_t digits = 4, at = i + 1;
    if (at < body.size() && body[at] == '+') {
      digits = 6;
      ++at;
    }
    if (at + digits > body.size()) return false;
    unsigned long cp = 0;
    for (std::size_t k = 0; k < digits; ++k) {
      if (!hex(body[at + k])) return false;
      cp = cp * 16 + static_cast<unsigned long>(hex_value(body[at + k]));
    }
    if (!add_code_point(out, cp, high)) return false;
    i = at + digits - 1;
  }
  return high == 0;
}

// Backslash escapes of E'...' (and of '...' without standard_conforming_strings).
inline bool decode_backslashes(std::string_view body, std::string& out) {
  unsigned long high = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '\'') {  // doubled quote
      out += c;
      ++i;
      continue;
    }
    if (c != '\\' || i + 1 >= body.size()) {
      if (high != 0) return false;
      out += c;
      continue;
    }
    const char e = body[++i];
    if (e == 'u' || e == 'U') {
      const std::size_t digits = e == 'u' ? 4 : 8;
      if (i + digits >= body.size()) return false;
      unsigned long cp = 0;
      for (std::size_t k = 1; k <= digits; ++k) {
        if (!hex(body[i + k])) return false;
        cp = cp * 16 + static_cast<unsigned long>(hex_value(body[i + k]));
      }
      if (!add_code_point(out, cp, high)) return false;
      i += digits;
      continue;
    }
    if (high != 0) return false;
    if (e >= '0' && e <= '7') {
      int v = e - '0';
      for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
        v = v * 8 + (body[++i] - '0');
      out += static_cast<char>(v & 0xFF);
    } else if (e == 'x' && i + 1 < body.size() && hex(body[i + 1])) {
      int v = hex_value(body[++i]);
      if (i + 1 < body.size() && hex(body[i + 1])) v = v * 16 + hex_value(body[++i]);
      out += static_cast<char>(v);
    } else {
      switch (e) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        default: out += e; break;
      }
    }
  }
  return high == 0;
}
}  // namespace lex

PQSCOPE_DECL bool sql_token::keyword(std::string_view upper) const noexcept {
  if (kind != ident || text.size() != upper.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i)
    if (lex::lower(text[i]) != lex::lower(upper[i])) return false;
  return true;
}

PQSCOPE_DECL void sql_lexer::skip_blank() noexcept {
  while (pos_ < s_.size()) {
    const char c = s_[pos_];
    if (sql_space(c)) {
      ++pos_;
    } else if (c == '-' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '-') {
      // A -- comment ends at a newline or a carriage return (scan.l: non_newline [^\n\r]).
      while (pos_ < s_.size() && s_[pos_] != '\n' && s_[pos_] != '\r') ++pos_;
    } else if (c == '/' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '*') {
      int level = 0;
      std::size_t i = pos_;
      for (; i + 1 < s_.size(); ++i) {
        if (s_[i] == '/' && s_[i + 1] == '*') {
          ++level;
          ++i;
        } else if (s_[i] == '*' && s_[i + 1] == '/') {
          ++i;
          if (--level == 0) break;
        }
      }
      if (level != 0) {
        broken_ = true;
        pos_ = s_.size();
        return;
      }
      pos_ = i + 1;
    } else {
      return;
    }
  }
}

// The index just past the closing quote of a body starting at `from`; doubled
// quotes stay inside, and so does a quote after a backslash when `backslash`.
PQSCOPE_DECL std::size_t sql_lexer::quoted_end(std::size_t from, char quote, bool backslash) noexcept {
  for (std::size_t i = from; i < s_.size(); ++i) {
    if (backslash && s_[i] == '\\') {
      ++i;
      continue;
    }
    if (s_[i] != quote) continue;
    if (i + 1 < s_.size() && s_[i + 1] == quote) {
      ++i;
      continue;
    }
    return i + 1;
  }
  return std::string_view::npos;
}

// U&"..." UESCAPE 'c': the server's grammar reads the clause after the token.
PQSCOPE_DECL void sql_lexer::read_uescape(sql_token& t) noexcept {
  const std::size_t start = t.text.data() - s_.data();
  const std::size_t save = pos_;
  const bool was_broken = broken_;
  skip_blank();
  if (s_.size() - pos_ >= 7) {
    bool word = true;
    for (std::size_t k = 0; k < 7; ++k) word = word && lex::lower(s_[pos_ + k]) == "uescape"[k];
    if (word && (pos_ + 7 == s_.size() || !lex::ident_cont(s_[pos_ + 7]))) {
      pos_ += 7;
      skip_blank();
      if (pos_ + 2 < s_.size() && s_[pos_] == '\'' && s_[pos_ + 2] == '\'') {
        t.escape = s_[pos_ + 1];
        pos_ += 3;
        t.text = s_.substr(start, pos_ - start);
        return;
      }
    }
  }
  pos_ = save;
  broken_ = was_broken;
}

PQSCOPE_DECL sql_token sql_lexer::next() noexcept {
  sql_token t;
  skip_blank();
  if (broken_ || pos_ >= s_.size()) return t;
  const std::size_t start = pos_;
  const char c = s_[pos_];
  const char c1 = pos_ + 1 < s_.size() ? s_[pos_ + 1] : '\0';
  const char c2 = pos_ + 2 < s_.size() ? s_[pos_ + 2] : '\0';

  auto quoted = [&](sql_token::kind_t kind, std::size_t prefix, char quote, bool backslash) {
    const std::size_t end = quoted_end(start + prefix + 1, quote, backslash);
    if (end == std::string_view::npos) {
      broken_ = true;
      pos_ = s_.size();
      return sql_token{};
    }
    t.kind = kind;
    t.body = s_.substr(start + prefix + 1, end - 1 - (start + prefix + 1));
    pos_ = end;
    t.text = s_.substr(start, pos_ - start);
    if (kind == sql_token::uident || kind == sql_token::ustring) read_uescape(t);
    return t;
  };

  if ((c == 'u' || c == 'U') && c1 == '&' && (c2 == '\'' || c2 == '"'))
    return quoted(c2 == '"' ? sql_token::uident : sql_token::ustring, 2, c2, false);
  if ((c == 'e' || c == 'E') && c1 == '\'') return quoted(sql_token::estring, 1, '\'', true);
  if ((c == 'n' || c == 'N') && c1 == '\'') return quoted(sql_token::string, 1, '\'', !standard_);
  if ((c == 'b' || c == 'B' || c == 'x' || c == 'X') && c1 == '\'') return quoted(sql_token::bitstring, 1, '\'', false);
  if (c == '\'') return quoted(sql_token::string, 0, '\'', !standard_);
  if (c == '"') return quoted(sql_token::qident, 0, '"', false);

  if (lex::ident_start(c)) {
    while (pos_ < s_.size() && lex::ident_cont(s_[pos_])) ++pos_;
    t.kind = sql_token::ident;
    t.text = t.body = s_.substr(start, pos_ - start);
    return t;
  }
  if (c == '$') {
    if (lex::digit(c1)) {
      ++pos_;
      while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
      t.kind = sql_token::param;
      t.text = t.body = s_.substr(start, pos_ - start);
      return t;
    }
    // $tag$: the tag is empty or starts with a letter; no $ inside it.
    std::size_t j = pos_ + 1;
    if (j < s_.size() && lex::ident_start(s_[j]))
      while (j < s_.size() && (lex::ident_start(s_[j]) || lex::digit(s_[j]))) ++j;
    if (j < s_.size() && s_[j] == '$') {
      const std::string_view tag = s_.substr(start, j + 1 - start);
      const std::size_t close = s_.find(tag, j + 1);
      if (close == std::string_view::npos) {
        broken_ = true;
        pos_ = s_.size();
        return sql_token{};
      }
      t.kind = sql_token::dstring;
      t.body = s_.substr(j + 1, close - (j + 1));
      pos_ = close + tag.size();
      t.text = s_.substr(start, pos_ - start);
      return t;
    }
  }
  if (lex::digit(c) || (c == '.' && lex::digit(c1))) {
    while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '.' && !(pos_ + 1 < s_.size() && s_[pos_ + 1] == '.')) {
      ++pos_;
      while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      std::size_t k = pos_ + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (k < s_.size() && lex::digit(s_[k])) {
        pos_ = k;
        while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
      }
    }
    t.kind = sql_token::number;
    t.text = t.body = s_.substr(start, pos_ - start);
    return t;
  }
  t.kind = sql_token::symbol;
  pos_ += (c == ':' && c1 == ':') ? 2 : 1;
  t.text = t.body = s_.substr(start, pos_ - start);
  return t;
}

PQSCOPE_DECL bool token_name(const sql_token& t, std::string& out) {
  out.clear();
  switch (t.kind) {
    case sql_token::ident:
      for (char c : t.text) out += lex::lower(c);
      break;
    case sql_token::qident:
      for (std::size_t i = 0; i < t.body.size(); ++i) {
        out += t.body[i];
        if (t.body[i] == '"') ++i;
      }
      if (out.empty()) return false;  // zero-length delimited identifier
      break;
    case sql_token::uident:
      if (!lex::decode_unicode(t.body, t.escape, '"', out) || out.empty()) return false;
      break;
    default: return false;
  }
  if (out.size() > 63) out.resize(63);  // NAMEDATALEN - 1, as the server truncates
  return true;
}

PQSCOPE_DECL bool names(const sql_token& t, std::string_view lower) {
  if (t.kind == sql_token::ident) {
    if (t.text.size() != lower.size()) return false;
    for (std::size_t i = 0; i < lower.size(); ++i)
      if (lex::lower(t.text[i]) != lower[i]) return false;
    return true;
  }
  if (t.kind == sql_token::qident && t.body.find('"') == std::string_view::npos) return t.body == lower;
  std::string n;
  return token_name(t, n) && n == lower;
}

PQSCOPE_DECL bool token_string(const sql_token& t, bool standard_strings, std::string& out) {
  out.clear();
  switch (t.kind) {
    case sql_token::string:
      if (!standard_strings) return lex::decode_backslashes(t.body, out);
      for (std::size_t i = 0; i < t.body.size(); ++i) {
        out += t.body[i];
        if (t.body[i] == '\'') ++i;
      }
      return true;
    case sql_token::estring: return lex::decode_backslashes(t.body, out);
    case sql_token::ustring: return lex::decode_unicode(t.body, t.escape, '\'', out);
    case sql_token::dstring: out.assign(t.body.data(), t.body.size()); return true;
    default: return false;
  }
}

}  // namespace pqscope::detail
