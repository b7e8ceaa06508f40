// The scope state machine against a scripted server: exact control sequences,
// failures at every position, lost connections, callbacks, stats and retries.
// No PostgreSQL needed; the integration tests check the same against real servers.
#define BOOST_TEST_MODULE scope_machine
#include <boost/test/unit_test.hpp>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/scripted_driver.hpp"

namespace {

using conn_t = pqscope::basic_connection<pqtest::scripted_driver>;
using pqscope::transaction;
using opts = pqscope::transaction_options;
using tx_state = pqtest::scripted_server::tx_state;
using namespace std::chrono_literals;

// Batches as text: "[BEGIN | INSERT 1] [COMMIT]".
std::string show(const std::vector<std::vector<std::string>>& batches) {
  std::string s;
  for (const auto& b : batches) {
    s += s.empty() ? "[" : " [";
    for (std::size_t i = 0; i < b.size(); ++i) s += (i ? " | " : "") + b[i];
    s += "]";
  }
  return s;
}

std::string stats_of(const conn_t& c) {
  const auto& s = c.stats();
  return "round_trips=" + std::to_string(s.round_trips) + " statements=" + std::to_string(s.statements) +
         " control=" + std::to_string(s.control_statements) + " committed=" + std::to_string(s.transactions_committed) +
         " rolled_back=" + std::to_string(s.transactions_rolled_back) + " savepoints=" + std::to_string(s.savepoints);
}

opts with_savepoint(bool on) {
  opts o;
  o.savepoint = on;
  return o;
}

struct user_abort {};  // an exception that is no pqscope::error and no std::exception

struct fx {
  conn_t c{"host=scripted dbname=test"};
  pqtest::scripted_server& srv = c.driver().server();
  std::vector<std::string> calls;

  // Batches sent since the last call.
  std::string sent() { return show(srv.take_batches()); }
  std::string called() {
    std::string s;
    for (const auto& x : calls) s += (s.empty() ? "" : " ") + x;
    calls.clear();
    return s;
  }
  std::function<void()> note(std::string what) {
    return [this, what] { calls.push_back(what); };
  }
};

// The exception fn throws, as the type it was caught as, or nothing.
template <class E, class Fn>
std::optional<E> thrown(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

// An sql_error that fn throws, with the name of its most derived class.
struct caught_sql {
  std::string what, sqlstate, type;
};
template <class Fn>
std::optional<caught_sql> sql_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const pqscope::sql_error& e) {
    return caught_sql{e.what(), e.sqlstate(), typeid(e).name()};
  }
  return std::nullopt;
}

bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

}  // namespace

// ---------------------------------------------------------------------------
// The fake itself: it must behave like PostgreSQL where the machine relies on it.
BOOST_AUTO_TEST_SUITE(scripted_server_rules)

std::vector<pqscope::statement> stmts(const std::vector<std::string>& sql) {
  std::vector<pqscope::statement> out;
  for (const auto& s : sql) out.push_back(pqscope::statement{s.c_str(), 0, nullptr, nullptr});
  return out;
}
using st = pqscope::reply::status;

BOOST_AUTO_TEST_CASE(error_skips_rest_of_batch_and_fails_transaction) {
  pqtest::scripted_driver d;
  d.open("anything", "app");
  std::vector<std::string> b1{"BEGIN", "SAVEPOINT a", "INSERT FAIL:23505", "SELECT 1"};
  auto r = d.exchange(stmts(b1));
  BOOST_TEST((r.replies[0].st == st::ok && r.replies[1].st == st::ok));
  BOOST_TEST((r.replies[2].st == st::error && r.replies[3].st == st::skipped));
  BOOST_TEST(r.replies[2].failure().sqlstate == "23505");
  BOOST_TEST((r.state == pqscope::server_state::failed_transaction));

  std::vector<std::string> b2{"SELECT 2"};
  r = d.exchange(stmts(b2));
  BOOST_TEST(r.replies[0].failure().sqlstate == "25P02");

  std::vector<std::string> b3{"ROLLBACK TO SAVEPOINT a", "RELEASE SAVEPOINT a", "COMMIT"};
  r = d.exchange(stmts(b3));
  BOOST_TEST(r.replies[2].command == "COMMIT");
  BOOST_TEST((r.state == pqscope::server_state::idle));
  BOOST_TEST(d.server().commits == 1);
}

BOOST_AUTO_TEST_CASE(commit_of_failed_transaction_answers_rollback) {
  pqtest::scripted_driver d;
  d.open("", "");
  std::vector<std::string> b1{"BEGIN", "FAIL"}, b2{"COMMIT"}, b3{"SAVEPOINT x"};
  d.exchange(stmts(b1));
  auto r = d.exchange(stmts(b2));
  BOOST_TEST(r.replies[0].command == "ROLLBACK");
  BOOST_TEST((r.state == pqscope::server_state::idle));
  r = d.exchange(stmts(b3));  // outside a transaction block
  BOOST_TEST(r.replies[0].failure().sqlstate == "25P01");
}

BOOST_AUTO_TEST_CASE(lost_connection_stays_lost) {
  pqtest::scripted_driver d;
  d.open("", "");
  std::vector<std::string> b1{"BEGIN", "LOSE", "SELECT 1"}, b2{"SELECT 1"};
  auto r = d.exchange(stmts(b1));
  BOOST_TEST(r.lost);
  BOOST_TEST((r.replies[0].st == st::ok && r.replies[1].st == st::skipped && r.replies[2].st == st::skipped));
  BOOST_TEST(!d.is_open());
  BOOST_TEST(d.exchange(stmts(b2)).lost);
  BOOST_TEST(d.native_handle() == nullptr);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(autocommit, fx)

BOOST_AUTO_TEST_CASE(statement_outside_scope_is_one_batch) {
  c.execute("INSERT 1");
  BOOST_TEST(sent() == "[INSERT 1]");
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(stats_of(c) == "round_trips=1 statements=1 control=0 committed=0 rolled_back=0 savepoints=0");
  BOOST_TEST(!c.application_name().empty());
  BOOST_TEST(c.native_handle() == nullptr);
}

BOOST_AUTO_TEST_CASE(parameters_travel_out_of_line) {
  c.execute("INSERT $1 $2 $3", 7, std::string("x"), std::optional<int>{});
  BOOST_TEST(srv.batch_params.back().back() == (std::vector<std::string>{"7", "x", "NULL"}));
}

BOOST_AUTO_TEST_CASE(query_value_reads_the_single_field) { BOOST_TEST(c.query_value<int>("SELECT 42") == 42); }

BOOST_AUTO_TEST_CASE(sqlstate_picks_the_exception_class) {
  struct expectation {
    std::string sqlstate;
    const std::type_info& type;
  };
  const std::vector<expectation> table{
      {"23502", typeid(pqscope::not_null_violation)},
      {"23503", typeid(pqscope::foreign_key_violation)},
      {"23505", typeid(pqscope::unique_violation)},
      {"23514", typeid(pqscope::check_violation)},
      {"23P01", typeid(pqscope::integrity_constraint_violation)},
      {"40001", typeid(pqscope::serialization_failure)},
      {"40P01", typeid(pqscope::deadlock_detected)},
      {"40002", typeid(pqscope::transaction_rollback)},
      {"22012", typeid(pqscope::data_exception)},
      {"55P03", typeid(pqscope::lock_not_available)},
      {"57014", typeid(pqscope::query_canceled)},
      {"42000", typeid(pqscope::sql_error)},
  };
  for (const auto& x : table) {
    BOOST_TEST_CONTEXT("sqlstate " << x.sqlstate) {
      auto e = sql_error_of([&] { c.execute("INSERT FAIL:" + x.sqlstate); });
      BOOST_REQUIRE(e);
      BOOST_TEST(e->sqlstate == x.sqlstate);
      BOOST_TEST(e->type == std::string(x.type.name()));
      c.execute("INSERT ok");  // no scope: nothing is doomed
    }
  }
  BOOST_TEST(srv.tx == tx_state::idle);
}

BOOST_AUTO_TEST_CASE(on_commit_runs_at_once_on_rollback_never) {
  c.on_commit(note("commit"));
  c.on_rollback(note("rollback"));
  BOOST_TEST(called() == "commit");
  transaction t{c};
  t.rollback();
  BOOST_TEST(called() == "");
}

BOOST_AUTO_TEST_CASE(set_local_outside_scope_is_usage_error) {
  BOOST_CHECK_THROW(c.set_local("search_path", "x"), pqscope::usage_error);
  BOOST_TEST(sent() == "");
}

BOOST_AUTO_TEST_CASE(raw_transaction_control_is_refused_before_sending) {
  const std::vector<std::string> refused{
      "BEGIN",  "begin isolation level serializable", " /* c */ COMMIT", "-- c\nROLLBACK", "SAVEPOINT a",
      "RELEASE a", "ROLLBACK TO a", "START TRANSACTION", "END", "ABORT", "PREPARE TRANSACTION 'x'"};
  for (const auto& sql : refused) BOOST_CHECK_THROW(c.execute(sql), pqscope::usage_error);
  transaction t{c};
  c.execute("INSERT 1");
  for (const auto& sql : refused) BOOST_CHECK_THROW(c.execute(sql), pqscope::usage_error);
  c.execute("INSERT 2");  // refusing did not doom the scope
  t.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(two_phase_commit_of_other_transactions_passes) {
  c.execute("COMMIT PREPARED 'x'");
  c.execute("ROLLBACK PREPARED 'y'");
  BOOST_TEST(sent() == "[COMMIT PREPARED 'x'] [ROLLBACK PREPARED 'y']");
}

BOOST_AUTO_TEST_CASE(copy_streams_are_refused) {
  BOOST_CHECK_THROW(c.execute("COPY t FROM STDIN"), pqscope::usage_error);
  BOOST_CHECK_THROW(c.execute("copy t to stdout"), pqscope::usage_error);
  BOOST_TEST(sent() == "");
}

BOOST_AUTO_TEST_CASE(transaction_left_open_by_a_statement_is_rolled_back) {
  // never leave an idle transaction behind PgBouncer
  BOOST_CHECK_THROW(c.execute("CALL STARTS_TX"), pqscope::usage_error);
  BOOST_TEST(sent() == "[CALL STARTS_TX] [ROLLBACK]");
  BOOST_TEST(srv.tx == tx_state::idle);
  BOOST_TEST(stats_of(c) == "round_trips=2 statements=1 control=1 committed=0 rolled_back=0 savepoints=0");
  c.execute("INSERT 1");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// Nothing is sent when a scope opens: BEGIN / SAVEPOINT / RELEASE / ROLLBACK TO
// ride with the next statement; only the end of the outermost scope goes at once.
BOOST_FIXTURE_TEST_SUITE(lazy_scopes, fx)

BOOST_AUTO_TEST_CASE(empty_transaction_commit_sends_nothing) {
  transaction t{c};
  BOOST_TEST(c.depth() == 1u);
  BOOST_TEST(t.is_outermost());
  c.on_commit(note("commit"));
  t.commit();
  BOOST_TEST(sent() == "");
  BOOST_TEST(called() == "commit");
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(stats_of(c) == "round_trips=0 statements=0 control=0 committed=0 rolled_back=0 savepoints=0");
}

BOOST_AUTO_TEST_CASE(empty_transaction_rollback_sends_nothing) {
  {
    transaction t{c};
    c.on_rollback(note("rollback"));
  }
  { transaction t{c, opts{pqscope::isolation::serializable}}; }
  BOOST_TEST(sent() == "");
  BOOST_TEST(called() == "rollback");
  BOOST_TEST(c.stats().transactions_rolled_back == 0u);
}

BOOST_AUTO_TEST_CASE(begin_and_savepoint_ride_with_statements) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  BOOST_TEST(!t2.is_outermost());
  BOOST_TEST(c.depth() == 2u);
  c.execute("INSERT 2");
  t2.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2]");
  t1.commit();
  BOOST_TEST(sent() == "[COMMIT]");  // COMMIT releases the savepoint too
  BOOST_TEST(stats_of(c) == "round_trips=3 statements=2 control=3 committed=1 rolled_back=0 savepoints=1");
  BOOST_TEST(srv.commits == 1);
  BOOST_TEST(srv.tx == tx_state::idle);
}

BOOST_AUTO_TEST_CASE(n_statements_at_depth_d_cost_n_plus_one_round_trips) {
  for (std::size_t d = 1; d <= 4; ++d)
    for (std::size_t n = 0; n <= 3; ++n) {
      BOOST_TEST_CONTEXT("depth " << d << ", statements " << n) {
        conn_t k{"x"};
        std::vector<transaction> scopes;
        scopes.reserve(d);
        for (std::size_t i = 0; i < d; ++i) scopes.emplace_back(k);
        for (std::size_t i = 0; i < n; ++i) k.execute("INSERT " + std::to_string(i));
        for (std::size_t i = d; i-- > 0;) scopes[i].commit();
        auto batches = k.driver().server().take_batches();
        BOOST_TEST(batches.size() == (n == 0 ? 0 : n + 1));
        BOOST_TEST(k.stats().round_trips == batches.size());
        BOOST_TEST(k.stats().savepoints == (n == 0 ? 0 : d - 1));
        if (n > 0) {
          std::vector<std::string> first{"BEGIN"};
          for (std::size_t i = 1; i < d; ++i) first.push_back("SAVEPOINT pqscope_" + std::to_string(i));
          first.emplace_back("INSERT 0");
          BOOST_TEST(batches.front() == first);
          BOOST_TEST(batches.back() == std::vector<std::string>{"COMMIT"});
        }
      }
    }
}

BOOST_AUTO_TEST_CASE(empty_nested_scopes_send_nothing) {
  transaction t1{c};
  c.execute("INSERT 1");
  {
    transaction t2{c};
    transaction t3{c};
    t3.commit();
    t2.commit();
  }
  { transaction t2{c}; }  // destroyed: rolls back
  {
    transaction t2{c};
    t2.rollback();
  }
  c.execute("INSERT 2");
  t1.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2] [COMMIT]");
  BOOST_TEST(c.stats().savepoints == 0u);
}

BOOST_AUTO_TEST_CASE(releases_collapse_into_the_outermost) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  transaction t3{c};
  c.execute("INSERT 3");
  t3.commit();
  t2.commit();
  c.execute("INSERT 4");
  t1.commit();
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [SAVEPOINT pqscope_2 | INSERT 3] "
             "[RELEASE SAVEPOINT pqscope_1 | INSERT 4] [COMMIT]");
  BOOST_TEST(stats_of(c) == "round_trips=5 statements=4 control=5 committed=1 rolled_back=0 savepoints=2");
}

