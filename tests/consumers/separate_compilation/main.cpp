// A pqscope consumer in separate-compilation mode (see CMakeLists.txt here).
//
//   consumer --version [EXPECTED]   no server: parse a conninfo, fail to connect
//                                   where no server is, print the version
//   consumer CONNINFO               move money between two accounts
#include <pqscope/pqscope.hpp>

#if defined(PQSCOPE_EXPECT_SINGLE_HEADER) && __has_include(<pqscope/connection.hpp>)
#error "include/pqscope is on the include path: the single header is not being tested alone"
#endif

#include <iostream>
#include <string>
#include <string_view>

#include "unit.hpp"

int main(int argc, char** argv) try {
  const std::string version = std::to_string(PQSCOPE_VERSION_MAJOR) + "." + std::to_string(PQSCOPE_VERSION_MINOR) +
                              "." + std::to_string(PQSCOPE_VERSION_PATCH);
  const std::string_view arg = argc > 1 ? argv[1] : "--version";
  if (arg == "--version") {
    const pqscope::database db{"postgresql://app@127.0.0.1:6432/app?connect_timeout=5"};
    const std::string refused = refused_connect();
    if (refused.empty()) {
      std::cerr << "consumer: connecting where no server is did not throw connection_error\n";
      return 1;
    }
    std::cout << "pqscope " << version << " (" << db.conninfo() << "), separate compilation\n";
    return argc > 2 && version != argv[2] ? 1 : 0;
  }
  const pqscope::database db{std::string(arg)};
  pqscope::connection conn = db.connect();
  conn.execute("CREATE TEMP TABLE account(id int PRIMARY KEY, cents bigint)");
  conn.execute("INSERT INTO account VALUES (1, 1000), (2, 0)");
  std::cout << "total: " << move_money(conn, 1, 2, 250) << " cents\n";
  return 0;
} catch (const pqscope::error& e) {
  std::cerr << "consumer: " << e.what() << "\n";
  return 1;
}
