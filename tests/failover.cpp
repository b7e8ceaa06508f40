// Replicas and failover, against a primary/standby pair of this test's own
// (scripts/lib/replica_pair.sh: streaming replication, a PgBouncer in front of
// each node), so the shared servers are never touched. The cases run in order:
// the standby serves reads first, then the primary is stopped in the middle of
// several transactions and the standby promoted.

#define BOOST_TEST_MODULE failover
#include <boost/test/unit_test.hpp>

#include <sys/socket.h>

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include <pqscope/pool.hpp>

#include "support/replica_pair.hpp"
#include "support/servers.hpp"

namespace {

using ms = std::chrono::milliseconds;

// The pair, started once for this process and stopped at its end.
pqtest::replica_pair& pair() {
  static pqtest::replica_pair p{"pqscope-pair"};
  return p;
}

bool in_recovery(pqscope::connection& c) { return c.query_value<bool>("SELECT pg_is_in_recovery()"); }

void wait_for_replay() { pair().wait_for_replay(); }

// libpq_driver with a hook that runs once COMMIT has been answered, before the
// answer reaches the library, which is then told the connection was lost.
struct cut_after_commit : pqscope::libpq_driver {
  std::function<void()> hook;
  pqscope::batch_reply exchange(const std::vector<pqscope::statement>& batch) {
    const bool commit = !batch.empty() && std::string(batch.back().sql) == "COMMIT";
    pqscope::batch_reply br = libpq_driver::exchange(batch);
    if (commit && hook) {
      ::shutdown(PQsocket(native_handle()), SHUT_RDWR);
      hook();
      br.lost = true;
      br.lost_message = "answer cut off by the test";
      for (auto& r : br.replies) r.st = pqscope::reply::status::skipped;
    }
    return br;
  }
};

struct pair_fixture {
  pair_fixture() {
    pqscope::connection p{pair().primary()};
    p.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v text)");
    wait_for_replay();
  }
};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(pair_fixture);

BOOST_AUTO_TEST_CASE(target_session_attrs_finds_each_node) {
  for (bool pgb : {false, true}) {
    BOOST_TEST_CONTEXT((pgb ? "through PgBouncer" : "direct")) {
      pqscope::connection rw{pair().both("read-write", pgb)};
      BOOST_TEST(!in_recovery(rw));
      rw.execute("INSERT INTO t VALUES ($1, 'rw') ON CONFLICT DO NOTHING", pgb ? 101 : 100);
      pqscope::connection ro{pair().both("standby", pgb)};
      BOOST_TEST(in_recovery(ro));
    }
  }
}

// Read-only work runs on a standby; a write there is SQLSTATE 25006, and in a
// scope it dooms the scope like any failed statement.
BOOST_AUTO_TEST_CASE(read_only_transactions_run_on_a_standby) {
  wait_for_replay();
  for (const std::string& info : {pair().standby(), pair().pgbouncer_standby()}) {
    BOOST_TEST_CONTEXT(info) {
      pqscope::connection s{info};
      pqscope::transaction_options ro;
      ro.read_only = true;
      ro.isolation = pqscope::isolation::repeatable_read;
      const long n = pqscope::atomic(s, ro, [&] {
        pqscope::atomic(s, [&] { s.execute("SELECT 1"); });  // savepoints work on a standby
        return s.query_value<long>("SELECT count(*) FROM t");
      });
      BOOST_TEST(n >= 1);
      // A scope without read_only works too: a standby's transactions are read-only.
      BOOST_TEST(pqscope::atomic(s, [&] { return s.query_value<long>("SELECT count(*) FROM t"); }) == n);

      auto write_fails = [&](const std::function<void()>& fn) {
        try {
          fn();
          BOOST_ERROR("a write on a standby succeeded");
        } catch (const pqscope::sql_error& e) {
          BOOST_TEST(e.sqlstate() == "25006", e.what());
        }
      };
      write_fails([&] { s.execute("INSERT INTO t VALUES (1, 'x')"); });
      {
        pqscope::transaction tx{s};
        write_fails([&] { s.execute("INSERT INTO t VALUES (1, 'x')"); });
        BOOST_CHECK_THROW(s.execute("SELECT 1"), pqscope::transaction_aborted);
      }
      BOOST_TEST(s.query_value<int>("SELECT 1") == 1);
    }
  }
}

