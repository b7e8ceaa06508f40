#define BOOST_TEST_MODULE connection
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <type_traits>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

// "program:user@host" worked out independently of the library.
std::string expected_default_app_name() {
  const passwd* pw = getpwuid(geteuid());
  std::string user = pw != nullptr ? pw->pw_name : std::to_string(geteuid());
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string h = host;
  return "test_connection:" + user + "@" + h.substr(0, h.find('.'));
}

// The application_name the server has for the backend that serves `c`. Asked
// inside a transaction: PgBouncer then keeps that server connection for this
// client alone, where between transactions another client may take it over.
std::string server_side_app_name(pqscope::connection& c) {
  pqscope::transaction tx(c);
  const int pid = c.query_value<int>("SELECT pg_backend_pid()");
  auto name = pqtest::observer().query_value<std::optional<std::string>>(
      "SELECT application_name FROM pg_stat_activity WHERE pid = $1", pid);
  tx.rollback();
  return name.value_or("<no such backend>");
}

// Sessions an operator finds by this application_name, counted while `c` holds one.
long sessions_named(pqscope::connection& c, const std::string& app) {
  pqscope::transaction tx(c);
  c.execute("SELECT 1");
  const long n = pqtest::observer().query_value<long>(
      "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app);
  tx.rollback();
  return n;
}

// A TCP port on 127.0.0.1 where nothing listens.
int closed_port() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

bool backend_alive(int pid) {
  return pqtest::observer().query_value<long>("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid) == 1;
}

// Waits for a terminated backend to disappear, so the next statement surely meets a dead socket.
bool wait_gone(int pid) {
  for (auto until = clock_type::now() + 5s; clock_type::now() < until; std::this_thread::sleep_for(10ms))
    if (!backend_alive(pid)) return true;
  return false;
}

void terminate_backend(int pid) {
  BOOST_TEST(pqtest::observer().query_value<bool>("SELECT pg_terminate_backend($1)", pid));
  BOOST_TEST(wait_gone(pid));
}

// Sets an environment variable for the lifetime of the object.
struct scoped_env {
  scoped_env(const char* name, const std::string& value) : name_(name) { ::setenv(name, value.c_str(), 1); }
  ~scoped_env() { ::unsetenv(name_); }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;
  const char* name_;
};

using pqtest::in_child;

}  // namespace

BOOST_AUTO_TEST_CASE(database_is_copyable_and_connects_in_autocommit) {
  static_assert(std::is_copy_constructible_v<pqscope::database> && std::is_copy_assignable_v<pqscope::database>);
  static_assert(!std::is_copy_constructible_v<pqscope::connection>);
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::database db{t.conninfo};
      pqscope::database copy = db;
      pqscope::database assigned{"host=elsewhere"};
      assigned = copy;
      BOOST_TEST(assigned.conninfo() == t.conninfo);

      pqtest::scratch_table tab;
      auto a = db.connect();
      auto b = assigned.connect();
      BOOST_TEST(a.depth() == 0u);
      BOOST_TEST(!a.in_transaction());
      a.execute("INSERT INTO " + tab.name() + " (id) VALUES (1)");
      // Committed at once: another session sees it without any commit call.
      BOOST_TEST(tab.count() == 1);
      BOOST_TEST(b.query_value<long>("SELECT count(*) FROM " + tab.name()) == 1);

      pqscope::connection direct{t.conninfo};
      BOOST_TEST(direct.query_value<int>("SELECT 2") == 2);
      BOOST_TEST(direct.conninfo() == t.conninfo);
    }
  }
}

BOOST_AUTO_TEST_CASE(malformed_conninfo_is_a_usage_error) {
  for (const char* bad : {"host=127.0.0.1 port=abc =x", "nonsense", "host='unterminated", "postgresql://[::1"}) {
    BOOST_TEST_CONTEXT(bad) {
      const auto start = clock_type::now();
      BOOST_CHECK_THROW(pqscope::database{bad}, pqscope::usage_error);
      BOOST_CHECK_THROW(pqscope::connection{bad}, pqscope::usage_error);
      // Refused by parsing alone: no connection attempt, so no timeout to wait for.
      BOOST_TEST(seconds_since(start) < 1.0);
    }
  }
  try {
    pqscope::database{"nonsense"};
  } catch (const pqscope::usage_error& e) {
    BOOST_TEST(std::string(e.what()).find("connection string") != std::string::npos, e.what());
  }
}

