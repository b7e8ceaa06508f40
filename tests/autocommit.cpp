#define BOOST_TEST_MODULE autocommit
#include <boost/test/unit_test.hpp>

#include <libpq-fe.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/servers.hpp"

// Outside any scope a connection is in autocommit: every statement is durable at
// once, and no transaction is ever left open on the server, whatever way a scope
// ends. Sessions are found in pg_stat_activity by a unique application_name.
//
// Every case loops over pqtest::targets() inside the test body: a data test case
// would read the environment during static initialisation.

namespace {

using pqtest::for_each_target;


// The code under test, on a connection of its own with a unique application_name.
struct session {
  explicit session(const pqtest::target& t)
      : target(t), app(pqtest::unique_name("pqscope_ac")), conn(pqtest::with_app_name(t, app)) {}
  pqtest::target target;
  std::string app;
  pqscope::connection conn;

  void insert(const pqtest::scratch_table& table, int id) {
    conn.execute("INSERT INTO " + table.name() + " (id) VALUES ($1)", id);
  }
};

// The states of the server sessions that carry this application_name, e.g. "idle:1".
std::string server_states(const std::string& app) {
  return pqtest::shared_observer().query_value<std::string>(
      "SELECT coalesce(string_agg(s || ':' || n, ',' ORDER BY s), '') FROM ("
      "  SELECT coalesce(state, '?') AS s, count(*) AS n FROM pg_stat_activity WHERE application_name = $1"
      "  GROUP BY 1) AS states",
      app);
}

// Whether PgBouncer has a server connection assigned to this client.
bool pgbouncer_holds_server_for(const pqtest::target& t, const std::string& app) {
  std::unique_ptr<PGconn, decltype(&PQfinish)> admin(PQconnectdb(t.admin.c_str()), &PQfinish);
  if (PQstatus(admin.get()) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(admin.get()));
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(admin.get(), "SHOW CLIENTS"), &PQclear);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) throw std::runtime_error(PQerrorMessage(admin.get()));
  const int app_col = PQfnumber(r.get(), "application_name");
  const int link_col = PQfnumber(r.get(), "link");
  if (app_col < 0 || link_col < 0) throw std::runtime_error("SHOW CLIENTS: no application_name or link column");
  bool found = false, linked = false;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    if (app != PQgetvalue(r.get(), i, app_col)) continue;
    found = true;
    linked = linked || *PQgetvalue(r.get(), i, link_col) != '\0';
  }
  if (!found) throw std::runtime_error("SHOW CLIENTS does not list " + app);
  return linked;
}

// No transaction is open: not in the scope stack, not in libpq's view of the
// session, not on the server.
void check_idle(session& s) {
  BOOST_TEST(s.conn.depth() == 0u);
  BOOST_TEST(!s.conn.in_transaction());
  BOOST_TEST(PQtransactionStatus(s.conn.native_handle()) == PQTRANS_IDLE);
  BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
  const std::string states = server_states(s.app);
  if (!s.target.pgbouncer()) {  // PostgreSQL, or Pgpool-II's one server session per client
    BOOST_TEST(states == "idle:1");
  } else {
    // Transaction pooling: between transactions the client holds no server
    // connection. PgBouncer is the one to ask: a server connection this client used
    // last keeps its name, and another test's client (one that sets no
    // application_name) may be running a statement on it right now.
    BOOST_TEST(!pgbouncer_holds_server_for(s.target, s.app), "server sessions of " << s.app << ": " << states);
  }
}

// An application error, as opposed to one the server reported.
struct unit_failure : std::runtime_error {
  unit_failure() : std::runtime_error("the unit of work gave up") {}
};

// How a call ended, as a string that reads well in a failed check.
std::string outcome(const std::function<void()>& f) {
  try {
    f();
    return "returned";
  } catch (const pqscope::transaction_aborted& e) {
    return "transaction_aborted[" + e.first_sqlstate() + "]";
  } catch (const pqscope::unique_violation&) {
    return "unique_violation";
  } catch (const pqscope::sql_error& e) {
    return "sql_error[" + e.sqlstate() + "]";
  } catch (const pqscope::usage_error&) {
    return "usage_error";
  } catch (const unit_failure&) {
    return "unit_failure";
  } catch (const std::exception& e) {
    return std::string("unexpected: ") + e.what();
  }
}

}  // namespace

