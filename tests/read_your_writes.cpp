// Read-your-writes against a primary/standby pair of this test's own whose standby
// replays every commit 500 ms late (scripts/lib/replica_pair.sh --apply-delay), on
// two routes: the nodes directly, and each node through its own PgBouncer
// (transaction pooling). First the staleness itself: a read on the standby right
// after a write misses the row. Then transaction_options::at_least: the first
// statement throws replica_behind with nothing run, or, with replica_wait, the scope
// waits until the standby has the row. Last, pqscope::replica_set in several
// processes: 10,000 write-then-read pairs a route, some across processes with the token
// passed as text, never miss, while older tokens are served by the standby.

#define BOOST_TEST_MODULE read_your_writes
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <pqscope/replica_set.hpp>

#include "support/replica_pair.hpp"
#include "support/servers.hpp"

using pqscope::wal_position;
using steady = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

namespace {

constexpr const char* apply_delay = "500ms";

// The pair, started once for this process and stopped at its end.
pqtest::replica_pair& pair() {
  static pqtest::replica_pair p{"pqscope-rw-pair", std::string("--apply-delay ") + apply_delay};
  return p;
}

// A way to the nodes: both directly, or both through their PgBouncer.
struct route {
  std::string name;
  std::string primary, standby;
  pqscope::pooling pooling;
  friend std::ostream& operator<<(std::ostream& os, const route& r) { return os << r.name; }

