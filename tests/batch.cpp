#define BOOST_TEST_MODULE batch
#include <boost/test/unit_test.hpp>

// Batched attempts (transaction_options::batch) against unbatched ones.
//
// Each scenario is a function run in an outermost atomic(), once unbatched and
// once batched, on the same connection. What the function saw (exceptions caught
// at every level, rows read, callbacks fired), what escaped atomic(), the rows
// committed and the final state must be the same. What a voided batched attempt
// saw is discarded when the function starts again, as its effects are: the
// journal is reset at the start of every call.

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using pqtest::committed_ids;
using pqtest::for_each_target;

enum class ending { commit, rollback, exception, sql_error };
const ending all_endings[] = {ending::commit, ending::rollback, ending::exception, ending::sql_error};
const char* name(ending e) {
  switch (e) {
    case ending::commit: return "commit";
    case ending::rollback: return "rollback";
    case ending::exception: return "exception";
    case ending::sql_error: return "sql_error";
  }
  return "?";
}

struct unit_failure : std::runtime_error {
  unit_failure() : std::runtime_error("the unit of work gave up") {}
};

std::string category(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const pqscope::batch_failed& x) {
    return std::string("batch_failed (must never escape): ") + x.what();
  } catch (const pqscope::transaction_aborted& x) {
    return "transaction_aborted[" + x.first_sqlstate() + "]";
  } catch (const pqscope::unique_violation&) {
    return "unique_violation";
  } catch (const pqscope::serialization_failure&) {
    return "serialization_failure";
  } catch (const unit_failure&) {
    return "unit_failure";
  } catch (const std::exception& x) {
    return std::string("unexpected: ") + x.what();
  }
}

// Everything a run produced that a user could observe.
struct observed {
  std::vector<std::string> journal;  // what the function saw, in order
  std::string escaped;               // what left atomic()
  std::string committed;             // rows, from another session
  std::size_t depth = 0;
  bool idle = true;
  bool operator==(const observed& o) const {
    return journal == o.journal && escaped == o.escaped && committed == o.committed && depth == o.depth &&
           idle == o.idle;
  }
};
std::ostream& operator<<(std::ostream& os, const observed& o) {
  os << "{journal [";
  for (const auto& j : o.journal) os << " " << j << ";";
  return os << " ] escaped " << o.escaped << ", committed {" << o.committed << "}, depth " << o.depth
            << (o.idle ? ", idle" : ", NOT idle") << "}";
}

class runner {
 public:
  runner(pqscope::connection& c, const pqtest::scratch_table& t) : c_(c), t_(t) {}

  pqscope::connection& conn() { return c_; }
  void note(const std::string& s) { journal_.push_back(s); }
  void insert(int id) { c_.execute("INSERT INTO " + t_.name() + " (id) VALUES ($1)", id); }
  void read() {
    note("read {" +
         c_.query_value<std::optional<std::string>>("SELECT string_agg(id::text, ',' ORDER BY id) FROM " + t_.name())
             .value_or("") +
         "}");
  }
  // Runs f, noting the exception it let out, if any.
  template <class F>
  void guarded(const char* label, F&& f) {
    try {
      f();
      note(std::string(label) + ": returned");
    } catch (...) {
      note(std::string(label) + ": " + category(std::current_exception()));
    }
  }
  void callbacks(const std::string& label) {
    c_.on_commit([this, label] { fired_.push_back("on_commit " + label); });
    c_.on_rollback([this, label] { fired_.push_back("on_rollback " + label); });
  }

  // fn runs in an outermost atomic(); every call starts a fresh journal.
  observed run(bool batch, const std::function<void(runner&)>& fn, pqscope::transaction_options o = {}) {
    pqtest::empty(t_);
    journal_.clear();
    fired_.clear();
    o.batch = batch;
    observed out;
    try {
      pqscope::atomic(c_, o, [&] {
        journal_.clear();
        fn(*this);
      });
      out.escaped = "none";
    } catch (...) {
      out.escaped = category(std::current_exception());
    }
    out.journal = journal_;
    for (const auto& f : fired_) out.journal.push_back(f);
    out.committed = committed_ids(t_);
    out.depth = c_.depth();
    out.idle = PQtransactionStatus(c_.native_handle()) == PQTRANS_IDLE;
    return out;
  }