BOOST_AUTO_TEST_CASE(inner_rollback_goes_out_with_next_statement) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  BOOST_TEST(srv.savepoints.size() == 1u);
  t2.rollback();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2]");
  c.execute("INSERT 3");
  BOOST_TEST(sent() == "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 3]");
  BOOST_TEST(srv.savepoints.empty());
  t1.commit();
  BOOST_TEST(sent() == "[COMMIT]");
  BOOST_TEST(stats_of(c) == "round_trips=4 statements=3 control=5 committed=1 rolled_back=0 savepoints=1");
}

BOOST_AUTO_TEST_CASE(inner_rollback_then_outer_commit_keeps_only_rollback_to) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  t2.rollback();
  t1.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [ROLLBACK TO SAVEPOINT pqscope_1 | COMMIT]");
  BOOST_TEST(c.stats().transactions_committed == 1u);
}

BOOST_AUTO_TEST_CASE(rollback_of_unsent_savepoint_sends_nothing) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  t2.rollback();
  c.execute("INSERT 2");
  t1.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(savepoint_name_is_reused_after_rollback) {
  transaction t1{c};
  c.execute("INSERT 1");
  {
    transaction t2{c};
    c.execute("INSERT 2");
  }
  transaction t2{c};
  c.execute("INSERT 3");
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] "
             "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | SAVEPOINT pqscope_1 | INSERT 3]");
  BOOST_TEST(srv.savepoints.size() == 1u);
  BOOST_TEST(srv.savepoints[0].name == "pqscope_1");
}

BOOST_AUTO_TEST_CASE(release_of_parent_covers_rolled_back_child) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  transaction t3{c};
  c.execute("INSERT 3");
  t3.rollback();
  t2.commit();
  srv.take_batches();
  c.execute("INSERT 4");
  BOOST_TEST(sent() == "[ROLLBACK TO SAVEPOINT pqscope_2 | RELEASE SAVEPOINT pqscope_1 | INSERT 4]");
  BOOST_TEST(srv.savepoints.empty());
  t1.commit();
}

BOOST_AUTO_TEST_CASE(rolled_back_parent_drops_child_controls) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  transaction t3{c};
  c.execute("INSERT 3");
  t3.commit();
  t2.rollback();
  srv.take_batches();
  c.execute("INSERT 4");
  BOOST_TEST(sent() == "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 4]");
  t1.commit();
}

BOOST_AUTO_TEST_CASE(outermost_rollback_is_sent_at_once) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  t2.commit();
  t1.rollback();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [ROLLBACK]");
  BOOST_TEST(stats_of(c) == "round_trips=3 statements=2 control=3 committed=0 rolled_back=1 savepoints=1");
  BOOST_TEST(srv.rollbacks == 1);
  BOOST_TEST(srv.tx == tx_state::idle);
}

BOOST_AUTO_TEST_CASE(destructor_rolls_back) {
  {
    transaction t1{c};
    c.execute("INSERT 1");
    transaction t2{c};
    c.execute("INSERT 2");
  }
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [ROLLBACK]");
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(c.stats().transactions_rolled_back == 1u);
}

BOOST_AUTO_TEST_CASE(begin_carries_the_transaction_modes) {
  struct row {
    opts o;
    std::string begin;
  };
  opts all{pqscope::isolation::serializable};
  all.read_only = true;
  all.deferrable = true;
  const std::vector<row> table{
      {opts{}, "BEGIN"},
      {opts{pqscope::isolation::read_committed}, "BEGIN; SET TRANSACTION ISOLATION LEVEL READ COMMITTED"},
      {opts{pqscope::isolation::repeatable_read}, "BEGIN; SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"},
      {opts{pqscope::isolation::serializable}, "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"},
      {opts{pqscope::isolation::server_default, true}, "BEGIN; SET TRANSACTION READ ONLY"},
      {all, "BEGIN; SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE"},
  };
  // The modes go as SET TRANSACTION right behind a plain BEGIN, in the same batch
  // (Pgpool-II drops them from BEGIN).
  for (const auto& r : table) {
    transaction t{c, r.o};
    c.execute("SELECT 1");
    BOOST_TEST(srv.begin_sql == r.begin);
    t.commit();
    std::string batch = r.begin;
    for (std::string::size_type at; (at = batch.find("; ")) != std::string::npos;) batch.replace(at, 2, " | ");
    BOOST_TEST(sent() == "[" + batch + " | SELECT 1] [COMMIT]");
  }
}

BOOST_AUTO_TEST_CASE(nested_scope_may_repeat_the_outer_modes) {
  opts o{pqscope::isolation::serializable};
  o.read_only = true;
  o.deferrable = true;
  transaction t1{c, o};
  transaction t2{c, o};
  transaction t3{c, opts{}};  // server_default: inherits
  c.execute("SELECT 1");
  BOOST_TEST(sent() ==
             "[BEGIN | SET TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE | SAVEPOINT pqscope_1 | "
             "SAVEPOINT pqscope_2 | SELECT 1]");
}

BOOST_AUTO_TEST_CASE(durable_outermost_scope_commits) {
  opts o;
  o.durable = true;
  transaction t{c, o};
  c.execute("INSERT 1");
  t.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [COMMIT]");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// SET LOCAL: timeouts of a scope and set_local(); a nested scope's timeouts are
// restored when it ends, since SET LOCAL survives RELEASE SAVEPOINT.
BOOST_FIXTURE_TEST_SUITE(settings, fx)

opts timeouts(std::chrono::milliseconds statement, std::chrono::milliseconds lock = 0ms) {
  opts o;
  o.statement_timeout = statement;
  o.lock_timeout = lock;
  return o;
}

BOOST_AUTO_TEST_CASE(timeouts_follow_begin) {
  transaction t{c, timeouts(1500ms, 200ms)};
  c.execute("INSERT 1");
  BOOST_TEST(sent() == "[BEGIN | SET LOCAL statement_timeout = 1500 | SET LOCAL lock_timeout = 200 | INSERT 1]");
  BOOST_TEST(srv.settings["statement_timeout"] == "1500");
  BOOST_TEST(srv.settings["lock_timeout"] == "200");
  t.commit();
  BOOST_TEST(sent() == "[COMMIT]");
  BOOST_TEST(stats_of(c) == "round_trips=2 statements=1 control=4 committed=1 rolled_back=0 savepoints=0");
}

BOOST_AUTO_TEST_CASE(nested_timeout_is_reset_after_release) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c, timeouts(50ms)};
  c.execute("INSERT 2");
  BOOST_TEST(srv.settings["statement_timeout"] == "50");
  t2.commit();
  c.execute("INSERT 3");
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | SET LOCAL statement_timeout = 50 | INSERT 2] "
             "[RELEASE SAVEPOINT pqscope_1 | SET LOCAL statement_timeout TO DEFAULT | INSERT 3]");
  BOOST_TEST(srv.settings.count("statement_timeout") == 0u);
  t1.commit();
}

BOOST_AUTO_TEST_CASE(nested_timeout_is_restored_to_the_enclosing_value) {
  transaction t1{c, timeouts(100ms, 30ms)};
  c.execute("INSERT 1");
  transaction t2{c, timeouts(50ms, 10ms)};
  c.execute("INSERT 2");
  t2.commit();
  srv.take_batches();
  c.execute("INSERT 3");
  BOOST_TEST(sent() ==
             "[RELEASE SAVEPOINT pqscope_1 | SET LOCAL statement_timeout TO 100 | SET LOCAL lock_timeout TO 30 | "
             "INSERT 3]");
  BOOST_TEST(srv.settings["statement_timeout"] == "100");
  BOOST_TEST(srv.settings["lock_timeout"] == "30");
  t1.commit();
}

BOOST_AUTO_TEST_CASE(unsent_nested_timeout_is_dropped) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c, timeouts(50ms)};
  t2.commit();
  c.execute("INSERT 2");
  t1.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(rolled_back_nested_timeout_is_undone_by_the_server) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c, timeouts(50ms)};
  c.execute("INSERT 2");
  t2.rollback();
  srv.take_batches();
  c.execute("INSERT 3");
  BOOST_TEST(sent() == "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 3]");
  BOOST_TEST(srv.settings.count("statement_timeout") == 0u);
  t1.commit();
}

BOOST_AUTO_TEST_CASE(negative_timeouts_are_refused) {
  BOOST_CHECK_THROW(transaction(c, timeouts(-1ms)), pqscope::usage_error);
  BOOST_CHECK_THROW(transaction(c, timeouts(0ms, -5ms)), pqscope::usage_error);
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_CASE(set_local_rides_with_next_statement) {
  transaction t{c};
  c.set_local("search_path", "app");
  BOOST_TEST(sent() == "");
  c.execute("INSERT 1");
  BOOST_TEST(sent() == "[BEGIN | SELECT pg_catalog.set_config($1, $2, true) | INSERT 1]");
  BOOST_TEST(srv.batch_params.back()[1] == (std::vector<std::string>{"search_path", "app"}));
  BOOST_TEST(srv.settings["search_path"] == "app");
  t.commit();
  BOOST_TEST(srv.settings.empty());
  BOOST_TEST(stats_of(c) == "round_trips=2 statements=1 control=3 committed=1 rolled_back=0 savepoints=0");
}

BOOST_AUTO_TEST_CASE(set_local_in_nested_scopes) {
  transaction t1{c};
  c.execute("INSERT 1");
  {
    transaction t2{c};
    c.set_local("a", "1");
  }  // never sent: dropped with the scope
  c.execute("INSERT 2");
  {
    transaction t2{c};
    c.set_local("b", "2");
    t2.commit();
  }  // committed: the setting belongs to the transaction now
  c.execute("INSERT 3");
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2] [SELECT pg_catalog.set_config($1, $2, true) | INSERT 3]");
  {
    transaction t2{c};
    c.set_local("c", "3");
    c.execute("INSERT 4");
    BOOST_TEST(srv.settings["c"] == "3");
  }
  c.execute("INSERT 5");  // the server undoes it with ROLLBACK TO
  BOOST_TEST(srv.settings.count("c") == 0u);
  BOOST_TEST(srv.settings["b"] == "2");
  t1.commit();
}

BOOST_AUTO_TEST_CASE(bad_set_local_queues_nothing) {
  transaction t{c};
  BOOST_CHECK_THROW(c.set_local("", "x"), pqscope::usage_error);
  BOOST_CHECK_THROW(c.set_local("a", std::string_view("x\0y", 3)), pqscope::usage_error);
  c.execute("INSERT 1");
  BOOST_TEST(sent() == "[BEGIN | INSERT 1]");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// A failure dooms the innermost scope that can undo it; until that scope rolls
// back, statements and commits throw transaction_aborted without a round trip.
BOOST_FIXTURE_TEST_SUITE(doomed_scopes, fx)

BOOST_AUTO_TEST_CASE(inner_error_then_inner_rollback_lets_outer_commit) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  BOOST_CHECK_THROW(c.execute("INSERT FAIL:23505"), pqscope::unique_violation);
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT FAIL:23505]");
  auto e = thrown<pqscope::transaction_aborted>([&] { c.execute("INSERT 2"); });
  BOOST_REQUIRE(e);
  BOOST_TEST(e->first_sqlstate() == "23505");
  BOOST_TEST(contains(e->first_error(), "FAIL:23505"));
  BOOST_TEST(sent() == "");  // no round trip
  BOOST_CHECK_THROW(t1.commit(), pqscope::usage_error);  // t2 is still open
  t2.rollback();
  c.execute("INSERT 3");
  BOOST_TEST(sent() == "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 3]");
  t1.commit();
  BOOST_TEST(sent() == "[COMMIT]");
  BOOST_TEST(stats_of(c) == "round_trips=4 statements=3 control=5 committed=1 rolled_back=0 savepoints=1");
}

BOOST_AUTO_TEST_CASE(commit_of_doomed_inner_scope_rolls_it_back_and_throws) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  BOOST_CHECK_THROW(c.execute("INSERT FAIL"), pqscope::sql_error);
  auto e = thrown<pqscope::transaction_aborted>([&] { t2.commit(); });
  BOOST_REQUIRE(e);
  BOOST_TEST(e->first_sqlstate() == "42000");
  BOOST_TEST(c.depth() == 1u);
  BOOST_CHECK_THROW(t2.commit(), pqscope::usage_error);  // it has ended
  c.execute("INSERT 2");
  t1.commit();
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT FAIL] "
             "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 2] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(doomed_scope_refuses_nested_scopes_and_settings) {
  transaction t1{c};
  BOOST_CHECK_THROW(c.execute("INSERT FAIL"), pqscope::sql_error);
  BOOST_CHECK_THROW(transaction{c}, pqscope::transaction_aborted);
  BOOST_CHECK_THROW(c.set_local("a", "b"), pqscope::transaction_aborted);
  BOOST_TEST(c.depth() == 1u);
  srv.take_batches();
  BOOST_CHECK_THROW(t1.commit(), pqscope::transaction_aborted);
  BOOST_TEST(sent() == "[ROLLBACK]");
}

BOOST_AUTO_TEST_CASE(error_in_outermost_scope_rolls_back_at_commit) {
  transaction t{c};
  c.on_rollback(note("rollback"));
  c.on_commit(note("commit"));
  BOOST_CHECK_THROW(c.execute("INSERT FAIL:23503"), pqscope::foreign_key_violation);
  BOOST_TEST(srv.tx == tx_state::failed);
  auto e = thrown<pqscope::transaction_aborted>([&] { t.commit(); });
  BOOST_REQUIRE(e);
  BOOST_TEST(e->first_sqlstate() == "23503");
  BOOST_TEST(sent() == "[BEGIN | INSERT FAIL:23503] [ROLLBACK]");
  BOOST_TEST(called() == "rollback");
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(stats_of(c) == "round_trips=2 statements=1 control=2 committed=0 rolled_back=1 savepoints=0");
  c.execute("INSERT 2");
  BOOST_TEST(sent() == "[INSERT 2]");
}

