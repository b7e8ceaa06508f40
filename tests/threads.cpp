#define BOOST_TEST_MODULE threads
#include <boost/test/unit_test.hpp>

// One connection, two threads. A connection serves one thread at a time: a call
// made while another thread's call is in progress is a usage_error that says so,
// before anything is sent. Handing a connection to another thread between calls
// is fine. Also built with -fsanitize=thread (test threads_tsan).

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using pqtest::for_each_target;

bool names_threads(const pqscope::usage_error& e) {
  return std::string(e.what()).find("another thread") != std::string::npos;
}

// Waits until the server runs `needle` for this application (a call in progress on another thread).
void wait_until_running(const std::string& app, const std::string& needle) {
  for (int i = 0; i < 500; ++i) {
    const long n = pqtest::shared_observer().query_value<long>(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active' AND "
        "position($2 in query) > 0",
        app, needle);
    if (n > 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  BOOST_FAIL("the statement never showed up in pg_stat_activity");
}

}  // namespace

// While thread A waits for a slow statement, everything thread B tries on the same
// connection is refused at once, and none of it reaches the server.
BOOST_AUTO_TEST_CASE(a_second_thread_is_refused_while_a_call_is_in_progress) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    const std::string app = pqtest::unique_name("threads");
    pqscope::connection c{pqtest::with_app_name(t, app)};
    std::atomic<bool> done{false};
    std::thread a([&] {
      pqscope::atomic(c, [&] {
        c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
        c.execute("SELECT pg_sleep(0.5) /* slow one */");
      });
      done = true;
    });
    wait_until_running(app, "slow one");
    std::vector<std::string> refused;
    auto attempt = [&](const char* what, auto&& fn) {
      try {
        fn();
        refused.push_back(std::string(what) + ": not refused");
      } catch (const pqscope::usage_error& e) {
        refused.push_back(std::string(what) + (names_threads(e) ? ": refused" : std::string(": ") + e.what()));
      } catch (const std::exception& e) {
        refused.push_back(std::string(what) + ": " + e.what());
      }
    };
    attempt("execute", [&] { c.execute("INSERT INTO " + table.name() + " (id) VALUES (2)"); });
    attempt("query_value", [&] { (void)c.query_value<int>("SELECT 1"); });
    attempt("transaction", [&] { pqscope::transaction tx{c}; });
    attempt("atomic", [&] { pqscope::atomic(c, [&] { c.execute("INSERT INTO " + table.name() + " (id) VALUES (3)"); }); });
    attempt("set_local", [&] { c.set_local("statement_timeout", "1000"); });
    attempt("on_commit", [&] { c.on_commit([] {}); });
    attempt("flush", [&] { c.flush(); });
    const bool still_running = !done;
    a.join();
    BOOST_TEST(still_running);  // every attempt above overlapped A's call
    const std::vector<std::string> want = {"execute: refused",  "query_value: refused", "transaction: refused",
                                           "atomic: refused",   "set_local: refused",   "on_commit: refused",
                                           "flush: refused"};
    BOOST_TEST(refused == want, boost::test_tools::per_element());
    BOOST_TEST(pqtest::committed_ids(table) == "1");  // nothing of B's reached the server
    BOOST_TEST(c.depth() == 0u);
    // Between calls the connection may change threads.
    std::thread b([&] { BOOST_TEST(c.query_value<int>("SELECT 2") == 2); });
    b.join();
    BOOST_TEST(c.query_value<int>("SELECT 3") == 3);
  });
}

// Many runs of two threads hammering one connection: every call either runs or is
// refused with the usage_error; nothing hangs, nothing else is thrown, and the
// connection is idle and usable afterwards.
BOOST_AUTO_TEST_CASE(racing_threads_are_refused_never_interleaved) {
  const char* env = std::getenv("PQSCOPE_THREAD_RUNS");
  const int runs = env != nullptr ? std::atoi(env) : 20;
  for_each_target([&](const pqtest::target& t) {
    long refused = 0, ran = 0, other = 0;
    for (int run = 0; run < runs; ++run) {
      pqscope::connection c{t.conninfo};
      std::atomic<bool> go{false};
      std::atomic<long> r{0}, ok{0}, bad{0};
      auto worker = [&](int id) {
        while (!go) {
        }
        for (int i = 0; i < 50; ++i) {
          try {
            if (i % 5 == 0)
              pqscope::atomic(c, [&] { c.execute("SELECT $1::int", id); });
            else
              (void)c.query_value<int>("SELECT $1::int", i);
            ++ok;
          } catch (const pqscope::usage_error& e) {
            ++(names_threads(e) ? r : bad);
          } catch (const std::exception&) {
            ++bad;
          }
        }
      };
      std::thread t1(worker, 1), t2(worker, 2);
      go = true;
      t1.join();
      t2.join();
      refused += r;
      ran += ok;
      other += bad;
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(c.query_value<int>("SELECT 7") == 7);
      BOOST_TEST(PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE);
    }
    BOOST_TEST_MESSAGE(t.name << ": " << ran << " calls ran, " << refused << " refused");
    BOOST_TEST(other == 0);
    BOOST_TEST(ran > 0);
    BOOST_TEST(refused > 0);  // the threads really overlapped
  });
}
