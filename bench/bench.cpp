// pqscope benchmark: nested transaction scopes, side by side with raw libpq and
// libpqxx, directly and through PgBouncer (transaction pooling).
//
//   pqscope_bench --direct CONNINFO --pgbouncer CONNINFO [--pgbouncer-admin CONNINFO]
//                 [--out DIR] [--iterations N] [--warmup N] [--seconds S] [--threads T] [--only SHAPE]
//
// Implementations:
//   pqscope          nested pqscope::transaction objects, one per function
//   naive            raw libpq, every BEGIN/SAVEPOINT/RELEASE/COMMIT its own PQexec, statements by PQexecParams
//   floor            raw libpq sending what pqscope sends (pipeline mode, one sync per batch, one sync in
//                    flight): the cost of the protocol with no library around it
//   libpqxx          pqxx::work + nested pqxx::subtransaction, statements by exec() with literal SQL
//   pqscope_batched  the outermost scope an atomic() with batch = true, every nested scope a nested
//                    atomic() in a function of its own; no result is read
//   floor1           raw libpq sending BEGIN, every statement and COMMIT in one pipeline batch with one
//                    sync: one round trip, the physical limit for a transaction
//
// Round trips are counted on the wire for every implementation: each transaction
// of a calibration run is traced with PQtrace and every frontend Query or Sync
// message (each waits for its own ReadyForQuery) is one round trip. The raw
// clients' and pqscope's expected counts are checked against the trace, and
// pqscope's own counter (stats().round_trips) on every timed transaction: N + 1
// unbatched, 1 batched.

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/pqscope.hpp>

#include "bench.hpp"
#include "report.hpp"

namespace bench {
namespace {

using clock_type = std::chrono::steady_clock;

// ---- failures -------------------------------------------------------------

// This benchmark shows the first 20 failures (bench::fail's default is 30).
void fail(const std::string& what) { bench::fail(what, 20); }

// ---- raw libpq helpers --------------------------------------------------------

void check(PGconn* c, PGresult* r, const char* sql) {
  const auto st = PQresultStatus(r);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    PQclear(r);
    return;
  }
  std::string msg = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(c);
  PQclear(r);
  throw std::runtime_error(std::string(sql) + ": " + msg);
}

void exec_raw(PGconn* c, const char* sql) { check(c, PQexec(c, sql), sql); }

constexpr Oid int4_oid = 23;
const Oid int4_types[2] = {int4_oid, int4_oid};

struct int_text {
  char buf[16] = {};
  int_text() = default;
  explicit int_text(int v) { *std::to_chars(buf, buf + sizeof buf - 1, v).ptr = '\0'; }
};

constexpr int max_depth = 16;
// The same names pqscope uses, so both send byte-identical control statements.
struct savepoint_sql {
  std::array<std::string, max_depth> open, release;
  savepoint_sql() {
    for (int i = 1; i < max_depth; ++i) {
      open[static_cast<std::size_t>(i)] = "SAVEPOINT pqscope_" + std::to_string(i);
      release[static_cast<std::size_t>(i)] = "RELEASE SAVEPOINT pqscope_" + std::to_string(i);
    }
  }
};
const savepoint_sql& sp() {
  static const savepoint_sql s;
  return s;
}

const char* const insert_sql = "INSERT INTO bench_t(v) VALUES ($1)";
const char* const update_sql = "UPDATE bench_accounts SET balance = balance + $1 WHERE id = $2";

void trace_raw(PGconn* c, std::FILE* file) {
  if (file != nullptr) {
    PQtrace(c, file);
    PQsetTraceFlags(c, PQTRACE_SUPPRESS_TIMESTAMPS);
  } else {
    PQuntrace(c);
  }
}

// ---- implementations --------------------------------------------------------

class pqscope_client final : public client {
 public:
  explicit pqscope_client(const std::string& conninfo) : c_(conninfo) {}

  void matrix(int depth, int statements, int seq) override {
    const auto before = c_.stats().round_trips;
    scope(1, depth, statements, seq);
    expect(before, static_cast<std::uint64_t>(statements) + 1, "matrix");
  }

  void transfer(int first, int second, int amount) override {
    const auto before = c_.stats().round_trips;
    pqscope::transaction tx{c_};
    move_money(first, -amount);
    move_money(second, amount);
    tx.commit();
    expect(before, 3, "transfer");
  }

  void trace(std::FILE* file) override { trace_raw(c_.native_handle(), file); }

 private:
  // Each level is its own function with its own scope, as application code would be.
  void scope(int level, int depth, int statements, int seq) {
    pqscope::transaction tx{c_};
    if (level < depth) {
      scope(level + 1, depth, statements, seq);
    } else {
      for (int i = 0; i < statements; ++i) c_.execute(insert_sql, seq + i);
    }
    tx.commit();
  }

  void move_money(int id, int delta) {
    pqscope::transaction tx{c_};
    c_.execute(update_sql, delta, id);
    tx.commit();
  }

  void expect(std::uint64_t before, std::uint64_t want, const char* shape) const {
    const auto got = c_.stats().round_trips - before;
    if (got != want)
      fail(std::string("pqscope ") + shape + ": " + std::to_string(got) + " round trips, expected " +
           std::to_string(want));
  }

