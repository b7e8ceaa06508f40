// Client-side time bounds: connection_options::network_timeout and the connect
// and TCP defaults. A relay inside the test (support/stall_relay.hpp) stops
// forwarding in either direction at each point of a transaction, directly and
// through PgBouncer: every call returns within network_timeout plus the grace,
// nothing is half-applied (checked from another session), and the server-side
// session does not stay idle in transaction once the client's goodbye can reach it.

#define BOOST_TEST_MODULE network_timeout
#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <future>
#include <string>
#include <thread>

#include "support/servers.hpp"
#include "support/stall_relay.hpp"

namespace {

using ms = std::chrono::milliseconds;
using clock_type = std::chrono::steady_clock;

// Long enough that ordinary statements fit on a loaded 2-core machine running two test processes.
constexpr ms timeout{400};
// network_timeout, the grace (min(timeout, 1 s)), and room for a loaded 2-core machine.
constexpr ms bound = timeout + timeout + ms(500);

pqscope::connection_options with_timeout(ms t = timeout) {
  pqscope::connection_options o;
  o.network_timeout = t;
  return o;
}

// How long fn took, in ms.
long elapsed_ms(const std::function<void()>& fn) {
  const auto start = clock_type::now();
  fn();
  return static_cast<long>(std::chrono::duration_cast<ms>(clock_type::now() - start).count());
}

long slowest_ms = 0;  // the slowest bounded call so far, for the test log

// Runs fn, which must throw E, and returns how long it took.
template <class E>
long throws_within(const std::function<void()>& fn, const std::string& what) {
  bool thrown = false;
  const long t = elapsed_ms([&] {
    try {
      fn();
    } catch (const E&) {
      thrown = true;
    }
  });
  BOOST_TEST(thrown, what << " throws the expected type");
  BOOST_TEST(t <= bound.count(), what << " took " << t << " ms");
  if (t > slowest_ms) slowest_ms = t;
  return t;
}

// Waits (up to 5 s) until no session of this application_name is inside a transaction.
bool no_transaction_left(const std::string& app) {
  for (int i = 0; i < 100; ++i) {
    if (pqtest::shared_observer().query_value<long>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND xact_start IS NOT NULL", app) == 0)
      return true;
    std::this_thread::sleep_for(ms(50));
  }
  return false;
}

// A TCP listener that never accepts: the kernel completes the handshake, libpq
// sends its startup packet, and no answer ever comes.
class silent_listener {
 public:
  silent_listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    BOOST_REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    BOOST_REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof a;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~silent_listener() { ::close(fd_); }
  silent_listener(const silent_listener&) = delete;
  silent_listener& operator=(const silent_listener&) = delete;
  [[nodiscard]] int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

int sockopt(pqscope::connection& c, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  ::getsockopt(PQsocket(c.native_handle()), level, name, &v, &len);
  return v;
}

std::string conninfo_value(pqscope::connection& c, const std::string& key) {
  std::string v;
  if (PQconninfoOption* opts = PQconninfo(c.native_handle())) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (key == o->keyword && o->val != nullptr) v = o->val;
    PQconninfoFree(opts);
  }
  return v;
}

}  // namespace

// libpq has no default connect_timeout: without one, a server that accepts and
// never answers holds connect() for the kernel's minutes.
BOOST_AUTO_TEST_CASE(connecting_to_a_silent_listener_is_bounded) {
  silent_listener silent;
  const std::string base = "host=127.0.0.1 user=postgres dbname=pqscope port=" + std::to_string(silent.port());
  auto attempt = [](std::string conninfo, pqscope::connection_options o) {
    return std::async(std::launch::async, [conninfo, o] {
      const auto start = clock_type::now();
      try {
        pqscope::connection c{conninfo, o};
        return -1L;  // connected: wrong
      } catch (const pqscope::connection_error&) {
        return static_cast<long>(std::chrono::duration_cast<ms>(clock_type::now() - start).count());
      }
    });
  };
  // The three run side by side: the default costs its 10 s once.
  auto by_default = attempt(base, {});
  auto by_timeout = attempt(base, with_timeout(ms(1000)));
  auto by_conninfo = attempt(base + " connect_timeout=3", with_timeout(ms(1000)));
  // Several hosts: a silent first one costs connect_timeout, then the next is tried.
  const std::string direct = pqtest::env("PQSCOPE_TEST_DIRECT");
  std::string real_port;
  {
    pqscope::connection probe{direct};
    real_port = PQport(probe.native_handle());
  }
  auto next_host = std::async(std::launch::async, [&] {
    const auto start = clock_type::now();
    pqscope::connection c{"host=127.0.0.1,127.0.0.1 user=postgres dbname=pqscope port=" +
                              std::to_string(silent.port()) + "," + real_port,
                          with_timeout(ms(1000))};
    BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    return static_cast<long>(std::chrono::duration_cast<ms>(clock_type::now() - start).count());
  });
  // Without a bound these would hang for minutes: give up on them loudly instead.
  for (auto* f : {&by_default, &by_timeout, &by_conninfo, &next_host})
    if (f->wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
      std::cerr << "connecting to a silent listener is not bounded" << std::endl;
      std::_Exit(1);
    }
  const long d = by_default.get(), t = by_timeout.get(), ci = by_conninfo.get(), n = next_host.get();
  BOOST_TEST_MESSAGE("silent listener: default " << d << " ms, network_timeout 1 s " << t << " ms, connect_timeout=3 "
                                                 << ci << " ms, next host after " << n << " ms");
  // libpq counts whole seconds from time(): connect_timeout=N ends after N-1 to N s.
  BOOST_TEST((d >= 8500 && d <= 11500), "default connect bound: " << d << " ms");
  BOOST_TEST((t >= 900 && t <= 2500), "network_timeout 1 s gives connect_timeout=2: " << t << " ms");
  BOOST_TEST((ci >= 1900 && ci <= 3500), "the conninfo's connect_timeout wins: " << ci << " ms");
  BOOST_TEST((n >= 900 && n <= 3000), "the next host is tried: " << n << " ms");
}

// The TCP defaults reach the socket unless the conninfo sets its own.
BOOST_AUTO_TEST_CASE(tcp_defaults_are_applied_unless_the_conninfo_sets_them) {
  const std::string direct = pqtest::env("PQSCOPE_TEST_DIRECT");
  pqscope::connection c{direct};
  BOOST_TEST(sockopt(c, SOL_SOCKET, SO_KEEPALIVE) == 1);
  BOOST_TEST(sockopt(c, IPPROTO_TCP, TCP_KEEPIDLE) == 15);
  BOOST_TEST(sockopt(c, IPPROTO_TCP, TCP_KEEPINTVL) == 5);
  BOOST_TEST(sockopt(c, IPPROTO_TCP, TCP_KEEPCNT) == 3);
  BOOST_TEST(sockopt(c, IPPROTO_TCP, TCP_USER_TIMEOUT) == 30000);
  // The test scripts' conninfo sets connect_timeout=10 itself; without it the default is 10 as well.
  BOOST_TEST(conninfo_value(c, "connect_timeout") == "10");

  pqscope::connection own{direct + " keepalives_idle=42 tcp_user_timeout=4321 connect_timeout=7"};
  BOOST_TEST(sockopt(own, IPPROTO_TCP, TCP_KEEPIDLE) == 42);
  BOOST_TEST(sockopt(own, IPPROTO_TCP, TCP_USER_TIMEOUT) == 4321);
  BOOST_TEST(sockopt(own, IPPROTO_TCP, TCP_KEEPINTVL) == 5);
  BOOST_TEST(conninfo_value(own, "connect_timeout") == "7");

  // The environment counts as set, as libpq reads it.
  ::setenv("PGCONNECT_TIMEOUT", "9", 1);
  std::string no_ct = direct;
  no_ct.replace(no_ct.find("connect_timeout=10"), std::string("connect_timeout=10").size(), "");
  {
    pqscope::connection env_set{no_ct};
    BOOST_TEST(conninfo_value(env_set, "connect_timeout") == "9");
  }
  ::unsetenv("PGCONNECT_TIMEOUT");
  // A service file's values are not seen before connecting: pqscope's default wins there.
  {
    const std::string file = "/tmp/pqscope_service_" + std::to_string(::getpid());
    {
      std::ofstream out(file);
      out << "[pqscope_test]\nconnect_timeout=4\n";
    }
    ::setenv("PGSERVICEFILE", file.c_str(), 1);
    pqscope::connection by_service{no_ct + " service=pqscope_test"};
    BOOST_TEST(conninfo_value(by_service, "connect_timeout") == "10");
    ::unsetenv("PGSERVICEFILE");
    std::remove(file.c_str());
  }
  pqscope::connection derived{no_ct, with_timeout(ms(2500))};
  BOOST_TEST(conninfo_value(derived, "connect_timeout") == "3");
}

// A statement slower than network_timeout is cancelled: query_canceled, its scope
// doomed, the connection still usable.
BOOST_AUTO_TEST_CASE(slow_statement_is_cancelled) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    // Pgpool-II closes a cancel request's connection about a second after it came,
    // and the next statement waits for that: it needs a network_timeout above 1 s.
    const ms limit = t.name == "pgpool" ? ms(1200) : timeout;
    const ms bound_here = limit + std::min(limit, ms(1000)) + ms(500);
    pqscope::connection c{t.conninfo, with_timeout(limit)};
    auto throws_within = [&](const std::function<void()>& fn, const std::string& what) {
      const long took = elapsed_ms([&] { BOOST_CHECK_THROW(fn(), pqscope::query_canceled); });
      BOOST_TEST(took <= bound_here.count(), what << " took " << took << " ms");
    };
    throws_within([&] { c.execute("SELECT pg_sleep(5)"); }, "autocommit pg_sleep");
    BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
    {
      pqscope::transaction tx{c};
      c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
      throws_within([&] { c.execute("SELECT pg_sleep(5)"); }, "pg_sleep in a scope");
      BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::transaction_aborted);
      BOOST_CHECK_THROW(tx.commit(), pqscope::transaction_aborted);
    }
    BOOST_TEST(pqtest::committed_ids(table) == "");
    // A nested scope's cancelled statement rolls back only that scope.
    pqscope::atomic(c, [&] {
      c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')");
      BOOST_CHECK_THROW(pqscope::atomic(c,
                                        [&] {
                                          c.execute("INSERT INTO " + table.name() + " VALUES (3, 'x')");
                                          c.execute("SELECT pg_sleep(5)");
                                        }),
                        pqscope::query_canceled);
    });
    BOOST_TEST(pqtest::committed_ids(table) == "2");
    // Work that fits in the bound is untouched.
    BOOST_TEST(c.query_value<int>("SELECT 7 FROM pg_sleep(0.05)") == 7);
  });
}

