#define BOOST_TEST_MODULE errors
#include <boost/test/unit_test.hpp>

// Errors that point at the problem: what() carries the statement line and a caret
// at the server's position, then DETAIL and HINT; the accessors expose every field
// the server sends. The placeholder count is checked before anything is sent.

#include <optional>
#include <string>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using pqtest::for_each_target;

template <class E = pqscope::sql_error, class F>
std::optional<E> caught(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

// The line of what() that holds the caret, and the one above it.
std::pair<std::string, std::string> caret_lines(const std::string& what) {
  std::size_t caret = what.find('^');
  if (caret == std::string::npos) return {};
  const std::size_t line_start = what.rfind('\n', caret) + 1;
  const std::size_t above_end = line_start - 1;
  const std::size_t above_start = what.rfind('\n', above_end - 1) + 1;
  return {what.substr(above_start, above_end - above_start), what.substr(line_start, caret - line_start + 1)};
}

}  // namespace

BOOST_AUTO_TEST_CASE(syntax_error_shows_the_statement_and_a_caret) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    const std::string sql = "SELECT * FORM pg_class";
    auto e = caught([&] { c.execute(sql); });
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(e->sqlstate() == "42601");
    BOOST_TEST(e->message() == "syntax error at or near \"FORM\"");
    BOOST_TEST(e->statement() == sql);
    BOOST_TEST(e->position() == sql.find("FORM") + 1);
    const auto [line, caret] = caret_lines(e->what());
    BOOST_TEST(line == "LINE 1: " + sql);
    BOOST_TEST(caret == std::string(8 + sql.find("FORM"), ' ') + "^");
    BOOST_TEST(std::string(e->what()).rfind(e->message(), 0) == 0u);  // the message comes first
  });
}

// The caret counts characters, not bytes, and finds the right line.
BOOST_AUTO_TEST_CASE(caret_on_a_later_line_after_multibyte_text) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    const std::string sql = "SELECT 'ünïcödé' AS a,\n       no_such_column AS b";
    auto e = caught([&] { c.execute(sql); });
    BOOST_TEST_REQUIRE(e.has_value());
    BOOST_TEST(e->sqlstate() == "42703");
    const auto [line, caret] = caret_lines(e->what());
    BOOST_TEST(line == "LINE 2:        no_such_column AS b");
    BOOST_TEST(caret == std::string(8 + 7, ' ') + "^");
  });
}

BOOST_AUTO_TEST_CASE(constraint_table_column_schema_detail_hint) {
  pqtest::scratch_table table("id int PRIMARY KEY, v text NOT NULL");
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    c.execute("INSERT INTO " + table.name() + " VALUES (1, 'a')");
    auto dup = caught<pqscope::unique_violation>([&] { c.execute("INSERT INTO " + table.name() + " VALUES (1, 'b')"); });
    BOOST_TEST_REQUIRE(dup.has_value());
    BOOST_TEST(dup->constraint_name() == table.name() + "_pkey");
    BOOST_TEST(dup->table_name() == table.name());
    BOOST_TEST(dup->schema_name() == "public");
    BOOST_TEST(dup->detail() == "Key (id)=(1) already exists.");
    BOOST_TEST(std::string(dup->what()).find("\nDETAIL: Key (id)=(1) already exists.") != std::string::npos);

    auto null = caught<pqscope::not_null_violation>(
        [&] { c.execute("INSERT INTO " + table.name() + " VALUES ($1, $2)", 2, std::optional<std::string>{}); });
    BOOST_TEST_REQUIRE(null.has_value());
    BOOST_TEST(null->column_name() == "v");
    BOOST_TEST(null->table_name() == table.name());

    auto hinted = caught([&] { c.execute("SELECT lower(42)"); });
    BOOST_TEST_REQUIRE(hinted.has_value());
    BOOST_TEST(!hinted->hint().empty());
    BOOST_TEST(std::string(hinted->what()).find("\nHINT: " + hinted->hint()) != std::string::npos);
    BOOST_TEST(hinted->position() > 0u);

    // Inside a scope, through the pipeline, the fields are the same.
    pqscope::transaction tx{c};
    auto in_scope = caught<pqscope::unique_violation>([&] { c.execute("INSERT INTO " + table.name() + " VALUES (1, 'b')"); });
    BOOST_TEST_REQUIRE(in_scope.has_value());
    BOOST_TEST(in_scope->constraint_name() == table.name() + "_pkey");
    tx.rollback();
  });
}

// $n placeholders against the parameters given, both ways, before anything is sent;
// $ inside literals, quoted identifiers, dollar quotes, comments and names is no placeholder.
BOOST_AUTO_TEST_CASE(placeholder_count_is_checked_before_sending) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    const auto trips = c.stats().round_trips;
    auto too_few = caught<pqscope::usage_error>([&] { c.execute("SELECT $1::int + $2::int", 1); });
    BOOST_TEST_REQUIRE(too_few.has_value());
    BOOST_TEST(std::string(too_few->what()).find("up to $2 but 1 parameter(s)") != std::string::npos);
    auto too_many = caught<pqscope::usage_error>([&] { c.execute("SELECT $1::int", 1, 2); });
    BOOST_TEST_REQUIRE(too_many.has_value());
    BOOST_TEST(std::string(too_many->what()).find("up to $1 but 2 parameter(s)") != std::string::npos);
    auto none = caught<pqscope::usage_error>([&] { c.execute("SELECT 1", 5); });
    BOOST_TEST_REQUIRE(none.has_value());
    BOOST_TEST(std::string(none->what()).find("no $n placeholder, but 1 parameter(s)") != std::string::npos);
    BOOST_TEST(c.stats().round_trips == trips);  // nothing was sent

    // Tricky text that really runs.
    auto row = c.execute("SELECT '$2' AS lit, E'\\'$3' AS esc, 1 AS \"$4\", $$ $5 $$ AS dq, $tag$ $6 $tag$ AS tq, "
                         "$1::int AS p /* $7 */ -- $8\n",
                         41);
    BOOST_TEST(row[0]["lit"].as<std::string>() == "$2");
    BOOST_TEST(row[0]["esc"].as<std::string>() == "'$3");
    BOOST_TEST(row[0]["$4"].as<int>() == 1);
    BOOST_TEST(row[0]["dq"].as<std::string>() == " $5 ");
    BOOST_TEST(row[0]["tq"].as<std::string>() == " $6 ");
    BOOST_TEST(row[0]["p"].as<int>() == 41);
    BOOST_CHECK_NO_THROW(c.execute("DO $$ BEGIN PERFORM 1 WHERE length('$1') = 2; END $$"));
  });
}
