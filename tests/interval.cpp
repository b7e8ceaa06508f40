#define BOOST_TEST_MODULE interval
#include <boost/test/unit_test.hpp>

// pqscope::interval against the server, seeded and random, the edges included: the
// text pqscope sends is read by the server as the same three fields under every
// IntervalStyle, and what the server writes in every style reads back as them; the
// values go through parameters, results, NULL, arrays and COPY, blocking and asio, on
// every target; std::chrono durations convert exactly or not at all.
//
// PQSCOPE_TYPES_SEED sets the seed (printed); PQSCOPE_TYPES_TEXTS the random values
// (default 1000, each read in four styles on every target).

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <pqscope/interval.hpp>

#include "support/asio_run.hpp"
#include "support/seeded.hpp"
#include "support/servers.hpp"

using pqscope::interval;
using pqtest::for_each_target;
using namespace std::chrono_literals;

namespace {

std::uint64_t seed() { return pqtest::types_seed("interval"); }
int texts() { return pqtest::types_count(1000); }

constexpr std::int32_t i32_min = std::numeric_limits<std::int32_t>::min();
constexpr std::int32_t i32_max = std::numeric_limits<std::int32_t>::max();
constexpr std::int64_t i64_min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t i64_max = std::numeric_limits<std::int64_t>::max();

const char* const styles[] = {"postgres", "postgres_verbose", "sql_standard", "iso_8601"};

std::int64_t signed_below(std::mt19937_64& rng, std::uint64_t bound) {
  const auto v = static_cast<std::int64_t>(rng() % bound);
  return rng() % 2 == 0 ? v : -v;
}

std::int32_t random_days_or_months(std::mt19937_64& rng) {
  switch (rng() % 8) {
    case 0: return 0;
    case 1: return rng() % 2 == 0 ? 1 : -1;
    case 2: return rng() % 2 == 0 ? i32_min : i32_max;
    case 3: return static_cast<std::int32_t>(signed_below(rng, 40));
    case 4: return static_cast<std::int32_t>(signed_below(rng, 100000));
    default: return static_cast<std::int32_t>(static_cast<std::uint32_t>(rng()));
  }
}

std::int64_t random_microseconds(std::mt19937_64& rng) {
  switch (rng() % 10) {
    case 0: return 0;
    case 1: return rng() % 2 == 0 ? 1 : -1;
    case 2: return rng() % 3 == 0 ? i64_min : rng() % 2 == 0 ? i64_max : -i64_max;
    case 3: return signed_below(rng, 1000000);                       // a fraction of a second only
    case 4: return signed_below(rng, 100000) * 1000000;              // whole seconds
    case 5: return signed_below(rng, 1000) * 3600000000;             // whole hours
    case 6: return signed_below(rng, 86400000000);                   // within a day
    case 7: return signed_below(rng, 1000) * 1000000 + (rng() % 2 == 0 ? 500000 : 10);  // short fractions
    default: return static_cast<std::int64_t>(rng());
  }
}

std::vector<interval> edge_values() {
  return {{0, 0, 0},
          {i32_min, i32_min, i64_min},
          {i32_max, i32_max, i64_max},
          {i32_min, i32_max, -i64_max},
          {i32_max, i32_min, i64_min},
          {0, 0, i64_min},
          {0, 0, i64_max},
          {0, 0, -i64_max},
          {i32_min, 0, 0},
          {0, i32_min, 0},
          {i32_max, 0, 0},
          {0, i32_max, 0},
          {1, -1, 1},
          {-1, 1, -1},
          {0, 0, 1},
          {0, 0, -1},
          {0, 0, 500000},
          {0, 0, -500000},
          {12, 0, 0},
          {-12, 0, 0},
          {-13, 0, 0},
          {0, -1, 3600000000},
          {0, 1, -86400000000}};
}

std::vector<interval> random_values(std::uint64_t salt) {
  std::mt19937_64 rng(seed() + salt);
  std::vector<interval> out = edge_values();
  for (int i = 0; i < texts(); ++i)
    out.push_back({random_days_or_months(rng), random_days_or_months(rng), random_microseconds(rng)});
  return out;
}

// An interval in one macro argument (no braces, whose commas the preprocessor splits at).
constexpr interval iv(std::int32_t months, std::int32_t days, std::int64_t microseconds) {
  return interval{months, days, microseconds};
}

std::string show(const interval& v) {
  return "{" + std::to_string(v.months) + ", " + std::to_string(v.days) + ", " + std::to_string(v.microseconds) + "}";
}

std::optional<interval> parsed(const std::string& text) {
  try {
    return interval::parse(text);
  } catch (const pqscope::conversion_error&) {
    return std::nullopt;
  }
}

bool refused_as_interval(pqscope::connection& c, const std::string& text) {
  try {
    (void)c.query_value<std::string>("SELECT $1::text::interval::text", text);
    return false;
  } catch (const pqscope::sql_error& e) {
    BOOST_TEST((e.sqlstate() == "22007" || e.sqlstate() == "22008" || e.sqlstate() == "22015"),
               e.sqlstate() << ": " << e.what());
    return true;
  }
}

// The server's reading of $1 (pqscope's text, sent as a typed interval parameter),
// taken apart by the server itself: months, days, microseconds (extract() is numeric in
// PostgreSQL 15: exact); the length in microseconds when it has no months and fits
// int64 (extract(epoch) counts a day as 24 hours); the server's rendering of it; and
// the server's rendering of the interval it builds from $2, $3, $4 without pqscope's text.
const char* const decompose =
    "SELECT (extract(year FROM i) * 12 + extract(month FROM i))::int8, extract(day FROM i)::int8, "
    "(extract(hour FROM i) * 3600000000 + extract(minute FROM i) * 60000000 + extract(microseconds FROM i))::int8, "
    "CASE WHEN extract(year FROM i) = 0 AND extract(month FROM i) = 0 AND extract(epoch FROM i) * 1000000 "
    "BETWEEN -9223372036854775808 AND 9223372036854775807 THEN (extract(epoch FROM i) * 1000000)::int8 END, "
    "i::text, b::text "
    "FROM (SELECT $1::interval AS i, ($2::int4 || ' mons')::interval + ($3::int4 || ' days')::interval + "
    "($4::int8 || ' microseconds')::interval AS b) s";

// One value under the session's IntervalStyle; `where` names it in a failure.
void check_against_server(pqscope::connection& c, const interval& v, const std::string& where) {
  pqscope::result r;
  try {
    r = c.execute(decompose, v, v.months, v.days, v.microseconds);
  } catch (const pqscope::sql_error& e) {
    BOOST_ERROR(where << ": the server refused " << v.to_string() << ": " << e.what());
    return;
  }
  const auto [months, days, micros, epoch_us, ours_rendered, server_rendered] =
      r[0].as<std::int64_t, std::int64_t, std::int64_t, std::optional<std::int64_t>, std::string, std::string>();
  BOOST_TEST((months == v.months && days == v.days && micros == v.microseconds),
             where << ": sent " << v.to_string() << ", the server read {" << months << ", " << days << ", " << micros
                   << "}");
  // The server's rendering, of its own value and of the one it read from us, reads back.
  const std::optional<interval> back = parsed(server_rendered), back_ours = parsed(ours_rendered);
  BOOST_TEST((back == v), where << ": the server wrote \"" << server_rendered << "\", pqscope read "
                                << (back ? show(*back) : "(refused)"));
  BOOST_TEST((back_ours == v), where << ": \"" << ours_rendered << "\"");
  // to_duration: the server's length exactly, and refused when the server has none in int64.
  std::optional<std::int64_t> mine;
  try {
    mine = v.to_duration().count();
  } catch (const pqscope::conversion_error&) {
  }
  BOOST_TEST((mine == epoch_us), where << ": to_duration() " << (mine ? std::to_string(*mine) : "refused")
                                       << ", extract(epoch) "
                                       << (epoch_us ? std::to_string(*epoch_us) : "none in int64 microseconds"));
  if (epoch_us && *epoch_us % 1000000 == 0)
    BOOST_TEST(v.to_duration<std::chrono::seconds>().count() == *epoch_us / 1000000, where);
  else if (epoch_us)
    BOOST_CHECK_THROW((void)v.to_duration<std::chrono::seconds>(), pqscope::conversion_error);
}

}  // namespace

