// pqscope::replica_set against the shared primary and its streaming standby
// (scripts/dev.sh servers --standby): a standby that cannot connect is passed over
// and counted down; one that is behind (its replay paused) makes a read throw
// replica_behind when fallback_to_primary is off, and go to the primary when it is
// on. tests/asio_replicas.cpp has the same cases, and more, for pqscope::asio::replica_set.

#define BOOST_TEST_MODULE replica_set
#include <boost/test/unit_test.hpp>

#include <string>

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

BOOST_AUTO_TEST_SUITE_END()
