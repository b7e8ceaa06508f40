// connection_options::commit_positions against real servers, directly and through
// PgBouncer 1.18, 1.24 and Pgpool-II: after a committed scope last_commit_position()
// is at or past the end of that transaction's commit record (read back from the WAL
// with pg_walinspect), before what the server inserts next, and it cost no round
// trip. A position query that fails leaves the commit standing. The control
// sequences themselves are in tests/scope_machine.cpp (suite commit_positions).

#define BOOST_TEST_MODULE commit_positions
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include "support/asio_run.hpp"
#include "support/servers.hpp"
#include "support/wire_counter.hpp"

using pqscope::wal_position;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;

namespace {

pqscope::connection_options positions() {
  pqscope::connection_options o;
  o.commit_positions = true;
  return o;
}

pqscope::transaction_options batched() {
  pqscope::transaction_options o;
  o.batch = true;
  return o;
}

template <class Connection>
wal_position insert_position(Connection& c) {
  return c.template query_value<wal_position>("SELECT pg_current_wal_insert_lsn()");
}

// Where the server will insert next, seen from outside.
wal_position insert_position_now() { return insert_position(pqtest::shared_observer()); }

// The end of the commit record of transaction `xid` in the WAL, read with pg_walinspect
// from `from` on (the observer's session: the same server behind every target).
wal_position commit_record_end(const std::string& xid, wal_position from) {
  auto& o = pqtest::shared_observer();
  if (o.query_value<long>("SELECT count(*) FROM pg_extension WHERE extname = 'pg_walinspect'") == 0) {
    try {
      o.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect");
    } catch (const pqscope::sql_error&) {  // another test process made it meanwhile
    }
  }
  // pg_walinspect reads only WAL that is flushed; the test servers run with
  // synchronous_commit = off, so the WAL writer does that within wal_writer_delay.
  const wal_position target = insert_position_now();
  for (int i = 0; i < 500 && o.query_value<wal_position>("SELECT pg_current_wal_flush_lsn()") < target; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const auto end = o.query_value<std::optional<wal_position>>(
      "SELECT max(end_lsn) FROM pg_get_wal_records_info($1, pg_current_wal_flush_lsn()) "
      "WHERE resource_manager = 'Transaction' AND record_type = 'COMMIT' AND xid::text = $2",
      from, xid);
  BOOST_TEST_REQUIRE(end.has_value(), "no commit record of xid " << xid << " after " << from.to_string());
  return *end;
}

// What a committed transaction's position must satisfy: it is past `before` (read in
// the transaction after its last write, or before it began), at or past the end of
// its commit record, and not past what the server inserts next.
void check_position(const wal_position& p, const wal_position& before, const std::string& xid) {
  BOOST_TEST_INFO("position " << p.to_string() << ", before COMMIT " << before.to_string());
  BOOST_TEST_REQUIRE(!p.empty());
  BOOST_TEST(p.value() > before.value());
  BOOST_TEST(wal_position::parse(p.to_string()).value() == p.value());
  if (!xid.empty()) {
    BOOST_TEST(pqtest::shared_observer().query_value<std::string>("SELECT pg_xact_status($1::xid8)", xid) ==
               "committed");
    const wal_position end = commit_record_end(xid, before);
    BOOST_TEST_INFO("commit record ends at " << end.to_string());
    BOOST_TEST(end.record_end().value() <= p.value());
  }
  BOOST_TEST(p.value() <= insert_position_now().value());
}

}  // namespace

BOOST_AUTO_TEST_CASE(a_committed_scope_reports_its_commit_position) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    const std::string insert = "INSERT INTO " + table.name() + " (id) VALUES ($1)";
    pqscope::connection c{t.conninfo, positions()};
    BOOST_TEST(c.last_commit_position().empty());

