#define BOOST_TEST_MODULE mapping
#include <boost/test/unit_test.hpp>

// C++ types mapped onto a schema in one declaration each: enums onto PostgreSQL enum
// types (pqscope_enum), rows onto structs (PQSCOPE_FIELDS). Every label, tricky ones
// included, through parameters, results, arrays and COPY, blocking and asio, on every
// target; rows by name and by position, with every mismatch refused by an error that
// names the column.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

using pqtest::for_each_target;

namespace shop {

// Labels that need quoting in an array literal or escaping in COPY, a label that an
// array literal would read as NULL unquoted, non-ASCII, and PostgreSQL's longest (63 bytes).
enum class status : std::uint8_t { pending, paid, shipped, quoted, spaced, null_word, unicode, longest };
constexpr auto pqscope_enum(status) {
  return pqscope::enum_labels<status>({{status::pending, "pending"},
                                       {status::paid, "paid"},
                                       {status::shipped, "shipped"},
                                       {status::quoted, "say \"hi\", {x} \\ y"},
                                       {status::spaced, " with spaces "},
                                       {status::null_word, "NULL"},
                                       {status::unicode, "bezahlt \xc3\xbc \xe2\x82\xac"},
                                       {status::longest, "a23456789b123456789c123456789d123456789e123456789f123456789g12"}});
}
const std::vector<status> all_statuses{status::pending, status::paid,      status::shipped, status::quoted,
                                       status::spaced,  status::null_word, status::unicode, status::longest};

struct order {
  std::int64_t id = 0;
  std::string customer;
  pqscope::numeric total;
  std::optional<std::string> note;
  std::vector<int> tags;
  status state = status::pending;
  std::optional<pqscope::timestamptz> shipped_at;
};
PQSCOPE_FIELDS(order, id, customer, total, note, tags, state, shipped_at)

struct pair {
  int a = 0;
  std::optional<std::int16_t> b;
};
PQSCOPE_FIELDS(pair, a, b)

}  // namespace shop

namespace {

// A CREATE TYPE of the test's own with the labels of shop::status, dropped at the end.
struct scratch_enum {
  std::string name = pqtest::unique_name("pqscope_status");
  scratch_enum() {
    std::string labels;
    for (const shop::status s : shop::all_statuses) {
      std::string l(pqscope::value_traits<shop::status>::to_text(s));
      std::string quoted;
      for (const char ch : l) quoted += ch == '\'' ? std::string("''") : std::string(1, ch);
      labels += (labels.empty() ? "'" : ", '") + quoted + "'";
    }
    pqtest::shared_observer().execute("CREATE TYPE " + name + " AS ENUM (" + labels + ")");
  }
  ~scratch_enum() {
    try {
      pqtest::shared_observer().execute("DROP TYPE IF EXISTS " + name + " CASCADE");
    } catch (...) {
    }
  }
  scratch_enum(const scratch_enum&) = delete;
  scratch_enum& operator=(const scratch_enum&) = delete;
};

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const pqscope::error& e) {
    return e.what();
  }
  return "(no error)";
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

