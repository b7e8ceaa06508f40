#pragma once
// The driver: the only part of pqscope that talks to the network.
//
// basic_connection<Driver> works with any type that offers the members of
// libpq_driver below: open(), close(), abandon(), is_open(), exchange(),
// application_name() and native_handle(). exchange() is one round trip: it sends
// a batch of statements followed by one sync and reads every answer. A driver
// that wraps libpq_driver can count, log or delay; a scripted driver (see
// tests/support) replays answers with no server at all.

#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/errors.hpp>
#include <pqscope/result.hpp>

#ifndef LIBPQ_HAS_PIPELINING
#error "pqscope needs libpq 14 or newer (pipeline mode)"
#endif

namespace pqscope {

namespace detail {
// A malformed connection string is the caller's mistake: say so before connecting.
inline void check_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts != nullptr) {
    PQconninfoFree(opts);
    return;
  }
  std::string msg = err != nullptr ? err : "out of memory";
  PQfreemem(err);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  throw usage_error("invalid connection string: " + msg);
}
}  // namespace detail

// What the server says about the session after a batch (PQtransactionStatus).
enum class server_state { idle, in_transaction, failed_transaction, unknown };

struct statement {
  const char* sql = nullptr;  // NUL-terminated
  int n_params = 0;
  const char* const* values = nullptr;  // n_params entries; nullptr means NULL
  const unsigned* types = nullptr;      // n_params OIDs or nullptr; 0 lets the server infer
};

struct reply {
  enum class status { ok, error, skipped };  // skipped: not run because an earlier statement failed
  status st = status::skipped;
  result res;           // status::ok
  std::string command;  // status::ok: the command tag, e.g. "COMMIT" or "INSERT 0 1"
  std::string sqlstate, message, detail, hint;  // status::error
  std::size_t position = 0;                     // status::error: 1-based character, 0 if none
  std::string schema, table, column, datatype, constraint;
};

struct batch_reply {
  std::vector<reply> replies;  // one per statement, in order
  bool lost = false;           // the connection died; replies past the loss are `skipped`
  std::string lost_message;
  server_state state = server_state::unknown;
};

class libpq_driver {
 public:
  libpq_driver() = default;
  libpq_driver(const libpq_driver&) = delete;
  libpq_driver& operator=(const libpq_driver&) = delete;
  ~libpq_driver() { close(); }

  // Throws connection_error (usage_error for a malformed conninfo). fallback_application_name applies unless the
  // conninfo or PGAPPNAME names one (libpq's own rule).
  void open(const std::string& conninfo, const std::string& fallback_application_name) {
    close();
    detail::check_conninfo(conninfo);
    const char* keys[] = {"dbname", "fallback_application_name", nullptr};
    const char* vals[] = {conninfo.c_str(), fallback_application_name.c_str(), nullptr};
    conn_ = PQconnectdbParams(keys, vals, /*expand_dbname=*/1);
    if (conn_ == nullptr) throw connection_error("could not connect: out of memory");
    if (PQstatus(conn_) != CONNECTION_OK) {
      std::string msg = trim(PQerrorMessage(conn_));
      close();
      throw connection_error("could not connect: " + msg);
    }
  }

  void close() noexcept {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = nullptr;
  }

  // Frees the connection without telling the server: used in a child process
  // after fork(), where PQfinish would end the parent's session. The socket is
  // pointed at /dev/null first, so the goodbye message goes nowhere.
  void abandon() noexcept {
    if (conn_ == nullptr) return;
    int sock = PQsocket(conn_);
    int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (sock >= 0 && devnull >= 0) ::dup2(devnull, sock);
    if (devnull >= 0) ::close(devnull);
    PQfinish(conn_);
    conn_ = nullptr;
  }

