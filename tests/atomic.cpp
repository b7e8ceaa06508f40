#define BOOST_TEST_MODULE atomic
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

using namespace std::chrono_literals;

namespace {


struct session {
  std::string app;
  pqscope::connection conn;
  explicit session(const pqtest::target& t, const std::string& prefix = "atomic")
      : app(pqtest::unique_name(prefix)), conn(pqtest::with_app_name(t, app)) {}
};

struct my_error : std::runtime_error {
  explicit my_error(int v) : std::runtime_error("my_error"), value(v) {}
  int value;
};

// One-shot signal between threads; waits are bounded so a bug cannot hang the run.
class one_shot {
 public:
  void set() {
    std::lock_guard<std::mutex> lock(m_);
    set_ = true;
    cv_.notify_all();
  }
  bool wait(std::chrono::milliseconds limit = 10s) {
    std::unique_lock<std::mutex> lock(m_);
    return cv_.wait_for(lock, limit, [&] { return set_; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool set_ = false;
};

// Until the session named `app` waits for a row lock (seen from outside).
bool wait_until_blocked(const std::string& app) {
  auto& obs = pqtest::shared_observer();
  for (int i = 0; i < 500; ++i) {
    if (obs.query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND "
                              "wait_event_type = 'Lock'",
                              app) > 0)
      return true;
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

void insert(pqscope::connection& c, const pqtest::scratch_table& t, int id) {
  c.execute("INSERT INTO " + t.name() + " (id) VALUES ($1)", id);
}

std::string show(pqscope::connection& c, const std::string& setting) {
  return c.query_value<std::string>("SHOW " + setting);
}

// The table transfer() works on.
std::string g_accounts;

void transfer(pqscope::connection& c, int from, int to, long amount) {
  // Credit first: a failing debit must take the credit back with it.
  c.execute("UPDATE " + g_accounts + " SET balance = balance + $2 WHERE id = $1", to, amount);
  c.execute("UPDATE " + g_accounts + " SET balance = balance - $2 WHERE id = $1", from, amount);
}

std::string balances() {
  return pqtest::shared_observer().query_value<std::string>("SELECT string_agg(balance::text, ',' ORDER BY id) FROM " +
                                                     g_accounts);
}

pqscope::transaction_options serializable(int retries = 0) {
  pqscope::transaction_options o;
  o.isolation = pqscope::isolation::serializable;
  o.retries = retries;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_CASE(returns_what_fn_returns) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;

      int i = pqscope::atomic(s.conn, [](pqscope::connection& c) { return c.query_value<int>("SELECT 42"); });
      BOOST_TEST(i == 42);

      std::string text = pqscope::atomic(s.conn, [&] { return s.conn.query_value<std::string>("SELECT 'abc'"); });
      BOOST_TEST(text == "abc");

      std::unique_ptr<int> owned = pqscope::atomic(
          s.conn, [](pqscope::connection& c) { return std::make_unique<int>(c.query_value<int>("SELECT 7")); });
      BOOST_TEST((owned && *owned == 7));

      // void, taking the connection or nothing; the scope is open while fn runs.
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        BOOST_TEST(c.depth() == 1u);
        insert(c, table, 1);
      });
      pqscope::atomic(s.conn, [&] {
        BOOST_TEST(s.conn.depth() == 1u);
        insert(s.conn, table, 2);
      });
      BOOST_TEST(committed_ids(table) == "1,2");

      // A mutable function object is called as such.
      int calls = 0;
      pqscope::atomic(s.conn, [&calls, n = 0]() mutable { calls = ++n; });
      BOOST_TEST(calls == 1);

      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(exception_rolls_back_and_is_rethrown) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      const auto rolled_back = s.conn.stats().transactions_rolled_back;
      try {
        pqscope::atomic(s.conn, [&](pqscope::connection& c) {
          insert(c, table, 1);
          throw my_error(5);
        });
        BOOST_ERROR("no exception");
      } catch (const my_error& e) {
        BOOST_TEST(e.value == 5);  // the very object, not a copy of a base
      }
      BOOST_TEST(s.conn.stats().transactions_rolled_back == rolled_back + 1);
      BOOST_TEST(committed_count(table) == 0);

      // A server error keeps its most specific type.
      insert(s.conn, table, 1);
      BOOST_CHECK_EXCEPTION(pqscope::atomic(s.conn,
                                            [&](pqscope::connection& c) {
                                              insert(c, table, 2);
                                              insert(c, table, 1);
                                            }),
                            pqscope::unique_violation, [](const pqscope::sql_error& e) { return e.sqlstate() == "23505"; });
      BOOST_TEST(committed_ids(table) == "1");
      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(transactional_wraps_functions) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table accounts{"id int PRIMARY KEY, balance bigint NOT NULL CHECK (balance >= 0)"};
      g_accounts = accounts.name();
      pqtest::shared_observer().execute("INSERT INTO " + g_accounts + " VALUES (1, 100), (2, 0)");

      auto safe_transfer = pqscope::transactional(transfer);
      safe_transfer(s.conn, 1, 2, 30L);
      BOOST_TEST(balances() == "70,30");
      // The debit fails after the credit ran: both are undone.
      BOOST_CHECK_THROW(safe_transfer(s.conn, 1, 2, 500L), pqscope::check_violation);
      BOOST_TEST(balances() == "70,30");

      // Inside a scope each call is a savepoint: a failed one does not spoil the rest.
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        safe_transfer(c, 1, 2, 10);
        BOOST_CHECK_THROW(safe_transfer(c, 2, 1, 1000), pqscope::check_violation);
        safe_transfer(c, 2, 1, 5);
      });
      BOOST_TEST(balances() == "65,35");