BOOST_AUTO_TEST_CASE(scope_without_savepoint_dooms_the_enclosing_one) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c, with_savepoint(false)};
  c.execute("INSERT 2");
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2]");  // no SAVEPOINT
  BOOST_CHECK_THROW(c.execute("INSERT FAIL:23514"), pqscope::check_violation);
  t2.rollback();
  BOOST_CHECK_THROW(c.execute("INSERT 3"), pqscope::transaction_aborted);
  srv.take_batches();
  auto e = thrown<pqscope::transaction_aborted>([&] { t1.commit(); });
  BOOST_REQUIRE(e);
  BOOST_TEST(e->first_sqlstate() == "23514");
  BOOST_TEST(sent() == "[ROLLBACK]");
  BOOST_TEST(stats_of(c) == "round_trips=4 statements=3 control=2 committed=0 rolled_back=1 savepoints=0");
}

BOOST_AUTO_TEST_CASE(commit_of_failed_scope_without_savepoint_throws) {
  transaction t1{c};
  transaction t2{c, with_savepoint(false)};
  BOOST_CHECK_THROW(c.execute("INSERT FAIL"), pqscope::sql_error);
  BOOST_CHECK_THROW(t2.commit(), pqscope::transaction_aborted);
  BOOST_TEST(c.depth() == 1u);
  BOOST_CHECK_THROW(t1.commit(), pqscope::transaction_aborted);
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_CASE(rollback_of_scope_without_savepoint_dooms_the_enclosing_one) {
  transaction t1{c};
  c.execute("INSERT 1");
  {
    transaction t2{c, with_savepoint(false)};
    c.execute("INSERT 2");
  }  // nothing can undo INSERT 2 alone
  auto e = thrown<pqscope::transaction_aborted>([&] { t1.commit(); });
  BOOST_REQUIRE(e);
  BOOST_TEST(e->first_sqlstate() == "");
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [INSERT 2] [ROLLBACK]");
}

BOOST_AUTO_TEST_CASE(scope_without_savepoint_dooms_the_nearest_savepoint) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  transaction t3{c, with_savepoint(false)};
  BOOST_CHECK_THROW(c.execute("INSERT FAIL"), pqscope::sql_error);
  t3.rollback();
  BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::transaction_aborted);
  t2.rollback();
  c.execute("INSERT 3");
  t1.commit();
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT FAIL] "
             "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 3] [COMMIT]");
  BOOST_TEST(c.stats().transactions_committed == 1u);
}

BOOST_AUTO_TEST_CASE(transaction_ended_behind_the_scopes_back) {
  transaction t{c};
  c.execute("INSERT 1");
  BOOST_CHECK_THROW(c.execute("CALL ENDS_TX"), pqscope::usage_error);
  BOOST_TEST(srv.tx == tx_state::idle);
  BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::transaction_aborted);
  BOOST_CHECK_THROW(t.commit(), pqscope::transaction_aborted);
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [CALL ENDS_TX]");  // nothing left to roll back
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// An error injected at each position of a batch: the first failing statement is
// reported, what was skipped did not run, and the scopes end in a known state.
BOOST_AUTO_TEST_SUITE(failure_at_every_position)

BOOST_AUTO_TEST_CASE(opening_batch) {
  const std::vector<std::string> batch{"BEGIN",
                                       "SET LOCAL statement_timeout = 100",
                                       "SELECT pg_catalog.set_config($1, $2, true)",
                                       "SAVEPOINT pqscope_1",
                                       "SAVEPOINT pqscope_2",
                                       "INSERT 1"};
  for (std::size_t k = 0; k <= batch.size(); ++k) {  // k == size: no failure
    BOOST_TEST_CONTEXT("failing position " << k) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      std::vector<transaction> t;
      t.reserve(3);
      opts o;
      o.statement_timeout = 100ms;
      t.emplace_back(c, o);
      c.set_local("x", "1");
      t.emplace_back(c);
      t.emplace_back(c);
      if (k < batch.size()) srv.fail_in_next_batch(k, "23505");
      auto e = sql_error_of([&] { c.execute("INSERT 1"); });
      BOOST_TEST(srv.take_batches() == std::vector<std::vector<std::string>>{batch});
      BOOST_TEST(c.depth() == 3u);  // an error never ends a scope
      const std::size_t savepoints_run = k < 3 ? 0 : k - 3 < 2 ? k - 3 : 2;
      BOOST_TEST(c.stats().savepoints == savepoints_run);
      BOOST_TEST(srv.savepoints.size() == savepoints_run);
      if (k == batch.size()) {
        BOOST_TEST(!e);
        for (std::size_t i = 3; i-- > 0;) t[i].commit();
        BOOST_TEST(show(srv.take_batches()) == "[COMMIT]");
        BOOST_TEST(srv.commits == 1);
        continue;
      }
      BOOST_REQUIRE(e);
      BOOST_TEST(e->sqlstate == "23505");
      BOOST_TEST(e->type == std::string(typeid(pqscope::unique_violation).name()));
      BOOST_TEST(contains(e->what, batch[k]));  // the first failing statement's error
      if (k == 2) BOOST_TEST(contains(e->what, "set_local(\"x\")"));
      BOOST_TEST(srv.tx == (k == 0 ? tx_state::idle : tx_state::failed));

      // The innermost scope whose BEGIN / SAVEPOINT ran can undo the failure.
      const std::size_t undo = k == 5 ? 2 : k == 4 ? 1 : 0;
      for (std::size_t i = 2; i > undo; --i) {
        auto a = thrown<pqscope::transaction_aborted>([&] { c.execute("INSERT 2"); });
        BOOST_REQUIRE(a);
        BOOST_TEST(a->first_sqlstate() == "23505");
        t[i].rollback();
      }
      BOOST_TEST(srv.take_batches().empty());  // all of that without a round trip
      if (undo > 0) {
        BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::transaction_aborted);
        t[undo].rollback();
        c.execute("INSERT 3");
        const std::string sp = "pqscope_" + std::to_string(undo);
        BOOST_TEST(show(srv.take_batches()) ==
                   "[ROLLBACK TO SAVEPOINT " + sp + " | RELEASE SAVEPOINT " + sp + " | INSERT 3]");
        for (std::size_t i = undo; i-- > 0;) t[i].commit();
        BOOST_TEST(show(srv.take_batches()) == "[COMMIT]");
        BOOST_TEST(c.stats().transactions_committed == 1u);
        BOOST_TEST(srv.commits == 1);
      } else {
        BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::transaction_aborted);
        BOOST_CHECK_THROW(t[0].commit(), pqscope::transaction_aborted);
        // ROLLBACK only if BEGIN ran
        BOOST_TEST(show(srv.take_batches()) == (k == 0 ? "" : "[ROLLBACK]"));
        BOOST_TEST(c.stats().transactions_rolled_back == (k == 0 ? 0u : 1u));
      }
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(srv.tx == tx_state::idle);
      c.execute("INSERT 9");
      BOOST_TEST(show(srv.take_batches()) == "[INSERT 9]");
    }
  }
}

BOOST_AUTO_TEST_CASE(batch_of_pending_ends) {
  const std::vector<std::string> batch{"ROLLBACK TO SAVEPOINT pqscope_2", "RELEASE SAVEPOINT pqscope_1",
                                       "SET LOCAL statement_timeout TO DEFAULT", "INSERT 4"};
  for (std::size_t k = 0; k < batch.size(); ++k) {
    BOOST_TEST_CONTEXT("failing position " << k) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      transaction t1{c};
      c.execute("INSERT 1");
      {
        opts o;
        o.statement_timeout = 50ms;
        transaction t2{c, o};
        c.execute("INSERT 2");
        transaction t3{c};
        c.execute("INSERT 3");
        t3.rollback();
        t2.commit();
      }
      srv.take_batches();
      srv.fail_in_next_batch(k, "40P01");
      BOOST_CHECK_THROW(c.execute("INSERT 4"), pqscope::deadlock_detected);
      BOOST_TEST(srv.take_batches() == std::vector<std::vector<std::string>>{batch});
      BOOST_TEST(srv.tx == tx_state::failed);
      auto a = thrown<pqscope::transaction_aborted>([&] { c.execute("INSERT 5"); });
      BOOST_REQUIRE(a);
      BOOST_TEST(a->first_sqlstate() == "40P01");
      BOOST_CHECK_THROW(t1.commit(), pqscope::transaction_aborted);
      BOOST_TEST(show(srv.take_batches()) == "[ROLLBACK]");
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(srv.tx == tx_state::idle);
      c.execute("INSERT 9");
    }
  }
}

BOOST_AUTO_TEST_CASE(commit_batch) {
  for (std::size_t k = 0; k < 2; ++k) {
    BOOST_TEST_CONTEXT("failing position " << k) {
      fx f;
      transaction t1{f.c};
      f.c.execute("INSERT 1");
      transaction t2{f.c};
      f.c.execute("INSERT 2");
      t2.rollback();
      f.c.on_commit(f.note("commit"));
      f.c.on_rollback(f.note("rollback"));
      f.srv.take_batches();
      f.srv.fail_in_next_batch(k, "23505");
      auto e = sql_error_of([&] { t1.commit(); });
      BOOST_REQUIRE(e);
      BOOST_TEST(e->type == std::string(typeid(pqscope::unique_violation).name()));
      BOOST_TEST(contains(e->what, k == 0 ? "ROLLBACK TO SAVEPOINT pqscope_1" : "COMMIT"));
      // A failed COMMIT ends the transaction; a skipped one needs a ROLLBACK.
      BOOST_TEST(f.sent() == (k == 0 ? "[ROLLBACK TO SAVEPOINT pqscope_1 | COMMIT] [ROLLBACK]"
                                     : "[ROLLBACK TO SAVEPOINT pqscope_1 | COMMIT]"));
      BOOST_TEST(f.called() == "rollback");
      BOOST_TEST(f.c.depth() == 0u);
      BOOST_TEST(f.c.stats().transactions_committed == 0u);
      BOOST_TEST(f.c.stats().transactions_rolled_back == 1u);
      BOOST_TEST(f.srv.tx == tx_state::idle);
      BOOST_CHECK_THROW(t1.commit(), pqscope::usage_error);
      f.c.execute("INSERT 9");
    }
  }
}

BOOST_AUTO_TEST_CASE(commit_error_is_thrown_as_its_class) {
  fx f;
  transaction t{f.c};
  f.c.execute("INSERT 1");
  f.srv.fail_in_next_batch(0, "23505");  // a deferred constraint fails at COMMIT
  BOOST_CHECK_THROW(t.commit(), pqscope::unique_violation);
}

// A small program of nested atomic() blocks; `batch`: the outermost one batches.
void program(conn_t& c, bool batch = false) {
  opts o;
  o.batch = batch;
  pqscope::atomic(c, o, [&] {
    c.execute("INSERT A");
    pqscope::atomic(c, [&] {
      c.set_local("x", "1");
      c.execute("INSERT B");
      c.execute("INSERT C");
    });
    try {
      pqscope::atomic(c, [&] {
        c.execute("INSERT D");
        throw user_abort{};
      });
    } catch (const user_abort&) {
    }
    c.execute("INSERT E");
  });
}

BOOST_AUTO_TEST_CASE(error_at_every_statement_of_a_program) {
  conn_t ref{"x"};
  program(ref);
  const auto batches = ref.driver().server().batches;
  BOOST_TEST(show(batches) ==
             "[BEGIN | INSERT A] [SAVEPOINT pqscope_1 | SELECT pg_catalog.set_config($1, $2, true) | INSERT B] "
             "[INSERT C] [RELEASE SAVEPOINT pqscope_1 | SAVEPOINT pqscope_1 | INSERT D] "
             "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT E] "
             "[COMMIT]");
  const std::size_t total = ref.driver().server().statements_received;
  for (std::size_t n = 0; n < total; ++n) {
    BOOST_TEST_CONTEXT("failing statement " << n) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.fail_at_statement(n, "23505");
      BOOST_CHECK_THROW(program(c), pqscope::unique_violation);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(srv.tx == tx_state::idle);  // no transaction left open
      BOOST_TEST(srv.commits == 0);
      BOOST_TEST(c.stats().transactions_committed == 0u);
      BOOST_TEST(c.stats().transactions_rolled_back == (n == 0 ? 0u : 1u));  // BEGIN failed: nothing to roll back
      srv.take_batches();
      c.execute("INSERT 9");
      BOOST_TEST(show(srv.take_batches()) == "[INSERT 9]");
    }
  }
}

// Batched, the whole program is one batch: the nested atomic that commits needs no
// savepoint; the one that rolls back keeps its statement between SAVEPOINT and ROLLBACK TO.
const char* const whole_program =
    "[BEGIN | INSERT A | SELECT pg_catalog.set_config($1, $2, true) | INSERT B | INSERT C | SAVEPOINT pqscope_1 | "
    "INSERT D | ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT E | COMMIT]";

BOOST_AUTO_TEST_CASE(batched_program_is_one_batch) {
  conn_t c{"x"};
  program(c, true);
  BOOST_TEST(show(c.driver().server().batches) == whole_program);
  BOOST_TEST(c.stats().round_trips == 1u);
  BOOST_TEST(c.stats().savepoints == 1u);
  BOOST_TEST(c.stats().transactions_committed == 1u);
  BOOST_TEST(c.stats().batched_attempts == 1u);
  BOOST_TEST(c.stats().replays == 0u);
}

// A statement of the batch fails: the batch, its ROLLBACK, then exactly the
// unbatched program; which commits, since the scripted failure happened once.
// The COMMIT itself failing is not replayed: every statement had succeeded.
BOOST_AUTO_TEST_CASE(batched_failure_at_every_statement_replays_unbatched) {
  conn_t ref{"x"};
  program(ref);
  const std::string unbatched = show(ref.driver().server().batches);
  for (std::size_t n = 0; n < 11; ++n) {
    BOOST_TEST_CONTEXT("failing statement " << n) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.fail_at_statement(n, "23505");
      if (n == 10) {
        BOOST_CHECK_THROW(program(c, true), pqscope::unique_violation);
        BOOST_TEST(show(srv.batches) == whole_program);
        BOOST_TEST(c.stats().replays == 0u);
        BOOST_TEST(c.stats().transactions_rolled_back == 1u);
      } else {
        BOOST_CHECK_NO_THROW(program(c, true));
        // A failed BEGIN leaves no transaction to roll back.
        BOOST_TEST(show(srv.batches) == std::string(whole_program) + (n == 0 ? " " : " [ROLLBACK] ") + unbatched);
        BOOST_TEST(c.stats().replays == 1u);
        BOOST_TEST(c.stats().transactions_committed == 1u);
      }
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(srv.tx == tx_state::idle);
    }
  }
}

