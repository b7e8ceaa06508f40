// Quick start: nested transaction scopes on an autocommit connection.
// Usage: quickstart [CONNINFO]   (default: postgresql://app@127.0.0.1:6432/app)
#include <pqscope/pqscope.hpp>

#include <iostream>

void deposit(pqscope::connection& c, int id, long cents) {
  pqscope::transaction tx{c};  // outermost: BEGIN; inside another scope: SAVEPOINT
  c.execute("UPDATE account SET cents = cents + $1 WHERE id = $2", cents, id);
  tx.commit();                 // outermost: COMMIT; inner: RELEASE SAVEPOINT
}                              // destroyed without commit(): rolled back, never throws

void transfer(pqscope::connection& c, int from, int to, long cents) {
  pqscope::transaction tx{c};
  deposit(c, from, -cents);    // nests freely: these scopes become savepoints
  deposit(c, to, cents);
  tx.commit();
}

int main(int argc, char** argv) try {
  pqscope::database db{argc > 1 ? argv[1] : "postgresql://app@127.0.0.1:6432/app"};
  pqscope::connection conn = db.connect();  // autocommit outside any scope

  conn.execute("CREATE TABLE IF NOT EXISTS account(id int PRIMARY KEY, cents bigint)");
  conn.execute("INSERT INTO account VALUES (1, 1000), (2, 0) ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents");

  transfer(conn, 1, 2, 100);

  // atomic(): commits when the function returns, rolls back when it throws.
  long total = pqscope::atomic(conn, [&] { return conn.query_value<long>("SELECT sum(cents) FROM account"); });

  // SERIALIZABLE with retries: the whole function re-runs after a serialization failure.
  pqscope::transaction_options o;
  o.isolation = pqscope::isolation::serializable;
  o.retries = 5;
  pqscope::atomic(conn, o, [&](pqscope::connection& c) { transfer(c, 1, 2, 100); });

  // transactional(): the same, for every call of a function.
  auto transfer_tx = pqscope::transactional(transfer);
  transfer_tx(conn, 1, 2, 100);

  for (const auto& row : conn.execute("SELECT id, cents FROM account ORDER BY id")) {
    auto [id, cents] = row.as<int, long>();
    std::cout << "account " << id << ": " << cents << " cents\n";
  }
  std::cout << "total: " << total << " cents, open scopes: " << conn.depth() << "\n";
} catch (const pqscope::error& e) {
  std::cerr << "quickstart: " << e.what() << "\n";
  return 1;
}
