#pragma once
// libpq_driver, the session: connecting, one round trip (exchange), a borrowed PGconn*, and the
// middleware probes after a transaction no statement opened.
// Part of the bodies of <pqscope/driver.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/driver.hpp>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>


namespace pqscope {

PQSCOPE_DECL void libpq_driver::open(const std::string& conninfo, const std::string& fallback_application_name) {
  close();
  detail::check_conninfo(conninfo);
  const detail::connect_params params{conninfo, fallback_application_name, net_.timeout};
  conn_ = PQconnectdbParams(params.keys(), params.values(), /*expand_dbname=*/1);
  if (conn_ == nullptr) throw connection_error("could not connect: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = detail::connect_failure(conn_, conninfo);
    close();
    throw connection_error(msg);
  }
  // Every wait is a poll() with a deadline; libpq never blocks on the socket.
  if (PQsetnonblocking(conn_, 1) != 0) {
    std::string msg = detail::connect_failure(conn_, conninfo);
    close();
    throw connection_error(msg);
  }
  detail::install_notices(conn_, &notices_);
  closed_reason_.clear();
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

PQSCOPE_DECL std::string libpq_driver::application_name() const { return detail::application_name_of(conn_); }

PQSCOPE_DECL batch_reply libpq_driver::exchange(const std::vector<statement>& batch) {
  batch_reply out;
  exchange(batch, out);
  return out;
}

PQSCOPE_DECL batch_reply& libpq_driver::exchange(const std::vector<statement>& batch, batch_reply& out) {
  out.clear(batch.size());
  fatal_.clear();
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_);
  round_trip rt{batch};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.deadline = clock::now() + net_.timeout;
  }
  if (!await_pending_cancel(rt)) return give_up_pending(out);
  // The session's state before the batch, for diagnose_foreign_transaction() below;
  // libpq's word is exact here (nothing in flight).
  const server_state before = detail::state_of(PQtransactionStatus(conn_));
  if (PQenterPipelineMode(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  for (const statement& s : batch)
    if (!detail::send_statement(conn_, s)) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  if (PQpipelineSync(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }

  for (std::size_t i = 0; i < out.replies.size(); ++i) {
    reply& r = out.replies[i];
    rt.awaiting = i;
    // A Parse sent with the statement answers first, on its own (then a null result).
    bool parse_failed = false;
    if (batch[i].parse) {
      if (await_result(rt) == io::expired) return give_up(out, rt);
      detail::answer p = detail::read_answer(conn_, PQgetResult(conn_), r);
      switch (p.k) {
        case detail::answer::filled:
          if (r.st == reply::status::error) {
            parse_failed = true;
            fatal_ = std::move(p.fatal);
          }
          break;
        case detail::answer::skipped: break;
        default: return lost(out, std::move(p.why));
      }
      if (await_result(rt) == io::expired) return give_up(out, rt);
      if (PGresult* extra = PQgetResult(conn_)) {
        PQclear(extra);
        return lost(out, "unexpected extra answer from the server");
      }
      r.parsed = r.st == reply::status::ok;
    }
    if (await_result(rt) == io::expired) return give_up(out, rt);
    reply behind_failed_parse;  // skipped by the server: the Parse's error is the answer
    detail::answer a = detail::read_answer(conn_, PQgetResult(conn_), parse_failed ? behind_failed_parse : r);
    switch (a.k) {
      case detail::answer::filled:
        if (!parse_failed && r.st == reply::status::error) fatal_ = std::move(a.fatal);
        break;
      case detail::answer::skipped: break;
      case detail::answer::copy_in:
      case detail::answer::copy_out: {
        // A COPY the statement checks did not recognise: end it here so the
        // session stays usable, and report it (reply_error::misuse).
        const bool in = a.k == detail::answer::copy_in;
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
      case detail::answer::lost:
      case detail::answer::unexpected: return lost(out, std::move(a.why));
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
  out.state = detail::state_of(PQtransactionStatus(conn_));
  if (before == server_state::idle && out.state == server_state::in_transaction && !detail::opens_transaction(batch) &&
      is_open())
    out.diagnostic = diagnose_foreign_transaction();
  return out;
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
  if (!simple_query(detail::middleware_probes[0], version) || version.empty()) return {};
  simple_query(detail::middleware_probes[1], mode);
  return detail::diagnose_middleware(version, mode);
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

}  // namespace pqscope
