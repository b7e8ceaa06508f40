// pqscope::asio under faults: the backend killed during an operation, PgBouncer
// restarted mid-transaction, a peer that stops answering (a relay that stops
// forwarding), cancellation and timeouts, a COMMIT whose answer is lost, and a
// coroutine destroyed with a scope open. Each case ends in the exception the
// blocking connection throws for the same fault, scopes unwind, nothing is left
// idle in a transaction, the thread is never blocked (a timer on it keeps
// ticking), and the connection works again after async_connect().
// Runs alone (RUN_SERIAL): it restarts the shared PgBouncer.

#define BOOST_TEST_MODULE asio_faults
#include <boost/test/unit_test.hpp>

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/detached.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"
#include "support/asio_stall_relay.hpp"
#include "support/stall_relay.hpp"

using namespace std::chrono_literals;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;
using steady = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

namespace {

// Terminates a backend from a direct session and waits until it is gone.
void kill_backend(int pid) {
  auto obs = pqtest::observer();
  obs.execute("SELECT pg_terminate_backend($1)", pid);
  for (int i = 0; i < 200; ++i) {
    if (obs.query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0) return;
    std::this_thread::sleep_for(10ms);
  }
  throw std::runtime_error("backend did not go away");
}

// A timer on the test's thread: the longest gap between its ticks shows whether the
// thread was ever blocked.
class heartbeat {
 public:
  explicit heartbeat(net::io_context& io) {
    net::co_spawn(
        io,
        [this]() -> awaitable<void> {
          auto last = steady::now();
          while (!stop_) {
            co_await pqtest::sleep_for(5ms);
            const auto now = steady::now();
            worst_ = std::max(worst_, now - last);
            last = now;
            ++ticks_;
          }
        },
        net::detached);
  }
  void stop() { stop_ = true; }
  [[nodiscard]] long ticks() const { return ticks_; }
  [[nodiscard]] long worst_ms() const { return std::chrono::duration_cast<std::chrono::milliseconds>(worst_).count(); }

 private:
  bool stop_ = false;
  long ticks_ = 0;
  steady::duration worst_{};
};

awaitable<void> insert(pa::connection& c, const pqtest::scratch_table& t, int id) {
  co_await c.async_execute({"INSERT INTO " + t.name() + " (id) VALUES ($1)", id}, use_awaitable);
}

// After a fault: the connection comes back with async_connect() and works.
awaitable<void> check_recovers(pa::connection& c, const pqtest::scratch_table& t, int id) {
  BOOST_TEST(c.depth() == 0u);
  co_await c.async_connect(use_awaitable);
  co_await pa::async_atomic(c, [&]() -> awaitable<void> { co_await insert(c, t, id); });
  BOOST_TEST(co_await c.async_query_value<long>({"SELECT count(*) FROM " + t.name() + " WHERE id = $1", id},
                                                use_awaitable) == 1);
}

long ms_since(steady::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count();
}

// No session of `app` idle in a transaction, within 2 s (the server sees a client
// that went away a moment later).
bool no_session_left_idle(const std::string& app) {
  for (int i = 0; i < 100; ++i) {
    if (pqtest::idle_in_transaction(app) == 0) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

}  // namespace

// The backend dies while a statement runs: connection_error, the scopes unwind
// (the rollback callbacks run: the server never saw a COMMIT), nothing committed.
BOOST_AUTO_TEST_CASE(backend_killed_during_an_operation) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    net::io_context io;
    heartbeat beat(io);
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      bool rolled_back = false;
      std::thread killer;
      const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          c.on_rollback([&] { rolled_back = true; });
          co_await insert(c, table, 1);
          co_await pa::async_atomic(c, [&]() -> awaitable<void> {
            co_await insert(c, table, 2);
            const int pid = co_await c.async_query_value<int>("SELECT pg_backend_pid()", use_awaitable);
            killer = std::thread([pid] {
              std::this_thread::sleep_for(200ms);
              kill_backend(pid);
            });
            co_await c.async_execute("SELECT pg_sleep(10)", use_awaitable);
          });
        });
      });
      killer.join();
      BOOST_TEST(what == "connection_error");
      BOOST_TEST(rolled_back);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(!c.is_open());
      // Any further use says the same without touching the dead socket.
      BOOST_CHECK_THROW(co_await c.async_execute("SELECT 1", use_awaitable), pqscope::connection_error);
      BOOST_TEST(pqtest::committed_count(table) == 0);
      co_await check_recovers(c, table, 9);
      pqtest::empty(table);
    }());
    beat.stop();
    BOOST_TEST(beat.worst_ms() < 150);
  });
}

