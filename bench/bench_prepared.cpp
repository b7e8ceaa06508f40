// pqscope_bench_prepared: what prepared statements are worth, and whether pqscope
// gets it, directly and through PgBouncer 1.24 (transaction pooling, which tracks
// protocol-level prepared statements).
//
//   pqscope_bench_prepared [--direct CONNINFO] [--pgbouncer124 CONNINFO] [--out DIR]
//                          [--seconds S] [--rounds R] [--clients 1,16]
//                          [--only transfer|join|tpcb] [--pgbench PATH]
//
// Shapes and implementations:
//   transfer   two UPDATEs of random accounts (of 10,000; lower id first, so no
//              deadlock) in one transaction
//     floor_unnamed             raw libpq, pipeline mode: BEGIN, both UPDATEs by
//                               PQsendQueryParams (unnamed), COMMIT, one PQpipelineSync
//     floor_prepared            the same, the UPDATE prepared once per connection
//                               (PQprepare), then PQsendQueryPrepared
//     pqscope_batched           atomic() with batch = true, prepare::never
//     pqscope_batched_prepared  atomic() with batch = true, prepare::automatic
//     libpqxx_prepared          pqxx::work, exec_prepared of a statement prepared once
//   join       one autocommit query whose planning costs more than its execution: a
//              6-table join with GROUP BY for one random customer (10 orders)
//     floor_unnamed / floor_prepared   raw libpq, one query and one sync
//     pqscope / pqscope_prepared       connection::execute outside any scope,
//                                      prepare::never / prepare::automatic
//     libpqxx_prepared                 pqxx::nontransaction + exec_prepared
//   tpcb       pgbench's TPC-B-like transaction (scale 16), its five statements in one
//              pipeline
//     pgbench_prepared / pgbench_extended   pgbench itself, -M prepared / -M extended,
//                                           a script with \startpipeline .. \endpipeline
//     pqscope_batched / pqscope_batched_prepared   the five statements in a batched
//                                           atomic(); the SELECT's result read after it
//     floor_prepared                        raw libpq, the five statements prepared once,
//                                           BEGIN .. COMMIT in one sync
//
// pqscope is asked for prepared statements the way each route allows: directly
// pooling::none; through PgBouncer pooling::transaction with
// pooler_max_prepared_statements = 200 (PgBouncer 1.24's max_prepared_statements).
//
// For each route, shape and client count the implementations take turns in slices
// of S seconds, R rounds; each slice runs `clients` threads, each on its own
// connection opened and warmed up (so statements are prepared) before the first
// slice, running transactions back to back. tx/s = transactions / wall seconds of
// the slice; reported: the median over the rounds, min and max.
//
// Checked (a failure prints "FAIL ..." and makes the exit code nonzero): every
// transaction succeeds; every join reads rows whose order counts add up to 10;
// pqscope's stats() per slice: one round trip per transaction, batched: one batched
// attempt per transaction and no replay; prepare::automatic: statements were
// prepared, and none again during a slice (warm-up prepared them); prepare::never:
// none; pgbench: exit status 0, no failed transaction. After each part: transfers
// kept the total balance, and the pgbench tables' balances agree with each other
// and with pgbench_history (every transaction whole).

#include <sched.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/pqscope.hpp>

#include "report.hpp"

#ifdef PQSCOPE_BENCH_HAVE_PQXX
#include <pqxx/pqxx>
#endif

namespace {

using namespace bench;  // report.hpp: the machine, the numbers, failures, libpq and timing helpers
using clock_type = std::chrono::steady_clock;

const char* const app_name = "pqscope_bench_prepared";

// ---- raw libpq helpers ----------------------------------------------------------

void check(PGconn* c, PGresult* r, const std::string& what) {
  const auto st = PQresultStatus(r);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    PQclear(r);
    return;
  }
  std::string msg = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(c);
  PQclear(r);
  throw std::runtime_error(what.substr(0, 80) + ": " + msg);
}

void exec_raw(PGconn* c, const std::string& sql) { check(c, PQexec(c, sql.c_str()), sql); }

struct int_text {
  char buf[16] = {};
  int_text() = default;
  explicit int_text(long v) { *std::to_chars(buf, buf + sizeof buf - 1, v).ptr = '\0'; }
};

// ---- the shapes -------------------------------------------------------------------

enum class shape { transfer, join, tpcb };
const char* shape_name(shape s) {
  switch (s) {
    case shape::transfer: return "transfer";
    case shape::join: return "join";
    default: return "tpcb";
  }
}

constexpr int account_count = 10000;
constexpr long initial_balance = 1000000;
const char* const transfer_sql = "UPDATE bp_accounts SET balance = balance + $1 WHERE id = $2";

constexpr int customer_count = 10000;
constexpr int orders_per_customer = 10;
const char* const join_sql =
    "SELECT r.name AS region, g.name AS category, count(*) AS orders, sum(o.qty) AS qty, "
    "sum(o.qty * p.price) AS amount, max(s.name) AS supplier "
    "FROM bp_orders o "
    "JOIN bp_customers cu ON cu.id = o.customer_id "
    "JOIN bp_regions r ON r.id = cu.region_id "
    "JOIN bp_products p ON p.id = o.product_id "
    "JOIN bp_categories g ON g.id = p.category_id "
    "JOIN bp_suppliers s ON s.id = p.supplier_id "
    "WHERE o.customer_id = $1 "
    "GROUP BY r.name, g.name "
    "ORDER BY amount DESC";
