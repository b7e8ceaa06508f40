#pragma once
// The driver: the only part of pqscope that talks to the network.
//
// basic_connection<Driver> works with any type that offers the members of
// libpq_driver below: open(), close(), abandon(), is_open(), exchange(),
// application_name() and native_handle(); adopt() (connection::borrow), and the
// calls outside the pipeline (copy_*, script), only where they are used.
// exchange() is one round trip: it sends
// a batch of statements followed by one sync and reads every answer. A driver
// that wraps libpq_driver can count, log or delay; a scripted driver (see
// tests/support) replays answers with no server at all.
//
// Time bounds (see connection_options::network_timeout and the README's
// "Timeouts" section): connecting is bounded by default (connect_timeout, TCP
// keepalives and tcp_user_timeout are added to a conninfo that does not set
// them); with a network_timeout each round trip is bounded too: when it expires
// a cancel request is sent and a grace is waited for the server's answer, after
// which the connection is closed and the batch reported lost.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/conninfo_redaction.hpp>

// What only the function bodies need (PQSCOPE_SEPARATE_COMPILATION: only
// the implementation unit sees them). std::size comes with <string>.
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
#include <fcntl.h>
#include <poll.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#endif

#ifndef LIBPQ_HAS_PIPELINING
#error "pqscope needs libpq 14 or newer (pipeline mode)"
#endif

namespace pqscope {

namespace detail {
// A malformed connection string is the caller's mistake: say so before connecting.
PQSCOPE_DECL void check_conninfo(const std::string& conninfo);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void check_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts != nullptr) {
    PQconninfoFree(opts);
    return;
  }
  std::string msg = err != nullptr ? err : "out of memory";
  PQfreemem(err);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  throw usage_error("invalid connection string: " + redact(msg, conninfo));  // libpq quotes the bad part
}
#endif

// What libpq_driver adds to a conninfo that sets none of these (nor their
// environment variables): a dead peer, a black-holed path or a server that
// accepts and never answers is noticed in seconds, not after the kernel's
// minutes (or hours, for an idle connection's keepalive).
struct network_default {
  const char* key;
  const char* value;
};
inline constexpr network_default network_defaults[] = {
    {"connect_timeout", "10"},      // seconds, per host and address tried (libpq has no default)
    {"keepalives_idle", "15"},      // seconds of silence before the first probe (kernel: 7200)
    {"keepalives_interval", "5"},   // seconds between probes (kernel: 75)
    {"keepalives_count", "3"},      // probes before giving up (kernel: 9)
    {"tcp_user_timeout", "30000"},  // ms that sent data may stay unacknowledged (kernel: about 15 min)
};

// connect_timeout (whole seconds, libpq's unit) for a network_timeout: rounded
// up, at least 2 (libpq treats 1 as 2).
PQSCOPE_DECL std::string connect_timeout_for(std::chrono::milliseconds t);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string connect_timeout_for(std::chrono::milliseconds t) {
  const long long s = (t.count() + 999) / 1000;
  return std::to_string(s < 2 ? 2 : s);
}
#endif
}  // namespace detail

// What the server says about the session after a batch (PQtransactionStatus).
enum class server_state { idle, in_transaction, failed_transaction, unknown };

struct statement {
  const char* sql = nullptr;  // NUL-terminated
  int n_params = 0;
  const char* const* values = nullptr;  // n_params entries; nullptr means NULL
  const unsigned* types = nullptr;      // n_params OIDs or nullptr; 0 lets the server infer
};

// What the server reported about a failed statement.
struct reply_error {
  std::string sqlstate, message, detail, hint;
  std::size_t position = 0;  // 1-based character, 0 if none
  std::string schema, table, column, datatype, constraint;
  // Not the server's refusal: the statement broke the protocol pqscope speaks
  // (a COPY that reached the server through execute()). Raised as usage_error.
  bool misuse = false;
};

struct reply {
  enum class status { ok, error, skipped };  // skipped: not run because an earlier statement failed
  status st = status::skipped;
  result res;           // status::ok
  std::string command;  // status::ok: the command tag, e.g. "COMMIT" or "INSERT 0 1"
  // status::error. Out of line: a batch's replies are made for every statement,
  // and few statements fail.
  std::shared_ptr<const reply_error> error;
  [[nodiscard]] const reply_error& failure() const noexcept {
    static const reply_error none;
    return error ? *error : none;
  }
};

namespace detail {
// The fields of a failed statement's answer.
PQSCOPE_DECL std::shared_ptr<reply_error> error_of(const PGresult* raw);
// libpq's message without its trailing newline.
PQSCOPE_DECL std::string trimmed(const char* s);
// For an error of severity FATAL or PANIC (the session ends after it): the lost
// message, with the cause named where pqscope knows it; else "".
PQSCOPE_DECL std::string fatal_reason(const PGresult* raw);
// The answer given to a statement that started the COPY sub-protocol inside a
// batch (COPY OUT read to its end and dropped, COPY IN failed at once).
PQSCOPE_DECL std::shared_ptr<reply_error> copy_misuse(bool copy_in);
// The message of a COPY FROM STDIN with statements behind it in the same batch:
// the server reads those as broken COPY data and ends the session.
PQSCOPE_DECL std::string copy_in_kills_session();
}  // namespace detail

struct batch_reply {
  std::vector<reply> replies;  // one per statement, in order
  bool lost = false;           // the connection died; replies past the loss are `skipped`
  std::string lost_message;
  server_state state = server_state::unknown;
  // Set when the session was idle before the batch, no statement in it opens a
  // transaction, and it ended inside one anyway: what opened it, when the driver
  // can tell (e.g. Pgpool-II in raw mode), else empty. For the error the scope
  // machine raises about a transaction no scope owns.
  std::string diagnostic;
};