BOOST_AUTO_TEST_CASE(pgbouncer_restarted_mid_transaction) {
  const std::string pidfile = pqtest::env("PQSCOPE_TEST_PGBOUNCER_PIDFILE");
  const std::string ini = pidfile.substr(0, pidfile.rfind('/')) + "/pgbouncer.ini";
  auto read_pid = [&] {
    std::ifstream in(pidfile);
    int pid = 0;
    in >> pid;
    return pid;
  };
  pqtest::scratch_table table;
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection c = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_PGBOUNCER"));
    {
      pa::transaction tx{c};
      co_await insert(c, table, 1);
      const int old_pid = read_pid();
      BOOST_REQUIRE(old_pid > 0);
      ::kill(old_pid, SIGTERM);
      for (int i = 0; i < 500 && ::kill(old_pid, 0) == 0; ++i) std::this_thread::sleep_for(10ms);
      const std::string start =
          (::geteuid() == 0 ? "runuser -u postgres -- " : "") + std::string("pgbouncer -d -q ") + ini;
      BOOST_REQUIRE(std::system(start.c_str()) == 0);
      BOOST_CHECK_THROW(co_await insert(c, table, 2), pqscope::connection_error);
      BOOST_TEST(c.depth() == 1u);
      co_await tx.async_rollback(use_awaitable);  // nothing to send: the session is gone
    }
    BOOST_TEST(pqtest::committed_count(table) == 0);
    // PgBouncer needs a moment to listen again.
    for (int i = 0;; ++i) {
      bool ok = true;
      try {
        co_await c.async_connect(use_awaitable);
      } catch (const pqscope::connection_error&) {
        if (i == 100) throw;
        ok = false;
      }
      if (ok) break;
      co_await pqtest::sleep_for(50ms);
    }
    co_await check_recovers(c, table, 9);
  }());
}