 private:
  pqscope::connection& c_;
  const pqtest::scratch_table& t_;
  std::vector<std::string> journal_, fired_;
};

// Runs fn unbatched and batched; they must agree. Returns the stats delta of the
// batched run, with the unbatched run's round trips in `statements`.
pqscope::connection_stats same_both_ways(runner& r, const std::function<void(runner&)>& fn,
                                         pqscope::transaction_options o = {}) {
  const auto plain_start = r.conn().stats().round_trips;
  const observed plain = r.run(false, fn, o);
  const pqscope::connection_stats before = r.conn().stats();
  const observed batched = r.run(true, fn, o);
  const pqscope::connection_stats after = r.conn().stats();
  BOOST_TEST_INFO("unbatched: " << plain);
  BOOST_TEST_INFO("batched:   " << batched);
  BOOST_TEST((plain == batched));
  BOOST_TEST(plain.escaped.find("batch_failed") == std::string::npos);
  pqscope::connection_stats d;
  d.round_trips = after.round_trips - before.round_trips;
  d.batched_attempts = after.batched_attempts - before.batched_attempts;
  d.replays = after.replays - before.replays;
  d.statements = before.round_trips - plain_start;
  BOOST_TEST(d.batched_attempts >= 1u);
  if (d.replays == 0) BOOST_TEST(d.round_trips <= d.statements);  // batching never costs more
  return d;
}

// A scope of the caller's kind: a transaction object or a nested atomic().
void in_scope(runner& r, bool use_atomic, bool savepoint, ending how, int id, const std::function<void()>& body) {
  pqscope::transaction_options o;
  o.savepoint = savepoint;
  auto finish_sql_error = [&] { r.insert(id); };  // inserting `id` again: duplicate key
  if (use_atomic) {
    pqscope::atomic(r.conn(), o, [&] {
      body();
      if (how == ending::exception || how == ending::rollback) throw unit_failure();
      if (how == ending::sql_error) finish_sql_error();
    });
    return;
  }
  pqscope::transaction tx{r.conn(), o};
  body();
  switch (how) {
    case ending::commit: tx.commit(); return;
    case ending::rollback: tx.rollback(); return;
    case ending::exception: throw unit_failure();
    case ending::sql_error: finish_sql_error(); return;
  }
}

}  // namespace

// The Django matrix, one level further down: inside the batched outermost atomic,
// an outer unit (row 1, callbacks) calls an inner unit (row 2) that ends every
// way, catches what it lets out, inserts row 3, reads, and ends every way itself.
BOOST_AUTO_TEST_CASE(django_matrix_batched_equals_unbatched) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    runner r{c, table};
    std::uint64_t replays = 0, fewer = 0;
    for (bool use_atomic : {false, true})
      for (ending outer : all_endings)
        for (ending inner : all_endings)
          for (bool inner_savepoint : {true, false})
            for (bool read_between : {false, true})
              BOOST_TEST_CONTEXT((use_atomic ? "atomic" : "transaction") << " outer " << name(outer) << ", inner "
                                 << name(inner) << (inner_savepoint ? " with" : " without") << " savepoint"
                                 << (read_between ? ", reads" : "")) {
                const auto d = same_both_ways(r, [&](runner& x) {
                  x.insert(10);
                  x.guarded("outer", [&] {
                    in_scope(x, use_atomic, true, outer, 1, [&] {
                      x.insert(1);
                      x.callbacks("outer");
                      x.guarded("inner", [&] {
                        in_scope(x, use_atomic, inner_savepoint, inner, 2, [&] {
                          x.insert(2);
                          x.callbacks("inner");
                        });
                      });
                      if (read_between) x.read();
                      x.insert(3);
                    });
                  });
                  x.read();
                });
                replays += d.replays;
                if (d.replays == 0 && d.round_trips < d.statements) ++fewer;
              }
    // Both ways were really taken: attempts voided and run again, and attempts
    // that went through in fewer round trips than unbatched.
    BOOST_TEST(replays > 0u);
    BOOST_TEST(fewer > 0u);
  });
}