  pqscope::connection c_;
};

// batch = true on the outermost atomic(); every nested scope is a nested atomic()
// in a function of its own that knows nothing of the batch. No result is read, so
// the whole transaction, at any depth, must go out as one round trip.
class batched_client final : public client {
 public:
  explicit batched_client(const std::string& conninfo) : c_(conninfo) { batch_.batch = true; }

  void matrix(int depth, int statements, int seq) override {
    const pqscope::connection_stats before = c_.stats();
    pqscope::atomic(c_, batch_, [&](pqscope::connection& c) { scope(c, 2, depth, statements, seq); });
    expect(before, "matrix");
  }

  void transfer(int first, int second, int amount) override {
    const pqscope::connection_stats before = c_.stats();
    pqscope::atomic(c_, batch_, [&](pqscope::connection& c) {
      move_money(c, first, -amount);
      move_money(c, second, amount);
    });
    expect(before, "transfer");
  }

  void trace(std::FILE* file) override { trace_raw(c_.native_handle(), file); }

 private:
  // Level `level` of `depth` (the outermost atomic() is level 1); the innermost runs the statements.
  static void scope(pqscope::connection& c, int level, int depth, int statements, int seq) {
    if (level > depth) {
      for (int i = 0; i < statements; ++i) c.execute(insert_sql, seq + i);
      return;
    }
    pqscope::atomic(c, [&](pqscope::connection& cc) { scope(cc, level + 1, depth, statements, seq); });
  }

  static void move_money(pqscope::connection& c, int id, int delta) {
    pqscope::atomic(c, [&](pqscope::connection& cc) { cc.execute(update_sql, delta, id); });
  }

  // One round trip, one batched attempt, no replay: anything else means the batch
  // was split or the function ran twice.
  void expect(const pqscope::connection_stats& before, const char* shape) const {
    const pqscope::connection_stats& now = c_.stats();
    const auto rt = now.round_trips - before.round_trips;
    const auto attempts = now.batched_attempts - before.batched_attempts;
    const auto replays = now.replays - before.replays;
    if (rt != 1 || attempts != 1 || replays != 0)
      fail(std::string("pqscope_batched ") + shape + ": " + std::to_string(rt) + " round trips, " +
           std::to_string(attempts) + " batched attempts, " + std::to_string(replays) +
           " replays; expected 1, 1, 0");
  }

  pqscope::connection c_;
  pqscope::transaction_options batch_;
};

class naive_client final : public client {
 public:
  explicit naive_client(const std::string& conninfo) : c_(connect_raw(conninfo)) {}
  ~naive_client() override { PQfinish(c_); }

  void matrix(int depth, int statements, int seq) override {
    guarded([&] {
      exec("BEGIN");
      for (int l = 1; l < depth; ++l) exec(sp().open[static_cast<std::size_t>(l)].c_str());
      for (int i = 0; i < statements; ++i) {
        int_text v(seq + i);
        const char* vals[] = {v.buf};
        exec_params(insert_sql, 1, vals);
      }
      for (int l = depth - 1; l >= 1; --l) exec(sp().release[static_cast<std::size_t>(l)].c_str());
      exec("COMMIT");
    });
  }

  void transfer(int first, int second, int amount) override {
    guarded([&] {
      exec("BEGIN");
      update(first, -amount);
      update(second, amount);
      exec("COMMIT");
    });
  }

  void trace(std::FILE* file) override { trace_raw(c_, file); }

 private:
  void update(int id, int delta) {
    exec(sp().open[1].c_str());
    int_text d(delta), i(id);
    const char* vals[] = {d.buf, i.buf};
    exec_params(update_sql, 2, vals);
    exec(sp().release[1].c_str());
  }
  void exec(const char* sql) { check(c_, PQexec(c_, sql), sql); }
  void exec_params(const char* sql, int n, const char* const* vals) {
    check(c_, PQexecParams(c_, sql, n, int4_types, vals, nullptr, nullptr, 0), sql);
  }
  template <class F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      if (PQtransactionStatus(c_) != PQTRANS_IDLE) PQclear(PQexec(c_, "ROLLBACK"));
      throw;
    }
  }

  PGconn* c_;
};

// Raw libpq in pipeline mode: what the two floors share.
class pipeline_client : public client {
 public:
  explicit pipeline_client(const std::string& conninfo) : c_(connect_raw(conninfo)) {
    // Pipeline mode for the whole session: entering and leaving it per batch would be
    // (cheap) work that a floor has no need for.
    if (PQenterPipelineMode(c_) != 1) {
      PQfinish(c_);
      throw std::runtime_error("PQenterPipelineMode failed");
    }
  }
  ~pipeline_client() override { PQfinish(c_); }

  void trace(std::FILE* file) override { trace_raw(c_, file); }

