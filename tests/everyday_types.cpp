#define BOOST_TEST_MODULE everyday_types
#include <boost/test/unit_test.hpp>

// uuid and numeric against the server's own reading and rendering, seeded and
// random: every text form the server accepts is accepted with the same value and
// every other refused (conversion_error); values go through parameters, results,
// arrays and COPY unchanged, blocking and asio, on every target. timestamptz over
// the server's whole range, with the server counting the microseconds.
//
// PQSCOPE_TYPES_SEED sets the seed (printed); PQSCOPE_TYPES_TEXTS the texts per type (default 1500).

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include <pqscope/numeric.hpp>
#include <pqscope/timestamptz.hpp>
#include <pqscope/uuid.hpp>

#include "support/asio_run.hpp"
#include "support/seeded.hpp"
#include "support/servers.hpp"

using pqtest::for_each_target;

namespace {

std::uint64_t seed() { return pqtest::types_seed("everyday_types"); }
int texts() { return pqtest::types_count(1500); }

// What the server makes of a text as `type`: its rendering, or nothing if it refuses it.
std::optional<std::string> server_reads(pqscope::connection& c, const std::string& text, const std::string& type) {
  try {
    return c.query_value<std::string>("SELECT $1::text::" + type + "::text", text);
  } catch (const pqscope::sql_error& e) {
    BOOST_TEST_REQUIRE((e.sqlstate() == "22P02" || e.sqlstate() == "22003"), e.sqlstate() << ": " << e.what());
    return std::nullopt;
  }
}

// ---- uuid texts ----------------------------------------------------------------

std::string random_uuid_text(std::mt19937_64& rng) {
  static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
  std::string s;
  const bool braces = rng() % 5 == 0;
  const int hyphens = static_cast<int>(rng() % 3);  // none, the standard ones, any allowed
  if (braces) s += '{';
  for (int i = 0; i < 16; ++i) {
    const unsigned b = static_cast<unsigned>(rng() % 256);
    const char* digits = rng() % 4 == 0 ? upper : lower;
    s += digits[b >> 4];
    s += digits[b & 15];
    const bool standard = i == 3 || i == 5 || i == 7 || i == 9;
    if (i % 2 == 1 && i < 15 && ((hyphens == 1 && standard) || (hyphens == 2 && rng() % 2 == 0))) s += '-';
  }
  if (braces) s += '}';
  return s;
}

// A valid text, broken (or not) in one of the ways a hand-written uuid is.
std::string mutate(std::string s, std::mt19937_64& rng, const std::string& alphabet) {
  if (s.empty()) return s;
  const std::size_t at = rng() % s.size();
  switch (rng() % 7) {
    case 0: s.erase(at, 1); break;
    case 1: s.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
    case 2: s[at] = alphabet[rng() % alphabet.size()]; break;
    case 3: s = " " + s; break;
    case 4: s += rng() % 2 == 0 ? "}" : "-"; break;
    case 5: s = "{" + s; break;
    default: break;  // unchanged
  }
  return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(uuid_reads_every_text_as_the_server_does) {
  std::mt19937_64 rng(seed());
  pqscope::connection& c = pqtest::shared_observer();
  int accepted = 0, refused = 0;
  for (int n = 0; n < texts(); ++n) {
    std::string text = random_uuid_text(rng);
    if (n % 2 == 1) text = mutate(text, rng, "0123456789abcdefABCDEFxg-{} ");
    const std::optional<std::string> server = server_reads(c, text, "uuid");
    std::optional<std::string> ours;
    try {
      ours = pqscope::uuid::parse(text).to_string();
    } catch (const pqscope::conversion_error&) {
    }
    BOOST_TEST((ours == server), "text \"" << text << "\": server " << server.value_or("(refused)") << ", pqscope "
                                           << ours.value_or("(refused)"));
    (server ? accepted : refused)++;
  }
  BOOST_TEST(accepted > texts() / 3);
  BOOST_TEST(refused > texts() / 10);
  BOOST_TEST(pqscope::uuid().to_string() == "00000000-0000-0000-0000-000000000000");
  BOOST_TEST(pqscope::uuid().is_nil());
}

BOOST_AUTO_TEST_CASE(uuids_round_trip_everywhere) {
  pqtest::scratch_table table{"id int PRIMARY KEY, u uuid, us uuid[]"};
  std::mt19937_64 rng(seed() + 1);
  std::vector<pqscope::uuid> values{pqscope::uuid()};
  for (int i = 0; i < 50; ++i) {
    pqscope::uuid::bytes_type b{};
    for (auto& x : b) x = static_cast<std::uint8_t>(rng() % 256);
    values.emplace_back(b);
  }
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    for (std::size_t i = 0; i < values.size(); ++i) {
      const pqscope::uuid& u = values[i];
      // A parameter (typed uuid), read back, and as the server writes it.
      BOOST_TEST((c.query_value<pqscope::uuid>("SELECT $1", u) == u));
      BOOST_TEST(c.query_value<std::string>("SELECT $1::text", u) == u.to_string());
      c.execute("INSERT INTO " + table.name() + " (id, u, us) VALUES ($1, $2, $3)", static_cast<int>(i), u,
                std::vector<std::optional<pqscope::uuid>>{u, std::nullopt, values[(i + 1) % values.size()]});
    }
    // Ordered as the server orders them.
    const pqscope::result r = c.execute("SELECT u, us FROM " + table.name() + " ORDER BY u");
    for (std::size_t i = 1; i < r.size(); ++i) BOOST_TEST((r[i - 1][0].as<pqscope::uuid>() < r[i][0].as<pqscope::uuid>()));
    const auto arr = c.query_value<std::vector<std::optional<pqscope::uuid>>>("SELECT us FROM " + table.name() +
                                                                             " WHERE id = 3");
    BOOST_REQUIRE(arr.size() == 3u);
    BOOST_TEST((arr[0] == values[3]));
    BOOST_TEST(!arr[1].has_value());
    // COPY both ways.
    pqtest::empty(table);
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, u, us) FROM STDIN");
      for (std::size_t i = 0; i < values.size(); ++i)
        w.write_row(static_cast<int>(i), values[i], std::vector<pqscope::uuid>{values[i]});
      BOOST_TEST(w.finish() == values.size());
    }
    BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE us[1] = u") ==
               static_cast<long>(values.size()));
    auto reader = c.copy_out("COPY (SELECT id, u FROM " + table.name() + " ORDER BY id) TO STDOUT");
    while (auto row = reader.next<int, pqscope::uuid>())
      BOOST_TEST((std::get<1>(*row) == values[static_cast<std::size_t>(std::get<0>(*row))]));
    // And on the asio connection.
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      for (const pqscope::uuid& u : values)
        BOOST_TEST(((co_await a.async_query_value<pqscope::uuid>({"SELECT $1", u}, pqtest::use_awaitable)) == u));
    }());
  });
}

