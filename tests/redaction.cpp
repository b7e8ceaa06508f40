#define BOOST_TEST_MODULE redaction
#include <utility>  // before Boost.Asio (g++ 12 with Boost 1.74's awaitable.hpp)

#include <boost/test/unit_test.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <pqscope/asio.hpp>
#include <pqscope/pqscope.hpp>

#include "support/asio_run.hpp"
#include "support/asio_stall_relay.hpp"
#include "support/servers.hpp"

// No message pqscope makes, and no conninfo() accessor, shows a password: not through
// connection, database, pool, the asio connection (from a string or a database),
// reconnect(), nor the in-doubt resolver's fresh connection. libpq quotes the bad part
// of a malformed conninfo (a password with a bad %-escape, a whole URI with an unclosed
// IPv6 bracket), and the server names the user in its refusals: every case below makes
// a password reach a message that way, with a password no other text contains, and
// checks it, and its percent-decoded form, against each what().

namespace {

namespace net = boost::asio;
namespace pa = pqscope::asio;
using net::awaitable;
using net::use_awaitable;

// A TCP port on 127.0.0.1 where nothing listens.
int closed_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

struct secret_case {
  std::string name, conninfo;
  std::vector<std::string> forbidden;  // the password as written and as libpq reads it
};

void check_clean(const std::string& where, const std::string& what, const secret_case& c) {
  BOOST_TEST(!what.empty(), where << ": no message");
  for (const std::string& f : c.forbidden)
    BOOST_TEST(what.find(f) == std::string::npos, c.name << ", " << where << " shows \"" << f << "\": " << what);
}

// What fn throws (it must throw a pqscope::error).
std::string message_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const pqscope::error& e) {
    return e.what();
  }
  return {};
}

// The same for a coroutine, run on io (that of the connections it uses).
std::string async_message_of(net::io_context& io, const std::function<awaitable<void>()>& fn) {
  try {
    pqtest::run_coro(io, fn());
  } catch (const pqscope::error& e) {
    return e.what();
  }
  return {};
}

std::string async_message_of(const std::function<awaitable<void>()>& fn) {
  net::io_context io;
  return async_message_of(io, fn);
}

// Every front end that takes a conninfo, each made to fail with it.
void check_every_entry_point(const secret_case& c, bool well_formed) {
  check_clean("connection", message_of([&] { pqscope::connection conn{c.conninfo}; }), c);
  check_clean("database", message_of([&] {
                pqscope::database db{c.conninfo};
                (void)db.connect();
              }),
              c);
  check_clean("pool", message_of([&] {
                pqscope::pool_options po;
                po.acquire_timeout = std::chrono::seconds(20);
                pqscope::pool p{c.conninfo, po};
                (void)p.acquire();
              }),
              c);
  check_clean("asio connection", async_message_of([&]() -> awaitable<void> {
                pa::connection conn{co_await net::this_coro::executor, c.conninfo};
                co_await conn.async_connect(use_awaitable);
              }),
              c);
  if (well_formed)
    check_clean("asio connection from a database", async_message_of([&]() -> awaitable<void> {
                  const pqscope::database db{c.conninfo};
                  pa::connection conn{co_await net::this_coro::executor, db};
                  co_await conn.async_connect(use_awaitable);
                }),
                c);
}

// A role whose name is also its password: the server names it when it refuses it.
struct named_role {
  std::string name = pqtest::unique_name("pqscope_rolepw");
  named_role() { pqtest::observer().execute("CREATE ROLE " + name + " LOGIN"); }
  named_role(const named_role&) = delete;
  named_role& operator=(const named_role&) = delete;
  ~named_role() {
    try {
      pqtest::observer().execute("DROP ROLE IF EXISTS " + name);
    } catch (...) {
    }
  }
  void refuse_logins() const { pqtest::observer().execute("ALTER ROLE " + name + " NOLOGIN"); }
  [[nodiscard]] std::string conninfo(const std::string& base) const {
    return base + " user=" + name + " password=" + name;
  }
};

// libpq_driver whose COMMIT answer never arrives (the server committed).
struct commit_answer_lost : pqscope::libpq_driver {
  pqscope::batch_reply exchange(const std::vector<pqscope::statement>& batch) {
    const bool commit = !batch.empty() && std::strcmp(batch.back().sql, "COMMIT") == 0;
    pqscope::batch_reply br = libpq_driver::exchange(batch);
    if (commit) {
      ::shutdown(PQsocket(native_handle()), SHUT_RDWR);
      br.lost = true;
      br.lost_message = "answer to COMMIT cut off by the test";
      br.replies.back().st = pqscope::reply::status::skipped;
    }
    return br;
  }
};

}  // namespace

