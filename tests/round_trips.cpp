#define BOOST_TEST_MODULE round_trips
#include <boost/test/unit_test.hpp>

// Exact round trips. Every cost is checked twice: by the library's own
// stats() and, independently, on the wire by a relay that counts Sync messages
// (one per round trip) and Parse/Bind/Execute (one each per statement sent).

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include <pqscope/pqscope.hpp>

#include "support/servers.hpp"
#include "support/wire_counter.hpp"

namespace {

using u64 = std::uint64_t;

// What a piece of work cost: stats() deltas, then what the relay saw.
struct cost {
  u64 round_trips = 0, statements = 0, controls = 0, savepoints = 0, committed = 0, rolled_back = 0;
  u64 syncs = 0, parses = 0, binds = 0, executes = 0, simple_queries = 0;
  friend std::ostream& operator<<(std::ostream& os, const cost& c) {
    return os << "{round_trips " << c.round_trips << ", statements " << c.statements << ", controls " << c.controls
              << ", savepoints " << c.savepoints << ", committed " << c.committed << ", rolled_back "
              << c.rolled_back << " | wire: syncs " << c.syncs << ", parses " << c.parses << ", binds " << c.binds
              << ", executes " << c.executes << ", simple queries " << c.simple_queries << "}";
  }
};

// The expected stats() deltas, in the order of connection_stats.
struct expected {
  u64 round_trips, statements, controls, savepoints, committed, rolled_back;
};

// A connection whose every byte passes through a wire_counter.
struct session {
  explicit session(const pqtest::target& t) : relay(t), conn(relay.conninfo()) {}
  pqtest::wire_counter relay;  // declared first: outlives the connection
  pqscope::connection conn;

  // Runs fn, which starts and ends at depth 0. The autocommit SELECT after it
  // proves that the relay has seen every byte fn sent, even one never answered;
  // the SELECT itself is subtracted.
  template <class F>
  cost measure(F&& fn) {
    const pqscope::connection_stats s0 = conn.stats();
    const cost w0 = wire();
    fn();
    const pqscope::connection_stats s1 = conn.stats();
    conn.execute("SELECT 1");
    const cost w1 = wire();
    cost c;
    c.round_trips = s1.round_trips - s0.round_trips;
    c.statements = s1.statements - s0.statements;
    c.controls = s1.control_statements - s0.control_statements;
    c.savepoints = s1.savepoints - s0.savepoints;
    c.committed = s1.transactions_committed - s0.transactions_committed;
    c.rolled_back = s1.transactions_rolled_back - s0.transactions_rolled_back;
    c.syncs = w1.syncs - w0.syncs - 1;
    c.parses = w1.parses - w0.parses - 1;
    c.binds = w1.binds - w0.binds - 1;
    c.executes = w1.executes - w0.executes - 1;
    c.simple_queries = w1.simple_queries - w0.simple_queries;
    return c;
  }

  [[nodiscard]] cost wire() const {
    cost c;
    c.syncs = relay.syncs();
    c.parses = relay.parses();
    c.binds = relay.binds();
    c.executes = relay.executes();
    c.simple_queries = relay.simple_queries();
    return c;
  }
};

// One round trip is one Sync; every statement sent (user or control) is one
// Parse/Bind/Execute of the extended protocol; pqscope never uses simple Query.
void check(const cost& c, const expected& e) {
  BOOST_TEST_INFO("measured " << c);
  BOOST_TEST(c.round_trips == e.round_trips);
  BOOST_TEST(c.statements == e.statements);
  BOOST_TEST(c.controls == e.controls);
  BOOST_TEST(c.savepoints == e.savepoints);
  BOOST_TEST(c.committed == e.committed);
  BOOST_TEST(c.rolled_back == e.rolled_back);
  BOOST_TEST(c.syncs == e.round_trips);
  BOOST_TEST(c.parses == e.statements + e.controls);
  BOOST_TEST(c.binds == e.statements + e.controls);
  BOOST_TEST(c.executes == e.statements + e.controls);
  BOOST_TEST(c.simple_queries == 0u);
}

// `depth` scopes, each a pqscope::transaction inside the previous; body runs in the innermost.
void nest(pqscope::connection& c, u64 depth, const std::function<void()>& body) {
  if (depth == 0) return body();
  pqscope::transaction tx{c};
  nest(c, depth - 1, body);
  tx.commit();
}

void nest_rollback(pqscope::connection& c, u64 depth) {
  if (depth == 0) return;
  pqscope::transaction tx{c};
  nest_rollback(c, depth - 1);
  tx.rollback();
}

void insert(pqscope::connection& c, const pqtest::scratch_table& t, int id) {
  c.execute("INSERT INTO " + t.name() + " (id) VALUES ($1)", id);
}

// Committed rows as another session sees them, over one observer connection
// (scratch_table::count() connects anew on every call).
class outside_view {
 public:
  explicit outside_view(const pqtest::scratch_table& t) : table_(t), obs_(pqtest::observer()) {}
  long count() { return obs_.query_value<long>("SELECT count(*) FROM " + table_.name()); }
  // Ids in [lo, hi], comma-separated in order.
  std::string ids(int lo, int hi) {
    return obs_
        .query_value<std::optional<std::string>>(
            "SELECT string_agg(id::text, ',' ORDER BY id) FROM " + table_.name() + " WHERE id BETWEEN $1 AND $2", lo,
            hi)
        .value_or("");
  }