  [[nodiscard]] pqscope::connection_options options(bool commit_positions = false) const {
    pqscope::connection_options o;
    o.pooling = pooling;
    o.commit_positions = commit_positions;
    return o;
  }
};

std::vector<route> routes() {
  return {{"direct", pair().primary(), pair().standby(), pqscope::pooling::none},
          {"pgbouncer", pair().pgbouncer_primary(), pair().pgbouncer_standby(),
           pqscope::pooling::transaction}};
}

template <class Body>
void for_each_route(Body&& body) {
  for (const route& r : routes()) BOOST_TEST_CONTEXT("route " << r.name) {
      try {
        body(r);
      } catch (const std::exception& e) {
        BOOST_ERROR("exception: " << e.what());
      }
    }
}

constexpr const char* insert_sql = "INSERT INTO rw (id, v) VALUES ($1, 'x')";
constexpr const char* count_sql = "SELECT count(*) FROM rw WHERE id = $1";

// Ids of the cases in this process; the replica_set workers take ranges of their own.
long next_id() {
  static long id = 0;
  return ++id;
}

struct written {
  long id;
  wal_position token;
};

// A row committed on the primary, and the commit's position (p has commit_positions).
written write_row(pqscope::connection& p) {
  const long id = next_id();
  pqscope::atomic(p, [&] { p.execute(insert_sql, id); });
  BOOST_TEST_REQUIRE(!p.last_commit_position().empty());
  return {id, p.last_commit_position()};
}

void wait_for_replay() { pair().wait_for_replay(); }

bool session_idle(const pqscope::connection& c) { return PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE; }

double millis(steady::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct pair_fixture {
  pair_fixture() {
    pqscope::connection p{pair().primary()};
    p.execute("CREATE TABLE IF NOT EXISTS rw (id bigint PRIMARY KEY, v text)");
    pqscope::connection s{pair().standby()};
    BOOST_TEST_REQUIRE(s.query_value<std::string>("SHOW recovery_min_apply_delay") == apply_delay);
    wait_for_replay();
  }
};

}  // namespace

BOOST_TEST_GLOBAL_FIXTURE(pair_fixture);

// What the check guards against: without at_least a read on the standby right after
// a write misses the row, which the standby shows once it has replayed the commit.
BOOST_AUTO_TEST_CASE(a_read_right_after_a_write_misses_it_on_the_standby) {
  for_each_route([](const route& r) {
    pqscope::connection p{r.primary, r.options(true)}, s{r.standby, r.options()};
    BOOST_TEST_REQUIRE(s.query_value<bool>("SELECT pg_is_in_recovery()"));
    constexpr int tries = 5;
    int missed = 0;
    std::vector<long> ids;
    for (int i = 0; i < tries; ++i) {
      const written w = write_row(p);
      ids.push_back(w.id);
      // In autocommit, and in a scope without at_least.
      const long seen_alone = s.query_value<long>(count_sql, w.id);
      const long seen_in_scope = pqscope::atomic(s, [&] { return s.query_value<long>(count_sql, w.id); });
      if (seen_alone == 0 && seen_in_scope == 0) ++missed;
    }
    BOOST_TEST_MESSAGE(r.name << ": the standby missed " << missed << " of " << tries << " rows just written");
    BOOST_TEST(missed >= 1);
    BOOST_TEST(s.stats().replica_checks == 0u);
    wait_for_replay();
    for (long id : ids) BOOST_TEST(s.query_value<long>(count_sql, id) == 1);
  });
}

// at_least, read committed: behind, the first statement throws replica_behind and
// nothing ran (the session is idle, in the scope and after it); replica_wait waits
// for the standby to replay the commit.
BOOST_AUTO_TEST_CASE(at_least_throws_replica_behind_or_waits) {
  for_each_route([](const route& r) {
    pqscope::connection p{r.primary, r.options(true)}, s{r.standby, r.options()};
    written w = write_row(p);
    pqscope::transaction_options o;
    o.at_least = w.token;
    const pqscope::connection_stats before = s.stats();
    {
      pqscope::transaction tx{s, o};
      try {
        (void)s.query_value<long>(count_sql, w.id);
        BOOST_ERROR("a read on a standby 500 ms behind passed the check");
      } catch (const pqscope::replica_behind& e) {
        BOOST_TEST(e.required().value() == w.token.value());
        BOOST_TEST(!e.replayed().empty());
        BOOST_TEST(e.replayed().value() < e.required().value());
      }
      BOOST_TEST(session_idle(s));  // BEGIN never ran
      BOOST_CHECK_THROW(s.execute("SELECT 1"), pqscope::transaction_aborted);  // the scope is doomed
      BOOST_TEST(session_idle(s));
    }
    BOOST_TEST(session_idle(s));
    BOOST_TEST(s.stats().replica_checks == before.replica_checks + 1);
    BOOST_TEST(s.stats().replica_behind == before.replica_behind + 1);
    BOOST_TEST(s.stats().replica_checks_alone == before.replica_checks_alone);
    BOOST_TEST(s.query_value<int>("SELECT 1") == 1);

    // atomic() with replica_wait 0: thrown at once, the function ran once.
    int runs = 0;
    BOOST_CHECK_THROW(pqscope::atomic(s, o,
                                      [&] {
                                        ++runs;
                                        return s.query_value<long>(count_sql, w.id);
                                      }),
                      pqscope::replica_behind);
    BOOST_TEST(runs == 1);
    BOOST_TEST(session_idle(s));

    // replica_wait 2 s: the function runs again until the standby replayed the row.
    w = write_row(p);
    o.at_least = w.token;
    o.replica_wait = ms(2000);
    runs = 0;
    const std::uint64_t behind_before = s.stats().replica_behind;
    const auto start = steady::now();
    const long n = pqscope::atomic(s, o, [&] {
      ++runs;
      return s.query_value<long>(count_sql, w.id);
    });
    const auto took = steady::now() - start;
    BOOST_TEST_MESSAGE(r.name << ": waited " << millis(took) << " ms, " << runs << " runs");
    BOOST_TEST(n == 1);
    BOOST_TEST(millis(took) >= 400.0);
    BOOST_TEST(runs > 1);
    BOOST_TEST(s.stats().replica_behind == behind_before + static_cast<std::uint64_t>(runs - 1));
    BOOST_TEST(session_idle(s));

    // A later position than the standby will ever reach within the wait: replica_behind after it.
    o.at_least = wal_position(w.token.value() + (std::uint64_t{1} << 40));
    o.replica_wait = ms(100);
    const auto start2 = steady::now();
    BOOST_CHECK_THROW(pqscope::atomic(s, o, [&] { return s.query_value<long>(count_sql, w.id); }),
                      pqscope::replica_behind);
    BOOST_TEST(millis(steady::now() - start2) >= 100.0);
    BOOST_TEST(session_idle(s));
  });
}

// A COPY or a script first in the scope: the check goes out before it, and a
// standby that is behind gives replica_behind there too (the statement never
// starts), so replica_wait applies as to any statement.
BOOST_AUTO_TEST_CASE(at_least_before_a_copy_or_a_script) {
  for_each_route([](const route& r) {
    pqscope::connection p{r.primary, r.options(true)}, s{r.standby, r.options()};
    for (bool copy : {true, false}) {
      BOOST_TEST_CONTEXT((copy ? "copy_out()" : "execute_script()")) {
        written w = write_row(p);
        const std::string count = "SELECT count(*) FROM rw WHERE id = " + std::to_string(w.id);
        auto read = [&] {
          if (copy) {
            pqscope::copy_reader reader = s.copy_out("COPY (" + count + ") TO STDOUT");
            std::vector<std::optional<std::string>> fields;
            std::string n;
            while (reader.read_row(fields)) n = fields.at(0).value_or("");
            return std::stol(n);
          }
          const std::vector<pqscope::result> rs = s.execute_script(count + "; SELECT 1");
          return rs.at(0)[0][0].as<long>();
        };
        pqscope::transaction_options o;
        o.at_least = w.token;
        int runs = 0;
        BOOST_CHECK_THROW(pqscope::atomic(s, o,
                                          [&] {
                                            ++runs;
                                            return read();
                                          }),
                          pqscope::replica_behind);
        BOOST_TEST(runs == 1);
        BOOST_TEST(session_idle(s));
        o.replica_wait = ms(2000);
        runs = 0;
        BOOST_TEST(pqscope::atomic(s, o, [&] {
                     ++runs;
                     return read();
                   }) == 1);
        BOOST_TEST(runs > 1);
        BOOST_TEST(session_idle(s));
      }
    }
  });
}

// Repeatable read: the check goes alone, before the BEGIN batch.
BOOST_AUTO_TEST_CASE(at_least_under_repeatable_read) {
  for_each_route([](const route& r) {
    pqscope::connection p{r.primary, r.options(true)}, s{r.standby, r.options()};
    written w = write_row(p);
    pqscope::transaction_options o;
    o.at_least = w.token;
    o.isolation = pqscope::isolation::repeatable_read;
    const pqscope::connection_stats before = s.stats();
    {
      pqscope::transaction tx{s, o};
      BOOST_CHECK_THROW((void)s.query_value<long>(count_sql, w.id), pqscope::replica_behind);
      BOOST_TEST(session_idle(s));
    }
    BOOST_TEST(session_idle(s));
    BOOST_TEST(s.stats().replica_behind == before.replica_behind + 1);
    BOOST_TEST(s.stats().replica_checks_alone == before.replica_checks_alone + 1);

    w = write_row(p);
    o.at_least = w.token;
    o.replica_wait = ms(2000);
    const std::uint64_t alone_before = s.stats().replica_checks_alone;
    const auto start = steady::now();
    const auto [n, level] = pqscope::atomic(s, o, [&] {
      return std::pair{s.query_value<long>(count_sql, w.id), s.query_value<std::string>("SHOW transaction_isolation")};
    });
    const auto took = steady::now() - start;
    BOOST_TEST(n == 1);
    BOOST_TEST(level == "repeatable read");
    BOOST_TEST(millis(took) >= 400.0);
    BOOST_TEST(s.stats().replica_checks_alone > alone_before + 1);  // one per attempt
    BOOST_TEST(session_idle(s));
  });
}

// A batched atomic() with scopes nested inside, on the standby: the check rides in
// the batch; behind, the attempt is voided and runs again after the pause.
BOOST_AUTO_TEST_CASE(at_least_in_a_batch_with_nested_scopes) {
  for_each_route([](const route& r) {
    pqscope::connection p{r.primary, r.options(true)}, s{r.standby, r.options()};
    written w = write_row(p);
    pqscope::transaction_options o;
    o.at_least = w.token;
    o.batch = true;
    o.read_only = true;
    pqscope::transaction_options nested;
    nested.read_only = true;
    nested.at_least = w.token;  // a nested scope may repeat its transaction's position

    auto body = [&] {
      long inner = -1;
      pqscope::atomic(s, nested, [&] {
        pqscope::atomic(s, [&] { inner = s.query_value<long>(count_sql, w.id); });
      });
      return inner + s.query_value<long>(count_sql, w.id);
    };
    BOOST_CHECK_THROW(pqscope::atomic(s, o, body), pqscope::replica_behind);
    BOOST_TEST(session_idle(s));

    o.replica_wait = ms(2000);
    const pqscope::connection_stats before = s.stats();
    const auto start = steady::now();
    const long n = pqscope::atomic(s, o, body);
    const auto took = steady::now() - start;
    BOOST_TEST(n == 2);
    BOOST_TEST(millis(took) >= 400.0);
    BOOST_TEST(s.stats().replica_behind > before.replica_behind);
    BOOST_TEST(s.stats().batched_attempts > before.batched_attempts + 1);
    BOOST_TEST(s.stats().savepoints >= before.savepoints + 2);
    BOOST_TEST(session_idle(s));

    // A later position in a nested scope is refused: only the outermost scope checks.
    pqscope::transaction_options later;
    later.at_least = wal_position(w.token.value() + 1);
    o.replica_wait = ms(0);
    o.batch = false;
    BOOST_CHECK_THROW(pqscope::atomic(s, o, [&] { pqscope::atomic(s, later, [] {}); }), pqscope::usage_error);
    BOOST_TEST(session_idle(s));
  });
}

// ---- pqscope::replica_set in several processes ------------------------------------

namespace {

constexpr ms old_after{700};  // a token this old: the standby has replayed it (500 ms delay)

// What one worker process did, summed by the parent.
struct tally {
  std::uint64_t pairs = 0, misses = 0, cross = 0;
  std::uint64_t old_reads = 0, old_on_standby = 0;
  std::uint64_t writes = 0, reads_on_standby = 0, reads_on_primary = 0, standby_behind = 0, standby_down = 0;