// ---- numeric ----------------------------------------------------------------------

namespace {

std::string random_numeric_text(std::mt19937_64& rng) {
  switch (rng() % 12) {
    case 0: return "NaN";
    case 1: return rng() % 2 == 0 ? "-Infinity" : "Infinity";
    case 2: return rng() % 2 == 0 ? "inf" : "+INF";
    default: break;
  }
  std::string s;
  if (rng() % 3 == 0) s += rng() % 2 == 0 ? "-" : "+";
  const int before = static_cast<int>(rng() % 25), after = static_cast<int>(rng() % 25);
  for (int i = 0; i < before; ++i) s += static_cast<char>('0' + rng() % 10);
  if (after > 0 || rng() % 4 == 0) s += '.';
  for (int i = 0; i < after; ++i) s += static_cast<char>('0' + rng() % 10);
  if (rng() % 4 == 0) {
    s += rng() % 2 == 0 ? "e" : "E";
    if (rng() % 2 == 0) s += rng() % 2 == 0 ? "-" : "+";
    s += std::to_string(rng() % 60);
  }
  if (rng() % 8 == 0) s = "  " + s + " ";
  return s;
}

}  // namespace

BOOST_AUTO_TEST_CASE(numeric_reads_every_text_as_the_server_does) {
  std::mt19937_64 rng(seed() + 2);
  pqscope::connection& c = pqtest::shared_observer();
  int accepted = 0, refused = 0;
  for (int n = 0; n < texts(); ++n) {
    std::string text = random_numeric_text(rng);
    if (n % 3 == 2) text = mutate(text, rng, "0123456789.eE+- xn");
    const std::optional<std::string> server = server_reads(c, text, "numeric");
    std::optional<pqscope::numeric> ours;
    try {
      ours = pqscope::numeric(text);
    } catch (const pqscope::conversion_error&) {
    }
    BOOST_TEST(ours.has_value() == server.has_value(),
               "text \"" << text << "\": server " << server.value_or("(refused)") << ", pqscope "
                         << (ours ? "accepted" : "refused"));
    if (!ours || !server) {
      (server ? accepted : refused)++;
      continue;
    }
    ++accepted;
    // The same value: equal to what the server rendered, and to_double() is the
    // server's own numeric -> float8 (both correctly rounded).
    const pqscope::numeric rendered(*server);
    BOOST_TEST((*ours == rendered), "text \"" << text << "\" against the server's " << *server);
    std::optional<double> server_double;
    try {
      server_double = c.query_value<double>("SELECT $1::text::numeric::float8", text);
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.sqlstate() == "22003", e.what());  // beyond double's range: refused by both
    }
    if (server_double) {
      const double mine = ours->to_double();
      BOOST_TEST((mine == *server_double || (mine != mine && *server_double != *server_double)),
                 "text \"" << text << "\"");
    } else {
      BOOST_CHECK_THROW((void)ours->to_double(), pqscope::conversion_error);
    }
    // An integer: exactly what the server's int8 says; a fraction is refused.
    const bool whole = c.query_value<bool>(
        "SELECT CASE WHEN $1::numeric IN ('NaN', 'Infinity', '-Infinity') THEN false "
        "ELSE $1::numeric = trunc($1::numeric) AND $1::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 "
        "END",
        rendered);
    if (whole) {
      BOOST_TEST(ours->to<std::int64_t>() == c.query_value<std::int64_t>("SELECT $1::numeric::int8", rendered),
                 "text \"" << text << "\"");
    } else {
      BOOST_CHECK_THROW((void)ours->to<std::int64_t>(), pqscope::conversion_error);
    }
  }
  BOOST_TEST(accepted > texts() / 3);
  BOOST_TEST(refused > texts() / 20);
}

