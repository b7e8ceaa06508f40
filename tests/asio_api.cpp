// pqscope::asio: the connection, its operations and scopes, directly and through
// PgBouncer. Each behaviour is checked against what the blocking connection does
// for the same calls (tests/atomic.cpp, tests/batch.cpp, ...): same values, same
// exceptions, same round trips.

#define BOOST_TEST_MODULE asio_api
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>
#include <stdexcept>
#include <tuple>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/detached.hpp>
#include <boost/asio/version.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"
#include "support/wire_counter.hpp"

using namespace std::chrono_literals;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;

namespace {

struct my_error : std::runtime_error {
  explicit my_error(int n) : std::runtime_error("my_error " + std::to_string(n)) {}
};

awaitable<void> insert(pa::connection& c, const pqtest::scratch_table& t, int id) {
  co_await c.async_execute({"INSERT INTO " + t.name() + " (id) VALUES ($1)", id}, use_awaitable);
}

awaitable<std::string> show(pa::connection& c, const std::string& name) {
  co_return co_await c.async_query_value<std::string>({"SELECT current_setting($1)", name}, use_awaitable);
}

// The same parameter types the blocking connection takes (tests/warnings_tu.cpp).
awaitable<void> parameters(pa::connection& c) {
  const std::string s = "text";
  const std::string_view sv = "view";
  const char* cs = "c string";
  char buf[] = "array";
  const std::optional<int> some = 1, none;
  auto r = co_await c.async_execute({"SELECT $1, $2, $3, $4, $5", s, sv, cs, buf, "literal"}, use_awaitable);
  BOOST_TEST((r[0].as<std::string, std::string, std::string, std::string, std::string>() ==
              std::make_tuple(std::string("text"), std::string("view"), std::string("c string"), std::string("array"),
                              std::string("literal"))));
  r = co_await c.async_execute({"SELECT $1::int, $2::bigint, $3::float8, $4::bool, $5::int, $6::int", 1, 2L, 2.5,
                                true, some, none},
                               use_awaitable);
  auto [i, l, d, b, o1, o2] = r[0].as<int, long, double, bool, std::optional<int>, std::optional<int>>();
  BOOST_TEST(i == 1);
  BOOST_TEST(l == 2);
  BOOST_TEST(d == 2.5);
  BOOST_TEST(b);
  BOOST_TEST((o1 == std::optional<int>(1)));
  BOOST_TEST(!o2);
  const char* null_text = nullptr;
  BOOST_TEST(!(co_await c.async_query_value<std::optional<std::string>>({"SELECT $1::text", null_text}, use_awaitable)));
  BOOST_TEST(!(co_await c.async_query_value<std::optional<int>>({"SELECT $1::int", nullptr}, use_awaitable)));
  // A query object keeps copies: the values may be gone before the operation starts.
  pa::query later = [] {
    std::string temp = "gone";
    return pa::query{"SELECT $1::text || $2", temp, std::string_view(temp)};
  }();
  BOOST_TEST(co_await c.async_query_value<std::string>(later, use_awaitable) == "gonegone");
}

}  // namespace

BOOST_AUTO_TEST_CASE(connect_execute_and_read) {
  pqtest::for_each_target([](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      BOOST_TEST(c.is_open());
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 42", use_awaitable) == 42);
      pqscope::result r = co_await c.async_execute("SELECT g FROM generate_series(1, 3) g", use_awaitable);
      BOOST_TEST(r.size() == 3u);
      BOOST_TEST(r[2][0].as<int>() == 3);
      co_await parameters(c);
      // One round trip per autocommit statement, as on the blocking connection.
      const auto before = c.stats().round_trips;
      co_await c.async_execute("SELECT 1", use_awaitable);
      BOOST_TEST(c.stats().round_trips - before == 1u);
      // Errors are the blocking connection's.
      BOOST_CHECK_THROW(co_await c.async_execute("SELECT 1/0", use_awaitable), pqscope::data_exception);
      BOOST_CHECK_THROW(co_await c.async_query_value<int>("SELECT 1, 2", use_awaitable), pqscope::conversion_error);
      BOOST_CHECK_THROW(co_await c.async_execute("BEGIN", use_awaitable), pqscope::usage_error);
      BOOST_CHECK_THROW(co_await c.async_execute({"SELECT $1", std::string("a\0b", 3)}, use_awaitable),
                        pqscope::usage_error);
      BOOST_CHECK_THROW(co_await c.async_execute(std::string("SELECT 1\0", 9), use_awaitable), pqscope::usage_error);
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 1", use_awaitable) == 1);
    }());
  });
}