  void add(const pqscope::replica_set_stats& s) {
    writes += s.writes;
    reads_on_standby += s.reads_on_standby;
    reads_on_primary += s.reads_on_primary;
    standby_behind += s.standby_behind;
    standby_down += s.standby_down;
  }
  [[nodiscard]] std::string line() const {
    std::ostringstream os;
    os << "tally " << pairs << ' ' << misses << ' ' << cross << ' ' << old_reads << ' ' << old_on_standby << ' '
       << writes << ' ' << reads_on_standby << ' ' << reads_on_primary << ' ' << standby_behind << ' '
       << standby_down << '\n';
    return os.str();
  }
  bool parse(std::istream& in) {
    return static_cast<bool>(in >> pairs >> misses >> cross >> old_reads >> old_on_standby >> writes >>
                             reads_on_standby >> reads_on_primary >> standby_behind >> standby_down);
  }
  tally& operator+=(const tally& o) {
    pairs += o.pairs, misses += o.misses, cross += o.cross, old_reads += o.old_reads;
    old_on_standby += o.old_on_standby, writes += o.writes, reads_on_standby += o.reads_on_standby;
    reads_on_primary += o.reads_on_primary, standby_behind += o.standby_behind, standby_down += o.standby_down;
    return *this;
  }
};

pqscope::replica_set open_set(const route& r) {
  pqscope::replica_set_options o;
  o.connection.pooling = r.pooling;
  o.pool.max_size = 2;
  o.replica_wait = ms(1);  // never enough for a fresh token: those fall back to the primary
  o.fallback_to_primary = true;
  return pqscope::replica_set{r.primary, {r.standby}, o};
}

// A worker's side: reads through its replica set, counts, and notes what went wrong.
class worker {
 public:
  explicit worker(const route& r) : db_(open_set(r)) {}