BOOST_AUTO_TEST_CASE(statement_outside_any_scope_is_durable_at_once) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    session s(t);
    const pqscope::connection_stats before = s.conn.stats();
    s.insert(table, 1);
    // Seen by another session before this one does anything else.
    BOOST_TEST(committed_ids(table) == "1");
    check_idle(s);
    s.conn.execute("UPDATE " + table.name() + " SET id = 2 WHERE id = 1");
    BOOST_TEST(committed_ids(table) == "2");
    // One round trip each, and no BEGIN / COMMIT around them.
    BOOST_TEST(s.conn.stats().round_trips - before.round_trips == 2u);
    BOOST_TEST(s.conn.stats().control_statements == before.control_statements);
    BOOST_TEST(s.conn.stats().transactions_committed == before.transactions_committed);
    check_idle(s);
  });
}

// However the outermost scope ends, the session is idle afterwards and the next
// statement outside any scope commits at once.
BOOST_AUTO_TEST_CASE(session_is_idle_after_every_scope_exit) {
  pqtest::scratch_table table;
  pqtest::scratch_table deferred{"id int UNIQUE DEFERRABLE INITIALLY DEFERRED"};
  struct exit_case {
    const char* name;
    std::function<void(session&)> run;
    std::string outcome, rows;
  };
  const std::vector<exit_case> cases = {
      {"commit()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         tx.commit();
       },
       "returned", "1"},
      {"rollback()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         tx.rollback();
       },
       "returned", ""},
      {"destroyed without commit() or rollback()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
       },
       "returned", ""},
      {"exception",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         throw unit_failure();
       },
       "unit_failure", ""},
      {"exception from three levels deep",
       [&](session& s) {
         pqscope::transaction outer{s.conn};
         s.insert(table, 1);
         pqscope::transaction middle{s.conn};
         pqscope::transaction inner{s.conn};
         s.insert(table, 2);
         throw unit_failure();
       },
       "unit_failure", ""},
      {"SQL error inside",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         s.insert(table, 1);
         tx.commit();
       },
       "unique_violation", ""},
      {"first statement fails, in the same round trip as BEGIN",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.conn.execute("SELEC 1");
         tx.commit();
       },
       "sql_error[42601]", ""},
      {"SQL error caught inside, then commit()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         BOOST_CHECK_THROW(s.insert(table, 1), pqscope::unique_violation);
         tx.commit();
       },
       "transaction_aborted[23505]", ""},
      {"SQL error caught inside, then another statement",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         BOOST_CHECK_THROW(s.insert(table, 1), pqscope::unique_violation);
         s.insert(table, 2);
       },
       "transaction_aborted[23505]", ""},
      {"inner scope without savepoint rolled back, then commit()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         pqscope::transaction_options o;
         o.savepoint = false;
         pqscope::transaction inner{s.conn, o};
         s.insert(table, 2);
         inner.rollback();
         tx.commit();
       },
       "transaction_aborted[]", ""},
      {"inner savepoint rolled back, then commit()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         pqscope::transaction inner{s.conn};
         s.insert(table, 2);
         inner.rollback();
         tx.commit();  // the ROLLBACK TO SAVEPOINT goes out with the COMMIT
       },
       "returned", "1"},
      {"SQL error in a savepoint, caught, then commit()",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         BOOST_CHECK_THROW(pqscope::atomic(s.conn, [&] { s.insert(table, 1); }), pqscope::unique_violation);
         tx.commit();  // ROLLBACK TO SAVEPOINT leaves the failed state, in the round trip of the COMMIT
       },
       "returned", "1"},
      {"on_commit callback throws",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(table, 1);
         s.conn.on_commit([] { throw unit_failure(); });
         BOOST_CHECK_THROW(tx.commit(), unit_failure);  // thrown after the COMMIT
         // The COMMIT went through: the scope knows it was committed, not rolled back.
         BOOST_CHECK_EXCEPTION(tx.commit(), pqscope::usage_error, [](const pqscope::usage_error& e) {
           return std::string(e.what()).find("committed") != std::string::npos;
         });
       },
       "returned", "1"},
      {"COMMIT fails on the server (deferred unique constraint)",
       [&](session& s) {
         pqscope::transaction tx{s.conn};
         s.insert(deferred, 1);
         s.insert(deferred, 1);
         tx.commit();
       },
       "unique_violation", ""},
      {"atomic() returns", [&](session& s) { pqscope::atomic(s.conn, [&] { s.insert(table, 1); }); }, "returned", "1"},
      {"atomic() throws",
       [&](session& s) {
         pqscope::atomic(s.conn, [&] {
           s.insert(table, 1);
           throw unit_failure();
         });
       },
       "unit_failure", ""},
  };

  for_each_target([&](const pqtest::target& t) {
    session s(t);  // one session for all the cases: each must leave it as it found it
    for (const exit_case& c : cases) BOOST_TEST_CONTEXT(c.name) {
        empty(table);
        empty(deferred);
        BOOST_TEST(outcome([&] { c.run(s); }) == c.outcome);
        check_idle(s);
        BOOST_TEST(committed_ids(table) == c.rows);
        BOOST_TEST(committed_ids(deferred) == "");
        // Autocommit again: durable at once, with nothing left over from the scope.
        const auto controls = s.conn.stats().control_statements;
        BOOST_TEST(outcome([&] { s.insert(table, 100); }) == "returned");
        BOOST_TEST(committed_ids(table) == (c.rows.empty() ? "100" : c.rows + ",100"));
        BOOST_TEST(s.conn.stats().control_statements == controls);
        BOOST_TEST(PQtransactionStatus(s.conn.native_handle()) == PQTRANS_IDLE);
      }
  });
}

