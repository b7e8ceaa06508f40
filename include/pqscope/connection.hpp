#pragma once
// An autocommit connection that tracks nested transaction scopes.

#include <chrono>
#include <algorithm>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/callback.hpp>
#include <pqscope/copy.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/params.hpp>
#include <pqscope/result.hpp>
#include <pqscope/options.hpp>
#include <pqscope/stats.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/detail/application_name.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/sync_session.hpp>

namespace pqscope {

class transaction;
namespace detail {
struct connection_access;
}  // namespace detail

// A statement that is sent even though it leaves session state behind, on a
// connection with pooling::transaction: execute(allow_session_state("LISTEN jobs")).
struct allow_session_state {
  explicit allow_session_state(std::string text) : sql(std::move(text)) {}
  std::string sql;
};

namespace detail {
// SQL text as libpq wants it: NUL-terminated, with no NUL inside.
class sql_ref {
 public:
  sql_ref(const char* s) : ptr_(s != nullptr ? s : ""), size_(std::strlen(ptr_)), no_nul_(true) {}  // NOLINT: implicit on purpose
  sql_ref(const std::string& s) : ptr_(s.c_str()), size_(s.size()) {}                // NOLINT
  sql_ref(std::string_view s) : owned_(s), ptr_(owned_.c_str()), size_(s.size()) {}   // NOLINT
  sql_ref(const allow_session_state& s)                                               // NOLINT
      : ptr_(s.sql.c_str()), size_(s.sql.size()), session_state_allowed_(true) {}
  sql_ref(const sql_ref&) = delete;
  sql_ref& operator=(const sql_ref&) = delete;
  ~sql_ref() = default;

  [[nodiscard]] const char* c_str() const {
    if (!no_nul_ && std::strlen(ptr_) != size_) throw usage_error("the SQL text contains a NUL byte");
    return ptr_;
  }
  [[nodiscard]] std::string_view view() const noexcept { return {ptr_, size_}; }
  [[nodiscard]] bool session_state_allowed() const noexcept { return session_state_allowed_; }

 private:
  std::string owned_;
  const char* ptr_;
  std::size_t size_;
  bool session_state_allowed_ = false;
  bool no_nul_ = false;  // measured up to its NUL: nothing to check
};
}  // namespace detail

template <class Driver>
class basic_connection {
 public:
  using driver_type = Driver;

  // Connects at once; throws connection_error (usage_error for a malformed conninfo).
  explicit basic_connection(std::string conninfo, connection_options options = {});
  // Wraps a session the caller opened and keeps (raw libpq code, a framework's
  // pool). It must be connected, idle (no transaction, no query in progress) and
  // out of pipeline mode, else usage_error. Scopes, batching, the pooler guard and
  // stats work as on any connection. pqscope never closes it: when the wrapper
  // ends, the session is handed back idle (a transaction still open is rolled
  // back), out of pipeline mode, in the blocking mode it came in. One it cannot
  // bring back (a network_timeout expired mid-round-trip) has its socket shut
  // down: the server rolls back, and the owner sees CONNECTION_BAD (PQreset).
  [[nodiscard]] static basic_connection<Driver> borrow(PGconn* handle, connection_options options = {}) {
    return basic_connection(handle, std::move(options));
  }

  basic_connection(basic_connection&&) noexcept = default;
  basic_connection& operator=(basic_connection&& other) noexcept {
    if (this != &other) {
      close();
      options_ = std::move(other.options_);
      s_ = std::move(other.s_);
      borrowed_ = other.borrowed_;
      conninfo_shown_ = std::move(other.conninfo_shown_);
    }
    return *this;
  }
  basic_connection(const basic_connection&) = delete;
  basic_connection& operator=(const basic_connection&) = delete;
  // Closes the session. Scopes still open end without a word to the server, which
  // rolls back a transaction whose connection closes.
  ~basic_connection() { close(); }

  // Runs one statement. Parameters travel out of line ($1, $2, ...), never
  // spliced into the SQL. Outside any scope it commits at once (autocommit);
  // inside, pending BEGIN/SAVEPOINT/RELEASE ride in the same round trip. In a
  // batched attempt it is queued, and the result sends the queue when first used.
  template <class... Params>
  result execute(detail::sql_ref sql, const Params&... params) {
    return run(sql, params...);
  }

