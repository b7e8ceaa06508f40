#define BOOST_TEST_MODULE misuse
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"
#include "support/wire_counter.hpp"

// Every misuse is a usage_error thrown before anything reaches the server, and it
// leaves the connection and its scopes as they were.

namespace {


struct session {
  std::string app;
  pqscope::connection conn;
  explicit session(const pqtest::target& t) : app(pqtest::unique_name("misuse")), conn(pqtest::with_app_name(t, app)) {}
};

bool contains(const std::string& text, const std::string& phrase) { return text.find(phrase) != std::string::npos; }

// f must throw usage_error whose message contains `phrase`, without a round trip.
template <class F>
void expect_usage_error(const pqscope::connection& c, const std::string& phrase, F&& f) {
  const std::uint64_t before = c.stats().round_trips;
  try {
    f();
    BOOST_ERROR("no usage_error; expected one saying \"" << phrase << "\"");
  } catch (const pqscope::usage_error& e) {
    BOOST_TEST(contains(e.what(), phrase), "message \"" << e.what() << "\" lacks \"" << phrase << "\"");
  } catch (const std::exception& e) {
    BOOST_ERROR("expected usage_error, got: " << e.what());
  }
  BOOST_TEST(c.stats().round_trips == before, "a round trip was made before the misuse was refused");
}

// Back in autocommit: no scope open, statements work, and the server agrees.
void expect_idle(session& s) {
  BOOST_TEST(s.conn.depth() == 0u);
  BOOST_TEST(s.conn.query_value<int>("SELECT 1") == 1);
  BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
}

void insert(pqscope::connection& c, const pqtest::scratch_table& t, int id) {
  c.execute("INSERT INTO " + t.name() + " (id) VALUES ($1)", id);
}

const char* const kControlWords = "would control the transaction";

// Raw transaction control in the spellings people write it.
const std::vector<std::string>& raw_controls() {
  static const std::vector<std::string> all = {
      "BEGIN",
      "begin",
      "  BEGIN ISOLATION LEVEL SERIALIZABLE",
      "\n\tbegin transaction",
      "-- open one\nBEGIN",
      "/* outer /* nested */ still comment */ Begin",
      "START TRANSACTION",
      "start /* gap */ transaction read only",
      "COMMIT",
      "commit;",
      "  -- done\n  commit and chain",
      "END",
      "end transaction",
      "ROLLBACK",
      "/**/rollback",
      "ABORT",
      "abort work",
      "SAVEPOINT x",
      "savepoint x",
      "RELEASE x",
      "release savepoint x",
      "ROLLBACK TO x",
      "rollback to savepoint x",
      "PREPARE TRANSACTION 'pqscope_x'",
      "  prepare\ttransaction 'pqscope_x'",
  };
  return all;
}

}  // namespace

