// pqscope_client_cpu: the client's own instructions per transaction (or per COPY
// row), pqscope against raw libpq doing the least possible, in one program. Meant
// to run under callgrind (scripts/dev.sh client-cpu), which counts instructions
// in user space only (libpq's and libc's included, the kernel's not): the
// measured loop is bracketed by CALLGRIND_TOGGLE_COLLECT, so connecting and
// warming up are not counted. Without callgrind it runs the same loop and says
// how long it took.
//
//   pqscope_client_cpu CONNINFO IMPL N [K]
//
// With K, the four transfer implementations run K UPDATEs per transaction in one
// flat scope instead: the slope between two K is the cost of one more statement.
//
// IMPL, each a transfer (BEGIN, two UPDATEs, COMMIT: one round trip):
//   floor            raw libpq in pipeline mode for the whole session, PQsendQueryParams,
//                    one PQpipelineSync, every answer read and checked
//   floor_prepared   the same, the UPDATE prepared once (PQprepare), PQsendQueryPrepared
//   pqscope          pqscope::atomic with transaction_options::batch, two nested atomic()
//                    scopes (prepare::never)
//   pqscope_prepared the same with prepare::automatic
// or a COPY of N rows (id bigint, name text, qty int, price float8, created timestamptz),
// the rows of bench_copy.cpp (copy_rows.hpp), made before the loop:
//   copy_floor       bench_copy.cpp's floor: its formatting into a 64 KiB buffer, PQputCopyData
//   copy_pqscope     connection::copy_in + copy_writer::write_row

#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#else
#define CALLGRIND_TOGGLE_COLLECT ((void)0)  // without valgrind's headers: the loop only
#endif

#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <stdexcept>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/pqscope.hpp>

#include "copy_rows.hpp"

namespace {

const char* const update_sql = "UPDATE cpu_accounts SET balance = balance + $1 WHERE id = $2";
const Oid int4_types[] = {23, 23};

PGconn* connect_raw(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) throw std::runtime_error(std::string("connect: ") + PQerrorMessage(c));
  return c;
}

void exec_raw(PGconn* c, const char* sql) {
  PGresult* r = PQexec(c, sql);
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  const std::string msg = PQresultErrorMessage(r);
  PQclear(r);
  if (!ok) throw std::runtime_error(std::string(sql) + ": " + msg);
}

struct int_text {
  char buf[16];
  explicit int_text(int v) { *std::to_chars(buf, buf + 15, v).ptr = '\0'; }
};

// ---- transfers ---------------------------------------------------------------------

class floor_client {
 public:
  floor_client(const std::string& conninfo, bool prepared) : c_(connect_raw(conninfo)), prepared_(prepared) {
    if (prepared_) {
      PGresult* r = PQprepare(c_, "upd", update_sql, 2, int4_types);
      if (PQresultStatus(r) != PGRES_COMMAND_OK) throw std::runtime_error(PQresultErrorMessage(r));
      PQclear(r);
    }
    if (PQenterPipelineMode(c_) != 1) throw std::runtime_error("PQenterPipelineMode failed");
  }
  ~floor_client() { PQfinish(c_); }
  floor_client(const floor_client&) = delete;
  floor_client& operator=(const floor_client&) = delete;

  // K UPDATEs in one transaction, one sync: the per-statement cost is the slope in K.
  void updates(int k, int first) {
    send("BEGIN", 0, nullptr);
    for (int j = 0; j < k; ++j) {
      int_text d(1), id(first + j);
      const char* v[] = {d.buf, id.buf};
      send(update_sql, 2, v);
    }
    send("COMMIT", 0, nullptr);
    read(k + 2);
  }

  void transfer(int first, int second, int amount) {
    int_text d1(-amount), i1(first), d2(amount), i2(second);
    const char* v1[] = {d1.buf, i1.buf};
    const char* v2[] = {d2.buf, i2.buf};
    send("BEGIN", 0, nullptr);
    send(update_sql, 2, v1);
    send(update_sql, 2, v2);
    send("COMMIT", 0, nullptr);
    read(4);
  }

 private:
  void read(int answers) {
    if (PQpipelineSync(c_) != 1) throw std::runtime_error("PQpipelineSync failed");
    for (int i = 0; i < answers; ++i) {
      PGresult* r = PQgetResult(c_);
      if (r == nullptr || PQresultStatus(r) != PGRES_COMMAND_OK) throw std::runtime_error("floor: a statement failed");
      PQclear(r);
      if (PQgetResult(c_) != nullptr) throw std::runtime_error("floor: extra result");
    }
    PGresult* s = PQgetResult(c_);
    const bool synced = s != nullptr && PQresultStatus(s) == PGRES_PIPELINE_SYNC;
    PQclear(s);
    if (!synced) throw std::runtime_error("floor: no sync");
  }

  void send(const char* sql, int n, const char* const* vals) {
    const int ok = prepared_ && n > 0 ? PQsendQueryPrepared(c_, "upd", n, vals, nullptr, nullptr, 0)
                                      : PQsendQueryParams(c_, sql, n, n > 0 ? int4_types : nullptr, vals, nullptr,
                                                          nullptr, 0);
    if (ok != 1) throw std::runtime_error(std::string("send: ") + PQerrorMessage(c_));
  }
  PGconn* c_;
  bool prepared_;
};

class pqscope_client {
 public:
  pqscope_client(const std::string& conninfo, bool prepared) : c_(conninfo, options(prepared)) { batch_.batch = true; }