 protected:
  void send(const char* sql, int n = 0, const char* const* vals = nullptr) {
    if (PQsendQueryParams(c_, sql, n, n > 0 ? int4_types : nullptr, vals, nullptr, nullptr, 0) != 1)
      throw std::runtime_error(std::string("PQsendQueryParams: ") + PQerrorMessage(c_));
  }
  // Ends the batch and reads its `count` answers and the sync: one round trip.
  void sync(int count) {
    if (PQpipelineSync(c_) != 1) throw std::runtime_error(std::string("PQpipelineSync: ") + PQerrorMessage(c_));
    std::string error;
    for (int i = 0; i < count; ++i) {
      PGresult* r = PQgetResult(c_);
      if (r == nullptr) throw std::runtime_error(std::string("lost: ") + PQerrorMessage(c_));
      const auto st = PQresultStatus(r);
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && error.empty())
        error = st == PGRES_PIPELINE_ABORTED ? "aborted" : PQresultErrorMessage(r);
      PQclear(r);
      if (PGresult* extra = PQgetResult(c_)) {
        PQclear(extra);
        throw std::runtime_error("unexpected extra result");
      }
    }
    PGresult* s = PQgetResult(c_);
    const bool ok = s != nullptr && PQresultStatus(s) == PGRES_PIPELINE_SYNC;
    PQclear(s);
    if (!ok) throw std::runtime_error(std::string("no sync: ") + PQerrorMessage(c_));
    if (!error.empty()) {
      // A failed batch that began a transaction leaves it aborted, COMMIT included.
      if (PQtransactionStatus(c_) != PQTRANS_IDLE) {
        send("ROLLBACK");
        sync(1);
      }
      throw std::runtime_error("floor: " + error);
    }
  }

  PGconn* c_;
};

// The parameter texts of up to max_statements statements, alive until the batch is sent.
constexpr int max_statements = 16;
struct insert_values {
  std::array<int_text, max_statements> text;
  std::array<const char*, max_statements> ptr{};
  insert_values(int statements, int seq) {
    if (statements > max_statements) throw std::runtime_error("too many statements per transaction");
    for (int i = 0; i < statements; ++i) {
      text[static_cast<std::size_t>(i)] = int_text(seq + i);
      ptr[static_cast<std::size_t>(i)] = text[static_cast<std::size_t>(i)].buf;
    }
  }
  const char* const* at(int i) const { return &ptr[static_cast<std::size_t>(i)]; }
};

class floor_client final : public pipeline_client {
 public:
  using pipeline_client::pipeline_client;

  void matrix(int depth, int statements, int seq) override {
    const insert_values v(statements, seq);
    // 1: BEGIN, every SAVEPOINT and the first statement; then one statement per
    // batch; COMMIT alone (the RELEASEs are implied by it).
    send("BEGIN");
    for (int l = 1; l < depth; ++l) send(sp().open[static_cast<std::size_t>(l)].c_str());
    send(insert_sql, 1, v.at(0));
    sync(depth + 1);
    for (int i = 1; i < statements; ++i) {
      send(insert_sql, 1, v.at(i));
      sync(1);
    }
    send("COMMIT");
    sync(1);
  }

  void transfer(int first, int second, int amount) override {
    int_text d1(-amount), i1(first), d2(amount), i2(second);
    const char* v1[] = {d1.buf, i1.buf};
    const char* v2[] = {d2.buf, i2.buf};
    send("BEGIN");
    send(sp().open[1].c_str());
    send(update_sql, 2, v1);
    sync(3);
    send(sp().release[1].c_str());  // the first scope's RELEASE rides with the second's work
    send(sp().open[1].c_str());
    send(update_sql, 2, v2);
    sync(3);
    send("COMMIT");
    sync(1);
  }
};

// One round trip per transaction: BEGIN, every statement and COMMIT in one batch,
// one sync. No SAVEPOINTs: with nothing read in between, no scope can act on a
// failure before the end, so only the whole transaction can fail or commit.
class floor1_client final : public pipeline_client {
 public:
  using pipeline_client::pipeline_client;

  void matrix(int /*depth*/, int statements, int seq) override {
    const insert_values v(statements, seq);
    send("BEGIN");
    for (int i = 0; i < statements; ++i) send(insert_sql, 1, v.at(i));
    send("COMMIT");
    sync(statements + 2);
  }

  void transfer(int first, int second, int amount) override {
    int_text d1(-amount), i1(first), d2(amount), i2(second);
    const char* v1[] = {d1.buf, i1.buf};
    const char* v2[] = {d2.buf, i2.buf};
    send("BEGIN");
    send(update_sql, 2, v1);
    send(update_sql, 2, v2);
    send("COMMIT");
    sync(4);
  }
};

// ---- the measurement -----------------------------------------------------------

enum impl_id { pqscope_impl, naive_impl, floor_impl, pqxx_impl, batched_impl, floor1_impl, impl_count };
const char* const impl_names[impl_count] = {"pqscope", "naive", "floor", "libpqxx", "pqscope_batched", "floor1"};

struct target {
  std::string name;  // "PgBouncer" / "direct"
  std::string conninfo;
};

std::unique_ptr<client> make_client(int impl, const std::string& conninfo) {
  switch (impl) {
    case pqscope_impl: return std::make_unique<pqscope_client>(conninfo);
    case naive_impl: return std::make_unique<naive_client>(conninfo);
    case floor_impl: return std::make_unique<floor_client>(conninfo);
    case batched_impl: return std::make_unique<batched_client>(conninfo);
    case floor1_impl: return std::make_unique<floor1_client>(conninfo);
    default: return make_pqxx_client(conninfo);
  }
}

struct shape {
  std::string name;
  int depth;       // 0: the transfer shape
  int statements;  // per transaction
};