      auto doubled = pqscope::transactional(
          [](pqscope::connection& c, int x) {
            BOOST_TEST(c.depth() == 1u);
            return c.query_value<int>("SELECT $1::int * 2", x);
          });
      BOOST_TEST(doubled(s.conn, 21) == 42);

      // The options go with every call.
      auto isolation_of = pqscope::transactional(
          [](pqscope::connection& c) { return show(c, "transaction_isolation"); }, serializable());
      BOOST_TEST(isolation_of(s.conn) == "serializable");

      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(nested_atomic_is_a_savepoint) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      const auto savepoints = s.conn.stats().savepoints;
      const auto committed = s.conn.stats().transactions_committed;
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        insert(c, table, 1);
        int inner = pqscope::atomic(c, [&](pqscope::connection& c2) {
          BOOST_TEST(c2.depth() == 2u);
          insert(c2, table, 2);
          return 2;
        });
        BOOST_TEST(inner == 2);
        BOOST_CHECK_THROW(pqscope::atomic(c,
                                          [&] {
                                            insert(c, table, 3);
                                            throw my_error(3);
                                          }),
                          my_error);
        BOOST_TEST(c.depth() == 1u);
        insert(c, table, 4);
        BOOST_TEST(committed_count(table) == 0);
      });
      BOOST_TEST(committed_ids(table) == "1,2,4");
      BOOST_TEST(s.conn.stats().savepoints == savepoints + 2);
      BOOST_TEST(s.conn.stats().transactions_committed == committed + 1);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(on_commit_runs_after_outermost_commit_only) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      int outer_commits = 0, inner_commits = 0, rollbacks = 0;
      long seen_committed = -1;
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        insert(c, table, 1);
        c.on_commit([&] {
          ++outer_commits;
          seen_committed = committed_count(table);  // the data is durable when it runs
        });
        c.on_rollback([&] { ++rollbacks; });
        pqscope::atomic(c, [&](pqscope::connection& c2) {
          insert(c2, table, 2);
          c2.on_commit([&] { ++inner_commits; });
        });
        BOOST_TEST(inner_commits == 0);  // RELEASE SAVEPOINT is not a commit
        BOOST_TEST(outer_commits == 0);
        insert(c, table, 3);
      });
      BOOST_TEST(outer_commits == 1);
      BOOST_TEST(inner_commits == 1);
      BOOST_TEST(seen_committed == 3);
      BOOST_TEST(rollbacks == 0);

      // Not on rollback.
      int commits = 0;
      BOOST_CHECK_THROW(pqscope::atomic(s.conn,
                                        [&](pqscope::connection& c) {
                                          c.on_commit([&] { ++commits; });
                                          pqscope::atomic(c, [&] { c.on_commit([&] { ++commits; }); });
                                          insert(c, table, 4);
                                          throw my_error(0);
                                        }),
                        my_error);
      BOOST_TEST(commits == 0);

      // Outside a scope there is nothing to wait for.
      s.conn.on_commit([&] { ++commits; });
      BOOST_TEST(commits == 1);
      BOOST_TEST(committed_ids(table) == "1,2,3");
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(on_rollback_runs_after_outermost_rollback) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      int outer_rollbacks = 0, inner_rollbacks = 0, commits = 0;
      std::size_t depth_seen = 99;
      BOOST_CHECK_THROW(pqscope::atomic(s.conn,
                                        [&](pqscope::connection& c) {
                                          insert(c, table, 1);
                                          c.on_rollback([&] {
                                            ++outer_rollbacks;
                                            depth_seen = s.conn.depth();
                                          });
                                          // Released into the outer scope, so it rolls back with it.
                                          pqscope::atomic(c, [&] { c.on_rollback([&] { ++inner_rollbacks; }); });
                                          BOOST_TEST(outer_rollbacks + inner_rollbacks == 0);
                                          throw my_error(1);
                                        }),
                        my_error);
      BOOST_TEST(outer_rollbacks == 1);
      BOOST_TEST(inner_rollbacks == 1);
      BOOST_TEST(depth_seen == 0u);

      // Registered in a savepoint that rolls back: dropped, whatever the outer scope does.
      outer_rollbacks = inner_rollbacks = 0;
      int inner_commits = 0;
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        insert(c, table, 2);
        BOOST_CHECK_THROW(pqscope::atomic(c,
                                          [&] {
                                            c.on_rollback([&] { ++inner_rollbacks; });
                                            c.on_commit([&] { ++inner_commits; });
                                            insert(c, table, 3);
                                            throw my_error(2);
                                          }),
                          my_error);
        BOOST_TEST(inner_rollbacks == 0);
        c.on_commit([&] { ++commits; });
      });
      BOOST_TEST(inner_rollbacks == 0);
      BOOST_TEST(inner_commits == 0);
      BOOST_TEST(commits == 1);
      BOOST_TEST(committed_ids(table) == "2");

      BOOST_CHECK_THROW(pqscope::atomic(s.conn,
                                        [&](pqscope::connection& c) {
                                          BOOST_CHECK_THROW(pqscope::atomic(c,
                                                                            [&] {
                                                                              insert(c, table, 4);
                                                                              c.on_rollback([&] { ++inner_rollbacks; });
                                                                              throw my_error(3);
                                                                            }),
                                                            my_error);
                                          throw my_error(4);
                                        }),
                        my_error);
      BOOST_TEST(inner_rollbacks == 0);

      // An explicit rollback() of the outermost transaction object runs them too.
      {
        pqscope::transaction tx{s.conn};
        insert(s.conn, table, 5);
        s.conn.on_rollback([&] { ++outer_rollbacks; });
        tx.rollback();
      }
      BOOST_TEST(outer_rollbacks == 1);

      // Outside a scope nothing can roll back: never runs.
      s.conn.on_rollback([&] { ++outer_rollbacks; });
      BOOST_TEST(outer_rollbacks == 1);
      BOOST_TEST(committed_ids(table) == "2");
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

