#pragma once
// libpq_driver, its waits: every wait is a poll() with the round trip's deadline, then a cancel
// request and its grace, then the connection given up (see driver.hpp).
// Part of the bodies of <pqscope/driver.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/driver.hpp>

#include <poll.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace pqscope {

struct libpq_driver::cancel_state {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
};

PQSCOPE_DECL std::chrono::milliseconds libpq_driver::grace_for(std::chrono::milliseconds timeout) noexcept {
  return timeout < std::chrono::milliseconds(1000) ? timeout : std::chrono::milliseconds(1000);
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

PQSCOPE_DECL bool libpq_driver::take_notification(notification& out) {
  return detail::take_notification(conn_, out);
}

PQSCOPE_DECL libpq_driver::notice_wait libpq_driver::wait_notification(std::chrono::milliseconds timeout,
                                                                      notification& out) {
  static const std::vector<statement> none;
  round_trip rt{none};
  rt.bounded = true;
  rt.in_grace = true;  // a deadline of the caller's: nothing runs that a cancel could stop
  rt.deadline = clock::now() + timeout;
  bool read = false;
  for (;;) {
    if (take_notification(out)) return notice_wait::received;
    if (!is_open()) return notice_wait::lost;
    if (!read) {  // what the socket holds now, without waiting
      read = true;
      (void)PQconsumeInput(conn_);  // a failure shows in is_open() once what it read is taken
      continue;
    }
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w == io::expired) return notice_wait::timed_out;
    if (w == io::failed) return notice_wait::lost;
    read = false;
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

PQSCOPE_DECL batch_reply& libpq_driver::give_up(batch_reply& out, const round_trip& rt) {
  const long long ms = net_.timeout.count() + grace_for(net_.timeout).count();
  std::string why = "no answer from the server within network_timeout (" + std::to_string(net_.timeout.count()) +
                    " ms) and the grace after " + (rt.cancel_sent ? "a cancel request" : "it") + " (" +
                    std::to_string(ms) + " ms in all); the connection was closed";
  close();
  closed_reason_ = why;
  return lost(out, std::move(why));
}

}  // namespace pqscope
