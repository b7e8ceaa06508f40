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
// The bodies: impl/driver.ipp (connecting, exchange), impl/driver_wait.ipp (waits,
// deadlines, cancel requests), impl/driver_copy.ipp (COPY and scripts). What the
// asio front end does the same way lives in detail/libpq_connect.hpp (conninfo,
// defaults), detail/libpq_reply.hpp (reading answers) and detail/middleware.hpp.
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
#include <pqscope/notification.hpp>
#include <pqscope/options.hpp>
#include <pqscope/reply.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/libpq_connect.hpp>
#include <pqscope/detail/libpq_reply.hpp>
#include <pqscope/detail/middleware.hpp>
#include <pqscope/detail/notices.hpp>

#ifndef LIBPQ_HAS_PIPELINING
#error "pqscope needs libpq 14 or newer (pipeline mode)"
#endif

namespace pqscope {

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
  // Where the server's notices go on the sessions this driver opens (notices.hpp).
  void set_notices(detail::notice_callback h) {
    notices_ = std::move(h);
    if (!borrowed_) detail::install_notices(conn_, &notices_);
  }
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
  // The same, filling `out`, whose memory is used again: a front end that keeps
  // one batch_reply allocates nothing per round trip for it.
  batch_reply& exchange(const std::vector<statement>& batch, batch_reply& out);

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

  // ---- notifications (LISTEN), between round trips --------------------------
  enum class notice_wait { received, timed_out, lost };

  // The oldest notification libpq holds: kept since it arrived, also during other
  // statements and after the connection was lost, until taken here.
  bool take_notification(notification& out);

  // take_notification(), or waits up to `timeout` (0: only what has arrived) for one.
  // lost: the connection failed; every notification it had received was taken first.
  notice_wait wait_notification(std::chrono::milliseconds timeout, notification& out);

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

  // A COPY started inside a batch: its rows read and dropped, or COPY FROM STDIN failed.
  io drain_copy_out(round_trip& rt);
  io fail_copy_in(round_trip& rt);

  // One simple-protocol query (detail/middleware.hpp); the first value, or nothing on error.
  bool simple_query(const char* sql, std::string& value);

  void give_up_quietly();

  // A transaction no statement of the batch opened: is a middleware to blame?
  std::string diagnose_foreign_transaction();

  batch_reply& give_up(batch_reply& out, const round_trip& rt);

  // A borrowed session goes back idle and out of pipeline mode, in the blocking
  // mode it came in. A transaction still open is rolled back; a session that
  // cannot be brought back (mid-round-trip after a timeout, a lost link) has its
  // socket shut down, so that the server ends it and rolls back, and its owner
  // sees CONNECTION_BAD on next use (PQreset() reconnects it).
  void hand_back() noexcept;

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

  batch_reply& lost(batch_reply& out, std::string why);

  PGconn* conn_ = nullptr;
  bool borrowed_ = false;         // adopt(): the caller's session, never closed here
  bool was_nonblocking_ = false;  // adopt(): its mode, restored when it is handed back
  std::string copy_lost_;         // why the COPY in progress cannot go on
  char* copy_row_ = nullptr;      // the last row copy_get() returned (libpq's memory)
  network_settings net_;
  detail::notice_callback notices_;  // its address is given to libpq: the driver does not move once open
  std::shared_ptr<cancel_state> cancel_;  // a cancel request not yet known to be handled
  std::string closed_reason_;             // why exchange() finds the connection closed, if pqscope closed it
  std::string fatal_;  // a FATAL error answered in this batch: why the server is about to close the session
};

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
  if constexpr (std::is_same_v<D, libpq_driver>) d.set_notices(notice_route(o));
}

// A second driver with the same time bounds (the in-doubt resolver's fresh connection).
template <class D>
void copy_driver_settings(D& to, const D& from) {
  if constexpr (takes_network<D>::value) to.set_network(from.network());
}
}  // namespace detail

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/driver_wait.ipp>
#include <pqscope/impl/driver.ipp>
#include <pqscope/impl/driver_copy.ipp>
#endif
