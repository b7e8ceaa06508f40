#define BOOST_TEST_MODULE pool
#include <boost/test/unit_test.hpp>

#include <libpq-fe.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/pqscope.hpp>
#include <pqscope/pool.hpp>

#include "support/servers.hpp"

using namespace std::chrono_literals;

namespace {

using clock_type = std::chrono::steady_clock;

// One observing session for the whole run: connecting costs more than the checks.
pqscope::connection& watch() {
  static pqscope::connection c = pqtest::observer();
  return c;
}

pqtest::target direct() { return pqtest::targets().front(); }

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// Backends PostgreSQL has for this application_name, seen from outside.
long backends(const std::string& app) {
  return watch().query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app);
}

bool backend_alive(int pid) {
  return watch().query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) > 0;
}

// A closed session leaves pg_stat_activity a moment after the client hangs up.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit = 5s) {
  const auto until = clock_type::now() + limit;
  while (!pred()) {
    if (clock_type::now() > until) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

int backend_pid(pqscope::connection& c) { return c.query_value<int>("SELECT pg_backend_pid()"); }

// Runs a statement behind the scopes' back, as code handed the native handle might.
void raw(pqscope::connection& c, const std::string& sql) {
  PGresult* r = PQexec(c.native_handle(), sql.c_str());
  PQclear(r);
}

pqscope::pool_options fast_options() {
  pqscope::pool_options o;
  o.acquire_timeout = 2s;
  return o;
}

struct app_pool {
  std::string app;
  pqscope::pool pool;
  explicit app_pool(const pqtest::target& t, const pqscope::pool_options& o = fast_options())
      : app(pqtest::unique_name("pool")), pool(pqtest::with_app_name(t, app), o) {}
};

using pqtest::in_child;

}  // namespace

BOOST_AUTO_TEST_CASE(the_types_say_how_to_hold_them) {
  static_assert(!std::is_copy_constructible_v<pqscope::pool> && !std::is_move_constructible_v<pqscope::pool>);
  static_assert(!std::is_copy_constructible_v<pqscope::lease> && std::is_nothrow_move_constructible_v<pqscope::lease>);
  static_assert(std::is_nothrow_move_assignable_v<pqscope::lease>);
  static_assert(std::is_base_of_v<pqscope::error, pqscope::pool_timeout>);
  const pqscope::pool_options o;
  BOOST_TEST(o.max_size == 10u);
  BOOST_TEST(o.acquire_timeout.count() == 5000);
  BOOST_TEST(o.idle_timeout.count() == 60000);
  BOOST_TEST(o.max_lifetime.count() == 1800000);
  BOOST_TEST(o.health_check_after.count() == 1000);
}

BOOST_AUTO_TEST_CASE(options_are_checked_before_any_connection) {
  BOOST_CHECK_THROW(pqscope::pool("host='unterminated"), pqscope::usage_error);
  pqscope::pool_options zero;
  zero.max_size = 0;
  BOOST_CHECK_THROW(pqscope::pool(direct().conninfo, zero), pqscope::usage_error);
  pqscope::pool_options negative;
  negative.acquire_timeout = -1ms;
  BOOST_CHECK_THROW(pqscope::pool(direct().conninfo, negative), pqscope::usage_error);

  app_pool p{direct()};
  BOOST_TEST(p.pool.size() == 0u);  // lazily: nothing opened yet
  BOOST_TEST(p.pool.max_size() == 10u);
  BOOST_TEST(backends(p.app) == 0);
}

BOOST_AUTO_TEST_CASE(a_returned_connection_is_leased_again) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      app_pool p{t};
      pqtest::scratch_table tab;
      PGconn* first = nullptr;
      int pid = 0;
      {
        auto c = p.pool.acquire();
        first = c->native_handle();
        pid = backend_pid(*c);
        pqscope::atomic(*c, [&] { c->execute("INSERT INTO " + tab.name() + " (id) VALUES (1)"); });
        BOOST_TEST(p.pool.size() == 1u);
        BOOST_TEST(p.pool.idle() == 0u);
      }
      BOOST_TEST(p.pool.idle() == 1u);
      {
        auto c = p.pool.acquire();
        BOOST_TEST(c->native_handle() == first);
        // Through PgBouncer a new transaction may land on another server connection.
        if (t.name == "direct") BOOST_TEST(backend_pid(*c) == pid);
        pqscope::atomic(*c, [&] { c->execute("INSERT INTO " + tab.name() + " (id) VALUES (2)"); });
      }
      BOOST_TEST(tab.ids() == "1,2");
      const auto s = p.pool.stats();
      BOOST_TEST(s.created == 1u);
      BOOST_TEST(s.reused == 1u);
      BOOST_TEST(s.closed_dirty == 0u);
    }
  }
}