 private:
  const pqtest::scratch_table& table_;
  pqscope::connection obs_;
};

}  // namespace

// The relay's parser must count the same messages however the bytes are split.
BOOST_AUTO_TEST_CASE(wire_counter_parses_split_messages) {
  std::string stream;
  auto be32 = [&](std::uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) stream += static_cast<char>((v >> shift) & 0xff);
  };
  be32(8), be32(pqtest::wire_detail::frontend_parser::ssl_request);  // answered 'N', then the real startup
  be32(8 + 14), be32(196608), stream += std::string("user\0postgres\0", 14);
  auto typed = [&](char type, const std::string& body) {
    stream += type;
    be32(static_cast<std::uint32_t>(4 + body.size()));
    stream += body;
  };
  for (int i = 0; i < 3; ++i) {
    typed('P', std::string("\0SELECT 1\0\0\0", 12));
    typed('B', std::string(14, '\0'));
    typed('D', std::string("P\0", 2));
    typed('E', std::string(5, '\0'));
    typed('S', "");
  }
  typed('Q', std::string("SELECT 1\0", 9));
  typed('X', "");

  for (std::size_t step : {stream.size(), std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{7}}) {
    BOOST_TEST_CONTEXT("fed " << step << " byte(s) at a time") {
      pqtest::wire_detail::frontend_parser parser;
      std::vector<unsigned char> seen;
      for (std::size_t at = 0; at < stream.size(); at += step) {
        const std::size_t n = std::min(step, stream.size() - at);
        parser.feed(reinterpret_cast<const unsigned char*>(stream.data() + at), n,
                    [&](unsigned char type) { seen.push_back(type); });
      }
      const std::vector<unsigned char> want = {0,   0,   'P', 'B', 'D', 'E', 'S', 'P', 'B', 'D', 'E',
                                               'S', 'P', 'B', 'D', 'E', 'S', 'Q', 'X'};
      BOOST_TEST(!parser.malformed());
      BOOST_TEST(seen == want, boost::test_tools::per_element());
    }
  }
}

namespace {
std::size_t entries(const char* dir) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir)) ++n;
  return n;
}
}  // namespace

// The relay cleans up after itself: whether its client closed first, it was
// destroyed under a live connection, or no client ever came.
BOOST_AUTO_TEST_CASE(wire_counter_leaves_no_threads_or_fds) {
  const pqtest::target t = pqtest::targets().front();
  { pqtest::wire_counter warm_up{t}; }  // a sanitizer's runtime may start a thread of its own at the first one
  const std::size_t fds = entries("/proc/self/fd"), threads = entries("/proc/self/task");
  { pqtest::wire_counter unused{t}; }
  {
    pqtest::wire_counter relay{t};
    pqscope::connection conn{relay.conninfo()};
    BOOST_TEST(conn.query_value<int>("SELECT 1") == 1);
  }
  {
    std::optional<pqtest::wire_counter> relay{std::in_place, t};
    pqscope::connection conn{relay->conninfo()};
    relay.reset();  // cuts the connection under the client
    BOOST_CHECK_THROW(conn.execute("SELECT 1"), pqscope::connection_error);
  }
  BOOST_TEST(entries("/proc/self/fd") == fds);
  BOOST_TEST(entries("/proc/self/task") == threads);
}

