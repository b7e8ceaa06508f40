#pragma once
// What the asio pool tests share (asio_pool.cpp, asio_cancellation.cpp): a pool
// whose sessions can be found by name, and ways to wait for what a pool does on
// its connections' strands.

#include <chrono>
#include <optional>
#include <string>

#include "asio_run.hpp"
#include "servers.hpp"

namespace pqtest::pool_helpers {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
namespace pa = pqscope::asio;
namespace net = boost::asio;
using pqtest::awaitable;
using pqtest::use_awaitable;

inline pqtest::target direct() { return pqtest::targets().front(); }

inline pqscope::pool_options fast_options() {
  pqscope::pool_options o;
  o.acquire_timeout = 2s;
  return o;
}

// A pool whose sessions can be found by name in pg_stat_activity.
struct app_pool {
  std::string app = pqtest::unique_name("apool");
  pa::pool pool;
  app_pool(net::io_context& io, const pqscope::pool_options& o = fast_options())
      : pool(io, pqtest::with_app_name(direct(), app), o) {}
};

inline long backends(const std::string& app) {
  return pqtest::shared_observer().query_value<long>(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app);
}

inline bool backend_alive(int pid) {
  return pqtest::shared_observer().query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) > 0;
}

inline awaitable<int> backend_pid(pa::connection& c) {
  co_return co_await c.async_query_value<int>("SELECT pg_backend_pid()", use_awaitable);
}

// A lease comes back asynchronously (on its connection's strand): wait for the pool to see it.
template <class Pred>
awaitable<bool> eventually(Pred pred, std::chrono::milliseconds limit = 5s) {
  const auto until = steady::now() + limit;
  while (!pred()) {
    if (steady::now() > until) co_return false;
    co_await pqtest::sleep_for(5ms);
  }
  co_return true;
}

// How an acquire ended; a lease it got is handed to `keep` when given, else returned at once.
inline awaitable<std::string> try_acquire(pa::pool& p, std::optional<pa::lease>* keep = nullptr) {
  try {
    pa::lease l = co_await p.async_acquire(use_awaitable);
    if (keep != nullptr) keep->emplace(std::move(l));
    co_return "leased";
  } catch (const pqscope::pool_timeout&) {
    co_return "pool_timeout";
  } catch (const pqscope::usage_error&) {
    co_return "usage_error";
  } catch (const pqscope::query_canceled&) {
    co_return "query_canceled";
  } catch (const pqscope::connection_error&) {
    co_return "connection_error";
  } catch (const std::exception& e) {
    co_return std::string("other: ") + e.what();
  }
}

inline double seconds_since(steady::time_point t) { return std::chrono::duration<double>(steady::now() - t).count(); }

}  // namespace pqtest::pool_helpers