BOOST_AUTO_TEST_CASE(redacted_conninfo_hides_every_way_of_writing_a_password) {
  using pqscope::detail::redacted_conninfo;
  BOOST_TEST(redacted_conninfo("host=h password=pw dbname=d") == "host=h password=*** dbname=d");
  BOOST_TEST(redacted_conninfo("host=h password = 'a b\\'c\\\\' dbname=d") == "host=h password = *** dbname=d");
  BOOST_TEST(redacted_conninfo("password='unterminated x") == "password=***");
  BOOST_TEST(redacted_conninfo("host=h sslpassword=k3y") == "host=h sslpassword=***");
  BOOST_TEST(redacted_conninfo("postgresql://u:pw@h:5/d?sslmode=disable") == "postgresql://u:***@h:5/d?sslmode=disable");
  BOOST_TEST(redacted_conninfo("postgres://u:p%40w@h/d?password=x&sslpassword=y&a=b") ==
             "postgres://u:***@h/d?password=***&sslpassword=***&a=b");
  BOOST_TEST(redacted_conninfo("postgresql://u:p@ss/w@h/d") == "postgresql://u:***@h/d");
  // Without a password: the same string.
  for (const char* same : {"host=h dbname=d user=u", "postgresql://u@h:5/d?x=y", "", "postgresql://h/d"})
    BOOST_TEST(redacted_conninfo(same) == same);
  // A message: the whole conninfo, every form of the password.
  BOOST_TEST(pqscope::detail::redact("bad \"postgresql://u:S3%41cret@[::1/d\"; S3Acret", "postgresql://u:S3%41cret@[::1/d") ==
             "bad \"postgresql://u:***@[::1/d\"; ***");
  BOOST_TEST(pqscope::detail::redact("no password here", "host=h") == "no password here");
}

BOOST_AUTO_TEST_CASE(malformed_conninfos) {
  const std::vector<secret_case> cases = {
      {"bad percent-encoding in a URI password", "postgresql://alice:Pct%41Secret%zzPW@127.0.0.1/db",
       {"Pct%41Secret", "PctASecret"}},
      {"bad percent-encoding in a query password", "postgresql://alice@127.0.0.1/db?password=Qry%41Secret%zzPW",
       {"Qry%41Secret", "QryASecret"}},
      {"%00 in a URI password", "postgresql://alice:Nul%41Secret%00PW@127.0.0.1/db", {"Nul%41Secret", "NulASecret"}},
      {"an unclosed IPv6 bracket", "postgresql://alice:Br4cket%41Secret@[::1/db", {"Br4cket%41Secret", "Br4cketASecret"}},
      {"an unknown query parameter", "postgresql://alice:Unkn0wn%41Secret@127.0.0.1/db?bogus=1",
       {"Unkn0wn%41Secret", "Unkn0wnASecret"}},
      {"password==", "postgresql://alice@127.0.0.1/db?password==Eq%41Secret", {"Eq%41Secret", "EqASecret"}},
      {"an unknown key", "host=127.0.0.1 password='Key Secret\\'PW' bogus=1", {"Key Secret", "Secret'PW"}},
      {"an unterminated quote", "host=127.0.0.1 password='Unterminated Secret", {"Unterminated Secret"}},
      {"an unknown key after sslpassword", "host=127.0.0.1 sslpassword=SslKeySecret bogus=1", {"SslKeySecret"}},
  };
  for (const secret_case& c : cases) BOOST_TEST_CONTEXT(c.name) {
      // Each is refused as a usage_error before anything is tried.
      BOOST_CHECK_THROW(pqscope::database{c.conninfo}, pqscope::usage_error);
      check_every_entry_point(c, false);
    }
}

BOOST_AUTO_TEST_CASE(unreachable_conninfos) {
  const std::string port = std::to_string(closed_port());
  const std::vector<secret_case> cases = {
      {"a closed port", "host=127.0.0.1 port=" + port + " password='Closed Port\\\\Secret'",
       {"Closed Port", "PortSecret"}},
      {"a closed port, URI", "postgresql://alice:Cl0sed%41Secret@127.0.0.1:" + port + "/db",
       {"Cl0sed%41Secret", "Cl0sedASecret"}},
      // An unescaped '/' ends libpq's user:password early: the rest reads as the port.
      {"a '/' in a URI password", "postgresql://alice:Sl4shSecret/PW@127.0.0.1:" + port + "/db", {"Sl4shSecret"}},
  };
  for (const secret_case& c : cases) BOOST_TEST_CONTEXT(c.name) { check_every_entry_point(c, true); }
}

