// pqscope::asio::replica_set against the shared primary and its streaming standby
// (scripts/dev.sh servers --standby): a read with the token of a write sees it,
// whichever node serves it; reads go to the standby when it has caught up; a
// standby that cannot connect is passed over; one that is behind is waited for or
// passed over (fallback_to_primary), or the read throws replica_behind. And
// async_atomic with at_least + replica_wait on a plain connection to the standby.
// The standby's replay is paused where a case needs it behind: timing decides nothing.

#define BOOST_TEST_MODULE asio_replicas
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include <boost/asio/detached.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"
#include "support/standby.hpp"

using namespace std::chrono_literals;
using pqscope::wal_position;
using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;
namespace sb = pqtest::standby;
using steady = std::chrono::steady_clock;

namespace {

// Runs the coroutines at once on io until every one has ended; rethrows the first failure.
void run_concurrently(net::io_context& io, std::vector<awaitable<void>> tasks) {
  std::vector<std::exception_ptr> errors;
  std::size_t done = 0;
  const std::size_t n = tasks.size();
  for (auto& t : tasks)
    net::co_spawn(io, std::move(t), [&](const std::exception_ptr& e) {
      if (e) errors.push_back(e);
      if (++done == n) io.stop();
    });
  io.restart();
  io.run();
  BOOST_TEST_REQUIRE(done == n);
  if (!errors.empty()) std::rethrow_exception(errors.front());
}

long ms_since(steady::time_point t0) {
  return static_cast<long>(std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t0).count());
}

// fn for a read: is the node in recovery (a standby)?
awaitable<bool> in_recovery(pa::connection& c) {
  co_return co_await c.async_query_value<bool>("SELECT pg_is_in_recovery()", use_awaitable);
}

awaitable<void> insert(pa::replica_set& rs, wal_position& seen, const std::string& table, int id) {
  co_await rs.async_write(seen, [&](pa::connection& c) -> awaitable<void> {
    co_await c.async_execute({"INSERT INTO " + table + " VALUES ($1, 'x')", id}, use_awaitable);
  });
}