// The relay itself: a fresh connection has sent one startup packet and no
// Sync; closing it sends one Terminate. Absolute stats for a known shape.
BOOST_AUTO_TEST_CASE(stats_of_a_known_shape_from_a_fresh_connection) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      pqtest::wire_counter relay{t};
      {
        pqscope::connection conn{relay.conninfo()};
        BOOST_TEST(relay.startup_packets() == 1u);
        BOOST_TEST(relay.syncs() == 0u);
        BOOST_TEST(relay.parses() == 0u);

        insert(conn, table, 1);  // autocommit
        {
          pqscope::transaction tx0{conn};
          insert(conn, table, 2);  // BEGIN rides along
          {
            pqscope::transaction tx1{conn};
            BOOST_CHECK_THROW(insert(conn, table, 2), pqscope::unique_violation);  // SAVEPOINT rides along
            tx1.rollback();  // ROLLBACK TO + RELEASE wait for the next statement
          }
          {
            pqscope::transaction tx2{conn};
            insert(conn, table, 3);  // ROLLBACK TO, RELEASE, SAVEPOINT and the INSERT: one round trip
            tx2.commit();            // RELEASE waits, then the COMMIT makes it needless
          }
          tx0.commit();
        }
        {
          pqscope::transaction tx3{conn};
          insert(conn, table, 4);
          tx3.rollback();
        }

        const pqscope::connection_stats& s = conn.stats();
        BOOST_TEST(s.round_trips == 7u);
        BOOST_TEST(s.statements == 5u);
        // BEGIN, SAVEPOINT, ROLLBACK TO, RELEASE, SAVEPOINT, COMMIT, BEGIN, ROLLBACK
        BOOST_TEST(s.control_statements == 8u);
        BOOST_TEST(s.savepoints == 2u);
        BOOST_TEST(s.transactions_committed == 1u);
        BOOST_TEST(s.transactions_rolled_back == 1u);
        BOOST_TEST(relay.syncs() == 7u);
        BOOST_TEST(relay.parses() == 13u);
        BOOST_TEST(relay.simple_queries() == 0u);
      }
      BOOST_TEST(relay.wait_closed(std::chrono::seconds(5)));
      BOOST_TEST(relay.terminates() == 1u);
      BOOST_TEST(relay.syncs() == 7u);
      BOOST_TEST(!relay.malformed());
      BOOST_TEST(relay.error() == "");
      BOOST_TEST(table.ids() == "1,2,3");
    }
  }
}

// N statements in the innermost of d scopes: BEGIN and the d-1 SAVEPOINTs ride
// with the first statement, each RELEASE is made needless by the next outer one
// and then by COMMIT: N + 1 round trips.
BOOST_AUTO_TEST_CASE(n_statements_at_depth_d_cost_n_plus_one) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      outside_view outside{table};
      session s{t};
      int id = 0;
      long rows = 0;
      for (u64 d = 1; d <= 10; ++d) {
        for (u64 n : {1, 3, 10}) {
          BOOST_TEST_CONTEXT("depth " << d << ", " << n << " statement(s)") {
            const cost c = s.measure([&] {
              nest(s.conn, d, [&] {
                for (u64 i = 0; i < n; ++i) insert(s.conn, table, id++);
              });
            });
            // controls: BEGIN, d-1 SAVEPOINTs, COMMIT
            check(c, expected{n + 1, n, d + 1, d - 1, 1, 0});
            rows += static_cast<long>(n);
            BOOST_TEST(outside.count() == rows);
            BOOST_TEST(s.conn.depth() == 0u);
          }
        }
      }
    }
  }
}