// More than a socket buffer either way: a 2 MB parameter, a 3 MB result, and a
// batch of 3000 statements carrying 15 MB out and 45 MB back. The server answers
// while we are still sending; once our receive buffer is full it stops reading
// the batch, so while PQflush returns 1 we must keep reading, or both wait forever.
BOOST_AUTO_TEST_CASE(large_statements_results_and_batches) {
  pqtest::for_each_target([](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      const std::string big(2'000'000, 'x');
      BOOST_TEST(co_await c.async_query_value<long>({"SELECT length($1::text)", big}, use_awaitable) == 2'000'000);
      pqscope::result r = co_await c.async_execute("SELECT repeat('y', 1000) FROM generate_series(1, 3000)",
                                                   use_awaitable);
      BOOST_TEST(r.size() == 3000u);
      BOOST_TEST(r[2999][0].text().size() == 1000u);
      pqscope::transaction_options batch;
      batch.batch = true;
      const auto trips = c.stats().round_trips;
      const long sum = co_await pa::async_atomic(c, batch, [&]() -> awaitable<long> {
        const std::string param(5000, 'p');
        std::vector<pqscope::result> results;
        for (int i = 0; i < 3000; ++i)
          results.push_back(
              co_await c.async_execute({"SELECT repeat('z', 10000) || $1::text", param}, use_awaitable));
        co_await c.async_flush(use_awaitable);
        long n = 0;
        for (const auto& res : results) n += static_cast<long>(res[0][0].text().size());
        co_return n;
      });
      BOOST_TEST(sum == 3000L * 15000);
      BOOST_TEST(c.stats().round_trips - trips == 2u);  // the batch, then COMMIT
    }());
  });
}

// Pgpool-II in raw mode opens a transaction of its own on a session's first write
// (tests/pgpool.cpp). The link probes as libpq_driver does (detail/middleware.hpp),
// and the error names the cause; the transaction is rolled back, nothing committed.
BOOST_AUTO_TEST_CASE(pgpool_raw_mode_is_named) {
  const char* raw = std::getenv("PQSCOPE_TEST_PGPOOL_RAW");
  if (raw == nullptr || *raw == '\0') {
    BOOST_TEST_MESSAGE("skipped: no Pgpool-II in raw mode (scripts/dev.sh servers --pgpool)");
    return;
  }
  pqtest::scratch_table table;
  const std::string insert = "INSERT INTO " + table.name() + " VALUES (1, 'x')";
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection c = co_await pqtest::connect_async(raw);
    std::string what;
    try {
      co_await c.async_execute(insert, use_awaitable);
    } catch (const pqscope::usage_error& e) {
      what = e.what();
    }
    BOOST_TEST(what.find("Pgpool-II") != std::string::npos, what);
    BOOST_TEST(what.find("backend_clustering_mode = 'raw'") != std::string::npos, what);
    BOOST_TEST(c.depth() == 0u);
    BOOST_TEST(PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE);
    BOOST_TEST(pqtest::committed_count(table) == 0);
    // Only the first write of a session: after that the session behaves.
    co_await c.async_execute(insert, use_awaitable);
    BOOST_TEST(pqtest::committed_count(table) == 1);
  }());
}

BOOST_AUTO_TEST_CASE(not_connected_and_bad_conninfo) {
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection c{co_await net::this_coro::executor, pqtest::env("PQSCOPE_TEST_DIRECT")};
    BOOST_TEST(!c.is_open());
    BOOST_CHECK_THROW(co_await c.async_execute("SELECT 1", use_awaitable), pqscope::connection_error);
    co_await c.async_connect(use_awaitable);  // and then it works
    BOOST_TEST(co_await c.async_query_value<int>("SELECT 1", use_awaitable) == 1);

    pa::connection bad{co_await net::this_coro::executor, "host=127.0.0.1 port=1 connect_timeout=2"};
    std::string what;
    try {
      co_await bad.async_connect(use_awaitable);
    } catch (const pqscope::connection_error& e) {
      what = e.what();
    }
    // libpq's reason, without the newline libpq ends its messages with.
    BOOST_TEST(what.find("Connection refused") != std::string::npos, what);
    BOOST_TEST((!what.empty() && what.back() != '\n' && what.back() != ' '), what);
    pa::connection malformed{co_await net::this_coro::executor, "host='unterminated"};
    BOOST_CHECK_THROW(co_await malformed.async_connect(use_awaitable), pqscope::usage_error);
  }());
}