BOOST_AUTO_TEST_CASE(numerics_round_trip_exactly) {
  pqtest::scratch_table table{"id int PRIMARY KEY, n numeric, ns numeric[]"};
  std::mt19937_64 rng(seed() + 3);
  // The server's own renderings of random values, the limits of the integer types,
  // and the special values.
  std::vector<std::string> texts_sent = {"0", "0.000", "NaN", "Infinity", "-Infinity",
                                         std::to_string(std::numeric_limits<std::int64_t>::min()),
                                         std::to_string(std::numeric_limits<std::uint64_t>::max()),
                                         "0.000000000000000000000000000001", "123456789012345678901234567890.5"};
  for (int i = 0; i < 60; ++i) {
    std::string t = random_numeric_text(rng);
    try {
      (void)pqscope::numeric(t);
      texts_sent.push_back(pqtest::shared_observer().query_value<std::string>("SELECT $1::text::numeric::text", t));
    } catch (const std::exception&) {
    }
  }
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    for (std::size_t i = 0; i < texts_sent.size(); ++i) {
      const pqscope::numeric n(texts_sent[i]);
      // Exactly the server's text back, as a parameter and as a result.
      BOOST_TEST(c.query_value<pqscope::numeric>("SELECT $1", n).str() == texts_sent[i]);
      BOOST_TEST(c.query_value<std::string>("SELECT $1::text", n) == texts_sent[i]);
      c.execute("INSERT INTO " + table.name() + " (id, n, ns) VALUES ($1, $2, $3)", static_cast<int>(i), n,
                std::vector<pqscope::numeric>{n, pqscope::numeric(7)});
    }
    for (std::size_t i = 0; i < texts_sent.size(); ++i) {
      const auto r = c.execute("SELECT n, ns FROM " + table.name() + " WHERE id = $1", static_cast<int>(i));
      BOOST_TEST(r[0][0].as<pqscope::numeric>().str() == texts_sent[i]);
      const auto ns = r[0][1].as<std::vector<pqscope::numeric>>();
      BOOST_TEST(ns.at(0).str() == texts_sent[i]);
      BOOST_TEST(ns.at(1).to<int>() == 7);
    }
    // Integers both ways, exactly, at the limits.
    BOOST_TEST(c.query_value<pqscope::numeric>("SELECT $1::numeric", std::numeric_limits<std::uint64_t>::max())
                   .to<std::uint64_t>() == std::numeric_limits<std::uint64_t>::max());
    BOOST_TEST(pqscope::numeric(std::numeric_limits<std::int64_t>::min()).to<std::int64_t>() ==
               std::numeric_limits<std::int64_t>::min());
    BOOST_CHECK_THROW((void)pqscope::numeric("18446744073709551616").to<std::uint64_t>(), pqscope::conversion_error);
    BOOST_CHECK_THROW((void)pqscope::numeric("1.5").to<int>(), pqscope::conversion_error);
    BOOST_TEST(pqscope::numeric("1.50e1").to<int>() == 15);
    BOOST_TEST(pqscope::numeric("2.000").to<int>() == 2);
    BOOST_CHECK_THROW((void)pqscope::numeric("NaN").to<int>(), pqscope::conversion_error);
    BOOST_CHECK_THROW((void)pqscope::numeric("1e400").to_double(), pqscope::conversion_error);
    BOOST_TEST((pqscope::numeric("1.50") == pqscope::numeric("1.5")));
    BOOST_TEST((pqscope::numeric("-0.0") == pqscope::numeric(0)));
    BOOST_TEST((pqscope::numeric("1.5") != pqscope::numeric("15")));
    // std::string keeps working for numeric columns.
    BOOST_TEST(c.query_value<std::string>("SELECT 1.50::numeric") == "1.50");
    // COPY both ways.
    pqtest::empty(table);
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, n) FROM STDIN");
      for (std::size_t i = 0; i < texts_sent.size(); ++i) w.write_row(static_cast<int>(i), pqscope::numeric(texts_sent[i]));
      BOOST_TEST(w.finish() == texts_sent.size());
    }
    auto reader = c.copy_out("COPY (SELECT id, n FROM " + table.name() + " ORDER BY id) TO STDOUT");
    while (auto row = reader.next<int, pqscope::numeric>())
      BOOST_TEST(std::get<1>(*row).str() == texts_sent[static_cast<std::size_t>(std::get<0>(*row))]);
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      for (const std::string& s : texts_sent)
        BOOST_TEST((co_await a.async_query_value<pqscope::numeric>({"SELECT $1", pqscope::numeric(s)},
                                                                   pqtest::use_awaitable))
                       .str() == s);
    }());
  });
}