  void write(long id, wal_position& seen) {
    db_.write(seen, [&](pqscope::connection& c) { c.execute(insert_sql, id); });
  }
  // Reads row `id` with `token`; a miss is the failure this test is about.
  bool read(long id, wal_position token, const char* what) {
    const auto [n, on_standby] = db_.read(token, [&](pqscope::connection& c) {
      return c.execute("SELECT count(*), pg_is_in_recovery() FROM rw WHERE id = $1", id)[0].as<long, bool>();
    });
    if (n != 1) {
      ++t_.misses;
      note(std::string(what) + " read of row " + std::to_string(id) + " with token " + token.to_string() +
           " found " + std::to_string(n) + (on_standby ? " on the standby" : " on the primary"));
    }
    return on_standby;
  }
  // After each pair: rows whose tokens are old by now are read again with them.
  void remember(long id, wal_position token) { fifo_.push_back({id, token, steady::now()}); }
  void read_old(bool all) {
    while (!fifo_.empty()) {
      const auto age = steady::now() - fifo_.front().at;
      if (age < old_after) {
        if (!all) return;
        std::this_thread::sleep_for(old_after - age);
      }
      const pending p = fifo_.front();
      fifo_.pop_front();
      ++t_.old_reads;
      if (read(p.id, p.token, "old")) ++t_.old_on_standby;
    }
  }
  void note(const std::string& e) {
    if (errors_.size() < 20) errors_.push_back(e);
  }
  tally& counts() { return t_; }