// A statement that runs too long: the timeout cancels it on the server, the
// operation ends in query_canceled, the scope is doomed as by any failed statement,
// and the connection stays usable. cancel() does the same on demand.
BOOST_AUTO_TEST_CASE(timeout_and_cancel_end_in_query_canceled) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    heartbeat beat(io);
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      // Long enough for ordinary statements on a loaded 2-core machine. Through Pgpool-II
      // above a second: it closes a cancel request's connection about a second after it
      // arrived, and the statement after a cancelled one waits for that (README, Pgpool-II).
      const auto timeout = t.name == "pgpool" ? 1200ms : 600ms;
      c.set_timeout(timeout);
      // In autocommit.
      auto start = steady::now();
      BOOST_CHECK_THROW(co_await c.async_execute("SELECT pg_sleep(5)", use_awaitable), pqscope::query_canceled);
      BOOST_TEST(ms_since(start) >= timeout.count() - 50);
      BOOST_TEST(ms_since(start) < 2500);
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 1", use_awaitable) == 1);

      // Inside a scope: doomed, later statements refused without a round trip.
      std::string inner_saw;
      const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          co_await insert(c, table, 1);
          try {
            co_await c.async_execute("SELECT pg_sleep(5)", use_awaitable);
          } catch (const pqscope::query_canceled& e) {
            inner_saw = e.what();
          }
          const auto trips = c.stats().round_trips;
          BOOST_CHECK_THROW(co_await insert(c, table, 2), pqscope::transaction_aborted);
          BOOST_TEST(c.stats().round_trips == trips);
        });
      });
      BOOST_TEST(what == "transaction_aborted[57014]");
      BOOST_TEST(inner_saw.find("timed out after " + std::to_string(timeout.count()) + " ms") != std::string::npos);
      BOOST_TEST(pqtest::committed_count(table) == 0);

      // In a savepoint: only the savepoint is doomed; the transaction goes on.
      co_await pa::async_atomic(c, [&]() -> awaitable<void> {
        co_await insert(c, table, 3);
        BOOST_CHECK_THROW(co_await pa::async_atomic(c,
                                                    [&]() -> awaitable<void> {
                                                      co_await insert(c, table, 4);
                                                      co_await c.async_execute("SELECT pg_sleep(5)", use_awaitable);
                                                    }),
                          pqscope::query_canceled);
        co_await insert(c, table, 5);
      });
      BOOST_TEST(pqtest::committed_ids(table) == "3,5");

      // cancel(), from another coroutine on the same thread.
      c.set_timeout(0ms);
      net::steady_timer later{co_await net::this_coro::executor};
      later.expires_after(200ms);
      later.async_wait([&](const boost::system::error_code&) { c.cancel(); });
      start = steady::now();
      BOOST_CHECK_THROW(co_await c.async_execute("SELECT pg_sleep(5)", use_awaitable), pqscope::query_canceled);
      BOOST_TEST(ms_since(start) < 2500);
      // Nothing in flight: cancel() does nothing, and the next operation is not affected.
      c.cancel();
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 2", use_awaitable) == 2);
      BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);
    }());
    beat.stop();
    BOOST_TEST(beat.worst_ms() < 150);
  });
}

// A peer that stops answering mid-transaction (the relay stops forwarding): the
// timeout asks for a cancel, which goes unanswered too; after cancel_wait the
// connection is given up (connection_error) and the thread was never blocked.
BOOST_AUTO_TEST_CASE(peer_stops_answering) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    auto relay = std::make_unique<pqtest::asio_stall_relay>(t.conninfo);
    net::io_context io;
    heartbeat beat(io);
    std::string app;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(relay->conninfo());
      app = c.application_name();
      c.set_timeout(300ms);
      c.set_cancel_wait(300ms);
      bool rolled_back = false;
      auto start = steady::now();
      const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          c.on_rollback([&] { rolled_back = true; });
          co_await insert(c, table, 1);
          relay->stall();
          start = steady::now();
          co_await insert(c, table, 2);
        });
      });
      const long took = ms_since(start);
      BOOST_TEST(what == "connection_error");
      BOOST_TEST(took >= 550);  // the timeout, then cancel_wait
      BOOST_TEST(took < 3000);
      BOOST_TEST(rolled_back);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(!c.is_open());

      // Connecting through the stalled peer: given up on cancel(), or after connect_timeout.
      pa::connection other{co_await net::this_coro::executor, relay->conninfo()};
      net::steady_timer later{co_await net::this_coro::executor};
      later.expires_after(300ms);
      later.async_wait([&](const boost::system::error_code&) { other.cancel(); });
      start = steady::now();
      BOOST_CHECK_THROW(co_await other.async_connect(use_awaitable), pqscope::connection_error);
      BOOST_TEST(ms_since(start) < 1500);
      if (t.name == "direct") {
        pa::connection bounded{co_await net::this_coro::executor, relay->conninfo() + " connect_timeout=2"};
        start = steady::now();
        BOOST_CHECK_THROW(co_await bounded.async_connect(use_awaitable), pqscope::connection_error);
        BOOST_TEST(ms_since(start) >= 1900);
        BOOST_TEST(ms_since(start) < 3500);
      }
    }());
    beat.stop();
    BOOST_TEST(beat.worst_ms() < 150);
    relay.reset();  // closes the relay's sockets: the server sees the client go
    BOOST_TEST(no_session_left_idle(app));
    BOOST_TEST(pqtest::committed_count(table) == 0);
  });
}

