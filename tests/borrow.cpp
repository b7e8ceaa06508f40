#define BOOST_TEST_MODULE borrow
#include <boost/test/unit_test.hpp>

// connection::borrow(): scopes on a PGconn* that raw libpq code opened and keeps.
// The handle is checked when it is lent, never closed, and handed back idle, out
// of pipeline mode and in its own blocking mode, whatever happened in between.

#include <memory>
#include <stdexcept>
#include <string>

#include <libpq-fe.h>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using pqtest::for_each_target;

struct pg_closer {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using raw_conn = std::unique_ptr<PGconn, pg_closer>;

raw_conn raw(const std::string& conninfo) {
  raw_conn c(PQconnectdb(conninfo.c_str()));
  if (PQstatus(c.get()) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(c.get()));
  return c;
}

// What raw libpq code sees of its handle.
void expect_handed_back(PGconn* c) {
  BOOST_TEST(PQstatus(c) == CONNECTION_OK);
  BOOST_TEST(PQtransactionStatus(c) == PQTRANS_IDLE);
  BOOST_TEST(PQpipelineStatus(c) == PQ_PIPELINE_OFF);
  BOOST_TEST(PQisnonblocking(c) == 0);
  PGresult* r = PQexec(c, "SELECT 7");
  BOOST_TEST(PQresultStatus(r) == PGRES_TUPLES_OK);
  BOOST_TEST(std::string(PQgetvalue(r, 0, 0)) == "7");
  PQclear(r);
}

void raw_exec(PGconn* c, const char* sql) {
  PGresult* r = PQexec(c, sql);
  const ExecStatusType st = PQresultStatus(r);
  PQclear(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) throw std::runtime_error(PQerrorMessage(c));
}

}  // namespace

BOOST_AUTO_TEST_CASE(scopes_on_a_borrowed_handle) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    raw_conn pg = raw(t.conninfo);
    {
      pqscope::connection c = pqscope::connection::borrow(pg.get());
      BOOST_TEST(c.native_handle() == pg.get());
      pqscope::atomic(c, [&] {
        c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
        try {
          pqscope::atomic(c, [&] {
            c.execute("INSERT INTO " + table.name() + " (id) VALUES (2)");
            throw std::runtime_error("undo 2");
          });
        } catch (const std::runtime_error&) {
        }
      });
      pqscope::transaction_options batched;
      batched.batch = true;
      pqscope::atomic(c, batched, [&] { c.execute("INSERT INTO " + table.name() + " (id) VALUES (3)"); });
      BOOST_TEST(c.stats().transactions_committed == 2u);
      BOOST_TEST(c.stats().batched_attempts == 1u);
      // The pooler guard applies as on any connection.
      BOOST_CHECK_THROW(c.execute("SET statement_timeout = 1000"), pqscope::usage_error);
      BOOST_CHECK_THROW(c.reconnect(), pqscope::usage_error);
      auto w = c.copy_in("COPY " + table.name() + " (id) FROM STDIN");
      w.write_row(4);
      w.finish();
    }
    BOOST_TEST(pqtest::committed_ids(table) == "1,3,4");
    expect_handed_back(pg.get());
    // Lent again after raw use: still fine.
    raw_exec(pg.get(), ("INSERT INTO " + table.name() + " (id) VALUES (5)").c_str());
    {
      pqscope::connection c = pqscope::connection::borrow(pg.get());
      BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name()) == 4);
    }
    expect_handed_back(pg.get());
  });
}

// The wrapper ends while scopes are open (destroyed out of order, moved away):
// the transaction is rolled back and the handle comes back idle.
BOOST_AUTO_TEST_CASE(handed_back_idle_with_scopes_open) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    raw_conn pg = raw(t.conninfo);
    auto c = std::make_unique<pqscope::connection>(pqscope::connection::borrow(pg.get()));
    auto tx = std::make_unique<pqscope::transaction>(*c);
    c->execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
    BOOST_TEST(PQtransactionStatus(pg.get()) == PQTRANS_INTRANS);
    c.reset();   // the connection first: it hands the session back
    expect_handed_back(pg.get());
    tx.reset();  // then the orphaned scope: nothing to do
    BOOST_TEST(pqtest::committed_count(table) == 0);
    expect_handed_back(pg.get());
    // A COPY in progress when the wrapper ends is aborted first.
    {
      pqscope::connection c2 = pqscope::connection::borrow(pg.get());
      auto w = c2.copy_in("COPY " + table.name() + " (id) FROM STDIN");
      w.write_row(1);
      pqscope::connection gone = std::move(c2);
    }
    BOOST_TEST(pqtest::committed_count(table) == 0);
    expect_handed_back(pg.get());
  });
}

// Refused when lent in a state pqscope cannot own: inside a transaction, in
// pipeline mode, with a query in progress, not connected.
BOOST_AUTO_TEST_CASE(lent_in_a_bad_state_is_refused) {
  for_each_target([&](const pqtest::target& t) {
    raw_conn pg = raw(t.conninfo);
    BOOST_CHECK_THROW((void)pqscope::connection::borrow(nullptr), pqscope::usage_error);
    raw_exec(pg.get(), "BEGIN");
    BOOST_CHECK_THROW((void)pqscope::connection::borrow(pg.get()), pqscope::usage_error);
    raw_exec(pg.get(), "ROLLBACK");
    BOOST_REQUIRE(PQenterPipelineMode(pg.get()) == 1);
    BOOST_CHECK_THROW((void)pqscope::connection::borrow(pg.get()), pqscope::usage_error);
    BOOST_REQUIRE(PQexitPipelineMode(pg.get()) == 1);
    BOOST_REQUIRE(PQsendQuery(pg.get(), "SELECT pg_sleep(0.05)") == 1);
    BOOST_CHECK_THROW((void)pqscope::connection::borrow(pg.get()), pqscope::usage_error);
    while (PGresult* r = PQgetResult(pg.get())) PQclear(r);
    // A handle already in non-blocking mode stays so.
    BOOST_REQUIRE(PQsetnonblocking(pg.get(), 1) == 0);
    { pqscope::connection c = pqscope::connection::borrow(pg.get()); BOOST_TEST(c.query_value<int>("SELECT 1") == 1); }
    BOOST_TEST(PQisnonblocking(pg.get()) == 1);
    BOOST_REQUIRE(PQsetnonblocking(pg.get(), 0) == 0);
    expect_handed_back(pg.get());
  });
}