    // Unbatched, with a nested scope: the position is read in the transaction after
    // its writes, so the COMMIT record comes after it.
    std::string xid;
    wal_position before, in_callback;
    {
      pqscope::transaction tx{c};
      c.execute(insert, 1);
      {
        pqscope::transaction inner{c};
        c.execute(insert, 2);
        inner.commit();
      }
      xid = c.query_value<std::string>("SELECT pg_current_xact_id()::text");
      before = insert_position(c);
      c.on_commit([&] { in_callback = c.last_commit_position(); });
      tx.commit();
    }
    const wal_position first = c.last_commit_position();
    check_position(first, before, xid);
    BOOST_TEST(in_callback.value() == first.value());
    BOOST_TEST(pqtest::committed_ids(table) == "1,2");
    // As a parameter and a result: the server reads and writes the same text.
    BOOST_TEST(c.query_value<std::string>("SELECT $1::text", first) == first.to_string());
    BOOST_TEST(c.query_value<wal_position>("SELECT $1", first).value() == first.value());
    BOOST_TEST(c.query_value<bool>("SELECT $1 >= $2::pg_lsn", first, before.to_string()));

    // Batched, through atomic() with nested atomic() blocks: one batch.
    before = insert_position(c);
    pqscope::atomic(c, batched(), [&] {
      c.execute(insert, 3);
      pqscope::atomic(c, [&] { c.execute(insert, 4); });
    });
    check_position(c.last_commit_position(), before, "");
    BOOST_TEST(c.last_commit_position().value() > first.value());
    BOOST_TEST(pqtest::committed_ids(table) == "1,2,3,4");

    // Batched with a result read inside (the attempt flushes, then COMMITs).
    before = insert_position(c);
    pqscope::atomic(c, batched(), [&] {
      c.execute(insert, 5);
      xid = c.query_value<std::string>("SELECT pg_current_xact_id()::text");
      c.execute(insert, 6);
    });
    check_position(c.last_commit_position(), before, xid);

    // Nothing else moves it: autocommit, a rollback, a read-only transaction, a savepoint.
    const wal_position kept = c.last_commit_position();
    c.execute(insert, 7);
    {
      pqscope::transaction tx{c};
      c.execute(insert, 8);
      tx.rollback();
    }
    pqscope::transaction_options ro;
    ro.read_only = true;
    pqscope::atomic(c, ro, [&] { (void)c.query_value<long>("SELECT count(*) FROM " + table.name()); });
    {
      pqscope::transaction tx{c};
      c.execute(insert, 9);
      {
        pqscope::transaction inner{c};
        c.execute(insert, 10);
        inner.commit();
        BOOST_TEST(c.last_commit_position().value() == kept.value());
      }
      tx.rollback();
    }
    BOOST_TEST(c.last_commit_position().value() == kept.value());
    BOOST_TEST(pqtest::committed_ids(table) == "1,2,3,4,5,6,7");
  });
}

// synchronous_commit = off (the test servers' setting, and set here per transaction
// as well): COMMIT answers before its record is written out, so the write position
// (pg_current_wal_lsn()) is still before the record's end; the position reported is
// the insert position, past it all the same. And the same with synchronous_commit = on.
static void commits_with(const pqtest::target& t, const char* sync) {
  pqtest::scratch_table table;
  const std::string insert = "INSERT INTO " + table.name() + " (id, v) VALUES ($1, repeat('x', 3000))";
  pqscope::connection c{t.conninfo, positions()};
  int write_behind = 0;
  for (int i = 0; i < 20; ++i) {
    BOOST_TEST_CONTEXT("transaction " << i) {
      std::string xid;
      wal_position before;
      {
        pqscope::transaction tx{c};
        c.set_local("synchronous_commit", sync);
        c.execute(insert, i);
        xid = c.query_value<std::string>("SELECT pg_current_xact_id()::text");
        before = insert_position(c);
        tx.commit();
      }
      const wal_position p = c.last_commit_position();
      const auto written = pqtest::shared_observer().query_value<wal_position>("SELECT pg_current_wal_lsn()");
      if (written < p) ++write_behind;
      check_position(p, before, xid);
    }
  }
  BOOST_TEST_MESSAGE(t.name << ", synchronous_commit " << sync << ": the write position was behind the commit "
                            << "position " << write_behind << " times of 20");
  BOOST_TEST(pqtest::committed_count(table) == 20);
}

