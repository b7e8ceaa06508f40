// A second translation unit that uses pqscope: it sees declarations only.
#include <pqscope/pqscope.hpp>

#include <string>

#include "unit.hpp"

#if !defined(PQSCOPE_SEPARATE_COMPILATION)
#error "this consumer is built with PQSCOPE_SEPARATE_COMPILATION"
#endif

long move_money(pqscope::connection& c, int from, int to, long cents) {
  return pqscope::atomic(c, [&] {
    pqscope::transaction debit{c};  // a savepoint inside atomic()
    c.execute("UPDATE account SET cents = cents - $1 WHERE id = $2", cents, from);
    debit.commit();
    c.execute("UPDATE account SET cents = cents + $1 WHERE id = $2", cents, to);
    return c.query_value<long>("SELECT sum(cents) FROM account");
  });
}

std::string refused_connect() {
  try {
    // No server listens on this socket directory: the driver's open() reports it.
    const pqscope::database db{"host=/nonexistent-pqscope-socket-dir port=1 connect_timeout=2"};
    pqscope::connection c = db.connect();
  } catch (const pqscope::connection_error& e) {
    return e.what();
  }
  return {};
}