// Write skew: each transaction reads the sum and inserts sum + 1. Run serially
// the second sees the first's row; interleaved, SERIALIZABLE must refuse one.
struct write_skew {
  pqtest::scratch_table table{"who text, n bigint"};
  int runs = 0;
  int conflicting_runs = 1;  // the first runs in which the other client commits in between

  // The other client: reads and inserts, and commits first.
  void interfere(const pqtest::target& t) {
    pqscope::connection other{t.conninfo};
    pqscope::atomic(other, serializable(), [&](pqscope::connection& c) {
      long sum = c.query_value<long>("SELECT coalesce(sum(n), 0) FROM " + table.name());
      c.execute("INSERT INTO " + table.name() + " VALUES ('b', $1)", sum + 1);
    });
  }

  // The retried function: on its first run the other client commits between its read and its write.
  void run(pqscope::connection& c, const pqtest::target& t) {
    ++runs;
    long sum = c.query_value<long>("SELECT coalesce(sum(n), 0) FROM " + table.name());
    if (runs <= conflicting_runs) interfere(t);
    c.execute("INSERT INTO " + table.name() + " VALUES ('a', $1)", sum + 1);
  }

  [[nodiscard]] std::string rows() const {
    return pqtest::shared_observer().query_value<std::string>("SELECT string_agg(who || '=' || n, ',' ORDER BY who) FROM " +
                                                       table.name());
  }
};