BOOST_AUTO_TEST_CASE(an_asynchronous_commit_is_before_its_position_too) {
  pqtest::for_each_target([](const pqtest::target& t) {
    for (const char* sync : {"off", "on"}) BOOST_TEST_CONTEXT("synchronous_commit " << sync) { commits_with(t, sync); }
  });
}

// With positions on, a batched transaction that reads nothing is still one round trip
// (one Sync on the wire), and an unbatched one still two.
BOOST_AUTO_TEST_CASE(positions_cost_no_round_trip) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    const std::string insert = "INSERT INTO " + table.name() + " (id) VALUES ($1)";
    pqtest::wire_counter relay{t};
    pqscope::connection c{relay.conninfo(), positions()};
    c.execute("SELECT 1");
    auto syncs = relay.syncs();
    auto trips = c.stats().round_trips;
    pqscope::atomic(c, batched(), [&] {
      c.execute(insert, 1);
      c.execute(insert, 2);
    });
    BOOST_TEST(!c.last_commit_position().empty());
    BOOST_TEST(c.stats().round_trips - trips == 1u);
    BOOST_TEST(relay.syncs() - syncs == 1u);
    syncs = relay.syncs();
    trips = c.stats().round_trips;
    const wal_position previous = c.last_commit_position();
    {
      pqscope::transaction tx{c};
      c.execute(insert, 3);
      tx.commit();
    }
    BOOST_TEST(c.last_commit_position().value() > previous.value());
    BOOST_TEST(c.stats().round_trips - trips == 2u);
    BOOST_TEST(relay.syncs() - syncs == 2u);
    BOOST_TEST(pqtest::committed_ids(table) == "1,2,3");
  });
}

// The position query fails on the server (the relay turns its function's name into
// one that does not exist): the COMMIT before it stands, batched or not; no replay,
// no rollback, no exception, and no position.
BOOST_AUTO_TEST_CASE(a_failed_position_query_leaves_the_commit_standing) {
  pqtest::for_each_target([](const pqtest::target& t) {
    for (bool batch : {false, true}) {
      BOOST_TEST_CONTEXT("batched " << batch) {
        pqscope::transaction_options o = batched();
        o.batch = batch;
        pqtest::scratch_table table;
        const std::string insert = "INSERT INTO " + table.name() + " (id) VALUES ($1)";
        pqtest::wire_counter relay{t};
        pqscope::connection c{relay.conninfo(), positions()};
        pqscope::atomic(c, o, [&] { c.execute(insert, 1); });
        BOOST_TEST(!c.last_commit_position().empty());
        relay.rewrite("pg_current_wal_insert_lsn()", "pg_current_wal_insert_lsx()");
        int runs = 0;
        bool committed = false, rolled_back = false;
        BOOST_CHECK_NO_THROW(pqscope::atomic(c, o, [&] {
          ++runs;
          c.on_commit([&] { committed = true; });
          c.on_rollback([&] { rolled_back = true; });
          c.execute(insert, 2);
        }));
        BOOST_TEST(runs == 1);
        BOOST_TEST(committed);
        BOOST_TEST(!rolled_back);
        BOOST_TEST(c.stats().replays == 0u);
        BOOST_TEST(c.stats().transactions_committed == 2u);
        BOOST_TEST(c.stats().transactions_rolled_back == 0u);
        BOOST_TEST(c.last_commit_position().empty());
        BOOST_TEST(pqtest::committed_ids(table) == "1,2");
        // The session goes on: in autocommit, and in the next transaction.
        BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
        {
          pqscope::transaction tx{c};
          c.execute(insert, 3);
          BOOST_CHECK_NO_THROW(tx.commit());
        }
        BOOST_TEST(pqtest::committed_ids(table) == "1,2,3");
        BOOST_TEST(c.stats().transactions_committed == 3u);
      }
    }
  });
}

