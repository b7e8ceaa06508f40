#pragma once
// The bodies of <pqscope/detail/session_state.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/session_state.hpp>

namespace pqscope::detail {

namespace session_scan {

constexpr std::string_view use_set_local =
    "use set_local() inside a scope (SET LOCAL / set_config(..., true)), which ends with the transaction";
constexpr std::string_view use_xact_lock = "use pg_advisory_xact_lock() inside a scope, which the transaction's end releases";

inline std::string refuse(std::string_view statement, std::string_view why, std::string_view instead) {
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

// A statement's tokens [b, e), read under one setting of standard_conforming_strings.
struct stmt {
  const std::vector<sql_token>& tokens;
  std::size_t b, e;
  bool standard;
  [[nodiscard]] const sql_token& at(std::size_t i) const {
    static const sql_token none;
    return i < e ? tokens[i] : none;
  }
};

// How a name is written in a message: as written, or decoded for U&"...".
inline std::string shown(const sql_token& t) {
  if (t.kind == sql_token::ident) return std::string(t.text);
  std::string n;
  if (t.kind == sql_token::uident && token_name(t, n)) return n;
  return std::string(t.body);
}

// Setting names compare case-insensitively, quoted or not.
inline bool setting_is(const sql_token& t, std::string_view lower) {
  std::string n;
  if (!token_name(t, n) || n.size() != lower.size()) return false;
  for (std::size_t i = 0; i < n.size(); ++i)
    if ((n[i] >= 'A' && n[i] <= 'Z' ? static_cast<char>(n[i] - 'A' + 'a') : n[i]) != lower[i]) return false;
  return true;
}

// PgBouncer keeps these per client and sets them on every server connection it
// lends that client, so a session-level SET of one of them does not leak.
// `i` is the token after SET or RESET.
inline bool tracked_by_pgbouncer(const stmt& s, std::size_t i) {
  if (s.at(i).keyword("SESSION") && !s.at(i + 1).is('.')) ++i;
  const sql_token& name = s.at(i);
  if (s.at(i + 1).is('.')) return false;  // a custom setting such as app.timezone
  if (name.keyword("TIME")) return s.at(i + 1).keyword("ZONE");
  if (name.keyword("NAMES")) return true;
  for (std::string_view n : {"timezone", "datestyle", "client_encoding", "application_name", "standard_conforming_strings"})
    if (setting_is(name, n)) return true;
  return false;
}

// "SET search_path ...": the keyword and the setting name as written.
inline std::string label(std::string_view keyword, const stmt& s, std::size_t i) {
  std::string m(keyword);
  if (s.at(i).keyword("SESSION")) {
    m += " SESSION";
    ++i;
  }
  for (char sep = ' '; s.at(i).is_name() && s.at(i).text.size() <= 63; sep = '.') {
    m += sep;
    m += shown(s.at(i));
    if (!s.at(i + 1).is('.')) break;
    i += 2;
  }
  m += " ...";
  return m;
}

// pg_temp, or a backend's own pg_temp_N: the schema of temporary objects.
inline bool temp_schema(const sql_token& t) {
  std::string n;
  if (!token_name(t, n) || n.compare(0, 7, "pg_temp") != 0) return false;
  if (n.size() == 7) return true;
  if (n[7] != '_' || n.size() == 8) return false;
  for (std::size_t k = 8; k < n.size(); ++k)
    if (n[k] < '0' || n[k] > '9') return false;
  return true;
}

// A plain string the server reads as boolean true (parse_bool: prefixes of
// "true" and "yes", "on", "1"). Escape forms are not trusted to be read right.
inline bool spells_true(const sql_token& t) {
  if (t.kind != sql_token::string || t.text.front() != '\'' ||
      t.body.find_first_of("\\'") != std::string_view::npos)
    return false;
  std::string_view v = t.body;
  while (!v.empty() && sql_space(v.front())) v.remove_prefix(1);
  while (!v.empty() && sql_space(v.back())) v.remove_suffix(1);
  auto prefix_of = [&](std::string_view word, std::size_t min) {
    if (v.size() < min || v.size() > word.size()) return false;
    for (std::size_t i = 0; i < v.size(); ++i)
      if ((v[i] >= 'A' && v[i] <= 'Z' ? static_cast<char>(v[i] - 'A' + 'a') : v[i]) != word[i]) return false;
    return true;
  };
  return prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || v == "1";
}

// set_config(a, b, c) at `open` (its parenthesis): whether c is the literal true,
// so that the setting ends with the transaction.
inline bool local_set_config(const stmt& s, std::size_t open) {
  int depth = 0, commas = 0;
  std::size_t i = open + 1;
  for (; i < s.e; ++i) {
    const sql_token& t = s.tokens[i];
    if (t.is('(') || t.is('[')) {
      ++depth;
    } else if (t.is(')') || t.is(']')) {
      if (--depth < 0) return false;  // fewer than three arguments
    } else if (depth == 0 && t.is(',') && ++commas == 2) {
      break;
    }
  }
  const sql_token& value = s.at(i + 1);
  if (!value.keyword("TRUE") && !spells_true(value)) return false;
  std::size_t k = i + 2;
  if (s.at(k).kind == sql_token::symbol && s.at(k).text == "::") {
    if (!s.at(k + 1).keyword("BOOL") && !s.at(k + 1).keyword("BOOLEAN")) return false;
    k += 2;
  }
  return s.at(k).is(')');
}

inline bool session_lock_function(const sql_token& t) {
  for (std::string_view n : {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
                             "pg_try_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_shared",
                             "pg_advisory_unlock_all"})
    if (names(t, n)) return true;
  return false;
}

// What any statement may do wherever in its text: calls, UPDATE pg_settings,
// SELECT ... INTO TEMP.
inline std::string anywhere(const stmt& s) {
  const bool selects = s.at(s.b).keyword("SELECT") || s.at(s.b).keyword("WITH") || s.at(s.b).is('(');
  for (std::size_t i = s.b; i < s.e; ++i) {
    const sql_token& t = s.tokens[i];
    if (t.is_name() && s.at(i + 1).is('(')) {
      if (session_lock_function(t))
        return refuse(shown(t) + "(...)",
                      "a session advisory lock stays with the server connection, not with this client, after the "
                      "transaction",
                      use_xact_lock);
      if (names(t, "set_config") && !local_set_config(s, i + 1))
        return refuse("set_config(...)",
                      "set_config() whose third argument is not the literal true is a session-level setting, which "
                      "outlives the transaction",
                      use_set_local);
    }
    if (t.keyword("UPDATE")) {
      std::size_t k = i + 1;
      if (s.at(k).keyword("ONLY")) ++k;
      while (s.at(k).is_name() && s.at(k + 1).is('.')) k += 2;
      if (names(s.at(k), "pg_settings"))
        return refuse("UPDATE pg_settings ...", "updating pg_settings is a session-level SET, which outlives the transaction",
                      use_set_local);
    }
    if (selects && t.keyword("INTO") && !(i > s.b && s.at(i - 1).keyword("INSERT")) &&
        !(i > s.b && s.at(i - 1).keyword("MERGE"))) {
      std::size_t k = i + 1;
      if (s.at(k).keyword("LOCAL") || s.at(k).keyword("GLOBAL")) ++k;
      if (s.at(k).keyword("TEMP") || s.at(k).keyword("TEMPORARY") || (temp_schema(s.at(k)) && s.at(k + 1).is('.')))
        return refuse("SELECT ... INTO TEMP ...",
                      "a temporary table outlives the transaction, and the next client of the server connection "
                      "sees it",
                      "use CREATE TEMP TABLE ... ON COMMIT DROP AS SELECT ... inside a scope");
    }
  }
  return {};
}

// CREATE of a temporary object: allowed only for a table dropped at commit.
inline std::string create_temp(const stmt& s) {
  std::size_t i = s.b + 1;
  if (s.at(i).keyword("OR") && s.at(i + 1).keyword("REPLACE")) i += 2;
  bool temp = false;
  if (s.at(i).keyword("GLOBAL") || s.at(i).keyword("LOCAL")) ++i;
  if (s.at(i).keyword("TEMP") || s.at(i).keyword("TEMPORARY")) {
    temp = true;
    ++i;
  }
  if (s.at(i).keyword("UNLOGGED")) ++i;
  const sql_token& kind = s.at(i);
  for (std::size_t k = s.b; k < s.e && !temp; ++k) temp = temp_schema(s.tokens[k]) && s.at(k + 1).is('.');
  if (!temp) return {};
  if (kind.keyword("TABLE")) {
    for (std::size_t k = i; k + 2 < s.e; ++k)
      if (s.tokens[k].keyword("ON") && s.tokens[k + 1].keyword("COMMIT") && s.tokens[k + 2].keyword("DROP")) return {};
    return refuse("CREATE TEMP TABLE ...",
                  "a temporary table without ON COMMIT DROP outlives the transaction, and the next client of the "
                  "server connection sees it",
                  "add ON COMMIT DROP and create it inside the scope that uses it");
  }
  return refuse("CREATE TEMP " + std::string(kind.is_name() ? kind.text : std::string_view("object")) + " ...",
                "a temporary object outlives the transaction, and the next client of the server connection sees it",
                "use a temporary table with ON COMMIT DROP inside a scope, or a WITH query");
}

inline std::string hazard_in(std::string_view sql, bool standard, int depth);

// DO [LANGUAGE l] 'body' [LANGUAGE l]: the body is code that runs now.
inline std::string do_block(const stmt& s, int depth) {
  if (depth > 0) return {};  // a DO inside PL/pgSQL is a syntax error
  std::size_t i = s.b + 1;
  const sql_token* language = nullptr;
  if (s.at(i).keyword("LANGUAGE")) {
    language = &s.at(i + 1);
    i += 2;
  }
  std::string body, piece;
  // 'a'\n'b' continues a string; several strings in a row are read as one (more
  // than the server would: without a newline between them it rejects them).
  for (; i < s.e && s.tokens[i].is_string(); ++i) {
    if (!token_string(s.tokens[i], s.standard, piece)) return {};  // the server rejects the escape
    body += piece;
  }
  if (s.at(i).keyword("LANGUAGE")) language = &s.at(i + 1);
  if (language != nullptr) {
    std::string lang;
    if (!token_name(*language, lang) && !token_string(*language, s.standard, lang)) lang.clear();
    for (char& c : lang) c = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    if (lang != "plpgsql")
      return refuse("DO ...", "pqscope reads PL/pgSQL bodies only, and cannot tell what this one leaves behind",
                    "put the code in a function, or check it yourself");
  }
  // PL/pgSQL compiles the body with the session's standard_conforming_strings.
  std::string m = hazard_in(body, true, depth + 1);
  if (m.empty() && body.find('\\') != std::string::npos) m = hazard_in(body, false, depth + 1);
  return m;
}

// The rules read from a statement's first keyword, at token `b`.
inline std::string leading(const stmt& s, int depth) {
  const sql_token& first = s.at(s.b);
  const sql_token& second = s.at(s.b + 1);
  if (first.keyword("SET") || first.keyword("RESET")) {
    if (tracked_by_pgbouncer(s, s.b + 1)) return {};
    if (first.keyword("RESET"))
      return refuse(label("RESET", s, s.b + 1), "RESET changes the setting for the whole server session", use_set_local);
    const bool dotted = s.at(s.b + 2).is('.');  // SET local.x: a setting named like a keyword
    if (!dotted && (second.keyword("LOCAL") || second.keyword("TRANSACTION") || second.keyword("CONSTRAINTS")))
      return {};
    if (second.keyword("SESSION") && s.at(s.b + 2).keyword("CHARACTERISTICS"))
      return refuse("SET SESSION CHARACTERISTICS ...", "it changes the default transaction modes of the server session",
                    "set isolation / read_only / deferrable in the outermost scope's transaction_options");
    return refuse(label("SET", s, s.b + 1), "a session-level SET outlives the transaction", use_set_local);
  }
  if (first.keyword("LISTEN") || first.keyword("UNLISTEN"))
    return refuse(first.keyword("LISTEN") ? "LISTEN ..." : "UNLISTEN ...",
                  "notifications arrive on a server connection the client does not keep",
                  "use a dedicated direct connection (pooling::none, not through PgBouncer)");
  if (first.keyword("EXECUTE") && depth > 0)
    return refuse("DO ... EXECUTE ...", "pqscope cannot see what dynamic SQL in a DO body runs",
                  "run the statements with execute() instead");
  if ((first.keyword("PREPARE") && !second.keyword("TRANSACTION")) || first.keyword("EXECUTE") ||
      first.keyword("DEALLOCATE"))
    return refuse(first.keyword("PREPARE") ? "PREPARE ..." : first.keyword("EXECUTE") ? "EXECUTE ..." : "DEALLOCATE ...",
                  "prepared statements live in the server session", "pass parameters to execute() instead");
  if (first.keyword("DECLARE")) {
    // DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [WITH[OUT] HOLD] FOR query
    for (std::size_t i = s.b + 1; i < s.e && !s.tokens[i].keyword("FOR"); ++i)
      if (s.tokens[i].keyword("WITH") && s.at(i + 1).keyword("HOLD"))
        return refuse("DECLARE ... WITH HOLD", "a WITH HOLD cursor outlives the transaction",
                      "DECLARE it without HOLD inside a scope and FETCH from it before the scope ends");
  }
  if (first.keyword("DISCARD"))
    return refuse("DISCARD ...", "it acts on whichever server session the pooler lends, not on this client's",
                  "leave resetting server sessions to PgBouncer (server_reset_query)");
  if (first.keyword("LOAD"))
    return refuse("LOAD ...", "the library stays loaded in the server process the next client gets",
                  "preload it with shared_preload_libraries or session_preload_libraries");
  if (first.keyword("CREATE")) return create_temp(s);
  if (first.keyword("DO")) return do_block(s, depth);
  if (first.keyword("EXPLAIN")) {
    // EXPLAIN ANALYZE runs the statement (CREATE TABLE AS among them).
    std::size_t i = s.b + 1;
    if (s.at(i).is('(')) {
      while (i < s.e && !s.tokens[i].is(')')) ++i;
      ++i;
    }
    while (s.at(i).keyword("ANALYZE") || s.at(i).keyword("ANALYSE") || s.at(i).keyword("VERBOSE")) ++i;
    if (i < s.e && i > s.b) return leading(stmt{s.tokens, i, s.e, s.standard}, depth);
  }
  return {};
}

// Where PL/pgSQL statements start inside one ;-separated piece of a body.
inline bool starts_after(const sql_token& t) {
  return t.keyword("BEGIN") || t.keyword("THEN") || t.keyword("ELSE") || t.keyword("LOOP") || t.keyword("DECLARE") ||
         t.is('>');
}

inline std::string hazard_in(std::string_view sql, bool standard, int depth) {
  const sql_statements st = read_statements(sql, standard, depth == 0);
  if (st.broken) return {};  // the server rejects the whole text read this way
  for (const auto& [b, e] : st.ranges) {
    const stmt s{st.tokens, b, e, standard};
    if (depth > 0) {
      for (std::size_t i = b; i < e; ++i)
        if (st.tokens[i].keyword("EXECUTE"))
          return refuse("DO ... EXECUTE ...", "pqscope cannot see what dynamic SQL in a DO body runs",
                        "run the statements with execute() instead");
      for (std::size_t i = b; i < e; ++i) {
        if (i != b && !starts_after(st.tokens[i - 1])) continue;
        std::string m = leading(stmt{st.tokens, i, e, standard}, depth);
        if (!m.empty()) return m;
      }
    } else if (std::string m = leading(s, depth); !m.empty()) {
      return m;
    }
    if (std::string m = anywhere(s); !m.empty()) return m;
  }
  return {};
}

}  // namespace session_scan

PQSCOPE_DECL std::string session_state_hazard(std::string_view sql) {
  std::string m = session_scan::hazard_in(sql, true, 0);
  if (m.empty() && sql.find('\\') != std::string_view::npos) m = session_scan::hazard_in(sql, false, 0);
  return m;
}

}  // namespace pqscope::detail