BOOST_AUTO_TEST_CASE(serialization_failure_is_retried) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      write_skew w;
      std::vector<int> committed, rolled_back;
      pqscope::atomic(s.conn, serializable(3), [&](pqscope::connection& c) {
        const int attempt = w.runs + 1;
        c.on_commit([&, attempt] { committed.push_back(attempt); });
        c.on_rollback([&, attempt] { rolled_back.push_back(attempt); });
        w.run(c, t);
      });
      BOOST_TEST(w.runs == 2);
      BOOST_TEST(w.rows() == "a=2,b=1");  // as if b ran, then a
      // The failed attempt's callbacks went with it.
      BOOST_TEST(committed == std::vector<int>{2}, boost::test_tools::per_element());
      BOOST_TEST(rolled_back == std::vector<int>{1}, boost::test_tools::per_element());
      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(retries_are_bounded_and_selective) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      {
        // Conflicts on every run: one retry, then the error leaves.
        write_skew w;
        w.conflicting_runs = 100;
        BOOST_CHECK_THROW(pqscope::atomic(s.conn, serializable(1), [&](pqscope::connection& c) { w.run(c, t); }),
                          pqscope::serialization_failure);
        BOOST_TEST(w.runs == 2);
        BOOST_TEST(w.rows() == "b=1,b=2");
      }
      {
        // The failure is swallowed inside: the doomed scope still names it, and it is retried.
        write_skew w;
        pqscope::atomic(s.conn, serializable(3), [&](pqscope::connection& c) {
          try {
            w.run(c, t);
          } catch (const pqscope::serialization_failure&) {
          }
          c.execute("SELECT 1");
        });
        BOOST_TEST(w.runs == 2);
        BOOST_TEST(w.rows() == "a=2,b=1");
      }
      // Other errors are not retried.
      int runs = 0;
      BOOST_CHECK_THROW(pqscope::atomic(s.conn, serializable(3),
                                        [&](pqscope::connection& c) {
                                          ++runs;
                                          c.execute("SELECT 1 / 0");
                                        }),
                        pqscope::data_exception);
      BOOST_TEST(runs == 1);
      BOOST_CHECK_THROW(pqscope::atomic(s.conn, serializable(3),
                                        [&] {
                                          ++runs;
                                          throw my_error(0);
                                        }),
                        my_error);
      BOOST_TEST(runs == 2);
      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(serialization_failure_without_retries) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      write_skew w;
      BOOST_CHECK_EXCEPTION(pqscope::atomic(s.conn, serializable(), [&](pqscope::connection& c) { w.run(c, t); }),
                            pqscope::serialization_failure,
                            [](const pqscope::sql_error& e) { return e.sqlstate() == "40001"; });
      BOOST_TEST(w.runs == 1);
      BOOST_TEST(w.rows() == "b=1");
      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