BOOST_AUTO_TEST_CASE(commit_twice_and_rollback_after_commit) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 1);
        tx.commit();
        expect_usage_error(s.conn, "already been committed", [&] { tx.commit(); });
        expect_usage_error(s.conn, "already been committed", [&] { tx.rollback(); });
      }
      BOOST_TEST(committed_ids(table) == "1");
      expect_idle(s);

      // A nested scope too: the second commit must not queue a second RELEASE.
      {
        pqscope::transaction outer{s.conn};
        pqscope::transaction inner{s.conn};
        insert(s.conn, table, 2);
        inner.commit();
        expect_usage_error(s.conn, "already been committed", [&] { inner.commit(); });
        expect_usage_error(s.conn, "already been committed", [&] { inner.rollback(); });
        BOOST_TEST(s.conn.depth() == 1u);
        insert(s.conn, table, 3);
        outer.commit();
      }
      BOOST_TEST(committed_ids(table) == "1,2,3");
      expect_idle(s);

      // And after rollback.
      {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 4);
        tx.rollback();
        expect_usage_error(s.conn, "already been rolled back", [&] { tx.commit(); });
        expect_usage_error(s.conn, "already been rolled back", [&] { tx.rollback(); });
      }
      BOOST_TEST(committed_ids(table) == "1,2,3");
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(ending_outer_scope_while_inner_is_open) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction outer{s.conn};
        insert(s.conn, table, 1);
        pqscope::transaction inner{s.conn};
        insert(s.conn, table, 2);
        expect_usage_error(s.conn, "end the inner scopes first", [&] { outer.commit(); });
        expect_usage_error(s.conn, "end the inner scopes first", [&] { outer.rollback(); });
        BOOST_TEST(s.conn.depth() == 2u);
        // The refused calls changed nothing: the inner scope goes on, then the outer.
        insert(s.conn, table, 3);
        inner.commit();
        BOOST_TEST(s.conn.depth() == 1u);
        insert(s.conn, table, 4);
        BOOST_TEST(committed_count(table) == 0);  // nothing committed yet
        outer.commit();
      }
      BOOST_TEST(committed_ids(table) == "1,2,3,4");
      expect_idle(s);

      // Refused twice over three levels, then rolled back from the inside out.
      {
        pqscope::transaction a{s.conn};
        insert(s.conn, table, 10);
        pqscope::transaction b{s.conn};
        pqscope::transaction c{s.conn};
        insert(s.conn, table, 11);
        expect_usage_error(s.conn, "2 scope(s) opened inside it", [&] { a.rollback(); });
        expect_usage_error(s.conn, "1 scope(s) opened inside it", [&] { b.commit(); });
        c.rollback();
        b.commit();
        BOOST_TEST(s.conn.depth() == 1u);
        a.commit();
      }
      BOOST_TEST(committed_ids(table) == "1,2,3,4,10");
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(durable_scope_must_be_outermost) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      pqscope::transaction_options durable;
      durable.durable = true;
      {
        pqscope::transaction outer{s.conn};
        insert(s.conn, table, 1);
        expect_usage_error(s.conn, "durable scope must be the outermost", [&] { pqscope::transaction inner{s.conn, durable}; });
        expect_usage_error(s.conn, "durable scope must be the outermost",
                           [&] { pqscope::atomic(s.conn, durable, [] { BOOST_ERROR("fn ran"); }); });
        BOOST_TEST(s.conn.depth() == 1u);
        insert(s.conn, table, 2);
        outer.commit();
      }
      BOOST_TEST(committed_ids(table) == "1,2");
      // Outermost it is fine.
      pqscope::atomic(s.conn, durable, [&](pqscope::connection& c) { insert(c, table, 3); });
      BOOST_TEST(committed_ids(table) == "1,2,3");
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(nested_scope_cannot_change_transaction_modes) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction outer{s.conn};
        insert(s.conn, table, 1);

        pqscope::transaction_options o;
        o.isolation = pqscope::isolation::serializable;
        expect_usage_error(s.conn, "set it on the outermost scope", [&] { pqscope::transaction inner{s.conn, o}; });
        o = {};
        o.isolation = pqscope::isolation::read_committed;  // even the server's default is a change of level
        expect_usage_error(s.conn, "isolation level", [&] { pqscope::transaction inner{s.conn, o}; });
        o = {};
        o.read_only = true;
        expect_usage_error(s.conn, "set read_only on the outermost scope", [&] { pqscope::transaction inner{s.conn, o}; });
        o = {};
        o.deferrable = true;
        expect_usage_error(s.conn, "set it on the outermost scope", [&] { pqscope::transaction inner{s.conn, o}; });
        BOOST_TEST(s.conn.depth() == 1u);

        insert(s.conn, table, 2);
        outer.commit();
      }
      BOOST_TEST(committed_ids(table) == "1,2");
      expect_idle(s);

      // A nested scope may repeat the outermost scope's modes.
      pqscope::transaction_options root;
      root.isolation = pqscope::isolation::serializable;
      root.read_only = true;
      root.deferrable = true;
      {
        pqscope::transaction outer{s.conn, root};
        pqscope::transaction inner{s.conn, root};
        BOOST_TEST(s.conn.query_value<std::string>("SHOW transaction_isolation") == "serializable");
        pqscope::transaction_options other = root;
        other.isolation = pqscope::isolation::repeatable_read;
        expect_usage_error(s.conn, "isolation level", [&] { pqscope::transaction deeper{s.conn, other}; });
        BOOST_TEST(s.conn.depth() == 2u);
        inner.commit();
        outer.commit();
      }
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(raw_transaction_control_outside_a_scope) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      for (const std::string& sql : raw_controls()) {
        BOOST_TEST_CONTEXT(sql) {
          expect_usage_error(s.conn, kControlWords, [&] { s.conn.execute(sql); });
          BOOST_TEST(s.conn.depth() == 0u);
        }
      }
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
      // Still autocommit: a write is visible to others at once.
      insert(s.conn, table, 1);
      BOOST_TEST(committed_ids(table) == "1");
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(raw_transaction_control_inside_a_scope) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction tx{s.conn};
        // Before BEGIN has gone out (it waits for the first statement) ...
        for (const std::string& sql : raw_controls()) {
          BOOST_TEST_CONTEXT(sql) { expect_usage_error(s.conn, kControlWords, [&] { s.conn.execute(sql); }); }
        }
        insert(s.conn, table, 1);
        pqscope::transaction inner{s.conn};
        insert(s.conn, table, 2);
        // ... and after, also in a savepoint: nothing may end them behind the scopes' back.
        for (const std::string& sql : raw_controls()) {
          BOOST_TEST_CONTEXT(sql) { expect_usage_error(s.conn, kControlWords, [&] { s.conn.execute(sql); }); }
        }
        BOOST_TEST(s.conn.depth() == 2u);
        BOOST_TEST(pqtest::idle_in_transaction(s.app) == 1);
        BOOST_TEST(committed_count(table) == 0);
        inner.commit();
        insert(s.conn, table, 3);
        tx.commit();
      }
      BOOST_TEST(committed_ids(table) == "1,2,3");
      expect_idle(s);

      // The scope's writes can still be rolled back: nothing slipped a COMMIT through.
      {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 4);
        expect_usage_error(s.conn, kControlWords, [&] { s.conn.execute("commit"); });
        tx.rollback();
      }
      BOOST_TEST(committed_ids(table) == "1,2,3");
      expect_idle(s);
    }
  }
}