// Plain callbacks: the completion token is a handler; the handler is never called
// from inside the call that starts the operation, also when it fails at once.
BOOST_AUTO_TEST_CASE(callbacks_as_completion_tokens) {
  net::io_context io;
  pa::connection c{io.get_executor(), pqtest::env("PQSCOPE_TEST_PGBOUNCER")};
  std::vector<std::string> log;
  std::optional<pa::transaction> tx;
  bool inside = false;
  auto note = [&](const std::string& what, const std::exception_ptr& e) {
    if (inside) log.push_back("called inside the initiating function: " + what);
    std::string text = what + ": ok";
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        text = what + ": " + x.what();
      }
    }
    log.push_back(text);
  };
  inside = true;
  c.async_connect([&](std::exception_ptr e) {
    note("connect", e);
    inside = true;
    c.async_execute({"SELECT $1::int * 2", 21}, [&](std::exception_ptr e2, pqscope::result r) {
      note("execute", e2);
      if (!e2) log.push_back("value " + std::string(r[0][0].text()));
      inside = true;
      c.async_query_value<int>("SELECT 1/0", [&](std::exception_ptr e3, int) {
        note("failing", e3);
        // Refused before anything is sent: still delivered later, through the handler.
        inside = true;
        tx.emplace(c);
        tx->async_commit([&](std::exception_ptr e4) {
          note("empty commit", e4);
          inside = true;
          tx->async_commit([&](std::exception_ptr e5) { note("second commit", e5); });
          inside = false;
        });
        inside = false;
      });
      inside = false;
    });
    inside = false;
  });
  inside = false;
  io.run();
  const std::vector<std::string> want{"connect: ok",
                                      "execute: ok",
                                      "value 42",
                                      "failing: division by zero",
                                      "empty commit: ok",
                                      "second commit: async_commit(): this scope has already been committed"};
  BOOST_TEST(log == want, boost::test_tools::per_element());
}

// One operation at a time: a second one fails with usage_error and sends nothing;
// the first is undisturbed.
BOOST_AUTO_TEST_CASE(one_operation_at_a_time) {
  pqtest::for_each_target([](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      std::optional<std::string> first, second;
      int done = 0;
      const auto trips = c.stats().round_trips;
      c.async_query_value<std::string>("SELECT 'first' FROM pg_sleep(0.05)", [&](std::exception_ptr e, std::string v) {
        first = e ? "failed" : v;
        ++done;
      });
      c.async_query_value<std::string>("SELECT 'second'", [&](std::exception_ptr e, std::string v) {
        try {
          if (e) std::rethrow_exception(e);
          second = v;
        } catch (const pqscope::usage_error& u) {
          second = std::string("usage_error: ") + u.what();
        } catch (...) {
          second = "other";
        }
        ++done;
      });
      // Scope bookkeeping is refused too while the operation runs.
      BOOST_CHECK_THROW(pa::transaction{c}, pqscope::usage_error);
      BOOST_CHECK_THROW(c.on_commit([] {}), pqscope::usage_error);
      while (done < 2) co_await pqtest::sleep_for(5ms);
      BOOST_TEST(*first == "first");
      BOOST_TEST(second->rfind("usage_error: an operation was started while another one", 0) == 0u);
      BOOST_TEST(c.stats().round_trips - trips == 1u);
      BOOST_TEST(co_await c.async_query_value<int>("SELECT 3", use_awaitable) == 3);
    }());
  });
}

BOOST_AUTO_TEST_CASE(transaction_objects_nest) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      {
        pa::transaction outer{c};
        BOOST_TEST(outer.is_outermost());
        co_await insert(c, table, 1);
        {
          pa::transaction inner{c};
          BOOST_TEST(!inner.is_outermost());
          BOOST_TEST(c.depth() == 2u);
          co_await insert(c, table, 2);
          co_await inner.async_rollback(use_awaitable);
        }
        {
          pa::transaction inner{c};
          co_await insert(c, table, 3);
          co_await inner.async_commit(use_awaitable);
          BOOST_CHECK_THROW(co_await inner.async_commit(use_awaitable), pqscope::usage_error);
        }
        BOOST_TEST(pqtest::committed_ids(table) == "");
        const auto savepoints = c.stats().savepoints;
        co_await outer.async_commit(use_awaitable);
        BOOST_TEST(c.stats().savepoints == savepoints);
      }
      BOOST_TEST(pqtest::committed_ids(table) == "1,3");
      BOOST_TEST(c.depth() == 0u);
      // Misuse is reported as on the blocking connection.
      {
        pa::transaction outer{c};
        pa::transaction inner{c};
        BOOST_CHECK_THROW(co_await outer.async_commit(use_awaitable), pqscope::usage_error);  // inner still open
        co_await inner.async_commit(use_awaitable);
        pa::transaction moved{std::move(outer)};
        BOOST_CHECK_THROW(co_await outer.async_commit(use_awaitable), pqscope::usage_error);  // NOLINT: moved from
        co_await moved.async_rollback(use_awaitable);
      }
      pqscope::transaction_options retry;
      retry.retries = 1;
      BOOST_CHECK_THROW(pa::transaction(c, retry), pqscope::usage_error);
      BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);
    }());
  });
}