BOOST_AUTO_TEST_CASE(many_threads_never_exceed_max_size) {
  pqscope::pool_options o = fast_options();
  o.max_size = 4;
  o.acquire_timeout = 10s;
  app_pool p{direct(), o};
  constexpr int threads = 16;
  constexpr int leases_each = 50;

  std::atomic<int> leased{0}, most_leased{0}, done{0};
  std::atomic<bool> failed{false};
  std::mutex m;
  std::string first_error;  // Boost.Test is not to be called from the workers
  std::vector<int> per_thread(threads, 0);
  std::vector<std::thread> workers;
  for (int i = 0; i < threads; ++i) {
    workers.emplace_back([&, i] {
      try {
        for (int n = 0; n < leases_each; ++n) {
          auto c = p.pool.acquire();
          const int now = ++leased;
          int seen = most_leased.load();
          while (now > seen && !most_leased.compare_exchange_weak(seen, now)) {
          }
          // Held for a moment, so that the threads really compete for the four.
          if (c->query_value<int>("SELECT $1::int FROM pg_sleep(0.002)", n) != n) failed = true;
          --leased;
          ++per_thread[static_cast<std::size_t>(i)];
        }
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(m);
        if (first_error.empty()) first_error = "worker " + std::to_string(i) + ": " + e.what();
        failed = true;
      }
      ++done;
    });
  }
  // Watch the server while they run.
  long most_backends = 0;
  std::size_t most_size = 0;
  while (done.load() < threads) {
    most_backends = std::max(most_backends, backends(p.app));
    most_size = std::max(most_size, p.pool.size());
    std::this_thread::sleep_for(1ms);
  }
  for (auto& w : workers) w.join();

  BOOST_TEST(!failed.load(), first_error);
  for (int i = 0; i < threads; ++i) BOOST_TEST(per_thread[static_cast<std::size_t>(i)] == leases_each);
  const auto s = p.pool.stats();
  BOOST_TEST_MESSAGE(threads << " threads x " << leases_each << " leases: " << s.created << " connection(s) opened, "
                             << s.reused << " reuses, at most " << most_leased.load() << " leased and "
                             << most_backends << " backend(s) seen at once");
  BOOST_TEST(most_leased.load() <= 4);
  BOOST_TEST(most_leased.load() >= 2);  // they did overlap
  BOOST_TEST(most_backends <= 4);
  BOOST_TEST(most_size <= 4u);
  BOOST_TEST(s.created <= 4u);
  BOOST_TEST(s.created + s.reused == static_cast<std::uint64_t>(threads * leases_each));
  BOOST_TEST(s.timeouts == 0u);
  BOOST_TEST(backends(p.app) <= 4);
  BOOST_TEST(p.pool.idle() == p.pool.size());
}

BOOST_AUTO_TEST_CASE(acquire_gives_up_after_acquire_timeout) {
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  o.acquire_timeout = 300ms;
  app_pool p{direct(), o};
  auto held = p.pool.acquire();

  const auto start = clock_type::now();
  BOOST_CHECK_THROW((void)p.pool.acquire(), pqscope::pool_timeout);
  const double waited = seconds_since(start);
  BOOST_TEST_MESSAGE("acquire() gave up after " << waited << " s");
  BOOST_TEST(waited >= 0.29);
  BOOST_TEST(waited < 1.5);
  BOOST_TEST(p.pool.stats().timeouts == 1u);
  BOOST_TEST(backends(p.app) == 1);

  // A waiter gets the connection as soon as it comes back.
  PGconn* handle = held->native_handle();
  std::atomic<bool> got{false};
  std::thread waiter([&] {
    try {
      auto c = p.pool.acquire();
      got = c->native_handle() == handle;
    } catch (...) {
    }
  });
  std::this_thread::sleep_for(100ms);
  held.release();
  waiter.join();
  BOOST_TEST(got.load());
  BOOST_TEST(p.pool.stats().timeouts == 1u);
}

