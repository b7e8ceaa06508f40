#define BOOST_TEST_MODULE load
#include <boost/test/unit_test.hpp>

// Many clients in several processes, through PgBouncer in transaction pooling
// mode: serializable transfers with nested scopes that fail on purpose. Checks
// that money is conserved, that nothing unexpected fails (a transfer that
// conflicts in all 1 + retries attempts is counted apart: retrying must get more
// transactions through than it gives up on), that no session is left idle in a
// transaction, and that every client stays recognisable by its application_name.
// The workload runs twice, unbatched and with batch = true on the outermost
// atomic(), and the share of sampled backends idle in transaction is printed for
// both.
//
// Worker processes never touch Boost.Test: they report over a pipe and exit with
// a status, and the parent alone asserts.

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;

constexpr int workers = 6;
constexpr int threads_per_worker = 8;
constexpr int clients = workers * threads_per_worker;
constexpr int accounts = 100;
constexpr int max_retries = 8;  // per transaction, after serialization failures and deadlocks
constexpr long opening_cents = 10000;
constexpr const char* app_prefix = "pqscope_load_";

int load_seconds() {
  const char* v = std::getenv("PQSCOPE_LOAD_SECONDS");
  if (v == nullptr || *v == '\0') return 6;
  return std::clamp(std::atoi(v), 1, 600);
}

std::string app_name(pid_t worker, int n) { return app_prefix + std::to_string(worker) + "_" + std::to_string(n); }

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// ---- the workload -----------------------------------------------------------

struct app_error : std::runtime_error {
  app_error() : std::runtime_error("deliberate application error") {}
};
struct rollback_request : std::runtime_error {
  rollback_request() : std::runtime_error("deliberate rollback") {}
};

// Each deposit is a scope of its own; then_fail throws after the UPDATE ran, so
// the savepoint has something to undo.
void deposit(pqscope::connection& c, const std::string& table, int id, long cents, bool then_fail = false) {
  pqscope::transaction tx{c};
  c.execute("UPDATE " + table + " SET cents = cents + $2 WHERE id = $1", id, cents);
  if (then_fail) throw app_error{};
  tx.commit();
}

// Credit first: a debit that fails must take the credit back with it.
void transfer(pqscope::connection& c, const std::string& table, int from, int to, long cents,
              bool then_fail = false) {
  pqscope::transaction tx{c};
  deposit(c, table, to, cents);
  deposit(c, table, from, -cents, then_fail);
  tx.commit();
}

struct client_result {
  std::string name;
  std::string self_name = "-";  // application_name as the client's own backend reports it
  std::uint64_t committed = 0, rolled_back = 0, expected_failures = 0, retries = 0, unexpected = 0;
  std::uint64_t gave_up = 0;    // a conflict in every one of 1 + retries attempts: SERIALIZABLE's answer, not a defect
  std::uint64_t recovered = 0;  // ran to its end (commit, or the rollback it asked for) after one retry or more
  std::uint64_t batched_attempts = 0, replays = 0;  // from the connection's stats
  std::uint64_t savepoints = 0, max_held = 0;        // SAVEPOINTs executed; most subtransactions one transaction held
  std::vector<std::uint32_t> latencies_us;  // committed transactions, retries included
  std::vector<std::string> errors;          // the first unexpected ones
};

void record_unexpected(client_result& r, const std::string& what) {
  ++r.unexpected;
  if (r.errors.size() < 3) r.errors.push_back(one_line(what));
}

// Releases a worker's client threads at once, and tells them when to stop.
class start_gate {
 public:
  void open(steady::time_point deadline) {
    std::lock_guard<std::mutex> lock(m_);
    deadline_ = deadline;
    open_ = true;
    cv_.notify_all();
  }
  steady::time_point wait() {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return open_; });
    return deadline_;
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool open_ = false;
  steady::time_point deadline_;
};

// After the load, clients stay connected until the parent has looked at their
// sessions: a transaction left open shows as idle in transaction only while its
// client is still there (through PgBouncer, a disconnect closes it).
class linger_gate {
 public:
  void arrive() {
    std::unique_lock<std::mutex> lock(m_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return released_; });
  }
  void wait_for_all(int n) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return arrived_ == n; });
  }
  void release() {
    std::lock_guard<std::mutex> lock(m_);
    released_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int arrived_ = 0;
  bool released_ = false;
};