// The driver's time bounds, taken from connection_options.
struct network_settings {
  // Each round trip (and connecting, as connect_timeout when the conninfo sets none). 0: unbounded.
  std::chrono::milliseconds timeout{0};
};

namespace detail {
// A conninfo string that opens another session like `c` (the in-doubt resolver of
// a borrowed connection).
PQSCOPE_DECL std::string conninfo_of(PGconn* c);
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::string conninfo_of(PGconn* c) {
  std::string out;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr || *o->val == '\0') continue;
      if (!out.empty()) out += ' ';
      out += o->keyword;
      out += "='";
      for (const char* v = o->val; *v != '\0'; ++v) {
        if (*v == '\'' || *v == '\\') out += '\\';
        out += *v;
      }
      out += '\'';
    }
    PQconninfoFree(opts);
  }
  return out;
}
#endif
}  // namespace detail

class libpq_driver {
 public:
  using clock = std::chrono::steady_clock;

  libpq_driver() = default;
  libpq_driver(const libpq_driver&) = delete;
  libpq_driver& operator=(const libpq_driver&) = delete;
  ~libpq_driver() { close(); }

  // Before open(): the time bounds (connection_options::network_timeout).
  void set_network(const network_settings& s) noexcept { net_ = s; }
  [[nodiscard]] const network_settings& network() const noexcept { return net_; }

  // After a round trip's network_timeout expired: how long pqscope waits for the
  // answer to its cancel request before it gives the connection up.
  [[nodiscard]] static std::chrono::milliseconds grace_for(std::chrono::milliseconds timeout) noexcept;

  // Throws connection_error (usage_error for a malformed conninfo). fallback_application_name applies unless the
  // conninfo or PGAPPNAME names one (libpq's own rule). Time bounds the conninfo (or the environment) leaves unset
  // are added: see detail::network_defaults.
  void open(const std::string& conninfo, const std::string& fallback_application_name);

  void close() noexcept;

  // Frees the connection without telling the server: used in a child process
  // after fork(), where PQfinish would end the parent's session. The socket is
  // pointed at /dev/null first, so the goodbye message goes nowhere.
  void abandon() noexcept;

