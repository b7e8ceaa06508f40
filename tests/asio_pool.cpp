// pqscope::asio::pool against PostgreSQL directly (the pool is for talking to
// PostgreSQL itself; behind PgBouncer each coroutine keeps its own connection).
//
// Each behaviour of the blocking pool (tests/pool.cpp) the asynchronous one shares
// is checked the same way: reuse, the cap, acquire_timeout and its pool_timeout,
// dirty and broken connections, the health check, expiry; then what only it has:
// first come first served among waiters, connects with pauses after failures, and
// shutdown (cancellation of a waiting acquire: asio_cancellation.cpp).
//
// Then the load proof: 10,000 coroutines on one thread share 16 direct connections
// and run the transfer workload of tests/asio_load.cpp (serializable transfers of
// nested scopes, about 10% failing inside a nested scope and caught, 5% rolled back,
// 8 retries; and here 2% of the leases come back with a scope's ROLLBACK still on
// its way). Checked: money is conserved; no unexpected error; no session idle in a
// transaction for more than a second (a watcher thread reads pg_stat_activity every
// 50 ms on a blocking connection of its own) and none left; the thread never blocks
// (a timer on it, due every 10 ms, keeps firing on time). The acquire wait is
// reported (p50, p99). The same again on an io_context run by 4 threads.
//
// PQSCOPE_ASIO_POOL_TRANSFERS sets the transfers per coroutine (default 2; 1 in sanitized builds).

#define BOOST_TEST_MODULE asio_pool
#include <boost/test/unit_test.hpp>

#include <libpq-fe.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>

#include "support/asio_pool_helpers.hpp"
#include "support/asio_run.hpp"
#include "support/asio_transfers.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;
using steady = std::chrono::steady_clock;

namespace {

using namespace pqtest::pool_helpers;

}  // namespace

// ---- the blocking pool's behaviours --------------------------------------------------

BOOST_AUTO_TEST_CASE(the_types_say_how_to_hold_them) {
  static_assert(!std::is_copy_constructible_v<pa::pool> && !std::is_move_constructible_v<pa::pool>);
  static_assert(!std::is_copy_constructible_v<pa::lease> && std::is_nothrow_move_constructible_v<pa::lease>);
  static_assert(std::is_nothrow_move_assignable_v<pa::lease> && std::is_nothrow_default_constructible_v<pa::lease>);
  static_assert(std::is_same_v<decltype(std::declval<pa::pool&>().stats()), pqscope::pool_stats>);

  net::io_context io;
  BOOST_CHECK_THROW(pa::pool(io, "host='unterminated"), pqscope::usage_error);
  pqscope::pool_options zero;
  zero.max_size = 0;
  BOOST_CHECK_THROW(pa::pool(io, direct().conninfo, zero), pqscope::usage_error);
  pqscope::pool_options negative;
  negative.health_check_after = -1ms;
  BOOST_CHECK_THROW(pa::pool(io.get_executor(), direct().conninfo, negative), pqscope::usage_error);

  app_pool p{io};
  BOOST_TEST(p.pool.size() == 0u);  // lazily: nothing opened yet
  BOOST_TEST(p.pool.max_size() == 10u);
  BOOST_TEST(backends(p.app) == 0);

  pa::lease none;
  BOOST_CHECK_THROW((void)none.get(), pqscope::usage_error);
  BOOST_CHECK_THROW(none.release(), pqscope::usage_error);
}

BOOST_AUTO_TEST_CASE(a_returned_connection_is_leased_again) {
  net::io_context io;
  app_pool p{io};
  pqtest::scratch_table tab;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    PGconn* first = nullptr;
    int pid = 0;
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      first = c->native_handle();
      pid = co_await backend_pid(*c);
      co_await pa::async_atomic(*c, [&]() -> awaitable<void> {
        co_await c->async_execute("INSERT INTO " + tab.name() + " (id) VALUES (1)", use_awaitable);
      });
      BOOST_TEST(p.pool.size() == 1u);
      BOOST_TEST(p.pool.idle() == 0u);
    }
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      BOOST_TEST(c->native_handle() == first);
      BOOST_TEST(co_await backend_pid(*c) == pid);
      co_await c->async_execute("INSERT INTO " + tab.name() + " (id) VALUES (2)", use_awaitable);
      // Moving the lease keeps the connection; the moved-from one holds nothing.
      pa::lease moved = std::move(c);
      BOOST_TEST(moved->native_handle() == first);
      BOOST_CHECK_THROW((void)c.get(), pqscope::usage_error);
      moved.release();
      BOOST_CHECK_THROW((void)moved.get(), pqscope::usage_error);
      BOOST_CHECK_THROW(moved.release(), pqscope::usage_error);
    }
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
  }());
  BOOST_TEST(tab.ids() == "1,2");
  const auto s = p.pool.stats();
  BOOST_TEST(s.created == 1u);
  BOOST_TEST(s.reused == 1u);
  BOOST_TEST(s.closed_dirty == 0u);
  BOOST_TEST(backends(p.app) == 1);
}