// A failure at every position, caught at every level or not at all: statements
// s0..s5 spread over three nested scopes, statement `k` fails.
BOOST_AUTO_TEST_CASE(failure_at_every_position) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    runner r{c, table};
    for (int k = 0; k < 6; ++k)
      for (int catch_level = 0; catch_level < 4; ++catch_level)  // 0: nobody catches
        for (bool last_read : {false, true})
          BOOST_TEST_CONTEXT("statement " << k << " fails, caught at level " << catch_level
                                          << (last_read ? ", read at the end" : "")) {
            auto stmt = [&](runner& x, int i) {
              if (i == k)
                x.insert(100);  // exists already: duplicate key
              else
                x.insert(i);
            };
            auto level = [&](runner& x, int lvl, const std::function<void()>& body) {
              auto scope = [&] { pqscope::atomic(x.conn(), [&] { body(); }); };
              if (catch_level == lvl)
                x.guarded(("level " + std::to_string(lvl)).c_str(), scope);
              else
                scope();
            };
            const auto d = same_both_ways(r, [&](runner& x) {
              x.conn().execute("INSERT INTO " + table.name() + " (id) VALUES (100)");
              stmt(x, 0);
              level(x, 1, [&] {
                stmt(x, 1);
                level(x, 2, [&] {
                  stmt(x, 2);
                  level(x, 3, [&] {
                    stmt(x, 3);
                    stmt(x, 4);
                  });
                });
                stmt(x, 5);
              });
              if (last_read) x.read();
            });
            BOOST_TEST(d.replays == 1u);  // the failure is always among the statements sent
          }
  });
}

// Round trips of a few shapes, and that nothing fails silently: a batched attempt
// of N writes at depth d is one round trip and commits every row.
BOOST_AUTO_TEST_CASE(writes_at_any_depth_are_one_round_trip) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    runner r{c, table};
    for (int depth : {1, 2, 5, 10})
      for (int n : {1, 3, 10}) BOOST_TEST_CONTEXT("depth " << depth << ", " << n << " statement(s)") {
          std::function<void(runner&, int)> nest = [&](runner& x, int left) {
            if (left == 1) {
              for (int i = 0; i < n; ++i) x.insert(i);
              return;
            }
            pqscope::atomic(x.conn(), [&] { nest(x, left - 1); });
          };
          const auto d = same_both_ways(r, [&](runner& x) { nest(x, depth); });
          BOOST_TEST(d.round_trips == 1u);
          BOOST_TEST(d.replays == 0u);
          BOOST_TEST(committed_ids(table) == [&] {
            std::string s;
            for (int i = 0; i < n; ++i) s += (s.empty() ? "" : ",") + std::to_string(i);
            return s;
          }());
        }
  });
}

// The function catches batch_failed thrown by a send and carries on: atomic()
// still discards the attempt and runs the function again, where the failing
// statement throws where it ran.
BOOST_AUTO_TEST_CASE(catching_a_failed_send_does_not_save_the_attempt) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    int calls = 0;
    std::vector<std::string> seen;
    pqscope::transaction_options o;
    o.batch = true;
    auto fn = [&] {
      ++calls;
      c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
      c.execute("INSERT INTO " + table.name() + " (id) VALUES (2)");
      try {
        pqscope::atomic(c, [&] { c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)"); });  // duplicate
        c.flush();
      } catch (const pqscope::error&) {
        seen.push_back(category(std::current_exception()));
      }
    };
    pqtest::empty(table);
    BOOST_CHECK_NO_THROW(pqscope::atomic(c, o, fn));
    BOOST_TEST(calls == 2);
    BOOST_TEST(seen.size() == 2u);
    if (seen.size() == 2) {
      BOOST_TEST(seen[0].find("batch_failed") == 0u);  // the batched attempt, from flush()
      BOOST_TEST(seen[1] == "unique_violation");      // the replay, at the statement
    }
    BOOST_TEST(committed_ids(table) == "1,2");
    BOOST_TEST(c.stats().replays == 1u);
  });
}