// ---- timestamptz ------------------------------------------------------------------

namespace {

// Microseconds since 2000: the ends of PostgreSQL's range, the ends of what the
// time_point durations hold, and seeded random values everywhere between.
std::vector<std::int64_t> timestamp_values(std::mt19937_64& rng, int random) {
  using pqscope::timestamptz;
  const std::int64_t lo = -211813488000000000, hi = 9223371331199999999;  // 4714-11-24 BC, 294276-12-31 AD
  const std::int64_t epoch_1970 = -946684800000000;
  const std::int64_t ns_max = std::numeric_limits<std::int64_t>::max() / 1000 + epoch_1970;  // 2262 AD
  const std::int64_t us_max = std::numeric_limits<std::int64_t>::max() + epoch_1970;         // 294247 AD
  std::vector<std::int64_t> v{lo, lo + 1, hi, hi - 1, 0, -1, 1, epoch_1970, ns_max, ns_max + 1,
                              us_max, us_max + 1, -62135596800000000 /* 0001-01-01 */,
                              -62135596800000001 /* 1 BC */, 252423993600000000 /* 10000-01-01 */};
  std::uniform_int_distribution<std::int64_t> any(lo, hi), near(-4'000'000'000'000'000, 4'000'000'000'000'000);
  for (int i = 0; i < random; ++i) {
    std::int64_t m = i % 2 == 0 ? any(rng) : near(rng);
    if (i % 5 == 0) m -= m % 1'000'000;  // whole seconds: no fraction written
    v.push_back(m);
  }
  return v;
}

}  // namespace