// The peer stops answering while COMMIT is out: its answer is never cancelled (a
// cancelled COMMIT that waits for a synchronous standby is reported as done), so the
// timeout and the grace pass, the connection is given up, and the outcome is in doubt.
BOOST_AUTO_TEST_CASE(commit_is_never_cancelled) {
  pqtest::scratch_table table;
  const pqtest::target t{"direct", pqtest::env("PQSCOPE_TEST_DIRECT"), {}};
  auto relay = std::make_unique<pqtest::asio_stall_relay>(t.conninfo);
  net::io_context io;
  heartbeat beat(io);
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection c = co_await pqtest::connect_async(relay->conninfo());
    c.set_timeout(300ms);
    c.set_cancel_wait(300ms);
    auto start = steady::now();
    const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
      pa::transaction tx{c};
      co_await insert(c, table, 1);
      relay->stall();
      start = steady::now();
      co_await tx.async_commit(use_awaitable);
    });
    BOOST_TEST(what == "in_doubt_error");
    BOOST_TEST(ms_since(start) >= 550);
    BOOST_TEST(ms_since(start) < 3000);
    BOOST_TEST(relay->connections() == 1);  // no cancel request was even attempted
  }());
  beat.stop();
  BOOST_TEST(beat.worst_ms() < 150);
  relay.reset();
  BOOST_TEST(pqtest::committed_count(table) == 0);  // the COMMIT never reached the server
}

// PostgreSQL signals a backend twice for one cancel request, and a late second
// signal cancels whatever runs then: the round trip after a cancel waits for the
// request to be handled. Here it never is (the relay holds new connections, so
// PQcancel hangs) while the cancelled statement ends normally: the next round trip
// waits out its own bound, then the connection is closed with nothing sent.
BOOST_AUTO_TEST_CASE(next_round_trip_waits_for_a_pending_cancel) {
  const pqtest::target t{"direct", pqtest::env("PQSCOPE_TEST_DIRECT"), {}};
  auto relay = std::make_unique<pqtest::asio_stall_relay>(t.conninfo);
  net::io_context io;
  heartbeat beat(io);
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection c = co_await pqtest::connect_async(relay->conninfo());
    c.set_timeout(300ms);
    c.set_cancel_wait(2s);
    relay->hold_new_connections();
    // Past the bound: a cancel request goes out and hangs; the statement ends in the grace.
    BOOST_TEST(co_await c.async_query_value<int>("SELECT 1 FROM pg_sleep(0.6)", use_awaitable) == 1);
    BOOST_TEST(relay->connections() == 2);
    const auto trips = c.stats().round_trips;
    const auto start = steady::now();
    BOOST_CHECK_THROW(co_await c.async_query_value<int>("SELECT 2", use_awaitable), pqscope::connection_error);
    BOOST_TEST(ms_since(start) >= 250);
    BOOST_TEST(ms_since(start) < 1500);
    BOOST_TEST(c.stats().round_trips - trips == 1u);  // counted, never sent
    BOOST_TEST(!c.is_open());
  }());
  beat.stop();
  BOOST_TEST(beat.worst_ms() < 150);
}

