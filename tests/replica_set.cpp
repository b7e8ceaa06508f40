// pqscope::replica_set against the shared primary and its streaming standby
// (scripts/dev.sh servers --standby): a standby that cannot connect is passed over
// and counted down; one that is behind (its replay paused) makes a read throw
// replica_behind when fallback_to_primary is off, and go to the primary when it is
// on. tests/asio_replicas.cpp has the same cases, and more, for pqscope::asio::replica_set.
// Last, transaction_options::at_least against the standby on every route to it:
// directly, through PgBouncer 1.18 and through PgBouncer 1.24, which tracks the
// check once pqscope prepares it.

#define BOOST_TEST_MODULE replica_set
#include <boost/test/unit_test.hpp>

#include <libpq-fe.h>

#include <cstdint>
#include <string>
#include <vector>

#include "support/servers.hpp"
#include "support/standby.hpp"

using pqscope::wal_position;
namespace sb = pqtest::standby;

namespace {

void insert(pqscope::replica_set& rs, wal_position& seen, const std::string& table, int id) {
  rs.write(seen, [&](pqscope::connection& c) { c.execute("INSERT INTO " + table + " VALUES ($1, 'x')", id); });
}

bool in_recovery(pqscope::connection& c) { return c.query_value<bool>("SELECT pg_is_in_recovery()"); }

}  // namespace

BOOST_AUTO_TEST_SUITE(replicas, *boost::unit_test::precondition(sb::available))

BOOST_AUTO_TEST_CASE(a_standby_that_cannot_connect_is_passed_over) {
  pqtest::scratch_table table;
  wal_position seen;
  {
    pqscope::replica_set rs{sb::primary(), {sb::unreachable(), sb::conninfo()}};
    insert(rs, seen, table.name(), 1);
    sb::wait_for_replay();
    for (int i = 0; i < 10; ++i) BOOST_TEST(rs.read(seen, in_recovery));
    pqscope::lease l = rs.standby();
    BOOST_TEST(in_recovery(*l));
    const pqscope::replica_set_stats st = rs.stats();
    BOOST_TEST(st.standby_down >= 1U);
    BOOST_TEST(st.reads_on_standby == 10U);
    BOOST_TEST(st.reads_on_primary == 0U);
  }
  {
    pqscope::replica_set rs{sb::primary(), {sb::unreachable()}};
    BOOST_TEST(!rs.read(seen, in_recovery));
    BOOST_TEST(rs.stats().standby_down == 1U);
    BOOST_TEST(rs.stats().reads_on_primary == 1U);
  }
  {
    pqscope::replica_set_options o;
    o.fallback_to_primary = false;
    pqscope::replica_set rs{sb::primary(), {sb::unreachable()}, o};
    BOOST_CHECK_THROW(rs.read(seen, in_recovery), pqscope::connection_error);
    BOOST_TEST(rs.stats().standby_down == 1U);
    BOOST_TEST(rs.stats().reads_on_primary == 0U);
  }
}

BOOST_AUTO_TEST_CASE(a_standby_behind_is_refused_without_fallback) {
  pqtest::scratch_table table;
  pqscope::replica_set_options strict;
  strict.fallback_to_primary = false;
  pqscope::replica_set rs{sb::primary(), {sb::conninfo()}, strict};
  wal_position seen;
  insert(rs, seen, table.name(), 1);
  sb::wait_for_replay();
  sb::replay_paused paused;
  insert(rs, seen, table.name(), 2);
  int answered = 0;  // statements of fn that got an answer: the check refuses the first one
  try {
    rs.read(seen, [&](pqscope::connection& c) {
      const long n = c.query_value<long>("SELECT count(*) FROM " + table.name());
      ++answered;
      return n;
    });
    BOOST_ERROR("a read the standby is behind for ran there, or elsewhere");
  } catch (const pqscope::replica_behind& e) {
    BOOST_TEST(e.required().value() == seen.value());
    BOOST_TEST(e.replayed().value() < seen.value());
  }
  BOOST_TEST(answered == 0);
  BOOST_TEST(rs.stats().standby_behind == 1U);
  BOOST_TEST(rs.stats().reads_on_standby == 0U);
  BOOST_TEST(rs.stats().reads_on_primary == 0U);

  // Fallback on: the primary serves, and sees row 2.
  pqscope::replica_set lenient{sb::primary(), {sb::conninfo()}};
  BOOST_TEST(lenient.read(seen, [&](pqscope::connection& c) {
    return c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE id = 2") == 1 && !in_recovery(c);
  }));
  BOOST_TEST(lenient.stats().standby_behind == 1U);
  BOOST_TEST(lenient.stats().reads_on_primary == 1U);
}

