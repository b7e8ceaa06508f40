// Connection loss at every point of a transaction, directly and through PgBouncer:
// the backend is killed from a second connection (pg_terminate_backend), the answer
// to COMMIT is cut off, PgBouncer is restarted. Each case ends in connection_error
// (in_doubt_error when COMMIT was sent and no answer came), scopes unwind without
// throwing, nothing is half-applied, and the same connection object is usable again
// after reconnect(). Runs alone (RUN_SERIAL): it restarts the shared PgBouncer.

#define BOOST_TEST_MODULE faults
#include <boost/test/unit_test.hpp>

#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "support/servers.hpp"

namespace {

// Terminates a backend and waits until it is gone.
void kill_backend(int pid) {
  auto obs = pqtest::observer();
  obs.execute("SELECT pg_terminate_backend($1)", pid);
  for (int i = 0; i < 200; ++i) {
    if (obs.query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  BOOST_FAIL("backend " << pid << " did not go away");
}

// libpq_driver with a fault at COMMIT: the backend is killed just before the batch
// that carries COMMIT is sent, or the batch runs and its answer is cut off.
struct fault_driver : pqscope::libpq_driver {
  // drop_commit_answer_only: the answers before COMMIT's arrive, COMMIT's does not.
  enum class fault { none, kill_before_commit, drop_commit_answer, drop_commit_answer_only } at_commit = fault::none;
  int victim = 0;  // backend pid, for kill_before_commit

  pqscope::batch_reply exchange(const std::vector<pqscope::statement>& batch) {
    const bool commit = !batch.empty() && std::string(batch.back().sql) == "COMMIT";
    if (commit && at_commit == fault::kill_before_commit) kill_backend(victim);
    pqscope::batch_reply br = libpq_driver::exchange(batch);
    if (commit && at_commit == fault::drop_commit_answer) {
      // The server has committed; the client never hears it.
      ::shutdown(PQsocket(native_handle()), SHUT_RDWR);
      br.lost = true;
      br.lost_message = "answer cut off by the test";
      for (auto& r : br.replies) r.st = pqscope::reply::status::skipped;
    }
    if (commit && at_commit == fault::drop_commit_answer_only) {
      ::shutdown(PQsocket(native_handle()), SHUT_RDWR);
      br.lost = true;
      br.lost_message = "answer to COMMIT cut off by the test";
      br.replies.back().st = pqscope::reply::status::skipped;
    }
    return br;
  }
};
using fault_connection = pqscope::basic_connection<fault_driver>;

int backend_pid(pqscope::connection& c) { return c.query_value<int>("SELECT pg_backend_pid()"); }

// After a fault: the connection can be brought back and used.
template <class Conn>
void check_recovers(Conn& c, const pqtest::scratch_table& t, int id) {
  BOOST_TEST(c.depth() == 0u);
  c.reconnect();
  pqscope::atomic(c, [&] { c.execute("INSERT INTO " + t.name() + " VALUES ($1, 'after')", id); });
  BOOST_TEST(c.template query_value<long>("SELECT count(*) FROM " + t.name() + " WHERE id = $1", id) == 1);
}

}  // namespace

BOOST_AUTO_TEST_CASE(killed_before_begin_reaches_the_server) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      pqscope::connection c{t.conninfo};
      const int pid = backend_pid(c);
      pqscope::transaction tx{c};  // sends nothing yet
      kill_backend(pid);
      if (t.pgbouncer()) {
        // Between transactions the client holds no server connection: PgBouncer hands
        // it a live one, and the loss never reaches the application.
        c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
        tx.commit();
        BOOST_TEST(table.ids() == "1");
      } else {
        BOOST_CHECK_THROW(c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')"), pqscope::connection_error);
        BOOST_CHECK_THROW(tx.commit(), pqscope::connection_error);
        BOOST_TEST(table.count() == 0);
        check_recovers(c, table, 9);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(killed_between_statements) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      pqscope::connection c{t.conninfo};
      {
        pqscope::transaction tx{c};
        c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
        kill_backend(backend_pid(c));  // inside the transaction: pinned, also through PgBouncer
        BOOST_CHECK_THROW(c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')"), pqscope::connection_error);
        BOOST_TEST(c.depth() == 1u);
        // Any further use says the same, without touching the dead socket.
        BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error);
      }  // the destructor ends the scope quietly
      BOOST_TEST(table.count() == 0);
      check_recovers(c, table, 9);
    }
  }
}

BOOST_AUTO_TEST_CASE(killed_inside_a_savepoint) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      pqscope::connection c{t.conninfo};
      bool rolled_back = false;
      BOOST_CHECK_THROW(pqscope::atomic(c,
                                        [&] {
                                          c.on_rollback([&] { rolled_back = true; });
                                          c.execute("INSERT INTO " + table.name() + " VALUES (1, 'outer')");
                                          pqscope::atomic(c, [&] {
                                            c.execute("INSERT INTO " + table.name() + " VALUES (2, 'inner')");
                                            kill_backend(backend_pid(c));
                                            c.execute("INSERT INTO " + table.name() + " VALUES (3, 'inner')");
                                          });
                                        }),
                        pqscope::connection_error);
      BOOST_TEST(rolled_back);  // the server never saw a COMMIT
      BOOST_TEST(table.count() == 0);
      check_recovers(c, table, 9);
    }
  }
}

