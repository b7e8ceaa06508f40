#define BOOST_TEST_MODULE values
#include <boost/test/unit_test.hpp>

#include <cmath>
#include <cstdio>
#include <cstdint>
#include <limits>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

// Lets BOOST_TEST print optionals in failure messages.
namespace boost::test_tools::tt_detail {
template <class T>
struct print_log_value<std::optional<T>> {
  void operator()(std::ostream& os, const std::optional<T>& v) {
    if (v)
      print_log_value<T>()(os, *v);
    else
      os << "nullopt";
  }
};
}  // namespace boost::test_tools::tt_detail

// A user type passed through the documented customization point. oid 600 is
// PostgreSQL's point, so `SELECT $1` comes back typed as point.
struct point {
  int x = 0, y = 0;
  bool operator==(const point& o) const { return x == o.x && y == o.y; }
};
std::ostream& operator<<(std::ostream& os, const point& p) { return os << '(' << p.x << ',' << p.y << ')'; }

template <>
struct pqscope::value_traits<point> {
  static constexpr unsigned oid = 600;
  static std::string to_text(const point& p) { return "(" + std::to_string(p.x) + "," + std::to_string(p.y) + ")"; }
  static point from_text(std::string_view s) {
    point p;
    if (std::sscanf(std::string(s).c_str(), "(%d,%d)", &p.x, &p.y) != 2)
      throw pqscope::conversion_error("not a point: " + std::string(s));
    return p;
  }
};

// A user type whose text may hold a NUL byte: the library must still refuse it.
struct raw_blob {
  std::string bytes;
};
template <>
struct pqscope::value_traits<raw_blob> {
  static std::string to_text(const raw_blob& b) { return b.bytes; }
};

namespace {

using pqscope::connection;

// Sends v as $1 and reads it back as the same type.
template <class T>
T echo(connection& c, const T& v) {
  return c.query_value<T>("SELECT $1", v);
}

template <class T>
void integer_limits(connection& c, const std::string& pg_type) {
  BOOST_TEST_CONTEXT(pg_type << " (" << sizeof(T) * 8 << "-bit " << (std::is_signed_v<T> ? "signed" : "unsigned")
                             << ")") {
    const T lo = std::numeric_limits<T>::min(), hi = std::numeric_limits<T>::max();
    BOOST_TEST(+echo(c, lo) == +lo);
    BOOST_TEST(+echo(c, hi) == +hi);
    BOOST_TEST(+echo(c, T{0}) == 0);
    BOOST_TEST(+echo(c, T{1}) == 1);
    // The parameter carries the narrowest type that holds every value of T.
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", hi) == pg_type);
    // Arithmetic on the server sees the real number, not text.
    BOOST_TEST(c.query_value<std::string>("SELECT ($1 + 0)::text", hi) == std::to_string(+hi));
  }
}

template <class F>
F fecho(connection& c, F v) {
  return c.query_value<F>("SELECT $1", v);
}

}  // namespace

BOOST_AUTO_TEST_CASE(bool_round_trips) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      BOOST_TEST(echo(c, true) == true);
      BOOST_TEST(echo(c, false) == false);
      BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", true) == "boolean");
      BOOST_TEST(c.query_value<bool>("SELECT NOT $1", false) == true);
    }
  }
}

BOOST_AUTO_TEST_CASE(integers_round_trip_at_their_limits) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      integer_limits<std::int8_t>(c, "smallint");
      integer_limits<std::uint8_t>(c, "integer");
      integer_limits<std::int16_t>(c, "smallint");
      integer_limits<std::uint16_t>(c, "integer");
      integer_limits<std::int32_t>(c, "integer");
      integer_limits<std::uint32_t>(c, "bigint");
      integer_limits<std::int64_t>(c, "bigint");
      integer_limits<std::uint64_t>(c, "numeric");  // no unsigned 64-bit type in PostgreSQL
      integer_limits<long long>(c, "bigint");
      integer_limits<unsigned long long>(c, "numeric");
      BOOST_TEST(c.query_value<std::string>("SELECT $1::text", std::numeric_limits<std::uint64_t>::max()) ==
                 "18446744073709551615");
      BOOST_TEST(c.query_value<long>("SELECT $1 * 2", -21L) == -42L);
    }
  }
}

