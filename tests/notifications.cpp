#define BOOST_TEST_MODULE notifications
#include <boost/test/unit_test.hpp>

// LISTEN / NOTIFY on the blocking connection, against PostgreSQL itself: what is
// received, what is kept while other statements run, what is refused, and the gap
// reported after the session is lost.

#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"

namespace {

using namespace std::chrono_literals;

pqscope::connection listener() {
  pqscope::connection_options o;
  o.pooling = pqscope::pooling::none;
  return pqscope::connection{pqtest::env("PQSCOPE_TEST_DIRECT"), o};
}

using pqtest::notify;

int backend_pid(pqscope::connection& c) { return c.query_value<int>("SELECT pg_backend_pid()"); }

}  // namespace

BOOST_AUTO_TEST_CASE(a_notification_arrives_with_its_sender) {
  auto c = listener();
  const std::string ch = pqtest::unique_name("jobs");
  c.listen(ch);
  BOOST_TEST(c.channels() == std::vector<std::string>{ch});
  BOOST_TEST(!c.wait_notification(0ms).has_value());
  const int sender = pqtest::shared_observer().query_value<int>("SELECT pg_backend_pid()");
  notify(ch, "hello");
  const std::optional<pqscope::notification> n = c.wait_notification(5s);
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(n->channel == ch);
  BOOST_TEST(n->payload == "hello");
  BOOST_TEST(n->sender_pid == sender);
  BOOST_TEST(!n->gap);
}

BOOST_AUTO_TEST_CASE(nothing_within_the_timeout) {
  auto c = listener();
  c.listen(pqtest::unique_name("quiet"));
  const auto start = std::chrono::steady_clock::now();
  BOOST_TEST(!c.wait_notification(300ms).has_value());
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start);
  BOOST_TEST(took.count() >= 300);
  BOOST_TEST(took.count() < 3000);
}

// Notifications that arrive while the connection runs other statements (in
// autocommit and in scopes) are kept, in order, and none is dropped.
BOOST_AUTO_TEST_CASE(notifications_are_kept_while_statements_run) {
  auto c = listener();
  const std::string ch = pqtest::unique_name("busy");
  c.listen(ch);
  int sent = 0;
  for (int round = 0; round < 20; ++round) {
    for (int k = 0; k < 5; ++k) notify(ch, std::to_string(sent++));
    (void)c.query_value<int>("SELECT 1");
    pqscope::atomic(c, [&] {
      (void)c.execute("SELECT pg_sleep(0.001)");
      pqscope::atomic(c, [&] { (void)c.query_value<int>("SELECT 2"); });
    });
  }
  for (int i = 0; i < sent; ++i) {
    const auto n = c.wait_notification(5s);
    BOOST_REQUIRE(n.has_value());
    BOOST_TEST(n->payload == std::to_string(i));
  }
  BOOST_TEST(!c.wait_notification(100ms).has_value());
}

// The name is quoted: case, spaces and quotes are kept, as pg_notify() takes them.
BOOST_AUTO_TEST_CASE(channel_names_are_taken_as_written) {
  auto c = listener();
  const std::string odd = "Mixed Case \"quoted\" " + pqtest::unique_name("x");
  const std::string lower = pqtest::unique_name("mixed");
  c.listen(odd);
  c.listen(lower);
  c.listen(odd);  // again: a no-op
  BOOST_TEST(c.channels().size() == 2u);
  notify(odd, "1");
  notify(lower, "2");
  const auto a = c.wait_notification(5s);
  const auto b = c.wait_notification(5s);
  BOOST_REQUIRE(a.has_value());
  BOOST_REQUIRE(b.has_value());
  BOOST_TEST(a->channel == odd);
  BOOST_TEST(b->channel == lower);
}

BOOST_AUTO_TEST_CASE(unlisten_stops_delivery) {
  auto c = listener();
  const std::string ch = pqtest::unique_name("stop");
  c.listen(ch);
  c.unlisten(ch);
  c.unlisten(ch);  // again: a no-op
  BOOST_TEST(c.channels().empty());
  notify(ch, "late");
  BOOST_TEST(!c.wait_notification(300ms).has_value());
}

