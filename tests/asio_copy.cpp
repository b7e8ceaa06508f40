#define BOOST_TEST_MODULE asio_copy
#include <boost/test/unit_test.hpp>

// async_copy_in / async_copy_out: the blocking COPY's meaning (tests/copy.cpp) on
// the asio connection, directly and through PgBouncer: rows in and out exactly,
// inside scopes at any depth, a failed COPY dooms its scope, an abandoned one keeps
// nothing and leaves no transaction open, nothing else runs meanwhile, and the
// thread never blocks while a large COPY streams.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include <signal.h>

#include <boost/asio/steady_timer.hpp>

#include "support/asio_run.hpp"
#include "support/servers.hpp"

using pqtest::awaitable;
using pqtest::for_each_target;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;

namespace {

// Text that needs every escape COPY's format has, and some that must stay as it is.
const std::vector<std::optional<std::string>> tricky = {
    std::string("plain"),      std::string("tab\there"),  std::string("new\nline"), std::string("cr\rhere"),
    std::string("back\\slash"), std::string("\\N"),        std::string(""),         std::nullopt,
    std::string("NULL"),       std::string("ünï €𝄞"),    std::string("\\."),      std::string("a\\tb"),
    std::string(" lead and trail "), std::string("\x01\x7f")};

std::string copy_of(const pqtest::scratch_table& t) { return "COPY " + t.name() + " (id, v) FROM STDIN"; }

// PQSCOPE_ASIO_COPY_ROWS: the rows of the large COPY (default 400,000; fewer under valgrind).
int rows_of_large_copy() {
  const char* v = std::getenv("PQSCOPE_ASIO_COPY_ROWS");
  return v != nullptr && *v != '\0' ? std::atoi(v) : 400000;
}

}  // namespace

BOOST_AUTO_TEST_CASE(rows_in_and_out_in_autocommit) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      pa::copy_writer w = co_await c.async_copy_in(copy_of(table), use_awaitable);
      for (std::size_t i = 0; i < tricky.size(); ++i) w.write_row(static_cast<int>(i), tricky[i]);
      BOOST_TEST(w.rows_written() == tricky.size());
      co_await w.async_send(use_awaitable);
      BOOST_TEST(w.buffered() == 0u);
      BOOST_TEST((co_await w.async_finish(use_awaitable)) == tricky.size());
      BOOST_TEST(c.depth() == 0u);
      // Stored exactly: compared by the server with the same values sent as parameters.
      for (std::size_t i = 0; i < tricky.size(); ++i)
        BOOST_TEST(pqtest::shared_observer().query_value<bool>(
                       "SELECT v IS NOT DISTINCT FROM $2 FROM " + table.name() + " WHERE id = $1",
                       static_cast<int>(i), tricky[i]),
                   "row " << i);
      // And read back exactly, as typed rows and as text fields.
      pa::copy_reader r =
          co_await c.async_copy_out("COPY (SELECT id, v FROM " + table.name() + " ORDER BY id) TO STDOUT", use_awaitable);
      std::size_t n = 0;
      while (auto row = co_await r.async_next<int, std::optional<std::string>>(use_awaitable)) {
        BOOST_TEST(std::get<0>(*row) == static_cast<int>(n));
        BOOST_TEST((std::get<1>(*row) == tricky[n]), "row " << n);
        ++n;
      }
      BOOST_TEST(n == tricky.size());
      BOOST_TEST(r.done());
      BOOST_TEST(r.rows_read() == tricky.size());
      BOOST_TEST(!(co_await r.async_next<int, std::optional<std::string>>(use_awaitable)).has_value());
      pa::copy_reader r2 = co_await c.async_copy_out(
          "COPY (SELECT v, id FROM " + table.name() + " WHERE id = 1) TO STDOUT", use_awaitable);
      auto fields = co_await r2.async_read_row(use_awaitable);
      BOOST_REQUIRE(fields.has_value());
      BOOST_TEST(fields->size() == 2u);
      BOOST_TEST(((*fields)[0] == tricky[1]));
      BOOST_TEST(((*fields)[1] == std::optional<std::string>("1")));
      BOOST_TEST(!(co_await r2.async_read_row(use_awaitable)).has_value());
      // The connection goes on.
      BOOST_TEST((co_await c.async_query_value<long>({"SELECT count(*) FROM " + table.name()}, use_awaitable)) ==
                 static_cast<long>(tricky.size()));
    }());
  });
}