// What a read with `seen` finds of row `id`, and where it ran.
struct sighting {
  long rows = 0;
  bool on_standby = false;
};
awaitable<sighting> look_up(pa::replica_set& rs, wal_position seen, const std::string& table, int id,
                            pqscope::transaction_options o = {}) {
  co_return co_await rs.async_read(
      seen,
      [&](pa::connection& c) -> awaitable<sighting> {
        sighting s;
        s.rows = co_await c.async_query_value<long>({"SELECT count(*) FROM " + table + " WHERE id = $1", id},
                                                    use_awaitable);
        s.on_standby = co_await in_recovery(c);
        co_return s;
      },
      o);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(replicas, *boost::unit_test::precondition(sb::available))

// 500 write-then-read pairs from 10 coroutines at once. Half the coroutines let a
// read wait for the standby (replica_wait), the others fall back to the primary at
// once: every read sees its write either way, and both ways are taken (the
// standby replays ~200 ms late: the servers commit with synchronous_commit=off).
BOOST_AUTO_TEST_CASE(a_read_with_the_token_of_a_write_never_misses_it) {
  pqtest::scratch_table table;
  net::io_context io;
  pqscope::replica_set_options o;
  o.pool.max_size = 12;
  pa::replica_set rs{io, sb::primary(), {sb::conninfo()}, o};
  constexpr int workers = 10, pairs = 50;
  int misses = 0, done = 0, waited_on_standby = 0;
  std::vector<awaitable<void>> tasks;
  for (int w = 0; w < workers; ++w)
    tasks.push_back([](pa::replica_set& rs, const std::string& table, int w, int& misses, int& done,
                       int& waited_on_standby) -> awaitable<void> {
      pqscope::transaction_options ro;
      if (w % 2 == 0) ro.replica_wait = 5s;
      for (int k = 0; k < pairs; ++k) {
        const int id = w * 1000 + k;
        wal_position seen;
        co_await insert(rs, seen, table, id);
        BOOST_TEST_REQUIRE(!seen.empty());
        const sighting s = co_await look_up(rs, seen, table, id, ro);
        if (s.rows != 1) ++misses;
        if (w % 2 == 0 && s.on_standby) ++waited_on_standby;
        ++done;
      }
    }(rs, table.name(), w, misses, done, waited_on_standby));
  run_concurrently(io, std::move(tasks));
  const pqscope::replica_set_stats st = rs.stats();
  BOOST_TEST_MESSAGE("stats: writes " << st.writes << ", on standby " << st.reads_on_standby << ", on primary "
                                      << st.reads_on_primary << ", behind " << st.standby_behind << ", down "
                                      << st.standby_down);
  BOOST_TEST(done == workers * pairs);
  BOOST_TEST(misses == 0);
  BOOST_TEST(st.writes == std::uint64_t{workers * pairs});
  BOOST_TEST(st.reads_on_standby + st.reads_on_primary == std::uint64_t{workers * pairs});
  BOOST_TEST(st.standby_behind > 0U);    // the check did hold reads back
  BOOST_TEST(st.reads_on_primary > 0U);  // those that would not wait
  BOOST_TEST(waited_on_standby > workers / 2 * pairs / 2);  // most of those that would
  BOOST_TEST(st.standby_down == 0U);
  BOOST_TEST(pqtest::committed_count(table) == long{workers * pairs});
}

// Caught up: every read runs on the standby, none on the primary. The leases of one's own.
BOOST_AUTO_TEST_CASE(reads_go_to_the_standby_once_it_has_caught_up) {
  pqtest::scratch_table table;
  net::io_context io;
  pa::replica_set rs{io, sb::primary(), {sb::conninfo()}};
  wal_position seen;
  pqtest::run_coro(io, insert(rs, seen, table.name(), 1));
  sb::wait_for_replay();
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    for (int i = 0; i < 20; ++i) {
      const sighting s = co_await look_up(rs, seen, table.name(), 1);
      BOOST_TEST(s.rows == 1);
      BOOST_TEST(s.on_standby);
    }
    // No token, fn without the connection, void.
    bool ran = false;
    co_await rs.async_read([&]() -> awaitable<void> {
      ran = true;
      co_return;
    });
    BOOST_TEST(ran);
    pa::lease on_standby = co_await rs.async_standby(use_awaitable);
    const bool standby_lease = co_await in_recovery(*on_standby);
    BOOST_TEST(standby_lease);
    pa::lease on_primary = co_await rs.async_primary(use_awaitable);
    const bool primary_lease = co_await in_recovery(*on_primary);
    BOOST_TEST(!primary_lease);
  }());
  const pqscope::replica_set_stats st = rs.stats();
  BOOST_TEST(st.writes == 1U);
  BOOST_TEST(st.reads_on_standby == 21U);
  BOOST_TEST(st.reads_on_primary == 0U);
  BOOST_TEST(st.standby_behind == 0U);
  BOOST_TEST(rs.primary_pool().size() > 0U);
  BOOST_TEST(rs.standby_pool(0).stats().reused > 0U);

  // Every pool's connections are closed when the shutdown completes.
  pqtest::run_coro(io, rs.async_shutdown(use_awaitable));
  BOOST_TEST(rs.primary_pool().size() == 0U);
  BOOST_TEST(rs.standby_pool(0).size() == 0U);
}