BOOST_AUTO_TEST_CASE(refused_where_it_cannot_work) {
  // Behind PgBouncer (pooling::transaction, the default): the session is shared.
  pqscope::connection pooled{pqtest::env("PQSCOPE_TEST_PGBOUNCER")};
  BOOST_CHECK_EXCEPTION(pooled.listen("jobs"), pqscope::usage_error, [](const pqscope::usage_error& e) {
    return std::string(e.what()).find("pooling::none") != std::string::npos;
  });
  BOOST_CHECK_THROW((void)pooled.wait_notification(0ms), pqscope::usage_error);

  auto c = listener();
  pqscope::atomic(c, [&] {
    BOOST_CHECK_EXCEPTION(c.listen("jobs"), pqscope::usage_error, [](const pqscope::usage_error& e) {
      return std::string(e.what()).find("inside a scope") != std::string::npos;
    });
    BOOST_CHECK_THROW((void)c.wait_notification(0ms), pqscope::usage_error);
  });
  BOOST_CHECK_THROW(c.listen(""), pqscope::usage_error);
  BOOST_CHECK_THROW(c.listen(std::string(64, 'a')), pqscope::usage_error);
  BOOST_CHECK_THROW(c.listen(std::string("a\0b", 3)), pqscope::usage_error);
  BOOST_CHECK_THROW((void)c.wait_notification(-1ms), pqscope::usage_error);
  c.listen(std::string(63, 'a'));  // the longest name PostgreSQL keeps whole
  BOOST_TEST(c.channels().size() == 1u);
}

// The session dies with a notification received and not yet taken: that one comes
// first, then the gap, and the new session listens to every channel again.
BOOST_AUTO_TEST_CASE(a_lost_session_reports_the_gap_and_listens_again) {
  auto c = listener();
  const std::string a = pqtest::unique_name("gap_a");
  const std::string b = pqtest::unique_name("gap_b");
  c.listen(a);
  c.listen(b);
  const int old_pid = backend_pid(c);
  notify(a, "before");
  (void)c.query_value<int>("SELECT 1");  // the notification reaches the client with this answer
  pqtest::terminate_backend(old_pid);
  notify(a, "missed");  // nobody listens now

  auto first = c.wait_notification(5s);
  BOOST_REQUIRE(first.has_value());
  BOOST_TEST(first->payload == "before");
  auto gap = c.wait_notification(5s);
  BOOST_REQUIRE(gap.has_value());
  BOOST_TEST(gap->gap);
  BOOST_TEST(gap->channel.empty());
  BOOST_TEST(backend_pid(c) != old_pid);
  BOOST_TEST(c.channels().size() == 2u);

  notify(b, "after");
  notify(a, "after too");
  auto n1 = c.wait_notification(5s);
  auto n2 = c.wait_notification(5s);
  BOOST_REQUIRE(n1.has_value());
  BOOST_REQUIRE(n2.has_value());
  BOOST_TEST(!n1->gap);
  BOOST_TEST(n1->channel == b);
  BOOST_TEST(n2->channel == a);
  BOOST_TEST(!c.wait_notification(100ms).has_value());  // the gap is reported once
}

// Lost while waiting (nothing received first): the wait itself opens the new session.
BOOST_AUTO_TEST_CASE(lost_while_waiting) {
  auto c = listener();
  const std::string ch = pqtest::unique_name("wait_lost");
  c.listen(ch);
  pqtest::terminate_backend(backend_pid(c));
  auto gap = c.wait_notification(5s);
  BOOST_REQUIRE(gap.has_value());
  BOOST_TEST(gap->gap);
  notify(ch, "x");
  auto n = c.wait_notification(5s);
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(n->payload == "x");
}

BOOST_AUTO_TEST_CASE(reconnect_listens_again_and_reports_the_gap) {
  auto c = listener();
  const std::string ch = pqtest::unique_name("reconnect");
  c.listen(ch);
  notify(ch, "pending");
  (void)c.query_value<int>("SELECT 1");  // it reaches the client with this answer
  c.reconnect();
  auto pending = c.wait_notification(0ms);  // received by the old session: not lost
  BOOST_REQUIRE(pending.has_value());
  BOOST_TEST(pending->payload == "pending");
  auto gap = c.wait_notification(0ms);
  BOOST_REQUIRE(gap.has_value());
  BOOST_TEST(gap->gap);
  notify(ch, "y");
  auto n = c.wait_notification(5s);
  BOOST_REQUIRE(n.has_value());
  BOOST_TEST(n->payload == "y");
}

// Nothing listened to: a lost session is an error, as for any other call.
BOOST_AUTO_TEST_CASE(lost_without_channels_is_a_connection_error) {
  auto c = listener();
  pqtest::terminate_backend(backend_pid(c));
  BOOST_CHECK_THROW((void)c.wait_notification(1s), pqscope::connection_error);
  c.reconnect();
  BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
}
