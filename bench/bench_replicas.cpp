// pqscope_bench_replicas: what the read-your-writes check costs on a standby, and what
// spreading read-only transactions over a primary and its standby gives.
//
//   pqscope_bench_replicas --primary CONNINFO --standby CONNINFO [--pgbouncer-standby CONNINFO]
//                          [--out DIR] [--check-seconds S] [--check-rounds R]
//                          [--spread-seconds S] [--spread-rounds R] [--clients 1,4,16]
//                          [--only check|spread]
//
// Part "check": one client, one read-only transaction running one SELECT by primary
// key (of 10,000 rows) on the standby, directly and through PgBouncer when given.
//   pqscope                    atomic(), read_only, batch: BEGIN .. COMMIT in one round trip
//   pqscope_at_least           the same with at_least = a commit position the standby has
//                              replayed: the check rides in the same batch
//   pqscope_rr                 isolation repeatable_read, no at_least
//   pqscope_rr_at_least        repeatable_read + at_least: the check goes alone first (2 round trips)
//   floor                      raw libpq, pipeline: BEGIN READ ONLY, SELECT, COMMIT, one sync
//   floor_check                the same with pqscope's check query first, in the same pipeline
// The floors prepare their statements directly (as pqscope's prepare::automatic does)
// and send them unnamed through PgBouncer 1.18 (which cannot keep them; pqscope
// prepares nothing there either).
//
// Part "spread": 1, 4, 16 client threads running read-only transactions of three
// SELECTs by primary key (one batch), directly (no PgBouncer):
//   floor_primary              raw libpq on the primary, one connection per thread
//   pqscope_primary            replica_set with no standby: every read on the primary
//   pqscope_standby            replica_set(primary, {standby}): every read on the standby,
//                              with at_least (the check in the batch)
//   pqscope_standby_no_check   the same without a position: no check (what the check costs
//                              here, apart from what the node costs)
//   pqscope_spread             replica_set(primary, {primary, standby}): the primary listed
//                              as a standby too, so reads alternate between both nodes
//
// Implementations take turns in slices (S seconds each), R rounds; reported: the
// median over the rounds, min and max. Checked (a failure prints "FAIL ..." and makes
// the exit code nonzero): every transaction reads the rows it asked for; pqscope's
// stats() per slice: round trips and checks per transaction as described above, no
// standby found behind; the check fails, as it must, with a position the standby
// has not reached (pqscope and floor_check); replica_set's stats: reads where they
// were meant to go, none behind, none down.

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
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

namespace {

using namespace bench;  // report.hpp: the machine, the numbers, failures, libpq and timing helpers
using clock_type = std::chrono::steady_clock;

const char* const app_name = "pqscope_bench_replicas";

// ---- the table and the statements ---------------------------------------------------

constexpr int row_count = 10000;
const char* const schema =
    "DROP TABLE IF EXISTS br_items;"
    "CREATE TABLE br_items (id int PRIMARY KEY, name text NOT NULL, price int NOT NULL);"
    "INSERT INTO br_items SELECT g, 'item ' || g, g % 1000 FROM generate_series(1, 10000) g;"
    "ANALYZE br_items;";
const char* const select_sql = "SELECT id, name, price FROM br_items WHERE id = $1";
constexpr int spread_selects = 3;

// pqscope's check in the batch of the BEGIN (detail/impl/scope_machine_queue.ipp,
// check_in_batch_sql), copied: the floor sends the same query.
const char* const check_sql =
    "SELECT CASE WHEN s.r < $1::pg_catalog.pg_lsn THEN ('pqscope: replica behind, replayed ' || s.r::text)::"
    "pg_catalog.pg_lsn WHEN pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN "
    "('pqscope: isolation ' || pg_catalog.current_setting('transaction_isolation'))::pg_catalog.pg_lsn END "
    "FROM (SELECT pg_catalog.pg_last_wal_replay_lsn() AS r) AS s";

// ---- raw libpq --------------------------------------------------------------------

void exec_raw(PGconn* c, const std::string& sql) {
  PGresult* r = PQexec(c, sql.c_str());
  const auto st = PQresultStatus(r);
  std::string msg = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? "" : PQresultErrorMessage(r);
  PQclear(r);
  if (!msg.empty()) throw std::runtime_error(sql.substr(0, 60) + ": " + msg);
}

// One session in pipeline mode: statements queued, then one sync and its answers.
// The SELECT and the check are prepared once (named) or sent unnamed each time.
class raw_pipeline {
 public:
  raw_pipeline(const std::string& conninfo, bool prepare_select, bool prepare_check)
      : prepare_select_(prepare_select), prepare_check_(prepare_check) {
    c_ = connect_raw_quiet(conninfo);
    try {
      // PQprepare cannot run in pipeline mode.
      if (prepare_select_) prepare("br_select", select_sql);
      if (prepare_check_) prepare("br_check", check_sql);
      if (PQenterPipelineMode(c_) != 1) throw std::runtime_error("PQenterPipelineMode failed");
    } catch (...) {
      PQfinish(c_);
      throw;
    }
  }
  ~raw_pipeline() { PQfinish(c_); }
  raw_pipeline(const raw_pipeline&) = delete;
  raw_pipeline& operator=(const raw_pipeline&) = delete;

  void text(const char* sql) { send(nullptr, sql, 0, nullptr); }
  void select(const char* id) {
    const char* v[] = {id};
    send(prepare_select_ ? "br_select" : nullptr, select_sql, 1, v);
  }
  void check(const char* position) {
    const char* v[] = {position};
    send(prepare_check_ ? "br_check" : nullptr, check_sql, 1, v);
  }

