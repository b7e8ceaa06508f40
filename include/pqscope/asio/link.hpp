#pragma once
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

#include <pqscope/driver.hpp>
#include <pqscope/detail/libpq_connect.hpp>
#include <pqscope/detail/libpq_reply.hpp>
#include <pqscope/detail/middleware.hpp>
#include <pqscope/detail/notices.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/result.hpp>

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

#include <pqscope/asio/impl/link.hpp>