// A statement before and after the inner scope at every level: the SAVEPOINTs
// and RELEASEs all ride with statements, only COMMIT travels alone.
BOOST_AUTO_TEST_CASE(statements_at_every_level) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      outside_view outside{table};
      session s{t};
      int id = 0;
      long rows = 0;
      for (u64 d : {1, 2, 3, 5, 10}) {
        BOOST_TEST_CONTEXT("depth " << d) {
          std::function<void(u64)> level = [&](u64 left) {
            pqscope::transaction tx{s.conn};
            insert(s.conn, table, id++);
            if (left > 1) level(left - 1);
            insert(s.conn, table, id++);
            tx.commit();
          };
          const cost c = s.measure([&] { level(d); });
          // controls: BEGIN, d-1 SAVEPOINTs, d-1 RELEASEs, COMMIT
          check(c, expected{2 * d + 1, 2 * d, 2 * d, d - 1, 1, 0});
          rows += static_cast<long>(2 * d);
          BOOST_TEST(outside.count() == rows);
        }
      }
    }
  }
}

// Scopes that never ran a statement never reached the server: ending them, by
// commit, rollback or destructor, sends nothing at all.
BOOST_AUTO_TEST_CASE(empty_scopes_send_nothing) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      session s{t};
      for (u64 d : {1, 2, 10}) {
        BOOST_TEST_CONTEXT("depth " << d) {
          BOOST_TEST_CONTEXT("commit") { check(s.measure([&] { nest(s.conn, d, [] {}); }), expected{0, 0, 0, 0, 0, 0}); }
          BOOST_TEST_CONTEXT("rollback") {
            check(s.measure([&] { nest_rollback(s.conn, d); }), expected{0, 0, 0, 0, 0, 0});
          }
          BOOST_TEST_CONTEXT("destructor") {
            check(s.measure([&] {
                    std::vector<pqscope::transaction> open;
                    open.reserve(d);
                    for (u64 i = 0; i < d; ++i) open.emplace_back(s.conn);
                    while (!open.empty()) open.pop_back();  // innermost first
                  }),
                  expected{0, 0, 0, 0, 0, 0});
          }
          BOOST_TEST_CONTEXT("inner rolled back, outer committed") {
            check(s.measure([&] {
                    pqscope::transaction outer{s.conn};
                    nest_rollback(s.conn, d);
                    outer.commit();
                  }),
                  expected{0, 0, 0, 0, 0, 0});
          }
        }
      }
      BOOST_TEST_CONTEXT("options and set_local queued, no statement") {
        pqscope::transaction_options o;
        o.isolation = pqscope::isolation::serializable;
        o.statement_timeout = std::chrono::milliseconds(1500);
        o.lock_timeout = std::chrono::milliseconds(700);
        check(s.measure([&] {
                pqscope::transaction tx{s.conn, o};
                s.conn.set_local("work_mem", "8MB");
                pqscope::transaction inner{s.conn, [] {
                                             pqscope::transaction_options i;
                                             i.statement_timeout = std::chrono::milliseconds(300);
                                             return i;
                                           }()};
                s.conn.set_local("search_path", "public");
                inner.commit();
                tx.commit();
              }),
              expected{0, 0, 0, 0, 0, 0});
      }
    }
  }
}

// A COMMIT whose BEGIN never went out sends nothing, also after statements
// that were refused before reaching the wire.
BOOST_AUTO_TEST_CASE(commit_without_begin_sends_nothing) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      session s{t};
      check(s.measure([&] {
              pqscope::transaction tx{s.conn};
              BOOST_CHECK_THROW(s.conn.execute("COMMIT"), pqscope::usage_error);
              BOOST_CHECK_THROW(s.conn.execute(std::string("SELECT 1\0", 9)), pqscope::usage_error);
              {
                pqscope::transaction inner{s.conn};
                BOOST_CHECK_THROW(s.conn.execute("SAVEPOINT x"), pqscope::usage_error);
                inner.commit();
              }
              tx.commit();
            }),
            expected{0, 0, 0, 0, 0, 0});
      BOOST_TEST(s.conn.depth() == 0u);
    }
  }
}