// The longest acquire_timeout there is means no bound: the wait lasts until a
// connection comes back (the deadline must not overflow into the past).
BOOST_AUTO_TEST_CASE(the_longest_acquire_timeout_waits_for_a_return) {
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  o.acquire_timeout = std::chrono::milliseconds::max();
  app_pool p{direct(), o};
  auto held = p.pool.acquire();
  std::thread giver([&] {
    std::this_thread::sleep_for(300ms);
    held.release();
  });
  const auto start = clock_type::now();
  auto c = p.pool.acquire();
  giver.join();
  BOOST_TEST(seconds_since(start) >= 0.25);
  BOOST_TEST(c->query_value<int>("SELECT 1") == 1);
  BOOST_TEST(p.pool.stats().timeouts == 0u);
}

BOOST_AUTO_TEST_CASE(a_failed_connect_gives_its_slot_back) {
  pqscope::pool_options o = fast_options();
  o.max_size = 1;
  o.acquire_timeout = 200ms;
  // Nothing listens on port 1.
  pqscope::pool p{"host=127.0.0.1 port=1 connect_timeout=2 user=nobody dbname=nothing", o};
  BOOST_CHECK_THROW((void)p.acquire(), pqscope::connection_error);
  BOOST_CHECK_THROW((void)p.acquire(), pqscope::connection_error);  // not pool_timeout: the slot is free again
  BOOST_TEST(p.size() == 0u);
  BOOST_TEST(p.stats().created == 0u);
}

BOOST_AUTO_TEST_CASE(an_exception_through_a_scope_leaves_the_connection_reusable) {
  app_pool p{direct()};
  pqtest::scratch_table tab;
  PGconn* handle = nullptr;
  for (int round = 0; round < 2; ++round) {
    try {
      auto c = p.pool.acquire();
      handle = c->native_handle();
      if (round == 0) {
        pqscope::atomic(*c, [&] {
          c->execute("INSERT INTO " + tab.name() + " (id) VALUES (1)");
          throw std::runtime_error("boom");
        });
      } else {
        // The transaction object dies before the lease: it rolls back first.
        pqscope::transaction tx(*c);
        c->execute("INSERT INTO " + tab.name() + " (id) VALUES (2)");
        throw std::runtime_error("boom");
      }
    } catch (const std::runtime_error&) {
    }
  }
  BOOST_TEST(tab.count() == 0);
  BOOST_TEST(pqtest::idle_in_transaction(p.app) == 0);
  auto c = p.pool.acquire();
  BOOST_TEST(c->native_handle() == handle);
  BOOST_TEST(c->depth() == 0u);
  const auto s = p.pool.stats();
  BOOST_TEST(s.created == 1u);
  BOOST_TEST(s.reused == 2u);
  BOOST_TEST(s.closed_dirty == 0u);
}

BOOST_AUTO_TEST_CASE(a_connection_returned_inside_a_transaction_is_closed) {
  app_pool p{direct()};
  pqtest::scratch_table tab;
  const std::string insert = "INSERT INTO " + tab.name() + " (id) VALUES (7)";
  std::uint64_t expected_dirty = 0;

  // Three ways to hand a session back mid-transaction.
  for (int way = 0; way < 3; ++way) {
    BOOST_TEST_CONTEXT("way " << way) {
      std::unique_ptr<pqscope::transaction> leaked;
      int pid = 0;
      PGconn* handle = nullptr;
      {
        auto c = p.pool.acquire();
        pid = backend_pid(*c);
        handle = c->native_handle();
        switch (way) {
          case 0:  // BEGIN behind the scopes' back: idle in transaction
            raw(*c, "BEGIN");
            raw(*c, insert);
            break;
          case 1:  // a failed transaction
            raw(*c, "BEGIN");
            raw(*c, "SELECT 1/0");
            break;
          case 2:  // a scope still open when the lease ends
            leaked = std::make_unique<pqscope::transaction>(*c);
            c->execute(insert);
            break;
        }
      }
      ++expected_dirty;
      BOOST_TEST(p.pool.stats().closed_dirty == expected_dirty);
      BOOST_TEST(p.pool.size() == 0u);
      BOOST_TEST(p.pool.idle() == 0u);
      BOOST_TEST(eventually([&] { return !backend_alive(pid); }));
      BOOST_TEST(pqtest::idle_in_transaction(p.app) == 0);
      leaked.reset();  // its connection is gone: ends quietly

      auto next = p.pool.acquire();
      BOOST_TEST(backend_pid(*next) != pid);
      BOOST_TEST(next->depth() == 0u);
      (void)handle;
    }
  }
  BOOST_TEST(tab.count() == 0);
  // Only the clean `next` leases went back: each was reused by the following way.
  BOOST_TEST(p.pool.stats().reused == 2u);
  BOOST_TEST(p.pool.stats().created == 4u);
}

