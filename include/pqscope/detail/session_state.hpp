#pragma once
// Statements that leave session state behind, refused on connections with
// pooling::transaction. Behind PgBouncer in transaction pooling mode the server
// connection goes back to the pool after every transaction (after every statement
// in autocommit), so whatever a statement leaves in the server session is
// inherited by the next client that borrows it.
//
// Best effort, like transaction_control_keyword(): the leading keywords of the
// statement, plus the function calls in its text. Refused:
//  - SET, except SET LOCAL, SET TRANSACTION and SET CONSTRAINTS (all of which end
//    with the transaction). So SET x, SET SESSION x, SET ROLE, SET SESSION
//    AUTHORIZATION, SET SESSION CHARACTERISTICS, SET search_path.
//  - RESET (any, RESET ALL included).
//  Except the five parameters PgBouncer itself tracks per client and restores on
//  every server connection it lends: SET/RESET of client_encoding (SET NAMES),
//  DateStyle, TimeZone (SET TIME ZONE), standard_conforming_strings and
//  application_name are allowed.
//  - LISTEN, UNLISTEN (NOTIFY is fine).
//  - PREPARE, EXECUTE, DEALLOCATE (PREPARE TRANSACTION is left to the transaction
//    control check, which refuses it).
//  - DECLARE ... WITH HOLD (DECLARE without it is fine).
//  - DISCARD (any), LOAD.
//  - A call, anywhere in the text, of pg_advisory_lock, pg_advisory_lock_shared,
//    pg_try_advisory_lock, pg_try_advisory_lock_shared, pg_advisory_unlock,
//    pg_advisory_unlock_shared or pg_advisory_unlock_all (case-insensitive, schema
//    qualified or not, or as a "quoted" lower-case name). The _xact_ variants are fine.
//  - set_config(name, value, false) whose third argument is written as the literal
//    false, or as a quoted string that spells false ('f', 'false', 'off', 'no',
//    '0' and their prefixes), optionally cast with ::bool / ::boolean.
// Calls are looked for in the code, not in 'string literals', "quoted names" of
// other things, or comments, and not as part of a longer name. A dollar-quoted
// string is data, except in a DO statement, where it is the code that runs now.
//
// Not detected, so sent as written: a set_config() whose third argument
// is a parameter ($3) or any other expression; a DO body in single quotes; SET,
// LISTEN, PREPARE and the like inside a DO body, a function, or EXECUTE of a string;
// functions that take session locks or set session state internally; temporary
// tables (CREATE TEMP TABLE without ON COMMIT DROP) and other temporary objects;
// SET inside a string run by another function (dblink and the like). Standard
// conforming strings are assumed (the default since PostgreSQL 9.1): in a plain
// 'literal' a backslash does not escape the quote. Only the first statement of the
// text is read for keywords; the extended query protocol execute() uses refuses a
// second one anyway.
// Also refused, though harmless: a definition whose unquoted text calls one of the
// advisory lock functions (CREATE VIEW, CREATE FUNCTION ... BEGIN ATOMIC). Wrap
// it in allow_session_state().

#include <cstddef>
#include <string>
#include <string_view>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_text.hpp>