BOOST_AUTO_TEST_CASE(floating_point_round_trips_exactly) {
  const std::vector<double> doubles = {0.0,
                                       -0.0,
                                       0.1,
                                       1.0 / 3.0,
                                       -2.718281828459045,
                                       3.141592653589793,
                                       1e308,
                                       -1e-300,
                                       std::numeric_limits<double>::max(),
                                       std::numeric_limits<double>::lowest(),
                                       std::numeric_limits<double>::min(),
                                       std::numeric_limits<double>::denorm_min(),
                                       std::numeric_limits<double>::min() / 3,  // subnormal
                                       std::numeric_limits<double>::epsilon(),
                                       1.0 + std::numeric_limits<double>::epsilon(),
                                       9007199254740993.0};
  const std::vector<float> floats = {0.1f,
                                     -1.5f,
                                     1.0f / 3.0f,
                                     std::numeric_limits<float>::max(),
                                     std::numeric_limits<float>::lowest(),
                                     std::numeric_limits<float>::min(),
                                     std::numeric_limits<float>::denorm_min(),
                                     std::numeric_limits<float>::epsilon()};
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      for (double d : doubles) {
        BOOST_TEST_CONTEXT(d) {
          const double back = fecho(c, d);
          // Bit-exact, so that -0.0 and the last digit of precision both count.
          BOOST_TEST(back == d);
          BOOST_TEST(std::signbit(back) == std::signbit(d));
        }
      }
      for (float f : floats) {
        BOOST_TEST_CONTEXT(f) {
          BOOST_TEST(fecho(c, f) == f);
        }
      }
      BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", 1.5) == "double precision");
      BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", 1.5f) == "real");

      const double inf = std::numeric_limits<double>::infinity();
      BOOST_TEST(std::isnan(fecho(c, std::numeric_limits<double>::quiet_NaN())));
      BOOST_TEST(std::isnan(fecho(c, std::numeric_limits<float>::quiet_NaN())));
      BOOST_TEST(fecho(c, inf) == inf);
      BOOST_TEST(fecho(c, -inf) == -inf);
      BOOST_TEST(fecho(c, std::numeric_limits<float>::infinity()) == std::numeric_limits<float>::infinity());
      // The server understood them as special values, not as text.
      BOOST_TEST(c.query_value<bool>("SELECT $1 = 'NaN'::float8", std::nan("")));
      BOOST_TEST(c.query_value<bool>("SELECT $1 > 1e308 AND $2 < -1e308", inf, -inf));
    }
  }
}

