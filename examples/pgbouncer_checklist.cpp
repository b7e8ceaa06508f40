// The PgBouncer checklist: behind a transaction-pooling PgBouncer the server session
// is lent to another client after every transaction, so nothing may be left in it.
// With connection_options::pooling = pooling::transaction pqscope refuses each statement
// that would leave session state behind (DISCARD and LOAD too) with a usage_error,
// before anything is sent. For each one this runs the refused statement, then the safe
// alternative; last, the escape hatch allow_session_state() for a deliberate exception.
// Usage: pgbouncer_checklist APP_CONNINFO [DIRECT_CONNINFO]
//   APP_CONNINFO     PgBouncer in transaction pooling mode
//   DIRECT_CONNINFO  PostgreSQL itself, where LISTEN belongs (skipped without it)
#include <pqscope/pqscope.hpp>

#include <libpq-fe.h>

#include <iostream>
#include <string>

namespace {

int refused = 0, alternatives = 0;

// Runs a statement the guard must refuse and prints why, without the common preamble.
void refuse(pqscope::connection& c, const std::string& sql) {
  std::cout << "\n" << sql << "\n";
  try {
    c.execute(sql);
    std::cout << "  NOT refused\n";
  } catch (const pqscope::usage_error& e) {
    // The message reads "execute(...) acts on the server session, which PgBouncer ... lends
    // to other clients: WHY; WHAT TO USE INSTEAD. To send it anyway, ...": print WHY.
    std::string why = e.what();
    if (auto at = why.find("clients: "); at != std::string::npos) why.erase(0, at + 9);
    std::cout << "  refused:  " << why.substr(0, why.find("; ")) << "\n";
    ++refused;
  }
}

void safe(const std::string& what, const std::string& outcome) {
  std::cout << "  instead:  " << what << " -> " << outcome << "\n";
  ++alternatives;
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::cerr << "usage: pgbouncer_checklist APP_CONNINFO [DIRECT_CONNINFO]\n";
    return 2;
  }
  pqscope::connection_options options;
  options.pooling = pqscope::pooling::transaction;
  pqscope::database db{argv[1], options};
  pqscope::connection conn = db.connect();

  // 1. Settings: SET LOCAL (set_local) ends with the transaction; a session SET does not.
  refuse(conn, "SET statement_timeout = '2s'");
  safe("set_local(\"statement_timeout\", \"2s\") in a scope", pqscope::atomic(conn, [&] {
         conn.set_local("statement_timeout", "2s");
         return conn.query_value<std::string>("SHOW statement_timeout");
       }) + " inside, " + conn.query_value<std::string>("SHOW statement_timeout") + " after");

  refuse(conn, "SELECT set_config('search_path', 'pgbouncer_checklist, public', false)");
  safe("set_config(..., true) in a scope", pqscope::atomic(conn, [&] {
         return conn.query_value<std::string>(
             "SELECT set_config('search_path', 'pgbouncer_checklist, public', true)");
       }) + " until the scope ends");

  // 2. Transaction modes belong to the outermost scope's options.
  refuse(conn, "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE");
  pqscope::transaction_options serializable;
  serializable.isolation = pqscope::isolation::serializable;
  safe("transaction_options::isolation = serializable", pqscope::atomic(conn, serializable, [&] {
         return conn.query_value<std::string>("SHOW transaction_isolation");
       }));

  // 3. Advisory locks: the _xact_ variant is released when the transaction ends.
  refuse(conn, "SELECT pg_advisory_lock(4242)");
  long held = pqscope::atomic(conn, [&] {
    conn.execute("SELECT pg_advisory_xact_lock(4242)");
    return conn.query_value<long>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242");
  });
  long after = conn.query_value<long>("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242");
  safe("pg_advisory_xact_lock(4242) in a scope", std::to_string(held) + " lock held inside, " +
                                                   std::to_string(after) + " after");

  // 4. Prepared statements live in one server session: pass parameters instead.
  refuse(conn, "PREPARE pgbouncer_checklist_q(int) AS SELECT $1 * 2");
  safe("execute(\"SELECT $1::int * 2\", 21)", std::to_string(conn.query_value<int>("SELECT $1::int * 2", 21)));

  // 5. Cursors: one without HOLD, read to the end inside its scope.
  refuse(conn, "DECLARE pgbouncer_checklist_c CURSOR WITH HOLD FOR SELECT generate_series(1, 5)");
  std::size_t fetched = pqscope::atomic(conn, [&] {
    conn.execute("DECLARE pgbouncer_checklist_c CURSOR FOR SELECT generate_series(1, 5)");
    return conn.execute("FETCH ALL FROM pgbouncer_checklist_c").size();
  });
  safe("DECLARE ... CURSOR (no HOLD) + FETCH in a scope", std::to_string(fetched) + " rows fetched");

  // 6. LISTEN: notifications need a session of their own, so a direct connection.
  //    NOTIFY is fine through PgBouncer: it is delivered when its transaction commits.
  refuse(conn, "LISTEN pgbouncer_checklist");
  if (argc > 2) {
    pqscope::connection_options direct;
    direct.pooling = pqscope::pooling::none;  // PostgreSQL itself: LISTEN belongs here
    pqscope::connection listener{argv[2], direct};
    listener.execute("LISTEN pgbouncer_checklist");
    conn.execute("SELECT pg_notify('pgbouncer_checklist', 'hello')");
    listener.execute("SELECT 1");  // reads what has arrived, the notification included
    std::string got = "nothing";
    if (PGnotify* n = PQnotifies(listener.native_handle())) {
      got = std::string("'") + n->extra + "' on " + n->relname;
      PQfreemem(n);
    }
    listener.execute("UNLISTEN *");
    safe("LISTEN on a direct connection, NOTIFY through PgBouncer", got);
  } else {
    std::cout << "  instead:  LISTEN on a direct connection (skipped: no DIRECT_CONNINFO given)\n";
  }

  // Not refused: PgBouncer itself carries TimeZone (like client_encoding, DateStyle,
  // standard_conforming_strings and application_name) to every server connection it
  // lends this client, so a session SET of it cannot leak.
  std::cout << "\nSET TIME ZONE 'America/Sao_Paulo' (tracked by PgBouncer: allowed)\n";
  conn.execute("SET TIME ZONE 'America/Sao_Paulo'");
  std::cout << "  sent:     TimeZone is now " << conn.query_value<std::string>("SHOW TimeZone") << "\n";

  // The escape hatch, for session state you set and clean up yourself. Both statements
  // go in one scope: in autocommit PgBouncer could send the unlock to another server
  // connection and leave the lock behind on this one.
  std::cout << "\nallow_session_state(\"SELECT pg_advisory_lock(4711)\") and its unlock, in one scope\n";
  pqscope::atomic(conn, [&] {
    (void)conn.execute(pqscope::allow_session_state("SELECT pg_advisory_lock(4711)"));
    (void)conn.execute(pqscope::allow_session_state("SELECT pg_advisory_unlock(4711)"));
  });
  std::cout << "  sent:     both, on the one server connection the transaction held\n";

  std::cout << "\n";
  if (refused != 7 || alternatives != (argc > 2 ? 7 : 6) || conn.depth() != 0) {
    std::cerr << "pgbouncer_checklist: the guard did not refuse every statement\n";
    return 1;
  }
  std::cout << "checklist: " << refused << " refused, " << alternatives << " safe alternatives ran\n";
} catch (const pqscope::error& e) {
  std::cerr << "pgbouncer_checklist: " << e.what() << "\n";
  return 1;
}
