#define BOOST_TEST_MODULE copy
#include <boost/test/unit_test.hpp>

// COPY FROM STDIN and TO STDOUT in autocommit and inside scopes: what the scopes
// queued goes out first, a COPY that fails dooms its scope like any statement, a
// writer that never finishes keeps nothing, and every value survives the text
// format exactly.

#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using pqtest::for_each_target;

// Text that needs every escape COPY's format has, and some that must stay as it is.
const std::vector<std::optional<std::string>> tricky = {
    std::string("plain"),      std::string("tab\there"),  std::string("new\nline"), std::string("cr\rhere"),
    std::string("back\\slash"), std::string("\\N"),        std::string(""),         std::nullopt,
    std::string("NULL"),       std::string("ünï €𝄞"),    std::string("\\."),      std::string("a\\tb"),
    std::string(" lead and trail "), std::string("\x01\x7f")};

std::string copy_of(const pqtest::scratch_table& t) { return "COPY " + t.name() + " (id, v) FROM STDIN"; }

}  // namespace

BOOST_AUTO_TEST_CASE(rows_in_and_out_in_autocommit) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    pqscope::copy_writer w = c.copy_in(copy_of(table));
    for (std::size_t i = 0; i < tricky.size(); ++i) w.write_row(static_cast<int>(i), tricky[i]);
    BOOST_TEST(w.rows_written() == tricky.size());
    BOOST_TEST(w.finish() == tricky.size());
    BOOST_TEST(c.depth() == 0u);
    // Stored exactly: compared by the server with the same values sent as parameters.
    for (std::size_t i = 0; i < tricky.size(); ++i)
      BOOST_TEST(c.query_value<bool>("SELECT v IS NOT DISTINCT FROM $2 FROM " + table.name() + " WHERE id = $1",
                                     static_cast<int>(i), tricky[i]),
                 "row " << i);
    // And read back exactly, as typed rows and as text fields.
    pqscope::copy_reader r = c.copy_out("COPY (SELECT id, v FROM " + table.name() + " ORDER BY id) TO STDOUT");
    std::size_t n = 0;
    while (auto row = r.next<int, std::optional<std::string>>()) {
      BOOST_TEST(std::get<0>(*row) == static_cast<int>(n));
      BOOST_TEST((std::get<1>(*row) == tricky[n]), "row " << n);
      ++n;
    }
    BOOST_TEST(n == tricky.size());
    BOOST_TEST(r.done());
    BOOST_TEST(r.rows_read() == tricky.size());
    std::vector<std::optional<std::string>> fields;
    pqscope::copy_reader r2 = c.copy_out("COPY (SELECT v, id FROM " + table.name() + " WHERE id = 1) TO STDOUT");
    BOOST_TEST(r2.read_row(fields));
    BOOST_TEST(fields.size() == 2u);
    BOOST_TEST((fields[0] == tricky[1]));
    BOOST_TEST((fields[1] == std::optional<std::string>("1")));
    BOOST_TEST(!r2.read_row(fields));
    BOOST_TEST(c.stats().statements >= 3u);
  });
}

// Inside scopes: the BEGIN and SAVEPOINT still queued go out before the COPY, its
// rows belong to the transaction, and a savepoint around it undoes them.
BOOST_AUTO_TEST_CASE(inside_scopes_at_any_depth) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (bool batch : {false, true}) BOOST_TEST_CONTEXT((batch ? "batched" : "unbatched")) {
        pqtest::empty(table);
        pqscope::connection c{t.conninfo};
        pqscope::transaction_options o;
        o.batch = batch;
        pqscope::atomic(c, o, [&] {
          c.execute("INSERT INTO " + table.name() + " (id, v) VALUES (100, 'before')");  // queued when batched
          pqscope::atomic(c, [&] {
            pqscope::atomic(c, [&] {
              auto w = c.copy_in(copy_of(table));
              w.write_row(1, "a");
              w.write_row(2, nullptr);
              BOOST_TEST(w.finish() == 2u);
              BOOST_TEST(c.depth() == 3u);
            });
          });
          try {
            pqscope::atomic(c, [&] {
              auto w = c.copy_in(copy_of(table));
              w.write_row(3, "undone");
              w.finish();
              throw std::runtime_error("undo the COPY");
            });
          } catch (const std::runtime_error&) {
          }
          // The transaction's own rows, uncommitted, through COPY TO STDOUT.
          auto r = c.copy_out("COPY (SELECT id FROM " + table.name() + " ORDER BY id) TO STDOUT");
          std::string ids;
          while (auto row = r.next<int>()) ids += std::to_string(std::get<0>(*row)) + ",";
          BOOST_TEST(ids == "1,2,100,");
          BOOST_TEST(pqtest::committed_count(table) == 0);
        });
        BOOST_TEST(pqtest::committed_ids(table) == "1,2,100");
        BOOST_TEST(c.stats().replays == 0u);
        // The outermost scope rolling back takes the COPY with it.
        try {
          pqscope::atomic(c, o, [&] {
            auto w = c.copy_in(copy_of(table));
            w.write_row(7, "gone");
            w.finish();
            throw std::runtime_error("roll back");
          });
        } catch (const std::runtime_error&) {
        }
        BOOST_TEST(pqtest::committed_ids(table) == "1,2,100");
      }
  });
}

