#pragma once
// Reads only the leading keywords of a statement: enough to refuse transaction
// control that would go behind the scope machine's back. Best effort by design;
// the server-state check after every batch catches what this misses.

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

#include <pqscope/errors.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// Skips white space, empty statements (the server drops them, so ";COMMIT" is a
// COMMIT) and comments (-- and nested /* */) at the front.
PQSCOPE_DECL std::string_view skip_blank(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string_view skip_blank(std::string_view s) {
  for (;;) {
    while (!s.empty() && (std::isspace(static_cast<unsigned char>(s.front())) || s.front() == ';'))
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
  while (!s.empty() && (std::isalpha(static_cast<unsigned char>(s.front())) || s.front() == '_')) {
    if (w.size < sizeof w.text - 1)
      w.text[w.size++] = static_cast<char>(std::toupper(static_cast<unsigned char>(s.front())));
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
  for (char c : rest) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return upper.find("STDIN") != std::string::npos || upper.find("STDOUT") != std::string::npos;
}
#endif

// The highest $n placeholder in a statement: the number of parameters the server
// will want. Placeholders inside string literals (standard, E'' escape strings,
// dollar-quoted), quoted identifiers and comments do not count; neither does a $
// inside an identifier (PostgreSQL allows foo$1 as a name). Returns -1 for SQL
// it cannot read to the end (an unterminated quote or comment): the server will
// say what is wrong.
PQSCOPE_DECL int highest_placeholder(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL int highest_placeholder(std::string_view s) {
  auto ident_char = [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' || static_cast<unsigned char>(c) >= 0x80;
  };
  int highest = 0;
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
      if (level != 0) return -1;
      ++i;
    } else if (c == '\'' || c == '"') {  // 'literal', "identifier"; doubled quotes stay inside
      // E'...' (or e'...') allows backslash escapes; a standard literal does not.
      const bool escapes = c == '\'' && i > 0 && (s[i - 1] == 'E' || s[i - 1] == 'e') &&
                           (i < 2 || !ident_char(s[i - 2]));
      ++i;
      for (;;) {
        if (i >= n) return -1;
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
      if (i + 1 < n && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {  // $n
        std::size_t j = i + 1;
        long v = 0;
        while (j < n && std::isdigit(static_cast<unsigned char>(s[j]))) {
          if (v < 100000) v = v * 10 + (s[j] - '0');
          ++j;
        }
        if (v > highest) highest = static_cast<int>(std::min<long>(v, 100000));
        i = j;
        continue;
      }
      // $tag$ ... $tag$: the tag is empty or an identifier that does not start with a digit
      std::size_t j = i + 1;
      while (j < n && s[j] != '$' && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_' ||
                                      static_cast<unsigned char>(s[j]) >= 0x80))
        ++j;
      if (j < n && s[j] == '$') {
        const std::string_view tag = s.substr(i, j - i + 1);
        const std::size_t end = s.find(tag, j + 1);
        if (end == std::string_view::npos) return -1;
        i = end + tag.size();
      } else {
        i = j;
      }
    } else if (ident_char(c)) {  // a word: any $ inside belongs to it
      while (i < n && ident_char(s[i])) ++i;
    } else {
      ++i;
    }
  }
  return highest;
}
#endif

// The statement's placeholders must match the parameters given, both ways: the
// server's own message ("bind message supplies 1 parameters, but prepared
// statement \"\" requires 2") names a prepared statement the caller never made,
// and too many are accepted silently.
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given) {
  const int wanted = highest_placeholder(sql);
  if (wanted < 0 || static_cast<std::size_t>(wanted) == given) return;  // < 0: the server will say what is wrong
  if (wanted == 0)
    throw usage_error("the statement has no $n placeholder, but " + std::to_string(given) +
                      " parameter(s) were given: " + std::string(sql.substr(0, 200)));
  throw usage_error("the statement uses placeholders up to $" + std::to_string(wanted) + " but " +
                    std::to_string(given) + " parameter(s) were given: " + std::string(sql.substr(0, 200)));
}
#endif
}  // namespace pqscope::detail