namespace pqscope::detail {

namespace session_scan {

PQSCOPE_DECL bool ident_start(char c);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool ident_start(char c) {
  const auto u = static_cast<unsigned char>(c);
  return (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || u == '_' || u >= 0x80;
}
#endif
PQSCOPE_DECL bool ident_char(char c);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool ident_char(char c) {
  return ident_start(c) || (c >= '0' && c <= '9') || c == '$';
}
#endif
inline char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
PQSCOPE_DECL bool iequals(std::string_view a, std::string_view lower_b);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool iequals(std::string_view a, std::string_view lower_b) {
  if (a.size() != lower_b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower_b[i]) return false;
  return true;
}
#endif

// One lexical token of SQL text. Strings, quoted names and comments are skipped
// whole, so that nothing inside them reads as code.
struct token {
  enum kind_t { end, name, quoted_name, string, other } kind = end;
  std::string_view text;  // name: as written; quoted_name/string: between the quotes, escapes as written
};

// The text after a $tag$ that starts s, or npos when s does not start one.
PQSCOPE_DECL std::size_t dollar_tag_size(std::string_view s);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::size_t dollar_tag_size(std::string_view s) {
  if (s.size() < 2 || s[0] != '$') return std::string_view::npos;
  std::size_t i = 1;
  if (s[i] != '$') {
    if (!ident_start(s[i])) return std::string_view::npos;  // $1 is a parameter
    while (i < s.size() && ident_char(s[i]) && s[i] != '$') ++i;
    if (i == s.size() || s[i] != '$') return std::string_view::npos;
  }
  return i + 1;
}
#endif

// Reads the next token. code_in_dollar_quotes: a DO body is code, so its $tag$
// delimiters are stepped over and what they enclose is read as tokens.
PQSCOPE_DECL token next_token(std::string_view& s, bool code_in_dollar_quotes = false);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL token next_token(std::string_view& s, bool code_in_dollar_quotes) {
  s = skip_blank(s);
  if (code_in_dollar_quotes) {
    for (std::size_t tag = dollar_tag_size(s); tag != std::string_view::npos; tag = dollar_tag_size(s))
      s = skip_blank(s.substr(tag));
  }
  token t;
  if (s.empty()) return t;
  const char c = s.front();
  if (ident_start(c)) {
    std::size_t i = 1;
    while (i < s.size() && ident_char(s[i])) ++i;
    t.kind = token::name;
    t.text = s.substr(0, i);
    s.remove_prefix(i);
    // E'...': the only string in which a backslash escapes the quote.
    if ((t.text == "e" || t.text == "E") && !s.empty() && s.front() == '\'') {
      std::size_t j = 1;
      for (; j < s.size(); ++j) {
        if (s[j] == '\\') {
          ++j;
        } else if (s[j] == '\'') {
          if (j + 1 < s.size() && s[j + 1] == '\'') {
            ++j;
          } else {
            break;
          }
        }
      }
      t.kind = token::string;
      t.text = s.substr(1, j < s.size() ? j - 1 : s.size() - 1);
      s = j < s.size() ? s.substr(j + 1) : std::string_view{};
    }
    return t;
  }
  if (c == '\'' || c == '"') {
    std::size_t j = 1;
    for (; j < s.size(); ++j) {
      if (s[j] == c) {
        if (j + 1 < s.size() && s[j + 1] == c) {
          ++j;  // doubled quote
        } else {
          break;
        }
      }
    }
    t.kind = c == '\'' ? token::string : token::quoted_name;
    t.text = s.substr(1, j < s.size() ? j - 1 : s.size() - 1);
    s = j < s.size() ? s.substr(j + 1) : std::string_view{};
    return t;
  }
  if (c == '$') {
    const std::size_t tag = dollar_tag_size(s);
    if (tag != std::string_view::npos) {
      const std::size_t close = s.find(s.substr(0, tag), tag);
      t.kind = token::string;
      t.text = s.substr(tag, close == std::string_view::npos ? std::string_view::npos : close - tag);
      s = close == std::string_view::npos ? std::string_view{} : s.substr(close + tag);
      return t;
    }
  }
  t.kind = token::other;
  t.text = s.substr(0, 1);
  s.remove_prefix(1);
  return t;
}
#endif

inline bool is_other(const token& t, char c) { return t.kind == token::other && t.text.front() == c; }

// Session advisory lock functions; the _xact_ ones end with the transaction.
PQSCOPE_DECL bool session_lock_function(std::string_view name, bool quoted);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool session_lock_function(std::string_view name, bool quoted) {
  constexpr std::string_view names[] = {
      "pg_advisory_lock",   "pg_advisory_lock_shared",   "pg_try_advisory_lock", "pg_try_advisory_lock_shared",
      "pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all"};
  for (std::string_view n : names)
    if (quoted ? name == n : iequals(name, n)) return true;
  return false;
}
#endif

// A quoted boolean input that means false ('f', 'fal', 'off', 'no', '0', ...).
PQSCOPE_DECL bool spells_false(std::string_view v);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool spells_false(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t' || v.front() == '\n' || v.front() == '\r')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t' || v.back() == '\n' || v.back() == '\r')) v.remove_suffix(1);
  if (v.empty() || v.size() > 5) return false;
  auto prefix_of = [&](std::string_view word, std::size_t min) {
    return v.size() >= min && v.size() <= word.size() && iequals(v, word.substr(0, v.size()));
  };
  return prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || v == "0";
}
#endif

// After "set_config(": true when the third argument is a literal false and the last.
PQSCOPE_DECL bool session_set_config(std::string_view args, bool code_in_dollar_quotes);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool session_set_config(std::string_view args, bool code_in_dollar_quotes) {
  int depth = 0;
  int commas = 0;
  for (;;) {
    token t = next_token(args, code_in_dollar_quotes);
    if (t.kind == token::end) return false;
    if (is_other(t, '(') || is_other(t, '[')) {
      ++depth;
    } else if (is_other(t, ')') || is_other(t, ']')) {
      if (--depth < 0) return false;
    } else if (depth == 0 && is_other(t, ',') && ++commas == 2) {
      break;
    }
  }
  const token value = next_token(args, code_in_dollar_quotes);
  if (!(value.kind == token::name && iequals(value.text, "false")) &&
      !(value.kind == token::string && spells_false(value.text)))
    return false;
  token t = next_token(args, code_in_dollar_quotes);
  if (is_other(t, ':')) {
    if (!is_other(next_token(args, code_in_dollar_quotes), ':')) return false;
    const token type = next_token(args, code_in_dollar_quotes);
    if (type.kind != token::name || !(iequals(type.text, "bool") || iequals(type.text, "boolean"))) return false;
    t = next_token(args, code_in_dollar_quotes);
  }
  return is_other(t, ')');
}
#endif

enum class call_hazard { none, advisory_lock, set_config };

// The first session-state function called in the text; name is set to it.
PQSCOPE_DECL call_hazard find_call(std::string_view s, bool code_in_dollar_quotes, std::string_view& name);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL call_hazard find_call(std::string_view s, bool code_in_dollar_quotes, std::string_view& name) {
  for (;;) {
    const token t = next_token(s, code_in_dollar_quotes);
    if (t.kind == token::end) return call_hazard::none;
    if (t.kind != token::name && t.kind != token::quoted_name) continue;
    const bool quoted = t.kind == token::quoted_name;
    const bool lock = session_lock_function(t.text, quoted);
    const bool config = !lock && (quoted ? t.text == "set_config" : iequals(t.text, "set_config"));
    if (!lock && !config) continue;
    std::string_view after = s;
    if (!is_other(next_token(after, code_in_dollar_quotes), '(')) continue;  // a column of that name, not a call
    name = t.text;
    if (lock) return call_hazard::advisory_lock;
    if (session_set_config(after, code_in_dollar_quotes)) return call_hazard::set_config;
  }
}
#endif

// PgBouncer keeps these per client and sets them on every server connection it
// lends that client, so a session-level SET of one of them does not leak:
// client_encoding (SET NAMES), DateStyle, TimeZone (SET TIME ZONE),
// standard_conforming_strings and application_name. `rest` follows SET or RESET.
PQSCOPE_DECL bool tracked_by_pgbouncer(std::string_view rest);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL bool tracked_by_pgbouncer(std::string_view rest) {
  word name = next_word(rest);
  const bool dotted = !rest.empty() && rest.front() == '.';
  if (name == "SESSION" && !dotted) name = next_word(rest);
  if (!rest.empty() && rest.front() == '.') return false;  // a custom setting such as app.timezone
  if (name == "TIME") return next_word(rest) == "ZONE";
  return name == "NAMES" || name == "TIMEZONE" || name == "DATESTYLE" || name == "CLIENT_ENCODING" ||
         name == "APPLICATION_NAME" || name == "STANDARD_CONFORMING_STRINGS";
}
#endif

// "SET search_path ...": the keyword and the setting name as written.
PQSCOPE_DECL std::string label(std::string_view keyword, std::string_view rest);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string label(std::string_view keyword, std::string_view rest) {
  std::string m(keyword);
  token t = next_token(rest);
  if (t.kind == token::name && iequals(t.text, "session")) {
    m += " SESSION";
    t = next_token(rest);
  }
  for (char sep = ' '; t.kind == token::name && t.text.size() <= 63; sep = '.') {
    m += sep;
    m += t.text;
    if (!is_other(next_token(rest), '.')) break;
    t = next_token(rest);
  }
  m += " ...";
  return m;
}
#endif

PQSCOPE_DECL std::string refuse(std::string_view statement, std::string_view why, std::string_view instead);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string refuse(std::string_view statement, std::string_view why, std::string_view instead) {
  std::string m = "execute(\"";
  m += statement;
  m += "\") acts on the server session, which PgBouncer in transaction pooling mode (pooling::transaction) "
       "lends to other clients: ";
  m += why;
  m += "; ";
  m += instead;
  m += ". To send it anyway, wrap the SQL in pqscope::allow_session_state()";
  return m;
}
#endif

}  // namespace session_scan

