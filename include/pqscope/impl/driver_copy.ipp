#pragma once
// libpq_driver, outside the pipeline: COPY FROM STDIN and TO STDOUT, a COPY that reached
// exchange() unannounced, and scripts in the simple protocol.
// Part of the bodies of <pqscope/driver.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/driver.hpp>

#include <poll.h>

#include <cstring>
#include <memory>
#include <utility>

namespace pqscope {

PQSCOPE_DECL int libpq_driver::copy_start(const statement& s, batch_reply& out) {
  out.replies.assign(1, reply{});
  copy_lost_.clear();
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_), 0;
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
    reply r;
    detail::answer a = detail::read_script_answer(conn_, raw, r);
    if (a.k == detail::answer::skipped) continue;  // a script of blanks and comments: no statement ran
    if (a.k != detail::answer::filled) return lost(out, std::move(a.why));  // lost, or no statement's answer
    out.replies.push_back(std::move(r));
  }
  out.state = detail::state_of(PQtransactionStatus(conn_));
  return out;
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
  detail::answer a = detail::read_answer(conn_, raw, out.replies.front());
  if (a.k != detail::answer::filled) return lost(out, std::move(a.why));
  for (;;) {
    if (await_result(rt) == io::expired) return give_up(out, rt);
    PGresult* extra = PQgetResult(conn_);
    if (extra == nullptr) break;
    const ExecStatusType st = PQresultStatus(extra);
    PQclear(extra);
    // COPY TO STDOUT of a failed COPY FROM: cannot happen; anything else is a broken stream.
    if (st != PGRES_COMMAND_OK) return lost(out, "unexpected extra answer from the server");
  }
  out.state = detail::state_of(PQtransactionStatus(conn_));
  return out;
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
    const int r = PQputCopyEnd(conn_, detail::copy_in_refused);
    if (r == 1) return flush(rt);
    if (r < 0) return io::failed;
    const io f = flush(rt);  // 0: no room in libpq's buffer yet
    if (f != io::ok) return f;
  }
}

}  // namespace pqscope