BOOST_AUTO_TEST_CASE(asio_connection_reports_commit_positions) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    const std::string insert = "INSERT INTO " + table.name() + " (id) VALUES ($1)";
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo, positions());
      BOOST_TEST(c.last_commit_position().empty());
      co_await c.async_execute({insert, 0}, use_awaitable);  // autocommit: none
      BOOST_TEST(c.last_commit_position().empty());

      // Batched, one round trip.
      wal_position before = co_await c.async_query_value<wal_position>("SELECT pg_current_wal_insert_lsn()",
                                                                        use_awaitable);
      const auto trips = c.stats().round_trips;
      co_await pa::async_atomic(c, batched(), [&]() -> awaitable<void> {
        co_await c.async_execute({insert, 1}, use_awaitable);
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          co_await c.async_execute({insert, 2}, use_awaitable);
        });
      });
      BOOST_TEST(c.stats().round_trips - trips == 1u);
      check_position(c.last_commit_position(), before, "");

      // A transaction object with a nested scope, the position read in an on_commit callback.
      std::string xid;
      wal_position in_callback;
      {
        pa::transaction tx{c};
        co_await c.async_execute({insert, 3}, use_awaitable);
        {
          pa::transaction inner{c};
          co_await c.async_execute({insert, 4}, use_awaitable);
          co_await inner.async_commit(use_awaitable);
        }
        xid = co_await c.async_query_value<std::string>("SELECT pg_current_xact_id()::text", use_awaitable);
        before = co_await c.async_query_value<wal_position>("SELECT pg_current_wal_insert_lsn()", use_awaitable);
        c.on_commit([&] { in_callback = c.last_commit_position(); });
        co_await tx.async_commit(use_awaitable);
      }
      check_position(c.last_commit_position(), before, xid);
      BOOST_TEST(in_callback.value() == c.last_commit_position().value());

      // A rollback leaves it.
      const wal_position kept = c.last_commit_position();
      {
        pa::transaction tx{c};
        co_await c.async_execute({insert, 5}, use_awaitable);
        co_await tx.async_rollback(use_awaitable);
      }
      BOOST_TEST(c.last_commit_position().value() == kept.value());
    }());
    BOOST_TEST(pqtest::committed_ids(table) == "0,1,2,3,4");
  });
}

// Pgpool-II in raw mode wraps a session's first write outside a transaction in a
// transaction of its own (tests/pgpool.cpp). The position query after a COMMIT is no
// such write: the session is left idle, as it is without positions.
BOOST_AUTO_TEST_CASE(pgpool_raw_mode_is_left_idle) {
  const char* raw = std::getenv("PQSCOPE_TEST_PGPOOL_RAW");
  if (raw == nullptr || *raw == '\0') {
    BOOST_TEST_MESSAGE("skipped: no Pgpool-II in raw mode (scripts/dev.sh servers --pgpool)");
    return;
  }
  pqtest::scratch_table table;
  const std::string insert = "INSERT INTO " + table.name() + " (id) VALUES ($1)";
  for (bool batch : {false, true}) {
    BOOST_TEST_CONTEXT("batched " << batch) {
      pqscope::connection c{raw, positions()};
      pqscope::transaction_options o = batched();
      o.batch = batch;
      pqscope::atomic(c, o, [&] { c.execute(insert, batch ? 1 : 0); });
      BOOST_TEST(!c.last_commit_position().empty());
      BOOST_TEST(PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE);
    }
  }
  BOOST_TEST(pqtest::committed_ids(table) == "0,1");
}