// Two-phase commit of another transaction is not control of this session's one.
BOOST_AUTO_TEST_CASE(commit_prepared_is_not_refused) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      for (const char* sql : {"COMMIT PREPARED 'pqscope_none'", "  rollback prepared 'pqscope_none'",
                                    "/* 2pc */ commit\nprepared 'pqscope_none'"}) {
        BOOST_TEST_CONTEXT(sql) {
          const auto before = s.conn.stats().round_trips;
          try {
            s.conn.execute(sql);
            BOOST_ERROR("no such prepared transaction, yet no error");
          } catch (const pqscope::sql_error& e) {
            BOOST_TEST(e.sqlstate() == "42704");  // the server's answer: it was sent
          } catch (const std::exception& e) {
            BOOST_ERROR("expected the server's sql_error, got: " << e.what());
          }
          BOOST_TEST(s.conn.stats().round_trips == before + 1);
        }
      }
      expect_idle(s);
    }
  }
}

// The keyword reader skips blanks and comments; a leading empty statement (";")
// is blank to the server too, so it must not hide the keyword.
BOOST_AUTO_TEST_CASE(raw_control_after_empty_statement) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 1);
        expect_usage_error(s.conn, kControlWords, [&] { s.conn.execute(";COMMIT"); });
        tx.rollback();
      }
      BOOST_TEST(committed_count(table) == 0, "the scope's write was committed by a raw COMMIT");
      expect_usage_error(s.conn, kControlWords, [&] { s.conn.execute(" ; begin"); });
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(set_local_outside_a_scope) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      const auto before = s.conn.query_value<std::string>("SHOW work_mem");
      expect_usage_error(s.conn, "open a pqscope::transaction first", [&] { s.conn.set_local("work_mem", "1234kB"); });
      BOOST_TEST(s.conn.query_value<std::string>("SHOW work_mem") == before);
      // After a scope has ended it is outside again.
      pqscope::atomic(s.conn, [](pqscope::connection& c) { c.set_local("work_mem", "1234kB"); });
      expect_usage_error(s.conn, "open a pqscope::transaction first", [&] { s.conn.set_local("work_mem", "2345kB"); });
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(moved_from_connection) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      pqscope::connection moved{std::move(s.conn)};
      const auto before = moved.stats().round_trips;
      auto refused = [&](const std::string& phrase, auto&& f) {
        try {
          f();
          BOOST_ERROR("no usage_error on a moved-from connection");
        } catch (const pqscope::usage_error& e) {
          BOOST_TEST(contains(e.what(), phrase), e.what());
        } catch (const std::exception& e) {
          BOOST_ERROR("expected usage_error, got: " << e.what());
        }
      };
      refused("moved-from connection", [&] { pqscope::transaction tx{s.conn}; });
      refused("moved", [&] { pqscope::atomic(s.conn, [] { BOOST_ERROR("fn ran"); }); });
      refused("moved from", [&] { s.conn.execute("SELECT 1"); });
      refused("moved from", [&] { s.conn.set_local("work_mem", "1MB"); });
      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(moved.stats().round_trips == before);

      // The connection it moved to carries on.
      {
        pqscope::transaction tx{moved};
        insert(moved, table, 1);
        tx.commit();
      }
      BOOST_TEST(committed_ids(table) == "1");
      BOOST_TEST(moved.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(moved_transaction_object) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction first{s.conn};
        insert(s.conn, table, 1);
        pqscope::transaction second{std::move(first)};
        expect_usage_error(s.conn, "moved from", [&] { first.commit(); });
        expect_usage_error(s.conn, "moved from", [&] { first.rollback(); });
        BOOST_TEST(s.conn.depth() == 1u);
        BOOST_TEST(second.is_outermost());
        insert(s.conn, table, 2);
        second.commit();
      }  // the moved-from object's destructor must not touch the scope
      BOOST_TEST(committed_ids(table) == "1,2");
      expect_idle(s);

      // Moved out of a factory and into an optional; destroying the holder rolls back.
      auto open_scope = [&] {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 3);
        return tx;
      };
      {
        std::optional<pqscope::transaction> held;
        held.emplace(open_scope());
        BOOST_TEST(s.conn.depth() == 1u);
        pqscope::transaction inner{s.conn};
        pqscope::transaction moved_inner{std::move(inner)};
        BOOST_TEST(!moved_inner.is_outermost());
        insert(s.conn, table, 4);
        expect_usage_error(s.conn, "moved from", [&] { inner.commit(); });
        moved_inner.commit();
        BOOST_TEST(s.conn.depth() == 1u);
      }
      BOOST_TEST(committed_ids(table) == "1,2");
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(scopes_destroyed_out_of_order) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;

      // The outer scope goes first: it takes the inner one with it.
      {
        auto outer = std::make_unique<pqscope::transaction>(s.conn);
        insert(s.conn, table, 1);
        pqscope::transaction inner{s.conn};
        insert(s.conn, table, 2);
        BOOST_TEST(pqtest::idle_in_transaction(s.app) == 1);
        BOOST_CHECK_NO_THROW(outer.reset());
        BOOST_TEST(s.conn.depth() == 0u);
        BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
        // A new transaction in the meantime is not the one the stale object ends.
        pqscope::transaction fresh{s.conn};
        insert(s.conn, table, 9);
        expect_usage_error(s.conn, "a scope enclosing it ended first", [&] { inner.commit(); });
        expect_usage_error(s.conn, "already been rolled back", [&] { inner.rollback(); });
        BOOST_TEST(s.conn.depth() == 1u);
        fresh.commit();
      }  // inner's destructor: nothing left to do, and no throw
      BOOST_TEST(committed_ids(table) == "9");
      pqtest::shared_observer().execute("DELETE FROM " + table.name());
      expect_idle(s);

      // Same with std::optional, and the inner scope left to its destructor.
      {
        std::optional<pqscope::transaction> outer;
        outer.emplace(s.conn);
        insert(s.conn, table, 3);
        std::optional<pqscope::transaction> inner;
        inner.emplace(s.conn);
        insert(s.conn, table, 4);
        BOOST_CHECK_NO_THROW(outer.reset());
        BOOST_CHECK_NO_THROW(inner.reset());
        BOOST_TEST(s.conn.depth() == 0u);
      }
      BOOST_TEST(committed_count(table) == 0);
      expect_idle(s);

      // A middle scope goes first: the outermost one stays open and usable.
      {
        pqscope::transaction outer{s.conn};
        insert(s.conn, table, 5);
        auto middle = std::make_unique<pqscope::transaction>(s.conn);
        insert(s.conn, table, 6);
        pqscope::transaction inner{s.conn};
        insert(s.conn, table, 7);
        BOOST_CHECK_NO_THROW(middle.reset());
        BOOST_TEST(s.conn.depth() == 1u);
        expect_usage_error(s.conn, "a scope enclosing it ended first", [&] { inner.commit(); });
        insert(s.conn, table, 8);
        outer.commit();
      }
      BOOST_TEST(committed_ids(table) == "5,8");
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(retries_on_a_transaction_object) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqscope::transaction_options o;
      o.retries = 2;
      expect_usage_error(s.conn, "use pqscope::atomic", [&] { pqscope::transaction tx{s.conn, o}; });
      BOOST_TEST(s.conn.depth() == 0u);
      {
        pqscope::transaction outer{s.conn};
        expect_usage_error(s.conn, "use pqscope::atomic", [&] { pqscope::transaction tx{s.conn, o}; });
        BOOST_TEST(s.conn.depth() == 1u);
        outer.commit();
      }
      expect_idle(s);
    }
  }
}