  [[nodiscard]] bool is_open() const noexcept { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

  // One round trip: every statement in one pipeline, one sync, all answers read.
  // Only one sync is ever in flight (PgBouncer before 1.21 mishandles more).
  //
  // With a network_timeout, the round trip has a deadline. When it passes, a
  // cancel request is sent (not while the answer awaited is COMMIT's: see
  // expire()) and the answers are awaited for a grace more; a cancelled
  // statement then answers 57014 like any failed statement. If the answers do
  // not all arrive by then, the connection is closed and the batch is lost. The
  // next round trip first waits for that cancel request to be handled.
  batch_reply exchange(const std::vector<statement>& batch);

  [[nodiscard]] std::string application_name() const;

  [[nodiscard]] PGconn* native_handle() const noexcept { return conn_; }

  // ---- an existing PGconn* ------------------------------------------------

  // Uses a session the caller opened and keeps: it must be connected, idle (no
  // transaction, no query in progress) and out of pipeline mode. release() or
  // the destructor hands it back in that state and never closes it.
  void adopt(PGconn* c);
  [[nodiscard]] bool borrowed() const noexcept { return borrowed_; }

  // ---- outside the pipeline: COPY and scripts ----------------------------
  // The caller has sent everything queued first. Each call has its own
  // network_timeout deadline, handled as a round trip's (cancel, grace, give up).

  // Sends `s` (extended protocol, no pipeline) and reads until the server enters
  // the COPY sub-protocol (PGRES_COPY_IN or PGRES_COPY_OUT) or answers otherwise
  // (0: `out` holds the answer).
  int copy_start(const statement& s, batch_reply& out);

  // Queues COPY FROM STDIN data, sending when libpq's buffer fills. false if the
  // connection failed or timed out; copy_end() then reports why.
  bool copy_put(std::string_view data);

  // Ends COPY FROM STDIN (abort_reason != nullptr: the server fails the COPY with
  // it) and reads the answer.
  batch_reply copy_end(const char* abort_reason);

  // The next row of COPY TO STDOUT, its newline included: true; false at the end
  // or on failure (copy_out_end() tells which). The row is valid until the next call.
  bool copy_get(std::string_view& row);

  // After copy_get() returned false: the COPY's answer.
  batch_reply copy_out_end();

  // A script of several statements in one simple-protocol query: one reply per
  // statement that answered; the server runs nothing after the first error.
  // results: the result of each statement that succeeded, in order.
  batch_reply script(const char* sql);


 private:
  enum class io { ok, failed, expired };

  // One round trip's clock: the deadline, then (after a cancel request) the grace.
  struct round_trip {
    explicit round_trip(const std::vector<statement>& b) : batch(b) {}
    const std::vector<statement>& batch;
    bool bounded = false;
    bool in_grace = false;
    bool cancel_sent = false;
    clock::time_point deadline{};
    std::size_t awaiting = 0;  // the statement whose answer is awaited (batch.size(): the sync)
  };

  // A cancel request on its way. libpq 15's PQcancel blocks (a connect, a send,
  // then it waits for the server to close), so it runs on a thread of its own
  // that owns its PGcancel; the connection only waits for it up to the grace.
  // Defined with the implementation: only it needs <mutex> and <condition_variable>.
  struct cancel_state;

  static bool is_set(const std::string& conninfo, const char* key);

  // Waits for the socket; `expired` once the deadline and the grace have passed.
  io wait(round_trip& rt, short events, short& revents);

  // The deadline passed: the first time, send a cancel request and allow the
  // grace (true); after the grace, give up (false). No cancel while the answer
  // awaited is COMMIT's: a COMMIT cannot be undone, and cancelling one that waits
  // for a synchronous standby turns it into a local commit reported as success.
  bool expire(round_trip& rt);

  bool send_cancel() noexcept;

  // Sends what libpq still holds; reads meanwhile, so a server that is itself
  // blocked writing to us cannot deadlock the two.
  io flush(round_trip& rt);

  // Until PQgetResult would not block. A broken connection returns ok: PQgetResult reports it.
  io await_result(round_trip& rt);

  // A cancel request sent during an earlier round trip must have been handled
  // before anything else is sent: PostgreSQL signals the backend twice (the
  // process, then its process group), and a second signal that comes late cancels
  // whatever runs then. PQcancel returns once the server has closed the request's
  // connection, after both. Waited for until this round trip's deadline; false if
  // it has not returned by then.
  bool await_pending_cancel(const round_trip& rt);

  batch_reply& give_up_pending(batch_reply& out);

  // Whether a statement of the batch opens a transaction itself (BEGIN, START TRANSACTION).
  static bool opens_transaction(const std::vector<statement>& batch);

  // A COPY started inside a batch: its rows read and dropped, or COPY FROM STDIN failed.
  io drain_copy_out(round_trip& rt);
  io fail_copy_in(round_trip& rt);

  // One simple-protocol query (a middleware's own commands are not understood in
  // the extended protocol); the first value, or nothing on error.
  bool simple_query(const char* sql, std::string& value);

  void give_up_quietly();

  // A transaction no statement of the batch opened: is a middleware to blame?
  // Only asked on that anomaly (plain PostgreSQL never does it), so an unknown
  // command costs nothing in the common case; the transaction is rolled back after.
  std::string diagnose_foreign_transaction();

  batch_reply& give_up(batch_reply& out, const round_trip& rt);

  // A borrowed session goes back idle and out of pipeline mode, in the blocking
  // mode it came in. A transaction still open is rolled back; a session that
  // cannot be brought back (mid-round-trip after a timeout, a lost link) has its
  // socket shut down, so that the server ends it and rolls back, and its owner
  // sees CONNECTION_BAD on next use (PQreset() reconnects it).
  void hand_back() noexcept;

  // A statement's answer that is not an error.
  static void fill_ok(PGresult* raw, result res, reply& r);
  static void fill_error(const PGresult* raw, reply& r);

  // A clock for one call outside the pipeline.
  round_trip trip() const;

  // libpq's COPY buffer is full: send some of it, reading meanwhile.
  bool copy_drain(round_trip& rt);
  // A COPY call's deadline and grace passed: the connection is given up.
  bool copy_expired(const round_trip& rt);
  bool copy_failed(std::string why);
  std::string lost_reason() const;
  void free_copy_row() noexcept;

  // The answer that ends a COPY.
  batch_reply& finish_copy(round_trip& rt, batch_reply& out);

  // One statement's answer outside the pipeline, then the null result that ends it.
  batch_reply& read_final(round_trip& rt, PGresult* raw, batch_reply& out);

  static server_state state_of(PGTransactionStatusType t);
  batch_reply& lost(batch_reply& out, std::string why);

  PGconn* conn_ = nullptr;
  bool borrowed_ = false;         // adopt(): the caller's session, never closed here
  bool was_nonblocking_ = false;  // adopt(): its mode, restored when it is handed back
  std::string copy_lost_;         // why the COPY in progress cannot go on
  char* copy_row_ = nullptr;      // the last row copy_get() returned (libpq's memory)
  network_settings net_;
  std::shared_ptr<cancel_state> cancel_;  // a cancel request not yet known to be handled
  std::string closed_reason_;             // why exchange() finds the connection closed, if pqscope closed it
  std::string fatal_;  // a FATAL error answered in this batch: why the server is about to close the session
  server_state last_state_ = server_state::unknown;  // after the last exchange (idle after open())
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

struct libpq_driver::cancel_state {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
};

PQSCOPE_DECL void libpq_driver::adopt(PGconn* c) {
  close();
  if (c == nullptr) throw usage_error("borrow(): the PGconn* is null");
  if (PQstatus(c) != CONNECTION_OK) throw usage_error("borrow(): the PGconn* is not connected (PQstatus is not CONNECTION_OK)");
  if (PQpipelineStatus(c) != PQ_PIPELINE_OFF) throw usage_error("borrow(): the PGconn* is in pipeline mode; leave it first");
  switch (PQtransactionStatus(c)) {
    case PQTRANS_IDLE: break;
    case PQTRANS_ACTIVE: throw usage_error("borrow(): the PGconn* has a query in progress; read its results first");
    default:
      throw usage_error("borrow(): the PGconn* is inside a transaction; pqscope's scopes must own the transactions "
                        "they run in, so end it first");
  }
  if (PQisBusy(c) != 0) throw usage_error("borrow(): the PGconn* has results not yet read");
  was_nonblocking_ = PQisnonblocking(c) != 0;
  if (!was_nonblocking_ && PQsetnonblocking(c, 1) != 0)
    throw connection_error("borrow(): " + detail::trimmed(PQerrorMessage(c)));
  conn_ = c;
  borrowed_ = true;
  closed_reason_.clear();
  last_state_ = server_state::idle;
}

PQSCOPE_DECL int libpq_driver::copy_start(const statement& s, batch_reply& out) {
  out.replies.assign(1, reply{});
  copy_lost_.clear();
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_), 0;
  last_state_ = server_state::unknown;
  round_trip rt = trip();
  if (!await_pending_cancel(rt)) return give_up_pending(out), 0;
  // COPY takes no parameters, and goes as a simple query: Pgpool-II never answers
  // the end of a COPY started with the extended protocol (seen with 4.3).
  const int sent = s.n_params == 0 ? PQsendQuery(conn_, s.sql)
                                   : PQsendQueryParams(conn_, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0);
  if (sent != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_))), 0;
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_))), 0;
    case io::expired: return give_up(out, rt), 0;
  }
  if (await_result(rt) == io::expired) return give_up(out, rt), 0;
  PGresult* raw = PQgetResult(conn_);
  if (raw == nullptr) return lost(out, detail::trimmed(PQerrorMessage(conn_))), 0;
  const ExecStatusType st = PQresultStatus(raw);
  if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
    PQclear(raw);
    return st;
  }
  read_final(rt, raw, out);
  return 0;
}