// A failed statement outside any scope dooms nothing: the next one runs.
BOOST_AUTO_TEST_CASE(statement_after_an_autocommit_error_works) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    session s(t);
    s.insert(table, 1);
    BOOST_CHECK_THROW(s.insert(table, 1), pqscope::unique_violation);
    check_idle(s);
    s.insert(table, 2);
    BOOST_TEST(committed_ids(table) == "1,2");
    BOOST_CHECK_EXCEPTION(s.conn.execute("SELEC 1"), pqscope::sql_error,
                          [](const pqscope::sql_error& e) { return e.sqlstate() == "42601"; });
    BOOST_CHECK_THROW(s.conn.execute("SELECT 1 / 0"), pqscope::data_exception);
    BOOST_TEST(s.conn.query_value<int>("SELECT 7") == 7);
    // And a scope afterwards is a normal transaction.
    {
      pqscope::transaction tx{s.conn};
      s.insert(table, 3);
      tx.commit();
    }
    BOOST_TEST(committed_ids(table) == "1,2,3");
    check_idle(s);
  });
}

// BEGIN, SAVEPOINT and friends are sent lazily, with the first statement: a scope
// in which nothing ran never reaches the server, and leaves nothing pending for
// the next statement outside any scope.
BOOST_AUTO_TEST_CASE(scope_without_statements_leaves_nothing_on_the_server) {
  pqtest::scratch_table table;
  struct empty_scope {
    const char* name;
    std::function<void(session&)> run;
  };
  const std::vector<empty_scope> cases = {
      {"commit()",
       [](session& s) {
         pqscope::transaction tx{s.conn};
         BOOST_TEST(s.conn.in_transaction());  // on the client only
         tx.commit();
       }},
      {"rollback()",
       [](session& s) {
         pqscope::transaction tx{s.conn};
         tx.rollback();
       }},
      {"destroyed", [](session& s) { pqscope::transaction tx{s.conn}; }},
      {"options, set_local() and nested scopes",
       [](session& s) {
         pqscope::transaction_options o;
         o.isolation = pqscope::isolation::serializable;
         o.read_only = true;
         o.statement_timeout = std::chrono::milliseconds(5000);
         pqscope::transaction outer{s.conn, o};
         s.conn.set_local("work_mem", "8MB");
         {
           pqscope::transaction inner{s.conn, o};
           inner.commit();
         }
         {
           pqscope::transaction inner{s.conn};
           inner.rollback();
         }
         outer.commit();
       }},
      {"nested scopes, outer rolled back",
       [](session& s) {
         pqscope::transaction outer{s.conn};
         pqscope::transaction inner{s.conn};
         inner.commit();
         outer.rollback();
       }},
      {"inner scope without savepoint rolled back",
       [](session& s) {
         // Still refused, though nothing was sent: the inner scope could not be undone on its own.
         pqscope::transaction outer{s.conn};
         pqscope::transaction_options o;
         o.savepoint = false;
         pqscope::transaction inner{s.conn, o};
         inner.rollback();
         BOOST_CHECK_THROW(outer.commit(), pqscope::transaction_aborted);
       }},
      {"atomic()",
       [](session& s) {
         pqscope::atomic(s.conn, [] {});
         BOOST_TEST(pqscope::atomic(s.conn, [] { return 5; }) == 5);
       }},
  };

  for_each_target([&](const pqtest::target& t) {
    empty(table);
    session s(t);
    int id = 0;
    std::string committed;
    for (const empty_scope& c : cases) BOOST_TEST_CONTEXT(c.name) {
        const std::string marker = "SELECT 'last statement before " + std::string(c.name) + "'";
        s.conn.execute(marker);
        const pqscope::connection_stats before = s.conn.stats();
        BOOST_TEST(outcome([&] { c.run(s); }) == "returned");
        BOOST_TEST(s.conn.stats().round_trips == before.round_trips);
        BOOST_TEST(s.conn.stats().control_statements == before.control_statements);
        BOOST_TEST(s.conn.stats().transactions_committed == before.transactions_committed);
        BOOST_TEST(s.conn.stats().transactions_rolled_back == before.transactions_rolled_back);
        BOOST_TEST(s.conn.depth() == 0u);
        if (t.name == "direct")  // the server's last word from this session is still the marker
          BOOST_TEST(pqtest::shared_observer().query_value<std::string>(
                         "SELECT query FROM pg_stat_activity WHERE application_name = $1", s.app) == marker);
        // The next statement goes out alone and commits at once.
        BOOST_TEST(outcome([&] { s.insert(table, ++id); }) == "returned");
        committed += (committed.empty() ? "" : ",") + std::to_string(id);
        BOOST_TEST(committed_ids(table) == committed);
        BOOST_TEST(s.conn.stats().control_statements == before.control_statements);
      }
    check_idle(s);
  });
}

