// The semantic suites through pqscope::asio: every program runs three ways, on the
// asynchronous connection (transaction objects and async_atomic, in coroutines),
// on the blocking connection, and in the model of tests/support/model.hpp. All
// three must agree on the committed rows, the callbacks that fired and every
// exception caught on the way; the two connections must also have made the same
// number of round trips (one machine plans both), and end idle at depth 0, with no
// session of the test idle in transaction in pg_stat_activity.
//
//   - the nesting matrix (tests/nesting.cpp): an outer scope calling an inner one,
//     each ending by commit, rollback, destruction, exception or SQL error, with
//     and without a savepoint;
//   - a failure at every position (tests/batch.cpp): six statements over three
//     nested scopes, statement k fails, caught at each level or not at all;
//   - depth 1..10, the innermost committing or rolling back;
//   - random programs from fixed seeds (tests/model.cpp's generator), with the
//     transaction_options it draws from each seed.
// Each family also runs with the outermost scope batched.
//
// PQSCOPE_ASIO_MODEL_PROGRAMS sets the random programs per target and mode (default 600).

#define BOOST_TEST_MODULE asio_model
#include <boost/test/unit_test.hpp>

#include <cstdint>
#include <iostream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "support/asio_run.hpp"
#include "support/model.hpp"
#include "support/servers.hpp"

using pqtest::awaitable;
using pqtest::use_awaitable;
namespace net = boost::asio;
namespace pa = pqscope::asio;
using namespace pqtest::programs;  // NOLINT: the program vocabulary

namespace {

// real_runner (support/model.hpp), line for line, on the asynchronous connection.
class async_runner {
 public:
  async_runner(pa::connection& c, std::string table, int base, bool batch)
      : c_(c), table_(std::move(table)), base_(base), batch_(batch) {}

  awaitable<observed> run(const scope_node& program) {
    std::exception_ptr escaped;
    try {
      co_await scope(program, true);
    } catch (...) {
      escaped = std::current_exception();
    }
    out_.trace.push_back(escaped ? "escaped: " + category(escaped) : "escaped: none");
    // A scope destroyed open is rolled back in the background, and its on_rollback
    // callbacks fire when that ends: wait for it with an operation that sends nothing.
    std::exception_ptr after;
    try {
      co_await c_.async_flush(use_awaitable);
    } catch (...) {
      after = std::current_exception();
    }
    if (after) out_.trace.push_back("after the program, async_flush(): " + category(after));
    co_return out_;  // the committed rows: look(), as for real_runner
  }

 private:
  awaitable<void> body(const scope_node& s) {
    for (const op& o : s.body) {
      if (!o.caught) {
        co_await step(o);
        continue;
      }
      std::exception_ptr caught;
      try {
        co_await step(o);
      } catch (...) {
        caught = std::current_exception();
      }
      if (caught) out_.trace.push_back(category(caught));
    }
  }

  awaitable<void> scope(const scope_node& s, bool root = false) {
    const pqscope::transaction_options opts = options_of(s, batch_ && root);
    if (s.atomic) {
      const std::size_t mark = out_.trace.size();
      co_await pa::async_atomic(c_, opts, [&]() -> awaitable<void> {
        out_.trace.resize(mark);  // a replayed attempt starts afresh
        co_await body(s);
        if (s.end == scope_node::raise) throw user_exception{};
      });
      co_return;
    }
    pa::transaction tx{c_, opts};
    co_await body(s);
    switch (s.end) {
      case scope_node::commit: co_await tx.async_commit(use_awaitable); break;
      case scope_node::rollback: co_await tx.async_rollback(use_awaitable); break;
      case scope_node::drop: break;  // destroyed open: rolled back without being awaited
      case scope_node::raise: throw user_exception{};
    }
  }

  awaitable<void> step(const op& o) {
    switch (o.k) {
      case op::insert:
        co_await c_.async_execute({"INSERT INTO " + table_ + " VALUES ($1)", base_ + o.id}, use_awaitable);
        break;
      case op::fail: co_await c_.async_execute("INSERT INTO " + table_ + " VALUES (0)", use_awaitable); break;
      case op::on_commit: c_.on_commit([this, id = o.id] { out_.fired.push_back(id); }); break;
      case op::on_rollback: c_.on_rollback([this, id = o.id] { out_.fired.push_back(-id); }); break;
      case op::read: {
        const auto rows = co_await c_.async_query_value<std::optional<std::string>>(
            {"SELECT string_agg((id - $1)::text, ',' ORDER BY id) FROM " + table_ + " WHERE id > $1", base_},
            use_awaitable);
        out_.trace.push_back("read: " + rows.value_or(""));
        break;
      }
      case op::nested: co_await scope(*o.scope); break;
    }
  }