// A failure that would happen every time: the batched program ends exactly as the
// unbatched one, error class and batches included, after one voided batch.
BOOST_AUTO_TEST_CASE(batched_failure_ends_as_unbatched) {
  for (const char* needle : {"BEGIN", "INSERT A", "set_config", "INSERT B", "INSERT C", "SAVEPOINT pqscope_1",
                             "INSERT D", "INSERT E", "COMMIT"}) {
    BOOST_TEST_CONTEXT("failing: " << needle) {
      auto run = [&](bool batch, int times) {
        conn_t c{"x"};
        auto& srv = c.driver().server();
        srv.fail_matching(needle, "23505", times);
        std::string outcome = "returned";
        try {
          program(c, batch);
        } catch (const pqscope::unique_violation&) {
          outcome = "unique_violation";
        } catch (const std::exception& e) {
          outcome = std::string("other: ") + e.what();
        }
        BOOST_TEST(c.depth() == 0u);
        BOOST_TEST(srv.tx == tx_state::idle);
        return outcome + " " + show(srv.batches) + " commits=" + std::to_string(srv.commits) +
               " replays=" + std::to_string(c.stats().replays);
      };
      const std::string plain = run(false, 1);
      const bool at_commit = std::string(needle) == "COMMIT";
      // Batched, the failure happens once in the batch and once more in the replay.
      const std::string batched = run(true, at_commit ? 1 : 2);
      std::string expected = plain;
      if (!at_commit) {
        // A failed BEGIN leaves no transaction to roll back.
        const bool began = std::string(needle) != "BEGIN";
        expected.replace(expected.find(' ') + 1, 0, std::string(whole_program) + (began ? " [ROLLBACK] " : " "));
        expected.replace(expected.size() - 1, 1, "1");
      }
      BOOST_TEST(batched == (at_commit ? plain.substr(0, plain.find(' ')) + " " + whole_program + " commits=0 replays=0"
                                       : expected));
    }
  }
}

// flush() sends up to the last queued statement: the SAVEPOINT of a scope that has
// run nothing yet waits, and is never sent if the scope ends with its statements queued.
BOOST_AUTO_TEST_CASE(flush_leaves_controls_that_no_statement_needs_yet) {
  conn_t c{"x"};
  opts o;
  o.batch = true;
  pqscope::atomic(c, o, [&] {
    c.execute("INSERT A");
    pqscope::atomic(c, [&] {
      c.flush();
      c.execute("INSERT B");
    });
  });
  BOOST_TEST(show(c.driver().server().batches) == "[BEGIN | INSERT A] [INSERT B | COMMIT]");
  BOOST_TEST(c.stats().savepoints == 0u);
}

BOOST_AUTO_TEST_CASE(batched_connection_lost_at_every_statement_is_in_doubt) {
  for (std::size_t n = 0; n < 11; ++n) {
    BOOST_TEST_CONTEXT("lost at statement " << n) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.lose_at_statement(n);
      BOOST_CHECK_THROW(program(c, true), pqscope::in_doubt_error);  // COMMIT was in the lost batch
      BOOST_TEST(c.stats().replays == 0u);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(srv.batches.size() == 1u);
    }
  }
}

BOOST_AUTO_TEST_CASE(connection_lost_at_every_statement_of_a_program) {
  conn_t ref{"x"};
  program(ref);
  std::vector<bool> commit_in_batch;  // per statement
  for (const auto& b : ref.driver().server().batches) {
    bool commit = false;
    for (const auto& s : b) commit = commit || s == "COMMIT";
    for (std::size_t i = 0; i < b.size(); ++i) commit_in_batch.push_back(commit);
  }
  for (std::size_t n = 0; n < commit_in_batch.size(); ++n) {
    BOOST_TEST_CONTEXT("lost at statement " << n) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.lose_at_statement(n);
      bool lost = false, in_doubt = false;
      try {
        program(c);  // the destructors on the way out stay quiet
      } catch (const pqscope::in_doubt_error&) {
        lost = in_doubt = true;
      } catch (const pqscope::connection_error&) {
        lost = true;
      }
      BOOST_TEST(lost);
      BOOST_TEST(in_doubt == commit_in_batch[n]);  // in doubt exactly when COMMIT was in the lost batch
      BOOST_TEST(c.depth() == 0u);
      const auto sent_before = srv.batches.size();
      BOOST_CHECK_THROW(c.execute("INSERT 9"), pqscope::connection_error);
      BOOST_TEST(srv.batches.size() == sent_before);  // refused without a round trip
      c.reconnect();
      c.execute("INSERT 9");
      BOOST_TEST(srv.batches.back() == std::vector<std::string>{"INSERT 9"});
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(connection_loss, fx)

BOOST_AUTO_TEST_CASE(lost_mid_scope) {
  {
    transaction t1{c};
    c.on_rollback(note("rollback 1"));
    c.execute("INSERT 1");
    transaction t2{c};
    std::string what;
    try {
      c.execute("INSERT LOSE");
    } catch (const pqscope::in_doubt_error&) {
      BOOST_FAIL("no COMMIT was in flight");
    } catch (const pqscope::connection_error& e) {
      what = e.what();
    }
    BOOST_TEST(contains(what, "server closed the connection unexpectedly"));
    BOOST_TEST(c.depth() == 2u);
    BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::connection_error);
    BOOST_CHECK_THROW(c.set_local("a", "b"), pqscope::connection_error);
    BOOST_CHECK_THROW(transaction{c}, pqscope::connection_error);
    BOOST_CHECK_THROW(t2.commit(), pqscope::connection_error);
    BOOST_TEST(c.depth() == 1u);
    BOOST_CHECK_THROW(c.reconnect(), pqscope::usage_error);  // a scope is still open
  }  // quiet
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(called() == "rollback 1");
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT LOSE]");  // no ROLLBACK on a dead socket
  BOOST_TEST(c.stats().transactions_rolled_back == 0u);
  c.reconnect();
  BOOST_TEST(srv.opens == 2);
  transaction t{c};
  c.execute("INSERT 3");
  t.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 3] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(lost_outside_scope) {
  BOOST_CHECK_THROW(c.execute("INSERT LOSE"), pqscope::connection_error);
  BOOST_CHECK_THROW(c.execute("INSERT 1"), pqscope::connection_error);
  BOOST_TEST(sent() == "[INSERT LOSE]");
  c.reconnect();
  c.execute("INSERT 1");
  BOOST_TEST(sent() == "[INSERT 1]");
}

BOOST_AUTO_TEST_CASE(lost_while_commit_in_flight_is_in_doubt) {
  transaction t{c};
  c.on_commit(note("commit"));
  c.on_rollback(note("rollback"));
  c.execute("INSERT 1");
  srv.lose_on_commit = true;
  BOOST_CHECK_THROW(t.commit(), pqscope::in_doubt_error);
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(called() == "");  // outcome unknown: neither runs
  BOOST_TEST(c.stats().transactions_committed == 0u);
  BOOST_TEST(c.stats().transactions_rolled_back == 0u);
  BOOST_CHECK_THROW(t.commit(), pqscope::usage_error);
  BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::connection_error);
  c.reconnect();
  srv.lose_on_commit = false;
  c.execute("INSERT 2");
}

BOOST_AUTO_TEST_CASE(lost_during_rollback) {
  transaction t{c};
  c.on_rollback(note("rollback"));
  c.execute("INSERT 1");
  srv.lose_in_next_batch(0);
  BOOST_CHECK_THROW(t.rollback(), pqscope::connection_error);
  BOOST_TEST(called() == "rollback");  // the server rolls back a lost session
  BOOST_TEST(c.depth() == 0u);
  BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::connection_error);
}

BOOST_AUTO_TEST_CASE(lost_during_destructor_rollback_is_quiet) {
  {
    transaction t{c};
    c.execute("INSERT 1");
    srv.lose_in_next_batch(0);
  }
  BOOST_TEST(c.depth() == 0u);
  BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::connection_error);
}

BOOST_AUTO_TEST_CASE(connection_destroyed_while_scope_open) {
  auto k = std::make_unique<conn_t>("x");
  auto server = k->driver().shared_server();
  std::vector<std::string> log;
  transaction t{*k};
  k->on_rollback([&] { log.push_back("rollback"); });
  k->execute("INSERT 1");
  k.reset();
  BOOST_TEST(server->closes == 1);
  BOOST_CHECK_THROW(t.commit(), pqscope::connection_error);
  BOOST_TEST(log == std::vector<std::string>{"rollback"});
  BOOST_TEST(show(server->batches) == "[BEGIN | INSERT 1]");
}

