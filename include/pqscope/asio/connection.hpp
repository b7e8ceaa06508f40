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
#include <pqscope/result.hpp>
#include <pqscope/stats.hpp>
#include <pqscope/detail/application_name.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/sync_session.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/asio/link.hpp>

namespace pqscope::asio {

class connection;
class transaction;

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
    count_ = 1 + sizeof...(Ps);
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

using clock = std::chrono::steady_clock;

// The machine, the link, and who is using them. Shared by the connection object
// and its operations in flight.
class session final : public pqscope::detail::sender, public std::enable_shared_from_this<session> {
 public:
  session(const net::any_io_executor& ex, std::string info, connection_options o)
      : executor(ex), conninfo(std::move(info)), options(std::move(o)), io(std::make_shared<link>(ex)), gate(ex) {
    machine.set_observer(options.observer);
    machine.set_savepoint_limit(options.savepoint_limit, options.refuse_past_savepoint_limit);
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

  // A user operation is running (or waiting for the gate).
  bool user_busy = false;
  bool closed = false;
  // A rollback that no one awaits is running: a scope's object was destroyed open.
  // User operations wait for it at the gate, a timer that never expires by itself.
  bool background = false;
  net::steady_timer gate;
  // Scopes whose objects were destroyed open while an operation was running.
  std::vector<std::uint64_t> abandoned;

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
    if (user_busy)
      throw usage_error(std::string(what) + " while an operation is in progress on this connection; "
                                            "one operation at a time, and await each before the next call");
    return machine;
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
    if (auto r = resolver.lock()) r->request_cancel("canceled");
  }

};

// pg_xact_status of a transaction whose COMMIT got no answer, asked on a fresh
// connection: "committed", "aborted", or why it could not tell (as
// driver_session::xact_status says it).
inline net::awaitable<std::string> resolve_xact(std::shared_ptr<session> s, std::string xid) {
  auto l = std::make_shared<link>(s->executor);
  l->timeout = s->io->timeout;  // the same time bounds
  l->cancel_wait = s->io->cancel_wait;
  s->resolver = l;
  std::string outcome;
  try {
    // The budget of driver_session::xact_status: network_timeout and its grace from now.
    const pqscope::detail::resolver_clock budget(s->io->timeout.count() > 0
                                                     ? s->io->timeout + libpq_driver::grace_for(s->io->timeout)
                                                     : std::chrono::milliseconds(0));
    const bool bounded = s->io->timeout.count() > 0;
    co_await async_open(l, s->conninfo, "pqscope in-doubt resolver", net::use_awaitable);
    const char* values[] = {xid.c_str()};
    const std::vector<statement> ask{statement{"SELECT pg_catalog.pg_xact_status($1::xid8)", 1, values, nullptr}};
    net::steady_timer pause(s->executor);
    // A backend that was cut off may still be finishing: wait for its verdict, within the budget.
    while (outcome.empty()) {
      if (bounded) {
        l->timeout = budget.round_trip_timeout();  // it and its grace end by the deadline
        l->cancel_wait = libpq_driver::grace_for(l->timeout);
      }
      if ((bounded && l->timeout.count() <= 0) || (!bounded && budget.left().count() <= 0)) {
        outcome = budget.spent();
        break;
      }
      const batch_reply br = co_await async_exchange(l, ask, net::use_awaitable);
      if (br.lost) {
        outcome = "connection lost: " + br.lost_message;
        break;
      }
      const reply& r = br.replies.front();
      if (r.st != reply::status::ok) {
        outcome = "error: " + r.failure().message;
      } else if (r.res.size() != 1 || r.res[0][0].is_null()) {
        outcome = "unknown xid";
      } else if (std::string status(r.res[0][0].text()); status != "in progress") {
        outcome = status;
      } else if (const auto wait = budget.pause(); wait.count() <= 0) {
        outcome = budget.spent();
      } else {
        pause.expires_after(wait);
        co_await pause.async_wait(net::use_awaitable);
      }
    }
  } catch (const std::exception& e) {
    outcome = e.what();
  } catch (...) {
    outcome = "unknown failure";
  }
  l->close();
  co_return outcome;
}

// ---- what operations do with the machine -----------------------------------------
// A work type is one operation's part of sync_session:
//   bool start(session&)                      queue; true: drive the loop
//   value_type finish(session&)               the end step: the value, or throws
//   optional<string> in_doubt(session&)        (end of a scope) the xid to resolve
//   void settle(session&)                      (optional) told the outcome, either way
//   background / connects                      see machine_op

struct work_base {
  static constexpr bool background = false;  // a rollback no one awaits (abandoned scope)
  static constexpr bool connects = false;    // opens the link after start()
  std::optional<std::string> in_doubt(session&) const { return std::nullopt; }
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
  std::optional<std::string> in_doubt(session& s) const {
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
    return true;
  }
  void finish(session& s) { s.machine.mark_open(); }
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
    } else {
      if (s_->user_busy) {
        error_ = std::make_exception_ptr(usage_error(
            "an operation was started while another one is in progress on this connection; one at a time: "
            "await each operation before starting the next"));
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
      } else {
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
  template <class Token>
  auto async_execute(query q, Token&& token) {
    return detail::start(shared(), detail::statement_work{std::move(q)}, std::forward<Token>(token));
  }

  // One value: the query must return exactly one row of one column. In a batched
  // attempt it sends the batch (it needs the answer). Completion: void(std::exception_ptr, T).
  template <class T, class Token>
  auto async_query_value(query q, Token&& token) {
    static_assert(!std::is_same_v<T, std::string_view> && !std::is_same_v<T, std::optional<std::string_view>>,
                  "query_value<std::string_view> would point into a result that is already freed; use std::string");
    static_assert(std::is_default_constructible_v<T>,
                  "async_query_value<T>: T must be default-constructible (the completion passes a T with an error)");
    return detail::start(shared(), detail::query_value_work<T>{std::move(q)}, std::forward<Token>(token));
  }

  // Sends every statement a batched attempt has queued and waits for the answers;
  // afterwards their results can be read. batch_failed if one of them failed.
  // Nothing queued: nothing is sent. Completion: void(std::exception_ptr).
  template <class Token>
  auto async_flush(Token&& token) {
    return detail::start(shared(), detail::flush_work{}, std::forward<Token>(token));
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

  std::shared_ptr<detail::session> s_;
};

namespace detail {
struct connection_access {
  static std::shared_ptr<session> of(const connection& c) { return c.shared(); }
};
}  // namespace detail

}  // namespace pqscope::asio