// A value write_row() cannot send (a NUL byte, a time before PostgreSQL's earliest)
// throws before its row is written: no part of that row reaches the server, and the
// COPY goes on with the next row.
BOOST_AUTO_TEST_CASE(a_value_that_cannot_be_sent_leaves_no_part_of_its_row) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    auto w = c.copy_in(copy_of(table));
    w.write_row(1, "first");
    BOOST_CHECK_THROW(w.write_row(2, std::string("a\0b", 3)), pqscope::usage_error);
    // Microseconds: nanoseconds since 1970 do not reach back that far.
    const std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds> too_early{
        std::chrono::hours(-24LL * 366 * 7000)};
    BOOST_CHECK_THROW(w.write_row(3, too_early), pqscope::conversion_error);
    w.write_row(4, std::optional<std::string>("last\tone"));
    BOOST_TEST(w.finish() == 2u);
    BOOST_TEST(pqtest::committed_ids(table) == "1,4");
    BOOST_TEST(c.query_value<std::string>("SELECT v FROM " + table.name() + " WHERE id = 4") == "last\tone");
  });
}

// A COPY the server refuses (a duplicate key, text that is not an int) dooms the
// scope it ran in, as any failed statement does: the savepoint around it undoes
// it and the transaction goes on. In autocommit nothing of it is kept.
BOOST_AUTO_TEST_CASE(a_failed_copy_dooms_its_scope) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (bool batch : {false, true}) BOOST_TEST_CONTEXT((batch ? "batched" : "unbatched")) {
        pqtest::empty(table);
        pqscope::connection c{t.conninfo};
        {
          auto w = c.copy_in(copy_of(table));
          w.write_row(1, "x");
          w.write_row(1, "duplicate");
          BOOST_CHECK_THROW(w.finish(), pqscope::unique_violation);
          BOOST_CHECK_THROW(w.write_row(2, "y"), pqscope::usage_error);  // it has ended
        }
        BOOST_TEST(pqtest::committed_count(table) == 0);
        pqscope::transaction_options o;
        o.batch = batch;
        std::string caught;
        pqscope::atomic(c, o, [&] {
          c.execute("INSERT INTO " + table.name() + " (id) VALUES (10)");
          try {
            pqscope::atomic(c, [&] {
              c.execute("INSERT INTO " + table.name() + " (id) VALUES (11)");
              auto w = c.copy_in("COPY " + table.name() + " (id) FROM STDIN");
              w.write_row("not a number");
              w.finish();
            });
          } catch (const pqscope::sql_error& e) {
            caught = e.sqlstate();
          }
          c.execute("INSERT INTO " + table.name() + " (id) VALUES (12)");
        });
        BOOST_TEST(caught == "22P02");
        BOOST_TEST(pqtest::committed_ids(table) == "10,12");
        BOOST_TEST(c.stats().replays == 0u);  // the COPY's error surfaced where it ran
        // A doomed scope refuses a COPY like any statement.
        BOOST_CHECK_THROW(pqscope::atomic(c, [&] {
                            try {
                              c.execute("SELECT 1/0");
                            } catch (const pqscope::sql_error&) {
                            }
                            (void)c.copy_in(copy_of(table));
                          }),
                          pqscope::transaction_aborted);
      }
  });
}