BOOST_AUTO_TEST_CASE(unreachable_server_is_a_connection_error_in_bounded_time) {
  const std::string refused = "host=127.0.0.1 port=" + std::to_string(closed_port()) + " connect_timeout=2";
  const std::string blackhole = "host=10.255.255.1 connect_timeout=1";
  for (const std::string& conninfo : {refused, blackhole}) {
    BOOST_TEST_CONTEXT(conninfo) {
      pqscope::database db{conninfo};  // well-formed: nothing is tried yet
      auto start = clock_type::now();
      BOOST_CHECK_THROW(db.connect(), pqscope::connection_error);
      // libpq waits at least 2 s whatever connect_timeout says.
      BOOST_TEST(seconds_since(start) < 5.0);
      start = clock_type::now();
      std::string what;
      try {
        pqscope::connection c{conninfo};
      } catch (const pqscope::connection_error& e) {
        what = e.what();
      }
      BOOST_TEST(seconds_since(start) < 5.0);
      // libpq's reason, without the newline libpq ends its messages with.
      BOOST_TEST(what.rfind("could not connect: ", 0) == 0u, what);
      BOOST_TEST(what.size() > std::string("could not connect: ").size(), what);
      BOOST_TEST((what.back() != '\n' && what.back() != ' '), what);
    }
  }
}

BOOST_AUTO_TEST_CASE(default_application_name_is_program_user_host) {
  const std::string expected = expected_default_app_name();
  BOOST_TEST(pqscope::detail::default_application_name() == expected);
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      auto c = pqscope::database{t.conninfo}.connect();
      BOOST_TEST(c.application_name() == expected);
      BOOST_TEST(c.query_value<std::string>("SELECT current_setting('application_name')") == expected);
      // What an operator sees in pg_stat_activity, also behind PgBouncer.
      BOOST_TEST(server_side_app_name(c) == expected);
      BOOST_TEST(sessions_named(c, expected) >= 1);  // other processes of this program may be connected too
    }
  }
}

BOOST_AUTO_TEST_CASE(conninfo_application_name_overrides_the_default) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      const std::string app = pqtest::unique_name("explicit_app");
      pqscope::connection c{pqtest::with_app_name(t, app)};
      BOOST_TEST(c.application_name() == app);
      BOOST_TEST(server_side_app_name(c) == app);
      BOOST_TEST(sessions_named(c, app) == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(pgappname_overrides_the_default) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      const std::string app = pqtest::unique_name("env_app");
      std::optional<pqscope::connection> c;
      {
        scoped_env env("PGAPPNAME", app);
        c.emplace(t.conninfo);
      }
      BOOST_TEST(c->application_name() == app);
      BOOST_TEST(server_side_app_name(*c) == app);
      // Without the variable the default is back.
      BOOST_TEST(pqscope::connection{t.conninfo}.application_name() == expected_default_app_name());
    }
  }
}

BOOST_AUTO_TEST_CASE(application_name_is_cut_on_a_utf8_boundary) {
  using pqscope::detail::cut_utf8;
  const std::string a61(61, 'a'), a62(62, 'a'), a63(63, 'a');
  BOOST_TEST(cut_utf8("short", 63) == "short");
  BOOST_TEST(cut_utf8(a63, 63) == a63);
  BOOST_TEST(cut_utf8(a63 + "bcd", 63) == a63);
  BOOST_TEST(cut_utf8(a62 + "\xc3\xa9", 63) == a62);                 // é would be split: dropped whole
  BOOST_TEST(cut_utf8(a61 + "\xc3\xa9" + "b", 63) == a61 + "\xc3\xa9");  // é fits exactly
  BOOST_TEST(cut_utf8(a61 + "\xe2\x82\xac", 63) == a61);             // € (3 bytes) from byte 62
  BOOST_TEST(cut_utf8(a62 + "\xe2\x82\xac", 63) == a62);
  BOOST_TEST(cut_utf8(a61 + "\xf0\x9f\x90\x98", 63) == a61);         // 🐘 (4 bytes)
  BOOST_TEST(cut_utf8(a62 + "\xf0\x9f\x90\x98", 63) == a62);
  // All multibyte: 21 x € = 63 bytes fits, 22 x € is cut to 21.
  std::string euros;
  for (int i = 0; i < 22; ++i) euros += "\xe2\x82\xac";
  BOOST_TEST(cut_utf8(euros, 63) == euros.substr(0, 63));
  BOOST_TEST(cut_utf8(euros + "x", 64) == euros.substr(0, 63));
  BOOST_TEST(cut_utf8("\xc3\xa9", 1) == "");
  BOOST_TEST(pqscope::detail::default_application_name().size() <= 63u);
}

