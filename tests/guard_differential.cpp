// The pooler guard against two oracles, on generated, seeded statement texts.
//
// 1. libpg_query (PostgreSQL 15's own scanner and parser, as a library): the
//    lexer's tokens, the statements a text splits into, and the guard's verdict
//    must agree with what the parse tree says each statement does.
// 2. The server itself: through PgBouncer with a pool of one server connection,
//    every text runs once without the guard and a second client fingerprints the
//    shared server session before and after (settings, listening channels,
//    prepared statements, cursors, advisory locks, temporary relations): that is
//    the truth about what leaks. Then the same text goes through execute(),
//    execute_script() and the asio connection with the guard on. A leak through
//    the guard fails the test, and so does a harmless text refused.
//
// PQSCOPE_GUARD_SEED picks the seed (default fixed), PQSCOPE_GUARD_TEXTS the number
// of texts sent to the server (default 1500), PQSCOPE_GUARD_ORACLE_TEXTS the number
// held against libpg_query in each of its three checks (default 20000).
#define BOOST_TEST_MODULE guard_differential
#include <utility>  // before Asio: Boost 1.74's awaitable.hpp needs std::exchange
#include <boost/test/unit_test.hpp>

#include <pg_query.h>

#include <cctype>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <pqscope/asio.hpp>
#include <pqscope/pqscope.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

namespace {

using json = nlohmann::json;
namespace d = pqscope::detail;

long env_long(const char* name, long fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtol(v, nullptr, 10) : fallback;
}

// ---- the generator ----------------------------------------------------------

// One generated text: whether it was built to leak session state, and whether it
// needs standard_conforming_strings off to mean what it says.
struct text {
  std::string sql;
  bool hazard = false;
  bool needs_scs_off = false;
  bool has_do = false;
  std::string family;
};

class generator {
 public:
  explicit generator(std::uint64_t seed) : rng_(seed) {}