// The check asks the real standby on each route: it passes once the standby has
// replayed the commit (read committed in the BEGIN batch, repeatable read alone,
// prepared where the route prepares statements), and refuses while replay is
// paused, leaving the session idle.
BOOST_AUTO_TEST_CASE(the_check_on_every_route_to_the_standby) {
  struct route {
    std::string name, conninfo;
    pqscope::connection_options options;
    bool prepares;
  };
  std::vector<route> routes;
  pqscope::connection_options direct;
  direct.pooling = pqscope::pooling::none;
  routes.push_back({"direct", sb::conninfo(), direct, true});
  routes.push_back({"PgBouncer 1.18", pqtest::env("PQSCOPE_TEST_PGBOUNCER_STANDBY"), {}, false});
  if (const char* b124 = std::getenv("PQSCOPE_TEST_PGBOUNCER124")) {
    std::string ci = b124;
    const auto at = ci.find("dbname=pqscope");
    BOOST_REQUIRE(at != std::string::npos);
    ci.replace(at, std::string("dbname=pqscope").size(), "dbname=pqscope_standby");
    pqscope::connection_options tracked;
    tracked.pooler_max_prepared_statements = 200;
    routes.push_back({"PgBouncer 1.24", ci, tracked, true});
  } else {
    BOOST_TEST_MESSAGE("PQSCOPE_TEST_PGBOUNCER124 unset: PgBouncer 1.24 not tried");
  }

  pqtest::scratch_table table;
  pqscope::connection_options po;
  po.pooling = pqscope::pooling::none;
  po.commit_positions = true;
  pqscope::connection primary{sb::primary(), po};
  int id = 0;
  auto write = [&] {
    ++id;
    pqscope::atomic(primary, [&] { primary.execute("INSERT INTO " + table.name() + " VALUES ($1, 'x')", id); });
    return primary.last_commit_position();
  };
  auto count = [&](pqscope::connection& c, int which) {
    return c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE id = $1", which);
  };

  for (const route& r : routes) {
    BOOST_TEST_CONTEXT(r.name) {
      std::vector<pqscope::connection> cs;
      for (int k = 0; k < 3; ++k) cs.emplace_back(r.conninfo, r.options);
      const wal_position seen = write();
      const int row = id;
      sb::wait_for_replay(seen);
      for (int i = 0; i < 12; ++i) {
        pqscope::transaction_options o;
        o.read_only = true;
        o.at_least = seen;
        o.isolation = i % 2 == 0 ? pqscope::isolation::server_default : pqscope::isolation::repeatable_read;
        pqscope::connection& c = cs[static_cast<std::size_t>(i) % cs.size()];
        BOOST_TEST(pqscope::atomic(c, o, [&] { return count(c, row); }) == 1);
      }
      std::uint64_t checks = 0, alone = 0, behind = 0, prepared = 0;
      for (auto& c : cs) {
        checks += c.stats().replica_checks;
        alone += c.stats().replica_checks_alone;
        behind += c.stats().replica_behind;
        prepared += c.stats().prepared;
      }
      BOOST_TEST(checks == 12U);
      BOOST_TEST(alone == 6U);
      BOOST_TEST(behind == 0U);
      // Per connection the check's two texts (in the batch, alone) and the count, each
      // prepared on its second run, or nothing where the route prepares nothing.
      BOOST_TEST(prepared == (r.prepares ? 9U : 0U));

      {
        sb::replay_paused paused;
        const wal_position later = write();
        for (auto iso : {pqscope::isolation::server_default, pqscope::isolation::repeatable_read}) {
          pqscope::transaction_options o;
          o.read_only = true;
          o.at_least = later;
          o.isolation = iso;
          bool ran = false;
          BOOST_CHECK_THROW(pqscope::atomic(cs[0], o,
                                            [&] {
                                              (void)count(cs[0], id);
                                              ran = true;
                                            }),
                            pqscope::replica_behind);
          BOOST_TEST(!ran);
          BOOST_TEST(PQtransactionStatus(cs[0].native_handle()) == PQTRANS_IDLE);
        }
        BOOST_TEST(cs[0].stats().replica_behind == 2U);
      }
      sb::wait_for_replay(primary.last_commit_position());
      pqscope::transaction_options o;
      o.read_only = true;
      o.at_least = primary.last_commit_position();
      BOOST_TEST(pqscope::atomic(cs[1], o, [&] { return count(cs[1], id); }) == 1);
    }
  }
}