// A failure at depth 2 costs no extra round trip: the inner scope's ROLLBACK TO
// and RELEASE ride with the next statement, or the ROLLBACK TO with the COMMIT.
BOOST_AUTO_TEST_CASE(inner_rollback_after_error) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      session s{t};
      pqtest::scratch_table table;
      outside_view rows{table};
      BOOST_TEST_CONTEXT("the same shape without an error, for comparison") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 101);
                {
                  pqscope::transaction tx1{s.conn};
                  insert(s.conn, table, 102);
                  tx1.commit();
                }
                insert(s.conn, table, 103);
                tx0.commit();
              }),
              // BEGIN+INSERT, SAVEPOINT+INSERT, RELEASE+INSERT, COMMIT
              expected{4, 3, 4, 1, 1, 0});
        BOOST_TEST(rows.ids(100, 199) == "101,102,103");
      }
      BOOST_TEST_CONTEXT("next statement carries ROLLBACK TO + RELEASE") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 201);
                {
                  pqscope::transaction tx1{s.conn};
                  BOOST_CHECK_THROW(insert(s.conn, table, 201), pqscope::unique_violation);
                  tx1.rollback();
                }
                insert(s.conn, table, 203);
                tx0.commit();
              }),
              // BEGIN+INSERT, SAVEPOINT+INSERT(fails), ROLLBACK TO+RELEASE+INSERT, COMMIT
              expected{4, 3, 5, 1, 1, 0});
        BOOST_TEST(rows.ids(200, 299) == "201,203");
      }
      BOOST_TEST_CONTEXT("the exception leaves the inner scope (destructor rolls back)") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 301);
                try {
                  pqscope::transaction tx1{s.conn};
                  insert(s.conn, table, 301);
                  tx1.commit();
                } catch (const pqscope::unique_violation&) {
                }
                insert(s.conn, table, 303);
                tx0.commit();
              }),
              expected{4, 3, 5, 1, 1, 0});
        BOOST_TEST(rows.ids(300, 399) == "301,303");
      }
      BOOST_TEST_CONTEXT("nothing follows: ROLLBACK TO rides with COMMIT, RELEASE is dropped") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 401);
                {
                  pqscope::transaction tx1{s.conn};
                  BOOST_CHECK_THROW(insert(s.conn, table, 401), pqscope::unique_violation);
                  tx1.rollback();
                }
                tx0.commit();
              }),
              // BEGIN+INSERT, SAVEPOINT+INSERT(fails), ROLLBACK TO+COMMIT
              expected{3, 2, 4, 1, 1, 0});
        BOOST_TEST(rows.ids(400, 499) == "401");
      }
      BOOST_TEST_CONTEXT("error in the first statement, three levels deep") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                {
                  pqscope::transaction tx1{s.conn};
                  {
                    pqscope::transaction tx2{s.conn};
                    BOOST_CHECK_THROW(s.conn.execute("SELECT 1/0"), pqscope::data_exception);
                    tx2.rollback();  // only savepoint 2 is undone
                  }
                  insert(s.conn, table, 501);
                  tx1.commit();
                }
                tx0.commit();
              }),
              // BEGIN+SAVEPOINT+SAVEPOINT+SELECT(fails), ROLLBACK TO+RELEASE+INSERT, COMMIT
              expected{3, 2, 6, 2, 1, 0});
        BOOST_TEST(rows.ids(500, 599) == "501");
      }
      BOOST_TEST_CONTEXT("an inner scope that never reached the server rolls back for free") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 701);
                nest_rollback(s.conn, 3);  // their SAVEPOINTs are dropped unsent
                insert(s.conn, table, 702);
                tx0.commit();
              }),
              // BEGIN+INSERT, INSERT, COMMIT
              expected{3, 2, 2, 0, 1, 0});
        BOOST_TEST(rows.ids(700, 799) == "701,702");
      }
      BOOST_TEST_CONTEXT("error in a nested scope without a savepoint dooms the transaction") {
        pqscope::transaction_options joined;
        joined.savepoint = false;
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 801);
                {
                  pqscope::transaction tx1{s.conn, joined};
                  BOOST_CHECK_THROW(insert(s.conn, table, 801), pqscope::unique_violation);
                  tx1.rollback();
                }
                BOOST_CHECK_THROW(tx0.commit(), pqscope::transaction_aborted);
              }),
              // BEGIN+INSERT, INSERT(fails), ROLLBACK
              expected{3, 2, 2, 0, 0, 1});
        BOOST_TEST(rows.ids(800, 899) == "");
      }
      BOOST_TEST_CONTEXT("error in the outermost scope: commit() rolls back in one round trip") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 601);
                BOOST_CHECK_THROW(insert(s.conn, table, 601), pqscope::unique_violation);
                BOOST_CHECK_THROW(insert(s.conn, table, 602), pqscope::transaction_aborted);  // refused locally
                BOOST_CHECK_THROW(tx0.commit(), pqscope::transaction_aborted);
              }),
              // BEGIN+INSERT, INSERT(fails), ROLLBACK
              expected{3, 2, 2, 0, 0, 1});
        BOOST_TEST(rows.ids(600, 699) == "");
      }
    }
  }
}