// PostgreSQL signals a backend twice for one cancel request (the process, then its
// process group); the statement after a cancelled one must never meet the second.
BOOST_AUTO_TEST_CASE(a_cancel_never_reaches_the_next_statement) {
  for (const auto& t : pqtest::targets()) {
    if (t.name == "pgpool") continue;  // its cancel takes a second: covered above
    BOOST_TEST_CONTEXT(t.name) {
      pqscope::connection c{t.conninfo, with_timeout(ms(100))};
      int stray = 0;
      for (int round = 0; round < 15; ++round) {
        BOOST_CHECK_THROW(c.execute("SELECT pg_sleep(5)"), pqscope::query_canceled);
        try {
          BOOST_TEST(c.query_value<int>("SELECT 7") == 7);
        } catch (const pqscope::query_canceled&) {
          ++stray;
        }
      }
      BOOST_TEST(stray == 0);
    }
  }
}

// The relay stops forwarding one direction at each point of a transaction.
BOOST_AUTO_TEST_CASE(stalled_network_at_every_point) {
  enum class point { first_statement, mid_transaction, commit };
  for (const auto& t : pqtest::targets()) {
    for (auto dir : {pqtest::stall_relay::to_server, pqtest::stall_relay::to_client}) {
      for (auto at : {point::first_statement, point::mid_transaction, point::commit}) {
        const char* dname = dir == pqtest::stall_relay::to_server ? "to_server" : "to_client";
        const char* pname = at == point::first_statement ? "first statement (with BEGIN)"
                            : at == point::mid_transaction ? "mid-transaction"
                                                           : "COMMIT";
        BOOST_TEST_CONTEXT(t.name << ", stalled " << dname << " at " << pname) {
          pqtest::scratch_table table;
          const std::string app = pqtest::unique_name("stall");
          pqtest::stall_relay relay{t};
          pqscope::connection c{relay.conninfo() + " application_name=" + app, with_timeout()};
          const std::string ins = "INSERT INTO " + table.name() + " VALUES ($1, 'x')";
          {
            pqscope::transaction tx{c};
            if (at == point::first_statement) {
              relay.stall(dir);
              throws_within<pqscope::connection_error>([&] { c.execute(ins, 1); }, "the first statement");
            } else {
              c.execute(ins, 1);
              if (at == point::mid_transaction) {
                relay.stall(dir);
                throws_within<pqscope::connection_error>([&] { c.execute(ins, 2); }, "a statement");
              } else {
                c.execute(ins, 2);
                relay.stall(dir);
                throws_within<pqscope::in_doubt_error>([&] { tx.commit(); }, "COMMIT");
              }
            }
            // The connection is known broken: no further wait.
            BOOST_TEST(elapsed_ms([&] { BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::connection_error); }) < 50);
          }  // the scope ends quietly
          BOOST_TEST(c.depth() == 0u);
          if (dir == pqtest::stall_relay::to_client) {
            // The client's goodbye travels the working direction: the session ends now.
            BOOST_TEST(no_transaction_left(app));
          }
          relay.resume();  // the partition heals: held bytes and the goodbye arrive
          BOOST_TEST(no_transaction_left(app));
          const std::string ids = pqtest::committed_ids(table);
          if (at == point::commit) {
            // In doubt, for real: the COMMIT ran (its answer was held), or it arrives once the path heals.
            BOOST_TEST((ids == "1,2" || ids == ""), "all or nothing: '" << ids << "'");
            if (t.name == "direct") BOOST_TEST(ids == "1,2");
          } else {
            BOOST_TEST(ids == "");
          }
          BOOST_TEST(relay.error() == "");
          // The same object reconnects (here through the healed relay).
          c.reconnect();
          BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
        }
      }
    }
  }
  std::cout << "network_timeout: 400 ms + 400 ms grace; slowest stalled call " << slowest_ms << " ms" << std::endl;
}

