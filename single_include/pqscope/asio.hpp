#pragma once
// pqscope 0.1.0, single-header edition: the Boost.Asio front end (C++20); needs pqscope/pqscope.hpp beside it.
//
// Generated from include/ by scripts/amalgamate.py. DO NOT EDIT: changes here
// are lost. Edit the headers in include/ and regenerate with `scripts/dev.sh amalgamate`.

// pqscope on Boost.Asio: the same nested transaction scopes, on an executor, from
// C++20 coroutines or with any completion token. Needs C++20 and Boost.Asio
// (1.74 or newer, header-only); not included by <pqscope/pqscope.hpp>, which stays
// C++17 with no Boost.
//
//   #include <pqscope/asio.hpp>
//   pqscope::asio::connection c{io.get_executor(), "postgresql://app@127.0.0.1:6432/app"};
//   co_await c.async_connect(use_awaitable);
//   co_await pqscope::asio::async_atomic(c, [&]() -> awaitable<void> {
//     co_await c.async_execute({"UPDATE account SET cents = cents - $1 WHERE id = $2", 100, 1}, use_awaitable);
//     co_await deposit(c, 2, 100);  // may open an async_atomic of its own: a savepoint
//   });
//
// One transaction engine: the scope machine of the blocking connection
// (detail/scope_machine.hpp) plans every batch; this front end only sends it and
// reads the answers without blocking (asio/link.hpp).

#if __cplusplus < 202002L
#error "pqscope/asio.hpp needs C++20 (coroutines): compile with -std=c++20"
#endif

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility> (g++ 12).
#include <utility>

// Boost 1.74 recognises coroutines under clang only with libc++
// (<experimental/coroutine>); with libstdc++ it has to be told. Defined only when
// the compiler has C++20 coroutines and Asio did not find them itself. With clang,
// include this header before Asio's coroutine headers (co_spawn, use_awaitable).
#if defined(__clang__) && defined(__cpp_impl_coroutine) && !defined(BOOST_ASIO_HAS_CO_AWAIT) && \
    !defined(BOOST_ASIO_DISABLE_CO_AWAIT)
#if __has_include(<coroutine>)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#define BOOST_ASIO_HAS_STD_COROUTINE 1
#endif
#endif

#include <boost/asio/awaitable.hpp>
#include <boost/asio/version.hpp>

#if !defined(BOOST_ASIO_HAS_CO_AWAIT)
#error "pqscope/asio.hpp: Boost.Asio does not see C++20 coroutines; include <pqscope/asio.hpp> before any Boost.Asio header, or define BOOST_ASIO_HAS_CO_AWAIT and BOOST_ASIO_HAS_STD_COROUTINE"
#endif
#if BOOST_ASIO_VERSION < 101800
#error "pqscope/asio.hpp needs Boost.Asio 1.18 (Boost 1.74) or newer"
#endif

#include <pqscope/pqscope.hpp>  // the single header beside this one

// #include <pqscope/asio/link.hpp>
// One libpq connection driven from an Asio executor without ever blocking: the
// only part of pqscope::asio that talks to the network.
//
// libpq does the protocol; this file only decides when to call it. The connection
// runs in non-blocking mode, and every wait is an Asio wait on its socket:
//   - connecting: PQconnectStartParams, then PQconnectPoll after each wait it asks
//     for. libpq may switch sockets between polls (another address, a retry without
//     TLS), so the socket is looked at again after every poll.
//   - one batch (the same contract as libpq_driver::exchange): pipeline mode, the
//     statements, one sync; PQflush until it returns 0, and while it returns 1 the
//     socket is watched for input too (PQconsumeInput), because a server that waits
//     for us to read its answers stops reading our statements; then PQisBusy /
//     PQgetResult, PQconsumeInput whenever the socket is readable, until the sync.
//     Only one sync is ever in flight (PgBouncer before 1.21 mishandles more).
//
// The socket libpq uses is not handed to Asio: Asio watches a duplicate of it
// (dup). libpq closes its own descriptor when the connection is lost, and the
// number may then be reused by another socket at once; a descriptor Asio owns and
// closes itself can never point at somebody else's socket.
//
// Time bounds and cancellation follow libpq_driver (driver.hpp, the README's
// "Timeouts"): the conninfo gets the same connect and TCP defaults; with a timeout
// (connection_options::network_timeout, or connection::set_timeout) every round
// trip has a deadline. Connecting is given up at once when its bound passes or it
// is cancelled. A batch out: PQcancel asks the server to cancel it (never while the
// answer awaited is COMMIT's: cancelling a COMMIT that waits for a synchronous
// standby turns it into a local commit reported as success), and the answers are
// awaited for a grace more; a cancelled statement answers query_canceled (57014).
// No answer within the grace: the connection is given up and closed (the batch is
// lost: connection_error, in_doubt_error at COMMIT). PostgreSQL signals a backend
// twice for one cancel request (the process, then its process group), and a late
// second signal cancels whatever runs then: the next round trip first waits for
// PQcancel to return (the server closes the request's connection after both), up to
// its own deadline, and closes the connection unsent if it has not. libpq 15 has no non-blocking
// cancel, so PQcancel runs on a short-lived detached thread that owns a copy of the
// cancel key; the executor never waits for it. connection::cancel() and an Asio
// cancellation slot (Boost 1.77+) ask the same as an expired deadline.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <iterator>
#include <memory>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <boost/asio/compose.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>

#include <libpq-fe.h>

// #include <pqscope/driver.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/libpq_connect.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/libpq_reply.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/middleware.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/notices.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/notification.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/result.hpp> (in <pqscope/pqscope.hpp>)

namespace pqscope::asio::detail {

namespace net = boost::asio;
using error_code = boost::system::error_code;
using pqscope::detail::trimmed;  // libpq's messages end in a newline

// What a step needs before it can go on.
enum class next_wait { read, write, done };

class link : public std::enable_shared_from_this<link> {
 public:
  explicit link(const net::any_io_executor& ex) : sock_(ex), timer_(ex), pending_timer_(ex) {}
  link(const link&) = delete;
  link& operator=(const link&) = delete;
  link(link&&) = delete;
  link& operator=(link&&) = delete;
  ~link() { close(); }

  [[nodiscard]] net::any_io_executor get_executor() { return sock_.get_executor(); }
  [[nodiscard]] PGconn* native_handle() const noexcept { return pg_; }
  [[nodiscard]] bool usable() const noexcept { return pg_ != nullptr && !dead_ && PQstatus(pg_) == CONNECTION_OK; }

  // Each round trip's deadline (0: none), and how long to wait for the answers
  // after it, or after cancel(): the grace.
  std::chrono::milliseconds timeout{0};
  std::chrono::milliseconds cancel_wait{5000};
  // Where the server's notices go on each session it opens (detail/notices.hpp).
  pqscope::detail::notice_callback notices;

  // ---- connecting -----------------------------------------------------------------

  // Starts a connection attempt (closing any previous one). Throws usage_error for a
  // malformed conninfo, connection_error if libpq refuses at once.
  void start_connect(const std::string& conninfo, const std::string& fallback_application_name);

  // connect_timeout of the connection (libpq only enforces it in blocking connects;
  // here it bounds the whole connect).
  [[nodiscard]] std::chrono::milliseconds connect_timeout() const { return pqscope::detail::connect_timeout_of(pg_); }

  // One step of the connection sequence: what to wait for, or done. `after_wait`:
  // the socket is ready as last asked. Throws connection_error.
  next_wait connect_step(bool after_wait);

  // ---- one batch ------------------------------------------------------------------

  // Queues the batch and its sync in libpq (nothing waits here). A connection that
  // cannot take it makes the batch lost at once. `statements` is read only here.
  void start_batch(const std::vector<statement>& statements);

  // The same for a script (several statements, one simple-protocol query, no
  // pipeline): one reply per statement that answered, as libpq_driver::script.
  void start_script(const char* sql);

  // A cancel request of an earlier round trip that PQcancel has not finished: the
  // next batch must not be sent before it has (see the top of this file).
  [[nodiscard]] bool cancel_pending();
  // Waiting for it counts against the next round trip's deadline.
  void begin_pending_wait();
  [[nodiscard]] bool pending_expired() const { return clock::now() >= pending_deadline_; }
  void give_up_pending();
  template <class Handler>
  void async_pending_wait(Handler&& handler);

  // Sends and reads what can be sent and read now.
  next_wait batch_step();

  // The socket is readable.
  void consume_input();

  batch_reply take_reply() { return std::move(reply_); }

  // A wait ended with an error: given up, closed, cancelled by a slot, or a real error.
  // Returns true when the operation is over (the batch or the connect failed).
  bool wait_failed(const error_code& ec);

  // After wait_failed() returned true during a batch: the batch's (lost) reply.
  void settle_failed_batch();

  // ---- waits, deadlines, cancellation ---------------------------------------------

  template <class Handler>
  void async_wait(next_wait w, Handler&& handler);

  // Bounds a connect: given up when `d` passes (0: not bounded here).
  void arm_connect(std::chrono::milliseconds d);
  // The round trip (or connect) ended: its deadline and grace are void.
  void disarm() noexcept;

  // The deadline passed, or cancel() or a cancellation slot asked. Connecting: given
  // up at once. A batch out: a cancel request (not while COMMIT's answer is awaited),
  // then the grace; no answer by its end gives the connection up. Otherwise (between
  // round trips) there is nothing to cancel.
  void request_cancel(const std::string& why);

  // The connection is lost on purpose: every wait ends, and the operation fails.
  void give_up(std::string why);

  // Closes the connection (PQfinish); pending waits end with operation_aborted, a
  // batch still out ends lost.
  void close() noexcept;

  // In a child process after fork(): frees the connection without a word to the
  // server, whose session is the parent's (libpq_driver::abandon() does the same).
  // Both descriptors are pointed at /dev/null first, so neither libpq's goodbye nor
  // Asio's deregistration reaches the socket, or the epoll set shared with the parent.
  void abandon_after_fork() noexcept;

  [[nodiscard]] std::string application_name() const { return pqscope::detail::application_name_of(pg_); }

  // ---- COPY (asio/copy.hpp) --------------------------------------------------------
  // A COPY runs outside the pipeline, as libpq_driver's does: its statement alone in
  // the simple protocol, then its data, then its answer.

  // The COPY statement: a round trip (batch_step() until done, then take_reply())
  // that ends when the COPY has started (copy_mode() 'i' or 'o', no reply) or with
  // the statement's answer (an error).
  void start_copy(const char* sql);
  [[nodiscard]] char copy_mode() const noexcept { return copy_mode_; }

  // One step of the COPY in progress; copy_step() until done, then take_reply().
  //   put: `data` (read until done) into libpq, and all of it onto the socket before
  //     done (flush-before-more, as libpq_driver::copy_put); with `end`, then the end
  //     (CopyFail with `abort_reason`, else CopyDone) and the COPY's answer.
  //   get: the next row (copy_row(), no reply), or at the end the COPY's answer;
  //     with `drop`, rows are read and dropped until the answer.
  // The reply of a COPY that ended holds its one answer; lost as a batch is.
  void begin_copy_put(std::string_view data, bool end, const char* abort_reason);
  void begin_copy_get(bool drop);
  next_wait copy_step();
  // The row the last get step read, valid until the next step.
  [[nodiscard]] std::string_view copy_row() const noexcept { return {copy_row_, copy_row_size_}; }

  // ---- notifications (LISTEN), between round trips ----------------------------------

  // The oldest notification libpq holds: kept since it arrived, also during other
  // statements and after the connection was lost, until taken here.
  bool take_notification(notification& out) { return pqscope::detail::take_notification(pg_, out); }
  // What the socket holds now, without waiting; a failure shows in usable().
  void read_input() noexcept {
    if (pg_ != nullptr && phase_ == phase::idle) (void)PQconsumeInput(pg_);
  }
  // Ends a wait for the socket (async_wait) with operation_aborted.
  void stop_waiting() noexcept {
    error_code ignored;
    sock_.cancel(ignored);
  }

 private:
  // copying: between the steps of a COPY; a step is exchanging.
  enum class phase { idle, connecting, exchanging, copying };
  // copy_rows: a COPY TO STDOUT the statement checks missed, read and dropped;
  // copy_end: then that COPY's own answer (after COPY FROM STDIN was failed too);
  // probe: the answers to a middleware probe (send_probe()); parse, parse_end: the
  // answer to a Parse sent with its statement (statement::parse), then its null result.
  // script: the answers of a script, until its null result.
  // copy_begin: a COPY statement's first answer (the COPY started, or an error);
  // copy_put, copy_get: a COPY step; copy_final, copy_final_end: the COPY's answer.
  enum class reading {
    parse, parse_end, answer, terminator, sync, copy_rows, copy_end, probe, script,
    copy_begin, copy_put, copy_get, copy_final, copy_final_end
  };

  // A batch or a script starts: the reading state reset; false (and the round trip
  // lost) if the connection cannot take it.
  bool begin_round_trip(reading first);

  // Where the answers of statement k start.
  [[nodiscard]] reading first_reading(std::size_t k) {
    parse_failed_ = false;
    return parses_[k] ? reading::parse : reading::answer;
  }

  static std::string not_connected() { return "the connection is not open (async_connect() first)"; }
  [[nodiscard]] std::string timed_out() const { return "timed out after " + std::to_string(timeout.count()) + " ms"; }

  using clock = std::chrono::steady_clock;

  // One timer for the round trip's deadline, then its grace: `fire` runs when it
  // passes, unless the round trip ended or the timer was re-armed first.
  template <class Fire>
  void arm(std::chrono::milliseconds d, Fire fire);

  // PQcancel connects, sends the request and waits for the server to close: a
  // blocking call, so it gets a thread of its own, which owns its PGcancel and
  // says when it is done.
  void send_cancel();

  [[noreturn]] void fail_connect(const std::string& why);

  void close_connection() noexcept;

  // Asio watches a duplicate of libpq's socket; a new one after libpq switched sockets.
  void watch_socket();

  // While our batch does not fit the socket, keep reading: a server blocked on
  // sending us answers does not read the rest of the batch.
  void watch_input_while_flushing();

  // After a batch that opened no transaction left the session in one: the probes of
  // detail/middleware.hpp, each alone in the simple protocol, read by take_result().
  bool send_probe(std::size_t k);

  // One PGresult of the batch; false when the batch is over (complete or lost).
  bool take_result(PGresult* raw);
  // The answers until the round trip is over (or libpq must wait for input).
  next_wait read_results();

  // A COPY step begins: a deadline, as for a round trip; past it the connection is
  // given up (as libpq_driver's copy calls do): a COPY cannot be cut short otherwise.
  void begin_copy_step(reading r);
  bool copy_queue();  // put: data, then the end, into libpq; false if lost
  void free_copy_row() noexcept;

  void lose_or_fail(const std::string& why);

  // The batch ends lost: answers already read stay, the rest never ran as far as we
  // know, and the connection is unusable until the next connect.
  void lose(std::string why);

  PGconn* pg_ = nullptr;
  net::posix::stream_descriptor sock_;
  net::steady_timer timer_, pending_timer_;
  ino_t ino_ = 0;
  dev_t dev_ = 0;
  phase phase_ = phase::idle;
  PostgresPollingStatusType poll_ = PGRES_POLLING_WRITING;
  bool dead_ = true, gave_up_ = false;
  std::string dead_reason_ = not_connected();
  std::string connecting_with_;  // the conninfo of the last connection attempt
  // the batch
  batch_reply reply_;
  std::size_t index_ = 0;
  reading reading_ = reading::sync;
  bool finished_ = true, flushing_ = false, watching_ = false;
  std::size_t commit_at_ = 0;  // the batch's COMMIT, or its size
  bool copy_in_ = false;       // the COPY being ended is a COPY FROM STDIN
  // the COPY in progress (copy_mode_ 'i' or 'o', else 0) and its step
  char copy_mode_ = 0;
  std::string_view copy_data_;  // put: not yet in libpq
  bool copy_ending_ = false, copy_end_sent_ = false, copy_drop_ = false;
  const char* copy_abort_ = nullptr;
  char* copy_row_ = nullptr;  // get: libpq's memory
  std::size_t copy_row_size_ = 0;
  std::vector<bool> parses_;   // which statements of the batch have a Parse sent first
  bool parse_failed_ = false;  // the statement's Parse failed: its execution is skipped
  std::string fatal_;          // a FATAL error answered in this batch (see libpq_driver)
  bool suspect_ = false;        // a transaction after this batch would be no statement's: probe
  std::size_t probe_ = 0;       // the probe whose answers are read
  std::string probed_[2];       // their first values
  // the deadline, the grace, and a cancel request's thread
  bool cancel_requested_ = false;
  std::string cancel_reason_;
  std::shared_ptr<std::atomic<bool>> cancel_;  // a cancel request not yet known handled; set when PQcancel returned
  clock::time_point pending_deadline_{};
  std::uint64_t generation_ = 0;
  bool timer_set_ = false;
};

// ---- operations on a link --------------------------------------------------------
// Internal building blocks of the connection's operations. They never complete
// inside the call that starts them.

// One round trip (a batch, a script, a COPY's statement or one of its steps):
// completes with its batch_reply (lost if the connection failed).
class exchange_op {
 public:
  // What the round trip is: a batch, a script, a COPY statement, or one step of the
  // COPY in progress (begun by link::begin_copy_put / begin_copy_get).
  enum class kind { batch, script, copy_begin, copy_step };
  exchange_op(std::shared_ptr<link> l, const std::vector<statement>& statements)
      : l_(std::move(l)), statements_(&statements) {}
  exchange_op(std::shared_ptr<link> l, const char* sql, kind k) : l_(std::move(l)), script_(sql), kind_(k) {}

  template <class Self>
  void operator()(Self& self, error_code ec = {}) {
    switch (state_) {
      case state::start:
        if (kind_ == kind::copy_step) {  // the COPY's round trip goes on: a cancel request concerns it
          waiting_ = l_->copy_step();
          if (waiting_ == next_wait::done) return post_reply(self);
          return wait(self);
        }
        if (l_->cancel_pending()) {
          l_->begin_pending_wait();
          state_ = state::pending;
          return l_->async_pending_wait(std::move(self));
        }
        waiting_ = begin();
        if (waiting_ == next_wait::done) return post_reply(self);
        return wait(self);
      case state::pending:
        if (l_->cancel_pending()) {
          if (!l_->pending_expired()) return l_->async_pending_wait(std::move(self));
          l_->give_up_pending();
        }
        waiting_ = begin();
        if (waiting_ == next_wait::done) return finish(self);
        return wait(self);
      case state::deliver: return self.complete(l_->take_reply());
      case state::wait:
        if (ec) {
          if (l_->wait_failed(ec)) {
            l_->settle_failed_batch();
            return finish(self);
          }
        } else if (waiting_ == next_wait::read) {
          l_->consume_input();
        }
        break;
    }
    waiting_ = kind_ == kind::copy_step ? l_->copy_step() : l_->batch_step();
    if (waiting_ == next_wait::done) return finish(self);
    wait(self);
  }

 private:
  enum class state { start, pending, deliver, wait };

  // Sends the batch (as far as the socket takes it); what to wait for next.
  next_wait begin() {
    if (kind_ == kind::copy_begin)
      l_->start_copy(script_);
    else if (kind_ == kind::script)
      l_->start_script(script_);
    else
      l_->start_batch(*statements_);
    statements_ = nullptr;  // libpq holds its own copy now
    script_ = nullptr;
    return l_->batch_step();
  }
  template <class Self>
  void wait(Self& self) {
    state_ = state::wait;
    l_->async_wait(waiting_, std::move(self));
  }
  template <class Self>
  void finish(Self& self) {
    l_->disarm();
    self.complete(l_->take_reply());
  }
  // Never from inside the call that started the operation.
  template <class Self>
  void post_reply(Self& self) {
    l_->disarm();
    state_ = state::deliver;
    net::post(std::move(self));
  }

  std::shared_ptr<link> l_;
  const std::vector<statement>* statements_ = nullptr;
  const char* script_ = nullptr;
  kind kind_ = kind::batch;
  state state_ = state::start;
  next_wait waiting_ = next_wait::done;
};

template <class Token>
auto async_exchange(std::shared_ptr<link> l, const std::vector<statement>& statements, Token&& token) {
  auto ex = l->get_executor();
  return net::async_compose<Token, void(batch_reply)>(exchange_op{std::move(l), statements}, token, ex);
}

// A script: everything before it went out already (the sync point of scope_machine).
template <class Token>
auto async_script(std::shared_ptr<link> l, const char* sql, Token&& token) {
  auto ex = l->get_executor();
  return net::async_compose<Token, void(batch_reply)>(exchange_op{std::move(l), sql, exchange_op::kind::script}, token,
                                                      ex);
}

// A COPY statement, alone: completes when the COPY has started (the link's
// copy_mode(), no reply) or with the statement's error.
template <class Token>
auto async_copy_begin(std::shared_ptr<link> l, const char* sql, Token&& token) {
  auto ex = l->get_executor();
  return net::async_compose<Token, void(batch_reply)>(exchange_op{std::move(l), sql, exchange_op::kind::copy_begin},
                                                      token, ex);
}

// One step of the COPY in progress, begun by link::begin_copy_put() or
// begin_copy_get(): completes with its batch_reply (see there).
template <class Token>
auto async_copy_step(std::shared_ptr<link> l, Token&& token) {
  auto ex = l->get_executor();
  return net::async_compose<Token, void(batch_reply)>(exchange_op{std::move(l), nullptr, exchange_op::kind::copy_step},
                                                      token, ex);
}

// Connects a link: completes with nullptr, or the connection_error / usage_error.
class open_op {
 public:
  open_op(std::shared_ptr<link> l, std::string conninfo, std::string app)
      : l_(std::move(l)), conninfo_(std::move(conninfo)), app_(std::move(app)) {}