  text next() {
    text t = pick_template();
    t.sql = decorate(expand(t.sql));
    return t;
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  std::size_t below(std::size_t n) { return std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }
  bool coin() { return below(2) == 0; }

  std::string keyword(std::string_view k) {
    std::string out(k);
    switch (below(3)) {
      case 0: break;
      case 1:
        for (char& c : out) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        break;
      default:
        for (char& c : out)
          if (coin()) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    return out;
  }

  // Blank space between tokens: spaces, tabs, newlines, a carriage return,
  // comments of both kinds (-- ended by \r or \n, nested /* */).
  std::string gap() {
    switch (below(9)) {
      case 0: return "  ";
      case 1: return "\t";
      case 2: return "\n";
      case 3: return "\r";
      case 4: return " -- c\r";
      case 5: return " -- c\n";
      case 6: return " /* a /* b */ c */ ";
      case 7: return "\r\n";
      default: return " ";
    }
  }

  // A function name as the server would resolve it to `name`.
  std::string function(std::string_view name) {
    std::string plain(name), out;
    switch (below(7)) {
      case 0: out = keyword(upper(plain)); break;  // unquoted names fold to lower case
      case 1: out = "\"" + plain + "\""; break;
      case 2: {  // U&"..." with the underscore (or the first letter) escaped
        std::string body;
        bool done = false;
        for (char c : plain) {
          if (!done && (c == '_' || coin())) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\%04x", static_cast<unsigned>(c));
            body += buf;
            done = true;
          } else {
            body += c;
          }
        }
        out = "U&\"" + body + "\"";
        break;
      }
      case 3: {  // UESCAPE
        std::string body;
        for (char c : plain) {
          if (c == '_') {
            body += "!+00005f";
          } else {
            body += c;
          }
        }
        out = std::string(coin() ? "u" : "U") + "&\"" + body + "\"" + gap() + keyword("UESCAPE") + " '!'";
        break;
      }
      case 4: out = keyword("PG_CATALOG") + "." + plain; break;
      case 5: out = "\"pg_catalog\"" + gap() + "." + gap() + plain; break;
      default: out = plain; break;
    }
    return out + (coin() ? "" : gap());
  }

  static std::string upper(std::string s) {
    for (char& c : s) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
    return s;
  }

  std::string falsy() {
    // U&'...' is an error where standard_conforming_strings is off.
    for (;;) {
      std::string f = any_falsy();
      if (!scs_off_ || f.compare(0, 2, "U&") != 0) return f;
    }
  }
  std::string any_falsy() {
    static const char* const all[] = {"false",      "FALSE",         "'f'",        "'off'::bool", "0::bool",
                                      "(false)",    "NOT true",      "CAST('f' AS bool)", "U&'f'",  "'no'",
                                      "E'f'",       "$$f$$::bool",   "'0'",        "false::boolean", "(true AND false)"};
    return all[below(sizeof all / sizeof *all)];
  }
  std::string truthy() {
    static const char* const all[] = {"true", "TRUE", "'t'", "'on'", "'yes'::bool", "TRUE::boolean", "' true '"};
    return all[below(sizeof all / sizeof *all)];
  }

  // Templates: <WORD> is a keyword spelled in a random case, {f:name} a function
  // name spelled one of the ways above, {g} a gap, {false}/{true} a boolean.
  text pick_template() {
    struct tpl {
      const char* sql;
      bool hazard;
      const char* family;
      bool scs_off;
    };
    static const tpl all[] = {
        // Session state, by every route the guard must see.
        {"<SET>{g}work_mem{g}={g}'1234kB'", true, "set", false},
        {"<SET> <SESSION> work_mem <TO> '1234kB'", true, "set", false},
        {"<SET>{g}search_path <TO> pqscope_evil, public", true, "set", false},
        {"<SELECT> {f:set_config}('work_mem',{g}'1234kB', {false})", true, "set_config", false},
        {"<SELECT> 1, {f:set_config}('work_mem', '1234kB', {false}) <AS> x", true, "set_config", false},
        {"<UPDATE> pg_settings <SET> setting = '1234kB' <WHERE> name = 'work_mem'", true, "pg_settings", false},
        {"<UPDATE> pg_catalog.\"pg_settings\" <SET> setting = '1234kB' <WHERE> name = 'work_mem'", true, "pg_settings", false},
        {"<UPDATE> U&\"pg\\005fsettings\" <SET> setting = '1234kB' <WHERE> name = 'work_mem'", true, "pg_settings", false},
        {"<LISTEN>{g}pqscope_chan", true, "listen", false},
        {"<PREPARE>{g}pqscope_q <AS> <SELECT> 1", true, "prepare", false},
        {"<DECLARE> pqscope_c <CURSOR> <WITH>{g}<HOLD> <FOR> <SELECT> 1", true, "cursor", false},
        {"<SELECT> {f:pg_advisory_lock}(4711)", true, "advisory", false},
        {"<SELECT> {f:pg_try_advisory_lock}(4711)", true, "advisory", false},
        {"<SELECT> {f:pg_advisory_lock_shared}(4711, 1)", true, "advisory", false},
        {"<CREATE> <TEMP> <TABLE> pqscope_t (x int)", true, "temp", false},
        {"<CREATE> <TEMPORARY> <TABLE> pqscope_t (x int) <ON> <COMMIT> <PRESERVE> <ROWS>", true, "temp", false},
        {"<CREATE> <TABLE> pg_temp.pqscope_t (x int)", true, "temp", false},
        {"<CREATE> <TEMP> <VIEW> pqscope_v <AS> <SELECT> 1", true, "temp", false},
        {"<CREATE> <TEMP> <SEQUENCE> pqscope_s", true, "temp", false},
        {"<SELECT> 1 <AS> x <INTO> <TEMP> pqscope_t", true, "temp", false},
        {"<DO> $do$<BEGIN> <PERFORM> {f:set_config}('work_mem', '1234kB', {false}); <END>$do$", true, "do", false},
        {"<DO> $x$<BEGIN>{g}<SET> work_mem = '1234kB'; <END>$x$", true, "do", false},
        {"<DO> '<BEGIN> <PERFORM> pg_advisory_lock(4711); <END>'", true, "do", false},
        {"<DO> $q$<BEGIN> <PERFORM> {f:pg_advisory_lock}(4711); <END>$q$", true, "do", false},
        {"<DO> E'<BEGIN> <PERFORM> set_config(''work_mem'', ''1234kB'', false); <END>'", true, "do", false},
        {"<DO> <LANGUAGE> plpgsql $$<BEGIN> <IF> true <THEN> <LISTEN> pqscope_chan; <END> <IF>; <END>$$", true, "do", false},
        // Only with standard_conforming_strings off does the call sit outside the string.
        {"<SELECT> '\\' ', {f:pg_advisory_lock}(4711) -- '", true, "scs_off", true},
        {"<SELECT> '\\'', {f:set_config}('work_mem', '1234kB', {false}) -- '", true, "scs_off", true},

        // Look-alikes that leave nothing behind and must run.
        {"<SELECT> 'SET work_mem = 1; LISTEN x; SELECT pg_advisory_lock(1)'", false, "harmless", false},
        {"<SELECT> $$pg_advisory_lock(1)$$, $t$ $$ <SET> x $$ $t$", false, "harmless", false},
        {"<SELECT> 1 -- pg_advisory_lock(4711)", false, "harmless", false},
        {"/* <SET> work_mem = '1234kB' */ <SELECT> 1", false, "harmless", false},
        {"-- c\r<SELECT> 1 <AS> pg_advisory_lock", false, "harmless", false},
        {"<SELECT> 1 <AS> set_config, 2 <AS> \"pg_advisory_lock\"", false, "harmless", false},
        {"<SELECT> {f:set_config}('work_mem', '1234kB', {true})", false, "harmless", false},
        {"<SELECT> {f:pg_advisory_xact_lock}(4711)", false, "harmless", false},
        {"<SELECT> {f:pg_try_advisory_xact_lock_shared}(4711)", false, "harmless", false},
        {"<CREATE> <TEMP> <TABLE> pqscope_t (x int) <ON> <COMMIT> <DROP>", false, "harmless", false},
        {"<SELECT> setting <FROM> pg_settings <WHERE> name = 'work_mem'", false, "harmless", false},
        {"<SELECT> 'it''s <SET> work_mem = 1', E'\\'LISTEN x\\''", false, "harmless", false},
        {"<SELECT> U&'pg\\005fadvisory\\005flock(1)'", false, "harmless", false},
        {"<DO> $do$<BEGIN> <PERFORM> {f:set_config}('work_mem', '1234kB', {true}); <END>$do$", false, "harmless", false},
        {"<DO> $$<BEGIN> <SET> <LOCAL> work_mem = '1234kB'; <END>$$", false, "harmless", false},
        {"<NOTIFY> pqscope_chan, 'SET x'", false, "harmless", false},
        {"<SELECT> '\\' ', 1 <AS> pg_advisory_lock", false, "harmless", false},
    };
    const tpl& p = all[below(sizeof all / sizeof *all)];
    scs_off_ = p.scs_off;
    text t;
    t.sql = p.sql;
    t.hazard = p.hazard;
    t.family = p.family;
    t.needs_scs_off = p.scs_off;
    t.has_do = t.family == "do" || std::string_view(p.sql).find("<DO>") != std::string_view::npos;
    return t;
  }

  std::string expand(const std::string& s) {
    std::string out;
    for (std::size_t i = 0; i < s.size();) {
      if (s[i] == '<' && i + 1 < s.size() && s[i + 1] >= 'A' && s[i + 1] <= 'Z') {
        const std::size_t close = s.find('>', i);
        out += keyword(s.substr(i + 1, close - i - 1));
        i = close + 1;
      } else if (s.compare(i, 3, "{g}") == 0) {
        out += gap();
        i += 3;
      } else if (s.compare(i, 7, "{false}") == 0) {
        out += falsy();
        i += 7;
      } else if (s.compare(i, 6, "{true}") == 0) {
        out += truthy();
        i += 6;
      } else if (s.compare(i, 3, "{f:") == 0) {
        const std::size_t close = s.find('}', i);
        out += function(s.substr(i + 3, close - i - 3));
        i = close + 1;
      } else {
        out += s[i++];
      }
    }
    return out;
  }

  std::string decorate(std::string sql) {
    switch (below(6)) {
      case 0: sql = gap() + sql; break;
      case 1: sql = "-- x\r" + sql; break;
      case 2: sql = ";" + gap() + sql; break;
      case 3: sql += gap(); break;
      default: break;
    }
    return sql;
  }

  std::mt19937_64 rng_;
  bool scs_off_ = false;
};

// ---- oracle 1: libpg_query ----------------------------------------------------

// pg_query_scan's tokens as [start, end) spans. The scan result is a protobuf
// message; the few fields needed are read by hand (tokens = 2, start = 1, end = 2).
struct span {
  int start, end;
  bool operator==(const span& o) const { return start == o.start && end == o.end; }
};
bool read_varint(const std::uint8_t*& p, const std::uint8_t* e, std::uint64_t& v) {
  v = 0;
  for (int shift = 0; p < e && shift < 64; shift += 7) {
    const std::uint8_t b = *p++;
    v |= static_cast<std::uint64_t>(b & 0x7F) << shift;
    if ((b & 0x80) == 0) return true;
  }
  return false;
}
bool skip_field(const std::uint8_t*& p, const std::uint8_t* e, std::uint64_t key) {
  std::uint64_t v = 0;
  switch (key & 7) {
    case 0: return read_varint(p, e, v);
    case 2:
      if (!read_varint(p, e, v) || v > static_cast<std::uint64_t>(e - p)) return false;
      p += v;
      return true;
    default: return false;
  }
}
std::optional<std::vector<span>> server_tokens(const std::string& sql) {
  PgQueryScanResult r = pg_query_scan(sql.c_str());
  std::optional<std::vector<span>> out;
  if (r.error == nullptr) {
    out.emplace();
    const auto* p = reinterpret_cast<const std::uint8_t*>(r.pbuf.data);
    const std::uint8_t* e = p + r.pbuf.len;
    std::uint64_t key = 0, len = 0;
    while (p < e && read_varint(p, e, key)) {
      if ((key >> 3) != 2 || (key & 7) != 2) {
        if (!skip_field(p, e, key)) break;
        continue;
      }
      if (!read_varint(p, e, len)) break;
      const std::uint8_t* te = p + len;
      span s{0, 0};  // proto3 leaves zero values out
      while (p < te && read_varint(p, te, key)) {
        std::uint64_t v = 0;
        if ((key & 7) == 0 && ((key >> 3) == 1 || (key >> 3) == 2)) {
          read_varint(p, te, v);
          ((key >> 3) == 1 ? s.start : s.end) = static_cast<int>(v);
        } else if (!skip_field(p, te, key)) {
          break;
        }
      }
      p = te;
      // Comments are tokens to pg_query_scan; to the lexer they are blank space.
      if (sql.compare(static_cast<std::size_t>(s.start), 2, "--") != 0 &&
          sql.compare(static_cast<std::size_t>(s.start), 2, "/*") != 0)
        out->push_back(s);
    }
  }
  pg_query_free_scan_result(r);
  return out;
}

// Our tokens as spans, with what the server scans differently folded in:
// UESCAPE 'c' is part of our U& token (three tokens for the server), and the
// server groups operator characters (<>, ->>, ...) into one token.
std::vector<span> our_tokens(const std::string& sql) {
  std::vector<span> out;
  d::sql_lexer lx(sql);
  for (d::sql_token t = lx.next(); t.kind != d::sql_token::end; t = lx.next()) {
    const int start = static_cast<int>(t.text.data() - sql.data());
    out.push_back({start, start + static_cast<int>(t.text.size())});
  }
  return out;
}

// Equal, modulo the two differences above: each server token must be covered by
// ours exactly (one of ours, or a run of our one-character symbols).
std::string compare_tokens(const std::string& sql, const std::vector<span>& server, const std::vector<span>& ours) {
  std::size_t k = 0;
  for (std::size_t i = 0; i < server.size(); ++i) {
    const span s = server[i];
    const bool unicode = sql.compare(static_cast<std::size_t>(s.start), 2, "U&") == 0 ||
                         sql.compare(static_cast<std::size_t>(s.start), 2, "u&") == 0;
    if (unicode && k < ours.size() && ours[k].start == s.start) {
      // pg_query_scan reports no usable end for U& tokens: the next token decides.
      while (i + 1 < server.size() && server[i + 1].start < ours[k].end) ++i;
      if (i + 1 < server.size() && k + 1 < ours.size() && server[i + 1].start != ours[k + 1].start)
        return "token at " + std::to_string(s.start) + " ends differently";
      ++k;
      continue;
    }
    if (k < ours.size() && ours[k].start == s.start && ours[k].end > s.end) {
      // one of ours spans several of the server's (U&"x" UESCAPE '!')
      while (i + 1 < server.size() && server[i + 1].end <= ours[k].end) ++i;
      if (server[i].end != ours[k].end) return "token at " + std::to_string(s.start) + " ends differently";
      ++k;
      continue;
    }
    if (k >= ours.size() || ours[k].start != s.start)
      return "the server has a token at " + std::to_string(s.start) + " (" + sql.substr(s.start, s.end - s.start) +
             "), pqscope " + (k < ours.size() ? "at " + std::to_string(ours[k].start) : "none");
    while (k < ours.size() && ours[k].end < s.end) ++k;
    if (k >= ours.size() || ours[k].end != s.end)
      return "token at " + std::to_string(s.start) + " (" + sql.substr(s.start, s.end - s.start) + ") ends differently";
    ++k;
  }
  if (k != ours.size()) return "pqscope has extra tokens from " + std::to_string(ours[k].start);
  return {};
}

// What the parse tree says: does any statement leave session state behind?
bool tracked_setting(const std::string& n) {
  return n == "timezone" || n == "datestyle" || n == "client_encoding" || n == "application_name" ||
         n == "standard_conforming_strings";
}
bool true_literal(const json& a) {
  if (a.contains("A_Const")) {
    const json& c = a.at("A_Const");
    if (c.contains("boolval")) return c.at("boolval").value("boolval", false);
    if (c.contains("sval")) {
      std::string v = c.at("sval").value("sval", "");
      while (!v.empty() && v.front() == ' ') v.erase(0, 1);
      while (!v.empty() && v.back() == ' ') v.pop_back();
      for (char& ch : v) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      return !v.empty() && (std::string("true").rfind(v, 0) == 0 || std::string("yes").rfind(v, 0) == 0 ||
                            v == "on" || v == "1");
    }
    return false;
  }
  if (a.contains("TypeCast")) {
    const json& cast = a.at("TypeCast");
    const std::string type = cast.at("typeName").at("names").back().at("String").value("sval", "");
    return type == "bool" && true_literal(cast.at("arg"));
  }
  return false;
}
// Temporary by keyword, or by being created in pg_temp (the parser leaves that to execution).
bool temp_rel(const json& rel) {
  const std::string schema = rel.value("schemaname", "");
  return rel.value("relpersistence", "") == "t" || schema == "pg_temp" || schema.rfind("pg_temp_", 0) == 0;
}
bool leaks(const json& n) {
  if (n.is_array()) {
    for (const json& x : n)
      if (leaks(x)) return true;
    return false;
  }
  if (!n.is_object()) return false;
  for (const auto& [key, v] : n.items()) {
    if (key == "VariableSetStmt") {
      const std::string kind = v.value("kind", ""), name = v.value("name", "");
      if (v.value("is_local", false)) continue;
      if (kind == "VAR_SET_MULTI") {
        if (name == "SESSION CHARACTERISTICS") return true;
        continue;
      }
      if (kind == "VAR_RESET_ALL" || !tracked_setting(name)) return true;
    }
    if (key == "ListenStmt" || key == "UnlistenStmt" || key == "PrepareStmt" || key == "ExecuteStmt" ||
        key == "DeallocateStmt" || key == "DiscardStmt" || key == "LoadStmt")
      return true;
    if (key == "DeclareCursorStmt" && (v.value("options", 0) & 0x20) != 0) return true;
    if (key == "FuncCall") {
      const std::string f = v.at("funcname").back().at("String").value("sval", "");
      if (f == "pg_advisory_lock" || f == "pg_advisory_lock_shared" || f == "pg_try_advisory_lock" ||
          f == "pg_try_advisory_lock_shared" || f == "pg_advisory_unlock" || f == "pg_advisory_unlock_shared" ||
          f == "pg_advisory_unlock_all")
        return true;
      if (f == "set_config" && !(v.contains("args") && v.at("args").size() == 3 && true_literal(v.at("args")[2])))
        return true;
    }
    if (key == "UpdateStmt" && v.at("relation").value("relname", "") == "pg_settings") return true;
    if (key == "CreateStmt" && temp_rel(v.at("relation")) &&
        v.value("oncommit", "") != "ONCOMMIT_DROP")
      return true;
    if (key == "ViewStmt" && temp_rel(v.at("view"))) return true;
    if (key == "CreateSeqStmt" && temp_rel(v.at("sequence"))) return true;
    if (key == "intoClause" && temp_rel(v.at("rel")) && v.value("onCommit", "") != "ONCOMMIT_DROP")
      return true;
    if (leaks(v)) return true;
  }
  return false;
}

std::uint64_t seed() { return static_cast<std::uint64_t>(env_long("PQSCOPE_GUARD_SEED", 20261206)); }

}  // namespace

long oracle_texts() { return env_long("PQSCOPE_GUARD_ORACLE_TEXTS", 20000); }

BOOST_AUTO_TEST_CASE(lexer_tokens_match_postgresql) {
  generator g(seed());
  std::size_t compared = 0;
  for (long i = 0; i < oracle_texts(); ++i) {
    const text t = g.next();
    const auto server = server_tokens(t.sql);
    if (!server) continue;  // the server's scanner rejects it: any reading of ours is fine
    ++compared;
    const std::string diff = compare_tokens(t.sql, *server, our_tokens(t.sql));
    if (!diff.empty()) BOOST_ERROR("seed " << seed() << " text " << i << ": " << diff << "\n  " << t.sql);
  }
  BOOST_TEST(compared > static_cast<std::size_t>(oracle_texts()) * 3 / 4);
}

BOOST_AUTO_TEST_CASE(statement_boundaries_match_postgresql) {
  generator g(seed() + 1);
  std::size_t compared = 0;
  for (long i = 0; i < oracle_texts() / 4; ++i) {
    // Two to four texts in one script, sometimes around a BEGIN ATOMIC body.
    std::string sql;
    const std::size_t n = 2 + g.rng()() % 3;
    for (std::size_t k = 0; k < n; ++k) {
      if (k > 0) sql += g.rng()() % 2 ? ";" : " ;\n";
      if (g.rng()() % 5 == 0)
        sql += "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT CASE WHEN true THEN 2 END; END";
      else
        sql += g.next().sql;
    }
    PgQueryParseResult r = pg_query_parse(sql.c_str());
    if (r.error == nullptr) {
      ++compared;
      const json tree = json::parse(r.parse_tree);
      const d::sql_statements ours = d::read_statements(sql);
      std::vector<std::size_t> starts, theirs;
      for (const auto& [b, e] : ours.ranges)
        starts.push_back(static_cast<std::size_t>(ours.tokens[b].text.data() - sql.data()));
      for (const json& s : tree["stmts"]) {
        // stmt_location is where the statement's text starts, blanks included.
        const std::size_t at = s.value("stmt_location", 0);
        d::sql_lexer lx(std::string_view(sql).substr(at));
        const d::sql_token first = lx.next();
        theirs.push_back(at + static_cast<std::size_t>(first.text.data() - (sql.data() + at)));
      }
      if (starts != theirs) BOOST_ERROR("seed " << seed() + 1 << " script " << i << ": statements differ\n  " << sql);
    }
    pg_query_free_parse_result(r);
  }
  BOOST_TEST(compared > static_cast<std::size_t>(oracle_texts()) / 10);
}

BOOST_AUTO_TEST_CASE(verdicts_match_the_parse_tree) {
  generator g(seed() + 2);
  std::size_t compared = 0, refused = 0;
  for (long i = 0; i < oracle_texts(); ++i) {
    const text t = g.next();
    if (t.has_do || t.needs_scs_off) continue;  // PL/pgSQL bodies and scs: the server oracle below
    PgQueryParseResult r = pg_query_parse(t.sql.c_str());
    if (r.error == nullptr) {
      ++compared;
      bool tree_says = false;
      try {
        tree_says = leaks(json::parse(r.parse_tree));
      } catch (const std::exception& e) {
        BOOST_ERROR(e.what() << "\n  " << r.parse_tree);
      }
      const bool guard_says = !d::session_state_hazard(t.sql).empty();
      refused += guard_says ? 1 : 0;
      if (tree_says != guard_says)
        BOOST_ERROR("seed " << seed() + 2 << " text " << i << ": the parse tree says " << (tree_says ? "leaks" : "safe")
                            << ", the guard " << (guard_says ? "refuses" : "allows") << "\n  " << t.sql);
    }
    pg_query_free_parse_result(r);
  }
  BOOST_TEST(compared > static_cast<std::size_t>(oracle_texts()) / 2);
  BOOST_TEST(refused > static_cast<std::size_t>(oracle_texts()) / 7);
}

// ---- oracle 2: the server, through a pool of one server connection -------------

namespace {

const char* const kFingerprint =
    "SELECT concat_ws(' | ', pg_backend_pid(),"
    " (SELECT string_agg(name || '=' || setting, ',' ORDER BY name) FROM pg_settings WHERE source = 'session'"
    "    AND lower(name) NOT IN ('client_encoding', 'datestyle', 'timezone', 'standard_conforming_strings',"
    "    'application_name')),"
    " (SELECT count(*) FROM pg_listening_channels()),"
    " (SELECT count(*) FROM pg_prepared_statements),"
    " (SELECT count(*) FROM pg_cursors WHERE is_holdable),"
    " (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),"
    " (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()))";

void quiet(pqscope::connection& c) {
  // "nonstandard use of \\ in a string literal" and the like, once per statement.
  PQsetNoticeProcessor(c.native_handle(), [](void*, const char*) {}, nullptr);
}

struct session {
  std::string conninfo;
  pqscope::connection watcher, truth_on, truth_off, guarded_on, guarded_off;