PQSCOPE_DECL bool libpq_driver::copy_put(std::string_view data) {
  if (!copy_lost_.empty() || conn_ == nullptr) return false;
  round_trip rt = trip();
  for (;;) {
    const int r = PQputCopyData(conn_, data.data(), static_cast<int>(data.size()));
    if (r == 1) break;
    if (r < 0) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
    if (!copy_drain(rt)) return false;  // 0: libpq's buffer is full; send some and try again
  }
  // In non-blocking mode libpq's buffer grows instead of refusing data: send it
  // all before taking more, so memory stays at about one chunk.
  switch (flush(rt)) {
    case io::ok: return true;
    case io::failed: return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return copy_expired(rt);
  }
  return true;
}

PQSCOPE_DECL batch_reply libpq_driver::copy_end(const char* abort_reason) {
  batch_reply out;
  out.replies.assign(1, reply{});
  if (!copy_lost_.empty() || conn_ == nullptr) return lost(out, lost_reason());
  round_trip rt = trip();
  for (;;) {
    const int r = PQputCopyEnd(conn_, abort_reason);
    if (r == 1) break;
    if (r < 0) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    if (!copy_drain(rt)) return lost(out, lost_reason());
  }
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }
  return finish_copy(rt, out);
}

PQSCOPE_DECL bool libpq_driver::copy_get(std::string_view& row) {
  free_copy_row();
  if (!copy_lost_.empty() || conn_ == nullptr) return false;
  round_trip rt = trip();
  for (;;) {
    char* buf = nullptr;
    const int n = PQgetCopyData(conn_, &buf, /*async=*/1);
    if (n > 0) {
      copy_row_ = buf;
      row = std::string_view(buf, static_cast<std::size_t>(n));
      return true;
    }
    if (n == -1) return false;  // done: the final answer follows
    if (n < -1) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w == io::expired) return copy_expired(rt);
    if (w == io::failed || PQconsumeInput(conn_) != 1) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  }
}

PQSCOPE_DECL batch_reply libpq_driver::copy_out_end() {
  free_copy_row();
  batch_reply out;
  out.replies.assign(1, reply{});
  if (!copy_lost_.empty() || conn_ == nullptr) return lost(out, lost_reason());
  round_trip rt = trip();
  return finish_copy(rt, out);
}

PQSCOPE_DECL batch_reply libpq_driver::script(const char* sql) {
  batch_reply out;
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_);
  last_state_ = server_state::unknown;
  round_trip rt = trip();
  if (!await_pending_cancel(rt)) return give_up_pending(out);
  if (PQsendQuery(conn_, sql) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }
  for (;;) {
    if (await_result(rt) == io::expired) return give_up(out, rt);
    PGresult* raw = PQgetResult(conn_);
    if (raw == nullptr) break;
    result res{detail::adopt(raw)};
    reply r;
    switch (PQresultStatus(raw)) {
      case PGRES_EMPTY_QUERY:  // a script of blanks and comments: no statement ran
        continue;
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
        fill_ok(raw, std::move(res), r);
        break;
      case PGRES_FATAL_ERROR:
        if (PQstatus(conn_) == CONNECTION_BAD) return lost(out, detail::trimmed(PQresultErrorMessage(raw)));
        fill_error(raw, r);
        break;
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
        // Refused before sending; should one slip through, end it so the session stays usable.
        if (PQresultStatus(raw) == PGRES_COPY_IN) (void)PQputCopyEnd(conn_, "COPY is not allowed in a script");
        r.st = reply::status::error;
        r.error = std::make_shared<const reply_error>(
            reply_error{"0A000", "COPY FROM STDIN / TO STDOUT is not allowed in a script", {}, {}, 0, {}, {}, {}, {}, {}});
        break;
      default:
        return lost(out, "unexpected answer from the server: " + std::string(PQresStatus(PQresultStatus(raw))));
    }
    out.replies.push_back(std::move(r));
  }
  out.state = state_of(PQtransactionStatus(conn_));
  last_state_ = out.state;
  return out;
}

PQSCOPE_DECL void libpq_driver::hand_back() noexcept {
  PGconn* c = conn_;
  const bool settled = PQstatus(c) == CONNECTION_OK && PQpipelineStatus(c) == PQ_PIPELINE_OFF && PQisBusy(c) == 0;
  if (settled && (PQtransactionStatus(c) == PQTRANS_INTRANS || PQtransactionStatus(c) == PQTRANS_INERROR)) {
    try {
      static const statement rollback{"ROLLBACK", 0, nullptr, nullptr};
      borrowed_ = false;  // a timeout inside must not come back here
      (void)exchange({rollback});
      borrowed_ = true;
    } catch (...) {
      borrowed_ = true;  // out of memory: the check below shuts the socket down
    }
  }
  if (conn_ == nullptr || PQstatus(c) != CONNECTION_OK || PQpipelineStatus(c) != PQ_PIPELINE_OFF ||
      PQtransactionStatus(c) != PQTRANS_IDLE) {
    const int sock = PQsocket(c);
    if (sock >= 0) ::shutdown(sock, SHUT_RDWR);
  }
  if (!was_nonblocking_) (void)PQsetnonblocking(c, 0);
}