  // Sends the sync and reads every answer: one round trip. Returns the sum of the ids
  // the SELECTs read; a failed statement throws (after a ROLLBACK if one is needed).
  long sync() {
    if (PQpipelineSync(c_) != 1) throw std::runtime_error(std::string("PQpipelineSync: ") + PQerrorMessage(c_));
    ++round_trips_;
    std::string error;
    long sum = 0;
    for (int i = 0; i < queued_; ++i) {
      PGresult* r = PQgetResult(c_);
      if (r == nullptr) throw std::runtime_error(std::string("lost: ") + PQerrorMessage(c_));
      const auto st = PQresultStatus(r);
      if (st == PGRES_TUPLES_OK && PQnfields(r) == 3)
        for (int row = 0; row < PQntuples(r); ++row) sum += std::atol(PQgetvalue(r, row, 0));
      if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && error.empty())
        error = st == PGRES_PIPELINE_ABORTED ? "aborted" : PQresultErrorMessage(r);
      PQclear(r);
      if (PGresult* extra = PQgetResult(c_)) {  // the nullptr that ends each answer
        PQclear(extra);
        throw std::runtime_error("unexpected extra result");
      }
    }
    queued_ = 0;
    PGresult* s = PQgetResult(c_);
    const bool ok = s != nullptr && PQresultStatus(s) == PGRES_PIPELINE_SYNC;
    PQclear(s);
    if (!ok) throw std::runtime_error(std::string("no sync: ") + PQerrorMessage(c_));
    if (!error.empty()) {
      if (PQtransactionStatus(c_) != PQTRANS_IDLE) {
        text("ROLLBACK");
        sync();
      }
      throw std::runtime_error("floor: " + error);
    }
    return sum;
  }

  [[nodiscard]] std::uint64_t round_trips() const { return round_trips_; }
  [[nodiscard]] std::uint64_t statements() const { return statements_; }

 private:
  void prepare(const char* name, const char* sql) {
    PGresult* r = PQprepare(c_, name, sql, 0, nullptr);
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    std::string msg = ok ? "" : PQresultErrorMessage(r);
    PQclear(r);
    if (!ok) throw std::runtime_error(std::string("prepare ") + name + ": " + msg);
  }
  void send(const char* name, const char* sql, int n, const char* const* vals) {
    const int sent = name != nullptr ? PQsendQueryPrepared(c_, name, n, vals, nullptr, nullptr, 0)
                                     : PQsendQueryParams(c_, sql, n, nullptr, vals, nullptr, nullptr, 0);
    if (sent != 1) throw std::runtime_error(std::string("send: ") + PQerrorMessage(c_));
    ++queued_;
    ++statements_;
  }

  PGconn* c_ = nullptr;
  bool prepare_select_, prepare_check_;
  int queued_ = 0;
  std::uint64_t round_trips_ = 0, statements_ = 0;
};

// ---- shared helpers ------------------------------------------------------------------

std::string min_max(const std::vector<double>& v, int decimals) {
  if (v.empty()) return "n/a";
  return fmt(*std::min_element(v.begin(), v.end()), decimals) + "–" + fmt(*std::max_element(v.begin(), v.end()), decimals);
}

void check_row(const pqscope::result& r, int id, const std::string& who) {
  if (r.size() != 1 || r[0][0].as<int>() != id)
    throw std::runtime_error(who + ": the SELECT of id " + std::to_string(id) + " returned " +
                             std::to_string(r.size()) + " row(s)" +
                             (r.size() == 0 ? std::string() : ", the first of id " + std::to_string(r[0][0].as<int>())));
}

struct options {
  std::string primary, standby, pgbouncer_standby;
  std::string out = "bench/results";
  double check_seconds = 1.0;
  int check_rounds = 5;
  double spread_seconds = 1.5;
  int spread_rounds = 3;
  std::vector<int> clients = {1, 4, 16};
  std::string only;  // empty: both parts
};

// ---- part 1: the cost of the check ---------------------------------------------------------

// What a transaction sent, counted by pqscope's stats() or by the floor itself.
struct tally {
  std::uint64_t round_trips = 0, statements = 0, checks = 0, checks_alone = 0, behind = 0, prepared = 0;
  tally operator-(const tally& o) const {
    return {round_trips - o.round_trips, statements - o.statements, checks - o.checks, checks_alone - o.checks_alone,
            behind - o.behind, prepared - o.prepared};
  }
  void add(const tally& d) {
    round_trips += d.round_trips;
    statements += d.statements;
    checks += d.checks;
    checks_alone += d.checks_alone;
    behind += d.behind;
    prepared += d.prepared;
  }
};

class check_worker {
 public:
  check_worker() = default;
  check_worker(const check_worker&) = delete;
  check_worker& operator=(const check_worker&) = delete;
  virtual ~check_worker() = default;
  virtual void run(int id) = 0;  // one transaction; throws on failure
  [[nodiscard]] virtual tally totals() const = 0;
};

class pqscope_check_worker final : public check_worker {
 public:
  pqscope_check_worker(const std::string& conninfo, bool pooled, pqscope::transaction_options o, std::string name)
      : c_(conninfo, options_for(pooled)), o_(o), name_(std::move(name)) {}

  void run(int id) override {
    pqscope::result r;
    // Read after atomic() returns: filled by the batch that carried COMMIT.
    pqscope::atomic(c_, o_, [&](pqscope::connection& c) { r = c.execute(select_sql, id); });
    check_row(r, id, name_);
  }
  [[nodiscard]] tally totals() const override {
    const pqscope::connection_stats& s = c_.stats();
    return {s.round_trips, s.statements + s.control_statements, s.replica_checks, s.replica_checks_alone,
            s.replica_behind, s.prepared};
  }
  pqscope::connection& connection() { return c_; }