struct options {
  target direct, pgbouncer;
  std::string pgbouncer_admin;
  std::string out = "results";
  int iterations = 1000;
  int warmup = 100;
  int block = 1;
  double seconds = 3.0;  // 0: no contended run
  int threads = 16;
  std::string only;  // run only the single-client shapes whose name contains this
};

struct cell {
  std::string via, shape_name;
  int depth = 0, statements = 0;
  bool present[impl_count] = {};
  double median_us[impl_count] = {}, p10_us[impl_count] = {}, p90_us[impl_count] = {};
  double round_trips[impl_count] = {};
  double cpu_us[impl_count] = {};  // median client CPU per transaction
};

struct contended {
  std::string via;
  bool present[impl_count] = {};
  double tps[impl_count] = {}, median_us[impl_count] = {};
  long errors[impl_count] = {};
};

std::atomic<int> value_seq{1};
std::atomic<long> rows_expected{0};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(pos);
  const auto hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - static_cast<double>(lo));
}

struct account_picker {
  std::mt19937 rng;
  std::uniform_int_distribution<int> id{1, 1000};
  explicit account_picker(unsigned seed) : rng(seed) {}
  std::pair<int, int> next() {
    int a = id(rng), b = id(rng);
    while (b == a) b = id(rng);
    return {std::min(a, b), std::max(a, b)};
  }
  int amount() { return static_cast<int>(rng() % 2) == 0 ? 1 : -1; }
};
constexpr int account_count = 1000;
constexpr long initial_balance = 1000000;

void run_one(client& c, const shape& s, account_picker& pick) {
  if (s.depth == 0) {
    auto [a, b] = pick.next();
    c.transfer(a, b, pick.amount());
  } else {
    c.matrix(s.depth, s.statements, value_seq.fetch_add(s.statements));
    rows_expected += s.statements;
  }
}

// Round trips per transaction, counted from the protocol trace.
double traced_round_trips(client& c, const shape& s, account_picker& pick, int transactions) {
  std::FILE* f = std::tmpfile();
  if (f == nullptr) throw std::runtime_error("tmpfile failed");
  c.trace(f);
  for (int i = 0; i < transactions; ++i) run_one(c, s, pick);
  c.trace(nullptr);
  std::fflush(f);
  std::rewind(f);
  long count = 0;
  char line[4096];
  while (std::fgets(line, sizeof line, f) != nullptr) {
    // "[timestamp\t]F\t<length>\t<message>\t..." ; libpqxx's trace keeps timestamps.
    std::vector<std::string> tok;
    std::istringstream in(line);
    for (std::string t; std::getline(in, t, '\t');) tok.push_back(t);
    for (std::size_t i = 0; i + 2 < tok.size(); ++i)
      if (tok[i] == "F" && !tok[i + 1].empty() && std::isdigit(static_cast<unsigned char>(tok[i + 1][0]))) {
        const std::string& m = tok[i + 2];
        if (m.rfind("Query", 0) == 0 || m.rfind("Sync", 0) == 0) ++count;
        break;
      }
  }
  std::fclose(f);
  return static_cast<double>(count) / transactions;
}

// Round trips the raw clients and pqscope must produce (libpqxx is only measured).
int expected_round_trips(int impl, const shape& s) {
  const int n = s.depth == 0 ? 2 : s.statements;
  switch (impl) {
    case pqscope_impl:
    case floor_impl: return n + 1;
    case naive_impl: return s.depth == 0 ? 8 : 2 * s.depth + n;  // transfer: BEGIN, 2 x (SAVEPOINT, UPDATE, RELEASE), COMMIT
    case batched_impl:
    case floor1_impl: return 1;
    default: return -1;
  }
}

cell measure_shape(const target& t, std::array<std::unique_ptr<client>, impl_count>& clients, const shape& s,
                   const options& o) {
  cell out;
  out.via = t.name;
  out.shape_name = s.name;
  out.depth = s.depth;
  out.statements = s.statements;
  account_picker pick(12345u + static_cast<unsigned>(s.depth * 100 + s.statements));
  std::array<std::vector<double>, impl_count> samples, cpu;
  for (auto& v : samples) v.reserve(static_cast<std::size_t>(o.iterations));
  for (auto& v : cpu) v.reserve(static_cast<std::size_t>(o.iterations));

  // Interleaved in blocks, the first implementation rotating, so that machine
  // noise hits every implementation alike.
  auto blocks = [&](int count, bool keep) {
    for (int b = 0; b * o.block < count; ++b) {
      const int in_block = std::min(o.block, count - b * o.block);
      for (int k = 0; k < impl_count; ++k) {
        const int impl = (b + k) % impl_count;
        if (!clients[static_cast<std::size_t>(impl)]) continue;
        client& c = *clients[static_cast<std::size_t>(impl)];
        for (int j = 0; j < in_block; ++j) {
          const double c0 = thread_cpu_us();
          const auto t0 = clock_type::now();
          run_one(c, s, pick);
          const auto t1 = clock_type::now();
          const double c1 = thread_cpu_us();
          if (keep) {
            samples[static_cast<std::size_t>(impl)].push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
            cpu[static_cast<std::size_t>(impl)].push_back(c1 - c0);
          }
        }
      }
    }
  };
  blocks(o.warmup, false);
  for (int impl = 0; impl < impl_count; ++impl) {
    if (!clients[static_cast<std::size_t>(impl)]) continue;
    const double rt = traced_round_trips(*clients[static_cast<std::size_t>(impl)], s, pick, 3);
    out.round_trips[impl] = rt;
    const int want = expected_round_trips(impl, s);
    if (want >= 0 && rt != want)
      fail(std::string(impl_names[impl]) + " " + s.name + " via " + t.name + ": traced " + std::to_string(rt) +
           " round trips per transaction, expected " + std::to_string(want));
  }
  blocks(o.iterations, true);
  for (int impl = 0; impl < impl_count; ++impl) {
    const auto& v = samples[static_cast<std::size_t>(impl)];
    if (v.empty()) continue;
    out.present[impl] = true;
    out.median_us[impl] = percentile(v, 0.5);
    out.p10_us[impl] = percentile(v, 0.1);
    out.p90_us[impl] = percentile(v, 0.9);
    out.cpu_us[impl] = percentile(cpu[static_cast<std::size_t>(impl)], 0.5);
  }
  return out;
}

