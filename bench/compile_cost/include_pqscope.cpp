// Including the single header and opening a database object (nothing sent).
#include <pqscope/pqscope.hpp>
int main(int argc, char** argv) {
  pqscope::database db{argc > 1 ? argv[1] : "host=localhost"};
  return db.conninfo().empty() ? 1 : 0;
}
