#pragma once
// The bodies of asio/link.hpp's link: connecting, one batch, and the waits,
// deadlines and cancel requests around them. Header-only, like all of the asio
// front end: included at the end of asio/link.hpp.

#include <pqscope/asio/link.hpp>

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