BOOST_AUTO_TEST_CASE(strings_are_data_never_sql) {
  const std::vector<std::string> texts = {"",
                                          "plain",
                                          "it's \"quoted\"",
                                          "back\\slash \\x41 \\' E'\\n'",
                                          "tab\tnew\nline\r",
                                          "grüße, Привет, 日本語, 🐘",
                                          "'); DROP TABLE pg_class; --",
                                          "$1 $2 ? :name %s",
                                          std::string(100000, 'x')};
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      for (const std::string& s : texts) {
        BOOST_TEST_CONTEXT(s.substr(0, 40)) {
          BOOST_TEST(echo(c, s) == s);
          BOOST_TEST(c.query_value<std::string>("SELECT $1", std::string_view(s)) == s);
          BOOST_TEST(c.query_value<std::string>("SELECT $1", s.c_str()) == s);
          BOOST_TEST(c.query_value<long>("SELECT octet_length($1::text)", s) == static_cast<long>(s.size()));
        }
      }
      // A string literal, a char* and a view into the middle of a larger buffer.
      BOOST_TEST(c.query_value<std::string>("SELECT $1", "literal") == "literal");
      std::string buf = "abcdef";
      char* mutable_ptr = buf.data();
      BOOST_TEST(c.query_value<std::string>("SELECT $1", mutable_ptr) == "abcdef");
      BOOST_TEST(c.query_value<std::string>("SELECT $1", std::string_view(buf).substr(1, 3)) == "bcd");

      // The server is handed the statement with $1 in it; the value never enters the SQL text.
      const std::string secret = "'; SELECT 'spliced";
      const std::string sql = "SELECT query FROM pg_stat_activity WHERE pid = pg_backend_pid() AND $1::text <> ''";
      BOOST_TEST(c.query_value<std::string>(sql, secret) == sql);

      // The injection text is stored verbatim and the table survives.
      pqtest::scratch_table tab;
      const std::string evil = "x'); DROP TABLE " + tab.name() + "; --";
      c.execute("INSERT INTO " + tab.name() + " (id, v) VALUES ($1, $2)", 1, evil);
      BOOST_TEST(c.query_value<std::string>("SELECT v FROM " + tab.name() + " WHERE id = $1", 1) == evil);
      BOOST_TEST(tab.count() == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(optional_and_null_parameters) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      BOOST_TEST(echo(c, std::optional<int>(7)) == std::optional<int>(7));
      BOOST_TEST(!echo(c, std::optional<int>()).has_value());
      BOOST_TEST(echo(c, std::optional<std::string>("s")) == std::optional<std::string>("s"));
      BOOST_TEST(!echo(c, std::optional<std::string>()).has_value());
      BOOST_TEST(!echo(c, std::optional<double>()).has_value());

      // A typed NULL keeps the type of T, so the server needs no cast.
      BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::optional<std::int64_t>()) == "bigint");
      BOOST_TEST(c.query_value<bool>("SELECT $1 IS NULL", std::optional<int>()));
      BOOST_TEST(c.query_value<bool>("SELECT $1 IS NULL", std::optional<point>()));

      BOOST_TEST(c.query_value<bool>("SELECT $1::int IS NULL", nullptr));
      BOOST_TEST(c.query_value<bool>("SELECT $1::text IS NULL", std::nullopt));
      BOOST_TEST(c.query_value<bool>("SELECT $1::text IS NULL", static_cast<const char*>(nullptr)));
      BOOST_TEST(!c.query_value<std::optional<int>>("SELECT $1::int", nullptr).has_value());

      // NULL among other parameters keeps the positions straight.
      auto r = c.execute("SELECT $1::int, $2::text, $3::int, $4::text", 1, std::nullopt, std::optional<int>(3),
                         std::optional<std::string>());
      BOOST_TEST(r[0][0].as<int>() == 1);
      BOOST_TEST(r[0][1].is_null());
      BOOST_TEST(r[0][2].as<int>() == 3);
      BOOST_TEST(r[0][3].is_null());
    }
  }
}

