#define BOOST_TEST_MODULE asio_notifications
#include <boost/test/unit_test.hpp>

// LISTEN / NOTIFY on the asio connection, against PostgreSQL itself: the blocking
// connection's meaning (tests/notifications.cpp), and a wait that never blocks the
// thread.

#include <chrono>
#include <optional>
#include <string>
#include <thread>

#include <boost/asio/detached.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

using namespace std::chrono_literals;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;

namespace {

pqscope::connection_options direct() {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;
  return o;
}

using pqtest::notify;


awaitable<int> backend_pid(pa::connection& c) {
  co_return co_await c.async_query_value<int>({"SELECT pg_backend_pid()"}, use_awaitable);
}

}  // namespace

BOOST_AUTO_TEST_CASE(received_and_kept_while_statements_run) {
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    auto c = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_DIRECT"), direct());
    const std::string ch = pqtest::unique_name("async_jobs");
    co_await c.async_listen(ch, use_awaitable);
    co_await c.async_listen(ch, use_awaitable);  // again: a no-op
    BOOST_TEST(c.channels().size() == 1u);
    BOOST_TEST(!(co_await c.async_wait_notification(0ms, use_awaitable)).has_value());
    for (int i = 0; i < 30; ++i) {
      notify(ch, std::to_string(i));
      (void)co_await c.async_execute({"SELECT $1::int", i}, use_awaitable);
    }
    for (int i = 0; i < 30; ++i) {
      const std::optional<pqscope::notification> n = co_await c.async_wait_notification(5s, use_awaitable);
      BOOST_REQUIRE(n.has_value());
      BOOST_TEST(n->channel == ch);
      BOOST_TEST(n->payload == std::to_string(i));
      BOOST_TEST(!n->gap);
    }
    co_await c.async_unlisten(ch, use_awaitable);
    BOOST_TEST(c.channels().empty());
    notify(ch, "late");
    BOOST_TEST(!(co_await c.async_wait_notification(200ms, use_awaitable)).has_value());
  }());
}

// The wait yields the thread: a timer on it keeps firing, and a notification sent
// from another thread during the wait ends it.
BOOST_AUTO_TEST_CASE(the_wait_never_blocks_the_thread) {
  net::io_context io;
  int ticks = 0;
  bool waiting = true;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    auto c = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_DIRECT"), direct());
    const std::string ch = pqtest::unique_name("async_timer");
    co_await c.async_listen(ch, use_awaitable);
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          net::steady_timer t(io);
          while (waiting) {
            t.expires_after(10ms);
            co_await t.async_wait(use_awaitable);
            ++ticks;
          }
        },
        net::detached);
    const auto start = std::chrono::steady_clock::now();
    BOOST_TEST(!(co_await c.async_wait_notification(300ms, use_awaitable)).has_value());
    const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
    BOOST_TEST(took.count() >= 300);
    BOOST_TEST(took.count() < 3000);
    BOOST_TEST(ticks >= 15);
    std::thread sender([&] {
      std::this_thread::sleep_for(100ms);
      notify(ch, "from another thread");
    });
    const auto n = co_await c.async_wait_notification(10s, use_awaitable);
    sender.join();
    waiting = false;
    BOOST_REQUIRE(n.has_value());
    BOOST_TEST(n->payload == "from another thread");
  }());
}

BOOST_AUTO_TEST_CASE(a_lost_session_reports_the_gap_and_listens_again) {
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    auto c = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_DIRECT"), direct());
    const std::string ch = pqtest::unique_name("async_gap");
    co_await c.async_listen(ch, use_awaitable);
    const int old_pid = co_await backend_pid(c);
    notify(ch, "before");
    (void)co_await c.async_execute({"SELECT 1"}, use_awaitable);  // brings the notification in
    pqtest::terminate_backend(old_pid);
    notify(ch, "missed");
    auto first = co_await c.async_wait_notification(5s, use_awaitable);
    BOOST_REQUIRE(first.has_value());
    BOOST_TEST(first->payload == "before");
    auto gap = co_await c.async_wait_notification(5s, use_awaitable);
    BOOST_REQUIRE(gap.has_value());
    BOOST_TEST(gap->gap);
    BOOST_TEST((co_await backend_pid(c)) != old_pid);
    notify(ch, "after");
    auto after = co_await c.async_wait_notification(5s, use_awaitable);
    BOOST_REQUIRE(after.has_value());
    BOOST_TEST(after->payload == "after");
    BOOST_TEST(!(co_await c.async_wait_notification(100ms, use_awaitable)).has_value());

    // async_connect() opens a new session: the same gap, and listening again.
    notify(ch, "pending");
    (void)co_await c.async_execute({"SELECT 1"}, use_awaitable);
    co_await c.async_connect(use_awaitable);
    auto pending = co_await c.async_wait_notification(0ms, use_awaitable);
    BOOST_REQUIRE(pending.has_value());
    BOOST_TEST(pending->payload == "pending");
    gap = co_await c.async_wait_notification(0ms, use_awaitable);
    BOOST_REQUIRE(gap.has_value());
    BOOST_TEST(gap->gap);
    notify(ch, "new session");
    after = co_await c.async_wait_notification(5s, use_awaitable);
    BOOST_REQUIRE(after.has_value());
    BOOST_TEST(after->payload == "new session");
  }());
}

BOOST_AUTO_TEST_CASE(refused_where_it_cannot_work) {
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    auto pooled = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_PGBOUNCER"));
    BOOST_CHECK_THROW(co_await pooled.async_listen("jobs", use_awaitable), pqscope::usage_error);
    BOOST_CHECK_THROW((void)co_await pooled.async_wait_notification(0ms, use_awaitable), pqscope::usage_error);
    auto c = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_DIRECT"), direct());
    BOOST_CHECK_THROW(co_await c.async_listen(std::string(64, 'x'), use_awaitable), pqscope::usage_error);
    BOOST_CHECK_THROW((void)co_await c.async_wait_notification(-1ms, use_awaitable), pqscope::usage_error);
    // A scope object destroyed open: its ROLLBACK runs in the background, and the
    // wait comes after it instead of being refused.
    {
      pa::transaction tx{c};
      (void)co_await c.async_execute({"SELECT 1"}, use_awaitable);
    }
    BOOST_TEST(!(co_await c.async_wait_notification(100ms, use_awaitable)).has_value());
    // One operation at a time: a wait while another wait runs is refused.
    co_await c.async_listen(pqtest::unique_name("busy"), use_awaitable);
    bool refused = false;
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          net::steady_timer t(io);
          t.expires_after(50ms);  // the other wait is on the socket by then
          co_await t.async_wait(use_awaitable);
          try {
            (void)co_await c.async_wait_notification(100ms, use_awaitable);
          } catch (const pqscope::usage_error&) {
            refused = true;
          }
        },
        net::detached);
    BOOST_TEST(!(co_await c.async_wait_notification(200ms, use_awaitable)).has_value());
    BOOST_TEST(refused);
  }());
}
