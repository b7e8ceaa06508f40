// Named prepared statements at the driver contract (statement::name, statement::parse,
// reply::parsed): a Parse rides in the same batch as its first execution, later
// batches bind the name only; a failed Parse answers for its statement. Both drivers
// (the blocking libpq_driver and the asio link), directly and through PgBouncer 1.24,
// which tracks protocol-level prepared statements in transaction pooling, with a pool
// of one server connection shared by several clients. PgBouncer 1.18 does not track
// them: two clients that use the same name collide on the one server connection.

#define BOOST_TEST_MODULE prepared
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <utility>
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
  // Not counting itself: run again, this text is prepared too.
  return c.query_value<long>(
      "SELECT count(*) FROM pg_catalog.pg_prepared_statements WHERE name LIKE 'pqs%' "
      "AND statement NOT LIKE '%pg_prepared_statements%'");
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

// ---- losing a prepared statement --------------------------------------------------------

namespace {

// Where prepare::automatic prepares: directly, through Pgpool-II (a session pooler:
// the session keeps its statements) and through PgBouncer 1.24's pool of one with
// the claim (when they run).
std::vector<std::pair<route, pqscope::connection_options>> preparing_routes() {
  std::vector<std::pair<route, pqscope::connection_options>> all{
      {{"direct", pqtest::env("PQSCOPE_TEST_DIRECT")}, direct_options()}};
  if (const char* p = std::getenv("PQSCOPE_TEST_PGPOOL"); p != nullptr && *p != '\0')
    all.push_back({{"pgpool", p}, direct_options()});
  if (const char* b = std::getenv("PQSCOPE_TEST_PGBOUNCER124_POOL1"); b != nullptr && *b != '\0') {
    pqscope::connection_options claim;
    claim.pooler_max_prepared_statements = 200;
    all.push_back({{"pgbouncer-1.24 pool of one", b}, claim});
  }
  return all;
}

// Round trips `fn` made on `c`.
template <class Fn>
std::uint64_t trips(pqscope::connection& c, Fn&& fn) {
  const auto before = c.stats().round_trips;
  fn();
  return c.stats().round_trips - before;
}

}  // namespace