// Converted values short enough live in the parameter list's own buffer; a move
// of the list must carry them and repoint at them, long ones stay on the heap.
BOOST_AUTO_TEST_CASE(parameter_lists_keep_their_values_when_moved) {
  using pqscope::detail::param_list;
  const std::string long_text(150, 'x');
  const char unterminated[3] = {'a', 'b', 'c'};
  auto expect = [&](const param_list& p, const std::vector<std::optional<std::string>>& want) {
    BOOST_TEST_REQUIRE(p.size() == static_cast<int>(want.size()));
    for (std::size_t i = 0; i < want.size(); ++i) {
      BOOST_TEST_CONTEXT("parameter " << i + 1) {
        const char* v = p.values()[i];
        BOOST_TEST((v == nullptr) == !want[i].has_value());
        if (v != nullptr && want[i]) BOOST_TEST(std::string(v) == *want[i]);
      }
    }
  };
  const std::vector<std::optional<std::string>> few{"1", "2.5", "abc", std::nullopt, long_text, "-7"};
  std::vector<std::optional<std::string>> many = few;
  for (int i = 0; i < 20; ++i) many.emplace_back(std::to_string(1000000 + i));  // past the inline buffer
  auto make_many = [&] {
    return param_list::of(1, 2.5, unterminated, std::nullopt, long_text, -7, 1000000, 1000001, 1000002, 1000003,
                          1000004, 1000005, 1000006, 1000007, 1000008, 1000009, 1000010, 1000011, 1000012,
                          1000013, 1000014, 1000015, 1000016, 1000017, 1000018, 1000019);
  };

  param_list a = param_list::of(1, 2.5, unterminated, std::nullopt, long_text, -7);
  expect(a, few);
  param_list b(std::move(a));
  a = param_list::of(99);  // the moved-from list is reusable, and overwriting it leaves b alone
  expect(b, few);
  param_list c;
  c = std::move(b);
  b = param_list::of(98);
  expect(c, few);
  expect(a, {"99"});

  param_list d = make_many();
  param_list e(std::move(d));
  d = param_list::of(97);
  expect(e, many);

  // And the server sees the same values after the statement's list has moved.
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection conn{t.conninfo};
      auto r = conn.execute("SELECT $1::int, $2::float8, $3::text, $4::text, $5::text, $6::int, $26::int", 1, 2.5,
                            unterminated, std::nullopt, long_text, -7, 1000000, 1000001, 1000002, 1000003, 1000004,
                            1000005, 1000006, 1000007, 1000008, 1000009, 1000010, 1000011, 1000012, 1000013, 1000014,
                            1000015, 1000016, 1000017, 1000018, 1000019);
      BOOST_TEST(r[0][0].as<int>() == 1);
      BOOST_TEST(r[0][1].as<double>() == 2.5);
      BOOST_TEST(r[0][2].as<std::string>() == "abc");
      BOOST_TEST(r[0][3].is_null());
      BOOST_TEST(r[0][4].as<std::string>() == long_text);
      BOOST_TEST(r[0][5].as<int>() == -7);
      BOOST_TEST(r[0][6].as<int>() == 1000019);
    }
  }
}

BOOST_AUTO_TEST_CASE(user_type_through_value_traits) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      const point p{3, -4};
      BOOST_TEST(echo(c, p) == p);
      BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", p) == "point");
      // The server parsed it as a point: its coordinates are addressable.
      BOOST_TEST(c.query_value<double>("SELECT ($1)[1]", p) == -4.0);
      BOOST_TEST(c.query_value<point>("SELECT point(10, 20)") == (point{10, 20}));
      BOOST_TEST(echo(c, std::optional<point>(p)) == std::optional<point>(p));
      BOOST_TEST(!c.query_value<std::optional<point>>("SELECT NULL::point").has_value());
      // from_text's conversion_error comes out with the column named.
      try {
        (void)c.query_value<point>("SELECT 'nope' AS where_it_was");
        BOOST_ERROR("a bad point was accepted");
      } catch (const pqscope::conversion_error& e) {
        BOOST_TEST(std::string(e.what()).find("where_it_was") != std::string::npos);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(nul_byte_is_refused_before_sending) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      const std::string with_nul("ab\0cd", 5);
      const auto before = c.stats().round_trips;
      BOOST_CHECK_THROW(c.execute("SELECT $1", with_nul), pqscope::usage_error);
      BOOST_CHECK_THROW(c.execute("SELECT $1", std::string_view(with_nul)), pqscope::usage_error);
      BOOST_CHECK_THROW(c.execute("SELECT $1", std::optional<std::string>(with_nul)), pqscope::usage_error);
      BOOST_CHECK_THROW(c.execute("SELECT $1", raw_blob{with_nul}), pqscope::usage_error);
      // Which parameter is at fault is named.
      try {
        c.execute("SELECT $1, $2", 1, with_nul);
        BOOST_ERROR("a NUL byte was accepted");
      } catch (const pqscope::usage_error& e) {
        BOOST_TEST(std::string(e.what()).find("$2") != std::string::npos);
      }
      BOOST_TEST(c.stats().round_trips == before);
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(invalid_utf8_is_a_server_error_and_connection_survives) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      const auto before = c.stats().round_trips;
      try {
        c.execute("SELECT $1::text", std::string("bad \xff\xfe byte"));
        BOOST_ERROR("invalid UTF-8 was accepted");
      } catch (const pqscope::data_exception& e) {
        BOOST_TEST(e.sqlstate() == "22021");
      }
      BOOST_TEST(c.stats().round_trips == before + 1);  // the server, not the library, refused it
      BOOST_TEST(c.query_value<std::string>("SELECT $1", std::string("still fine")) == "still fine");
    }
  }
}