BOOST_AUTO_TEST_CASE(many_coroutines_never_exceed_max_size) {
  pqscope::pool_options o = fast_options();
  o.max_size = 3;
  o.acquire_timeout = 10s;
  net::io_context io;
  app_pool p{io, o};
  constexpr int coroutines = 40;
  constexpr int leases_each = 5;
  int leased = 0, most_leased = 0, done = 0, wrong = 0;
  std::size_t most_size = 0;
  long most_backends = 0;
  std::string first_error;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    auto worker = [&](int n) -> awaitable<void> {
      try {
        for (int k = 0; k < leases_each; ++k) {
          pa::lease c = co_await p.pool.async_acquire(use_awaitable);
          most_leased = std::max(most_leased, ++leased);
          most_size = std::max(most_size, p.pool.size());
          // Held for a moment, so that the coroutines really compete for the three.
          if (co_await c->async_query_value<int>({"SELECT $1::int FROM pg_sleep(0.002)", k}, use_awaitable) != k)
            ++wrong;
          --leased;
        }
      } catch (const std::exception& e) {
        if (first_error.empty()) first_error = "coroutine " + std::to_string(n) + ": " + e.what();
      }
      ++done;
    };
    for (int n = 0; n < coroutines; ++n) net::co_spawn(io, worker(n), net::detached);
    // The server's view meanwhile, through a connection of its own.
    pa::connection obs = co_await pqtest::connect_async(direct().conninfo);
    while (done < coroutines) {
      most_backends = std::max(most_backends, co_await obs.async_query_value<long>(
                                                  {"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                                                   p.app},
                                                  use_awaitable));
      co_await pqtest::sleep_for(2ms);
    }
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == p.pool.size(); }));
  }());
  BOOST_TEST(first_error == "");
  BOOST_TEST(wrong == 0);
  const auto s = p.pool.stats();
  BOOST_TEST_MESSAGE(coroutines << " coroutines x " << leases_each << " leases: " << s.created
                                << " connection(s) opened, " << s.reused << " reuses, at most " << most_leased
                                << " leased and " << most_backends << " backend(s) seen at once");
  BOOST_TEST(most_leased <= 3);
  BOOST_TEST(most_leased >= 2);  // they did overlap
  BOOST_TEST(most_size <= 3u);
  BOOST_TEST(most_backends <= 3);
  BOOST_TEST(s.created <= 3u);
  BOOST_TEST(s.created + s.reused == static_cast<std::uint64_t>(coroutines * leases_each));
  BOOST_TEST(s.timeouts == 0u);
  BOOST_TEST(backends(p.app) <= 3);
}

BOOST_AUTO_TEST_CASE(acquire_gives_up_after_acquire_timeout) {
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  o.acquire_timeout = 300ms;
  net::io_context io;
  app_pool p{io, o};
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    std::optional<pa::lease> held;
    BOOST_TEST(co_await try_acquire(p.pool, &held) == "leased");
    const auto start = steady::now();
    BOOST_TEST(co_await try_acquire(p.pool) == "pool_timeout");
    const double waited = seconds_since(start);
    BOOST_TEST_MESSAGE("async_acquire() gave up after " << waited << " s");
    BOOST_TEST(waited >= 0.29);
    BOOST_TEST(waited < 1.0);
    BOOST_TEST(p.pool.stats().timeouts == 1u);
    BOOST_TEST(p.pool.waiting() == 0u);
    BOOST_TEST(backends(p.app) == 1);
    // The message says why, as the blocking pool's does.
    try {
      (void)co_await p.pool.async_acquire(use_awaitable);
    } catch (const pqscope::pool_timeout& e) {
      BOOST_TEST(std::string(e.what()).find("within 300 ms (max_size 1, all leased)") != std::string::npos);
    }
    BOOST_TEST(p.pool.stats().timeouts == 2u);

    // A waiter gets the connection as soon as it comes back.
    PGconn* handle = (*held)->native_handle();
    bool got = false;
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          pa::lease c = co_await p.pool.async_acquire(use_awaitable);
          got = c->native_handle() == handle;
        },
        net::detached);
    co_await pqtest::sleep_for(100ms);
    BOOST_TEST(p.pool.waiting() == 1u);
    const auto released = steady::now();
    held.reset();
    BOOST_TEST(co_await eventually([&] { return got; }));
    BOOST_TEST(seconds_since(released) < 0.25);  // well before the 300 ms acquire_timeout
    BOOST_TEST(p.pool.stats().timeouts == 2u);
  }());
}