constexpr int join_orders_column = 2;

// Every customer has exactly orders_per_customer orders, so each run's order counts
// add up to that: proof that the rows were read.
const char* const join_schema =
    "DROP TABLE IF EXISTS bp_orders, bp_customers, bp_products, bp_suppliers, bp_categories, bp_regions;"
    "CREATE TABLE bp_regions (id int PRIMARY KEY, name text NOT NULL);"
    "CREATE TABLE bp_categories (id int PRIMARY KEY, name text NOT NULL);"
    "CREATE TABLE bp_suppliers (id int PRIMARY KEY, region_id int NOT NULL, name text NOT NULL);"
    "CREATE TABLE bp_products (id int PRIMARY KEY, category_id int NOT NULL, supplier_id int NOT NULL,"
    "  price numeric(10,2) NOT NULL);"
    "CREATE TABLE bp_customers (id int PRIMARY KEY, region_id int NOT NULL, name text NOT NULL);"
    "CREATE TABLE bp_orders (id int PRIMARY KEY, customer_id int NOT NULL, product_id int NOT NULL,"
    "  qty int NOT NULL, ordered_at timestamptz NOT NULL);"
    "INSERT INTO bp_regions SELECT g, 'region ' || g FROM generate_series(1, 10) g;"
    "INSERT INTO bp_categories SELECT g, 'category ' || g FROM generate_series(1, 20) g;"
    "INSERT INTO bp_suppliers SELECT g, 1 + g % 10, 'supplier ' || g FROM generate_series(1, 50) g;"
    "INSERT INTO bp_products SELECT g, 1 + g % 20, 1 + (g * 7) % 50, (g % 97) + 0.99 FROM generate_series(1, 1000) g;"
    "INSERT INTO bp_customers SELECT g, 1 + g % 10, 'customer ' || g FROM generate_series(1, 10000) g;"
    "INSERT INTO bp_orders SELECT g, 1 + g % 10000, 1 + (g * 7919) % 1000, 1 + g % 5,"
    "  timestamptz '2024-01-01' + g * interval '1 minute' FROM generate_series(1, 100000) g;"
    "CREATE INDEX ON bp_orders (customer_id);"
    "CREATE INDEX ON bp_orders (product_id);"
    "CREATE INDEX ON bp_products (category_id);"
    "CREATE INDEX ON bp_products (supplier_id);"
    "CREATE INDEX ON bp_customers (region_id);"
    "CREATE INDEX ON bp_suppliers (region_id);"
    "ANALYZE bp_regions, bp_categories, bp_suppliers, bp_products, bp_customers, bp_orders;";

constexpr int tpcb_scale = 16;
const char* const tpcb_sql[5] = {
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP)",
};
const char* const tpcb_script =
    "\\set aid random(1, 100000 * :scale)\n"
    "\\set bid random(1, 1 * :scale)\n"
    "\\set tid random(1, 10 * :scale)\n"
    "\\set delta random(-5000, 5000)\n"
    "\\startpipeline\n"
    "BEGIN;\n"
    "UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n"
    "SELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
    "UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;\n"
    "UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;\n"
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);\n"
    "END;\n"
    "\\endpipeline\n";

// The random inputs of one transaction, drawn the same way for every implementation.
struct picker {
  std::mt19937 rng;
  explicit picker(unsigned seed) : rng(seed) {}
  int uniform(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }

  struct transfer_args {
    int first, second, amount;
  };
  transfer_args transfer() {
    int a = uniform(1, account_count), b = uniform(1, account_count);
    while (b == a) b = uniform(1, account_count);
    return {std::min(a, b), std::max(a, b), uniform(1, 100)};
  }
  int customer() { return uniform(1, customer_count); }
  struct tpcb_args {
    int aid, bid, tid, delta;
  };
  tpcb_args tpcb() {
    // pgbench's order of \set lines, not that it matters.
    const int aid = uniform(1, 100000 * tpcb_scale);
    const int bid = uniform(1, tpcb_scale);
    const int tid = uniform(1, 10 * tpcb_scale);
    return {aid, bid, tid, uniform(-5000, 5000)};
  }
};

void check_join_orders(long orders, const char* impl) {
  if (orders != orders_per_customer)
    throw std::runtime_error(std::string(impl) + " join: order counts add up to " + std::to_string(orders) +
                             ", expected " + std::to_string(orders_per_customer));
}

// ---- implementations ----------------------------------------------------------------

// One connection of one implementation, run by one thread during a slice.
class worker {
 public:
  worker() = default;
  worker(const worker&) = delete;
  worker& operator=(const worker&) = delete;
  virtual ~worker() = default;
  virtual void run(picker& p) = 0;  // one transaction (or one autocommit query); throws on failure
  virtual void begin_slice() {}
  // After the slice, from the main thread: `done` transactions succeeded.
  virtual void end_slice(long /*done*/, const std::string& /*where*/) {}
};

