// pqscope_bench_async: the contended transfer through PgBouncer (pool of 4 server
// connections), pqscope::asio on one thread with 16, 64 and 256 coroutines against
// the blocking pqscope with 16 threads. Every client has its own connection and
// runs the bench's transfer shape: an outer scope calling two nested scopes, one
// UPDATE each, accounts in id order (no deadlocks); three round trips per
// transaction in both. Reports transactions per second and the client's CPU time
// per transaction (the whole process: every thread, every system call).
//
//   pqscope_bench_async --pgbouncer CONNINFO [--seconds S] [--rounds R] [--out DIR]
//
// The configurations take turns in slices of S / R seconds, R rounds, so that
// machine noise hits all of them alike. scripts/dev.sh bench runs it after
// pqscope_bench and writes bench/results/bench_async.md.

#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/asio.hpp>
#include <pqscope/pqscope.hpp>

#include "report.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace {

using bench::cpu_count;
using bench::fmt;
namespace net = boost::asio;
namespace pa = pqscope::asio;
using net::awaitable;
using net::use_awaitable;
using clock_type = std::chrono::steady_clock;

constexpr int account_count = 1000;
const char* const update_sql = "UPDATE bench_async_accounts SET balance = balance + $1 WHERE id = $2";

double process_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

struct picker {
  std::mt19937 rng;
  std::uniform_int_distribution<int> id{1, account_count};
  explicit picker(unsigned seed) : rng(seed) {}
  std::pair<int, int> next() {
    int a = id(rng), b = id(rng);
    while (b == a) b = id(rng);
    return {std::min(a, b), std::max(a, b)};
  }
  int amount() { return static_cast<int>(rng() % 2) == 0 ? 1 : -1; }
};

// ---- the blocking client ------------------------------------------------------------

void move_money(pqscope::connection& c, int id, int delta) {
  pqscope::atomic(c, [&](pqscope::connection& cc) { cc.execute(update_sql, delta, id); });
}
void transfer(pqscope::connection& c, int first, int second, int amount) {
  pqscope::atomic(c, [&](pqscope::connection& cc) {
    move_money(cc, first, -amount);
    move_money(cc, second, amount);
  });
}

// ---- the asynchronous client ------------------------------------------------------------

awaitable<void> move_money(pa::connection& c, int id, int delta) {
  co_await pa::async_atomic(c, [&]() -> awaitable<void> {
    co_await c.async_execute({update_sql, delta, id}, use_awaitable);
  });
}
awaitable<void> transfer(pa::connection& c, int first, int second, int amount) {
  co_await pa::async_atomic(c, [&]() -> awaitable<void> {
    co_await move_money(c, first, -amount);
    co_await move_money(c, second, amount);
  });
}

struct slice_result {
  long transactions = 0, errors = 0;
  double seconds = 0, cpu_us = 0;
  std::vector<double> latency_us;
  std::string first_error;
};

// n blocking threads, each with its connection, for `seconds`.
slice_result run_threads(std::vector<std::unique_ptr<pqscope::connection>>& conns, double seconds, unsigned seed) {
  slice_result out;
  const int n = static_cast<int>(conns.size());
  std::vector<slice_result> per(static_cast<std::size_t>(n));
  std::atomic<bool> go{false};
  clock_type::time_point deadline;
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i)
    threads.emplace_back([&, i] {
      auto& r = per[static_cast<std::size_t>(i)];
      picker pick(seed + static_cast<unsigned>(i) * 31u);
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      while (clock_type::now() < deadline) {
        auto [a, b] = pick.next();
        const auto t0 = clock_type::now();
        try {
          transfer(*conns[static_cast<std::size_t>(i)], a, b, pick.amount());
          ++r.transactions;
          r.latency_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
        } catch (const std::exception& e) {
          if (r.errors++ == 0) r.first_error = e.what();
        }
      }
    });
  const double cpu0 = process_cpu_us();
  const auto start = clock_type::now();
  deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
  go.store(true, std::memory_order_release);
  for (auto& t : threads) t.join();
  out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  out.cpu_us = process_cpu_us() - cpu0;
  for (auto& r : per) {
    out.transactions += r.transactions;
    out.errors += r.errors;
    if (out.first_error.empty()) out.first_error = r.first_error;
    out.latency_us.insert(out.latency_us.end(), r.latency_us.begin(), r.latency_us.end());
  }
  return out;
}

// n coroutines on this thread, each with its connection, for `seconds`.
slice_result run_coroutines(net::io_context& io, std::vector<std::unique_ptr<pa::connection>>& conns,
                            double seconds, unsigned seed) {
  slice_result out;
  const auto start = clock_type::now();
  const auto deadline = start + std::chrono::duration_cast<clock_type::duration>(std::chrono::duration<double>(seconds));
  const double cpu0 = process_cpu_us();
  for (std::size_t i = 0; i < conns.size(); ++i)
    net::co_spawn(
        io,
        [&, i]() -> awaitable<void> {
          picker pick(seed + static_cast<unsigned>(i) * 31u);
          pa::connection& c = *conns[i];
          while (clock_type::now() < deadline) {
            auto [a, b] = pick.next();
            const auto t0 = clock_type::now();
            try {
              co_await transfer(c, a, b, pick.amount());
              ++out.transactions;
              out.latency_us.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - t0).count());
            } catch (const std::exception& e) {
              if (out.errors++ == 0) out.first_error = e.what();
            }
          }
        },
        net::detached);
  io.restart();
  io.run();
  out.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  out.cpu_us = process_cpu_us() - cpu0;
  return out;
}

struct row {
  std::string name;
  int clients = 0;
  bool async = false;
  slice_result total;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(p * static_cast<double>(v.size() - 1))];
}

