#define BOOST_TEST_MODULE scripts
#include <boost/test/unit_test.hpp>

// execute_script(): several statements in one simple-protocol query, in
// autocommit (one implicit transaction: all or nothing) or inside a scope (part
// of it; a failure dooms the scope). Each statement is checked as execute()
// checks one, before anything is sent.

#include <stdexcept>
#include <string>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {
using pqtest::for_each_target;
}  // namespace

BOOST_AUTO_TEST_CASE(a_schema_script_in_autocommit) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    const std::string n = pqtest::unique_name("pqscope_s");
    const std::vector<pqscope::result> rs = c.execute_script(
        "-- set-up; semicolons inside literals, comments and bodies do not split\n"
        "CREATE TABLE " + n + " (id int PRIMARY KEY, note text DEFAULT 'a;b');\n"
        "/* a comment; with a semicolon */\n"
        "CREATE FUNCTION " + n + "_f() RETURNS int LANGUAGE plpgsql AS $body$ BEGIN RETURN 41; END; $body$;\n"
        "CREATE FUNCTION " + n + "_g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT 1; SELECT "
        "CASE WHEN true THEN 2 END; END;\n"
        "INSERT INTO " + n + " (id) VALUES (1), (2);\n"
        "SELECT " + n + "_f() + 1, " + n + "_g();\n");
    BOOST_REQUIRE(rs.size() == 5u);
    BOOST_TEST(rs[0].command() == "CREATE TABLE");
    BOOST_TEST(rs[3].affected_rows() == 2u);
    BOOST_TEST(rs[4][0][0].as<int>() == 42);
    BOOST_TEST(rs[4][0][1].as<int>() == 2);
    BOOST_TEST(pqtest::shared_observer().query_value<std::string>("SELECT note FROM " + n + " WHERE id = 1") == "a;b");
    BOOST_TEST(c.stats().round_trips == 1u);
    // One implicit transaction: a failure keeps nothing of the script.
    try {
      (void)c.execute_script("INSERT INTO " + n + " (id) VALUES (3); INSERT INTO " + n +
                             " (id) VALUES (1); INSERT INTO " + n + " (id) VALUES (4)");
      BOOST_ERROR("a failing script did not throw");
    } catch (const pqscope::unique_violation& e) {
      BOOST_TEST(e.sqlstate() == "23505");
    }
    BOOST_TEST(pqtest::shared_observer().query_value<long>("SELECT count(*) FROM " + n) == 2);
    BOOST_TEST(c.execute_script("  ; -- nothing\n").empty());
    c.execute_script("DROP FUNCTION " + n + "_f(); DROP FUNCTION " + n + "_g(); DROP TABLE " + n);
  });
}

BOOST_AUTO_TEST_CASE(inside_a_scope_it_is_part_of_it) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (bool batch : {false, true}) BOOST_TEST_CONTEXT((batch ? "batched" : "unbatched")) {
        pqtest::empty(table);
        pqscope::connection c{t.conninfo};
        pqscope::transaction_options o;
        o.batch = batch;
        std::string caught;
        pqscope::atomic(c, o, [&] {
          c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
          pqscope::atomic(c, [&] {
            c.execute_script("INSERT INTO " + table.name() + " (id) VALUES (2); INSERT INTO " + table.name() +
                             " (id) VALUES (3)");
          });
          try {
            pqscope::atomic(c, [&] {
              c.execute_script("INSERT INTO " + table.name() + " (id) VALUES (4); SELECT 1/0");
            });
          } catch (const pqscope::sql_error& e) {
            caught = e.sqlstate();
          }
          BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name()) == 3);
        });
        BOOST_TEST(caught == "22012");
        BOOST_TEST(pqtest::committed_ids(table) == "1,2,3");
        BOOST_TEST(c.stats().replays == 0u);
        // The outermost scope rolling back takes the script with it.
        try {
          pqscope::atomic(c, o, [&] {
            c.execute_script("INSERT INTO " + table.name() + " (id) VALUES (9); INSERT INTO " + table.name() +
                             " (id) VALUES (10)");
            throw std::runtime_error("roll back");
          });
        } catch (const std::runtime_error&) {
        }
        BOOST_TEST(pqtest::committed_ids(table) == "1,2,3");
      }
  });
}

// Refused per statement, before anything is sent: transaction control, COPY, and
// (behind a transaction pooler) session state.
BOOST_AUTO_TEST_CASE(each_statement_is_checked) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    const auto before = c.stats().round_trips;
    for (const char* bad : {"SELECT 1; COMMIT", "BEGIN; SELECT 1", "SELECT 1;\n  end", "SAVEPOINT x; SELECT 1",
                            "SELECT 1; SET statement_timeout = 5", "SELECT 1; COPY pg_class TO STDOUT",
                            "SELECT 1; LISTEN x"}) {
      BOOST_CHECK_THROW(c.execute_script(bad), pqscope::usage_error);
    }
    BOOST_TEST(c.stats().round_trips == before);
    // Allowed when asked for, with the guard's own escape hatch.
    pqscope::atomic(c, [&] { c.execute_script(pqscope::allow_session_state("SELECT 1; SET LOCAL work_mem = '8MB'")); });
    // Literals and bodies that look like control are not control.
    const auto rs = c.execute_script("SELECT 'COMMIT; BEGIN'; SELECT $$ROLLBACK$$");
    BOOST_TEST(rs.size() == 2u);
  });
}
