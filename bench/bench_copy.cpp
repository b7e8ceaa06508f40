// pqscope_bench_copy: one bulk load (by default one million rows) in one transaction,
// through PgBouncer (and directly, if given), side by side in one process:
//
//   floor            raw libpq: BEGIN, COPY ... FROM STDIN, every row formatted with
//                    the least work (std::to_chars, the timestamp's digits written
//                    directly, a byte loop escaping the name) into one 64 KiB
//                    buffer, PQputCopyData per full buffer, PQputCopyEnd, COMMIT
//   snprintf         the same, each row formatted by snprintf, as C code would
//   pqscope COPY     pqscope::atomic + connection::copy_in + copy_writer::write_row
//   libpqxx          pqxx::work + pqxx::stream_to (tuples; the timestamp as a string:
//                    libpqxx 6.4 has no conversion for std::chrono time points)
//   pqscope INSERT   pqscope::atomic with transaction_options::batch, one execute()
//                    per row (INSERT ... VALUES ($1..$5)), flush() every 10,000 rows
//   write_raw        a diagnostic: the floor's formatting handed to copy_writer::write_raw
//                    a row at a time (the writer without write_row's conversions)
//   wire limit       raw libpq sending text formatted before the clock starts: only
//                    PQputCopyData; what the server, PgBouncer and the socket allow
//
//   pqscope_bench_copy --pgbouncer CONNINFO [--direct CONNINFO] [--out DIR]
//                      [--rows N] [--rounds R] [--insert-rounds R]
//                      [--pgbouncer-admin CONNINFO (for PgBouncer's version)] [--note TEXT]
//
// Every client loads the same rows (made once, before timing, by a deterministic
// generator; some names hold a tab, a backslash, a newline or a two-byte
// character, so the escaping is exercised). Each round the clients take turns,
// the first one rotating; the table is truncated before each load and checked
// after it (count, sums of the numbers, of the names' bytes and of the
// timestamps, and how many names hold each escaped character), outside the
// timing, so a load that keeps nothing, or keeps it wrong, fails the run.
// Reported: rows per second (median over the rounds) and the client's CPU time
// per row (CLOCK_PROCESS_CPUTIME_ID: the whole single-threaded process, user and
// system time). Writes DIR/bench_copy.md.

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/pqscope.hpp>

#include "copy_rows.hpp"
#include "report.hpp"

#ifdef PQSCOPE_BENCH_HAVE_PQXX
#include <pqxx/pqxx>
#endif

