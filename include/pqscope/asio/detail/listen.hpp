#pragma once
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

#include <pqscope/errors.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/asio/link.hpp>
#include <pqscope/asio/query.hpp>
#include <pqscope/asio/detail/operation.hpp>
#include <pqscope/asio/detail/session.hpp>

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
