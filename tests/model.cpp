// Model-based random testing of the scope semantics.
//
// A seeded generator builds random programs: nested scopes (transaction objects or
// atomic(), with or without a savepoint) that insert rows, run a failing statement,
// read the rows the transaction sees, register callbacks, catch or let through
// exceptions, and end by commit, rollback, destruction or a thrown exception. Each program runs against the library on a real
// server and against a small in-memory model of the expected semantics (Django's
// atomic). After every outermost scope the two must agree on the committed rows (as
// another session reads them), the callbacks that fired and every exception caught
// on the way; depth() must be 0, the session idle, and pg_stat_activity must show no
// session of the test idle in transaction. A failing program is shrunk (its options
// too) and printed with its seed and options.
//
// The outermost scope's transaction_options are drawn from the seed as well:
// isolation (all four), read_only (mostly where nothing is written; where something
// is, every write fails with read_only_sql_transaction, as the model says),
// deferrable, resolve_in_doubt, statement_timeout / lock_timeout of 5 to 60 s (never
// reached), durable, savepoint_limit, and for an atomic() batch and retries. Some
// nested scopes repeat the outermost modes, set timeouts of their own, or ask for
// batching or retries (ignored inside). None of it may change the outcome.
//
// Every program also runs batched: the outermost scope is an atomic() with
// transaction_options::batch, and must give exactly what the model says an
// unbatched run gives (a voided attempt's observations are discarded when the
// function starts again, as its effects are).
//
// PQSCOPE_MODEL_PROGRAMS sets the programs per target (default 3000);
// PQSCOPE_FUZZ_SECONDS runs fresh random seeds for that long instead (scripts/dev.sh fuzz).

#define BOOST_TEST_MODULE model
#include <boost/test/unit_test.hpp>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "support/model.hpp"
#include "support/servers.hpp"

namespace {

using namespace pqtest::programs;  // NOLINT: the program vocabulary

// ---- driving ------------------------------------------------------------------------

class harness {
 public:
  harness(const pqtest::target& t, const pqtest::scratch_table& table, bool batch,
          pqscope::connection_options options = {})
      : t_(t), table_(table), batch_(batch), options_(std::move(options)), app_(pqtest::unique_name("pqscope_model")) {
    connect();
    conn_->execute("INSERT INTO " + table_.name() + " VALUES (0)");
    // The check after each program must be able to fail: inside a scope, the
    // observer sees this session idle in transaction (also through the poolers).
    pqscope::transaction tx{*conn_};
    conn_->execute("SELECT 1");
    const std::string seen = look(pqtest::shared_observer(), app_, app_).in_transaction;
    tx.rollback();
    BOOST_REQUIRE_MESSAGE(!seen.empty(), "the observer does not see " << app_ << " inside a transaction on " << t.name);
  }

  // Runs one program on both sides; returns a description of the mismatch, if any.
  // The program's options take no part in the model, except read_only; the committed
  // rows, depth() and the session's state must not depend on them.
  std::optional<std::string> check(const scope_node& program) {
    base_ += 1000;
    std::ostringstream why;
    observed real = real_runner(*conn_, table_.name(), base_, batch_).run(program);
    // The session first, as the program left it.
    if (conn_->depth() != 0) why << "depth() is " << conn_->depth() << " after the outermost scope\n  ";
    if (PQtransactionStatus(conn_->native_handle()) != PQTRANS_IDLE) why << "the session is not idle\n  ";
    seen_from_outside seen = look_after(pqtest::shared_observer(), app_, app_, {table_.name()}, base_);
    if (!seen.in_transaction.empty()) why << "pg_stat_activity: " << seen.in_transaction << "\n  ";
    real.committed = std::move(seen.committed[0]);
    const observed expected = model().run(program);
    if (!(real == expected)) why << "library: " << real << "\n  model: " << expected << "\n  ";
    if (why.str().empty()) return std::nullopt;
    // The next program (or shrinking step) starts on a fresh session, not on what this one left.
    connect();
    return why.str();
  }

  [[nodiscard]] const pqscope::connection_stats& stats() const { return conn_->stats(); }

  // Greedy shrinking: drop ops (and unwrap nested scopes) while the mismatch stays.
  std::shared_ptr<scope_node> shrink(std::shared_ptr<scope_node> program) {
    for (bool progress = true; progress;) {
      progress = false;
      for (auto& candidate : smaller(*program)) {
        if (check(*candidate)) {
          program = candidate;
          progress = true;
          break;
        }
      }
    }
    return program;
  }

 private:
  void connect() {
    conn_.reset();
    conn_.emplace(pqtest::with_app_name(t_, app_), options_);
  }