// Rolling back the outermost scope is one round trip (ROLLBACK), whatever inner
// scopes left pending: a ROLLBACK TO before ROLLBACK would be wasted.
BOOST_AUTO_TEST_CASE(outermost_rollback_is_one_round_trip) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      session s{t};
      BOOST_TEST_CONTEXT("rollback() at every level") {
        u64 rollback_trips = 0, rollback_syncs = 0;
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                insert(s.conn, table, 1);
                pqscope::transaction tx1{s.conn};
                insert(s.conn, table, 2);
                pqscope::transaction tx2{s.conn};
                insert(s.conn, table, 3);
                tx2.rollback();
                tx1.rollback();
                const u64 rt = s.conn.stats().round_trips, syncs = s.relay.syncs();
                tx0.rollback();
                rollback_trips = s.conn.stats().round_trips - rt;
                rollback_syncs = s.relay.syncs() - syncs;  // ROLLBACK was answered: the relay has seen it
              }),
              // BEGIN+INSERT, SAVEPOINT+INSERT, SAVEPOINT+INSERT, ROLLBACK
              expected{4, 3, 4, 2, 0, 1});
        BOOST_TEST(rollback_trips == 1u);
        BOOST_TEST(rollback_syncs == 1u);
      }
      BOOST_TEST_CONTEXT("inner scopes committed, outer rolled back") {
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn};
                nest(s.conn, 3, [&] { insert(s.conn, table, 4); });  // RELEASE left pending
                tx0.rollback();
              }),
              // BEGIN+3 SAVEPOINTs+INSERT, ROLLBACK
              expected{2, 1, 5, 3, 0, 1});
      }
      BOOST_TEST_CONTEXT("an exception unwinds every level") {
        struct boom {};
        check(s.measure([&] {
                try {
                  nest(s.conn, 5, [&] {
                    insert(s.conn, table, 5);
                    throw boom{};
                  });
                } catch (const boom&) {
                }
              }),
              // BEGIN+4 SAVEPOINTs+INSERT, ROLLBACK
              expected{2, 1, 6, 4, 0, 1});
      }
      BOOST_TEST(table.count() == 0);
      BOOST_TEST(s.conn.depth() == 0u);
    }
  }
}

// Outside any scope each statement is its own round trip, durable at once.
BOOST_AUTO_TEST_CASE(autocommit_statements) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      outside_view outside{table};
      session s{t};
      for (int i = 1; i <= 5; ++i) {
        BOOST_TEST_CONTEXT("statement " << i) {
          check(s.measure([&] { insert(s.conn, table, i); }), expected{1, 1, 0, 0, 0, 0});
          BOOST_TEST(outside.count() == i);  // another session sees it at once
        }
      }
    }
  }
}