  static pqscope::connection_options options_for(bool pooled) {
    pqscope::connection_options o;
    // Directly: prepare::automatic prepares the SELECT. Through PgBouncer 1.18
    // (pooling::transaction, no pooler_max_prepared_statements) nothing is prepared.
    if (!pooled) o.pooling = pqscope::pooling::none;
    return o;
  }

 private:
  pqscope::connection c_;
  pqscope::transaction_options o_;
  std::string name_;
};

class floor_check_worker final : public check_worker {
 public:
  // position empty: no check.
  floor_check_worker(const std::string& conninfo, bool prepare_select, bool prepare_check, std::string position)
      : p_(conninfo, prepare_select, prepare_check), position_(std::move(position)) {}

  void run(int id) override {
    const std::string id_text = std::to_string(id);
    if (!position_.empty()) p_.check(position_.c_str());
    p_.text("BEGIN READ ONLY");
    p_.select(id_text.c_str());
    p_.text("COMMIT");
    const long sum = p_.sync();
    if (sum != id) throw std::runtime_error("floor: the SELECT of id " + id_text + " read id sum " + std::to_string(sum));
  }
  [[nodiscard]] tally totals() const override {
    tally t;
    t.round_trips = p_.round_trips();
    t.statements = p_.statements();
    return t;
  }

 private:
  raw_pipeline p_;
  std::string position_;
};

struct check_impl {
  std::string name, sends;  // sends: what one transaction sends, for the report
  std::function<std::unique_ptr<check_worker>()> make;
  // What stats() must show per transaction (pqscope only; < 0: not checked).
  int round_trips = -1, checks = -1, checks_alone = -1;
};

struct check_route {
  std::string name, conninfo;
  bool pooled = false;
};

struct check_measurement {
  std::string route;
  std::vector<std::string> names, sends;
  std::vector<std::vector<double>> us;  // per implementation, per round: µs per transaction
  std::vector<double> cpu_us, rt, statements, checks, checks_alone, prepared;
  std::vector<long> errors;
};

constexpr int warmup_transactions = 20;

check_measurement measure_check(const options& o, const check_route& r, const std::vector<check_impl>& impls) {
  check_measurement m;
  m.route = r.name;
  const std::size_t k = impls.size();
  m.us.assign(k, {});
  m.cpu_us.assign(k, NAN);
  m.rt.assign(k, NAN);
  m.statements.assign(k, NAN);
  m.checks.assign(k, NAN);
  m.checks_alone.assign(k, NAN);
  m.prepared.assign(k, NAN);
  m.errors.assign(k, 0);
  std::vector<std::unique_ptr<check_worker>> ws;
  std::mt19937 rng(4242);
  std::uniform_int_distribution<int> pick(1, row_count);
  for (const check_impl& i : impls) {
    m.names.push_back(i.name);
    m.sends.push_back(i.sends);
    ws.push_back(i.make());
    for (int w = 0; w < warmup_transactions; ++w) ws.back()->run(pick(rng));  // prepares, warms caches
  }
  std::vector<double> cpu(k, 0), done(k, 0);
  std::vector<tally> sent(k);
  for (int round = 0; round < o.check_rounds; ++round) {
    // Printed whole at the end of the round, so that a FAIL line starts a line.
    std::ostringstream progress;
    progress << "check " << r.name << ", round " << round + 1 << " (µs/tx):";
    for (std::size_t i = 0; i < k; ++i) {
      const tally before = ws[i]->totals();
      long n = 0;
      const double c0 = thread_cpu_us();
      const auto start = clock_type::now();
      const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(o.check_seconds));
      while (clock_type::now() < deadline) {
        try {
          ws[i]->run(pick(rng));
          ++n;
        } catch (const std::exception& e) {
          if (++m.errors[i] == 1) fail(impls[i].name + " " + r.name + ": " + e.what());
        }
      }
      const double secs = std::chrono::duration<double>(clock_type::now() - start).count();
      cpu[i] += thread_cpu_us() - c0;
      done[i] += static_cast<double>(n);
      const tally d = ws[i]->totals() - before;
      sent[i].add(d);
      const auto un = static_cast<std::uint64_t>(n);
      const std::string where = impls[i].name + " " + r.name + " round " + std::to_string(round + 1);
      if (impls[i].round_trips >= 0 && d.round_trips != un * static_cast<std::uint64_t>(impls[i].round_trips))
        fail(where + ": " + std::to_string(d.round_trips) + " round trips for " + std::to_string(n) +
             " transactions, expected " + std::to_string(impls[i].round_trips) + " each");
      if (impls[i].checks >= 0 && d.checks != un * static_cast<std::uint64_t>(impls[i].checks))
        fail(where + ": " + std::to_string(d.checks) + " replica checks for " + std::to_string(n) + " transactions");
      if (impls[i].checks_alone >= 0 && d.checks_alone != un * static_cast<std::uint64_t>(impls[i].checks_alone))
        fail(where + ": " + std::to_string(d.checks_alone) + " checks alone for " + std::to_string(n) + " transactions");
      if (d.behind != 0) fail(where + ": the standby was found behind " + std::to_string(d.behind) + " time(s)");
      const double us = n > 0 ? secs * 1e6 / static_cast<double>(n) : NAN;
      m.us[i].push_back(us);
      progress << " " << impls[i].name << " " << fmt(us, 1);
    }
    std::cout << progress.str() << std::endl;
  }
  for (std::size_t i = 0; i < k; ++i) {
    if (done[i] <= 0) continue;
    m.cpu_us[i] = cpu[i] / done[i];
    m.rt[i] = static_cast<double>(sent[i].round_trips) / done[i];
    m.statements[i] = static_cast<double>(sent[i].statements) / done[i];
    m.checks[i] = static_cast<double>(sent[i].checks) / done[i];
    m.checks_alone[i] = static_cast<double>(sent[i].checks_alone) / done[i];
    m.prepared[i] = static_cast<double>(sent[i].prepared) / done[i];
  }
  return m;
}