  template <class Self>
  void operator()(Self& self, error_code ec = {}) {
    bool after_wait = false;
    switch (state_) {
      case state::start:
        try {
          l_->start_connect(conninfo_, app_);
          // libpq enforces connect_timeout only when it blocks: here it is ours to do.
          l_->arm_connect(l_->connect_timeout());
        } catch (...) {
          return deliver_later(self, std::current_exception());
        }
        break;
      case state::deliver: return self.complete(error_);
      case state::wait:
        if (ec && l_->wait_failed(ec)) {
          try {
            (void)l_->connect_step(false);  // throws the reason
            throw connection_error("could not connect: " + ec.message());
          } catch (...) {
            return done(self, std::current_exception());
          }
        }
        after_wait = !ec;
        break;
    }
    try {
      const next_wait w = l_->connect_step(after_wait);
      if (w == next_wait::done) {
        if (state_ == state::start) return deliver_later(self, nullptr);
        return done(self, nullptr);
      }
      state_ = state::wait;
      l_->async_wait(w, std::move(self));
    } catch (...) {
      if (state_ == state::start) return deliver_later(self, std::current_exception());
      done(self, std::current_exception());
    }
  }

 private:
  enum class state { start, deliver, wait };

  template <class Self>
  void done(Self& self, std::exception_ptr e) {
    l_->disarm();
    self.complete(std::move(e));
  }
  // Never from inside the call that started the operation.
  template <class Self>
  void deliver_later(Self& self, std::exception_ptr e) {
    l_->disarm();
    error_ = std::move(e);
    state_ = state::deliver;
    net::post(std::move(self));
  }

  std::shared_ptr<link> l_;
  std::string conninfo_, app_;
  state state_ = state::start;
  std::exception_ptr error_;
};

template <class Token>
auto async_open(std::shared_ptr<link> l, std::string conninfo, std::string app, Token&& token) {
  auto ex = l->get_executor();
  return net::async_compose<Token, void(std::exception_ptr)>(open_op{std::move(l), std::move(conninfo), std::move(app)},
                                                             token, ex);
}

}  // namespace pqscope::asio::detail

// #include <pqscope/asio/impl/link.hpp>
// The bodies of asio/link.hpp's link: connecting, one batch, and the waits,
// deadlines and cancel requests around them. Header-only, like all of the asio
// front end: included at the end of asio/link.hpp.

// #include <pqscope/asio/link.hpp> (inlined above)

namespace pqscope::asio::detail {

inline void link::start_connect(const std::string& conninfo, const std::string& fallback_application_name) {
  close_connection();
  pqscope::detail::check_conninfo(conninfo);
  connecting_with_ = conninfo;  // for fail_connect(): libpq's text may quote a password
  // The time bounds libpq_driver::open() adds to a conninfo that sets none of them.
  const pqscope::detail::connect_params params{conninfo, fallback_application_name, timeout};
  pg_ = PQconnectStartParams(params.keys(), params.values(), /*expand_dbname=*/1);
  if (pg_ == nullptr) throw connection_error("could not connect: out of memory");
  if (PQstatus(pg_) == CONNECTION_BAD) {
    std::string msg = pqscope::detail::connect_failure(pg_, conninfo);
    close_connection();
    throw connection_error(msg);
  }
  dead_ = false;
  gave_up_ = false;
  dead_reason_.clear();
  phase_ = phase::connecting;
  poll_ = PGRES_POLLING_WRITING;  // what libpq says to assume before the first poll
}

inline next_wait link::connect_step(bool after_wait) {
  if (dead_) fail_connect(dead_reason_);
  if (after_wait) poll_ = PQconnectPoll(pg_);
  switch (poll_) {
    case PGRES_POLLING_READING:
      watch_socket();
      return next_wait::read;
    case PGRES_POLLING_WRITING:
      watch_socket();
      return next_wait::write;
    case PGRES_POLLING_OK:
      watch_socket();
      if (PQsetnonblocking(pg_, 1) != 0) fail_connect(trimmed(PQerrorMessage(pg_)));
      pqscope::detail::install_notices(pg_, &notices);
      phase_ = phase::idle;
      return next_wait::done;
    default: fail_connect(trimmed(PQerrorMessage(pg_)));
  }
}

inline bool link::begin_round_trip(reading first) {
  index_ = 0;
  reading_ = first;
  finished_ = false;
  flushing_ = false;
  copy_in_ = false;
  fatal_.clear();
  suspect_ = false;
  if (usable()) return true;
  lose(pg_ == nullptr ? not_connected() : dead_ ? dead_reason_ : "the connection is closed");
  return false;
}

inline void link::start_batch(const std::vector<statement>& statements) {
  reply_ = batch_reply{};
  reply_.replies.resize(statements.size());
  parses_.assign(statements.size(), false);
  for (std::size_t k = 0; k < statements.size(); ++k) parses_[k] = statements[k].parse;
  if (!begin_round_trip(statements.empty() ? reading::sync : first_reading(0))) return;
  // Idle before a batch that opens no transaction, in one after it: someone else's
  // (Pgpool-II raw mode). libpq's word on the state is exact here (nothing in flight).
  suspect_ = pqscope::detail::state_of(PQtransactionStatus(pg_)) == server_state::idle &&
             !pqscope::detail::opens_transaction(statements);
  if (PQenterPipelineMode(pg_) != 1) return lose(trimmed(PQerrorMessage(pg_)));
  for (const statement& s : statements)
    if (!pqscope::detail::send_statement(pg_, s)) return lose(trimmed(PQerrorMessage(pg_)));
  if (PQpipelineSync(pg_) != 1) return lose(trimmed(PQerrorMessage(pg_)));
  flushing_ = true;
  phase_ = phase::exchanging;
  commit_at_ = statements.size();
  for (std::size_t k = 0; k < statements.size(); ++k)
    if (std::strcmp(statements[k].sql, "COMMIT") == 0) commit_at_ = k;
  if (timeout.count() > 0) arm(timeout, [](link& l) { l.request_cancel(l.timed_out()); });
}

inline void link::start_script(const char* sql) {
  reply_ = batch_reply{};
  parses_.clear();
  if (!begin_round_trip(reading::script)) return;
  if (PQsendQuery(pg_, sql) != 1) return lose(trimmed(PQerrorMessage(pg_)));
  flushing_ = true;
  phase_ = phase::exchanging;
  commit_at_ = static_cast<std::size_t>(-1);  // a script has no COMMIT (check_script refuses one)
  if (timeout.count() > 0) arm(timeout, [](link& l) { l.request_cancel(l.timed_out()); });
}

inline void link::start_copy(const char* sql) {
  reply_ = batch_reply{};
  reply_.replies.resize(1);
  parses_.clear();
  if (!begin_round_trip(reading::copy_begin)) return;
  // The simple protocol, as libpq_driver::copy_start (Pgpool-II never answers the end
  // of a COPY started with the extended one).
  if (PQsendQuery(pg_, sql) != 1) return lose(trimmed(PQerrorMessage(pg_)));
  flushing_ = true;
  phase_ = phase::exchanging;
  commit_at_ = static_cast<std::size_t>(-1);  // no COMMIT here
  if (timeout.count() > 0) arm(timeout, [](link& l) { l.request_cancel(l.timed_out()); });
}

inline void link::begin_copy_step(reading r) {
  reply_ = batch_reply{};
  reply_.replies.resize(1);  // the COPY's answer, if this step ends it (or loses it)
  index_ = 0;
  reading_ = r;
  finished_ = false;
  flushing_ = false;
  copy_end_sent_ = false;
  fatal_.clear();
  suspect_ = false;
  free_copy_row();
  if (!usable() || copy_mode_ == 0) return lose(pg_ == nullptr ? not_connected() : dead_ ? dead_reason_ : "the connection is closed");
  phase_ = phase::exchanging;
  commit_at_ = static_cast<std::size_t>(-1);
  // Past the deadline, a cancel request: the server ends the COPY with 57014 (or
  // the grace gives the connection up), as for any round trip.
  if (timeout.count() > 0) arm(timeout, [](link& l) { l.request_cancel(l.timed_out()); });
}

inline void link::begin_copy_put(std::string_view data, bool end, const char* abort_reason) {
  begin_copy_step(reading::copy_put);
  copy_data_ = data;
  copy_ending_ = end;
  copy_abort_ = abort_reason;
}

inline void link::begin_copy_get(bool drop) {
  begin_copy_step(reading::copy_get);
  copy_drop_ = drop;
}

inline bool link::copy_queue() {
  if (!copy_data_.empty()) {
    // libpq takes an int: a huge write_raw() goes in pieces.
    const std::size_t n = std::min<std::size_t>(copy_data_.size(), std::size_t{1} << 20);
    const int r = PQputCopyData(pg_, copy_data_.data(), static_cast<int>(n));
    if (r < 0) return lose(trimmed(PQerrorMessage(pg_))), false;
    if (r == 1) copy_data_.remove_prefix(n);
    return true;  // 0: no room until libpq has sent some
  }
  if (copy_ending_ && !copy_end_sent_) {
    const int r = PQputCopyEnd(pg_, copy_abort_);
    if (r < 0) return lose(trimmed(PQerrorMessage(pg_))), false;
    copy_end_sent_ = r == 1;
  }
  return true;
}

inline next_wait link::copy_step() {
  if (finished_) return next_wait::done;
  if (dead_ || pg_ == nullptr) {
    lose(pg_ == nullptr ? not_connected() : dead_reason_);
    return next_wait::done;
  }
  switch (reading_) {
    case reading::copy_put:
      for (;;) {
        if (!copy_queue()) return next_wait::done;
        const int f = PQflush(pg_);
        if (f < 0) {
          lose(trimmed(PQerrorMessage(pg_)));
          return next_wait::done;
        }
        if (f == 1) {  // all of it onto the socket before more: memory stays at about one chunk
          flushing_ = true;
          watch_input_while_flushing();
          return next_wait::write;
        }
        flushing_ = false;
        if (!copy_data_.empty() || (copy_ending_ && !copy_end_sent_)) continue;
        if (!copy_ending_) {
          reply_.replies.clear();
          finished_ = true;
          phase_ = phase::copying;
          return next_wait::done;
        }
        reading_ = reading::copy_final;
        return read_results();
      }
    case reading::copy_get:
      for (;;) {
        char* row = nullptr;
        const int n = PQgetCopyData(pg_, &row, /*async=*/1);
        if (n > 0) {
          if (copy_drop_) {
            PQfreemem(row);
            continue;
          }
          copy_row_ = row;
          copy_row_size_ = static_cast<std::size_t>(n);
          reply_.replies.clear();
          finished_ = true;
          phase_ = phase::copying;
          return next_wait::done;
        }
        if (n == 0) return next_wait::read;
        if (n < -1) {
          lose(trimmed(PQerrorMessage(pg_)));
          return next_wait::done;
        }
        reading_ = reading::copy_final;  // -1: the end; the COPY's answer follows
        return read_results();
      }
    default: return read_results();
  }
}

inline void link::free_copy_row() noexcept {
  if (copy_row_ != nullptr) PQfreemem(copy_row_);
  copy_row_ = nullptr;
  copy_row_size_ = 0;
}

inline bool link::cancel_pending() {
  if (cancel_ && cancel_->load()) cancel_.reset();
  return cancel_ != nullptr;
}

inline void link::begin_pending_wait() {
  pending_deadline_ = timeout.count() > 0 ? clock::now() + timeout : clock::time_point::max();
}

inline void link::give_up_pending() {
  close_connection();
  dead_reason_ = "a cancel request sent after an earlier round trip was cancelled had not been handled by the "
                 "server within the timeout, and it could cancel this statement; the connection was closed "
                 "before anything was sent";
}

template <class Handler>
inline void link::async_pending_wait(Handler&& handler) {
  pending_timer_.expires_after(std::chrono::milliseconds(2));
  pending_timer_.async_wait(std::forward<Handler>(handler));
}

inline next_wait link::batch_step() {
  if (finished_) return next_wait::done;
  if (flushing_) {
    const int r = PQflush(pg_);
    if (r < 0) {
      lose(trimmed(PQerrorMessage(pg_)));
      return next_wait::done;
    }
    if (r == 1) {
      watch_input_while_flushing();
      return next_wait::write;
    }
    flushing_ = false;
  }
  return read_results();
}

inline next_wait link::read_results() {
  for (;;) {
    if (reading_ == reading::copy_rows) {
      char* row = nullptr;
      const int n = PQgetCopyData(pg_, &row, /*async=*/1);
      if (row != nullptr) PQfreemem(row);
      if (n == 0) return next_wait::read;
      if (n < -1) {
        lose(trimmed(PQerrorMessage(pg_)));
        return next_wait::done;
      }
      if (n == -1) reading_ = reading::copy_end;
      continue;
    }
    if (PQisBusy(pg_) != 0) return next_wait::read;  // PQgetResult would block
    if (!take_result(PQgetResult(pg_))) return next_wait::done;
    if (flushing_) return batch_step();  // COPY FROM STDIN was failed: send that first
  }
}

inline void link::consume_input() {
  if (finished_ || pg_ == nullptr) return;
  // On failure libpq marks the connection bad (and closes its socket); the next
  // PQgetResult then reports what it still holds, and the loss.
  if (PQconsumeInput(pg_) == 0 && PQstatus(pg_) != CONNECTION_BAD) lose(trimmed(PQerrorMessage(pg_)));
}

inline bool link::wait_failed(const error_code& ec) {
  if (dead_ || pg_ == nullptr) return true;
  if (ec == net::error::operation_aborted) {
    // Nothing in pqscope cancels a wait but give_up() and close(): this is an Asio
    // cancellation slot of the caller's handler.
    request_cancel("canceled");
    return phase_ == phase::idle;
  }
  lose_or_fail(ec.message());
  return true;
}

inline void link::settle_failed_batch() {
  if (!finished_) lose(dead_ ? dead_reason_ : not_connected());
}

template <class Handler>
inline void link::async_wait(next_wait w, Handler&& handler) {
  sock_.async_wait(w == next_wait::write ? net::posix::stream_descriptor::wait_write
                                         : net::posix::stream_descriptor::wait_read,
                   std::forward<Handler>(handler));
  // No look at the socket first: a wait re-arms Asio's edge-triggered epoll
  // registration (EPOLL_CTL_MOD), which reports input or room already there, so
  // bytes libpq left unread (one recv() per PQconsumeInput) still wake us.
}

inline void link::arm_connect(std::chrono::milliseconds d) {
  if (d.count() > 0)
    arm(d, [d](link& l) { l.give_up("could not connect: no connection within " + std::to_string(d.count()) + " ms"); });
}

inline void link::disarm() noexcept {
  ++generation_;
  cancel_requested_ = false;
  if (!std::exchange(timer_set_, false)) return;
  error_code ignored;
  timer_.cancel(ignored);
}

inline void link::request_cancel(const std::string& why) {
  if (phase_ == phase::connecting) return give_up("could not connect: " + why);
  if (phase_ != phase::exchanging || cancel_requested_ || pg_ == nullptr) return;
  cancel_requested_ = true;
  cancel_reason_ = why;
  const std::size_t awaiting = flushing_ ? 0 : index_;
  const bool commit = awaiting == commit_at_ && reading_ != reading::sync && reading_ != reading::probe;
  if (!commit) send_cancel();
  arm(cancel_wait, [why, sent = !commit](link& l) {
    l.give_up("no answer from the server within " + std::to_string(l.cancel_wait.count()) + " ms after " +
              (sent ? "a cancel request" : "its round trip was to end (COMMIT's answer is never cancelled)") +
              " (" + why + "); the connection was closed");
  });
}

inline void link::give_up(std::string why) {
  gave_up_ = true;
  dead_ = true;
  dead_reason_ = std::move(why);
  error_code ignored;
  sock_.cancel(ignored);
}

inline void link::close() noexcept {
  disarm();
  close_connection();
}

inline void link::abandon_after_fork() noexcept {
  const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull >= 0) {
    if (pg_ != nullptr && PQsocket(pg_) >= 0) ::dup2(devnull, PQsocket(pg_));
    if (sock_.is_open()) ::dup2(devnull, sock_.native_handle());
    ::close(devnull);
  }
  close();
}

template <class Fire>
inline void link::arm(std::chrono::milliseconds d, Fire fire) {
  ++generation_;
  timer_set_ = true;
  timer_.expires_after(d);
  timer_.async_wait([self = shared_from_this(), gen = generation_, fire](const error_code& ec) {
    if (!ec && gen == self->generation_) fire(*self);
  });
}

inline void link::send_cancel() {
  PGcancel* c = PQgetCancel(pg_);
  if (c == nullptr) return;
  auto done = std::make_shared<std::atomic<bool>>(false);
  try {
    std::thread([c, done] {
      char err[256];
      (void)PQcancel(c, err, sizeof err);  // a failure leaves the statement running: the grace decides
      PQfreeCancel(c);
      done->store(true);
    }).detach();
    cancel_ = std::move(done);
  } catch (const std::system_error&) {
    PQfreeCancel(c);  // no thread: the answer will not come, and the grace gives up
  }
}

inline void link::fail_connect(const std::string& why) {
  std::string msg = why.rfind("could not connect", 0) == 0 ? why : "could not connect: " + why;
  msg = pqscope::detail::redact(std::move(msg), connecting_with_);
  close_connection();
  dead_reason_ = msg;
  throw connection_error(msg);
}

inline void link::close_connection() noexcept {
  try {
    if (!finished_) lose("the connection was closed");
  } catch (...) {
    finished_ = true;  // out of memory for the message: the batch still ends
  }
  free_copy_row();
  copy_mode_ = 0;
  error_code ignored;
  sock_.close(ignored);
  if (pg_ != nullptr) PQfinish(pg_);
  pg_ = nullptr;
  cancel_.reset();  // a cancel request still on its way concerns this session only
  dead_ = true;
  dead_reason_ = "the connection was closed";
  phase_ = phase::idle;
  finished_ = true;
  flushing_ = false;
  ino_ = 0;
}

inline void link::watch_socket() {
  const int fd = PQsocket(pg_);
  struct stat st {};
  if (fd < 0 || ::fstat(fd, &st) != 0) fail_connect("libpq has no socket");
  if (sock_.is_open() && st.st_ino == ino_ && st.st_dev == dev_) return;
  error_code ignored;
  sock_.close(ignored);
  const int dup = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) fail_connect("dup of the socket failed: " + std::system_category().message(errno));
  error_code ec;
  sock_.assign(dup, ec);
  if (ec) {
    ::close(dup);
    fail_connect("the socket cannot be watched: " + ec.message());
  }
  ino_ = st.st_ino;
  dev_ = st.st_dev;
}

inline void link::watch_input_while_flushing() {
  if (watching_) return;
  watching_ = true;
  sock_.async_wait(net::posix::stream_descriptor::wait_read, [self = shared_from_this()](const error_code& ec) {
    self->watching_ = false;
    if (ec || self->pg_ == nullptr || self->finished_ || !self->flushing_) return;
    (void)PQconsumeInput(self->pg_);  // a failure shows in the next PQflush
    self->watch_input_while_flushing();
  });
}

inline bool link::send_probe(std::size_t k) {
  probe_ = k;
  if (k == 0) {
    probed_[0].clear();
    probed_[1].clear();
  }
  if (PQsendQuery(pg_, pqscope::detail::middleware_probes[k]) != 1) {
    lose(trimmed(PQerrorMessage(pg_)));
    return false;
  }
  reading_ = reading::probe;
  flushing_ = true;
  return true;
}

