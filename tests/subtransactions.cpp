#define BOOST_TEST_MODULE subtransactions
#include <boost/test/unit_test.hpp>

// The subtransaction budget. PostgreSQL caches 64 subtransaction ids per backend;
// released savepoints that wrote keep theirs until the transaction ends, rolled-back
// ones give them back. connection_stats counts what a transaction holds, and a scope
// that would open a savepoint past the limit is reported (and refused, if asked).

#include <functional>
#include <string>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using pqtest::for_each_target;

void insert(pqscope::connection& c, const pqtest::scratch_table& t, int id) {
  c.execute("INSERT INTO " + t.name() + " (id) VALUES ($1)", id);
}

}  // namespace

// Released savepoints keep counting until the end of the transaction; rolled-back
// ones, and everything inside them, do not.
BOOST_AUTO_TEST_CASE(held_subtransactions_are_counted) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    std::vector<unsigned long> seen;
    auto held = [&] { seen.push_back(c.stats().savepoints_in_transaction); };
    pqscope::atomic(c, [&] {
      insert(c, table, 1);
      held();                                                  // 0
      pqscope::atomic(c, [&] { insert(c, table, 2); });        // released: held
      held();                                                  // 1
      pqscope::atomic(c, [&] {
        insert(c, table, 3);
        pqscope::atomic(c, [&] { insert(c, table, 4); });      // released into its parent
        held();                                                // 3
      });
      held();                                                  // 3
      try {
        pqscope::atomic(c, [&] {
          insert(c, table, 5);
          pqscope::atomic(c, [&] { insert(c, table, 6); });
          throw std::runtime_error("undo both");
        });
      } catch (const std::runtime_error&) {
      }
      insert(c, table, 7);  // carries the ROLLBACK TO: both ids given back
      held();               // 3
    });
    held();  // 0: the transaction is over
    const std::vector<unsigned long> want = {0, 1, 3, 3, 3, 0};
    BOOST_TEST(seen == want, boost::test_tools::per_element());
    BOOST_TEST(c.stats().max_savepoints_in_transaction == 5u);  // 3 held + 2 before they were rolled back
    BOOST_TEST(pqtest::committed_ids(table) == "1,2,3,4,7");
  });
}

// Past the limit, opening a savepoint is counted and reported to the observer;
// with refuse_past_savepoint_limit it is a usage_error before anything is sent.
BOOST_AUTO_TEST_CASE(the_limit_reports_or_refuses) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (bool refuse : {false, true}) BOOST_TEST_CONTEXT((refuse ? "refuse" : "report")) {
        pqtest::empty(table);
        std::vector<std::string> warnings;
        pqscope::connection_options co;
        co.savepoint_limit = 3;
        co.refuse_past_savepoint_limit = refuse;
        co.observer = [&](const pqscope::statement_event& e) {
          if (!e.warning.empty()) warnings.push_back(std::string(e.warning) + (e.error != nullptr ? " [refused]" : ""));
        };
        pqscope::connection c{t.conninfo, co};
        int opened = 0;
        std::string outcome = "returned";
        try {
          pqscope::atomic(c, [&] {
            for (int i = 1; i <= 5; ++i) {
              const auto trips = c.stats().round_trips;
              try {
                pqscope::atomic(c, [&] { insert(c, table, i); });
                ++opened;
              } catch (const pqscope::usage_error& e) {
                BOOST_TEST(c.stats().round_trips == trips);  // refused before anything was sent
                BOOST_TEST(std::string(e.what()).find("past the limit of 3") != std::string::npos);
                throw;
              }
            }
          });
        } catch (const pqscope::usage_error&) {
          outcome = "usage_error";
        }
        BOOST_TEST(c.stats().savepoint_limit_exceeded == (refuse ? 1u : 2u));
        BOOST_TEST(warnings.size() == (refuse ? 1u : 2u));
        if (!warnings.empty()) BOOST_TEST(warnings[0].find("would make 4 subtransactions") != std::string::npos);
        BOOST_TEST(outcome == (refuse ? "usage_error" : "returned"));
        BOOST_TEST(opened == (refuse ? 3 : 5));
        BOOST_TEST(pqtest::committed_ids(table) == (refuse ? "" : "1,2,3,4,5"));
        BOOST_TEST(c.depth() == 0u);
      }
  });
}

// Savepoints rolled back give their ids back: a long loop of failing units never
// reaches the limit. The per-transaction option overrides the connection's.
BOOST_AUTO_TEST_CASE(rolled_back_savepoints_do_not_add_up) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection_options co;
    co.refuse_past_savepoint_limit = true;
    pqscope::connection c{t.conninfo, co};
    pqscope::transaction_options o;
    o.savepoint_limit = 2;
    pqscope::atomic(c, o, [&] {
      for (int i = 0; i < 100; ++i) {
        try {
          pqscope::atomic(c, [&] {
            insert(c, table, i);
            throw std::runtime_error("undo");
          });
        } catch (const std::runtime_error&) {
        }
      }
      insert(c, table, 1000);
    });
    BOOST_TEST(c.stats().savepoint_limit_exceeded == 0u);
    BOOST_TEST(c.stats().max_savepoints_in_transaction == 1u);
    BOOST_TEST(pqtest::committed_ids(table) == "1000");
  });
}

// Batched, nested scopes that commit with their statements still queued need no
// savepoint at all: a hundred of them hold no subtransaction.
BOOST_AUTO_TEST_CASE(batched_scopes_hold_none) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection_options co;
    co.refuse_past_savepoint_limit = true;
    co.savepoint_limit = 8;
    pqscope::connection c{t.conninfo, co};
    pqscope::transaction_options o;
    o.batch = true;
    pqscope::atomic(c, o, [&] {
      for (int i = 0; i < 100; ++i) pqscope::atomic(c, [&] { insert(c, table, i); });
    });
    BOOST_TEST(c.stats().savepoints == 0u);
    BOOST_TEST(c.stats().max_savepoints_in_transaction == 0u);
    BOOST_TEST(c.stats().savepoint_limit_exceeded == 0u);
    BOOST_TEST(c.stats().round_trips == 1u);
    BOOST_TEST(pqtest::committed_count(table) == 100);
  });
}