// replica_wait runs the function again while a standby catches up: a transaction
// object cannot, at any depth.
BOOST_AUTO_TEST_CASE(replica_wait_on_a_transaction_object) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqscope::transaction_options o;
      o.replica_wait = std::chrono::milliseconds(100);
      expect_usage_error(s.conn, "replica_wait may run a function again", [&] { pqscope::transaction tx{s.conn, o}; });
      o.at_least = s.conn.query_value<pqscope::wal_position>("SELECT pg_catalog.pg_current_wal_lsn()");
      expect_usage_error(s.conn, "use pqscope::atomic", [&] { pqscope::transaction tx{s.conn, o}; });
      BOOST_TEST(s.conn.depth() == 0u);
      {
        pqscope::transaction outer{s.conn};
        expect_usage_error(s.conn, "use pqscope::atomic", [&] { pqscope::transaction tx{s.conn, o}; });
        BOOST_TEST(s.conn.depth() == 1u);
        outer.commit();
      }
      BOOST_TEST(s.conn.stats().replica_checks == 0u);
      expect_idle(s);
    }
  }
}

// A negative wait is refused before anything runs, with at_least or without.
BOOST_AUTO_TEST_CASE(negative_replica_wait) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      int runs = 0;
      auto fn = [&] { ++runs; };
      pqscope::transaction_options o;
      o.replica_wait = std::chrono::milliseconds(-1);
      for (bool with_position : {false, true}) {
        if (with_position)
          o.at_least = s.conn.query_value<pqscope::wal_position>("SELECT pg_catalog.pg_current_wal_lsn()");
        expect_usage_error(s.conn, "replica_wait must not be negative", [&] { pqscope::atomic(s.conn, o, fn); });
        expect_usage_error(s.conn, "replica_wait must not be negative",
                           [&] { pqscope::transactional([](pqscope::connection&) {}, o)(s.conn); });
        {
          pqscope::transaction outer{s.conn};
          expect_usage_error(s.conn, "replica_wait must not be negative", [&] { pqscope::atomic(s.conn, o, fn); });
          BOOST_TEST(s.conn.depth() == 1u);
          outer.commit();
        }
      }
      BOOST_TEST(runs == 0);
      BOOST_TEST(s.conn.stats().replica_checks == 0u);
      expect_idle(s);
    }
  }
}