// A COPY is bounded the same way: each call that waits on the network (a chunk
// of rows, the end of the COPY, the next row read) gets network_timeout and the
// grace. The cancel request reaches a server that is inside the COPY, so the
// COPY may end cancelled (query_canceled, the scope doomed) rather than with the
// connection given up; either way the call returns in time and nothing is kept.
BOOST_AUTO_TEST_CASE(a_stalled_copy_is_bounded) {
  for (const auto& t : pqtest::targets()) {
    for (auto dir : {pqtest::stall_relay::to_server, pqtest::stall_relay::to_client}) {
      for (bool in : {true, false}) {
        if (!in && dir == pqtest::stall_relay::to_server) continue;  // COPY TO STDOUT sends nothing to the server
        const char* dname = dir == pqtest::stall_relay::to_server ? "to_server" : "to_client";
        BOOST_TEST_CONTEXT(t.name << ", stalled " << dname << " during COPY " << (in ? "FROM STDIN" : "TO STDOUT")) {
          pqtest::scratch_table table;
          const std::string app = pqtest::unique_name("stall_copy");
          pqtest::stall_relay relay{t};
          pqscope::connection c{relay.conninfo() + " application_name=" + app, with_timeout()};
          {
            pqscope::transaction tx{c};
            c.execute("INSERT INTO " + table.name() + " VALUES (0, 'before')");
            if (in) {
              auto w = c.copy_in("COPY " + table.name() + " FROM STDIN");
              for (int i = 1; i <= 1000; ++i) w.write_row(i, "row");
              relay.stall(dir);
              throws_within<pqscope::error>([&] { w.finish(); }, "finish()");
            } else {
              auto r = c.copy_out("COPY (SELECT g, repeat('x', 100) FROM generate_series(1, 200000) g) TO STDOUT");
              BOOST_TEST((r.next<int, std::string>().has_value()));
              relay.stall(dir);
              throws_within<pqscope::connection_error>(
                  [&] {
                    while (r.next<int, std::string>()) {
                    }
                  },
                  "reading rows");
            }
            BOOST_CHECK_THROW(c.execute("SELECT 1"), pqscope::error);  // broken, or doomed
          }
          BOOST_TEST(c.depth() == 0u);
          relay.resume();
          BOOST_TEST(no_transaction_left(app));
          BOOST_TEST(pqtest::committed_ids(table) == "");
        }
      }
    }
  }
}

