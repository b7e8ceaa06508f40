// Bank transfer: transfer() and deposit() each open their own scope and nest freely.
// A batch of transfers runs in one transaction; the one that overdraws is undone by
// its savepoint, the batch carries on, and the total amount of money is conserved.
// Usage: bank_transfer APP_CONNINFO   (PgBouncer in transaction pooling, or PostgreSQL)
#include <pqscope/pqscope.hpp>

#include <iostream>

namespace {

void deposit(pqscope::connection& c, int id, long cents) {
  pqscope::transaction tx{c};  // a savepoint when called from transfer()
  c.execute("UPDATE bank_transfer_account SET cents = cents + $1 WHERE id = $2", cents, id);
  tx.commit();
}

void transfer(pqscope::connection& c, int from, int to, long cents) {
  pqscope::transaction tx{c};
  deposit(c, to, cents);
  deposit(c, from, -cents);  // CHECK (cents >= 0) fails here on an overdraft
  tx.commit();
}

long total(pqscope::connection& c) {
  return c.query_value<long>("SELECT sum(cents) FROM bank_transfer_account");
}

void print_accounts(pqscope::connection& c) {
  for (const auto& row : c.execute("SELECT id, cents FROM bank_transfer_account ORDER BY id")) {
    auto [id, cents] = row.as<int, long>();
    std::cout << "  account " << id << ": " << cents << " cents\n";
  }
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: bank_transfer APP_CONNINFO\n";
    return 2;
  }
  pqscope::database db{argv[1]};
  pqscope::connection conn = db.connect();

  pqscope::atomic(conn, [&] {
    conn.set_local("client_min_messages", "warning");  // no NOTICE for DROP ... IF EXISTS
    conn.execute("DROP TABLE IF EXISTS bank_transfer_account");
    conn.execute("CREATE TABLE bank_transfer_account(id int PRIMARY KEY, cents bigint NOT NULL CHECK (cents >= 0))");
    conn.execute("INSERT INTO bank_transfer_account VALUES (1, 1000), (2, 500), (3, 0)");
  });
  const long before = total(conn);
  std::cout << "before the batch (total " << before << " cents):\n";
  print_accounts(conn);

  struct payment { int from, to; long cents; };
  const payment batch[] = {{1, 3, 300}, {2, 3, 200}, {3, 2, 5000}, {1, 2, 100}};

  // One transaction for the batch; each transfer is a savepoint inside it.
  int done = 0, failed = 0;
  pqscope::atomic(conn, [&](pqscope::connection& c) {
    for (const auto& m : batch) {
      try {
        transfer(c, m.from, m.to, m.cents);
        std::cout << "  transfer " << m.from << " -> " << m.to << " of " << m.cents << ": done\n";
        ++done;
      } catch (const pqscope::check_violation& e) {
        // deposit(to) had already run: the transfer's savepoint undoes it too.
        std::cout << "  transfer " << m.from << " -> " << m.to << " of " << m.cents
                  << ": refused (SQLSTATE " << e.sqlstate() << "), only this transfer is undone\n";
        ++failed;
      }
    }
  });

  const long after = total(conn);
  std::cout << "after the batch (" << done << " done, " << failed << " refused):\n";
  print_accounts(conn);
  conn.execute("DROP TABLE bank_transfer_account");

  if (after != before) {
    std::cerr << "bank_transfer: total changed from " << before << " to " << after << "\n";
    return 1;
  }
  std::cout << "total conserved: " << after << " cents\n";
} catch (const pqscope::error& e) {
  std::cerr << "bank_transfer: " << e.what() << "\n";
  return 1;
}
