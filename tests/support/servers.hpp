#pragma once
// Test targets: every behaviour test runs once directly against PostgreSQL and
// once through PgBouncer in transaction pooling mode. scripts/dev.sh exports the
// connection strings; a run without them fails loudly instead of skipping.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <boost/test/unit_test.hpp>

#include <pqscope/pqscope.hpp>

namespace pqtest {

struct target {
  std::string name;      // "direct", "pgbouncer", "pgbouncer-1.24" or "pgpool"
  std::string conninfo;  // what the code under test connects to
  std::string admin;     // a PgBouncer's admin console; empty for the others
  [[nodiscard]] bool pgbouncer() const { return !admin.empty(); }
  friend std::ostream& operator<<(std::ostream& os, const target& t) { return os << t.name; }
};

inline std::string env(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0')
    throw std::runtime_error(std::string(name) + " is not set: run the tests with scripts/dev.sh test");
  return v;
}

inline std::vector<target> targets() {
  std::vector<target> all{{"direct", env("PQSCOPE_TEST_DIRECT"), {}},
                          {"pgbouncer", env("PQSCOPE_TEST_PGBOUNCER"), env("PQSCOPE_TEST_PGBOUNCER_ADMIN")}};
  // PgBouncer 1.24 (it tracks prepared statements), when the servers script started it.
  if (const char* b = std::getenv("PQSCOPE_TEST_PGBOUNCER124"); b != nullptr && *b != '\0')
    all.push_back({"pgbouncer-1.24", b, env("PQSCOPE_TEST_PGBOUNCER124_ADMIN")});
  // Pgpool-II in streaming_replication mode, when the servers script started it.
  if (const char* pgpool = std::getenv("PQSCOPE_TEST_PGPOOL"); pgpool != nullptr && *pgpool != '\0')
    all.push_back({"pgpool", pgpool, {}});
  return all;
}

// A name no other test (or concurrent test process) uses.
inline std::string unique_name(const std::string& prefix) {
  static std::atomic<int> counter{0};
  return prefix + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

// Options under which a connection to `t` prepares the statements it runs again
// (prepare::automatic): PostgreSQL itself and Pgpool-II keep the session's statements
// (pooling::none), PgBouncer 1.24 tracks them (max_prepared_statements = 200 in
// scripts/lib/servers.sh); PgBouncer 1.18 cannot (nothing).
inline std::optional<pqscope::connection_options> preparing_options(const target& t) {
  pqscope::connection_options o;
  o.prepare = pqscope::prepare::automatic;
  if (t.name == "pgbouncer") return std::nullopt;
  if (t.pgbouncer())
    o.pooler_max_prepared_statements = 200;
  else
    o.pooling = pqscope::pooling::none;
  return o;
}

// Appends application_name to a conninfo so the session can be found in pg_stat_activity.
inline std::string with_app_name(const target& t, const std::string& app) {
  return t.conninfo + " application_name=" + app;
}

// The observer: a direct connection to PostgreSQL that checks from outside what
// the code under test did (committed rows, sessions in pg_stat_activity).
// PostgreSQL itself, so the session-state guard is off.
inline pqscope::connection observer() {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;
  return pqscope::connection{env("PQSCOPE_TEST_DIRECT"), o};
}

// A table of its own for one test, dropped at the end. Not TEMP: a temporary
// table is session state and would not survive PgBouncer's transaction pooling.
class scratch_table {
 public:
  explicit scratch_table(const std::string& columns = "id int PRIMARY KEY, v text")
      : name_(unique_name("pqscope_t")) {
    observer().execute("CREATE TABLE " + name_ + " (" + columns + ")");
  }
  ~scratch_table() {
    try {
      observer().execute("DROP TABLE IF EXISTS " + name_);
    } catch (...) {
    }
  }
  scratch_table(const scratch_table&) = delete;
  scratch_table& operator=(const scratch_table&) = delete;
  [[nodiscard]] const std::string& name() const { return name_; }
  // Committed rows, as another session sees them.
  [[nodiscard]] long count() const { return observer().query_value<long>("SELECT count(*) FROM " + name_); }
  [[nodiscard]] std::string ids() const {
    return observer()
        .query_value<std::optional<std::string>>("SELECT string_agg(id::text, ',' ORDER BY id) FROM " + name_)
        .value_or("");
  }

 private:
  std::string name_;
};

// One observing session per test process, for checks that run often: a new direct
// session costs tens of milliseconds. (Not for forked children: they open their own.)
inline pqscope::connection& shared_observer() {
  static pqscope::connection c = observer();
  return c;
}

// Committed rows of a scratch table, as another session sees them.
inline long committed_count(const scratch_table& t) {
  return shared_observer().query_value<long>("SELECT count(*) FROM " + t.name());
}
inline std::string committed_ids(const scratch_table& t) {
  return shared_observer()
      .query_value<std::optional<std::string>>("SELECT string_agg(id::text, ',' ORDER BY id) FROM " + t.name())
      .value_or("");
}
inline void empty(const scratch_table& t) { shared_observer().execute("DELETE FROM " + t.name()); }

// NOTIFY from another session (the observer's).
inline void notify(const std::string& channel, const std::string& payload) {
  shared_observer().execute("SELECT pg_notify($1, $2)", channel, payload);
}

// Ends a backend from outside, and waits until pg_stat_activity no longer shows it.
inline void terminate_backend(int pid) {
  shared_observer().execute("SELECT pg_terminate_backend($1)", pid);
  for (int i = 0; i < 200; ++i) {
    if (shared_observer().query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 0) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  BOOST_FAIL("backend " << pid << " did not end");
}

// Runs body once per target. An exception fails that target only, and the report
// names the target (Boost shows no context for an uncaught exception).
template <class Body>
void for_each_target(Body&& body) {
  for (const target& t : targets()) BOOST_TEST_CONTEXT("target " << t.name) {
      try {
        body(t);
      } catch (const std::exception& e) {
        BOOST_ERROR("exception: " << e.what());
      }
    }
}

// Runs fn in a forked child and returns its exit code (fn's return value; 99 if it threw).
template <class F>
int in_child(F&& fn) {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    int code = 99;
    try {
      code = fn();
    } catch (...) {
    }
    ::_exit(code);  // no atexit handlers, no Boost.Test teardown in the child
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Sessions of this application_name that sit inside a transaction.
inline long idle_in_transaction(const std::string& app) {
  return shared_observer().query_value<long>(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state LIKE 'idle in transaction%'", app);
}

}  // namespace pqtest
