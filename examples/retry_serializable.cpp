// Retry under SERIALIZABLE: two connections produce a real serialization failure
// (write skew: two doctors each check that someone else is on call, then both leave),
// and atomic() with retries = 5 re-runs the whole function. The retried attempt sees
// the other's commit and decides differently; the failed attempt's on_commit never fires.
// Usage: retry_serializable APP_CONNINFO   (PgBouncer in transaction pooling, or PostgreSQL)
#include <pqscope/pqscope.hpp>

#include <iostream>
#include <string>
#include <vector>

namespace {

// Leaves the rota if someone else stays on call. Returns whether `doctor` left.
bool go_off_call(pqscope::connection& c, const std::string& doctor) {
  long on_call = c.query_value<long>("SELECT count(*) FROM retry_serializable_rota WHERE on_call");
  if (on_call < 2) return false;
  c.execute("UPDATE retry_serializable_rota SET on_call = false WHERE doctor = $1", doctor);
  return true;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: retry_serializable APP_CONNINFO\n";
    return 2;
  }
  pqscope::database db{argv[1]};
  pqscope::connection alice = db.connect();
  pqscope::connection bob = db.connect();  // a second session: the concurrent client

  pqscope::atomic(alice, [&] {
    alice.set_local("client_min_messages", "warning");
    alice.execute("DROP TABLE IF EXISTS retry_serializable_rota");
    alice.execute("CREATE TABLE retry_serializable_rota(doctor text PRIMARY KEY, on_call bool NOT NULL)");
    alice.execute("INSERT INTO retry_serializable_rota VALUES ('alice', true), ('bob', true)");
  });

  pqscope::transaction_options o;
  o.isolation = pqscope::isolation::serializable;
  o.retries = 5;

  int attempts = 0;
  std::vector<std::string> fired;  // what the on_commit callbacks did
  bool left = pqscope::atomic(alice, o, [&](pqscope::connection& c) {
    const int attempt = ++attempts;
    c.on_commit([&fired, attempt] { fired.push_back("attempt " + std::to_string(attempt)); });
    long on_call = c.query_value<long>("SELECT count(*) FROM retry_serializable_rota WHERE on_call");
    std::cout << "attempt " << attempt << ": alice sees " << on_call << " doctor(s) on call\n";
    if (attempt == 1) {
      // Meanwhile bob runs the same check on his own connection and commits first.
      bool bob_left = pqscope::atomic(bob, o, [&](pqscope::connection& b) { return go_off_call(b, "bob"); });
      std::cout << "  meanwhile bob " << (bob_left ? "went off call and committed" : "stayed") << "\n";
    }
    if (on_call < 2) return false;
    // Under READ COMMITTED both would leave and nobody would be on call. SERIALIZABLE
    // fails this UPDATE (or the COMMIT) with 40001, and atomic() runs the function again.
    try {
      c.execute("UPDATE retry_serializable_rota SET on_call = false WHERE doctor = 'alice'");
    } catch (const pqscope::serialization_failure& e) {
      std::cout << "  alice's UPDATE failed: SQLSTATE " << e.sqlstate() << ", atomic() will retry\n";
      throw;  // let it leave the function: only the outermost atomic() can retry
    }
    return true;
  });

  long on_call = alice.query_value<long>("SELECT count(*) FROM retry_serializable_rota WHERE on_call");
  std::cout << "alice " << (left ? "went off call" : "stays on call") << "; on call now: " << on_call << "\n";
  std::cout << "on_commit callbacks fired: " << fired.size() << " (" << (fired.empty() ? "none" : fired.front())
            << "), attempts: " << attempts << "\n";
  alice.execute("DROP TABLE retry_serializable_rota");

  if (attempts < 2 || fired.size() != 1 || fired.front() != "attempt " + std::to_string(attempts) || on_call != 1) {
    std::cerr << "retry_serializable: expected a retry, one on_commit from the last attempt, one doctor on call\n";
    return 1;
  }
  std::cout << "serialization failure retried: " << attempts << " attempts, only the last one committed\n";
} catch (const pqscope::error& e) {
  std::cerr << "retry_serializable: " << e.what() << "\n";
  return 1;
}