// The transaction object dies before the lease: its ROLLBACK goes out at once (in
// the background), the pool waits for it and leases the connection again. A lease
// given back while a scope is still open: the connection is closed, and the server
// rolls back. Either way nothing stays idle in a transaction.
BOOST_AUTO_TEST_CASE(a_lease_dropped_with_a_scope_open_leaves_nothing_in_a_transaction) {
  net::io_context io;
  app_pool p{io};
  pqtest::scratch_table tab;
  const std::string insert = "INSERT INTO " + tab.name() + " (id) VALUES (7)";
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    int pid = 0;
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      pid = co_await backend_pid(*c);
      pa::transaction tx{*c};
      co_await c->async_execute(insert, use_awaitable);
      BOOST_TEST(pqtest::idle_in_transaction(p.app) == 1);
    }  // tx, then the lease
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
    BOOST_TEST(pqtest::idle_in_transaction(p.app) == 0);
    BOOST_TEST(p.pool.stats().closed_dirty == 0u);
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      BOOST_TEST(co_await backend_pid(*c) == pid);  // the same session, rolled back
      BOOST_TEST(c->depth() == 0u);
      BOOST_TEST(PQtransactionStatus(c->native_handle()) == PQTRANS_IDLE);
    }
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));

    // The scope outlives the lease.
    std::optional<pa::transaction> leaked;
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      BOOST_TEST(co_await backend_pid(*c) == pid);
      leaked.emplace(*c);
      co_await c->async_execute(insert, use_awaitable);
      BOOST_TEST(pqtest::idle_in_transaction(p.app) == 1);
    }
    BOOST_TEST(co_await eventually([&] { return p.pool.size() == 0u; }));
    BOOST_TEST(p.pool.stats().closed_dirty == 1u);
    BOOST_TEST(co_await eventually([&] { return !backend_alive(pid); }));
    BOOST_TEST(pqtest::idle_in_transaction(p.app) == 0);
    leaked.reset();  // its session is closed: it ends quietly
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      BOOST_TEST(co_await backend_pid(*c) != pid);
      BOOST_TEST(c->depth() == 0u);
    }
  }());
  BOOST_TEST(tab.count() == 0);
  BOOST_TEST(pqtest::idle_in_transaction(p.app) == 0);
}

BOOST_AUTO_TEST_CASE(a_broken_connection_is_replaced) {
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  net::io_context io;
  app_pool p{io, o};
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    std::optional<pa::lease> held;
    BOOST_TEST(co_await try_acquire(p.pool, &held) == "leased");
    const int pid = co_await backend_pid(**held);
    BOOST_TEST(pqtest::shared_observer().query_value<bool>("SELECT pg_terminate_backend($1)", pid));
    BOOST_TEST(co_await eventually([&] { return !backend_alive(pid); }));
    BOOST_CHECK_THROW(co_await (*held)->async_execute("SELECT 1", use_awaitable), pqscope::connection_error);

    // A waiter is queued behind the broken lease: it gets a new connection.
    int next_pid = 0;
    std::string failure;
    bool done = false;
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          try {
            pa::lease c = co_await p.pool.async_acquire(use_awaitable);
            next_pid = co_await backend_pid(*c);
          } catch (const std::exception& e) {
            failure = e.what();
          }
          done = true;
        },
        net::detached);
    co_await pqtest::sleep_for(50ms);
    held.reset();
    BOOST_TEST(co_await eventually([&] { return done; }));
    BOOST_TEST(failure == "");
    BOOST_TEST(next_pid != 0);
    BOOST_TEST(next_pid != pid);
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
  }());
  const auto s = p.pool.stats();
  BOOST_TEST(s.closed_dirty == 1u);
  BOOST_TEST(s.created == 2u);
  BOOST_TEST(p.pool.size() == 1u);
}

BOOST_AUTO_TEST_CASE(idle_connections_are_health_checked) {
  for (auto after : {0ms, 3600000ms}) {
    BOOST_TEST_CONTEXT("health_check_after " << after.count() << " ms") {
      pqscope::pool_options o = fast_options();
      o.health_check_after = after;
      net::io_context io;
      app_pool p{io, o};
      pqtest::run_coro(io, [&]() -> awaitable<void> {
        int pid = 0;
        std::uint64_t trips = 0;
        {
          pa::lease c = co_await p.pool.async_acquire(use_awaitable);
          pid = co_await backend_pid(*c);
          trips = c->stats().round_trips;
        }
        BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
        {
          // A check costs one round trip, and only when the connection sat long enough.
          pa::lease c = co_await p.pool.async_acquire(use_awaitable);
          BOOST_TEST(c->stats().round_trips == trips + (after.count() == 0 ? 1u : 0u));
        }
        BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
        BOOST_TEST(pqtest::shared_observer().query_value<bool>("SELECT pg_terminate_backend($1)", pid));
        BOOST_TEST(co_await eventually([&] { return !backend_alive(pid); }));
        pa::lease c = co_await p.pool.async_acquire(use_awaitable);
        if (after.count() == 0) {
          // The check found it dead: a new connection instead.
          BOOST_TEST(co_await c->async_query_value<int>("SELECT 42", use_awaitable) == 42);
          BOOST_TEST(co_await backend_pid(*c) != pid);
        } else {
          // Unchecked, the dead session is leased as it is (as the blocking pool does).
          BOOST_CHECK_THROW(co_await c->async_execute("SELECT 42", use_awaitable), pqscope::connection_error);
        }
      }());
      const auto s = p.pool.stats();
      BOOST_TEST(s.health_check_failures == (after.count() == 0 ? 1u : 0u));
      BOOST_TEST(s.created == (after.count() == 0 ? 2u : 1u));
    }
  }
}