  // One value: the query must return exactly one row of one column.
  template <class T, class... Params>
  [[nodiscard]] T query_value(detail::sql_ref sql, const Params&... params) {
    static_assert(!std::is_same_v<T, std::string_view> && !std::is_same_v<T, std::optional<std::string_view>>,
                  "query_value<std::string_view> would point into a result that is already freed; use std::string");
    result r = run(sql, params...);  // keeps allow_session_state
    if (r.size() != 1 || r.columns() != 1)
      throw conversion_error("query_value() needs exactly one row of one column, but the query returned " +
                             std::to_string(r.size()) + " row(s) of " + std::to_string(r.columns()) + " column(s)");
    return r[0][0].template as<T>();
  }

  // Sends every statement a batched attempt has queued and waits for the answers
  // (for code that needs a statement to have run before something outside the
  // database happens). Throws batch_failed if one of them failed. Nothing queued:
  // nothing is sent.
  void flush();

  // COPY ... FROM STDIN: write rows, then finish(). In autocommit the COPY is its
  // own transaction (all rows or none); inside a scope it is part of it.
  [[nodiscard]] copy_writer copy_in(detail::sql_ref sql) { return copy_writer(start_copy(sql, 'i', "copy_in()")); }
  // COPY ... TO STDOUT: read rows until next() or read_row() says there are no more.
  [[nodiscard]] copy_reader copy_out(detail::sql_ref sql) { return copy_reader(start_copy(sql, 'o', "copy_out()")); }

  // Runs a script of several statements separated by semicolons (schema set-up, a
  // migration) in one simple-protocol query: one result per statement. In
  // autocommit the server runs it as one transaction (all or nothing); inside a
  // scope it is part of it. Each statement is checked as execute() checks one
  // (no transaction control, the pooler guard); no parameters.
  std::vector<result> execute_script(detail::sql_ref sql) {
    auto& s = machine_session();
    detail::sync_session::call guard(s, "execute_script()");
    std::shared_ptr<detail::statement_slot> slot;
    try {
      const char* text = sql.c_str();
      detail::check_script(sql.view(), "execute_script()");
      check_session_state(sql.view(), sql.session_state_allowed());
      slot = s.machine.prepare_out_of_band(text, sql.view(), s.weak_from_this());
    } catch (const std::exception& e) {
      if (options_.observer) notify_refusal(sql, 0, e);
      throw;
    }
    s.begin_out_of_band(slot);
    batch_reply all = s.script(slot->stmt.sql);
    std::vector<result> results;
    (void)s.end_out_of_band(slot, detail::script_outcome(all, results));
    return results;
  }

  // Open scopes on this connection (0: autocommit).
  [[nodiscard]] std::size_t depth() const noexcept { return s_ ? s_->machine.depth() : 0; }
  [[nodiscard]] bool in_transaction() const noexcept { return depth() > 0; }

  // Runs fn after the outermost transaction commits (at once outside any scope).
  // Dropped if the scope that registered it rolls back.
  template <class F>
  void on_commit(F&& fn) {
    detail::sync_session::call guard(machine_session(), "on_commit()");
    machine().on_commit(callback<void()>(std::forward<F>(fn)));
  }
  // Runs fn after the outermost transaction rolls back. Dropped if the scope that
  // registered it is a savepoint that rolls back, and outside any scope.
  template <class F>
  void on_rollback(F&& fn) {
    detail::sync_session::call guard(machine_session(), "on_rollback()");
    machine().on_rollback(callback<void()>(std::forward<F>(fn)));
  }

  // SET LOCAL for the current transaction (set_config(name, value, true)): it ends
  // with the transaction, so nothing leaks to the next client of a pooled server
  // connection. usage_error outside a scope.
  void set_local(std::string_view name, std::string_view value) {
    detail::sync_session::call guard(machine_session(), "set_local()");
    machine().set_local(name, value);
  }

  [[nodiscard]] std::string application_name() const { return s_ ? s_->driver.application_name() : std::string(); }
  [[nodiscard]] const connection_stats& stats() const { return machine().stats(); }
  // With connection_options::commit_positions: where the last committed outermost
  // scope's COMMIT ended in the WAL (see wal_position.hpp), set before its on_commit
  // callbacks run. Empty until one committed, or when the last one's is unknown;
  // statements in autocommit leave it as it is.
  [[nodiscard]] wal_position last_commit_position() const { return machine().last_commit_position(); }
  [[nodiscard]] auto native_handle() const { return s_ ? s_->driver.native_handle() : decltype(s_->driver.native_handle()){}; }
  [[nodiscard]] Driver& driver() { return machine_session().driver; }
  // The conninfo with its passwords replaced by *** (the session keeps the original).
  [[nodiscard]] const std::string& conninfo() const noexcept {
    static const std::string none;  // a moved-from connection has no session
    return s_ ? conninfo_shown_ : none;
  }
  [[nodiscard]] const connection_options& options() const noexcept { return options_; }