// A writer destroyed before finish(), by an exception or by leaving it, aborts
// the COPY: nothing of it is kept, the connection is usable, no transaction is
// left open.
BOOST_AUTO_TEST_CASE(an_unfinished_writer_keeps_nothing) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    const std::string app = pqtest::unique_name("copy_abort");
    pqscope::connection c{pqtest::with_app_name(t, app)};
    {
      auto w = c.copy_in(copy_of(table));
      for (int i = 0; i < 1000; ++i) w.write_row(i, "left behind");
    }
    BOOST_TEST(pqtest::committed_count(table) == 0);
    BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    BOOST_CHECK_THROW(pqscope::atomic(c,
                                      [&] {
                                        c.execute("INSERT INTO " + table.name() + " (id) VALUES (-1)");
                                        auto w = c.copy_in(copy_of(table));
                                        for (int i = 0; i < 100000; ++i) {
                                          if (i == 50000) throw std::runtime_error("the source failed");
                                          w.write_row(i, "row");
                                        }
                                        w.finish();
                                      }),
                      std::runtime_error);
    BOOST_TEST(pqtest::committed_count(table) == 0);
    BOOST_TEST(pqtest::idle_in_transaction(app) == 0);
    // A writer that outlives its scope: the scope's end aborts the COPY first.
    std::optional<pqscope::copy_writer> outlives;
    {
      pqscope::transaction tx{c};
      outlives.emplace(c.copy_in(copy_of(table)));
      outlives->write_row(1, "x");
    }  // rolled back
    BOOST_CHECK_THROW(outlives->write_row(2, "y"), pqscope::usage_error);
    outlives.reset();
    BOOST_TEST(c.depth() == 0u);
    BOOST_TEST(pqtest::committed_count(table) == 0);
    BOOST_TEST(pqtest::idle_in_transaction(app) == 0);
    c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
    BOOST_TEST(pqtest::committed_ids(table) == "1");
  });
}

// While a COPY streams, the connection refuses everything else; the COPY goes on.
BOOST_AUTO_TEST_CASE(nothing_else_runs_during_a_copy) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    pqscope::atomic(c, [&] {
      auto w = c.copy_in(copy_of(table));
      w.write_row(1, "a");
      try {
        c.execute("SELECT 1");
        BOOST_ERROR("execute() during a COPY was accepted");
      } catch (const pqscope::usage_error& e) {
        BOOST_TEST(std::string(e.what()).find("a COPY is in progress") != std::string::npos, e.what());
      }
      BOOST_CHECK_THROW(pqscope::atomic(c, [] {}), pqscope::usage_error);
      BOOST_CHECK_THROW((void)c.copy_out("COPY " + table.name() + " TO STDOUT"), pqscope::usage_error);
      w.write_row(2, "b");
      BOOST_TEST(w.finish() == 2u);
      // A reader left half-read is read to its end when it goes; the scope goes on.
      {
        auto r = c.copy_out("COPY " + table.name() + " TO STDOUT");
        BOOST_TEST((r.next<int, std::string>().has_value()));
      }
      BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name()) == 2);
    });
    BOOST_TEST(pqtest::committed_ids(table) == "1,2");
  });
}

BOOST_AUTO_TEST_CASE(misuse_is_refused_before_anything_is_sent) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    const auto before = c.stats().round_trips;
    BOOST_CHECK_THROW((void)c.copy_in("COPY " + table.name() + " TO STDOUT"), pqscope::usage_error);
    BOOST_CHECK_THROW((void)c.copy_out("COPY " + table.name() + " FROM STDIN"), pqscope::usage_error);
    BOOST_CHECK_THROW((void)c.copy_in("SELECT 1"), pqscope::usage_error);
    BOOST_CHECK_THROW((void)c.copy_in("COPY " + table.name() + " FROM STDIN WHERE id = $1"), pqscope::usage_error);
    BOOST_CHECK_THROW(c.execute("COPY " + table.name() + " FROM STDIN"), pqscope::usage_error);
    BOOST_TEST(c.stats().round_trips == before);
    // A COPY the server refuses at once (no such table) throws from copy_in().
    try {
      (void)c.copy_in("COPY no_such_table_here FROM STDIN");
      BOOST_ERROR("a COPY into a missing table started");
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.sqlstate() == "42P01");
    }
    BOOST_TEST(c.query_value<int>("SELECT 2") == 2);
  });
}