// Only the outermost atomic() can re-run the transaction: a nested one lets the error out.
BOOST_AUTO_TEST_CASE(nested_atomic_does_not_retry) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      {
        write_skew w;
        pqscope::transaction outer{s.conn, serializable()};
        pqscope::transaction_options retrying;
        retrying.retries = 3;
        BOOST_CHECK_THROW(pqscope::atomic(s.conn, retrying, [&](pqscope::connection& c) { w.run(c, t); }),
                          pqscope::serialization_failure);
        BOOST_TEST(w.runs == 1);
        BOOST_TEST(s.conn.depth() == 1u);
        outer.rollback();
        BOOST_TEST(w.rows() == "b=1");
      }
      {
        // The outermost one retries the whole, inner scope included.
        write_skew w;
        int outer_runs = 0;
        pqscope::atomic(s.conn, serializable(3), [&](pqscope::connection& c) {
          ++outer_runs;
          pqscope::transaction_options retrying;
          retrying.retries = 3;
          pqscope::atomic(c, retrying, [&](pqscope::connection& c2) { w.run(c2, t); });
        });
        BOOST_TEST(outer_runs == 2);
        BOOST_TEST(w.runs == 2);
        BOOST_TEST(w.rows() == "a=2,b=1");
      }
      BOOST_TEST(s.conn.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

namespace {

// Two sessions lock two rows in opposite order. `a` checks for deadlocks after
// 100ms, `b` only after 10s, so `a` is the one the server cancels.
void deadlock(const pqtest::target& t, int retries, int& a_runs, std::exception_ptr& a_error,
              std::exception_ptr& b_error, std::string& rows) {
  pqtest::scratch_table table{"id int PRIMARY KEY, v text NOT NULL"};
  pqtest::shared_observer().execute("INSERT INTO " + table.name() + " VALUES (1, ''), (2, '')");
  const std::string b_app = pqtest::unique_name("atomic_b");
  pqscope::connection a{t.conninfo};
  pqscope::connection b{pqtest::with_app_name(t, b_app)};
  const std::string update = "UPDATE " + table.name() + " SET v = v || $2 WHERE id = $1";
  one_shot b_locked, a_locked;

  std::thread other([&] {
    try {
      pqscope::atomic(b, [&](pqscope::connection& c) {
        c.set_local("deadlock_timeout", "10s");
        c.execute(update, 2, std::string("b"));
        b_locked.set();
        a_locked.wait();
        c.execute(update, 1, std::string("b"));
      });
    } catch (...) {
      b_error = std::current_exception();
    }
  });
  b_locked.wait();
  pqscope::transaction_options o;
  o.retries = retries;
  try {
    pqscope::atomic(a, o, [&](pqscope::connection& c) {
      ++a_runs;
      c.set_local("deadlock_timeout", "100ms");
      c.execute(update, 1, std::string("a"));
      if (a_runs == 1) {
        a_locked.set();
        BOOST_TEST(wait_until_blocked(b_app));
      }
      c.execute(update, 2, std::string("a"));
    });
  } catch (...) {
    a_error = std::current_exception();
  }
  a_locked.set();  // in case `a` failed before it got there
  other.join();
  BOOST_TEST(a.depth() == 0u);
  rows = pqtest::shared_observer().query_value<std::string>("SELECT string_agg(v, ',' ORDER BY id) FROM " + table.name());
}

}  // namespace

BOOST_AUTO_TEST_CASE(deadlock_is_reported) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      int runs = 0;
      std::exception_ptr a_error, b_error;
      std::string rows;
      deadlock(t, 0, runs, a_error, b_error, rows);
      BOOST_TEST(runs == 1);
      BOOST_TEST(!b_error);
      BOOST_REQUIRE(a_error);
      try {
        std::rethrow_exception(a_error);
      } catch (const pqscope::deadlock_detected& e) {
        BOOST_TEST(e.sqlstate() == "40P01");
      } catch (const std::exception& e) {
        BOOST_ERROR("expected deadlock_detected, got: " << e.what());
      }
      BOOST_TEST(rows == "b,b");  // a was rolled back, b went through
    }
  }
}

BOOST_AUTO_TEST_CASE(deadlock_is_retried) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      int runs = 0;
      std::exception_ptr a_error, b_error;
      std::string rows;
      deadlock(t, 3, runs, a_error, b_error, rows);
      BOOST_TEST(runs == 2);
      BOOST_TEST(!a_error);
      BOOST_TEST(!b_error);
      BOOST_TEST(rows == "ba,ba");  // b, then a's second attempt
    }
  }
}

