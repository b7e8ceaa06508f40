// Asio's per-operation cancellation (cancellation slots: bind_cancellation_slot, the
// losing side of the awaitable operators' ||), which needs Boost 1.77 or newer.
// Debian 12's default Boost is 1.74, so CMake builds this file only against the
// newer headers scripts/dev.sh unpacks (PQSCOPE_BOOST_NEW_INCLUDE, Debian 12's
// libboost1.81-dev), with Boost.Test header-only. Under 1.74, cancel() and
// set_timeout() do the same (asio_faults), and acquire_timeout bounds a wait.

#define BOOST_TEST_MODULE asio_cancellation
#include <boost/test/included/unit_test.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <pqscope/asio.hpp>

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/version.hpp>

#if BOOST_ASIO_VERSION < 101900
#error "asio_cancellation.cpp needs Boost 1.77 or newer (PQSCOPE_BOOST_NEW_INCLUDE)"
#endif

#include "support/asio_pool_helpers.hpp"
#include "support/asio_run.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;
using namespace pqtest::pool_helpers;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;

// A statement's cancellation reaches the server: the statement is cancelled there,
// the scope around it rolls back, and the connection goes on.
BOOST_AUTO_TEST_CASE(cancellation_slots) {
  using namespace boost::asio::experimental::awaitable_operators;
  pqtest::for_each_target([](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      net::steady_timer timer{co_await net::this_coro::executor};
      timer.expires_after(200ms);
      auto first = co_await (c.async_execute("SELECT pg_sleep(5)", use_awaitable) || timer.async_wait(use_awaitable));
      BOOST_TEST(first.index() == 1u);  // the timer won; the statement was cancelled on the server
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 7", use_awaitable) == 7);
      net::cancellation_signal signal;
      timer.expires_after(200ms);
      timer.async_wait([&](const boost::system::error_code&) { signal.emit(net::cancellation_type::terminal); });
      BOOST_CHECK_THROW(co_await pa::async_atomic(c,
                                                  [&]() -> awaitable<void> {
                                                    co_await c.async_execute(
                                                        "SELECT pg_sleep(5)",
                                                        net::bind_cancellation_slot(signal.slot(), use_awaitable));
                                                  }),
                        pqscope::query_canceled);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 8", use_awaitable) == 8);
    }());
  });
}

// A waiting acquire leaves the queue when its cancellation slot is signalled.
BOOST_AUTO_TEST_CASE(a_waiting_acquire_can_be_cancelled) {
  using namespace boost::asio::experimental::awaitable_operators;
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  o.acquire_timeout = 5s;
  net::io_context io;
  app_pool p{io, o};
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    std::optional<pa::lease> held;
    BOOST_TEST(co_await try_acquire(p.pool, &held) == "leased");
    net::steady_timer timer{co_await net::this_coro::executor};
    timer.expires_after(100ms);
    const auto start = steady::now();
    auto first = co_await (p.pool.async_acquire(use_awaitable) || timer.async_wait(use_awaitable));
    BOOST_TEST(first.index() == 1u);  // the timer won, and the acquire did not wait on
    BOOST_TEST(seconds_since(start) < 1.0);
    BOOST_TEST(p.pool.waiting() == 0u);

    // Three waiters; the middle one is cancelled: the connection goes to the first, then the third.
    net::cancellation_signal signal;
    std::vector<std::string> outcome(3);
    std::vector<int> order;
    for (int n = 0; n < 3; ++n) {
      net::co_spawn(
          io,
          [&, n]() -> awaitable<void> {
            try {
              // (Not `n == 1 ? co_await ... : co_await ...`: g++ 12 destroys such a result twice.)
              pa::lease c;
              if (n == 1)
                c = co_await p.pool.async_acquire(net::bind_cancellation_slot(signal.slot(), use_awaitable));
              else
                c = co_await p.pool.async_acquire(use_awaitable);
              order.push_back(n);
              outcome[static_cast<std::size_t>(n)] = "leased";
            } catch (const pqscope::query_canceled&) {
              outcome[static_cast<std::size_t>(n)] = "query_canceled";
            } catch (const std::exception& e) {
              outcome[static_cast<std::size_t>(n)] = e.what();
            }
          },
          net::detached);
      co_await pqtest::sleep_for(2ms);
    }
    BOOST_TEST(p.pool.waiting() == 3u);
    signal.emit(net::cancellation_type::terminal);
    BOOST_TEST(co_await eventually([&] { return outcome[1] != ""; }));
    BOOST_TEST(outcome[1] == "query_canceled");
    BOOST_TEST(p.pool.waiting() == 2u);
    held.reset();
    BOOST_TEST(co_await eventually([&] { return outcome[0] != "" && outcome[2] != ""; }));
    BOOST_TEST(outcome[0] == "leased");
    BOOST_TEST(outcome[2] == "leased");
    BOOST_TEST((order == std::vector<int>{0, 2}));
  }());
  BOOST_TEST(p.pool.stats().timeouts == 0u);
}