  pa::connection& c_;
  std::string table_;
  int base_;
  bool batch_;
  observed out_;
};

// One program, three ways.
class harness {
 public:
  harness(const pqtest::target& t, bool batch)
      : t_(t),
        batch_(batch),
        async_app_(pqtest::unique_name("pqscope_amodel_async")),
        sync_app_(pqtest::unique_name("pqscope_amodel_sync")),
        async_table_("id int PRIMARY KEY"),
        sync_table_("id int PRIMARY KEY") {
    connect();
    sync_->execute("INSERT INTO " + sync_table_.name() + " VALUES (0)");
    // The check after each program must be able to fail: inside a scope, the
    // observer sees each session idle in transaction (also through the poolers).
    std::string seen_async, seen_sync;
    pqtest::run_coro(io_, [&]() -> awaitable<void> {
      co_await async_->async_execute("INSERT INTO " + async_table_.name() + " VALUES (0)", use_awaitable);
      pa::transaction tx{*async_};
      co_await async_->async_execute("SELECT 1", use_awaitable);
      seen_async = look(pqtest::shared_observer(), async_app_, async_app_).in_transaction;
      co_await tx.async_rollback(use_awaitable);
    }());
    {
      pqscope::transaction tx{*sync_};
      sync_->execute("SELECT 1");
      seen_sync = look(pqtest::shared_observer(), sync_app_, sync_app_).in_transaction;
    }
    BOOST_REQUIRE_MESSAGE(!seen_async.empty() && !seen_sync.empty(),
                          "the observer does not see the sessions inside a transaction on " << t.name);
  }

  std::optional<std::string> check(const scope_node& program) {
    base_ += 1000;
    std::ostringstream why;
    const auto async_before = async_->stats().round_trips;
    observed got = pqtest::run_coro(io_, async_runner(*async_, async_table_.name(), base_, batch_).run(program));
    const auto async_trips = async_->stats().round_trips - async_before;
    const auto sync_before = sync_->stats().round_trips;
    observed blocking = real_runner(*sync_, sync_table_.name(), base_, batch_).run(program);
    const auto sync_trips = sync_->stats().round_trips - sync_before;
    // The sessions first, as the program left them.
    if (async_->depth() != 0) why << "asynchronous depth() is " << async_->depth() << " after the outermost scope\n  ";
    if (sync_->depth() != 0) why << "blocking depth() is " << sync_->depth() << " after the outermost scope\n  ";
    if (PQtransactionStatus(async_->native_handle()) != PQTRANS_IDLE) why << "the asynchronous session is not idle\n  ";
    if (PQtransactionStatus(sync_->native_handle()) != PQTRANS_IDLE) why << "the blocking session is not idle\n  ";
    seen_from_outside seen =
        look_after(pqtest::shared_observer(), async_app_, sync_app_, {async_table_.name(), sync_table_.name()}, base_);
    if (!seen.in_transaction.empty()) why << "pg_stat_activity: " << seen.in_transaction << "\n  ";
    got.committed = std::move(seen.committed[0]);
    blocking.committed = std::move(seen.committed[1]);
    const observed expected = model().run(program);
    if (!(got == expected)) why << "asynchronous: " << got << "\n  model:        " << expected << "\n  ";
    if (!(got == blocking)) why << "asynchronous: " << got << "\n  blocking:     " << blocking << "\n  ";
    if (async_trips != sync_trips)
      why << "round trips: asynchronous " << async_trips << ", blocking " << sync_trips << "\n  ";
    if (why.str().empty()) return std::nullopt;
    // The next program (or shrinking step) starts on fresh sessions, not on what these left.
    connect();
    return why.str();
  }

  // Greedy shrinking, as in tests/model.cpp.
  std::shared_ptr<scope_node> shrink(std::shared_ptr<scope_node> program) {
    for (bool progress = true; progress;) {
      progress = false;
      for (auto& candidate : smaller(*program))
        if (check(*candidate)) {
          program = candidate;
          progress = true;
          break;
        }
    }
    return program;
  }