  // pooling::none through PgBouncer's transaction pooling on purpose: the session is
  // fingerprinted, so pqscope must not leave prepared statements of its own there.
  static pqscope::connection_options opts(pqscope::pooling p) {
    pqscope::connection_options o;
    o.pooling = p;
    o.prepare = pqscope::prepare::never;
    return o;
  }
  explicit session(const std::string& ci)
      : conninfo(ci),
        watcher(ci, opts(pqscope::pooling::none)),
        truth_on(ci, opts(pqscope::pooling::none)),
        truth_off(ci, opts(pqscope::pooling::none)),
        guarded_on(ci, opts(pqscope::pooling::transaction)),
        guarded_off(ci, opts(pqscope::pooling::transaction)) {
    for (pqscope::connection* c : {&watcher, &truth_on, &truth_off, &guarded_on, &guarded_off}) quiet(*c);
    // PgBouncer tracks standard_conforming_strings per client: these two keep it off.
    truth_off.execute("SET standard_conforming_strings = off");
    guarded_off.execute("SET standard_conforming_strings = off");
  }
  std::string fingerprint() { return watcher.query_value<std::string>(kFingerprint); }
  void clean() { watcher.execute("DISCARD ALL"); }
};

bool refused(const std::function<void()>& f, std::string& why) {
  try {
    f();
  } catch (const pqscope::usage_error& e) {
    why = e.what();
    return true;
  } catch (const std::exception&) {
  }
  return false;
}

}  // namespace

BOOST_AUTO_TEST_CASE(nothing_leaks_through_the_guard_and_nothing_harmless_is_refused) {
  session s(pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1"));
  pqtest::net::io_context io;
  pqscope::connection_options ao;
  ao.pooling = pqscope::pooling::transaction;
  auto async = pqtest::run_coro(io, pqtest::connect_async(s.conninfo, ao));

  s.clean();
  const std::string clean = s.fingerprint();
  generator g(seed() + 3);
  const long n = env_long("PQSCOPE_GUARD_TEXTS", 1500);
  std::size_t leaked_unguarded = 0, refused_total = 0, leaked_guarded = 0;
  std::set<std::string> families_leaking;
  for (long i = 0; i < n; ++i) {
    const text t = g.next();
    BOOST_TEST_CONTEXT("seed " << seed() + 3 << " text " << i << ": " << t.sql) {
      // The truth: what the text leaves behind when nothing stops it.
      pqscope::connection& truth = t.needs_scs_off ? s.truth_off : s.truth_on;
      try {
        truth.execute(t.sql);
      } catch (const pqscope::sql_error&) {
      }
      const bool leaks = s.fingerprint() != clean;
      if (leaks) {
        ++leaked_unguarded;
        families_leaking.insert(t.family);
        s.clean();
        BOOST_TEST_REQUIRE(s.fingerprint() == clean, "DISCARD ALL did not restore the session");
      }
      // A text built to leak that does not (with its setting of scs) is a broken generator.
      BOOST_TEST(leaks == t.hazard, "built to " << (t.hazard ? "leak" : "be harmless") << ", but it "
                                                << (leaks ? "leaked" : "left nothing"));

      // The guard, through each route. Nothing may leak; harmless texts must run.
      pqscope::connection& guarded = t.needs_scs_off ? s.guarded_off : s.guarded_on;
      std::string why;
      auto still_clean = [&] {
        if (s.fingerprint() == clean) return true;
        ++leaked_guarded;
        s.clean();
        return false;
      };
      const bool by_execute = refused([&] { guarded.execute(t.sql); }, why);
      BOOST_TEST(still_clean(), "leaked through execute()");
      const bool by_script = refused([&] { (void)guarded.execute_script(t.sql); }, why);
      BOOST_TEST(still_clean(), "leaked through execute_script()");
      bool by_async = false;
      if (!t.needs_scs_off) {
        by_async = refused(
            [&] {
              pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
                co_await async.async_execute(t.sql, pqtest::use_awaitable);
              }());
            },
            why);
        BOOST_TEST(still_clean(), "leaked through the asio connection");
        BOOST_TEST(by_async == by_execute);
      }
      BOOST_TEST(by_execute == by_script, "execute() and execute_script() disagree: " << why);
      if (!t.hazard) BOOST_TEST(!by_execute, "harmless, but refused: " << why);
      if (leaks) BOOST_TEST(by_execute, "leaks, and the guard let it through");
      refused_total += by_execute ? 1 : 0;
      if (s.fingerprint() != clean) s.clean();
    }
  }
  std::cout << "guard_differential: " << n << " texts, " << leaked_unguarded << " leaked without the guard ("
            << families_leaking.size() << " families), " << refused_total << " refused with it, " << leaked_guarded << " leaks through it"
            << std::endl;
  BOOST_TEST(leaked_unguarded > static_cast<std::size_t>(n) / 4);
  BOOST_TEST(families_leaking.size() >= 10u);
}
