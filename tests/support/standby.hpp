#pragma once
// The streaming standby of the shared primary (scripts/dev.sh servers --standby:
// PQSCOPE_TEST_STANDBY), for the replica set tests (replica_set.cpp, asio_replicas.cpp).
// Both pause its replay, so they hold the CTest resource lock "standby".

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include <boost/test/unit_test.hpp>

#include <pqscope/pqscope.hpp>

#include "servers.hpp"

namespace pqtest::standby {

inline std::optional<std::string> conninfo_if_any() {
  const char* s = std::getenv("PQSCOPE_TEST_STANDBY");
  if (s == nullptr || *s == '\0') return std::nullopt;
  return std::string(s);
}

// A suite's precondition: without a standby its cases are skipped, with the reason.
inline boost::test_tools::assertion_result available(boost::unit_test::test_unit_id) {
  boost::test_tools::assertion_result r(conninfo_if_any().has_value());
  if (!r) r.message() << "PQSCOPE_TEST_STANDBY is not set: run under scripts/dev.sh servers --standby";
  return r;
}

inline std::string primary() { return pqtest::env("PQSCOPE_TEST_DIRECT"); }
inline std::string conninfo() { return pqtest::env("PQSCOPE_TEST_STANDBY"); }
// Nothing listens there: a connect fails at once.
inline std::string unreachable() { return "host=127.0.0.1 port=1 user=postgres dbname=pqscope connect_timeout=2"; }

// The standby's own session, from outside.
inline pqscope::connection& observer() {
  static pqscope::connection c = [] {
    pqscope::connection_options o;
    o.pooling = pqscope::pooling::none;
    return pqscope::connection{conninfo(), o};
  }();
  return c;
}

inline pqscope::wal_position replayed() {
  return observer().query_value<pqscope::wal_position>("SELECT pg_last_wal_replay_lsn()");
}

// Until the standby has replayed all the primary has logged so far, and `also`.
// The insert position, not the write position: with synchronous_commit = off a
// commit record can still be unwritten when the commit is answered. record_end():
// at a page boundary the insert position counts the next page's header.
inline void wait_for_replay(pqscope::wal_position also = {}) {
  auto target =
      pqtest::shared_observer().query_value<pqscope::wal_position>("SELECT pg_current_wal_insert_lsn()").record_end();
  target.merge(also);
  for (int i = 0; i < 1000; ++i) {
    if (replayed() >= target) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  BOOST_FAIL("the standby did not catch up with " << target.to_string());
}

// The standby stops replaying (before the next record) while this lives: what the
// primary commits meanwhile stays unseen there, whatever the timing.
class replay_paused {
 public:
  replay_paused() { observer().execute("SELECT pg_wal_replay_pause()"); }
  ~replay_paused() {
    try {
      resume();
    } catch (...) {
    }
  }
  replay_paused(const replay_paused&) = delete;
  replay_paused& operator=(const replay_paused&) = delete;
  void resume() { observer().execute("SELECT pg_wal_replay_resume()"); }
};

}  // namespace pqtest::standby