PQSCOPE_DECL void libpq_driver::fill_ok(PGresult* raw, result res, reply& r) {
  r.st = reply::status::ok;
  r.command = PQcmdStatus(raw);
  r.res = std::move(res);
}

PQSCOPE_DECL void libpq_driver::fill_error(const PGresult* raw, reply& r) {
  r.st = reply::status::error;
  r.error = detail::error_of(raw);
}

PQSCOPE_DECL libpq_driver::round_trip libpq_driver::trip() const {
  static const std::vector<statement> none;
  round_trip rt{none};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.deadline = clock::now() + net_.timeout;
  }
  return rt;
}

PQSCOPE_DECL bool libpq_driver::copy_drain(round_trip& rt) {
  short revents = 0;
  const io w = wait(rt, POLLIN | POLLOUT, revents);
  if (w == io::expired) return copy_expired(rt);
  if (w == io::failed) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0 && PQconsumeInput(conn_) != 1)
    return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  if (PQflush(conn_) < 0) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  return true;
}

PQSCOPE_DECL bool libpq_driver::copy_expired(const round_trip& rt) {
  batch_reply ignored;
  give_up(ignored, rt);
  copy_lost_ = closed_reason_;
  return false;
}

PQSCOPE_DECL bool libpq_driver::copy_failed(std::string why) {
  copy_lost_ = why.empty() ? "connection lost during COPY" : std::move(why);
  return false;
}

PQSCOPE_DECL std::string libpq_driver::lost_reason() const {
  if (!copy_lost_.empty()) return copy_lost_;
  return closed_reason_.empty() ? "the connection is closed" : closed_reason_;
}

PQSCOPE_DECL void libpq_driver::free_copy_row() noexcept {
  if (copy_row_ != nullptr) PQfreemem(copy_row_);
  copy_row_ = nullptr;
}

PQSCOPE_DECL batch_reply& libpq_driver::finish_copy(round_trip& rt, batch_reply& out) {
  if (await_result(rt) == io::expired) return give_up(out, rt);
  PGresult* raw = PQgetResult(conn_);
  if (raw == nullptr) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  return read_final(rt, raw, out);
}

PQSCOPE_DECL batch_reply& libpq_driver::read_final(round_trip& rt, PGresult* raw, batch_reply& out) {
  result res{detail::adopt(raw)};
  reply& r = out.replies.front();
  switch (PQresultStatus(raw)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      fill_ok(raw, std::move(res), r);
      break;
    case PGRES_FATAL_ERROR:
      if (PQstatus(conn_) == CONNECTION_BAD) return lost(out, detail::trimmed(PQresultErrorMessage(raw)));
      fill_error(raw, r);
      break;
    default:
      return lost(out, "unexpected answer from the server: " + std::string(PQresStatus(PQresultStatus(raw))));
  }
  for (;;) {
    if (await_result(rt) == io::expired) return give_up(out, rt);
    PGresult* extra = PQgetResult(conn_);
    if (extra == nullptr) break;
    const ExecStatusType st = PQresultStatus(extra);
    PQclear(extra);
    // COPY TO STDOUT of a failed COPY FROM: cannot happen; anything else is a broken stream.
    if (st != PGRES_COMMAND_OK) return lost(out, "unexpected extra answer from the server");
  }
  out.state = state_of(PQtransactionStatus(conn_));
  last_state_ = out.state;
  return out;
}

PQSCOPE_DECL std::chrono::milliseconds libpq_driver::grace_for(std::chrono::milliseconds timeout) noexcept {
  return timeout < std::chrono::milliseconds(1000) ? timeout : std::chrono::milliseconds(1000);
}

PQSCOPE_DECL void libpq_driver::open(const std::string& conninfo, const std::string& fallback_application_name) {
  close();
  detail::check_conninfo(conninfo);
  std::vector<std::string> owned;  // values that must outlive the call
  std::vector<const char*> keys, vals;
  owned.reserve(std::size(detail::network_defaults));
  for (const auto& d : detail::network_defaults) {
    if (is_set(conninfo, d.key)) continue;
    std::string value = d.value;
    if (std::strcmp(d.key, "connect_timeout") == 0 && net_.timeout.count() > 0)
      value = detail::connect_timeout_for(net_.timeout);
    owned.push_back(std::move(value));
    keys.push_back(d.key);
    vals.push_back(owned.back().c_str());
  }
  // The conninfo comes after the defaults: with expand_dbname, what it sets wins.
  keys.push_back("dbname");
  vals.push_back(conninfo.c_str());
  keys.push_back("fallback_application_name");
  vals.push_back(fallback_application_name.c_str());
  keys.push_back(nullptr);
  vals.push_back(nullptr);
  conn_ = PQconnectdbParams(keys.data(), vals.data(), /*expand_dbname=*/1);
  if (conn_ == nullptr) throw connection_error("could not connect: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = detail::redact(detail::trimmed(PQerrorMessage(conn_)), conninfo);
    close();
    throw connection_error("could not connect: " + msg);
  }
  // Every wait is a poll() with a deadline; libpq never blocks on the socket.
  if (PQsetnonblocking(conn_, 1) != 0) {
    std::string msg = detail::redact(detail::trimmed(PQerrorMessage(conn_)), conninfo);
    close();
    throw connection_error("could not connect: " + msg);
  }
  closed_reason_.clear();
  last_state_ = server_state::idle;
}

