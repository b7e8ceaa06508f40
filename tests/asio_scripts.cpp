#define BOOST_TEST_MODULE asio_scripts
#include <boost/test/unit_test.hpp>

// async_execute_script(): the blocking execute_script's meaning (tests/scripts.cpp)
// on the asio connection, directly and through PgBouncer: one simple-protocol
// query, all or nothing in autocommit, part of the scope inside one, everything
// queued sent first, each statement checked before anything is sent.

#include <stdexcept>
#include <string>
#include <vector>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

using pqtest::awaitable;
using pqtest::for_each_target;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;

namespace {

long count(const std::string& table) {
  return pqtest::shared_observer().query_value<long>("SELECT count(*) FROM " + table);
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_script_in_autocommit) {
  for_each_target([&](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const std::string n = pqtest::unique_name("pqscope_as");
      const auto before = c.stats().round_trips;
      const std::vector<pqscope::result> rs = co_await c.async_execute_script(
          "CREATE TABLE " + n + " (id int PRIMARY KEY, note text DEFAULT 'a;b');\n"
          "/* a comment; with a semicolon */\n"
          "INSERT INTO " + n + " (id) VALUES (1), (2);\n"
          "SELECT count(*), min(note) FROM " + n + ";",
          use_awaitable);
      BOOST_TEST(c.stats().round_trips == before + 1);
      BOOST_REQUIRE(rs.size() == 3u);
      BOOST_TEST(rs[0].command() == "CREATE TABLE");
      BOOST_TEST(rs[1].affected_rows() == 2u);
      BOOST_TEST(rs[2][0][0].as<long>() == 2);
      BOOST_TEST(rs[2][0][1].as<std::string>() == "a;b");
      // One implicit transaction: a failure keeps nothing of the script.
      bool failed = false;
      try {
        (void)co_await c.async_execute_script("INSERT INTO " + n + " (id) VALUES (3); INSERT INTO " + n +
                                                  " (id) VALUES (1); INSERT INTO " + n + " (id) VALUES (4)",
                                              use_awaitable);
      } catch (const pqscope::unique_violation&) {
        failed = true;
      }
      BOOST_TEST(failed);
      BOOST_TEST(count(n) == 2);
      BOOST_TEST((co_await c.async_execute_script("  ; -- nothing\n", use_awaitable)).empty());
      // The connection goes on in autocommit.
      BOOST_TEST((co_await c.async_query_value<long>({"SELECT count(*) FROM " + n}, use_awaitable)) == 2);
      (void)co_await c.async_execute_script("DROP TABLE " + n, use_awaitable);
    }());
  });
}

// Inside a scope the script is part of it: a rollback undoes it, a failure dooms the
// scope. In a batched attempt what is queued goes out before the script.
BOOST_AUTO_TEST_CASE(inside_a_scope_it_is_part_of_it) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const std::string& n = table.name();
      // Rolled back with the scope.
      bool rolled_back = false;
      try {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          (void)co_await c.async_execute_script(
              "INSERT INTO " + n + " (id) VALUES (1); INSERT INTO " + n + " (id) VALUES (2)", use_awaitable);
          BOOST_TEST((co_await c.async_query_value<long>({"SELECT count(*) FROM " + n}, use_awaitable)) == 2);
          throw std::runtime_error("give up");
        });
      } catch (const std::runtime_error&) {
        rolled_back = true;
      }
      BOOST_TEST(rolled_back);
      BOOST_TEST(count(n) == 0);

      // A nested scope's script, undone by its savepoint; the outer scope commits.
      co_await pa::async_atomic(c, [&]() -> awaitable<void> {
        (void)co_await c.async_execute({"INSERT INTO " + n + " (id) VALUES (10)"}, use_awaitable);
        try {
          co_await pa::async_atomic(c, [&]() -> awaitable<void> {
            (void)co_await c.async_execute_script(
                "INSERT INTO " + n + " (id) VALUES (11); INSERT INTO " + n + " (id) VALUES (10)", use_awaitable);
          });
          BOOST_ERROR("the failing script did not throw");
        } catch (const pqscope::unique_violation&) {
        }
        (void)co_await c.async_execute({"INSERT INTO " + n + " (id) VALUES (12)"}, use_awaitable);
      });
      BOOST_TEST(pqtest::committed_ids(table) == "10,12");

      // Batched: the queued INSERT goes out first, so the script sees it.
      pqscope::transaction_options batch;
      batch.batch = true;
      co_await pa::async_atomic(c, batch, [&]() -> awaitable<void> {
        (void)co_await c.async_execute({"INSERT INTO " + n + " (id) VALUES (20)"}, use_awaitable);
        const auto rs = co_await c.async_execute_script(
            "UPDATE " + n + " SET v = 'seen' WHERE id = 20; SELECT count(*) FROM " + n, use_awaitable);
        BOOST_REQUIRE(rs.size() == 2u);
        BOOST_TEST(rs[0].affected_rows() == 1u);
        BOOST_TEST(rs[1][0][0].as<long>() == 3);
      });
      BOOST_TEST(pqtest::committed_ids(table) == "10,12,20");
      BOOST_TEST(pqtest::shared_observer().query_value<std::string>("SELECT v FROM " + n + " WHERE id = 20") ==
                 "seen");
    }());
  });
}

BOOST_AUTO_TEST_CASE(each_statement_is_checked_before_anything_is_sent) {
  for_each_target([&](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const auto before = c.stats().round_trips;
      const std::vector<std::string> refused = {
          "SELECT 1; COMMIT", "BEGIN; SELECT 1", "SELECT 1; COPY t FROM STDIN", "SELECT 1; ROLLBACK TO SAVEPOINT x"};
      for (const std::string& sql : refused) {
        BOOST_TEST_CONTEXT(sql) {
          BOOST_CHECK_THROW((void)co_await c.async_execute_script(sql, use_awaitable), pqscope::usage_error);
        }
      }
      BOOST_CHECK_THROW((void)co_await c.async_execute_script({"SELECT $1", 1}, use_awaitable), pqscope::usage_error);
      if (t.pgbouncer()) {  // the pooler guard reads every statement of the script
        BOOST_CHECK_THROW((void)co_await c.async_execute_script("SELECT 1; SET search_path = x", use_awaitable),
                          pqscope::usage_error);
      }
      BOOST_TEST(c.stats().round_trips == before);
      BOOST_TEST((co_await c.async_query_value<int>({"SELECT 1"}, use_awaitable)) == 1);
    }());
  });
}