BOOST_AUTO_TEST_CASE(timestamptz_spans_the_servers_range) {
  std::mt19937_64 rng(seed() + 4);
  pqscope::connection& c = pqtest::shared_observer();
  using pqscope::timestamptz;
  const std::vector<std::int64_t> values = timestamp_values(rng, texts() / 3);
  // Zones with offsets in minutes and, for old dates, local mean time in seconds.
  const char* zones[] = {"UTC", "Asia/Kolkata", "America/St_Johns", "Europe/Amsterdam", "Pacific/Chatham"};
  int n = 0;
  for (const std::int64_t m : values) {
    const timestamptz t = timestamptz::from_micros_since_2000(m);
    // Our text, as the server reads it: its own count of microseconds since 2000.
    // (Through an interval: PostgreSQL 15's extract(epoch) from a timestamptz keeps
    // only four decimals beyond 294247 AD.)
    const std::string server_micros = c.query_value<std::string>(
        "SELECT (extract(epoch FROM $1::timestamptz - '2000-01-01 00:00:00+00') * 1000000)::numeric(40, 0)::text", t);
    BOOST_TEST(server_micros == std::to_string(m), t.to_string() << ": the server counts " << server_micros);
    // The server's text in a zone of its choosing, as we read it.
    pqscope::transaction tx{c};
    c.set_local("TimeZone", zones[n++ % 5]);
    BOOST_TEST((c.query_value<timestamptz>("SELECT $1::timestamptz", t) == t), t.to_string());
    // timestamp without time zone, read as UTC.
    BOOST_TEST((c.query_value<timestamptz>("SELECT $1::timestamptz AT TIME ZONE 'UTC'", t) == t), t.to_string());
    tx.commit();
  }
  // One microsecond beyond either end: refused by both.
  BOOST_CHECK_THROW((void)timestamptz::from_micros_since_2000(-211813488000000001), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)timestamptz::from_micros_since_2000(9223371331200000000), pqscope::conversion_error);
  BOOST_CHECK_THROW((void)c.query_value<std::string>("SELECT '294277-01-01 00:00:00+00'::timestamptz::text"),
                    pqscope::sql_error);
  BOOST_CHECK_THROW((void)pqscope::value_traits<timestamptz>::from_text("294277-01-01 00:00:00+00"),
                    pqscope::conversion_error);
  // The infinities, ordered around everything.
  BOOST_TEST(c.query_value<std::string>("SELECT $1::timestamptz::text", timestamptz::infinity()) == "infinity");
  BOOST_TEST((c.query_value<timestamptz>("SELECT '-infinity'::timestamptz") == timestamptz::minus_infinity()));
  BOOST_TEST((timestamptz::minus_infinity() < timestamptz::from_micros_since_2000(-211813488000000000)));
  BOOST_TEST((timestamptz::from_micros_since_2000(9223371331199999999) < timestamptz::infinity()));
  // The time points: the nanosecond one ends in 2262, the microsecond one in 294247.
  const auto ns_last = timestamptz::from_micros_since_2000(std::numeric_limits<std::int64_t>::max() / 1000 -
                                                          946684800000000);
  BOOST_TEST((timestamptz(ns_last.to_time_point()) == ns_last));
  BOOST_CHECK_THROW((void)timestamptz::from_micros_since_2000(ns_last.micros_since_2000() + 1).to_time_point(),
                    pqscope::conversion_error);
  BOOST_CHECK_THROW(
      (void)c.query_value<std::chrono::system_clock::time_point>("SELECT '2263-01-01 00:00:00+00'::timestamptz"),
      pqscope::conversion_error);
  using micro_point = std::chrono::time_point<std::chrono::system_clock, std::chrono::microseconds>;
  BOOST_TEST(c.query_value<timestamptz>("SELECT '294247-01-10 04:00:54.775807+00'::timestamptz")
                 .to_time_point<std::chrono::microseconds>()
                 .time_since_epoch()
                 .count() == std::numeric_limits<std::int64_t>::max());
  BOOST_CHECK_THROW((void)c.query_value<micro_point>("SELECT '294247-01-10 04:00:54.775808+00'::timestamptz"),
                    pqscope::conversion_error);
  BOOST_CHECK_THROW((void)timestamptz::infinity().to_time_point(), pqscope::conversion_error);
}