  void require(const std::shared_ptr<scope_node>& program, const std::string& what) {
    ++checked_;
    if (auto why = check(*program)) {
      auto small = shrink(program);
      std::ostringstream os;
      os << what << (batch_ ? ", batched" : "") << ", outermost options {" << describe(options_of(*program, batch_))
         << "}: disagreement\n  " << *why << "\nsmallest program that still disagrees:\n";
      print(os, *small, 0);
      os << "\n  " << check(*small).value_or("(no longer reproduces)");
      BOOST_FAIL(os.str());
    }
  }

  [[nodiscard]] const pqscope::connection_stats& stats() const { return async_->stats(); }
  [[nodiscard]] long checked() const { return checked_; }

 private:
  void connect() {
    async_.reset();
    sync_.reset();
    sync_.emplace(pqtest::with_app_name(t_, sync_app_));
    async_ = pqtest::run_coro(io_, pqtest::connect_async(pqtest::with_app_name(t_, async_app_)));
  }

  const pqtest::target& t_;
  bool batch_;
  std::string async_app_, sync_app_;  // application_name of each session, for pg_stat_activity
  net::io_context io_;
  pqtest::scratch_table async_table_, sync_table_;
  std::optional<pqscope::connection> sync_;
  std::optional<pa::connection> async_;
  int base_ = 0;
  long checked_ = 0;
};

// ---- program families ------------------------------------------------------------

op insert_op(int id) {
  op o;
  o.k = op::insert;
  o.id = id;
  return o;
}
op fail_op(bool caught = false) {
  op o;
  o.k = op::fail;
  o.id = 900;
  o.caught = caught;
  return o;
}
op callback_op(op::kind k, int id) {
  op o;
  o.k = k;
  o.id = id;
  return o;
}
op nested_op(std::shared_ptr<scope_node> s, bool caught) {
  op o;
  o.k = op::nested;
  o.scope = std::move(s);
  o.caught = caught;
  return o;
}
op read_op() {
  op o;
  o.k = op::read;
  return o;
}

enum class ending { commit, rollback, drop, exception, sql_error };
const ending all_endings[] = {ending::commit, ending::rollback, ending::drop, ending::exception, ending::sql_error};
const char* name(ending e) {
  switch (e) {
    case ending::commit: return "commit";
    case ending::rollback: return "rollback";
    case ending::drop: return "destroyed";
    case ending::exception: return "exception";
    case ending::sql_error: return "sql_error";
  }
  return "?";
}

// A scope ending as told; sql_error: a duplicate key that leaves the scope.
std::shared_ptr<scope_node> scope_of(bool atomic, bool savepoint, ending how, std::vector<op> body) {
  auto s = std::make_shared<scope_node>();
  s->atomic = atomic;
  s->savepoint = savepoint;
  s->body = std::move(body);
  switch (how) {
    case ending::commit: s->end = scope_node::commit; break;
    case ending::rollback: s->end = atomic ? scope_node::raise : scope_node::rollback; break;
    case ending::drop: s->end = atomic ? scope_node::raise : scope_node::drop; break;
    case ending::exception: s->end = scope_node::raise; break;
    case ending::sql_error:
      s->body.push_back(fail_op());
      s->end = scope_node::commit;
      break;
  }
  return s;
}

template <class Body>
void both_targets_both_modes(Body&& body) {
  for (const auto& t : pqtest::targets())
    for (bool batch : {false, true}) BOOST_TEST_CONTEXT(t.name << (batch ? " batched" : "")) {
        harness h(t, batch);
        body(h, batch, t);
        if (batch) BOOST_TEST(h.stats().batched_attempts > 0u);
      }
}

}  // namespace