// flush() sends what is queued: a transaction-level advisory lock is held once it
// returns, and not before (a second session can still take it).
BOOST_AUTO_TEST_CASE(flush_runs_what_is_queued_now) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    pqscope::connection other{pqtest::env("PQSCOPE_TEST_DIRECT")};
    const long key = 424242;
    auto free_elsewhere = [&] {
      return pqscope::atomic(other, [&] { return other.query_value<bool>("SELECT pg_try_advisory_xact_lock($1)", key); });
    };
    pqscope::transaction_options o;
    o.batch = true;
    pqscope::atomic(c, o, [&] {
      c.execute("SELECT pg_advisory_xact_lock($1)", key);
      BOOST_TEST(free_elsewhere());  // queued, not yet run
      const auto trips = c.stats().round_trips;
      c.flush();
      BOOST_TEST(c.stats().round_trips == trips + 1);
      BOOST_TEST(!free_elsewhere());  // held now
      c.flush();                      // nothing queued: nothing sent
      BOOST_TEST(c.stats().round_trips == trips + 1);
    });
    BOOST_TEST(free_elsewhere());
  });
}

// A result is filled on first use; reading it sends everything queued before it.
BOOST_AUTO_TEST_CASE(results_are_filled_on_first_use) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    pqtest::empty(table);
    pqscope::transaction_options o;
    o.batch = true;
    const auto start = c.stats().round_trips;
    const auto kept = pqscope::atomic(c, o, [&] {
      auto a = c.execute("INSERT INTO " + table.name() + " (id) VALUES (1), (2) RETURNING id");
      auto b = c.execute("UPDATE " + table.name() + " SET v = 'x' WHERE id = 1");
      BOOST_TEST(c.stats().round_trips == start);  // nothing sent yet
      BOOST_TEST(b.affected_rows() == 1u);          // sends a and b
      BOOST_TEST(c.stats().round_trips == start + 1);
      BOOST_TEST(a.size() == 2u);  // already here: no round trip
      BOOST_TEST(a[1][0].as<int>() == 2);
      BOOST_TEST(b.command() == "UPDATE 1");
      BOOST_TEST(c.stats().round_trips == start + 1);
      return c.execute("INSERT INTO " + table.name() + " (id) VALUES (3)");  // unread: goes out with the COMMIT
    });
    BOOST_TEST(c.stats().round_trips == start + 2);
    BOOST_TEST(kept.command() == "INSERT 0 1");
    BOOST_TEST(committed_ids(table) == "1,2,3");
  });
}

// The connection uses a statement's slot again once no result refers to it: results
// kept (read or not, copied or not) across many later statements keep their answers,
// batched and unbatched, and so do those of statements that failed.
BOOST_AUTO_TEST_CASE(kept_results_survive_later_statements) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    for (const bool batch : {false, true}) {
      BOOST_TEST_CONTEXT("batch " << batch) {
        pqscope::transaction_options o;
        o.batch = batch;
        std::vector<std::pair<int, pqscope::result>> kept;
        pqscope::atomic(c, o, [&] {
          kept.clear();
          for (int i = 0; i < 120; ++i) {
            pqscope::result r = c.execute("SELECT $1::int", i);
            if (i % 3 == 0) kept.emplace_back(i, r);
            if (i % 9 == 0) kept.emplace_back(i, r);  // a second copy of the same answer
            if (i % 5 == 0) BOOST_TEST(r[0][0].as<int>() == i);  // read now: sends what is queued
            if (i % 40 == 39) c.flush();
          }
        });
        BOOST_TEST(kept.size() == 54u);
        for (const auto& [i, r] : kept) BOOST_TEST(r[0][0].as<int>() == i);
        // Outside any scope, one statement at a time.
        kept.clear();
        for (int i = 0; i < 40; ++i) {
          pqscope::result r = c.execute("SELECT $1::int", i);
          if (i % 2 == 0) kept.emplace_back(i, std::move(r));
        }
        for (const auto& [i, r] : kept) BOOST_TEST(r[0][0].as<int>() == i);
      }
    }
  });
}

