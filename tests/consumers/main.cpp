// A minimal pqscope consumer, shared by the projects next to this file. Each
// project finds pqscope another way; the source is the same for all of them.
//
//   consumer --version [EXPECTED]   no server: parse a conninfo, print the version
//                                   (exit 1 if it is not EXPECTED)
//   consumer CONNINFO               move money between two accounts
#include <pqscope/pqscope.hpp>

// The single-header project must see nothing but single_include/.
#if defined(PQSCOPE_EXPECT_SINGLE_HEADER) && __has_include(<pqscope/connection.hpp>)
#error "include/pqscope is on the include path: the single header is not being tested alone"
#endif

#include <iostream>
#include <string>
#include <string_view>

namespace {

std::string version() {
  return std::to_string(PQSCOPE_VERSION_MAJOR) + "." + std::to_string(PQSCOPE_VERSION_MINOR) + "." +
         std::to_string(PQSCOPE_VERSION_PATCH);
}

long transfer(pqscope::connection& c, int from, int to, long cents) {
  return pqscope::atomic(c, [&] {
    pqscope::transaction debit{c};  // a savepoint inside atomic()
    c.execute("UPDATE account SET cents = cents - $1 WHERE id = $2", cents, from);
    debit.commit();
    c.execute("UPDATE account SET cents = cents + $1 WHERE id = $2", cents, to);
    return c.query_value<long>("SELECT sum(cents) FROM account");
  });
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string_view arg = argc > 1 ? argv[1] : "--version";
  if (arg == "--version") {
    // Parsing the conninfo goes through libpq, so this also proves it is linked.
    const pqscope::database db{"postgresql://app@127.0.0.1:6432/app?connect_timeout=5"};
    std::cout << "pqscope " << version() << " (" << db.conninfo() << ")\n";
    return argc > 2 && version() != argv[2] ? 1 : 0;
  }
  const pqscope::database db{std::string(arg)};
  pqscope::connection conn = db.connect();
  conn.execute("CREATE TEMP TABLE account(id int PRIMARY KEY, cents bigint)");
  conn.execute("INSERT INTO account VALUES (1, 1000), (2, 0)");
  std::cout << "total: " << transfer(conn, 1, 2, 250) << " cents\n";
  return 0;
} catch (const pqscope::error& e) {
  std::cerr << "consumer: " << e.what() << "\n";
  return 1;
}