// A large COPY in both directions while a 5 ms timer runs on the same thread: the
// writer's buffer never holds much more than one chunk (it is sent whenever
// full()), the timer keeps firing, and every row arrives.
BOOST_AUTO_TEST_CASE(a_large_copy_never_blocks_the_thread) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    int ticks = 0;
    bool copying = true;
    net::co_spawn(
        io,
        [&]() -> awaitable<void> {
          net::steady_timer timer(io);
          while (copying) {
            timer.expires_after(std::chrono::milliseconds(5));
            co_await timer.async_wait(use_awaitable);
            ++ticks;
          }
        },
        [](const std::exception_ptr&) {});
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const int rows = rows_of_large_copy();
      const std::string pad(40, 'x');
      std::size_t most = 0;
      int sends = 0;
      const auto start = std::chrono::steady_clock::now();
      auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
      for (int i = 0; i < rows; ++i) {
        w.write_row(i, pad);
        most = std::max(most, w.buffered());
        if (w.full()) {
          co_await w.async_send(use_awaitable);
          ++sends;
        }
      }
      BOOST_TEST((co_await w.async_finish(use_awaitable)) == static_cast<std::uint64_t>(rows));
      BOOST_TEST(most < std::size_t{64} * 1024 + 100);
      BOOST_TEST(sends >= rows * 40 / 65536);  // rows of about 47 bytes, sent 64 KiB at a time
      long sum = 0, n = 0;
      auto r = co_await c.async_copy_out("COPY " + table.name() + " (id) TO STDOUT", use_awaitable);
      while (auto row = co_await r.async_next<long>(use_awaitable)) {
        sum += std::get<0>(*row);
        ++n;
      }
      const auto ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
      copying = false;
      BOOST_TEST(n == rows);
      BOOST_TEST(sum == static_cast<long>(rows) * (rows - 1) / 2);
      // At least one tick per 200 ms of COPY (one per 5 ms when quiet): the thread was
      // never held for long, also under valgrind.
      BOOST_TEST(ticks >= ms / 200, ticks << " ticks in " << ms << " ms");
      BOOST_TEST_MESSAGE(t.name << ": " << rows << " rows in and out in " << ms << " ms, " << ticks << " ticks");
    }());
  });
}

// Backpressure: a server that stops reading (its backend stopped with SIGSTOP)
// holds the writer back. async_send() completes only once its chunk is on the
// socket, so while the server sleeps at most the socket buffers' worth of sends
// complete, the thread stays free (a timer keeps firing), and every row arrives
// once the server wakes.
BOOST_AUTO_TEST_CASE(a_server_that_stops_reading_holds_the_writer_back) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    if (t.pgbouncer()) return;  // the backend behind a pooler is not this client's to stop
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const int pid = co_await c.async_query_value<int>({"SELECT pg_backend_pid()"}, use_awaitable);
      auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
      struct resume {  // whatever happens, the backend runs again
        int pid;
        ~resume() { ::kill(pid, SIGCONT); }
      } const resumed{pid};
      BOOST_REQUIRE(::kill(pid, SIGSTOP) == 0);
      const std::string pad(100, 'p');
      const int most_sends = 1000;  // 64 MB: far more than loopback's socket buffers hold
      int sends = 0, row = 0, ticks = 0;
      bool writing = true, ended = false;
      net::co_spawn(
          io,
          [&]() -> awaitable<void> {
            while (writing && sends < most_sends) {
              w.write_row(++row, pad);
              if (w.full()) {
                co_await w.async_send(use_awaitable);
                ++sends;
              }
            }
            writing = false;
            ended = true;
          },
          [](const std::exception_ptr&) {});
      net::steady_timer timer(io);
      for (int i = 0; i < 100; ++i) {  // 500 ms with the server asleep
        timer.expires_after(std::chrono::milliseconds(5));
        co_await timer.async_wait(use_awaitable);
        ++ticks;
      }
      const int sends_while_stopped = sends;
      BOOST_TEST(writing, "every send completed while the server read nothing");
      BOOST_TEST(sends_while_stopped < 400, sends_while_stopped << " sends of 64 KiB completed while stopped");
      BOOST_TEST(ticks == 100);
      ::kill(pid, SIGCONT);
      writing = false;
      while (!ended) co_await pqtest::sleep_for(std::chrono::milliseconds(1));  // the send in flight completes
      const auto n = co_await w.async_finish(use_awaitable);
      BOOST_TEST(n == static_cast<std::uint64_t>(row));
      BOOST_TEST(pqtest::committed_count(table) == row);
      BOOST_TEST_MESSAGE(t.name << ": " << sends_while_stopped << " sends completed while the server was stopped");
    }());
  });
}