void run_load(pqscope::connection& c, const std::string& table, bool batch, client_result& out,
              steady::time_point deadline, unsigned seed);

void run_client(const pqscope::database& db, const std::string& table, bool batch, client_result& out,
                start_gate& gate, linger_gate& linger, unsigned seed) {
  std::optional<pqscope::connection> conn;
  try {
    // The inherited settings plus this client's own name.
    conn.emplace(pqscope::database{db.conninfo() + " application_name=" + out.name, db.options()}.connect());
    // Evidence that the name travels through PgBouncer, whatever the sampler catches.
    out.self_name = pqscope::atomic(*conn, [](pqscope::connection& c) {
      return c.query_value<std::string>("SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()");
    });
  } catch (const std::exception& e) {
    record_unexpected(out, std::string("setup: ") + e.what());
  }
  const steady::time_point deadline = gate.wait();
  if (conn) run_load(*conn, table, batch, out, deadline, seed);
  linger.arrive();
}

// Whether half of the nested failures happen on the server (an overdraw that the
// CHECK refuses) rather than in the application. Set before the workers fork;
// they inherit it. Batched, each server-side failure is a replay.
bool server_side_failures = true;

// batch: the outermost atomic() queues the statements and sends them with the
// COMMIT; the function reads nothing, so that is one round trip per attempt.
void run_load(pqscope::connection& c, const std::string& table, bool batch, client_result& out,
              steady::time_point deadline, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> account(1, accounts), percent(0, 99);
  std::uniform_int_distribution<long> amount(1, 100);
  pqscope::transaction_options opts;
  opts.isolation = pqscope::isolation::serializable;
  opts.retries = max_retries;
  opts.batch = batch;

  while (steady::now() < deadline) {
    const int from = account(rng);
    int to = account(rng);
    if (to == from) to = from % accounts + 1;
    const long cents = amount(rng);
    const int roll = percent(rng);
    const bool fail_nested = roll < 10;  // ~10%: a nested transfer fails and the outer scope carries on
    const bool overdraw = server_side_failures && roll < 5;  // half of those on the server, half in the application
    const bool rollback_all = percent(rng) < 5;

    int attempts = 0;
    int expected = 0;
    bool completed = false;
    const pqscope::connection_stats before = c.stats();
    const auto t0 = steady::now();
    try {
      pqscope::atomic(c, opts, [&](pqscope::connection& cc) {
        ++attempts;
        expected = 0;
        transfer(cc, table, from, to, cents);
        if (fail_nested) {
          bool failed_as_planned = false;
          try {
            transfer(cc, table, to, from, overdraw ? 1'000'000'000L : cents, /*then_fail=*/!overdraw);
          } catch (const pqscope::check_violation&) {
            if (!overdraw) throw;
            failed_as_planned = true;
          } catch (const app_error&) {
            failed_as_planned = true;
          }
          // Batched, the overdraw is only queued here: the server refuses it when the
          // batch goes out with the COMMIT, and atomic() runs this function again
          // unbatched, where it fails in this scope. The check after the commit
          // holds either way.
          if (!failed_as_planned && !(batch && overdraw))
            throw std::logic_error("a transfer meant to fail went through");
          expected = failed_as_planned ? 1 : 0;
        }
        if (rollback_all) throw rollback_request{};
      });
      // The attempt that committed must be one in which the planned failure happened.
      if (fail_nested && expected == 0) throw std::logic_error("a transfer meant to fail was committed");
      ++out.committed;
      completed = true;
      out.latencies_us.push_back(static_cast<std::uint32_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(steady::now() - t0).count()));
    } catch (const rollback_request&) {
      ++out.rolled_back;
      completed = true;
    } catch (const std::exception& e) {
      // Retries exhausted: only after exactly 1 + retries attempts that were not
      // replays (a replay re-runs a voided batch and does not use up a retry).
      const bool conflict = dynamic_cast<const pqscope::serialization_failure*>(&e) != nullptr ||
                            dynamic_cast<const pqscope::deadlock_detected*>(&e) != nullptr;
      const std::int64_t spent = attempts - static_cast<std::int64_t>(c.stats().replays - before.replays);
      if (conflict && spent == opts.retries + 1) {
        ++out.gave_up;
      } else {
        record_unexpected(out, e.what() + std::string(" (after ") + std::to_string(attempts) + " attempt(s))");
      }
      if (dynamic_cast<const pqscope::connection_error*>(&e) != nullptr) {
        try {
          c.reconnect();
        } catch (const std::exception& r) {
          record_unexpected(out, std::string("reconnect: ") + r.what());
          return;
        }
      }
    }
    // Stats survive reconnect(). A replay is not a retry: it re-runs a failed batch unbatched.
    const pqscope::connection_stats& now = c.stats();
    const std::uint64_t replays = now.replays - before.replays;
    out.replays += replays;
    out.batched_attempts += now.batched_attempts - before.batched_attempts;
    out.savepoints += now.savepoints - before.savepoints;
    out.max_held = std::max(out.max_held, now.max_savepoints_in_transaction);
    const std::int64_t reruns = attempts - 1 - static_cast<std::int64_t>(replays);
    out.retries += static_cast<std::uint64_t>(std::max<std::int64_t>(reruns, 0));
    if (completed && reruns > 0) ++out.recovered;
    out.expected_failures += static_cast<std::uint64_t>(expected);
  }
}

