// An asynchronous service: many clients on one thread, each a coroutine with its own
// connection, running transfers whose nested scopes know nothing of each other.
// Usage: async_service [CONNINFO] [CLIENTS]   (default: postgresql://app@127.0.0.1:6432/app, 64)
#include <pqscope/asio.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>
#include <stdexcept>
#include <string>

namespace net = boost::asio;
using net::awaitable;
using net::use_awaitable;
using pqscope::asio::async_atomic;

struct insufficient_funds : std::runtime_error {
  insufficient_funds() : std::runtime_error("insufficient funds") {}
};

// Alone: a transaction of its own. Inside another scope: a savepoint.
awaitable<void> deposit(pqscope::asio::connection& c, int id, long cents) {
  co_await async_atomic(c, [&]() -> awaitable<void> {
    const long balance = co_await c.async_query_value<long>(
        {"UPDATE async_account SET cents = cents + $1 WHERE id = $2 RETURNING cents", cents, id}, use_awaitable);
    if (balance < 0) throw insufficient_funds();  // rolled back (awaited), then rethrown
  });
}

awaitable<void> transfer(pqscope::asio::connection& c, int from, int to, long cents) {
  co_await async_atomic(c, [&]() -> awaitable<void> {
    co_await deposit(c, to, cents);
    co_await deposit(c, from, -cents);  // fails: the credit above is undone with it
  });
}

// One client: ten transfers from one of accounts 6..10 to one of 1..5 (rows are
// locked in id order: no deadlocks); serialization failures would be retried.
awaitable<void> client(std::string conninfo, int n, int& committed, int& refused) {
  pqscope::asio::connection c{co_await net::this_coro::executor, conninfo};
  co_await c.async_connect(use_awaitable);
  pqscope::transaction_options o;
  o.retries = 10;
  for (int i = 0; i < 10; ++i) {
    try {
      co_await async_atomic(c, o, [&]() -> awaitable<void> { co_await transfer(c, 6 + n % 5, 1 + i % 5, 10); });
      ++committed;
    } catch (const insufficient_funds&) {
      ++refused;
    }
  }
}

awaitable<long> total(const std::string& conninfo, bool reset) {
  pqscope::asio::connection c{co_await net::this_coro::executor, conninfo};
  co_await c.async_connect(use_awaitable);
  if (reset) {
    co_await c.async_execute("CREATE TABLE IF NOT EXISTS async_account(id int PRIMARY KEY, cents bigint)", use_awaitable);
    co_await c.async_execute("DELETE FROM async_account", use_awaitable);
    co_await c.async_execute("INSERT INTO async_account SELECT g, 1000 FROM generate_series(1, 10) g", use_awaitable);
  }
  co_return co_await c.async_query_value<long>("SELECT sum(cents) FROM async_account", use_awaitable);
}

int main(int argc, char** argv) try {
  const std::string conninfo = argc > 1 ? argv[1] : "postgresql://app@127.0.0.1:6432/app";
  const int clients = argc > 2 ? std::stoi(argv[2]) : 64;
  net::io_context io;  // one thread: the io.run() calls below
  auto rethrow = [](const std::exception_ptr& e, auto&&...) {
    if (e) std::rethrow_exception(e);  // out of io.run(), to main
  };
  long before = 0, after = 0;
  net::co_spawn(io, total(conninfo, true), [&](const std::exception_ptr& e, long v) {
    rethrow(e);
    before = v;
  });
  io.run();
  int committed = 0, refused = 0;
  for (int n = 0; n < clients; ++n) net::co_spawn(io, client(conninfo, n, committed, refused), rethrow);
  io.restart();
  io.run();  // every client at once, on this thread
  net::co_spawn(io, total(conninfo, false), [&](const std::exception_ptr& e, long v) {
    rethrow(e);
    after = v;
  });
  io.restart();
  io.run();
  std::cout << clients << " clients on one thread: " << committed << " transfers committed, " << refused
            << " refused; total " << after << " cents (before: " << before << ")\n";
  return committed + refused == clients * 10 && after == before ? 0 : 1;
} catch (const pqscope::error& e) {
  std::cerr << "async_service: " << e.what() << "\n";
  return 1;
}