BOOST_AUTO_TEST_CASE(async_atomic_nests_and_returns) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      std::vector<std::string> fired;
      const int v = co_await pa::async_atomic(c, [&](pa::connection& cc) -> awaitable<int> {
        BOOST_TEST(cc.depth() == 1u);
        co_await insert(cc, table, 1);
        cc.on_commit([&] { fired.push_back("commit outer"); });
        cc.on_rollback([&] { fired.push_back("rollback outer"); });
        // An exception leaves the inner scope: only its savepoint rolls back, and its
        // callbacks go with it.
        BOOST_CHECK_THROW(co_await pa::async_atomic(cc,
                                                    [&]() -> awaitable<void> {
                                                      co_await insert(cc, table, 2);
                                                      cc.on_commit([&] { fired.push_back("commit inner"); });
                                                      throw my_error(2);
                                                    }),
                          my_error);
        BOOST_TEST(cc.depth() == 1u);
        // A duplicate key inside a nested scope: the savepoint undoes it, the outer goes on.
        BOOST_CHECK_THROW(co_await pa::async_atomic(cc, [&]() -> awaitable<void> { co_await insert(cc, table, 1); }),
                          pqscope::unique_violation);
        const int inner = co_await pa::async_atomic(cc, [&]() -> awaitable<int> {
          BOOST_TEST(cc.depth() == 2u);
          co_await insert(cc, table, 3);
          co_return 42;
        });
        BOOST_TEST(pqtest::committed_count(table) == 0);
        co_return inner;
      });
      BOOST_TEST(v == 42);
      BOOST_TEST(pqtest::committed_ids(table) == "1,3");
      BOOST_TEST(fired == std::vector<std::string>{"commit outer"}, boost::test_tools::per_element());

      // An exception leaves every scope; the rollback is awaited before it does.
      fired.clear();
      BOOST_CHECK_THROW(co_await pa::async_atomic(c,
                                                  [&]() -> awaitable<void> {
                                                    co_await insert(c, table, 4);
                                                    c.on_rollback([&] { fired.push_back("rolled back"); });
                                                    co_await pa::async_atomic(c, [&]() -> awaitable<void> {
                                                      co_await insert(c, table, 5);
                                                      co_await insert(c, table, 4);  // duplicate, not caught
                                                    });
                                                  }),
                        pqscope::unique_violation);
      BOOST_TEST(fired == std::vector<std::string>{"rolled back"}, boost::test_tools::per_element());
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);
      BOOST_TEST(pqtest::committed_ids(table) == "1,3");

      // A scope without a savepoint that fails dooms its caller, whose commit refuses.
      pqscope::transaction_options joined;
      joined.savepoint = false;
      BOOST_CHECK_EXCEPTION(co_await pa::async_atomic(c,
                                                      [&]() -> awaitable<void> {
                                                        try {
                                                          co_await pa::async_atomic(
                                                              c, joined, [&]() -> awaitable<void> {
                                                                co_await insert(c, table, 1);
                                                              });
                                                        } catch (const pqscope::unique_violation&) {
                                                        }
                                                      }),
                            pqscope::transaction_aborted,
                            [](const pqscope::transaction_aborted& e) { return e.first_sqlstate() == "23505"; });

      // on_commit outside a scope runs at once; a function taking no connection works.
      bool now = false;
      c.on_commit([&] { now = true; });
      BOOST_TEST(now);
      co_await pa::async_atomic(c, [&]() -> awaitable<void> { co_await insert(c, table, 6); });
      BOOST_TEST(pqtest::committed_ids(table) == "1,3,6");
    }());
  });
}