bool write_all(int fd, const std::string& s) {
  std::size_t done = 0;
  while (done < s.size()) {
    const ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// A worker process: its own connections, threads and report; never returns.
// Exit status: 0 clean, 1 unexpected errors, 2 the table is not what the parent
// seeded, 3 an exception escaped, 4 the report could not be written;
// SIGALRM: the watchdog ended a hung worker.
// go_fd and release_fd signal by end of file: the parent closes its write ends.
[[noreturn]] void worker_main(const pqscope::database& db, const std::string& table, bool batch, int go_fd,
                              int release_fd, int report_fd, int seconds, int watchdog_seconds) {
  ::alarm(static_cast<unsigned>(watchdog_seconds));
  int code = 0;
  std::ostringstream report;
  std::vector<client_result> results(threads_per_worker);
  start_gate gate;
  linger_gate linger;
  std::vector<std::thread> threads;
  try {
    {
      // The database object came from the parent: it holds settings, not a
      // socket, so the child simply connects on its own.
      pqscope::connection probe = db.connect();
      if (probe.query_value<long>("SELECT count(*) FROM " + table) != accounts) code = 2;
    }
    for (int n = 0; n < threads_per_worker; ++n) {
      client_result& r = results[static_cast<std::size_t>(n)];
      r.name = app_name(::getpid(), n);
      const unsigned seed = static_cast<unsigned>(::getpid()) * 131u + static_cast<unsigned>(n);
      threads.emplace_back(run_client, std::cref(db), std::cref(table), batch, std::ref(r), std::ref(gate),
                           std::ref(linger), seed);
    }
  } catch (const std::exception& e) {
    report << "fatal " << one_line(e.what()) << '\n';
    code = 3;
  }
  char byte = 0;
  while (::read(go_fd, &byte, 1) < 0 && errno == EINTR) {
  }
  gate.open(steady::now() + std::chrono::seconds(seconds));
  linger.wait_for_all(static_cast<int>(threads.size()));

  for (std::size_t i = 0; i < threads.size(); ++i) {
    const client_result& r = results[i];
    report << "client " << r.name << ' ' << r.self_name << ' ' << r.committed << ' ' << r.rolled_back << ' '
           << r.expected_failures << ' ' << r.retries << ' ' << r.unexpected << ' ' << r.gave_up << ' '
           << r.recovered << ' ' << r.batched_attempts << ' ' << r.replays << ' ' << r.savepoints << ' ' << r.max_held
           << '\n'
           << "lat";
    for (auto v : r.latencies_us) report << ' ' << v;
    report << '\n';
    for (const auto& e : r.errors) report << "error " << r.name << ": " << e << '\n';
    if (r.unexpected != 0 && code == 0) code = 1;
  }
  report << "end\n";
  if (!write_all(report_fd, report.str()) && code == 0) code = 4;
  ::close(report_fd);

  while (::read(release_fd, &byte, 1) < 0 && errno == EINTR) {
  }
  linger.release();
  for (auto& t : threads) t.join();
  ::_exit(code);  // no destructors of the parent's objects, no Boost.Test teardown
}

// ---- the parent's side ----------------------------------------------------------

struct child_proc {
  pid_t pid = -1;
  int fd = -1;  // read end of its report pipe
  std::string report;
  bool reaped = false;
  bool killed = false;  // by the parent's watchdog
  int status = 0;
};

std::string describe(const child_proc& k) {
  if (k.killed) return "pid " + std::to_string(k.pid) + " hung and was killed by the parent";
  if (WIFEXITED(k.status)) return "pid " + std::to_string(k.pid) + " exited " + std::to_string(WEXITSTATUS(k.status));
  if (WIFSIGNALED(k.status))
    return "pid " + std::to_string(k.pid) + " died of signal " + std::to_string(WTERMSIG(k.status)) +
           (WTERMSIG(k.status) == SIGALRM ? " (its watchdog)" : "");
  return "pid " + std::to_string(k.pid) + " status " + std::to_string(k.status);
}

// Owns the worker processes: whatever happens in the test, none is left running
// or unreaped.
class workforce {
 public:
  workforce() = default;
  workforce(const workforce&) = delete;
  workforce& operator=(const workforce&) = delete;
  ~workforce() {
    close_fd(go_w);
    close_fd(release_w);
    kill_rest();
    for (auto& k : kids) close_fd(k.fd);
  }
  static void close_fd(int& fd) {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }

  // Reads the reports and reaps the workers that exit, until done() or the deadline.
  template <class Pred>
  bool pump(steady::time_point deadline, Pred done) {
    while (!done()) {
      if (steady::now() > deadline) return false;
      std::vector<pollfd> fds;
      std::vector<child_proc*> owners;
      for (auto& k : kids)
        if (k.fd >= 0) {
          fds.push_back(pollfd{k.fd, POLLIN, 0});
          owners.push_back(&k);
        }
      if (!fds.empty())
        ::poll(fds.data(), fds.size(), 50);
      else
        std::this_thread::sleep_for(50ms);
      for (std::size_t i = 0; i < fds.size(); ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        char buf[65536];
        const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
        if (n > 0)
          owners[i]->report.append(buf, static_cast<std::size_t>(n));
        else if (n == 0 || (errno != EINTR && errno != EAGAIN))
          close_fd(owners[i]->fd);  // end of file: the report is complete (or its writer is dead)
      }
      for (auto& k : kids) {
        int st = 0;
        if (!k.reaped && ::waitpid(k.pid, &st, WNOHANG) == k.pid) {
          k.reaped = true;
          k.status = st;
        }
      }
    }
    return true;
  }
  bool reports_in() const {
    return std::all_of(kids.begin(), kids.end(), [](const child_proc& k) { return k.fd < 0 || k.reaped; });
  }
  bool all_gone() const {
    return std::all_of(kids.begin(), kids.end(), [](const child_proc& k) { return k.fd < 0 && k.reaped; });
  }
  void kill_rest() {
    for (auto& k : kids) {
      if (k.reaped) continue;
      ::kill(k.pid, SIGKILL);
      int st = 0;
      ::waitpid(k.pid, &st, 0);
      k.reaped = true;
      k.killed = true;
      k.status = st;
    }
  }

  std::vector<child_proc> kids;
  int go_w = -1, release_w = -1;
};

struct sample_stats {
  long samples = 0, samples_with_idle_tx = 0, rows = 0, idle_tx_rows = 0;
  double max_idle_tx_age = 0;  // seconds
  std::vector<std::string> stale;  // idle in transaction for more than a second
  long stale_rows = 0;
  std::set<std::string> names_seen;
  long pool_samples = 0, max_cl_waiting = 0;
  std::string error;
};

using pg_ptr = std::unique_ptr<PGconn, decltype(&PQfinish)>;
using res_ptr = std::unique_ptr<PGresult, decltype(&PQclear)>;

std::string pgbouncer_dbname() {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(pqtest::env("PQSCOPE_TEST_PGBOUNCER").c_str(), &err);
  if (opts == nullptr) {
    PQfreemem(err);
    throw std::runtime_error("PQSCOPE_TEST_PGBOUNCER does not parse");
  }
  std::string name;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
    if (std::string(o->keyword) == "dbname" && o->val != nullptr) name = o->val;
  PQconninfoFree(opts);
  return name;
}

// The admin console speaks only the simple query protocol: plain PQexec.
pg_ptr admin_console() {
  pg_ptr admin(PQconnectdb(pqtest::env("PQSCOPE_TEST_PGBOUNCER_ADMIN").c_str()), &PQfinish);
  if (PQstatus(admin.get()) != CONNECTION_OK) throw std::runtime_error(PQerrorMessage(admin.get()));
  return admin;
}

// cl_waiting of one database in SHOW POOLS, summed over its users.
long cl_waiting(PGconn* admin, const std::string& dbname) {
  res_ptr r(PQexec(admin, "SHOW POOLS"), &PQclear);
  if (PQresultStatus(r.get()) != PGRES_TUPLES_OK) throw std::runtime_error(PQerrorMessage(admin));
  const int db_col = PQfnumber(r.get(), "database");
  const int wait_col = PQfnumber(r.get(), "cl_waiting");
  if (db_col < 0 || wait_col < 0) throw std::runtime_error("SHOW POOLS: no database or cl_waiting column");
  long waiting = 0;
  for (int i = 0; i < PQntuples(r.get()); ++i)
    if (dbname == PQgetvalue(r.get(), i, db_col)) waiting += std::atol(PQgetvalue(r.get(), i, wait_col));
  return waiting;
}

// Watches pg_stat_activity (directly, not through PgBouncer) and PgBouncer's
// pools every 50 ms while the load runs. No Boost.Test in this thread.
class sampler {
 public:
  explicit sampler(std::set<std::string> names) : names_(std::move(names)), thread_([this] { run(); }) {}
  sampler(const sampler&) = delete;
  sampler& operator=(const sampler&) = delete;
  ~sampler() { stop(); }

  // From now on only overlong idle transactions count: the rates describe the load.
  void load_over() { load_over_ = true; }

  sample_stats stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return stats_;
  }

 private:
  void run() {
    try {
      pqscope::connection obs = pqtest::observer();
      pg_ptr admin = admin_console();
      const std::string dbname = pgbouncer_dbname();
      auto next = steady::now();
      while (!stop_) {
        sample(obs);
        stats_.max_cl_waiting = std::max(stats_.max_cl_waiting, cl_waiting(admin.get(), dbname));
        ++stats_.pool_samples;
        next += 50ms;
        if (next < steady::now()) next = steady::now();
        std::this_thread::sleep_until(next);
      }
    } catch (const std::exception& e) {
      stats_.error = e.what();
    }
  }

  void sample(pqscope::connection& obs) {
    // clock_timestamp(), not now(): it is read after the activity snapshot, so
    // the age is never understated.
    pqscope::result r = obs.execute(
        "SELECT application_name, coalesce(state, ''), "
        "       coalesce(extract(epoch FROM clock_timestamp() - state_change), 0)::float8 "
        "FROM pg_stat_activity WHERE application_name LIKE 'pqscope\\_load\\_%'");
    const bool counting = !load_over_;
    stats_.samples += counting;
    bool any_idle_tx = false;
    for (std::size_t i = 0; i < r.size(); ++i) {
      auto [name, state, age] = r[i].as<std::string, std::string, double>();
      if (names_.count(name) == 0) continue;  // not this run's client
      stats_.rows += counting;
      stats_.names_seen.insert(name);
      if (state.rfind("idle in transaction", 0) != 0) continue;
      any_idle_tx = true;
      stats_.idle_tx_rows += counting;
      stats_.max_idle_tx_age = std::max(stats_.max_idle_tx_age, age);
      if (age > 1.0) {
        ++stats_.stale_rows;
        if (stats_.stale.size() < 5) stats_.stale.push_back(name + " (" + std::to_string(age) + " s)");
      }
    }
    if (any_idle_tx && counting) ++stats_.samples_with_idle_tx;
  }

  std::set<std::string> names_;
  std::atomic<bool> stop_{false}, load_over_{false};
  sample_stats stats_;
  std::thread thread_;  // last: starts once the rest is built
};

std::uint32_t percentile(std::vector<std::uint32_t> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

double percent_of(long part, long whole) {
  return whole != 0 ? 100.0 * static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

// What one run of the workload showed, for the side-by-side line.
struct run_figures {
  long idle_tx_rows = 0, rows = 0, samples_with_idle_tx = 0, samples = 0;
};

// One run of the workload on a fresh table: forks the workers, samples while
// they run, checks everything and prints its summary line.
run_figures run_transfers(const pqscope::database& db, bool batch, const char* label) {
  const int seconds = load_seconds();
  pqtest::scratch_table table{"id int PRIMARY KEY, cents bigint NOT NULL CHECK (cents >= 0)"};
  pqscope::connection obs = pqtest::observer();
  obs.execute("INSERT INTO " + table.name() + " SELECT g, $1 FROM generate_series(1, $2) AS g", opening_cents,
              accounts);
  const long total = static_cast<long>(accounts) * opening_cents;
  const std::string money = "SELECT coalesce(sum(cents), 0)::bigint FROM " + table.name();
  BOOST_REQUIRE(obs.query_value<long>(money) == total);

  // Workers are forked before any thread exists in this process (the previous
  // run's sampler has been joined).
  workforce crew;
  int go[2], release[2];
  BOOST_REQUIRE(::pipe2(go, O_CLOEXEC) == 0);
  crew.go_w = go[1];
  BOOST_REQUIRE(::pipe2(release, O_CLOEXEC) == 0);
  crew.release_w = release[1];
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  const int watchdog = seconds + 14;
  for (int w = 0; w < workers; ++w) {
    int rep[2];
    BOOST_REQUIRE(::pipe2(rep, O_CLOEXEC) == 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(go[1]);  // else the signals (end of file) would never come
      ::close(release[1]);
      ::close(rep[0]);
      worker_main(db, table.name(), batch, go[0], release[0], rep[1], seconds, watchdog);
    }
    ::close(rep[1]);
    if (pid < 0) {
      ::close(rep[0]);
      BOOST_FAIL("fork() failed");
    }
    child_proc k;
    k.pid = pid;
    k.fd = rep[0];
    crew.kids.push_back(k);
  }
  ::close(go[0]);
  ::close(release[0]);

  std::set<std::string> names;
  for (const auto& k : crew.kids)
    for (int n = 0; n < threads_per_worker; ++n) names.insert(app_name(k.pid, n));

  sample_stats seen;
  long lingering_idle_tx = -1;
  const auto started = steady::now();
  double elapsed = 0;
  {
    sampler watch{names};
    workforce::close_fd(crew.go_w);
    // A worker that has not reported by then is hung: it is killed and reported.
    if (!crew.pump(started + std::chrono::seconds(seconds + 12), [&] { return crew.reports_in(); })) crew.kill_rest();
    elapsed = std::chrono::duration<double>(steady::now() - started).count();
    watch.load_over();
    // The clients are still connected and idle: a transaction one of them left
    // open is now idle in transaction for over a second, for the sampler and here.
    std::this_thread::sleep_for(1200ms);
    lingering_idle_tx = obs.query_value<long>(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pqscope\\_load\\_%' AND "
        "state LIKE 'idle in transaction%'");
    workforce::close_fd(crew.release_w);
    if (!crew.pump(steady::now() + 5s, [&] { return crew.all_gone(); })) crew.kill_rest();
    seen = watch.stop();
  }

  // ---- what the workers reported
  std::vector<client_result> results;
  std::vector<std::string> problems;
  for (const auto& k : crew.kids) {
    if (k.killed || !WIFEXITED(k.status) || WEXITSTATUS(k.status) != 0) problems.push_back(describe(k));
    std::istringstream in(k.report);
    std::string line;
    bool ended = false;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string tag;
      ls >> tag;
      if (tag == "client") {
        client_result r;
        ls >> r.name >> r.self_name >> r.committed >> r.rolled_back >> r.expected_failures >> r.retries >>
            r.unexpected >> r.gave_up >> r.recovered >> r.batched_attempts >> r.replays >> r.savepoints >> r.max_held;
        results.push_back(std::move(r));
      } else if (tag == "lat" && !results.empty()) {
        std::uint32_t v = 0;
        while (ls >> v) results.back().latencies_us.push_back(v);
      } else if (tag == "error" || tag == "fatal") {
        problems.push_back("pid " + std::to_string(k.pid) + " " + line);
      } else if (tag == "end") {
        ended = true;
      }
    }
    if (!ended) problems.push_back("pid " + std::to_string(k.pid) + ": report incomplete");
  }

  std::uint64_t committed = 0, rolled_back = 0, expected = 0, retries = 0, unexpected = 0, gave_up = 0;
  std::uint64_t recovered = 0, batched_attempts = 0, replays = 0, savepoints = 0, max_held = 0;
  std::vector<std::uint32_t> latencies;
  std::vector<std::string> wrong_self_name;
  std::set<std::string> reported;
  for (const auto& r : results) {
    committed += r.committed;
    rolled_back += r.rolled_back;
    expected += r.expected_failures;
    retries += r.retries;
    unexpected += r.unexpected;
    gave_up += r.gave_up;
    recovered += r.recovered;
    batched_attempts += r.batched_attempts;
    replays += r.replays;
    savepoints += r.savepoints;
    max_held = std::max(max_held, r.max_held);
    latencies.insert(latencies.end(), r.latencies_us.begin(), r.latencies_us.end());
    reported.insert(r.name);
    if (r.self_name != r.name) wrong_self_name.push_back(r.name + " saw itself as " + r.self_name);
  }

  // Through transaction pooling a server backend carries the name of the last
  // client that used it, so the sampler sees a client only if it catches one of
  // the few backends right after that client's turn. A client's own query on
  // its backend is evidence of the same fact (its name reached the server), so a
  // name counts as seen if either saw it.
  std::vector<std::string> never_seen;
  for (const auto& n : names)
    if (seen.names_seen.count(n) == 0 &&
        std::none_of(results.begin(), results.end(),
                     [&](const client_result& r) { return r.name == n && r.self_name == n; }))
      never_seen.push_back(n);

  // ---- after the load, from outside
  const long money_after = obs.query_value<long>(money);
  const long left_idle_tx = obs.query_value<long>(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pqscope\\_load\\_%' AND "
      "state LIKE 'idle in transaction%'");
  if (left_idle_tx != 0)  // else dropping the table would wait for their locks
    obs.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'pqscope\\_load\\_%' "
        "AND state LIKE 'idle in transaction%'");

  long waiting_after = -1;
  {
    pg_ptr admin = admin_console();
    const std::string dbname = pgbouncer_dbname();
    for (int i = 0; i < 50; ++i) {
      waiting_after = cl_waiting(admin.get(), dbname);
      if (waiting_after == 0) break;
      std::this_thread::sleep_for(100ms);
    }
  }

  // ---- the summary
  std::ostringstream summary;
  summary << std::fixed << std::setprecision(1) << "load: " << label << ": " << results.size() << " clients, "
          << elapsed << " s, " << committed << " transactions committed ("
          << static_cast<double>(committed) / elapsed << " tx/s), "
          << "latency p50 " << percentile(latencies, 0.50) << " us p99 " << percentile(latencies, 0.99) << " us, "
          << retries << " retries (" << recovered << " transactions got through, " << gave_up << " out of retries), "
          << expected << " nested failures caught, " << rolled_back << " rolled back, "
          << batched_attempts << " batched attempts, " << replays << " replays, "
          << std::setprecision(2) << static_cast<double>(savepoints) / static_cast<double>(std::max<std::uint64_t>(committed + rolled_back, 1))
          << " savepoints per transaction (most held by one: " << max_held << ")" << std::setprecision(1) << "; "
          << "idle in transaction in " << seen.samples_with_idle_tx << "/" << seen.samples << " samples ("
          << percent_of(seen.samples_with_idle_tx, seen.samples) << "%), " << seen.idle_tx_rows << "/" << seen.rows
          << " rows (" << percent_of(seen.idle_tx_rows, seen.rows) << "%), max age " << std::setprecision(3)
          << seen.max_idle_tx_age << " s; names seen by the sampler " << seen.names_seen.size() << "/" << names.size()
          << "; PgBouncer max cl_waiting " << seen.max_cl_waiting;
  std::cout << summary.str() << std::endl;
  BOOST_TEST_MESSAGE(summary.str());

  // ---- the verdict
  BOOST_TEST_CONTEXT("run " << label) {
    // All of them in the failure itself: at the default log level messages are not shown,
    // and the exit status comes before the error that caused it.
    std::string listed;
    for (std::size_t i = 0; i < problems.size() && i < 6; ++i) listed += (i == 0 ? "" : "; ") + problems[i];
    BOOST_TEST(problems.empty(), problems.size() << " worker problem(s): " << listed);
    BOOST_TEST(seen.error.empty(), "sampler: " << seen.error);
    BOOST_TEST(results.size() == static_cast<std::size_t>(clients));
    BOOST_TEST(reported == names, "the reports do not name exactly the clients started");
    BOOST_TEST(unexpected == 0u);
    BOOST_TEST(committed > 0u);
    // Retrying works: transactions that conflicted get through, more of them than run out
    // of retries. How many conflict depends on the VM's speed (up to 1 attempt in 2 in
    // slow runs), so neither count is bounded on its own.
    BOOST_TEST(recovered > 0u);
    BOOST_TEST(gave_up <= recovered,
               gave_up << " transaction(s) ran out of retries, " << recovered << " got through after retrying");
    BOOST_TEST(expected > 0u);     // the failing nested scopes did run
    BOOST_TEST(rolled_back > 0u);  // and so did whole rollbacks
    BOOST_TEST(money_after == total);
    BOOST_TEST(seen.stale_rows == 0, seen.stale_rows << " sampled row(s) idle in transaction for over 1 s, e.g. "
                                                     << (seen.stale.empty() ? "" : seen.stale.front()));
    BOOST_TEST(lingering_idle_tx == 0, lingering_idle_tx << " session(s) idle in transaction after the load");
    BOOST_TEST(left_idle_tx == 0, left_idle_tx << " session(s) left idle in transaction after the workers exited");
    BOOST_TEST(wrong_self_name.empty(), wrong_self_name.size() << " client(s) saw a wrong name, e.g. "
                                                                << (wrong_self_name.empty() ? "" : wrong_self_name[0]));
    BOOST_TEST(never_seen.empty(), never_seen.size() << " application_name(s) never seen, e.g. "
                                                     << (never_seen.empty() ? "" : never_seen.front()));
    BOOST_TEST(waiting_after == 0, "PgBouncer still has " << waiting_after << " client(s) waiting");
  }
  return {seen.idle_tx_rows, seen.rows, seen.samples_with_idle_tx, seen.samples};
}

}  // namespace