BOOST_AUTO_TEST_CASE(move_keeps_the_session) {
  static_assert(std::is_nothrow_move_constructible_v<pqscope::connection>);
  static_assert(std::is_nothrow_move_assignable_v<pqscope::connection>);
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::database db{t.conninfo};
      pqtest::scratch_table tab;
      auto a = db.connect();
      PGconn* const handle = a.native_handle();

      // A transaction opened before the move carries on through the moved-to object.
      pqscope::transaction tx(a);
      a.execute("INSERT INTO " + tab.name() + " (id) VALUES (1)");
      const int pid = a.query_value<int>("SELECT pg_backend_pid()");  // pinned, also behind PgBouncer
      pqscope::connection b{std::move(a)};
      BOOST_TEST(b.native_handle() == handle);
      BOOST_TEST(b.depth() == 1u);
      BOOST_TEST(b.query_value<int>("SELECT pg_backend_pid()") == pid);  // same server session mid-transaction
      b.execute("INSERT INTO " + tab.name() + " (id) VALUES (2)");
      BOOST_TEST(tab.count() == 0);
      tx.commit();
      BOOST_TEST(tab.ids() == "1,2");

      // Move assignment: the target's own session ends, the source's carries on.
      auto c = db.connect();
      const int old_pid = c.query_value<int>("SELECT pg_backend_pid()");
      c = std::move(b);
      BOOST_TEST(c.native_handle() == handle);
      BOOST_TEST(c.query_value<int>("SELECT 7") == 7);
      if (t.name == "direct") {
        // Through PgBouncer the server connection outlives the client, so only here is the closing visible.
        BOOST_TEST(wait_gone(old_pid));
        BOOST_TEST(c.query_value<int>("SELECT pg_backend_pid()") == pid);
      }
      c = std::move(c);  // self-move leaves it working
      BOOST_TEST(c.query_value<int>("SELECT 8") == 8);

      // A moved-from connection can be given a new one.
      a = db.connect();
      BOOST_TEST(a.query_value<int>("SELECT 9") == 9);
    }
  }
}