std::string with_app_name(const std::string& conninfo) {
  // One name for every client: PgBouncer 1.18 sends a hidden SET when the next
  // client's name differs from the last one's (see bench.cpp).
  return conninfo + " application_name=pqscope_bench";
}

void usage() {
  std::cerr << "usage: pqscope_bench_async --pgbouncer CONNINFO [--seconds S] [--rounds R] [--out DIR]\n";
}

}  // namespace

int main(int argc, char** argv) try {
  std::string conninfo, out_dir;
  double seconds = 6;
  int rounds = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--pgbouncer") conninfo = value();
    else if (a == "--seconds") seconds = std::stod(value());
    else if (a == "--rounds") rounds = std::stoi(value());
    else if (a == "--out") out_dir = value();
    else if (a == "--help" || a == "-h") return usage(), 0;
    else if (a == "--direct" || a == "--pgbouncer-admin") value();  // bench/run.sh passes these to both benches
    else throw std::runtime_error("unknown argument " + a);
  }
  if (conninfo.empty()) {
    usage();
    return 2;
  }
  conninfo = with_app_name(conninfo);
  {
    pqscope::connection setup{conninfo};
    setup.execute("DROP TABLE IF EXISTS bench_async_accounts");
    setup.execute("CREATE TABLE bench_async_accounts (id int PRIMARY KEY, balance bigint NOT NULL)");
    setup.execute("INSERT INTO bench_async_accounts SELECT g, 0 FROM generate_series(1, $1) g", account_count);
  }

  net::io_context io;
  std::vector<row> rows{{"pqscope, blocking", 16, false, {}},
                        {"pqscope::asio, one thread", 16, true, {}},
                        {"pqscope::asio, one thread", 64, true, {}},
                        {"pqscope::asio, one thread", 256, true, {}}};
  std::vector<std::unique_ptr<pqscope::connection>> sync_conns;
  for (int i = 0; i < 16; ++i) sync_conns.push_back(std::make_unique<pqscope::connection>(conninfo));
  std::vector<std::vector<std::unique_ptr<pa::connection>>> async_conns(rows.size());
  for (std::size_t r = 1; r < rows.size(); ++r)
    for (int i = 0; i < rows[r].clients; ++i)
      async_conns[r].push_back(std::make_unique<pa::connection>(io.get_executor(), conninfo));
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        for (auto& set : async_conns)
          for (auto& c : set) co_await c->async_connect(use_awaitable);
      },
      [](const std::exception_ptr& e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();

  auto slice = [&](std::size_t r, double s, unsigned seed) {
    return rows[r].async ? run_coroutines(io, async_conns[r], s, seed) : run_threads(sync_conns, s, seed);
  };
  for (std::size_t r = 0; r < rows.size(); ++r) (void)slice(r, 0.5, 1);  // warm-up
  const double each = seconds / rounds;
  for (int k = 0; k < rounds; ++k)
    for (std::size_t j = 0; j < rows.size(); ++j) {
      const std::size_t r = (j + static_cast<std::size_t>(k)) % rows.size();
      slice_result s = slice(r, each, 100u + static_cast<unsigned>(k));
      row& w = rows[r];
      w.total.transactions += s.transactions;
      w.total.errors += s.errors;
      w.total.seconds += s.seconds;
      w.total.cpu_us += s.cpu_us;
      if (w.total.first_error.empty()) w.total.first_error = s.first_error;
      w.total.latency_us.insert(w.total.latency_us.end(), s.latency_us.begin(), s.latency_us.end());
    }

  long balance = 0;
  {
    pqscope::connection check{conninfo};
    balance = check.query_value<long>("SELECT sum(balance) FROM bench_async_accounts");
  }

  std::ostringstream md;
  md << "# pqscope_bench_async\n\n"
     << "Contended transfer (an outer scope calling two nested scopes, one UPDATE each; 3 round trips) through "
        "PgBouncer, pool of 4 server connections; every client has its own connection. "
     << rounds << " rounds, " << fmt(seconds, 1) << " s per configuration in " << fmt(each, 1)
     << " s turns. Client CPU: the whole process (CLOCK_PROCESS_CPUTIME_ID) per committed transaction. Machine: "
     << cpu_count() << " CPUs, shared with PostgreSQL and PgBouncer.\n\n"
     << "| client | clients | threads | tx/s | client CPU µs / tx | latency p50 µs | p99 µs | errors |\n"
     << "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n";
  bool failed = balance != 0;
  for (const row& w : rows) {
    const double tps = w.total.transactions / w.total.seconds;
    const double cpu = w.total.transactions > 0 ? w.total.cpu_us / static_cast<double>(w.total.transactions) : NAN;
    md << "| " << w.name << " | " << w.clients << " | " << (w.async ? 1 : w.clients) << " | " << fmt(tps) << " | "
       << fmt(cpu, 1) << " | " << fmt(percentile(w.total.latency_us, 0.5)) << " | "
       << fmt(percentile(w.total.latency_us, 0.99)) << " | " << w.total.errors << " |\n";
    if (w.total.errors != 0) {
      failed = true;
      std::cerr << "FAIL " << w.name << " x" << w.clients << ": " << w.total.errors << " errors, first: "
                << w.total.first_error << "\n";
    }
  }
  md << "\nSum of balances afterwards: " << balance << " (0 expected: every transfer moves money, none creates it).\n";
  std::cout << md.str();
  if (!out_dir.empty()) {
    std::ofstream f(out_dir + "/bench_async.md");
    f << md.str();
    std::cout << "wrote " << out_dir << "/bench_async.md\n";
  }
  return failed ? 1 : 0;
} catch (const std::exception& e) {
  std::cerr << "FAIL " << e.what() << "\n";
  return 1;
}