// A negative resolve_wait is refused when the scope opens, outermost or nested.
BOOST_AUTO_TEST_CASE(negative_resolve_wait) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqscope::transaction_options o;
      o.resolve_in_doubt = true;
      o.resolve_wait = std::chrono::milliseconds(-1);
      expect_usage_error(s.conn, "resolve_wait must not be negative", [&] { pqscope::transaction tx{s.conn, o}; });
      {
        pqscope::transaction outer{s.conn};
        expect_usage_error(s.conn, "resolve_wait must not be negative", [&] { pqscope::transaction tx{s.conn, o}; });
        BOOST_TEST(s.conn.depth() == 1u);
        outer.commit();
      }
      expect_idle(s);
    }
  }
}

// replica_set_options are checked when the set is made, which opens no connection:
// nothing listens where these conninfos point.
BOOST_AUTO_TEST_CASE(negative_replica_set_durations) {
  const std::string nowhere = "host=/nonexistent-pqscope-socket-dir port=1 dbname=none connect_timeout=1";
  pqscope::replica_set_options fine;
  fine.replica_wait = std::chrono::milliseconds(0);
  BOOST_CHECK_NO_THROW(pqscope::replica_set(nowhere, {nowhere, nowhere}, fine));
  pqscope::replica_set_options wait;
  wait.replica_wait = std::chrono::milliseconds(-1);
  pqscope::replica_set_options recheck;
  recheck.recheck_after = std::chrono::milliseconds(-1);
  for (const auto* o : {&wait, &recheck}) {
    try {
      pqscope::replica_set rs(nowhere, {nowhere}, *o);
      BOOST_ERROR("no usage_error for a negative replica_set_options duration");
    } catch (const pqscope::usage_error& e) {
      BOOST_TEST(contains(e.what(), "must not be negative"), e.what());
    }
    BOOST_CHECK_THROW(pqscope::replica_set(nowhere, {}, *o), pqscope::usage_error);
  }
}

