// The quick start written against libpqxx 6, for the compile-cost comparison
// (scripts/compile_cost.sh). libpqxx cannot nest a second pqxx::work, so the nested
// scope is a subtransaction given its parent, as libpqxx requires.
#include <pqxx/pqxx>

#include <iostream>

void deposit(pqxx::dbtransaction& parent, int id, long cents) {
  pqxx::subtransaction tx{parent};
  tx.exec_params("UPDATE account SET cents = cents + $1 WHERE id = $2", cents, id);
  tx.commit();
}

void transfer(pqxx::connection& c, int from, int to, long cents) {
  pqxx::work tx{c};
  deposit(tx, from, -cents);
  deposit(tx, to, cents);
  tx.commit();
}

int main(int argc, char** argv) try {
  pqxx::connection conn{argc > 1 ? argv[1] : "postgresql://app@127.0.0.1:6432/app"};
  {
    pqxx::nontransaction n{conn};
    n.exec("CREATE TABLE IF NOT EXISTS account(id int PRIMARY KEY, cents bigint)");
    n.exec("INSERT INTO account VALUES (1, 1000), (2, 0) ON CONFLICT (id) DO UPDATE SET cents = EXCLUDED.cents");
  }
  transfer(conn, 1, 2, 100);
  long total = 0;
  {
    pqxx::work w{conn};
    total = w.exec1("SELECT sum(cents) FROM account")[0].as<long>();
    w.commit();
  }
  for (int attempt = 0; attempt < 5; ++attempt) {
    try {
      pqxx::transaction<pqxx::serializable> w{conn};
      deposit(w, 1, -100);
      deposit(w, 2, 100);
      w.commit();
      break;
    } catch (const pqxx::serialization_failure&) {
    }
  }
  transfer(conn, 1, 2, 100);
  pqxx::nontransaction n{conn};
  for (const auto& row : n.exec("SELECT id, cents FROM account ORDER BY id")) {
    std::cout << "account " << row[0].as<int>() << ": " << row[1].as<long>() << " cents\n";
  }
  std::cout << "total: " << total << " cents\n";
} catch (const std::exception& e) {
  std::cerr << "quickstart_pqxx: " << e.what() << "\n";
  return 1;
}