BOOST_AUTO_TEST_CASE(the_server_reads_the_same_fields_under_every_style) {
  const std::vector<interval> values = random_values(0);
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    for (const char* style : styles) {
      // SET LOCAL in a scope: a session SET would outlive the transaction behind PgBouncer.
      pqscope::transaction tx{c};
      c.set_local("IntervalStyle", style);
      BOOST_TEST_REQUIRE(c.query_value<std::string>("SHOW IntervalStyle") == style);
      for (std::size_t i = 0; i < values.size(); ++i)
        check_against_server(c, values[i], std::string(style) + ", value " + std::to_string(i));
      tx.commit();
    }
  });
}

// What the fields cannot hold the server refuses too: the fields' limits are its limits.
// And the one value the server writes but does not read back, which to_string() writes
// in another form.
BOOST_AUTO_TEST_CASE(the_server_refuses_what_the_fields_cannot_hold) {
  pqscope::connection& c = pqtest::shared_observer();
  for (const char* text :
       {"2147483648 mons", "-2147483649 mons", "2147483648 days", "-2147483649 days",
        "9223372036854775808 microseconds", "-9223372036854775809 microseconds", "2562047788:00:54.775808",
        "178956970 years 8 mons", "-178956970 years -9 mons"})
    BOOST_TEST(refused_as_interval(c, text), "the server read \"" << text << "\"");
  // The server's forms of one past each limit: refused by pqscope as well.
  for (const char* text : {"178956970 years 8 mons", "-178956970 years -9 mons", "@ 2147483648 days",
                                  "@ 2147483649 days ago", "2562047788:00:54.775808", "P2147483648D",
                                  "PT2562047788H54.775808S", "+178956970-8 +0 +0:00:00", "-178956970-9"})
    BOOST_CHECK_THROW((void)interval::parse(text), pqscope::conversion_error);
  // The server writes the lowest microseconds as a time field, and cannot read it back
  // (it reads the magnitude into int64 before the sign); pqscope reads it, and sends
  // it in units, which the server reads.
  const interval lowest{0, 0, i64_min};
  BOOST_TEST(c.query_value<std::string>("SELECT '-9223372036854775808 microseconds'::interval::text") ==
             "-2562047788:00:54.775808");
  BOOST_TEST(refused_as_interval(c, "-2562047788:00:54.775808"));
  BOOST_TEST((interval::parse("-2562047788:00:54.775808") == lowest));
  BOOST_TEST(lowest.to_string().find(':') == std::string::npos);
  BOOST_TEST(c.query_value<std::int64_t>("SELECT extract(microseconds FROM $1) + extract(hour FROM $1) * 3600000000",
                                         lowest) == i64_min);
  // PostgreSQL 17's infinite intervals, named in the error.
  try {
    (void)interval::parse("-infinity");
    BOOST_ERROR("read -infinity");
  } catch (const pqscope::conversion_error& e) {
    BOOST_TEST(std::string(e.what()).find("infinite") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(text_reads_back_and_bad_text_is_refused) {
  for (const interval& v : random_values(1)) {
    BOOST_TEST((parsed(v.to_string()) == v), v.to_string());
    BOOST_TEST(v.to_string().size() <= interval::max_text_size);
  }
  // Forms the server never writes, or malformed.
  for (const char* text :
       {"", " ", "banana", "1", "1 days 1 day", "1 mons 1 year", "1.5 days", "00:00:00.1234567",
        "1:2:3", "00:60:00", "00:00:60", "@", "@ ", "@ 1 day ago ago", "@ 00:00:01", "1 day ago", "P", "PT",
        "P1S", "PT1D", "P1.5D", "P1Y1Y", "1-12", "1-2 3", "3", "0 0", "+", "- 1 day", "1  day", "1 day ",
        " 1 day", "1 weeks", "1 year 2 mons x", "1 Day"})
    BOOST_CHECK_MESSAGE(!parsed(text).has_value(), "read \"" << text << "\"");
  try {
    (void)interval::parse("banana");
  } catch (const pqscope::conversion_error& e) {
    BOOST_TEST(std::string(e.what()).find("\"banana\"") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(durations_convert_exactly_or_not_at_all) {
  using std::chrono::duration;
  using whole_days = duration<std::int32_t, std::ratio<86400>>;
  using unsigned_micros32 = duration<std::uint32_t, std::micro>;
  using unsigned_micros64 = duration<std::uint64_t, std::micro>;
  using thirds = duration<std::int64_t, std::ratio<1, 3>>;
  BOOST_TEST(iv(0, 1, 1500000).to_duration<std::chrono::milliseconds>().count() == 86401500);
  BOOST_TEST(iv(0, -2, 0).to_duration<std::chrono::hours>().count() == -48);
  BOOST_TEST(iv(0, 0, 7).to_duration<std::chrono::nanoseconds>().count() == 7000);
  BOOST_TEST((iv(0, 3, 0).to_duration<whole_days>().count() == 3));
  BOOST_CHECK_THROW((void)iv(1, 0, 0).to_duration(), pqscope::conversion_error);   // a month has no length
  BOOST_CHECK_THROW((void)iv(-1, 0, 0).to_duration(), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)iv(0, 0, 1500000).to_duration<std::chrono::seconds>(), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)iv(0, 0, 1).to_duration<std::chrono::milliseconds>(), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)iv(0, 1, i64_max).to_duration(), pqscope::conversion_error);  // beyond int64
  BOOST_CHECK_THROW((void)iv(0, 0, i64_max).to_duration<std::chrono::nanoseconds>(), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)iv(0, 1, 0).to_duration<duration<std::int16_t>>(), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)iv(0, 0, -1).to_duration<unsigned_micros32>(),
                    pqscope::conversion_error);
  BOOST_TEST(iv(0, i32_max, 9223372036854000000).to_duration<std::chrono::seconds>().count() ==
             std::int64_t{i32_max} * 86400 + 9223372036854);  // beyond int64 microseconds, within seconds
  try {
    (void)iv(2, 0, 0).to_duration();
  } catch (const pqscope::conversion_error& e) {
    BOOST_TEST(std::string(e.what()).find("month") != std::string::npos, e.what());
  }

  BOOST_TEST((interval::from_duration(90min) == iv(0, 0, 5400000000)));
  BOOST_TEST((interval::from_duration(-3ms) == iv(0, 0, -3000)));
  BOOST_TEST((interval::from_duration(std::chrono::nanoseconds(2000)) == iv(0, 0, 2)));
  BOOST_TEST((interval::from_duration(std::chrono::microseconds(i64_min)) == iv(0, 0, i64_min)));
  BOOST_CHECK_THROW((void)interval::from_duration(std::chrono::nanoseconds(1500)), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)interval::from_duration(std::chrono::hours(3000000000)), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)interval::from_duration(unsigned_micros64(std::uint64_t{1} << 63)),
                    pqscope::conversion_error);
  BOOST_TEST((interval::from_duration(thirds(6)) == iv(0, 0, 2000000)));
  BOOST_CHECK_THROW((void)interval::from_duration(thirds(1)),
                    pqscope::conversion_error);

  BOOST_TEST((iv(1, 2, 3) == iv(1, 2, 3)));
  BOOST_TEST((iv(1, 0, 0) != iv(0, 30, 0)));  // PostgreSQL's `=` says equal
}