// Isolation, SET LOCAL timeouts and set_local() ride with the first statement;
// a nested scope's timeout and its restoring ride with statements too.
BOOST_AUTO_TEST_CASE(options_ride_with_first_statement) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      session s{t};
      BOOST_TEST_CONTEXT("outermost options and set_local") {
        pqscope::transaction_options o;
        o.isolation = pqscope::isolation::repeatable_read;
        o.statement_timeout = std::chrono::milliseconds(1234);
        o.lock_timeout = std::chrono::milliseconds(567);
        u64 first_trips = 0;
        check(s.measure([&] {
                pqscope::transaction tx{s.conn, o};
                s.conn.set_local("work_mem", "4321kB");
                const u64 before = s.conn.stats().round_trips;
                pqscope::result r = s.conn.execute(
                    "SELECT current_setting('transaction_isolation'), current_setting('statement_timeout'), "
                    "current_setting('lock_timeout'), current_setting('work_mem')");
                first_trips = s.conn.stats().round_trips - before;
                BOOST_TEST(r[0][0].as<std::string>() == "repeatable read");
                BOOST_TEST(r[0][1].as<std::string>() == "1234ms");
                BOOST_TEST(r[0][2].as<std::string>() == "567ms");
                BOOST_TEST(r[0][3].as<std::string>() == "4321kB");
                tx.commit();
              }),
              // BEGIN, SET TRANSACTION ISOLATION LEVEL, SET LOCAL x2, set_config, COMMIT
              expected{2, 1, 6, 0, 1, 0});
        BOOST_TEST(first_trips == 1u);
      }
      BOOST_TEST_CONTEXT("a nested scope's statement_timeout, restored at its end") {
        pqscope::transaction_options outer_o, inner_o;
        outer_o.statement_timeout = std::chrono::milliseconds(1000);
        inner_o.statement_timeout = std::chrono::milliseconds(2000);
        auto timeout = [&] { return s.conn.query_value<std::string>("SELECT current_setting('statement_timeout')"); };
        check(s.measure([&] {
                pqscope::transaction tx0{s.conn, outer_o};
                BOOST_TEST(timeout() == "1s");
                {
                  pqscope::transaction tx1{s.conn, inner_o};
                  BOOST_TEST(timeout() == "2s");
                  tx1.commit();
                }
                BOOST_TEST(timeout() == "1s");
                tx0.commit();
              }),
              // BEGIN+SET LOCAL+SELECT, SAVEPOINT+SET LOCAL+SELECT, RELEASE+SET LOCAL+SELECT, COMMIT
              expected{4, 3, 7, 1, 1, 0});
        BOOST_TEST(timeout() == "0");  // SET LOCAL ended with the transaction
      }
    }
  }
}

// More clients than PgBouncer has server connections (pool of 4): every
// transaction still costs N + 1 and commits.
BOOST_AUTO_TEST_CASE(more_clients_than_pooled_server_connections) {
  constexpr int clients = 12, transactions = 20;
  constexpr u64 depth = 3, n = 3;
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      struct outcome {
        cost total;
        std::string error;
      };
      std::vector<outcome> outcomes(clients);
      std::atomic<int> ready{0};
      std::vector<std::thread> threads;
      for (int k = 0; k < clients; ++k) {
        threads.emplace_back([&, k] {
          // No Boost.Test assertions off the main thread: record, check after join.
          try {
            session s{t};
            ready.fetch_add(1);
            while (ready.load() < clients) std::this_thread::yield();
            outcomes[k].total = s.measure([&] {
              for (int i = 0; i < transactions; ++i)
                nest(s.conn, depth, [&] {
                  for (u64 j = 0; j < n; ++j) insert(s.conn, table, k * 1000 + i * 10 + static_cast<int>(j));
                });
            });
          } catch (const std::exception& e) {
            outcomes[k].error = e.what();
            ready.fetch_add(clients);  // never leave the others waiting
          }
        });
      }
      for (std::thread& th : threads) th.join();
      for (int k = 0; k < clients; ++k) {
        BOOST_TEST_CONTEXT("client " << k) {
          BOOST_TEST(outcomes[k].error == "");
          const u64 tx = transactions;
          check(outcomes[k].total, expected{tx * (n + 1), tx * n, tx * (depth + 1), tx * (depth - 1), tx, 0});
        }
      }
      BOOST_TEST(table.count() == long{clients} * transactions * static_cast<long>(n));
    }
  }
}

// ---- batched attempts (transaction_options::batch) ---------------------------------

namespace {
pqscope::transaction_options batched() {
  pqscope::transaction_options o;
  o.batch = true;
  return o;
}
// `depth` scopes, the outermost a batched atomic(), each inner one a nested atomic().
void nest_batched(pqscope::connection& c, u64 depth, const std::function<void()>& body) {
  std::function<void(u64)> level = [&](u64 left) {
    if (left == 0) return body();
    pqscope::atomic(c, [&] { level(left - 1); });
  };
  pqscope::atomic(c, batched(), [&] { level(depth - 1); });
}
}  // namespace