BOOST_AUTO_TEST_CASE(result_shape_and_access) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      auto r = c.execute("SELECT * FROM (VALUES (1, 'one', NULL::int), (2, 'two', 20), (3, 'three', 30)) "
                         "AS v(id, \"Name\", extra) ORDER BY id");
      BOOST_TEST(r.size() == 3u);
      BOOST_TEST(!r.empty());
      BOOST_TEST(r.columns() == 3u);
      BOOST_TEST(r.column_name(0) == "id");
      BOOST_TEST(r.column_name(1) == "Name");
      BOOST_TEST(r.column_index("extra") == 2u);
      BOOST_TEST(r.column_index("Name") == 1u);
      BOOST_CHECK_THROW((void)r.column_index("name"), pqscope::usage_error);  // case-sensitive

      BOOST_TEST(r[1][0].as<int>() == 2);
      BOOST_TEST(r[2][1].as<std::string>() == "three");
      BOOST_TEST(r[0]["Name"].as<std::string>() == "one");
      BOOST_TEST(r[2]["extra"].as<long>() == 30L);
      BOOST_TEST(r[1][1].text() == "two");
      BOOST_TEST(r[1][1].name() == "Name");
      BOOST_TEST(r[1].size() == 3u);
      BOOST_TEST(r[1].index() == 1u);

      std::vector<int> ids;
      std::vector<std::string> names;
      for (const auto& row : r) {
        ids.push_back(row[0].as<int>());
        names.push_back(row["Name"].as<std::string>());
      }
      BOOST_TEST(ids == (std::vector<int>{1, 2, 3}), boost::test_tools::per_element());
      BOOST_TEST(names == (std::vector<std::string>{"one", "two", "three"}), boost::test_tools::per_element());

      auto [id, name, extra] = r[0].as<int, std::string, std::optional<long>>();
      BOOST_TEST(id == 1);
      BOOST_TEST(name == "one");
      BOOST_TEST(!extra.has_value());
      BOOST_TEST(std::get<2>(r[1].as<int, std::string, std::optional<long>>()) == std::optional<long>(20));
      BOOST_CHECK_THROW((void)r[0].as<int>(), pqscope::usage_error);
      BOOST_CHECK_THROW((void)(r[0].as<int, std::string, int, int>()), pqscope::usage_error);

      auto none = c.execute("SELECT 1 AS a WHERE false");
      BOOST_TEST(none.size() == 0u);
      BOOST_TEST(none.empty());
      BOOST_TEST(none.columns() == 1u);
      int seen = 0;
      for (const auto& row : none) seen += static_cast<int>(row.size());
      BOOST_TEST(seen == 0);
    }
  }
}

BOOST_AUTO_TEST_CASE(access_errors_are_usage_errors) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      auto r = c.execute("SELECT 1 AS a, 2 AS b");
      try {
        (void)r[0]["no_such_column"];
        BOOST_ERROR("unknown column accepted");
      } catch (const pqscope::usage_error& e) {
        BOOST_TEST(std::string(e.what()).find("no_such_column") != std::string::npos);
      }
      BOOST_CHECK_THROW((void)r[1], pqscope::usage_error);
      BOOST_CHECK_THROW((void)r[0][2], pqscope::usage_error);
      BOOST_CHECK_THROW((void)r.column_name(2), pqscope::usage_error);
      BOOST_CHECK_THROW((void)r.column_index("c"), pqscope::usage_error);
      pqscope::result empty;
      BOOST_TEST(empty.size() == 0u);
      BOOST_CHECK_THROW((void)empty[0], pqscope::usage_error);
    }
  }
}

