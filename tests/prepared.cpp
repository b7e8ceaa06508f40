// Named prepared statements at the driver contract (statement::name, statement::parse,
// reply::parsed): a Parse rides in the same batch as its first execution, later
// batches bind the name only; a failed Parse answers for its statement. Both drivers
// (the blocking libpq_driver and the asio link), directly and through PgBouncer 1.24,
// which tracks protocol-level prepared statements in transaction pooling, with a pool
// of one server connection shared by several clients. PgBouncer 1.18 does not track
// them: two clients that use the same name collide on the one server connection.

#define BOOST_TEST_MODULE prepared
#include <boost/test/unit_test.hpp>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <pqscope/asio.hpp>
#include <boost/asio/io_context.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

namespace net = boost::asio;

namespace {

struct route {
  std::string name, conninfo;
};

// Direct, and PgBouncer 1.24's pool of four and pool of one (when it runs).
std::vector<route> routes() {
  std::vector<route> all{{"direct", pqtest::env("PQSCOPE_TEST_DIRECT")}};
  if (const char* b = std::getenv("PQSCOPE_TEST_PGBOUNCER124"); b != nullptr && *b != '\0') {
    all.push_back({"pgbouncer-1.24", b});
    all.push_back({"pgbouncer-1.24 pool of one", pqtest::env("PQSCOPE_TEST_PGBOUNCER124_POOL1")});
  } else {
    BOOST_TEST_MESSAGE("PgBouncer 1.24 is not running (scripts/dev.sh servers --pgbouncer124): direct only");
  }
  return all;
}

// One statement and its parameter values, owned.
struct stmt {
  std::string sql, name;
  bool parse = false;
  std::vector<std::string> args;
  std::vector<const char*> values = {};  // filled by get()
  pqscope::statement get() {
    values.clear();
    for (const std::string& a : args) values.push_back(a.c_str());
    pqscope::statement s{sql.c_str(), static_cast<int>(values.size()), values.empty() ? nullptr : values.data(),
                         nullptr};
    if (!name.empty()) s.name = name.c_str();
    s.parse = parse;
    return s;
  }
};

std::vector<pqscope::statement> batch_of(std::vector<stmt>& ss) {
  std::vector<pqscope::statement> out;
  for (stmt& s : ss) out.push_back(s.get());
  return out;
}

std::string value_of(const pqscope::reply& r) {
  if (r.st != pqscope::reply::status::ok) return "not ok: " + r.failure().sqlstate + " " + r.failure().message;
  return std::string(r.res[0][0].text());
}

// What both drivers must answer, given a way to run one batch.
template <class Exchange>
void check_named_statements(Exchange&& exchange, const std::string& prefix) {
  // First use: the Parse and the execution in one batch.
  std::vector<stmt> first{{"SELECT $1::int + 1", prefix + "add", true, {"1"}}};
  pqscope::batch_reply br = exchange(batch_of(first));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(br.replies.at(0).parsed);
  BOOST_TEST(value_of(br.replies[0]) == "2");
  BOOST_TEST((br.state == pqscope::server_state::idle));
  // Later batches bind the name only, also twice in one batch and inside a transaction.
  std::vector<stmt> again{{"BEGIN", "", false, {}},
                          {"SELECT $1::int + 1", prefix + "add", false, {"41"}},
                          {"SELECT $1::int + 1", prefix + "add", false, {"99"}},
                          {"COMMIT", "", false, {}}};
  br = exchange(batch_of(again));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(!br.replies.at(1).parsed);
  BOOST_TEST(value_of(br.replies[1]) == "42");
  BOOST_TEST(value_of(br.replies[2]) == "100");
  // A Parse and a second execution of the new name in the same batch.
  std::vector<stmt> both{{"SELECT $1::text || '!'", prefix + "bang", true, {"a"}},
                         {"SELECT $1::text || '!'", prefix + "bang", false, {"b"}}};
  br = exchange(batch_of(both));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(value_of(br.replies.at(0)) == "a!");
  BOOST_TEST(value_of(br.replies.at(1)) == "b!");
  // A Parse the server refuses answers for its statement; what follows is skipped,
  // what came before stands, and the session goes on.
  std::vector<stmt> bad{{"SELECT 1", "", false, {}},
                        {"SELEC 1", prefix + "typo", true, {}},
                        {"SELECT 2", "", false, {}}};
  br = exchange(batch_of(bad));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(value_of(br.replies.at(0)) == "1");
  BOOST_TEST((br.replies.at(1).st == pqscope::reply::status::error));
  BOOST_TEST(br.replies[1].failure().sqlstate == "42601");
  BOOST_TEST(!br.replies[1].parsed);
  BOOST_TEST((br.replies.at(2).st == pqscope::reply::status::skipped));
  BOOST_TEST((br.state == pqscope::server_state::idle));
  // An execution that fails behind a Parse that succeeded: the name exists.
  std::vector<stmt> div{{"SELECT 1 / $1::int", prefix + "div", true, {"0"}}};
  br = exchange(batch_of(div));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(br.replies.at(0).parsed);
  BOOST_TEST(br.replies[0].failure().sqlstate == "22012");
  std::vector<stmt> div_again{{"SELECT 1 / $1::int", prefix + "div", false, {"1"}}};
  br = exchange(batch_of(div_again));
  BOOST_TEST(value_of(br.replies.at(0)) == "1");
  // The first statement still answers.
  std::vector<stmt> last{{"SELECT $1::int + 1", prefix + "add", false, {"0"}}};
  br = exchange(batch_of(last));
  BOOST_TEST(value_of(br.replies.at(0)) == "1");
}

}  // namespace