namespace {

using bench::connect_raw;
using bench::cpu_count;
using bench::cpu_model;
using bench::fmt;
using bench::load_average;
using bench::median;
using bench::now_text;
using bench::with_app_name;
using clock_type = std::chrono::steady_clock;
using namespace bench::copy_rows;  // the rows and the floor's formatting

// What the table must hold after a load of `rows`, in the order of check_sql's values.
const char* const check_sql =
    "SELECT concat_ws(' ', count(*), sum(id), sum(qty), sum(round(price * 100))::bigint, sum(octet_length(name)), "
    "count(*) FILTER (WHERE strpos(name, E'\\t') > 0), count(*) FILTER (WHERE strpos(name, E'\\\\') > 0), "
    "count(*) FILTER (WHERE strpos(name, E'\\n') > 0), "
    "sum((extract(epoch FROM created) * 1000000)::bigint - 1704067200000000)) FROM bench_copy";

std::string expected_check(const std::vector<row>& rows) {
  std::int64_t ids = 0, qty = 0, cents = 0, bytes = 0, tabs = 0, backslashes = 0, newlines = 0, micros = 0;
  for (const row& r : rows) {
    ids += r.id;
    qty += r.qty;
    cents += std::llround(r.price * 100);
    bytes += static_cast<std::int64_t>(r.name.size());
    tabs += r.name.find('\t') != std::string::npos;
    backslashes += r.name.find('\\') != std::string::npos;
    newlines += r.name.find('\n') != std::string::npos;
    micros += std::chrono::duration_cast<std::chrono::microseconds>(r.created.time_since_epoch()).count() - base_micros;
  }
  std::ostringstream s;
  s << rows.size() << ' ' << ids << ' ' << qty << ' ' << cents << ' ' << bytes << ' ' << tabs << ' ' << backslashes
    << ' ' << newlines << ' ' << micros;
  return s.str();
}

// ---- raw libpq ----------------------------------------------------------------------

void expect(PGconn* c, PGresult* r, ExecStatusType want, const char* what) {
  if (PQresultStatus(r) == want) {
    PQclear(r);
    return;
  }
  std::string msg = r != nullptr ? PQresultErrorMessage(r) : PQerrorMessage(c);
  PQclear(r);
  throw std::runtime_error(std::string(what) + ": " + msg);
}

const char* const copy_sql = "COPY bench_copy (id, name, qty, price, created) FROM STDIN";
const char* const insert_sql = "INSERT INTO bench_copy (id, name, qty, price, created) VALUES ($1, $2, $3, $4, $5)";
constexpr std::size_t chunk = 64 * 1024;

// The same row by snprintf, as a C client would write it.
char* format_row_snprintf(char* p, const row& r) {
  p += std::sprintf(p, "%lld\t", static_cast<long long>(r.id));
  p = escape_name(p, r.name);
  const split_time t = split(r.created);
  p += std::sprintf(p, "\t%d\t%.2f\t%04d-%02u-%02u %02d:%02d:%02d.%06d+00\n", r.qty, r.price, t.date.y, t.date.m,
                    t.date.d, t.secs / 3600, t.secs / 60 % 60, t.secs % 60, t.micros);
  return p;
}

// The largest row format_row can write (every name byte escaped, the numbers at their widest).
std::size_t max_row_bytes(const std::vector<row>& rows) {
  std::size_t longest = 0;
  for (const row& r : rows) longest = std::max(longest, r.name.size());
  return 2 * longest + 256;
}

void copy_end_and_commit(PGconn* c, std::int64_t n) {
  if (PQputCopyEnd(c, nullptr) != 1) throw std::runtime_error(std::string("PQputCopyEnd: ") + PQerrorMessage(c));
  PGresult* r = PQgetResult(c);
  if (PQresultStatus(r) == PGRES_COMMAND_OK && std::atoll(PQcmdTuples(r)) != n) {
    const std::string got = PQcmdTuples(r);
    PQclear(r);
    throw std::runtime_error("COPY took " + got + " rows, expected " + std::to_string(n));
  }
  expect(c, r, PGRES_COMMAND_OK, "COPY");
  while ((r = PQgetResult(c)) != nullptr) PQclear(r);
  expect(c, PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "COMMIT");
}

void start_copy(PGconn* c) {
  expect(c, PQexec(c, "BEGIN"), PGRES_COMMAND_OK, "BEGIN");
  expect(c, PQexec(c, copy_sql), PGRES_COPY_IN, "COPY");
}

void put(PGconn* c, const char* data, std::size_t n) {
  if (PQputCopyData(c, data, static_cast<int>(n)) != 1)
    throw std::runtime_error(std::string("PQputCopyData: ") + PQerrorMessage(c));
}

// ---- the clients -------------------------------------------------------------------

struct client {
  std::string name;
  std::function<void(const std::vector<row>&)> load;  // one transaction loading every row
  int rounds = 0;                                     // timed loads to run
  std::vector<double> rows_per_s, cpu_ns_per_row, seconds;
};

struct target {
  std::string name, conninfo;
};

double process_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

// Thousands separated by commas, for the table.
std::string grouped(double v) {
  if (std::isnan(v)) return "n/a";
  std::string digits = fmt(v);
  std::string out;
  const std::size_t n = digits.size();
  for (std::size_t i = 0; i < n; ++i) {
    out += digits[i];
    if ((n - 1 - i) % 3 == 0 && i + 1 < n) out += ',';
  }
  return out;
}

std::string pqxx_version() {
#if defined(PQSCOPE_BENCH_HAVE_PQXX) && defined(PQSCOPE_BENCH_PQXX_PKG_VERSION)
  return std::string(PQSCOPE_BENCH_PQXX_PKG_VERSION) + " (headers say " PQXX_VERSION ")";
#elif defined(PQSCOPE_BENCH_HAVE_PQXX)
  return PQXX_VERSION;
#else
  return "not built";
#endif
}

struct connections {
  PGconn* floor = nullptr;
  PGconn* snprintf = nullptr;
  PGconn* wire = nullptr;
  std::unique_ptr<pqscope::connection> copy, raw, insert;
#ifdef PQSCOPE_BENCH_HAVE_PQXX
  std::unique_ptr<pqxx::connection> pqxx;
#endif
  connections() = default;
  connections(const connections&) = delete;
  connections& operator=(const connections&) = delete;
  ~connections() {
    PQfinish(floor);
    PQfinish(snprintf);
    PQfinish(wire);
  }
};

struct target_result {
  std::string name;
  std::vector<client> clients;
};

std::string to_text(sys_time t) { return pqscope::value_traits<sys_time>::to_text(t); }

target_result run_target(const target& t, const std::vector<row>& rows, const std::string& wire_text,
                         const std::string& expected, int rounds, int insert_rounds, std::int64_t warmup_rows) {
  connections cs;
  cs.floor = connect_raw(t.conninfo);
  cs.snprintf = connect_raw(t.conninfo);
  cs.wire = connect_raw(t.conninfo);
  cs.copy = std::make_unique<pqscope::connection>(t.conninfo);
  cs.raw = std::make_unique<pqscope::connection>(t.conninfo);
  cs.insert = std::make_unique<pqscope::connection>(t.conninfo);
  pqscope::connection checker{t.conninfo};

  const std::size_t row_room = max_row_bytes(rows);
  std::vector<char> buf(chunk + row_room);

  target_result out;
  out.name = t.name;
  auto raw_copy = [&](PGconn* c, const std::vector<row>& rs, char* (*format)(char*, const row&)) {
    start_copy(c);
    char* const begin = buf.data();
    char* p = begin;
    for (const row& r : rs) {
      p = format(p, r);
      if (static_cast<std::size_t>(p - begin) >= chunk) {
        put(c, begin, static_cast<std::size_t>(p - begin));
        p = begin;
      }
    }
    if (p != begin) put(c, begin, static_cast<std::size_t>(p - begin));
    copy_end_and_commit(c, static_cast<std::int64_t>(rs.size()));
  };
  out.clients.push_back({"floor: raw libpq, to_chars into 64 KiB, PQputCopyData",
                         [&](const std::vector<row>& rs) { raw_copy(cs.floor, rs, format_row); }, rounds, {}, {}, {}});
  out.clients.push_back({"raw libpq, snprintf into 64 KiB, PQputCopyData",
                         [&](const std::vector<row>& rs) { raw_copy(cs.snprintf, rs, format_row_snprintf); }, rounds,
                         {}, {}, {}});
  out.clients.push_back({"pqscope COPY: copy_in + write_row",
                         [&](const std::vector<row>& rs) {
                           pqscope::connection& c = *cs.copy;
                           pqscope::atomic(c, [&] {
                             pqscope::copy_writer w = c.copy_in(copy_sql);
                             for (const row& r : rs) w.write_row(r.id, r.name, r.qty, r.price, r.created);
                             const std::uint64_t n = w.finish();
                             if (n != rs.size())
                               throw std::runtime_error("copy_writer::finish() says " + std::to_string(n) +
                                                        " rows, expected " + std::to_string(rs.size()));
                           });
                         },
                         rounds, {}, {}, {}});
  // Not a way anyone would load these rows: the floor's formatting handed to
  // write_raw(), a row at a time, so the writer's own cost shows apart from write_row()'s
  // conversions.
  out.clients.push_back({"pqscope COPY: write_raw of the floor's text, per row (diagnostic)",
                         [&](const std::vector<row>& rs) {
                           pqscope::connection& c = *cs.raw;
                           pqscope::atomic(c, [&] {
                             pqscope::copy_writer w = c.copy_in(copy_sql);
                             char* const b = buf.data();
                             for (const row& r : rs)
                               w.write_raw(std::string_view(b, static_cast<std::size_t>(format_row(b, r) - b)));
                             if (w.finish() != rs.size()) throw std::runtime_error("write_raw: wrong row count");
                           });
                         },
                         rounds, {}, {}, {}});
#ifdef PQSCOPE_BENCH_HAVE_PQXX
  cs.pqxx = std::make_unique<pqxx::connection>(t.conninfo);
  out.clients.push_back({"libpqxx: stream_to, timestamp as text",
                         [&](const std::vector<row>& rs) {
                           pqxx::work tx(*cs.pqxx);
                           pqxx::stream_to s(tx, "bench_copy",
                                             std::vector<std::string>{"id", "name", "qty", "price", "created"});
                           for (const row& r : rs) s << std::make_tuple(r.id, r.name, r.qty, r.price, to_text(r.created));
                           s.complete();
                           tx.commit();
                         },
                         rounds, {}, {}, {}});
#endif
  out.clients.push_back({"pqscope batched INSERTs: execute() per row, flush() per 10,000",
                         [&](const std::vector<row>& rs) {
                           pqscope::connection& c = *cs.insert;
                           pqscope::transaction_options o;
                           o.batch = true;
                           pqscope::atomic(c, o, [&] {
                             std::size_t i = 0;
                             for (const row& r : rs) {
                               (void)c.execute(insert_sql, r.id, r.name, r.qty, r.price, r.created);
                               if (++i % 10000 == 0) c.flush();
                             }
                           });
                         },
                         insert_rounds, {}, {}, {}});
  out.clients.push_back({"wire limit: raw libpq, text made before timing, PQputCopyData only",
                         [&](const std::vector<row>& rs) {
                           // The warm-up loads fewer rows: their text is the start of the whole text.
                           const std::string_view all = wire_text;
                           std::size_t end = all.size();
                           if (rs.size() != rows.size()) {
                             end = 0;
                             for (std::size_t k = 0; k < rs.size(); ++k) end = all.find('\n', end) + 1;
                           }
                           PGconn* c = cs.wire;
                           start_copy(c);
                           for (std::size_t at = 0; at < end; at += chunk)
                             put(c, all.data() + at, std::min(chunk, end - at));
                           copy_end_and_commit(c, static_cast<std::int64_t>(rs.size()));
                         },
                         rounds, {}, {}, {}});

  // Newlines inside names are escaped, so the text's lines are its rows: the
  // wire client's warm-up cut above is right.
  auto truncate = [&] { (void)checker.execute("TRUNCATE bench_copy"); };
  auto verify = [&](const client& cl, const std::string& want) {
    const std::string got = checker.query_value<std::string>(check_sql);
    if (got != want)
      throw std::runtime_error(t.name + ", " + cl.name + ": the table holds (" + got + "), expected (" + want + ")");
  };

  // Warm-up: every client loads a few rows (connections, caches, the server's buffers).
  const std::vector<row> warm(rows.begin(), rows.begin() + warmup_rows);
  const std::string warm_expected = expected_check(warm);
  for (const client& cl : out.clients) {
    truncate();
    cl.load(warm);
    verify(cl, warm_expected);
  }

  const std::size_t n = out.clients.size();
  for (int k = 0; k < rounds; ++k)
    for (std::size_t j = 0; j < n; ++j) {
      client& cl = out.clients[(j + static_cast<std::size_t>(k)) % n];
      if (k >= cl.rounds) continue;
      truncate();
      const double cpu0 = process_cpu_ns();
      const auto t0 = clock_type::now();
      cl.load(rows);
      const double s = std::chrono::duration<double>(clock_type::now() - t0).count();
      const double cpu = process_cpu_ns() - cpu0;
      verify(cl, expected);
      cl.seconds.push_back(s);
      cl.rows_per_s.push_back(static_cast<double>(rows.size()) / s);
      cl.cpu_ns_per_row.push_back(cpu / static_cast<double>(rows.size()));
      std::cout << t.name << " round " << k + 1 << ": " << std::left << std::setw(70) << cl.name << std::right
                << std::setw(10) << fmt(cl.rows_per_s.back()) << " rows/s  " << fmt(s, 2) << " s  "
                << fmt(cl.cpu_ns_per_row.back()) << " ns CPU/row" << std::endl;
    }
  truncate();
  return out;
}

void usage() {
  std::cerr << "usage: pqscope_bench_copy --pgbouncer CONNINFO [--direct CONNINFO] [--out DIR] [--rows N]\n"
               "                          [--rounds R] [--insert-rounds R] [--pgbouncer-admin CONNINFO] [--note TEXT]\n";
}

}  // namespace

