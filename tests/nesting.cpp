#define BOOST_TEST_MODULE nesting
#include <boost/test/unit_test.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/servers.hpp"

// Nested scopes through functions that know nothing of each other: each opens
// its own scope on the connection it is given. Committed rows are checked from
// the observer (a second, direct session) once the outermost scope has ended.
//
// Every case loops over pqtest::targets() inside the test body: a data test case
// would read the environment during static initialisation. A case uses one
// table, emptied before each target and each combination, and one connection
// per target: a new direct session costs tens of milliseconds.

namespace {

using pqtest::for_each_target;
using pqtest::idle_in_transaction;

enum class ending { commit, rollback, exception, sql_error };

std::ostream& operator<<(std::ostream& os, ending e) {
  switch (e) {
    case ending::commit: return os << "commit";
    case ending::rollback: return os << "rollback";
    case ending::exception: return os << "exception";
    case ending::sql_error: return os << "sql_error";
  }
  return os << "?";
}

const ending all_endings[] = {ending::commit, ending::rollback, ending::exception, ending::sql_error};

// An application error, as opposed to one the server reported.
struct unit_failure : std::runtime_error {
  unit_failure() : std::runtime_error("the unit of work gave up") {}
};

// How a call ended, as a string that reads well in a failed check.
template <class F>
std::string outcome(F&& f) {
  try {
    f();
    return "returned";
  } catch (const pqscope::transaction_aborted& e) {
    return "transaction_aborted[" + e.first_sqlstate() + "]";
  } catch (const pqscope::unique_violation&) {
    return "unique_violation";
  } catch (const unit_failure&) {
    return "unit_failure";
  } catch (const std::exception& e) {
    return std::string("unexpected: ") + e.what();
  }
}

std::string ids(int from, int to) {
  std::string s;
  for (int i = from; i <= to; ++i) s += (s.empty() ? "" : ",") + std::to_string(i);
  return s;
}

void insert_row(pqscope::connection& c, const pqtest::scratch_table& table, int id) {
  c.execute("INSERT INTO " + table.name() + " (id) VALUES ($1)", id);
}

// What this session sees, uncommitted rows included.
std::string session_ids(pqscope::connection& c, const pqtest::scratch_table& table) {
  return c.query_value<std::optional<std::string>>("SELECT string_agg(id::text, ',' ORDER BY id) FROM " + table.name())
      .value_or("");
}

// Ends tx as told. sql_error: row `id` is inserted again, and the duplicate key
// error leaves the scope.
void end_scope(pqscope::connection& c, pqscope::transaction& tx, const pqtest::scratch_table& table, int id,
               ending how) {
  switch (how) {
    case ending::commit: tx.commit(); return;
    case ending::rollback: tx.rollback(); return;
    case ending::exception: throw unit_failure();
    case ending::sql_error: insert_row(c, table, id); return;
  }
}

// A unit of work in a scope of its own: inserts row `id`, then ends as told.
void insert_in_scope(pqscope::connection& c, const pqtest::scratch_table& table, int id, ending how,
                     bool savepoint = true) {
  pqscope::transaction_options o;
  o.savepoint = savepoint;
  pqscope::transaction tx{c, o};
  insert_row(c, table, id);
  end_scope(c, tx, table, id, how);
}

// Row 2's scope dooms the enclosing one when it cannot be undone on its own.
bool dooms_outer(ending inner, bool inner_savepoint) { return !inner_savepoint && inner != ending::commit; }

std::string inner_outcome(ending inner) {
  switch (inner) {
    case ending::exception: return "unit_failure";
    case ending::sql_error: return "unique_violation";
    default: return "returned";
  }
}

// Row 1, then the inner unit (row 2) whose failure it tolerates, then row 3.
void outer_unit(pqscope::connection& c, const pqtest::scratch_table& table, ending outer, ending inner,
                bool inner_savepoint) {
  pqscope::transaction tx{c};
  BOOST_TEST(tx.is_outermost());
  insert_row(c, table, 1);
  BOOST_TEST(outcome([&] { insert_in_scope(c, table, 2, inner, inner_savepoint); }) == inner_outcome(inner));
  BOOST_TEST(c.depth() == 1u);
  if (dooms_outer(inner, inner_savepoint)) {
    const auto trips = c.stats().round_trips;
    BOOST_TEST(outcome([&] { insert_row(c, table, 3); }).rfind("transaction_aborted", 0) == 0u);
    BOOST_TEST(c.stats().round_trips == trips);  // refused without asking the server
  } else {
    insert_row(c, table, 3);
    BOOST_TEST(session_ids(c, table) == (inner == ending::commit ? "1,2,3" : "1,3"));
  }
  BOOST_TEST(committed_count(table) == 0);  // a released savepoint commits nothing yet
  end_scope(c, tx, table, 1, outer);
}

// How outer_unit() ends, and what it leaves committed.
struct expectation {
  std::string outcome, rows;
};
expectation expect(ending outer, ending inner, bool inner_savepoint) {
  const bool doomed = dooms_outer(inner, inner_savepoint);
  // The error that doomed the outer scope: the inner duplicate key, or none for a rollback or exception.
  const std::string aborted = std::string("transaction_aborted[") + (inner == ending::sql_error ? "23505" : "") + "]";
  expectation e{"returned", ""};
  if (outer == ending::commit && doomed) e.outcome = aborted;  // never a silent rollback
  if (outer == ending::exception) e.outcome = "unit_failure";
  if (outer == ending::sql_error) e.outcome = doomed ? aborted : "unique_violation";
  if (outer == ending::commit && !doomed) e.rows = inner == ending::commit ? "1,2,3" : "1,3";
  return e;
}
}  // namespace