BOOST_AUTO_TEST_CASE(the_health_check_replaces_a_killed_connection) {
  pqscope::pool_options o = fast_options();
  o.health_check_after = 0ms;
  app_pool p{direct(), o};
  int pid = 0;
  {
    auto c = p.pool.acquire();
    pid = backend_pid(*c);
  }
  BOOST_TEST(watch().query_value<bool>("SELECT pg_terminate_backend($1)", pid));
  BOOST_TEST(eventually([&] { return !backend_alive(pid); }));

  auto c = p.pool.acquire();
  BOOST_TEST(c->query_value<int>("SELECT 42") == 42);
  BOOST_TEST(backend_pid(*c) != pid);
  const auto s = p.pool.stats();
  BOOST_TEST(s.health_check_failures == 1u);
  BOOST_TEST(s.created == 2u);
  BOOST_TEST(s.reused == 0u);
  BOOST_TEST(p.pool.size() == 1u);
}

BOOST_AUTO_TEST_CASE(the_health_check_costs_a_round_trip_only_after_health_check_after) {
  for (auto after : {0ms, 10000ms}) {
    BOOST_TEST_CONTEXT("health_check_after " << after.count() << " ms") {
      pqscope::pool_options o = fast_options();
      o.health_check_after = after;
      app_pool p{direct(), o};
      std::uint64_t trips = 0;
      {
        auto c = p.pool.acquire();
        trips = c->stats().round_trips;
      }
      auto c = p.pool.acquire();
      BOOST_TEST(c->stats().round_trips == trips + (after.count() == 0 ? 1u : 0u));
    }
  }
}

BOOST_AUTO_TEST_CASE(max_lifetime_closes_old_connections) {
  pqscope::pool_options o = fast_options();
  o.max_lifetime = 300ms;
  app_pool p{direct(), o};
  PGconn* first = nullptr;
  {
    auto c = p.pool.acquire();
    first = c->native_handle();
  }
  { BOOST_TEST(p.pool.acquire()->native_handle() == first); }  // young: reused
  std::this_thread::sleep_for(350ms);
  {
    // Seen idle past its lifetime: closed, a new one opened.
    auto c = p.pool.acquire();
    BOOST_TEST(p.pool.stats().closed_expired == 1u);
    BOOST_TEST(p.pool.stats().created == 2u);
    std::this_thread::sleep_for(350ms);
  }  // returned past its lifetime: closed
  const auto s = p.pool.stats();
  BOOST_TEST(s.closed_expired == 2u);
  BOOST_TEST(s.closed_dirty == 0u);
  BOOST_TEST(p.pool.size() == 0u);
  BOOST_TEST(eventually([&] { return backends(p.app) == 0; }));
}

BOOST_AUTO_TEST_CASE(idle_timeout_closes_connections_when_next_seen) {
  pqscope::pool_options o = fast_options();
  o.idle_timeout = 200ms;
  app_pool p{direct(), o};
  int pid = 0;
  {
    auto c = p.pool.acquire();
    pid = backend_pid(*c);
  }
  std::this_thread::sleep_for(300ms);
  BOOST_TEST(p.pool.idle() == 1u);  // no background thread: still there
  auto c = p.pool.acquire();
  BOOST_TEST(backend_pid(*c) != pid);
  const auto s = p.pool.stats();
  BOOST_TEST(s.closed_expired == 1u);
  BOOST_TEST(s.created == 2u);
  BOOST_TEST(eventually([&] { return !backend_alive(pid); }));
}