BOOST_AUTO_TEST_CASE(move_assignment_closes_the_target) {
  transaction t{c};
  c.execute("INSERT 1");
  c = conn_t{"y"};
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(srv.closes == 1);
  BOOST_CHECK_THROW(t.commit(), pqscope::connection_error);
  c.execute("INSERT 2");
  BOOST_TEST(show(c.driver().server().batches) == "[INSERT 2]");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(misuse, fx)

BOOST_AUTO_TEST_CASE(scope_ends_once) {
  transaction t1{c};
  c.execute("INSERT 1");
  t1.commit();
  BOOST_CHECK_THROW(t1.commit(), pqscope::usage_error);
  BOOST_CHECK_THROW(t1.rollback(), pqscope::usage_error);
  transaction t2{c};
  t2.rollback();
  BOOST_CHECK_THROW(t2.commit(), pqscope::usage_error);
  BOOST_CHECK_THROW(t2.rollback(), pqscope::usage_error);
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(outer_scope_cannot_end_while_inner_is_open) {
  transaction t1{c};
  c.execute("INSERT 1");
  transaction t2{c};
  c.execute("INSERT 2");
  BOOST_CHECK_THROW(t1.commit(), pqscope::usage_error);
  BOOST_CHECK_THROW(t1.rollback(), pqscope::usage_error);
  BOOST_TEST(c.depth() == 2u);
  t2.commit();
  t1.commit();  // both still usable
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(outer_destroyed_first_rolls_back_everything_quietly) {
  auto t1 = std::make_unique<transaction>(c);
  c.on_rollback(note("rollback 1"));
  c.execute("INSERT 1");
  auto t2 = std::make_unique<transaction>(c);
  c.on_rollback(note("rollback 2"));  // a savepoint's: dropped with it
  c.execute("INSERT 2");
  t1.reset();
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(called() == "rollback 1");
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [ROLLBACK]");
  BOOST_CHECK_THROW(t2->commit(), pqscope::usage_error);
  BOOST_CHECK_THROW(t2->rollback(), pqscope::usage_error);
  t2.reset();
  BOOST_TEST(sent() == "");
}

BOOST_AUTO_TEST_CASE(middle_scope_destroyed_first_ends_the_inner_one_too) {
  transaction t1{c};
  c.execute("INSERT 1");
  auto t2 = std::make_unique<transaction>(c);
  c.execute("INSERT 2");
  auto t3 = std::make_unique<transaction>(c);
  c.execute("INSERT 3");
  t2.reset();
  BOOST_TEST(c.depth() == 1u);
  BOOST_CHECK_THROW(t3->commit(), pqscope::usage_error);
  t3.reset();
  c.execute("INSERT 4");
  t1.commit();
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [SAVEPOINT pqscope_2 | INSERT 3] "
             "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 4] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(nested_scope_cannot_change_the_transaction) {
  opts durable;
  durable.durable = true;
  opts ro;
  ro.read_only = true;
  opts deferrable;
  deferrable.deferrable = true;
  transaction t1{c};
  BOOST_CHECK_THROW(transaction(c, durable), pqscope::usage_error);
  BOOST_CHECK_THROW(transaction(c, opts{pqscope::isolation::serializable}), pqscope::usage_error);
  BOOST_CHECK_THROW(transaction(c, ro), pqscope::usage_error);
  BOOST_CHECK_THROW(transaction(c, deferrable), pqscope::usage_error);
  BOOST_TEST(c.depth() == 1u);
  c.execute("INSERT 1");  // not doomed
  t1.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [COMMIT]");
  BOOST_CHECK_THROW(pqscope::atomic(c, [&] { pqscope::atomic(c, durable, [] {}); }), pqscope::usage_error);
}

BOOST_AUTO_TEST_CASE(transaction_object_cannot_retry) {
  opts o;
  o.retries = 2;
  BOOST_CHECK_THROW(transaction(c, o), pqscope::usage_error);
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_CASE(moved_from_objects) {
  transaction t1{c};
  transaction t2{std::move(t1)};
  BOOST_CHECK_THROW(t1.commit(), pqscope::usage_error);
  c.execute("INSERT 1");
  t2.commit();
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [COMMIT]");

  conn_t other{std::move(c)};
  BOOST_CHECK_THROW(c.execute("INSERT 2"), pqscope::usage_error);
  BOOST_CHECK_THROW(transaction{c}, pqscope::usage_error);
  BOOST_TEST(c.depth() == 0u);
  other.execute("INSERT 3");
  BOOST_TEST(sent() == "[INSERT 3]");
}

BOOST_AUTO_TEST_CASE(forked_child_sends_nothing_on_the_parents_session) {
  std::optional<conn_t> k{std::in_place, "x"};
  auto server = k->driver().shared_server();
  auto t = std::make_unique<transaction>(*k);
  k->execute("INSERT 1");
  const pid_t pid = ::fork();
  BOOST_REQUIRE(pid >= 0);
  if (pid == 0) {
    int code = 0;
    const auto before = server->batches.size();
    try {
      k->execute("INSERT 2");
      code = 1;
    } catch (const pqscope::usage_error&) {
    } catch (...) {
      code = 2;
    }
    t.reset();  // rolls back without a word
    k.reset();  // abandons instead of closing
    if (server->batches.size() != before) code = 3;
    if (server->abandons != 1 || server->closes != 0) code = 4;
    ::_exit(code);
  }
  int status = 0;
  BOOST_REQUIRE(::waitpid(pid, &status, 0) == pid);
  BOOST_TEST(WIFEXITED(status));
  BOOST_TEST(WEXITSTATUS(status) == 0);
  t->commit();
  BOOST_TEST(show(server->batches) == "[BEGIN | INSERT 1] [COMMIT]");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// on_commit runs after the outermost COMMIT, on_rollback after the outermost
// rollback; both are dropped with a savepoint that rolls back.
BOOST_FIXTURE_TEST_SUITE(callbacks, fx)

BOOST_AUTO_TEST_CASE(on_commit_runs_in_registration_order_after_commit) {
  transaction t1{c};
  c.on_commit(note("a"));
  c.execute("INSERT 1");
  {
    transaction t2{c};
    c.on_commit(note("b"));
    c.execute("INSERT 2");
    t2.commit();
  }
  c.on_commit(note("c"));
  c.on_rollback(note("never"));
  BOOST_TEST(called() == "");
  t1.commit();
  BOOST_TEST(called() == "a b c");
}

BOOST_AUTO_TEST_CASE(rolled_back_savepoint_drops_its_callbacks) {
  transaction t1{c};
  c.execute("INSERT 1");
  {
    transaction t2{c};
    c.on_commit(note("commit 2"));
    c.on_rollback(note("rollback 2"));
    c.execute("INSERT 2");
  }
  c.on_rollback(note("rollback 1"));
  BOOST_TEST(called() == "");
  t1.rollback();
  BOOST_TEST(called() == "rollback 1");
}

BOOST_AUTO_TEST_CASE(committed_savepoint_hands_callbacks_to_its_parent) {
  transaction t1{c};
  c.on_rollback(note("x"));
  c.execute("INSERT 1");
  {
    transaction t2{c};
    c.on_rollback(note("y"));
    c.on_commit(note("never"));
    c.execute("INSERT 2");
    t2.commit();
  }
  c.on_rollback(note("z"));
  t1.rollback();
  BOOST_TEST(called() == "x y z");
}

BOOST_AUTO_TEST_CASE(failed_commit_runs_on_rollback) {
  transaction t{c};
  c.on_commit(note("commit"));
  c.on_rollback(note("rollback"));
  c.execute("INSERT 1");
  srv.fail_in_next_batch(0, "40001");
  BOOST_CHECK_THROW(t.commit(), pqscope::serialization_failure);
  BOOST_TEST(called() == "rollback");
}

BOOST_AUTO_TEST_CASE(throwing_on_commit_does_not_stop_the_others) {
  transaction t{c};
  c.on_commit([] { throw std::runtime_error("first"); });
  c.on_commit(note("second"));
  c.execute("INSERT 1");
  try {
    t.commit();
    BOOST_FAIL("commit() should rethrow the callback's exception");
  } catch (const std::runtime_error& e) {
    BOOST_TEST(std::string(e.what()) == "first");
  }
  BOOST_TEST(called() == "second");
  BOOST_TEST(c.stats().transactions_committed == 1u);  // committed all the same
  BOOST_TEST(c.depth() == 0u);
  BOOST_CHECK_THROW(t.commit(), pqscope::usage_error);
}

BOOST_AUTO_TEST_CASE(throwing_on_rollback_is_swallowed_by_destructor) {
  {
    transaction t{c};
    c.on_rollback([] { throw std::runtime_error("x"); });
    c.on_rollback(note("second"));
    c.execute("INSERT 1");
  }
  BOOST_TEST(called() == "second");
}

// A scope opened with savepoint = false is no savepoint, so its on_rollback
// callbacks are not dropped when it rolls back: the rollback dooms the enclosing
// transaction, and when that rolls back they run.
BOOST_AUTO_TEST_CASE(scope_without_savepoint_keeps_on_rollback_for_the_transaction) {
  transaction t1{c};
  c.execute("INSERT 1");
  {
    transaction t2{c, with_savepoint(false)};
    c.on_rollback(note("undo 2"));
    c.on_commit(note("never"));
    BOOST_CHECK_THROW(c.execute("INSERT FAIL"), pqscope::sql_error);
  }
  BOOST_CHECK_THROW(t1.commit(), pqscope::transaction_aborted);
  BOOST_TEST(called() == "undo 2");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(stats, fx)

BOOST_AUTO_TEST_CASE(counters_across_a_session) {
  c.execute("INSERT 0");  // 1 trip, 1 statement
  {
    transaction t1{c};
    c.execute("INSERT 1");  // BEGIN
    transaction t2{c};
    c.execute("INSERT 2");  // SAVEPOINT
    t2.rollback();
    c.execute("INSERT 3");  // ROLLBACK TO, RELEASE
    t1.commit();            // COMMIT
  }
  {
    transaction t{c};
    c.execute("INSERT 4");  // BEGIN
  }                         // ROLLBACK
  { transaction t{c}; }     // nothing
  BOOST_TEST(stats_of(c) == "round_trips=7 statements=5 control=7 committed=1 rolled_back=1 savepoints=1");
}

BOOST_AUTO_TEST_CASE(skipped_savepoint_is_not_counted) {
  transaction t1{c};
  transaction t2{c};
  transaction t3{c};
  srv.fail_in_next_batch(2, "23505");  // SAVEPOINT pqscope_2
  BOOST_CHECK_THROW(c.execute("INSERT 1"), pqscope::unique_violation);
  BOOST_TEST(c.stats().savepoints == 1u);
  BOOST_TEST(c.stats().control_statements == 3u);  // sent, whether they ran or not
  BOOST_TEST(c.stats().statements == 1u);
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
BOOST_FIXTURE_TEST_SUITE(atomic_blocks, fx)

opts retrying(int n) {
  opts o;
  o.retries = n;
  o.retry_base_delay = 0ms;
  o.retry_max_delay = 0ms;
  return o;
}

BOOST_AUTO_TEST_CASE(commits_and_returns_the_value) {
  int v = pqscope::atomic(c, [](conn_t& k) {
    k.execute("INSERT 1");
    return 7;
  });
  BOOST_TEST(v == 7);
  pqscope::atomic(c, [&] { c.execute("INSERT 2"); });
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [COMMIT] [BEGIN | INSERT 2] [COMMIT]");
  BOOST_TEST(c.stats().transactions_committed == 2u);
}

BOOST_AUTO_TEST_CASE(exception_rolls_back_and_propagates) {
  BOOST_CHECK_THROW(pqscope::atomic(c,
                                    [&] {
                                      c.execute("INSERT 1");
                                      throw user_abort{};
                                    }),
                    user_abort);
  BOOST_CHECK_THROW(pqscope::atomic(c, [] { throw user_abort{}; }), user_abort);  // nothing sent: nothing to undo
  BOOST_TEST(sent() == "[BEGIN | INSERT 1] [ROLLBACK]");
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_CASE(nested_atomic_is_a_savepoint) {
  pqscope::atomic(c, [&] {
    c.execute("INSERT 1");
    try {
      pqscope::atomic(c, [&] {
        c.execute("INSERT 2");
        throw user_abort{};
      });
    } catch (const user_abort&) {
    }
    c.execute("INSERT 3");
  });
  BOOST_TEST(sent() ==
             "[BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] "
             "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT 3] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(serialization_failure_is_retried) {
  srv.fail_matching("UPDATE", "40001", 1);
  int runs = 0;
  pqscope::atomic(c, retrying(2), [&] {
    ++runs;
    c.on_commit(note("commit " + std::to_string(runs)));
    c.on_rollback(note("rollback " + std::to_string(runs)));
    c.execute("UPDATE 1");
  });
  BOOST_TEST(runs == 2);
  BOOST_TEST(called() == "rollback 1 commit 2");  // the failed attempt's on_commit is dropped
  BOOST_TEST(sent() == "[BEGIN | UPDATE 1] [ROLLBACK] [BEGIN | UPDATE 1] [COMMIT]");
  BOOST_TEST(stats_of(c) == "round_trips=4 statements=2 control=4 committed=1 rolled_back=1 savepoints=0");
}

BOOST_AUTO_TEST_CASE(deadlock_is_retried) {
  srv.fail_matching("UPDATE", "40P01", 2);
  int runs = 0;
  int v = pqscope::atomic(c, retrying(2), [&] {
    ++runs;
    c.execute("UPDATE 1");
    return runs;
  });
  BOOST_TEST(v == 3);
}

BOOST_AUTO_TEST_CASE(retries_run_out) {
  srv.fail_matching("UPDATE", "40001", 10);
  int runs = 0;
  BOOST_CHECK_THROW(pqscope::atomic(c, retrying(2),
                                    [&] {
                                      ++runs;
                                      c.execute("UPDATE 1");
                                    }),
                    pqscope::serialization_failure);
  BOOST_TEST(runs == 3);
  BOOST_TEST(c.stats().transactions_rolled_back == 3u);
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_CASE(other_errors_are_not_retried) {
  srv.fail_matching("UPDATE", "23505", 1);
  int runs = 0;
  BOOST_CHECK_THROW(pqscope::atomic(c, retrying(3),
                                    [&] {
                                      ++runs;
                                      c.execute("UPDATE 1");
                                    }),
                    pqscope::unique_violation);
  BOOST_TEST(runs == 1);
}

BOOST_AUTO_TEST_CASE(only_the_outermost_atomic_retries) {
  srv.fail_matching("UPDATE", "40001", 1);
  int inner = 0;
  BOOST_CHECK_THROW(pqscope::atomic(c,
                                    [&] {
                                      pqscope::atomic(c, retrying(3), [&] {
                                        ++inner;
                                        c.execute("UPDATE 1");
                                      });
                                    }),
                    pqscope::serialization_failure);
  BOOST_TEST(inner == 1);
}

BOOST_AUTO_TEST_CASE(swallowed_serialization_failure_is_still_retried) {
  srv.fail_matching("UPDATE", "40001", 1);
  int runs = 0;
  pqscope::atomic(c, retrying(1), [&] {
    ++runs;
    try {
      pqscope::atomic(c, with_savepoint(false), [&] { c.execute("UPDATE 1"); });
    } catch (const pqscope::serialization_failure&) {
    }
    c.execute("INSERT 2");  // transaction_aborted naming 40001
  });
  BOOST_TEST(runs == 2);
  BOOST_TEST(sent() == "[BEGIN | UPDATE 1] [ROLLBACK] [BEGIN | UPDATE 1] [INSERT 2] [COMMIT]");
}

BOOST_AUTO_TEST_CASE(negative_retries_are_refused) {
  BOOST_CHECK_THROW(pqscope::atomic(c, retrying(-1), [] {}), pqscope::usage_error);
  BOOST_TEST(c.depth() == 0u);
}

BOOST_AUTO_TEST_CASE(transactional_wraps_every_call) {
  auto twice = pqscope::transactional([](conn_t& k, int x) {
    k.execute("INSERT $1", x);
    return x * 2;
  });
  BOOST_TEST(twice(c, 21) == 42);
  BOOST_TEST(sent() == "[BEGIN | INSERT $1] [COMMIT]");
  BOOST_TEST(srv.batch_params[0][1] == std::vector<std::string>{"21"});

  srv.fail_matching("INSERT", "40001", 1);
  opts o = retrying(1);
  o.isolation = pqscope::isolation::serializable;
  auto retried = pqscope::transactional([](conn_t& k) { k.execute("INSERT 1"); }, o);
  retried(c);
  BOOST_TEST(sent() ==
             "[BEGIN | SET TRANSACTION ISOLATION LEVEL SERIALIZABLE | INSERT 1] [ROLLBACK] "
             "[BEGIN | SET TRANSACTION ISOLATION LEVEL SERIALIZABLE | INSERT 1] [COMMIT]");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// connection_options::commit_positions: the WAL position query rides right behind
// an outermost COMMIT, and nothing it answers can undo the commit.
BOOST_AUTO_TEST_SUITE(commit_positions)

pqscope::connection_options positions(bool on = true) {
  pqscope::connection_options o;
  o.commit_positions = on;
  return o;
}

bool is_position(const std::string& sql) { return sql.rfind("SELECT pg_catalog.pg_current_wal_insert_lsn()", 0) == 0; }

// Batches sent since the last call, the position query shown as POSITION.
std::string shown(pqtest::scripted_server& srv) {
  auto batches = srv.take_batches();
  for (auto& b : batches)
    for (auto& sql : b)
      if (is_position(sql)) sql = "POSITION";
  return show(batches);
}

opts batched(bool on = true) {
  opts o;
  o.batch = on;
  return o;
}

BOOST_AUTO_TEST_CASE(the_position_rides_with_the_outermost_commit_only) {
  conn_t c{"x", positions()};
  auto& srv = c.driver().server();
  BOOST_TEST(c.last_commit_position().empty());
  c.execute("INSERT 0");  // autocommit: never a position
  std::string in_callback;
  {
    transaction t1{c};
    c.execute("INSERT 1");
    {
      transaction t2{c};
      c.execute("INSERT 2");
      t2.commit();  // a savepoint: nothing
    }
    BOOST_TEST(c.last_commit_position().empty());
    c.on_commit([&] { in_callback = c.last_commit_position().to_string(); });
    t1.commit();
  }
  BOOST_TEST(shown(srv) == "[INSERT 0] [BEGIN | INSERT 1] [SAVEPOINT pqscope_1 | INSERT 2] [COMMIT | POSITION]");
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000100");
  BOOST_TEST(in_callback == "0/1000100");  // published before on_commit runs
  // The position query is a control statement, and costs no round trip.
  BOOST_TEST(stats_of(c) == "round_trips=4 statements=3 control=4 committed=1 rolled_back=0 savepoints=1");

  // Neither a rollback, nor a read-only or an empty transaction, nor a statement in
  // autocommit moves the token, though the (scripted) server's insert position moved on.
  {
    transaction t{c};
    c.execute("INSERT 3");
    t.rollback();
  }
  {
    opts ro;
    ro.read_only = true;
    transaction t{c, ro};
    c.execute("SELECT 1");
    t.commit();
  }
  {
    transaction t{c};
    t.commit();
  }
  BOOST_CHECK_THROW(pqscope::atomic(c,
                                    [&] {
                                      c.execute("INSERT 4");
                                      throw user_abort{};
                                    }),
                    user_abort);
  c.execute("INSERT 5");
  BOOST_TEST(shown(srv) ==
             "[BEGIN | INSERT 3] [ROLLBACK] [BEGIN | SET TRANSACTION READ ONLY | SELECT 1] [COMMIT] "
             "[BEGIN | INSERT 4] [ROLLBACK] [INSERT 5]");
  BOOST_TEST(srv.position_queries == 1);
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000100");

  // The next commit gets the server's new position.
  pqscope::atomic(c, [&] { c.execute("INSERT 6"); });
  BOOST_TEST(shown(srv) == "[BEGIN | INSERT 6] [COMMIT | POSITION]");
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000300");
}

BOOST_AUTO_TEST_CASE(a_batched_write_only_transaction_is_still_one_round_trip) {
  conn_t c{"x", positions()};
  auto& srv = c.driver().server();
  pqscope::atomic(c, batched(), [&] {
    c.execute("INSERT A");
    pqscope::atomic(c, [&] { c.execute("INSERT B"); });
  });
  BOOST_TEST(shown(srv) == "[BEGIN | INSERT A | INSERT B | COMMIT | POSITION]");
  BOOST_TEST(c.stats().round_trips == 1u);
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000100");
}

// Positions off, the batches are exactly today's; on, they differ only by the
// position query, and it comes right after a COMMIT, never anywhere else.
BOOST_AUTO_TEST_CASE(positions_add_one_statement_after_commit_and_nothing_else) {
  for (bool batch : {false, true}) {
    BOOST_TEST_CONTEXT("batched " << batch) {
      conn_t off{"x"}, on{"x", positions()};
      for (conn_t* k : {&off, &on}) {
        failure_at_every_position::program(*k, batch);
        transaction t{*k};
        k->execute("INSERT F");
        t.rollback();
        k->execute("INSERT G");
      }
      const auto plain = off.driver().server().batches;
      if (!batch)
        BOOST_TEST(show(plain) ==
                   "[BEGIN | INSERT A] [SAVEPOINT pqscope_1 | SELECT pg_catalog.set_config($1, $2, true) | INSERT B] "
                   "[INSERT C] [RELEASE SAVEPOINT pqscope_1 | SAVEPOINT pqscope_1 | INSERT D] "
                   "[ROLLBACK TO SAVEPOINT pqscope_1 | RELEASE SAVEPOINT pqscope_1 | INSERT E] "
                   "[COMMIT] [BEGIN | INSERT F] [ROLLBACK] [INSERT G]");
      auto with = on.driver().server().batches;
      std::size_t found = 0;
      for (auto& b : with)
        for (std::size_t i = 0; i < b.size(); ++i)
          if (is_position(b[i])) {
            ++found;
            BOOST_TEST(i > 0);
            if (i > 0) BOOST_TEST(b[i - 1] == "COMMIT");
            BOOST_TEST(i + 1 == b.size());
            b.erase(b.begin() + static_cast<std::ptrdiff_t>(i--));
          }
      BOOST_TEST(found == 1u);
      BOOST_TEST(with == plain);
      BOOST_TEST(on.stats().round_trips == off.stats().round_trips);
      BOOST_TEST(on.stats().statements == off.stats().statements);
    }
  }
}

// The COMMIT stands whatever the position query meets: its error neither voids a
// batched attempt (no replay) nor turns the commit into a rollback or an exception.
BOOST_AUTO_TEST_CASE(a_failed_position_query_leaves_the_commit_standing) {
  for (const char* sqlstate : {"57014", "40001", "XX000", "55000"}) {
    for (bool batch : {false, true}) {
      BOOST_TEST_CONTEXT("SQLSTATE " << sqlstate << ", batched " << batch) {
        conn_t c{"x", positions()};
        auto& srv = c.driver().server();
        pqscope::atomic(c, [&] { c.execute("INSERT 0"); });
        BOOST_TEST(c.last_commit_position().to_string() == "0/1000100");
        (void)shown(srv);
        srv.fail_matching("pg_current_wal_insert_lsn", sqlstate);
        int runs = 0;
        bool committed = false, rolled_back = false;
        opts o = batched(batch);
        o.retries = 3;  // a 40001 taken for the transaction's would run it again
        BOOST_CHECK_NO_THROW(pqscope::atomic(c, o, [&] {
          ++runs;
          c.on_commit([&] { committed = true; });
          c.on_rollback([&] { rolled_back = true; });
          c.execute("INSERT 1");
        }));
        BOOST_TEST(runs == 1);
        BOOST_TEST(committed);
        BOOST_TEST(!rolled_back);
        BOOST_TEST(c.stats().replays == 0u);
        BOOST_TEST(c.stats().transactions_committed == 2u);
        BOOST_TEST(c.stats().transactions_rolled_back == 0u);
        BOOST_TEST(srv.commits == 2);
        BOOST_TEST(srv.tx == tx_state::idle);
        BOOST_TEST(shown(srv) == (batch ? "[BEGIN | INSERT 1 | COMMIT | POSITION]"
                                        : "[BEGIN | INSERT 1] [COMMIT | POSITION]"));  // no ROLLBACK after it
        // Unknown, rather than the older position this commit is past.
        BOOST_TEST(c.last_commit_position().empty());

        // The same through a transaction object; the connection goes on as before.
        srv.fail_matching("pg_current_wal_insert_lsn", sqlstate);
        {
          transaction t{c};
          c.execute("INSERT 2");
          BOOST_CHECK_NO_THROW(t.commit());
        }
        BOOST_TEST(c.last_commit_position().empty());
        pqscope::atomic(c, o, [&] { c.execute("INSERT 3"); });
        BOOST_TEST(c.last_commit_position().to_string() == "0/1000400");
        BOOST_TEST(c.stats().transactions_committed == 4u);
        BOOST_TEST(c.stats().transactions_rolled_back == 0u);
      }
    }
  }
}

// An answer that is no position is taken as none: the commit stands.
BOOST_AUTO_TEST_CASE(an_unreadable_position_is_no_position) {
  conn_t c{"x", positions()};
  auto& srv = c.driver().server();
  pqscope::atomic(c, [&] { c.execute("INSERT 0"); });
  srv.wal_insert = "not a position";
  BOOST_CHECK_NO_THROW(pqscope::atomic(c, [&] { c.execute("INSERT 1"); }));
  BOOST_TEST(c.last_commit_position().empty());
  BOOST_TEST(c.stats().transactions_committed == 2u);
}

// A COMMIT that fails (a deferred constraint) skips the position query: the failure
// is the COMMIT's, and the token stays.
BOOST_AUTO_TEST_CASE(a_failed_commit_sets_no_position) {
  conn_t c{"x", positions()};
  auto& srv = c.driver().server();
  pqscope::atomic(c, [&] { c.execute("INSERT 0"); });
  transaction t{c};
  c.execute("INSERT 1");
  srv.fail_in_next_batch(0, "23505");
  BOOST_CHECK_THROW(t.commit(), pqscope::unique_violation);
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000100");
  BOOST_TEST(srv.position_queries == 1);
}

// The connection dies after COMMIT's answer arrived, before the position's: the
// answer proves the commit, so commit() returns; the position is unknown, and the
// connection is broken. A loss before COMMIT's answer stays in doubt.
BOOST_AUTO_TEST_CASE(a_loss_after_the_commit_answer_is_a_commit_without_position) {
  conn_t c{"x", positions()};
  auto& srv = c.driver().server();
  pqscope::atomic(c, [&] { c.execute("INSERT 0"); });
  {
    transaction t{c};
    c.execute("INSERT 1");
    bool called = false;
    c.on_commit([&] { called = true; });
    srv.lose_in_next_batch(1);  // [COMMIT | POSITION]: after COMMIT's answer
    BOOST_CHECK_NO_THROW(t.commit());
    BOOST_TEST(called);
  }
  BOOST_TEST(srv.commits == 2);
  BOOST_TEST(c.stats().transactions_committed == 2u);
  BOOST_TEST(c.last_commit_position().empty());
  BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error);

  conn_t d{"x", positions()};
  auto& srv2 = d.driver().server();
  transaction t{d};
  d.execute("INSERT 1");
  srv2.lose_in_next_batch(0);  // COMMIT sent, no answer
  BOOST_CHECK_THROW(t.commit(), pqscope::in_doubt_error);
}

// A batched attempt whose statement the session lost (26000) is sent again at once:
// the position query is planned anew for it, and none is left over for later.
BOOST_AUTO_TEST_CASE(a_resent_attempt_asks_for_the_position_once) {
  pqscope::connection_options o = positions();
  o.pooling = pqscope::pooling::none;  // prepare::automatic prepares a text run twice
  conn_t c{"x", o};
  auto& srv = c.driver().server();
  c.execute("INSERT X");
  c.execute("INSERT X");  // prepared here
  (void)shown(srv);
  srv.fail_matching("INSERT X", "26000");
  pqscope::atomic(c, batched(), [&] { c.execute("INSERT X"); });
  BOOST_TEST(shown(srv) == "[BEGIN | INSERT X | COMMIT | POSITION] [ROLLBACK] [BEGIN | INSERT X | COMMIT | POSITION]");
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000100");
  {
    transaction t{c};
    c.execute("INSERT Y");
    t.commit();
  }
  BOOST_TEST(shown(srv) == "[BEGIN | INSERT Y] [COMMIT | POSITION]");
  BOOST_TEST(c.last_commit_position().to_string() == "0/1000200");
}

// The token type: pg_lsn's text both ways, its order, and the page-header rule.
BOOST_AUTO_TEST_CASE(wal_position_text_order_and_page_headers) {
  using pqscope::wal_position;
  BOOST_TEST(wal_position::parse("16/B374D848").value() == 0x16B374D848ull);
  BOOST_TEST(wal_position::parse("16/b374d848").to_string() == "16/B374D848");
  BOOST_TEST(wal_position::parse("0/0").empty());
  BOOST_TEST(wal_position().to_string() == "0/0");
  BOOST_TEST(wal_position(0xFFFFFFFFFFFFFFFFull).to_string() == "FFFFFFFF/FFFFFFFF");
  BOOST_TEST(wal_position::parse("00000001/00000010").to_string() == "1/10");
  for (const char* bad : {"", "/", "1/", "/1", "1", "1/2/3", "123456789/0", "0/123456789", "g/1", " 1/1", "1/1 ",
                          "-1/1", "+1/1", "1 /1"})
    BOOST_CHECK_THROW(wal_position::parse(bad), pqscope::conversion_error);
  const wal_position a = wal_position::parse("1/10"), b = wal_position::parse("1/20");
  BOOST_TEST((a < b && b > a && a <= a && b >= a && a != b && a == wal_position(0x100000010ull)));
  BOOST_TEST(wal_position::latest(a, b).value() == b.value());
  BOOST_TEST(wal_position::latest(b, a).value() == b.value());
  wal_position m;
  m.merge(b);
  m.merge(a);
  BOOST_TEST(m.value() == b.value());
  // record_end(): a position just past a page header is the boundary before it.
  const std::uint64_t page = 8192, segment = 16ull << 20;
  BOOST_TEST(wal_position(5 * page + 24).record_end().value() == 5 * page);        // short header
  BOOST_TEST(wal_position(3 * segment + 40).record_end().value() == 3 * segment);  // long header
  BOOST_TEST(wal_position(3 * segment + 24).record_end().value() == 3 * segment + 24);  // inside a long header
  BOOST_TEST(wal_position(5 * page + 40).record_end().value() == 5 * page + 40);        // mid-page
  BOOST_TEST(wal_position(5 * page + 48).record_end().value() == 5 * page + 48);
  BOOST_TEST(wal_position(5 * page).record_end().value() == 5 * page);
  BOOST_TEST(wal_position(5 * page + 23).record_end().value() == 5 * page + 23);
  BOOST_TEST(wal_position(5 * page + 25).record_end().value() == 5 * page + 25);
  // Other block and segment sizes, as the server reports them.
  BOOST_TEST(wal_position(3 * 32768 + 24).record_end(32768, 64ull << 20).value() == 3 * 32768u);
  BOOST_TEST(wal_position(page + 24).record_end(32768, 64ull << 20).value() == page + 24);  // no 32 kB boundary
  BOOST_TEST(wal_position((64ull << 20) + 40).record_end(8192, 64ull << 20).value() == (64ull << 20));
  BOOST_TEST(wal_position((16ull << 20) + 40).record_end(8192, 64ull << 20).value() == (16ull << 20) + 40);
  BOOST_TEST(pqscope::value_traits<wal_position>::oid == 3220u);
}

// The machine takes the header off with the sizes the server reports.
BOOST_AUTO_TEST_CASE(the_position_is_the_record_end) {
  conn_t c{"x", positions()};
  auto& srv = c.driver().server();
  srv.wal_insert = "0/1FFF00";  // the COMMIT moves it to 0/200000 (a segment of 2 MB) ...
  srv.wal_segment_size = "2097152";
  pqscope::atomic(c, [&] { c.execute("INSERT 1"); });
  BOOST_TEST(c.last_commit_position().to_string() == "0/200000");  // ... which is not a boundary + 40: as is
  srv.wal_insert = "0/1FFF28";  // + 0x100 = 0/200028: a segment's start + 40
  pqscope::atomic(c, [&] { c.execute("INSERT 2"); });
  BOOST_TEST(c.last_commit_position().to_string() == "0/200000");
  srv.wal_insert = "0/201F18";  // + 0x100 = 0/202018: a page's start + 24
  pqscope::atomic(c, [&] { c.execute("INSERT 3"); });
  BOOST_TEST(c.last_commit_position().to_string() == "0/202000");
  srv.wal_block_size = "32768";  // not a 32 kB page's start: as is
  srv.wal_insert = "0/201F18";
  pqscope::atomic(c, [&] { c.execute("INSERT 4"); });
  BOOST_TEST(c.last_commit_position().to_string() == "0/202018");
}

BOOST_AUTO_TEST_SUITE_END()

// ---------------------------------------------------------------------------
// transaction_options::at_least: the standby's replay position is checked before
// the transaction begins, in the BEGIN batch (read committed) or alone before it
// (repeatable read, serializable, or a session whose default isolation is not read
// committed). Behind, nothing of the scope runs and it throws replica_behind.
// The scripted server answers the check as PostgreSQL does (see scripted_driver.hpp).
BOOST_AUTO_TEST_SUITE(read_your_writes)

using pqscope::isolation;
using pqscope::wal_position;

const wal_position token = wal_position::parse("0/30000A8");

opts at_least(isolation i = isolation::server_default, wal_position p = token) {
  opts o{i};
  o.at_least = p;
  return o;
}

bool is_check(const std::string& sql) { return contains(sql, "pg_catalog.pg_last_wal_replay_lsn()"); }

// Batches sent since the last call; the check in the BEGIN batch (the one that also
// refuses an isolation other than read committed) as CHECK, the one sent alone as ALONE.
std::string shown(pqtest::scripted_server& srv) {
  auto batches = srv.take_batches();
  for (auto& b : batches)
    for (auto& sql : b)
      if (is_check(sql)) sql = contains(sql, "current_setting('transaction_isolation')") ? "CHECK" : "ALONE";
  return show(batches);
}

// The parameters of every check sent, in order.
std::vector<std::vector<std::string>> check_params(const pqtest::scripted_server& srv) {
  std::vector<std::vector<std::string>> out;
  for (std::size_t b = 0; b < srv.batches.size(); ++b)
    for (std::size_t k = 0; k < srv.batches[b].size(); ++k)
      if (is_check(srv.batches[b][k])) out.push_back(srv.batch_params[b][k]);
  return out;
}

std::string rw_stats(const conn_t& c) {
  const auto& s = c.stats();
  return "checks=" + std::to_string(s.replica_checks) + " alone=" + std::to_string(s.replica_checks_alone) +
         " behind=" + std::to_string(s.replica_behind);
}

const std::string& isolation_sql(isolation i) {
  static const std::vector<std::string> texts{"", "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
                                              "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
                                              "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"};
  switch (i) {
    case isolation::server_default: return texts[0];
    case isolation::read_committed: return texts[1];
    case isolation::repeatable_read: return texts[2];
    case isolation::serializable: return texts[3];
  }
  return texts[0];
}
// "BEGIN" or "BEGIN | SET TRANSACTION ...".
std::string begin_of(isolation i) { return isolation_sql(i).empty() ? "BEGIN" : "BEGIN | " + isolation_sql(i); }

bool alone_for(isolation i) { return i == isolation::repeatable_read || i == isolation::serializable; }

const std::vector<isolation> every_isolation{isolation::server_default, isolation::read_committed,
                                             isolation::repeatable_read, isolation::serializable};

BOOST_FIXTURE_TEST_CASE(no_check_without_at_least, fx) {
  srv.replayed = "0/1";  // far behind: a check would fail
  for (isolation i : every_isolation) {
    transaction t{c, opts{i}};
    c.execute("SELECT 1");
    t.commit();
    BOOST_TEST(shown(srv) == "[" + begin_of(i) + " | SELECT 1] [COMMIT]");
  }
  opts batched;
  batched.batch = true;
  pqscope::atomic(c, batched, [&] { c.execute("INSERT 1"); });
  pqscope::atomic(c, at_least(isolation::server_default, wal_position{}), [&] { c.execute("INSERT 2"); });
  {
    transaction t1{c};
    transaction t2{c, at_least(isolation::server_default, wal_position{})};  // empty: no check, nested or not
    c.execute("INSERT 3");
    t2.commit();
    t1.commit();
  }
  BOOST_TEST(shown(srv) ==
             "[BEGIN | INSERT 1 | COMMIT] [BEGIN | INSERT 2] [COMMIT] [BEGIN | SAVEPOINT pqscope_1 | INSERT 3] "
             "[COMMIT]");
  BOOST_TEST(srv.replica_checks == 0);
  BOOST_TEST(rw_stats(c) == "checks=0 alone=0 behind=0");
}

// Read committed (or the server's default, read committed): one batch, the check first.
BOOST_AUTO_TEST_CASE(the_check_rides_ahead_of_begin_under_read_committed) {
  for (const char* replayed : {"", "0/30000A8", "1/0"}) {  // a primary (NULL), a standby just there, one past it
    for (isolation i : {isolation::server_default, isolation::read_committed}) {
      for (bool read_only : {false, true}) {
        BOOST_TEST_CONTEXT("replayed '" << replayed << "', isolation " << static_cast<int>(i) << ", read_only "
                                        << read_only) {
          conn_t c{"x"};
          auto& srv = c.driver().server();
          srv.replayed = replayed;
          opts o = at_least(i);
          o.read_only = read_only;
          transaction t{c, o};
          BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
          c.execute("SELECT 2");
          t.commit();
          std::string begin = begin_of(i);
          if (read_only)
            begin = i == isolation::server_default ? "BEGIN | SET TRANSACTION READ ONLY" : begin + ", READ ONLY";
          BOOST_TEST(shown(srv) == "[CHECK | " + begin + " | SELECT 1] [SELECT 2] [COMMIT]");
          BOOST_TEST(check_params(srv) == (std::vector<std::vector<std::string>>{{"0/30000A8"}}));
          BOOST_TEST(srv.replica_checks == 1);
          BOOST_TEST(rw_stats(c) == "checks=1 alone=0 behind=0");
          // The check costs no round trip, and is a control statement.
          const int controls = i == isolation::server_default && !read_only ? 3 : 4;  // CHECK, BEGIN, (SET), COMMIT
          BOOST_TEST(stats_of(c) == "round_trips=3 statements=2 control=" + std::to_string(controls) +
                                        " committed=1 rolled_back=0 savepoints=0");
          BOOST_TEST(srv.commits == 1);
        }
      }
    }
  }
}

// Repeatable read and serializable: the check's snapshot would be the transaction's,
// so it goes alone, before the BEGIN batch; once per transaction.
BOOST_AUTO_TEST_CASE(the_check_goes_alone_under_repeatable_read_and_serializable) {
  for (const char* replayed : {"", "0/30000A8", "1/0"}) {
    for (isolation i : {isolation::repeatable_read, isolation::serializable}) {
      for (bool batch : {false, true}) {
        BOOST_TEST_CONTEXT("replayed '" << replayed << "', isolation " << static_cast<int>(i) << ", batched "
                                        << batch) {
          conn_t c{"x"};
          auto& srv = c.driver().server();
          srv.replayed = replayed;
          srv.default_isolation = "serializable";  // the alone check runs under the session's default: it passes
          opts o = at_least(i);
          o.batch = batch;
          pqscope::atomic(c, o, [&] {
            c.execute("INSERT 1");
            c.execute("INSERT 2");
          });
          BOOST_TEST(shown(srv) == (batch ? "[ALONE] [" + begin_of(i) + " | INSERT 1 | INSERT 2 | COMMIT]"
                                          : "[ALONE] [" + begin_of(i) + " | INSERT 1] [INSERT 2] [COMMIT]"));
          BOOST_TEST(check_params(srv) == (std::vector<std::vector<std::string>>{{"0/30000A8"}}));
          BOOST_TEST(rw_stats(c) == "checks=1 alone=1 behind=0");
          BOOST_TEST(c.stats().round_trips == (batch ? 2u : 4u));
          BOOST_TEST(srv.commits == 1);
          BOOST_TEST(c.stats().replays == 0u);
        }
      }
    }
  }
}

// The session's default isolation is not read committed: the check in the BEGIN
// batch refuses to pass ("pqscope: isolation ..."), the batch goes again with the
// check alone first, and the connection sends every later check alone.
BOOST_AUTO_TEST_CASE(another_default_isolation_sends_the_check_alone_from_then_on) {
  for (isolation i : {isolation::server_default, isolation::read_committed}) {
    for (bool batch : {false, true}) {
      BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i) << ", batched " << batch) {
        conn_t c{"x"};
        auto& srv = c.driver().server();
        srv.replayed = "0/4000000";
        srv.default_isolation = "repeatable read";
        opts o = at_least(i);
        o.batch = batch;
        int runs = 0;
        pqscope::atomic(c, o, [&] {
          ++runs;
          BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
          c.execute("INSERT 1");
        });
        const std::string begin = begin_of(i);
        BOOST_TEST(shown(srv) == (batch ? "[CHECK | " + begin + " | SELECT 1] [ALONE] [" + begin +
                                              " | SELECT 1] [INSERT 1 | COMMIT]"
                                        : "[CHECK | " + begin + " | SELECT 1] [ALONE] [" + begin +
                                              " | SELECT 1] [INSERT 1] [COMMIT]"));
        BOOST_TEST(runs == 1);  // the resend is the machine's: the function ran once
        BOOST_TEST(c.stats().replays == 0u);
        BOOST_TEST(rw_stats(c) == "checks=2 alone=1 behind=0");
        BOOST_TEST(check_params(srv) == (std::vector<std::vector<std::string>>{{"0/30000A8"}, {"0/30000A8"}}));
        BOOST_TEST(srv.commits == 1);
        BOOST_TEST(srv.rollbacks == 0);

        // From now on this connection sends the check alone, whatever the scope's isolation ...
        for (isolation later : every_isolation) {
          transaction t{c, at_least(later)};
          c.execute("SELECT 1");
          t.commit();
          BOOST_TEST(shown(srv) == "[ALONE] [" + begin_of(later) + " | SELECT 1] [COMMIT]");
        }
        // ... and when the whole transaction goes in one send.
        opts whole = at_least();
        whole.batch = true;
        pqscope::atomic(c, whole, [&] { c.execute("INSERT 2"); });
        BOOST_TEST(shown(srv) == "[ALONE] [BEGIN | INSERT 2 | COMMIT]");
        // Scopes without at_least are as before.
        pqscope::atomic(c, [&] { c.execute("INSERT 3"); });
        BOOST_TEST(shown(srv) == "[BEGIN | INSERT 3] [COMMIT]");
        BOOST_TEST(rw_stats(c) == "checks=7 alone=6 behind=0");

        // A reconnect is a new session, whose default may be another: it learns again.
        c.reconnect();
        pqscope::atomic(c, at_least(), [&] { c.execute("SELECT 1"); });
        BOOST_TEST(shown(srv) == "[CHECK | BEGIN | SELECT 1] [ALONE] [BEGIN | SELECT 1] [COMMIT]");

        // Another connection learns it for itself.
        conn_t other{"x"};
        other.driver().server().default_isolation = "repeatable read";
        pqscope::atomic(other, at_least(), [&] { other.execute("SELECT 1"); });
        BOOST_TEST(shown(other.driver().server()) == "[CHECK | BEGIN | SELECT 1] [ALONE] [BEGIN | SELECT 1] [COMMIT]");
      }
    }
  }
}

// How a scope whose check found the standby behind can end: all send nothing.
enum class ending { commit, rollback, destructor };
const std::vector<ending> every_ending{ending::commit, ending::rollback, ending::destructor};

// The check failed: the statement in the batch (or, alone, the one waiting for it)
// throws replica_behind; nothing more reaches the server for this scope.
BOOST_AUTO_TEST_CASE(behind_the_statement_throws_replica_behind_and_nothing_runs) {
  for (isolation i : every_isolation) {
    for (ending how : every_ending) {
      BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i) << ", ending " << static_cast<int>(how)) {
        conn_t c{"x"};
        auto& srv = c.driver().server();
        srv.replayed = "0/3000060";
        bool committed = false, rolled_back = false;
        {
          std::optional<transaction> t;
          t.emplace(c, at_least(i));
          c.on_commit([&] { committed = true; });
          c.on_rollback([&] { rolled_back = true; });
          auto e = thrown<pqscope::replica_behind>([&] { c.execute("INSERT 1"); });
          BOOST_TEST(e.has_value());
          if (e) {
            BOOST_TEST(e->replayed().to_string() == "0/3000060");
            BOOST_TEST(e->required().to_string() == token.to_string());
            BOOST_TEST(contains(e->what(), "0/3000060"));
          }
          // Alone, the statement waited for the check and was never sent.
          BOOST_TEST(shown(srv) == (alone_for(i) ? "[ALONE]" : "[CHECK | " + begin_of(i) + " | INSERT 1]"));
          BOOST_TEST(rw_stats(c) ==
                     (alone_for(i) ? "checks=1 alone=1 behind=1" : "checks=1 alone=0 behind=1"));
          BOOST_TEST(srv.tx == tx_state::idle);
          const auto trips = c.stats().round_trips;
          // The scope is doomed: the next statement is refused without a round trip.
          auto a = thrown<pqscope::transaction_aborted>([&] { c.execute("INSERT 2"); });
          BOOST_TEST(a.has_value());
          if (a) BOOST_TEST(a->first_sqlstate().empty());  // not a retryable error
          BOOST_CHECK_THROW(c.set_local("x", "1"), pqscope::transaction_aborted);
          BOOST_TEST(c.stats().round_trips == trips);
          BOOST_TEST(c.depth() == 1u);
          switch (how) {
            case ending::commit: BOOST_CHECK_THROW(t->commit(), pqscope::transaction_aborted); break;
            case ending::rollback: t->rollback(); break;
            case ending::destructor: break;
          }
          t.reset();
          // Nothing began: no ROLLBACK.
          BOOST_TEST(shown(srv) == "");
          BOOST_TEST(c.stats().round_trips == trips);
          BOOST_TEST(c.depth() == 0u);
        }
        BOOST_TEST(!committed);
        BOOST_TEST(rolled_back);
        BOOST_TEST(srv.rollbacks == 0);
        BOOST_TEST(c.stats().transactions_rolled_back == 0u);

        // The connection goes on: nothing of the failed scope is left queued.
        srv.replayed = "0/30000A8";
        pqscope::atomic(c, at_least(i), [&] { c.execute("INSERT 3"); });
        BOOST_TEST(shown(srv) == std::string(alone_for(i) ? "[ALONE] [" : "[CHECK | ") + begin_of(i) +
                                     " | INSERT 3] [COMMIT]");
        c.execute("INSERT 4");
        BOOST_TEST(shown(srv) == "[INSERT 4]");
        BOOST_TEST(srv.commits == 1);
        BOOST_TEST(c.stats().replica_behind == 1u);
      }
    }
  }
}

// Scopes opened inside the doomed transaction before its first statement: they end
// as doomed scopes do, and still nothing is sent.
BOOST_AUTO_TEST_CASE(behind_with_nested_scopes_sends_nothing_more) {
  for (isolation i : every_isolation) {
    BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i)) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.replayed = "0/3000060";
      {
        transaction t1{c, at_least(i)};
        {
          transaction t2{c};
          transaction t3{c, with_savepoint(false)};
          BOOST_CHECK_THROW(c.execute("INSERT 1"), pqscope::replica_behind);
          BOOST_CHECK_THROW(t3.commit(), pqscope::transaction_aborted);
          BOOST_CHECK_THROW(t2.commit(), pqscope::transaction_aborted);
        }
        BOOST_CHECK_THROW(pqscope::atomic(c, [&] {}), pqscope::transaction_aborted);
        BOOST_CHECK_THROW(t1.commit(), pqscope::transaction_aborted);
      }
      BOOST_TEST(shown(srv) == (alone_for(i) ? "[ALONE]"
                                             : "[CHECK | " + begin_of(i) +
                                                   " | SAVEPOINT pqscope_1 | INSERT 1]"));
      BOOST_TEST(c.depth() == 0u);
      srv.replayed.clear();
      c.execute("INSERT 2");
      BOOST_TEST(shown(srv) == "[INSERT 2]");
    }
  }
}

// A batched attempt: the failed check voids it, and its cause is the
// replica_behind, which atomic() throws (running the function again cannot help).
BOOST_AUTO_TEST_CASE(behind_in_a_batched_attempt_voids_it_with_replica_behind) {
  for (isolation i : every_isolation) {
    for (bool reads : {false, true}) {
      BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i) << ", reads " << reads) {
        conn_t c{"x"};
        auto& srv = c.driver().server();
        srv.replayed = "0/3000060";
        opts o = at_least(i);
        o.batch = true;
        int runs = 0;
        bool committed = false, rolled_back = false;
        auto e = thrown<pqscope::replica_behind>([&] {
          pqscope::atomic(c, o, [&] {
            ++runs;
            c.on_commit([&] { committed = true; });
            c.on_rollback([&] { rolled_back = true; });
            c.execute("INSERT 1");
            if (reads) (void)c.query_value<int>("SELECT 1");
          });
        });
        BOOST_TEST(e.has_value());
        if (e) {
          BOOST_TEST(e->replayed().to_string() == "0/3000060");
          BOOST_TEST(e->required().to_string() == token.to_string());
        }
        const auto& voided = pqscope::detail::connection_access::session(c)->machine.voided();
        BOOST_TEST(voided.has_value());
        if (voided) {
          BOOST_TEST(voided->sqlstate.empty());
          BOOST_TEST(contains(voided->message, "0/3000060"));
          auto cause = thrown<pqscope::replica_behind>([&] {
            if (voided->cause) std::rethrow_exception(voided->cause);
          });
          BOOST_TEST(cause.has_value());
          if (cause) BOOST_TEST(cause->replayed().to_string() == "0/3000060");
        }
        const std::string rest = reads ? " | INSERT 1 | SELECT 1]" : " | INSERT 1 | COMMIT]";
        BOOST_TEST(shown(srv) == (alone_for(i) ? "[ALONE]" : "[CHECK | " + begin_of(i) + rest));
        BOOST_TEST(runs == 1);
        BOOST_TEST(!committed);
        BOOST_TEST(c.stats().replays == 0u);
        BOOST_TEST(c.stats().transactions_committed == 0u);
        BOOST_TEST(c.stats().replica_behind == 1u);
        BOOST_TEST(c.depth() == 0u);
        BOOST_TEST(srv.tx == tx_state::idle);
        BOOST_TEST(srv.rollbacks == 0);
        (void)rolled_back;  // a voided attempt's callbacks are dropped

        // Nothing of the attempt is left queued for the next transaction.
        srv.replayed.clear();
        pqscope::atomic(c, [&] { c.execute("INSERT 2"); });
        BOOST_TEST(shown(srv) == "[BEGIN | INSERT 2] [COMMIT]");
        BOOST_TEST(srv.commits == 1);
      }
    }
  }
}

// The function throws with its statements still queued: they go out before the
// ROLLBACK, behind the check, which fails; the attempt is voided by it (as by any
// failed send) and nothing of it is left queued.
BOOST_AUTO_TEST_CASE(behind_when_a_batched_attempt_rolls_back) {
  for (isolation i : every_isolation) {
    BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i)) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.replayed = "0/3000060";
      opts o = at_least(i);
      o.batch = true;
      int runs = 0;
      std::string outcome;
      try {
        pqscope::atomic(c, o, [&] {
          ++runs;
          c.execute("INSERT 1");
          throw user_abort{};
        });
      } catch (const pqscope::replica_behind&) {
        outcome = "replica_behind";
      } catch (const user_abort&) {
        outcome = "user_abort";
      }
      BOOST_TEST(outcome == "replica_behind");
      BOOST_TEST(runs == 1);
      BOOST_TEST(shown(srv) == (alone_for(i) ? "[ALONE]" : "[CHECK | " + begin_of(i) + " | INSERT 1 | ROLLBACK]"));
      BOOST_TEST(c.depth() == 0u);
      srv.replayed.clear();
      pqscope::atomic(c, [&] { c.execute("INSERT 2"); });
      BOOST_TEST(shown(srv) == "[BEGIN | INSERT 2] [COMMIT]");
      BOOST_TEST(srv.commits == 1);
      BOOST_TEST(srv.rollbacks == 0);
    }
  }
}