BOOST_AUTO_TEST_CASE(idle_and_old_connections_are_closed) {
  pqscope::pool_options o = fast_options();
  o.idle_timeout = 200ms;
  o.max_lifetime = 600ms;
  net::io_context io;
  app_pool p{io, o};
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    int first = 0;
    {
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      first = co_await backend_pid(*c);
    }
    BOOST_TEST(co_await eventually([&] { return p.pool.idle() == 1u; }));
    co_await pqtest::sleep_for(300ms);
    {
      // Seen idle past idle_timeout: closed, a new one opened.
      pa::lease c = co_await p.pool.async_acquire(use_awaitable);
      BOOST_TEST(co_await backend_pid(*c) != first);
      BOOST_TEST(p.pool.stats().closed_expired == 1u);
      BOOST_TEST(p.pool.stats().created == 2u);
      co_await pqtest::sleep_for(700ms);
    }  // returned past max_lifetime: closed
    BOOST_TEST(co_await eventually([&] { return p.pool.size() == 0u; }));
    BOOST_TEST(p.pool.stats().closed_expired == 2u);
    BOOST_TEST(p.pool.stats().closed_dirty == 0u);
    BOOST_TEST(co_await eventually([&] { return backends(p.app) == 0; }));
  }());
}

// ---- what only the asynchronous pool has ---------------------------------------------

BOOST_AUTO_TEST_CASE(waiters_are_served_first_come_first_served) {
  pqscope::pool_options o = fast_options();
  o.max_size = 2;
  o.acquire_timeout = std::chrono::milliseconds::max();  // no bound (and no overflow)
  net::io_context io;
  app_pool p{io, o};
  constexpr int waiters = 12;
  std::vector<int> order;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    std::optional<pa::lease> a, b;
    BOOST_TEST(co_await try_acquire(p.pool, &a) == "leased");
    BOOST_TEST(co_await try_acquire(p.pool, &b) == "leased");
    int ended = 0;
    for (int n = 0; n < waiters; ++n) {
      net::co_spawn(
          io,
          [&, n]() -> awaitable<void> {
            try {
              pa::lease c = co_await p.pool.async_acquire(use_awaitable);
              order.push_back(n);
              co_await c->async_execute("SELECT 1", use_awaitable);
            } catch (const std::exception& e) {
              BOOST_ERROR("waiter " << n << ": " << e.what());
            }
            ++ended;
          },
          net::detached);
      co_await pqtest::sleep_for(2ms);  // arrival order = n
    }
    BOOST_TEST(p.pool.waiting() == static_cast<std::size_t>(waiters));
    a.reset();
    co_await pqtest::sleep_for(20ms);
    b.reset();
    BOOST_TEST(co_await eventually([&] { return ended == waiters; }));
  }());
  std::vector<int> expected(waiters);
  for (int n = 0; n < waiters; ++n) expected[static_cast<std::size_t>(n)] = n;
  BOOST_TEST(order == expected, boost::test_tools::per_element());
  BOOST_TEST(p.pool.stats().created == 2u);
}