  [[nodiscard]] bool is_open() const noexcept { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

  // One round trip: every statement in one pipeline, one sync, all answers read.
  // Only one sync is ever in flight (PgBouncer before 1.21 mishandles more).
  batch_reply exchange(const std::vector<statement>& batch) {
    batch_reply out;
    out.replies.resize(batch.size());
    if (!is_open()) return lost(out, "the connection is closed");
    if (PQenterPipelineMode(conn_) != 1) return lost(out, trim(PQerrorMessage(conn_)));
    for (const statement& s : batch) {
      if (PQsendQueryParams(conn_, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0) != 1)
        return lost(out, trim(PQerrorMessage(conn_)));
    }
    if (PQpipelineSync(conn_) != 1) return lost(out, trim(PQerrorMessage(conn_)));

    for (reply& r : out.replies) {
      PGresult* raw = PQgetResult(conn_);
      if (raw == nullptr) return lost(out, trim(PQerrorMessage(conn_)));
      result res{detail::adopt(raw)};
      switch (PQresultStatus(raw)) {
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
          r.st = reply::status::ok;
          r.command = PQcmdStatus(raw);
          r.res = std::move(res);
          break;
        case PGRES_PIPELINE_ABORTED:
          r.st = reply::status::skipped;
          break;
        case PGRES_FATAL_ERROR:
          if (PQstatus(conn_) == CONNECTION_BAD) return lost(out, trim(PQresultErrorMessage(raw)));
          r.st = reply::status::error;
          r.sqlstate = field_of(raw, PG_DIAG_SQLSTATE);
          r.message = field_of(raw, PG_DIAG_MESSAGE_PRIMARY);
          r.detail = field_of(raw, PG_DIAG_MESSAGE_DETAIL);
          r.hint = field_of(raw, PG_DIAG_MESSAGE_HINT);
          r.position = static_cast<std::size_t>(std::strtoul(field_of(raw, PG_DIAG_STATEMENT_POSITION).c_str(), nullptr, 10));
          r.schema = field_of(raw, PG_DIAG_SCHEMA_NAME);
          r.table = field_of(raw, PG_DIAG_TABLE_NAME);
          r.column = field_of(raw, PG_DIAG_COLUMN_NAME);
          r.datatype = field_of(raw, PG_DIAG_DATATYPE_NAME);
          r.constraint = field_of(raw, PG_DIAG_CONSTRAINT_NAME);
          if (r.message.empty()) r.message = trim(PQresultErrorMessage(raw));
          break;
        default:
          // COPY and friends cannot run in a pipeline; the session is refused
          // such statements before they are sent, so this is a broken stream.
          return lost(out, "unexpected answer from the server: " + std::string(PQresStatus(PQresultStatus(raw))));
      }
      // Each statement's answers end with a null result.
      if (PGresult* extra = PQgetResult(conn_)) {
        PQclear(extra);
        return lost(out, "unexpected extra answer from the server");
      }
    }
    PGresult* sync = PQgetResult(conn_);
    bool sync_ok = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
    if (sync != nullptr) PQclear(sync);
    if (!sync_ok) return lost(out, trim(PQerrorMessage(conn_)));
    if (PQexitPipelineMode(conn_) != 1) return lost(out, trim(PQerrorMessage(conn_)));
    out.state = state_of(PQtransactionStatus(conn_));
    return out;
  }

  [[nodiscard]] std::string application_name() const {
    if (conn_ == nullptr) return {};
    if (const char* v = PQparameterStatus(conn_, "application_name")) return v;
    std::string name, fallback;
    if (PQconninfoOption* opts = PQconninfo(conn_)) {
      for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
        if (o->val == nullptr) continue;
        if (std::string(o->keyword) == "application_name") name = o->val;
        if (std::string(o->keyword) == "fallback_application_name") fallback = o->val;
      }
      PQconninfoFree(opts);
    }
    return name.empty() ? fallback : name;
  }

  [[nodiscard]] PGconn* native_handle() const noexcept { return conn_; }

 private:
  static std::string trim(const char* s) {
    std::string r = s != nullptr ? s : "";
    while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
    return r;
  }
  static std::string field_of(const PGresult* r, int code) {
    const char* v = PQresultErrorField(r, code);
    return v != nullptr ? v : "";
  }
  static server_state state_of(PGTransactionStatusType t) {
    switch (t) {
      case PQTRANS_IDLE: return server_state::idle;
      case PQTRANS_INTRANS: return server_state::in_transaction;
      case PQTRANS_INERROR: return server_state::failed_transaction;
      default: return server_state::unknown;
    }
  }
  batch_reply& lost(batch_reply& out, std::string why) {
    out.lost = true;
    out.lost_message = why.empty() ? "connection lost" : std::move(why);
    out.state = server_state::unknown;
    // Answers already read stay as read; the rest never ran as far as we know.
    return out;
  }

  PGconn* conn_ = nullptr;
};

}  // namespace pqscope