// Pgpool-II load-balances the reads of an explicit transaction until its first
// write (unless it is SERIALIZABLE): a pqscope transaction that reads, then
// writes, reads from a standby and writes on the primary. Its reads miss what the
// standby has not replayed, and they take no part in the primary's transaction.
BOOST_AUTO_TEST_CASE(pgpool_sends_the_reads_of_a_transaction_to_a_standby) {
  pqscope::connection p{pair().primary()};
  p.execute("CREATE TABLE lb (id int PRIMARY KEY)");
  wait_for_replay();
  pair().run("pause-replication");
  p.execute("INSERT INTO lb VALUES (1)");  // the standby never sees it while paused

  auto read_write_read = [](pqscope::connection& c, const pqscope::transaction_options& o) {
    return pqscope::atomic(c, o, [&] {
      const long before = c.query_value<long>("SELECT count(*) FROM lb");
      c.execute("INSERT INTO lb VALUES (2)");
      const long after = c.query_value<long>("SELECT count(*) FROM lb");
      c.execute("DELETE FROM lb WHERE id = 2");
      return std::to_string(before) + "," + std::to_string(after);
    });
  };
  pqscope::transaction_options rc, rr, ser;
  rr.isolation = pqscope::isolation::repeatable_read;
  ser.isolation = pqscope::isolation::serializable;
  {
    pqscope::connection c{pair().pgpool() + " application_name=reader"};
    // The first read ran on the standby: it misses row 1, which the same transaction then counts.
    BOOST_TEST(read_write_read(c, rc) == "0,2");
    // A scope with modes sends BEGIN, then SET TRANSACTION ...: after that SET,
    // Pgpool-II keeps the rest of the transaction on the primary.
    BOOST_TEST(read_write_read(c, rr) == "1,2");
    BOOST_TEST(read_write_read(c, ser) == "1,2");  // SERIALIZABLE is never load-balanced
    // The modes hold, as the server has them, inside the scope.
    for (const auto& [o, level] : {std::pair{rr, "repeatable read"}, std::pair{ser, "serializable"}}) {
      pqscope::atomic(c, o, [&] {
        BOOST_TEST(c.query_value<std::string>("SHOW transaction_isolation") == level);
        c.execute("INSERT INTO lb VALUES (3)");
        BOOST_TEST(c.query_value<std::string>("SHOW transaction_isolation") == level);
        c.execute("DELETE FROM lb WHERE id = 3");
      });
    }
  }
  {
    // app_name_redirect_preference_list sends this application's reads to the primary.
    pqscope::connection c{pair().pgpool() + " application_name=on_primary_app"};
    BOOST_TEST(read_write_read(c, rc) == "1,2");
  }
  pair().run("resume-replication");
  wait_for_replay();
}

// With synchronous replication, a COMMIT waits for the standby; a cancel would
// end the wait and PostgreSQL would report the COMMIT as done (committed locally,
// maybe not replicated). network_timeout sends no cancel while COMMIT's answer is
// awaited: the caller hears in_doubt_error, never a success the standby lacks.
BOOST_AUTO_TEST_CASE(commit_waiting_for_a_synchronous_standby_is_never_cancelled) {
  pqscope::connection admin{pair().primary()};
  admin.execute("ALTER SYSTEM SET synchronous_standby_names = 'nobody'");
  admin.execute("SELECT pg_reload_conf()");
  std::this_thread::sleep_for(ms(200));
  {
    pqscope::connection_options o;
    o.network_timeout = ms(300);
    pqscope::connection c{pair().primary(), o};
    pqscope::transaction tx{c};
    c.set_local("synchronous_commit", "on");  // the pair, like the shared server, defaults to off
    c.execute("INSERT INTO t VALUES (200, 'sync')");
    const auto start = std::chrono::steady_clock::now();
    BOOST_CHECK_THROW(tx.commit(), pqscope::in_doubt_error);
    BOOST_TEST((std::chrono::steady_clock::now() - start < ms(1500)));
  }
  // Still waiting, invisible to others.
  BOOST_TEST(admin.query_value<long>("SELECT count(*) FROM t WHERE id = 200") == 0);
  admin.execute("ALTER SYSTEM RESET synchronous_standby_names");
  admin.execute("SELECT pg_reload_conf()");
  // Released, it commits: in doubt meant exactly that.
  for (int i = 0; i < 100 && admin.query_value<long>("SELECT count(*) FROM t WHERE id = 200") == 0; ++i)
    std::this_thread::sleep_for(ms(20));
  BOOST_TEST(admin.query_value<long>("SELECT count(*) FROM t WHERE id = 200") == 1);
}