inline bool link::take_result(PGresult* raw) {
  switch (reading_) {
    case reading::parse: {  // a Parse sent with the statement answers first, on its own
      reply& r = reply_.replies[index_];
      pqscope::detail::answer a = pqscope::detail::read_answer(pg_, raw, r);
      switch (a.k) {
        case pqscope::detail::answer::filled:
          if (r.st == reply::status::error) {
            parse_failed_ = true;
            fatal_ = std::move(a.fatal);
          }
          break;
        case pqscope::detail::answer::skipped: break;
        default: lose(std::move(a.why)); return false;
      }
      r.parsed = r.st == reply::status::ok;
      reading_ = reading::parse_end;
      return true;
    }
    case reading::parse_end:
      if (raw != nullptr) {
        PQclear(raw);
        lose("unexpected extra answer from the server");
        return false;
      }
      reading_ = reading::answer;
      return true;
    case reading::answer: {
      reply& r = reply_.replies[index_];
      if (parse_failed_) {  // skipped by the server: the Parse's error is the answer
        if (raw == nullptr || PQstatus(pg_) == CONNECTION_BAD) {
          if (raw != nullptr) PQclear(raw);
          lose(trimmed(PQerrorMessage(pg_)));
          return false;
        }
        PQclear(raw);
        reading_ = reading::terminator;
        return true;
      }
      pqscope::detail::answer a = pqscope::detail::read_answer(pg_, raw, r);
      switch (a.k) {
        case pqscope::detail::answer::filled:
          if (r.st != reply::status::error) break;
          fatal_ = std::move(a.fatal);  // as libpq_driver: the cause of the close to come
          if (cancel_requested_ && r.error->sqlstate == "57014") {
            auto e = std::make_shared<reply_error>(*r.error);
            e->message += " (" + cancel_reason_ + ")";
            r.error = std::move(e);
          }
          break;
        case pqscope::detail::answer::skipped: break;
        case pqscope::detail::answer::copy_out:
          reading_ = reading::copy_rows;  // as libpq_driver::exchange: read to its end, dropped
          return true;
        case pqscope::detail::answer::copy_in:
          if (index_ + 1 < reply_.replies.size()) {
            lose(pqscope::detail::copy_in_kills_session());
            return false;
          }
          if (PQputCopyEnd(pg_, pqscope::detail::copy_in_refused) != 1) {
            lose(trimmed(PQerrorMessage(pg_)));
            return false;
          }
          copy_in_ = true;
          flushing_ = true;
          reading_ = reading::copy_end;
          return true;
        case pqscope::detail::answer::lost:
        case pqscope::detail::answer::unexpected: lose(std::move(a.why)); return false;
      }
      reading_ = reading::terminator;
      return true;
    }
    case reading::copy_rows:  // batch_step() reads the rows
      return true;
    case reading::copy_end: {
      if (raw == nullptr || PQstatus(pg_) == CONNECTION_BAD) {
        if (raw != nullptr) PQclear(raw);
        lose(trimmed(PQerrorMessage(pg_)));
        return false;
      }
      PQclear(raw);
      reply& r = reply_.replies[index_];
      r.st = reply::status::error;
      r.error = pqscope::detail::copy_misuse(std::exchange(copy_in_, false));
      reading_ = reading::terminator;
      return true;
    }
    case reading::terminator:
      if (raw != nullptr) {  // each statement's answers end with a null result
        PQclear(raw);
        lose("unexpected extra answer from the server");
        return false;
      }
      reading_ = ++index_ < reply_.replies.size() ? first_reading(index_) : reading::sync;
      return true;
    case reading::sync: {
      const bool ok = raw != nullptr && PQresultStatus(raw) == PGRES_PIPELINE_SYNC;
      if (raw != nullptr) PQclear(raw);
      if (!ok) {
        lose(trimmed(PQerrorMessage(pg_)));
        return false;
      }
      if (PQexitPipelineMode(pg_) != 1) {
        lose(trimmed(PQerrorMessage(pg_)));
        return false;
      }
      reply_.state = pqscope::detail::state_of(PQtransactionStatus(pg_));
      if (suspect_ && reply_.state == server_state::in_transaction) return send_probe(0);
      finished_ = true;
      phase_ = phase::idle;
      return false;
    }
    case reading::script: {
      if (raw == nullptr) {  // the script's end
        if (PQstatus(pg_) == CONNECTION_BAD) {
          lose(trimmed(PQerrorMessage(pg_)));
          return false;
        }
        reply_.state = pqscope::detail::state_of(PQtransactionStatus(pg_));
        finished_ = true;
        phase_ = phase::idle;
        return false;
      }
      reply r;
      pqscope::detail::answer a = pqscope::detail::read_script_answer(pg_, raw, r);
      if (a.k == pqscope::detail::answer::skipped) return true;  // blanks and comments
      if (a.k != pqscope::detail::answer::filled) {
        lose(std::move(a.why));
        return false;
      }
      if (r.st == reply::status::error) fatal_ = std::move(a.fatal);
      reply_.replies.push_back(std::move(r));
      return true;
    }
    case reading::copy_begin:
      if (raw != nullptr && (PQresultStatus(raw) == PGRES_COPY_IN || PQresultStatus(raw) == PGRES_COPY_OUT)) {
        copy_mode_ = PQresultStatus(raw) == PGRES_COPY_IN ? 'i' : 'o';
        PQclear(raw);
        reply_.replies.clear();
        finished_ = true;
        phase_ = phase::copying;
        return false;
      }
      [[fallthrough]];  // the statement's answer: an error
    case reading::copy_final: {
      reply& r = reply_.replies.front();
      pqscope::detail::answer a = pqscope::detail::read_answer(pg_, raw, r);
      if (a.k != pqscope::detail::answer::filled) {
        lose(std::move(a.why));
        return false;
      }
      if (r.st == reply::status::error) fatal_ = std::move(a.fatal);
      reading_ = reading::copy_final_end;
      return true;
    }
    case reading::copy_final_end:
      if (raw != nullptr) {  // as libpq_driver::read_final: an empty command answer may follow
        const bool ok = PQresultStatus(raw) == PGRES_COMMAND_OK;
        PQclear(raw);
        if (ok) return true;
        lose("unexpected extra answer from the server");
        return false;
      }
      if (PQstatus(pg_) == CONNECTION_BAD) {
        lose(trimmed(PQerrorMessage(pg_)));
        return false;
      }
      reply_.state = pqscope::detail::state_of(PQtransactionStatus(pg_));
      copy_mode_ = 0;
      finished_ = true;
      phase_ = phase::idle;
      return false;
    case reading::copy_put:
    case reading::copy_get:  // copy_step() reads these
      return true;
    case reading::probe:
      if (raw != nullptr) {
        if (PQresultStatus(raw) == PGRES_TUPLES_OK && PQntuples(raw) > 0 && PQnfields(raw) > 0)
          probed_[probe_] = PQgetvalue(raw, 0, 0);
        PQclear(raw);
        return true;
      }
      if (PQstatus(pg_) == CONNECTION_BAD) {
        lose(trimmed(PQerrorMessage(pg_)));
        return false;
      }
      if (probe_ == 0 && !probed_[0].empty()) return send_probe(1);
      reply_.diagnostic = pqscope::detail::diagnose_middleware(probed_[0], probed_[1]);
      finished_ = true;
      phase_ = phase::idle;
      return false;
  }
  return false;
}

inline void link::lose_or_fail(const std::string& why) {
  if (phase_ == phase::connecting) return give_up("could not connect: " + why);
  lose(why);
}

inline void link::lose(std::string why) {
  if (!fatal_.empty()) why = std::exchange(fatal_, {});
  if (why.empty()) why = "connection lost";
  // Lost while probing: every statement of the batch was answered, and that stands.
  if (reading_ != reading::probe) {
    reply_.lost = true;
    reply_.lost_message = why;
    reply_.state = server_state::unknown;
  }
  finished_ = true;
  flushing_ = false;
  phase_ = phase::idle;
  copy_mode_ = 0;  // a lost COPY is over
  if (!dead_) {
    dead_ = true;
    dead_reason_ = std::move(why);
  }
  error_code ignored;
  sock_.close(ignored);  // our duplicate; libpq's socket goes with PQfinish
  ino_ = 0;
  if (gave_up_ && pg_ != nullptr) {
    // Given up on a peer that does not answer: close our end now, so that if the
    // server is still there it sees the client go and rolls back.
    PQfinish(pg_);
    pg_ = nullptr;
  }
}

}  // namespace pqscope::asio::detail
// #include <pqscope/asio/connection.hpp>
// pqscope::asio::connection: the asynchronous face of the scope machine.
//
// The transaction logic is detail::scope_machine, the same object the blocking
// connection drives. An operation here does what sync_session does, as one Asio
// composed operation instead of one blocking call:
//
//   start      queue what the operation needs (queue_statement, end_scope, ...)
//   loop       while (machine.wants_send()) machine.apply(co_await exchange(machine.plan()))
//   resolve    a lost COMMIT with resolve_in_doubt: pg_xact_status on a fresh connection
//   finish     the machine's end step, which returns the value or throws
//
// The parts: asio/query.hpp (a statement and its parameters), asio/detail/session.hpp
// (what the connection and its operations share), asio/detail/operation.hpp (the
// work types and the composed loop), asio/link.hpp (the non-blocking libpq link).
//
// One operation at a time per connection: a second one started while the first is
// running fails with usage_error, and sends nothing. Every operation completes with
// std::exception_ptr first (use_awaitable rethrows it): the same exception types as
// the blocking connection, for the same causes.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

// #include <pqscope/callback.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/connection.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/database.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/driver.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/options.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/params.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/wal_position.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/notification.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/result.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/stats.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/application_name.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/scope_machine.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/sync_session.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/session_state.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/copy.hpp>
// COPY FROM STDIN and COPY TO STDOUT on the asio connection, without blocking:
// connection::async_copy_in() gives a copy_writer, async_copy_out() a copy_reader.
// The meaning is the blocking COPY's (<pqscope/copy.hpp>), in autocommit or inside
// any scope; until the COPY ends, the connection refuses every other operation.
//
//   auto w = co_await c.async_copy_in("COPY item (id, name) FROM STDIN", use_awaitable);
//   for (const item& i : items) {
//     w.write_row(i.id, i.name);                            // into the writer's buffer
//     if (w.full()) co_await w.async_send(use_awaitable);   // backpressure
//   }
//   std::uint64_t n = co_await w.async_finish(use_awaitable);
//
//   auto r = co_await c.async_copy_out("COPY item (id, name) TO STDOUT", use_awaitable);
//   while (auto row = co_await r.async_next<int, std::string>(use_awaitable)) ...

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/copy_rows.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/detail/copy.hpp>
// The COPY of the asio connection: the state a writer or reader shares with its
// operations, and the operations. Their meaning is the blocking COPY's (copy.hpp):
// what the scopes queued goes out first, the COPY runs outside the pipeline, its
// answer reaches the scopes like any statement's. Until it ends the COPY holds the
// session (session::user_busy, session::copying): every other operation is refused.
// One that is abandoned (its writer or reader destroyed first) is ended in the
// background, as an abandoned scope's rollback is, and the next operation waits
// for that at the session's gate.

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/result.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/copy_rows.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/copy_text.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/session_state.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/sql_text.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/link.hpp> (inlined above)
// #include <pqscope/asio/query.hpp>
// pqscope::asio::query: one statement and its parameters, owned, as an
// asynchronous operation takes them.

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/connection.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/params.hpp> (in <pqscope/pqscope.hpp>)

namespace pqscope::asio {


// One statement and its parameters, as an operation takes it. The text and the
// parameters are copied, so the operation may start after the caller's values are
// gone:
//   co_await c.async_execute("SELECT 1", use_awaitable);
//   co_await c.async_execute({"UPDATE account SET cents = $1 WHERE id = $2", cents, id}, use_awaitable);
// Parameters are the blocking connection's (params.hpp): encoded when the
// operation starts, and an error in them fails the operation.
class query {
 public:
  query(const char* sql) : sql_(sql != nullptr ? sql : "") {}  // NOLINT: implicit on purpose
  query(std::string sql) : sql_(std::move(sql)) {}              // NOLINT
  query(std::string_view sql) : sql_(sql) {}                    // NOLINT
  query(const allow_session_state& s) : sql_(s.sql), session_state_allowed_(true) {}  // NOLINT
  template <class Sql, class P, class... Ps>
  query(Sql&& sql, const P& p, const Ps&... ps)  // NOLINT: implicit, so that {sql, params...} works
      : query(std::forward<Sql>(sql)) {
    params_ = std::make_shared<const params_of<stored_t<P>, stored_t<Ps>...>>(store(p), store(ps)...);
    count_ = pqscope::detail::param_count(p, ps...);
  }

  [[nodiscard]] std::string_view text() const noexcept { return sql_; }
  [[nodiscard]] std::size_t param_count() const noexcept { return count_; }
  [[nodiscard]] bool session_state_allowed() const noexcept { return session_state_allowed_; }

 private:
  friend struct detail_access;

  // The text as libpq wants it: NUL-terminated, with no NUL inside.
  [[nodiscard]] const char* c_str() const {
    if (std::strlen(sql_.c_str()) != sql_.size()) throw usage_error("the SQL text contains a NUL byte");
    return sql_.c_str();
  }
  [[nodiscard]] pqscope::detail::param_list params() const {
    return params_ ? params_->make() : pqscope::detail::param_list{};
  }

  // What a parameter is kept as: views and C strings become strings of their own.
  template <class T>
  static auto store(const T& v) {
    if constexpr (std::is_array_v<T> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>) {
      return std::string(v, ::strnlen(v, std::extent_v<T>));  // as params.hpp reads a char array
    } else if constexpr (std::is_same_v<T, const char*> || std::is_same_v<T, char*>) {
      return v != nullptr ? std::optional<std::string>(v) : std::optional<std::string>();
    } else if constexpr (std::is_same_v<T, std::string_view>) {
      return std::string(v);
    } else if constexpr (std::is_same_v<T, std::optional<std::string_view>>) {
      return v ? std::optional<std::string>(std::string(*v)) : std::optional<std::string>();
    } else {
      return v;
    }
  }
  template <class T>
  using stored_t = decltype(store(std::declval<const T&>()));

  struct params_base {
    params_base() = default;
    params_base(const params_base&) = delete;
    params_base& operator=(const params_base&) = delete;
    params_base(params_base&&) = delete;
    params_base& operator=(params_base&&) = delete;
    virtual ~params_base() = default;
    [[nodiscard]] virtual pqscope::detail::param_list make() const = 0;
  };
  template <class... Ts>
  struct params_of final : params_base {
    explicit params_of(Ts... v) : values(std::move(v)...) {}
    [[nodiscard]] pqscope::detail::param_list make() const override {
      return std::apply([](const Ts&... v) { return pqscope::detail::param_list::of(v...); }, values);
    }
    std::tuple<Ts...> values;
  };

  std::string sql_;
  bool session_state_allowed_ = false;
  std::shared_ptr<const params_base> params_;
  std::size_t count_ = 0;
};

struct detail_access {
  static const char* c_str(const query& q) { return q.c_str(); }
  static pqscope::detail::param_list params(const query& q) { return q.params(); }
};

namespace detail {

// A value that would be a statement's parameter, passed where an operation takes its
// completion token: the blocking call's shape, async_execute("SELECT $1", 1). Asio
// would report it from deep inside async_compose; the operation refuses it instead,
// with one static_assert that says what to write. Asio's tokens are class types
// (use_awaitable, deferred, a handler, a yield_context) that no parameter is.
template <class T>
struct parameter_like
    : std::disjunction<std::negation<std::is_class<T>>, std::is_same<T, std::string>, std::is_same<T, std::nullopt_t>,
                       std::is_same<T, pqscope::params>, pqscope::detail::is_optional<T>, pqscope::detail::is_vector<T>,
                       pqscope::detail::has_to_text<T>> {};

// A completion token for an operation that completes with void(std::exception_ptr, Value):
// anything but a parameter, or a function pointer that takes the completion.
template <class Token, class Value>
inline constexpr bool completion_token_v =
    std::disjunction_v<std::negation<parameter_like<std::decay_t<Token>>>,
                       std::is_invocable<std::decay_t<Token>&, std::exception_ptr, Value>>;
template <class Token, class Value>
using if_completion_token = std::enable_if_t<completion_token_v<Token, Value>, int>;

template <class...>
inline constexpr bool refused_shape = false;

}  // namespace detail

}  // namespace pqscope::asio
// #include <pqscope/asio/detail/operation.hpp>
// One asynchronous operation: a work type says what the operation queues and how
// it ends (one per operation: a statement, a flush, the end of a scope, a connect,
// the rollback of an abandoned scope), and machine_op runs it as an Asio composed
// operation, the loop that sync_session runs blocking:
//     while (machine.wants_send()) machine.apply(co_await exchange(machine.plan()))

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/params.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/result.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/application_name.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/scope_machine.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/session_state.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/sql_text.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/link.hpp> (inlined above)
// #include <pqscope/asio/query.hpp> (inlined above)
// #include <pqscope/asio/detail/session.hpp>
// What an asio connection and its operations in flight share: the scope machine,
// the link, the gate that orders operations, and the scopes abandoned while one
// ran; and resolve_xact(), the asynchronous twin of driver_session::xact_status.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

// #include <pqscope/driver.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/notification.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/options.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/scope_machine.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/sync_session.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/link.hpp> (inlined above)
// #include <pqscope/asio/query.hpp> (inlined above)

namespace pqscope::asio::detail {

using clock = std::chrono::steady_clock;

// The machine, the link, and who is using them. Shared by the connection object
// and its operations in flight.
class session final : public pqscope::detail::sender, public std::enable_shared_from_this<session> {
 public:
  session(const net::any_io_executor& ex, std::string info, connection_options o)
      : executor(ex), conninfo(std::move(info)), options(std::move(o)), io(std::make_shared<link>(ex)), gate(ex) {
    machine.set_observer(options.observer);
    io->notices = pqscope::detail::notice_route(options);
    machine.set_savepoint_limit(options.savepoint_limit, options.refuse_past_savepoint_limit);
    machine.set_prepare_limit(pqscope::detail::prepare_limit(options), options.pooling == pqscope::pooling::transaction);
    machine.set_commit_positions(options.commit_positions);
    if (options.network_timeout.count() > 0) {
      io->timeout = options.network_timeout;
      io->cancel_wait = libpq_driver::grace_for(options.network_timeout);
    }
  }

  pqscope::detail::scope_machine machine;
  net::any_io_executor executor;
  std::string conninfo;
  std::string conninfo_shown = pqscope::detail::redacted_conninfo(conninfo);  // after conninfo: made from it
  connection_options options;
  std::shared_ptr<link> io;
  std::weak_ptr<link> resolver;  // the fresh connection asking about a lost COMMIT
  bool resolver_canceled = false;  // cancel() while it asked: no connection after it

  // A user operation is running (or waiting for the gate), or a COPY holds the session.
  bool user_busy = false;
  bool copying = false;  // a COPY's writer or reader holds it (asio/copy.hpp)
  bool closed = false;
  // A rollback that no one awaits is running: a scope's object was destroyed open.
  // User operations wait for it at the gate, a timer that never expires by itself.
  bool background = false;
  net::steady_timer gate;
  // Scopes whose objects were destroyed open while an operation was running.
  std::vector<std::uint64_t> abandoned;

  // LISTEN (asio/detail/listen.hpp): the channels; notifications taken from a
  // session before it closed; a new session that does not listen yet, and the gap
  // the next wait reports.
  std::vector<std::string> channels;
  std::deque<notification> received;
  bool relisten = false, gap = false;
  // Before the link closes its session: what it received is kept.
  void keep_received() {
    for (;;) {
      notification n;
      if (!io->take_notification(n)) return;
      received.push_back(std::move(n));
    }
  }

  // statement_slot::wait() calls this for a batched result read before it was sent:
  // the blocking connection would send the batch here, which a coroutine cannot do.
  void flush() override {
    throw usage_error(
        "a batched statement's result was read before the batch was sent; on an asynchronous connection, "
        "co_await async_flush() first (or use async_query_value, which sends the batch)");
  }

  // Machine calls that are not operations (opening a scope, on_commit, set_local)
  // are refused while an operation runs: it owns the machine until it completes.
  pqscope::detail::scope_machine& idle_machine(const char* what) {
    if (copying) throw usage_error(copy_in_progress(what));
    if (user_busy)
      throw usage_error(std::string(what) + " while an operation is in progress on this connection; "
                                            "one operation at a time, and await each before the next call");
    return machine;
  }
  // Why `what` cannot run while a COPY holds the session.
  [[nodiscard]] static std::string copy_in_progress(const char* what) {
    return std::string(what) + " while a COPY is in progress on this connection; end it first (async_finish(), "
                               "or read its rows to the end), or destroy its copy_writer or copy_reader";
  }

  // A scope's object was destroyed while the scope was open (a coroutine destroyed
  // mid-scope, an exception past a transaction object). Nested scopes end at once,
  // as in the blocking connection (nothing is sent for them). The outermost one's
  // ROLLBACK goes out at once, in the background, and every later operation waits
  // for it: no transaction is left idle on the server.
  void abandon(std::uint64_t id) noexcept {
    try {
      abandoned.push_back(id);
    } catch (...) {
      return;  // out of memory: the connection's close will end the session
    }
    process_abandoned();
  }

  void process_abandoned() noexcept;
  void start_background();

  void notify_refusal(const query& q, const std::exception& e) const noexcept {
    if (!options.observer) return;
    statement_event ev;
    ev.sql = q.text();
    ev.params = q.param_count();
    ev.depth = machine.depth();
    ev.error = &e;
    try {
      options.observer(ev);
    } catch (...) {
      // a logging hook must not change what the transaction does
    }
  }

  void close() noexcept {
    closed = true;
    // In a forked child, closing would end the parent's session.
    const bool ours = machine.opened_by_this_process();
    machine.mark_closed();
    if (ours)
      io->close();
    else
      io->abandon_after_fork();
    if (auto r = resolver.lock()) r->close();
    error_code ignored;
    gate.cancel(ignored);
  }