// Transaction control through execute() outside a scope is refused; the session stays idle.
BOOST_AUTO_TEST_CASE(raw_transaction_control_outside_a_scope_is_refused) {
  pqtest::scratch_table table;
  const char* const refused_before_sending[] = {
      "BEGIN",
      "begin",
      "BEGIN ISOLATION LEVEL SERIALIZABLE",
      "START TRANSACTION",
      "  /* note */ BEGIN",
      "-- note\nBEGIN",
      "COMMIT",
      "ROLLBACK",
      "END",
      "ABORT",
      "SAVEPOINT s",
      "RELEASE SAVEPOINT s",
      "ROLLBACK TO SAVEPOINT s",
      "PREPARE TRANSACTION 'pqscope_x'",
  };
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    session s(t);
    for (const char* sql : refused_before_sending) BOOST_TEST_CONTEXT(sql) {
        const auto trips = s.conn.stats().round_trips;
        BOOST_CHECK_THROW(s.conn.execute(sql), pqscope::usage_error);
        BOOST_TEST(s.conn.stats().round_trips == trips);
        BOOST_TEST(s.conn.depth() == 0u);
      }
    check_idle(s);
    // The keyword check misses a BEGIN behind an empty statement; the server's
    // transaction status after the round trip catches it and rolls back.
    BOOST_CHECK_THROW(s.conn.execute(";BEGIN"), pqscope::usage_error);
    check_idle(s);
    s.insert(table, 1);
    BOOST_TEST(committed_ids(table) == "1");
    check_idle(s);
  });
}