// A partition that does not heal: the server's idle_in_transaction_session_timeout
// (here SET LOCAL for this one transaction) ends the session the client gave up.
BOOST_AUTO_TEST_CASE(server_guard_ends_a_session_cut_off_for_good) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    const std::string app = pqtest::unique_name("cutoff");
    pqtest::stall_relay relay{t};
    pqscope::connection c{relay.conninfo() + " application_name=" + app, with_timeout()};
    {
      pqscope::transaction tx{c};
      c.set_local("idle_in_transaction_session_timeout", "1000ms");
      c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
      relay.stall(pqtest::stall_relay::both);
      throws_within<pqscope::connection_error>(
          [&] { c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')"); }, "a statement");
    }
    BOOST_TEST(no_transaction_left(app));  // without resume()
    BOOST_TEST(pqtest::committed_ids(table) == "");
  });
}

// resolve_in_doubt settles a COMMIT whose answer was held, on a fresh connection.
BOOST_AUTO_TEST_CASE(in_doubt_commit_is_resolved) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    pqscope::transaction_options o;
    o.resolve_in_doubt = true;
    {
      // The COMMIT ran; its answer is held: commit() returns, the row is there.
      pqtest::stall_relay relay{t};
      pqscope::connection c{relay.conninfo(), with_timeout()};
      pqscope::transaction tx{c, o};
      c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
      relay.stall(pqtest::stall_relay::to_client);
      BOOST_CHECK_NO_THROW(tx.commit());
      BOOST_TEST(pqtest::committed_ids(table) == "1");
    }
    {
      // The COMMIT never arrived and the server's guard (longer than the client's
      // bound, so the client gives up first) ended the session: rolled back.
      pqtest::stall_relay relay{t};
      pqscope::connection c{relay.conninfo(), with_timeout()};
      pqscope::transaction tx{c, o};
      // 1000 ms: past the client's 800, well inside the resolver's next 800.
      c.set_local("idle_in_transaction_session_timeout", "1000ms");
      c.execute("INSERT INTO " + table.name() + " VALUES (2, 'x')");
      relay.stall(pqtest::stall_relay::to_server);
      bool rolled_back = false;
      try {
        tx.commit();
      } catch (const pqscope::in_doubt_error& e) {
        BOOST_ERROR("resolved: " << e.what());
      } catch (const pqscope::connection_error& e) {
        rolled_back = true;
        BOOST_TEST_MESSAGE("rolled back: " << e.what());
      }
      BOOST_TEST(rolled_back);
      BOOST_TEST(pqtest::committed_ids(table) == "1");
      BOOST_TEST(relay.accepted() == 2);  // the session, then the resolver (no cancel while COMMIT is awaited)
    }
  });
}