  // connection::cancel(): the operation in flight, and a resolution it waits for.
  void cancel() {
    io->request_cancel("canceled");
    if (auto r = resolver.lock()) {
      resolver_canceled = true;
      r->request_cancel("canceled");
    }
  }

};

// The verdict on a transaction whose COMMIT got no answer, asked on fresh
// connections: "committed", "aborted", "absent: ..." or why there is none (as
// driver_session::xact_status says it; the reading is detail/in_doubt.hpp's).
inline net::awaitable<std::string> resolve_xact(std::shared_ptr<session> s, pqscope::detail::in_doubt q) {
  using pqscope::detail::verdict;
  // The budget of driver_session::xact_status: network_timeout and its grace from
  // now, or resolve_wait.
  const pqscope::detail::resolver_clock budget(
      s->io->timeout.count() > 0 ? s->io->timeout + libpq_driver::grace_for(s->io->timeout)
                                 : std::chrono::milliseconds(0),
      q.wait);
  const bool bounded = s->io->timeout.count() > 0;
  const pqscope::detail::verdict_question question(q);
  const std::vector<statement> ask{question.ask()};
  net::steady_timer pause(s->executor);
  s->resolver_canceled = false;
  std::string outcome, last;
  while (outcome.empty()) {  // a fresh connection each time round: the conninfo may now lead elsewhere
    auto l = std::make_shared<link>(s->executor);
    l->timeout = s->io->timeout;  // the same time bounds
    l->cancel_wait = s->io->cancel_wait;
    s->resolver = l;
    try {
      co_await async_open(l, s->conninfo, "pqscope in-doubt resolver", net::use_awaitable);
      // A backend that was cut off may still be finishing: wait for its verdict.
      for (;;) {
        if (bounded) {
          l->timeout = budget.round_trip_timeout();  // it and its grace end by the deadline
          l->cancel_wait = libpq_driver::grace_for(l->timeout);
        }
        if ((bounded && l->timeout.count() <= 0) || (!bounded && budget.left().count() <= 0)) {
          outcome = budget.spent(last);
          break;
        }
        const batch_reply br = co_await async_exchange(l, ask, net::use_awaitable);
        if (br.lost) {
          last = "connection lost: " + br.lost_message;
          break;
        }
        verdict v = pqscope::detail::read_verdict(br.replies.front(), q);
        if (v.next == verdict::then::done) {
          outcome = std::move(v.outcome);
          break;
        }
        last = std::move(v.outcome);
        if (v.next == verdict::then::reconnect) break;
        const auto wait = budget.pause();
        if (wait.count() <= 0) {
          outcome = budget.spent(last);
          break;
        }
        pause.expires_after(wait);
        co_await pause.async_wait(net::use_awaitable);
      }
    } catch (const connection_error& e) {
      last = e.what();  // no server reachable: a failover may be under way
    } catch (const std::exception& e) {
      outcome = e.what();
    } catch (...) {
      outcome = "unknown failure";
    }
    l->close();
    if (!outcome.empty()) break;
    if (s->resolver_canceled || s->closed) {
      outcome = "canceled; last: " + last;
      break;
    }
    const auto wait = budget.reconnect_pause();
    if (wait.count() <= 0) {
      outcome = budget.spent(last);
      break;
    }
    pause.expires_after(wait);
    try {
      co_await pause.async_wait(net::use_awaitable);
    } catch (const std::exception& e) {
      outcome = e.what();
    }
  }
  co_return outcome;
}

}  // namespace pqscope::asio::detail

namespace pqscope::asio::detail {

// ---- what operations do with the machine -----------------------------------------
// A work type is one operation's part of sync_session:
//   bool start(session&)                      queue; true: drive the loop
//   value_type finish(session&)               the end step: the value, or throws
//   optional<in_doubt> in_doubt(session&)      (end of a scope) the transaction to resolve
//   void settle(session&)                      (optional) told the outcome, either way
//   background / connects / out_of_band        see machine_op
//   copies / continues / holds_session()       a COPY's (asio/detail/copy.hpp)

struct work_base {
  static constexpr bool background = false;  // a rollback no one awaits (abandoned scope)
  static constexpr bool connects = false;    // opens the link after start()
  // A statement outside the pipeline (a script): after the loop has sent everything
  // queued (the sync point), stage() it and send it alone; take() its answers.
  static constexpr bool out_of_band = false;
  // out_of_band, a COPY: the statement starts a COPY instead of running as a script.
  static constexpr bool copies = false;
  // A step of the COPY that holds the session: it is this operation's already.
  static constexpr bool continues = false;
  // Whether the session stays busy after the operation (a COPY started).
  bool holds_session() const { return false; }
  std::optional<pqscope::detail::in_doubt> in_doubt(session&) const { return std::nullopt; }
};

// execute(): an unbatched statement is sent now; a batched one waits in the queue
// and its result is filled by the send that carries it (flush_batched: sent now).
struct statement_work : work_base {
  using value_type = result;
  explicit statement_work(query text, bool send_batched = false)
      : data(std::make_unique<owned>(owned{std::move(text), {}})), flush_batched(send_batched) {}

  bool start(session& s) {
    const query& q = data->q;
    try {
      const pqscope::detail::sql_facts& f = s.machine.check_statement(
          q.text(), q.param_count(), s.options.pooling == pooling::transaction && !q.session_state_allowed());
      const char* sql = detail_access::c_str(q);
      data->params.emplace(detail_access::params(q));
      slot = s.machine.queue_statement(sql, q.text(), f, *data->params, s.weak_from_this());
    } catch (const std::exception& e) {
      s.notify_refusal(q, e);
      throw;
    }
    if (!slot->batched) return true;
    if (!flush_batched) return false;
    s.machine.request_flush();
    return true;
  }

  result finish(session& s) {
    if (slot->batched && !flush_batched) return result(std::shared_ptr<pqscope::detail::deferred_answer>(slot));
    s.machine.finish();
    return slot->wait();
  }

  // The slot points into these until the statement is sent (or it owns a copy):
  // they stay put while the operation object moves from handler to handler.
  struct owned {
    query q;
    std::optional<pqscope::detail::param_list> params;
  };
  std::unique_ptr<owned> data;
  bool flush_batched;
  std::shared_ptr<pqscope::detail::statement_slot> slot;
};

template <class T>
struct query_value_work : statement_work {
  using value_type = T;
  explicit query_value_work(query text) : statement_work(std::move(text), /*send_batched=*/true) {}
  T finish(session& s) {
    result r = statement_work::finish(s);
    if (r.size() != 1 || r.columns() != 1)
      throw conversion_error("query_value() needs exactly one row of one column, but the query returned " +
                             std::to_string(r.size()) + " row(s) of " + std::to_string(r.columns()) + " column(s)");
    return r[0][0].template as<T>();
  }
};

// A statement sent alone, outside the pipeline (a script, a COPY): checked, then
// everything queued goes out first, controls too, so that it finds the transaction
// and savepoints the scopes say; the scopes then see it as one statement.
struct out_of_band_work : work_base {
  static constexpr bool out_of_band = true;
  explicit out_of_band_work(query text) : q(std::make_unique<query>(std::move(text))) {}

  // `check(sql)` throws for a statement the operation refuses; then the pooler guard.
  template <class Check>
  bool start_with(session& s, const char* what, Check&& check) {
    try {
      const std::string_view sql = q->text();
      if (q->param_count() != 0)
        throw usage_error(std::string(what) + " takes no parameters: the statement goes in the simple protocol");
      check(sql);
      if (s.options.pooling == pooling::transaction && !q->session_state_allowed()) {
        const std::string hazard = pqscope::detail::session_state_hazard(sql);
        if (!hazard.empty()) throw usage_error(hazard);
      }
      slot = s.machine.prepare_out_of_band(detail_access::c_str(*q), sql, s.weak_from_this());
    } catch (const std::exception& e) {
      s.notify_refusal(*q, e);
      throw;
    }
    s.machine.request_sync_point();
    return true;
  }
  // The sync point went out: the statement's turn. Its text, for the link.
  const char* stage(session& s) {
    s.machine.finish();
    s.machine.stage_out_of_band(slot);
    staged = true;
    return slot->stmt.sql;
  }

  std::unique_ptr<query> q;  // the slot points into it: it stays put while the operation moves
  std::shared_ptr<pqscope::detail::statement_slot> slot;
  bool staged = false, taken = false;
};

// execute_script(): several statements in one simple-protocol query.
struct script_work : out_of_band_work {
  using value_type = std::vector<result>;
  using out_of_band_work::out_of_band_work;

  bool start(session& s) {
    return start_with(s, "async_execute_script()",
                      [](std::string_view sql) { pqscope::detail::check_script(sql, "async_execute_script()"); });
  }
  void take(session& s, batch_reply& all) {
    taken = true;
    s.machine.apply(pqscope::detail::script_outcome(all, results));
  }
  std::vector<result> finish(session& s) {
    s.machine.finish();
    (void)slot->wait();  // the script's error, if it failed
    return std::move(results);
  }

  std::vector<result> results;
};

struct flush_work : work_base {
  using value_type = void;
  bool start(session& s) {
    s.machine.request_flush();
    return true;
  }
  void finish(session& s) { s.machine.finish(); }
};

// The state of one scope object, shared with the operation that ends it.
struct scope_record {
  enum class state { open, ending, committed, rolled_back, moved_from };
  state st = state::open;
};

// commit() / rollback() of a scope: sync_session::end().
struct end_work : work_base {
  using value_type = void;
  end_work(std::uint64_t scope, bool do_commit, std::shared_ptr<scope_record> r)
      : id(scope), commit(do_commit), record(std::move(r)) {}

  bool start(session& s) {
    record->st = scope_record::state::ending;
    if (s.machine.end_scope(id, commit)) return true;
    nested = true;
    committed = commit;
    return false;
  }
  std::optional<pqscope::detail::in_doubt> in_doubt(session& s) const {
    return nested ? std::nullopt : s.machine.needs_resolution();
  }
  void finish(session& s) {
    if (!nested) s.machine.finish_end(&committed);
  }
  // As transaction::finish(): the scope has ended if it left the stack; an
  // on_commit callback may have thrown after a successful COMMIT.
  void settle(session& s) {
    if (s.machine.index_of(id))
      record->st = scope_record::state::open;
    else
      record->st = committed ? scope_record::state::committed : scope_record::state::rolled_back;
  }

  std::uint64_t id;
  bool commit, nested = false, committed = false;
  std::shared_ptr<scope_record> record;
};

// Ends scope `id` and every scope inside it by rolling back, quietly: sync_session::abandon().
struct abandon_work : work_base {
  using value_type = void;
  explicit abandon_work(std::uint64_t scope) : id(scope) {}
  bool start(session& s) {
    auto at = s.machine.index_of(id);
    if (!at) return false;
    while (s.machine.depth() > *at)
      if (s.machine.end_scope(s.machine.innermost_id(), false, /*quiet=*/true)) {
        outermost = true;
        return true;
      }
    return false;
  }
  void finish(session& s) const {
    if (outermost) s.machine.finish_end();
  }
  std::uint64_t id;
  bool outermost = false;
};

// The outermost ROLLBACK of an abandoned scope, already queued by end_scope().
struct background_work : work_base {
  using value_type = void;
  static constexpr bool background = true;
  bool start(session&) { return true; }
  void finish(session& s) { s.machine.finish_end(); }
};

struct connect_work : work_base {
  using value_type = void;
  static constexpr bool connects = true;
  bool start(session& s) {
    if (!s.machine.opened_by_this_process()) s.machine.check_usable();
    if (s.machine.depth() != 0)
      throw usage_error("async_connect() with " + std::to_string(s.machine.depth()) +
                        " scope(s) open; end them first");
    s.keep_received();  // the link closes the old session first
    return true;
  }
  void finish(session& s) {
    s.machine.mark_open();
    // The new session listens to nothing yet: the next wait does, then reports the gap.
    if (!s.channels.empty()) s.relisten = s.gap = true;
  }
};

template <class Work, class = void>
struct has_settle : std::false_type {};
template <class Work>
struct has_settle<Work, std::void_t<decltype(std::declval<Work&>().settle(std::declval<session&>()))>>
    : std::true_type {};

template <class T>
struct signature_of {
  using type = void(std::exception_ptr, T);
};
template <>
struct signature_of<void> {
  using type = void(std::exception_ptr);
};

// One operation: the blocking loop of sync_session as an Asio composed operation.
template <class Work>
class machine_op {
 public:
  using value_type = typename Work::value_type;

  machine_op(std::shared_ptr<session> s, Work w) : s_(std::move(s)), w_(std::move(w)) {}

  // Started; or posted back to deliver an outcome found while starting (a handler
  // is never called from inside the function that started the operation).
  template <class Self>
  void operator()(Self& self) {
    if (state_ == state::deliver) return deliver(self);
    starting_ = true;
    enter(self);
  }
  // The gate opened: the background rollback before us has ended (or the connection
  // was closed). Still running: this wait was cancelled through a cancellation slot.
  template <class Self>
  void operator()(Self& self, const error_code&) {
    if (s_->background && !s_->closed) {
      error_ = std::make_exception_ptr(query_canceled(
          "the operation was canceled before it started, while a rollback was still in progress", "57014"));
      return done(self);
    }
    run(self);
  }
  // The link is open, or could not be opened.
  template <class Self>
  void operator()(Self& self, std::exception_ptr e) {
    if (e) {
      error_ = std::move(e);
      return done(self);
    }
    drive(self);
  }
  template <class Self>
  void operator()(Self& self, batch_reply br) {
    if constexpr (Work::out_of_band) {
      if (w_.staged && !w_.taken) {
        w_.take(*s_, br);
        return drive(self);
      }
    }
    s_->machine.apply(std::move(br));
    drive(self);
  }
  // The fresh connection's verdict on a lost COMMIT.
  template <class Self>
  void operator()(Self& self, const std::exception_ptr&, std::string outcome) {
    s_->machine.resolve(std::move(outcome));
    finish(self);
  }

 private:
  enum class state { start, deliver };

  // Every suspension goes through here: after it, a completion is no longer inside
  // the starting call.
  template <class Self>
  Self&& park(Self& self) {
    starting_ = false;
    return std::move(self);
  }

  template <class Self>
  void enter(Self& self) {
    if constexpr (Work::background) {
      s_->background = true;
      s_->gate.expires_at(net::steady_timer::time_point::max());
      owns_ = true;
      run(self);
    } else if constexpr (Work::continues) {
      owns_ = true;
      run(self);
    } else {
      if (s_->user_busy) {
        error_ = std::make_exception_ptr(usage_error(
            s_->copying ? detail::session::copy_in_progress("an operation was started")
                        : "an operation was started while another one is in progress on this connection; one at a "
                          "time: await each operation before starting the next"));
        return done(self);
      }
      s_->user_busy = true;
      owns_ = true;
      if (s_->background) return s_->gate.async_wait(park(self));
      run(self);
    }
  }

  template <class Self>
  void run(Self& self) {
    try {
      if (!w_.start(*s_)) return finish(self);
    } catch (...) {
      error_ = std::current_exception();
      return done(self);
    }
    if constexpr (Work::connects) {
      return async_open(s_->io, s_->conninfo, pqscope::detail::default_application_name(), park(self));
    } else {
      drive(self);
    }
  }

  template <class Self>
  void drive(Self& self) {
    if (s_->machine.wants_send()) return async_exchange(s_->io, s_->machine.plan(), park(self));
    if constexpr (Work::out_of_band) {
      if (!w_.staged) {
        const char* sql = nullptr;
        try {
          sql = w_.stage(*s_);
        } catch (...) {
          error_ = std::current_exception();
          return done(self);
        }
        if constexpr (Work::copies) return async_copy_begin(s_->io, sql, park(self));
        return async_script(s_->io, sql, park(self));
      }
    }
    if (!asked_) {
      asked_ = true;
      if (auto xid = w_.in_doubt(*s_)) return net::co_spawn(s_->executor, resolve_xact(s_, std::move(*xid)), park(self));
    }
    finish(self);
  }

  template <class Self>
  void finish(Self& self) {
    try {
      if constexpr (std::is_void_v<value_type>)
        w_.finish(*s_);
      else
        value_.emplace(w_.finish(*s_));
    } catch (...) {
      error_ = std::current_exception();
    }
    done(self);
  }

  template <class Self>
  void done(Self& self) {
    if (owns_) {
      owns_ = false;
      if constexpr (has_settle<Work>::value) w_.settle(*s_);
      s_->io->disarm();
      if constexpr (Work::background) {
        s_->background = false;
        s_->process_abandoned();
        error_code ignored;
        if (!s_->background) s_->gate.cancel(ignored);
      } else if (!w_.holds_session()) {
        s_->user_busy = false;
        s_->process_abandoned();
      }
    }
    if (starting_) {
      // A continuation of the handler that started us (defer, not post): Asio
      // queues it on this thread without waking the reactor.
      state_ = state::deliver;
      return net::defer(park(self));
    }
    deliver(self);
  }

  template <class Self>
  void deliver(Self& self) {
    if constexpr (std::is_void_v<value_type>) {
      self.complete(error_);
    } else if (value_) {
      self.complete(error_, std::move(*value_));
    } else {
      self.complete(error_, value_type{});
    }
  }

  std::shared_ptr<session> s_;
  Work w_;
  state state_ = state::start;
  bool starting_ = false, owns_ = false, asked_ = false;
  std::exception_ptr error_;
  std::conditional_t<std::is_void_v<value_type>, bool, std::optional<value_type>> value_{};
};

template <class Work, class Token>
auto start(const std::shared_ptr<session>& s, Work w, Token&& token) {
  using sig = typename signature_of<typename Work::value_type>::type;
  return net::async_compose<Token, sig>(machine_op<Work>{s, std::move(w)}, token, s->executor);
}

inline void session::start_background() {
  start(shared_from_this(), background_work{}, [](const std::exception_ptr&) {});
}

inline void session::process_abandoned() noexcept {
  if (user_busy || background) return;  // the operation running owns the machine; it calls again when done
  try {
    while (!abandoned.empty()) {
      const std::uint64_t id = abandoned.front();
      abandoned.erase(abandoned.begin());
      auto at = machine.index_of(id);
      if (!at) continue;  // ended already, with an enclosing scope
      while (machine.depth() > *at) {
        if (!machine.end_scope(machine.innermost_id(), false, /*quiet=*/true)) continue;
        // The outermost scope: its ROLLBACK, if anything reached the server.
        if (machine.wants_send()) return start_background();
        machine.finish_end();
      }
    }
  } catch (...) {
    // quiet endings only throw if memory runs out; the frame is gone either way
  }
}

}  // namespace pqscope::asio::detail
// #include <pqscope/asio/detail/session.hpp> (inlined above)

namespace pqscope::asio::detail {

// A COPY in progress, shared by its writer or reader and the operation in flight.
// The last owner of one still open ends it in the background.
struct copy_state {
  copy_state(std::shared_ptr<session> sess, std::shared_ptr<pqscope::detail::statement_slot> st, bool copy_in)
      : s(std::move(sess)), slot(std::move(st)), in(copy_in) {}
  copy_state(const copy_state&) = delete;
  copy_state& operator=(const copy_state&) = delete;
  copy_state(copy_state&&) = delete;
  copy_state& operator=(copy_state&&) = delete;
  ~copy_state();

  // An operation of this COPY starts: nullptr, or why it cannot (it is given to the
  // operation, which fails with it). `ended_ok`: a COPY that has ended is no error.
  std::exception_ptr claim(const char* what, bool ended_ok) {
    if (busy)
      return std::make_exception_ptr(usage_error(
          std::string(what) + " while another operation of this COPY is in progress; await each one first"));
    if (!open && !ended_ok)
      return std::make_exception_ptr(usage_error(std::string(what) + ": this COPY has already ended" +
                                                 (why.empty() ? std::string() : " (" + why + ")")));
    busy = true;
    return nullptr;
  }

  std::shared_ptr<session> s;
  std::shared_ptr<pqscope::detail::statement_slot> slot;
  bool in;             // COPY FROM STDIN
  bool open = true;    // not ended
  bool busy = false;   // an operation of it is in flight
  std::string why;     // why it ended, if by an error
  pqscope::detail::copy_buffer sending;   // a writer's rows on their way
  pqscope::detail::copy_row_decoder rows;  // a reader's last row
  std::uint64_t read = 0;                 // rows read
};

// The operation's claim on its COPY, released when the operation ends.
class copy_claim {
 public:
  copy_claim(std::shared_ptr<copy_state> st, const std::exception_ptr& refused) : st_(std::move(st)) {
    if (refused) {
      st_.reset();  // claimed by someone else
      std::rethrow_exception(refused);
    }
  }
  copy_claim(const copy_claim&) = delete;
  copy_claim& operator=(const copy_claim&) = delete;
  ~copy_claim() {
    if (st_) st_->busy = false;
  }

 private:
  std::shared_ptr<copy_state> st_;
};

// async_copy_in / async_copy_out: the COPY statement, sent alone after everything
// queued (as a script is). Completes once the COPY has started; the session is then
// the COPY's until copy_end_work.
struct copy_start_work : out_of_band_work {
  using value_type = std::shared_ptr<copy_state>;
  static constexpr bool copies = true;
  copy_start_work(query text, char direction) : out_of_band_work(std::move(text)), dir(direction) {}

  [[nodiscard]] const char* what() const { return dir == 'i' ? "async_copy_in()" : "async_copy_out()"; }

  bool start(session& s) {
    return start_with(s, what(), [&](std::string_view sql) {
      if (pqscope::detail::copy_direction(sql) != dir)
        throw usage_error(std::string(what()) + " needs a COPY ... " + (dir == 'i' ? "FROM STDIN" : "TO STDOUT") +
                          " statement: " + std::string(sql.substr(0, 200)));
      pqscope::detail::check_placeholders(sql, 0);
    });
  }
  void take(session& s, batch_reply& br) {
    taken = true;
    if (s.io->copy_mode() != 0) {  // started: its answer comes at its end
      state = std::make_shared<copy_state>(s.shared_from_this(), slot, s.io->copy_mode() == 'i');
      s.copying = started = true;
      return;
    }
    s.machine.apply(std::move(br));
  }
  std::shared_ptr<copy_state> finish(session& s) {
    // Moved out: the operation object may outlive its completion for a while, and
    // the last owner of the state is the one whose end aborts the COPY.
    if (started) return std::move(state);
    s.machine.finish();
    (void)slot->wait();  // the server's error
    throw usage_error(std::string(what()) + ": the statement did not start a COPY");
  }
  [[nodiscard]] bool holds_session() const { return started; }

