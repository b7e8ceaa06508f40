#pragma once
// The bodies of <pqscope/detail/sql_text.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/sql_text.hpp>

#include <algorithm>  // the function bodies only

namespace pqscope::detail {

PQSCOPE_DECL sql_statements read_statements(std::string_view sql, bool standard_strings, bool atomic_bodies) {
  sql_statements out;
  sql_lexer lx(sql, standard_strings);
  for (sql_token t = lx.next(); t.kind != sql_token::end; t = lx.next()) out.tokens.push_back(t);
  out.broken = lx.broken();
  std::size_t start = 0, atomic = 0;
  bool after_begin = false;
  auto add = [&](std::size_t end) {
    if (end > start) out.ranges.emplace_back(start, end);
  };
  for (std::size_t i = 0; i < out.tokens.size(); ++i) {
    const sql_token& t = out.tokens[i];
    if (atomic_bodies && t.kind == sql_token::ident) {
      // BEGIN ATOMIC ... END, in which CASE ... END nests.
      if ((after_begin && t.keyword("ATOMIC")) || (atomic > 0 && t.keyword("CASE")))
        ++atomic;
      else if (atomic > 0 && t.keyword("END"))
        --atomic;
      after_begin = t.keyword("BEGIN");
      continue;
    }
    after_begin = false;
    if (t.is(';') && atomic == 0) {
      add(i);
      start = i + 1;
    }
  }
  add(out.tokens.size());
  return out;
}

namespace sql_text {
// The keyword of a statement given its first two tokens, or empty.
inline std::string_view control_keyword(const sql_token& first, const sql_token& second) {
  if (first.keyword("BEGIN")) return "BEGIN";
  if (first.keyword("SAVEPOINT")) return "SAVEPOINT";
  if (first.keyword("RELEASE")) return "RELEASE";
  if (first.keyword("START") && second.keyword("TRANSACTION")) return "START TRANSACTION";
  if (first.keyword("PREPARE") && second.keyword("TRANSACTION")) return "PREPARE TRANSACTION";
  // COMMIT PREPARED / ROLLBACK PREPARED finish a two-phase transaction, not this session's.
  if (first.keyword("COMMIT") && !second.keyword("PREPARED")) return "COMMIT";
  if (first.keyword("ROLLBACK") && !second.keyword("PREPARED")) return "ROLLBACK";
  if (first.keyword("END")) return "END";
  if (first.keyword("ABORT")) return "ABORT";
  return {};
}

inline std::string_view text_of(const sql_statements& st, std::size_t b, std::size_t e) {
  const char* from = st.tokens[b].text.data();
  const char* to = st.tokens[e - 1].text.data() + st.tokens[e - 1].text.size();
  return {from, static_cast<std::size_t>(to - from)};
}

// The first statement of a script for which `hit(tokens, n)` is true, under
// either setting of standard_conforming_strings.
template <class Hit>
std::string find_in_script(std::string_view sql, Hit hit) {
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1 && sql.find('\\') == std::string_view::npos) break;  // both read the same
    const sql_statements st = read_statements(sql, pass == 0);
    for (const auto& [b, e] : st.ranges)
      if (hit(&st.tokens[b], e - b)) return std::string(text_of(st, b, e));
  }
  return {};
}
}  // namespace sql_text

PQSCOPE_DECL std::string_view transaction_control_keyword(std::string_view sql) {
  // Only blanks, comments and empty statements can come first: no string, so the
  // setting of standard_conforming_strings does not matter here.
  sql_lexer lx(sql);
  sql_token first = lx.next();
  while (first.is(';')) first = lx.next();
  const sql_token second = lx.next();
  return sql_text::control_keyword(first, second);
}

PQSCOPE_DECL char copy_stream_direction(std::string_view sql) {
  sql_lexer lx(sql);
  sql_token t = lx.next();
  while (t.is(';')) t = lx.next();
  if (!t.keyword("COPY")) return '\0';
  bool in = false, out = false;
  for (; t.kind != sql_token::end && !t.is(';'); t = lx.next()) {
    in = in || t.keyword("STDIN");
    out = out || t.keyword("STDOUT");
  }
  return in && !out ? 'i' : out && !in ? 'o' : '\0';
}

PQSCOPE_DECL bool is_copy_stream(std::string_view sql) {
  sql_lexer lx(sql);
  sql_token t = lx.next();
  while (t.is(';')) t = lx.next();
  if (!t.keyword("COPY")) return false;
  for (; t.kind != sql_token::end; t = lx.next())
    if (t.keyword("STDIN") || t.keyword("STDOUT")) return true;
  return false;
}

PQSCOPE_DECL std::string script_control_statement(std::string_view sql) {
  return sql_text::find_in_script(sql, [](const sql_token* t, std::size_t n) {
    return !sql_text::control_keyword(t[0], n > 1 ? t[1] : sql_token{}).empty();
  });
}

PQSCOPE_DECL std::string script_copy_statement(std::string_view sql) {
  return sql_text::find_in_script(sql, [](const sql_token* t, std::size_t n) {
    if (!t[0].keyword("COPY")) return false;
    for (std::size_t i = 1; i < n; ++i)
      if (t[i].keyword("STDIN") || t[i].keyword("STDOUT")) return true;
    return false;
  });
}

PQSCOPE_DECL int highest_placeholder(std::string_view s) {
  int highest = 0;
  sql_lexer lx(s);
  for (sql_token t = lx.next(); t.kind != sql_token::end; t = lx.next()) {
    if (t.kind != sql_token::param) continue;
    long v = 0;
    for (char d : t.text.substr(1))
      if (v < 100000) v = v * 10 + (d - '0');
    if (v > highest) highest = static_cast<int>(std::min<long>(v, 100000));
  }
  return lx.broken() ? -1 : highest;
}

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

PQSCOPE_DECL void check_script(std::string_view sql, const char* what) {
  // Every statement of the script, read as the server reads it.
  if (const std::string one = script_control_statement(sql); !one.empty())
    throw usage_error(std::string(what) + ": its statement \"" + one.substr(0, 60) +
                      "\" would control the transaction behind pqscope's back; use pqscope::transaction "
                      "or pqscope::atomic around the script instead");
  if (!script_copy_statement(sql).empty())
    throw usage_error(std::string(what) +
                      ": COPY FROM STDIN / TO STDOUT cannot run in a script; use copy_in() or copy_out()");
}

}  // namespace pqscope::detail