// The call's bound holds with resolve_in_doubt: a COMMIT that never reached the
// server leaves its transaction in progress, and the resolver stops asking after
// one more network_timeout plus its grace (it polled for 5 s before), with
// in_doubt_error. Blocking here; asio_faults.cpp has the coroutine twin.
BOOST_AUTO_TEST_CASE(in_doubt_resolution_is_bounded) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    pqscope::transaction_options o;
    o.resolve_in_doubt = true;
    pqtest::stall_relay relay{t};
    pqscope::connection c{relay.conninfo(), with_timeout()};
    pqscope::transaction tx{c, o};
    c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
    relay.stall(pqtest::stall_relay::to_server);
    std::string what;
    const long took = elapsed_ms([&] {
      try {
        tx.commit();
      } catch (const pqscope::in_doubt_error& e) {
        what = e.what();
      }
    });
    BOOST_TEST_MESSAGE(t.name << ": in_doubt_error after " << took << " ms: " << what);
    BOOST_TEST(what.find("no verdict within 800 ms") != std::string::npos, what);
    // The COMMIT's round trip and its grace, then as much again for the resolver.
    BOOST_TEST(took <= (bound + timeout + timeout).count(), "took " << took);
    BOOST_TEST(relay.accepted() == 2);  // the session, then the resolver
  });
}

