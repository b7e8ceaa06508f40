// Statement log: connection_options::observer is called after every statement the
// application runs. This one logs it indented by scope depth, with its duration, its
// rows and its error, around a nested transfer in which one statement fails.
// Usage: statement_log APP_CONNINFO   (PgBouncer in transaction pooling, or PostgreSQL)
#include <pqscope/pqscope.hpp>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <string>

namespace {

struct log_totals {
  int statements = 0, failed = 0;
  std::size_t max_depth = 0;
} totals;

void log_statement(const pqscope::statement_event& ev) {
  ++totals.statements;
  totals.max_depth = std::max(totals.max_depth, ev.depth);
  char ms[32];
  std::snprintf(ms, sizeof ms, "%6.2f ms", static_cast<double>(ev.duration.count()) / 1000.0);
  std::cout << ms << "  " << std::string(2 * ev.depth, ' ') << ev.sql;
  if (ev.params > 0) std::cout << "  [" << ev.params << " param(s)]";
  if (ev.error == nullptr) {
    std::cout << "  -> " << ev.rows << " row(s)\n";
  } else {
    ++totals.failed;
    std::string what = ev.error->what();
    std::cout << "  -> FAILED: " << what.substr(0, what.find('\n')) << "\n";  // first line only
  }
}

void deposit(pqscope::connection& c, int id, long cents) {
  pqscope::atomic(c, [&] {
    c.execute("UPDATE statement_log_account SET cents = cents + $1 WHERE id = $2", cents, id);
  });
}

void transfer(pqscope::connection& c, int from, int to, long cents) {
  pqscope::atomic(c, [&] {
    c.execute("INSERT INTO statement_log_journal(from_id, to_id, cents) VALUES ($1, $2, $3)", from, to, cents);
    deposit(c, to, cents);
    deposit(c, from, -cents);
  });
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: statement_log APP_CONNINFO\n";
    return 2;
  }
  pqscope::connection_options options;
  options.observer = log_statement;
  pqscope::database db{argv[1], options};  // every connection from db logs
  pqscope::connection conn = db.connect();

  std::cout << "  duration  statement (indented by scope depth)\n";
  pqscope::atomic(conn, [&] {
    conn.set_local("client_min_messages", "warning");
    conn.execute("DROP TABLE IF EXISTS statement_log_account, statement_log_journal");
    conn.execute("CREATE TABLE statement_log_account(id int PRIMARY KEY, cents bigint NOT NULL CHECK (cents >= 0))");
    conn.execute("CREATE TABLE statement_log_journal(from_id int, to_id int, cents bigint)");
    conn.execute("INSERT INTO statement_log_account VALUES (1, 100), (2, 0)");
  });

  long entries = pqscope::atomic(conn, [&] {
    transfer(conn, 1, 2, 60);
    try {
      transfer(conn, 1, 2, 60);  // account 1 has only 40 left: the CHECK fails
    } catch (const pqscope::check_violation&) {
      // the second transfer's savepoint is rolled back; the first one stays
    }
    return conn.query_value<long>("SELECT count(*) FROM statement_log_journal");
  });

  long cents = conn.query_value<long>("SELECT cents FROM statement_log_account WHERE id = 2");
  conn.execute("DROP TABLE statement_log_account, statement_log_journal");
  if (entries != 1 || cents != 60 || totals.failed != 1) {
    std::cerr << "statement_log: expected one journal entry, account 2 at 60 cents, one failed statement\n";
    return 1;
  }
  const auto& s = conn.stats();
  // The observer sees the application's statements; BEGIN, SAVEPOINT and RELEASE rode with them.
  std::cout << "not logged: " << s.control_statements << " control statements (BEGIN, SAVEPOINT, RELEASE, COMMIT, "
            << "...); " << s.round_trips << " round trips in all\n";
  std::cout << "statement log: " << totals.statements << " statements, " << totals.failed
            << " failed, deepest scope " << totals.max_depth << "\n";
} catch (const pqscope::error& e) {
  std::cerr << "statement_log: " << e.what() << "\n";
  return 1;
}