PQSCOPE_DECL void libpq_driver::close() noexcept {
  free_copy_row();
  if (conn_ != nullptr && borrowed_)
    hand_back();
  else if (conn_ != nullptr)
    PQfinish(conn_);  // non-blocking: the goodbye never waits on a stalled path
  conn_ = nullptr;
  borrowed_ = false;
  cancel_.reset();
}

PQSCOPE_DECL void libpq_driver::abandon() noexcept {
  if (conn_ == nullptr) return;
  if (borrowed_) {  // the caller's handle: theirs to deal with in the child
    conn_ = nullptr;
    borrowed_ = false;
    cancel_.reset();
    return;
  }
  int sock = PQsocket(conn_);
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (sock >= 0 && devnull >= 0) ::dup2(devnull, sock);
  if (devnull >= 0) ::close(devnull);
  PQfinish(conn_);
  conn_ = nullptr;
  cancel_.reset();
}

PQSCOPE_DECL batch_reply libpq_driver::exchange(const std::vector<statement>& batch) {
  batch_reply out;
  out.replies.resize(batch.size());
  fatal_.clear();
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_);
  const server_state before = std::exchange(last_state_, server_state::unknown);
  round_trip rt{batch};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.deadline = clock::now() + net_.timeout;
  }
  if (!await_pending_cancel(rt)) return give_up_pending(out);
  if (PQenterPipelineMode(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  for (const statement& s : batch) {
    if (PQsendQueryParams(conn_, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0) != 1)
      return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  }
  if (PQpipelineSync(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }

  for (std::size_t i = 0; i < out.replies.size(); ++i) {
    reply& r = out.replies[i];
    rt.awaiting = i;
    if (await_result(rt) == io::expired) return give_up(out, rt);
    PGresult* raw = PQgetResult(conn_);
    if (raw == nullptr) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    result res{detail::adopt(raw)};
    switch (PQresultStatus(raw)) {
      case PGRES_COMMAND_OK:
      case PGRES_TUPLES_OK:
      case PGRES_EMPTY_QUERY:
        fill_ok(raw, std::move(res), r);
        break;
      case PGRES_PIPELINE_ABORTED:
        r.st = reply::status::skipped;
        break;
      case PGRES_FATAL_ERROR:
        if (PQstatus(conn_) == CONNECTION_BAD) return lost(out, detail::trimmed(PQresultErrorMessage(raw)));
        fill_error(raw, r);
        fatal_ = detail::fatal_reason(raw);
        break;
      case PGRES_COPY_OUT:
      case PGRES_COPY_IN: {
        // A COPY the statement checks did not recognise: end it here so the
        // session stays usable, and report it (reply_error::misuse).
        const bool in = PQresultStatus(raw) == PGRES_COPY_IN;
        if (in && i + 1 < batch.size()) return lost(out, detail::copy_in_kills_session());
        const io e = in ? fail_copy_in(rt) : drain_copy_out(rt);
        if (e == io::expired) return give_up(out, rt);
        if (e == io::failed) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
        if (await_result(rt) == io::expired) return give_up(out, rt);
        PGresult* end = PQgetResult(conn_);  // the COPY's own answer
        if (end == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
          if (end != nullptr) PQclear(end);
          return lost(out, detail::trimmed(PQerrorMessage(conn_)));
        }
        PQclear(end);
        r.st = reply::status::error;
        r.error = detail::copy_misuse(in);
        break;
      }
      default:
        return lost(out, "unexpected answer from the server: " + std::string(PQresStatus(PQresultStatus(raw))));
    }
    // Each statement's answers end with a null result.
    if (await_result(rt) == io::expired) return give_up(out, rt);
    if (PGresult* extra = PQgetResult(conn_)) {
      PQclear(extra);
      return lost(out, "unexpected extra answer from the server");
    }
  }
  rt.awaiting = batch.size();
  if (await_result(rt) == io::expired) return give_up(out, rt);
  PGresult* sync = PQgetResult(conn_);
  bool sync_ok = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  if (sync != nullptr) PQclear(sync);
  if (!sync_ok) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  if (PQexitPipelineMode(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  out.state = state_of(PQtransactionStatus(conn_));
  if (before == server_state::idle && out.state == server_state::in_transaction && !opens_transaction(batch) &&
      is_open())
    out.diagnostic = diagnose_foreign_transaction();
  last_state_ = out.state;
  return out;
}

PQSCOPE_DECL std::string libpq_driver::application_name() const {
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

PQSCOPE_DECL bool libpq_driver::is_set(const std::string& conninfo, const char* key) {
  bool set = false;
  if (PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), nullptr)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (std::strcmp(o->keyword, key) == 0 && o->val != nullptr && *o->val != '\0') set = true;
    PQconninfoFree(opts);
  }
  if (set) return true;
  // Its environment variable (PGCONNECT_TIMEOUT, ...), if it has one, counts as set.
  if (PQconninfoOption* defs = PQconndefaults()) {
    for (PQconninfoOption* o = defs; o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, key) != 0 || o->envvar == nullptr) continue;
      // Read-only, as libpq itself reads the environment while connecting.
      const char* v = std::getenv(o->envvar);  // NOLINT(concurrency-mt-unsafe)
      if (v != nullptr && *v != '\0') set = true;
    }
    PQconninfoFree(defs);
  }
  return set;
}

PQSCOPE_DECL libpq_driver::io libpq_driver::wait(round_trip& rt, short events, short& revents) {
  for (;;) {
    int timeout_ms = -1;
    if (rt.bounded) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(rt.deadline - clock::now()).count();
      if (left <= 0) {
        if (!expire(rt)) return io::expired;
        continue;
      }
      timeout_ms = left > 1000000 ? 1000000 : static_cast<int>(left);
    }
    pollfd p{PQsocket(conn_), events, 0};
    if (p.fd < 0) return io::failed;
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno != EINTR) return io::failed;
    if (r > 0) {
      revents = p.revents;
      return io::ok;
    }
  }
}

