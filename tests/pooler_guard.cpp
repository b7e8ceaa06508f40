#define BOOST_TEST_MODULE pooler_guard
#include <boost/test/unit_test.hpp>

#include <unistd.h>

#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

// pooling::transaction: statements that would leave state in the server session
// are refused before anything is sent, because behind PgBouncer in transaction
// pooling mode the next client of that server connection inherits the state.

namespace {

bool contains(const std::string& text, const std::string& phrase) { return text.find(phrase) != std::string::npos; }

const char* const kSetLocal = "use set_local() inside a scope (SET LOCAL / set_config(..., true)), which ends with the transaction";
const char* const kDirect = "use a dedicated direct connection";
const char* const kParams = "pass parameters to execute() instead";
const char* const kNoHold = "DECLARE it without HOLD";
const char* const kResetQuery = "server_reset_query";
const char* const kPreload = "shared_preload_libraries";
const char* const kXactLock = "use pg_advisory_xact_lock() inside a scope";
const char* const kModes = "transaction_options";

struct verdict {
  const char* sql;
  const char* names;        // the statement, as the message names it; nullptr: allowed
  const char* alternative;  // what the message recommends instead
};

// clang-format off
const std::vector<verdict>& table() {
  static const std::vector<verdict> all = {
      // Session-level SET and RESET.
      {"SET search_path = app", "SET search_path", kSetLocal},
      {"set statement_timeout to '5s'", "SET statement_timeout", kSetLocal},
      {"SET SESSION work_mem = '64MB'", "SET SESSION work_mem", kSetLocal},
      {"  Set  Session  Authorization  'bob'", "SET SESSION Authorization", kSetLocal},
      {"SET ROLE readonly", "SET ROLE", kSetLocal},
      {"set role none", "SET role", kSetLocal},
      {"SET SESSION timezone = 'UTC'", nullptr, nullptr},  // tracked by PgBouncer, see below
      {"SET myapp.tenant = '42'", "SET myapp.tenant", kSetLocal},
      {"-- who\nSET app.user_id = 7", "SET app.user_id", kSetLocal},
      {"/* a /* b */ */ ; ;\n set x.y = 1;", "SET x.y", kSetLocal},
      {"SET local.x = 1", "SET local.x", kSetLocal},  // a setting, not SET LOCAL
      {"SET app.timezone = 'UTC'", "SET app.timezone", kSetLocal},  // a custom setting, not TimeZone
      {"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE", "SET SESSION CHARACTERISTICS", kModes},
      {"RESET ALL", "RESET ALL", kSetLocal},
      {"reset search_path", "RESET search_path", kSetLocal},
      {"RESET ROLE", "RESET ROLE", kSetLocal},
      {"RESET SESSION AUTHORIZATION", "RESET SESSION AUTHORIZATION", kSetLocal},
      // Notifications.
      {"LISTEN jobs", "LISTEN", kDirect},
      {"listen \"Jobs\"", "LISTEN", kDirect},
      {"UNLISTEN *", "UNLISTEN", kDirect},
      // Prepared statements at SQL level.
      {"PREPARE q AS SELECT 1", "PREPARE", kParams},
      {"prepare q (int) as select $1", "PREPARE", kParams},
      {"EXECUTE q(1)", "EXECUTE", kParams},
      {"DEALLOCATE ALL", "DEALLOCATE", kParams},
      {"deallocate prepare q", "DEALLOCATE", kParams},
      // Cursors that outlive the transaction.
      {"DECLARE c CURSOR WITH HOLD FOR SELECT 1", "DECLARE ... WITH HOLD", kNoHold},
      {"declare c no scroll cursor with /* x */ hold for select 1", "DECLARE ... WITH HOLD", kNoHold},
      {"DECLARE c BINARY INSENSITIVE SCROLL CURSOR WITH HOLD FOR SELECT 1", "DECLARE ... WITH HOLD", kNoHold},
      // Session-wide resets and libraries.
      {"DISCARD ALL", "DISCARD", kResetQuery},
      {"discard plans", "DISCARD", kResetQuery},
      {"LOAD 'auto_explain'", "LOAD", kPreload},
      // Session advisory locks, anywhere in the code.
      {"SELECT pg_advisory_lock(42)", "pg_advisory_lock(", kXactLock},
      {"select PG_ADVISORY_LOCK_SHARED(1, 2)", "PG_ADVISORY_LOCK_SHARED(", kXactLock},
      {"SELECT pg_try_advisory_lock($1)", "pg_try_advisory_lock(", kXactLock},
      {"SELECT pg_try_advisory_lock_shared (7)", "pg_try_advisory_lock_shared(", kXactLock},
      {"SELECT pg_catalog.pg_advisory_unlock(42)", "pg_advisory_unlock(", kXactLock},
      {"SELECT pg_advisory_unlock_shared(42)", "pg_advisory_unlock_shared(", kXactLock},
      {"SELECT pg_advisory_unlock_all()", "pg_advisory_unlock_all(", kXactLock},
      {"SELECT \"pg_advisory_lock\"(1)", "pg_advisory_lock(", kXactLock},
      {"WITH l AS (SELECT pg_advisory_lock(1)) SELECT * FROM l", "pg_advisory_lock(", kXactLock},
      {"SELECT id FROM jobs WHERE pg_try_advisory_lock(id) LIMIT 1", "pg_try_advisory_lock(", kXactLock},
      {"SELECT 'x', /* 'open */ pg_advisory_lock(1)", "pg_advisory_lock(", kXactLock},
      {"SELECT E'it\\'s', pg_advisory_lock(1)", "pg_advisory_lock(", kXactLock},
      {"SELECT $$a$$, $t$b$t$, pg_advisory_lock(1)", "pg_advisory_lock(", kXactLock},
      {"DO $$BEGIN PERFORM pg_advisory_lock(1); END$$", "pg_advisory_lock(", kXactLock},
      // set_config(..., false) is a session-level SET.
      {"SELECT set_config('search_path', 'app', false)", "set_config(...)", kSetLocal},
      {"select SET_CONFIG('a.b', 'c', FALSE)", "set_config(...)", kSetLocal},
      {"SELECT pg_catalog.set_config('a.b', 'c', 'off'::boolean)", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', concat('x', ',', 'y'), 'f')", "set_config(...)", kSetLocal},
      {"DO $body$ BEGIN PERFORM set_config('a.b', 'c', false); END $body$", "set_config(...)", kSetLocal},
      // Anything but the literal true may be false when it runs.
      {"SELECT set_config('a.b', 'c', false OR true)", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', $1)", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', 0::bool)", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', (true))", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', NOT true)", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', CAST('t' AS bool))", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', U&'t')", "set_config(...)", kSetLocal},
      {"SELECT set_config('a.b', 'c', E't')", "set_config(...)", kSetLocal},
      {"SELECT U&\"set\\005fconfig\"('a.b', 'c', false)", "set_config(...)", kSetLocal},
      // PostgreSQL ends a -- comment at a carriage return too.
      {"-- x\rSET search_path = evil", "SET search_path", kSetLocal},
      {"SELECT 1 -- x\r, pg_advisory_lock(1)", "pg_advisory_lock(", kXactLock},
      {"-- x\rLISTEN jobs", "LISTEN", kDirect},
      // Names written another way.
      {"SELECT U&\"pg\\005fadvisory_lock\"(1)", "pg_advisory_lock(", kXactLock},
      {"SELECT U&\"pg!005fadvisory!005f!+00006cock\" UESCAPE '!' (1)", "pg_advisory_lock(", kXactLock},
      {"SELECT \"pg_catalog\".\"pg_advisory_lock\"(1)", "pg_advisory_lock(", kXactLock},
      // Read both ways: with standard_conforming_strings off, '\'' does not end at the second quote.
      {"SELECT '\\' ', pg_advisory_lock(1) -- '", "pg_advisory_lock(", kXactLock},
      {"SELECT '\\', pg_advisory_lock(1) -- '", "pg_advisory_lock(", kXactLock},
      // pg_settings, temporary objects, DO bodies.
      {"UPDATE pg_settings SET setting = 'x' WHERE name = 'search_path'", "UPDATE pg_settings", kSetLocal},
      {"with u as (update pg_catalog.\"pg_settings\" set setting = 'x' where name = 'work_mem' returning 1) select * from u", "UPDATE pg_settings", kSetLocal},
      {"CREATE TEMP TABLE t (x int)", "CREATE TEMP TABLE", "ON COMMIT DROP"},
      {"create local temporary table t on commit preserve rows as select 1", "CREATE TEMP TABLE", "ON COMMIT DROP"},
      {"CREATE TABLE pg_temp.t (x int)", "CREATE TEMP TABLE", "ON COMMIT DROP"},
      {"CREATE TEMP VIEW v AS SELECT 1", "CREATE TEMP VIEW", "ON COMMIT DROP"},
      {"CREATE TEMPORARY SEQUENCE s", "CREATE TEMP SEQUENCE", "ON COMMIT DROP"},
      {"CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'", "CREATE TEMP FUNCTION", "ON COMMIT DROP"},
      {"SELECT 1 AS x INTO TEMP t", "SELECT ... INTO TEMP", "ON COMMIT DROP"},
      {"SELECT 1 AS x INTO pg_temp.t", "SELECT ... INTO TEMP", "ON COMMIT DROP"},
      {"EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1", "CREATE TEMP TABLE", "ON COMMIT DROP"},
      {"DO $$BEGIN SET search_path = x; END$$", "SET search_path", kSetLocal},
      {"DO 'BEGIN PERFORM set_config(''a.b'', ''c'', false); END'", "set_config(...)", kSetLocal},
      {"DO E'BEGIN PERFORM pg_advisory_lock(1); END'", "pg_advisory_lock(", kXactLock},
      {"DO $$BEGIN IF true THEN RESET ALL; END IF; END$$", "RESET ALL", kSetLocal},
      {"DO $$BEGIN EXECUTE 'SELECT 1'; END$$", "DO ... EXECUTE", "execute() instead"},
      {"DO LANGUAGE plperl $$ 1 $$", "DO ...", "function"},

      // Allowed: ends with the transaction, or no session state at all.
      {"SET LOCAL search_path = app", nullptr, nullptr},
      // PgBouncer restores these five per client on every server connection it lends.
      {"SET TIME ZONE 'UTC'", nullptr, nullptr},
      {"SET NAMES 'UTF8'", nullptr, nullptr},
      {"set DateStyle = 'ISO, DMY'", nullptr, nullptr},
      {"SET client_encoding TO 'UTF8'", nullptr, nullptr},
      {"SET application_name = 'worker'", nullptr, nullptr},
      {"RESET TimeZone", nullptr, nullptr},
      {"SET standard_conforming_strings = on", nullptr, nullptr},
      {"set local statement_timeout = '5s'", nullptr, nullptr},
      {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", nullptr, nullptr},
      {"SET CONSTRAINTS ALL DEFERRED", nullptr, nullptr},
      {"NOTIFY jobs, 'x'", nullptr, nullptr},
      {"SELECT pg_notify('jobs', 'x')", nullptr, nullptr},
      {"PREPARE TRANSACTION 'x'", nullptr, nullptr},  // transaction control: refused by that check
      {"DECLARE c CURSOR FOR SELECT 1", nullptr, nullptr},
      {"DECLARE c CURSOR WITHOUT HOLD FOR SELECT 'WITH HOLD'", nullptr, nullptr},
      {"SELECT pg_advisory_xact_lock(42)", nullptr, nullptr},
      {"SELECT pg_try_advisory_xact_lock(42)", nullptr, nullptr},
      {"SELECT pg_advisory_xact_lock_shared(42)", nullptr, nullptr},
      {"SELECT 'pg_advisory_lock(1)'", nullptr, nullptr},
      {"SELECT 'it''s pg_advisory_lock(1)'", nullptr, nullptr},
      {"SELECT E'\\' pg_advisory_lock(1) '", nullptr, nullptr},
      {"SELECT $$pg_advisory_lock(1)$$", nullptr, nullptr},
      {"SELECT $tag$ $$ pg_advisory_lock(1) $$ $tag$", nullptr, nullptr},
      {"SELECT 1 -- pg_advisory_lock(1)", nullptr, nullptr},
      {"-- LISTEN x\nSELECT 1", nullptr, nullptr},
      {"/* SET search_path = x */ SELECT 1", nullptr, nullptr},
      {"SELECT my_pg_advisory_lock(1)", nullptr, nullptr},
      {"SELECT pg_advisory_lock_count(1)", nullptr, nullptr},
      {"SELECT pg_advisory_lock FROM t", nullptr, nullptr},  // a column, not a call
      {"SELECT \"pg_advisory_lock(1)\" FROM t", nullptr, nullptr},
      {"SELECT \"PG_ADVISORY_LOCK\"(1)", nullptr, nullptr},  // quoted: another function
      {"SELECT set_config('a.b', 'c', true)", nullptr, nullptr},
      {"SELECT set_config('a.b', 'false', 't')", nullptr, nullptr},
      {"SELECT set_config('a.b', 'c', TRUE::boolean)", nullptr, nullptr},
      {"SELECT set_config('a.b', 'c', ' on ')", nullptr, nullptr},
      {"SELECT pg_catalog.set_config('a.b', $1, 'yes'::bool)", nullptr, nullptr},
      {"CREATE TEMP TABLE t (x int) ON COMMIT DROP", nullptr, nullptr},
      {"CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1", nullptr, nullptr},
      {"CREATE TABLE temp_t (x int)", nullptr, nullptr},
      {"SELECT * FROM pg_settings WHERE name = 'work_mem'", nullptr, nullptr},
      {"UPDATE settings SET pg_settings = 1", nullptr, nullptr},
      {"SELECT 1 AS x INTO t", nullptr, nullptr},
      {"INSERT INTO pg_temp.t VALUES (1)", nullptr, nullptr},
      {"DO $$BEGIN SET LOCAL search_path = x; PERFORM set_config('a.b', 'c', true); END$$", nullptr, nullptr},
      {"DO LANGUAGE plpgsql 'BEGIN UPDATE t SET v = 1; END'", nullptr, nullptr},
      {"SELECT 'x\r', 1 -- pg_advisory_lock(1)", nullptr, nullptr},
      {"SELECT U&'pg_advisory_lock(1)'", nullptr, nullptr},
      {"SELECT set_config FROM t", nullptr, nullptr},
      {"SELECT current_setting('search_path')", nullptr, nullptr},
      {"SHOW search_path", nullptr, nullptr},
      {"INSERT INTO log (line) VALUES ('SET search_path = x; LISTEN y')", nullptr, nullptr},
      {"UPDATE t SET v = 1", nullptr, nullptr},
      {"ALTER ROLE r SET search_path = x", nullptr, nullptr},  // stored with the role, not the session
      {"CREATE FUNCTION f() RETURNS void LANGUAGE sql AS $$ SELECT pg_advisory_lock(1) $$", nullptr, nullptr},
      {"DO $$BEGIN PERFORM pg_advisory_xact_lock(1); END$$", nullptr, nullptr},
      {"", nullptr, nullptr},
      {" ; ", nullptr, nullptr},
      {"SELECT 'unterminated", nullptr, nullptr},
      {"SELECT $$unterminated", nullptr, nullptr},
  };
  return all;
}
// clang-format on

std::vector<std::string> refused_statements() {
  std::vector<std::string> out;
  for (const verdict& v : table())
    if (v.names != nullptr) out.emplace_back(v.sql);
  return out;
}

// Refused, and each would fail on the server if it were sent.
const std::vector<std::string>& inert_refused() {
  static const std::vector<std::string> all = {
      "SET statement_timeout = 'not a number'",
      "SET ROLE pqscope_no_such_role",
      "SET SESSION AUTHORIZATION pqscope_no_such_role",
      "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL pqscope_nonsense",
      "RESET pqscope_no_such_setting",
      "LISTEN 1",
      "UNLISTEN 1",
      "PREPARE pqscope_guard_q AS SELECT * FROM pqscope_no_such_table",
      "EXECUTE pqscope_no_such_q",
      "DEALLOCATE pqscope_no_such_q",
      "DECLARE pqscope_c CURSOR WITH HOLD FOR SELECT * FROM pqscope_no_such_table",
      "DISCARD nonsense",
      "LOAD 'pqscope_no_such_library'",
      "SELECT pg_advisory_lock(1, 2, 3)",
      "SELECT pg_try_advisory_lock('x', 'y')",
      "SELECT pg_advisory_unlock_all(1)",
      "SELECT set_config('pqscope_no_such_setting', 'x', false)",
  };
  return all;
}

pqscope::connection_options guarded() {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::transaction;
  return o;
}
// The opt-out, for showing what the guard prevents. Through PgBouncer's transaction
// pooling on purpose, so nothing of pqscope's own may stay on the shared session.
pqscope::connection_options unguarded() {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;
  o.prepare = pqscope::prepare::never;
  return o;
}

// A key no other test process contends for.
std::int64_t lock_key() { return 0x70717300000000LL + static_cast<std::int64_t>(::getpid()); }

// Sessions holding the session-level advisory lock `key`, as pg_locks sees them.
std::vector<int> lock_holders(std::int64_t key) {
  std::vector<int> pids;
  pqscope::connection o = pqtest::observer();
  pqscope::result r = o.execute(
      "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
      "AND ((classid::bigint << 32) | objid::bigint) = $1 ORDER BY pid",
      key);
  for (std::size_t i = 0; i < r.size(); ++i) pids.push_back(r[i][0].as<int>());
  return pids;
}

// f must throw usage_error naming `phrase`, without a round trip.
template <class F>
void expect_refused(const pqscope::connection& c, const std::string& phrase, F&& f) {
  const std::uint64_t before = c.stats().round_trips;
  try {
    f();
    BOOST_ERROR("not refused; expected usage_error saying \"" << phrase << "\"");
  } catch (const pqscope::usage_error& e) {
    BOOST_TEST(contains(e.what(), phrase), "message \"" << e.what() << "\" lacks \"" << phrase << "\"");
  } catch (const std::exception& e) {
    BOOST_ERROR("expected usage_error, got: " << e.what());
  }
  BOOST_TEST(c.stats().round_trips == before, "a round trip was made before the statement was refused");
}

// The statement reached the server: one round trip, and no usage_error.
void expect_sent(pqscope::connection& c, const std::string& sql) {
  const std::uint64_t before = c.stats().round_trips;
  try {
    c.execute(sql);
  } catch (const pqscope::sql_error&) {
    // the server's answer: it was sent
  } catch (const std::exception& e) {
    BOOST_ERROR("\"" << sql << "\" was not sent: " << e.what());
  }
  BOOST_TEST(c.stats().round_trips == before + 1, "\"" << sql << "\" made no round trip");
}

}  // namespace