// A server that accepts and hangs up at once, counting the attempts: a pool that
// cannot connect tries again after pauses, not once per waiter.
BOOST_AUTO_TEST_CASE(failed_connects_are_tried_again_after_a_pause) {
  net::io_context io;
  net::ip::tcp::acceptor acceptor{io, net::ip::tcp::endpoint(net::ip::make_address("127.0.0.1"), 0)};
  const unsigned short port = acceptor.local_endpoint().port();
  int attempts = 0;
  bool stop = false;
  std::function<void()> accept_one = [&] {
    acceptor.async_accept([&](const boost::system::error_code& ec, net::ip::tcp::socket s) {
      if (ec || stop) return;
      ++attempts;
      boost::system::error_code ignored;
      s.close(ignored);
      accept_one();
    });
  };
  accept_one();
  const std::string conninfo = "host=127.0.0.1 port=" + std::to_string(port) +
                               " user=nobody dbname=nothing sslmode=disable gssencmode=disable connect_timeout=2";
  pqscope::pool_options o;
  o.max_size = 4;
  o.acquire_timeout = 3s;
  pa::pool p{io, conninfo, o};
  pqscope::pool_options brief = o;
  brief.acquire_timeout = 20ms;
  pa::pool q{io, conninfo, brief};
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    // Three at once: one connect each, and each learns why it failed, as blocking acquire() calls would.
    std::vector<std::string> first(3);
    int ended = 0;
    for (std::size_t n = 0; n < first.size(); ++n)
      net::co_spawn(
          io,
          [&, n]() -> awaitable<void> {
            first[n] = co_await try_acquire(p);
            ++ended;
          },
          net::detached);
    BOOST_TEST(co_await eventually([&] { return ended == 3; }));
    for (const auto& f : first) BOOST_TEST(f == "connection_error");
    BOOST_TEST(attempts == 3);

    // Then one acquire after another for 1.2 s: each waits for the next attempt,
    // 50, 100, 200, 400 ms apart.
    const auto start = steady::now();
    int tries = 0;
    while (seconds_since(start) < 1.2) {
      BOOST_TEST(co_await try_acquire(p) == "connection_error");
      ++tries;
    }
    BOOST_TEST_MESSAGE(tries << " acquires in 1.2 s made " << attempts - 3 << " connect attempts");
    BOOST_TEST(attempts - 3 == tries);  // one attempt each, none in between
    BOOST_TEST(tries >= 3);
    BOOST_TEST(tries <= 6);
    BOOST_TEST(p.size() == 0u);
    BOOST_TEST(p.stats().created == 0u);

    // A wait shorter than the pause ends in pool_timeout, which says why no connection came.
    const int before = attempts;
    BOOST_TEST(co_await try_acquire(q) == "connection_error");
    try {
      (void)co_await q.async_acquire(use_awaitable);
      BOOST_ERROR("a connection from a server that hangs up");
    } catch (const pqscope::pool_timeout& e) {
      BOOST_TEST(std::string(e.what()).find("the last attempt to connect failed") != std::string::npos, e.what());
    }
    BOOST_TEST(attempts == before + 1);
    BOOST_TEST(q.stats().timeouts == 1u);
    stop = true;
    acceptor.close();
  }());
}

BOOST_AUTO_TEST_CASE(shutdown_fails_the_waiters_and_waits_for_the_leases) {
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  o.acquire_timeout = 10s;
  net::io_context io;
  pqtest::target t = direct();
  const std::string app = pqtest::unique_name("apool");
  auto p = std::make_unique<pa::pool>(io, pqtest::with_app_name(t, app), o);
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    std::optional<pa::lease> held;
    BOOST_TEST(co_await try_acquire(*p, &held) == "leased");
    std::vector<std::string> waiters(3);
    for (std::size_t n = 0; n < waiters.size(); ++n)
      net::co_spawn(
          io, [&, n]() -> awaitable<void> { waiters[n] = co_await try_acquire(*p); }, net::detached);
    co_await pqtest::sleep_for(20ms);
    BOOST_TEST(p->waiting() == 3u);

    bool drained = false;
    const auto start = steady::now();
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          co_await p->async_shutdown(use_awaitable);
          drained = true;
        },
        net::detached);
    BOOST_TEST(co_await eventually([&] { return waiters[2] != ""; }));
    BOOST_TEST(seconds_since(start) < 0.5);  // at once, not after acquire_timeout
    for (const auto& w : waiters) BOOST_TEST(w == "usage_error");
    BOOST_TEST(co_await try_acquire(*p) == "usage_error");
    // The lease still out keeps working; the shutdown waits for it.
    BOOST_TEST(co_await (*held)->async_query_value<int>("SELECT 5", use_awaitable) == 5);
    co_await pqtest::sleep_for(50ms);
    BOOST_TEST(!drained);
    BOOST_TEST(backends(app) == 1);
    held.reset();
    BOOST_TEST(co_await eventually([&] { return drained; }));
    BOOST_TEST(p->size() == 0u);
    BOOST_TEST(co_await eventually([&] { return backends(app) == 0; }));

    // Destroying the pool does the same, and a lease may outlive it.
    p = std::make_unique<pa::pool>(io, pqtest::with_app_name(t, app), o);
    BOOST_TEST(co_await try_acquire(*p, &held) == "leased");
    std::string waiter;
    net::co_spawn(
        io, [&]() -> awaitable<void> { waiter = co_await try_acquire(*p); }, net::detached);
    co_await pqtest::sleep_for(20ms);
    p.reset();
    BOOST_TEST(co_await eventually([&] { return waiter != ""; }));
    BOOST_TEST(waiter == "usage_error");
    BOOST_TEST(co_await (*held)->async_query_value<int>("SELECT 6", use_awaitable) == 6);
    BOOST_TEST(backends(app) == 1);
    held.reset();  // its connection is closed
    BOOST_TEST(co_await eventually([&] { return backends(app) == 0; }));
  }());
}

// ---- the load proof ----------------------------------------------------------------------

