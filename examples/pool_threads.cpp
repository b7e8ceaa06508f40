// A connection pool shared by threads, talking to PostgreSQL directly: 8 threads each
// lease a connection 50 times and run one atomic transfer per lease. The pool opens at
// most 4 connections and hands them round; a lease goes back to the pool when it ends.
// Behind PgBouncer use pqscope::database and connect() instead: PgBouncer already pools,
// and a second pool in front of it would only pin server connections.
// Usage: pool_threads DIRECT_CONNINFO   (PostgreSQL itself, not PgBouncer)
#include <pqscope/pqscope.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <iostream>
#include <random>
#include <thread>
#include <vector>

namespace {

constexpr int threads = 8;
constexpr int leases_per_thread = 50;
constexpr int accounts = 10;
constexpr long opening_cents = 1000;

void transfer(pqscope::connection& c, int from, int to, long cents) {
  // Rows are updated in id order, so two concurrent transfers cannot deadlock.
  const int first = std::min(from, to), second = std::max(from, to);
  for (int id : {first, second})
    c.execute("UPDATE pool_threads_account SET cents = cents + $1 WHERE id = $2", id == to ? cents : -cents, id);
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: pool_threads DIRECT_CONNINFO\n";
    return 2;
  }
  pqscope::pool_options options;
  options.max_size = 4;  // fewer connections than threads: the others wait in acquire()
  options.acquire_timeout = std::chrono::seconds(5);
  pqscope::pool pool{argv[1], options};

  {
    auto c = pool.acquire();
    pqscope::atomic(*c, [&](pqscope::connection& conn) {
      conn.set_local("client_min_messages", "warning");
      conn.execute("DROP TABLE IF EXISTS pool_threads_account");
      conn.execute("CREATE TABLE pool_threads_account(id int PRIMARY KEY, cents bigint NOT NULL)");
      conn.execute("INSERT INTO pool_threads_account SELECT n, $2 FROM generate_series(1, $1) n", accounts,
                   opening_cents);
    });
  }  // the lease ends: its connection is idle in the pool again

  std::atomic<int> committed{0}, failed{0};
  std::vector<std::thread> workers;
  workers.reserve(threads);
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::minstd_rand rng(static_cast<unsigned>(t) + 1);
      std::uniform_int_distribution<int> account(1, accounts);
      for (int i = 0; i < leases_per_thread; ++i) {
        const int from = account(rng), to = from % accounts + 1;
        try {
          auto c = pool.acquire();  // one connection per unit of work, never shared by two threads
          pqscope::atomic(*c, [&](pqscope::connection& conn) { transfer(conn, from, to, 7); });
          ++committed;
        } catch (const pqscope::error& e) {
          std::cerr << "thread " << t << ": " << e.what() << "\n";
          ++failed;
        }
      }
    });
  }
  for (auto& w : workers) w.join();

  auto c = pool.acquire();
  long total = c->query_value<long>("SELECT sum(cents) FROM pool_threads_account");
  c->execute("DROP TABLE pool_threads_account");
  const auto s = pool.stats();
  std::cout << threads << " threads x " << leases_per_thread << " leases: " << committed << " transfers committed, "
            << failed << " failed, total " << total << " cents\n";
  std::cout << "pool: size " << pool.size() << " of max " << pool.max_size() << ", " << s.created
            << " connections opened, " << s.reused << " leases reused an idle one, " << s.timeouts << " timeouts\n";
  if (failed != 0 || total != accounts * opening_cents || s.created > options.max_size) {
    std::cerr << "pool_threads: expected every transfer to commit and the total to be conserved\n";
    return 1;
  }
  std::cout << "pool served " << s.created + s.reused << " leases with " << s.created << " connections\n";
} catch (const pqscope::error& e) {
  std::cerr << "pool_threads: " << e.what() << "\n";
  return 1;
}