BOOST_AUTO_TEST_CASE(hazard_table) {
  for (const verdict& v : table()) {
    BOOST_TEST_CONTEXT(v.sql) {
      const std::string m = pqscope::detail::session_state_hazard(v.sql);
      if (v.names == nullptr) {
        BOOST_TEST(m.empty(), "refused: " << m);
        continue;
      }
      BOOST_TEST(!m.empty(), "not refused");
      BOOST_TEST(contains(m, std::string("execute(\"") + v.names), "statement not named in: " << m);
      BOOST_TEST(contains(m, v.alternative), "alternative missing in: " << m);
      BOOST_TEST(contains(m, "allow_session_state()"), "escape hatch missing in: " << m);
    }
  }
}

// Unterminated strings, comments and dollar quotes: every prefix of every entry
// is read without running off the end (the sanitizer build checks it).
BOOST_AUTO_TEST_CASE(hazard_on_truncated_text) {
  std::size_t refused = 0;
  for (const verdict& v : table()) {
    const std::string sql = v.sql;
    for (std::size_t n = 0; n <= sql.size(); ++n)
      if (!pqscope::detail::session_state_hazard(std::string_view(sql).substr(0, n)).empty()) ++refused;
  }
  BOOST_TEST(refused > 0u);
}

BOOST_AUTO_TEST_CASE(refused_statements_send_nothing) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo, guarded()};
      // At depth 0 a statement the guard wrongly let through would stay in the
      // server session: the whole table only on a session of our own, and through
      // PgBouncer only statements that fail if they get out.
      std::vector<std::string> depth0 = inert_refused();
      if (t.name == "direct") {
        const std::vector<std::string> all = refused_statements();
        depth0.insert(depth0.end(), all.begin(), all.end());
      }
      for (const std::string& sql : depth0) {
        BOOST_TEST_CONTEXT(sql) { expect_refused(c, "allow_session_state()", [&] { c.execute(sql); }); }
      }
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);

      // Inside a scope too, before and after BEGIN went out, each in a savepoint
      // that rolls back; the scope carries on.
      {
        pqscope::transaction tx{c};
        expect_refused(c, kSetLocal, [&] { c.execute("SET work_mem = '1234kB'"); });
        BOOST_TEST(c.query_value<int>("SELECT 2") == 2);
        const std::uint64_t before = c.stats().round_trips;
        for (const std::string& sql : refused_statements()) {
          BOOST_TEST_CONTEXT(sql) {
            pqscope::transaction savepoint{c};
            expect_refused(c, "allow_session_state()", [&] { c.execute(sql); });
            savepoint.rollback();
          }
        }
        BOOST_TEST(c.depth() == 1u);
        if (c.stats().round_trips != before) {
          // Something got out: undo what a rollback does not.
          c.execute(pqscope::allow_session_state("SELECT pg_advisory_unlock_all()"));
          c.execute(pqscope::allow_session_state("DEALLOCATE ALL"));
        }
        BOOST_TEST(c.query_value<int>("SELECT 3") == 3);
        tx.rollback();
      }
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(c.query_value<int>("SELECT 4") == 4);

      // PREPARE TRANSACTION is reported once, by the transaction control check.
      expect_refused(c, "would control the transaction", [&] { c.execute("PREPARE TRANSACTION 'x'"); });
    }
  }
}