// DDL under a cached statement: a column added, a type changed, the table dropped and
// made again with another shape. The server refuses the old plan (0A000, "cached
// plan must not change result type"); pqscope prepares the text again and sends it
// again where nothing else had run (autocommit, the first statement of a transaction,
// a batched attempt's first statement), and atomic() runs its function again where
// something had. Outside atomic() after other work, prepared_statement_lost says so.
BOOST_AUTO_TEST_CASE(ddl_under_a_cached_statement) {
  for (const auto& [r, options] : preparing_routes()) {
    BOOST_TEST_CONTEXT(r.name) {
      pqtest::scratch_table table("id int PRIMARY KEY, v text");
      const std::string& t = table.name();
      pqscope::connection c{r.conninfo, options};
      c.execute("INSERT INTO " + t + " VALUES (1, 'x')");
      const std::string all = "SELECT * FROM " + t + " ORDER BY id";
      // After a recovery the text runs unnamed, and is prepared on its next run: run
      // it twice so that the DDL hits a statement bound by name.
      auto ddl = [&](const std::string& sql) {
        for (int i = 0; i < 2; ++i) (void)c.execute(all);
        pqtest::observer().execute_script(sql);
      };
      const std::string insert = "INSERT INTO " + t + " (id) VALUES ($1)";
      for (int i = 0; i < 3; ++i) BOOST_TEST(c.execute(all).columns() == 2u);
      BOOST_TEST(c.stats().prepared == 1u);

      // Autocommit: the refused run and the run again, nothing else.
      ddl("ALTER TABLE " + t + " ADD COLUMN w int");
      BOOST_TEST(trips(c, [&] { BOOST_TEST(c.execute(all).columns() == 3u); }) == 2u);
      ddl("ALTER TABLE " + t + " ALTER COLUMN id TYPE bigint");
      c.execute(insert, 5000000000LL);
      c.execute(insert, 5000000001LL);
      BOOST_TEST(c.execute(all)[2][0].as<long long>() == 5000000001LL);
      ddl("DROP TABLE " + t + "; CREATE TABLE " + t + " (id int PRIMARY KEY, z date)");
      BOOST_TEST(c.execute(all).columns() == 2u);
      BOOST_TEST(c.execute(all).size() == 0u);

      // The first statement of a transaction: rolled back and sent again; fn runs once.
      ddl("ALTER TABLE " + t + " ADD COLUMN w int");
      int runs = 0;
      pqscope::atomic(c, [&] {
        ++runs;
        BOOST_TEST(c.execute(all).columns() == 3u);
        c.execute(insert, 1);
      });
      BOOST_TEST(runs == 1);

      // After other work in atomic(): the attempt runs again, its insert once.
      ddl("ALTER TABLE " + t + " DROP COLUMN w");
      runs = 0;
      pqscope::atomic(c, [&] {
        ++runs;
        c.execute(insert, 10 + runs);
        BOOST_TEST(c.execute(all).columns() == 2u);
      });
      BOOST_TEST(runs == 2);
      BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + t + " WHERE id > 10") == 1);

      // Nested: the outermost atomic() runs again.
      ddl("ALTER TABLE " + t + " ADD COLUMN w int");
      runs = 0;
      pqscope::atomic(c, [&] {
        ++runs;
        c.execute(insert, 20 + runs);
        pqscope::atomic(c, [&] { BOOST_TEST(c.execute(all).columns() == 3u); });
      });
      BOOST_TEST(runs == 2);
      BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + t + " WHERE id > 20") == 1);

      // A transaction object after other work: the typed error, the scope doomed.
      ddl("ALTER TABLE " + t + " DROP COLUMN w");
      {
        pqscope::transaction tx{c};
        c.execute(insert, 30);
        BOOST_CHECK_EXCEPTION(c.execute(all), pqscope::prepared_statement_lost, [](const auto& e) {
          return e.sqlstate() == "0A000" && std::string(e.what()).find("atomic()") != std::string::npos;
        });
        BOOST_CHECK_THROW(tx.commit(), pqscope::transaction_aborted);
      }
      BOOST_TEST(c.execute(all).columns() == 2u);

      // Batched: the first statement sent again with its BEGIN and COMMIT ...
      const std::string returning = "INSERT INTO " + t + " (id) VALUES ($1) RETURNING *";
      pqscope::transaction_options batched;
      batched.batch = true;
      auto warm = [&](int id) {
        for (int i = 0; i < 2; ++i) pqscope::atomic(c, batched, [&] { c.execute(returning, id + i); });
      };
      warm(40);
      ddl("ALTER TABLE " + t + " ADD COLUMN w int");
      runs = 0;
      BOOST_TEST(trips(c, [&] { pqscope::atomic(c, batched, [&] { ++runs; c.execute(returning, 42); }); }) == 3u);
      BOOST_TEST(runs == 1);
      // ... and after another statement, the attempt voided and run again unbatched.
      warm(43);
      ddl("ALTER TABLE " + t + " DROP COLUMN w");
      runs = 0;
      pqscope::atomic(c, batched, [&] {
        ++runs;
        c.execute(insert, 50);
        c.execute(returning, 51);
      });
      BOOST_TEST(runs == 2);
      BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + t + " WHERE id IN (42, 50, 51)") == 3);
      BOOST_TEST(c.stats().replays >= 1u);
    }
  }
}