  std::string report() {
    t_.add(db_.stats());
    std::string out = t_.line();
    for (const auto& e : errors_) out += "error " + e + '\n';
    return out + "end\n";
  }

 private:
  struct pending {
    long id;
    wal_position token;
    steady::time_point at;
  };
  pqscope::replica_set db_;
  tally t_;
  std::deque<pending> fifo_;
  std::vector<std::string> errors_;
};

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

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

struct child {
  pid_t pid = -1;
  int report = -1;  // read end
  std::string role;
};

// Forks fn(report fd) -> exit code. The child never touches Boost.Test, and dies of
// its alarm if it hangs.
template <class Fn>
child spawn(const std::string& role, Fn&& fn) {
  int rep[2];
  BOOST_REQUIRE(::pipe(rep) == 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(rep[0]);
    ::alarm(120);
    int code = 3;
    try {
      code = fn(rep[1]);
    } catch (const std::exception& e) {
      write_all(rep[1], std::string("error ") + role + ": " + e.what() + "\n");
    } catch (...) {
    }
    ::_exit(code);
  }
  ::close(rep[1]);
  return {pid, rep[0], role};
}

// Writes and reads `pairs` rows from `first_id` on, in one process.
int pairs_worker(const route& r, long first_id, int pairs, int report_fd) {
  worker w{r};
  for (int i = 0; i < pairs; ++i) {
    const long id = first_id + i;
    wal_position seen;
    w.write(id, seen);
    w.read(id, seen, "fresh");
    ++w.counts().pairs;
    w.remember(id, seen);
    w.read_old(false);
  }
  w.read_old(true);
  return write_all(report_fd, w.report()) ? 0 : 4;
}

// Across processes: the writer commits a row and sends its id and token as text;
// the reader parses the token, reads the row through its own replica set and
// answers; then the next pair.
int cross_writer(const route& r, long first_id, int pairs, int token_fd, int ack_fd, int report_fd) {
  worker w{r};
  for (int i = 0; i < pairs; ++i) {
    const long id = first_id + i;
    wal_position seen;
    w.write(id, seen);
    if (!write_all(token_fd, std::to_string(id) + ' ' + seen.to_string() + '\n')) {
      w.note("the reader is gone");
      break;
    }
    char ack = 0;
    ssize_t n;
    while ((n = ::read(ack_fd, &ack, 1)) < 0 && errno == EINTR) {
    }
    if (n != 1) {
      w.note("no answer from the reader");
      break;
    }
    ++w.counts().pairs;
  }
  ::close(token_fd);  // the reader's end of file
  return write_all(report_fd, w.report()) ? 0 : 4;
}

int cross_reader(const route& r, int token_fd, int ack_fd, int report_fd) {
  worker w{r};
  FILE* in = ::fdopen(token_fd, "r");
  char line[128];
  while (in != nullptr && std::fgets(line, sizeof line, in) != nullptr) {
    std::istringstream ls(line);
    long id = 0;
    std::string text;
    ls >> id >> text;
    const wal_position token = wal_position::parse(text);
    w.read(id, token, "cross-process");
    ++w.counts().cross;
    w.remember(id, token);
    w.read_old(false);
    if (!write_all(ack_fd, "k")) break;
  }
  if (in != nullptr) std::fclose(in);
  w.read_old(true);
  return write_all(report_fd, w.report()) ? 0 : 4;
}

// pairs_workers processes of `pairs` pairs each, and a writer/reader couple of
// `cross_pairs`.
void run_pairs(const route& r, long first_id, int pairs_workers, int pairs, int cross_pairs) {
  const auto start = steady::now();
  std::vector<child> kids;
  for (int k = 0; k < pairs_workers; ++k) {
    const long from = first_id + static_cast<long>(k) * 10'000'000;
    kids.push_back(spawn("pairs", [&](int fd) { return pairs_worker(r, from, pairs, fd); }));
  }
  // Made after the workers above, so that none of them holds an end open.
  int token[2], ack[2];
  BOOST_REQUIRE(::pipe(token) == 0);
  BOOST_REQUIRE(::pipe(ack) == 0);
  const long cross_from = first_id + static_cast<long>(pairs_workers) * 10'000'000;
  kids.push_back(spawn("writer", [&](int fd) {
    ::close(token[0]);
    ::close(ack[1]);
    return cross_writer(r, cross_from, cross_pairs, token[1], ack[0], fd);
  }));
  kids.push_back(spawn("reader", [&](int fd) {
    ::close(token[1]);
    ::close(ack[0]);
    return cross_reader(r, token[0], ack[1], fd);
  }));
  for (int fd : {token[0], token[1], ack[0], ack[1]}) ::close(fd);

  tally sum;
  std::vector<std::string> problems;
  for (child& k : kids) {
    const std::string rep = read_all(k.report);
    ::close(k.report);
    int status = 0;
    ::waitpid(k.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      problems.push_back(k.role + " (pid " + std::to_string(k.pid) + ") ended with status " + std::to_string(status));
    std::istringstream in(rep);
    std::string l;
    bool ended = false;
    while (std::getline(in, l)) {
      std::istringstream ls(l);
      std::string tag;
      ls >> tag;
      tally t;
      if (tag == "tally" && t.parse(ls))
        sum += t;
      else if (tag == "end")
        ended = true;
      else
        problems.push_back(k.role + ": " + l);
    }
    if (!ended) problems.push_back(k.role + ": report incomplete");
  }
  const double seconds = std::chrono::duration<double>(steady::now() - start).count();

  BOOST_TEST_MESSAGE(r.name << ": " << sum.pairs << " write-then-read pairs (" << sum.cross
                            << " across processes) in " << seconds << " s; reads on the standby "
                            << sum.reads_on_standby << ", on the primary " << sum.reads_on_primary
                            << "; standby found behind " << sum.standby_behind << ", down " << sum.standby_down
                            << "; old tokens read " << sum.old_reads << ", " << sum.old_on_standby
                            << " of them on the standby; misses " << sum.misses);
  for (const auto& p : problems) BOOST_ERROR(p);
  const auto expected = static_cast<std::uint64_t>(pairs_workers) * pairs + cross_pairs;
  BOOST_TEST(sum.pairs == expected);
  BOOST_TEST(sum.cross == static_cast<std::uint64_t>(cross_pairs));
  BOOST_TEST(sum.writes == expected);
  BOOST_TEST(sum.misses == 0u);
  // Both ways are really taken: fresh tokens fall back to the primary, old ones are
  // served by the standby.
  BOOST_TEST(sum.reads_on_standby > 0u);
  BOOST_TEST(sum.reads_on_primary > 0u);
  BOOST_TEST(sum.standby_behind > 0u);  // fresh tokens were checked on the standby first
  BOOST_TEST(sum.old_on_standby > 0u);
  BOOST_TEST(sum.reads_on_standby + sum.reads_on_primary == expected + sum.old_reads);
}

}  // namespace

// 10,000 pairs on each route: 3 processes of 2,500, and a writer/reader couple of 2,500.
BOOST_AUTO_TEST_CASE(replica_set_never_misses_a_write_across_processes) {
  long first_id = 1'000'000'000L;
  for (const route& r : routes()) BOOST_TEST_CONTEXT("route " << r.name) {
      run_pairs(r, first_id, 3, 2500, 2500);
      first_id += 1'000'000'000L;
    }
}