BOOST_AUTO_TEST_CASE(scoped_alternatives_work) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo, guarded()};
      const std::int64_t key = lock_key();
      const auto timeout = c.query_value<std::string>("SHOW statement_timeout");
      pqscope::atomic(c, [&](pqscope::connection& tx) {
        tx.set_local("statement_timeout", "1234ms");
        BOOST_TEST(tx.query_value<std::string>("SHOW statement_timeout") == "1234ms");
        tx.execute("SELECT pg_advisory_xact_lock($1)", key);
        tx.execute("SELECT pg_catalog.set_config('work_mem', '1234kB', true)");
        BOOST_TEST(tx.query_value<std::string>("SHOW work_mem") == "1234kB");
        // Held while the transaction is open, by exactly one session.
        BOOST_TEST(lock_holders(key).size() == 1u);
      });
      BOOST_TEST(lock_holders(key).empty(), "the transaction-level lock outlived its transaction");
      BOOST_TEST(c.query_value<std::string>("SHOW statement_timeout") == timeout);
    }
  }
}

BOOST_AUTO_TEST_CASE(allow_session_state_sends_it) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo, guarded()};
      const std::int64_t key = lock_key();
      const auto work_mem = c.query_value<std::string>("SHOW work_mem");
      // Inside a scope that rolls back, so the setting is undone wherever it ran.
      {
        pqscope::transaction tx{c};
        const std::uint64_t before = c.stats().round_trips;
        c.execute(pqscope::allow_session_state("SET work_mem = '1234kB'"));
        BOOST_TEST(c.stats().round_trips == before + 1);
        BOOST_TEST(c.query_value<std::string>("SHOW work_mem") == "1234kB");
        // A session lock taken and given back on the same server session.
        BOOST_TEST(c.execute(pqscope::allow_session_state("SELECT pg_try_advisory_lock(" + std::to_string(key) + ")"))[0][0]
                       .as<bool>());
        BOOST_TEST(lock_holders(key).size() == 1u);
        c.execute(pqscope::allow_session_state("SELECT pg_advisory_unlock(" + std::to_string(key) + ")"));
        tx.rollback();
      }
      BOOST_TEST(c.query_value<std::string>("SHOW work_mem") == work_mem);
      BOOST_TEST(lock_holders(key).empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(pooling_none_sends_them) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo, unguarded()};
      BOOST_TEST((c.options().pooling == pqscope::pooling::none));
      const std::int64_t key = lock_key();
      const std::string k = std::to_string(key);
      const auto work_mem = c.query_value<std::string>("SHOW work_mem");
      // Each group runs in one scope that rolls back: one server session even
      // through PgBouncer, and what rollback does not undo is undone in the group.
      const std::vector<std::vector<std::string>> groups = {
          {"SET work_mem = '1234kB'", "RESET work_mem", "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
           "SELECT set_config('work_mem', '2345kB', false)"},
          {"LISTEN pqscope_guard", "UNLISTEN *"},
          {"PREPARE pqscope_guard_q AS SELECT 1", "EXECUTE pqscope_guard_q", "DEALLOCATE pqscope_guard_q"},
          {"DECLARE pqscope_guard_c CURSOR WITH HOLD FOR SELECT 1", "DISCARD PLANS"},
          {"SELECT pg_advisory_lock(" + k + ")", "SELECT pg_advisory_unlock(" + k + ")"},
          {"LOAD 'pqscope_no_such_library'"},  // fails on the server: it was sent
      };
      for (const auto& group : groups) {
        pqscope::transaction tx{c};
        for (const std::string& sql : group) {
          BOOST_TEST_CONTEXT(sql) { expect_sent(c, sql); }
        }
        tx.rollback();
      }
      BOOST_TEST(c.query_value<std::string>("SHOW work_mem") == work_mem);
      BOOST_TEST(lock_holders(key).empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(database_carries_the_option) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      const pqscope::database db{t.conninfo, guarded()};
      BOOST_TEST((db.options().pooling == pqscope::pooling::transaction));
      const pqscope::database copy = db;
      pqscope::connection c = copy.connect();
      BOOST_TEST((c.options().pooling == pqscope::pooling::transaction));
      expect_refused(c, kDirect, [&] { c.execute("LISTEN pqscope_guard"); });
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);

      pqscope::connection plain = pqscope::database{t.conninfo, unguarded()}.connect();
      BOOST_TEST((plain.options().pooling == pqscope::pooling::none));
      pqscope::transaction tx{plain};
      expect_sent(plain, "LISTEN pqscope_guard");
      tx.rollback();
    }
  }
}