BOOST_AUTO_TEST_CASE(outer_and_inner_endings) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    for (ending outer : all_endings)
      for (ending inner : all_endings)
        for (bool inner_savepoint : {true, false})
          BOOST_TEST_CONTEXT("outer " << outer << ", inner " << inner << (inner_savepoint ? " with" : " without")
                                      << " savepoint") {
            empty(table);
            const expectation e = expect(outer, inner, inner_savepoint);
            BOOST_TEST(outcome([&] { outer_unit(c, table, outer, inner, inner_savepoint); }) == e.outcome);
            BOOST_TEST(c.depth() == 0u);
            BOOST_TEST(committed_ids(table) == e.rows);
            // The connection is usable again, in autocommit; the next combination reuses it.
            BOOST_TEST(outcome([&] { insert_row(c, table, 9); }) == "returned");
            BOOST_TEST(committed_ids(table) == (e.rows.empty() ? "9" : e.rows + ",9"));
          }
  });
}

// rollback() of a scope without a savepoint cannot undo its own work: it dooms the
// enclosing scope, which can then only roll back.
BOOST_AUTO_TEST_CASE(rollback_without_savepoint_dooms_the_enclosing_scope) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    {
      pqscope::transaction outer{c};
      insert_row(c, table, 1);
      {
        pqscope::transaction_options o;
        o.savepoint = false;
        pqscope::transaction inner{c, o};
        BOOST_TEST(!inner.is_outermost());
        insert_row(c, table, 2);
        BOOST_CHECK_NO_THROW(inner.rollback());
      }
      // Nested scopes cannot open inside a doomed one either.
      BOOST_CHECK_THROW(pqscope::transaction{c}, pqscope::transaction_aborted);
      BOOST_TEST(c.depth() == 1u);
      BOOST_CHECK_EXCEPTION(outer.commit(), pqscope::transaction_aborted, [](const pqscope::transaction_aborted& e) {
        return e.first_sqlstate().empty() && !e.first_error().empty();
      });
      // commit() ended the scope even though it threw.
      BOOST_TEST(c.depth() == 0u);
      BOOST_CHECK_THROW(outer.rollback(), pqscope::usage_error);
    }
    BOOST_TEST(committed_ids(table) == "");
    BOOST_TEST(idle_in_transaction(c.application_name()) == 0);
  });
}