BOOST_AUTO_TEST_CASE(a_released_or_moved_from_lease_is_a_usage_error) {
  app_pool p{direct()};
  auto a = p.pool.acquire();
  a.release();
  BOOST_TEST(p.pool.idle() == 1u);
  BOOST_CHECK_THROW((void)a.get(), pqscope::usage_error);
  BOOST_CHECK_THROW((*a).execute("SELECT 1"), pqscope::usage_error);
  BOOST_CHECK_THROW(a->execute("SELECT 1"), pqscope::usage_error);
  BOOST_CHECK_THROW(a.release(), pqscope::usage_error);

  auto b = p.pool.acquire();
  auto moved = std::move(b);
  BOOST_CHECK_THROW((void)b.get(), pqscope::usage_error);
  BOOST_CHECK_THROW(b->execute("SELECT 1"), pqscope::usage_error);
  BOOST_CHECK_THROW(b.release(), pqscope::usage_error);
  BOOST_TEST(moved->query_value<int>("SELECT 1") == 1);

  // Assigning over a lease returns the connection it held.
  auto other = p.pool.acquire();
  BOOST_TEST(p.pool.idle() == 0u);
  other = std::move(moved);
  BOOST_TEST(p.pool.idle() == 1u);
  BOOST_TEST(other->query_value<int>("SELECT 2") == 2);
  BOOST_CHECK_THROW((void)moved.get(), pqscope::usage_error);
  // A connection& taken before the lease moved still names the same connection.
  pqscope::connection& ref = *other;
  auto last = std::move(other);
  BOOST_TEST(&ref == &last.get());

  // A connection moved out of its lease leaves nothing to return: the slot comes free.
  const auto size_before = p.pool.size();
  {
    pqscope::connection stolen = std::move(*last);
    last.release();
    BOOST_TEST(stolen.query_value<int>("SELECT 4") == 4);
  }
  BOOST_TEST(p.pool.size() == size_before - 1);
  BOOST_TEST(p.pool.stats().closed_dirty == 1u);
}

BOOST_AUTO_TEST_CASE(a_lease_may_outlive_its_pool) {
  std::string app;
  std::optional<pqscope::lease> c;
  {
    app_pool p{direct()};
    app = p.app;
    { auto idle_one = p.pool.acquire(); }
    c.emplace(p.pool.acquire());
    auto second = p.pool.acquire();
    BOOST_TEST(backends(app) == 2);
    second.release();
  }  // the pool goes: its idle connection is closed, the leased one stays
  BOOST_TEST(eventually([&] { return backends(app) == 1; }));
  BOOST_TEST((*c)->query_value<int>("SELECT 5") == 5);
  c.reset();  // nowhere to go back to: closed
  BOOST_TEST(eventually([&] { return backends(app) == 0; }));
}

BOOST_AUTO_TEST_CASE(a_forked_child_cannot_acquire) {
  std::optional<app_pool> p{std::in_place, direct()};
  const std::string app = p->app;
  auto held = p->pool.acquire();
  const int held_pid = backend_pid(*held);
  int idle_pid = 0;
  {
    auto c = p->pool.acquire();
    idle_pid = backend_pid(*c);
  }
  BOOST_TEST(p->pool.idle() == 1u);
  pqscope::transaction tx(*held);  // in flight in the parent: the child must not disturb it
  held->execute("SELECT 1");

  const int code = in_child([&] {
    try {
      (void)p->pool.acquire();
      return 1;
    } catch (const pqscope::usage_error& e) {
      if (std::string(e.what()).find("after fork()") == std::string::npos) return 2;
    } catch (...) {
      return 3;
    }
    // Ending the lease and the pool in the child must leave the parent's sessions alone.
    { pqscope::lease gone = std::move(held); }
    p.reset();
    return 0;
  });
  BOOST_TEST(code == 0);

  BOOST_TEST(backend_alive(held_pid));
  BOOST_TEST(backend_alive(idle_pid));
  BOOST_TEST(held->query_value<int>("SELECT 3") == 3);
  tx.commit();
  held.release();
  auto again = p->pool.acquire();
  BOOST_TEST(backend_pid(*again) == held_pid);  // the most recently returned one
  BOOST_TEST(p->pool.stats().closed_dirty == 0u);
  BOOST_TEST(backend_alive(held_pid));
  BOOST_TEST(backend_alive(idle_pid));
  BOOST_TEST(backends(app) == 2);
}