  const pqtest::target& t_;
  const pqtest::scratch_table& table_;
  bool batch_;
  pqscope::connection_options options_;
  std::string app_;  // this harness's application_name, for pg_stat_activity
  std::optional<pqscope::connection> conn_;
  int base_ = 0;
};

void run_seeds(const pqtest::target& t, std::uint64_t first_seed, long programs, double seconds, bool batch,
               const std::optional<pqscope::connection_options>& preparing = std::nullopt) {
  pqtest::scratch_table table("id int PRIMARY KEY");
  harness h(t, table, batch, preparing.value_or(pqscope::connection_options{}));
  counts n;
  const auto start = std::chrono::steady_clock::now();
  for (std::uint64_t seed = first_seed;; ++seed) {
    if (seconds > 0) {
      if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds) break;
    } else if (n.programs >= programs) {
      break;
    }
    auto program = generator(seed).program();
    if (batch) program = for_batch(program);
    ++n.programs;
    count(*program, n);
    if (auto why = h.check(*program)) {
      auto small = h.shrink(program);
      std::ostringstream os;
      const std::string opts = describe(options_of(*program, batch));
      os << "seed " << seed << " on " << t.name << (batch ? ", batched" : "") << ", outermost options {"
         << opts << "}: library and model disagree\n  " << *why
         << "\nsmallest program that still disagrees:\n";
      print(os, *small, 0);
      os << "\n  " << h.check(*small).value_or("(no longer reproduces)");
      BOOST_FAIL(os.str());
    }
  }
  BOOST_TEST(n.programs > 0);
  const std::string name = t.name + (batch ? " batched" : "") + (preparing ? " prepared" : "");
  std::cout << "model/" << name << ": " << n.programs << " random programs, " << n.scopes << " scopes, "
            << n.statements << " statements: all agreed with the model; " << option_summary(n);
  if (batch) {
    // Both paths must really have been taken: attempts that went through batched,
    // and attempts voided by a failed send and run again.
    BOOST_TEST(h.stats().batched_attempts >= static_cast<std::uint64_t>(n.programs));
    BOOST_TEST(h.stats().replays > 0u);
    std::cout << " (" << h.stats().batched_attempts << " batched attempts, " << h.stats().replays << " replayed)";
  }
  if (preparing) {
    // The statements really were prepared and bound by name (the harness reconnects
    // only after a mismatch, so its stats cover the whole run).
    BOOST_TEST(h.stats().prepared > 0u);
    std::cout << " (" << h.stats().prepared << " statements prepared)";
  }
  std::cout << "\n";
}

}  // namespace

// Fixed seeds: the same programs on every run, so a failure in CI reproduces.
BOOST_AUTO_TEST_CASE(fixed_seeds_agree_with_the_model) {
  const long programs = env_long("PQSCOPE_MODEL_PROGRAMS", 3000);
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) { run_seeds(t, 1, programs, 0, false); }
  }
}

// The same programs with the outermost scope batched.
BOOST_AUTO_TEST_CASE(fixed_seeds_batched_agree_with_the_model) {
  const long programs = env_long("PQSCOPE_MODEL_PROGRAMS", 3000);
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) { run_seeds(t, 1, programs, 0, true); }
  }
}

// The same programs with prepare::automatic, where the route keeps prepared
// statements: directly, through PgBouncer 1.24 and through Pgpool-II. Fewer per
// target: the texts repeat from the first program on.
BOOST_AUTO_TEST_CASE(fixed_seeds_prepared_agree_with_the_model) {
  const long programs = env_long("PQSCOPE_MODEL_PROGRAMS", 3000) / 3;
  for (const auto& t : pqtest::targets()) {
    const auto preparing = pqtest::preparing_options(t);
    if (!preparing) continue;
    BOOST_TEST_CONTEXT(t.name) {
      run_seeds(t, 1, programs, 0, false, preparing);
      run_seeds(t, 1, programs, 0, true, preparing);
    }
  }
}

// Fresh seeds for as long as PQSCOPE_FUZZ_SECONDS says (scripts/dev.sh fuzz); skipped
// without it.
BOOST_AUTO_TEST_CASE(random_seeds_for_a_while,
                     *boost::unit_test::precondition([](boost::unit_test::test_unit_id) {
                       return env_long("PQSCOPE_FUZZ_SECONDS", 0) > 0;
                     })) {
  const long seconds = env_long("PQSCOPE_FUZZ_SECONDS", 0);
  const std::uint64_t seed = std::random_device{}();
  std::cout << "fuzzing from seed " << seed << " for " << seconds << " s per target\n";
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      run_seeds(t, seed, 0, static_cast<double>(seconds) / 2, false);
      run_seeds(t, seed, 0, static_cast<double>(seconds) / 2, true);
    }
  }
}
