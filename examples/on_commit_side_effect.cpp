// Side effects after commit: an order confirmation "email" goes into an outbox with
// conn.on_commit, so it is sent only once the order is really in the database. A
// rolled-back order enqueues nothing, and a callback registered in a nested scope that
// rolls back is dropped while the enclosing order still commits.
// Usage: on_commit_side_effect APP_CONNINFO   (PgBouncer in transaction pooling, or PostgreSQL)
#include <pqscope/pqscope.hpp>

#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

std::vector<std::string> outbox;  // stands in for a mail queue, a message broker, a cache ...

void place_order(pqscope::connection& c, const std::string& customer, int quantity) {
  pqscope::atomic(c, [&] {
    long id = c.query_value<long>(
        "INSERT INTO on_commit_side_effect_order(customer, quantity) VALUES ($1, $2) RETURNING id", customer,
        quantity);
    // Sending here, before COMMIT, could announce an order that then rolls back.
    c.on_commit([customer, id] {
      outbox.push_back("to " + customer + ": order #" + std::to_string(id) + " confirmed");
    });
    if (quantity <= 0) throw std::invalid_argument("quantity must be positive");
  });
}

void report(const char* what, std::size_t outbox_before) {
  std::cout << what << ": " << outbox.size() - outbox_before << " email(s) enqueued\n";
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: on_commit_side_effect APP_CONNINFO\n";
    return 2;
  }
  pqscope::database db{argv[1]};
  pqscope::connection conn = db.connect();
  pqscope::atomic(conn, [&] {
    conn.set_local("client_min_messages", "warning");
    conn.execute("DROP TABLE IF EXISTS on_commit_side_effect_order");
    conn.execute("CREATE TABLE on_commit_side_effect_order(id serial PRIMARY KEY, customer text, quantity int)");
  });

  // 1. The order commits: its email is enqueued right after COMMIT.
  std::size_t n = outbox.size();
  place_order(conn, "ada", 2);
  report("1. order committed", n);

  // 2. The order throws after the INSERT: rolled back, no email.
  n = outbox.size();
  try {
    place_order(conn, "bob", 0);
  } catch (const std::invalid_argument& e) {
    std::cout << "   bob's order refused: " << e.what() << "\n";
  }
  report("2. order rolled back", n);

  // 3. A gift order nested in a bigger transaction: the gift's savepoint rolls back and
  //    takes its callback with it; the main order commits and sends its own email only.
  n = outbox.size();
  pqscope::atomic(conn, [&] {
    place_order(conn, "cyd", 1);
    try {
      place_order(conn, "cyd's friend", -1);
    } catch (const std::invalid_argument&) {
      std::cout << "   the gift order rolled back to its savepoint\n";
    }
    std::cout << "   inside the open transaction the outbox still holds " << outbox.size() - n << " new email(s)\n";
  });
  report("3. outer order committed, nested one rolled back", n);

  long orders = conn.query_value<long>("SELECT count(*) FROM on_commit_side_effect_order");
  conn.execute("DROP TABLE on_commit_side_effect_order");
  std::cout << "outbox:\n";
  for (const auto& email : outbox) std::cout << "  " << email << "\n";
  if (orders != 2 || outbox.size() != 2) {
    std::cerr << "on_commit_side_effect: expected 2 orders and 2 emails, got " << orders << " and " << outbox.size()
              << "\n";
    return 1;
  }
  std::cout << "orders in the table: " << orders << ", emails in the outbox: " << outbox.size() << "\n";
} catch (const pqscope::error& e) {
  std::cerr << "on_commit_side_effect: " << e.what() << "\n";
  return 1;
}