BOOST_AUTO_TEST_CASE(use_after_move_is_a_usage_error) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection a{t.conninfo};
      pqscope::connection b{std::move(a)};
      BOOST_CHECK_THROW(a.execute("SELECT 1"), pqscope::usage_error);
      BOOST_CHECK_THROW((void)a.query_value<int>("SELECT 1"), pqscope::usage_error);
      BOOST_CHECK_THROW(a.reconnect(), pqscope::usage_error);
      BOOST_CHECK_THROW((void)a.stats(), pqscope::usage_error);
      BOOST_CHECK_THROW(a.on_commit([] {}), pqscope::usage_error);
      BOOST_CHECK_THROW(pqscope::transaction{a}, pqscope::usage_error);
      BOOST_TEST(a.native_handle() == nullptr);
      BOOST_TEST(a.depth() == 0u);
      BOOST_TEST(b.query_value<int>("SELECT 1") == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(native_handle_is_the_live_pgconn) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo};
      PGconn* h = c.native_handle();
      BOOST_REQUIRE(h != nullptr);
      BOOST_TEST(PQstatus(h) == CONNECTION_OK);
      BOOST_TEST(PQtransactionStatus(h) == PQTRANS_IDLE);
      BOOST_TEST(PQserverVersion(h) > 0);
      BOOST_TEST(std::string(PQdb(h)) == "pqscope");
      if (t.name == "direct")  // PgBouncer hands out its own process id, not the backend's
        BOOST_TEST(PQbackendPID(h) == c.query_value<int>("SELECT pg_backend_pid()"));
      // Usable directly, and the connection is fine afterwards.
      PGresult* r = PQexec(h, "SELECT 41 + 1");
      BOOST_TEST(PQresultStatus(r) == PGRES_TUPLES_OK);
      BOOST_TEST(std::string(PQgetvalue(r, 0, 0)) == "42");
      PQclear(r);
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(stats_count_round_trips) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo};
      const pqscope::connection_stats s0 = c.stats();
      c.execute("SELECT 1");
      const pqscope::connection_stats s1 = c.stats();
      BOOST_TEST(s1.round_trips == s0.round_trips + 1);
      BOOST_TEST(s1.statements == s0.statements + 1);
      BOOST_TEST(s1.control_statements == s0.control_statements);  // autocommit: no BEGIN/COMMIT
      (void)c.query_value<int>("SELECT $1", 5);
      BOOST_CHECK_THROW(c.execute("SELECT 1/0"), pqscope::sql_error);
      const pqscope::connection_stats s2 = c.stats();
      BOOST_TEST(s2.round_trips == s1.round_trips + 2);
      BOOST_TEST(s2.statements == s1.statements + 2);
      BOOST_TEST(s2.transactions_committed == s0.transactions_committed);
      // Refused before sending: no round trip.
      BOOST_CHECK_THROW(c.execute("BEGIN"), pqscope::usage_error);
      BOOST_TEST(c.stats().round_trips == s2.round_trips);
    }
  }
}

// Outside a scope. Only direct: between transactions a PgBouncer client holds no
// server connection, so killing a backend is not a loss the client can see;
// PgBouncer drops that server connection and serves the next statement on another.
BOOST_AUTO_TEST_CASE(terminated_backend_is_a_connection_error_then_reconnect) {
  const auto t = pqtest::targets().front();
  BOOST_REQUIRE(t.name == "direct");
  pqscope::connection c{t.conninfo};
  const int pid = c.query_value<int>("SELECT pg_backend_pid()");
  terminate_backend(pid);
  try {
    (void)c.execute("SELECT 1");
    BOOST_ERROR("a statement on a terminated backend succeeded");
  } catch (const pqscope::connection_error& e) {
    const std::string what = e.what();
    BOOST_TEST((!what.empty() && what.back() != '\n' && what.back() != ' '), what);
  }
  // Stays broken without another try on the wire.
  const auto trips = c.stats().round_trips;
  BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error);
  BOOST_TEST(c.stats().round_trips == trips);
  c.reconnect();
  const int new_pid = c.query_value<int>("SELECT pg_backend_pid()");
  BOOST_TEST(new_pid != pid);
  BOOST_TEST(PQstatus(c.native_handle()) == CONNECTION_OK);
  BOOST_TEST(c.application_name() == expected_default_app_name());
}

// Inside a transaction the server connection is pinned to the client, so killing
// it is a real loss through PgBouncer too.
BOOST_AUTO_TEST_CASE(loss_inside_a_scope_then_reconnect) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table tab;
      pqscope::connection c{t.conninfo};
      {
        pqscope::transaction tx(c);
        c.execute("INSERT INTO " + tab.name() + " (id) VALUES (1)");
        const int pid = c.query_value<int>("SELECT pg_backend_pid()");
        terminate_backend(pid);
        BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error);
        BOOST_CHECK_THROW(c.reconnect(), pqscope::usage_error);  // the scope is still open
        BOOST_CHECK_THROW(tx.commit(), pqscope::connection_error);
      }
      BOOST_TEST(c.depth() == 0u);
      c.reconnect();
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
      BOOST_TEST(tab.count() == 0);  // the insert died with the session
    }
  }
}

// The socket itself goes away, as on a network failure: same for both targets.
BOOST_AUTO_TEST_CASE(dead_socket_is_a_connection_error_then_reconnect) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo};
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
      ::shutdown(PQsocket(c.native_handle()), SHUT_RDWR);
      BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error);
      c.reconnect();
      BOOST_TEST(c.query_value<int>("SELECT 2") == 2);
    }
  }
}