// The check must be able to fail: with a position the standby has not replayed,
// pqscope throws replica_behind (in the batch, and alone) and the floor's batch fails.
void check_that_the_check_fails(const check_route& r, pqscope::wal_position ahead) {
  for (const pqscope::isolation iso : {pqscope::isolation::server_default, pqscope::isolation::repeatable_read}) {
    pqscope::connection c(r.conninfo, pqscope_check_worker::options_for(r.pooled));
    pqscope::transaction_options t;
    t.read_only = true;
    t.batch = true;
    t.isolation = iso;
    t.at_least = ahead;
    const std::string what = r.name + (iso == pqscope::isolation::repeatable_read ? " repeatable_read" : "");
    try {
      pqscope::result res;
      pqscope::atomic(c, t, [&](pqscope::connection& cc) { res = cc.execute(select_sql, 1); });
      fail(what + ": at_least " + ahead.to_string() + " (ahead of the standby) did not throw replica_behind");
    } catch (const pqscope::replica_behind& e) {
      if (e.required() != ahead || e.replayed() >= ahead)
        fail(what + ": replica_behind says replayed " + e.replayed().to_string() + ", required " + e.required().to_string());
    }
    if (c.stats().replica_behind != 1) fail(what + ": stats().replica_behind is not 1 after the failed check");
  }
  floor_check_worker floor(r.conninfo, !r.pooled, !r.pooled, ahead.to_string());
  try {
    floor.run(1);
    fail(r.name + ": floor_check passed with a position ahead of the standby");
  } catch (const std::runtime_error& e) {
    if (std::string(e.what()).find("replica behind") == std::string::npos)
      fail(r.name + ": floor_check failed, but not on the check: " + e.what());
  }
}

// ---- part 2: reads spread over the nodes ------------------------------------------------------

// One implementation at one client count: `clients` threads call run(thread, rng).
class spread_target {
 public:
  spread_target() = default;
  spread_target(const spread_target&) = delete;
  spread_target& operator=(const spread_target&) = delete;
  virtual ~spread_target() = default;
  virtual void run(std::size_t thread, std::mt19937& rng) = 0;
  virtual void begin_slice() {}
  virtual void end_slice(long /*done*/, const std::string& /*where*/) {}
  // Of the transactions since the last begin_slice(), the share that ran on the primary.
  [[nodiscard]] virtual double primary_share() const = 0;
};

int random_id(std::mt19937& rng) { return std::uniform_int_distribution<int>(1, row_count)(rng); }

class floor_spread final : public spread_target {
 public:
  floor_spread(const std::string& conninfo, int clients) {
    for (int i = 0; i < clients; ++i) ps_.push_back(std::make_unique<raw_pipeline>(conninfo, true, true));
  }
  void run(std::size_t thread, std::mt19937& rng) override {
    raw_pipeline& p = *ps_[thread];
    char ids[spread_selects][16];
    long want = 0;
    p.text("BEGIN READ ONLY");
    for (auto& id : ids) {
      const int v = random_id(rng);
      want += v;
      std::snprintf(id, sizeof id, "%d", v);
      p.select(id);
    }
    p.text("COMMIT");
    if (p.sync() != want) throw std::runtime_error("floor_primary: the SELECTs read other rows");
  }
  [[nodiscard]] double primary_share() const override { return 1.0; }

 private:
  std::vector<std::unique_ptr<raw_pipeline>> ps_;
};

enum class layout { primary_alone, standby, spread };

class replica_set_spread final : public spread_target {
 public:
  replica_set_spread(const options& o, layout l, int clients, pqscope::wal_position seen, std::string name)
      : l_(l), seen_(seen), name_(std::move(name)) {
    pqscope::replica_set_options rso;
    rso.pool.max_size = static_cast<std::size_t>(clients);
    // Between its slices a connection sits idle through the other implementations'
    // slices: neither a health check nor a close for that.
    rso.pool.health_check_after = std::chrono::minutes(10);
    rso.pool.idle_timeout = std::chrono::milliseconds(0);
    rso.connection.pooling = pqscope::pooling::none;  // directly: prepare::automatic prepares
    rso.fallback_to_primary = true;                   // counted: reads_on_primary must stay 0
    std::vector<std::string> standbys;
    if (l == layout::standby) standbys = {o.standby};
    if (l == layout::spread) standbys = {o.primary, o.standby};
    rs_ = std::make_unique<pqscope::replica_set>(o.primary, standbys, rso);
    // Every connection opened before the first slice.
    for (pqscope::pool* p : pools()) {
      std::vector<pqscope::lease> ls;
      for (int i = 0; i < clients; ++i) ls.push_back(p->acquire());
    }
    t_.batch = true;
  }

  void run(std::size_t, std::mt19937& rng) override {
    int ids[spread_selects];
    for (int& id : ids) id = random_id(rng);
    pqscope::result rows[spread_selects];
    rs_->read(
        seen_,
        [&](pqscope::connection& c) {
          for (int i = 0; i < spread_selects; ++i) rows[i] = c.execute(select_sql, ids[i]);
        },
        t_);
    for (int i = 0; i < spread_selects; ++i) check_row(rows[i], ids[i], name_);
  }

  void begin_slice() override {
    before_ = rs_->stats();
    leases_before_ = leases();
  }

