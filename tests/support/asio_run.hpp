#pragma once
// Running pqscope::asio code in a test: one io_context on the test's thread, a
// coroutine driven to its end, and its exception rethrown to Boost.Test.

#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include <pqscope/asio.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace pqtest {

namespace net = boost::asio;
using net::awaitable;
using net::use_awaitable;

// Runs the coroutine, and everything else on io, until it ends (then io stops, so
// that a coroutine left running, a heartbeat say, does not keep it going); returns
// its value or rethrows its exception.
template <class T>
T run_coro(net::io_context& io, awaitable<T> a) {
  std::optional<T> value;
  std::exception_ptr error;
  bool done = false;
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        try {
          value.emplace(co_await std::move(a));
        } catch (...) {
          error = std::current_exception();
        }
        done = true;
        io.stop();
      },
      [](const std::exception_ptr&) {});
  io.restart();
  io.run();
  if (!done) throw std::runtime_error("the coroutine did not finish (io_context ran out of work)");
  if (error) std::rethrow_exception(error);
  return std::move(*value);
}

inline void run_coro(net::io_context& io, awaitable<void> a) {
  std::exception_ptr error;
  bool done = false;
  net::co_spawn(
      io,
      [&]() -> awaitable<void> {
        try {
          co_await std::move(a);
        } catch (...) {
          error = std::current_exception();
        }
        done = true;
        io.stop();
      },
      [](const std::exception_ptr&) {});
  io.restart();
  io.run();
  if (!done) throw std::runtime_error("the coroutine did not finish (io_context ran out of work)");
  if (error) std::rethrow_exception(error);
}

// A connected connection.
inline awaitable<pqscope::asio::connection> connect_async(std::string conninfo, pqscope::connection_options o = {}) {
  pqscope::asio::connection c{co_await net::this_coro::executor, std::move(conninfo), std::move(o)};
  co_await c.async_connect(use_awaitable);
  co_return c;
}

inline awaitable<void> sleep_for(std::chrono::milliseconds d) {
  net::steady_timer t{co_await net::this_coro::executor};
  t.expires_after(d);
  co_await t.async_wait(use_awaitable);
}

// How a coroutine ended, as a string that reads well in a failed check.
template <class Fn>
awaitable<std::string> outcome_of(Fn fn) {
  std::string out = "returned";
  try {
    co_await fn();
  } catch (const pqscope::batch_failed& e) {
    out = std::string("batch_failed: ") + e.what();
  } catch (const pqscope::transaction_aborted& e) {
    out = "transaction_aborted[" + e.first_sqlstate() + "]";
  } catch (const pqscope::unique_violation&) {
    out = "unique_violation";
  } catch (const pqscope::query_canceled&) {
    out = "query_canceled";
  } catch (const pqscope::in_doubt_error&) {
    out = "in_doubt_error";
  } catch (const pqscope::connection_error&) {
    out = "connection_error";
  } catch (const pqscope::usage_error& e) {
    out = std::string("usage_error: ") + e.what();
  } catch (const std::exception& e) {
    out = std::string("other: ") + e.what();
  }
  co_return out;
}

}  // namespace pqtest
