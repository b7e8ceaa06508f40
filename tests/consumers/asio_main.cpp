// A minimal pqscope::asio consumer (C++20 coroutines), shared by the projects next to
// this file that take the asio target, and compiled with pkg-config's flags.
//
//   consumer_asio --version [EXPECTED]   no server: a coroutine connects where no server
//                                        is and sees connection_error; print the version
//                                        (exit 1 if it is not EXPECTED)
//   consumer_asio CONNINFO               move money between two accounts
#include <pqscope/asio.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <iostream>
#include <string>
#include <string_view>

namespace {

using boost::asio::awaitable;
using boost::asio::use_awaitable;

std::string version() {
  return std::to_string(PQSCOPE_VERSION_MAJOR) + "." + std::to_string(PQSCOPE_VERSION_MINOR) + "." +
         std::to_string(PQSCOPE_VERSION_PATCH);
}

awaitable<std::string> refused_connect() {
  // No server listens on this socket directory: the connect fails without blocking.
  pqscope::asio::connection c{co_await boost::asio::this_coro::executor,
                              "host=/nonexistent-pqscope-socket-dir port=1 connect_timeout=2"};
  try {
    co_await c.async_connect(use_awaitable);
  } catch (const pqscope::connection_error& e) {
    co_return e.what();
  }
  co_return std::string();
}

awaitable<long> transfer(std::string conninfo) {
  pqscope::asio::connection c{co_await boost::asio::this_coro::executor, std::move(conninfo)};
  co_await c.async_connect(use_awaitable);
  co_return co_await pqscope::asio::async_atomic(c, [&]() -> awaitable<long> {
    // Dropped at COMMIT: nothing is left on a session PgBouncer lends to others.
    co_await c.async_execute("CREATE TEMP TABLE account(id int PRIMARY KEY, cents bigint) ON COMMIT DROP",
                             use_awaitable);
    co_await c.async_execute("INSERT INTO account VALUES (1, 1000), (2, 0)", use_awaitable);
    co_await c.async_execute({"UPDATE account SET cents = cents - $1 WHERE id = $2", 250, 1}, use_awaitable);
    co_await c.async_execute({"UPDATE account SET cents = cents + $1 WHERE id = $2", 250, 2}, use_awaitable);
    co_return co_await c.async_query_value<long>("SELECT sum(cents) FROM account", use_awaitable);
  });
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view arg = argc > 1 ? argv[1] : "--version";
  boost::asio::io_context io;
  int status = 1;
  boost::asio::co_spawn(
      io,
      [&]() -> awaitable<void> {
        try {
          if (arg == "--version") {
            const std::string refused = co_await refused_connect();
            if (refused.empty()) {
              std::cerr << "consumer_asio: connecting where no server is did not throw connection_error\n";
              co_return;
            }
            std::cout << "pqscope " << version() << ", asio\n";
            status = argc > 2 && version() != argv[2] ? 1 : 0;
          } else {
            const long total = co_await transfer(std::string(arg));
            std::cout << "total: " << total << " cents\n";
            status = 0;
          }
        } catch (const pqscope::error& e) {
          std::cerr << "consumer_asio: " << e.what() << "\n";
        }
      },
      boost::asio::detached);
  io.run();
  return status;
}