// A queued statement keeps its own copy of its text and values: the caller's
// buffers may change before it is sent. Short texts (kept inside the statement),
// long ones, more parameters than are kept inline, NULLs.
BOOST_AUTO_TEST_CASE(queued_statements_own_their_text_and_values) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    for (const bool batch : {false, true}) {
      BOOST_TEST_CONTEXT("batch " << batch) {
        pqscope::transaction_options o;
        o.batch = batch;
        std::vector<pqscope::result> rs;
        const auto start = c.stats().round_trips;
        pqscope::atomic(c, o, [&] {
          rs.clear();
          std::string sql = "SELECT $1";
          std::string v = "a";
          rs.push_back(c.execute(sql, v));
          sql.assign("SELECT $1::text || '-' || coalesce($2::text, 'null')");
          v.assign(40, 'b');
          std::optional<std::string> none;
          rs.push_back(c.execute(sql, v, none));
          sql.assign("SELECT concat_ws(',', $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, "
                     "$8::text, $9::text, $10::text)");
          std::vector<std::string> p;
          for (int i = 1; i <= 10; ++i) p.push_back(std::string(static_cast<std::size_t>(i), 'x') + std::to_string(i));
          rs.push_back(c.execute(sql, p[0], p[1], none, p[3], 5, p[5], std::string(), p[7], 9.5, p[9]));
          // Text and value filling a queued statement's own buffer (120 bytes with their
          // NULs) to one byte short of it, exactly, one byte past, and a short text with
          // a value far past it.
          sql.assign("SELECT $1::text");
          for (std::size_t total : {119u, 120u, 121u, 400u}) {
            v.assign(total - (sql.size() + 1) - 1, 'e');
            rs.push_back(c.execute(sql, v));
          }
          // Everything the statements pointed into changes before they are sent.
          sql.assign(sql.size(), '?');
          v.assign(v.size(), '?');
          for (std::string& x : p) x.assign(x.size(), '?');
        });
        BOOST_TEST(c.stats().round_trips == start + (batch ? 1u : 8u));
        BOOST_TEST(rs.at(0)[0][0].as<std::string>() == "a");
        BOOST_TEST(rs.at(1)[0][0].as<std::string>() == std::string(40, 'b') + "-null");
        BOOST_TEST(rs.at(2)[0][0].as<std::string>() ==
                   "x1,xx2,xxxx4,5,xxxxxx6,,xxxxxxxx8,9.5,xxxxxxxxxx10");
        for (std::size_t k = 0; k < 3; ++k)
          BOOST_TEST(rs.at(3 + k)[0][0].as<std::string>() == std::string(119 + k - 17, 'e'));
        BOOST_TEST(rs.at(6)[0][0].as<std::string>() == std::string(400 - 17, 'e'));
      }
    }
  });
}

// A serialization failure in a batched attempt is retried batched; without
// retries left, the attempt is replayed unbatched.
BOOST_AUTO_TEST_CASE(conflicts_retry_batched) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    for (int retries : {0, 1}) BOOST_TEST_CONTEXT("retries " << retries) {
        pqscope::connection c{t.conninfo};
        pqtest::empty(table);
        int calls = 0;
        pqscope::transaction_options o;
        o.batch = true;
        o.retries = retries;
        o.retry_base_delay = std::chrono::milliseconds(1);
        pqscope::atomic(c, o, [&] {
          if (++calls == 1)
            c.execute("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$");
          c.execute("INSERT INTO " + table.name() + " (id) VALUES ($1)", calls);
        });
        BOOST_TEST(calls == 2);
        BOOST_TEST(committed_ids(table) == "2");
        BOOST_TEST(c.stats().batched_attempts == (retries == 1 ? 2u : 1u));
        BOOST_TEST(c.stats().replays == (retries == 1 ? 0u : 1u));
      }
  });
}