// Inside scopes: the BEGIN and SAVEPOINT still queued go out before the COPY, its
// rows belong to the transaction, and a savepoint around it undoes them.
BOOST_AUTO_TEST_CASE(inside_scopes_at_any_depth) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (bool batch : {false, true}) BOOST_TEST_CONTEXT((batch ? "batched" : "unbatched")) {
        pqtest::empty(table);
        net::io_context io;
        pqtest::run_coro(io, [&]() -> awaitable<void> {
          auto c = co_await pqtest::connect_async(t.conninfo);
          pqscope::transaction_options o;
          o.batch = batch;
          co_await pa::async_atomic(c, o, [&]() -> awaitable<void> {
            (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id, v) VALUES (100, 'before')"},
                                           use_awaitable);  // queued when batched
            co_await pa::async_atomic(c, [&]() -> awaitable<void> {
              co_await pa::async_atomic(c, [&]() -> awaitable<void> {
                auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
                w.write_row(1, "a");
                w.write_row(2, nullptr);
                BOOST_TEST((co_await w.async_finish(use_awaitable)) == 2u);
                BOOST_TEST(c.depth() == 3u);
              });
            });
            try {
              co_await pa::async_atomic(c, [&]() -> awaitable<void> {
                auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
                w.write_row(3, "undone");
                (void)co_await w.async_finish(use_awaitable);
                throw std::runtime_error("undo the COPY");
              });
            } catch (const std::runtime_error&) {
            }
            // The transaction's own rows, uncommitted, through COPY TO STDOUT.
            auto r = co_await c.async_copy_out("COPY (SELECT id FROM " + table.name() + " ORDER BY id) TO STDOUT",
                                               use_awaitable);
            std::string ids;
            while (auto row = co_await r.async_next<int>(use_awaitable)) ids += std::to_string(std::get<0>(*row)) + ",";
            BOOST_TEST(ids == "1,2,100,");
            BOOST_TEST(pqtest::committed_count(table) == 0);
          });
          BOOST_TEST(pqtest::committed_ids(table) == "1,2,100");
          BOOST_TEST(c.stats().replays == 0u);
          // The outermost scope rolling back takes the COPY with it.
          try {
            co_await pa::async_atomic(c, o, [&]() -> awaitable<void> {
              auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
              w.write_row(7, "gone");
              (void)co_await w.async_finish(use_awaitable);
              throw std::runtime_error("roll back");
            });
          } catch (const std::runtime_error&) {
          }
          BOOST_TEST(pqtest::committed_ids(table) == "1,2,100");
        }());
      }
  });
}

// A COPY the server refuses dooms the scope it ran in, as any failed statement does:
// the savepoint around it undoes it and the transaction goes on. In autocommit
// nothing of it is kept; the writer refuses more rows.
BOOST_AUTO_TEST_CASE(a_failed_copy_dooms_its_scope) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (bool batch : {false, true}) BOOST_TEST_CONTEXT((batch ? "batched" : "unbatched")) {
        pqtest::empty(table);
        net::io_context io;
        pqtest::run_coro(io, [&]() -> awaitable<void> {
          auto c = co_await pqtest::connect_async(t.conninfo);
          {
            auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
            w.write_row(1, "x");
            w.write_row(1, "duplicate");
            BOOST_CHECK_THROW((void)co_await w.async_finish(use_awaitable), pqscope::unique_violation);
            BOOST_CHECK_THROW(w.write_row(2, "y"), pqscope::usage_error);  // it has ended
            BOOST_CHECK_THROW(co_await w.async_send(use_awaitable), pqscope::usage_error);
          }
          BOOST_TEST(pqtest::committed_count(table) == 0);
          pqscope::transaction_options o;
          o.batch = batch;
          std::string caught;
          co_await pa::async_atomic(c, o, [&]() -> awaitable<void> {
            (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id) VALUES (10)"}, use_awaitable);
            try {
              co_await pa::async_atomic(c, [&]() -> awaitable<void> {
                (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id) VALUES (11)"}, use_awaitable);
                auto w = co_await c.async_copy_in("COPY " + table.name() + " (id) FROM STDIN", use_awaitable);
                w.write_row("not a number");
                (void)co_await w.async_finish(use_awaitable);
              });
            } catch (const pqscope::sql_error& e) {
              caught = e.sqlstate();
            }
            (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id) VALUES (12)"}, use_awaitable);
          });
          BOOST_TEST(caught == "22P02");
          BOOST_TEST(pqtest::committed_ids(table) == "10,12");
          BOOST_TEST(c.stats().replays == 0u);  // the COPY's error surfaced where it ran
          // A doomed scope refuses a COPY like any statement.
          bool refused = false;
          try {
            co_await pa::async_atomic(c, [&]() -> awaitable<void> {
              try {
                (void)co_await c.async_execute({"SELECT 1/0"}, use_awaitable);
              } catch (const pqscope::sql_error&) {
              }
              (void)co_await c.async_copy_in(copy_of(table), use_awaitable);
            });
          } catch (const pqscope::transaction_aborted&) {
            refused = true;
          }
          BOOST_TEST(refused);
        }());
      }
  });
}