PQSCOPE_DECL bool libpq_driver::expire(round_trip& rt) {
  if (rt.in_grace) return false;
  rt.in_grace = true;
  rt.deadline += grace_for(net_.timeout);
  const bool commit = rt.awaiting < rt.batch.size() && std::strcmp(rt.batch[rt.awaiting].sql, "COMMIT") == 0;
  if (!commit) rt.cancel_sent = send_cancel();
  return true;
}

PQSCOPE_DECL bool libpq_driver::send_cancel() noexcept {
  PGcancel* c = PQgetCancel(conn_);
  if (c == nullptr) return false;
  try {
    auto state = std::make_shared<cancel_state>();
    std::thread([c, state] {
      char err[256];
      (void)PQcancel(c, err, sizeof err);  // a failure leaves the statement running: the grace decides
      PQfreeCancel(c);
      std::lock_guard<std::mutex> lock(state->m);
      state->done = true;
      state->cv.notify_all();
    }).detach();
    cancel_ = std::move(state);
    return true;
  } catch (...) {
    PQfreeCancel(c);
    return false;
  }
}

PQSCOPE_DECL libpq_driver::io libpq_driver::flush(round_trip& rt) {
  for (;;) {
    const int f = PQflush(conn_);
    if (f == 0) return io::ok;
    if (f < 0) return io::failed;
    short revents = 0;
    const io w = wait(rt, POLLIN | POLLOUT, revents);
    if (w != io::ok) return w;
    if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0 && PQconsumeInput(conn_) != 1) return io::failed;
  }
}

PQSCOPE_DECL libpq_driver::io libpq_driver::await_result(round_trip& rt) {
  while (PQisBusy(conn_) != 0) {
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w == io::expired) return w;
    if (w == io::failed || PQconsumeInput(conn_) != 1) return io::ok;
  }
  return io::ok;
}

PQSCOPE_DECL bool libpq_driver::await_pending_cancel(const round_trip& rt) {
  if (!cancel_) return true;
  std::shared_ptr<cancel_state> c = std::move(cancel_);
  std::unique_lock<std::mutex> lock(c->m);
  if (!rt.bounded) {
    c->cv.wait(lock, [&] { return c->done; });
    return true;
  }
  return c->cv.wait_until(lock, rt.deadline, [&] { return c->done; });
}

PQSCOPE_DECL batch_reply& libpq_driver::give_up_pending(batch_reply& out) {
  std::string why = "a cancel request sent after an earlier round trip exceeded network_timeout had not been "
                    "handled by the server within network_timeout, and it could cancel this statement; the "
                    "connection was closed before anything was sent";
  close();
  closed_reason_ = why;
  return lost(out, std::move(why));
}

PQSCOPE_DECL libpq_driver::io libpq_driver::drain_copy_out(round_trip& rt) {
  for (;;) {
    char* row = nullptr;
    const int n = PQgetCopyData(conn_, &row, /*async=*/1);
    if (row != nullptr) PQfreemem(row);
    if (n > 0) continue;
    if (n == -1) return io::ok;  // the end: the COPY's answer follows
    if (n < -1) return io::failed;
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w != io::ok) return w;
    if (PQconsumeInput(conn_) != 1) return io::failed;
  }
}

PQSCOPE_DECL libpq_driver::io libpq_driver::fail_copy_in(round_trip& rt) {
  for (;;) {
    const int r = PQputCopyEnd(conn_, "pqscope: COPY FROM STDIN cannot run through execute(); use copy_in()");
    if (r == 1) return flush(rt);
    if (r < 0) return io::failed;
    const io f = flush(rt);  // 0: no room in libpq's buffer yet
    if (f != io::ok) return f;
  }
}

PQSCOPE_DECL bool libpq_driver::opens_transaction(const std::vector<statement>& batch) {
  for (const statement& s : batch) {
    const char* p = s.sql;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '(') ++p;
    if (strncasecmp(p, "BEGIN", 5) == 0 || strncasecmp(p, "START", 5) == 0) return true;
  }
  return false;
}

PQSCOPE_DECL bool libpq_driver::simple_query(const char* sql, std::string& value) {
  static const std::vector<statement> none;
  round_trip rt{none};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.in_grace = true;  // no cancel for a probe: its deadline is final
    rt.deadline = clock::now() + net_.timeout;
  }
  if (!await_pending_cancel(rt)) {
    give_up_quietly();
    return false;
  }
  if (PQsendQuery(conn_, sql) != 1) return false;
  const io sent = flush(rt);
  if (sent == io::expired) {
    give_up_quietly();
    return false;
  }
  // Every answer is read, an error's too: the session must be left idle for the
  // next batch (a diagnosis must never break the connection).
  bool ok = sent == io::ok;
  for (;;) {
    if (await_result(rt) != io::ok) {
      give_up_quietly();
      return false;
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    const ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) value = PQgetvalue(r, 0, 0);
    else if (st != PGRES_TUPLES_OK) ok = false;
    PQclear(r);
    if (PQstatus(conn_) == CONNECTION_BAD) return false;
  }
  return ok && is_open();
}

PQSCOPE_DECL void libpq_driver::give_up_quietly() {
  close();
  closed_reason_ = "no answer from the server to a diagnostic query within network_timeout";
}