namespace {

constexpr int load_coroutines = 10'000;
constexpr std::size_t load_pool_size = 16;
constexpr int accounts = 100;
constexpr long opening_cents = 10000;

// Sanitized builds run the same handlers several times slower.
#if defined(__SANITIZE_ADDRESS__)
constexpr long slowdown = 4;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr long slowdown = 4;
#else
constexpr long slowdown = 1;
#endif
#else
constexpr long slowdown = 1;
#endif

int transfers_each() {
  const char* v = std::getenv("PQSCOPE_ASIO_POOL_TRANSFERS");
  // Sanitized builds run the client about three times slower: one transfer each there.
  if (v == nullptr || *v == '\0') return slowdown > 1 ? 1 : 2;
  return std::clamp(std::atoi(v), 1, 100);
}


struct totals {
  std::mutex m;  // the 4-thread run's coroutines report concurrently
  long committed = 0, rolled_back = 0, nested_failures = 0, retries = 0, unexpected = 0, abandoned = 0;
  long gave_up = 0, recovered = 0;
  std::vector<std::string> errors;
  std::vector<long> wait_us;  // from async_acquire() to the lease
  int finished = 0;
};

awaitable<void> client(int n, pa::pool& p, const std::string& table, int transfers, totals& out) {
  std::mt19937 rng(static_cast<unsigned>(n) * 7919U + 17U);
  std::uniform_int_distribution<int> account(1, accounts), percent(0, 99);
  std::uniform_int_distribution<long> amount(1, 100);
  pqscope::transaction_options opts;
  opts.isolation = pqscope::isolation::serializable;
  opts.retries = 8;
  long committed = 0, rolled_back = 0, nested_failures = 0, retries = 0, abandoned = 0, gave_up = 0, recovered = 0;
  std::vector<long> waits;
  std::vector<std::string> errors;
  for (int k = 0; k < transfers; ++k) {
    const int from = account(rng);
    int to = account(rng);
    if (to == from) to = from % accounts + 1;
    const long cents = amount(rng);
    const int roll = percent(rng);
    const bool fail_nested = roll < 10;
    const bool overdraw = roll < 5;  // half on the server (CHECK), half in the application
    const bool rollback_all = percent(rng) < 5;
    const bool abandon = percent(rng) < 2;
    int attempts = 0;
    bool completed = false;
    try {
      const auto t0 = steady::now();
      pa::lease l = co_await p.async_acquire(use_awaitable);
      waits.push_back(std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0).count());
      pa::connection& c = *l;
      if (abandon) {
        // The scope's object dies open before the lease: its ROLLBACK goes out in the
        // background, and the pool waits for it before the next lease.
        pa::transaction tx{c};
        co_await c.async_execute({"UPDATE " + table + " SET cents = cents + 1 WHERE id = $1", from}, use_awaitable);
        ++abandoned;
        continue;
      }
      const pqtest::unit_result u =
          co_await pqtest::transfer_unit(c, opts, table, from, to, cents, fail_nested, overdraw, rollback_all);
      attempts = u.attempts;
      completed = u.completed();
      if (u.committed) ++committed;
      if (u.committed && u.nested_failure) ++nested_failures;
      if (u.rolled_back) ++rolled_back;
      if (u.gave_up) ++gave_up;
      if (!u.unexpected.empty()) errors.push_back(u.unexpected);
    } catch (const std::exception& e) {
      errors.push_back(std::string("acquire: ") + e.what());
    }
    retries += std::max(attempts - 1, 0);
    if (completed && attempts > 1) ++recovered;
  }
  const std::lock_guard<std::mutex> lock(out.m);
  out.committed += committed;
  out.rolled_back += rolled_back;
  out.nested_failures += nested_failures;
  out.retries += retries;
  out.abandoned += abandoned;
  out.gave_up += gave_up;
  out.recovered += recovered;
  out.unexpected += static_cast<long>(errors.size());
  for (auto& e : errors)
    if (out.errors.size() < 5) out.errors.push_back("coroutine " + std::to_string(n) + ": " + e);
  out.wait_us.insert(out.wait_us.end(), waits.begin(), waits.end());
  ++out.finished;
}

// pg_stat_activity every 50 ms, from a thread and a blocking connection of its own.
struct watcher {
  std::atomic<bool> stop{false};
  long samples = 0, idle_tx_rows = 0, stale_rows = 0, most_backends = 0;
  double max_idle_tx_age = 0;
  std::string error;
  std::thread thread;