// A COPY is bounded as a round trip is (network_timeout.cpp checks the blocking
// one): a step that waits on a stalled peer gets network_timeout and the grace; the
// COPY ends (cancelled, or the connection given up), its scope with it, the thread
// never blocks, and nothing is kept.
BOOST_AUTO_TEST_CASE(a_stalled_copy_is_bounded) {
  pqtest::for_each_target([&](const pqtest::target& t) {
    for (bool in : {true, false}) BOOST_TEST_CONTEXT((in ? "COPY FROM STDIN" : "COPY TO STDOUT")) {
        pqtest::scratch_table table;
        std::string app;
        {
          pqtest::stall_relay relay{t};
          net::io_context io;
          heartbeat beat(io);
          pqtest::run_coro(io, [&]() -> awaitable<void> {
            pqscope::connection_options co;
            co.network_timeout = 400ms;
            pa::connection c = co_await pqtest::connect_async(relay.conninfo(), co);
            app = c.application_name();
            auto start = steady::now();
            const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
              co_await pa::async_atomic(c, [&]() -> awaitable<void> {
                co_await insert(c, table, 0);
                if (in) {
                  auto w = co_await c.async_copy_in("COPY " + table.name() + " FROM STDIN", use_awaitable);
                  for (int i = 1; i <= 1000; ++i) w.write_row(i, "row");
                  relay.stall(pqtest::stall_relay::to_server);
                  start = steady::now();
                  (void)co_await w.async_finish(use_awaitable);
                } else {
                  auto r = co_await c.async_copy_out(
                      "COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g) TO STDOUT", use_awaitable);
                  BOOST_TEST((co_await r.async_next<int, std::string>(use_awaitable)).has_value());
                  relay.stall(pqtest::stall_relay::to_client);
                  // Rows already on their way still arrive: the bound is the step that waits.
                  start = steady::now();
                  while (co_await r.async_next<int, std::string>(use_awaitable)) start = steady::now();
                }
              });
            });
            const long took = ms_since(start);
            BOOST_TEST_MESSAGE(t.name << (in ? ", COPY FROM STDIN: " : ", COPY TO STDOUT: ") << what << " after "
                                      << took << " ms");
            BOOST_TEST(what != "returned");
            BOOST_TEST(took <= 2000);  // 400 ms, the grace's 400 ms, slack for a loaded machine
            BOOST_TEST(c.depth() == 0u);
          }());
          beat.stop();
          BOOST_TEST(beat.worst_ms() < 150);
          relay.resume();
        }
        BOOST_TEST(no_session_left_idle(app));
        BOOST_TEST(pqtest::committed_count(table) == 0);
      }
  });
}

// A COPY TO STDOUT whose first row is slow (the peer answers; the server works):
// past network_timeout the COPY is cancelled on the server, query_canceled dooms the
// scope, and the connection stays usable. PostgreSQL holds the COPY's start in its
// output buffer until the first row or the error, so the wait is the start's. Through
// Pgpool-II a timeout above a second (its cancel requests take that long: README).
BOOST_AUTO_TEST_CASE(a_slow_copy_is_cancelled) {
  pqtest::for_each_target([&](const pqtest::target& t) {
    const auto timeout = t.name == "pgpool" ? 1200ms : 300ms;
    net::io_context io;
    heartbeat beat(io);
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pqscope::connection_options co;
      co.network_timeout = timeout;
      pa::connection c = co_await pqtest::connect_async(t.conninfo, co);
      long in_step = -1;
      const auto start = steady::now();
      const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          auto r = co_await c.async_copy_out("COPY (SELECT 1 FROM pg_sleep(5)) TO STDOUT", use_awaitable);
          const auto step = steady::now();
          try {
            while (co_await r.async_next<int>(use_awaitable)) {
            }
          } catch (...) {
            in_step = ms_since(step);
            throw;
          }
        });
      });
      const long took = ms_since(start);
      BOOST_TEST_MESSAGE(t.name << ": " << what << " after " << took << " ms, " << in_step << " ms in the step");
      BOOST_TEST(what == "query_canceled");
      BOOST_TEST(took >= timeout.count() - 10);
      BOOST_TEST(took < timeout.count() + 1700);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 1", use_awaitable) == 1);
    }());
    beat.stop();
    BOOST_TEST(beat.worst_ms() < 150);
  });
}