// `threads` clients per implementation, each with its own connection, running
// transfers for a fixed time; implementations take turns in one-second slices.
contended measure_contended(const target& t, const options& o, bool have_pqxx) {
  contended out;
  out.via = t.name;
  const int n = o.threads;
  std::array<std::vector<std::unique_ptr<client>>, impl_count> clients;
  for (int impl = 0; impl < impl_count; ++impl) {
    if (impl == pqxx_impl && !have_pqxx) continue;
    for (int i = 0; i < n; ++i) clients[static_cast<std::size_t>(impl)].push_back(make_client(impl, t.conninfo));
  }
  const int rounds = std::max(1, static_cast<int>(std::lround(o.seconds * 2)));  // half-second turns
  const double slice = o.seconds / rounds;
  std::array<long, impl_count> done{};
  std::array<double, impl_count> elapsed{};
  std::array<std::vector<double>, impl_count> lat;

  auto run_slice = [&](int impl, double seconds, bool keep) {
    auto& cs = clients[static_cast<std::size_t>(impl)];
    std::atomic<bool> go{false};
    std::vector<std::thread> ts;
    std::vector<long> counts(static_cast<std::size_t>(n), 0), errors(static_cast<std::size_t>(n), 0);
    std::vector<std::vector<double>> lats(static_cast<std::size_t>(n));
    clock_type::time_point deadline;
    for (int i = 0; i < n; ++i) {
      ts.emplace_back([&, i] {
        const auto ui = static_cast<std::size_t>(i);
        account_picker pick(777u + static_cast<unsigned>(i * 31 + impl));
        const shape transfer{"transfer", 0, 2};
        while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
        while (true) {
          const auto t0 = clock_type::now();
          if (t0 >= deadline) break;
          try {
            run_one(*cs[ui], transfer, pick);
            ++counts[ui];
            if (keep) lats[ui].push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
          } catch (const std::exception& e) {
            if (++errors[ui] == 1) fail(std::string(impl_names[impl]) + " contended via " + t.name + ": " + e.what());
          }
        }
      });
    }
    const auto start = clock_type::now();
    deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
    go.store(true, std::memory_order_release);
    for (auto& th : ts) th.join();
    const double took = std::chrono::duration<double>(clock_type::now() - start).count();
    if (!keep) return;
    for (int i = 0; i < n; ++i) {
      const auto ui = static_cast<std::size_t>(i);
      done[static_cast<std::size_t>(impl)] += counts[ui];
      out.errors[impl] += errors[ui];
      auto& l = lat[static_cast<std::size_t>(impl)];
      l.insert(l.end(), lats[ui].begin(), lats[ui].end());
    }
    elapsed[static_cast<std::size_t>(impl)] += took;
  };

  for (int impl = 0; impl < impl_count; ++impl)
    if (!clients[static_cast<std::size_t>(impl)].empty()) run_slice(impl, 0.3, false);  // warm up
  for (int r = 0; r < rounds; ++r)
    for (int k = 0; k < impl_count; ++k) {
      const int impl = (r + k) % impl_count;
      if (!clients[static_cast<std::size_t>(impl)].empty()) run_slice(impl, slice, true);
    }
  for (int impl = 0; impl < impl_count; ++impl) {
    if (clients[static_cast<std::size_t>(impl)].empty()) continue;
    out.present[impl] = true;
    out.tps[impl] = static_cast<double>(done[static_cast<std::size_t>(impl)]) / elapsed[static_cast<std::size_t>(impl)];
    out.median_us[impl] = percentile(lat[static_cast<std::size_t>(impl)], 0.5);
  }
  return out;
}

// ---- report ----------------------------------------------------------------------

std::string rt_text(const cell& c, int impl) {
  if (!c.present[impl]) return "n/a";
  const double v = c.round_trips[impl];
  return v == std::floor(v) ? fmt(v) : fmt(v, 2);
}

void usage() {
  std::cerr << "usage: pqscope_bench [--direct CONNINFO] [--pgbouncer CONNINFO] [--pgbouncer-admin CONNINFO]\n"
               "                     [--out DIR] [--iterations N] [--warmup N] [--seconds S (0: skip contended)]\n"
               "                     [--threads T] [--only SHAPE-SUBSTRING]\n";
}

