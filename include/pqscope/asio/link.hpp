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
#include <pqscope/errors.hpp>
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

  // ---- connecting -----------------------------------------------------------------

  // Starts a connection attempt (closing any previous one). Throws usage_error for a
  // malformed conninfo, connection_error if libpq refuses at once.
  void start_connect(const std::string& conninfo, const std::string& fallback_application_name) {
    close_connection();
    pqscope::detail::check_conninfo(conninfo);
    connecting_with_ = conninfo;  // for fail_connect(): libpq's text may quote a password
    // The time bounds libpq_driver::open() adds to a conninfo that sets none of them.
    std::vector<std::string> owned;
    std::vector<const char*> keys, vals;
    owned.reserve(std::size(pqscope::detail::network_defaults));
    for (const auto& d : pqscope::detail::network_defaults) {
      if (conninfo_sets(conninfo, d.key)) continue;
      std::string value = d.value;
      if (std::strcmp(d.key, "connect_timeout") == 0 && timeout.count() > 0)
        value = pqscope::detail::connect_timeout_for(timeout);
      owned.push_back(std::move(value));
      keys.push_back(d.key);
      vals.push_back(owned.back().c_str());
    }
    // The conninfo comes after the defaults: with expand_dbname, what it sets wins.
    keys.insert(keys.end(), {"dbname", "fallback_application_name", nullptr});
    vals.insert(vals.end(), {conninfo.c_str(), fallback_application_name.c_str(), nullptr});
    pg_ = PQconnectStartParams(keys.data(), vals.data(), /*expand_dbname=*/1);
    if (pg_ == nullptr) throw connection_error("could not connect: out of memory");
    if (PQstatus(pg_) == CONNECTION_BAD) {
      std::string msg = pqscope::detail::redact(trimmed(PQerrorMessage(pg_)), conninfo);
      close_connection();
      throw connection_error("could not connect: " + msg);
    }
    dead_ = false;
    gave_up_ = false;
    dead_reason_.clear();
    phase_ = phase::connecting;
    poll_ = PGRES_POLLING_WRITING;  // what libpq says to assume before the first poll
  }

  // Whether the conninfo, or the environment variable of `key`, sets it (as
  // libpq_driver::open() decides).
  static bool conninfo_sets(const std::string& conninfo, const char* key) {
    bool set = false;
    if (PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), nullptr)) {
      for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
        if (std::strcmp(o->keyword, key) == 0 && o->val != nullptr && *o->val != '\0') set = true;
      PQconninfoFree(opts);
    }
    if (set) return true;
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

  // connect_timeout of the connection (libpq only enforces it in blocking connects;
  // here it bounds the whole connect).
  [[nodiscard]] std::chrono::milliseconds connect_timeout() const {
    std::chrono::milliseconds out{0};
    if (pg_ == nullptr) return out;
    if (PQconninfoOption* opts = PQconninfo(pg_)) {
      for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
        if (o->val != nullptr && std::strcmp(o->keyword, "connect_timeout") == 0) {
          const long s = std::strtol(o->val, nullptr, 10);
          if (s > 0) out = std::chrono::seconds(s < 2 ? 2 : s);  // libpq's own minimum
        }
      PQconninfoFree(opts);
    }
    return out;
  }

  // One step of the connection sequence: what to wait for, or done. `after_wait`:
  // the socket is ready as last asked. Throws connection_error.
  next_wait connect_step(bool after_wait) {
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
        phase_ = phase::idle;
        return next_wait::done;
      default: fail_connect(trimmed(PQerrorMessage(pg_)));
    }
  }

  // ---- one batch ------------------------------------------------------------------

  // Queues the batch and its sync in libpq (nothing waits here). A connection that
  // cannot take it makes the batch lost at once. `statements` is read only here.
  void start_batch(const std::vector<statement>& statements) {
    reply_ = batch_reply{};
    reply_.replies.resize(statements.size());
    index_ = 0;
    reading_ = statements.empty() ? reading::sync : reading::answer;
    finished_ = false;
    flushing_ = false;
    copy_in_ = false;
    fatal_.clear();
    if (!usable()) return lose(pg_ == nullptr ? not_connected() : dead_ ? dead_reason_ : "the connection is closed");
    if (PQenterPipelineMode(pg_) != 1) return lose(trimmed(PQerrorMessage(pg_)));
    for (const statement& s : statements)
      if (PQsendQueryParams(pg_, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0) != 1)
        return lose(trimmed(PQerrorMessage(pg_)));
    if (PQpipelineSync(pg_) != 1) return lose(trimmed(PQerrorMessage(pg_)));
    flushing_ = true;
    phase_ = phase::exchanging;
    commit_at_ = statements.size();
    for (std::size_t k = 0; k < statements.size(); ++k)
      if (std::strcmp(statements[k].sql, "COMMIT") == 0) commit_at_ = k;
    if (timeout.count() > 0) arm(timeout, [](link& l) { l.request_cancel(l.timed_out()); });
  }

  // A cancel request of an earlier round trip that PQcancel has not finished: the
  // next batch must not be sent before it has (see the top of this file).
  [[nodiscard]] bool cancel_pending() {
    if (cancel_ && cancel_->load()) cancel_.reset();
    return cancel_ != nullptr;
  }
  // Waiting for it counts against the next round trip's deadline.
  void begin_pending_wait() {
    pending_deadline_ = timeout.count() > 0 ? clock::now() + timeout : clock::time_point::max();
  }
  [[nodiscard]] bool pending_expired() const { return clock::now() >= pending_deadline_; }
  void give_up_pending() {
    close_connection();
    dead_reason_ = "a cancel request sent after an earlier round trip was cancelled had not been handled by the "
                   "server within the timeout, and it could cancel this statement; the connection was closed "
                   "before anything was sent";
  }
  template <class Handler>
  void async_pending_wait(Handler&& handler) {
    pending_timer_.expires_after(std::chrono::milliseconds(2));
    pending_timer_.async_wait(std::forward<Handler>(handler));
  }

  // Sends and reads what can be sent and read now.
  next_wait batch_step() {
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

  // The socket is readable.
  void consume_input() {
    if (finished_ || pg_ == nullptr) return;
    // On failure libpq marks the connection bad (and closes its socket); the next
    // PQgetResult then reports what it still holds, and the loss.
    if (PQconsumeInput(pg_) == 0 && PQstatus(pg_) != CONNECTION_BAD) lose(trimmed(PQerrorMessage(pg_)));
  }

  batch_reply take_reply() { return std::move(reply_); }

  // A wait ended with an error: given up, closed, cancelled by a slot, or a real error.
  // Returns true when the operation is over (the batch or the connect failed).
  bool wait_failed(const error_code& ec) {
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

  // After wait_failed() returned true during a batch: the batch's (lost) reply.
  void settle_failed_batch() {
    if (!finished_) lose(dead_ ? dead_reason_ : not_connected());
  }

  // ---- waits, deadlines, cancellation ---------------------------------------------

  template <class Handler>
  void async_wait(next_wait w, Handler&& handler) {
    sock_.async_wait(w == next_wait::write ? net::posix::stream_descriptor::wait_write
                                           : net::posix::stream_descriptor::wait_read,
                     std::forward<Handler>(handler));
    // No look at the socket first: a wait re-arms Asio's edge-triggered epoll
    // registration (EPOLL_CTL_MOD), which reports input or room already there, so
    // bytes libpq left unread (one recv() per PQconsumeInput) still wake us.
  }

  // Bounds a connect: given up when `d` passes (0: not bounded here).
  void arm_connect(std::chrono::milliseconds d) {
    if (d.count() > 0)
      arm(d, [d](link& l) { l.give_up("could not connect: no connection within " + std::to_string(d.count()) + " ms"); });
  }
  // The round trip (or connect) ended: its deadline and grace are void.
  void disarm() noexcept {
    ++generation_;
    cancel_requested_ = false;
    if (!std::exchange(timer_set_, false)) return;
    error_code ignored;
    timer_.cancel(ignored);
  }

  // The deadline passed, or cancel() or a cancellation slot asked. Connecting: given
  // up at once. A batch out: a cancel request (not while COMMIT's answer is awaited),
  // then the grace; no answer by its end gives the connection up. Otherwise (between
  // round trips) there is nothing to cancel.
  void request_cancel(const std::string& why) {
    if (phase_ == phase::connecting) return give_up("could not connect: " + why);
    if (phase_ != phase::exchanging || cancel_requested_ || pg_ == nullptr) return;
    cancel_requested_ = true;
    cancel_reason_ = why;
    const std::size_t awaiting = flushing_ ? 0 : index_;
    const bool commit = awaiting == commit_at_ && reading_ != reading::sync;
    if (!commit) send_cancel();
    arm(cancel_wait, [why, sent = !commit](link& l) {
      l.give_up("no answer from the server within " + std::to_string(l.cancel_wait.count()) + " ms after " +
                (sent ? "a cancel request" : "its round trip was to end (COMMIT's answer is never cancelled)") +
                " (" + why + "); the connection was closed");
    });
  }

  // The connection is lost on purpose: every wait ends, and the operation fails.
  void give_up(std::string why) {
    gave_up_ = true;
    dead_ = true;
    dead_reason_ = std::move(why);
    error_code ignored;
    sock_.cancel(ignored);
  }

  // Closes the connection (PQfinish); pending waits end with operation_aborted, a
  // batch still out ends lost.
  void close() noexcept {
    disarm();
    close_connection();
  }

  // In a child process after fork(): frees the connection without a word to the
  // server, whose session is the parent's (libpq_driver::abandon() does the same).
  // Both descriptors are pointed at /dev/null first, so neither libpq's goodbye nor
  // Asio's deregistration reaches the socket, or the epoll set shared with the parent.
  void abandon_after_fork() noexcept {
    const int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (devnull >= 0) {
      if (pg_ != nullptr && PQsocket(pg_) >= 0) ::dup2(devnull, PQsocket(pg_));
      if (sock_.is_open()) ::dup2(devnull, sock_.native_handle());
      ::close(devnull);
    }
    close();
  }

  [[nodiscard]] std::string application_name() const {
    if (pg_ == nullptr) return {};
    if (const char* v = PQparameterStatus(pg_, "application_name")) return v;
    std::string name, fallback;
    if (PQconninfoOption* opts = PQconninfo(pg_)) {
      for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
        if (o->val == nullptr) continue;
        if (std::strcmp(o->keyword, "application_name") == 0) name = o->val;
        if (std::strcmp(o->keyword, "fallback_application_name") == 0) fallback = o->val;
      }
      PQconninfoFree(opts);
    }
    return name.empty() ? fallback : name;
  }

 private:
  enum class phase { idle, connecting, exchanging };
  // copy_rows: a COPY TO STDOUT the statement checks missed, read and dropped;
  // copy_end: then that COPY's own answer (after COPY FROM STDIN was failed too).
  enum class reading { answer, terminator, sync, copy_rows, copy_end };

  static server_state state_of(PGTransactionStatusType t) {
    switch (t) {
      case PQTRANS_IDLE: return server_state::idle;
      case PQTRANS_INTRANS: return server_state::in_transaction;
      case PQTRANS_INERROR: return server_state::failed_transaction;
      default: return server_state::unknown;
    }
  }
  static std::string not_connected() { return "the connection is not open (async_connect() first)"; }
  [[nodiscard]] std::string timed_out() const { return "timed out after " + std::to_string(timeout.count()) + " ms"; }

  using clock = std::chrono::steady_clock;

  // One timer for the round trip's deadline, then its grace: `fire` runs when it
  // passes, unless the round trip ended or the timer was re-armed first.
  template <class Fire>
  void arm(std::chrono::milliseconds d, Fire fire) {
    ++generation_;
    timer_set_ = true;
    timer_.expires_after(d);
    timer_.async_wait([self = shared_from_this(), gen = generation_, fire](const error_code& ec) {
      if (!ec && gen == self->generation_) fire(*self);
    });
  }

  // PQcancel connects, sends the request and waits for the server to close: a
  // blocking call, so it gets a thread of its own, which owns its PGcancel and
  // says when it is done.
  void send_cancel() {
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

  [[noreturn]] void fail_connect(const std::string& why) {
    std::string msg = why.rfind("could not connect", 0) == 0 ? why : "could not connect: " + why;
    msg = pqscope::detail::redact(std::move(msg), connecting_with_);
    close_connection();
    dead_reason_ = msg;
    throw connection_error(msg);
  }

  void close_connection() noexcept {
    try {
      if (!finished_) lose("the connection was closed");
    } catch (...) {
      finished_ = true;  // out of memory for the message: the batch still ends
    }
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

  // Asio watches a duplicate of libpq's socket; a new one after libpq switched sockets.
  void watch_socket() {
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

  // While our batch does not fit the socket, keep reading: a server blocked on
  // sending us answers does not read the rest of the batch.
  void watch_input_while_flushing() {
    if (watching_) return;
    watching_ = true;
    sock_.async_wait(net::posix::stream_descriptor::wait_read, [self = shared_from_this()](const error_code& ec) {
      self->watching_ = false;
      if (ec || self->pg_ == nullptr || self->finished_ || !self->flushing_) return;
      (void)PQconsumeInput(self->pg_);  // a failure shows in the next PQflush
      self->watch_input_while_flushing();
    });
  }

  // One PGresult of the batch; false when the batch is over (complete or lost).
  bool take_result(PGresult* raw) {
    switch (reading_) {
      case reading::answer: {
        if (raw == nullptr) {
          lose(trimmed(PQerrorMessage(pg_)));
          return false;
        }
        result res{pqscope::detail::adopt(raw)};
        reply& r = reply_.replies[index_];
        switch (PQresultStatus(raw)) {
          case PGRES_COMMAND_OK:
          case PGRES_TUPLES_OK:
          case PGRES_EMPTY_QUERY:
            r.st = reply::status::ok;
            r.command = PQcmdStatus(raw);
            r.res = std::move(res);
            break;
          case PGRES_PIPELINE_ABORTED: r.st = reply::status::skipped; break;
          case PGRES_FATAL_ERROR: {
            if (PQstatus(pg_) == CONNECTION_BAD) {
              lose(trimmed(PQresultErrorMessage(raw)));
              return false;
            }
            r.st = reply::status::error;
            fatal_ = pqscope::detail::fatal_reason(raw);  // as libpq_driver: the cause of the close to come
            auto e = pqscope::detail::error_of(raw);
            if (cancel_requested_ && e->sqlstate == "57014") e->message += " (" + cancel_reason_ + ")";
            r.error = std::move(e);
            break;
          }
          case PGRES_COPY_OUT:
            reading_ = reading::copy_rows;  // as libpq_driver::exchange: read to its end, dropped
            return true;
          case PGRES_COPY_IN:
            if (index_ + 1 < reply_.replies.size()) {
              lose(pqscope::detail::copy_in_kills_session());
              return false;
            }
            if (PQputCopyEnd(pg_, "pqscope: COPY FROM STDIN cannot run through execute(); use copy_in()") != 1) {
              lose(trimmed(PQerrorMessage(pg_)));
              return false;
            }
            copy_in_ = true;
            flushing_ = true;
            reading_ = reading::copy_end;
            return true;
          default:
            lose("unexpected answer from the server: " + std::string(PQresStatus(PQresultStatus(raw))));
            return false;
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
        reading_ = ++index_ < reply_.replies.size() ? reading::answer : reading::sync;
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
        reply_.state = state_of(PQtransactionStatus(pg_));
        finished_ = true;
        phase_ = phase::idle;
        return false;
      }
    }
    return false;
  }

  void lose_or_fail(const std::string& why) {
    if (phase_ == phase::connecting) return give_up("could not connect: " + why);
    lose(why);
  }

  // The batch ends lost: answers already read stay, the rest never ran as far as we
  // know, and the connection is unusable until the next connect.
  void lose(std::string why) {
    if (!fatal_.empty()) why = std::exchange(fatal_, {});
    if (why.empty()) why = "connection lost";
    reply_.lost = true;
    reply_.lost_message = why;
    reply_.state = server_state::unknown;
    finished_ = true;
    flushing_ = false;
    phase_ = phase::idle;
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
  std::string fatal_;          // a FATAL error answered in this batch (see libpq_driver)
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

// One batch: completes with its batch_reply (lost if the connection failed).
class exchange_op {
 public:
  exchange_op(std::shared_ptr<link> l, const std::vector<statement>& statements)
      : l_(std::move(l)), statements_(&statements) {}

  template <class Self>
  void operator()(Self& self, error_code ec = {}) {
    switch (state_) {
      case state::start:
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
    waiting_ = l_->batch_step();
    if (waiting_ == next_wait::done) return finish(self);
    wait(self);
  }

 private:
  enum class state { start, pending, deliver, wait };

  // Sends the batch (as far as the socket takes it); what to wait for next.
  next_wait begin() {
    l_->start_batch(*statements_);
    statements_ = nullptr;  // libpq holds its own copy now
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
  const std::vector<statement>* statements_;
  state state_ = state::start;
  next_wait waiting_ = next_wait::done;
};

template <class Token>
auto async_exchange(std::shared_ptr<link> l, const std::vector<statement>& statements, Token&& token) {
  auto ex = l->get_executor();
  return net::async_compose<Token, void(batch_reply)>(exchange_op{std::move(l), statements}, token, ex);
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