// PgBouncer 1.21+ keeps one server statement per text and server connection, shared
// by every client that prepares that text. After DDL a second client's first Parse
// of the text is bound to the old statement and refused (0A000) although it was
// just parsed; it too is sent again, and the text prepared anew with a comment.
BOOST_AUTO_TEST_CASE(pgbouncer_shares_statements_by_text) {
  const char* pool1 = std::getenv("PQSCOPE_TEST_PGBOUNCER124_POOL1");
  if (pool1 == nullptr || *pool1 == '\0') {
    BOOST_TEST_MESSAGE("skipped: PgBouncer 1.24 is not running");
    return;
  }
  pqtest::scratch_table table("id int PRIMARY KEY, v text");
  const std::string all = "SELECT * FROM " + table.name();
  pqscope::connection_options claim;
  claim.pooler_max_prepared_statements = 200;
  pqscope::connection a{pool1, claim};
  for (int i = 0; i < 3; ++i) BOOST_TEST(a.execute(all).columns() == 2u);
  pqtest::observer().execute("ALTER TABLE " + table.name() + " ADD COLUMN w int");
  pqscope::connection b{pool1, claim};
  BOOST_TEST(b.execute(all).columns() == 3u);  // unnamed: planned afresh
  BOOST_TEST(trips(b, [&] { BOOST_TEST(b.execute(all).columns() == 3u); }) == 2u);  // its Parse met the old plan
  BOOST_TEST(trips(b, [&] { BOOST_TEST(b.execute(all).columns() == 3u); }) == 1u);
  BOOST_TEST(trips(b, [&] { BOOST_TEST(b.execute(all).columns() == 3u); }) == 1u);
  BOOST_TEST(b.stats().prepared == 2u);
  BOOST_TEST(trips(a, [&] { BOOST_TEST(a.execute(all).columns() == 3u); }) == 2u);
}

// The session loses every statement (DISCARD ALL, or DEALLOCATE ALL through the
// native handle, behind pqscope's back): the next run prepares again, unseen.
BOOST_AUTO_TEST_CASE(discard_all_and_deallocate) {
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_DIRECT"), direct_options()};
  const std::string q = "SELECT $1::int * 3";
  for (int i = 0; i < 3; ++i) BOOST_TEST(c.query_value<int>(q, i) == 3 * i);
  c.execute(pqscope::allow_session_state("DISCARD ALL"));
  // Refused, then sent again unnamed; the next run prepares it again.
  BOOST_TEST(trips(c, [&] { BOOST_TEST(c.query_value<int>(q, 4) == 12); }) == 2u);
  BOOST_TEST(prepared_on_server(c) == 0);
  BOOST_TEST(trips(c, [&] { BOOST_TEST(c.query_value<int>(q, 5) == 15); }) == 1u);
  BOOST_TEST(prepared_on_server(c) == 1);
  PQclear(PQexec(c.native_handle(), "DEALLOCATE ALL"));
  int runs = 0;
  pqscope::atomic(c, [&] {
    ++runs;
    BOOST_TEST(c.query_value<int>(q, 6) == 18);
  });
  BOOST_TEST(runs == 1);
  BOOST_TEST(trips(c, [&] { BOOST_TEST(c.query_value<int>(q, 7) == 21); }) == 1u);
  BOOST_TEST(trips(c, [&] { BOOST_TEST(c.query_value<int>(q, 8) == 24); }) == 1u);
  BOOST_TEST(prepared_on_server(c) == 1);
}

// A full cache stops preparing new texts; what it prepared still binds.
BOOST_AUTO_TEST_CASE(the_cache_full) {
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_DIRECT"), direct_options()};
  for (int k = 0; k < 300; ++k) {
    const std::string q = "SELECT $1::int + " + std::to_string(k);
    for (int i = 0; i < 2; ++i) BOOST_TEST(c.query_value<int>(q, i) == i + k);
  }
  BOOST_TEST(c.stats().prepared == 256u);
  BOOST_TEST(prepared_on_server(c) == 256);
  const auto before = c.stats().prepared;
  for (int i = 0; i < 3; ++i) BOOST_TEST(c.query_value<int>("SELECT $1::int - 1", i) == i - 1);
  BOOST_TEST(c.stats().prepared == before);
  // Behind a pooler, the bound is the pooler's own.
  if (const char* b = std::getenv("PQSCOPE_TEST_PGBOUNCER124_POOL1"); b != nullptr && *b != '\0') {
    pqscope::connection_options claim;
    claim.pooler_max_prepared_statements = 3;
    pqscope::connection p{b, claim};
    for (int k = 0; k < 5; ++k)
      for (int i = 0; i < 3; ++i) BOOST_TEST(p.query_value<int>("SELECT $1::int * " + std::to_string(k), i) == i * k);
    BOOST_TEST(p.stats().prepared == 3u);
  }
}