BOOST_AUTO_TEST_CASE(options_mean_what_they_mean_in_atomic) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      const std::string default_isolation = co_await show(c, "default_transaction_isolation");
      pqscope::transaction_options o;
      o.isolation = pqscope::isolation::serializable;
      o.read_only = true;
      o.deferrable = true;
      co_await pa::async_atomic(c, o, [&]() -> awaitable<void> {
        BOOST_TEST(co_await show(c, "transaction_isolation") == "serializable");
        BOOST_TEST(co_await show(c, "transaction_read_only") == "on");
        BOOST_TEST(co_await show(c, "transaction_deferrable") == "on");
        // A nested scope may not change them.
        pqscope::transaction_options other;
        other.isolation = pqscope::isolation::read_committed;
        BOOST_CHECK_THROW(co_await pa::async_atomic(c, other, []() -> awaitable<void> { co_return; }),
                          pqscope::usage_error);
      });
      BOOST_TEST(co_await show(c, "transaction_isolation") == default_isolation);

      // Timeouts as SET LOCAL, restored when a nested scope ends.
      pqscope::transaction_options limits;
      limits.statement_timeout = 1500ms;
      co_await pa::async_atomic(c, limits, [&]() -> awaitable<void> {
        BOOST_TEST(co_await show(c, "statement_timeout") == "1500ms");
        pqscope::transaction_options tight;
        tight.statement_timeout = 50ms;
        tight.lock_timeout = 40ms;
        BOOST_CHECK_THROW(co_await pa::async_atomic(c, tight,
                                                    [&]() -> awaitable<void> {
                                                      BOOST_TEST(co_await show(c, "lock_timeout") == "40ms");
                                                      co_await c.async_execute("SELECT pg_sleep(1)", use_awaitable);
                                                    }),
                          pqscope::query_canceled);
        BOOST_TEST(co_await show(c, "statement_timeout") == "1500ms");
        c.set_local("work_mem", "1234kB");
        BOOST_TEST(co_await show(c, "work_mem") == "1234kB");
      });
      BOOST_TEST(co_await show(c, "statement_timeout") == "0");
      BOOST_CHECK_THROW(c.set_local("work_mem", "1MB"), pqscope::usage_error);  // outside a scope

      pqscope::transaction_options durable;
      durable.durable = true;
      co_await pa::async_atomic(c, [&]() -> awaitable<void> {
        BOOST_CHECK_THROW(co_await pa::async_atomic(c, durable, []() -> awaitable<void> { co_return; }),
                          pqscope::usage_error);
      });
      pqscope::transaction_options negative;
      negative.retries = -1;
      BOOST_CHECK_THROW(co_await pa::async_atomic(c, negative, []() -> awaitable<void> { co_return; }),
                        pqscope::usage_error);
    }());
  });
}

// A serialization failure re-runs the function after a pause on an Asio timer,
// which leaves the thread free: a timer of another coroutine fires meanwhile.
BOOST_AUTO_TEST_CASE(retries_wait_on_a_timer) {
  pqtest::for_each_target([](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      int ticks = 0;
      bool stop = false;
      net::co_spawn(
          io,
          [&]() -> awaitable<void> {
            while (!stop) {
              co_await pqtest::sleep_for(2ms);
              ++ticks;
            }
          },
          net::detached);
      pqscope::transaction_options o;
      o.isolation = pqscope::isolation::serializable;
      o.retries = 3;
      o.retry_base_delay = 40ms;
      o.retry_max_delay = 40ms;
      int runs = 0;
      std::vector<int> committed, rolled_back;
      const auto start = std::chrono::steady_clock::now();
      const int got = co_await pa::async_atomic(c, o, [&]() -> awaitable<int> {
        const int attempt = ++runs;
        c.on_commit([&, attempt] { committed.push_back(attempt); });
        c.on_rollback([&, attempt] { rolled_back.push_back(attempt); });
        co_await c.async_execute("SELECT 1", use_awaitable);
        if (attempt < 3)
          co_await c.async_execute(
              "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END $$",
              use_awaitable);
        co_return attempt;
      });
      const auto waited = std::chrono::steady_clock::now() - start;
      stop = true;
      BOOST_TEST(got == 3);
      BOOST_TEST(committed == std::vector<int>{3}, boost::test_tools::per_element());
      BOOST_TEST(rolled_back == (std::vector<int>{1, 2}), boost::test_tools::per_element());
      BOOST_TEST((waited >= 40ms));  // two pauses of 20..40 ms
      BOOST_TEST(ticks >= 5);
      // Bounded: other errors are not retried, and conflicts only `retries` times.
      runs = 0;
      o.retries = 1;
      BOOST_CHECK_THROW(co_await pa::async_atomic(c, o,
                                                  [&]() -> awaitable<void> {
                                                    ++runs;
                                                    co_await c.async_execute(
                                                        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = "
                                                        "'serialization_failure'; END $$",
                                                        use_awaitable);
                                                  }),
                        pqscope::serialization_failure);
      BOOST_TEST(runs == 2);
      runs = 0;
      BOOST_CHECK_THROW(co_await pa::async_atomic(c, o,
                                                  [&]() -> awaitable<void> {
                                                    ++runs;
                                                    co_await c.async_execute("SELECT 1/0", use_awaitable);
                                                  }),
                        pqscope::data_exception);
      BOOST_TEST(runs == 1);
      BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);
    }());
  });
}

