// Pgpool-II 4.3 in front of PostgreSQL. The semantic suites run through it in
// streaming_replication mode (the "pgpool" target of support/servers.hpp); this
// file checks what Pgpool-II changes and how pqscope reports what it cannot work
// around, and that notifications pass through it. scripts/dev.sh starts both Pgpool-II instances when PQSCOPE_SERVERS_PGPOOL=1
// (scripts/dev.sh test does).

#define BOOST_TEST_MODULE pgpool
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <optional>
#include <string>

#include "support/servers.hpp"

namespace {

std::string raw_mode() { return pqtest::env("PQSCOPE_TEST_PGPOOL_RAW"); }
std::string replication_mode() { return pqtest::env("PQSCOPE_TEST_PGPOOL"); }

pqscope::statement plain(const std::string& sql) { return pqscope::statement{sql.c_str(), 0, nullptr, nullptr}; }

}  // namespace

// In raw mode Pgpool-II wraps the first extended-protocol write of a session in a
// BEGIN of its own and never ends it. The driver sees a transaction that no
// statement opened and names the cause; pqscope rolls it back.
BOOST_AUTO_TEST_CASE(raw_mode_opens_a_transaction_of_its_own) {
  pqtest::scratch_table table;
  const std::string insert = "INSERT INTO " + table.name() + " VALUES (1, 'x')";
  {
    // At the driver: the batch carries no BEGIN, yet the session is in a transaction.
    pqscope::libpq_driver d;
    d.open(raw_mode(), "pgpool test");
    pqscope::batch_reply br = d.exchange({plain(insert)});
    BOOST_REQUIRE(!br.lost);
    BOOST_TEST((br.state == pqscope::server_state::in_transaction));
    BOOST_TEST(br.diagnostic.find("Pgpool-II") != std::string::npos, br.diagnostic);
    BOOST_TEST(br.diagnostic.find("backend_clustering_mode = 'raw'") != std::string::npos, br.diagnostic);
    BOOST_TEST(br.diagnostic.find("streaming_replication") != std::string::npos, br.diagnostic);
  }
  BOOST_TEST(pqtest::committed_count(table) == 0);  // Pgpool-II's transaction ended with the session
  {
    // Through pqscope: the statement is rolled back and reported, never committed silently.
    pqscope::connection c{raw_mode()};
    try {
      c.execute(insert);
      BOOST_ERROR("the statement was accepted");
    } catch (const pqscope::usage_error& e) {
      BOOST_TEST_MESSAGE("raw mode: " << e.what());
      BOOST_TEST(std::string(e.what()).find("Pgpool-II") != std::string::npos);  // names the cause
    }
    BOOST_TEST(c.depth() == 0u);
    BOOST_TEST(PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE);
    BOOST_TEST(pqtest::committed_count(table) == 0);
    // Only the first write of a session: after that the session behaves.
    c.execute(insert);
    BOOST_TEST(pqtest::committed_count(table) == 1);
    // Scopes are unaffected: their BEGIN comes first.
    pqscope::atomic(c, [&] { c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')"); });
    BOOST_TEST(pqtest::committed_ids(table) == "1,2");
  }
  {
    // A scope as the session's first write works too.
    pqscope::connection c{raw_mode()};
    pqscope::atomic(c, [&] { c.execute("INSERT INTO " + table.name() + " VALUES (3, 'x')"); });
    BOOST_TEST(pqtest::committed_ids(table) == "1,2,3");
  }
}

// Nothing is diagnosed where nothing is wrong: PostgreSQL directly, PgBouncer, and
// Pgpool-II in streaming_replication mode leave an autocommit write idle.
BOOST_AUTO_TEST_CASE(streaming_replication_mode_keeps_autocommit) {
  pqtest::scratch_table table{"id serial PRIMARY KEY, v text"};
  for (const std::string& info :
       {pqtest::env("PQSCOPE_TEST_DIRECT"), pqtest::env("PQSCOPE_TEST_PGBOUNCER"), replication_mode()}) {
    BOOST_TEST_CONTEXT(info) {
      pqscope::libpq_driver d;
      d.open(info, "pgpool test");
      pqscope::batch_reply br = d.exchange({plain("INSERT INTO " + table.name() + " VALUES (DEFAULT, 'x')")});
      BOOST_TEST(!br.lost);
      BOOST_TEST((br.state == pqscope::server_state::idle));
      BOOST_TEST(br.diagnostic.empty());
    }
  }
}

// LISTEN through Pgpool-II: it pools sessions, so a listening client keeps its server
// connection, and a notification sent by another session reaches it while it waits
// and while it runs statements, as it would directly.
BOOST_AUTO_TEST_CASE(notifications_arrive_through_pgpool) {
  using namespace std::chrono_literals;
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;  // Pgpool-II keeps the session: LISTEN is safe
  pqscope::connection c{replication_mode(), o};
  const std::string ch = pqtest::unique_name("pgpool_jobs");
  c.listen(ch);
  BOOST_TEST(!c.wait_notification(0ms).has_value());
  // While the listener waits.
  pqtest::shared_observer().execute("SELECT pg_notify($1, 'while waiting')", ch);
  std::optional<pqscope::notification> n = c.wait_notification(5s);
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(n->channel == ch);
  BOOST_TEST(n->payload == "while waiting");
  // Sent while the listener was busy: delivered with its next statement's answer, or after.
  pqtest::shared_observer().execute("SELECT pg_notify($1, 'while busy')", ch);
  BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
  n = c.wait_notification(5s);
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(n->payload == "while busy");
  BOOST_TEST(!c.wait_notification(200ms).has_value());
}