BOOST_AUTO_TEST_CASE(intervals_round_trip_everywhere) {
  pqtest::scratch_table table{"id int PRIMARY KEY, v interval, vs interval[], d interval"};
  const std::vector<interval> values = random_values(2);
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    for (std::size_t i = 0; i < values.size(); ++i) {
      const interval& v = values[i];
      BOOST_TEST((c.query_value<interval>("SELECT $1", v) == v), show(v));
      BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", v) == "interval");
      c.execute("INSERT INTO " + table.name() + " (id, v, vs) VALUES ($1, $2, $3)", static_cast<int>(i), v,
                std::vector<std::optional<interval>>{v, std::nullopt, values[(i + 1) % values.size()]});
    }
    // NULL both ways.
    BOOST_TEST(!c.query_value<std::optional<interval>>("SELECT $1", std::optional<interval>()).has_value());
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::optional<interval>()) == "interval");
    BOOST_TEST((c.query_value<std::optional<interval>>("SELECT $1", std::optional<interval>(iv(1, 2, 3))) ==
                iv(1, 2, 3)));
    // Arrays and COPY out, read under every style.
    for (const char* style : styles) {
      pqscope::transaction tx{c};
      c.set_local("IntervalStyle", style);
      const pqscope::result r = c.execute("SELECT id, v, vs FROM " + table.name() + " ORDER BY id");
      BOOST_REQUIRE(r.size() == values.size());
      for (std::size_t i = 0; i < values.size(); ++i) {
        BOOST_TEST((r[i][1].as<interval>() == values[i]), style << " row " << i);
        const auto vs = r[i][2].as<std::vector<std::optional<interval>>>();
        BOOST_REQUIRE(vs.size() == 3u);
        BOOST_TEST((vs[0] == values[i] && !vs[1] && vs[2] == values[(i + 1) % values.size()]), style << " row " << i);
      }
      auto reader = c.copy_out("COPY (SELECT id, v, vs FROM " + table.name() + " ORDER BY id) TO STDOUT");
      std::size_t n = 0;
      while (auto row = reader.next<int, interval, std::vector<std::optional<interval>>>()) {
        const auto i = static_cast<std::size_t>(std::get<0>(*row));
        BOOST_TEST((std::get<1>(*row) == values[i]), style << " COPY row " << i);
        BOOST_TEST((std::get<2>(*row).at(0) == values[i]), style << " COPY row " << i);
        ++n;
      }
      BOOST_TEST(n == values.size());
      tx.commit();
    }
    // An array parameter of intervals, typed interval[].
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::vector<interval>{values[1]}) ==
               "interval[]");
    BOOST_TEST((c.query_value<std::vector<interval>>("SELECT $1", values) == values));
    // COPY in.
    pqtest::empty(table);
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, v, vs) FROM STDIN");
      for (std::size_t i = 0; i < values.size(); ++i)
        w.write_row(static_cast<int>(i), values[i], std::vector<interval>{values[i], values[0]});
      BOOST_TEST(w.finish() == values.size());
    }
    for (std::size_t i = 0; i < values.size(); ++i) {
      const auto r = c.execute("SELECT v, vs FROM " + table.name() + " WHERE id = $1", static_cast<int>(i));
      BOOST_TEST((r[0][0].as<interval>() == values[i]), "COPY in row " << i);
      BOOST_TEST((r[0][1].as<std::vector<interval>>() == std::vector<interval>{values[i], values[0]}),
                 "COPY in row " << i);
    }
    // And on the asio connection: parameters, results, COPY both ways.
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      for (const interval& v : values)
        BOOST_TEST(((co_await a.async_query_value<interval>({"SELECT $1", v}, pqtest::use_awaitable)) == v), show(v));
      BOOST_TEST(!(co_await a.async_query_value<std::optional<interval>>({"SELECT NULL::interval"},
                                                                        pqtest::use_awaitable))
                      .has_value());
      co_await a.async_execute({"DELETE FROM " + table.name()}, pqtest::use_awaitable);
      auto w = co_await a.async_copy_in("COPY " + table.name() + " (id, v, d) FROM STDIN", pqtest::use_awaitable);
      for (std::size_t i = 0; i < values.size(); ++i)
        w.write_row(static_cast<int>(i), values[i], std::chrono::microseconds(values[i].microseconds));
      BOOST_TEST((co_await w.async_finish(pqtest::use_awaitable)) == values.size());
      auto r = co_await a.async_copy_out("COPY (SELECT id, v, d FROM " + table.name() + " ORDER BY id) TO STDOUT",
                                         pqtest::use_awaitable);
      std::size_t n = 0;
      while (auto row = co_await r.async_next<int, interval, std::chrono::microseconds>(pqtest::use_awaitable)) {
        const auto i = static_cast<std::size_t>(std::get<0>(*row));
        BOOST_TEST((std::get<1>(*row) == values[i]), "asio COPY row " << i);
        BOOST_TEST(std::get<2>(*row).count() == values[i].microseconds, "asio COPY row " << i);
        ++n;
      }
      BOOST_TEST(n == values.size());
    }());
  });
}