// Each statement is reported once its answer arrives, with its attempt.
BOOST_AUTO_TEST_CASE(observer_sees_attempts_apart) {
  pqtest::scratch_table table;
  for_each_target([&](const pqtest::target& t) {
    std::vector<std::string> events;
    pqscope::connection_options co;
    co.observer = [&](const pqscope::statement_event& e) {
      events.push_back(std::to_string(e.attempt) + (e.batched ? "b " : "u ") + std::string(e.sql.substr(0, 6)) +
                       (e.error != nullptr ? " error" : ""));
    };
    pqscope::connection c{t.conninfo, co};
    pqtest::empty(table);
    c.execute("INSERT INTO " + table.name() + " (id) VALUES (7)");
    events.clear();
    pqscope::transaction_options o;
    o.batch = true;
    int calls = 0;
    pqscope::atomic(c, o, [&] {
      c.execute("SELECT 1");
      if (++calls == 1) BOOST_TEST(events.empty());  // queued: no answer yet
      try {
        pqscope::atomic(c, [&] { c.execute("INSERT INTO " + table.name() + " (id) VALUES (7)"); });
      } catch (const pqscope::unique_violation&) {
      }
    });
    const std::vector<std::string> want = {"0b SELECT", "0b INSERT error", "1u SELECT", "1u INSERT error"};
    BOOST_TEST(events == want, boost::test_tools::per_element());
  });
}

// What a transaction object or a nested scope does with batch.
BOOST_AUTO_TEST_CASE(where_batch_applies) {
  for_each_target([&](const pqtest::target& t) {
    pqscope::connection c{t.conninfo};
    pqscope::transaction_options o;
    o.batch = true;
    BOOST_CHECK_THROW(pqscope::transaction(c, o), pqscope::usage_error);
    BOOST_TEST(c.depth() == 0u);
    // Nested in an unbatched transaction, batch is ignored: statements go out at once.
    pqscope::atomic(c, [&] {
      pqscope::atomic(c, o, [&] {
        const auto trips = c.stats().round_trips;
        c.execute("SELECT 1");
        BOOST_TEST(c.stats().round_trips == trips + 1);
      });
    });
    BOOST_TEST(c.stats().batched_attempts == 0u);
  });
}

// A lost connection is never replayed: the batch that carried COMMIT is in doubt.
// Another session terminates the backend while a statement of the batch sleeps.
BOOST_AUTO_TEST_CASE(connection_loss_is_not_replayed) {
  pqtest::scratch_table table;
  const std::string direct = pqtest::env("PQSCOPE_TEST_DIRECT");
  for (bool read_first : {false, true}) BOOST_TEST_CONTEXT((read_first ? "lost at a read" : "lost with COMMIT")) {
      pqscope::connection c{direct};
      pqtest::empty(table);
      const int pid = c.query_value<int>("SELECT pg_backend_pid()");
      std::thread killer([&] {
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        pqscope::connection k{direct};
        (void)k.query_value<bool>("SELECT pg_terminate_backend($1)", pid);
      });
      int calls = 0;
      pqscope::transaction_options o;
      o.batch = true;
      o.resolve_in_doubt = true;
      auto fn = [&] {
        ++calls;
        c.execute("INSERT INTO " + table.name() + " (id) VALUES (1)");
        auto r = c.execute("SELECT pg_sleep(5)");
        if (read_first) (void)r.size();
      };
      std::string what;
      try {
        pqscope::atomic(c, o, fn);
        what = "returned";
      } catch (const pqscope::in_doubt_error&) {
        what = "in_doubt_error";
      } catch (const pqscope::connection_error&) {
        what = "connection_error";
      } catch (const std::exception& e) {
        what = e.what();
      }
      killer.join();
      // Without the transaction id (its query was behind the sleep), nothing can settle it.
      BOOST_TEST(what == (read_first ? "connection_error" : "in_doubt_error"));
      BOOST_TEST(calls == 1);
      BOOST_TEST(c.stats().replays == 0u);
      BOOST_TEST(c.depth() == 0u);
      BOOST_TEST(committed_ids(table) == "");
      c.reconnect();
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    }
}