// replica_wait: atomic() runs the function again until the standby caught up.
BOOST_AUTO_TEST_CASE(replica_wait_runs_the_function_again_until_the_standby_caught_up) {
  for (isolation i : every_isolation) {
    for (bool batch : {false, true}) {
      BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i) << ", batched " << batch) {
        conn_t c{"x"};
        auto& srv = c.driver().server();
        srv.replayed = "0/3000060";
        opts o = at_least(i);
        o.batch = batch;
        o.replica_wait = 10s;
        int runs = 0;
        const int value = pqscope::atomic(c, o, [&] {
          if (++runs == 3) srv.replayed = "0/30000A8";
          c.execute("INSERT 1");
          return runs;
        });
        BOOST_TEST(value == 3);
        BOOST_TEST(c.stats().replica_behind == 2u);
        BOOST_TEST(srv.commits == 1);
        const std::string first = alone_for(i) ? "[ALONE]" : "[CHECK | " + begin_of(i) + " | INSERT 1" +
                                                                  (batch ? " | COMMIT]" : "]");
        const std::string last = std::string(alone_for(i) ? "[ALONE] [" : "[CHECK | ") + begin_of(i) +
                                 (batch ? " | INSERT 1 | COMMIT]" : " | INSERT 1] [COMMIT]");
        BOOST_TEST(shown(srv) == first + " " + first + " " + last);
      }
    }
  }
}