// PgBouncer 1.18 said to track prepared statements: a statement prepared on one
// server connection is missing on the next (26000). The first such error is a
// configuration_error that names the setting, in autocommit and from a batched
// atomic() alike (not replayed away); the connection stops preparing and goes on.
BOOST_AUTO_TEST_CASE(pgbouncer_1_18_with_the_claim) {
  const std::string pooled = pqtest::env("PQSCOPE_TEST_PGBOUNCER");  // pool_size = 4
  pqscope::connection_options claim;
  claim.pooler_max_prepared_statements = 200;
  // The statement is on the server connection the client last used; holders take
  // that one (PgBouncer hands out the last released first) and two others.
  auto on_another_server = [&](pqscope::connection& c, auto&& run) {
    for (int tries = 0; tries < 10; ++tries) {
      std::vector<std::unique_ptr<pqscope::connection>> holders;
      std::vector<std::unique_ptr<pqscope::transaction>> held;
      for (int h = 0; h < 3; ++h) {
        holders.push_back(std::make_unique<pqscope::connection>(pooled));
        held.push_back(std::make_unique<pqscope::transaction>(*holders.back()));
        holders.back()->execute("SELECT 1");
      }
      try {
        run();
      } catch (const pqscope::configuration_error& e) {
        return std::string(e.what());
      }
      (void)c;
    }
    return std::string("no error in 10 tries");
  };
  const std::string q = "SELECT $1::int + 100";
  {
    pqscope::connection c{pooled, claim};
    for (int i = 0; i < 2; ++i) BOOST_TEST(c.query_value<int>(q, i) == i + 100);
    BOOST_TEST(c.stats().prepared == 1u);
    const std::string what = on_another_server(c, [&] { (void)c.query_value<int>(q, 7); });
    BOOST_TEST(what.find("pooler_max_prepared_statements") != std::string::npos, what);
    // Nothing is prepared any more; the statement runs unnamed wherever it lands.
    const auto prepared = c.stats().prepared;
    for (int i = 0; i < 5; ++i) BOOST_TEST(c.query_value<int>(q, i) == i + 100);
    BOOST_TEST(c.stats().prepared == prepared);
  }
  {
    pqscope::connection c{pooled, claim};
    pqscope::transaction_options batched;
    batched.batch = true;
    for (int i = 0; i < 2; ++i) pqscope::atomic(c, batched, [&] { (void)c.execute(q, i); });
    int runs = 0;
    const std::string what = on_another_server(c, [&] {
      pqscope::atomic(c, batched, [&] {
        ++runs;
        (void)c.execute(q, 1);
      });
    });
    BOOST_TEST(what.find("pooler_max_prepared_statements") != std::string::npos, what);
    BOOST_TEST(runs == 1);
  }
}