// Through a pool of one server connection, every client shares one server
// session: what the guard refuses really does reach the next client.
namespace {

const std::string& pool1() {
  static const std::string conninfo = pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1");
  return conninfo;
}

// Undoes the leaks below even when a check fails halfway. Only this test's own:
// other tests share the server session (RESOURCE_LOCK in CMake keeps them apart).
struct pool1_cleanup {
  pool1_cleanup() = default;
  pool1_cleanup(const pool1_cleanup&) = delete;
  pool1_cleanup& operator=(const pool1_cleanup&) = delete;
  ~pool1_cleanup() {
    try {
      pqscope::connection c{pool1(), guarded()};
      if (c.query_value<std::string>("SHOW statement_timeout") == "1234ms")
        c.execute(pqscope::allow_session_state("RESET statement_timeout"));
      const std::string unlock = "SELECT pg_advisory_unlock(" + std::to_string(lock_key()) + ")";
      for (int i = 0; i < 4 && !lock_holders(lock_key()).empty(); ++i) c.execute(pqscope::allow_session_state(unlock));
    } catch (...) {
    }
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(session_set_leaks_to_the_next_client) {
  pool1_cleanup cleanup;
  pqscope::connection a{pool1(), unguarded()};
  pqscope::connection b{pool1(), unguarded()};
  const auto normal = b.query_value<std::string>("SHOW statement_timeout");
  BOOST_TEST_REQUIRE(normal != "1234ms");

  a.execute("SET statement_timeout = 1234");
  BOOST_TEST(a.depth() == 0u);  // autocommit: the server connection went back to the pool
  BOOST_TEST_REQUIRE(a.query_value<int>("SELECT pg_backend_pid()") == b.query_value<int>("SELECT pg_backend_pid()"),
                     "the pool's one server connection was replaced while the test ran");
  BOOST_TEST(b.query_value<std::string>("SHOW statement_timeout") == "1234ms", "the leak did not happen");

  a.execute(pqscope::allow_session_state("RESET statement_timeout"));
  BOOST_TEST(b.query_value<std::string>("SHOW statement_timeout") == normal);

  // The guard: the same SET is refused, so the other client sees the default.
  pqscope::connection guarded_a{pool1(), guarded()};
  expect_refused(guarded_a, kSetLocal, [&] { guarded_a.execute("SET statement_timeout = 1234"); });
  BOOST_TEST(b.query_value<std::string>("SHOW statement_timeout") == normal);
  // What it recommends stays inside the transaction.
  pqscope::atomic(guarded_a, [](pqscope::connection& c) {
    c.set_local("statement_timeout", "1234");
    BOOST_TEST(c.query_value<std::string>("SHOW statement_timeout") == "1234ms");
  });
  BOOST_TEST(b.query_value<std::string>("SHOW statement_timeout") == normal);
}

BOOST_AUTO_TEST_CASE(session_advisory_lock_leaks_to_the_next_client) {
  pool1_cleanup cleanup;
  const std::int64_t key = lock_key();
  pqscope::connection a{pool1(), unguarded()};
  pqscope::connection b{pool1(), unguarded()};

  a.execute("SELECT pg_advisory_lock($1)", key);
  BOOST_TEST(a.depth() == 0u);
  // A's statement has ended, yet the lock is held by the shared server session ...
  const int backend = b.query_value<int>("SELECT pg_backend_pid()");
  BOOST_TEST(lock_holders(key) == std::vector<int>{backend});
  BOOST_TEST(a.query_value<int>("SELECT pg_backend_pid()") == backend);
  // ... so B, believing it is another client, "gets" the lock A holds.
  BOOST_TEST(b.query_value<bool>("SELECT pg_try_advisory_lock($1)", key), "B was kept out");
  BOOST_TEST(!pqtest::observer().query_value<bool>("SELECT pg_try_advisory_lock($1)", key));
  // And B can release what A took.
  BOOST_TEST(b.query_value<bool>("SELECT pg_advisory_unlock($1)", key));
  BOOST_TEST(b.query_value<bool>("SELECT pg_advisory_unlock($1)", key));
  BOOST_TEST(lock_holders(key).empty());

  // The guard refuses it; the transaction-level lock ends with its scope.
  pqscope::connection guarded_a{pool1(), guarded()};
  expect_refused(guarded_a, kXactLock, [&] { guarded_a.execute("SELECT pg_advisory_lock($1)", key); });
  BOOST_TEST(lock_holders(key).empty());
  pqscope::atomic(guarded_a, [&](pqscope::connection& c) {
    c.execute("SELECT pg_advisory_xact_lock($1)", key);
    BOOST_TEST(lock_holders(key).size() == 1u);
  });
  BOOST_TEST(lock_holders(key).empty());
}

// query_value() honours the escape hatch just as execute() does.
BOOST_AUTO_TEST_CASE(query_value_keeps_allow_session_state) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection_options o;
      o.pooling = pqscope::pooling::transaction;
      pqscope::connection c{t.conninfo, o};
      BOOST_CHECK_THROW((void)c.query_value<bool>("SELECT pg_try_advisory_lock(4712)"), pqscope::usage_error);
      pqscope::atomic(c, [&] {
        BOOST_TEST(c.query_value<bool>(pqscope::allow_session_state("SELECT pg_try_advisory_lock(4712)")));
        BOOST_TEST(c.query_value<bool>(pqscope::allow_session_state("SELECT pg_advisory_unlock(4712)")));
      });
    }
  }
}