  void end_slice(long done, const std::string& where) override {
    const pqscope::replica_set_stats s = rs_->stats();
    const auto n = static_cast<std::uint64_t>(done);
    const std::uint64_t on_standby = s.reads_on_standby - before_.reads_on_standby;
    const std::uint64_t on_primary = s.reads_on_primary - before_.reads_on_primary;
    const std::uint64_t want_standby = l_ == layout::primary_alone ? 0 : n;
    if (on_standby != want_standby || on_primary != n - want_standby)
      fail(where + ": " + std::to_string(on_standby) + " reads on standbys and " + std::to_string(on_primary) +
           " on the primary for " + std::to_string(done) + " transactions");
    if (s.standby_behind != before_.standby_behind || s.standby_down != before_.standby_down)
      fail(where + ": standbys found behind " + std::to_string(s.standby_behind - before_.standby_behind) +
           " and down " + std::to_string(s.standby_down - before_.standby_down) + " time(s)");
    if (l_ == layout::spread) {
      // Leases of the primary listed as a standby (pools()[0]) against both.
      const std::vector<std::uint64_t> now = leases();
      const std::uint64_t on_first = now[0] - leases_before_[0];
      const std::uint64_t total = on_first + (now[1] - leases_before_[1]);
      share_ = total == 0 ? NAN : static_cast<double>(on_first) / static_cast<double>(total);
      if (total > 0 && (share_ < 0.3 || share_ > 0.7))
        fail(where + ": the primary served " + fmt(100 * share_) + "% of the reads, expected about half");
    } else {
      share_ = done == 0 ? NAN : static_cast<double>(on_primary) / static_cast<double>(done);
    }
  }

  [[nodiscard]] double primary_share() const override { return share_; }

 private:
  // The pools reads lease from: the primary's when there is no standby, else the standbys'.
  std::vector<pqscope::pool*> pools() {
    std::vector<pqscope::pool*> out;
    if (rs_->standbys() == 0) out.push_back(&rs_->primary_pool());
    for (std::size_t i = 0; i < rs_->standbys(); ++i) out.push_back(&rs_->standby_pool(i));
    return out;
  }
  std::vector<std::uint64_t> leases() {
    std::vector<std::uint64_t> out;
    for (pqscope::pool* p : pools()) {
      const pqscope::pool_stats s = p->stats();
      out.push_back(s.created + s.reused);
    }
    return out;
  }

  layout l_;
  pqscope::wal_position seen_;
  std::string name_;
  std::unique_ptr<pqscope::replica_set> rs_;
  pqscope::transaction_options t_;
  pqscope::replica_set_stats before_;
  std::vector<std::uint64_t> leases_before_;
  double share_ = NAN;
};

struct spread_impl {
  std::string name;
  std::function<std::unique_ptr<spread_target>(int clients)> make;
};

struct spread_measurement {
  int clients = 0;
  std::vector<std::string> names;
  std::vector<std::vector<double>> tps;  // per implementation, per round
  std::vector<std::vector<double>> primary_share;
  std::vector<double> cpu_us;
  std::vector<long> errors;
};

struct slice_result {
  long done = 0, errors = 0;
  double seconds = 0, cpu_us = 0;
};