BOOST_AUTO_TEST_CASE(affected_rows_counts_writes) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      pqtest::scratch_table tab;
      auto ins = c.execute("INSERT INTO " + tab.name() + " (id, v) SELECT g, 'v' FROM generate_series(1, 5) g");
      BOOST_TEST(ins.affected_rows() == 5u);
      BOOST_TEST(ins.command() == "INSERT 0 5");
      BOOST_TEST(c.execute("UPDATE " + tab.name() + " SET v = 'w' WHERE id <= $1", 3).affected_rows() == 3u);
      BOOST_TEST(c.execute("UPDATE " + tab.name() + " SET v = 'w' WHERE id > 100").affected_rows() == 0u);
      BOOST_TEST(c.execute("DELETE FROM " + tab.name() + " WHERE id IN ($1, $2)", 1, 2).affected_rows() == 2u);
      BOOST_TEST(c.execute("CREATE INDEX ON " + tab.name() + " (v)").affected_rows() == 0u);
      BOOST_TEST(tab.count() == 3);
    }
  }
}

BOOST_AUTO_TEST_CASE(field_conversions) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      auto r = c.execute("SELECT NULL::int AS n, 70000 AS big, 'abc' AS word, true AS yes, false AS no, "
                         "'NaN'::float8 AS nan, '12abc' AS tail, 2.5 AS frac, -1 AS neg");
      const auto row = r[0];
      BOOST_TEST(row["n"].is_null());
      BOOST_TEST(!row["big"].is_null());
      BOOST_TEST(!row["n"].as<std::optional<int>>().has_value());
      BOOST_TEST(row["big"].as<std::optional<int>>() == std::optional<int>(70000));
      BOOST_CHECK_THROW((void)row["n"].as<int>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["n"].as<std::string>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["big"].as<std::int16_t>(), pqscope::conversion_error);
      BOOST_TEST(row["big"].as<std::int32_t>() == 70000);
      BOOST_CHECK_THROW((void)row["word"].as<int>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["tail"].as<int>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["frac"].as<int>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["neg"].as<unsigned>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["word"].as<bool>(), pqscope::conversion_error);
      BOOST_CHECK_THROW((void)row["word"].as<double>(), pqscope::conversion_error);
      BOOST_TEST(row["yes"].as<bool>() == true);
      BOOST_TEST(row["no"].as<bool>() == false);
      BOOST_TEST(row["yes"].text() == "t");
      BOOST_TEST(std::isnan(row["nan"].as<double>()));
      BOOST_TEST(row["frac"].as<double>() == 2.5);
      // The message names the column and the range that was exceeded.
      try {
        (void)row["big"].as<std::int16_t>();
      } catch (const pqscope::conversion_error& e) {
        const std::string msg = e.what();
        BOOST_TEST(msg.find("70000") != std::string::npos);
        BOOST_TEST(msg.find("big") != std::string::npos);
      }
      try {
        (void)row["n"].as<int>();
      } catch (const pqscope::conversion_error& e) {
        BOOST_TEST(std::string(e.what()).find("NULL") != std::string::npos);
      }
    }
  }
}

BOOST_AUTO_TEST_CASE(query_value_needs_one_row_one_column) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      BOOST_TEST(c.query_value<int>("SELECT 42") == 42);
      auto message_of = [&](const char* sql) -> std::string {
        try {
          (void)c.query_value<int>(sql);
        } catch (const pqscope::conversion_error& e) {
          return e.what();
        }
        return "no conversion_error";
      };
      const std::string zero = message_of("SELECT 1 WHERE false");
      BOOST_TEST(zero.find("0 row(s) of 1 column(s)") != std::string::npos, zero);
      const std::string two_rows = message_of("SELECT * FROM generate_series(1, 2)");
      BOOST_TEST(two_rows.find("2 row(s) of 1 column(s)") != std::string::npos, two_rows);
      const std::string two_cols = message_of("SELECT 1, 2");
      BOOST_TEST(two_cols.find("1 row(s) of 2 column(s)") != std::string::npos, two_cols);
      BOOST_TEST(!c.query_value<std::optional<int>>("SELECT NULL::int").has_value());
      BOOST_CHECK_THROW((void)c.query_value<int>("SELECT NULL::int"), pqscope::conversion_error);
    }
  }
}