BOOST_AUTO_TEST_CASE(negative_retries_and_timeouts) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      int runs = 0;
      auto fn = [&] { ++runs; };

      pqscope::transaction_options retries;
      retries.retries = -1;
      expect_usage_error(s.conn, "retries must not be negative", [&] { pqscope::atomic(s.conn, retries, fn); });
      expect_usage_error(s.conn, "retries must not be negative",
                         [&] { pqscope::transactional([](pqscope::connection&) {}, retries)(s.conn); });

      pqscope::transaction_options statement;
      statement.statement_timeout = std::chrono::milliseconds(-1);
      pqscope::transaction_options lock;
      lock.lock_timeout = std::chrono::milliseconds(-5);
      for (const auto* o : {&statement, &lock}) {
        expect_usage_error(s.conn, "must not be negative", [&] { pqscope::transaction tx{s.conn, *o}; });
        expect_usage_error(s.conn, "must not be negative", [&] { pqscope::atomic(s.conn, *o, fn); });
        BOOST_TEST(s.conn.depth() == 0u);
        pqscope::transaction outer{s.conn};
        expect_usage_error(s.conn, "must not be negative", [&] { pqscope::transaction tx{s.conn, *o}; });
        BOOST_TEST(s.conn.depth() == 1u);
        outer.commit();
      }
      BOOST_TEST(runs == 0);
      expect_idle(s);
    }
  }
}

BOOST_AUTO_TEST_CASE(statement_after_error_is_transaction_aborted) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 1);
        BOOST_CHECK_THROW(s.conn.execute("SELECT 1 / 0"), pqscope::data_exception);

        const auto before = s.conn.stats().round_trips;
        try {
          insert(s.conn, table, 2);
          BOOST_ERROR("statement ran in a failed scope");
        } catch (const pqscope::transaction_aborted& e) {
          BOOST_TEST(e.first_sqlstate() == "22012");
          BOOST_TEST(contains(e.first_error(), "division by zero"), e.first_error());
          BOOST_TEST(contains(e.what(), "division by zero"), e.what());
          BOOST_TEST(contains(e.what(), "can only roll back"), e.what());
        }
        BOOST_CHECK_THROW(s.conn.set_local("work_mem", "1MB"), pqscope::transaction_aborted);
        BOOST_CHECK_THROW(pqscope::transaction{s.conn}, pqscope::transaction_aborted);
        BOOST_TEST(s.conn.stats().round_trips == before, "a doomed scope made a round trip");
        BOOST_TEST(s.conn.depth() == 1u);

        // commit() rolls back and says why.
        try {
          tx.commit();
          BOOST_ERROR("a failed scope committed");
        } catch (const pqscope::transaction_aborted& e) {
          BOOST_TEST(e.first_sqlstate() == "22012");
        }
      }
      BOOST_TEST(committed_count(table) == 0);
      expect_idle(s);

      // The same through atomic: the first error leaves, and the next scope is clean.
      try {
        pqscope::atomic(s.conn, [&](pqscope::connection& c) {
          insert(c, table, 3);
          try {
            insert(c, table, 3);
          } catch (const pqscope::unique_violation&) {
          }
          insert(c, table, 4);  // swallowing the error does not un-doom the scope
        });
        BOOST_ERROR("atomic committed a failed scope");
      } catch (const pqscope::transaction_aborted& e) {
        BOOST_TEST(e.first_sqlstate() == "23505");
      }
      BOOST_TEST(committed_count(table) == 0);
      pqscope::atomic(s.conn, [&](pqscope::connection& c) { insert(c, table, 5); });
      BOOST_TEST(committed_ids(table) == "5");
      expect_idle(s);
    }
  }
}

