#pragma once
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

#include <pqscope/callback.hpp>
#include <pqscope/connection.hpp>
#include <pqscope/database.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/params.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/result.hpp>
#include <pqscope/stats.hpp>
#include <pqscope/detail/application_name.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/sync_session.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/asio/copy.hpp>
#include <pqscope/asio/link.hpp>
#include <pqscope/asio/query.hpp>
#include <pqscope/asio/detail/operation.hpp>
#include <pqscope/asio/detail/session.hpp>
#include <pqscope/asio/detail/listen.hpp>

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
