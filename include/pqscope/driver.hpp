#pragma once
// The driver: the only part of pqscope that talks to the network.
//
// basic_connection<Driver> works with any type that offers the members of
// libpq_driver below: open(), close(), abandon(), is_open(), exchange(),
// application_name() and native_handle(). exchange() is one round trip: it sends
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

#include <fcntl.h>
#include <poll.h>
#include <strings.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/config.hpp>

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
  throw usage_error("invalid connection string: " + msg);
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
  struct cancel_state {
    std::mutex m;
    std::condition_variable cv;
    bool done = false;
  };

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

  // One simple-protocol query (a middleware's own commands are not understood in
  // the extended protocol); the first value, or nothing on error.
  bool simple_query(const char* sql, std::string& value);

  void give_up_quietly();

  // A transaction no statement of the batch opened: is a middleware to blame?
  // Only asked on that anomaly (plain PostgreSQL never does it), so an unknown
  // command costs nothing in the common case; the transaction is rolled back after.
  std::string diagnose_foreign_transaction();

  batch_reply& give_up(batch_reply& out, const round_trip& rt);

  static std::string trim(const char* s);
  static std::string field_of(const PGresult* r, int code);
  static server_state state_of(PGTransactionStatusType t);
  batch_reply& lost(batch_reply& out, std::string why);

  PGconn* conn_ = nullptr;
  network_settings net_;
  std::shared_ptr<cancel_state> cancel_;  // a cancel request not yet known to be handled
  std::string closed_reason_;             // why exchange() finds the connection closed, if pqscope closed it
  server_state last_state_ = server_state::unknown;  // after the last exchange (idle after open())
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

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
    std::string msg = trim(PQerrorMessage(conn_));
    close();
    throw connection_error("could not connect: " + msg);
  }
  // Every wait is a poll() with a deadline; libpq never blocks on the socket.
  if (PQsetnonblocking(conn_, 1) != 0) {
    std::string msg = trim(PQerrorMessage(conn_));
    close();
    throw connection_error("could not connect: " + msg);
  }
  closed_reason_.clear();
  last_state_ = server_state::idle;
}

PQSCOPE_DECL void libpq_driver::close() noexcept {
  if (conn_ != nullptr) PQfinish(conn_);  // non-blocking: the goodbye never waits on a stalled path
  conn_ = nullptr;
  cancel_.reset();
}

PQSCOPE_DECL void libpq_driver::abandon() noexcept {
  if (conn_ == nullptr) return;
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
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_);
  const server_state before = std::exchange(last_state_, server_state::unknown);
  round_trip rt{batch};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.deadline = clock::now() + net_.timeout;
  }
  if (!await_pending_cancel(rt)) return give_up_pending(out);
  if (PQenterPipelineMode(conn_) != 1) return lost(out, trim(PQerrorMessage(conn_)));
  for (const statement& s : batch) {
    if (PQsendQueryParams(conn_, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0) != 1)
      return lost(out, trim(PQerrorMessage(conn_)));
  }
  if (PQpipelineSync(conn_) != 1) return lost(out, trim(PQerrorMessage(conn_)));
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, trim(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }

  for (std::size_t i = 0; i < out.replies.size(); ++i) {
    reply& r = out.replies[i];
    rt.awaiting = i;
    if (await_result(rt) == io::expired) return give_up(out, rt);
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
  if (!sync_ok) return lost(out, trim(PQerrorMessage(conn_)));
  if (PQexitPipelineMode(conn_) != 1) return lost(out, trim(PQerrorMessage(conn_)));
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
  bool ok = flush(rt) == io::ok;
  while (ok) {
    if (await_result(rt) != io::ok) {
      give_up_quietly();
      return false;
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) value = PQgetvalue(r, 0, 0);
    else if (PQresultStatus(r) != PGRES_TUPLES_OK) ok = false;
    PQclear(r);
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
  std::string why = "Pgpool-II (" + version + ") opened it: ";
  if (mode == "raw")
    return why + "in raw mode (backend_clustering_mode = 'raw') it wraps the first write of a session sent with "
                 "the extended protocol in a BEGIN of its own and never ends that transaction. Run Pgpool-II in "
                 "streaming_replication mode, or connect to PostgreSQL directly";
  return why + "backend_clustering_mode = '" + (mode.empty() ? "unknown" : mode) +
         "'. pqscope is tested with streaming_replication mode";
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

PQSCOPE_DECL std::string libpq_driver::trim(const char* s) {
  std::string r = s != nullptr ? s : "";
  while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
  return r;
}

PQSCOPE_DECL std::string libpq_driver::field_of(const PGresult* r, int code) {
  const char* v = PQresultErrorField(r, code);
  return v != nullptr ? v : "";
}

PQSCOPE_DECL server_state libpq_driver::state_of(PGTransactionStatusType t) {
  switch (t) {
    case PQTRANS_IDLE: return server_state::idle;
    case PQTRANS_INTRANS: return server_state::in_transaction;
    case PQTRANS_INERROR: return server_state::failed_transaction;
    default: return server_state::unknown;
  }
}

PQSCOPE_DECL batch_reply& libpq_driver::lost(batch_reply& out, std::string why) {
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