// The call's bound holds with resolve_in_doubt (as network_timeout.cpp checks for
// the blocking connection): COMMIT never reaches the server, its transaction stays
// in progress, and the resolver gives up after one more network_timeout plus grace.
BOOST_AUTO_TEST_CASE(in_doubt_resolution_is_bounded) {
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::scratch_table table;
    pqtest::stall_relay relay{t};  // new connections (the resolver's) still pass
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pqscope::connection_options co;
      co.network_timeout = 400ms;
      pa::connection c = co_await pqtest::connect_async(relay.conninfo(), co);
      pqscope::transaction_options o;
      o.resolve_in_doubt = true;
      const auto start = steady::now();
      const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
        pa::transaction tx{c, o};
        co_await insert(c, table, 1);
        relay.stall(pqtest::stall_relay::to_server);
        co_await tx.async_commit(use_awaitable);
      });
      const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start).count();
      BOOST_TEST_MESSAGE(t.name << ": " << what << " after " << took << " ms");
      BOOST_TEST(what == "in_doubt_error");
      // COMMIT's 400 + 400 ms, the resolver's 400 + 400 ms, slack for a loaded machine.
      BOOST_TEST(took <= 2100, "took " << took);
      BOOST_TEST(relay.accepted() == 2);  // the session, then the resolver
    }());
  });
}

// COMMIT sent and no answer: in_doubt_error, or with resolve_in_doubt the fresh
// connection's pg_xact_status verdict, asked without blocking.
BOOST_AUTO_TEST_CASE(lost_commit_is_in_doubt_or_resolved) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      for (bool resolve : {false, true}) {
        // The backend is killed just before COMMIT goes out: the server rolled back.
        pa::connection c = co_await pqtest::connect_async(t.conninfo);
        pqscope::transaction_options o;
        o.resolve_in_doubt = resolve;
        bool committed = false, rolled_back = false;
        const int id = resolve ? 2 : 1;
        const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
          pa::transaction tx{c, o};
          c.on_commit([&] { committed = true; });
          c.on_rollback([&] { rolled_back = true; });
          co_await insert(c, table, id);
          kill_backend(co_await c.async_query_value<int>("SELECT pg_backend_pid()", use_awaitable));
          co_await tx.async_commit(use_awaitable);
        });
        BOOST_TEST(what == (resolve ? "connection_error" : "in_doubt_error"));
        BOOST_TEST(!committed);
        BOOST_TEST(rolled_back == resolve);
        co_await check_recovers(c, table, 10 + id);
      }
      BOOST_TEST(pqtest::committed_ids(table) == "11,12");
    }());
  });
  // The answer to COMMIT is cut off after the server committed (a relay drops it).
  pqtest::empty(table);
  const pqtest::target t{"direct", pqtest::env("PQSCOPE_TEST_DIRECT"), {}};
  for (bool resolve : {false, true}) BOOST_TEST_CONTEXT((resolve ? "resolve_in_doubt" : "plain")) {
      pqtest::asio_stall_relay relay{t.conninfo};
      net::io_context io;
      heartbeat beat(io);
      pqtest::run_coro(io, [&]() -> awaitable<void> {
        pa::connection c = co_await pqtest::connect_async(relay.conninfo());
        pqscope::transaction_options o;
        o.resolve_in_doubt = resolve;
        bool committed = false;
        const int id = resolve ? 4 : 3;
        const auto trips = c.stats().round_trips;
        const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
          co_await pa::async_atomic(c, o, [&]() -> awaitable<void> {
            c.on_commit([&] { committed = true; });
            co_await insert(c, table, id);
            relay.cut_after_commit();
          });
        });
        BOOST_TEST(what == (resolve ? "returned" : "in_doubt_error"));
        BOOST_TEST(committed == resolve);
        BOOST_TEST(c.stats().round_trips - trips == 2u);  // the xid rode with the INSERT
      }());
      beat.stop();
      BOOST_TEST(beat.worst_ms() < 150);
    }
  BOOST_TEST(pqtest::committed_ids(table) == "3,4");  // in doubt meant committed, both times
}

