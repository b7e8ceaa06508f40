// Showcase: nested calls through PgBouncer, a rollback in the middle, and what the
// server sees in pg_stat_activity while a scope is open and after it ends.
// Usage: showcase APP_CONNINFO [OBSERVER_CONNINFO]
//   APP_CONNINFO       where the application connects (PgBouncer, transaction pooling)
//   OBSERVER_CONNINFO  a direct connection to PostgreSQL to look at pg_stat_activity
#include <pqscope/pqscope.hpp>

#include <iostream>
#include <string>

namespace {

pqscope::connection* observer = nullptr;

// What PostgreSQL shows for this application's session(s).
void show_activity(pqscope::connection& app, const char* when) {
  std::cout << "  pg_stat_activity " << when << ":";
  if (observer == nullptr) {
    std::cout << " (no observer connection given)\n";
    return;
  }
  auto r = observer->execute(
      "SELECT coalesce(state, '?'), count(*) FROM pg_stat_activity "
      "WHERE application_name = $1 AND pid <> pg_backend_pid() GROUP BY 1 ORDER BY 1",
      app.application_name());
  if (r.empty()) std::cout << " no server session for us (PgBouncer gave the server connection back)";
  for (const auto& row : r) {
    auto [state, n] = row.as<std::string, long>();
    std::cout << " " << n << " x '" << state << "'";
  }
  std::cout << "\n";
}

void deposit(pqscope::connection& c, int id, long cents) {
  pqscope::transaction tx{c};
  std::cout << "    deposit(" << id << ", " << cents << ") at depth " << c.depth()
            << (tx.is_outermost() ? " (transaction)\n" : " (savepoint)\n");
  c.execute("UPDATE showcase_account SET cents = cents + $1 WHERE id = $2", cents, id);
  tx.commit();
}

void transfer(pqscope::connection& c, int from, int to, long cents) {
  pqscope::transaction tx{c};
  std::cout << "  transfer(" << from << " -> " << to << ", " << cents << ") at depth " << c.depth() << "\n";
  deposit(c, from, -cents);
  deposit(c, to, cents);
  tx.commit();
}

void print_accounts(pqscope::connection& c) {
  for (const auto& row : c.execute("SELECT id, cents FROM showcase_account ORDER BY id")) {
    auto [id, cents] = row.as<int, long>();
    std::cout << "  account " << id << ": " << cents << " cents\n";
  }
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: showcase APP_CONNINFO [OBSERVER_CONNINFO]\n";
    return 2;
  }
  pqscope::database db{argv[1]};
  pqscope::connection conn = db.connect();
  std::optional<pqscope::connection> direct;
  if (argc > 2) observer = &direct.emplace(argv[2]);
  std::cout << "connected as application_name '" << conn.application_name() << "'\n";

  pqscope::atomic(conn, [&] {
    // A transaction-scoped setting: behind PgBouncer a session-level SET would leak
    // to whichever client gets this server connection next.
    conn.set_local("client_min_messages", "warning");
    conn.execute("DROP TABLE IF EXISTS showcase_account");
    conn.execute("CREATE TABLE showcase_account(id int PRIMARY KEY, cents bigint NOT NULL CHECK (cents >= 0))");
    conn.execute("INSERT INTO showcase_account VALUES (1, 500), (2, 0), (3, 0)");
  });

  std::cout << "\n1. Nested calls: transfer() opens a scope and calls deposit(), which opens its own.\n";
  transfer(conn, 1, 2, 200);
  print_accounts(conn);

  std::cout << "\n2. A rollback in the middle: the second transfer overdraws account 1, its savepoint\n"
               "   rolls back, and the enclosing transaction carries on and commits the rest.\n";
  pqscope::atomic(conn, [&](pqscope::connection& c) {
    transfer(c, 1, 3, 100);
    try {
      transfer(c, 1, 2, 1000);  // violates CHECK (cents >= 0)
    } catch (const pqscope::check_violation& e) {
      std::cout << "  caught check_violation (SQLSTATE " << e.sqlstate() << "): only that transfer is undone\n";
    }
    // The ROLLBACK TO SAVEPOINT rides with the next statement, so until then the server
    // shows the transaction as aborted; the open transaction pins a server connection.
    std::cout << "  the ROLLBACK TO SAVEPOINT has not been sent yet: it rides with the next statement (or the\n"
                 "  COMMIT), so for now the server still shows the transaction as aborted. It carries on:\n";
    show_activity(c, "inside the open transaction");
  });
  print_accounts(conn);
  show_activity(conn, "after the outermost scope ended");

  std::cout << "\n3. Outside any scope every statement commits at once (autocommit):\n";
  conn.execute("UPDATE showcase_account SET cents = cents + 1 WHERE id = 3");
  std::cout << "  in_transaction() = " << std::boolalpha << conn.in_transaction() << "\n";
  show_activity(conn, "after an autocommit statement");

  std::cout << "\n4. Batched (transaction_options::batch): nothing is read, so BEGIN, both transfers and\n"
               "   COMMIT travel together, and the server never waits for the client inside the transaction.\n";
  pqscope::transaction_options batched;
  batched.batch = true;
  const auto trips = conn.stats().round_trips;
  pqscope::atomic(conn, batched, [&](pqscope::connection& c) {
    transfer(c, 2, 3, 50);
    transfer(c, 3, 1, 25);
  });
  std::cout << "  round trips for that transaction: " << conn.stats().round_trips - trips << "\n";
  print_accounts(conn);

  const auto& s = conn.stats();
  std::cout << "\nround trips: " << s.round_trips << ", statements: " << s.statements
            << ", transactions committed: " << s.transactions_committed
            << ", rolled back: " << s.transactions_rolled_back << ", savepoints: " << s.savepoints << "\n";
  conn.execute("DROP TABLE showcase_account");
} catch (const pqscope::error& e) {
  std::cerr << "showcase: " << e.what() << "\n";
  return 1;
}