BOOST_FIXTURE_TEST_CASE(replica_wait_runs_out, fx) {
  srv.replayed = "0/3000060";
  opts o = at_least();
  o.replica_wait = 30ms;
  int runs = 0;
  const auto start = std::chrono::steady_clock::now();
  BOOST_CHECK_THROW(pqscope::atomic(c, o, [&] {
                      ++runs;
                      c.execute("INSERT 1");
                    }),
                    pqscope::replica_behind);
  BOOST_TEST((std::chrono::steady_clock::now() - start >= 30ms));
  BOOST_TEST(runs > 1);
  BOOST_TEST(c.stats().replica_behind == static_cast<std::uint64_t>(runs));
  // Without it, at once.
  runs = 0;
  o.replica_wait = 0ms;
  BOOST_CHECK_THROW(pqscope::atomic(c, o, [&] {
                      ++runs;
                      c.execute("INSERT 1");
                    }),
                    pqscope::replica_behind);
  BOOST_TEST(runs == 1);
}

// A nested scope may repeat what its transaction sees, never ask for more.
BOOST_FIXTURE_TEST_CASE(nested_scopes_cannot_ask_for_a_later_position, fx) {
  const wal_position later(token.value() + 1), earlier(token.value() - 1);
  {
    transaction t1{c, at_least()};
    BOOST_CHECK_THROW(transaction(c, at_least(isolation::server_default, later)), pqscope::usage_error);
    BOOST_TEST(c.depth() == 1u);
    BOOST_TEST(srv.batches.empty());
    transaction t2{c, at_least(isolation::server_default, token)};
    transaction t3{c, at_least(isolation::server_default, earlier)};
    transaction t4{c, at_least(isolation::server_default, wal_position{})};
    BOOST_CHECK_THROW(pqscope::atomic(c, at_least(isolation::server_default, later), [] {}), pqscope::usage_error);
    BOOST_TEST(c.depth() == 4u);
    c.execute("SELECT 1");  // not doomed; one check, the transaction's
    t4.commit();
    t3.commit();
    t2.commit();
    t1.commit();
  }
  BOOST_TEST(shown(srv) ==
             "[CHECK | BEGIN | SAVEPOINT pqscope_1 | SAVEPOINT pqscope_2 | SAVEPOINT pqscope_3 | SELECT 1] [COMMIT]");
  BOOST_TEST(check_params(srv) == (std::vector<std::vector<std::string>>{{"0/30000A8"}}));
  // A transaction without at_least: no nested scope may set one.
  {
    transaction t1{c};
    BOOST_CHECK_THROW(transaction(c, at_least()), pqscope::usage_error);
    c.execute("SELECT 1");
    t1.commit();
  }
  BOOST_TEST(shown(srv) == "[BEGIN | SELECT 1] [COMMIT]");
  BOOST_TEST(rw_stats(c) == "checks=1 alone=0 behind=0");
}

