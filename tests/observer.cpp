// The statement observer: told about every statement the application runs, with
// its SQL, parameter count, scope depth, duration, rows and error; never able to
// change what the transaction does.

#define BOOST_TEST_MODULE observer
#include <boost/test/unit_test.hpp>

#include <string>
#include <vector>

#include "support/servers.hpp"

namespace {

struct seen {
  std::string sql;
  std::size_t params, depth, rows;
  long long micros;
  bool error;
  std::string error_type;
};

pqscope::connection_options recording(std::vector<seen>& log) {
  pqscope::connection_options o;
  o.observer = [&log](const pqscope::statement_event& e) {
    std::string type;
    if (e.error != nullptr) {
      if (dynamic_cast<const pqscope::unique_violation*>(e.error) != nullptr) type = "unique_violation";
      else if (dynamic_cast<const pqscope::transaction_aborted*>(e.error) != nullptr) type = "transaction_aborted";
      else if (dynamic_cast<const pqscope::usage_error*>(e.error) != nullptr) type = "usage_error";
      else type = "other";
    }
    log.push_back({std::string(e.sql), e.params, e.depth, e.rows, e.duration.count(), e.error != nullptr, type});
  };
  return o;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_statement_is_reported_with_its_depth_rows_and_error) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      std::vector<seen> log;
      pqscope::database db{t.conninfo, recording(log)};
      auto c = db.connect();
      const std::string ins = "INSERT INTO " + table.name() + " VALUES ($1, $2)";
      c.execute(ins, 1, "a");
      pqscope::atomic(c, [&] {
        c.execute(ins, 2, "b");
        pqscope::atomic(c, [&] { (void)c.execute("SELECT * FROM " + table.name()); });
        try {
          pqscope::atomic(c, [&] { c.execute(ins, 1, "dup"); });
        } catch (const pqscope::unique_violation&) {
        }
      });
      BOOST_CHECK_THROW(c.execute("COMMIT"), pqscope::usage_error);  // refused before it is sent

      BOOST_TEST_REQUIRE(log.size() == 5u);
      BOOST_TEST(log[0].sql == ins);
      BOOST_TEST(log[0].params == 2u);
      BOOST_TEST(log[0].depth == 0u);
      BOOST_TEST(log[0].rows == 1u);  // affected
      BOOST_TEST(log[0].micros > 0);  // a round trip took place
      BOOST_TEST(!log[0].error);
      BOOST_TEST(log[1].depth == 1u);
      BOOST_TEST(log[2].depth == 2u);
      BOOST_TEST(log[2].params == 0u);
      BOOST_TEST(log[2].rows == 2u);  // returned
      BOOST_TEST(log[3].depth == 2u);
      BOOST_TEST(log[3].error);
      BOOST_TEST(log[3].error_type == "unique_violation");
      BOOST_TEST(log[4].error_type == "usage_error");
      BOOST_TEST(table.ids() == "1,2");
    }
  }
}

BOOST_AUTO_TEST_CASE(an_observer_that_throws_changes_nothing) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table table;
      int calls = 0;
      pqscope::connection_options o;
      o.observer = [&](const pqscope::statement_event&) {
        ++calls;
        throw std::runtime_error("logging is down");
      };
      pqscope::connection c{t.conninfo, o};
      pqscope::atomic(c, [&] {
        c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
        c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')");
      });
      BOOST_TEST(calls == 2);
      BOOST_TEST(table.ids() == "1,2");
      BOOST_TEST(c.depth() == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(options_survive_moves_and_reconnect) {
  const auto t = pqtest::targets().front();
  std::vector<seen> log;
  pqscope::connection a{t.conninfo, recording(log)};
  pqscope::connection b = std::move(a);
  b.reconnect();
  (void)b.query_value<int>("SELECT 1");
  BOOST_TEST(log.size() == 1u);
  BOOST_TEST((b.options().pooling == pqscope::pooling::transaction));  // safe by default
}

// A statement the session-state guard refuses never reaches the server, but the
// observer still hears of it.
BOOST_AUTO_TEST_CASE(guard_refusals_are_reported) {
  const auto t = pqtest::targets().back();
  std::vector<seen> log;
  auto o = recording(log);
  o.pooling = pqscope::pooling::transaction;
  pqscope::connection c{t.conninfo, o};
  const auto before = c.stats().round_trips;
  BOOST_CHECK_THROW(c.execute("SET work_mem = '64MB'"), pqscope::usage_error);
  BOOST_TEST(c.stats().round_trips == before);
  BOOST_TEST_REQUIRE(log.size() == 1u);
  BOOST_TEST(log[0].error_type == "usage_error");
  BOOST_TEST(log[0].sql == "SET work_mem = '64MB'");
}