// batch = true: statements are queued and their results filled by the send that
// carries them. Reading one before it was sent is a usage_error (a coroutine cannot
// block); async_flush() sends, async_query_value sends what it needs.
BOOST_AUTO_TEST_CASE(batched_attempts) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      pqscope::transaction_options batch;
      batch.batch = true;
      auto before = c.stats();
      co_await pa::async_atomic(c, batch, [&]() -> awaitable<void> {
        co_await insert(c, table, 1);
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          co_await insert(c, table, 2);
          co_await insert(c, table, 3);
        });
        BOOST_TEST(c.stats().round_trips == before.round_trips);  // nothing sent yet
      });
      BOOST_TEST(c.stats().round_trips - before.round_trips == 1u);
      BOOST_TEST(c.stats().batched_attempts - before.batched_attempts == 1u);
      BOOST_TEST(pqtest::committed_ids(table) == "1,2,3");

      before = c.stats();
      co_await pa::async_atomic(c, batch, [&]() -> awaitable<void> {
        pqscope::result r = co_await c.async_execute({"SELECT $1::int", 7}, use_awaitable);
        BOOST_CHECK_THROW((void)r.size(), pqscope::usage_error);
        co_await c.async_flush(use_awaitable);
        BOOST_TEST(r[0][0].as<int>() == 7);
        co_await insert(c, table, 4);
        BOOST_TEST(co_await c.async_query_value<long>("SELECT count(*) FROM " + table.name(), use_awaitable) == 4);
      });
      BOOST_TEST(c.stats().round_trips - before.round_trips == 3u);  // flush, query_value, COMMIT

      // A failed send voids the attempt; the function runs again unbatched, where the
      // error surfaces at its statement and is caught there.
      before = c.stats();
      int runs = 0;
      std::vector<std::string> seen;
      co_await pa::async_atomic(c, batch, [&]() -> awaitable<void> {
        ++runs;
        seen.clear();
        co_await insert(c, table, 5);
        try {
          co_await pa::async_atomic(c, [&]() -> awaitable<void> { co_await insert(c, table, 1); });
          seen.push_back("inner returned");
        } catch (const pqscope::unique_violation&) {
          seen.push_back("unique_violation");
        }
        co_await insert(c, table, 6);
      });
      BOOST_TEST(runs == 2);
      BOOST_TEST(seen == std::vector<std::string>{"unique_violation"}, boost::test_tools::per_element());
      BOOST_TEST(c.stats().replays - before.replays == 1u);
      BOOST_TEST(pqtest::committed_ids(table) == "1,2,3,4,5,6");
    }());
  });
}

BOOST_AUTO_TEST_CASE(pooler_guard_observer_and_names) {
  const pqtest::target t{"pgbouncer", pqtest::env("PQSCOPE_TEST_PGBOUNCER"), pqtest::env("PQSCOPE_TEST_PGBOUNCER_ADMIN")};
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    std::vector<std::string> events;
    pqscope::connection_options o;
    o.pooling = pqscope::pooling::transaction;
    o.observer = [&](const pqscope::statement_event& e) {
      events.push_back(std::string(e.sql) + " @" + std::to_string(e.depth) + (e.error ? " !" : "") + " rows " +
                       std::to_string(e.rows));
    };
    pa::connection c = co_await pqtest::connect_async(t.conninfo, o);
    BOOST_CHECK_THROW(co_await c.async_execute("SET statement_timeout = 5", use_awaitable), pqscope::usage_error);
    BOOST_CHECK_THROW(co_await c.async_execute("LISTEN jobs", use_awaitable), pqscope::usage_error);
    co_await c.async_execute(pqscope::allow_session_state("SET application_name = 'x'"), use_awaitable);
    co_await pa::async_atomic(c, [&]() -> awaitable<void> {
      co_await c.async_execute("SELECT generate_series(1, 2)", use_awaitable);
    });
    const std::vector<std::string> want{"SET statement_timeout = 5 @0 ! rows 0", "LISTEN jobs @0 ! rows 0",
                                        "SET application_name = 'x' @0 rows 0",
                                        "SELECT generate_series(1, 2) @1 rows 2"};
    BOOST_TEST(events == want, boost::test_tools::per_element());

    // The default application_name is the blocking connection's, program:user@host.
    pa::connection named = co_await pqtest::connect_async(t.conninfo);
    const std::string name = named.application_name();
    BOOST_TEST(name.find("test_asio_api:") == 0u);
    BOOST_TEST(co_await named.async_query_value<std::string>("SELECT current_setting('application_name')",
                                                            use_awaitable) == name);
  }());
}