// A standby that cannot connect is passed over (and counted down); with no other,
// the read goes to the primary, or fails with connection_error when it may not. So
// does a standby whose session is lost under a read.
BOOST_AUTO_TEST_CASE(a_standby_that_cannot_connect_is_passed_over) {
  pqtest::scratch_table table;
  net::io_context io;
  wal_position seen;
  {
    pa::replica_set rs{io, sb::primary(), {sb::unreachable(), sb::conninfo()}};
    pqtest::run_coro(io, insert(rs, seen, table.name(), 1));
    sb::wait_for_replay();
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      for (int i = 0; i < 10; ++i) {
        const sighting s = co_await look_up(rs, seen, table.name(), 1);
        BOOST_TEST(s.rows == 1);
        BOOST_TEST(s.on_standby);
      }
      pa::lease l = co_await rs.async_standby(use_awaitable);
      const bool standby_lease = co_await in_recovery(*l);
      BOOST_TEST(standby_lease);
    }());
    const pqscope::replica_set_stats st = rs.stats();
    BOOST_TEST(st.standby_down >= 1U);
    BOOST_TEST(st.reads_on_standby == 10U);
    BOOST_TEST(st.reads_on_primary == 0U);
  }
  {
    pa::replica_set rs{io, sb::primary(), {sb::unreachable()}};
    const sighting s = pqtest::run_coro(io, look_up(rs, seen, table.name(), 1));
    BOOST_TEST(s.rows == 1);
    BOOST_TEST(!s.on_standby);
    BOOST_TEST(rs.stats().standby_down == 1U);
    BOOST_TEST(rs.stats().reads_on_primary == 1U);
  }
  {
    pqscope::replica_set_options o;
    o.fallback_to_primary = false;
    pa::replica_set rs{io, sb::primary(), {sb::unreachable()}, o};
    BOOST_CHECK_THROW(pqtest::run_coro(io, look_up(rs, seen, table.name(), 1)), pqscope::connection_error);
    BOOST_TEST(rs.stats().standby_down == 1U);
    BOOST_TEST(rs.stats().reads_on_primary == 0U);
  }
  {
    // A standby whose session is lost under the read: the read runs again elsewhere.
    pa::replica_set rs{io, sb::primary(), {sb::conninfo()}};
    int calls = 0;
    const bool on_standby = pqtest::run_coro(io, rs.async_read(seen, [&](pa::connection& c) -> awaitable<bool> {
      const bool standby = co_await in_recovery(c);
      if (++calls == 1) co_await c.async_execute("SELECT pg_terminate_backend(pg_backend_pid())", use_awaitable);
      co_return standby;
    }));
    BOOST_TEST(calls == 2);
    BOOST_TEST(!on_standby);
    BOOST_TEST(rs.stats().standby_down == 1U);
    BOOST_TEST(rs.stats().reads_on_primary == 1U);
  }
}

// The standby is behind (its replay paused). replica_wait 0 and fallback_to_primary
// off: replica_behind, nothing ran anywhere. Fallback on: the primary serves. A
// wait that the standby's catching up ends: the standby serves.
BOOST_AUTO_TEST_CASE(a_standby_behind_is_passed_over_waited_for_or_refused) {
  pqtest::scratch_table table;
  net::io_context io;
  pqscope::replica_set_options strict;
  strict.fallback_to_primary = false;
  pa::replica_set rs{io, sb::primary(), {sb::conninfo()}, strict};
  wal_position seen;
  pqtest::run_coro(io, insert(rs, seen, table.name(), 1));
  sb::wait_for_replay();  // the table and row 1 are there
  sb::replay_paused paused;
  pqtest::run_coro(io, insert(rs, seen, table.name(), 2));
  int answered = 0;  // statements of fn that got an answer: the check refuses the first one
  try {
    pqtest::run_coro(io, rs.async_read(seen, [&](pa::connection& c) -> awaitable<long> {
      const long n = co_await c.async_query_value<long>("SELECT count(*) FROM " + table.name(), use_awaitable);
      ++answered;
      co_return n;
    }));
    BOOST_ERROR("a read the standby is behind for ran there, or elsewhere");
  } catch (const pqscope::replica_behind& e) {
    BOOST_TEST(e.required().value() == seen.value());
    BOOST_TEST(e.replayed().value() < seen.value());
  }
  BOOST_TEST(answered == 0);
  BOOST_TEST(rs.stats().standby_behind == 1U);
  BOOST_TEST(rs.stats().reads_on_standby == 0U);
  BOOST_TEST(rs.stats().reads_on_primary == 0U);

  // A script first in the read (sent on its own, after what is queued): refused the same way.
  {
    pa::replica_set scripted{io, sb::primary(), {sb::conninfo()}, strict};
    BOOST_CHECK_THROW(pqtest::run_coro(io, scripted.async_read(seen, [&](pa::connection& c) -> awaitable<long> {
                        auto rs = co_await c.async_execute_script("SELECT count(*) FROM " + table.name() + "; SELECT 1",
                                                                  use_awaitable);
                        ++answered;
                        co_return rs.at(0)[0][0].as<long>();
                      })),
                      pqscope::replica_behind);
    BOOST_TEST(answered == 0);
    BOOST_TEST(scripted.stats().standby_behind == 1U);
  }

  // A wait that runs out: replica_behind again, after the wait.
  {
    pa::replica_set waiting{io, sb::primary(), {sb::conninfo()}, strict};
    pqscope::transaction_options o;
    o.replica_wait = 300ms;
    const auto t0 = steady::now();
    BOOST_CHECK_THROW(pqtest::run_coro(io, look_up(waiting, seen, table.name(), 2, o)), pqscope::replica_behind);
    BOOST_TEST(ms_since(t0) >= 300);
  }
  // Fallback on: the primary serves, and sees row 2.
  {
    pa::replica_set lenient{io, sb::primary(), {sb::conninfo()}};
    const sighting s = pqtest::run_coro(io, look_up(lenient, seen, table.name(), 2));
    BOOST_TEST(s.rows == 1);
    BOOST_TEST(!s.on_standby);
    BOOST_TEST(lenient.stats().standby_behind == 1U);
    BOOST_TEST(lenient.stats().reads_on_primary == 1U);
  }
  // Waiting, while the standby resumes 300 ms in: the standby serves.
  {
    pa::replica_set waiting{io, sb::primary(), {sb::conninfo()}, strict};
    pqscope::transaction_options o;
    o.replica_wait = 10s;
    sighting s;
    const auto t0 = steady::now();
    auto read = [&]() -> awaitable<void> { s = co_await look_up(waiting, seen, table.name(), 2, o); };
    auto resume = [&]() -> awaitable<void> {
      co_await pqtest::sleep_for(300ms);
      paused.resume();
    };
    std::vector<awaitable<void>> both;
    both.push_back(read());
    both.push_back(resume());
    run_concurrently(io, std::move(both));
    BOOST_TEST(ms_since(t0) >= 300);
    BOOST_TEST(s.rows == 1);
    BOOST_TEST(s.on_standby);
    BOOST_TEST(waiting.stats().reads_on_standby == 1U);
    BOOST_TEST(waiting.stats().standby_behind >= 1U);
  }
}