  char dir;
  std::shared_ptr<copy_state> state;
  bool started = false;
};

// The COPY has ended (or was lost): its answer goes to the scopes, and the session
// is free again. Background: the end of an abandoned COPY, which no one awaits.
template <bool Background>
struct copy_end_work : work_base {
  using value_type = result;
  static constexpr bool background = Background;
  static constexpr bool continues = !Background;
  copy_end_work(std::shared_ptr<pqscope::detail::statement_slot> st, batch_reply reply)
      : slot(std::move(st)), br(std::move(reply)) {}

  bool start(session& s) {
    s.copying = false;
    s.machine.apply(std::move(br));
    return true;
  }
  result finish(session& s) {
    s.machine.finish();
    return slot->wait();  // throws what the COPY raised
  }

  std::shared_ptr<pqscope::detail::statement_slot> slot;
  batch_reply br;
};

// The COPY has ended: the scopes learn its answer; throws its error.
inline net::awaitable<result> end_copy(std::shared_ptr<copy_state> st, batch_reply br) {
  st->open = false;
  try {
    co_return co_await start(st->s, copy_end_work<false>{st->slot, std::move(br)}, net::use_awaitable);
  } catch (const std::exception& e) {
    st->why = e.what();
    throw;
  }
}

// A writer's rows (st->sending) onto the socket; with `end`, then the end of the
// COPY: the rows the server took.
inline net::awaitable<std::uint64_t> put_rows(std::shared_ptr<copy_state> st, std::exception_ptr refused, bool end) {
  const copy_claim claim(st, refused);
  st->s->io->begin_copy_put(st->sending.view(), end, nullptr);
  batch_reply br = co_await async_copy_step(st->s->io, net::use_awaitable);
  st->sending.clear();
  if (!end && !br.lost) co_return 0;
  const result r = co_await end_copy(st, std::move(br));
  co_return r.affected_rows();
}

// A reader's next line (in the link, copy_row()); false at the COPY's end.
inline net::awaitable<bool> next_line(std::shared_ptr<copy_state> st) {
  if (!st->open) co_return false;
  st->s->io->begin_copy_get(/*drop=*/false);
  batch_reply br = co_await async_copy_step(st->s->io, net::use_awaitable);
  if (!br.lost && br.replies.empty()) {
    ++st->read;
    co_return true;
  }
  (void)co_await end_copy(st, std::move(br));
  co_return false;
}

template <class... Ts>
net::awaitable<std::optional<std::tuple<Ts...>>> next_row(std::shared_ptr<copy_state> st, std::exception_ptr refused) {
  const copy_claim claim(st, refused);
  if (!co_await next_line(st)) co_return std::nullopt;
  co_return st->rows.template row<Ts...>(st->s->io->copy_row(), st->read);
}

inline net::awaitable<std::optional<std::vector<std::optional<std::string>>>> next_fields(
    std::shared_ptr<copy_state> st, std::exception_ptr refused) {
  const copy_claim claim(st, refused);
  if (!co_await next_line(st)) co_return std::nullopt;
  std::vector<std::optional<std::string>> fields;
  pqscope::detail::parse_copy_row(st->s->io->copy_row(), fields);
  co_return fields;
}

// An abandoned COPY: a COPY FROM STDIN is failed (nothing of it is kept), a COPY TO
// STDOUT read to its end; then its answer goes to the scopes.
inline net::awaitable<void> end_abandoned(std::shared_ptr<session> s,
                                          std::shared_ptr<pqscope::detail::statement_slot> slot, bool in) {
  bool handed = false;  // to the end work, which opens the gate when done
  try {
    if (in)
      s->io->begin_copy_put({}, true, "the copy_writer was destroyed before async_finish()");
    else
      s->io->begin_copy_get(/*drop=*/true);
    batch_reply br = co_await async_copy_step(s->io, net::use_awaitable);
    handed = true;
    (void)co_await start(s, copy_end_work<true>{std::move(slot), std::move(br)}, net::use_awaitable);
  } catch (...) {
    // the scopes know: an aborted COPY dooms its scope, a lost connection breaks it
  }
  if (!handed) {
    s->background = false;
    error_code ignored;
    s->gate.cancel(ignored);
    s->process_abandoned();
  }
}

inline copy_state::~copy_state() {
  if (!open) return;
  // Until it has ended, the next operation waits at the gate, as behind an
  // abandoned scope's rollback.
  s->user_busy = false;
  s->copying = false;
  s->background = true;
  try {
    s->gate.expires_at(net::steady_timer::time_point::max());
    net::co_spawn(s->executor, end_abandoned(s, slot, in), net::detached);
  } catch (...) {
    // out of memory: closing the connection ends the session
    s->background = false;
    s->user_busy = true;
  }
}

}  // namespace pqscope::asio::detail

namespace pqscope::asio {

// Streams rows into COPY ... FROM STDIN. write_row() only encodes the row into the
// writer's buffer; async_send() puts the buffer on the wire and completes once all
// of it is on the socket, so a writer that sends whenever full() holds about one
// chunk (64 KiB) in memory, as the blocking writer does. async_finish() sends the
// rest and ends the COPY. A writer destroyed before async_finish() aborts the COPY
// (nothing of it is kept), in the background: the connection's next operation waits
// for that.
class copy_writer {
 public:
  copy_writer() = default;  // no COPY: every call throws usage_error
  copy_writer(copy_writer&&) noexcept = default;
  copy_writer& operator=(copy_writer&&) noexcept = default;
  copy_writer(const copy_writer&) = delete;
  copy_writer& operator=(const copy_writer&) = delete;
  ~copy_writer() = default;  // the state aborts an unfinished COPY

  // One row, as the blocking writer's write_row(): one value per column, converted
  // as parameters are; std::nullopt or nullptr is NULL. A value that does not
  // convert throws and leaves no part of its row. No I/O.
  template <class... Ts>
  void write_row(const Ts&... values) {
    check("write_row()");
    rows_.write_row(values...);
    ++written_;
  }
  // Rows already in COPY's text format (each ending in a newline). No I/O.
  void write_raw(std::string_view text) {
    check("write_raw()");
    rows_.write_raw(text);
  }

  // Bytes written and not yet sent; full(): as many as the blocking writer sends at once.
  [[nodiscard]] std::size_t buffered() const noexcept { return rows_.buffer().size(); }
  [[nodiscard]] bool full() const noexcept { return buffered() >= chunk; }

  // Sends what is buffered; completes when all of it is on the socket (write_row()
  // may go on meanwhile, into a fresh buffer). Completion: void(std::exception_ptr).
  // A connection lost ends the COPY: connection_error, as for any statement.
  template <class Token>
  auto async_send(Token&& token) {
    std::exception_ptr refused = hand_over("async_send()");
    return boost::asio::co_spawn(executor(), send_only(st_, std::move(refused)), std::forward<Token>(token));
  }

  // Sends the rest and ends the COPY. Completion: void(std::exception_ptr,
  // std::uint64_t), the rows the server took; the error is what the COPY raised (a
  // constraint, a bad value: its scope is doomed, as by any failed statement).
  template <class Token>
  auto async_finish(Token&& token) {
    std::exception_ptr refused = hand_over("async_finish()");
    return boost::asio::co_spawn(executor(), detail::put_rows(st_, std::move(refused), true),
                                 std::forward<Token>(token));
  }

  // Rows written so far (write_row() calls).
  [[nodiscard]] std::uint64_t rows_written() const noexcept { return written_; }

 private:
  friend class connection;
  explicit copy_writer(std::shared_ptr<detail::copy_state> st) : st_(std::move(st)) {}
  static constexpr std::size_t chunk = std::size_t{64} * 1024;

  void check(const char* what) const {
    if (!st_) throw usage_error(std::string(what) + " on a copy_writer with no COPY (moved from, or default)");
    if (!st_->open)
      throw usage_error(std::string(what) + ": this COPY has already ended" +
                        (st_->why.empty() ? std::string() : " (" + st_->why + ")"));
  }
  [[nodiscard]] boost::asio::any_io_executor executor() const {
    if (!st_) throw usage_error("a copy_writer with no COPY (moved from, or default)");
    return st_->s->executor;
  }
  // The operation's claim; the buffer becomes the one on its way (the last one sent,
  // emptied, is written into next).
  std::exception_ptr hand_over(const char* what) {
    (void)executor();  // no COPY: throws
    std::exception_ptr refused = st_->claim(what, /*ended_ok=*/false);
    if (!refused) std::swap(st_->sending, rows_.buffer());
    return refused;
  }
  static boost::asio::awaitable<void> send_only(std::shared_ptr<detail::copy_state> st, std::exception_ptr refused) {
    (void)co_await detail::put_rows(std::move(st), std::move(refused), false);
  }

  std::shared_ptr<detail::copy_state> st_;
  pqscope::detail::copy_row_encoder rows_;
  std::uint64_t written_ = 0;
};

// Reads the rows of COPY ... TO STDOUT. The COPY ends when the last row has been
// read; a reader destroyed before that has the rest read and dropped in the
// background (the connection's next operation waits for that).
class copy_reader {
 public:
  copy_reader() = default;  // no COPY: every call throws usage_error
  copy_reader(copy_reader&&) noexcept = default;
  copy_reader& operator=(copy_reader&&) noexcept = default;
  copy_reader(const copy_reader&) = delete;
  copy_reader& operator=(const copy_reader&) = delete;
  ~copy_reader() = default;

  // The next row converted to Ts..., as the blocking reader's next<Ts...>();
  // std::nullopt after the last row. Completion:
  // void(std::exception_ptr, std::optional<std::tuple<Ts...>>).
  template <class... Ts, class Token>
  auto async_next(Token&& token) {
    static_assert(!(pqscope::detail::is_text_view<Ts>::value || ...),
                  "pqscope: copy_reader::async_next<std::string_view>() would point into a buffer the next row "
                  "overwrites; read std::string (or std::optional<std::string>)");
    std::exception_ptr refused = claim("async_next()");
    return boost::asio::co_spawn(executor(), detail::next_row<Ts...>(st_, std::move(refused)),
                                 std::forward<Token>(token));
  }
  // The next row's fields as text (std::nullopt for NULL); std::nullopt after the
  // last row. Completion: void(std::exception_ptr,
  // std::optional<std::vector<std::optional<std::string>>>).
  template <class Token>
  auto async_read_row(Token&& token) {
    std::exception_ptr refused = claim("async_read_row()");
    return boost::asio::co_spawn(executor(), detail::next_fields(st_, std::move(refused)),
                                 std::forward<Token>(token));
  }

  // Rows read so far.
  [[nodiscard]] std::uint64_t rows_read() const noexcept { return st_ ? st_->read : 0; }
  // Whether the COPY has ended (every row read).
  [[nodiscard]] bool done() const noexcept { return !st_ || !st_->open; }

 private:
  friend class connection;
  explicit copy_reader(std::shared_ptr<detail::copy_state> st) : st_(std::move(st)) {}

  [[nodiscard]] boost::asio::any_io_executor executor() const {
    if (!st_) throw usage_error("a copy_reader with no COPY (moved from, or default)");
    return st_->s->executor;
  }
  std::exception_ptr claim(const char* what) {
    (void)executor();  // no COPY: throws
    return st_->claim(what, /*ended_ok=*/true);
  }

  std::shared_ptr<detail::copy_state> st_;
};

}  // namespace pqscope::asio
// #include <pqscope/asio/link.hpp> (inlined above)
// #include <pqscope/asio/query.hpp> (inlined above)
// #include <pqscope/asio/detail/operation.hpp> (inlined above)
// #include <pqscope/asio/detail/session.hpp> (inlined above)
// #include <pqscope/asio/detail/listen.hpp>
// LISTEN / NOTIFY on the asio connection: async_listen, async_unlisten and
// async_wait_notification, as coroutines over the connection's own operations
// (a LISTEN is a statement; a new session is async_connect's work). Their meaning
// is the blocking connection's (connection.hpp, notification.hpp).

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/notification.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/link.hpp> (inlined above)
// #include <pqscope/asio/query.hpp> (inlined above)
// #include <pqscope/asio/detail/operation.hpp> (inlined above)
// #include <pqscope/asio/detail/session.hpp> (inlined above)

namespace pqscope::asio::detail {

// The link's socket is readable (or the wait was stopped): void(error_code).
template <class Token>
auto async_readable(const std::shared_ptr<link>& l, Token&& token) {
  return net::async_initiate<Token, void(error_code)>(
      [l](auto handler) { l->async_wait(next_wait::read, std::move(handler)); }, token);
}

inline net::awaitable<void> listen_channel(std::shared_ptr<session> s, std::string channel, bool on) {
  const char* what = on ? "async_listen()" : "async_unlisten()";
  pqscope::detail::check_listen(what, s->options.pooling, s->machine.depth());
  std::string sql = (on ? "LISTEN " : "UNLISTEN ") + pqscope::detail::listen_identifier(channel, what);
  auto listed = [&] { return std::find(s->channels.begin(), s->channels.end(), channel) != s->channels.end(); };
  if (on == listed()) co_return;
  (void)co_await start(s, statement_work{query(allow_session_state(std::move(sql)))}, net::use_awaitable);
  if (on && !listed()) s->channels.push_back(channel);
  if (!on) s->channels.erase(std::remove(s->channels.begin(), s->channels.end(), channel), s->channels.end());
}

// A new session if the last one was lost, then LISTEN for every channel.
inline net::awaitable<void> restore_listening(std::shared_ptr<session> s) {
  if (!s->io->usable()) co_await start(s, connect_work{}, net::use_awaitable);
  for (std::size_t i = 0; i < s->channels.size(); ++i) {
    std::string sql = "LISTEN " + pqscope::detail::listen_identifier(s->channels[i], "async_listen()");
    (void)co_await start(s, statement_work{query(allow_session_state(std::move(sql)))}, net::use_awaitable);
  }
  s->relisten = false;
}

// The user operation while the socket is waited on: one at a time, as any other.
class busy_wait {
 public:
  explicit busy_wait(session& s) : s_(s) {
    if (s_.user_busy)
      throw usage_error("async_wait_notification() while another operation is in progress on this connection; "
                        "one at a time: await each operation before starting the next");
    s_.user_busy = true;
  }
  busy_wait(const busy_wait&) = delete;
  busy_wait& operator=(const busy_wait&) = delete;
  ~busy_wait() { s_.user_busy = false; }

 private:
  session& s_;
};

inline net::awaitable<std::optional<notification>> wait_for_notification(std::shared_ptr<session> s,
                                                                         std::chrono::milliseconds timeout) {
  pqscope::detail::check_listen("async_wait_notification()", s->options.pooling, s->machine.depth());
  if (timeout.count() < 0) throw usage_error("async_wait_notification(): the timeout must not be negative");
  const auto deadline = clock::now() + timeout;
  bool read = false;
  for (;;) {
    if (s->closed) throw connection_error("the connection was closed while waiting for notifications");
    if (!s->received.empty()) {
      notification n = std::move(s->received.front());
      s->received.pop_front();
      co_return n;
    }
    if (s->relisten) co_await restore_listening(s);  // connection_error while the server cannot be reached
    if (std::exchange(s->gap, false)) co_return pqscope::detail::gap_notification();
    notification n;
    if (s->io->take_notification(n)) co_return n;
    if (!s->io->usable()) {
      if (s->channels.empty()) throw connection_error("connection lost while waiting for notifications");
      s->relisten = s->gap = true;  // and around again: a new session, then the gap
      continue;
    }
    if (!read) {  // what the socket holds now, without waiting
      read = true;
      s->io->read_input();
      continue;
    }
    if (clock::now() >= deadline) co_return std::nullopt;
    // A rollback no one awaits (a scope object destroyed open) runs first, as before
    // any operation (machine_op's gate); then look again.
    if (s->background) {
      error_code ignored;
      co_await s->gate.async_wait(net::redirect_error(net::use_awaitable, ignored));
      read = false;
      continue;
    }
    // Input, or the deadline: the timer ends the socket's wait.
    const busy_wait busy(*s);
    auto expired = std::make_shared<bool>(false);
    net::steady_timer timer(s->executor);
    timer.expires_at(deadline);
    timer.async_wait([expired, l = std::weak_ptr<link>(s->io)](const error_code& ec) {
      if (ec) return;
      *expired = true;
      if (auto io = l.lock()) io->stop_waiting();
    });
    error_code ec;
    co_await async_readable(s->io, net::redirect_error(net::use_awaitable, ec));
    timer.cancel();
    read = false;  // readable, expired or failed: read, and look again
  }
}

}  // namespace pqscope::asio::detail

namespace pqscope::asio {

namespace detail {
struct connection_access;
}  // namespace detail

// An autocommit connection on an Asio executor, with the blocking connection's
// nested scopes (pqscope::asio::transaction, pqscope::asio::async_atomic). Not
// thread-safe: use it from one thread at a time (a strand if the io_context runs on
// several). The destructor closes the session; scopes still open end without a word
// to the server, which rolls back a transaction whose connection closes.
class connection {
 public:
  using executor_type = boost::asio::any_io_executor;

  connection(const executor_type& ex, std::string conninfo, connection_options options = {})
      : s_(std::make_shared<detail::session>(ex, std::move(conninfo), std::move(options))) {}
  connection(const executor_type& ex, const database& db)
      : connection(ex, pqscope::detail::database_access::conninfo(db), db.options()) {}
  template <class ExecutionContext,
            std::enable_if_t<std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  connection(ExecutionContext& ctx, std::string conninfo, connection_options options = {})
      : connection(executor_type(ctx.get_executor()), std::move(conninfo), std::move(options)) {}

  connection(connection&&) noexcept = default;
  connection& operator=(connection&& other) noexcept {
    if (this != &other) {
      close();
      s_ = std::move(other.s_);
    }
    return *this;
  }
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection() { close(); }

  [[nodiscard]] executor_type get_executor() const { return session().executor; }

  // Opens the session without blocking (PQconnectStartParams / PQconnectPoll).
  // Also reconnects after a connection_error, at depth 0 only. connect_timeout in
  // the conninfo bounds it; so does set_timeout(). A host name is looked up by
  // libpq with a blocking getaddrinfo(): give hostaddr to avoid it.
  // Completion: void(std::exception_ptr).
  template <class Token>
  auto async_connect(Token&& token) {
    return detail::start(shared(), detail::connect_work{}, std::forward<Token>(token));
  }

  // Runs one statement (see query). Outside any scope it commits at once; inside,
  // pending BEGIN/SAVEPOINT/RELEASE ride in the same round trip. In a batched
  // attempt (transaction_options::batch) it is queued and completes at once with
  // a result that is filled when the batch is sent: reading it before
  // co_await async_flush() throws usage_error. Completion: void(std::exception_ptr, result).
  template <class Token, detail::if_completion_token<Token, result> = 0>
  auto async_execute(query q, Token&& token) {
    return detail::start(shared(), detail::statement_work{std::move(q)}, std::forward<Token>(token));
  }
  // Any other shape (see detail::parameter_like): refused here, not deep in Asio.
  template <class... Args>
  boost::asio::awaitable<result> async_execute(const query&, Args&&...) {
    static_assert(detail::refused_shape<Args...>,
                  "pqscope: async_execute(query, token) takes the parameters in braces with the statement, "
                  "then a completion token: co_await c.async_execute({\"SELECT $1\", 1}, use_awaitable)");
    return {};
  }

  // One value: the query must return exactly one row of one column. In a batched
  // attempt it sends the batch (it needs the answer). Completion: void(std::exception_ptr, T).
  template <class T, class Token, detail::if_completion_token<Token, T> = 0>
  auto async_query_value(query q, Token&& token) {
    static_assert(!std::is_same_v<T, std::string_view> && !std::is_same_v<T, std::optional<std::string_view>>,
                  "query_value<std::string_view> would point into a result that is already freed; use std::string");
    static_assert(std::is_default_constructible_v<T>,
                  "async_query_value<T>: T must be default-constructible (the completion passes a T with an error)");
    return detail::start(shared(), detail::query_value_work<T>{std::move(q)}, std::forward<Token>(token));
  }
  template <class T, class... Args>
  boost::asio::awaitable<T> async_query_value(const query&, Args&&...) {
    static_assert(detail::refused_shape<Args...>,
                  "pqscope: async_query_value<T>(query, token) takes the parameters in braces with the "
                  "statement, then a completion token: "
                  "co_await c.async_query_value<long>({\"SELECT $1::bigint\", 1}, use_awaitable)");
    return {};
  }

  // Several statements separated by semicolons (a schema set-up, a migration) in one
  // simple-protocol query, as connection::execute_script: no parameters; in autocommit
  // the server runs it as one transaction, inside a scope it is part of it; each
  // statement checked as async_execute checks one. Everything queued goes out first.
  // Completion: void(std::exception_ptr, std::vector<result>), one result per statement.
  template <class Token>
  auto async_execute_script(query q, Token&& token) {
    return detail::start(shared(), detail::script_work{std::move(q)}, std::forward<Token>(token));
  }