  // Opens a new session with the same settings, e.g. after connection_error.
  // Only at depth 0: a scope cannot move to another session. The channels listened
  // to are listened to again, and the next wait_notification() reports the gap.
  void reconnect();

  // ---- LISTEN / NOTIFY (see notification.hpp) ----
  // Listens to `channel` (its name quoted: case and characters kept); again is a
  // no-op. Outside any scope (a LISTEN in a transaction would wait for its COMMIT,
  // and a rollback would undo it), and only with pooling::none: usage_error otherwise.
  void listen(std::string_view channel);
  // Stops listening to `channel`; one not listened to is a no-op. Outside any scope.
  void unlisten(std::string_view channel);
  // The channels listened to, in the order they were first listened to.
  [[nodiscard]] const std::vector<std::string>& channels() const noexcept { return channels_; }
  // The next notification: one that arrived already (while other statements ran,
  // say), else the first to arrive within `timeout` (0: none is waited for);
  // nothing if none came. Outside any scope. If the session is lost meanwhile, what
  // it had received comes first; then a new session is opened, listens to the
  // channels again, and one notification with gap = true says that anything sent
  // in between was missed. connection_error if the new session cannot be opened
  // (or nothing is listened to): call again to retry.
  std::optional<notification> wait_notification(std::chrono::milliseconds timeout);

 private:
  friend class transaction;
  friend struct detail::connection_access;

  basic_connection(PGconn* handle, connection_options options)
      : options_(std::move(options)),
        s_(std::make_shared<detail::driver_session<Driver>>(std::string())),
        borrowed_(true) {
    s_->machine.set_observer(options_.observer);
    s_->machine.set_savepoint_limit(options_.savepoint_limit, options_.refuse_past_savepoint_limit);
    s_->machine.set_commit_positions(options_.commit_positions);
    // Behind a pooler a borrowed session prepares nothing: its names would outlive the
    // wrapper (libpq 15 cannot close a statement, PgBouncer does not track DEALLOCATE).
    // Directly, the wrapper deallocates its own when it hands the session back.
    s_->machine.set_prepare_limit(options_.pooling == pooling::none ? detail::prepare_limit(options_) : 0);
    detail::configure_driver(s_->driver, options_);
    s_->driver.adopt(handle);
    s_->conninfo = detail::conninfo_of(handle);
    conninfo_shown_ = detail::redacted_conninfo(s_->conninfo);
  }

  detail::driver_session<Driver>& machine_session() const {
    if (!s_) throw usage_error("this connection was moved from");
    return *s_;
  }
  detail::scope_machine& machine() const { return machine_session().machine; }

  // The observer hears of a statement from the machine once its answer arrives,
  // and from here when it is refused before it could be queued.
  template <class... Params>
  result run(const detail::sql_ref& sql, const Params&... params) {
    auto& s = machine_session();
    detail::sync_session::call guard(s, "execute()");
    detail::param_list list;  // lives until the statement is sent or owns a copy
    std::shared_ptr<detail::statement_slot> slot;
    try {
      const detail::sql_facts& f = s.machine.check_statement(sql.view(), detail::param_count(params...),
                                                             guards(sql.session_state_allowed()));
      list.assign(params...);
      slot = s.machine.queue_statement(sql.c_str(), sql.view(), f, list, s.weak_from_this());
    } catch (const std::exception& e) {
      if (options_.observer) notify_refusal(sql, detail::param_count(params...), e);
      throw;
    }
    result r = s.complete(slot);
    s.machine.recycle(std::move(slot));
    return r;
  }

  void check_session_state(const detail::sql_ref& sql) const {
    check_session_state(sql.view(), sql.session_state_allowed());
  }
  // Whether the pooler guard applies to a statement (allowed: allow_session_state).
  [[nodiscard]] bool guards(bool allowed) const noexcept { return options_.pooling == pooling::transaction && !allowed; }
  void check_session_state(std::string_view sql, bool allowed) const {
    if (!guards(allowed)) return;
    std::string hazard = detail::session_state_hazard(sql);
    if (!hazard.empty()) throw usage_error(hazard);
  }