BOOST_AUTO_TEST_CASE(set_local_lasts_for_the_transaction) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      const std::string fallback = show(s.conn, "work_mem");
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        c.set_local("work_mem", "1234kB");
        BOOST_TEST(c.query_value<std::string>("SELECT current_setting('work_mem')") == "1234kB");
        BOOST_CHECK_THROW(pqscope::atomic(c,
                                          [&] {
                                            c.set_local("work_mem", "2345kB");
                                            BOOST_TEST(show(c, "work_mem") == "2345kB");
                                            throw my_error(0);
                                          }),
                          my_error);
        BOOST_TEST(show(c, "work_mem") == "1234kB");  // undone with the savepoint
      });
      BOOST_TEST(show(s.conn, "work_mem") == fallback);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }

  // One server connection behind PgBouncer: the next client gets it as the server had it.
  pqscope::connection first{pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1")};
  pqscope::connection next{pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1")};
  const std::string fallback = show(next, "work_mem");
  const int pid = pqscope::atomic(first, [](pqscope::connection& c) {
    c.set_local("work_mem", "1234kB");
    BOOST_TEST(show(c, "work_mem") == "1234kB");
    return c.query_value<int>("SELECT pg_backend_pid()");
  });
  pqscope::atomic(next, [&](pqscope::connection& c) {
    BOOST_TEST(c.query_value<int>("SELECT pg_backend_pid()") == pid);
    BOOST_TEST(show(c, "work_mem") == fallback);
  });
}

BOOST_AUTO_TEST_CASE(isolation_and_access_modes) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      const std::string server_default = show(s.conn, "default_transaction_isolation");
      const std::pair<pqscope::isolation, std::string> levels[] = {
          {pqscope::isolation::server_default, server_default},
          {pqscope::isolation::read_committed, "read committed"},
          {pqscope::isolation::repeatable_read, "repeatable read"},
          {pqscope::isolation::serializable, "serializable"},
      };
      for (const auto& [level, name] : levels) {
        pqscope::transaction_options o;
        o.isolation = level;
        BOOST_TEST(pqscope::atomic(s.conn, o, [](pqscope::connection& c) { return show(c, "transaction_isolation"); }) ==
                   name);
      }

      pqscope::transaction_options ro;
      ro.read_only = true;
      pqscope::atomic(s.conn, ro, [&](pqscope::connection& c) {
        BOOST_TEST(show(c, "transaction_read_only") == "on");
        BOOST_TEST(show(c, "transaction_deferrable") == "off");
      });
      BOOST_CHECK_EXCEPTION(pqscope::atomic(s.conn, ro, [&](pqscope::connection& c) { insert(c, table, 1); }),
                            pqscope::sql_error, [](const pqscope::sql_error& e) { return e.sqlstate() == "25006"; });
      BOOST_TEST(committed_count(table) == 0);

      pqscope::transaction_options def = serializable();
      def.read_only = true;
      def.deferrable = true;
      pqscope::atomic(s.conn, def, [&](pqscope::connection& c) {
        BOOST_TEST(show(c, "transaction_isolation") == "serializable");
        BOOST_TEST(show(c, "transaction_read_only") == "on");
        BOOST_TEST(show(c, "transaction_deferrable") == "on");
      });

      // None of it outlives the transaction.
      BOOST_TEST(show(s.conn, "transaction_read_only") == "off");
      BOOST_TEST(show(s.conn, "transaction_isolation") == server_default);
      insert(s.conn, table, 2);
      BOOST_TEST(committed_ids(table) == "2");
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(statement_timeout_option) {
  pqscope::transaction_options o;
  o.statement_timeout = 50ms;
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      const std::string fallback = show(s.conn, "statement_timeout");
      const auto start = std::chrono::steady_clock::now();
      BOOST_CHECK_EXCEPTION(pqscope::atomic(s.conn, o,
                                            [](pqscope::connection& c) {
                                              BOOST_TEST(show(c, "statement_timeout") == "50ms");
                                              c.execute("SELECT pg_sleep(1)");
                                            }),
                            pqscope::query_canceled, [](const pqscope::sql_error& e) { return e.sqlstate() == "57014"; });
      BOOST_TEST((std::chrono::steady_clock::now() - start < 900ms));
      BOOST_TEST(show(s.conn, "statement_timeout") == fallback);
      s.conn.execute("SELECT pg_sleep(0.1)");  // no timeout left behind
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }

  // Through a single pooled server connection: the next client does not inherit it.
  pqscope::connection first{pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1")};
  pqscope::connection next{pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1")};
  const std::string fallback = show(next, "statement_timeout");
  int pid = 0;
  BOOST_CHECK_THROW(pqscope::atomic(first, o,
                                    [&](pqscope::connection& c) {
                                      pid = c.query_value<int>("SELECT pg_backend_pid()");
                                      c.execute("SELECT pg_sleep(1)");
                                    }),
                    pqscope::query_canceled);
  pqscope::atomic(next, [&](pqscope::connection& c) {
    BOOST_TEST(c.query_value<int>("SELECT pg_backend_pid()") == pid);
    BOOST_TEST(show(c, "statement_timeout") == fallback);
  });
  BOOST_TEST(show(next, "statement_timeout") == fallback);
}

BOOST_AUTO_TEST_CASE(lock_timeout_option) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqtest::scratch_table table;
      pqtest::shared_observer().execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
      auto holder = pqtest::observer();
      pqscope::transaction held{holder};
      holder.execute("SELECT id FROM " + table.name() + " WHERE id = 1 FOR UPDATE");

      pqscope::transaction_options o;
      o.lock_timeout = 50ms;
      const auto start = std::chrono::steady_clock::now();
      BOOST_CHECK_EXCEPTION(pqscope::atomic(s.conn, o,
                                            [&](pqscope::connection& c) {
                                              BOOST_TEST(show(c, "lock_timeout") == "50ms");
                                              c.execute("UPDATE " + table.name() + " SET v = 'y' WHERE id = 1");
                                            }),
                            pqscope::lock_not_available,
                            [](const pqscope::sql_error& e) { return e.sqlstate() == "55P03"; });
      BOOST_TEST((std::chrono::steady_clock::now() - start < 2s));
      held.rollback();
      BOOST_TEST(show(s.conn, "lock_timeout") == "0");
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

// SET LOCAL survives RELEASE SAVEPOINT: the enclosing scope's value must come back.
BOOST_AUTO_TEST_CASE(nested_timeouts_are_restored) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      session s{t};
      pqscope::transaction_options outer, inner;
      outer.statement_timeout = 5s;
      outer.lock_timeout = 3s;
      inner.statement_timeout = 50ms;
      inner.lock_timeout = 20ms;
      const std::string fallback = show(s.conn, "statement_timeout");

      pqscope::atomic(s.conn, outer, [&](pqscope::connection& c) {
        BOOST_TEST(show(c, "statement_timeout") == "5s");
        pqscope::atomic(c, inner, [&] {
          BOOST_TEST(show(c, "statement_timeout") == "50ms");
          BOOST_TEST(show(c, "lock_timeout") == "20ms");
        });
        BOOST_TEST(show(c, "statement_timeout") == "5s");
        BOOST_TEST(show(c, "lock_timeout") == "3s");

        // Two levels down, ended by a timeout.
        pqscope::atomic(c, [&] {
          BOOST_CHECK_THROW(pqscope::atomic(c, inner, [&] { c.execute("SELECT pg_sleep(1)"); }),
                            pqscope::query_canceled);
          BOOST_TEST(show(c, "statement_timeout") == "5s");
        });
        BOOST_TEST(show(c, "statement_timeout") == "5s");

        // An inner scope that never ran a statement leaves nothing to restore.
        pqscope::atomic(c, inner, [] {});
        BOOST_TEST(show(c, "statement_timeout") == "5s");

        c.execute("SELECT pg_sleep(0.1)");  // the 50ms is gone for good
      });

      // Without an enclosing value, the server's comes back.
      pqscope::atomic(s.conn, [&](pqscope::connection& c) {
        pqscope::atomic(c, inner, [&] { BOOST_TEST(show(c, "statement_timeout") == "50ms"); });
        BOOST_TEST(show(c, "statement_timeout") == fallback);
        BOOST_TEST(show(c, "lock_timeout") == "0");
      });
      BOOST_TEST(show(s.conn, "statement_timeout") == fallback);
      BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
    }
  }
}