PQSCOPE_DECL std::string libpq_driver::diagnose_foreign_transaction() {
  std::string version, mode;
  if (!simple_query("SHOW pool_version", version) || version.empty()) return {};
  simple_query("PGPOOL SHOW backend_clustering_mode", mode);
  // Only raw mode opens transactions of its own; in any other mode a statement
  // of the application did, and the generic message says so.
  if (mode != "raw") return {};
  return "Pgpool-II (" + version + ") opened it: in raw mode (backend_clustering_mode = 'raw') it wraps the first "
         "write of a session sent with the extended protocol in a BEGIN of its own and never ends that "
         "transaction. Run Pgpool-II in streaming_replication mode, or connect to PostgreSQL directly";
}

PQSCOPE_DECL batch_reply& libpq_driver::give_up(batch_reply& out, const round_trip& rt) {
  const long long ms = net_.timeout.count() + grace_for(net_.timeout).count();
  std::string why = "no answer from the server within network_timeout (" + std::to_string(net_.timeout.count()) +
                    " ms) and the grace after " + (rt.cancel_sent ? "a cancel request" : "it") + " (" +
                    std::to_string(ms) + " ms in all); the connection was closed";
  close();
  closed_reason_ = why;
  return lost(out, std::move(why));
}

namespace detail {
PQSCOPE_DECL std::shared_ptr<reply_error> error_of(const PGresult* raw) {
  auto field = [raw](int code) {
    const char* v = PQresultErrorField(raw, code);
    return std::string(v != nullptr ? v : "");
  };
  auto e = std::make_shared<reply_error>();
  e->sqlstate = field(PG_DIAG_SQLSTATE);
  e->message = field(PG_DIAG_MESSAGE_PRIMARY);
  e->detail = field(PG_DIAG_MESSAGE_DETAIL);
  e->hint = field(PG_DIAG_MESSAGE_HINT);
  e->position = static_cast<std::size_t>(std::strtoul(field(PG_DIAG_STATEMENT_POSITION).c_str(), nullptr, 10));
  e->schema = field(PG_DIAG_SCHEMA_NAME);
  e->table = field(PG_DIAG_TABLE_NAME);
  e->column = field(PG_DIAG_COLUMN_NAME);
  e->datatype = field(PG_DIAG_DATATYPE_NAME);
  e->constraint = field(PG_DIAG_CONSTRAINT_NAME);
  if (e->message.empty()) e->message = trimmed(PQresultErrorMessage(raw));
  return e;
}

PQSCOPE_DECL std::string trimmed(const char* s) {
  std::string r = s != nullptr ? s : "";
  while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
  return r;
}

PQSCOPE_DECL std::shared_ptr<reply_error> copy_misuse(bool copy_in) {
  auto e = std::make_shared<reply_error>();
  e->misuse = true;
  e->message = std::string("the statement started COPY ") + (copy_in ? "FROM STDIN" : "TO STDOUT") +
               ", which execute() cannot carry; pqscope " + (copy_in ? "failed the COPY" : "dropped its rows") +
               ". Use copy_in() / copy_out()";
  return e;
}

PQSCOPE_DECL std::string fatal_reason(const PGresult* raw) {
  const char* severity = PQresultErrorField(raw, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity == nullptr) severity = PQresultErrorField(raw, PG_DIAG_SEVERITY);  // PgBouncer sends only this one
  if (severity == nullptr || (std::strcmp(severity, "FATAL") != 0 && std::strcmp(severity, "PANIC") != 0)) return {};
  std::string why = "the server ended the session: " + trimmed(PQresultErrorMessage(raw));
  if (why.find("statement pooling mode") != std::string::npos)
    why += " (PgBouncer in pool_mode = statement allows no transaction, so no pqscope scope can run there: use "
           "pool_mode = transaction or session for this database)";
  return why;
}

PQSCOPE_DECL std::string copy_in_kills_session() {
  return "a statement started COPY FROM STDIN, which execute() cannot carry, with statements queued behind it: the "
         "server reads them as broken COPY data and ends the session. Use copy_in()";
}
}  // namespace detail

PQSCOPE_DECL server_state libpq_driver::state_of(PGTransactionStatusType t) {
  switch (t) {
    case PQTRANS_IDLE: return server_state::idle;
    case PQTRANS_INTRANS: return server_state::in_transaction;
    case PQTRANS_INERROR: return server_state::failed_transaction;
    default: return server_state::unknown;
  }
}

PQSCOPE_DECL batch_reply& libpq_driver::lost(batch_reply& out, std::string why) {
  // The server (or PgBouncer) said why before it closed: that, not libpq's "server closed the connection".
  if (!fatal_.empty()) why = std::exchange(fatal_, {});
  out.lost = true;
  out.lost_message = why.empty() ? "connection lost" : std::move(why);
  out.state = server_state::unknown;
  // Answers already read stay as read; the rest never ran as far as we know.
  return out;
}
#endif

namespace detail {
// Hands connection_options to a driver that takes time bounds (libpq_driver and
// drivers derived from it); other drivers are left alone.
template <class D, class = void>
struct takes_network : std::false_type {};
template <class D>
struct takes_network<D, std::void_t<decltype(std::declval<D&>().set_network(network_settings{})),
                                    decltype(std::declval<const D&>().network())>> : std::true_type {};

template <class D>
void configure_driver(D& d, const connection_options& o) {
  if constexpr (takes_network<D>::value) {
    network_settings s;
    s.timeout = o.network_timeout;
    d.set_network(s);
  }
}

// A second driver with the same time bounds (the in-doubt resolver's fresh connection).
template <class D>
void copy_driver_settings(D& to, const D& from) {
  if constexpr (takes_network<D>::value) to.set_network(from.network());
}
}  // namespace detail

}  // namespace pqscope