// Raw libpq in pipeline mode for the whole session, prepared statements made before
// it (PQprepare cannot run in pipeline mode).
class floor_worker final : public worker {
 public:
  floor_worker(const std::string& conninfo, shape s, bool prepared) : s_(s), prepared_(prepared) {
    c_ = connect_raw_quiet(conninfo);
    try {
      if (prepared_) {
        switch (s_) {
          case shape::transfer: prepare("bp_transfer", transfer_sql); break;
          case shape::join: prepare("bp_join", join_sql); break;
          case shape::tpcb:
            for (int i = 0; i < 5; ++i) prepare(tpcb_names[i], tpcb_sql[i]);
            break;
        }
      }
      if (PQenterPipelineMode(c_) != 1) throw std::runtime_error("PQenterPipelineMode failed");
    } catch (...) {
      PQfinish(c_);
      throw;
    }
  }
  ~floor_worker() override { PQfinish(c_); }

  void run(picker& p) override {
    switch (s_) {
      case shape::transfer: {
        const auto t = p.transfer();
        int_text d1(-t.amount), i1(t.first), d2(t.amount), i2(t.second);
        const char* v1[] = {d1.buf, i1.buf};
        const char* v2[] = {d2.buf, i2.buf};
        send("BEGIN");
        statement("bp_transfer", transfer_sql, 2, v1);
        statement("bp_transfer", transfer_sql, 2, v2);
        send("COMMIT");
        sync(4, -1);
        break;
      }
      case shape::join: {
        int_text cust(p.customer());
        const char* v[] = {cust.buf};
        statement("bp_join", join_sql, 1, v);
        check_join_orders(sync(1, join_orders_column), "floor");
        break;
      }
      case shape::tpcb: {
        const auto t = p.tpcb();
        int_text aid(t.aid), bid(t.bid), tid(t.tid), delta(t.delta);
        const char* acc[] = {delta.buf, aid.buf};
        const char* sel[] = {aid.buf};
        const char* tel[] = {delta.buf, tid.buf};
        const char* br[] = {delta.buf, bid.buf};
        const char* hist[] = {tid.buf, bid.buf, aid.buf, delta.buf};
        send("BEGIN");
        statement(tpcb_names[0], tpcb_sql[0], 2, acc);
        statement(tpcb_names[1], tpcb_sql[1], 1, sel);
        statement(tpcb_names[2], tpcb_sql[2], 2, tel);
        statement(tpcb_names[3], tpcb_sql[3], 2, br);
        statement(tpcb_names[4], tpcb_sql[4], 4, hist);
        send("COMMIT");
        sync(7, 0);  // reads the SELECT's abalance
        break;
      }
    }
  }

 private:
  static constexpr const char* tpcb_names[5] = {"bp_acc", "bp_sel", "bp_tel", "bp_br", "bp_hist"};

  void prepare(const char* name, const char* sql) { check(c_, PQprepare(c_, name, sql, 0, nullptr), name); }
  void send(const char* sql, int n = 0, const char* const* vals = nullptr) {
    if (PQsendQueryParams(c_, sql, n, nullptr, vals, nullptr, nullptr, 0) != 1)
      throw std::runtime_error(std::string("PQsendQueryParams: ") + PQerrorMessage(c_));
  }
  void statement(const char* name, const char* sql, int n, const char* const* vals) {
    if (!prepared_) return send(sql, n, vals);
    if (PQsendQueryPrepared(c_, name, n, vals, nullptr, nullptr, 0) != 1)
      throw std::runtime_error(std::string("PQsendQueryPrepared: ") + PQerrorMessage(c_));
  }
  // Ends the batch and reads its `count` answers and the sync: one round trip. Returns
  // the sum of column `col` over every row returned (col < 0: nothing read).
  long sync(int count, int col) {
    if (PQpipelineSync(c_) != 1) throw std::runtime_error(std::string("PQpipelineSync: ") + PQerrorMessage(c_));
    std::string error;
    long sum = 0;
    for (int i = 0; i < count; ++i) {
      PGresult* r = PQgetResult(c_);
      if (r == nullptr) throw std::runtime_error(std::string("lost: ") + PQerrorMessage(c_));
      const auto st = PQresultStatus(r);
      if (st == PGRES_TUPLES_OK && col >= 0 && col < PQnfields(r))
        for (int row = 0; row < PQntuples(r); ++row) sum += std::atol(PQgetvalue(r, row, col));
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && error.empty())
        error = st == PGRES_PIPELINE_ABORTED ? "aborted" : PQresultErrorMessage(r);
      PQclear(r);
      if (PGresult* extra = PQgetResult(c_)) {  // the nullptr that ends each answer
        PQclear(extra);
        throw std::runtime_error("unexpected extra result");
      }
    }
    PGresult* s = PQgetResult(c_);
    const bool ok = s != nullptr && PQresultStatus(s) == PGRES_PIPELINE_SYNC;
    PQclear(s);
    if (!ok) throw std::runtime_error(std::string("no sync: ") + PQerrorMessage(c_));
    if (!error.empty()) {
      if (PQtransactionStatus(c_) != PQTRANS_IDLE) {
        send("ROLLBACK");
        sync(1, -1);
      }
      throw std::runtime_error("floor: " + error);
    }
    return sum;
  }

  PGconn* c_ = nullptr;
  shape s_;
  bool prepared_;
};