// A writer destroyed before async_finish(), by an exception or by leaving it, aborts
// the COPY in the background: nothing of it is kept, the next operation waits for
// that, no transaction is left open. A reader left half-read is read to its end.
BOOST_AUTO_TEST_CASE(an_abandoned_copy_keeps_nothing) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    const std::string app = pqtest::unique_name("acopy_abort");
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(pqtest::with_app_name(t, app));
      {
        auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
        for (int i = 0; i < 20000; ++i) {
          w.write_row(i, "left behind");
          if (w.full()) co_await w.async_send(use_awaitable);
        }
      }
      BOOST_TEST((co_await c.async_query_value<int>({"SELECT 1"}, use_awaitable)) == 1);
      BOOST_TEST(pqtest::committed_count(table) == 0);
      bool thrown = false;
      try {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id) VALUES (-1)"}, use_awaitable);
          auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
          for (int i = 0; i < 100000; ++i) {
            if (i == 50000) throw std::runtime_error("the source failed");
            w.write_row(i, "row");
            if (w.full()) co_await w.async_send(use_awaitable);
          }
          (void)co_await w.async_finish(use_awaitable);
        });
      } catch (const std::runtime_error& e) {
        thrown = std::string(e.what()) == "the source failed";
      }
      BOOST_TEST(thrown);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(pqtest::committed_count(table) == 0);
      BOOST_TEST(pqtest::idle_in_transaction(app) == 0);
      // A reader dropped after one row: the rest is read and dropped; the scope goes on.
      (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id) SELECT g FROM generate_series(1, 5000) g"},
                                     use_awaitable);
      co_await pa::async_atomic(c, [&]() -> awaitable<void> {
        {
          auto r = co_await c.async_copy_out("COPY " + table.name() + " (id) TO STDOUT", use_awaitable);
          BOOST_TEST((co_await r.async_next<int>(use_awaitable)).has_value());
        }
        (void)co_await c.async_execute({"INSERT INTO " + table.name() + " (id) VALUES (0)"}, use_awaitable);
      });
      BOOST_TEST(pqtest::committed_count(table) == 5001);
      // A writer dropped inside a scope that then commits: the aborted COPY doomed it.
      bool doomed = false;
      try {
        co_await pa::async_atomic(c, [&]() -> awaitable<void> {
          auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
          w.write_row(-5, "never finished");
        });
      } catch (const pqscope::transaction_aborted& e) {
        doomed = std::string(e.what()).find("the copy_writer was destroyed before async_finish()") != std::string::npos;
        BOOST_TEST(doomed, e.what());
      }
      BOOST_TEST(doomed);
      BOOST_TEST(pqtest::committed_count(table) == 5001);
      BOOST_TEST(pqtest::idle_in_transaction(app) == 0);
    }());
  });
}

