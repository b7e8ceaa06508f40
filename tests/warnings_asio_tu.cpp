// Compiled (never run) by warnings.cmake, C++20 only, with -Wall -Wextra -Wpedantic
// -Werror: <pqscope/asio.hpp> and every public template in it, with coroutines and
// with plain callbacks as completion tokens.
#include <pqscope/asio.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace {

namespace net = boost::asio;
namespace pa = pqscope::asio;
using net::awaitable;
using net::use_awaitable;

// g++ 12 at -O2 reports a false -Wmismatched-new-delete where it frees some of this
// file's own coroutine frames (Boost 1.74's awaitable has its own operator
// new/delete pair). From here on only: the header above is still checked.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif

struct point {
  int x = 0, y = 0;
};

}  // namespace

template <>
struct pqscope::value_traits<point> {
  static constexpr unsigned oid = 600;
  static std::string to_text(const point& p) { return "(" + std::to_string(p.x) + "," + std::to_string(p.y) + ")"; }
  static point from_text(std::string_view s) {
    if (s.empty()) throw conversion_error("empty point");
    return point{};
  }
};

namespace {

awaitable<long> statements(pa::connection& c) {
  const std::string s = "text";
  const std::string_view sv = "view";
  const char* cs = "c string";
  char buf[] = "array";
  const std::optional<int> some = 1, none;
  const std::optional<std::string_view> osv = std::string_view("x");
  long sum = 0;
  pqscope::result r = co_await c.async_execute("SELECT 1", use_awaitable);
  r = co_await c.async_execute(std::string("SELECT $1"), use_awaitable);
  r = co_await c.async_execute(std::string_view("SELECT 1"), use_awaitable);
  r = co_await c.async_execute({"SELECT $1, $2, $3, $4, $5", s, sv, cs, buf, "literal"}, use_awaitable);
  r = co_await c.async_execute({"SELECT $1, $2, $3, $4, $5", true, 2L, 3LL, 4U, std::uint64_t{5}}, use_awaitable);
  r = co_await c.async_execute({std::string("SELECT $1, $2"), 1.5, 2.5F}, use_awaitable);
  r = co_await c.async_execute({"SELECT $1, $2, $3, $4, $5", some, none, osv, nullptr, std::nullopt}, use_awaitable);
  r = co_await c.async_execute({"SELECT $1", point{1, 2}}, use_awaitable);
  r = co_await c.async_execute(pqscope::allow_session_state("LISTEN x"), use_awaitable);
  const pa::query q{"SELECT $1::int", 3};
  sum += static_cast<long>(q.param_count() + q.text().size() + (q.session_state_allowed() ? 1 : 0));
  sum += co_await c.async_query_value<int>(q, use_awaitable);
  sum += co_await c.async_query_value<long>({"SELECT $1::bigint", 2L}, use_awaitable);
  sum += static_cast<long>((co_await c.async_query_value<std::string>("SELECT 'x'", use_awaitable)).size());
  sum += (co_await c.async_query_value<std::optional<int>>("SELECT NULL::int", use_awaitable)).value_or(0);
  sum += (co_await c.async_query_value<point>("SELECT point(1, 2)", use_awaitable)).x;
  for (const auto& row : r) {
    auto [a] = row.as<std::string>();
    sum += static_cast<long>(a.size());
  }
  co_await c.async_flush(use_awaitable);
  co_return sum;
}

awaitable<int> inner(pa::connection& c) {
  co_return co_await pa::async_atomic(c, [](pa::connection& cc) -> awaitable<int> {
    co_return co_await cc.async_query_value<int>("SELECT 1", use_awaitable);
  });
}

awaitable<void> scopes(pa::connection& c) {
  {
    pa::transaction tx{c};
    pqscope::transaction_options o;
    o.isolation = pqscope::isolation::serializable;
    o.read_only = true;
    o.statement_timeout = std::chrono::milliseconds(100);
    pa::transaction nested{c, o};
    c.set_local("work_mem", "64MB");
    c.on_commit([] {});
    c.on_rollback([&c] { (void)c.depth(); });
    pa::transaction moved{std::move(nested)};
    co_await moved.async_rollback(use_awaitable);
    if (tx.is_outermost()) co_await tx.async_commit(use_awaitable);
  }
  co_await pa::async_atomic(c, []() -> awaitable<void> { co_return; });
  co_await pa::async_atomic(c, [](pa::connection& cc) -> awaitable<void> {
    co_await cc.async_execute("SELECT 1", use_awaitable);
  });
  const int v = co_await pa::async_atomic(c, [&]() -> awaitable<int> { co_return co_await inner(c); });
  pqscope::transaction_options retry;
  retry.retries = 3;
  retry.batch = true;
  retry.resolve_in_doubt = true;
  const std::string s = co_await pa::async_atomic(c, retry, [&](pa::connection& cc) -> awaitable<std::string> {
    co_return co_await cc.async_query_value<std::string>("SELECT 'x'", use_awaitable);
  });
  const auto t = co_await pa::async_atomic(c, retry, [&]() -> awaitable<std::tuple<int, std::string>> {
    co_return std::tuple<int, std::string>{v, s};
  });
  (void)t;
  int calls = 0;
  co_await pa::async_atomic(c, [&calls, n = 0]() mutable -> awaitable<void> {
    calls = ++n;
    co_return;
  });
}

awaitable<void> everything(pa::connection& c) {
  co_await c.async_connect(use_awaitable);
  const long sum = co_await statements(c);
  co_await scopes(c);
  c.set_timeout(std::chrono::milliseconds(500));
  c.set_cancel_wait(std::chrono::milliseconds(500));
  c.cancel();
  (void)c.timeout();
  (void)c.cancel_wait();
  (void)c.in_transaction();
  (void)c.stats().round_trips;
  (void)c.application_name();
  (void)c.native_handle();
  (void)c.conninfo();
  (void)c.options();
  (void)c.is_open();
  (void)c.get_executor();
  (void)sum;
}

awaitable<void> replicas(pa::replica_set& rs) {
  pqscope::wal_position seen;
  co_await rs.async_write(seen, [](pa::connection& c) -> awaitable<void> {
    co_await c.async_execute("SELECT 1", use_awaitable);
  });
  pqscope::transaction_options o;
  o.replica_wait = std::chrono::milliseconds(100);
  const int w = co_await rs.async_write([]() -> awaitable<int> { co_return 1; }, o);
  const long r = co_await rs.async_read(
      seen,
      [](pa::connection& c) -> awaitable<long> {
        co_return co_await c.async_query_value<long>("SELECT 1", use_awaitable);
      },
      o);
  co_await rs.async_read([]() -> awaitable<void> { co_return; });
  const std::string s = co_await rs.async_read(pqscope::wal_position{}, [&](pa::connection& c) -> awaitable<std::string> {
    co_return co_await c.async_query_value<std::string>("SELECT 'x'", use_awaitable);
  });
  pa::lease p = co_await rs.async_primary(use_awaitable);
  pa::lease st = co_await rs.async_standby(use_awaitable);
  rs.async_standby([](std::exception_ptr, pa::lease) {});
  const pqscope::replica_set_stats stats = rs.stats();
  (void)(w + r + static_cast<long>(s.size() + stats.reads_on_standby + rs.standbys() + rs.primary_pool().size() +
                                   rs.standby_pool(0).size()));
  (void)rs.get_executor();
  co_await rs.async_shutdown(use_awaitable);
  rs.async_shutdown([](const std::exception_ptr&) {});
  rs.close();
}

// Plain callbacks.
void callbacks(pa::connection& c) {
  c.async_connect([&c](std::exception_ptr e) {
    if (e) return;
    c.async_execute({"SELECT $1", 1}, [&c](std::exception_ptr, pqscope::result r) {
      (void)r.size();
      c.async_query_value<int>("SELECT 1", [&c](std::exception_ptr, int v) {
        (void)v;
        c.async_flush([](const std::exception_ptr&) {});
      });
    });
  });
}

}  // namespace

int main(int argc, char** argv) {
  net::io_context io;
  const pqscope::database db{argc > 1 ? argv[1] : "postgresql://localhost/postgres"};
  pa::connection c{io.get_executor(), db.conninfo()};
  pa::connection d{io, db.conninfo(), db.options()};
  pa::connection e{io.get_executor(), db};
  d = std::move(e);
  net::co_spawn(io, everything(c), net::detached);
  pqscope::replica_set_options ro;
  ro.fallback_to_primary = false;
  pa::replica_set rs{io, db.conninfo(), {db.conninfo()}, ro};
  net::co_spawn(io, replicas(rs), net::detached);
  callbacks(d);
  io.run();
  return 0;
}
