// Model-based random testing of the scope semantics.
//
// A seeded generator builds random programs: nested scopes (transaction objects or
// atomic(), with or without a savepoint) that insert rows, run a failing statement,
// read the rows the transaction sees, register callbacks, catch or let through
// exceptions, and end by commit, rollback, destruction or a thrown exception. Each program runs against the library on a real
// server and against a small in-memory model of the expected semantics (Django's
// atomic). After every outermost scope the two must agree on the committed rows, the
// callbacks that fired, every exception caught on the way, and the session must be
// idle. A failing program is shrunk and printed.
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
  harness(const pqtest::target& t, const pqtest::scratch_table& table, bool batch)
      : t_(t), table_(table), batch_(batch) {
    conn_.emplace(t.conninfo);
    conn_->execute("INSERT INTO " + table_.name() + " VALUES (0)");
  }

  // Runs one program on both sides; returns a description of the mismatch, if any.
  std::optional<std::string> check(const scope_node& program) {
    base_ += 1000;
    observed real = real_runner(*conn_, table_.name(), base_, batch_).run(program);
    observed expected = model().run(program);
    std::ostringstream why;
    if (!(real == expected)) why << "library: " << real << "\n  model: " << expected;
    if (conn_->depth() != 0) why << "depth() is " << conn_->depth() << " after the outermost scope";
    if (PQtransactionStatus(conn_->native_handle()) != PQTRANS_IDLE) why << "the session is not idle";
    if (why.str().empty()) return std::nullopt;
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
  const pqtest::target& t_;
  const pqtest::scratch_table& table_;
  bool batch_;
  std::optional<pqscope::connection> conn_;
  int base_ = 0;
};

void run_seeds(const pqtest::target& t, std::uint64_t first_seed, long programs, double seconds, bool batch) {
  pqtest::scratch_table table("id int PRIMARY KEY");
  harness h(t, table, batch);
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
      os << "seed " << seed << " on " << t.name << (batch ? ", batched" : "")
         << ": library and model disagree\n  " << *why
         << "\nsmallest program that still disagrees:\n";
      print(os, *small, 0);
      os << "\n  " << h.check(*small).value_or("(no longer reproduces)");
      BOOST_FAIL(os.str());
    }
  }
  BOOST_TEST(n.programs > 0);
  const std::string name = t.name + (batch ? " batched" : "");
  std::cout << "model/" << name << ": " << n.programs << " random programs, " << n.scopes << " scopes, "
            << n.statements << " statements: all agreed with the model";
  if (batch) {
    // Both paths must really have been taken: attempts that went through batched,
    // and attempts voided by a failed send and run again.
    BOOST_TEST(h.stats().batched_attempts >= static_cast<std::uint64_t>(n.programs));
    BOOST_TEST(h.stats().replays > 0u);
    std::cout << " (" << h.stats().batched_attempts << " batched attempts, " << h.stats().replays << " replayed)";
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