// The checks of a statement text are kept per connection (a small cache, since
// applications run the same few statements again and again). They must follow the
// text, not the buffer it is in, nor whether an earlier run of it was allowed, and
// hold past the cache's size and for texts too long to keep.
BOOST_AUTO_TEST_CASE(checks_follow_the_text) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo, guarded()};
      std::string sql;
      sql.reserve(128);  // one buffer, a new text in it each time
      const char* const buffer = sql.data();
      sql = "SELECT 1";
      BOOST_TEST(c.query_value<int>(sql) == 1);
      sql = "SET work_mem = '1234kB'";
      BOOST_REQUIRE(sql.data() == buffer);
      expect_refused(c, kSetLocal, [&] { c.execute(sql); });
      sql = "BEGIN";
      expect_refused(c, "would control the transaction", [&] { c.execute(sql); });
      sql = "SELECT $1::int";
      expect_refused(c, "placeholders up to $1 but 0", [&] { c.execute(sql); });
      BOOST_TEST(c.query_value<int>(sql, 5) == 5);
      BOOST_REQUIRE(sql.data() == buffer);

      // Allowed once, refused again without the permission, and the other way round.
      const auto work_mem = c.query_value<std::string>("SHOW work_mem");
      {
        pqscope::transaction tx{c};
        c.execute(pqscope::allow_session_state("RESET work_mem"));
        {
          pqscope::transaction sp{c};
          expect_refused(c, kSetLocal, [&] { c.execute("RESET work_mem"); });
          sp.rollback();
        }
        tx.rollback();
      }
      expect_refused(c, kSetLocal, [&] { c.execute("SET work_mem TO DEFAULT"); });
      {
        pqscope::transaction tx{c};
        c.execute(pqscope::allow_session_state("SET work_mem TO DEFAULT"));
        tx.rollback();
      }
      BOOST_TEST(c.query_value<std::string>("SHOW work_mem") == work_mem);

      // Past the cache's size, and past its longest kept text.
      for (int i = 0; i < 200; ++i) BOOST_TEST(c.query_value<int>("SELECT " + std::to_string(i)) == i);
      expect_refused(c, kSetLocal, [&] { c.execute("SET work_mem = '1234kB'"); });
      const std::string pad(5000, ' ');
      expect_refused(c, kSetLocal, [&] { c.execute("SET work_mem = '1234kB'" + pad); });
      expect_refused(c, "would control the transaction", [&] { c.execute(pad + "COMMIT"); });
      expect_refused(c, "placeholders up to $2", [&] { c.execute("SELECT $2::int" + pad, 1); });
      BOOST_TEST(c.query_value<int>("SELECT $1::int" + pad, 7) == 7);
    }
  }
}