// The primary goes away in the middle of several transactions; the standby is promoted.
BOOST_AUTO_TEST_CASE(failover_mid_transaction) {
  const std::string rw = pair().both("read-write");
  pqscope::transaction_options resolve;
  resolve.resolve_in_doubt = true;

  // A: a scope open on the primary.
  pqscope::connection a{rw};
  BOOST_REQUIRE(!in_recovery(a));
  // B: its COMMIT will go to a dead primary (resolve_in_doubt).
  pqscope::connection b{rw};
  // D: commits while the standby is cut off, and the commit is acknowledged.
  pqscope::connection d{rw};
  // The pool has an idle connection to the old primary.
  pqscope::pool_options po;
  po.health_check_after = ms(0);
  pqscope::pool pool{rw, po};
  { auto lease = pool.acquire(); lease->execute("SELECT 1"); }
  // PgBouncer in front of each node; bounded, since PgBouncer keeps a client
  // waiting for a server it cannot reach.
  pqscope::connection_options bounded;
  bounded.network_timeout = ms(2000);
  pqscope::connection e{pair().both("read-write", true), bounded};

  std::optional<pqscope::transaction> ta, tb;
  ta.emplace(a);
  a.execute("INSERT INTO t VALUES (1, 'a')");
  tb.emplace(b, resolve);
  b.execute("INSERT INTO t VALUES (2, 'b')");

  // C: its COMMIT runs on the old primary, is replicated, and the answer is lost
  // while the failover happens. resolve_in_doubt then asks the new primary.
  pqscope::basic_connection<cut_after_commit> c{rw};
  bool c_committed = false;
  c.driver().hook = [&] {
    wait_for_replay();  // the commit and B's insert reached the standby
    pair().run("pause-replication");
    pqscope::atomic(d, [&] { d.execute("INSERT INTO t VALUES (4, 'd')"); });  // acknowledged by the old primary only
    pair().run("stop-primary");
    // No read-write host until the standby is promoted.
    BOOST_CHECK_THROW(pqscope::connection{rw}, pqscope::connection_error);
    pair().run("promote");
  };
  {
    pqscope::transaction tc{c, resolve};
    c.on_commit([&] { c_committed = true; });
    c.execute("INSERT INTO t VALUES (3, 'c')");
    BOOST_CHECK_NO_THROW(tc.commit());  // settled by pg_xact_status on the new primary
  }
  BOOST_TEST(c_committed);

  // A: the open scope ends with connection_error; the destructor is quiet.
  BOOST_CHECK_THROW(a.execute("INSERT INTO t VALUES (5, 'a')"), pqscope::connection_error);
  ta.reset();
  // B: COMMIT cannot reach anyone; the new primary knows the transaction never committed.
  try {
    tb->commit();
    BOOST_ERROR("B's commit succeeded");
  } catch (const pqscope::in_doubt_error& err) {
    BOOST_ERROR("B's commit was not resolved: " << err.what());
  } catch (const pqscope::connection_error& err) {
    BOOST_TEST_MESSAGE("B: " << err.what());
  }
  tb.reset();

  // reconnect() with the multi-host conninfo finds the new primary.
  a.reconnect();
  BOOST_TEST(!in_recovery(a));
  pqscope::atomic(a, [&] { a.execute("INSERT INTO t VALUES (6, 'a again')"); });
  // Asynchronous replication: D's acknowledged commit is missing on the new primary.
  BOOST_TEST(a.query_value<std::string>("SELECT string_agg(id::text, ',' ORDER BY id) FROM t WHERE id < 100") ==
             "3,6");

  // The pool drops its dead connection and opens one to the new primary.
  {
    auto lease = pool.acquire();
    BOOST_TEST(!in_recovery(*lease));
  }
  BOOST_TEST(pool.stats().health_check_failures == 1u);

  // Through PgBouncer: the old primary's PgBouncer has no server to lend.
  BOOST_CHECK_THROW(e.execute("SELECT 1"), pqscope::connection_error);
  // PgBouncer 1.18 may tell its clients the in_hot_standby it cached at its first
  // server login, so libpq (target_session_attrs=read-write) can take the promoted
  // node's PgBouncer for a standby (seen here in some runs, not all): RECONNECT on
  // its admin console renews its server connections, and with them that value.
  pair().run("pgbouncer-reconnect");
  e.reconnect();
  BOOST_TEST(!in_recovery(e));
  BOOST_TEST(e.query_value<long>("SELECT count(*) FROM t WHERE id = 6") == 1);
  pqscope::atomic(e, [&] { e.execute("INSERT INTO t VALUES (7, 'e')"); });
}

// The cases below fail over a pair of their own each.