class pqscope_worker final : public worker {
 public:
  pqscope_worker(const std::string& conninfo, bool pooled, shape s, bool prepared, std::string name)
      : c_(conninfo, options_for(pooled, prepared)), s_(s), prepared_(prepared), name_(std::move(name)) {
    batch_.batch = true;
  }

  void run(picker& p) override {
    switch (s_) {
      case shape::transfer: {
        const auto t = p.transfer();
        pqscope::atomic(c_, batch_, [&](pqscope::connection& c) {
          c.execute(transfer_sql, -t.amount, t.first);
          c.execute(transfer_sql, t.amount, t.second);
        });
        break;
      }
      case shape::join: {
        const pqscope::result r = c_.execute(join_sql, p.customer());
        long orders = 0;
        for (std::size_t i = 0; i < r.size(); ++i) orders += r[i][join_orders_column].as<long>();
        check_join_orders(orders, name_.c_str());
        break;
      }
      case shape::tpcb: {
        const auto t = p.tpcb();
        pqscope::result balance;
        pqscope::atomic(c_, batch_, [&](pqscope::connection& c) {
          c.execute(tpcb_sql[0], t.delta, t.aid);
          balance = c.execute(tpcb_sql[1], t.aid);
          c.execute(tpcb_sql[2], t.delta, t.tid);
          c.execute(tpcb_sql[3], t.delta, t.bid);
          c.execute(tpcb_sql[4], t.tid, t.bid, t.aid, t.delta);
        });
        // Filled by the batch that carried COMMIT.
        if (balance.size() != 1) throw std::runtime_error(name_ + " tpcb: the SELECT returned no row");
        sink_ += balance[0][0].as<long>();
        break;
      }
    }
  }

  void begin_slice() override { before_ = c_.stats(); }

  void end_slice(long done, const std::string& where) override {
    const pqscope::connection_stats& now = c_.stats();
    const auto n = static_cast<std::uint64_t>(done);
    const auto rt = now.round_trips - before_.round_trips;
    if (rt != n)
      fail(name_ + " " + where + ": " + std::to_string(rt) + " round trips for " + std::to_string(done) +
           " transactions, expected one each");
    if (s_ != shape::join) {
      const auto attempts = now.batched_attempts - before_.batched_attempts;
      const auto replays = now.replays - before_.replays;
      if (attempts != n || replays != 0)
        fail(name_ + " " + where + ": " + std::to_string(attempts) + " batched attempts and " +
             std::to_string(replays) + " replays for " + std::to_string(done) + " transactions");
    }
    if (prepared_ && now.prepared == 0) fail(name_ + " " + where + ": prepare::automatic prepared nothing");
    if (!prepared_ && now.prepared != 0)
      fail(name_ + " " + where + ": prepare::never prepared " + std::to_string(now.prepared) + " statement(s)");
    if (now.prepared != before_.prepared)
      fail(name_ + " " + where + ": " + std::to_string(now.prepared - before_.prepared) +
           " statement(s) prepared during the slice, after warm-up had prepared them");
  }

 private:
  static pqscope::connection_options options_for(bool pooled, bool prepared) {
    pqscope::connection_options o;
    o.prepare = prepared ? pqscope::prepare::automatic : pqscope::prepare::never;
    if (!pooled)
      o.pooling = pqscope::pooling::none;
    else if (prepared)
      o.pooler_max_prepared_statements = 200;  // PgBouncer 1.24's max_prepared_statements
    return o;
  }

  pqscope::connection c_;
  shape s_;
  bool prepared_;
  std::string name_;
  pqscope::transaction_options batch_;
  pqscope::connection_stats before_;
  long sink_ = 0;
};

#ifdef PQSCOPE_BENCH_HAVE_PQXX
class pqxx_worker final : public worker {
 public:
  pqxx_worker(const std::string& conninfo, shape s) : c_(conninfo), s_(s) {
    if (s_ == shape::transfer) c_.prepare("bp_transfer", transfer_sql);
    if (s_ == shape::join) c_.prepare("bp_join", join_sql);
    if (s_ == shape::tpcb) throw std::runtime_error("libpqxx does not run the tpcb shape");
  }

  void run(picker& p) override {
    if (s_ == shape::transfer) {
      const auto t = p.transfer();
      pqxx::work tx(c_);
      tx.exec_prepared("bp_transfer", -t.amount, t.first);
      tx.exec_prepared("bp_transfer", t.amount, t.second);
      tx.commit();
    } else {
      pqxx::nontransaction tx(c_);
      const pqxx::result r = tx.exec_prepared("bp_join", p.customer());
      long orders = 0;
      for (const auto& row : r) orders += row[join_orders_column].as<long>();
      check_join_orders(orders, "libpqxx");
    }
  }

 private:
  pqxx::connection c_;
  shape s_;
};
#endif

// ---- options and routes ---------------------------------------------------------------

struct route {
  std::string name;  // "direct" / "PgBouncer 1.24"
  std::string conninfo;
  bool pooled = false;
};

struct options {
  std::string direct, pgbouncer124;
  std::string out = "bench/results";
  double seconds = 3.0;
  int rounds = 3;
  std::vector<int> clients = {1, 16};
  std::vector<std::string> only;
  std::string pgbench = "pgbench";
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char ch : s) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