// What the blocking connection took on since: the connect and TCP defaults and
// network_timeout (driver.hpp), the placeholder count, every error field, the
// savepoint budget. The same options mean the same here.
BOOST_AUTO_TEST_CASE(same_options_and_checks_as_the_blocking_connection) {
  pqtest::scratch_table table("id int PRIMARY KEY, v int CONSTRAINT v_small CHECK (v < 10)");
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pqscope::connection_options o;
    o.network_timeout = 300ms;
    o.savepoint_limit = 2;
    std::vector<std::string> warnings;
    o.observer = [&](const pqscope::statement_event& e) {
      if (!e.warning.empty()) warnings.emplace_back(e.warning);
    };
    // A conninfo that sets no time bounds (the test servers' sets connect_timeout).
    std::string bare = pqtest::env("PQSCOPE_TEST_DIRECT");
    bare = bare.replace(bare.find("connect_timeout=10"), 18, "");
    pa::connection c = co_await pqtest::connect_async(bare, o);
    BOOST_TEST(c.timeout() == 300ms);
    BOOST_TEST(c.cancel_wait() == 300ms);  // min(network_timeout, 1 s)
    std::map<std::string, std::string> used;
    if (PQconninfoOption* opts = PQconninfo(c.native_handle())) {
      for (PQconninfoOption* p = opts; p->keyword != nullptr; ++p)
        if (p->val != nullptr) used[p->keyword] = p->val;
      PQconninfoFree(opts);
    }
    BOOST_TEST(used["connect_timeout"] == "2");  // from network_timeout, whole seconds, at least 2
    BOOST_TEST(used["keepalives_idle"] == "15");
    BOOST_TEST(used["keepalives_interval"] == "5");
    BOOST_TEST(used["keepalives_count"] == "3");
    BOOST_TEST(used["tcp_user_timeout"] == "30000");
    // The statement's placeholders against the parameters given, before anything is sent.
    const auto trips = c.stats().round_trips;
    BOOST_CHECK_THROW(co_await c.async_execute({"SELECT $1::int + $2::int", 1}, use_awaitable), pqscope::usage_error);
    BOOST_TEST(c.stats().round_trips == trips);
    // Every field of the server's error, and the statement with a caret.
    try {
      co_await c.async_execute({"INSERT INTO " + table.name() + " VALUES ($1, $2)", 1, 20}, use_awaitable);
      BOOST_ERROR("the CHECK constraint did not fire");
    } catch (const pqscope::check_violation& e) {
      BOOST_TEST(e.constraint_name() == "v_small");
      BOOST_TEST(e.table_name() == table.name());
    }
    try {
      co_await c.async_execute("SELECT no_such_column FROM " + table.name(), use_awaitable);
      BOOST_ERROR("no error");
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.position() == 8u);
      BOOST_TEST(std::string(e.what()).find('^') != std::string::npos);
    }
    // The savepoint budget: the third savepoint of one transaction is reported.
    co_await pa::async_atomic(c, [&]() -> awaitable<void> {
      for (int i = 1; i <= 3; ++i)
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          co_await c.async_execute({"INSERT INTO " + table.name() + " VALUES ($1, 1)", i}, use_awaitable);
        });
    });
    BOOST_TEST(warnings.size() == 1u);
    BOOST_TEST(c.stats().savepoint_limit_exceeded == 1u);
    BOOST_TEST(pqtest::committed_count(table) == 3);
  }());
}

// A scope object destroyed open, outside async_atomic: nested scopes end at once;
// the outermost ROLLBACK is sent in the background and the next operation waits
// for it. No transaction is left idle.
BOOST_AUTO_TEST_CASE(scope_objects_destroyed_open) {
  pqtest::scratch_table table;
  pqtest::for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(t.conninfo);
      bool rolled_back = false;
      {
        pa::transaction outer{c};
        co_await insert(c, table, 1);
        c.on_rollback([&] { rolled_back = true; });
        {
          pa::transaction inner{c};
          co_await insert(c, table, 2);
        }  // nested: bookkeeping only
        BOOST_TEST(c.depth() == 1u);
        co_await insert(c, table, 3);
      }  // outermost: ROLLBACK goes out now
      BOOST_TEST(c.depth() == 0u);
      // The next operation runs after the ROLLBACK's answer: the callbacks have run.
      BOOST_TEST(co_await c.async_query_value<long>("SELECT count(*) FROM " + table.name(), use_awaitable) == 0);
      BOOST_TEST(rolled_back);
      BOOST_TEST(c.stats().transactions_rolled_back == 1u);
      BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);

      // Left to itself (no next operation), the ROLLBACK still happens.
      {
        pa::transaction outer{c};
        co_await insert(c, table, 4);
      }
      co_await pqtest::sleep_for(100ms);
      BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);
      BOOST_TEST(pqtest::committed_count(table) == 0);
    }());
  });
}