// A savepoint-less scope nested in a savepoint dooms only up to that savepoint.
BOOST_AUTO_TEST_CASE(doom_stops_at_the_nearest_savepoint) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    {
      pqscope::transaction outer{c};
      insert_row(c, table, 1);
      BOOST_TEST(outcome([&] {
                   pqscope::transaction middle{c};  // a savepoint
                   insert_row(c, table, 2);
                   insert_in_scope(c, table, 3, ending::rollback, /*savepoint=*/false);
                   middle.commit();
                 }) == "transaction_aborted[]");
      insert_row(c, table, 4);
      outer.commit();
    }
    BOOST_TEST(committed_ids(table) == "1,4");
  });
}

// d nested levels, each in its own call and scope, each inserting its row; the
// innermost ends as told, every other level commits.
namespace {
void nest(pqscope::connection& c, const pqtest::scratch_table& table, int level, int depth, ending innermost) {
  pqscope::transaction tx{c};
  BOOST_TEST(c.depth() == static_cast<std::size_t>(level));
  BOOST_TEST(c.in_transaction());
  BOOST_TEST(tx.is_outermost() == (level == 1));
  insert_row(c, table, level);
  if (level == depth) {
    BOOST_TEST(session_ids(c, table) == ids(1, depth));
    BOOST_TEST(committed_count(table) == 0);
    end_scope(c, tx, table, level, innermost);
    return;
  }
  nest(c, table, level + 1, depth, innermost);
  BOOST_TEST(c.depth() == static_cast<std::size_t>(level));
  BOOST_TEST(session_ids(c, table) == ids(1, innermost == ending::commit ? depth : depth - 1));
  tx.commit();
  BOOST_TEST(c.depth() == static_cast<std::size_t>(level - 1));
}
}  // namespace

BOOST_AUTO_TEST_CASE(depth_one_to_ten) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    for (ending innermost : {ending::commit, ending::rollback})
      for (int depth = 1; depth <= 10; ++depth) BOOST_TEST_CONTEXT("depth " << depth << ", innermost " << innermost) {
          empty(table);
          const auto savepoints = c.stats().savepoints;
          BOOST_TEST(outcome([&] { nest(c, table, 1, depth, innermost); }) == "returned");
          BOOST_TEST(c.depth() == 0u);
          BOOST_TEST(!c.in_transaction());
          BOOST_TEST(committed_ids(table) == ids(1, innermost == ending::commit ? depth : depth - 1));
          // Every level below the outermost was a real savepoint.
          BOOST_TEST(c.stats().savepoints - savepoints == static_cast<std::uint64_t>(depth - 1));
        }
  });
}

// An exception from the deepest level that nobody catches unwinds every scope.
BOOST_AUTO_TEST_CASE(uncaught_exception_at_depth_unwinds_everything) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    for (int depth : {1, 2, 10}) BOOST_TEST_CONTEXT("depth " << depth) {
        BOOST_CHECK_THROW(nest(c, table, 1, depth, ending::exception), unit_failure);
        BOOST_TEST(c.depth() == 0u);
        BOOST_TEST(committed_ids(table) == "");
        BOOST_TEST(idle_in_transaction(c.application_name()) == 0);
      }
  });
}

// An SQL error at the deepest level, caught by the outermost scope: every savepoint
// in between rolls back, and the outermost scope carries on and commits.
BOOST_AUTO_TEST_CASE(error_caught_several_levels_up) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    for (int depth : {2, 3, 10}) BOOST_TEST_CONTEXT("depth " << depth) {
        empty(table);
        BOOST_TEST(outcome([&] {
                     pqscope::transaction outer{c};
                     insert_row(c, table, 1);
                     BOOST_TEST(outcome([&] { nest(c, table, 2, depth, ending::sql_error); }) == "unique_violation");
                     BOOST_TEST(c.depth() == 1u);
                     insert_row(c, table, 99);
                     outer.commit();
                   }) == "returned");
        BOOST_TEST(committed_ids(table) == "1,99");
      }
  });
}

