// The libpqxx peer: pqxx::work with nested pqxx::subtransaction.
//
// Statements go through exec() with literal SQL: in libpqxx 6.4 a subtransaction
// whose statements use exec_params sends no SAVEPOINT at all, which would make
// the comparison meaningless (and the savepoints fake).

#include "bench.hpp"

#ifdef PQSCOPE_BENCH_HAVE_PQXX

#include <array>
#include <pqxx/pqxx>

namespace bench {
namespace {

class pqxx_client final : public client {
 public:
  explicit pqxx_client(const std::string& conninfo) : conn_(conninfo) {
    for (std::size_t i = 0; i < names_.size(); ++i) names_[i] = "sp" + std::to_string(i + 1);
  }

  void matrix(int depth, int statements, int seq) override {
    pqxx::work tx(conn_);
    if (depth > 1)
      nested(tx, 1, depth, statements, seq);
    else
      inserts(tx, statements, seq);
    tx.commit();
  }

  void transfer(int first, int second, int amount) override {
    pqxx::work tx(conn_);
    update(tx, first, -amount);
    update(tx, second, amount);
    tx.commit();
  }

  void trace(std::FILE* file) override { conn_.trace(file); }

 private:
  // Scope `level` (1-based below the transaction) of `depth`.
  void nested(pqxx::dbtransaction& parent, int level, int depth, int statements, int seq) {
    pqxx::subtransaction sub(parent, names_.at(static_cast<std::size_t>(level - 1)));
    if (level + 1 < depth)
      nested(sub, level + 1, depth, statements, seq);
    else
      inserts(sub, statements, seq);
    sub.commit();
  }

  static void inserts(pqxx::transaction_base& t, int statements, int seq) {
    for (int i = 0; i < statements; ++i) t.exec("INSERT INTO bench_t(v) VALUES (" + std::to_string(seq + i) + ")");
  }

  void update(pqxx::dbtransaction& parent, int id, int delta) {
    pqxx::subtransaction sub(parent, names_[0]);
    sub.exec("UPDATE bench_accounts SET balance = balance + " + std::to_string(delta) +
             " WHERE id = " + std::to_string(id));
    sub.commit();
  }

  pqxx::connection conn_;
  std::array<std::string, 16> names_;
};

}  // namespace

std::unique_ptr<client> make_pqxx_client(const std::string& conninfo) {
  try {
    return std::make_unique<pqxx_client>(conninfo);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("libpqxx connect: ") + e.what());
  }
}

std::string pqxx_version() {
#ifdef PQSCOPE_BENCH_PQXX_PKG_VERSION
  // pkg-config's version is the package's; the header's macro can lag behind it.
  return std::string(PQSCOPE_BENCH_PQXX_PKG_VERSION) + " (headers say " PQXX_VERSION ")";
#else
  return PQXX_VERSION;
#endif
}

}  // namespace bench

#else  // !PQSCOPE_BENCH_HAVE_PQXX

namespace bench {
std::unique_ptr<client> make_pqxx_client(const std::string&) { return nullptr; }
std::string pqxx_version() { return "not built"; }
}  // namespace bench

#endif