  void transfer(int first, int second, int amount) {
    pqscope::atomic(c_, batch_, [&](pqscope::connection& c) {
      move(c, first, -amount);
      move(c, second, amount);
    });
  }
  void updates(int k, int first) {
    pqscope::atomic(c_, batch_, [&](pqscope::connection& c) {
      for (int j = 0; j < k; ++j) c.execute(update_sql, 1, first + j);
    });
  }
  [[nodiscard]] const pqscope::connection_stats& stats() const { return c_.stats(); }

 private:
  static pqscope::connection_options options(bool prepared) {
    pqscope::connection_options o;
    o.pooling = pqscope::pooling::none;
    o.prepare = prepared ? pqscope::prepare::automatic : pqscope::prepare::never;
    return o;
  }
  static void move(pqscope::connection& c, int id, int delta) {
    pqscope::atomic(c, [&](pqscope::connection& cc) { cc.execute(update_sql, delta, id); });
  }
  pqscope::connection c_;
  pqscope::transaction_options batch_;
};

// ---- COPY --------------------------------------------------------------------------

using bench::copy_rows::format_row;
using bench::copy_rows::make_rows;
using bench::copy_rows::row;

const char* const copy_sql = "COPY cpu_copy (id, name, qty, price, created) FROM STDIN";

void copy_floor(PGconn* c, const std::vector<row>& rows) {
  exec_raw(c, "BEGIN");
  PGresult* r = PQexec(c, copy_sql);
  if (PQresultStatus(r) != PGRES_COPY_IN) throw std::runtime_error(PQresultErrorMessage(r));
  PQclear(r);
  std::vector<char> buf(64 * 1024 + 4096);
  char* p = buf.data();
  for (const row& x : rows) {
    p = format_row(p, x);
    if (p - buf.data() >= 64 * 1024) {
      if (PQputCopyData(c, buf.data(), static_cast<int>(p - buf.data())) != 1) throw std::runtime_error("put");
      p = buf.data();
    }
  }
  if (p != buf.data() && PQputCopyData(c, buf.data(), static_cast<int>(p - buf.data())) != 1)
    throw std::runtime_error("put");
  if (PQputCopyEnd(c, nullptr) != 1) throw std::runtime_error("end");
  while ((r = PQgetResult(c)) != nullptr) {
    if (PQresultStatus(r) != PGRES_COMMAND_OK) throw std::runtime_error(PQresultErrorMessage(r));
    PQclear(r);
  }
  exec_raw(c, "COMMIT");
}

void copy_pqscope(pqscope::connection& c, const std::vector<row>& rows) {
  pqscope::atomic(c, [&] {
    pqscope::copy_writer w = c.copy_in(copy_sql);
    for (const row& x : rows) w.write_row(x.id, x.name, x.qty, x.price, x.created);
    if (w.finish() != rows.size()) throw std::runtime_error("copy: wrong row count");
  });
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 5) {
    std::cerr << "usage: pqscope_client_cpu CONNINFO IMPL N [K]\n";
    return 2;
  }
  const std::string conninfo = argv[1], impl = argv[2];
  const int n = std::atoi(argv[3]);
  try {
    {
      PGconn* setup = connect_raw(conninfo);
      exec_raw(setup, "CREATE TABLE IF NOT EXISTS cpu_accounts (id int PRIMARY KEY, balance bigint NOT NULL)");
      exec_raw(setup, "INSERT INTO cpu_accounts SELECT g, 0 FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING");
      exec_raw(setup, "CREATE TABLE IF NOT EXISTS cpu_copy (id bigint, name text, qty int, price float8, "
                      "created timestamptz)");
      exec_raw(setup, "TRUNCATE cpu_copy");
      PQfinish(setup);
    }
    auto timed = [&](auto&& loop) {
      const auto t0 = std::chrono::steady_clock::now();
      CALLGRIND_TOGGLE_COLLECT;
      loop();
      CALLGRIND_TOGGLE_COLLECT;
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::cout << impl << ": " << n << " in " << s << " s\n";
    };
    // K > 0: K UPDATEs per transaction in one flat scope instead of the nested transfer.
    const int k = argc > 4 ? std::atoi(argv[4]) : 0;
    auto transfers = [&](auto& client) {
      auto one = [&](int i) {
        if (k > 0)
          client.updates(k, 1 + i % 500);
        else
          client.transfer(1 + i % 500, 501 + i % 500, 1);
      };
      for (int i = 0; i < 50; ++i) one(i);  // warm: caches, plans, names
      timed([&] {
        for (int i = 0; i < n; ++i) one(i);
      });
    };
    if (impl == "floor" || impl == "floor_prepared") {
      floor_client c(conninfo, impl == "floor_prepared");
      transfers(c);
    } else if (impl == "pqscope" || impl == "pqscope_prepared") {
      pqscope_client c(conninfo, impl == "pqscope_prepared");
      transfers(c);
      const auto& st = c.stats();
      if ((impl == "pqscope_prepared") != (st.prepared > 0)) throw std::runtime_error("prepared count is wrong");
    } else if (impl == "copy_floor") {
      const std::vector<row> rows = make_rows(n);
      PGconn* c = connect_raw(conninfo);
      timed([&] { copy_floor(c, rows); });
      PQfinish(c);
    } else if (impl == "copy_pqscope") {
      const std::vector<row> rows = make_rows(n);
      pqscope::connection c{conninfo};
      timed([&] { copy_pqscope(c, rows); });
    } else {
      std::cerr << "unknown IMPL " << impl << "\n";
      return 2;
    }
  } catch (const std::exception& e) {
    std::cerr << impl << ": " << e.what() << "\n";
    return 1;
  }
  return 0;
}