// N writes at any depth: BEGIN, the statements and COMMIT in one round trip; no
// savepoint is created for scopes whose statements were all queued when they ended.
BOOST_AUTO_TEST_CASE(batched_writes_cost_one_round_trip) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      outside_view outside{table};
      session s{t};
      int id = 0;
      long rows = 0;
      for (u64 d : {1, 2, 3, 5, 10}) {
        for (u64 n : {1, 3, 10}) {
          BOOST_TEST_CONTEXT("depth " << d << ", " << n << " statement(s)") {
            const cost c = s.measure([&] {
              nest_batched(s.conn, d, [&] {
                for (u64 i = 0; i < n; ++i) insert(s.conn, table, id++);
              });
            });
            check(c, expected{1, n, 2, 0, 1, 0});  // controls: BEGIN, COMMIT
            rows += static_cast<long>(n);
            BOOST_TEST(outside.count() == rows);
          }
        }
      }
    }
  }
}

// K reads in the innermost scope, between writes: K + 1 round trips. The scopes
// open at a read get their SAVEPOINTs in that send; their RELEASEs fall away at COMMIT.
BOOST_AUTO_TEST_CASE(batched_reads_cost_one_round_trip_each) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      session s{t};
      int id = 0;
      for (u64 d : {1, 3, 5}) {
        for (u64 k : {1, 2, 4}) {
          BOOST_TEST_CONTEXT("depth " << d << ", " << k << " read(s)") {
            const int first = id;
            const cost c = s.measure([&] {
              nest_batched(s.conn, d, [&] {
                for (u64 i = 0; i < k; ++i) {
                  insert(s.conn, table, id++);
                  const long seen = s.conn.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE id >= $1",
                                                             first);
                  BOOST_TEST(seen == static_cast<long>(i + 1));  // the reader sees its own queued writes
                }
                insert(s.conn, table, id++);
              });
            });
            // controls: BEGIN, d - 1 SAVEPOINTs, COMMIT
            check(c, expected{k + 1, 2 * k + 1, d + 1, d - 1, 1, 0});
          }
        }
      }
    }
  }
}

// Scopes that run nothing send nothing, batched or not.
BOOST_AUTO_TEST_CASE(batched_empty_scopes_send_nothing) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      session s{t};
      for (u64 d : {1, 4}) {
        const cost c = s.measure([&] { nest_batched(s.conn, d, [] {}); });
        check(c, expected{0, 0, 0, 0, 0, 0});
      }
    }
  }
}

// A failed batch: the batch, its ROLLBACK, then the unbatched run of the function.
BOOST_AUTO_TEST_CASE(failed_batch_costs_batch_rollback_and_unbatched_run) {
  for (const pqtest::target& t : pqtest::targets()) {
    BOOST_TEST_CONTEXT("target " << t) {
      pqtest::scratch_table table;
      outside_view outside{table};
      session s{t};
      s.conn.execute("INSERT INTO " + table.name() + " (id) VALUES (0)");
      const auto replays = s.conn.stats().replays;
      // Row 1, then a nested unit that fails on a duplicate and is caught, then row 2.
      const cost c = s.measure([&] {
        pqscope::atomic(s.conn, batched(), [&] {
          insert(s.conn, table, 1);
          try {
            pqscope::atomic(s.conn, [&] { insert(s.conn, table, 0); });
          } catch (const pqscope::unique_violation&) {
          }
          insert(s.conn, table, 2);
        });
      });
      // Batched: [BEGIN, 1, 0, 2, COMMIT] fails at 0 -> ROLLBACK (2 round trips).
      // Unbatched: [BEGIN, 1], [SAVEPOINT, 0] fails, [ROLLBACK TO, RELEASE, 2], [COMMIT] (4 round trips, 5 controls).
      check(c, expected{6, 3 + 3, 2 + 1 + 5, 1, 1, 1});
      BOOST_TEST(s.conn.stats().replays == replays + 1);
      BOOST_TEST(outside.ids(0, 10) == "0,1,2");
    }
  }
}