  explicit watcher(const std::string& app) {
    thread = std::thread([this, app] {
      try {
        pqscope::connection obs = pqtest::observer();
        while (!stop.load()) {
          const pqscope::result r = obs.execute(
              "SELECT coalesce(state, ''), "
              "       coalesce(extract(epoch FROM clock_timestamp() - state_change), 0)::float8 "
              "FROM pg_stat_activity WHERE application_name = $1",
              app);
          ++samples;
          most_backends = std::max(most_backends, static_cast<long>(r.size()));
          for (const auto& row : r) {
            auto [state, age] = row.as<std::string, double>();
            if (state.rfind("idle in transaction", 0) != 0) continue;
            ++idle_tx_rows;
            max_idle_tx_age = std::max(max_idle_tx_age, age);
            if (age > 1.0) ++stale_rows;
          }
          std::this_thread::sleep_for(50ms);
        }
      } catch (const std::exception& e) {
        error = e.what();
      }
    });
  }
  watcher(const watcher&) = delete;
  watcher& operator=(const watcher&) = delete;
  void finish() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
  ~watcher() { finish(); }
};

// What the thread did during its worst heartbeat gap: time on the CPU (running
// handlers) and involuntary context switches (the kernel gave the CPU to another
// process: a shared 2-core machine). Blocked in a system call it would be neither.
struct worst_gap {
  long late_us = 0, cpu_us = 0, preempted = 0;
};

long thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1'000'000L + ts.tv_nsec / 1000;
}
long involuntary_switches() {
  rusage ru{};
  getrusage(RUSAGE_THREAD, &ru);
  return ru.ru_nivcsw;
}

// Due every 10 ms; only the steady load counts (the start, where 10,000 coroutines
// are created and queue at once, is a burst of CPU work by design).
struct heartbeat_log {
  std::mutex m;
  std::vector<long> late_us;
  worst_gap worst;
  steady::time_point from = steady::time_point::max(), to = steady::time_point::max();
  bool stop = false;
};

awaitable<void> heartbeat(heartbeat_log& log) {
  net::steady_timer t{co_await net::this_coro::executor};
  auto due = steady::now();
  for (;;) {
    {
      const std::lock_guard<std::mutex> lock(log.m);
      if (log.stop) break;
    }
    due += 10ms;
    t.expires_at(due);
    const long cpu0 = thread_cpu_us(), sw0 = involuntary_switches();
    co_await t.async_wait(use_awaitable);
    const auto now = steady::now();
    const long late = std::chrono::duration_cast<std::chrono::microseconds>(now - due).count();
    {
      const std::lock_guard<std::mutex> lock(log.m);
      if (due >= log.from && now <= log.to) {
        log.late_us.push_back(late);
        if (late > log.worst.late_us) log.worst = worst_gap{late, thread_cpu_us() - cpu0, involuntary_switches() - sw0};
      }
    }
    if (now > due + 10ms) due = now;  // no catching up in a burst
  }
}