  // Sends what is queued, then starts the COPY; `dir` 'i' (FROM STDIN) or 'o' (TO STDOUT).
  std::unique_ptr<detail::copy_stream> start_copy(const detail::sql_ref& sql, char dir, const char* what) {
    auto& s = machine_session();
    detail::sync_session::call guard(s, what);
    std::shared_ptr<detail::statement_slot> slot;
    try {
      const char* text = sql.c_str();
      if (detail::copy_direction(sql.view()) != dir)
        throw usage_error(std::string(what) + " needs a COPY ... " + (dir == 'i' ? "FROM STDIN" : "TO STDOUT") +
                          " statement: " + std::string(sql.view().substr(0, 200)));
      check_session_state(sql);
      detail::check_placeholders(sql.view(), 0);
      slot = s.machine.prepare_out_of_band(text, sql.view(), s.weak_from_this());
    } catch (const std::exception& e) {
      if (options_.observer) notify_refusal(sql, 0, e);
      throw;
    }
    s.begin_out_of_band(slot);
    batch_reply br;
    const int started = s.copy_start(slot->stmt, br);
    if (started == 0) {
      (void)s.end_out_of_band(slot, std::move(br));  // throws the server's error
      throw usage_error(std::string(what) + ": the statement did not start a COPY");
    }
    auto st = std::make_unique<detail::copy_stream>(s.shared_from_this(), slot, started == PGRES_COPY_IN);
    if ((started == PGRES_COPY_IN) != (dir == 'i')) {
      st->end_quietly();
      throw usage_error(std::string(what) + ": the server started a COPY in the other direction; use " +
                        (dir == 'i' ? "copy_out()" : "copy_in()"));
    }
    return st;
  }


  void notify_refusal(const detail::sql_ref& sql, std::size_t params, const std::exception& e) const noexcept {
    statement_event ev;
    ev.sql = sql.view();
    ev.params = params;
    ev.depth = depth();
    ev.error = &e;
    try {
      options_.observer(ev);
    } catch (...) {
      // a logging hook must not change what the transaction does
    }
  }

  void close() noexcept;
  void check_listen(const char* what) const { detail::check_listen(what, options_.pooling, depth()); }
  // Notifications the session received and nobody took yet, kept before it closes.
  void keep_received();
  // A new session if the last one was lost, then LISTEN for every channel.
  void restore_listening();
  // A borrowed session goes back without the statements this wrapper prepared.
  void deallocate_prepared() noexcept;