  // ---- COPY (see asio/copy.hpp) ----
  // COPY ... FROM STDIN: what is queued goes out first, then the COPY statement
  // alone; completes once the COPY has started (or with the statement's error).
  // Until the writer finishes (or is destroyed) the connection refuses every other
  // operation. Completion: void(std::exception_ptr, copy_writer).
  template <class Token>
  auto async_copy_in(query q, Token&& token) {
    return boost::asio::co_spawn(get_executor(), open_copy<copy_writer>(shared(), std::move(q), 'i'),
                                 std::forward<Token>(token));
  }
  // COPY ... TO STDOUT, the same way. Completion: void(std::exception_ptr, copy_reader).
  template <class Token>
  auto async_copy_out(query q, Token&& token) {
    return boost::asio::co_spawn(get_executor(), open_copy<copy_reader>(shared(), std::move(q), 'o'),
                                 std::forward<Token>(token));
  }

  // Sends every statement a batched attempt has queued and waits for the answers;
  // afterwards their results can be read. batch_failed if one of them failed.
  // Nothing queued: nothing is sent. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_flush(Token&& token) {
    return detail::start(shared(), detail::flush_work{}, std::forward<Token>(token));
  }

  // ---- LISTEN / NOTIFY (see notification.hpp) ----
  // As the blocking connection's listen() / unlisten(): outside any scope, and only
  // with pooling::none. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_listen(std::string channel, Token&& token) {
    return boost::asio::co_spawn(get_executor(), detail::listen_channel(shared(), std::move(channel), true),
                                 std::forward<Token>(token));
  }
  template <class Token>
  auto async_unlisten(std::string channel, Token&& token) {
    return boost::asio::co_spawn(get_executor(), detail::listen_channel(shared(), std::move(channel), false),
                                 std::forward<Token>(token));
  }
  [[nodiscard]] const std::vector<std::string>& channels() const { return session().channels; }
  // As the blocking wait_notification(): a notification that arrived already (kept
  // while other operations ran), else the first within `timeout`; nothing if none
  // came. A lost session is replaced by a new one that listens again, then the gap
  // is reported; after async_connect() too. It is an operation like any other: one
  // at a time per connection. Completion: void(std::exception_ptr, std::optional<notification>).
  template <class Token>
  auto async_wait_notification(std::chrono::milliseconds timeout, Token&& token) {
    return boost::asio::co_spawn(get_executor(), detail::wait_for_notification(shared(), timeout),
                                 std::forward<Token>(token));
  }

  // Cancels the round trip in flight, as an expired timeout does (see link.hpp and
  // the README's "Timeouts"): a connect is given up; a statement is cancelled by the
  // server (PQcancel), and the operation fails with query_canceled (the scope is
  // doomed, as by any failed statement), or completes normally if the answer was
  // already on its way. COMMIT's answer is never cancelled. No answer within
  // cancel_wait(): the connection is given up (connection_error; in_doubt_error if
  // COMMIT was out). Between round trips there is nothing to cancel. With Boost 1.77
  // or newer, an operation's cancellation slot does the same.
  void cancel() { session().cancel(); }

  // connection_options::network_timeout, changed: each later round trip that takes
  // longer is cancelled as by cancel(), and async_connect() is bounded by it (as
  // connect_timeout, unless the conninfo sets one). 0: no bound per round trip.
  // The server-side limits stay in transaction_options (statement_timeout, lock_timeout).
  void set_timeout(std::chrono::milliseconds t) {
    if (t.count() < 0) throw usage_error("set_timeout(): the timeout must not be negative");
    session().io->timeout = t;
  }
  [[nodiscard]] std::chrono::milliseconds timeout() const { return session().io->timeout; }
  // How long a cancelled round trip waits for the server's answers before the
  // connection is given up: 5 s by default, min(network_timeout, 1 s) with a
  // network_timeout (as the blocking connection).
  void set_cancel_wait(std::chrono::milliseconds t) {
    if (t.count() <= 0) throw usage_error("set_cancel_wait(): the wait must be positive");
    session().io->cancel_wait = t;
  }
  [[nodiscard]] std::chrono::milliseconds cancel_wait() const { return session().io->cancel_wait; }

  // Open scopes on this connection (0: autocommit).
  [[nodiscard]] std::size_t depth() const noexcept { return s_ ? s_->machine.depth() : 0; }
  [[nodiscard]] bool in_transaction() const noexcept { return depth() > 0; }

  // As on the blocking connection: after the outermost transaction commits (at
  // once outside any scope); dropped if the scope that registered it rolls back.
  template <class F>
  void on_commit(F&& fn) {
    session().idle_machine("on_commit()").on_commit(pqscope::callback<void()>(std::forward<F>(fn)));
  }
  template <class F>
  void on_rollback(F&& fn) {
    session().idle_machine("on_rollback()").on_rollback(pqscope::callback<void()>(std::forward<F>(fn)));
  }
  // SET LOCAL for the current transaction (sent with the next statement).
  void set_local(std::string_view name, std::string_view value) {
    session().idle_machine("set_local()").set_local(name, value);
  }

  [[nodiscard]] std::string application_name() const { return s_ ? s_->io->application_name() : std::string(); }
  [[nodiscard]] const connection_stats& stats() const { return session().machine.stats(); }
  // With connection_options::commit_positions: where the last committed outermost
  // scope's COMMIT ended in the WAL, as on pqscope::connection.
  [[nodiscard]] wal_position last_commit_position() const { return session().machine.last_commit_position(); }
  [[nodiscard]] PGconn* native_handle() const { return s_ ? s_->io->native_handle() : nullptr; }
  [[nodiscard]] bool is_open() const noexcept { return s_ && s_->io->usable(); }
  // The conninfo with its passwords replaced by *** (the session keeps the original).
  [[nodiscard]] const std::string& conninfo() const noexcept {
    static const std::string none;
    return s_ ? s_->conninfo_shown : none;
  }
  [[nodiscard]] const connection_options& options() const noexcept {
    static const connection_options none;
    return s_ ? s_->options : none;
  }

 private:
  friend class transaction;
  friend struct detail::connection_access;

  detail::session& session() const {
    if (!s_) throw usage_error("this connection was moved from");
    return *s_;
  }
  std::shared_ptr<detail::session> shared() const {
    session();
    return s_;
  }

  void close() noexcept {
    if (s_) s_->close();
  }

  template <class Stream>
  static boost::asio::awaitable<Stream> open_copy(std::shared_ptr<detail::session> s, query q, char dir) {
    std::shared_ptr<detail::copy_state> st =
        co_await detail::start(s, detail::copy_start_work{std::move(q), dir}, boost::asio::use_awaitable);
    if (st->in != (dir == 'i'))  // the state, dropped, ends that COPY in the background
      throw usage_error(std::string(dir == 'i' ? "async_copy_in()" : "async_copy_out()") +
                        ": the server started a COPY in the other direction; use " +
                        (dir == 'i' ? "async_copy_out()" : "async_copy_in()"));
    co_return Stream(std::move(st));
  }

  std::shared_ptr<detail::session> s_;
};

namespace detail {
struct connection_access {
  static std::shared_ptr<session> of(const connection& c) { return c.shared(); }
};
}  // namespace detail

}  // namespace pqscope::asio
// #include <pqscope/asio/copy.hpp> (inlined above)
// #include <pqscope/asio/transaction.hpp>
// Scopes on an asynchronous connection: the transaction object and async_atomic().
// As in transaction.hpp, these are faces of the scope machine: the outermost scope
// is a transaction, a nested one a savepoint, and nesting is tracked on the
// connection, so coroutines nest scopes without knowing about each other.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/options.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/transaction.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/scope_machine.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/connection.hpp> (inlined above)

namespace pqscope::asio {

namespace detail {
struct scope_access;
}

// One scope, opened by the constructor (nothing is sent: BEGIN or SAVEPOINT rides
// with the next statement). End it with co_await async_commit() or async_rollback().
//
// A destructor cannot await: a scope object destroyed open (an exception past it,
// a coroutine destroyed mid-scope) is rolled back without being awaited. A nested
// scope ends at once (its ROLLBACK TO rides with the next statement, as on the
// blocking connection); the outermost one's ROLLBACK is sent at once, in the
// background, and the connection's next operation waits for it, so the session is
// never left idle in a transaction. async_atomic() awaits its rollbacks.
class transaction {
 public:
  explicit transaction(connection& c, const transaction_options& options = {})
      : transaction(checked(detail::connection_access::of(c), options), options, {}) {}
  transaction(transaction&& other) noexcept
      // NOLINTNEXTLINE(performance-move-constructor-init): kept, so that a moved-from scope still reports its misuse through the handler
      : s_(other.s_),
        id_(std::exchange(other.id_, 0)),
        outermost_(other.outermost_),
        record_(std::exchange(other.record_, moved_from())) {}
  transaction& operator=(transaction&&) = delete;
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  ~transaction() {
    if (record_ && record_->st == detail::scope_record::state::open && s_ && s_->machine.index_of(id_))
      s_->abandon(id_);
  }

  // Outermost: COMMIT, then the on_commit callbacks. Nested: RELEASE SAVEPOINT (sent
  // with the next statement). A doomed scope rolls back and fails with
  // transaction_aborted. Either way the scope has ended when the operation
  // completes, except for usage_error. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_commit(Token&& token) {
    return end(true, std::forward<Token>(token));
  }
  // Outermost: ROLLBACK, awaited. Nested: ROLLBACK TO SAVEPOINT, sent with the next statement.
  template <class Token>
  auto async_rollback(Token&& token) {
    return end(false, std::forward<Token>(token));
  }

  [[nodiscard]] bool is_outermost() const noexcept { return outermost_; }

 private:
  friend struct detail::scope_access;
  using state = detail::scope_record::state;

  transaction(std::shared_ptr<detail::session> s, const transaction_options& options,
              pqscope::detail::attempt_info attempt)
      : s_(std::move(s)), record_(std::make_shared<detail::scope_record>()) {
    id_ = s_->idle_machine("opening a scope").open(options, attempt);
    outermost_ = s_->machine.depth() == 1;
  }

  static std::shared_ptr<detail::session> checked(std::shared_ptr<detail::session> s,
                                                  const transaction_options& options) {
    if (options.retries != 0 || options.batch || options.replica_wait.count() != 0)
      throw usage_error(std::string("transaction_options::") +
                        (options.batch ? "batch" : options.retries != 0 ? "retries" : "replica_wait") +
                        " may run a function again, which a transaction object cannot do: use "
                        "pqscope::asio::async_atomic");
    return s;
  }

  static std::shared_ptr<detail::scope_record> moved_from() {
    auto r = std::make_shared<detail::scope_record>();
    r->st = state::moved_from;
    return r;
  }

  // The checks of transaction::finish(), then the end itself.
  struct end_checked : detail::end_work {
    using end_work::end_work;
    bool start(detail::session& s) {
      const char* what = commit ? "async_commit()" : "async_rollback()";
      switch (record->st) {
        case state::open: break;
        case state::ending: throw usage_error(std::string(what) + ": this scope is already being ended");
        case state::committed: throw usage_error(std::string(what) + ": this scope has already been committed");
        case state::rolled_back: throw usage_error(std::string(what) + ": this scope has already been rolled back");
        case state::moved_from: throw usage_error(std::string(what) + ": this transaction object was moved from");
      }
      if (!s.machine.index_of(id)) {
        record->st = state::rolled_back;
        throw usage_error(std::string(what) + ": this scope was already rolled back, because a scope enclosing it "
                                              "ended first");
      }
      return end_work::start(s);
    }
    void settle(detail::session& s) {
      if (record->st == state::ending) end_work::settle(s);
    }
  };

  template <class Token>
  auto end(bool commit, Token&& token) {
    return detail::start(s_, end_checked{id_, commit, record_}, std::forward<Token>(token));
  }

  std::shared_ptr<detail::session> s_;
  std::uint64_t id_ = 0;
  bool outermost_ = false;
  std::shared_ptr<detail::scope_record> record_;
};

namespace detail {

struct scope_access {
  static transaction open(std::shared_ptr<session> s, const transaction_options& o, pqscope::detail::attempt_info a) {
    return transaction(std::move(s), o, a);
  }
  static bool still_open(const transaction& tx) {
    return tx.record_->st == scope_record::state::open && tx.s_->machine.index_of(tx.id_).has_value();
  }
  static std::uint64_t id(const transaction& tx) { return tx.id_; }
  static void mark_rolled_back(transaction& tx) { tx.record_->st = scope_record::state::rolled_back; }
};

template <class A>
struct awaitable_parts {
  static_assert(!std::is_same_v<A, A>,
                "pqscope::asio::async_atomic: the function must return boost::asio::awaitable<T> "
                "(a coroutine); a plain function belongs in pqscope::atomic");
};
template <class T, class Ex>
struct awaitable_parts<boost::asio::awaitable<T, Ex>> {
  using value_type = T;
  using executor_type = Ex;
};

template <class Fn>
using returned_awaitable_t = std::decay_t<pqscope::detail::call_result_t<Fn, connection>>;

}  // namespace detail

// co_await async_atomic(c, options, fn): runs fn in a scope, commits when its
// awaitable returns (and returns its value), rolls back and rethrows when it
// throws; the rollback is awaited before the exception leaves. fn takes the
// connection (connection&) or nothing, and returns boost::asio::awaitable<T>.
// Every option means what it means for pqscope::atomic(): retries re-run fn after
// serialization_failure or deadlock_detected (outermost only), after a pause on an
// Asio timer; batch queues statements (see connection::async_execute) and runs fn
// again unbatched if a send fails. fn is moved into the coroutine; the connection
// must outlive it. Nesting: call async_atomic inside fn.
template <class Fn>
auto async_atomic(connection& c, transaction_options options, Fn fn)
    -> boost::asio::awaitable<typename detail::awaitable_parts<detail::returned_awaitable_t<Fn>>::value_type,
                              typename detail::awaitable_parts<detail::returned_awaitable_t<Fn>>::executor_type> {
  using parts = detail::awaitable_parts<detail::returned_awaitable_t<Fn>>;
  using T = typename parts::value_type;
  using Ex = typename parts::executor_type;
  const boost::asio::use_awaitable_t<Ex> awaited{};

  if (options.retries < 0) throw usage_error("transaction_options::retries must not be negative");
  if (options.replica_wait.count() < 0) throw usage_error("transaction_options::replica_wait must not be negative");
  transaction_options scope = options;
  scope.retries = 0;
  scope.batch = false;
  scope.replica_wait = std::chrono::milliseconds{0};
  const bool outermost = c.depth() == 0;
  const std::shared_ptr<detail::session> s = detail::connection_access::of(c);
  bool replay = false;  // the previous attempt was voided: run unbatched, where errors surface in place
  int reruns = 0;       // attempts run again because the session lost a prepared statement
  pqscope::detail::replica_waiter waiter;
  std::chrono::milliseconds behind{0};  // the standby was behind: pause this long, then run again
  std::size_t number = 0;
  for (int attempt = 0;; ++number) {
    const bool batched = outermost && options.batch && !replay;
    if (replay) s->machine.count_replay();
    replay = false;
    {
      transaction tx = detail::scope_access::open(s, scope, {batched, number});
      std::exception_ptr failure;
      try {
        if constexpr (std::is_void_v<T>) {
          co_await pqscope::detail::call_with_optional_connection(fn, c);
          co_await tx.async_commit(awaited);
          co_return;
        } else {
          T value = co_await pqscope::detail::call_with_optional_connection(fn, c);
          co_await tx.async_commit(awaited);
          co_return value;
        }
      } catch (...) {
        failure = std::current_exception();
      }
      // The attempt failed: what fn left open is rolled back now, and awaited.
      const bool was_open = detail::scope_access::still_open(tx);
      if (was_open) {
        detail::scope_access::mark_rolled_back(tx);
        co_await detail::start(s, detail::abandon_work{detail::scope_access::id(tx)}, awaited);
      }
      if (batched) {
        if (was_open && !s->machine.voided()) s->machine.check_usable();  // connection_error replaces the failure
        if (const auto& failed = s->machine.voided()) {
          // Whatever fn saw or caught, a failed send voids the attempt.
          if (failed->cause) {
            behind = waiter.next(options, failed->cause);
            if (behind.count() == 0) std::rethrow_exception(failed->cause);
          } else if (!((failed->sqlstate == "40001" || failed->sqlstate == "40P01") && attempt < options.retries)) {
            replay = true;
            continue;
          }
        } else if (outermost && (behind = waiter.next(options, failure)).count() > 0) {
          // paused below
        } else if (!outermost || attempt >= options.retries || !pqscope::detail::is_retryable(failure)) {
          std::rethrow_exception(failure);
        }
      } else if (outermost && (behind = waiter.next(options, failure)).count() > 0) {
        // paused below
      } else if (outermost && reruns < pqscope::detail::max_reruns && s->machine.take_lost_statement()) {
        ++reruns;  // prepared anew on the next attempt, at once
        continue;
      } else if (!outermost || attempt >= options.retries || !pqscope::detail::is_retryable(failure)) {
        std::rethrow_exception(failure);
      }
    }
    boost::asio::basic_waitable_timer<std::chrono::steady_clock, boost::asio::wait_traits<std::chrono::steady_clock>,
                                      Ex>
        pause(co_await boost::asio::this_coro::executor);
    const bool waiting = behind.count() > 0;
    pause.expires_after(waiting ? std::exchange(behind, std::chrono::milliseconds{0})
                                : pqscope::detail::retry_delay(options, attempt));
    co_await pause.async_wait(awaited);
    if (!waiting) ++attempt;
  }
}

template <class Fn>
auto async_atomic(connection& c, Fn fn) {
  return async_atomic(c, transaction_options{}, std::move(fn));
}

}  // namespace pqscope::asio
// #include <pqscope/asio/pool.hpp>
// pqscope::asio::pool: a bounded pool of asynchronous connections to PostgreSQL
// itself, with the blocking pool's meaning (pool.hpp) where the two overlap: the
// same pool_options, pool_stats and pool_timeout, the same rule for what goes back.
//
//   pqscope::asio::pool p{io.get_executor(), "host=db dbname=app", {.max_size = 16}};
//   {
//     pqscope::asio::lease c = co_await p.async_acquire(use_awaitable);  // waits up to acquire_timeout
//     co_await pqscope::asio::async_atomic(*c, [&]() -> awaitable<void> { ... });
//   }                                                                    // back to the pool
//
// Waiters are served first come, first served. A connection goes back to the pool
// only when nothing of the lease's work can reach the next holder (see
// pool_state::returned in impl/pool.ipp); anything else is closed, which makes the
// server roll back. No background task: idle and expired connections are closed
// when the pool next looks at them (an acquire, a return), as in the blocking pool.
//
// Threads: the pool's own state sits behind a mutex, and no handler is ever called
// under it, nor from inside the call that started the operation: every completion
// is posted to the handler's executor. Each connection the pool opens gets a strand
// of its own (of the pool's executor): what the pool does with it between leases
// (connect, health check, waiting out a rollback) runs there. A lease holder uses
// the connection from its own executor, one operation at a time, as any connection.

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/version.hpp>
#if BOOST_ASIO_VERSION >= 101900
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/cancellation_type.hpp>
#endif

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/options.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/pool.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/process.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/connection.hpp> (inlined above)

namespace pqscope::asio {

class lease;
class pool;

namespace detail {

using pool_clock = std::chrono::steady_clock;

struct pool_entry {
  // On the heap so that a connection& taken from a lease survives moving the lease.
  std::unique_ptr<connection> conn;
  pool_clock::time_point created;
  pool_clock::time_point last_used;
};

// One async_acquire() or async_shutdown() that has not completed. The queue holds
// it; a cancellation slot only points at it (weak_ptr).
class pool_waiter {
 public:
  pool_waiter() = default;
  pool_waiter(const pool_waiter&) = delete;
  pool_waiter& operator=(const pool_waiter&) = delete;
  pool_waiter(pool_waiter&&) = delete;
  pool_waiter& operator=(pool_waiter&&) = delete;
  virtual ~pool_waiter() = default;

  // Posts the outcome to the handler's executor (never runs it here); called once,
  // never under the pool's lock. `l` is ignored by async_shutdown's waiters.
  virtual void deliver(std::exception_ptr e, lease l) = 0;

  // How it ends: decided under the lock, delivered after it (carry_out).
  enum class ending { none, served, failed, timed_out, canceled, closed, drained };

  pool_clock::time_point deadline;
  std::list<std::shared_ptr<pool_waiter>>* list = nullptr;  // the queue it waits in, if any
  std::list<std::shared_ptr<pool_waiter>>::iterator at;     // its place there
  ending end = ending::none;
  bool shutdown = false;     // an async_shutdown(), not an acquire
  std::exception_ptr error;  // failed: the connect's error
  pool_entry entry;          // served: the connection
};

using waiter_list = std::list<std::shared_ptr<pool_waiter>>;

// What the lease, the pool object and the operations in flight share: the pool
// outlives its object while a lease or an operation still needs it.
class pool_state : public std::enable_shared_from_this<pool_state> {
 public:
  pool_state(const boost::asio::any_io_executor& ex, std::string conninfo, const pool_options& options,
             connection_options connection);
  pool_state(const pool_state&) = delete;
  pool_state& operator=(const pool_state&) = delete;
  pool_state(pool_state&&) = delete;
  pool_state& operator=(pool_state&&) = delete;
  ~pool_state() = default;

  // async_acquire(): a connection now (posted), or a place at the end of the queue.
  void acquire(const std::shared_ptr<pool_waiter>& w);
  // async_shutdown(): close(), then completes once every connection has been closed.
  void shutdown(const std::shared_ptr<pool_waiter>& w);
  // A cancellation slot asked: the waiter leaves the queue (if it is still there).
  void cancel(const std::weak_ptr<pool_waiter>& w) noexcept;
  // From a lease, on any thread; the rest happens on the connection's strand.
  void give_back(pool_entry e) noexcept;
  // Waiters fail, idle connections are closed, leases close theirs on return.
  void close() noexcept;