BOOST_AUTO_TEST_CASE(reconnect_inside_a_scope_is_a_usage_error) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqtest::scratch_table tab;
      pqscope::connection c{t.conninfo};
      PGconn* const handle = c.native_handle();
      pqscope::transaction tx(c);
      c.execute("INSERT INTO " + tab.name() + " (id) VALUES (1)");
      BOOST_CHECK_THROW(c.reconnect(), pqscope::usage_error);
      // Refused without harm: the same session, the transaction goes on.
      BOOST_TEST(c.native_handle() == handle);
      c.execute("INSERT INTO " + tab.name() + " (id) VALUES (2)");
      tx.commit();
      BOOST_TEST(tab.ids() == "1,2");
      // At depth 0 it is allowed, even on a healthy connection.
      c.reconnect();
      BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(fork_child_must_not_use_the_parents_connection) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::database db{t.conninfo};
      pqtest::scratch_table tab;
      std::optional<pqscope::connection> c{db.connect()};
      const int pid = c->query_value<int>("SELECT pg_backend_pid()");
      // A transaction in flight in the parent: any byte the child sent on the shared
      // socket would disturb it.
      pqscope::transaction tx(*c);
      c->execute("INSERT INTO " + tab.name() + " (id) VALUES (1)");

      const int code = in_child([&] {
        try {
          c->execute("INSERT INTO " + tab.name() + " (id) VALUES (100)");
          return 1;  // accepted
        } catch (const pqscope::usage_error&) {
        } catch (...) {
          return 2;  // wrong error
        }
        try {
          pqscope::transaction nested(*c);
          return 3;
        } catch (const pqscope::usage_error&) {
        }
        try {
          c->reconnect();
          return 4;
        } catch (const pqscope::usage_error&) {
        }
        c.reset();  // destroying the parent's connection in the child must not end its session
        // The child's own connection works.
        auto mine = db.connect();
        return mine.query_value<int>("SELECT 40 + 2") == 42 ? 0 : 5;
      });
      BOOST_TEST(code == 0);

      // The parent's session is untouched: same transaction, same backend.
      BOOST_TEST(c->depth() == 1u);
      BOOST_TEST(PQstatus(c->native_handle()) == CONNECTION_OK);
      c->execute("INSERT INTO " + tab.name() + " (id) VALUES (2)");
      if (t.name == "direct") BOOST_TEST(c->query_value<int>("SELECT pg_backend_pid()") == pid);
      tx.commit();
      BOOST_TEST(tab.ids() == "1,2");
      BOOST_TEST(c->query_value<int>("SELECT 1") == 1);
    }
  }
}

BOOST_AUTO_TEST_CASE(on_commit_outside_a_scope_runs_at_once) {
  for (const auto& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo};
      int commits = 0, rollbacks = 0;
      c.on_commit([&] { ++commits; });
      BOOST_TEST(commits == 1);
      c.on_rollback([&] { ++rollbacks; });  // nothing to roll back outside a scope: never runs
      {
        pqscope::transaction tx(c);
        c.execute("SELECT 1");
        tx.rollback();
      }
      BOOST_TEST(rollbacks == 0);
      BOOST_TEST(commits == 1);
    }
  }
}

// PgBouncer in pool_mode = statement forbids transactions: it answers BEGIN with a
// FATAL error and closes. The connection_error carries PgBouncer's own message (not
// libpq's "server closed the connection unexpectedly") and names the pool mode.
// Autocommit statements work there.
BOOST_AUTO_TEST_CASE(statement_pooling_is_named) {
  pqscope::connection c{pqtest::env("PQSCOPE_TEST_PGBOUNCER_STATEMENT")};
  BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
  std::string what;
  try {
    pqscope::atomic(c, [&] { c.execute("SELECT 1"); });
  } catch (const pqscope::connection_error& e) {
    what = e.what();
  }
  BOOST_TEST_MESSAGE("statement pooling: " << what);
  BOOST_TEST(what.find("transaction blocks not allowed in statement pooling mode") != std::string::npos, what);
  BOOST_TEST(what.find("pool_mode = statement") != std::string::npos, what);
  BOOST_TEST(c.depth() == 0u);
}