// Runs a command through the shell; returns its exit status (-1: not run) and output.
int run_command(const std::string& cmd, std::string& output) {
  output.clear();
  std::FILE* f = popen((cmd + " 2>&1").c_str(), "r");
  if (f == nullptr) return -1;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, f) != nullptr) output += buf;
  const int st = pclose(f);
  return st == -1 ? -1 : (WIFEXITED(st) ? WEXITSTATUS(st) : 128);
}

// ---- the measurement -----------------------------------------------------------------

struct impl {
  std::string name;
  // In-process implementations: makes one connection's worker.
  std::function<std::unique_ptr<worker>(const route&)> make;
  std::string pgbench_mode;  // pgbench instead: "prepared" or "extended"
};

struct measurement {
  std::string route_name;
  shape s = shape::transfer;
  int clients = 0;
  std::vector<std::string> names;
  std::vector<std::vector<double>> tps;  // per implementation, per round
  std::vector<double> cpu_us;            // client CPU per transaction (NaN: pgbench)
  std::vector<long> errors;
};

constexpr int warmup_transactions = 5;

struct slice_result {
  long done = 0, errors = 0;
  double seconds = 0, cpu_us = 0;
};

// `ws.size()` threads, one per worker, for `seconds`.
slice_result run_slice(std::vector<std::unique_ptr<worker>>& ws, double seconds, const std::string& where,
                       unsigned seed) {
  const std::size_t n = ws.size();
  for (auto& w : ws) w->begin_slice();
  std::atomic<bool> go{false};
  clock_type::time_point deadline;
  std::vector<long> counts(n, 0), errors(n, 0);
  std::vector<double> cpu(n, 0);
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < n; ++i) {
    ts.emplace_back([&, i] {
      picker p(seed + static_cast<unsigned>(i) * 7919u);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      const double c0 = thread_cpu_us();
      while (clock_type::now() < deadline) {
        try {
          ws[i]->run(p);
          ++counts[i];
        } catch (const std::exception& e) {
          if (++errors[i] == 1) fail(where + ": " + e.what());
        }
      }
      cpu[i] = thread_cpu_us() - c0;
    });
  }
  const auto start = clock_type::now();
  deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
  go.store(true, std::memory_order_release);
  for (auto& t : ts) t.join();
  slice_result out;
  out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  for (std::size_t i = 0; i < n; ++i) {
    out.done += counts[i];
    out.errors += errors[i];
    out.cpu_us += cpu[i];
    ws[i]->end_slice(counts[i], where);
  }
  return out;
}

// pgbench -T takes whole seconds.
int pgbench_seconds(double s) { return std::max(1, static_cast<int>(std::lround(s))); }

// One pgbench run; returns its tps (without initial connection time), or NaN.
double run_pgbench(const options& o, const route& r, const std::string& mode, int clients,
                   const std::string& script, const std::string& where) {
  const std::string cmd = shell_quote(o.pgbench) + " -n -M " + mode + " -c " + std::to_string(clients) + " -j " +
                          std::to_string(clients) + " -T " + std::to_string(pgbench_seconds(o.seconds)) + " -s " +
                          std::to_string(tpcb_scale) + " -f " + shell_quote(script) + " " + shell_quote(r.conninfo);
  std::string out;
  const int st = run_command(cmd, out);
  double tps = NAN;
  long failed = 0;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("tps = ", 0) == 0 && line.find("without initial connection time") != std::string::npos)
      tps = std::atof(line.c_str() + 6);
    if (line.rfind("number of failed transactions: ", 0) == 0) failed = std::atol(line.c_str() + 31);
  }
  if (st != 0 || std::isnan(tps) || failed != 0) {
    fail(where + ": pgbench exit status " + std::to_string(st) + ", " + std::to_string(failed) +
         " failed transactions; its output:\n" + out);
    return std::isnan(tps) ? 0 : tps;
  }
  return tps;
}

measurement measure(const options& o, const route& r, shape s, int clients, const std::vector<impl>& impls,
                    const std::string& script) {
  measurement m;
  m.route_name = r.name;
  m.s = s;
  m.clients = clients;
  const std::size_t k = impls.size();
  m.tps.assign(k, {});
  m.cpu_us.assign(k, NAN);
  m.errors.assign(k, 0);
  std::vector<double> cpu_total(k, 0), done_total(k, 0);

  // Every connection opened and warmed up before the first slice; they stay open
  // between slices (idle ones cost the server nothing).
  std::vector<std::vector<std::unique_ptr<worker>>> workers(k);
  for (std::size_t i = 0; i < k; ++i) {
    m.names.push_back(impls[i].name);
    if (!impls[i].make) continue;
    for (int c = 0; c < clients; ++c) {
      workers[i].push_back(impls[i].make(r));
      picker p(4242u + static_cast<unsigned>(c));
      for (int w = 0; w < warmup_transactions; ++w) workers[i].back()->run(p);
    }
  }

  const std::string label = r.name + " " + shape_name(s) + " " + std::to_string(clients) + " client(s)";
  for (int round = 0; round < o.rounds; ++round) {
    std::cout << label << ", round " << round + 1 << ":";
    for (std::size_t i = 0; i < k; ++i) {
      const std::string where = impls[i].name + " " + label + " round " + std::to_string(round + 1);
      double tps = 0;
      if (!impls[i].pgbench_mode.empty()) {
        tps = run_pgbench(o, r, impls[i].pgbench_mode, clients, script, where);
      } else {
        const slice_result sr =
            run_slice(workers[i], o.seconds, where, 1000u * static_cast<unsigned>(round + 1) + 17u * static_cast<unsigned>(i));
        tps = static_cast<double>(sr.done) / sr.seconds;
        cpu_total[i] += sr.cpu_us;
        done_total[i] += static_cast<double>(sr.done);
        m.errors[i] += sr.errors;
      }
      m.tps[i].push_back(tps);
      std::cout << " " << impls[i].name << " " << std::fixed << std::setprecision(0) << tps << std::flush;
    }
    std::cout << std::endl;
  }
  for (std::size_t i = 0; i < k; ++i)
    if (done_total[i] > 0) m.cpu_us[i] = cpu_total[i] / done_total[i];
  return m;
}