// The server's refusal names the role: here the role's name is its password.
BOOST_AUTO_TEST_CASE(refused_logins) {
  for (const pqtest::target& t : pqtest::targets()) BOOST_TEST_CONTEXT(t.name) {
      const std::string name = pqtest::unique_name("pqscope_nosuchrole");
      const secret_case c{"a role that does not exist", t.conninfo + " user=" + name + " password=" + name, {name}};
      check_every_entry_point(c, true);
    }
}

BOOST_AUTO_TEST_CASE(reconnect_and_asio_connect_again) {
  const pqtest::target t{"direct", pqtest::env("PQSCOPE_TEST_DIRECT"), {}};
  const named_role role;
  const secret_case c{"reconnect", role.conninfo(t.conninfo), {role.name}};
  pqscope::connection conn{c.conninfo};
  net::io_context io;
  pa::connection aconn{io, c.conninfo};
  pqtest::run_coro(io, aconn.async_connect(use_awaitable));
  role.refuse_logins();
  check_clean("reconnect()", message_of([&] { conn.reconnect(); }), c);
  check_clean("asio async_connect() again", async_message_of(io, [&]() -> awaitable<void> {
                co_await aconn.async_connect(use_awaitable);
              }),
              c);
}

// The resolver of a lost COMMIT connects afresh with the same conninfo; its
// failure is part of the in_doubt_error.
BOOST_AUTO_TEST_CASE(in_doubt_resolver) {
  const pqtest::target t{"direct", pqtest::env("PQSCOPE_TEST_DIRECT"), {}};
  pqscope::transaction_options o;
  o.resolve_in_doubt = true;
  {
    const named_role role;
    const secret_case c{"in-doubt resolver", role.conninfo(t.conninfo), {role.name}};
    pqscope::basic_connection<commit_answer_lost> conn{c.conninfo};
    const std::string what = message_of([&] {
      pqscope::atomic(conn, o, [&] {
        conn.execute("SELECT pg_current_xact_id()");  // an xid, so that there is something to resolve
        role.refuse_logins();
      });
    });
    BOOST_TEST(what.find("asking the server about xid") != std::string::npos, what);
    BOOST_TEST(what.find("not permitted to log in") != std::string::npos, what);
    check_clean("the blocking resolver", what, c);
  }
  {
    const named_role role;
    const secret_case c{"asio in-doubt resolver", role.conninfo(t.conninfo), {role.name}};
    pqtest::asio_stall_relay relay{c.conninfo};
    const std::string what = async_message_of([&]() -> awaitable<void> {
      pa::connection conn{co_await net::this_coro::executor, relay.conninfo()};
      co_await conn.async_connect(use_awaitable);
      co_await pa::async_atomic(conn, o, [&]() -> awaitable<void> {
        co_await conn.async_execute("SELECT pg_current_xact_id()", use_awaitable);
        role.refuse_logins();
        relay.cut_after_commit();
      });
    });
    BOOST_TEST(what.find("asking the server about xid") != std::string::npos, what);
    BOOST_TEST(what.find("not permitted to log in") != std::string::npos, what);
    check_clean("the asio resolver", what, c);
  }
}

// conninfo() shows no password; the session still connects with it.
BOOST_AUTO_TEST_CASE(conninfo_accessors_show_no_password) {
  const pqtest::target t{"direct", pqtest::env("PQSCOPE_TEST_DIRECT"), {}};
  const std::string ci = t.conninfo + " password='Acc3ssor Secret'";
  const secret_case c{"accessors", ci, {"Acc3ssor"}};
  auto password_of = [](PGconn* pg) {
    std::string out;
    if (PQconninfoOption* opts = PQconninfo(pg)) {
      for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
        if (std::strcmp(o->keyword, "password") == 0 && o->val != nullptr) out = o->val;
      PQconninfoFree(opts);
    }
    return out;
  };
  const pqscope::database db{ci};
  check_clean("database::conninfo()", db.conninfo(), c);
  BOOST_TEST(db.conninfo() == t.conninfo + " password=***");
  pqscope::connection conn = db.connect();
  check_clean("connection::conninfo()", conn.conninfo(), c);
  BOOST_TEST(password_of(conn.native_handle()) == "Acc3ssor Secret");  // the original was used
  {
    auto borrowed = pqscope::connection::borrow(conn.native_handle());
    check_clean("conninfo() of a borrowed connection", borrowed.conninfo(), c);
  }
  net::io_context io;
  pqtest::run_coro(io, [&]() -> awaitable<void> {
    pa::connection a{co_await net::this_coro::executor, db};
    co_await a.async_connect(use_awaitable);
    check_clean("asio connection::conninfo()", a.conninfo(), c);
    BOOST_TEST(password_of(a.native_handle()) == "Acc3ssor Secret");
  }());
  // Without a password, conninfo() is the string given.
  BOOST_TEST(pqscope::database{t.conninfo}.conninfo() == t.conninfo);
}