BOOST_AUTO_TEST_CASE(enum_labels_round_trip_everywhere) {
  scratch_enum type;
  pqtest::scratch_table table{"id int PRIMARY KEY, s " + type.name + ", ss " + type.name + "[]"};
  using shop::status;
  // The mapping is the server's type: the same labels in the same order.
  std::vector<std::string> labels;
  for (const status s : shop::all_statuses) labels.emplace_back(pqscope::value_traits<status>::to_text(s));
  const auto server_labels = pqtest::shared_observer().query_value<std::vector<std::string>>(
      "SELECT enum_range(NULL::" + type.name + ")::text[]");
  BOOST_TEST(server_labels == labels, boost::test_tools::per_element());

  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    const std::size_t n = shop::all_statuses.size();
    for (std::size_t i = 0; i < n; ++i) {
      const status s = shop::all_statuses[i];
      BOOST_TEST((c.query_value<status>("SELECT $1::" + type.name, s) == s));
      // The server's own text for the label is ours.
      BOOST_TEST(c.query_value<std::string>("SELECT $1::" + type.name + "::text", s) == labels[i]);
      c.execute("INSERT INTO " + table.name() + " VALUES ($1, $2, $3)", static_cast<int>(i), s,
                std::vector<std::optional<status>>{s, std::nullopt, shop::all_statuses[(i + 1) % n]});
    }
    // Arrays of every label, NULL among them, both ways.
    std::vector<std::optional<status>> every(shop::all_statuses.begin(), shop::all_statuses.end());
    every.insert(every.begin() + 3, std::nullopt);
    BOOST_TEST((c.query_value<std::vector<std::optional<status>>>("SELECT $1::" + type.name + "[]", every) == every));
    BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE ss[1] = s AND ss[2] IS NULL") ==
               static_cast<long>(n));
    const pqscope::result r = c.execute("SELECT id, s, ss FROM " + table.name() + " ORDER BY s");
    for (std::size_t i = 0; i < r.size(); ++i) {  // ordered as the server orders the type: declaration order
      BOOST_TEST((r[i][1].as<status>() == shop::all_statuses[i]));
      BOOST_TEST((r[i][2].as<std::vector<std::optional<status>>>()[2] == shop::all_statuses[(i + 1) % n]));
    }
    // COPY both ways.
    pqtest::empty(table);
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, s, ss) FROM STDIN");
      for (std::size_t i = 0; i < n; ++i)
        w.write_row(static_cast<int>(i), shop::all_statuses[i], std::vector<status>{shop::all_statuses[i]});
      BOOST_TEST(w.finish() == n);
    }
    BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE ss[1] = s") ==
               static_cast<long>(n));
    auto reader = c.copy_out("COPY (SELECT id, s FROM " + table.name() + ") TO STDOUT");
    std::size_t read = 0;
    while (auto row = reader.next<int, status>()) {
      BOOST_TEST((std::get<1>(*row) == shop::all_statuses[static_cast<std::size_t>(std::get<0>(*row))]));
      ++read;
    }
    BOOST_TEST(read == n);
    // And on the asio connection.
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      for (const status s : shop::all_statuses)
        BOOST_TEST(((co_await a.async_query_value<status>({"SELECT $1::" + type.name, s}, pqtest::use_awaitable)) ==
                    s));
      const pqscope::result ar =
          co_await a.async_execute({"SELECT s FROM " + table.name() + " ORDER BY s"}, pqtest::use_awaitable);
      BOOST_TEST(ar.size() == n);
      BOOST_TEST((ar[n - 1][0].as<status>() == status::longest));
    }());
  });
}

BOOST_AUTO_TEST_CASE(labels_outside_the_mapping_are_refused) {
  pqscope::connection& c = pqtest::shared_observer();
  // A label the server has and the mapping lacks (a value added later, say).
  const std::string e = error_of([&] { (void)c.query_value<shop::status>("SELECT 'refunded'::text AS state"); });
  BOOST_TEST(contains(e, "\"refunded\""), e);
  BOOST_TEST(contains(e, "column \"state\""), e);
  BOOST_TEST(contains(e, "pending, paid, shipped"), e);
  // A value the mapping lacks, sent.
  const std::string sent = error_of([&] { (void)c.query_value<std::string>("SELECT $1", static_cast<shop::status>(42)); });
  BOOST_TEST(contains(sent, "42"), sent);
  BOOST_TEST(contains(sent, "has no label"), sent);
}