// ---- set-up and checks of each part ------------------------------------------------------

void setup_transfer(PGconn* admin) {
  exec_raw(admin, "DROP TABLE IF EXISTS bp_accounts");
  exec_raw(admin, "CREATE TABLE bp_accounts (id int PRIMARY KEY, balance bigint NOT NULL)");
  exec_raw(admin, "INSERT INTO bp_accounts SELECT g, " + std::to_string(initial_balance) + " FROM generate_series(1, " +
                      std::to_string(account_count) + ") g");
  exec_raw(admin, "ANALYZE bp_accounts");
}

void finish_transfer(PGconn* admin) {
  const long total = std::atol(query_text(admin, "SELECT sum(balance) FROM bp_accounts").c_str());
  if (total != account_count * initial_balance)
    fail("bp_accounts: the balances add up to " + std::to_string(total) + ", expected " +
         std::to_string(account_count * initial_balance));
  exec_raw(admin, "DROP TABLE IF EXISTS bp_accounts");
}

void setup_join(PGconn* admin) { exec_raw(admin, join_schema); }

void finish_join(PGconn* admin) {
  exec_raw(admin, "DROP TABLE IF EXISTS bp_orders, bp_customers, bp_products, bp_suppliers, bp_categories, bp_regions");
}

// pgbench -i once; kept between runs (it takes a while), checked by its branch count.
void setup_tpcb(PGconn* admin, const options& o, const std::string& conninfo) {
  if (!query_text(admin, "SELECT to_regclass('pgbench_branches')").empty() &&
      query_text(admin, "SELECT count(*) FROM pgbench_branches") == std::to_string(tpcb_scale)) {
    std::cout << "pgbench tables at scale " << tpcb_scale << " already there" << std::endl;
    return;
  }
  std::cout << "pgbench -i -s " << tpcb_scale << " ..." << std::endl;
  std::string out;
  const int st = run_command(shell_quote(o.pgbench) + " -i -s " + std::to_string(tpcb_scale) + " -q " +
                                 shell_quote(conninfo),
                             out);
  if (st != 0) throw std::runtime_error("pgbench -i failed (status " + std::to_string(st) + "):\n" + out);
}

// Every TPC-B transaction adds its delta to one account, teller and branch and one
// history row: the four sums agree unless some transaction was cut short.
void finish_tpcb(PGconn* admin) {
  const std::string sums = query_text(
      admin,
      "SELECT concat_ws(' ', (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM "
      "pgbench_tellers), (SELECT sum(bbalance) FROM pgbench_branches), (SELECT coalesce(sum(delta), 0) FROM "
      "pgbench_history))");
  std::istringstream in(sums);
  long a = 0, t = 0, b = 0, h = 0;
  in >> a >> t >> b >> h;
  if (!in || a != t || a != b || a != h)
    fail("pgbench tables: balance sums (accounts, tellers, branches, history) " + sums + " do not agree");
}

// ---- report ---------------------------------------------------------------------------

std::string pqxx_version() {
#ifdef PQSCOPE_BENCH_HAVE_PQXX
#ifdef PQSCOPE_BENCH_PQXX_PKG_VERSION
  return std::string(PQSCOPE_BENCH_PQXX_PKG_VERSION) + " (headers say " PQXX_VERSION ")";
#else
  return PQXX_VERSION;
#endif
#else
  return "not built (its rows are skipped)";
#endif
}

// The implementations each shape's ratios are taken against, and the target ratio.
std::vector<std::string> references(shape s) {
  if (s == shape::tpcb) return {"pgbench_prepared", "floor_prepared"};
  return {"floor_unnamed", "floor_prepared"};
}
std::string target_impl(shape s) { return s == shape::join ? "pqscope_prepared" : "pqscope_batched_prepared"; }
std::vector<std::string> target_refs(shape s) {
  if (s == shape::tpcb) return {"pgbench_prepared"};
  return {"floor_unnamed", "floor_prepared"};
}

double median_of(const measurement& m, const std::string& name) {
  for (std::size_t i = 0; i < m.names.size(); ++i)
    if (m.names[i] == name) return median(m.tps[i]);
  return NAN;
}

void usage() {
  std::cerr << "usage: pqscope_bench_prepared [--direct CONNINFO] [--pgbouncer124 CONNINFO] [--out DIR]\n"
               "                              [--seconds S] [--rounds R] [--clients 1,16]\n"
               "                              [--only transfer|join|tpcb] [--pgbench PATH]\n";
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string part; std::getline(in, part, ',');)
    if (!part.empty()) out.push_back(part);
  return out;
}

