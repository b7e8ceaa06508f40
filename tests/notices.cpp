#define BOOST_TEST_MODULE notices
#include <boost/test/unit_test.hpp>

// Server notices (connection_options::notice_handler) on every target, blocking
// and asio: each one reaches the handler with its severity, SQLSTATE, message,
// detail and hint, in the order the server sent them; without a handler they
// reach the observer; a handler that throws changes nothing.

#include <stdexcept>
#include <string>
#include <vector>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

using pqtest::for_each_target;

namespace {

struct seen {
  std::string severity, sqlstate, message, detail, hint;
};

seen copy_of(const pqscope::notice& n) {
  return {std::string(n.severity), std::string(n.sqlstate), std::string(n.message), std::string(n.detail),
          std::string(n.hint)};
}

// Three notices from one statement, of two severities, the second with a hint and
// a SQLSTATE of its own.
const char* const raising =
    "DO $$BEGIN RAISE NOTICE 'one'; RAISE WARNING 'two' USING HINT = 'the hint', DETAIL = 'the detail', "
    "ERRCODE = '01007'; RAISE NOTICE 'three'; END$$";

void check_raised(const std::vector<seen>& got) {
  BOOST_REQUIRE(got.size() == 3u);
  BOOST_TEST(got[0].severity == "NOTICE");
  BOOST_TEST(got[0].sqlstate == "00000");
  BOOST_TEST(got[0].message == "one");
  BOOST_TEST(got[1].severity == "WARNING");
  BOOST_TEST(got[1].sqlstate == "01007");
  BOOST_TEST(got[1].message == "two");
  BOOST_TEST(got[1].detail == "the detail");
  BOOST_TEST(got[1].hint == "the hint");
  BOOST_TEST(got[2].message == "three");
}

}  // namespace

BOOST_AUTO_TEST_CASE(notices_reach_the_handler_in_order) {
  for_each_target([&](const pqtest::target& t) {
    std::vector<seen> got;
    pqscope::connection_options o;
    o.notice_handler = [&](const pqscope::notice& n) { got.push_back(copy_of(n)); };
    pqscope::connection c{t.conninfo, o};
    c.execute("DROP TABLE IF EXISTS pqscope_no_such_table_here");
    BOOST_REQUIRE(got.size() == 1u);
    BOOST_TEST(got[0].severity == "NOTICE");
    BOOST_TEST(got[0].sqlstate == "00000");
    BOOST_TEST(got[0].message.find("does not exist, skipping") != std::string::npos, got[0].message);
    got.clear();
    c.execute(raising);
    check_raised(got);
    // Inside a batched transaction too: delivered as the batch's answers are read.
    got.clear();
    pqscope::transaction_options batch;
    batch.batch = true;
    pqscope::atomic(c, batch, [&] {
      c.execute(raising);
      c.execute("SELECT 1");
    });
    check_raised(got);
    // After a reconnect as well.
    got.clear();
    c.reconnect();
    c.execute(raising);
    check_raised(got);
  });
}

BOOST_AUTO_TEST_CASE(without_a_handler_the_observer_hears_them) {
  for_each_target([&](const pqtest::target& t) {
    std::vector<seen> got;
    int statements = 0;
    pqscope::connection_options o;
    o.observer = [&](const pqscope::statement_event& ev) {
      if (ev.server_notice != nullptr) {
        BOOST_TEST(ev.sql.empty());
        got.push_back(copy_of(*ev.server_notice));
      } else {
        ++statements;
      }
    };
    pqscope::connection c{t.conninfo, o};
    c.execute(raising);
    check_raised(got);
    BOOST_TEST(statements == 1);
    // A handler, when there is one, takes them instead.
    std::vector<seen> handled;
    o.notice_handler = [&](const pqscope::notice& n) { handled.push_back(copy_of(n)); };
    got.clear();
    pqscope::connection c2{t.conninfo, o};
    c2.execute(raising);
    check_raised(handled);
    BOOST_TEST(got.empty());
  });
}

BOOST_AUTO_TEST_CASE(a_handler_that_throws_changes_nothing) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    int calls = 0;
    pqscope::connection_options o;
    o.notice_handler = [&](const pqscope::notice&) {
      ++calls;
      throw std::runtime_error("a handler that fails");
    };
    pqscope::connection c{t.conninfo, o};
    pqscope::atomic(c, [&] {
      c.execute(raising);
      c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
    });
    BOOST_TEST(calls == 3);
    BOOST_TEST(pqtest::committed_ids(table) == "1");
  });
}

BOOST_AUTO_TEST_CASE(asio_connections_route_them_too) {
  for_each_target([&](const pqtest::target& t) {
    std::vector<seen> got;
    pqscope::connection_options o;
    o.notice_handler = [&](const pqscope::notice& n) { got.push_back(copy_of(n)); };
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo, o);
      (void)co_await c.async_execute(raising, pqtest::use_awaitable);
      check_raised(got);
      got.clear();
      co_await pqscope::asio::async_atomic(c, [&]() -> pqtest::awaitable<void> {
        (void)co_await c.async_execute(raising, pqtest::use_awaitable);
      });
      check_raised(got);
    }());
  });
}