// Empty when the statement is safe behind a transaction-pooling PgBouncer;
// otherwise why not, and what to use instead. Allocates only to say no.
PQSCOPE_DECL std::string session_state_hazard(std::string_view sql);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string session_state_hazard(std::string_view sql) {
  namespace ss = session_scan;
  constexpr std::string_view use_set_local =
      "use set_local() inside a scope (SET LOCAL / set_config(..., true)), which ends with the transaction";
  constexpr std::string_view use_xact_lock =
      "use pg_advisory_xact_lock() inside a scope, which the transaction's end releases";

  std::string_view rest = sql;
  const word first = next_word(rest);
  if ((first == "SET" || first == "RESET") && ss::tracked_by_pgbouncer(rest)) return {};
  if (first == "SET") {
    std::string_view after = rest;
    const word second = next_word(after);
    const bool dotted = !after.empty() && after.front() == '.';  // SET local.x: a setting named like a keyword
    if (!dotted && (second == "LOCAL" || second == "TRANSACTION" || second == "CONSTRAINTS")) return {};
    if (second == "SESSION") {
      const word third = next_word(after);
      if (third == "CHARACTERISTICS")
        return ss::refuse("SET SESSION CHARACTERISTICS ...",
                          "it changes the default transaction modes of the server session",
                          "set isolation / read_only / deferrable in the outermost scope's transaction_options");
    }
    if (second == "TIME") return ss::refuse("SET TIME ZONE ...", "a session-level SET outlives the transaction", use_set_local);
    return ss::refuse(ss::label("SET", rest), "a session-level SET outlives the transaction", use_set_local);
  }
  if (first == "RESET")
    return ss::refuse(ss::label("RESET", rest), "RESET changes the setting for the whole server session", use_set_local);
  if (first == "LISTEN" || first == "UNLISTEN")
    return ss::refuse(first == "LISTEN" ? "LISTEN ..." : "UNLISTEN ...",
                      "notifications arrive on a server connection the client does not keep",
                      "use a dedicated direct connection (pooling::none, not through PgBouncer)");
  if (first == "PREPARE" || first == "EXECUTE" || first == "DEALLOCATE") {
    std::string_view after = rest;
    if (first == "PREPARE" && next_word(after) == "TRANSACTION") return {};  // transaction control refuses it
    const char* statement = first == "PREPARE" ? "PREPARE ..." : first == "EXECUTE" ? "EXECUTE ..." : "DEALLOCATE ...";
    return ss::refuse(statement, "prepared statements live in the server session",
                      "pass parameters to execute() instead");
  }
  if (first == "DECLARE") {
    // DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [WITH[OUT] HOLD] FOR query
    std::string_view after = rest;
    bool with = false;
    for (;;) {
      const ss::token t = ss::next_token(after);
      if (t.kind == ss::token::end || (t.kind == ss::token::name && ss::iequals(t.text, "for"))) break;
      const bool is_name = t.kind == ss::token::name;
      if (with && is_name && ss::iequals(t.text, "hold"))
        return ss::refuse("DECLARE ... WITH HOLD", "a WITH HOLD cursor outlives the transaction",
                          "DECLARE it without HOLD inside a scope and FETCH from it before the scope ends");
      with = is_name && ss::iequals(t.text, "with");
    }
  }
  if (first == "DISCARD")
    return ss::refuse("DISCARD ...", "it acts on whichever server session the pooler lends, not on this client's",
                      "leave resetting server sessions to PgBouncer (server_reset_query)");
  if (first == "LOAD")
    return ss::refuse("LOAD ...", "the library stays loaded in the server process the next client gets",
                      "preload it with shared_preload_libraries or session_preload_libraries");

  // The calls looked for all contain one of these words: a text with neither
  // (most statements) needs no tokenizing. This runs for every statement.
  auto contains_word = [&](std::string_view w) {
    for (std::size_t i = 0; i + w.size() <= rest.size(); ++i) {
      std::size_t k = 0;
      while (k < w.size() && ascii_upper(rest[i + k]) == ascii_upper(w[k])) ++k;
      if (k == w.size()) return true;
    }
    return false;
  };
  if (!contains_word("advisory") && !contains_word("set_config")) return {};

  std::string_view name;
  switch (ss::find_call(rest, first == "DO", name)) {
    case ss::call_hazard::advisory_lock:
      return ss::refuse(std::string(name) + "(...)",
                        "a session advisory lock stays with the server connection, not with this client, after "
                        "the transaction",
                        use_xact_lock);
    case ss::call_hazard::set_config:
      return ss::refuse("set_config(..., false)", "a session-level setting outlives the transaction", use_set_local);
    case ss::call_hazard::none:
      break;
  }
  return {};
}
#endif

}  // namespace pqscope::detail