BOOST_AUTO_TEST_CASE(durations_as_parameters_and_results) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", 5s) == "interval");
    BOOST_TEST(c.query_value<bool>("SELECT $1 = interval '1 hour 30 minutes'", 90min));
    BOOST_TEST(c.query_value<bool>("SELECT $1 = interval '-0.000007 seconds'", std::chrono::nanoseconds(-7000)));
    BOOST_TEST((c.query_value<std::chrono::milliseconds>("SELECT $1", 1500ms) == 1500ms));
    BOOST_TEST((c.query_value<std::chrono::seconds>("SELECT interval '1 day 2 hours'") == 26h));
    BOOST_TEST((c.query_value<std::chrono::microseconds>("SELECT interval '-1 day +00:00:00.000001'").count() ==
                -86399999999));
    BOOST_CHECK_THROW((void)c.query_value<std::chrono::seconds>("SELECT interval '1.5 seconds'"),
                      pqscope::conversion_error);
    BOOST_CHECK_THROW((void)c.query_value<std::chrono::hours>("SELECT interval '1 mon'"), pqscope::conversion_error);
    BOOST_CHECK_THROW((void)c.execute("SELECT $1", std::chrono::nanoseconds(1500)), pqscope::conversion_error);
    BOOST_TEST(!c.query_value<std::optional<std::chrono::seconds>>("SELECT NULL::interval").has_value());
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::vector<std::chrono::seconds>{1s, 2s}) ==
               "interval[]");
    const auto back = c.query_value<std::vector<std::chrono::milliseconds>>("SELECT $1",
                                                                           std::vector<std::chrono::seconds>{1s, -2s});
    BOOST_TEST((back == std::vector<std::chrono::milliseconds>{1000ms, -2000ms}));
    // A column that is not an interval: the error names it.
    try {
      const pqscope::result r = c.execute("SELECT 'banana'::text AS mood");
      (void)r[0][0].as<interval>();
      BOOST_ERROR("read banana");
    } catch (const pqscope::conversion_error& e) {
      BOOST_TEST(std::string(e.what()).find("\"mood\"") != std::string::npos, e.what());
      BOOST_TEST(std::string(e.what()).find("banana") != std::string::npos, e.what());
    }
    try {
      const pqscope::result r = c.execute("SELECT interval '1 mon' AS term");
      (void)r[0][0].as<std::chrono::seconds>();
      BOOST_ERROR("read a month as seconds");
    } catch (const pqscope::conversion_error& e) {
      BOOST_TEST(std::string(e.what()).find("\"term\"") != std::string::npos, e.what());
    }
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      BOOST_TEST(((co_await a.async_query_value<std::chrono::minutes>({"SELECT $1", 3h}, pqtest::use_awaitable)) ==
                  180min));
    }());
  });
}
