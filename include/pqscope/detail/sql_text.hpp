#pragma once
// Reads only the leading keywords of a statement: enough to refuse transaction
// control that would go behind the scope machine's back. Best effort by design;
// the server-state check after every batch catches what this misses.

#include <cctype>
#include <string>
#include <string_view>

namespace pqscope::detail {

// Skips white space, empty statements (the server drops them, so ";COMMIT" is a
// COMMIT) and comments (-- and nested /* */) at the front.
inline std::string_view skip_blank(std::string_view s) {
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

// The next word, upper-cased, and the text after it. Only the first 31 letters are
// kept (every keyword or setting name looked for is shorter); a longer word reads
// as "#". No allocation: this runs for every statement.
struct word {
  char text[32] = {};
  std::size_t size = 0;
  bool operator==(std::string_view k) const { return std::string_view(text, size) == k; }
  bool operator!=(std::string_view k) const { return !(*this == k); }
};
inline word next_word(std::string_view& s) {
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

// Non-empty (the keyword) when the statement starts, commits or rolls back a
// transaction or a savepoint.
inline std::string_view transaction_control_keyword(std::string_view sql) {
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

// COPY FROM STDIN / TO STDOUT needs the copy sub-protocol, which a pipeline cannot carry.
inline bool is_copy_stream(std::string_view sql) {
  std::string_view rest = sql;
  if (next_word(rest) != "COPY") return false;
  std::string upper;
  for (char c : rest) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return upper.find("STDIN") != std::string::npos || upper.find("STDOUT") != std::string::npos;
}

}  // namespace pqscope::detail