// ---- the transfer / deposit example ----------------------------------------------

namespace {

struct insufficient_funds : std::runtime_error {
  insufficient_funds() : std::runtime_error("insufficient funds") {}
};

// Neither function knows whether it runs on its own or inside another scope.
void deposit(pqscope::connection& c, const pqtest::scratch_table& accounts, int id, long cents) {
  pqscope::transaction tx{c};
  // No row (unknown account): query_value throws conversion_error.
  const long balance = c.query_value<long>(
      "UPDATE " + accounts.name() + " SET cents = cents + $1 WHERE id = $2 RETURNING cents", cents, id);
  if (balance < 0) throw insufficient_funds();
  tx.commit();
}

void transfer(pqscope::connection& c, const pqtest::scratch_table& accounts, int from, int to, long cents) {
  pqscope::transaction tx{c};
  deposit(c, accounts, from, -cents);
  deposit(c, accounts, to, cents);
  tx.commit();
}

struct accounts_fixture {
  pqtest::scratch_table accounts{"id int PRIMARY KEY, cents bigint"};
  void reset() const {
    empty(accounts);
    pqtest::shared_observer().execute("INSERT INTO " + accounts.name() + " VALUES (1, 1000), (2, 0), (3, 0)");
  }
  [[nodiscard]] std::string balances() const {
    return pqtest::shared_observer().query_value<std::string>("SELECT string_agg(id || ':' || cents, ' ' ORDER BY id) FROM " +
                                              accounts.name());
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(transfer_on_its_own) {
  accounts_fixture f;
  for_each_target([&](const pqtest::target& t) {
    f.reset();
    pqscope::connection c{t.conninfo};
    transfer(c, f.accounts, 1, 2, 100);
    BOOST_TEST(f.balances() == "1:900 2:100 3:0");
    // The withdrawal ran and was then undone with the rest of the transfer.
    BOOST_CHECK_THROW(transfer(c, f.accounts, 1, 2, 5000), insufficient_funds);
    // The deposit to an unknown account fails after the withdrawal was released into the transfer.
    BOOST_CHECK_THROW(transfer(c, f.accounts, 1, 99, 100), pqscope::conversion_error);
    BOOST_TEST(f.balances() == "1:900 2:100 3:0");
    BOOST_TEST(c.depth() == 0u);
  });
}

// A batch of transfers in one transaction: a failed transfer is undone alone, its
// already released withdrawal included, and the others commit together.
BOOST_AUTO_TEST_CASE(transfers_in_a_batch) {
  accounts_fixture f;
  for_each_target([&](const pqtest::target& t) {
    f.reset();
    pqscope::connection c{t.conninfo};
    std::vector<std::string> failed;
    {
      pqscope::transaction batch{c};
      struct move {
        int from, to;
        long cents;
      };
      const move moves[] = {{1, 2, 300}, {1, 99, 100}, {2, 3, 5000}, {2, 3, 50}};
      for (std::size_t i = 0; i < 4; ++i) {
        try {
          transfer(c, f.accounts, moves[i].from, moves[i].to, moves[i].cents);
        } catch (const std::exception&) {
          failed.push_back(std::to_string(i));
        }
        BOOST_TEST(c.depth() == 1u);
      }
      BOOST_TEST(f.balances() == "1:1000 2:0 3:0");  // nothing committed yet
      batch.commit();
    }
    BOOST_TEST(failed == (std::vector<std::string>{"1", "2"}), boost::test_tools::per_element());
    // 1 -> 99 (unknown account) and 2 -> 3 (overdrawn) are undone; the withdrawal from 1 with them.
    BOOST_TEST(f.balances() == "1:700 2:250 3:50");
  });
}

// ---- atomic() and transactional() ---------------------------------------------------

BOOST_AUTO_TEST_CASE(atomic_inside_atomic) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    const int inner_value = pqscope::atomic(c, [&](pqscope::connection& cc) {
      BOOST_TEST(cc.depth() == 1u);
      insert_row(cc, table, 1);
      // The exception leaves the inner atomic(): only its savepoint rolls back.
      BOOST_CHECK_THROW(pqscope::atomic(cc,
                                        [&] {
                                          insert_row(cc, table, 2);
                                          throw unit_failure();
                                        }),
                        unit_failure);
      BOOST_TEST(cc.depth() == 1u);
      const int v = pqscope::atomic(cc, [&] {
        BOOST_TEST(cc.depth() == 2u);
        insert_row(cc, table, 3);
        return 42;
      });
      BOOST_TEST(committed_count(table) == 0);
      return v;
    });
    BOOST_TEST(inner_value == 42);
    BOOST_TEST(c.depth() == 0u);
    BOOST_TEST(committed_ids(table) == "1,3");
  });
}