BOOST_AUTO_TEST_CASE(killed_while_commit_is_in_flight_is_in_doubt) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      fault_connection c{t.conninfo};
      bool committed = false, rolled_back = false;
      {
        pqscope::transaction tx{c};
        c.on_commit([&] { committed = true; });
        c.on_rollback([&] { rolled_back = true; });
        c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
        c.driver().victim = c.query_value<int>("SELECT pg_backend_pid()");
        c.driver().at_commit = fault_driver::fault::kill_before_commit;
        // Never reported as success, never as rollback: the outcome is unknown.
        BOOST_CHECK_THROW(tx.commit(), pqscope::in_doubt_error);
      }
      BOOST_TEST(!committed);
      BOOST_TEST(!rolled_back);
      BOOST_TEST(table.count() == 0);  // here it did not commit; the library could not know
      c.driver().at_commit = fault_driver::fault::none;
      check_recovers(c, table, 9);
    }
  }
}

BOOST_AUTO_TEST_CASE(answer_to_commit_lost_is_in_doubt) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      fault_connection c{t.conninfo};
      {
        pqscope::transaction tx{c};
        c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
        c.driver().at_commit = fault_driver::fault::drop_commit_answer;
        BOOST_CHECK_THROW(tx.commit(), pqscope::in_doubt_error);
      }
      BOOST_TEST(table.count() == 1);  // here it did commit: in doubt means either
      c.driver().at_commit = fault_driver::fault::none;
      check_recovers(c, table, 9);
    }
  }
}

// resolve_in_doubt: the xid rode with the INSERT, so a fresh connection can ask
// pg_xact_status() and commit() reports the real outcome.
BOOST_AUTO_TEST_CASE(resolve_in_doubt_reports_the_outcome) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      pqscope::transaction_options o;
      o.resolve_in_doubt = true;
      for (auto fault : {fault_driver::fault::kill_before_commit, fault_driver::fault::drop_commit_answer}) {
        fault_connection c{t.conninfo};
        const bool kill = fault == fault_driver::fault::kill_before_commit;
        const int id = kill ? 1 : 2;
        bool committed = false, rolled_back = false;
        const auto before = c.stats().round_trips;
        {
          pqscope::transaction tx{c, o};
          c.on_commit([&] { committed = true; });
          c.on_rollback([&] { rolled_back = true; });
          c.execute("INSERT INTO " + table.name() + " VALUES ($1, 'x')", id);
          if (kill) c.driver().victim = c.query_value<int>("SELECT pg_backend_pid()");
          c.driver().at_commit = fault;
          if (kill) {
            BOOST_CHECK_THROW(tx.commit(), pqscope::connection_error);
          } else {
            BOOST_CHECK_NO_THROW(tx.commit());
          }
        }
        // Learning the xid cost no round trip of its own.
        BOOST_TEST(c.stats().round_trips - before == (kill ? 3u : 2u));
        BOOST_TEST(committed == !kill);
        BOOST_TEST(rolled_back == kill);
        BOOST_TEST(pqtest::observer().query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE id = $1",
                                                        id) == (kill ? 0 : 1));
        // The session itself is gone either way.
        BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error);
        c.driver().at_commit = fault_driver::fault::none;
        check_recovers(c, table, 10 + id);
      }
    }
  }
}