// reconnect() starts a new session with none; a forked child cannot use the parent's
// connection, and its own prepares apart; borrow() hands the session back without
// the statements it prepared.
BOOST_AUTO_TEST_CASE(reconnect_fork_and_borrow) {
  const std::string q = "SELECT $1::int * 7";
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_DIRECT"), direct_options()};
  for (int i = 0; i < 3; ++i) BOOST_TEST(c.query_value<int>(q, i) == 7 * i);
  c.reconnect();
  BOOST_TEST(prepared_on_server(c) == 0);
  BOOST_TEST(trips(c, [&] { BOOST_TEST(c.query_value<int>(q, 2) == 14); }) == 1u);
  BOOST_TEST(prepared_on_server(c) == 1);

  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    try {
      (void)c.query_value<int>(q, 1);
      code = 1;  // the parent's session must be refused
    } catch (const pqscope::usage_error&) {
    } catch (...) {
      code = 2;
    }
    try {
      pqscope::connection own{pqtest::env("PQSCOPE_TEST_DIRECT"), direct_options()};
      for (int i = 0; i < 3; ++i)
        if (own.query_value<int>(q, i) != 7 * i) code = 3;
      if (own.stats().prepared != 1 || prepared_on_server(own) != 1) code = 4;
    } catch (...) {
      code = 5;
    }
    ::_exit(code);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  BOOST_TEST((WIFEXITED(status) && WEXITSTATUS(status) == 0), "child exit status " << status);
  BOOST_TEST(trips(c, [&] { BOOST_TEST(c.query_value<int>(q, 3) == 21); }) == 1u);
  BOOST_TEST(prepared_on_server(c) == 1);

  PGconn* raw = PQconnectdb(pqtest::env("PQSCOPE_TEST_DIRECT").c_str());
  BOOST_REQUIRE(PQstatus(raw) == CONNECTION_OK);
  for (int round = 0; round < 2; ++round) {
    auto b = pqscope::connection::borrow(raw, direct_options());
    for (int i = 0; i < 3; ++i) BOOST_TEST(b.query_value<int>(q, i) == 7 * i);
    BOOST_TEST(b.stats().prepared == 1u);
    BOOST_TEST(prepared_on_server(b) == 1);
  }
  PGresult* left = PQexec(raw, "SELECT count(*) FROM pg_catalog.pg_prepared_statements");
  BOOST_TEST(std::string(PQgetvalue(left, 0, 0)) == "0");
  PQclear(left);
  PQfinish(raw);
}

// The asio front end: the same preparing, and the same recovery after DDL.
BOOST_AUTO_TEST_CASE(asio_prepares_and_recovers) {
  using net::use_awaitable;
  for (const auto& [r, options] : preparing_routes()) {
    BOOST_TEST_CONTEXT(r.name) {
      pqtest::scratch_table table("id int PRIMARY KEY, v text");
      const std::string t = table.name();
      net::io_context io;
      pqtest::run_coro(io, [&, conninfo = r.conninfo, o = options]() -> net::awaitable<void> {
        auto c = co_await pqtest::connect_async(conninfo, o);
        const std::string all = "SELECT * FROM " + t;
        const std::string insert = "INSERT INTO " + t + " (id) VALUES ($1)";
        for (int i = 0; i < 3; ++i) BOOST_TEST((co_await c.async_execute(all, use_awaitable)).columns() == 2u);
        BOOST_TEST(c.stats().prepared == 1u);
        pqtest::observer().execute("ALTER TABLE " + t + " ADD COLUMN w int");
        const auto before = c.stats().round_trips;
        BOOST_TEST((co_await c.async_execute(all, use_awaitable)).columns() == 3u);
        BOOST_TEST(c.stats().round_trips - before == 2u);
        for (int i = 0; i < 2; ++i) (void)co_await c.async_execute(all, use_awaitable);  // prepared again
        pqtest::observer().execute("ALTER TABLE " + t + " DROP COLUMN w");
        int runs = 0;
        co_await pqscope::asio::async_atomic(c, [&](pqscope::asio::connection& cc) -> net::awaitable<void> {
          ++runs;
          co_await cc.async_execute({insert, runs}, use_awaitable);
          BOOST_TEST((co_await cc.async_execute(all, use_awaitable)).columns() == 2u);
        });
        BOOST_TEST(runs == 2);
        BOOST_TEST(c.stats().prepared >= 3u);
      }());
      BOOST_TEST(table.count() == 1);
    }
  }
}