// The check fails for another reason (a middleware without the function, say):
// an sql_error, not replica_behind; the scope is doomed and nothing more is sent.
BOOST_AUTO_TEST_CASE(another_failure_of_the_check_is_an_sql_error) {
  for (isolation i : every_isolation) {
    BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i)) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      const std::string missing = "function pg_catalog.pg_last_wal_replay_lsn() does not exist";
      srv.fail_matching("pg_last_wal_replay_lsn", "42883", 1, missing);
      {
        transaction t{c, at_least(i)};
        bool behind = false;
        std::optional<caught_sql> e;
        try {
          e = sql_error_of([&] { c.execute("INSERT 1"); });
        } catch (const pqscope::replica_behind&) {
          behind = true;
        }
        BOOST_TEST(!behind);
        BOOST_TEST(e.has_value());
        if (e) BOOST_TEST(e->sqlstate == "42883");
        auto a = thrown<pqscope::transaction_aborted>([&] { c.execute("INSERT 2"); });
        BOOST_TEST(a.has_value());
        if (a) BOOST_TEST(a->first_sqlstate() == "42883");
        BOOST_CHECK_THROW(t.commit(), pqscope::transaction_aborted);
      }
      BOOST_TEST(shown(srv) == (alone_for(i) ? "[ALONE]" : "[CHECK | " + begin_of(i) + " | INSERT 1]"));
      BOOST_TEST(rw_stats(c) == (alone_for(i) ? "checks=1 alone=1 behind=0" : "checks=1 alone=0 behind=0"));
      BOOST_TEST(srv.rollbacks == 0);
      // Not waited on: replica_wait is for a standby behind.
      srv.fail_matching("pg_last_wal_replay_lsn", "42883", 1, missing);
      opts o = at_least(i);
      o.replica_wait = 10s;
      int runs = 0;
      BOOST_CHECK_THROW(pqscope::atomic(c, o, [&] {
                          ++runs;
                          c.execute("INSERT 3");
                        }),
                        pqscope::sql_error);
      BOOST_TEST(runs == 1);
      (void)shown(srv);
      pqscope::atomic(c, at_least(i), [&] { c.execute("INSERT 4"); });
      BOOST_TEST(shown(srv) == std::string(alone_for(i) ? "[ALONE] [" : "[CHECK | ") + begin_of(i) +
                                   " | INSERT 4] [COMMIT]");
    }
  }
}

// Only the server's refusal to read the marker as a pg_lsn (22P02) is the check's
// verdict: an error whose message quotes the check's text (a middleware that cannot
// parse it, say) is that error, neither "behind" nor "isolation".
BOOST_AUTO_TEST_CASE(a_message_quoting_the_check_is_no_verdict) {
  for (isolation i : every_isolation) {
    BOOST_TEST_CONTEXT("isolation " << static_cast<int>(i)) {
      conn_t c{"x"};
      auto& srv = c.driver().server();
      srv.fail_matching("pg_last_wal_replay_lsn", "42601");  // "scripted error 42601 at: <the check's text>"
      transaction t{c, at_least(i)};
      auto e = sql_error_of([&] { c.execute("INSERT 1"); });
      BOOST_TEST(e.has_value());
      if (e) BOOST_TEST(e->sqlstate == "42601");
      BOOST_TEST(shown(srv) == (alone_for(i) ? "[ALONE]" : "[CHECK | " + begin_of(i) + " | INSERT 1]"));
      BOOST_TEST(c.stats().replica_behind == 0u);
    }
  }
}

BOOST_FIXTURE_TEST_CASE(replica_wait_on_a_transaction_object_is_refused, fx) {
  opts o = at_least();
  o.replica_wait = 10ms;
  BOOST_CHECK_THROW(transaction(c, o), pqscope::usage_error);
  o.replica_wait = -1ms;
  BOOST_CHECK_THROW(pqscope::atomic(c, o, [] {}), pqscope::usage_error);
  BOOST_TEST(c.depth() == 0u);
  BOOST_TEST(srv.batches.empty());
}

BOOST_AUTO_TEST_SUITE_END()

// The statement caches (sql_facts_cache, prepared_statements) are direct-mapped by
// slot_hash(), which samples a text instead of reading all of it: texts that differ
// in one character, at the start, the middle or the end, must still spread over the
// slots, or they would evict each other and never be kept.
BOOST_AUTO_TEST_CASE(slot_hash_spreads_texts_that_differ_in_one_place) {
  const std::vector<std::function<std::string(int)>> shapes{
      [](int k) { return "SELECT $1::int * " + std::to_string(k); },
      [](int k) { return std::to_string(k) + " | SELECT v FROM accounts WHERE id = $1"; },
      [](int k) { return "UPDATE accounts_" + std::to_string(k) + " SET balance = balance + $1 WHERE id = $2"; },
  };
  for (std::size_t shape = 0; shape < shapes.size(); ++shape) {
    std::vector<bool> seen(256);
    std::size_t used = 0;
    for (int k = 0; k < 1000; ++k) {
      const std::size_t slot = pqscope::detail::slot_hash(shapes[shape](k)) % 256;
      if (!seen[slot]) ++used;
      seen[slot] = true;
    }
    // 1,000 texts into 256 slots at random fill about 250 of them.
    BOOST_TEST(used >= 230u, "shape " << shape << " fills " << used << " of 256 slots");
  }
}

// Texts an application runs in turn must all get prepared, however their hashes fall:
// each may sit in any of a few slots, so two texts do not keep evicting each other
// (with one slot per hash, 60 texts in 256 slots collide somewhere almost surely).
BOOST_AUTO_TEST_CASE(prepared_statements_keep_texts_run_in_turn) {
  pqscope::detail::prepared_statements ps;
  ps.set_limit(256);
  std::vector<std::string> texts;
  for (int k = 0; k < 60; ++k) texts.push_back("SELECT v FROM t" + std::to_string(k) + " WHERE id = $1");
  for (int round = 0; round < 3; ++round) {
    for (const std::string& t : texts) {
      const auto use = ps.plan(t, 1, nullptr);
      if (round == 0) BOOST_TEST(use.name == nullptr, t << ": unnamed on its first run");
      if (round == 1) BOOST_TEST((use.name != nullptr && use.parse), t << ": parsed on its second run");
      if (round == 2) BOOST_TEST((use.name != nullptr && !use.parse), t << ": bound on its third");
      if (use.parse) ps.settle(t, 1, nullptr, use.name, true);
    }
  }
  BOOST_TEST(ps.made() == texts.size());
}