// async_atomic on a plain connection to the standby: at_least + replica_wait runs
// the function again until the standby has replayed the position, then it sees the row.
BOOST_AUTO_TEST_CASE(async_atomic_with_at_least_waits_for_the_standby) {
  pqtest::scratch_table table;
  pqtest::shared_observer().execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
  sb::wait_for_replay();
  sb::replay_paused paused;
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pqscope::connection_options positions;
    positions.commit_positions = true;
    pa::connection w = co_await pqtest::connect_async(sb::primary(), positions);
    co_await pa::async_atomic(w, [&]() -> awaitable<void> {
      co_await w.async_execute("INSERT INTO " + table.name() + " VALUES (2, 'x')", use_awaitable);
    });
    const wal_position at = w.last_commit_position();
    BOOST_TEST_REQUIRE(!at.empty());
    pa::connection s = co_await pqtest::connect_async(sb::conninfo());
    auto count = [&](pa::connection& c) -> awaitable<long> {
      co_return co_await c.async_query_value<long>("SELECT count(*) FROM " + table.name(), use_awaitable);
    };

    // No wait: behind at once.
    pqscope::transaction_options o;
    o.at_least = at;
    bool refused = false;
    try {
      (void)co_await pa::async_atomic(s, o, count);
    } catch (const pqscope::replica_behind&) {
      refused = true;
    }
    BOOST_TEST(refused);
    BOOST_TEST(s.stats().replica_behind == 1U);

    // A wait the standby's catching up ends.
    o.replica_wait = 10s;
    net::co_spawn(
        s.get_executor(),
        [&]() -> awaitable<void> {
          co_await pqtest::sleep_for(300ms);
          paused.resume();
        },
        net::detached);
    const auto t0 = steady::now();
    const long n = co_await pa::async_atomic(s, o, count);
    BOOST_TEST(ms_since(t0) >= 300);
    BOOST_TEST(n == 2);
    BOOST_TEST(s.stats().replica_behind > 1U);  // polled while paused
    BOOST_TEST(sb::replayed().value() >= at.value());
  }());
}

BOOST_AUTO_TEST_SUITE_END()
