#pragma once
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

#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/options.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/sync_session.hpp>
#include <pqscope/asio/link.hpp>
#include <pqscope/asio/query.hpp>

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