BOOST_AUTO_TEST_CASE(rows_fill_structs_by_name_and_by_position) {
  scratch_enum type;
  pqtest::scratch_table table{"id bigint PRIMARY KEY, customer text NOT NULL, total numeric(12,2), note text, "
                              "tags int[], state " + type.name + ", shipped_at timestamptz"};
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    const auto when = pqscope::timestamptz::from_micros_since_2000(789'000'000'123'456);
    c.execute("INSERT INTO " + table.name() + " VALUES (1, 'ada', 12.50, NULL, '{1,2}', 'paid', NULL), "
              "(2, 'bob', 0.10, 'gift', '{}', $1, $2)", shop::status::quoted, when);
    // By name: the columns in any order.
    const pqscope::result r = c.execute("SELECT state, shipped_at, tags, note, total, customer, id FROM " +
                                        table.name() + " ORDER BY id");
    const std::vector<shop::order> orders = r.to_vector<shop::order>();
    BOOST_REQUIRE(orders.size() == 2u);
    BOOST_TEST(orders[0].id == 1);
    BOOST_TEST(orders[0].customer == "ada");
    BOOST_TEST(orders[0].total.str() == "12.50");
    BOOST_TEST(!orders[0].note.has_value());
    BOOST_TEST((orders[0].tags == std::vector<int>{1, 2}));
    BOOST_TEST((orders[0].state == shop::status::paid));
    BOOST_TEST(!orders[0].shipped_at.has_value());
    BOOST_TEST(orders[1].note.value_or("") == "gift");
    BOOST_TEST((orders[1].state == shop::status::quoted));
    BOOST_TEST((orders[1].shipped_at == when));
    BOOST_TEST((r[1].to<shop::order>().customer == "bob"));
    // By position: the listed order, whatever the columns are called.
    const auto p = c.execute("SELECT id AS a, customer AS b, total, note, tags, state, shipped_at FROM " +
                             table.name() + " WHERE id = 2")[0].to<shop::order>(pqscope::by_position);
    BOOST_TEST(p.customer == "bob");
    BOOST_TEST((p.state == shop::status::quoted));
    // Integers of any width read into a wider or narrower member, the value checked.
    const auto small = c.execute("SELECT 7::bigint AS a, 300::int AS b")[0].to<shop::pair>();
    BOOST_TEST(small.a == 7);
    BOOST_TEST(small.b.value_or(0) == 300);
    // And from the asio connection's results.
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      const pqscope::result ar = co_await a.async_execute(
          {"SELECT * FROM " + table.name() + " ORDER BY id"}, pqtest::use_awaitable);
      const auto v = ar.to_vector<shop::order>(pqscope::by_position);
      BOOST_TEST(v.size() == 2u);
      BOOST_TEST((v.size() == 2u && v[1].shipped_at == when));
    }());
  });
}

BOOST_AUTO_TEST_CASE(every_mismatch_names_the_column) {
  pqscope::connection& c = pqtest::shared_observer();
  const auto to_pair = [&](const std::string& sql) { return error_of([&] { (void)c.execute(sql)[0].to<shop::pair>(); }); };
  const auto by_position = [&](const std::string& sql) {
    return error_of([&] { (void)c.execute(sql).to_vector<shop::pair>(pqscope::by_position); });
  };
  // A member without a column: names the member and lists the columns.
  std::string e = to_pair("SELECT 1 AS a, 2 AS c");
  BOOST_TEST(contains(e, "no column named \"b\" for pair::b (columns: a, c)"), e);
  // A column without a member.
  e = to_pair("SELECT 1 AS a, 2::smallint AS b, 3 AS extra");
  BOOST_TEST(contains(e, "the column \"extra\" fills no member"), e);
  // Two columns of one name.
  e = to_pair("SELECT 1 AS a, 2 AS b, 3 AS a");
  BOOST_TEST(contains(e, "two columns named \"a\""), e);
  // By position, the count.
  e = by_position("SELECT 1, 2, 3");
  BOOST_TEST(contains(e, "reads 2 column(s) (a, b) but the result has 3"), e);
  // A column type the member does not read, checked before any value.
  e = to_pair("SELECT '5'::text AS a, 2 AS b");
  BOOST_TEST(contains(e, "column \"a\" is text, which pair::a (sent as integer) does not read"), e);
  e = to_pair("SELECT 5 AS a, now() AS b");
  BOOST_TEST(contains(e, "column \"b\" is timestamp with time zone"), e);
  // A value that does not fit, and a NULL in a member that cannot hold one: the column named.
  e = to_pair("SELECT 5 AS a, 70000 AS b");
  BOOST_TEST(contains(e, "column \"b\""), e);
  e = to_pair("SELECT NULL::int AS a, 1 AS b");
  BOOST_TEST(contains(e, "column \"a\" of row 0 is NULL"), e);
  // An empty result gives no rows, but the columns are still checked.
  BOOST_TEST(c.execute("SELECT 1 AS a, 2 AS b WHERE false").to_vector<shop::pair>().empty());
  BOOST_CHECK_THROW((void)c.execute("SELECT 1 AS a WHERE false").to_vector<shop::pair>(), pqscope::usage_error);
  BOOST_CHECK_THROW((void)c.execute("SELECT 'x'::text AS a, 1 AS b").to_vector<shop::pair>(),
                    pqscope::conversion_error);
}
