#pragma once
// A primary/standby pair of one test process's own (scripts/lib/replica_pair.sh:
// streaming replication, a PgBouncer in front of each node, Pgpool-II in front of
// both), so the shared servers are never touched. Used by failover.cpp and
// read_your_writes.cpp; each starts its pair once and stops it at the end.

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>

#include "servers.hpp"

namespace pqtest {

class replica_pair {
 public:
  // The pair lives in /tmp/NAME-PID; start_args go after `start DIR` (e.g. "--apply-delay 500ms").
  explicit replica_pair(const std::string& name, const std::string& start_args = "")
      : script_(pqtest::env("PQSCOPE_TEST_REPLICA_PAIR")), dir_("/tmp/" + name + "-" + std::to_string(::getpid())) {
    run("stop");  // a leftover of an earlier run with the same pid
    run("start", start_args);
    std::ifstream in(dir_ + "/env");
    std::string line;
    while (std::getline(in, line)) {
      const auto eq = line.find('=');
      if (eq != std::string::npos) port_[line.substr(0, eq)] = line.substr(eq + 1);
    }
    if (port_.size() != 5) throw std::runtime_error("replica_pair: no ports in " + dir_ + "/env");
  }
  ~replica_pair() {
    try {
      run("stop");
    } catch (...) {
    }
  }
  replica_pair(const replica_pair&) = delete;
  replica_pair& operator=(const replica_pair&) = delete;

  // A command of the script on this pair: stop-primary, promote, pause-replication...
  void run(const std::string& cmd, const std::string& args = "") const {
    const std::string line = script_ + " " + cmd + " " + dir_ + (args.empty() ? "" : " " + args);
    if (std::system(line.c_str()) != 0) throw std::runtime_error("failed: " + line);
  }

  [[nodiscard]] std::string primary() const { return node(port_.at("PRIMARY_PORT")); }
  [[nodiscard]] std::string standby() const { return node(port_.at("STANDBY_PORT")); }
  [[nodiscard]] std::string pgbouncer_primary() const { return node(port_.at("PGB_PRIMARY_PORT")); }
  [[nodiscard]] std::string pgbouncer_standby() const { return node(port_.at("PGB_STANDBY_PORT")); }
  // Pgpool-II in front of both: reads to the standby, unless application_name starts with on_primary.
  [[nodiscard]] std::string pgpool() const { return node(port_.at("PGPOOL_PORT")); }
  // Both nodes; libpq tries them in order and keeps the first that suits.
  [[nodiscard]] std::string both(const std::string& attrs, bool through_pgbouncer = false) const {
    const std::string a = through_pgbouncer ? "PGB_STANDBY_PORT" : "STANDBY_PORT";
    const std::string b = through_pgbouncer ? "PGB_PRIMARY_PORT" : "PRIMARY_PORT";
    // The standby first, so that finding the primary is not luck.
    return "host=127.0.0.1,127.0.0.1 user=postgres dbname=pqscope connect_timeout=5 port=" + port_.at(a) + "," +
           port_.at(b) + " target_session_attrs=" + attrs;
  }
  // Until the standby has replayed everything the primary has logged: the insert
  // position (with synchronous_commit off a commit record may not be written yet),
  // less a page header if it sits on a page boundary (wal_position::record_end).
  void wait_for_replay() const {
    pqscope::connection p{primary()}, s{standby()};
    const auto lsn = p.query_value<pqscope::wal_position>("SELECT pg_current_wal_insert_lsn()").record_end();
    for (int i = 0; i < 500; ++i) {
      if (s.query_value<bool>("SELECT pg_last_wal_replay_lsn() >= $1", lsn)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    throw std::runtime_error("replica_pair: the standby did not replay up to " + lsn.to_string());
  }
  [[nodiscard]] std::string after_failover(const std::string& attrs) const {
    // The old primary first: it is down, so libpq moves on.
    return "host=127.0.0.1,127.0.0.1 user=postgres dbname=pqscope connect_timeout=5 port=" +
           port_.at("PRIMARY_PORT") + "," + port_.at("STANDBY_PORT") + " target_session_attrs=" + attrs;
  }

 private:
  static std::string node(const std::string& port) {
    return "host=127.0.0.1 user=postgres dbname=pqscope connect_timeout=5 port=" + port;
  }

  std::string script_, dir_;
  std::map<std::string, std::string> port_;
};

}  // namespace pqtest