  [[nodiscard]] std::size_t size();
  [[nodiscard]] std::size_t idle();
  [[nodiscard]] std::size_t waiting();
  [[nodiscard]] pool_stats stats();

  const boost::asio::any_io_executor executor;
  const std::string conninfo;
  const pool_options opts;
  const connection_options conn_opts;  // for every connection the pool opens
  const pid_t pid = pqscope::detail::current_pid();

 private:
  struct effects;  // what a decision under the lock left to do after it

  [[nodiscard]] std::size_t pending() const noexcept { return connecting_ + checking_; }
  [[nodiscard]] bool needs_check(const pool_entry& e, pool_clock::time_point now) const noexcept;
  [[nodiscard]] bool expired(const pool_entry& e, pool_clock::time_point now) const noexcept;
  [[nodiscard]] bool may_connect(pool_clock::time_point now) const noexcept;

  // Under the lock.
  void dispatch(effects& fx, pool_clock::time_point now);
  void sweep(effects& fx, pool_clock::time_point now);
  void serve_head(effects& fx, pool_entry e);
  void fail_head(effects& fx, std::exception_ptr e);
  void expire_waiters(effects& fx, pool_clock::time_point now);
  void arm_timers(pool_clock::time_point now);
  void check_drained(effects& fx);

  // After the lock: completions posted, connections closed, connects and checks started.
  void carry_out(effects& fx) noexcept;
  void start_connect(unsigned round) noexcept;
  void start_check(pool_entry e) noexcept;

  // On a connection's strand.
  void connected(pool_entry e, std::exception_ptr failure, unsigned round);
  void checked(pool_entry e, bool healthy);
  void returned(pool_entry e);
  void take_back(pool_entry e);

  void on_deadline(std::uint64_t generation);
  void on_retry(std::uint64_t generation);

  std::mutex m_;
  waiter_list waiters_;               // acquires, oldest first
  waiter_list drain_;                 // async_shutdown() calls waiting for the last connection
  std::vector<pool_entry> idle_;      // most recently returned last
  std::size_t open_ = 0;              // idle + leased + being opened, checked or settled; never above max_size
  std::size_t connecting_ = 0;        // connects in flight
  std::size_t checking_ = 0;          // health checks in flight
  unsigned failures_ = 0;             // connects failed in a row (counted once per round of attempts)
  pool_clock::time_point retry_at_{};  // no connect before this while failures_ > 0
  std::string last_failure_;          // why the last connect failed
  bool closed_ = false;
  pool_stats stats_;
  boost::asio::steady_timer deadline_timer_;  // the first waiter that no connection is on its way to
  boost::asio::steady_timer retry_timer_;     // the next connect after a failure
  bool deadline_armed_ = false, retry_armed_ = false;
  pool_clock::time_point deadline_at_{};
  std::uint64_t deadline_generation_ = 0, retry_generation_ = 0;
};

template <class Handler>
using pool_handler_executor = boost::asio::associated_executor_t<Handler, boost::asio::any_io_executor>;

}  // namespace detail

// A connection borrowed from a pqscope::asio::pool, given back when the lease is
// destroyed or released. Move-only. An empty lease (default-constructed: what a
// failed acquire completes with, or moved from) holds nothing. Use the connection
// from one executor at a time, and give the lease back only when no operation of
// yours is running on it.
class lease {
 public:
  lease() noexcept = default;
  lease(lease&& other) noexcept;
  lease& operator=(lease&& other) noexcept;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  ~lease() { give_back(); }

  // usage_error when the lease holds no connection (released, moved from, empty).
  [[nodiscard]] connection& get();
  [[nodiscard]] connection& operator*() { return get(); }
  [[nodiscard]] connection* operator->() { return &get(); }

  // Gives the connection back now; using the lease afterwards is a usage_error, and
  // so is releasing it twice.
  void release();

 private:
  friend class detail::pool_state;
  enum class status { empty, active, released, moved_from };

  lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry) noexcept;

  void check() const;
  void give_back() noexcept;

  std::shared_ptr<detail::pool_state> state_;
  detail::pool_entry entry_;
  status status_ = status::empty;
};

namespace detail {

// An operation's handler, kept until its outcome is posted to the handler's executor.
template <class Handler, bool Shutdown>
class pool_waiter_for final : public pool_waiter {
 public:
  pool_waiter_for(Handler h, const boost::asio::any_io_executor& fallback)
      : work_(boost::asio::get_associated_executor(h, fallback)), handler_(std::move(h)) {}

  void deliver(std::exception_ptr e, lease l) override {
    auto ex = work_.get_executor();
    boost::asio::post(ex, [h = std::move(handler_), e = std::move(e), l = std::move(l)]() mutable {
#if BOOST_ASIO_VERSION >= 101900
      // The operation is over: a later cancellation must not reach the pool.
      boost::asio::get_associated_cancellation_slot(h).clear();
#endif
      if constexpr (Shutdown) {
        std::move(h)(std::move(e));
      } else {
        std::move(h)(std::move(e), std::move(l));
      }
    });
    work_.reset();
  }

#if BOOST_ASIO_VERSION >= 101900
  // Per-operation cancellation (Boost 1.77 and newer): a waiting operation leaves the
  // queue and completes with query_canceled. Installed before the waiter is queued,
  // from the starting thread, as Asio wants slots to be handled.
  static void connect_slot(const std::shared_ptr<pool_waiter_for>& self, const std::shared_ptr<pool_state>& state) {
    auto slot = boost::asio::get_associated_cancellation_slot(self->handler_);
    if (!slot.is_connected()) return;
    slot.assign([w = std::weak_ptr<pool_waiter>(self), s = std::weak_ptr<pool_state>(state)](
                    boost::asio::cancellation_type type) {
      if ((type & (boost::asio::cancellation_type::terminal | boost::asio::cancellation_type::partial |
                   boost::asio::cancellation_type::total)) == boost::asio::cancellation_type::none)
        return;
      if (auto p = s.lock()) p->cancel(w);
    });
  }
#endif

 private:
  // Keeps the handler's executor from running out of work while the operation waits.
  boost::asio::executor_work_guard<pool_handler_executor<Handler>> work_;
  Handler handler_;
};

template <bool Shutdown>
struct pool_initiation {
  template <class Handler>
  void operator()(Handler&& handler, const std::shared_ptr<pool_state>& state) const {
    using waiter = pool_waiter_for<std::decay_t<Handler>, Shutdown>;
    auto w = std::make_shared<waiter>(std::forward<Handler>(handler), state->executor);
#if BOOST_ASIO_VERSION >= 101900
    waiter::connect_slot(w, state);
#endif
    if constexpr (Shutdown)
      state->shutdown(std::move(w));
    else
      state->acquire(std::move(w));
  }
};

}  // namespace detail

// A bounded pool for talking to PostgreSQL directly (behind PgBouncer, give each
// coroutine its own pqscope::asio::connection: PgBouncer is the pool). The
// executor runs the pool's timers and the connections it opens (a strand of it
// each); the io_context behind it must outlive the pool and every lease.
class pool {
 public:
  using executor_type = boost::asio::any_io_executor;

  // No connection is opened here; a malformed conninfo, max_size == 0 or a negative
  // duration is a usage_error at once.
  pool(const executor_type& ex, std::string conninfo, pool_options options = {}, connection_options connection = {});
  template <class ExecutionContext,
            std::enable_if_t<std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  pool(ExecutionContext& ctx, std::string conninfo, pool_options options = {}, connection_options connection = {})
      : pool(executor_type(ctx.get_executor()), std::move(conninfo), options, std::move(connection)) {}
  // Leases point to the pool's state, not to the object.
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;
  // close(): waiters fail, idle connections are closed, leases still out keep
  // working and their connections are closed when they come back.
  ~pool() { close(); }

  [[nodiscard]] executor_type get_executor() const { return state_->executor; }

  // A connection: an idle one (checked with a round trip first if it sat longer
  // than health_check_after), or a new one while fewer than max_size are open;
  // otherwise waits, first come first served, up to acquire_timeout, then
  // pool_timeout (the wait for a connect already started on its behalf is bounded
  // by connect_timeout, as in the blocking pool). A failed connect fails the oldest
  // waiter with its connection_error; the next one is tried after a pause that
  // doubles with each failure in a row (50 ms up to 2 s), and only while someone
  // waits. usage_error once the pool is closed, and in a forked child. With Boost
  // 1.77 or newer a cancellation slot ends the wait: query_canceled.
  // Completion: void(std::exception_ptr, lease).
  template <class Token>
  auto async_acquire(Token&& token) {
    return boost::asio::async_initiate<Token, void(std::exception_ptr, lease)>(detail::pool_initiation<false>{},
                                                                                 token, state_);
  }

  // close(), then completes once every connection the pool opened is closed: the
  // last lease came back, the last connect or check ended. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_initiate<Token, void(std::exception_ptr)>(detail::pool_initiation<true>{}, token,
                                                                         state_);
  }

  // Stops the pool at once, without waiting: waiting acquires complete with
  // usage_error, idle connections are closed, later acquires fail with usage_error.
  void close() noexcept { state_->close(); }

  // Connections open or being opened, leased or idle.
  [[nodiscard]] std::size_t size() const { return state_->size(); }
  [[nodiscard]] std::size_t idle() const { return state_->idle(); }
  // Acquires waiting in the queue.
  [[nodiscard]] std::size_t waiting() const { return state_->waiting(); }
  [[nodiscard]] std::size_t max_size() const noexcept { return state_->opts.max_size; }
  [[nodiscard]] pool_stats stats() const { return state_->stats(); }

 private:
  std::shared_ptr<detail::pool_state> state_;
};

}  // namespace pqscope::asio

// #include <pqscope/asio/impl/pool.ipp>
// The bodies of asio/pool.hpp: the queue of waiters, connects with their pauses,
// health checks, and what happens to a connection that comes back. Header-only,
// like all of the asio front end: included at the end of asio/pool.hpp.
//
// Every decision is taken under the pool's lock by dispatch(), which only moves
// things between lists and counts; what it decided (completions to post,
// connections to close, connects and checks to start) is carried out after the
// lock is let go (carry_out), so that no handler, no libpq call and no close ever
// runs under it.
//
// First come, first served: waiters queue in arrival order; a connection that
// becomes ready (returned, connected, checked) goes to the oldest. The first
// pending() waiters are "covered": a connect or a check is on its way for each,
// and, as in the blocking pool, acquire_timeout does not cut short a wait for a
// connect already started (connect_timeout bounds it). All waiters have the same
// timeout, so deadlines grow along the queue: one timer, for the first waiter not
// covered, is all the queue needs.

// #include <pqscope/asio/pool.hpp> (inlined above)

#include <libpq-fe.h>

#include <algorithm>
#include <iterator>

// #include <pqscope/detail/libpq_connect.hpp> (in <pqscope/pqscope.hpp>)

namespace pqscope::asio::detail {

// A failed connect is tried again after 50 ms, then 100, 200, ... up to 2 s, and
// only while someone waits: a server that is down sees one attempt per pause,
// not one per waiter.
inline std::chrono::milliseconds pool_pause(unsigned failures) {
  const unsigned doublings = std::min(failures == 0 ? 0U : failures - 1, 6U);
  return std::min(std::chrono::milliseconds(50) * (1U << doublings), std::chrono::milliseconds(2000));
}

// Clean enough for the next lease: nothing of this lease's work can reach it. On
// the connection's strand (a background rollback writes what is read here).
inline bool pool_reusable(const connection& c) {
  PGconn* h = c.native_handle();
  if (h == nullptr || c.depth() != 0 || !c.is_open()) return false;
  const std::shared_ptr<session> s = connection_access::of(c);
  return !s->user_busy && !s->background && s->machine.opened_by_this_process() && PQstatus(h) == CONNECTION_OK &&
         PQtransactionStatus(h) == PQTRANS_IDLE &&
         // an exchange cut short leaves pipeline mode on
         PQpipelineStatus(h) == PQ_PIPELINE_OFF;
}

struct pool_state::effects {
  waiter_list done;               // their ending is set: delivered after the lock
  std::vector<pool_entry> close;  // closed after the lock
  std::vector<pool_entry> check;  // idle connections to check before a lease
  std::size_t connects = 0;       // connects to start
  unsigned round = 0;             // failures_ when they were decided
  std::string timeout_message;    // for the waiters that timed out
};

inline pool_state::pool_state(const boost::asio::any_io_executor& ex, std::string info, const pool_options& options,
                              connection_options connection)
    : executor(ex),
      conninfo(std::move(info)),
      opts(options),
      conn_opts(std::move(connection)),
      deadline_timer_(ex),
      retry_timer_(ex) {
  idle_.reserve(std::min<std::size_t>(opts.max_size, 64));
}

inline bool pool_state::needs_check(const pool_entry& e, pool_clock::time_point now) const noexcept {
  return opts.health_check_after.count() == 0 || now - e.last_used > opts.health_check_after;
}

inline bool pool_state::expired(const pool_entry& e, pool_clock::time_point now) const noexcept {
  return opts.max_lifetime.count() > 0 && now - e.created >= opts.max_lifetime;
}

inline bool pool_state::may_connect(pool_clock::time_point now) const noexcept {
  // After a failure: one attempt at a time, and not before its pause is over.
  return failures_ == 0 || (connecting_ == 0 && now >= retry_at_);
}

// ---- under the lock ----------------------------------------------------------------

inline void pool_state::dispatch(effects& fx, pool_clock::time_point now) {
  if (closed_) return;
  sweep(fx, now);
  while (waiters_.size() > pending() && !idle_.empty()) {
    pool_entry e = std::move(idle_.back());
    idle_.pop_back();
    if (needs_check(e, now)) {
      ++checking_;
      fx.check.push_back(std::move(e));
    } else {
      ++stats_.reused;
      serve_head(fx, std::move(e));
    }
  }
  fx.round = failures_;
  while (waiters_.size() > pending() && open_ < opts.max_size && may_connect(now)) {
    ++open_;
    ++connecting_;
    ++fx.connects;
  }
  arm_timers(now);
}

inline void pool_state::sweep(effects& fx, pool_clock::time_point now) {
  for (auto it = idle_.begin(); it != idle_.end();) {
    const bool idle_too_long = opts.idle_timeout.count() > 0 && now - it->last_used >= opts.idle_timeout;
    if (idle_too_long || expired(*it, now)) {
      fx.close.push_back(std::move(*it));
      it = idle_.erase(it);
      --open_;
      ++stats_.closed_expired;
    } else {
      ++it;
    }
  }
}

inline void pool_state::serve_head(effects& fx, pool_entry e) {
  pool_waiter& w = *waiters_.front();
  w.entry = std::move(e);
  w.end = pool_waiter::ending::served;
  w.list = nullptr;
  fx.done.splice(fx.done.end(), waiters_, waiters_.begin());
}

inline void pool_state::fail_head(effects& fx, std::exception_ptr e) {
  pool_waiter& w = *waiters_.front();
  w.error = std::move(e);
  w.end = pool_waiter::ending::failed;
  w.list = nullptr;
  fx.done.splice(fx.done.end(), waiters_, waiters_.begin());
}

inline void pool_state::expire_waiters(effects& fx, pool_clock::time_point now) {
  if (waiters_.size() <= pending()) return;
  auto it = std::next(waiters_.begin(), static_cast<std::ptrdiff_t>(pending()));
  while (it != waiters_.end() && (*it)->deadline <= now) {
    const auto next = std::next(it);
    (*it)->end = pool_waiter::ending::timed_out;
    (*it)->list = nullptr;
    ++stats_.timeouts;
    fx.done.splice(fx.done.end(), waiters_, it);
    it = next;
  }
  if (fx.timeout_message.empty() && !fx.done.empty()) {
    fx.timeout_message = "no connection came free within " + std::to_string(opts.acquire_timeout.count()) +
                         " ms (max_size " + std::to_string(opts.max_size) + ", all leased)";
    if (failures_ > 0) fx.timeout_message += "; the last attempt to connect failed: " + last_failure_;
  }
}

inline void pool_state::arm_timers(pool_clock::time_point now) {
  // The first waiter no connect or check is on its way to is the next to time out.
  const pool_waiter* first = nullptr;
  if (waiters_.size() > pending()) first = std::next(waiters_.begin(), static_cast<std::ptrdiff_t>(pending()))->get();
  if (first != nullptr && (!deadline_armed_ || first->deadline < deadline_at_)) {
    deadline_armed_ = true;
    deadline_at_ = first->deadline;
    deadline_timer_.expires_at(deadline_at_);
    deadline_timer_.async_wait([s = weak_from_this(), g = ++deadline_generation_](const error_code&) {
      if (auto p = s.lock()) p->on_deadline(g);
    });
  } else if (first == nullptr && deadline_armed_) {
    // Nobody can time out: a pending wait would keep io_context::run() busy for nothing.
    deadline_armed_ = false;
    ++deadline_generation_;
    deadline_timer_.cancel();
  }
  const bool want_retry = failures_ > 0 && first != nullptr && connecting_ == 0 && now < retry_at_;
  if (want_retry && !retry_armed_) {
    retry_armed_ = true;
    retry_timer_.expires_at(retry_at_);
    retry_timer_.async_wait([s = weak_from_this(), g = ++retry_generation_](const error_code&) {
      if (auto p = s.lock()) p->on_retry(g);
    });
  } else if (!want_retry && retry_armed_) {
    retry_armed_ = false;
    ++retry_generation_;
    retry_timer_.cancel();
  }
}

inline void pool_state::check_drained(effects& fx) {
  if (!closed_ || open_ != 0) return;
  for (auto& w : drain_) {
    w->end = pool_waiter::ending::drained;
    w->list = nullptr;
  }
  fx.done.splice(fx.done.end(), drain_);
}

// ---- after the lock ----------------------------------------------------------------

inline void pool_state::carry_out(effects& fx) noexcept {
  for (const std::shared_ptr<pool_waiter>& w : fx.done) {
    try {
      switch (w->end) {
        case pool_waiter::ending::served:
          w->deliver(nullptr, lease(shared_from_this(), std::move(w->entry)));
          break;
        case pool_waiter::ending::failed: w->deliver(w->error, lease()); break;
        case pool_waiter::ending::timed_out:
          w->deliver(std::make_exception_ptr(pool_timeout(fx.timeout_message)), lease());
          break;
        case pool_waiter::ending::canceled:
          w->deliver(std::make_exception_ptr(query_canceled(
                         w->shutdown ? "async_shutdown() was canceled while it waited for the last connection"
                                     : "async_acquire() was canceled while it waited for a connection",
                         "57014")),
                     lease());
          break;
        case pool_waiter::ending::closed:
          w->deliver(std::make_exception_ptr(usage_error("the pool was closed while async_acquire() waited")), lease());
          break;
        case pool_waiter::ending::drained: w->deliver(nullptr, lease()); break;
        case pool_waiter::ending::none: break;
      }
    } catch (...) {
      // Out of memory: the handler goes with its waiter; a connection in it goes back.
    }
  }
  fx.done.clear();
  fx.close.clear();
  for (pool_entry& e : fx.check) start_check(std::move(e));
  fx.check.clear();
  for (std::size_t k = 0; k < fx.connects; ++k) start_connect(fx.round);
  fx.connects = 0;
}

// A connect or a check that could not even start (out of memory): its place is given up.
inline void pool_state::start_connect(unsigned round) noexcept {
  try {
    auto strand = boost::asio::make_strand(executor);
    pool_entry e;
    e.conn = std::make_unique<connection>(boost::asio::any_io_executor(strand), conninfo, conn_opts);
    // Started on the connection's strand, where every step of it runs.
    boost::asio::post(strand, [self = shared_from_this(), e = std::move(e), round]() mutable {
      connection& c = *e.conn;
      try {
        c.async_connect([self, e = std::move(e), round](std::exception_ptr failure) mutable {
          self->connected(std::move(e), std::move(failure), round);
        });
      } catch (...) {
        self->connected(pool_entry{}, std::current_exception(), round);
      }
    });
  } catch (...) {
    connected(pool_entry{}, std::current_exception(), round);
  }
}

inline void pool_state::start_check(pool_entry e) noexcept {
  try {
    const auto strand = e.conn->get_executor();
    boost::asio::post(strand, [self = shared_from_this(), e = std::move(e)]() mutable {
      connection& c = *e.conn;
      try {
        // As the blocking pool: one round trip; a session the server ended, or that a
        // restart or an idle-session timeout killed, fails it.
        c.async_execute("SELECT 1", [self, e = std::move(e)](const std::exception_ptr& failure, const result&) mutable {
          const bool healthy = !failure && pool_reusable(*e.conn);
          self->checked(std::move(e), healthy);
        });
      } catch (...) {
        self->checked(pool_entry{}, false);
      }
    });
  } catch (...) {
    checked(pool_entry{}, false);
  }
}

// ---- on a connection's strand ------------------------------------------------------

inline void pool_state::connected(pool_entry e, std::exception_ptr failure, unsigned round) {
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    --connecting_;
    if (failure) {
      --open_;
      // Attempts started together fail together: one step of the pause for them all.
      failures_ = std::max(failures_, round + 1);
      retry_at_ = now + pool_pause(failures_);
      try {
        std::rethrow_exception(failure);
      } catch (const std::exception& x) {
        last_failure_ = x.what();
      } catch (...) {
        last_failure_ = "unknown failure";
      }
      // The oldest waiter learns why, as a blocking acquire() would; the others wait
      // for the next attempt (or their timeout).
      if (!closed_ && !waiters_.empty()) fail_head(fx, std::move(failure));
    } else {
      failures_ = 0;
      ++stats_.created;
      e.created = e.last_used = now;
      if (closed_) {
        --open_;
        fx.close.push_back(std::move(e));
      } else if (!waiters_.empty()) {
        serve_head(fx, std::move(e));
      } else {
        idle_.push_back(std::move(e));
      }
    }
    dispatch(fx, now);
    check_drained(fx);
  }
  carry_out(fx);
}

