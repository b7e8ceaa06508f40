#define BOOST_TEST_MODULE runtime_params
#include <boost/test/unit_test.hpp>

// pqscope::params: parameter lists built at run time, on every target, blocking and
// asio: a VALUES list of 10,000 rows, an IN list, 65,535 parameters (PostgreSQL's
// limit) and one more refused before anything is sent, the placeholder count checked
// against the whole list, NULLs and typed values, and a batched statement that
// outlives its list.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

using pqtest::for_each_target;

BOOST_AUTO_TEST_CASE(values_list_numbers_its_placeholders) {
  BOOST_TEST(pqscope::values_list(2, 3) == "($1, $2, $3), ($4, $5, $6)");
  BOOST_TEST(pqscope::values_list(2, 1, 4) == "($4), ($5)");
  BOOST_TEST(pqscope::values_list(0, 2) == "");
  BOOST_CHECK_THROW((void)pqscope::values_list(1, 0), pqscope::usage_error);
}

BOOST_AUTO_TEST_CASE(a_values_list_of_ten_thousand_rows) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    const int rows = 10000;
    pqscope::params p;
    p.reserve(2 * rows);
    for (int i = 0; i < rows; ++i) {
      if (i % 7 == 0)
        p.add(i).add(std::nullopt);
      else
        p.add(i).add("row " + std::to_string(i));
    }
    BOOST_TEST(p.size() == static_cast<std::size_t>(2 * rows));
    const auto before = c.stats().round_trips;
    const pqscope::result r =
        c.execute("INSERT INTO " + table.name() + " (id, v) VALUES " + pqscope::values_list(rows, 2), p);
    BOOST_TEST(r.affected_rows() == static_cast<std::uint64_t>(rows));
    BOOST_TEST(c.stats().round_trips == before + 1);
    BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE v IS NULL") == (rows + 6) / 7);
    BOOST_TEST(c.query_value<std::string>("SELECT v FROM " + table.name() + " WHERE id = 9999") == "row 9999");
    // An IN list, between two ordinary parameters; the count is the whole list's.
    pqscope::params ids;
    for (int id : {3, 5, 7, 9998}) ids.add(id);
    BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name() +
                                       " WHERE id >= $1 AND id IN ($2, $3, $4, $5) AND id < $6",
                                   0, ids, 9999) == 4);
  });
}

BOOST_AUTO_TEST_CASE(sixty_five_thousand_five_hundred_thirty_five_parameters) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    pqscope::params p;
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < pqscope::detail::max_params; ++i) {
      p.add(static_cast<std::int64_t>(i));
      sum += static_cast<std::int64_t>(i);
    }
    const std::string sql = "SELECT sum(x)::bigint FROM (VALUES " + pqscope::values_list(p.size(), 1) + ") v(x)";
    BOOST_TEST(c.query_value<std::int64_t>(sql, p) == sum);
    // One more: refused by the list, and by a statement that adds one of its own.
    BOOST_CHECK_THROW(p.add(1), pqscope::usage_error);
    const auto before = c.stats().round_trips;
    BOOST_CHECK_THROW(
        (void)c.execute("SELECT sum(x)::bigint FROM (VALUES " + pqscope::values_list(p.size() + 1, 1) + ") v(x)", p, 1),
        pqscope::usage_error);
    BOOST_TEST(c.stats().round_trips == before);
  });
}

BOOST_AUTO_TEST_CASE(the_placeholder_count_is_checked_against_the_whole_list) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    pqscope::params p;
    p.add(1).add(2);
    const auto before = c.stats().round_trips;
    BOOST_CHECK_THROW((void)c.execute("SELECT $1::int + $2::int + $3::int", p), pqscope::usage_error);
    BOOST_CHECK_THROW((void)c.execute("SELECT $1::int", p), pqscope::usage_error);
    BOOST_TEST(c.stats().round_trips == before);
    BOOST_TEST(c.query_value<int>("SELECT $1::int + $2::int + $3::int", p, 4) == 7);
    pqscope::params none;
    BOOST_TEST(c.query_value<int>("SELECT 5", none) == 5);
    // A value that cannot be sent is refused by add(), and leaves the list as it was.
    BOOST_CHECK_THROW(p.add(std::string("a\0b", 3)), pqscope::usage_error);
    BOOST_TEST(p.size() == 2u);
  });
}

// Typed values keep their types (a time point goes as timestamptz, a vector as an
// array), and a batched statement owns copies: the list may go before the send.
BOOST_AUTO_TEST_CASE(typed_values_and_a_batched_statement_that_outlives_its_list) {
  pqtest::scratch_table table{"id int PRIMARY KEY, ts timestamptz, a int[], d float8"};
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    const auto when = std::chrono::time_point_cast<std::chrono::microseconds>(std::chrono::system_clock::now());
    pqscope::transaction_options o;
    o.batch = true;
    pqscope::atomic(c, o, [&] {
      for (int row = 0; row < 3; ++row) {
        pqscope::params p;
        p.add(row).add(when).add(std::vector<int>{row, row + 1}).add(std::optional<double>{});
        (void)c.execute("INSERT INTO " + table.name() + " (id, ts, a, d) VALUES ($1, $2, $3, $4)", p);
      }  // queued; the list is gone
    });
    BOOST_TEST(pqtest::committed_ids(table) == "0,1,2");
    const auto r = c.execute("SELECT ts, a, d FROM " + table.name() + " WHERE id = 2");
    BOOST_TEST((r[0][0].as<std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds>>() == when));
    BOOST_TEST((r[0][1].as<std::vector<int>>() == std::vector<int>{2, 3}));
    BOOST_TEST(r[0][2].is_null());
  });
}

BOOST_AUTO_TEST_CASE(asio_takes_them_too) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      pqscope::params p;
      for (int i = 1; i <= 500; ++i) p.add(i).add("v" + std::to_string(i));
      const pqscope::asio::query q{"INSERT INTO " + table.name() + " (id, v) VALUES " + pqscope::values_list(500, 2), p};
      BOOST_TEST(q.param_count() == 1000u);
      p.clear();  // the query holds its own copy
      const pqscope::result r = co_await c.async_execute(q, pqtest::use_awaitable);
      BOOST_TEST(r.affected_rows() == 500u);
      // An empty list adds nothing to the count.
      BOOST_TEST((co_await c.async_query_value<int>({"SELECT $1::int", p, 6}, pqtest::use_awaitable)) == 6);
      BOOST_CHECK_THROW((void)co_await c.async_execute({"SELECT $1::int", p, 1, 2}, pqtest::use_awaitable),
                        pqscope::usage_error);
    }());
    BOOST_TEST(pqtest::committed_count(table) == 500);
  });
}