// The Django matrix: row 1 and callbacks in the outer unit, the inner unit (row 2,
// callbacks) ending every way and caught, then row 3 and a read; the outer unit
// ending every way, inside an outermost scope or as the outermost scope itself.
BOOST_AUTO_TEST_CASE(nesting_matrix) {
  both_targets_both_modes([](harness& h, bool batch, const pqtest::target&) {
    for (bool use_atomic : {false, true})
      for (bool wrapped : {false, true})
        for (ending outer : all_endings)
          for (ending inner : all_endings)
            for (bool inner_savepoint : {true, false}) {
              if (batch && !wrapped) continue;  // a batched program's outermost scope is an atomic of its own
              auto inner_scope = scope_of(use_atomic, inner_savepoint, inner,
                                          {insert_op(2), callback_op(op::on_commit, 21),
                                           callback_op(op::on_rollback, 22)});
              auto outer_scope = scope_of(use_atomic, true, outer,
                                          {insert_op(1), callback_op(op::on_commit, 11),
                                           callback_op(op::on_rollback, 12), nested_op(inner_scope, true),
                                           insert_op(3), read_op()});
              auto program = outer_scope;
              if (wrapped) {
                program = scope_of(true, true, ending::commit, {insert_op(10), nested_op(outer_scope, true), read_op()});
                if (batch) program = for_batch(program);
              }
              std::ostringstream what;
              what << (use_atomic ? "async_atomic" : "transaction") << (wrapped ? " inside a transaction" : "")
                   << ", outer " << name(outer) << ", inner " << name(inner)
                   << (inner_savepoint ? " with" : " without") << " savepoint";
              h.require(program, what.str());
            }
  });
}

// Six statements over three nested scopes; statement k fails, caught at level
// `catch_level` (0: nobody catches), with or without a read at the end.
BOOST_AUTO_TEST_CASE(failure_at_every_position) {
  both_targets_both_modes([](harness& h, bool, const pqtest::target&) {
    for (int k = 0; k < 6; ++k)
      for (int catch_level = 0; catch_level < 4; ++catch_level)
        for (bool last_read : {false, true}) {
          auto stmt = [&](int i) { return i == k ? fail_op() : insert_op(i + 1); };
          auto level3 = scope_of(true, true, ending::commit, {stmt(3), stmt(4)});
          auto level2 = scope_of(true, true, ending::commit, {stmt(2), nested_op(level3, catch_level == 3)});
          auto level1 =
              scope_of(true, true, ending::commit, {stmt(1), nested_op(level2, catch_level == 2), stmt(5)});
          std::vector<op> top{insert_op(100), stmt(0), nested_op(level1, catch_level == 1)};
          if (last_read) top.push_back(read_op());
          auto program = scope_of(true, true, ending::commit, std::move(top));
          std::ostringstream what;
          what << "statement " << k << " fails, caught at level " << catch_level << (last_read ? ", read at the end" : "");
          h.require(for_batch(program), what.str());
        }
  });
}

// Depth 1 to 10, each level a scope of its own with its row; the innermost ends as
// told, an SQL error at the deepest level is caught at the top.
BOOST_AUTO_TEST_CASE(depth_one_to_ten) {
  both_targets_both_modes([](harness& h, bool batch, const pqtest::target&) {
    for (bool use_atomic : {false, true})
      for (ending innermost : {ending::commit, ending::rollback, ending::sql_error})
        for (int depth = 1; depth <= 10; ++depth) {
          auto s = scope_of(use_atomic, true, innermost, {insert_op(depth)});
          for (int level = depth - 1; level >= 1; --level)
            s = scope_of(use_atomic, true, ending::commit, {insert_op(level), nested_op(s, level == 1)});
          auto program = scope_of(true, true, ending::commit, {insert_op(100), nested_op(s, true), read_op()});
          std::ostringstream what;
          what << (use_atomic ? "async_atomic" : "transaction") << " depth " << depth << ", innermost "
               << name(innermost);
          h.require(batch ? for_batch(program) : program, what.str());
        }
  });
}

// Random programs from fixed seeds: the generator of tests/model.cpp.
BOOST_AUTO_TEST_CASE(random_programs) {
  const long programs = env_long("PQSCOPE_ASIO_MODEL_PROGRAMS", 600);
  both_targets_both_modes([&](harness& h, bool batch, const pqtest::target& t) {
    counts n;
    for (std::uint64_t seed = 1; n.programs < programs; ++seed) {
      auto program = generator(seed).program();
      if (batch) program = for_batch(program);
      ++n.programs;
      count(*program, n);
      h.require(program, "seed " + std::to_string(seed));
    }
    std::cout << "model/asio " << t.name << (batch ? " batched: " : ": ") << n.programs << " random programs, " << n.scopes
              << " scopes, " << n.statements << " statements: asynchronous, blocking and model agreed; "
              << option_summary(n);
    if (batch) std::cout << " (" << h.stats().replays << " replayed)";
    std::cout << "\n";
    if (batch) BOOST_TEST(h.stats().replays > 0u);
  });
}
