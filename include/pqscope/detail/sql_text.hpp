#pragma once
// Reads only the leading keywords of a statement: enough to refuse transaction
// control that would go behind the scope machine's back. Best effort by design;
// the server-state check after every batch catches what this misses.

#include <string>
#include <string_view>
#include <vector>

#include <pqscope/errors.hpp>
#include <pqscope/detail/config.hpp>

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
#include <algorithm>  // the function bodies only
#endif

namespace pqscope::detail {

// ASCII classes, as the server's lexer uses them (the C library's are locale-aware
// calls, and this runs for every statement).
constexpr bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool ascii_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool ascii_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
constexpr char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

// Skips white space, empty statements (the server drops them, so ";COMMIT" is a
// COMMIT) and comments (-- and nested /* */) at the front.
PQSCOPE_DECL std::string_view skip_blank(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string_view skip_blank(std::string_view s) {
  for (;;) {
    while (!s.empty() && (ascii_space(s.front()) || s.front() == ';'))
      s.remove_prefix(1);
    if (s.substr(0, 2) == "--") {
      auto nl = s.find('\n');
      s = nl == std::string_view::npos ? std::string_view{} : s.substr(nl + 1);
    } else if (s.substr(0, 2) == "/*") {
      int level = 0;
      std::size_t i = 0;
      for (; i + 1 < s.size(); ++i) {
        if (s[i] == '/' && s[i + 1] == '*') {
          ++level;
          ++i;
        } else if (s[i] == '*' && s[i + 1] == '/') {
          ++i;
          if (--level == 0) break;
        }
      }
      s = i + 1 < s.size() ? s.substr(i + 1) : std::string_view{};
    } else {
      return s;
    }
  }
}
#endif

// The next word, upper-cased, and the text after it. Only the first 31 letters are
// kept (every keyword or setting name looked for is shorter); a longer word reads
// as "#". No allocation: this runs for every statement.
struct word {
  char text[32] = {};
  std::size_t size = 0;
  bool operator==(std::string_view k) const { return std::string_view(text, size) == k; }
  bool operator!=(std::string_view k) const { return !(*this == k); }
};
PQSCOPE_DECL word next_word(std::string_view& s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL word next_word(std::string_view& s) {
  s = skip_blank(s);
  word w;
  bool too_long = false;
  while (!s.empty() && (ascii_alpha(s.front()) || s.front() == '_')) {
    if (w.size < sizeof w.text - 1)
      w.text[w.size++] = ascii_upper(s.front());
    else
      too_long = true;
    s.remove_prefix(1);
  }
  if (too_long) {
    w.text[0] = '#';
    w.size = 1;
  }
  return w;
}
#endif

// Non-empty (the keyword) when the statement starts, commits or rolls back a
// transaction or a savepoint.
PQSCOPE_DECL std::string_view transaction_control_keyword(std::string_view sql);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string_view transaction_control_keyword(std::string_view sql) {
  const word first = next_word(sql);
  const word second = next_word(sql);
  if (first == "BEGIN") return "BEGIN";
  if (first == "SAVEPOINT") return "SAVEPOINT";
  if (first == "RELEASE") return "RELEASE";
  if (first == "START" && second == "TRANSACTION") return "START TRANSACTION";
  if (first == "PREPARE" && second == "TRANSACTION") return "PREPARE TRANSACTION";
  // COMMIT PREPARED / ROLLBACK PREPARED finish a two-phase transaction, not this session's.
  if (first == "COMMIT" && second != "PREPARED") return "COMMIT";
  if (first == "ROLLBACK" && second != "PREPARED") return "ROLLBACK";
  if (first == "END") return "END";
  if (first == "ABORT") return "ABORT";
  return {};
}
#endif

// COPY FROM STDIN / TO STDOUT needs the copy sub-protocol, which a pipeline cannot carry.
PQSCOPE_DECL bool is_copy_stream(std::string_view sql);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool is_copy_stream(std::string_view sql) {
  std::string_view rest = sql;
  if (next_word(rest) != "COPY") return false;
  std::string upper;
  for (char c : rest) upper += ascii_upper(c);
  return upper.find("STDIN") != std::string::npos || upper.find("STDOUT") != std::string::npos;
}
#endif

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
// Walks SQL text as the server's lexer splits it, as far as pqscope needs:
// comments, string literals (standard, E'' escape strings, dollar-quoted) and
// quoted identifiers are skipped whole; on(kind, text) is called for each word
// (a $ inside one belongs to it: PostgreSQL allows foo$1 as a name), each $n
// placeholder and each other character but white space. false if the text ends inside a quote
// or comment.
enum class sql_token { word, placeholder, symbol };
template <class F>
bool scan_sql(std::string_view s, F&& on) {
  auto ident_char = [](char c) {
    return (ascii_alpha(c) || ascii_digit(c)) || c == '_' || c == '$' || static_cast<unsigned char>(c) >= 0x80;
  };
  std::size_t i = 0;
  const std::size_t n = s.size();
  while (i < n) {
    const char c = s[i];
    if (c == '-' && i + 1 < n && s[i + 1] == '-') {  // -- comment
      const std::size_t nl = s.find('\n', i);
      i = nl == std::string_view::npos ? n : nl + 1;
    } else if (c == '/' && i + 1 < n && s[i + 1] == '*') {  // nested /* */ comment
      int level = 0;
      for (; i + 1 < n; ++i) {
        if (s[i] == '/' && s[i + 1] == '*') {
          ++level;
          ++i;
        } else if (s[i] == '*' && s[i + 1] == '/') {
          ++i;
          if (--level == 0) break;
        }
      }
      if (level != 0) return false;
      ++i;
    } else if (c == '\'' || c == '"') {  // 'literal', "identifier"; doubled quotes stay inside
      // E'...' (or e'...') allows backslash escapes; a standard literal does not.
      const bool escapes = c == '\'' && i > 0 && (s[i - 1] == 'E' || s[i - 1] == 'e') &&
                           (i < 2 || !ident_char(s[i - 2]));
      ++i;
      for (;;) {
        if (i >= n) return false;
        if (escapes && s[i] == '\\') {
          i += 2;
          continue;
        }
        if (s[i] == c) {
          if (i + 1 < n && s[i + 1] == c) {
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        ++i;
      }
    } else if (c == '$' && (i == 0 || !ident_char(s[i - 1]))) {
      if (i + 1 < n && ascii_digit(s[i + 1])) {  // $n
        std::size_t j = i + 1;
        while (j < n && ascii_digit(s[j])) ++j;
        on(sql_token::placeholder, s.substr(i, j - i));
        i = j;
        continue;
      }
      // $tag$ ... $tag$: the tag is empty or an identifier that does not start with a digit
      std::size_t j = i + 1;
      while (j < n && s[j] != '$' && ((ascii_alpha(s[j]) || ascii_digit(s[j])) || s[j] == '_' ||
                                      static_cast<unsigned char>(s[j]) >= 0x80))
        ++j;
      if (j < n && s[j] == '$') {
        const std::string_view tag = s.substr(i, j - i + 1);
        const std::size_t end = s.find(tag, j + 1);
        if (end == std::string_view::npos) return false;
        i = end + tag.size();
      } else {
        on(sql_token::symbol, s.substr(i, 1));
        i = j;
      }
    } else if (ident_char(c)) {
      const std::size_t start = i;
      while (i < n && ident_char(s[i])) ++i;
      on(sql_token::word, s.substr(start, i - start));
    } else {
      if (!ascii_space(c)) on(sql_token::symbol, s.substr(i, 1));
      ++i;
    }
  }
  return true;
}
#endif

// The highest $n placeholder in a statement: the number of parameters the server
// will want. Placeholders inside literals, quoted identifiers and comments do not
// count. Returns -1 for SQL it cannot read to the end (an unterminated quote or
// comment): the server will say what is wrong.
PQSCOPE_DECL int highest_placeholder(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL int highest_placeholder(std::string_view s) {
  int highest = 0;
  const bool whole = scan_sql(s, [&](sql_token k, std::string_view t) {
    if (k != sql_token::placeholder) return;
    long v = 0;
    for (char d : t.substr(1))
      if (v < 100000) v = v * 10 + (d - '0');
    if (v > highest) highest = static_cast<int>(std::min<long>(v, 100000));
  });
  return whole ? highest : -1;
}
#endif

// The statements of a script, split at the semicolons the server splits at (not
// inside literals, comments, or a BEGIN ATOMIC ... END function body); blank ones
// dropped. Text it cannot read to the end is one statement: the server will say.
PQSCOPE_DECL std::vector<std::string_view> split_statements(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::vector<std::string_view> split_statements(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0, atomic = 0;
  bool after_begin = false;
  auto is = [](std::string_view w, std::string_view k) {
    if (w.size() != k.size()) return false;
    for (std::size_t i = 0; i < w.size(); ++i)
      if (ascii_upper(w[i]) != k[i]) return false;
    return true;
  };
  auto add = [&](std::size_t end) {
    const std::string_view st = s.substr(start, end - start);
    if (!skip_blank(st).empty()) out.push_back(st);
  };
  const bool whole = scan_sql(s, [&](sql_token k, std::string_view t) {
    if (k == sql_token::word) {
      if ((after_begin && is(t, "ATOMIC")) || (atomic > 0 && is(t, "CASE")))
        ++atomic;
      else if (atomic > 0 && is(t, "END"))
        --atomic;
      after_begin = is(t, "BEGIN");
      return;
    }
    after_begin = false;
    if (k == sql_token::symbol && t == ";" && atomic == 0) {
      const auto end = static_cast<std::size_t>(t.data() - s.data());
      add(end);
      start = end + 1;
    }
  });
  if (!whole) {
    out.clear();
    if (!skip_blank(s).empty()) out.push_back(s);
    return out;
  }
  add(s.size());
  return out;
}
#endif

// The statement's placeholders must match the parameters given, both ways: the
// server's own message ("bind message supplies 1 parameters, but prepared
// statement \"\" requires 2") names a prepared statement the caller never made,
// and too many are accepted silently.
// `wanted` is highest_placeholder(sql), when the caller knows it.
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given, int wanted);
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given) {
  check_placeholders(sql, given, highest_placeholder(sql));
}
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given, int wanted) {
  if (wanted < 0 || static_cast<std::size_t>(wanted) == given) return;  // < 0: the server will say what is wrong
  if (wanted == 0)
    throw usage_error("the statement has no $n placeholder, but " + std::to_string(given) +
                      " parameter(s) were given: " + std::string(sql.substr(0, 200)));
  throw usage_error("the statement uses placeholders up to $" + std::to_string(wanted) + " but " +
                    std::to_string(given) + " parameter(s) were given: " + std::string(sql.substr(0, 200)));
}
#endif
}  // namespace pqscope::detail
