// Failover under load, on a real HA manager: a pg_auto_failover formation
// (scripts/lib/ha.sh; scripts/dev.sh test-ha starts it and runs this test). Worker
// processes make transfers with nested scopes through one pqscope::replica_set each,
// whose primary is the formation's multi-host read-write conninfo and whose standbys
// are the two nodes with target_session_attrs=standby, and read their own writes
// back. Mid-run the primary is killed (the whole node at once); the formation
// promotes the standby by itself, the workers carry on with the same replica_set
// objects, and the old primary is brought back as a standby. Then:
//   - every commit acknowledged to a worker is on the new primary (ids, count, sum);
//     no transfer that threw before or without its COMMIT is there; a COMMIT lost
//     with the primary is settled by resolve_in_doubt on the new one (resolve_wait),
//     and none is left in doubt;
//   - money is conserved, and each balance matches the transfers present;
//   - no read missed its own write;
//   - every worker committed again after the failover, and reads reached the
//     rejoined standby, without new pools or replica sets;
//   - printed: the time from the loss of the primary (the workers' first failure)
//     to the promotion and to the first commit on the new primary, what was left in
//     doubt, and where the reads went and how long they took.
// Without PQSCOPE_TEST_HA_CONNINFO (scripts/dev.sh test starts no formation) the
// test passes at once with a message.
//
// Workers never touch Boost.Test: each writes a log file of its own, line by line,
// which the parent reads while they run (the first commit after the kill) and after.

#define BOOST_TEST_MODULE ha_failover
#include <boost/test/unit_test.hpp>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/pqscope.hpp>
#include <pqscope/replica_set.hpp>

using namespace std::chrono_literals;

namespace {

using steady = std::chrono::steady_clock;  // CLOCK_MONOTONIC: one clock for every process

constexpr int workers = 4;
constexpr int accounts = 100;
constexpr long opening_balance = 1000;
constexpr std::int64_t ids_per_worker = 10'000'000;
constexpr auto warm_up = 3s;         // load before the kill
constexpr auto after_rejoin = 3s;    // load once the old primary is a standby again
constexpr auto promotion_limit = 60; // seconds, for ha.sh wait-primary
constexpr auto first_commit_limit = 60s;
constexpr int worker_watchdog = 150;  // seconds: a worker that hangs dies of SIGALRM

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now().time_since_epoch()).count();
}

double seconds_between(std::int64_t a, std::int64_t b) { return static_cast<double>(b - a) / 1e9; }

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// A command's standard output; throws if it fails.
std::string run(const std::string& cmd) {
  std::FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) throw std::runtime_error("popen failed: " + cmd);
  std::string out;
  char buf[4096];
  std::size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int st = ::pclose(p);
  if (st != 0) throw std::runtime_error("failed (status " + std::to_string(st) + "): " + cmd + "\n" + out);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

struct formation {
  std::string conninfo;            // both nodes, target_session_attrs=read-write
  std::vector<std::string> ports;  // node1, node2
  std::string ctl, dir;            // ha.sh and the formation's folder

  [[nodiscard]] std::string standby(const std::string& port) const {
    return "host=127.0.0.1 port=" + port +
           " dbname=pqscope user=postgres connect_timeout=5 target_session_attrs=standby";
  }
  std::string ha(const std::string& args) const { return run("bash '" + ctl + "' " + args); }
};

// ---- the workers ---------------------------------------------------------------

struct deliberate : std::runtime_error {
  deliberate() : std::runtime_error("deliberate failure of a nested scope") {}
};