// The in-doubt resolver's fresh connection meets a black hole too: a listener that
// accepts and never answers. Its connect is bounded by connect_timeout (here the
// conninfo's 2 s), and commit() reports in_doubt_error.
BOOST_AUTO_TEST_CASE(in_doubt_resolution_meets_a_black_hole) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::scratch_table table;
    pqscope::transaction_options o;
    o.resolve_in_doubt = true;
    pqtest::stall_relay relay{t};
    pqscope::connection c{relay.conninfo() + " connect_timeout=2", with_timeout()};
    // -1: commit() returned; -2: it threw something else; else ms until in_doubt_error.
    auto outcome = std::async(std::launch::async, [&]() -> long {
      pqscope::transaction tx{c, o};
      c.execute("INSERT INTO " + table.name() + " VALUES (1, 'x')");
      relay.stall(pqtest::stall_relay::to_client);
      relay.new_connections(pqtest::stall_relay::accept_mode::hold);  // the resolver's connect: accepted, then silence
      const auto start = clock_type::now();
      try {
        tx.commit();
        return -1;
      } catch (const pqscope::in_doubt_error&) {
        return static_cast<long>(std::chrono::duration_cast<ms>(clock_type::now() - start).count());
      } catch (...) {
        return -2;
      }
    });
    if (outcome.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
      std::cerr << "resolving an in-doubt COMMIT is not bounded" << std::endl;
      std::_Exit(1);
    }
    const long took = outcome.get();
    BOOST_TEST_MESSAGE(t.name << ": in_doubt_error after " << took << " ms");
    // timeout + grace, then connect_timeout=2 (libpq: 1 to 2 s), and slack.
    BOOST_TEST((took >= 0 && took <= 800 + 2000 + 1000), "took " << took);
  });
}

// The cancel request itself meets a black hole: the call still returns in time,
// as a lost connection rather than a cancelled statement.
BOOST_AUTO_TEST_CASE(cancel_request_into_a_black_hole_is_bounded) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::stall_relay relay{t};
    pqscope::connection c{relay.conninfo(), with_timeout()};
    relay.new_connections(pqtest::stall_relay::accept_mode::hold);
    throws_within<pqscope::connection_error>([&] { c.execute("SELECT pg_sleep(3)"); }, "pg_sleep");
    BOOST_TEST(relay.accepted() == 2);  // the session, then the cancel request
  });
}

// Every answer came in the grace, but the cancel request is still on its way: the
// statement's result stands; the next round trip waits for that request (a late one
// would cancel it) until its own deadline, then closes the connection unsent.
BOOST_AUTO_TEST_CASE(late_answer_with_a_cancel_still_pending) {
  pqtest::for_each_target([](const pqtest::target& t) {
    pqtest::stall_relay relay{t};
    pqscope::connection c{relay.conninfo(), with_timeout()};
    relay.new_connections(pqtest::stall_relay::accept_mode::hold);
    BOOST_TEST(c.query_value<int>("SELECT 5 FROM pg_sleep(0.6)") == 5);  // after the deadline, within the grace
    try {
      c.execute("SELECT 1");
      BOOST_ERROR("the connection should be closed");
    } catch (const pqscope::connection_error& e) {
      BOOST_TEST(std::string(e.what()).find("cancel request") != std::string::npos, e.what());
    }
  });
}