// Batched, the transaction id is asked in the batch that carries COMMIT, after the
// last statement: when only COMMIT's answer is lost, the id came back and the
// outcome is settled on a fresh connection. Not replayed either way.
BOOST_AUTO_TEST_CASE(batched_resolve_in_doubt_learns_the_xid_with_the_commit) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      pqscope::transaction_options o;
      o.resolve_in_doubt = true;
      o.batch = true;
      fault_connection c{t.conninfo};
      bool committed = false;
      int calls = 0;
      c.driver().at_commit = fault_driver::fault::drop_commit_answer_only;
      BOOST_CHECK_NO_THROW(pqscope::atomic(c, o, [&] {
        ++calls;
        c.on_commit([&] { committed = true; });
        c.execute("INSERT INTO " + table.name() + " VALUES (5, 'x')");
      }));
      BOOST_TEST(calls == 1);
      BOOST_TEST(committed);
      BOOST_TEST(c.stats().replays == 0u);
      BOOST_TEST(c.stats().round_trips == 1u);  // the id rode in the one batch
      BOOST_TEST(pqtest::observer().query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE id = 5") == 1);
      c.driver().at_commit = fault_driver::fault::none;
      check_recovers(c, table, 15);
    }
  }
}

BOOST_AUTO_TEST_CASE(pgbouncer_restart_mid_transaction) {
  const std::string pidfile = pqtest::env("PQSCOPE_TEST_PGBOUNCER_PIDFILE");
  const std::string ini = pidfile.substr(0, pidfile.rfind('/')) + "/pgbouncer.ini";
  auto read_pid = [&] {
    std::ifstream in(pidfile);
    int pid = 0;
    in >> pid;
    return pid;
  };
  pqtest::scratch_table table;
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_PGBOUNCER")};
  {
    pqscope::transaction tx{c};
    c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");

    const int old_pid = read_pid();
    BOOST_REQUIRE(old_pid > 0);
    ::kill(old_pid, SIGTERM);
    for (int i = 0; i < 500 && ::kill(old_pid, 0) == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    const std::string start = (::geteuid() == 0 ? "runuser -u postgres -- " : "") + std::string("pgbouncer -d -q ") + ini;
    BOOST_REQUIRE(std::system(start.c_str()) == 0);

    BOOST_CHECK_THROW(c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')"), pqscope::connection_error);
  }
  BOOST_TEST(table.count() == 0);
  // PgBouncer needs a moment to listen again.
  for (int i = 0;; ++i) {
    try {
      check_recovers(c, table, 9);
      break;
    } catch (const pqscope::connection_error&) {
      if (i == 100) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

// A retry after an in-doubt COMMIT could apply the work twice: atomic() never retries it.
BOOST_AUTO_TEST_CASE(in_doubt_is_never_retried) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      fault_connection c{t.conninfo};
      pqscope::transaction_options o;
      o.retries = 5;
      int runs = 0;
      BOOST_CHECK_THROW(pqscope::atomic(c, o,
                                        [&](fault_connection& conn) {
                                          ++runs;
                                          conn.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
                                          conn.driver().at_commit = fault_driver::fault::drop_commit_answer;
                                        }),
                        pqscope::in_doubt_error);
      BOOST_TEST(runs == 1);
      BOOST_TEST(table.count() == 1);
      c.driver().at_commit = fault_driver::fault::none;
      check_recovers(c, table, 9);
    }
  }
}