BOOST_AUTO_TEST_CASE(blocking_driver) {
  for (const route& r : routes()) {
    BOOST_TEST_CONTEXT(r.name) {
      pqscope::libpq_driver d;
      d.open(r.conninfo, "prepared test");
      check_named_statements([&](const std::vector<pqscope::statement>& b) { return d.exchange(b); }, "pqs_t_");
    }
  }
}

BOOST_AUTO_TEST_CASE(asio_link) {
  for (const route& r : routes()) {
    BOOST_TEST_CONTEXT(r.name) {
      net::io_context io;
      auto l = std::make_shared<pqscope::asio::detail::link>(io.get_executor());
      pqtest::run_coro(io, [&]() -> pqtest::awaitable<void> {
        co_await pqscope::asio::detail::async_open(l, r.conninfo, "prepared test", pqtest::use_awaitable);
      }());
      check_named_statements(
          [&](const std::vector<pqscope::statement>& b) {
            return pqtest::run_coro(io, [&]() -> pqtest::awaitable<pqscope::batch_reply> {
              co_return co_await pqscope::asio::detail::async_exchange(l, b, pqtest::use_awaitable);
            }());
          },
          "pqs_a_");
      l->close();
    }
  }
}

// Several clients on one server connection, each with statements of the same names
// and different texts, interleaved: PgBouncer 1.24 renames them per server
// connection, so every client gets its own statement's answer.
BOOST_AUTO_TEST_CASE(one_server_connection_many_clients) {
  const char* pool1 = std::getenv("PQSCOPE_TEST_PGBOUNCER124_POOL1");
  if (pool1 == nullptr || *pool1 == '\0') {
    BOOST_TEST_MESSAGE("skipped: PgBouncer 1.24 is not running");
    return;
  }
  constexpr int clients = 8;
  std::vector<std::unique_ptr<pqscope::libpq_driver>> ds;
  for (int c = 0; c < clients; ++c) {
    ds.push_back(std::make_unique<pqscope::libpq_driver>());
    ds.back()->open(pool1, "prepared test");
  }
  for (int round = 0; round < 3; ++round) {
    for (int c = 0; c < clients; ++c) {
      std::vector<stmt> s{{"SELECT $1::int * " + std::to_string(c + 1), "pqs_same", round == 0, {"10"}}};
      const pqscope::batch_reply br = ds[c]->exchange(batch_of(s));
      BOOST_REQUIRE(!br.lost);
      BOOST_TEST(value_of(br.replies.at(0)) == std::to_string(10 * (c + 1)), "client " << c << ", round " << round);
    }
  }
}

// PgBouncer 1.18 does not track them: its one server connection holds the first
// client's statement, and the second client's Parse of the same name collides.
BOOST_AUTO_TEST_CASE(pgbouncer_1_18_does_not_track_them) {
  const std::string pool1 = pqtest::env("PQSCOPE_TEST_PGBOUNCER_POOL1");
  pqscope::libpq_driver a, b;
  a.open(pool1, "prepared test");
  b.open(pool1, "prepared test");
  const std::string name = pqtest::unique_name("pqs_collide");
  std::vector<stmt> s{{"SELECT 1", name, true, {}}};
  pqscope::batch_reply br = a.exchange(batch_of(s));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(value_of(br.replies.at(0)) == "1");
  br = b.exchange(batch_of(s));
  BOOST_REQUIRE(!br.lost);
  BOOST_TEST(br.replies.at(0).failure().sqlstate == "42P05");  // duplicate_prepared_statement
  // Clean up the server connection for the next client.
  std::vector<stmt> drop{{"DEALLOCATE " + name, "", false, {}}};
  (void)a.exchange(batch_of(drop));
}

// ---- prepare::automatic: the scope machine names statements ----------------------------