int main(int argc, char** argv) try {
  std::string pgbouncer, direct, out_dir, admin, note;
  std::int64_t n_rows = 1000000;
  int rounds = 3, insert_rounds = -1;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--pgbouncer") pgbouncer = value();
    else if (a == "--direct") direct = value();
    else if (a == "--pgbouncer-admin") admin = value();
    else if (a == "--out") out_dir = value();
    else if (a == "--rows") n_rows = std::stoll(value());
    else if (a == "--rounds") rounds = std::stoi(value());
    else if (a == "--insert-rounds") insert_rounds = std::stoi(value());
    else if (a == "--note") note = value();
    else if (a == "--help" || a == "-h") return usage(), 0;
    else throw std::runtime_error("unknown argument " + a);
  }
  if (pgbouncer.empty() || n_rows < 1 || rounds < 1) {
    usage();
    return 2;
  }
  if (insert_rounds < 0 || insert_rounds > rounds) insert_rounds = rounds;
  std::vector<target> targets{{"PgBouncer", with_app_name(pgbouncer, "pqscope_bench")}};
  if (!direct.empty()) targets.push_back({"direct", with_app_name(direct, "pqscope_bench")});

  const std::string load_before = load_average();
  const auto started = clock_type::now();
  std::string pg_version, pgb_version = "unknown";
  {
    pqscope::connection setup{targets.back().conninfo};
    (void)setup.execute("DROP TABLE IF EXISTS bench_copy");
    (void)setup.execute(
        "CREATE TABLE bench_copy (id bigint NOT NULL, name text NOT NULL, qty int NOT NULL, price float8 NOT NULL, "
        "created timestamptz NOT NULL)");
    pg_version = setup.query_value<std::string>("SHOW server_version");
  }
  if (!admin.empty()) {
    // The admin console speaks only the simple query protocol: PQexec.
    PGconn* pa = PQconnectdb(admin.c_str());
    if (PQstatus(pa) == CONNECTION_OK) {
      PGresult* r = PQexec(pa, "SHOW VERSION");
      if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0) pgb_version = PQgetvalue(r, 0, 0);
      PQclear(r);
    }
    PQfinish(pa);
  }

  const std::vector<row> rows = make_rows(n_rows);
  const std::string expected = expected_check(rows);
  std::string wire_text;
  {
    std::vector<char> b(max_row_bytes(rows));
    wire_text.reserve(rows.size() * 80);
    for (const row& r : rows) wire_text.append(b.data(), format_row(b.data(), r));
  }
  const std::int64_t warmup_rows = std::min<std::int64_t>(n_rows, 10000);
  std::cout << "pqscope_bench_copy: " << n_rows << " rows, " << rounds << " rounds (" << insert_rounds
            << " for batched INSERTs), " << wire_text.size() << " bytes of COPY text; libpqxx " << pqxx_version()
            << std::endl;

  std::vector<target_result> results;
  for (const target& t : targets)
    results.push_back(run_target(t, rows, wire_text, expected, rounds, insert_rounds, warmup_rows));
  const double total_s = std::chrono::duration<double>(clock_type::now() - started).count();
  {
    pqscope::connection cleanup{targets.back().conninfo};
    (void)cleanup.execute("DROP TABLE IF EXISTS bench_copy");
  }

  std::ostringstream md;
  md << "# pqscope_bench_copy\n\n"
     << grouped(static_cast<double>(n_rows))
     << " rows loaded in one transaction by each client, side by side in one process: the clients take turns "
        "each round (the first one rotating), the table is truncated before every load and checked after it "
        "(count, sums of the numbers, of the names' bytes and of the timestamps, names holding a tab, a backslash, "
        "a newline), outside the timing.\n\n"
     << "| | |\n| --- | --- |\n"
     << "| date | " << now_text() << " |\n"
     << "| CPUs (nproc) | " << cpu_count() << ", shared with PostgreSQL and PgBouncer |\n"
     << "| CPU model | " << cpu_model() << " |\n"
     << "| load average (1, 5, 15 min) | before: " << load_before << "; after: " << load_average() << " |\n";
  if (!note.empty()) md << "| note | " << note << " |\n";
  md << "| PostgreSQL | " << pg_version << " (fsync=off, synchronous_commit=off as configured by scripts/dev.sh) |\n"
     << "| PgBouncer | " << pgb_version << " (pool_mode=transaction, as configured by scripts/dev.sh) |\n"
     << "| libpq | " << PQlibVersion() << " |\n"
     << "| libpqxx | " << pqxx_version() << " |\n"
     << "| compiler | " << __VERSION__ << " |\n"
     << "| rows | " << grouped(static_cast<double>(n_rows)) << " per load, " << wire_text.size() / n_rows
     << " bytes of COPY text per row on average; table `bench_copy (id bigint, name text, qty int, price float8, "
        "created timestamptz)`, no index |\n"
     << "| rounds | " << rounds << " timed loads per client";
  if (insert_rounds != rounds) md << " (" << insert_rounds << " for the batched INSERTs)";
  md << ", after a " << grouped(static_cast<double>(warmup_rows)) << "-row warm-up load each |\n"
     << "| run time | " << fmt(total_s) << " s |\n\n";

  for (const target_result& tr : results) {
    double floor_rps = NAN, pqxx_rps = NAN;
    for (const client& cl : tr.clients) {
      if (cl.name.rfind("floor", 0) == 0) floor_rps = median(cl.rows_per_s);
      if (cl.name.rfind("libpqxx", 0) == 0) pqxx_rps = median(cl.rows_per_s);
    }
    md << (tr.name == "direct" ? std::string("## Directly to PostgreSQL") : "## Through " + tr.name) << "\n\n"
       << "| client | rows/s (median) | min – max | s per load | × floor's time | × libpqxx's time | "
          "client CPU ns / row | loads |\n"
       << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
    for (const client& cl : tr.clients) {
      if (cl.rows_per_s.empty()) {
        md << "| " << cl.name << " | not run | | | | | | 0 |\n";
        continue;
      }
      const double rps = median(cl.rows_per_s);
      const auto [lo, hi] = std::minmax_element(cl.rows_per_s.begin(), cl.rows_per_s.end());
      md << "| " << cl.name << " | " << grouped(rps) << " | " << grouped(*lo) << " – " << grouped(*hi) << " | "
         << fmt(median(cl.seconds), 2) << " | " << fmt(floor_rps / rps, 2) << " | " << fmt(pqxx_rps / rps, 2)
         << " | " << fmt(median(cl.cpu_ns_per_row)) << " | " << cl.rows_per_s.size() << " |\n";
    }
    md << "\n";
  }
  md << "Times are whole transactions (BEGIN to COMMIT) on a connection opened before the clock starts; "
        "× floor's time is the floor's median rows/s over the client's (lower is better; the wire limit's is "
        "below 1). Client CPU is CLOCK_PROCESS_CPUTIME_ID over the load (user and system time of this "
        "single-threaded process), per row; the server's and PgBouncer's time is not in it. libpqxx 6.4 "
        "converts no std::chrono time point, so its timestamp is passed as text made in the loop by "
        "pqscope::value_traits<time_point>::to_text (the conversion pqscope's clients use); the floor formats "
        "it with its own digits (the snprintf client with snprintf). The wire limit sends COPY text made before the clock starts (the floor's text): "
        "what the server, PgBouncer and the socket allow, with no formatting at all. The write_raw row is a "
        "diagnostic, not a way to load these rows: the floor's formatting handed to copy_writer::write_raw() a row "
        "at a time, so that the writer's own cost shows apart from write_row()'s conversions.\n";

  std::cout << "\n" << md.str();
  if (!out_dir.empty()) {
    std::ofstream f(out_dir + "/bench_copy.md");
    f << md.str();
    std::cout << "wrote " << out_dir << "/bench_copy.md\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "FAIL " << e.what() << "\n";
  return 1;
}