// resolve_in_doubt crossed with every kind of failure: the transaction-id query
// never rides in front of a ROLLBACK (where it would fail with 25P02 and make the
// server skip the ROLLBACK), so no session is left in a transaction, the rollback
// costs one round trip as without the option, and the next scope works.
BOOST_AUTO_TEST_CASE(resolve_in_doubt_never_leaves_a_transaction_open) {
  pqtest::for_each_target([](const pqtest::target& t) {
    session s{t, "in_doubt_failures"};
    pqtest::scratch_table table{"id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text"};
    pqscope::transaction_options o;
    o.resolve_in_doubt = true;
    auto next_scope_works = [&](const char* after) {
      BOOST_TEST_CONTEXT(after) {
        BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
        BOOST_TEST(s.conn.depth() == 0u);
        BOOST_CHECK_NO_THROW(pqscope::atomic(s.conn, o, [&] { BOOST_TEST(s.conn.query_value<int>("SELECT 1") == 1); }));
        BOOST_CHECK_NO_THROW(pqscope::atomic(s.conn, [&] { s.conn.execute("SELECT 1"); }));
        BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
      }
    };

    // A failing statement in the outermost scope: BEGIN + statement + id query, then ROLLBACK alone.
    auto before = s.conn.stats().round_trips;
    BOOST_CHECK_THROW(pqscope::atomic(s.conn, o, [&] { s.conn.execute("SELECT 1 / 0"); }), pqscope::data_exception);
    BOOST_TEST(s.conn.stats().round_trips - before == 2u);
    next_scope_works("a failing statement in the outermost scope");

    // The same through a transaction object whose commit() is refused after the failure.
    before = s.conn.stats().round_trips;
    {
      pqscope::transaction tx{s.conn, o};
      insert(s.conn, table, 1);
      BOOST_CHECK_THROW(s.conn.execute("SELECT 1 / 0"), pqscope::data_exception);
      BOOST_CHECK_THROW(tx.commit(), pqscope::transaction_aborted);
    }
    BOOST_TEST(s.conn.stats().round_trips - before == 3u);
    next_scope_works("commit() of a doomed transaction");

    // A failing statement in a nested scope, caught inside: the rest commits.
    pqscope::atomic(s.conn, o, [&] {
      insert(s.conn, table, 2);
      BOOST_CHECK_THROW(pqscope::atomic(s.conn, [&] { s.conn.execute("SELECT 1 / 0"); }), pqscope::data_exception);
      insert(s.conn, table, 3);
    });
    BOOST_TEST(committed_ids(table) == "2,3");
    next_scope_works("a nested failure caught inside");

    // A refused COMMIT: the deferred key check fails at COMMIT.
    BOOST_CHECK_THROW(pqscope::atomic(s.conn, o,
                                      [&] {
                                        insert(s.conn, table, 4);
                                        insert(s.conn, table, 4);
                                      }),
                      pqscope::sql_error);
    BOOST_TEST(committed_ids(table) == "2,3");
    next_scope_works("a refused COMMIT");

    // Serialization failure under SERIALIZABLE: still retried by atomic().
    write_skew w;
    pqscope::transaction_options so = serializable(3);
    so.resolve_in_doubt = true;
    pqscope::atomic(s.conn, so, [&](pqscope::connection& c) { w.run(c, t); });
    BOOST_TEST(w.runs == 2);
    BOOST_TEST(w.rows() == "a=2,b=1");
    next_scope_works("a retried serialization failure");
  });
}