int run(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        usage();
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--direct") o.direct = value();
    else if (a == "--pgbouncer124") o.pgbouncer124 = value();
    else if (a == "--out") o.out = value();
    else if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--rounds") o.rounds = std::stoi(value());
    else if (a == "--clients") {
      o.clients.clear();
      for (const std::string& c : split(value())) o.clients.push_back(std::stoi(c));
    } else if (a == "--only") o.only = split(value());
    else if (a == "--pgbench") o.pgbench = value();
    else {
      usage();
      return 2;
    }
  }
  for (const std::string& p : o.only)
    if (p != "transfer" && p != "join" && p != "tpcb") {
      usage();
      return 2;
    }
  if ((o.direct.empty() && o.pgbouncer124.empty()) || o.seconds <= 0 || o.rounds < 1 || o.clients.empty()) {
    usage();
    return 2;
  }
  auto wanted = [&](const char* part) { return o.only.empty() || std::find(o.only.begin(), o.only.end(), part) != o.only.end(); };

  std::vector<route> routes;
  if (!o.direct.empty()) routes.push_back({"direct", with_app_name(o.direct, app_name), false});
  if (!o.pgbouncer124.empty()) routes.push_back({"PgBouncer 1.24", with_app_name(o.pgbouncer124, app_name), true});
  // Set-up and checks go directly to the server when it is given.
  const std::string admin_conninfo = routes.front().conninfo;
  PGconn* admin = connect_raw_quiet(admin_conninfo);
  const std::string load_before = load_average();
  const std::string pg_version = query_text(admin, "SHOW server_version");
  std::string pgbench_version;
  if (wanted("tpcb")) {
    if (run_command(shell_quote(o.pgbench) + " --version", pgbench_version) != 0)
      throw std::runtime_error("cannot run " + o.pgbench + ": " + pgbench_version);
    while (!pgbench_version.empty() && pgbench_version.back() == '\n') pgbench_version.pop_back();
  }
  const bool have_pqxx =
#ifdef PQSCOPE_BENCH_HAVE_PQXX
      true;
#else
      false;