BOOST_AUTO_TEST_CASE(uncaught_exception_leaves_every_atomic) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    BOOST_CHECK_THROW(pqscope::atomic(c,
                                      [&] {
                                        insert_row(c, table, 1);
                                        pqscope::atomic(c, [&] {
                                          insert_row(c, table, 2);
                                          insert_row(c, table, 1);  // duplicate key, not caught
                                        });
                                      }),
                      pqscope::unique_violation);
    BOOST_TEST(c.depth() == 0u);
    BOOST_TEST(committed_ids(table) == "");
  });
}

BOOST_AUTO_TEST_CASE(transactional_calls_nest_as_savepoints) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    auto add = pqscope::transactional([](pqscope::connection& cc, const pqtest::scratch_table& tb, int id) {
      insert_row(cc, tb, id);
      return cc.depth();
    });
    // On its own, a call is a transaction of its own and commits at once.
    BOOST_TEST(add(c, table, 1) == 1u);
    BOOST_TEST(committed_ids(table) == "1");
    pqscope::atomic(c, [&] {
      BOOST_TEST(add(c, table, 2) == 2u);
      // The duplicate key rolls back that call's savepoint only; the outer scope carries on.
      BOOST_CHECK_THROW(add(c, table, 2), pqscope::unique_violation);
      BOOST_TEST(add(c, table, 3) == 2u);
    });
    BOOST_TEST(committed_ids(table) == "1,2,3");
  });
}

BOOST_AUTO_TEST_CASE(transactional_without_savepoint_dooms_the_caller) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    pqscope::transaction_options o;
    o.savepoint = false;
    auto add = pqscope::transactional(
        [](pqscope::connection& cc, const pqtest::scratch_table& tb, int id) { insert_row(cc, tb, id); }, o);
    BOOST_CHECK_EXCEPTION(pqscope::atomic(c,
                                          [&] {
                                            add(c, table, 1);
                                            BOOST_CHECK_THROW(add(c, table, 1), pqscope::unique_violation);
                                            // returns normally: the commit is what refuses
                                          }),
                          pqscope::transaction_aborted,
                          [](const pqscope::transaction_aborted& e) { return e.first_sqlstate() == "23505"; });
    BOOST_TEST(c.depth() == 0u);
    BOOST_TEST(committed_ids(table) == "");
  });
}

// Transaction objects and atomic() share one stack of scopes.
BOOST_AUTO_TEST_CASE(transaction_objects_and_atomic_mix) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    empty(table);
    pqscope::connection c{t.conninfo};
    pqscope::atomic(c, [&] {
      insert_row(c, table, 1);
      insert_in_scope(c, table, 2, ending::rollback);
      BOOST_TEST(outcome([&] { insert_in_scope(c, table, 3, ending::exception); }) == "unit_failure");
      insert_in_scope(c, table, 4, ending::commit);
    });
    {
      pqscope::transaction tx{c};
      insert_row(c, table, 5);
      BOOST_TEST(outcome([&] {
                   pqscope::atomic(c, [&] {
                     insert_row(c, table, 6);
                     throw unit_failure();
                   });
                 }) == "unit_failure");
      pqscope::atomic(c, [&] { insert_row(c, table, 7); });
      tx.commit();
    }
    BOOST_TEST(committed_ids(table) == "1,4,5,7");
  });
}