inline void pool_state::checked(pool_entry e, bool healthy) {
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    --checking_;
    if (!healthy || closed_) {
      if (!healthy) ++stats_.health_check_failures;
      --open_;
      fx.close.push_back(std::move(e));
    } else {
      e.last_used = now;
      if (!waiters_.empty()) {
        ++stats_.reused;
        serve_head(fx, std::move(e));
      } else {
        idle_.push_back(std::move(e));
      }
    }
    dispatch(fx, now);
    check_drained(fx);
  }
  carry_out(fx);
}

// What a returned connection needs before the next lease. A session that is idle
// with no scope open goes back as it is. A scope's ROLLBACK still on its way (its
// transaction object was destroyed open, before the lease: the connection sent the
// ROLLBACK at once, in the background) is waited for, and then the connection is
// as clean as any: waiting costs nothing, closing would cost the next lease a
// connect. Anything else is closed, as the blocking pool does, and the server rolls
// back what was open: a scope still open means a transaction object that outlives
// the lease still points at this session and could act on it later, from another
// thread, in the middle of the next holder's work; closed, the session is its alone.
inline void pool_state::returned(pool_entry e) {
  connection& c = *e.conn;
  const std::shared_ptr<session> s = connection_access::of(c);
  if (c.depth() == 0 && c.is_open() && s->background && !s->user_busy) {
    // Sends nothing: it waits at the connection's gate behind the rollback.
    c.async_flush([self = shared_from_this(), e = std::move(e)](const std::exception_ptr&) mutable {
      self->take_back(std::move(e));
    });
    return;
  }
  take_back(std::move(e));
}

inline void pool_state::take_back(pool_entry e) {
  const bool clean = pool_reusable(*e.conn);
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (!clean) ++stats_.closed_dirty;
    if (clean && !closed_ && !expired(e, now)) {
      e.last_used = now;
      idle_.push_back(std::move(e));
    } else {
      if (clean && !closed_) ++stats_.closed_expired;
      --open_;
      fx.close.push_back(std::move(e));
    }
    dispatch(fx, now);
    check_drained(fx);
  }
  carry_out(fx);
}

// ---- timers ------------------------------------------------------------------------

inline void pool_state::on_deadline(std::uint64_t generation) {
  effects fx;
  const auto now = pool_clock::now();
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (generation != deadline_generation_) return;  // re-armed or cancelled since
    deadline_armed_ = false;
    expire_waiters(fx, now);
    dispatch(fx, now);
  }
  carry_out(fx);
}

inline void pool_state::on_retry(std::uint64_t generation) {
  effects fx;
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (generation != retry_generation_) return;
    retry_armed_ = false;
    dispatch(fx, pool_clock::now());
  }
  carry_out(fx);
}

// ---- the public face ---------------------------------------------------------------

inline void pool_state::acquire(const std::shared_ptr<pool_waiter>& w) {
  if (pid != pqscope::detail::current_pid()) {
    // The connections belong to the parent; so does the lock, which a parent thread may hold.
    w->deliver(std::make_exception_ptr(usage_error(
                   "this pool was created by process " + std::to_string(pid) +
                   "; its connections belong to that process: create the pool after fork()")),
               lease());
    return;
  }
  effects fx;
  const auto now = pool_clock::now();
  bool refused = false;
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (closed_) {
      refused = true;
    } else {
      // A timeout too long to add (milliseconds::max() for "no bound") waits forever.
      const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(pool_clock::time_point::max() - now);
      w->deadline = opts.acquire_timeout < room ? now + opts.acquire_timeout : pool_clock::time_point::max();
      waiters_.push_back(w);
      w->list = &waiters_;
      w->at = std::prev(waiters_.end());
      dispatch(fx, now);
    }
  }
  if (refused) w->deliver(std::make_exception_ptr(usage_error("async_acquire(): the pool is closed")), lease());
  carry_out(fx);
}

inline void pool_state::shutdown(const std::shared_ptr<pool_waiter>& w) {
  close();
  effects fx;
  {
    const std::lock_guard<std::mutex> lock(m_);
    w->shutdown = true;
    drain_.push_back(w);
    w->list = &drain_;
    w->at = std::prev(drain_.end());
    check_drained(fx);
  }
  carry_out(fx);
}

inline void pool_state::cancel(const std::weak_ptr<pool_waiter>& weak) noexcept {
  const std::shared_ptr<pool_waiter> w = weak.lock();
  if (!w) return;
  effects fx;
  try {
    const std::lock_guard<std::mutex> lock(m_);
    if (w->list == nullptr) return;  // its outcome is on its way already
    fx.done.splice(fx.done.end(), *w->list, w->at);
    w->list = nullptr;
    w->end = pool_waiter::ending::canceled;
    dispatch(fx, pool_clock::now());  // a covered place may have come free, and the timer may move
  } catch (...) {
    // dispatch() ran out of memory: the waiter is out of the queue all the same
  }
  carry_out(fx);
}

inline void pool_state::give_back(pool_entry e) noexcept {
  // In a forked child the lock may be held by a parent thread that does not exist
  // here; the connection's destructor abandons the parent's session.
  if (pid != pqscope::detail::current_pid()) return;
  auto self = shared_from_this();
  try {
    const auto strand = e.conn->get_executor();
    auto back = [self, e = std::move(e)]() mutable { self->returned(std::move(e)); };
    boost::asio::post(strand, std::move(back));
  } catch (...) {
    // Out of memory: the connection is closed with the lambda that held it.
    const std::lock_guard<std::mutex> lock(m_);
    --open_;
    ++stats_.closed_dirty;
  }
}

inline void pool_state::close() noexcept {
  // In a forked child the lock may be held by a parent thread that does not exist
  // here; the idle connections are abandoned with the state.
  if (pid != pqscope::detail::current_pid()) return;
  effects fx;
  {
    const std::lock_guard<std::mutex> lock(m_);
    if (!closed_) {
      closed_ = true;
      for (auto& w : waiters_) {
        w->end = pool_waiter::ending::closed;
        w->list = nullptr;
      }
      fx.done.splice(fx.done.end(), waiters_);
      open_ -= idle_.size();
      fx.close.swap(idle_);
      deadline_armed_ = retry_armed_ = false;
      ++deadline_generation_;
      ++retry_generation_;
      try {
        deadline_timer_.cancel();
        retry_timer_.cancel();
      } catch (...) {
        // the generations above void whatever fires
      }
    }
    check_drained(fx);
  }
  carry_out(fx);
}

inline std::size_t pool_state::size() {
  const std::lock_guard<std::mutex> lock(m_);
  return open_;
}

inline std::size_t pool_state::idle() {
  const std::lock_guard<std::mutex> lock(m_);
  return idle_.size();
}

inline std::size_t pool_state::waiting() {
  const std::lock_guard<std::mutex> lock(m_);
  return waiters_.size();
}

inline pool_stats pool_state::stats() {
  const std::lock_guard<std::mutex> lock(m_);
  return stats_;
}

}  // namespace pqscope::asio::detail

namespace pqscope::asio {

inline lease::lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry) noexcept
    : state_(std::move(state)), entry_(std::move(entry)), status_(status::active) {}

inline lease::lease(lease&& other) noexcept
    : state_(std::move(other.state_)), entry_(std::move(other.entry_)), status_(other.status_) {
  other.entry_ = detail::pool_entry{};
  other.status_ = status::moved_from;
}

inline lease& lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    give_back();
    state_ = std::move(other.state_);
    entry_ = std::move(other.entry_);
    status_ = other.status_;
    other.entry_ = detail::pool_entry{};
    other.status_ = status::moved_from;
  }
  return *this;
}

inline connection& lease::get() {
  check();
  return *entry_.conn;
}

inline void lease::release() {
  check();
  give_back();
  status_ = status::released;
}

inline void lease::check() const {
  switch (status_) {
    case status::active: return;
    case status::released: throw usage_error("this lease was released; async_acquire() another");
    case status::moved_from: throw usage_error("this lease was moved from");
    case status::empty: break;
  }
  throw usage_error("this lease holds no connection (an acquire that failed completes with an empty one)");
}

inline void lease::give_back() noexcept {
  if (entry_.conn && state_) state_->give_back(std::move(entry_));
  entry_ = detail::pool_entry{};
  state_.reset();
}

inline pool::pool(const executor_type& ex, std::string conninfo, pool_options options, connection_options connection) {
  pqscope::detail::check_conninfo(conninfo);
  if (options.max_size == 0) throw usage_error("pool_options::max_size must be at least 1");
  if (options.acquire_timeout.count() < 0 || options.idle_timeout.count() < 0 || options.max_lifetime.count() < 0 ||
      options.health_check_after.count() < 0)
    throw usage_error("pool_options: durations must not be negative");
  state_ = std::make_shared<detail::pool_state>(ex, std::move(conninfo), options, std::move(connection));
}

}  // namespace pqscope::asio
// #include <pqscope/asio/replica_set.hpp>
// pqscope::asio::replica_set: pqscope::replica_set (replica_set.hpp) on Asio pools,
// from coroutines. Writes go to the primary, reads to a standby that has replayed
// what the caller must see (read-your-writes).
//
//   pqscope::asio::replica_set db{io.get_executor(), "host=db1 dbname=app", {"host=db2 dbname=app"}};
//   pqscope::wal_position seen;   // carry it along: a cookie, a header, a job's payload
//   co_await db.async_write(seen, [&](pqscope::asio::connection& c) -> awaitable<void> { ... });
//   long n = co_await db.async_read(seen, [&](pqscope::asio::connection& c) -> awaitable<long> { ... });
//
// The same routing as the blocking replica set (detail/replica_router.hpp, shared
// by both): the same replica_set_options, the same stats, the same order of tries.
// One pqscope::asio::pool per node, all on the replica set's executor; pool_options
// are the blocking pool's, so replica_set_options::pool serves both kinds.
//
// A read's function may run more than once, on several nodes: keep what it does
// outside the database idempotent. The replica set, and the `seen` given to
// async_write(), must outlive the awaitables they return (co_await them at once).
// Any number of coroutines, on any threads, may share one replica set: the pools
// and the routing state are thread-safe, the rest does not change.

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>

// #include <pqscope/errors.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/options.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/pool.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/replica_set.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/wal_position.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/detail/replica_router.hpp> (in <pqscope/pqscope.hpp>)
// #include <pqscope/asio/connection.hpp> (inlined above)
// #include <pqscope/asio/pool.hpp> (inlined above)
// #include <pqscope/asio/transaction.hpp> (inlined above)

namespace pqscope::asio {

namespace detail {
template <class Fn>
using atomic_value_t = typename awaitable_parts<returned_awaitable_t<Fn>>::value_type;
template <class Fn>
using atomic_executor_t = typename awaitable_parts<returned_awaitable_t<Fn>>::executor_type;
}  // namespace detail

class replica_set {
 public:
  using executor_type = boost::asio::any_io_executor;

  // No connection is opened here. standbys may be empty: every read goes to the
  // primary. A negative replica_wait or recheck_after is a usage_error.
  replica_set(const executor_type& ex, std::string primary, std::vector<std::string> standbys,
              replica_set_options options = {});
  template <class ExecutionContext,
            std::enable_if_t<std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>, int> = 0>
  replica_set(ExecutionContext& ctx, std::string primary, std::vector<std::string> standbys,
              replica_set_options options = {})
      : replica_set(executor_type(ctx.get_executor()), std::move(primary), std::move(standbys), std::move(options)) {}
  // Pools and routing state belong to this object: awaitables in flight point to it.
  replica_set(const replica_set&) = delete;
  replica_set& operator=(const replica_set&) = delete;
  replica_set(replica_set&&) = delete;
  replica_set& operator=(replica_set&&) = delete;
  ~replica_set() = default;  // each pool's destructor closes it

  [[nodiscard]] executor_type get_executor() const { return ex_; }

  // co_await async_atomic(primary, options, fn) on a lease of the primary's pool; the
  // commit's WAL position is merged into `seen` (which must outlive the awaitable).
  // fn as for async_atomic: takes connection& or nothing, returns awaitable<T>.
  template <class Fn>
  auto async_write(wal_position& seen, Fn fn, transaction_options options = {}) {
    return write_to(&seen, std::move(fn), options);
  }
  template <class Fn>
  auto async_write(Fn fn, transaction_options options = {}) {
    return write_to(nullptr, std::move(fn), options);
  }

  // A read-only async_atomic(standby, options, fn) on a standby that has replayed
  // `seen` (merged with options.at_least), or on the primary: the blocking read()'s
  // order of tries (see replica_set.hpp). fn may run on several nodes, one after the other.
  template <class Fn>
  auto async_read(wal_position seen, Fn fn, transaction_options options = {})
      -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>>;
  template <class Fn>
  auto async_read(Fn fn, transaction_options options = {}) {
    return async_read(wal_position{}, std::move(fn), options);
  }

  // Leases for work of one's own: the primary's, and a standby's (round robin,
  // passing over those found down; the primary's when none answers). No position
  // is checked: pass transaction_options::at_least to its scopes for that.
  // Completion: void(std::exception_ptr, lease).
  template <class Token>
  auto async_primary(Token&& token) {
    return primary_->async_acquire(std::forward<Token>(token));
  }
  template <class Token>
  auto async_standby(Token&& token) {
    return boost::asio::co_spawn(ex_, any_standby(), std::forward<Token>(token));
  }

  // Closes every pool (see pool::close()) now, without waiting.
  void close() noexcept;
  // close(), then completes once every pool has closed every connection it opened
  // (pool::async_shutdown of each). Completion: void(std::exception_ptr).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::co_spawn(ex_, shutdown_all(pools()), std::forward<Token>(token));
  }

  [[nodiscard]] std::size_t standbys() const noexcept { return standbys_.size(); }
  [[nodiscard]] pool& primary_pool() noexcept { return *primary_; }
  [[nodiscard]] pool& standby_pool(std::size_t i) { return *standbys_.at(i); }
  [[nodiscard]] replica_set_stats stats() const { return router_.stats(); }

 private:
  template <class Fn>
  auto write_to(wal_position* seen, Fn fn, transaction_options options)
      -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>>;

  // Leases standby i; nothing when it cannot connect (it is marked down) or its
  // pool is busy past acquire_timeout.
  template <class Ex>
  boost::asio::awaitable<std::optional<lease>, Ex> lease_standby(std::size_t i);

  // One try of a read: its value, or nothing (down, behind, failing under it: `route` marks it).
  template <class Stored, class Ex, class Call>
  boost::asio::awaitable<std::optional<Stored>, Ex> try_standby(const pqscope::detail::read_route::attempt& a,
                                                                  Call& call, pqscope::detail::read_route& route);

  boost::asio::awaitable<lease> any_standby();
  [[nodiscard]] std::vector<std::shared_ptr<pool>> pools() const;
  // Owns the pools it waits for: the replica set may be gone before they drain.
  static boost::asio::awaitable<void> shutdown_all(std::vector<std::shared_ptr<pool>> pools);
  static replica_set_options checked(replica_set_options o);

  executor_type ex_;
  replica_set_options options_;
  std::shared_ptr<pool> primary_;
  std::vector<std::shared_ptr<pool>> standbys_;
  pqscope::detail::replica_router router_;
};

template <class Fn>
auto replica_set::write_to(wal_position* seen, Fn fn, transaction_options options)
    -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>> {
  using T = detail::atomic_value_t<Fn>;
  using Ex = detail::atomic_executor_t<Fn>;
  lease l = co_await primary_->async_acquire(boost::asio::use_awaitable_t<Ex>{});
  connection& c = *l;
  if constexpr (std::is_void_v<T>) {
    co_await async_atomic(c, options, std::move(fn));
    if (seen != nullptr) seen->merge(c.last_commit_position());
    router_.wrote();
  } else {
    T value = co_await async_atomic(c, options, std::move(fn));
    if (seen != nullptr) seen->merge(c.last_commit_position());
    router_.wrote();
    co_return value;
  }
}

template <class Ex>
boost::asio::awaitable<std::optional<lease>, Ex> replica_set::lease_standby(std::size_t i) {
  std::exception_ptr failure;
  try {
    co_return co_await standbys_[i]->async_acquire(boost::asio::use_awaitable_t<Ex>{});
  } catch (...) {
    failure = std::current_exception();  // sorted out below: no co_await in a handler
  }
  try {
    std::rethrow_exception(failure);
  } catch (const connection_error&) {
    router_.down(i);
  } catch (const pool_timeout&) {
    // busy, not down: the next one may have room
  }
  co_return std::nullopt;
}

template <class Stored, class Ex, class Call>
boost::asio::awaitable<std::optional<Stored>, Ex> replica_set::try_standby(
    const pqscope::detail::read_route::attempt& a, Call& call, pqscope::detail::read_route& route) {
  std::optional<lease> l = co_await lease_standby<Ex>(a.node);
  if (!l) co_return std::nullopt;
  connection& c = **l;
  std::exception_ptr failure;
  std::optional<Stored> value;
  try {
    if constexpr (std::is_same_v<Stored, pqscope::detail::no_value>) {
      co_await async_atomic(c, a.options, call);
      value.emplace();
    } else {
      value.emplace(co_await async_atomic(c, a.options, call));
    }
  } catch (...) {
    failure = std::current_exception();  // sorted out below: no co_await in a handler
  }
  if (failure) {
    route.failed(a.node, failure);
    co_return std::nullopt;
  }
  route.served(a.node);
  co_return value;
}

template <class Fn>
auto replica_set::async_read(wal_position seen, Fn fn, transaction_options options)
    -> boost::asio::awaitable<detail::atomic_value_t<Fn>, detail::atomic_executor_t<Fn>> {
  using T = detail::atomic_value_t<Fn>;
  using Ex = detail::atomic_executor_t<Fn>;
  using stored = pqscope::detail::stored_t<T>;
  pqscope::detail::read_route route(router_, options, seen, options_.replica_wait,
                                    options_.fallback_to_primary, !standbys_.empty());
  // Each try runs fn from this frame, which outlives it (async_atomic takes its function by value).
  auto call = [&fn](connection& c) { return pqscope::detail::call_with_optional_connection(fn, c); };
  while (const auto a = route.next()) {
    if (std::optional<stored> v = co_await try_standby<stored, Ex>(*a, call, route)) {
      if constexpr (std::is_void_v<T>) {
        co_return;
      } else {
        co_return std::move(*v);
      }
    }
  }
  const transaction_options on_primary = route.to_primary();
  lease l = co_await primary_->async_acquire(boost::asio::use_awaitable_t<Ex>{});
  co_return co_await async_atomic(*l, on_primary, call);
}

}  // namespace pqscope::asio

// #include <pqscope/asio/impl/replica_set.ipp>
// The bodies of asio/replica_set.hpp that are not templates. Header-only, like all
// of the asio front end: included at the end of asio/replica_set.hpp.

// #include <pqscope/asio/replica_set.hpp> (inlined above)

namespace pqscope::asio {

inline replica_set_options replica_set::checked(replica_set_options o) {
  if (o.replica_wait.count() < 0 || o.recheck_after.count() < 0)
    throw usage_error("replica_set_options: replica_wait and recheck_after must not be negative");
  return o;
}

inline replica_set::replica_set(const executor_type& ex, std::string primary, std::vector<std::string> standbys,
                                replica_set_options options)
    : ex_(ex), options_(checked(std::move(options))), router_(standbys.size(), options_.recheck_after) {
  // The primary's connections report where each commit ended (async_write passes it on).
  connection_options on_primary = options_.connection;
  on_primary.commit_positions = true;
  primary_ = std::make_shared<pool>(ex_, std::move(primary), options_.pool, std::move(on_primary));
  standbys_.reserve(standbys.size());
  for (std::string& s : standbys)
    standbys_.push_back(std::make_shared<pool>(ex_, std::move(s), options_.pool, options_.connection));
}

inline boost::asio::awaitable<lease> replica_set::any_standby() {
  for (std::size_t i : router_.plan(wal_position{}))
    if (std::optional<lease> l = co_await lease_standby<executor_type>(i)) co_return std::move(*l);
  co_return co_await primary_->async_acquire(boost::asio::use_awaitable);
}

inline std::vector<std::shared_ptr<pool>> replica_set::pools() const {
  std::vector<std::shared_ptr<pool>> all{primary_};
  all.insert(all.end(), standbys_.begin(), standbys_.end());
  return all;
}

inline void replica_set::close() noexcept {
  primary_->close();
  for (const std::shared_ptr<pool>& p : standbys_) p->close();
}

inline boost::asio::awaitable<void> replica_set::shutdown_all(std::vector<std::shared_ptr<pool>> pools) {
  // Every pool stops at once; then the waits overlap, and the last one to drain ends it.
  for (const std::shared_ptr<pool>& p : pools) p->close();
  for (const std::shared_ptr<pool>& p : pools) co_await p->async_shutdown(boost::asio::use_awaitable);
}

}  // namespace pqscope::asio