// A connection opened by the parent is refused in a forked child, and destroying it
// there leaves the parent's session alone (as the blocking connection does).
BOOST_AUTO_TEST_CASE(forked_child_leaves_the_parents_session) {
  net::io_context io;
  std::optional<pa::connection> c;
  c.emplace(pqtest::run_coro(io, pqtest::connect_async(pqtest::env("PQSCOPE_TEST_PGBOUNCER"))));
  const int code = pqtest::in_child([&] {
    io.notify_fork(net::execution_context::fork_child);
    std::string what;
    try {
      pqtest::run_coro(io, [&]() -> awaitable<void> { co_await c->async_execute("SELECT 1", use_awaitable); }());
      what = "returned";
    } catch (const pqscope::usage_error& e) {
      what = e.what();
    } catch (...) {
      what = "other";
    }
    c.reset();  // closes: must not end the parent's session
    return what.find("after fork() a child must open its own connection") != std::string::npos ? 0 : 1;
  });
  BOOST_TEST(code == 0);
  BOOST_TEST(pqtest::run_coro(io, [&]() -> awaitable<int> {
               co_return co_await c->async_query_value<int>("SELECT 11", use_awaitable);
             }()) == 11);
}


// The safety net on the asynchronous connection (misuse.cpp has the blocking one):
// a relay turns a harmless SELECT into transaction control or a COPY, which no
// statement check can see; usage_error, and the connection goes on in autocommit.
BOOST_AUTO_TEST_CASE(hidden_control_statements_are_undone) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    pqtest::wire_counter relay{t};
    int n = 0;
    auto hidden = [&](const std::string& real) {
      std::string marker = "SELECT 'pqscope hidden statement " + std::to_string(n++) + "'";
      if (marker.size() < real.size()) marker.resize(real.size(), ' ');
      relay.rewrite(marker, real);
      return marker;
    };
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      pa::connection c = co_await pqtest::connect_async(relay.conninfo());
      int id = 0;
      auto usable = [&](const std::string& after) -> awaitable<void> {
        BOOST_TEST_INFO("after " << after);
        BOOST_TEST(PQtransactionStatus(c.native_handle()) == PQTRANS_IDLE);
        BOOST_TEST_INFO("after " << after);
        BOOST_TEST(pqtest::idle_in_transaction(c.application_name()) == 0);
        co_await c.async_execute({"INSERT INTO " + table.name() + " (id) VALUES ($1)", ++id}, use_awaitable);
        BOOST_TEST_INFO("after " << after);
        BOOST_TEST(pqtest::committed_count(table) == id);
      };
      auto expect = [&](const std::string& what, const std::string& phrase) {
        BOOST_TEST(what.find("usage_error: ") == 0u, what);
        BOOST_TEST(what.find(phrase) != std::string::npos, what);
      };
      for (const char* opener : {"BEGIN", "START TRANSACTION"}) {
        const std::string what = co_await pqtest::outcome_of(
            [&]() -> awaitable<void> { co_await c.async_execute(hidden(opener), use_awaitable); });
        expect(what, "inside a transaction that no pqscope scope owns");
        co_await usable(opener);
      }
      for (const char* closer : {"COMMIT", "ROLLBACK"}) {
        const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
          co_await pa::async_atomic(c, [&]() -> awaitable<void> {
            co_await c.async_execute("SELECT 1", use_awaitable);
            co_await c.async_execute(hidden(closer), use_awaitable);
          });
        });
        expect(what, "ended the transaction behind pqscope's back");
        co_await usable(closer);
      }
      const std::string copies[] = {"COPY (SELECT 1 UNION ALL SELECT 2) TO STDOUT",
                                    "COPY " + table.name() + " (id) FROM STDIN"};
      for (const std::string& copy : copies) {
        for (bool scoped : {false, true}) {
          const std::string what = co_await pqtest::outcome_of([&]() -> awaitable<void> {
            if (!scoped) co_return co_await c.async_execute(hidden(copy), use_awaitable), void();
            co_await pa::async_atomic(
                c, [&]() -> awaitable<void> { co_await c.async_execute(hidden(copy), use_awaitable); });
          });
          if (t.name == "pgpool" && what.find("connection_error") == 0) {
            // Pgpool-II 4.3.5's child crashes on such a COPY (see misuse.cpp).
            BOOST_TEST_MESSAGE("pgpool: " << what);
            co_return;
          }
          expect(what, "started COPY");
          co_await usable(copy);
        }
      }
    }());
  });
}

// PgBouncer in pool_mode = statement (connection.cpp has the blocking twin): the
// connection_error carries PgBouncer's FATAL message and names the pool mode.
BOOST_AUTO_TEST_CASE(statement_pooling_is_named) {
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection c = co_await pqtest::connect_async(pqtest::env("PQSCOPE_TEST_PGBOUNCER_STATEMENT"));
    std::string what;
    try {
      co_await pa::async_atomic(c, [&]() -> awaitable<void> { co_await c.async_execute("SELECT 1", use_awaitable); });
    } catch (const pqscope::connection_error& e) {
      what = e.what();
    }
    BOOST_TEST(what.find("transaction blocks not allowed in statement pooling mode") != std::string::npos, what);
    BOOST_TEST(what.find("pool_mode = statement") != std::string::npos, what);
  }());
}