// A view is taken only from a result something keeps: a named result, row or field.
// From a temporary result (conn.execute(...)[0][0]) as<std::string_view>() does not
// compile (tests/compile_fail/), and text() and command() hand out copies. Under
// ASan a view into a freed result fails here.
BOOST_AUTO_TEST_CASE(views_only_from_a_result_that_is_kept) {
  pqtest::for_each_target([&](const pqtest::target& t) {
    connection c{t.conninfo};
    const auto r = c.execute("SELECT 'kept' AS v");
    const std::string_view v = r[0][0].as<std::string_view>();
    const auto row = c.execute("SELECT 'row'")[0];  // a named row shares its result
    const std::string_view rv = row[0].as<std::string_view>();
    const auto f = c.execute("SELECT 'field'")[0][0];
    const std::string_view fv = f.as<std::string_view>();
    const auto text = c.execute("SELECT 'copy'")[0][0].text();
    static_assert(std::is_same_v<decltype(text), const std::string>);
    const auto tag = c.execute("SELECT 1").command();
    static_assert(std::is_same_v<decltype(tag), const std::string>);
    const auto name = c.execute("SELECT 1 AS named").column_name(0);
    static_assert(std::is_same_v<decltype(name), const std::string>);
    BOOST_TEST(c.execute("SELECT 'x'")[0][0].as<std::string>() == "x");
    BOOST_TEST(c.execute("SELECT 5")[0]["?column?"].as<int>() == 5);
    BOOST_TEST(std::get<1>(c.execute("SELECT 1, 'y'")[0].as<int, std::string>()) == "y");
    (void)c.execute("SELECT repeat('z', 40)");  // memory freed above may be reused here
    BOOST_TEST(v == "kept");
    BOOST_TEST(rv == "row");
    BOOST_TEST(fv == "field");
    BOOST_TEST(text == "copy");
    BOOST_TEST(tag == "SELECT 1");
    BOOST_TEST(name == "named");
  });
}

BOOST_AUTO_TEST_CASE(results_outlive_the_connection) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::result r;
      std::optional<pqscope::field> f;
      {
        connection c{t.conninfo};
        r = c.execute("SELECT g AS n, 'row ' || g AS label FROM generate_series(1, 3) g ORDER BY g");
        auto other = c.execute("SELECT 'kept' AS k");
        f.emplace(other[0][0]);
      }  // connection and `other` are gone
      BOOST_TEST(r.size() == 3u);
      BOOST_TEST(r[2]["label"].as<std::string>() == "row 3");
      BOOST_TEST(f->as<std::string>() == "kept");
      BOOST_TEST(f->name() == "k");
      // A row keeps its result alive on its own too.
      std::optional<pqscope::row> row;
      {
        pqscope::result copy = r;
        row.emplace(copy[1]);
        r = pqscope::result{};
      }
      BOOST_TEST((*row)["n"].as<int>() == 2);
      BOOST_TEST(r.empty());
    }
  }
}

BOOST_AUTO_TEST_CASE(every_error_derives_from_pqscope_error) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      connection c{t.conninfo};
      int caught = 0;
      auto expect_base = [&](auto&& fn) {
        try {
          fn();
        } catch (const pqscope::error&) {
          ++caught;
        }
      };
      expect_base([&] { c.execute("SELECT $1", std::string("a\0b", 3)); });             // usage_error
      expect_base([&] { (void)c.query_value<int>("SELECT 'x'"); });                     // conversion_error
      expect_base([&] { c.execute("SELECT $1::text", std::string("\xc3")); });          // data_exception
      expect_base([&] { c.execute("SELECT * FROM no_such_table_pqscope_values"); });   // sql_error
      expect_base([&] { (void)c.execute("SELECT 1")[5]; });                             // usage_error
      BOOST_TEST(caught == 5);
      static_assert(std::is_base_of_v<pqscope::error, pqscope::usage_error>);
      static_assert(std::is_base_of_v<pqscope::error, pqscope::conversion_error>);
      static_assert(std::is_base_of_v<pqscope::error, pqscope::connection_error>);
      static_assert(std::is_base_of_v<pqscope::sql_error, pqscope::data_exception>);
      static_assert(std::is_base_of_v<pqscope::error, pqscope::sql_error>);
    }
  }
}