int run(int argc, char** argv) {
  options o;
  o.direct.name = "direct";
  o.pgbouncer.name = "PgBouncer";
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--direct") o.direct.conninfo = value();
    else if (a == "--pgbouncer") o.pgbouncer.conninfo = value();
    else if (a == "--pgbouncer-admin") o.pgbouncer_admin = value();
    else if (a == "--out") o.out = value();
    else if (a == "--iterations") o.iterations = std::stoi(value());
    else if (a == "--warmup") o.warmup = std::stoi(value());
    else if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--threads") o.threads = std::stoi(value());
    else if (a == "--only") o.only = value();
    else {
      usage();
      return 2;
    }
  }
  if (o.direct.conninfo.empty() && o.pgbouncer.conninfo.empty()) {
    usage();
    return 2;
  }
  std::vector<target> targets;
  for (target* t : {&o.pgbouncer, &o.direct})
    if (!t->conninfo.empty()) targets.push_back({t->name, with_app_name(t->conninfo, "pqscope_bench")});

  const std::string pqxx = pqxx_version();
  const bool have_pqxx = pqxx != "not built";
  std::cout << "libpqxx: " << pqxx << std::endl;

  // Setup and checks go directly to the server when it is given.
  PGconn* admin = connect_raw(targets.back().conninfo);
  PQsetNoticeProcessor(admin, [](void*, const char*) {}, nullptr);  // "table does not exist, skipping"
  const std::string load_before = load_average();
  exec_raw(admin, "DROP TABLE IF EXISTS bench_t, bench_accounts");
  exec_raw(admin, "CREATE TABLE bench_t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int NOT NULL)");
  exec_raw(admin, "CREATE TABLE bench_accounts (id int PRIMARY KEY, balance bigint NOT NULL)");
  exec_raw(admin, ("INSERT INTO bench_accounts SELECT g, " + std::to_string(initial_balance) +
                   " FROM generate_series(1, " + std::to_string(account_count) + ") g").c_str());
  const std::string pg_version = query_text(admin, "SHOW server_version");
  std::string pgb_version = "unknown";
  if (!o.pgbouncer_admin.empty()) {
    // The admin console speaks only the simple query protocol: PQexec.
    PGconn* pa = PQconnectdb(o.pgbouncer_admin.c_str());
    if (PQstatus(pa) == CONNECTION_OK) {
      std::string v = query_text(pa, "SHOW VERSION");
      if (!v.empty()) pgb_version = v;
    }
    PQfinish(pa);
  }

  std::vector<shape> shapes;
  for (int d : {1, 3, 5, 10})
    for (int n : {1, 3, 10}) shapes.push_back({"depth " + std::to_string(d) + ", " + std::to_string(n) + " stmt", d, n});
  shapes.push_back({"transfer", 0, 2});

  const auto started = clock_type::now();
  std::vector<cell> cells;
  std::vector<contended> conts;
  for (const target& t : targets) {
    std::array<std::unique_ptr<client>, impl_count> clients;
    for (int impl = 0; impl < impl_count; ++impl) clients[static_cast<std::size_t>(impl)] = make_client(impl, t.conninfo);
    for (const shape& s : shapes) {
      if (!o.only.empty() && s.name.find(o.only) == std::string::npos) continue;
      cells.push_back(measure_shape(t, clients, s, o));
      const cell& c = cells.back();
      std::cout << std::left << std::setw(10) << t.name << std::setw(22) << s.name;
      for (int impl = 0; impl < impl_count; ++impl)
        std::cout << impl_names[impl] << " " << fmt(c.median_us[impl]) << " us (" << rt_text(c, impl) << ")  ";
      std::cout << std::endl;
    }
    if (o.seconds <= 0) continue;
    conts.push_back(measure_contended(t, o, have_pqxx));
    const contended& c = conts.back();
    std::cout << std::left << std::setw(10) << t.name << std::setw(22) << "contended transfer";
    for (int impl = 0; impl < impl_count; ++impl) std::cout << impl_names[impl] << " " << fmt(c.tps[impl]) << " tx/s  ";
    std::cout << std::endl;
  }
  const double total_s = std::chrono::duration<double>(clock_type::now() - started).count();

  // Every committed transaction must have left its rows, and transfers move money without creating it.
  const long rows = std::atol(query_text(admin, "SELECT count(*) FROM bench_t").c_str());
  if (rows != rows_expected.load())
    fail("bench_t holds " + std::to_string(rows) + " rows, expected " + std::to_string(rows_expected.load()));
  const long total = std::atol(query_text(admin, "SELECT sum(balance) FROM bench_accounts").c_str());
  if (total != account_count * initial_balance)
    fail("bench_accounts sum is " + std::to_string(total) + ", expected " +
         std::to_string(account_count * initial_balance));
  const std::string leftover = query_text(
      admin,
      "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND application_name = "
      "'pqscope_bench'");
  if (leftover != "0") fail(leftover + " sessions left idle in transaction");
  exec_raw(admin, "DROP TABLE IF EXISTS bench_t, bench_accounts");
  PQfinish(admin);

  // ---- markdown ----
  std::ostringstream md;
  md << "# pqscope benchmark\n\n";
  md << "| | |\n| --- | --- |\n";
  md << "| date | " << now_text() << " |\n";
  md << "| CPUs (nproc) | " << cpu_count() << " |\n";
  md << "| CPU model | " << cpu_model() << " |\n";
  md << "| load average (1, 5, 15 min) | before: " << load_before << "; after: " << load_average() << " |\n";
  md << "| PostgreSQL | " << pg_version << " |\n";
  md << "| PgBouncer | " << pgb_version << " (pool_mode=transaction, default_pool_size=4 as configured by scripts/dev.sh) |\n";
  md << "| libpq | " << PQlibVersion() << " |\n";
  md << "| libpqxx | " << pqxx << " |\n";
  md << "| compiler | " << __VERSION__ << " |\n";
  md << "| single client | " << o.iterations << " timed transactions per cell after " << o.warmup
     << " warm-up, implementations interleaved in blocks of " << o.block << " |\n";
  md << "| contended | " << o.threads << " client threads per implementation, own connection each, "
     << fmt(o.seconds, 1) << " s per implementation in half-second turns |\n";
  md << "| run time | " << fmt(total_s, 0) << " s |\n\n";

  md << "Implementations: **pqscope** nested `pqscope::transaction` objects, one per function; "
        "**naive** raw libpq, each BEGIN/SAVEPOINT/RELEASE/COMMIT its own `PQexec`, statements by `PQexecParams`; "
        "**floor** raw libpq sending exactly what pqscope sends (pipeline mode, control statements in the batch "
        "of the next statement, one sync in flight); **libpqxx** `pqxx::work` + nested `pqxx::subtransaction`, "
        "`exec()` with literal SQL; **batched** (`pqscope_batched` in the CSV) the outermost scope a "
        "`pqscope::atomic` with `transaction_options::batch = true`, every nested scope a nested `pqscope::atomic` "
        "in a function of its own, no result read; **floor1** raw libpq in pipeline mode sending BEGIN, every "
        "statement and COMMIT in one batch with one `PQpipelineSync`, then reading every result: one round trip, "
        "the physical limit (it sends no SAVEPOINT: with nothing read before the end, no scope can act on a "
        "failure).\n\n";
  md << "Round trips per transaction (RT) are counted on the wire: a few transactions per cell are traced with "
        "`PQtrace` and every frontend `Query` or `Sync` message, each answered by its own `ReadyForQuery`, is one "
        "round trip. pqscope's `stats()` is checked on every timed transaction: N + 1 round trips unbatched; "
        "batched, 1 round trip, 1 batched attempt and no replay. The trace is checked against the expected "
        "counts of pqscope (both modes) and the raw clients (floor1: 1). libpqxx sends SAVEPOINT and RELEASE only "
        "for the innermost subtransaction (the one that runs statements; the ones around it are never begun), so "
        "its count is N + 2 at depth 1 and N + 4 at any greater depth. Client CPU is the median thread CPU time "
        "per transaction (`CLOCK_THREAD_CPUTIME_ID`), the library's own cost without the waiting.\n\n";

  auto cell_us = [](const cell& c, int impl) { return c.present[impl] ? fmt(c.median_us[impl]) : std::string("n/a"); };
  auto cell_ratio = [](const cell& c, int a, int b) {
    return c.present[a] && c.present[b] ? ratio(c.median_us[a], c.median_us[b]) : std::string("n/a");
  };
  auto cell_cpu = [](const cell& c, int impl) { return c.present[impl] ? fmt(c.cpu_us[impl]) : std::string("n/a"); };

  md << "## One client, unbatched (N + 1 round trips): median µs per transaction\n\n";
  md << "| via | shape | RT pqscope | RT naive | RT floor | RT libpqxx | pqscope µs | naive µs | floor µs | "
        "libpqxx µs | pqscope/libpqxx | pqscope/floor | client CPU µs pqscope · floor · libpqxx |\n";
  md << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const cell& c : cells) {
    md << "| " << c.via << " | " << c.shape_name;
    for (int impl : {pqscope_impl, naive_impl, floor_impl, pqxx_impl}) md << " | " << rt_text(c, impl);
    for (int impl : {pqscope_impl, naive_impl, floor_impl, pqxx_impl}) md << " | " << cell_us(c, impl);
    md << " | " << cell_ratio(c, pqscope_impl, pqxx_impl) << " | " << cell_ratio(c, pqscope_impl, floor_impl);
    md << " | " << cell_cpu(c, pqscope_impl) << " · " << cell_cpu(c, floor_impl) << " · " << cell_cpu(c, pqxx_impl)
       << " |\n";
  }
  md << "\npqscope/libpqxx and pqscope/floor are ratios of times: below 1 favours pqscope.\n";

  md << "\n## One client, batched (`batch = true`, 1 round trip): median µs per transaction\n\n";
  md << "Same run, same cells: the batched implementations were interleaved with the ones above.\n\n";
  md << "| via | shape | RT batched | RT floor1 | RT libpqxx | batched µs | floor1 µs | libpqxx µs | pqscope µs "
        "(unbatched) | batched/floor1 | speedup over libpqxx (libpqxx/batched) | client CPU µs batched · floor1 |\n";
  md << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  for (const cell& c : cells) {
    md << "| " << c.via << " | " << c.shape_name;
    for (int impl : {batched_impl, floor1_impl, pqxx_impl}) md << " | " << rt_text(c, impl);
    for (int impl : {batched_impl, floor1_impl, pqxx_impl, pqscope_impl}) md << " | " << cell_us(c, impl);
    md << " | " << cell_ratio(c, batched_impl, floor1_impl) << " | " << cell_ratio(c, pqxx_impl, batched_impl);
    md << " | " << cell_cpu(c, batched_impl) << " · " << cell_cpu(c, floor1_impl) << " |\n";
  }
  md << "\nbatched/floor1 is a ratio of times (1.00: no cost over the physical limit); the speedup is libpqxx's "
        "time over batched pqscope's (above 1 favours pqscope).\n";

  md << "\n## Contended transfer: " << o.threads << " clients, transactions per second\n\n";
  md << "| via | pqscope tx/s | naive tx/s | floor tx/s | libpqxx tx/s | batched tx/s | floor1 tx/s | "
        "pqscope/libpqxx | pqscope/floor | batched/libpqxx | floor1/libpqxx | batched/floor1 | "
        "median µs pqscope · naive · floor · libpqxx · batched · floor1 |\n";
  md << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n";
  auto tps_ratio = [](const contended& c, int a, int b) {
    return c.present[a] && c.present[b] ? ratio(c.tps[a], c.tps[b]) : std::string("n/a");
  };
  for (const contended& c : conts) {
    md << "| " << c.via;
    for (int impl = 0; impl < impl_count; ++impl) md << " | " << (c.present[impl] ? fmt(c.tps[impl]) : "n/a");
    md << " | " << tps_ratio(c, pqscope_impl, pqxx_impl) << " | " << tps_ratio(c, pqscope_impl, floor_impl)
       << " | " << tps_ratio(c, batched_impl, pqxx_impl) << " | " << tps_ratio(c, floor1_impl, pqxx_impl)
       << " | " << tps_ratio(c, batched_impl, floor1_impl) << " | ";
    for (int impl = 0; impl < impl_count; ++impl)
      md << (impl ? " · " : "") << (c.present[impl] ? fmt(c.median_us[impl]) : "n/a");
    md << " |\n";
  }
  md << "\nThe contended ratios are of throughput: above 1 favours the first named.\n";
  {
    const int fails = failures();
    md << "\n" << (fails == 0 ? "All checks passed." : std::to_string(fails) + " check(s) FAILED.") << "\n";
  }

  std::cout << "\n" << md.str();
  std::ofstream(o.out + "/bench.md") << md.str();

  // ---- csv ----
  std::ofstream csv(o.out + "/bench.csv");
  csv << "kind,via,shape,depth,statements,impl,round_trips_per_tx,median_us,p10_us,p90_us,client_cpu_us,tx_per_s,"
         "errors\n";
  for (const cell& c : cells)
    for (int impl = 0; impl < impl_count; ++impl) {
      if (!c.present[impl]) continue;
      csv << "single," << c.via << ",\"" << c.shape_name << "\"," << c.depth << "," << c.statements << ","
          << impl_names[impl] << "," << c.round_trips[impl] << "," << fmt(c.median_us[impl], 1) << ","
          << fmt(c.p10_us[impl], 1) << "," << fmt(c.p90_us[impl], 1) << "," << fmt(c.cpu_us[impl], 1) << ",,0\n";
    }
  for (const contended& c : conts)
    for (int impl = 0; impl < impl_count; ++impl) {
      if (!c.present[impl]) continue;
      csv << "contended," << c.via << ",transfer,0,2," << impl_names[impl] << ",," << fmt(c.median_us[impl], 1)
          << ",,,," << fmt(c.tps[impl], 1) << "," << c.errors[impl] << "\n";
    }

  // ---- data for plot.gp: PgBouncer (else the only target), selected cells ----
  const std::string plot_via = o.pgbouncer.conninfo.empty() ? "direct" : "PgBouncer";
  std::ofstream dat(o.out + "/plot.dat");
  dat << "# shape pqscope naive floor libpqxx pqscope_batched floor1 (median us per transaction, via " << plot_via
      << ")\n";
  const std::vector<std::pair<int, int>> picked = {{1, 1}, {3, 3}, {5, 1}, {10, 1}, {10, 10}, {0, 2}};
  for (auto [d, n] : picked)
    for (const cell& c : cells)
      if (c.via == plot_via && c.depth == d && c.statements == n) {
        dat << "\"" << (d == 0 ? std::string("transfer") : "d" + std::to_string(d) + " n" + std::to_string(n)) << "\"";
        for (int impl = 0; impl < impl_count; ++impl) dat << " " << (c.present[impl] ? fmt(c.median_us[impl], 1) : "NaN");
        dat << "\n";
      }
  std::ofstream cdat(o.out + "/contended.dat");
  cdat << "# via pqscope naive floor libpqxx pqscope_batched floor1 (transactions per second, " << o.threads
       << " clients)\n";
  for (const contended& c : conts) {
    cdat << "\"" << c.via << "\"";
    for (int impl = 0; impl < impl_count; ++impl) cdat << " " << (c.present[impl] ? fmt(c.tps[impl], 1) : "NaN");
    cdat << "\n";
  }

  return failures() == 0 ? 0 : 1;
}

}  // namespace
}  // namespace bench

int main(int argc, char** argv) {
  try {
    return bench::run(argc, argv);
  } catch (const std::exception& e) {
    std::cout << "FAIL " << e.what() << std::endl;
    return 1;
  }
}