// The in-doubt resolver's question (detail/in_doubt.hpp) asked of the real servers
// about real transactions, on every route: on the primary, which ran them and has
// not recovered since, the status; on the standby, "ask a primary". The verdicts
// after a failover are tests/failover.cpp's.
BOOST_AUTO_TEST_CASE(the_in_doubt_verdict_of_the_primary_and_of_the_standby) {
  pqtest::scratch_table table;
  auto recorded = [&](bool commit, int id) {
    pqscope::connection c{sb::primary()};
    pqscope::detail::in_doubt q;
    pqscope::transaction tx{c};
    c.execute("INSERT INTO " + table.name() + " VALUES ($1, 'x')", id);
    BOOST_TEST_REQUIRE(pqscope::detail::read_probe(c.execute(pqscope::detail::in_doubt_probe_sql), q));
    if (commit) tx.commit();
    else tx.rollback();
    return q;
  };
  auto ask = [](const std::string& conninfo, const pqscope::connection_options& o,
                const pqscope::detail::in_doubt& q) {
    pqscope::connection c{conninfo, o};
    const pqscope::detail::verdict_question question(q);
    const pqscope::statement st = question.ask();
    pqscope::reply r;
    r.st = pqscope::reply::status::ok;
    r.res = c.execute(st.sql, q.xid, std::string(st.values[1]), q.timeline, q.replayed);
    return pqscope::detail::read_verdict(r, q);
  };
  using then = pqscope::detail::verdict::then;
  const pqscope::detail::in_doubt committed = recorded(true, 1), rolled_back = recorded(false, 2);
  BOOST_TEST(committed.timeline.size() == 8U);
  BOOST_TEST(!committed.first_write.empty());
  std::vector<std::pair<std::string, std::string>> standbys{
      {"direct", sb::conninfo()}, {"PgBouncer 1.18", pqtest::env("PQSCOPE_TEST_PGBOUNCER_STANDBY")}};
  sb::wait_for_replay();
  for (const auto& [q, status] : {std::pair{committed, "committed"}, std::pair{rolled_back, "aborted"}}) {
    for (const auto& t : pqtest::targets()) {
      BOOST_TEST_CONTEXT("primary, " << t.name) {
        const pqscope::detail::verdict v = ask(t.conninfo, {}, q);
        BOOST_TEST((v.next == then::done));
        BOOST_TEST(v.outcome == status);
      }
    }
    for (const auto& [name, conninfo] : standbys) {
      BOOST_TEST_CONTEXT("standby, " << name) {
        BOOST_TEST((ask(conninfo, {}, q).next == then::reconnect));
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