long percentile(std::vector<long> v, double q) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(q * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

void load_run(int threads) {
  pqtest::scratch_table table("id int PRIMARY KEY, cents bigint NOT NULL CHECK (cents >= 0)");
  pqtest::shared_observer().execute("INSERT INTO " + table.name() + " SELECT g, $1 FROM generate_series(1, $2) g",
                                    opening_cents, accounts);
  const std::string app = pqtest::unique_name("apool_load");
  const int transfers = transfers_each();
  pqscope::pool_options o;
  o.max_size = load_pool_size;
  o.acquire_timeout = 120s;  // a queue of 10,000: the wait is the point, not a failure
  net::io_context io{threads};
  auto p = std::make_unique<pa::pool>(io, pqtest::with_app_name(direct(), app), o);
  totals out;
  heartbeat_log beats;
  watcher watch{app};
  long left_open = -1, backends_after = -1;
  std::size_t most_size = 0;
  const auto started = steady::now();
  steady::time_point ended;
  std::exception_ptr failure;

  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        const auto ex = co_await net::this_coro::executor;
        net::co_spawn(net::make_strand(io), heartbeat(beats), net::detached);
        for (int n = 0; n < load_coroutines; ++n) {
          // Several threads: each coroutine on a strand of its own, as a connection wants.
          if (threads > 1)
            net::co_spawn(net::make_strand(io), client(n, *p, table.name(), transfers, out), net::detached);
          else
            net::co_spawn(ex, client(n, *p, table.name(), transfers, out), net::detached);
        }
        {
          const std::lock_guard<std::mutex> lock(beats.m);
          beats.from = steady::now() + 500ms;
        }
        for (;;) {
          {
            const std::lock_guard<std::mutex> lock(out.m);
            if (out.finished == load_coroutines) break;
          }
          most_size = std::max(most_size, p->size());
          co_await pqtest::sleep_for(20ms);
        }
        ended = steady::now();
        {
          const std::lock_guard<std::mutex> lock(beats.m);
          beats.to = ended;
          beats.stop = true;
        }
        // Every lease is back (a settling one a moment later): nothing may be left open.
        while (p->idle() != p->size()) co_await pqtest::sleep_for(10ms);
        pa::connection obs = co_await pqtest::connect_async(direct().conninfo);
        left_open = co_await obs.async_query_value<long>(
            {"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'",
             app},
            use_awaitable);
        backends_after = co_await obs.async_query_value<long>(
            {"SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app}, use_awaitable);
        co_await p->async_shutdown(use_awaitable);
      },
      [&](const std::exception_ptr& e) {
        failure = e;
        io.stop();
      });
  std::vector<std::thread> extra;
  for (int k = 1; k < threads; ++k) extra.emplace_back([&io] { io.run(); });
  io.run();
  for (auto& t : extra) t.join();
  watch.finish();
  if (failure) std::rethrow_exception(failure);

  const pqscope::pool_stats s = p->stats();
  const long total = pqtest::shared_observer().query_value<long>("SELECT sum(cents) FROM " + table.name());
  const long wait_p50 = percentile(out.wait_us, 0.5), wait_p99 = percentile(out.wait_us, 0.99);
  const long late_p99 = percentile(beats.late_us, 0.99);
  const long late_max = beats.late_us.empty() ? 0 : *std::max_element(beats.late_us.begin(), beats.late_us.end());
  const double seconds = std::chrono::duration<double>(ended - started).count();
  std::ostringstream line;
  line << std::fixed << std::setprecision(1) << "load: asio pool, " << load_coroutines << " coroutines on "
       << threads << " thread(s), " << load_pool_size << " direct connections, " << seconds << " s, "
       << out.committed << " transactions committed (" << static_cast<double>(out.committed) / seconds
       << " tx/s), acquire wait p50 " << wait_p50 / 1000.0 << " ms p99 " << wait_p99 / 1000.0 << " ms, "
       << out.retries << " retries (" << out.recovered << " got through, " << out.gave_up << " out of retries), "
       << out.nested_failures << " nested failures caught, " << out.rolled_back << " rolled back, " << out.abandoned
       << " leases back with a rollback on its way; " << s.created << " connections opened, at most " << most_size
       << " open (" << watch.most_backends << " seen by the server); idle in transaction in " << watch.idle_tx_rows
       << " rows of " << watch.samples << " samples, max age " << std::setprecision(3) << watch.max_idle_tx_age
       << " s; timer late (steady load) p99 " << late_p99 << " us, max " << late_max << " us";
  // With one thread, what it did during the worst gap (with four, a tick may end on another thread).
  if (threads == 1)
    line << " (meanwhile " << beats.worst.cpu_us << " us on the CPU, preempted " << beats.worst.preempted << " times)";
  std::cout << line.str() << "\n";
  BOOST_TEST_MESSAGE("acquire wait on " << threads << " thread(s): p50 " << wait_p50 / 1000.0 << " ms, p99 "
                                        << wait_p99 / 1000.0 << " ms; timer late p99 " << late_p99 << " us, max "
                                        << late_max << " us");
  for (const auto& e : out.errors) std::cout << "unexpected: " << e << "\n";

  BOOST_TEST(out.finished == load_coroutines);
  BOOST_TEST(out.unexpected == 0);
  BOOST_TEST(total == accounts * opening_cents);  // money is conserved
  BOOST_TEST(out.committed > 0);
  BOOST_TEST(out.recovered > 0);
  BOOST_TEST(out.gave_up <= out.recovered,
             out.gave_up << " transaction(s) ran out of retries, " << out.recovered << " got through after retrying");
  BOOST_TEST(out.nested_failures > 0);
  BOOST_TEST(out.rolled_back > 0);
  BOOST_TEST(out.abandoned > 0);
  BOOST_TEST(out.wait_us.size() == static_cast<std::size_t>(load_coroutines * transfers));
  // The cap held, on both sides.
  BOOST_TEST(most_size <= load_pool_size);
  BOOST_TEST(watch.most_backends <= static_cast<long>(load_pool_size));
  BOOST_TEST(s.created >= 1u);
  BOOST_TEST(s.timeouts == 0u);
  BOOST_TEST(s.closed_dirty == 0u);  // the abandoned scopes' connections were waited for, not closed
  BOOST_TEST(watch.error == "");
  BOOST_TEST(watch.samples > 10);
  BOOST_TEST(watch.stale_rows == 0);  // never idle in transaction for more than a second
  BOOST_TEST(left_open == 0);
  BOOST_TEST(backends_after <= static_cast<long>(load_pool_size));
  // A blocking call on the thread (a connect, a round trip, a wait in the pool) would
  // hold up every coroutine behind it; the timer shows it.
  BOOST_TEST(beats.late_us.size() > static_cast<std::size_t>(seconds * 20));  // it kept ticking
  BOOST_TEST(late_p99 < 25'000 * slowdown);
  BOOST_TEST(late_max < 250'000 * slowdown);
}

}  // namespace

BOOST_AUTO_TEST_CASE(ten_thousand_coroutines_on_one_thread_share_sixteen_connections) { load_run(1); }

BOOST_AUTO_TEST_CASE(ten_thousand_coroutines_on_four_threads_share_sixteen_connections) { load_run(4); }