BOOST_AUTO_TEST_CASE(serializable_transfers_through_pgbouncer) {
  // The session-state guard runs on every statement under load too.
  pqscope::connection_options guarded;
  guarded.pooling = pqscope::pooling::transaction;
  const pqscope::database db{pqtest::env("PQSCOPE_TEST_PGBOUNCER"), guarded};

  const run_figures unbatched = run_transfers(db, false, "unbatched");
  const run_figures batched = run_transfers(db, true, "batched");
  // The same, with every nested failure in the application: nothing to replay.
  server_side_failures = false;
  const run_figures no_replays = run_transfers(db, true, "batched, application-side failures only");
  server_side_failures = true;

  // The point of batching: a server that never waits for its client inside a transaction.
  std::ostringstream line;
  line << std::fixed << std::setprecision(1) << "load: idle in transaction, sampled: unbatched "
       << percent_of(unbatched.idle_tx_rows, unbatched.rows) << "% of rows (" << unbatched.samples_with_idle_tx << "/"
       << unbatched.samples << " samples), batched " << percent_of(batched.idle_tx_rows, batched.rows)
       << "% of rows (" << batched.samples_with_idle_tx << "/" << batched.samples << " samples), batched without "
       << "server-side failures (no replays) " << percent_of(no_replays.idle_tx_rows, no_replays.rows) << "% of rows ("
       << no_replays.samples_with_idle_tx << "/" << no_replays.samples << " samples)";
  std::cout << line.str() << std::endl;
  BOOST_TEST_MESSAGE(line.str());
}