#endif
  std::cout << "PostgreSQL " << pg_version << ", libpq " << PQlibVersion() << ", libpqxx " << pqxx_version()
            << (pgbench_version.empty() ? "" : ", " + pgbench_version) << std::endl;

  auto floor_impl = [](const char* name, shape s, bool prepared) {
    return impl{name, [s, prepared](const route& r) -> std::unique_ptr<worker> {
                  return std::make_unique<floor_worker>(r.conninfo, s, prepared);
                }, ""};
  };
  auto pqscope_impl = [](const char* name, shape s, bool prepared) {
    return impl{name, [s, prepared, name](const route& r) -> std::unique_ptr<worker> {
                  return std::make_unique<pqscope_worker>(r.conninfo, r.pooled, s, prepared, name);
                }, ""};
  };
  auto pqxx_impl = [](shape s) {
    return impl{"libpqxx_prepared", [s](const route& r) -> std::unique_ptr<worker> {
#ifdef PQSCOPE_BENCH_HAVE_PQXX
                  return std::make_unique<pqxx_worker>(r.conninfo, s);
#else
                  (void)r;
                  (void)s;
                  return nullptr;
#endif
                }, ""};
  };

  // The pgbench script lives in a temporary file for the run.
  std::string script;
  if (wanted("tpcb")) {
    char path[] = "/tmp/pqscope_bench_prepared_XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) throw std::runtime_error("mkstemp failed");
    close(fd);
    script = path;
    std::ofstream(script) << tpcb_script;
  }

  const auto started = clock_type::now();
  std::vector<measurement> ms;
  for (shape s : {shape::transfer, shape::join, shape::tpcb}) {
    if (!wanted(shape_name(s))) continue;
    std::vector<impl> impls;
    switch (s) {
      case shape::transfer:
        setup_transfer(admin);
        impls = {floor_impl("floor_unnamed", s, false), floor_impl("floor_prepared", s, true),
                 pqscope_impl("pqscope_batched", s, false), pqscope_impl("pqscope_batched_prepared", s, true)};
        if (have_pqxx) impls.push_back(pqxx_impl(s));
        break;
      case shape::join:
        setup_join(admin);
        impls = {floor_impl("floor_unnamed", s, false), floor_impl("floor_prepared", s, true),
                 pqscope_impl("pqscope", s, false), pqscope_impl("pqscope_prepared", s, true)};
        if (have_pqxx) impls.push_back(pqxx_impl(s));
        break;
      case shape::tpcb:
        setup_tpcb(admin, o, admin_conninfo);
        impls = {impl{"pgbench_prepared", nullptr, "prepared"}, impl{"pgbench_extended", nullptr, "extended"},
                 pqscope_impl("pqscope_batched", s, false), pqscope_impl("pqscope_batched_prepared", s, true),
                 floor_impl("floor_prepared", s, true)};
        break;
    }
    for (const route& r : routes)
      for (int clients : o.clients) {
        try {
          ms.push_back(measure(o, r, s, clients, impls, script));
        } catch (const std::exception& e) {
          fail(r.name + " " + shape_name(s) + " " + std::to_string(clients) + " client(s): " + e.what());
        }
      }
    switch (s) {
      case shape::transfer: finish_transfer(admin); break;
      case shape::join: finish_join(admin); break;
      case shape::tpcb: finish_tpcb(admin); break;
    }
  }
  const double total_s = std::chrono::duration<double>(clock_type::now() - started).count();
  if (!script.empty()) std::remove(script.c_str());

  std::filesystem::create_directories(o.out);
  const std::string leftover = query_text(
      admin,
      "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND application_name = "
      "'pqscope_bench_prepared'");
  if (leftover != "0") fail(leftover + " sessions left idle in transaction");
  PQfinish(admin);

  // ---- markdown ----
  std::ostringstream md;
  md << "# pqscope benchmark: prepared statements\n\n";
  md << "| | |\n| --- | --- |\n";
  md << "| date | " << now_text() << " |\n";
  md << "| CPU model | " << cpu_model() << " |\n";
  md << "| CPUs (nproc) | " << cpu_count() << " |\n";
  md << "| load average (1, 5, 15 min) | before: " << load_before << "; after: " << load_average() << " |\n";
  md << "| PostgreSQL | " << pg_version << " |\n";
  md << "| PgBouncer | " << (o.pgbouncer124.empty() ? "not used" : "1.24 as given by --pgbouncer124 (scripts/dev.sh: pool_mode=transaction, default_pool_size=4, max_prepared_statements=200)") << " |\n";
  md << "| libpq | " << PQlibVersion() << " |\n";
  md << "| libpqxx | " << pqxx_version() << " |\n";
  if (!pgbench_version.empty()) md << "| pgbench | " << pgbench_version << " |\n";
  md << "| compiler | " << __VERSION__ << " |\n";
  md << "| slices | " << fmt(o.seconds, 1) << " s per implementation (pgbench: -T " << pgbench_seconds(o.seconds)
     << "), " << o.rounds << " round(s), implementations in turn; " << warmup_transactions
     << " warm-up transactions per connection |\n";
  md << "| run time | " << fmt(total_s, 0) << " s |\n\n";
  md << "tx/s: transactions (join: queries) per second of wall time over all clients, median of the rounds. "
        "Ratios are of median throughput: above 1 favours the implementation of the row. Client CPU: thread CPU "
        "time per transaction of the benchmark's own threads (pgbench: n/a).\n";

  for (const measurement& m : ms) {
    md << "\n## " << m.route_name << " · " << shape_name(m.s) << " · " << m.clients << " client"
       << (m.clients == 1 ? "" : "s") << "\n\n";
    const auto refs = references(m.s);
    md << "| implementation | median tx/s | min–max tx/s";
    for (const auto& ref : refs) md << " | / " << ref;
    md << " | client CPU µs/tx | errors |\n| --- | ---: | ---: ";
    for (std::size_t j = 0; j < refs.size(); ++j) md << "| ---: ";
    md << "| ---: | ---: |\n";
    for (std::size_t i = 0; i < m.names.size(); ++i) {
      const auto& v = m.tps[i];
      const double med = median(v);
      md << "| " << m.names[i] << " | " << fmt(med) << " | "
         << (v.empty() ? "n/a" : fmt(*std::min_element(v.begin(), v.end())) + "–" +
                                     fmt(*std::max_element(v.begin(), v.end())));
      for (const auto& ref : refs) md << " | " << ratio(med, median_of(m, ref));
      md << " | " << fmt(m.cpu_us[i], 1) << " | " << m.errors[i] << " |\n";
    }
    const std::string t = target_impl(m.s);
    md << "\n**" << t;
    bool first = true;
    for (const auto& ref : target_refs(m.s)) {
      md << (first ? "" : ",") << " / " << ref << " = " << ratio(median_of(m, t), median_of(m, ref));
      first = false;
    }
    md << "**\n";
  }
  const int fails = failures();
  md << "\n" << (fails == 0 ? "All checks passed." : std::to_string(fails) + " check(s) FAILED.") << "\n";
  std::cout << "\n" << md.str();
  std::ofstream(o.out + "/bench_prepared.md") << md.str();

  // ---- csv ----
  std::ofstream csv(o.out + "/bench_prepared.csv");
  csv << "route,shape,clients,impl,median_tx_per_s,min_tx_per_s,max_tx_per_s,rounds_tx_per_s,client_cpu_us_per_tx,"
         "errors\n";
  for (const measurement& m : ms)
    for (std::size_t i = 0; i < m.names.size(); ++i) {
      const auto& v = m.tps[i];
      if (v.empty()) continue;
      csv << m.route_name << "," << shape_name(m.s) << "," << m.clients << "," << m.names[i] << "," << fmt(median(v), 1)
          << "," << fmt(*std::min_element(v.begin(), v.end()), 1) << "," << fmt(*std::max_element(v.begin(), v.end()), 1)
          << ",";
      for (std::size_t j = 0; j < v.size(); ++j) csv << (j ? ";" : "") << fmt(v[j], 1);
      csv << "," << fmt(m.cpu_us[i], 2) << "," << m.errors[i] << "\n";
    }
  return fails == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cout << "FAIL " << e.what() << std::endl;
    return 1;
  }
}