// ---- the safety net: statements the checks cannot see ---------------------------
// A relay rewrites a harmless SELECT into transaction control or a COPY on its way
// to the server, so no statement scanner can see it (whatever it recognises). The
// server's own word after the batch (the transaction status, a COPY reply) must
// still make it a usage_error, with the session rolled back to autocommit and the
// connection usable, directly, through PgBouncer and through Pgpool-II.

namespace {

// A statement that reads as a SELECT of a literal and reaches the server as `real`.
std::string hidden(pqtest::wire_counter& relay, const std::string& real) {
  static int n = 0;
  std::string marker = "SELECT 'pqscope hidden statement " + std::to_string(n++) + "'";
  if (marker.size() < real.size()) marker.resize(real.size(), ' ');
  relay.rewrite(marker, real);
  return marker;
}

// What fn threw: the usage_error's message, or "other: ..." / "returned".
template <class F>
std::string usage_error_of(F&& fn) {
  try {
    fn();
  } catch (const pqscope::usage_error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("other: ") + e.what();
  }
  return "returned";
}

}  // namespace

BOOST_AUTO_TEST_CASE(hidden_control_statements_are_undone) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    pqtest::wire_counter relay{t};
    const std::string app = pqtest::unique_name("hidden");
    pqscope::connection c{relay.conninfo() + " application_name=" + app};
    int id = 0;
    auto usable_in_autocommit = [&](const std::string& after) {
      BOOST_TEST_CONTEXT("after " << after) {
        BOOST_TEST(c.depth() == 0u);
        BOOST_TEST(PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE);
        BOOST_TEST(pqtest::idle_in_transaction(app) == 0);
        // Autocommit: the row is there for another session at once.
        c.execute("INSERT INTO " + table.name() + " (id) VALUES ($1)", ++id);
        BOOST_TEST(pqtest::committed_count(table) == id);
        pqscope::atomic(c, [&] { BOOST_TEST(c.query_value<int>("SELECT 1") == 1); });
        BOOST_TEST(pqtest::idle_in_transaction(app) == 0);
      }
    };
    usable_in_autocommit("nothing");

    // The session ends up inside a transaction no scope owns.
    for (const char* opener : {"BEGIN", "START TRANSACTION", "BEGIN ISOLATION LEVEL SERIALIZABLE"}) {
      const std::string what = usage_error_of([&] { c.execute(hidden(relay, opener)); });
      BOOST_TEST(contains(what, "inside a transaction that no pqscope scope owns"), opener << ": " << what);
      BOOST_TEST(!contains(what, "Pgpool-II"), what);  // the application opened it, not a middleware
      usable_in_autocommit(opener);
    }

    // The transaction ends behind the scopes' back.
    for (const char* closer : {"COMMIT", "ROLLBACK", "END", "ABORT"}) {
      const std::string what = usage_error_of([&] {
        pqscope::atomic(c, [&] {
          c.execute("SELECT 1");
          c.execute(hidden(relay, closer));
        });
      });
      BOOST_TEST(contains(what, "ended the transaction behind pqscope's back"), closer << ": " << what);
      usable_in_autocommit(closer);
    }

    // A COPY reply where a statement's answer was expected, in autocommit and in a scope.
    const std::string copies[] = {"COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT",
                                  "COPY " + table.name() + " (id) FROM STDIN"};
    for (const std::string& copy : copies) {
      for (bool scoped : {false, true}) {
        BOOST_TEST_CONTEXT(copy << (scoped ? " in a scope" : " in autocommit")) {
          const std::string what = usage_error_of([&] {
            if (!scoped) return c.execute(hidden(relay, copy)), void();
            pqscope::atomic(c, [&] { c.execute(hidden(relay, copy)); });
          });
          if (t.name == "pgpool" && contains(what, "other: connection lost")) {
            // Pgpool-II 4.3.5's child process crashes (segmentation fault in its log)
            // on a COPY sent with the extended protocol; the relay serves one session,
            // so the checks end here for Pgpool-II.
            BOOST_TEST_MESSAGE("pgpool: " << what);
            return;
          }
          BOOST_TEST(contains(what, "started COPY"), what);
          usable_in_autocommit(copy);
        }
      }
    }
    BOOST_TEST(pqtest::committed_count(table) == id);  // COPY FROM STDIN added nothing
  });
}