// The COMMIT's answer is lost while there is no primary: the resolver keeps asking
// until the standby is promoted (resolve_wait), and finds the commit there. A
// transaction lost in the same window with the default budget (network_timeout and
// its grace) gives up first: in_doubt_error.
BOOST_AUTO_TEST_CASE(the_resolver_waits_for_the_promotion) {
  pqtest::replica_pair local{"pqscope-resolve-wait"};
  const std::string rw = local.both("read-write");
  {
    pqscope::connection p{local.primary()};
    p.execute("CREATE TABLE t (id int PRIMARY KEY, v text)");
  }
  pqscope::connection_options bounded;
  bounded.network_timeout = ms(300);
  pqscope::transaction_options waiting;
  waiting.resolve_in_doubt = true;
  waiting.resolve_wait = ms(20000);
  pqscope::transaction_options hasty = waiting;
  hasty.resolve_wait = ms(0);

  // D: its COMMIT goes to the dead primary, with the default budget.
  pqscope::connection d{rw, bounded};
  std::optional<pqscope::transaction> td;
  td.emplace(d, hasty);
  d.execute("INSERT INTO t VALUES (2, 'd')");

  pqscope::basic_connection<cut_after_commit> c{rw, bounded};
  std::thread promoter;
  auto promoted_at = std::chrono::steady_clock::now();
  c.driver().hook = [&] {
    local.wait_for_replay();  // the commit record (and D's insert) reached the standby
    local.run("stop-primary");
    const auto t0 = std::chrono::steady_clock::now();
    BOOST_CHECK_THROW(td->commit(), pqscope::in_doubt_error);
    BOOST_TEST_MESSAGE("D gave up after " << std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - t0).count()
                                          << " ms");
    td.reset();
    promoter = std::thread([&] {
      std::this_thread::sleep_for(ms(1500));
      local.run("promote");
      promoted_at = std::chrono::steady_clock::now();
    });
  };
  bool committed = false;
  const auto t0 = std::chrono::steady_clock::now();
  {
    pqscope::transaction tc{c, waiting};
    c.on_commit([&] { committed = true; });
    c.execute("INSERT INTO t VALUES (1, 'c')");
    BOOST_CHECK_NO_THROW(tc.commit());
  }
  promoter.join();
  const auto waited = std::chrono::steady_clock::now() - t0;
  BOOST_TEST(committed);
  BOOST_TEST((waited >= ms(1500)));
  BOOST_TEST_MESSAGE("C settled " << std::chrono::duration_cast<ms>(std::chrono::steady_clock::now() - promoted_at).count()
                                  << " ms after the promotion, " << std::chrono::duration_cast<ms>(waited).count()
                                  << " ms after COMMIT");
  pqscope::connection n{rw};
  BOOST_TEST(!in_recovery(n));
  BOOST_TEST(n.query_value<std::string>("SELECT string_agg(id::text, ',' ORDER BY id) FROM t") == "1");
}

// The transaction's writes never reached the standby, and the promoted standby
// hands out its id again, to a transaction that commits: pg_xact_status() of that
// id now says "committed" of another transaction. The resolver sees that the new
// primary's history ends before the transaction's first write, and reports a
// rollback, which is what the surviving history holds.
BOOST_AUTO_TEST_CASE(an_id_handed_out_again_is_not_taken_for_the_lost_transaction) {
  pqtest::replica_pair local{"pqscope-resolve-reuse"};
  const std::string rw = local.both("read-write");
  {
    pqscope::connection p{local.primary()};
    p.execute("CREATE TABLE t (id int PRIMARY KEY, v text)");
  }
  local.wait_for_replay();
  local.run("pause-replication");
  pqscope::transaction_options resolve;
  resolve.resolve_in_doubt = true;
  resolve.resolve_wait = ms(20000);

  pqscope::basic_connection<cut_after_commit> c{rw};
  std::string xid;
  std::string reused;
  c.driver().hook = [&] {
    local.run("stop-primary");
    local.run("promote");
    // Ids from the new primary, each in a transaction that commits, until it hands out C's.
    pqscope::connection n{local.standby()};
    for (int i = 0; i < 10000; ++i) {
      reused = n.query_value<std::string>("SELECT pg_current_xact_id()::text");
      if (std::stoull(reused) >= std::stoull(xid)) break;
    }
  };
  bool committed = false, rolled_back = false;
  {
    pqscope::transaction tc{c, resolve};
    c.on_commit([&] { committed = true; });
    c.on_rollback([&] { rolled_back = true; });
    c.execute("INSERT INTO t VALUES (1, 'c')");
    xid = c.query_value<std::string>("SELECT pg_current_xact_id()::text");
    try {
      tc.commit();
      BOOST_ERROR("commit() returned: the resolver took another transaction's id for this one");
    } catch (const pqscope::in_doubt_error& e) {
      BOOST_ERROR("in doubt: " << e.what());
    } catch (const pqscope::connection_error& e) {
      BOOST_TEST_MESSAGE("C: " << e.what());
      BOOST_TEST(std::string(e.what()).find("not in the server's history") != std::string::npos);
    }
  }
  BOOST_TEST(!committed);
  BOOST_TEST(rolled_back);
  // The hazard was real: the id was handed out again, and committed.
  BOOST_TEST(reused == xid);
  pqscope::connection n{rw};
  BOOST_TEST(n.query_value<std::string>("SELECT pg_xact_status($1::xid8)", xid) == "committed");
  BOOST_TEST(n.query_value<long>("SELECT count(*) FROM t") == 0);
}