// One line per event, in a single write() so that the parent never reads half of one:
//   A id amount t port settled  acknowledged commit (settled: the session died under the
//                               COMMIT and resolve_in_doubt found it committed)
//   D id t what                 in_doubt_error: may or may not have committed
//   F id t kind what            not committed: c connection_error before the COMMIT,
//                               a the resolver found it rolled back, p pool_timeout,
//                               x retries spent on deadlocks
//   R t port in_recovery ok us  a read after the worker's own acknowledged transfer
//                               (us: how long read() took)
//   r t                         a read that failed with connection_error
//   E what                      anything unexpected
//   S writes standby primary behind down   the replica_set's stats at the end
class worker_log {
 public:
  explicit worker_log(const std::string& path)
      : fd_(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644)) {
    if (fd_ < 0) ::_exit(3);
  }
  ~worker_log() { ::close(fd_); }
  worker_log(const worker_log&) = delete;
  worker_log& operator=(const worker_log&) = delete;
  void line(const std::string& s) const {
    const std::string l = s + "\n";
    if (::write(fd_, l.data(), l.size()) != static_cast<ssize_t>(l.size())) ::_exit(4);
  }

 private:
  int fd_;
};

bool stop_requested(int stop_fd) {
  pollfd p{stop_fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;  // end of file: the parent closed its end
}

[[noreturn]] void worker_main(const formation& f, int w, int stop_fd, const std::string& log_path) {
  ::alarm(worker_watchdog);
  worker_log log(log_path);
  try {
    pqscope::replica_set_options o;
    o.connection.pooling = pqscope::pooling::none;  // PostgreSQL itself, no PgBouncer
    o.pool.max_size = 2;
    o.pool.acquire_timeout = 5s;
    // A standby that has not replayed the worker's last commit yet: wait this long
    // for it, then read on the primary.
    o.replica_wait = 300ms;
    // One replica_set for the whole run: it must find the new primary by itself.
    pqscope::replica_set db{f.conninfo, {f.standby(f.ports.at(0)), f.standby(f.ports.at(1))}, o};

    pqscope::transaction_options opts;
    opts.resolve_in_doubt = true;
    // A COMMIT lost with the primary: ask until the formation has promoted the
    // standby (seconds), rather than give up while no node takes writes.
    opts.resolve_wait = 30s;
    opts.retries = 5;  // deadlocks between transfers that lock the same accounts

    std::mt19937 rng(static_cast<unsigned>(::getpid()));
    std::uniform_int_distribution<int> account(1, accounts), percent(0, 99);
    std::uniform_int_distribution<long> amount(1, 100);
    pqscope::wal_position seen;
    std::int64_t next = static_cast<std::int64_t>(w) * ids_per_worker;

    while (!stop_requested(stop_fd)) {
      const std::int64_t id = ++next;  // every attempt a new id: an in-doubt one may exist
      const int from = account(rng);
      int to = account(rng);
      if (to == from) to = from % accounts + 1;
      const long cents = amount(rng);
      const bool fee_fails = percent(rng) < 20;
      const std::uint64_t dirty_before = db.primary_pool().stats().closed_dirty;
      try {
        const int port = db.write(
            seen,
            [&](pqscope::connection& c) {
              const int p = c.query_value<int>(
                  "INSERT INTO ha_transfers (id, worker, from_id, to_id, amount, port) "
                  "VALUES ($1, $2, $3, $4, $5, inet_server_port()) RETURNING port",
                  id, w, from, to, cents);
              pqscope::atomic(c, [&] {
                c.execute("UPDATE ha_accounts SET balance = balance - $2 WHERE id = $1", from, cents);
              });
              pqscope::atomic(c, [&] {
                c.execute("UPDATE ha_accounts SET balance = balance + $2 WHERE id = $1", to, cents);
              });
              if (fee_fails) {
                // A leg that fails after it wrote: its savepoint takes the write back.
                try {
                  pqscope::atomic(c, [&] {
                    c.execute("UPDATE ha_accounts SET balance = balance - 1 WHERE id = $1", from);
                    throw deliberate{};
                  });
                } catch (const deliberate&) {
                }
              }
              c.execute("UPDATE ha_workers SET last_id = $2 WHERE worker = $1", w, id);
              return p;
            },
            opts);
        // The lease came back broken although the commit stands: the session died
        // under the COMMIT and the resolver asked a fresh connection.
        const bool settled = db.primary_pool().stats().closed_dirty != dirty_before;
        log.line("A " + std::to_string(id) + " " + std::to_string(cents) + " " + std::to_string(now_ns()) + " " +
                 std::to_string(port) + " " + (settled ? "1" : "0"));
      } catch (const pqscope::in_doubt_error& e) {
        log.line("D " + std::to_string(id) + " " + std::to_string(now_ns()) + " " + one_line(e.what()));
        continue;
      } catch (const pqscope::connection_error& e) {
        const bool aborted = std::string(e.what()).find("did not commit") != std::string::npos;
        log.line("F " + std::to_string(id) + " " + std::to_string(now_ns()) + (aborted ? " a " : " c ") +
                 one_line(e.what()));
        std::this_thread::sleep_for(20ms);  // no node takes writes yet: do not spin
        continue;
      } catch (const pqscope::pool_timeout&) {
        log.line("F " + std::to_string(id) + " " + std::to_string(now_ns()) + " p");
        continue;
      } catch (const pqscope::deadlock_detected&) {
        log.line("F " + std::to_string(id) + " " + std::to_string(now_ns()) + " x");
        continue;
      }

      // Read-your-writes: the transfer just acknowledged, and the worker's counter at it.
      try {
        const std::int64_t t0 = now_ns();
        auto [rows, last, recovery, port] = db.read(seen, [&](pqscope::connection& c) {
          return c
              .execute("SELECT (SELECT count(*) FROM ha_transfers WHERE id = $1), "
                       "(SELECT last_id FROM ha_workers WHERE worker = $2), pg_is_in_recovery(), inet_server_port()",
                       id, w)[0]
              .as<long, std::int64_t, bool, int>();
        });
        const bool ok = rows == 1 && last >= id;
        const std::int64_t t1 = now_ns();
        std::ostringstream l;
        l << "R " << t1 << " " << port << " " << recovery << " " << ok << " " << (t1 - t0) / 1000;
        if (!ok) l << " id " << id << " rows " << rows << " last_id " << last;
        log.line(l.str());
      } catch (const pqscope::connection_error&) {
        log.line("r " + std::to_string(now_ns()));
      }
    }
    const pqscope::replica_set_stats s = db.stats();
    log.line("S " + std::to_string(s.writes) + " " + std::to_string(s.reads_on_standby) + " " +
             std::to_string(s.reads_on_primary) + " " + std::to_string(s.standby_behind) + " " +
             std::to_string(s.standby_down));
  } catch (const std::exception& e) {
    log.line("E " + one_line(e.what()));
    ::_exit(1);
  }
  ::_exit(0);
}

// ---- the parent ----------------------------------------------------------------

struct ack {
  long amount = 0;
  std::int64_t t = 0;
  std::string port;
  int worker = 0;
};

struct run_log {
  std::map<std::int64_t, ack> acked;
  std::set<std::int64_t> in_doubt, failed;
  long settled_committed = 0, settled_aborted = 0, pool_timeouts = 0, deadlocks = 0;
  long reads = 0, read_failures = 0;
  std::vector<std::string> missed_reads, unexpected;
  struct read_event {
    std::int64_t t;
    std::string port;
    bool recovery;
    std::int64_t us;
  };
  std::optional<std::int64_t> first_failure_t;  // the earliest D or F line after `since`: the node's death, seen
  std::vector<read_event> read_events;
  std::vector<std::string> stats;  // the S lines
  std::vector<std::string> first_failures;  // each worker's first D or F line after `since`
};

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Complete lines only: a worker may be writing the last one.
run_log parse_logs(const std::vector<std::string>& paths, std::int64_t since = 0) {
  run_log r;
  for (std::size_t w = 0; w < paths.size(); ++w) {
    bool failure_seen = false;
    auto first_failure = [&](std::int64_t t, const std::string& text) {
      if (t <= since) return;
      if (!r.first_failure_t || t < *r.first_failure_t) r.first_failure_t = t;
      if (failure_seen) return;
      failure_seen = true;
      r.first_failures.push_back("worker " + std::to_string(w + 1) + ": " + text);
    };
    const std::string text = read_file(paths[w]);
    std::size_t start = 0;
    for (std::size_t nl; (nl = text.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::istringstream in(text.substr(start, nl - start));
      std::string kind;
      in >> kind;
      if (kind == "A") {
        std::int64_t id = 0;
        ack a;
        int settled = 0;
        in >> id >> a.amount >> a.t >> a.port >> settled;
        a.worker = static_cast<int>(w) + 1;
        r.acked[id] = a;
        r.settled_committed += settled;
      } else if (kind == "D") {
        std::int64_t id = 0, t = 0;
        in >> id >> t;
        r.in_doubt.insert(id);
        first_failure(t, in.str());
      } else if (kind == "F") {
        std::int64_t id = 0, t = 0;
        std::string why;
        in >> id >> t >> why;
        r.failed.insert(id);
        first_failure(t, in.str());
        r.settled_aborted += why == "a";
        r.pool_timeouts += why == "p";
        r.deadlocks += why == "x";
      } else if (kind == "R") {
        std::int64_t t = 0;
        std::string port;
        int recovery = 0, ok = 0;
        std::int64_t us = 0;
        in >> t >> port >> recovery >> ok >> us;
        ++r.reads;
        r.read_events.push_back({t, port, recovery == 1, us});
        if (ok != 1) r.missed_reads.push_back("worker " + std::to_string(w + 1) + ": " + in.str());
      } else if (kind == "r") {
        ++r.read_failures;
      } else if (kind == "E") {
        r.unexpected.push_back("worker " + std::to_string(w + 1) + ": " + in.str());
      } else if (kind == "S") {
        r.stats.push_back(in.str().substr(2));
      }
    }
  }
  return r;
}

// Owns the workers: whatever happens in the test, none is left running or unreaped.
struct workforce {
  std::vector<pid_t> pids;
  std::vector<int> status;
  int stop_w = -1;
  void stop() {
    if (stop_w >= 0) ::close(stop_w);
    stop_w = -1;
  }
  // Waits up to `limit` for every worker; true if all exited 0.
  bool reap(std::chrono::seconds limit) {
    stop();
    const auto deadline = steady::now() + limit;
    status.assign(pids.size(), -1);
    std::size_t left = pids.size();
    while (left > 0 && steady::now() < deadline) {
      for (std::size_t i = 0; i < pids.size(); ++i) {
        int st = 0;
        if (pids[i] > 0 && ::waitpid(pids[i], &st, WNOHANG) == pids[i]) {
          status[i] = st;
          pids[i] = -1;
          --left;
        }
      }
      std::this_thread::sleep_for(50ms);
    }
    kill_rest();
    return std::all_of(status.begin(), status.end(), [](int st) { return st == 0; });
  }
  void kill_rest() {
    for (pid_t& p : pids) {
      if (p <= 0) continue;
      ::kill(p, SIGKILL);
      int st = 0;
      ::waitpid(p, &st, 0);
      p = -1;
    }
  }
  ~workforce() {
    stop();
    kill_rest();
  }
};

pqscope::connection primary_session(const formation& f) {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;
  o.notice_handler = [](const pqscope::notice&) {};  // DROP TABLE IF EXISTS of a first run
  return pqscope::connection{f.conninfo, o};
}

}  // namespace

BOOST_AUTO_TEST_CASE(transfers_survive_a_failover) {
  formation f;
  f.conninfo = env_or_empty("PQSCOPE_TEST_HA_CONNINFO");
  if (f.conninfo.empty()) {
    const char* why =
        "ha_failover: skipped, no formation (PQSCOPE_TEST_HA_CONNINFO is not set; scripts/dev.sh test-ha runs it)";
    std::cout << why << std::endl;
    BOOST_TEST_MESSAGE(why);
    return;
  }
  f.ctl = env_or_empty("PQSCOPE_TEST_HA_CTL");
  f.dir = env_or_empty("PQSCOPE_TEST_HA_DIR");
  {
    std::istringstream in(env_or_empty("PQSCOPE_TEST_HA_NODES"));
    for (std::string p; in >> p;) f.ports.push_back(p);
  }
  BOOST_REQUIRE_MESSAGE(f.ports.size() == 2 && !f.ctl.empty() && !f.dir.empty(),
                        "PQSCOPE_TEST_HA_NODES, _CTL and _DIR come with PQSCOPE_TEST_HA_CONNINFO");
  // A formation left whole by an earlier run, or a fresh one.
  f.ha("wait-formation '" + f.dir + "' 60");

  {
    pqscope::connection c = primary_session(f);
    c.execute_script(
        "DROP TABLE IF EXISTS ha_accounts, ha_transfers, ha_workers;"
        "CREATE TABLE ha_accounts (id int PRIMARY KEY, balance bigint NOT NULL);"
        "CREATE TABLE ha_transfers (id bigint PRIMARY KEY, worker int NOT NULL, from_id int NOT NULL,"
        "  to_id int NOT NULL, amount bigint NOT NULL, port int NOT NULL);"
        "CREATE TABLE ha_workers (worker int PRIMARY KEY, last_id bigint NOT NULL);");
    c.execute("INSERT INTO ha_accounts SELECT g, $1 FROM generate_series(1, $2) AS g", opening_balance, accounts);
    c.execute("INSERT INTO ha_workers SELECT g, 0 FROM generate_series(1, $1) AS g", workers);
  }  // closed before the fork

  char tmpl[] = "/tmp/pqscope-ha-failover.XXXXXX";
  BOOST_REQUIRE(::mkdtemp(tmpl) != nullptr);
  const std::string logdir = tmpl;
  std::vector<std::string> logs;
  for (int w = 1; w <= workers; ++w) logs.push_back(logdir + "/worker" + std::to_string(w) + ".log");

  workforce crew;
  int stop[2];
  BOOST_REQUIRE(::pipe2(stop, O_CLOEXEC) == 0);
  crew.stop_w = stop[1];
  std::cout.flush();
  std::fflush(nullptr);
  for (int w = 1; w <= workers; ++w) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(stop[1]);
      worker_main(f, w, stop[0], logs[static_cast<std::size_t>(w - 1)]);
    }
    BOOST_REQUIRE(pid > 0);
    crew.pids.push_back(pid);
  }
  ::close(stop[0]);

  std::this_thread::sleep_for(warm_up);
  const std::int64_t t_kill = now_ns();
  std::string victim, victim_port;
  {
    std::istringstream in(f.ha("kill-primary '" + f.dir + "'"));  // "killed NAME PORT"
    std::string word;
    in >> word >> victim >> victim_port;
  }
  BOOST_REQUIRE_MESSAGE(!victim_port.empty(), "ha.sh kill-primary named no node");

  // The monitor promotes the standby: the formation's doing, not the test's.
  std::string promoted;
  {
    std::istringstream in(f.ha("wait-primary '" + f.dir + "' " + std::to_string(promotion_limit)));
    in >> promoted;
  }
  const std::int64_t t_promoted = now_ns();

  // The first commit acknowledged by another node after the kill.
  std::optional<std::int64_t> t_first;
  for (const auto deadline = steady::now() + first_commit_limit; !t_first && steady::now() < deadline;) {
    for (const auto& [id, a] : parse_logs(logs).acked)
      if (a.t > t_kill && a.port != victim_port && (!t_first || a.t < *t_first)) t_first = a.t;
    if (!t_first) std::this_thread::sleep_for(100ms);
  }

  // The old primary comes back (pg_rewind) as the standby; the workers' standby
  // pool for it must find it again by itself.
  const std::int64_t t_restart = now_ns();
  std::string restart_error;
  try {
    f.ha("restart-node '" + f.dir + "' " + victim);
  } catch (const std::exception& e) {
    restart_error = e.what();
  }
  const std::int64_t t_rejoined = now_ns();
  std::this_thread::sleep_for(after_rejoin);

  const bool workers_ok = crew.reap(30s);
  const run_log r = parse_logs(logs, t_kill);

  // What the new primary holds.
  std::map<std::int64_t, long> present;
  long balance_total = 0, inconsistent_accounts = 0;
  std::map<int, std::int64_t> last_ids;
  {
    pqscope::connection c = primary_session(f);
    const pqscope::result rows = c.execute("SELECT id, amount FROM ha_transfers");
    for (std::size_t i = 0; i < rows.size(); ++i) {
      auto [id, amount] = rows[i].as<std::int64_t, long>();
      present[id] = amount;
    }
    balance_total = c.query_value<long>("SELECT sum(balance)::bigint FROM ha_accounts");
    // Each balance is the opening one moved by exactly the transfers present: no
    // leg without its transfer, no rolled-back fee left behind.
    inconsistent_accounts = c.query_value<long>(
        "SELECT count(*) FROM ha_accounts a WHERE a.balance <> $1 "
        "  - coalesce((SELECT sum(amount) FROM ha_transfers t WHERE t.from_id = a.id), 0) "
        "  + coalesce((SELECT sum(amount) FROM ha_transfers t WHERE t.to_id = a.id), 0)",
        opening_balance);
    const pqscope::result w = c.execute("SELECT worker, last_id FROM ha_workers");
    for (std::size_t i = 0; i < w.size(); ++i) {
      auto [worker, last] = w[i].as<int, std::int64_t>();
      last_ids[worker] = last;
    }
  }
  std::filesystem::remove_all(logdir);

  long acked_sum = 0, acked_present = 0, present_acked_sum = 0, wrong_amount = 0;
  std::vector<std::int64_t> lost;
  for (const auto& [id, a] : r.acked) {
    acked_sum += a.amount;
    const auto it = present.find(id);
    if (it == present.end()) {
      if (lost.size() < 10) lost.push_back(id);
      continue;
    }
    ++acked_present;
    present_acked_sum += it->second;
    wrong_amount += it->second != a.amount;
  }
  long doubt_present = 0, failed_present = 0, unknown_present = 0;
  for (const auto& [id, amount] : present) {
    if (r.acked.count(id) != 0) continue;
    if (r.in_doubt.count(id) != 0)
      ++doubt_present;
    else if (r.failed.count(id) != 0)
      ++failed_present;
    else
      ++unknown_present;
  }
  // Each worker's commits after the failover, on the promoted node.
  std::map<int, long> after_failover;
  long acked_after_kill = 0;
  for (const auto& [id, a] : r.acked)
    if (a.t > t_kill && a.port != victim_port) {
      ++after_failover[a.worker];
      ++acked_after_kill;
    }
  // Reads before the kill, between it and the rejoin, and after: how many, where, how long.
  struct read_figures {
    long n = 0, on_primary = 0, on_victim_standby = 0;
    std::int64_t total_us = 0, max_us = 0;
    [[nodiscard]] double mean_ms() const {
      return n != 0 ? static_cast<double>(total_us) / 1000.0 / static_cast<double>(n) : 0;
    }
  } before, between, after;
  for (const auto& e : r.read_events) {
    read_figures& g = e.t < t_kill ? before : e.t < t_rejoined ? between : after;
    ++g.n;
    g.on_primary += !e.recovery;
    g.on_victim_standby += e.recovery && e.port == victim_port;
    g.total_us += e.us;
    g.max_us = std::max(g.max_us, e.us);
  }
  const long standby_reads_before_kill = before.n - before.on_primary;
  const long standby_reads_after_rejoin = after.on_victim_standby;
  // The node's death as the workers saw it (their first failure); the kill command
  // spends a while finding the primary's processes first.
  const std::int64_t t_death = r.first_failure_t.value_or(t_kill);

  std::ostringstream line;
  line << std::fixed << std::setprecision(2) << "ha_failover: killed " << victim << " (:" << victim_port
       << "), the workers lost it " << seconds_between(t_kill, t_death) << " s after the kill command started; "
       << promoted << " promoted " << seconds_between(t_death, t_promoted)
       << " s after the loss (as the monitor reports it), first commit on it ";
  if (t_first)
    line << seconds_between(t_death, *t_first) << " s after the loss";
  else
    line << "never";
  line << "; " << victim << " rejoined as a standby in " << seconds_between(t_restart, t_rejoined) << " s\n"
       << "ha_failover: " << r.acked.size() << " commits acknowledged (" << acked_after_kill
       << " after the failover), " << acked_present << " present, amounts " << present_acked_sum << " of "
       << acked_sum << "; " << r.in_doubt.size() << " left in doubt (" << doubt_present
       << " of them committed); settled by resolve_in_doubt: " << r.settled_committed << " committed, "
       << r.settled_aborted << " rolled back; " << r.failed.size() << " not committed (" << r.pool_timeouts
       << " pool timeouts, " << r.deadlocks << " deadlocks)\n"
       << "ha_failover: " << r.reads << " reads, " << r.missed_reads.size() << " missed their own write, "
       << r.read_failures << " failed; before the kill " << before.n << " (" << before.on_primary
       << " on the primary), mean " << before.mean_ms() << " ms; until the rejoin " << between.n << " ("
       << between.on_primary << " on the primary), mean " << between.mean_ms() << " ms, max "
       << static_cast<double>(between.max_us) / 1000.0 << " ms; after " << after.n << " ("
       << after.on_victim_standby << " on the rejoined standby " << victim << "), mean " << after.mean_ms() << " ms";
  std::cout << line.str() << std::endl;
  for (const auto& s : r.stats)
    std::cout << "ha_failover: replica_set stats (writes standby primary behind down): " << s << std::endl;
  for (const auto& s : r.first_failures) std::cout << "ha_failover: first failure after the kill, " << s << std::endl;
  BOOST_TEST_MESSAGE(line.str());

  BOOST_TEST(r.unexpected.empty(), "unexpected errors: " << (r.unexpected.empty() ? "" : r.unexpected.front()));
  BOOST_TEST(workers_ok, "a worker did not exit cleanly (watchdog, crash, or an error above)");
  BOOST_TEST(restart_error.empty(), restart_error);
  BOOST_TEST(!promoted.empty());
  BOOST_TEST(promoted != victim);
  BOOST_TEST(t_first.has_value(), "no commit on the promoted node within the limit");

  // Nothing acknowledged is lost: ids, count and sum.
  BOOST_TEST(lost.empty(), lost.size() << " acknowledged transfers missing, e.g. id " << (lost.empty() ? 0 : lost[0]));
  BOOST_TEST(acked_present == static_cast<long>(r.acked.size()));
  BOOST_TEST(present_acked_sum == acked_sum);
  BOOST_TEST(wrong_amount == 0);
  // What threw before its COMMIT (or was found rolled back) did not commit, and nothing
  // is there that no worker made.
  BOOST_TEST(failed_present == 0, failed_present << " transfers reported as not committed are present");
  BOOST_TEST(unknown_present == 0);
  BOOST_TEST(static_cast<long>(present.size()) == acked_present + doubt_present);
  // Every COMMIT lost with the primary was settled on the new one.
  BOOST_TEST(r.in_doubt.empty(), r.in_doubt.size() << " transfers left in doubt");

  BOOST_TEST(balance_total == accounts * opening_balance);
  BOOST_TEST(inconsistent_accounts == 0);
  for (const auto& [id, a] : r.acked)
    if (last_ids[a.worker] < id) {
      BOOST_TEST(last_ids[a.worker] >= id, "worker " << a.worker << "'s counter is behind its acknowledged " << id);
      break;
    }

  BOOST_TEST(r.missed_reads.empty(),
             "a read missed its own write: " << (r.missed_reads.empty() ? "" : r.missed_reads[0]));
  BOOST_TEST(standby_reads_before_kill > 0, "no read was served by the standby before the kill");
  // The same replica_set objects: the pools found the new primary and the rejoined standby.
  for (int w = 1; w <= workers; ++w)
    BOOST_TEST(after_failover[w] > 0, "worker " << w << " committed nothing after the failover");
  BOOST_TEST(standby_reads_after_rejoin > 0, "no read was served by the rejoined standby");
}