// Typed values through COPY, random and seeded: what goes in comes out, and the
// server agrees it is what a parameter would have stored.
BOOST_AUTO_TEST_CASE(typed_values_round_trip) {
  pqtest::scratch_table table{"id int PRIMARY KEY, t text, b bytea, ts timestamptz, a int[], d float8"};
  const unsigned seed = 20261130;
  std::mt19937 rng(seed);
  auto random_text = [&] {
    static const std::vector<std::string> pieces = {"a", "Z", "\t", "\n", "\r", "\\", "\\N", ",", "\"", "{", "}",
                                                    " ", "é", "€", "𝄞", "'", "N", "\x01", "\x1f"};
    std::string s;
    const int n = static_cast<int>(rng() % 12);
    for (int i = 0; i < n; ++i) s += pieces[rng() % pieces.size()];
    return s;
  };
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    using row_t = std::tuple<int, std::optional<std::string>, std::vector<std::byte>,
                             std::chrono::system_clock::time_point, std::vector<std::optional<int>>, double>;
    std::vector<row_t> rows;
    for (int i = 0; i < 300; ++i) {
      std::vector<std::byte> bytes(rng() % 20);
      for (auto& b : bytes) b = static_cast<std::byte>(rng() % 256);
      std::vector<std::optional<int>> arr;
      for (int k = static_cast<int>(rng() % 4); k > 0; --k)
        arr.push_back(rng() % 3 == 0 ? std::nullopt : std::optional<int>(static_cast<int>(rng())));
      const auto ts = std::chrono::system_clock::time_point(
          std::chrono::microseconds(static_cast<long long>(rng()) * 1000003LL - 2000000000000000LL));
      rows.emplace_back(i, rng() % 5 == 0 ? std::nullopt : std::optional<std::string>(random_text()), bytes, ts, arr,
                        static_cast<double>(static_cast<int>(rng())) / 7.0);
    }
    pqscope::atomic(c, [&] {
      auto w = c.copy_in("COPY " + table.name() + " (id, t, b, ts, a, d) FROM STDIN");
      for (const auto& r : rows) std::apply([&](const auto&... v) { w.write_row(v...); }, r);
      BOOST_TEST(w.finish() == rows.size());
    });
    auto r = c.copy_out("COPY (SELECT id, t, b, ts, a, d FROM " + table.name() + " ORDER BY id) TO STDOUT");
    std::vector<row_t> back;
    while (auto got = r.next<int, std::optional<std::string>, std::vector<std::byte>,
                             std::chrono::system_clock::time_point, std::vector<std::optional<int>>, double>())
      back.push_back(*got);
    BOOST_TEST(back.size() == rows.size());
    for (std::size_t n = 0; n < back.size() && n < rows.size(); ++n) {
      BOOST_TEST_CONTEXT("seed " << seed << ", row " << n) {
        BOOST_TEST((back[n] == rows[n]));
        // The server stored what a parameter would have stored.
        const auto& w = rows[n];
        const bool same = c.query_value<bool>(
            "SELECT t IS NOT DISTINCT FROM $2 AND b = $3 AND ts = $4 AND a IS NOT DISTINCT FROM $5 AND d = $6 FROM " +
                table.name() + " WHERE id = $1",
            std::get<0>(w), std::get<1>(w), std::get<2>(w), std::get<3>(w), std::get<4>(w), std::get<5>(w));
        BOOST_TEST(same);
      }
    }
  });
}

// Values read from a COPY own their text: a row kept while the next is read keeps
// what it had (next<std::string_view>() is refused at compile time: tests/compile_fail/).
// The second row is as long as the first, so reused buffers would show its text.
BOOST_AUTO_TEST_CASE(a_kept_row_keeps_its_text) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    auto r = c.copy_out("COPY (VALUES ('first row text', 'a'), ('other row text', NULL)) TO STDOUT");
    const auto first = r.next<std::string, std::optional<std::string>>();
    const auto second = r.next<std::string, std::optional<std::string>>();
    const bool more = r.next<std::string, std::optional<std::string>>().has_value();
    BOOST_TEST(!more);
    BOOST_REQUIRE(first && second);
    BOOST_TEST(std::get<0>(*first) == "first row text");
    BOOST_TEST(std::get<1>(*first).value_or("NULL") == "a");
    BOOST_TEST(std::get<0>(*second) == "other row text");
    BOOST_TEST(!std::get<1>(*second).has_value());
  });
}