// The answer to COMMIT is cut off, and for a while no server can be reached (as in
// a failover): the resolver connects again until one answers, within resolve_wait;
// past it, in_doubt_error says what it last saw.
BOOST_AUTO_TEST_CASE(the_resolver_connects_again_within_resolve_wait) {
  pqtest::scratch_table table;
  const std::string direct = pqtest::env("PQSCOPE_TEST_DIRECT");
  for (const auto wait : {ms(5000), ms(300)}) BOOST_TEST_CONTEXT("resolve_wait " << wait.count() << " ms") {
      pqtest::asio_stall_relay relay{direct};
      net::io_context io;
      std::thread reopen;
      pqtest::run_coro(io, [&]() -> awaitable<void> {
        pa::connection c = co_await pqtest::connect_async(relay.conninfo());
        pqscope::transaction_options o;
        o.resolve_in_doubt = true;
        o.resolve_wait = wait;
        bool committed = false;
        const int id = wait > ms(1000) ? 1 : 2;
        const auto t0 = std::chrono::steady_clock::now();
        const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
          co_await pa::async_atomic(c, o, [&]() -> awaitable<void> {
            c.on_commit([&] { committed = true; });
            co_await insert(c, table, id);
            relay.cut_after_commit();
            relay.refuse_new_connections(true);
            reopen = std::thread([&] {
              std::this_thread::sleep_for(ms(800));
              relay.refuse_new_connections(false);
            });
          });
        });
        const auto took = std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0).count();
        BOOST_TEST_MESSAGE(what << " after " << took << " ms, " << relay.connections() << " connections");
        BOOST_TEST(what == (id == 1 ? "returned" : "in_doubt_error"));
        BOOST_TEST(committed == (id == 1));
        BOOST_TEST(relay.connections() > 2);  // the session, then the resolver's attempts
        if (id == 1) BOOST_TEST(took >= 800);
      }());
      reopen.join();
    }
  BOOST_TEST(pqtest::committed_ids(table) == "1,2");  // in doubt meant committed, both times
}

// A coroutine destroyed while its scope is open: it runs on a second io_context,
// which is destroyed while the coroutine waits on a timer of its own. The scope's
// ROLLBACK goes out at once in the background; nothing stays idle in a transaction.
BOOST_AUTO_TEST_CASE(coroutine_destroyed_mid_scope) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    for (int depth : {1, 2}) BOOST_TEST_CONTEXT("depth " << depth) {
        net::io_context io;
        std::optional<pa::connection> c;
        c.emplace(pqtest::run_coro(io, pqtest::connect_async(t.conninfo)));
        const std::string app = c->application_name();
        bool rolled_back = false, parked = false, finished = false;
        {
          net::io_context other;
          net::co_spawn(
              other,
              [&]() -> awaitable<void> {
                co_await pa::async_atomic(*c, [&]() -> awaitable<void> {
                  c->on_rollback([&] { rolled_back = true; });
                  co_await insert(*c, table, 1);
                  auto park = [&]() -> awaitable<void> {
                    parked = true;
                    co_await pqtest::sleep_for(1h);
                  };
                  if (depth == 1) {
                    co_await park();
                  } else {
                    co_await pa::async_atomic(*c, [&]() -> awaitable<void> {
                      co_await insert(*c, table, 2);
                      co_await park();
                    });
                  }
                });
                finished = true;
              },
              net::detached);
          for (int i = 0; i < 1000 && !parked; ++i) {
            io.restart();
            io.poll();
            other.restart();
            other.poll();
            std::this_thread::sleep_for(1ms);
          }
          BOOST_REQUIRE(parked);
          BOOST_TEST(c->depth() == static_cast<std::size_t>(depth));
          BOOST_TEST(pqtest::idle_in_transaction(app) == 1);
        }  // `other` is destroyed, and with it the coroutine
        BOOST_TEST(!finished);
        BOOST_TEST(c->depth() == 0u);
        // The ROLLBACK is already on its way; let it arrive.
        bool idle = false;
        for (int i = 0; i < 200 && !idle; ++i) {
          io.restart();
          io.run_for(5ms);
          idle = pqtest::idle_in_transaction(app) == 0;
        }
        BOOST_TEST(idle);
        BOOST_TEST(rolled_back);  // with the ROLLBACK's answer
        BOOST_TEST(pqtest::committed_count(table) == 0);
        BOOST_TEST(pqtest::run_coro(io, [&]() -> awaitable<int> {
                     co_return co_await c->async_query_value<int>("SELECT 5", use_awaitable);
                   }()) == 5);
        c.reset();
      }
  });
}