namespace {

pqscope::connection_options direct_options() {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;
  return o;
}

long prepared_on_server(pqscope::connection& c) {
  return c.query_value<long>("SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE name LIKE 'pqs%'");
}

}  // namespace

// Directly, a text is prepared on its second run, in the same round trip; later runs
// bind it. Results and round trips are those of unnamed statements.
BOOST_AUTO_TEST_CASE(automatic_on_direct_connections) {
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_DIRECT"), direct_options()};
  for (int i = 1; i <= 5; ++i) {
    const auto before = c.stats().round_trips;
    BOOST_TEST(c.query_value<int>("SELECT $1::int * 2", i) == 2 * i);
    BOOST_TEST(c.stats().round_trips - before == 1u);
  }
  BOOST_TEST(c.stats().prepared == 1u);
  BOOST_TEST(prepared_on_server(c) == 1);
  // Other parameter types are another statement.
  BOOST_TEST(c.query_value<std::string>("SELECT $1::int * 2", std::string("7")) == "14");
  BOOST_TEST(c.query_value<std::string>("SELECT $1::int * 2", std::string("8")) == "16");
  // Batched and nested.
  pqscope::transaction_options batched;
  batched.batch = true;
  pqscope::atomic(c, batched, [&] {
    pqscope::atomic(c, [&] { BOOST_TEST(c.query_value<int>("SELECT $1::int * 2", 10) == 20); });
  });
  // prepare::never: nothing.
  pqscope::connection_options never = direct_options();
  never.prepare = pqscope::prepare::never;
  pqscope::connection n{pqtest::env("PQSCOPE_TEST_DIRECT"), never};
  for (int i = 0; i < 3; ++i) BOOST_TEST(n.query_value<int>("SELECT $1::int * 2", i) == 2 * i);
  BOOST_TEST(n.stats().prepared == 0u);
  BOOST_TEST(prepared_on_server(n) == 0);
}

// Under pooling::transaction nothing is prepared unless the pooler is said to track
// prepared statements; through PgBouncer 1.24, 32 clients on one server connection
// then share it with named statements of the same names and other texts.
BOOST_AUTO_TEST_CASE(pooled_only_with_the_claim) {
  const char* pool1 = std::getenv("PQSCOPE_TEST_PGBOUNCER124_POOL1");
  if (pool1 == nullptr || *pool1 == '\0') {
    BOOST_TEST_MESSAGE("skipped: PgBouncer 1.24 is not running");
    return;
  }
  {
    pqscope::connection c{pool1};
    for (int i = 0; i < 3; ++i) BOOST_TEST(c.query_value<int>("SELECT $1::int + 1", i) == i + 1);
    BOOST_TEST(c.stats().prepared == 0u);
  }
  pqscope::connection_options claim;
  claim.pooler_max_prepared_statements = 200;
  std::vector<std::unique_ptr<pqscope::connection>> cs;
  for (int k = 0; k < 32; ++k) cs.push_back(std::make_unique<pqscope::connection>(pool1, claim));
  for (int round = 0; round < 4; ++round) {
    for (int k = 0; k < 32; ++k) {
      pqscope::connection& c = *cs[static_cast<std::size_t>(k)];
      const std::string own = "SELECT $1::int * " + std::to_string(k + 1);
      pqscope::atomic(c, [&] {
        BOOST_TEST(c.query_value<int>("SELECT $1::int + 1", round) == round + 1);
        BOOST_TEST(c.query_value<int>(own, round) == round * (k + 1));
      });
    }
  }
  for (auto& c : cs) BOOST_TEST(c->stats().prepared == 2u);
}

// After DDL that changes a cached statement's result type the server refuses it once
// (0A000); the text gets a new name and runs again. After DISCARD ALL the names are
// gone (26000 once), and preparing starts over.
BOOST_AUTO_TEST_CASE(ddl_and_discard) {
  pqtest::scratch_table table;
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_DIRECT"), direct_options()};
  c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
  const std::string all = "SELECT * FROM " + table.name();
  for (int i = 0; i < 3; ++i) BOOST_TEST(c.execute(all)[0].size() == 2u);
  c.execute("ALTER TABLE " + table.name() + " ADD COLUMN w int");
  BOOST_CHECK_THROW(c.execute(all), pqscope::sql_error);
  BOOST_TEST(c.execute(all)[0].size() == 3u);
  BOOST_TEST(c.execute(all)[0].size() == 3u);
  c.execute(pqscope::allow_session_state("DISCARD ALL"));
  BOOST_CHECK_THROW(c.execute(all), pqscope::sql_error);
  for (int i = 0; i < 3; ++i) BOOST_TEST(c.execute(all)[0].size() == 3u);
  BOOST_TEST(prepared_on_server(c) == 1);
}