BOOST_AUTO_TEST_CASE(timestamptz_round_trips_everywhere) {
  pqtest::scratch_table table{"id int PRIMARY KEY, t timestamptz, ts timestamptz[]"};
  std::mt19937_64 rng(seed() + 5);
  std::vector<pqscope::timestamptz> values{pqscope::timestamptz::infinity(), pqscope::timestamptz::minus_infinity()};
  for (const std::int64_t m : timestamp_values(rng, 40)) values.push_back(pqscope::timestamptz::from_micros_since_2000(m));
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    for (std::size_t i = 0; i < values.size(); ++i)
      c.execute("INSERT INTO " + table.name() + " (id, t, ts) VALUES ($1, $2, $3)", static_cast<int>(i), values[i],
                std::vector<std::optional<pqscope::timestamptz>>{values[i], std::nullopt});
    const pqscope::result r = c.execute("SELECT id, t, ts FROM " + table.name());
    for (const pqscope::row row : r) {
      const auto& want = values[row[0].as<std::size_t>()];
      BOOST_TEST((row[1].as<pqscope::timestamptz>() == want));
      const auto arr = row[2].as<std::vector<std::optional<pqscope::timestamptz>>>();
      BOOST_TEST((arr.size() == 2 && arr[0] == want && !arr[1]));
    }
    pqtest::empty(table);
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, t) FROM STDIN");
      for (std::size_t i = 0; i < values.size(); ++i) w.write_row(static_cast<int>(i), values[i]);
      BOOST_TEST(w.finish() == values.size());
    }
    auto reader = c.copy_out("COPY (SELECT id, t FROM " + table.name() + ") TO STDOUT");
    std::size_t read = 0;
    while (auto row = reader.next<int, pqscope::timestamptz>()) {
      BOOST_TEST((std::get<1>(*row) == values[static_cast<std::size_t>(std::get<0>(*row))]));
      ++read;
    }
    BOOST_TEST(read == values.size());
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      for (const pqscope::timestamptz& v : values)
        BOOST_TEST(((co_await a.async_query_value<pqscope::timestamptz>({"SELECT $1", v}, pqtest::use_awaitable)) ==
                    v));
    }());
  });
}