  connection_options options_;
  std::shared_ptr<detail::driver_session<Driver>> s_;
  bool borrowed_ = false;  // borrow(): the caller's PGconn*, handed back, never closed
  std::string conninfo_shown_;  // what conninfo() returns: no password
  std::vector<std::string> channels_;  // listen()
  std::deque<notification> received_;  // taken from a session before it closed
  bool relisten_ = false;              // a new session does not listen to channels_ yet
  bool gap_ = false;                   // a gap to report (wait_notification)
};

// Defined out of the class so that, in separate compilation, the explicit
// instantiation below is the only one of basic_connection<libpq_driver>.
template <class Driver>
PQSCOPE_DECL basic_connection<Driver>::basic_connection(std::string conninfo, connection_options options)
    : options_(std::move(options)),
      s_(std::make_shared<detail::driver_session<Driver>>(std::move(conninfo))),
      conninfo_shown_(detail::redacted_conninfo(s_->conninfo)) {
  s_->machine.set_observer(options_.observer);
  s_->machine.set_savepoint_limit(options_.savepoint_limit, options_.refuse_past_savepoint_limit);
  s_->machine.set_prepare_limit(detail::prepare_limit(options_), options_.pooling == pooling::transaction);
  s_->machine.set_commit_positions(options_.commit_positions);
  detail::configure_driver(s_->driver, options_);
  s_->driver.open(s_->conninfo, detail::default_application_name());
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::flush() {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "flush()");
  s.flush();
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::reconnect() {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "reconnect()");
  if (borrowed_)
    throw usage_error("reconnect() on a borrowed connection: its PGconn* belongs to the code that lent it "
                      "(PQreset() it there, then borrow() it again)");
  if (!s.machine.opened_by_this_process()) s.machine.check_usable();
  if (s.machine.depth() != 0)
    throw usage_error("reconnect() with " + std::to_string(s.machine.depth()) + " scope(s) open; end them first");
  keep_received();
  s.driver.close();
  s.machine.mark_open();
  s.driver.open(s.conninfo, detail::default_application_name());
  if (!channels_.empty()) {
    gap_ = relisten_ = true;
    restore_listening();
  }
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::listen(std::string_view channel) {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "listen()");
  check_listen("listen()");
  const std::string sql = "LISTEN " + detail::listen_identifier(channel, "listen()");
  if (std::find(channels_.begin(), channels_.end(), channel) != channels_.end()) return;
  (void)execute(allow_session_state(sql));
  channels_.emplace_back(channel);
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::unlisten(std::string_view channel) {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "unlisten()");
  check_listen("unlisten()");
  const std::string sql = "UNLISTEN " + detail::listen_identifier(channel, "unlisten()");
  const auto at = std::find(channels_.begin(), channels_.end(), channel);
  if (at == channels_.end()) return;
  (void)execute(allow_session_state(sql));
  channels_.erase(at);
}

template <class Driver>
PQSCOPE_DECL std::optional<notification>
basic_connection<Driver>::wait_notification(std::chrono::milliseconds timeout) {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "wait_notification()");
  check_listen("wait_notification()");
  static_assert(detail::has_notifications<Driver>::value,
                "pqscope: wait_notification() needs a driver with take_notification() and wait_notification() "
                "(libpq_driver)");
  if (timeout.count() < 0) throw usage_error("wait_notification(): the timeout must not be negative");
  for (;;) {
    if (!received_.empty()) {
      notification n = std::move(received_.front());
      received_.pop_front();
      return n;
    }
    if (relisten_) restore_listening();  // throws connection_error while the server cannot be reached
    if (std::exchange(gap_, false)) return detail::gap_notification();
    notification n;
    switch (s.driver.wait_notification(timeout, n)) {
      case Driver::notice_wait::received: return n;
      case Driver::notice_wait::timed_out: return std::nullopt;
      case Driver::notice_wait::lost: break;
    }
    const std::string why = detail::trimmed(PQerrorMessage(s.driver.native_handle()));
    if (channels_.empty()) throw connection_error("connection lost while waiting for notifications: " + why);
    gap_ = relisten_ = true;  // and around again: a new session, then the gap
  }
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::keep_received() {
  auto& s = machine_session();
  if constexpr (detail::has_notifications<Driver>::value) {
    for (;;) {
      notification n;
      if (!s.driver.take_notification(n)) return;
      received_.push_back(std::move(n));
    }
  }
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::restore_listening() {
  auto& s = machine_session();
  if (!s.driver.is_open()) {
    if (borrowed_)
      throw connection_error("the borrowed session was lost; its owner must open a new one and borrow() it again");
    keep_received();
    s.driver.close();
    s.machine.mark_open();
    s.driver.open(s.conninfo, detail::default_application_name());
  }
  for (const std::string& c : channels_)
    (void)execute(allow_session_state("LISTEN " + detail::listen_identifier(c, "listen()")));
  relisten_ = false;
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::close() noexcept {
  if (!s_) return;
  s_->end_stream_quietly();
  s_->machine.mark_closed();
  // In a forked child, closing would end the parent's session.
  if (s_->machine.opened_by_this_process()) {
    if (borrowed_) deallocate_prepared();
    s_->driver.close();
  }
  else
    s_->driver.abandon();
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::deallocate_prepared() noexcept {
  const std::vector<std::string>& names = s_->machine.prepared().names();
  if (names.empty()) return;
  try {
    std::vector<std::string> texts;
    std::vector<statement> batch;
    texts.reserve(names.size());
    batch.reserve(names.size());
    for (const std::string& n : names) texts.push_back("DEALLOCATE " + n);  // pqscope's names need no quoting
    for (const std::string& t : texts) batch.push_back(statement{t.c_str(), 0, nullptr, nullptr});
    (void)s_->driver.exchange(batch);
  } catch (...) {
    // the session is handed back as it is; the names stay until it ends
  }
}

using connection = basic_connection<libpq_driver>;

// Separate compilation: the connection of the default driver is compiled once, with the rest.
PQSCOPE_COMPILED_ONCE(class basic_connection<libpq_driver>)

}  // namespace pqscope