slice_result run_slice(spread_target& t, int clients, double seconds, const std::string& where, unsigned seed) {
  const auto n = static_cast<std::size_t>(clients);
  t.begin_slice();
  std::atomic<bool> go{false};
  clock_type::time_point deadline;
  std::vector<long> counts(n, 0), errors(n, 0);
  std::vector<double> cpu(n, 0);
  std::vector<std::thread> ts;
  for (std::size_t i = 0; i < n; ++i) {
    ts.emplace_back([&, i] {
      std::mt19937 rng(seed + static_cast<unsigned>(i) * 7919u);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      const double c0 = thread_cpu_us();
      while (clock_type::now() < deadline) {
        try {
          t.run(i, rng);
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
  for (auto& th : ts) th.join();
  slice_result out;
  out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  for (std::size_t i = 0; i < n; ++i) {
    out.done += counts[i];
    out.errors += errors[i];
    out.cpu_us += cpu[i];
  }
  t.end_slice(out.done, where);
  return out;
}

spread_measurement measure_spread(const options& o, int clients, const std::vector<spread_impl>& impls) {
  spread_measurement m;
  m.clients = clients;
  const std::size_t k = impls.size();
  m.tps.assign(k, {});
  m.primary_share.assign(k, {});
  m.cpu_us.assign(k, NAN);
  m.errors.assign(k, 0);
  std::vector<std::unique_ptr<spread_target>> ts;
  for (std::size_t i = 0; i < k; ++i) {
    m.names.push_back(impls[i].name);
    ts.push_back(impls[i].make(clients));
    // A short warm-up slice: statements prepared, caches warm; not counted.
    run_slice(*ts.back(), clients, 0.3, impls[i].name + " warm-up", 17u);
  }
  std::vector<double> cpu(k, 0), done(k, 0);
  const std::string label = "spread " + std::to_string(clients) + " client(s)";
  for (int round = 0; round < o.spread_rounds; ++round) {
    std::ostringstream progress;
    progress << label << ", round " << round + 1 << " (tx/s):";
    for (std::size_t i = 0; i < k; ++i) {
      const std::string where = impls[i].name + " " + label + " round " + std::to_string(round + 1);
      const slice_result sr = run_slice(*ts[i], clients, o.spread_seconds, where,
                                        1000u * static_cast<unsigned>(round + 1) + 17u * static_cast<unsigned>(i));
      const double tps = static_cast<double>(sr.done) / sr.seconds;
      m.tps[i].push_back(tps);
      m.primary_share[i].push_back(ts[i]->primary_share());
      m.errors[i] += sr.errors;
      cpu[i] += sr.cpu_us;
      done[i] += static_cast<double>(sr.done);
      progress << " " << impls[i].name << " " << fmt(tps);
    }
    std::cout << progress.str() << std::endl;
  }
  for (std::size_t i = 0; i < k; ++i)
    if (done[i] > 0) m.cpu_us[i] = cpu[i] / done[i];
  return m;
}

// ---- set-up --------------------------------------------------------------------------------

// A commit on the primary, and its position once the standby has replayed it: the
// token every checked read carries (it passes, as a client's token would once the
// standby caught up).
pqscope::wal_position commit_and_wait(const options& o, PGconn* standby) {
  pqscope::connection_options co;
  co.pooling = pqscope::pooling::none;
  co.commit_positions = true;
  pqscope::connection c(o.primary, co);
  pqscope::atomic(c, [](pqscope::connection& cc) { cc.execute("UPDATE br_items SET price = price WHERE id = 1"); });
  const pqscope::wal_position at = c.last_commit_position();
  if (at.empty()) throw std::runtime_error("the commit on the primary reported no position");
  const std::string sql = "SELECT pg_catalog.pg_last_wal_replay_lsn() >= '" + at.to_string() + "'::pg_catalog.pg_lsn";
  const auto until = clock_type::now() + std::chrono::seconds(30);
  while (query_text(standby, sql.c_str()) != "t") {
    if (clock_type::now() > until) throw std::runtime_error("the standby did not replay " + at.to_string() + " in 30 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return at;
}

void require_standby(const std::string& name, const std::string& conninfo) {
  PGconn* c = connect_raw_quiet(conninfo);
  const std::string in_recovery = query_text(c, "SELECT pg_catalog.pg_is_in_recovery()");
  const std::string rows = query_text(c, "SELECT count(*) FROM br_items");
  PQfinish(c);
  if (in_recovery != "t") throw std::runtime_error(name + " is not a standby (pg_is_in_recovery() = " + in_recovery + ")");
  if (rows != std::to_string(row_count)) throw std::runtime_error(name + ": br_items has " + rows + " rows");
}

// ---- report -------------------------------------------------------------------------------

double median_us(const check_measurement& m, const std::string& name) {
  for (std::size_t i = 0; i < m.names.size(); ++i)
    if (m.names[i] == name) return median(m.us[i]);
  return NAN;
}

double median_tps(const spread_measurement& m, const std::string& name) {
  for (std::size_t i = 0; i < m.names.size(); ++i)
    if (m.names[i] == name) return median(m.tps[i]);
  return NAN;
}

std::string signed_us(double v) {
  if (std::isnan(v)) return "n/a";
  return (v >= 0 ? "+" : "") + fmt(v, 1) + " µs";
}

void usage() {
  std::cerr << "usage: pqscope_bench_replicas --primary CONNINFO --standby CONNINFO [--pgbouncer-standby CONNINFO]\n"
               "                              [--out DIR] [--check-seconds S] [--check-rounds R]\n"
               "                              [--spread-seconds S] [--spread-rounds R] [--clients 1,4,16]\n"
               "                              [--only check|spread]\n";
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
    if (a == "--primary") o.primary = value();
    else if (a == "--standby") o.standby = value();
    else if (a == "--pgbouncer-standby") o.pgbouncer_standby = value();
    else if (a == "--out") o.out = value();
    else if (a == "--check-seconds") o.check_seconds = std::stod(value());
    else if (a == "--check-rounds") o.check_rounds = std::stoi(value());
    else if (a == "--spread-seconds") o.spread_seconds = std::stod(value());
    else if (a == "--spread-rounds") o.spread_rounds = std::stoi(value());
    else if (a == "--clients") {
      o.clients.clear();
      std::istringstream in(value());
      for (std::string part; std::getline(in, part, ',');)
        if (!part.empty()) o.clients.push_back(std::stoi(part));
    } else if (a == "--only") o.only = value();
    else {
      usage();
      return 2;
    }
  }
  if (o.primary.empty() || o.standby.empty() || o.check_seconds <= 0 || o.check_rounds < 1 ||
      o.spread_seconds <= 0 || o.spread_rounds < 1 || o.clients.empty() ||
      (!o.only.empty() && o.only != "check" && o.only != "spread")) {
    usage();
    return 2;
  }
  for (int c : o.clients)
    if (c < 1) {
      usage();
      return 2;
    }
  o.primary = with_app_name(o.primary, app_name);
  o.standby = with_app_name(o.standby, app_name);
  if (!o.pgbouncer_standby.empty()) o.pgbouncer_standby = with_app_name(o.pgbouncer_standby, app_name);

  PGconn* admin = connect_raw_quiet(o.primary);
  PGconn* standby_admin = connect_raw_quiet(o.standby);
  const std::string load_before = load_average();
  const std::string pg_version = query_text(admin, "SHOW server_version");
  const std::string sync_commit = query_text(admin, "SHOW synchronous_commit");
  std::cout << "PostgreSQL " << pg_version << ", libpq " << PQlibVersion() << std::endl;
  exec_raw(admin, schema);
  const pqscope::wal_position seen = commit_and_wait(o, standby_admin);
  require_standby("--standby", o.standby);
  if (!o.pgbouncer_standby.empty()) require_standby("--pgbouncer-standby", o.pgbouncer_standby);
  std::cout << "token: " << seen.to_string() << " (replayed by the standby)" << std::endl;

  const auto started = clock_type::now();
  std::vector<check_measurement> checks;
  if (o.only.empty() || o.only == "check") {
    std::vector<check_route> routes = {{"standby direct", o.standby, false}};
    if (!o.pgbouncer_standby.empty()) routes.push_back({"standby through PgBouncer 1.18", o.pgbouncer_standby, true});
    // A gigabyte past the token: no standby of this run gets there.
    const pqscope::wal_position ahead(seen.value() + (std::uint64_t{1} << 30));
    for (const check_route& r : routes) {
      check_that_the_check_fails(r, ahead);
      auto pq = [&r](const char* name, pqscope::isolation iso, pqscope::wal_position at) {
        return [&r, name, iso, at]() -> std::unique_ptr<check_worker> {
          pqscope::transaction_options t;
          t.read_only = true;
          t.batch = true;
          t.isolation = iso;
          t.at_least = at;
          return std::make_unique<pqscope_check_worker>(r.conninfo, r.pooled, t, name);
        };
      };
      auto raw = [&r](std::string position, bool prepare_check) {
        return [&r, position, prepare_check]() -> std::unique_ptr<check_worker> {
          return std::make_unique<floor_check_worker>(r.conninfo, !r.pooled, prepare_check && !r.pooled, position);
        };
      };
      const auto rc = pqscope::isolation::server_default;
      const auto rr = pqscope::isolation::repeatable_read;
      std::vector<check_impl> impls = {
          {"floor", "BEGIN READ ONLY, SELECT, COMMIT; one sync", raw("", false), -1, -1, -1},
          {"floor_check", "check, BEGIN READ ONLY, SELECT, COMMIT; one sync", raw(seen.to_string(), true), -1, -1, -1},
      };
      // Directly the floor prepares the check; pqscope sends it unnamed: both shown.
      if (!r.pooled)
        impls.push_back({"floor_check_unnamed", "the same, the check unnamed", raw(seen.to_string(), false), -1, -1, -1});
      const std::vector<check_impl> pqscope_impls = {
          {"pqscope", "read_only", pq("pqscope", rc, {}), 1, 0, 0},
          {"pqscope_at_least", "read_only, at_least", pq("pqscope_at_least", rc, seen), 1, 1, 0},
          {"pqscope_rr", "read_only, repeatable_read", pq("pqscope_rr", rr, {}), 1, 0, 0},
          {"pqscope_rr_at_least", "read_only, repeatable_read, at_least", pq("pqscope_rr_at_least", rr, seen), 2, 1, 1},
      };
      impls.insert(impls.end(), pqscope_impls.begin(), pqscope_impls.end());
      try {
        checks.push_back(measure_check(o, r, impls));
      } catch (const std::exception& e) {
        fail("check " + r.name + ": " + e.what());
      }
    }
  }

  std::vector<spread_measurement> spreads;
  if (o.only.empty() || o.only == "spread") {
    const std::vector<spread_impl> impls = {
        {"floor_primary", [&o](int clients) { return std::make_unique<floor_spread>(o.primary, clients); }},
        {"pqscope_primary",
         [&o, seen](int clients) {
           return std::make_unique<replica_set_spread>(o, layout::primary_alone, clients, seen, "pqscope_primary");
         }},
        {"pqscope_standby",
         [&o, seen](int clients) {
           return std::make_unique<replica_set_spread>(o, layout::standby, clients, seen, "pqscope_standby");
         }},
        {"pqscope_standby_no_check",
         [&o](int clients) {
           return std::make_unique<replica_set_spread>(o, layout::standby, clients, pqscope::wal_position{},
                                                       "pqscope_standby_no_check");
         }},
        {"pqscope_spread",
         [&o, seen](int clients) {
           return std::make_unique<replica_set_spread>(o, layout::spread, clients, seen, "pqscope_spread");
         }},
    };
    for (int clients : o.clients) {
      try {
        spreads.push_back(measure_spread(o, clients, impls));
      } catch (const std::exception& e) {
        fail("spread " + std::to_string(clients) + " client(s): " + e.what());
      }
    }
  }
  const double total_s = std::chrono::duration<double>(clock_type::now() - started).count();

  for (PGconn* c : {admin, standby_admin}) {
    const std::string leftover = query_text(
        c,
        "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%' AND application_name = "
        "'pqscope_bench_replicas'");
    if (leftover != "0") fail(leftover + " sessions left idle in transaction");
  }
  exec_raw(admin, "DROP TABLE IF EXISTS br_items");
  PQfinish(standby_admin);
  PQfinish(admin);

  // ---- markdown ----
  const int cpus = cpu_count();
  std::ostringstream md;
  md << "# pqscope benchmark: read-your-writes and reads over a standby\n\n";
  md << "| | |\n| --- | --- |\n";
  md << "| date | " << now_text() << " |\n";
  md << "| CPU model | " << cpu_model() << " |\n";
  md << "| CPUs (nproc) | " << cpus << " |\n";
  md << "| load average (1, 5, 15 min) | before: " << load_before << "; after: " << load_average() << " |\n";
  md << "| PostgreSQL | " << pg_version << ", synchronous_commit = " << sync_commit
     << "; one streaming standby on the same machine |\n";
  md << "| PgBouncer | "
     << (o.pgbouncer_standby.empty() ? "not used"
                                     : "1.18 in front of the standby, as given by --pgbouncer-standby (scripts/dev.sh: "
                                       "pool_mode=transaction, default_pool_size=4); check part only")
     << " |\n";
  md << "| libpq | " << PQlibVersion() << " |\n";
  md << "| compiler | " << __VERSION__ << " |\n";
  md << "| slices | check: " << fmt(o.check_seconds, 1) << " s, " << o.check_rounds << " round(s); spread: "
     << fmt(o.spread_seconds, 1) << " s, " << o.spread_rounds
     << " round(s); implementations in turn, in one process |\n";
  md << "| run time | " << fmt(total_s, 0) << " s |\n\n";
  md << "The token (`at_least`) is a commit position from the primary that the standby had replayed before the "
        "run: every check passes, as a client's check does once the standby caught up.\n";

  if (!checks.empty()) {
    md << "\n## The cost of the check\n\n"
          "One client, one read-only transaction running one SELECT by primary key (10,000 rows) on the standby. "
          "µs/tx: wall time per transaction, median of the rounds. Round trips, statements (BEGIN, SET "
          "TRANSACTION, the check and COMMIT included) and checks per transaction: from pqscope's stats() "
          "(the floors count their own); prepared/tx: Parses of named statements per transaction (the floors "
          "prepare once per connection, before the run). floor: raw libpq in pipeline mode; floor_check adds "
          "pqscope's check query to the same pipeline. Directly the floors prepare the SELECT, and floor_check "
          "the check (floor_check_unnamed sends it unnamed, as pqscope does); pqscope's prepare::automatic "
          "prepares the SELECT. Through PgBouncer 1.18 nothing is prepared.\n";
    for (const check_measurement& m : checks) {
      md << "\n### " << m.route << "\n\n";
      md << "| implementation | options / what one sync carries | median µs/tx | min–max µs/tx | / floor | round "
            "trips/tx | statements/tx | checks/tx | checks alone/tx | prepared/tx | client CPU µs/tx | errors |\n";
      md << "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
      const double floor_us = median_us(m, "floor");
      for (std::size_t i = 0; i < m.names.size(); ++i) {
        const double med = median(m.us[i]);
        const bool raw = m.names[i].rfind("floor", 0) == 0;
        md << "| " << m.names[i] << " | " << m.sends[i] << " | " << fmt(med, 1) << " | " << min_max(m.us[i], 1)
           << " | " << ratio(med, floor_us) << " | " << fmt(m.rt[i], 2) << " | " << fmt(m.statements[i], 1) << " | "
           << (raw ? (m.names[i].rfind("floor_check", 0) == 0 ? "1" : "0") : fmt(m.checks[i], 2)) << " | "
           << (raw ? "0" : fmt(m.checks_alone[i], 2)) << " | " << (raw ? "0" : fmt(m.prepared[i], 2)) << " | "
           << fmt(m.cpu_us[i], 1) << " | " << m.errors[i] << " |\n";
      }
      md << "\nThe check in the batch: pqscope " << signed_us(median_us(m, "pqscope_at_least") - median_us(m, "pqscope"))
         << " per transaction (" << ratio(median_us(m, "pqscope_at_least"), median_us(m, "pqscope"))
         << "×), raw libpq " << signed_us(median_us(m, "floor_check") - floor_us) << " ("
         << ratio(median_us(m, "floor_check"), floor_us) << "×)";
      if (!std::isnan(median_us(m, "floor_check_unnamed")))
        md << ", raw libpq with the check unnamed " << signed_us(median_us(m, "floor_check_unnamed") - floor_us) << " ("
           << ratio(median_us(m, "floor_check_unnamed"), floor_us) << "×)";
      md << ". The check alone (repeatable read): "
         << signed_us(median_us(m, "pqscope_rr_at_least") - median_us(m, "pqscope_rr")) << " ("
         << ratio(median_us(m, "pqscope_rr_at_least"), median_us(m, "pqscope_rr")) << "×).\n";
    }
  }

  if (!spreads.empty()) {
    md << "\n## Reads over the primary and the standby\n\n"
          "Client threads, each running read-only transactions of "
       << spread_selects
       << " SELECTs by primary key, batched (one round trip), directly (no PgBouncer); pqscope through one "
          "replica_set per implementation, one pool of as many connections as threads per node. "
          "pqscope_standby and pqscope_spread carry the token (the check rides in the batch); "
          "pqscope_standby_no_check reads on the standby without one (no check); pqscope_primary needs none. tx/s: transactions per second of wall time over all threads, median of the rounds. "
          "On primary: the share of the transactions the primary served.\n\n";
    if (cpus <= 4)
      md << "**What this machine can show.** The primary, the standby, its WAL receiver and the client threads all "
            "run on the same "
         << cpus
         << " CPUs: a second server adds no CPU here, so spreading reads over two servers cannot raise "
            "throughput; at best it breaks even. What the rows do show is what routing through replica_set costs "
            "against a pool on the primary, and that reads on the standby cost what reads on the primary cost. "
            "The gain of a standby (its own CPUs, its own buffer cache) needs a standby on other hardware.\n";
    else
      md << "The servers and the client share this machine's " << cpus
         << " CPUs: what a standby on its own hardware adds is not measured here.\n";
    for (const spread_measurement& m : spreads) {
      md << "\n### " << m.clients << " client thread" << (m.clients == 1 ? "" : "s") << "\n\n";
      md << "| implementation | median tx/s | min–max tx/s | / floor_primary | / pqscope_primary | on primary | "
            "client CPU µs/tx | errors |\n";
      md << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
      for (std::size_t i = 0; i < m.names.size(); ++i) {
        const double med = median(m.tps[i]);
        md << "| " << m.names[i] << " | " << fmt(med) << " | " << min_max(m.tps[i], 0) << " | "
           << ratio(med, median_tps(m, "floor_primary")) << " | " << ratio(med, median_tps(m, "pqscope_primary"))
           << " | " << fmt(100 * median(m.primary_share[i])) << "% | " << fmt(m.cpu_us[i], 1) << " | " << m.errors[i]
           << " |\n";
      }
    }
  }
  const int fails = failures();
  md << "\n" << (fails == 0 ? "All checks passed." : std::to_string(fails) + " check(s) FAILED.") << "\n";
  std::cout << "\n" << md.str();
  std::filesystem::create_directories(o.out);
  std::ofstream(o.out + "/bench_replicas.md") << md.str();
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