// Every isolation level x read_only x deferrable, read back inside the scope (and
// inside a nested one) from the server itself. Through Pgpool-II 4.3.5 this needs
// the modes as SET TRANSACTION after BEGIN: it drops them from BEGIN ISOLATION LEVEL.
BOOST_AUTO_TEST_CASE(transaction_modes_as_the_server_has_them) {
  pqtest::for_each_target([](const pqtest::target& t) {
    session s{t};
    const std::string server_default = show(s.conn, "default_transaction_isolation");
    const std::pair<pqscope::isolation, std::string> levels[] = {
        {pqscope::isolation::server_default, server_default},
        {pqscope::isolation::read_committed, "read committed"},
        {pqscope::isolation::repeatable_read, "repeatable read"},
        {pqscope::isolation::serializable, "serializable"},
    };
    for (const auto& [level, name] : levels)
      for (bool read_only : {false, true})
        for (bool deferrable : {false, true}) BOOST_TEST_CONTEXT(name << " read_only " << read_only << " deferrable "
                                                                      << deferrable) {
            pqscope::transaction_options o;
            o.isolation = level;
            o.read_only = read_only;
            o.deferrable = deferrable;
            const auto trips = s.conn.stats().round_trips;
            pqscope::atomic(s.conn, o, [&](pqscope::connection& c) {
              BOOST_TEST(c.query_value<std::string>("SELECT current_setting('transaction_isolation') || ',' || "
                                                    "current_setting('transaction_read_only') || ',' || "
                                                    "current_setting('transaction_deferrable')") ==
                         name + (read_only ? ",on" : ",off") + (deferrable ? ",on" : ",off"));
              pqscope::atomic(c, [&] {
                BOOST_TEST(show(c, "transaction_isolation") == name);
                BOOST_TEST(show(c, "transaction_read_only") == (read_only ? "on" : "off"));
                BOOST_TEST(show(c, "transaction_deferrable") == (deferrable ? "on" : "off"));
              });
            });
            BOOST_TEST(s.conn.stats().round_trips - trips == 5u);  // one per statement, then COMMIT: none for the modes
          }
    BOOST_TEST(show(s.conn, "transaction_isolation") == server_default);
    BOOST_TEST(pqtest::idle_in_transaction(s.app) == 0);
  });
}