// While a COPY is open, the connection refuses everything else; the COPY goes on.
// One operation of a COPY at a time.
BOOST_AUTO_TEST_CASE(nothing_else_runs_during_a_copy) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      co_await pa::async_atomic(c, [&]() -> awaitable<void> {
        auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
        w.write_row(1, "a");
        try {
          (void)co_await c.async_execute({"SELECT 1"}, use_awaitable);
          BOOST_ERROR("async_execute() during a COPY was accepted");
        } catch (const pqscope::usage_error& e) {
          BOOST_TEST(std::string(e.what()).find("a COPY is in progress") != std::string::npos, e.what());
        }
        BOOST_CHECK_THROW((void)co_await c.async_copy_out("COPY " + table.name() + " TO STDOUT", use_awaitable),
                          pqscope::usage_error);
        BOOST_CHECK_THROW(c.set_local("work_mem", "64MB"), pqscope::usage_error);
        // Two sends at once: the second is refused, the first goes on.
        std::exception_ptr first, second;
        int done = 0;
        w.async_send([&](std::exception_ptr e) { first = e, ++done; });
        w.async_send([&](std::exception_ptr e) { second = e, ++done; });
        while (done < 2) co_await pqtest::sleep_for(std::chrono::milliseconds(1));
        BOOST_TEST(!first);
        BOOST_CHECK_THROW(std::rethrow_exception(second), pqscope::usage_error);
        w.write_row(2, "b");
        BOOST_TEST((co_await w.async_finish(use_awaitable)) == 2u);
        BOOST_TEST((co_await c.async_query_value<long>({"SELECT count(*) FROM " + table.name()}, use_awaitable)) == 2);
      });
      BOOST_TEST(pqtest::committed_ids(table) == "1,2");
      // Moved from and default: refused.
      pa::copy_writer none;
      BOOST_CHECK_THROW(none.write_row(1), pqscope::usage_error);
      BOOST_CHECK_THROW((void)none.async_finish(use_awaitable), pqscope::usage_error);
    }());
  });
}

BOOST_AUTO_TEST_CASE(misuse_is_refused_before_anything_is_sent) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const auto before = c.stats().round_trips;
      BOOST_CHECK_THROW((void)co_await c.async_copy_in("COPY " + table.name() + " TO STDOUT", use_awaitable),
                        pqscope::usage_error);
      BOOST_CHECK_THROW((void)co_await c.async_copy_out("COPY " + table.name() + " FROM STDIN", use_awaitable),
                        pqscope::usage_error);
      BOOST_CHECK_THROW((void)co_await c.async_copy_in("SELECT 1", use_awaitable), pqscope::usage_error);
      BOOST_CHECK_THROW(
          (void)co_await c.async_copy_in({"COPY " + table.name() + " FROM STDIN", 1}, use_awaitable),
          pqscope::usage_error);
      BOOST_CHECK_THROW(
          (void)co_await c.async_copy_in("COPY " + table.name() + " FROM STDIN WHERE id = $1", use_awaitable),
          pqscope::usage_error);
      BOOST_TEST(c.stats().round_trips == before);
      // A COPY the server refuses at once (no such table) fails the operation.
      try {
        (void)co_await c.async_copy_in("COPY no_such_table_here FROM STDIN", use_awaitable);
        BOOST_ERROR("a COPY into a missing table started");
      } catch (const pqscope::sql_error& e) {
        BOOST_TEST(e.sqlstate() == "42P01");
      }
      BOOST_TEST((co_await c.async_query_value<int>({"SELECT 2"}, use_awaitable)) == 2);
    }());
  });
}

// The server goes away in the middle of a COPY: the writer's next operation fails
// with connection_error, and the connection can be opened again.
BOOST_AUTO_TEST_CASE(a_connection_lost_mid_copy) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    if (t.pgbouncer()) return;  // the backend behind a pooler is not this client's to end
    pqtest::empty(table);
    net::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto c = co_await pqtest::connect_async(t.conninfo);
      const int pid = co_await c.async_query_value<int>({"SELECT pg_backend_pid()"}, use_awaitable);
      auto w = co_await c.async_copy_in(copy_of(table), use_awaitable);
      w.write_row(1, "a");
      co_await w.async_send(use_awaitable);
      pqtest::terminate_backend(pid);
      bool lost = false;
      try {
        for (int i = 2; i < 1000000; ++i) {
          w.write_row(i, "after the end");
          if (w.full()) co_await w.async_send(use_awaitable);
        }
        (void)co_await w.async_finish(use_awaitable);
      } catch (const pqscope::connection_error&) {
        lost = true;
      }
      BOOST_TEST(lost);
      BOOST_TEST(!c.is_open());
      co_await c.async_connect(use_awaitable);
      BOOST_TEST((co_await c.async_query_value<int>({"SELECT 3"}, use_awaitable)) == 3);
      BOOST_TEST(pqtest::committed_count(table) == 0);
    }());
  });
}
