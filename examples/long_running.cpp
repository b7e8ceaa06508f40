// A long job in short transactions: 2,000 rows processed in batches of 200, each batch
// its own atomic(). Behind PgBouncer a transaction pins a server connection for as long
// as it is open, so a job never holds one huge transaction: every batch commits, and a
// job stopped halfway resumes where it left off (it only picks unprocessed rows).
// Usage: long_running APP_CONNINFO   (PgBouncer in transaction pooling, or PostgreSQL)
#include <pqscope/pqscope.hpp>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>

namespace {

constexpr int total_rows = 2000;
constexpr int batch_size = 200;

// One batch: lock the next unprocessed rows, compute in the application, write back.
std::size_t process_batch(pqscope::connection& c) {
  std::string ids = "{", fees = "{";
  auto rows = c.execute(
      "SELECT id, amount FROM long_running_payment WHERE fee IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
      batch_size);
  for (const auto& row : rows) {
    auto [id, amount] = row.as<long, long>();
    const long fee = amount * 29 / 1000 + 30;  // 2.9% + 30 cents
    ids += (ids.size() > 1 ? "," : "") + std::to_string(id);
    fees += (fees.size() > 1 ? "," : "") + std::to_string(fee);
  }
  if (rows.empty()) return 0;
  // Arrays as parameters: one statement for the whole batch, and no SQL built from data.
  c.execute(
      "UPDATE long_running_payment p SET fee = u.fee FROM unnest($1::bigint[], $2::bigint[]) AS u(id, fee) "
      "WHERE p.id = u.id",
      ids + "}", fees + "}");
  return rows.size();
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: long_running APP_CONNINFO\n";
    return 2;
  }
  pqscope::database db{argv[1]};
  pqscope::connection conn = db.connect();
  pqscope::atomic(conn, [&] {
    conn.set_local("client_min_messages", "warning");
    conn.execute("DROP TABLE IF EXISTS long_running_payment");
    conn.execute("CREATE TABLE long_running_payment(id bigint PRIMARY KEY, amount bigint NOT NULL, fee bigint)");
    conn.execute("INSERT INTO long_running_payment SELECT n, 100 + n * 7 % 9900 FROM generate_series(1, $1) n",
                 total_rows);
  });

  // Each batch is bounded: a stuck lock or a slow plan fails the batch, not the job.
  pqscope::transaction_options o;
  o.statement_timeout = std::chrono::seconds(5);
  o.lock_timeout = std::chrono::seconds(1);

  const auto before = conn.stats();
  const int batches = (total_rows + batch_size - 1) / batch_size;
  std::size_t processed = 0;
  for (int b = 1;; ++b) {
    const auto start = std::chrono::steady_clock::now();
    std::size_t n = pqscope::atomic(conn, o, process_batch);
    if (n == 0) break;
    processed += n;
    const std::chrono::duration<double, std::milli> ms = std::chrono::steady_clock::now() - start;
    char line[96];
    std::snprintf(line, sizeof line, "batch %d/%d: %zu rows, %.1f ms/tx", b, batches, processed, ms.count());
    std::cout << line << "\n";
  }

  // The last transaction found nothing left to do, which is how the loop ends.
  const auto& s = conn.stats();
  std::cout << "stats for the job: " << s.transactions_committed - before.transactions_committed
            << " transactions committed, " << s.statements - before.statements << " statements, "
            << s.control_statements - before.control_statements << " control statements, "
            << s.round_trips - before.round_trips << " round trips\n";
  long left = conn.query_value<long>("SELECT count(*) FROM long_running_payment WHERE fee IS NULL");
  conn.execute("DROP TABLE long_running_payment");
  if (processed != total_rows || left != 0) {
    std::cerr << "long_running: processed " << processed << " rows, " << left << " left\n";
    return 1;
  }
  std::cout << "done: " << processed << " rows in " << batches << " short transactions\n";
} catch (const pqscope::error& e) {
  std::cerr << "long_running: " << e.what() << "\n";
  return 1;
}
