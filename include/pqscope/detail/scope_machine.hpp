#pragma once
// The scope state machine: the whole of pqscope's transaction logic.
//
// A connection holds a stack of frames, one per open scope. Frame 0 is the
// transaction; a nested frame owns a savepoint unless it was opened with
// savepoint = false. Nothing is sent when a scope opens: its BEGIN or SAVEPOINT
// waits in `pending_` and goes out in the same pipeline batch as the next
// statement (one round trip), as do RELEASE and ROLLBACK TO of scopes that ended.
// Only the end of the outermost scope is sent at once, so that no transaction is
// ever left idle behind PgBouncer.
//
// Every pending control statement has a `level`: the index of the innermost frame
// whose savepoint would undo it. Rolling back frame k drops everything pending at
// level >= k; ending frame k moves what it leaves behind down to level k - 1.
//
// A failure inside a scope dooms it: `doom_` names the innermost frame that owns
// a savepoint (or the transaction) and the first error. Until that frame is
// rolled back, statements and commits throw transaction_aborted without a round
// trip; committing it rolls it back and throws.

#include <pthread.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/params.hpp>
#include <pqscope/result.hpp>
#include <pqscope/stats.hpp>
#include <pqscope/detail/sql_text.hpp>

namespace pqscope::detail {

// The process id, read once and refreshed in the child by a fork handler: getpid()
// is a system call (glibc no longer caches it) and the fork check runs on every
// statement and scope.
inline std::atomic<pid_t>& pid_slot() noexcept {
  static std::atomic<pid_t> pid{::getpid()};
  return pid;
}
inline pid_t current_pid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { pid_slot().store(::getpid(), std::memory_order_relaxed); });
    pid_slot().store(::getpid(), std::memory_order_relaxed);  // in case a fork came before registration
    return true;
  }();
  (void)registered;
  return pid_slot().load(std::memory_order_relaxed);
}

class scope_machine {
 public:
  using callback = std::function<void()>;

  scope_machine() = default;
  scope_machine(const scope_machine&) = delete;
  scope_machine& operator=(const scope_machine&) = delete;
  virtual ~scope_machine() = default;

  [[nodiscard]] std::size_t depth() const noexcept { return frames_.size(); }
  [[nodiscard]] const connection_stats& stats() const noexcept { return stats_; }

  // ---- scopes -------------------------------------------------------------

  std::uint64_t open(const transaction_options& o) {
    check_usable();
    if (o.statement_timeout.count() < 0 || o.lock_timeout.count() < 0)
      throw usage_error("transaction_options: statement_timeout and lock_timeout must not be negative");
    if (!frames_.empty()) {
      const transaction_options& root = frames_.front().opts;
      if (o.durable)
        throw usage_error("a durable scope must be the outermost one, but " + std::to_string(depth()) +
                          " scope(s) are open: a durable scope promises a real COMMIT at its end");
      if (o.isolation != isolation::server_default && o.isolation != root.isolation)
        throw usage_error("a nested scope cannot change the isolation level of the transaction it is part of; "
                          "set it on the outermost scope");
      if (o.read_only && !root.read_only)
        throw usage_error("a nested scope cannot make a read-write transaction read-only; set read_only on the "
                          "outermost scope");
      if (o.deferrable && !root.deferrable)
        throw usage_error("a nested scope cannot make the transaction deferrable; set it on the outermost scope");
      throw_if_doomed("opening a nested scope");
    }
    const std::size_t i = frames_.size();
    frame f;
    f.id = next_id_++;
    f.opts = o;
    f.owning = i == 0 || o.savepoint;
    frames_.push_back(std::move(f));
    const std::uint64_t id = frames_.back().id;
    if (i == 0) {
      xid_.clear();
      queue(control::open, id, 0, begin_sql(o));
    }
    else if (o.savepoint)
      queue(control::open, id, i, "SAVEPOINT " + savepoint_name(i));
    if (o.statement_timeout.count() > 0)
      queue(control::timeout, id, i, "SET LOCAL statement_timeout = " + std::to_string(o.statement_timeout.count()));
    if (o.lock_timeout.count() > 0)
      queue(control::timeout, id, i, "SET LOCAL lock_timeout = " + std::to_string(o.lock_timeout.count()));
    return id;
  }

  // Returns normally or throws; either way, `committed` (when given) says whether
  // the scope's work was committed, which an on_commit callback that throws after a
  // successful COMMIT would otherwise hide.
  void commit(std::uint64_t id, bool* committed = nullptr) {
    if (committed != nullptr) *committed = false;
    if (!opened_by_this_process()) check_usable();
    const std::size_t i = innermost_index(id, "commit()");
    if (closed_ || broken_) {
      end_rollback(i, /*quiet=*/true);
      check_usable();
    }
    if (doom_) {
      const doom d = *doom_;
      end_rollback(i, /*quiet=*/false);
      throw transaction_aborted("commit() refused: the scope was rolled back instead, because " + d.message,
                                d.message, d.sqlstate);
    }
    if (i == 0) {
      commit_outermost(committed);
    } else {
      commit_nested(i);
      if (committed != nullptr) *committed = true;
    }
  }

  void rollback(std::uint64_t id) {
    if (!opened_by_this_process()) check_usable();
    end_rollback(innermost_index(id, "rollback()"), /*quiet=*/false); }

  // Ends scope `id` and every scope opened inside it, rolling back; never throws.
  // Used by destructors, also when scopes are destroyed out of order.
  void abandon(std::uint64_t id) noexcept {
    auto at = index_of(id);
    if (!at) return;
    while (frames_.size() > *at) {
      try {
        end_rollback(frames_.size() - 1, /*quiet=*/true);
      } catch (...) {
        // end_rollback(quiet) only throws if memory runs out; the frame is gone either way
      }
    }
  }

  [[nodiscard]] std::optional<std::size_t> index_of(std::uint64_t id) const noexcept {
    for (std::size_t i = 0; i < frames_.size(); ++i)
      if (frames_[i].id == id) return i;
    return std::nullopt;
  }

  // ---- statements -----------------------------------------------------------

  result run(const char* sql, const param_list& params) {
    check_usable();
    if (std::string_view kw = transaction_control_keyword(sql); !kw.empty())
      throw usage_error("execute(\"" + std::string(kw) + " ...\") would control the transaction behind pqscope's back; use "
                        "pqscope::transaction (commit()/rollback()) or pqscope::atomic instead");
    if (is_copy_stream(sql))
      throw usage_error("COPY FROM STDIN / TO STDOUT is not supported by execute(); use native_handle() at depth 0");
    throw_if_doomed("statement refused");

    batch b = pending_batch();
    b.statements.push_back(statement{sql, params.size(), params.values(), params.types()});
    // Learn the transaction id in the same round trip, for resolving a lost COMMIT.
    const bool want_xid = !frames_.empty() && frames_.front().opts.resolve_in_doubt && xid_.empty();
    if (want_xid)
      b.statements.push_back(statement{"SELECT pg_catalog.pg_current_xact_id_if_assigned()::text", 0, nullptr, nullptr});
    batch_reply br = exchange(b.statements, 1);
    if (br.lost) fail_lost(br, "");
    auto failed = settle_controls(br, b.count);
    reply& mine = br.replies[b.count];
    if (want_xid) {
      const reply& x = br.replies.back();
      if (x.st == reply::status::ok && x.res.size() == 1 && !x.res[0][0].is_null()) xid_ = x.res[0][0].text();
    }
    check_state(br, failed.has_value() || mine.st == reply::status::error);
    if (failed) raise(*failed);
    if (mine.st == reply::status::error) {
      doom_here(mine.message, mine.sqlstate);
      throw_sql_error(mine.message, mine.sqlstate, mine.detail, mine.hint);
    }
    return std::move(mine.res);
  }

  void set_local(std::string_view name, std::string_view value) {
    check_usable();
    if (frames_.empty())
      throw usage_error("set_local(\"" + std::string(name) +
                        "\") outside a scope: a session-level setting would leak to other clients of a "
                        "pooled server connection; open a pqscope::transaction first");
    if (name.empty()) throw usage_error("set_local(): the setting name is empty");
    throw_if_doomed("set_local() refused");
    param_list check = param_list::of(name, value);  // refuses NUL bytes before anything is queued
    (void)check;
    const std::size_t i = frames_.size() - 1;
    control& c = queue(control::setting, frames_.back().id, i, "SELECT pg_catalog.set_config($1, $2, true)");
    c.args = {std::string(name), std::string(value)};
    c.context = "set_local(\"" + std::string(name) + "\"): ";
  }

  void on_commit(callback fn) {
    check_usable();
    if (frames_.empty()) {
      fn();  // autocommit: what ran before is already durable
      return;
    }
    frames_.back().on_commit.push_back(std::move(fn));
  }

  void on_rollback(callback fn) {
    check_usable();
    if (!frames_.empty()) frames_.back().on_rollback.push_back(std::move(fn));
    // outside a scope there is nothing to roll back: the callback can never run
  }

  // ---- connection life --------------------------------------------------------

  // The connection object is gone (or reconnecting): scopes still open end quietly.
  void mark_closed() noexcept {
    closed_ = true;
    pending_.clear();
    doom_.reset();
  }
  void mark_open() noexcept {
    closed_ = false;
    broken_ = false;
    broken_reason_.clear();
    pending_.clear();
    doom_.reset();
    pid_ = current_pid();
  }
  [[nodiscard]] bool opened_by_this_process() const noexcept { return pid_ == current_pid(); }

  void check_usable() const {
    if (pid_ != current_pid())
      throw usage_error("this connection was opened by process " + std::to_string(pid_) +
                        "; after fork() a child must open its own connection (database::connect())");
    if (closed_) throw connection_error("the connection was closed while this scope was open");
    if (broken_)
      throw connection_error("the connection is broken (" + broken_reason_ +
                             "); end the open scopes and call reconnect()");
  }

 protected:
  virtual batch_reply do_exchange(const std::vector<statement>& statements) = 0;
  // "committed", "aborted", or why it could not tell; asked on a fresh connection.
  virtual std::string xact_status(const std::string& xid) noexcept = 0;

 private:
  struct control {
    enum kind { open, timeout, setting, release, rollback_to, restore } k;
    std::uint64_t frame_id;  // the frame that queued it
    std::size_t level;
    std::string sql;
    std::vector<std::string> args;
    std::string context;  // prefix for its error message
  };
  struct frame {
    std::uint64_t id = 0;
    transaction_options opts;
    bool owning = true;
    bool sent = false;  // its BEGIN / SAVEPOINT has run on the server
    std::vector<callback> on_commit, on_rollback;
  };
  struct doom {
    std::size_t level;
    std::string message, sqlstate;
  };
  struct failure {
    std::string message, sqlstate, detail, hint;
  };
  // Statements built from pending_, with the argument pointers they need.
  struct batch {
    std::vector<statement> statements;
    std::vector<std::vector<const char*>> args;
    std::size_t count = 0;  // control statements at the front
  };

  static std::string savepoint_name(std::size_t level) { return "pqscope_" + std::to_string(level); }

  static std::string begin_sql(const transaction_options& o) {
    std::string modes;
    auto add = [&](const char* m) { modes += (modes.empty() ? " " : ", ") + std::string(m); };
    switch (o.isolation) {
      case isolation::read_committed: add("ISOLATION LEVEL READ COMMITTED"); break;
      case isolation::repeatable_read: add("ISOLATION LEVEL REPEATABLE READ"); break;
      case isolation::serializable: add("ISOLATION LEVEL SERIALIZABLE"); break;
      case isolation::server_default: break;
    }
    if (o.read_only) add("READ ONLY");
    if (o.deferrable) add("DEFERRABLE");
    return "BEGIN" + modes;
  }

  control& queue(control::kind k, std::uint64_t frame_id, std::size_t level, std::string sql) {
    pending_.push_back(control{k, frame_id, level, std::move(sql), {}, {}});
    return pending_.back();
  }
  void drop_pending(const std::function<bool(const control&)>& pred) {
    pending_.erase(std::remove_if(pending_.begin(), pending_.end(), pred), pending_.end());
  }
  void lower_levels(std::size_t from) {
    for (control& c : pending_)
      if (c.level >= from) c.level = from - 1;
  }

  std::size_t innermost_index(std::uint64_t id, const char* what) const {
    auto at = index_of(id);
    if (!at) throw usage_error(std::string(what) + ": this scope has already ended");
    if (*at + 1 != frames_.size())
      throw usage_error(std::string(what) + " on a scope while " + std::to_string(frames_.size() - *at - 1) +
                        " scope(s) opened inside it are still open; end the inner scopes first");
    return *at;
  }

  void throw_if_doomed(const std::string& what) const {
    if (frames_.empty() || !doom_) return;
    throw transaction_aborted(what + ": an earlier failure in this scope (" + doom_->message +
                                  ") means it can only roll back; let the exception leave the scope, or "
                                  "catch it outside the scope",
                              doom_->message, doom_->sqlstate);
  }

  // The innermost frame whose savepoint (or transaction) can undo a failure.
  [[nodiscard]] std::size_t undo_level() const noexcept {
    for (std::size_t i = frames_.size(); i-- > 0;)
      if (frames_[i].owning && frames_[i].sent) return i;
    return 0;
  }
  void doom_here(const std::string& message, const std::string& sqlstate) {
    if (!frames_.empty() && !doom_) doom_ = doom{undo_level(), message, sqlstate};
  }

  batch pending_batch() const {
    batch b;
    b.count = pending_.size();
    b.args.resize(pending_.size());
    b.statements.reserve(pending_.size() + 1);
    for (std::size_t i = 0; i < pending_.size(); ++i) {
      for (const std::string& a : pending_[i].args) b.args[i].push_back(a.c_str());
      b.statements.push_back(statement{pending_[i].sql.c_str(), static_cast<int>(b.args[i].size()),
                                        b.args[i].empty() ? nullptr : b.args[i].data(), nullptr});
    }
    return b;
  }

  batch_reply exchange(const std::vector<statement>& statements, std::size_t user_statements) {
    ++stats_.round_trips;
    stats_.statements += user_statements;
    stats_.control_statements += statements.size() - user_statements;
    return do_exchange(statements);
  }
  batch_reply exchange_one(const char* sql) { return exchange({statement{sql, 0, nullptr, nullptr}}, 0); }

  // Applies the answers to the first `count` pending controls: what ran leaves the
  // queue, what was skipped stays. Returns the first failure, if any.
  std::optional<failure> settle_controls(const batch_reply& br, std::size_t count) {
    std::size_t done = 0;
    std::optional<failure> failed;
    for (; done < count; ++done) {
      const reply& r = br.replies[done];
      const control& c = pending_[done];
      if (r.st == reply::status::skipped) break;
      if (r.st == reply::status::error) {
        failed = failure{c.context + r.message, r.sqlstate, r.detail, r.hint};
        ++done;
        break;
      }
      if (c.k == control::open) {
        if (auto at = index_of(c.frame_id)) frames_[*at].sent = true;
        if (c.level > 0) ++stats_.savepoints;
      }
    }
    pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(done));
    if (failed) doom_here(failed->message, failed->sqlstate);
    return failed;
  }

  [[noreturn]] static void raise(const failure& f) { throw_sql_error(f.message, f.sqlstate, f.detail, f.hint); }

  // The session is gone: nothing pending can be sent, nothing doomed can be undone.
  void mark_broken(const std::string& why) {
    broken_ = true;
    broken_reason_ = why;
    pending_.clear();
    doom_.reset();
  }

  [[noreturn]] void fail_lost(const batch_reply& br, const std::string& after_commit) {
    mark_broken(br.lost_message);
    if (!after_commit.empty()) throw in_doubt_error(after_commit + br.lost_message);
    throw connection_error("connection lost: " + br.lost_message);
  }

  // The server's own word on the session must match the scope stack.
  void check_state(const batch_reply& br, bool had_error) {
    const bool began = !frames_.empty() && frames_.front().sent;
    if (began && (br.state == server_state::in_transaction || br.state == server_state::failed_transaction)) return;
    if (!began && br.state == server_state::idle) return;
    if (frames_.empty() || !began) {
      // A transaction is open that no scope owns: never leave it idle behind PgBouncer.
      batch_reply rb = exchange_one("ROLLBACK");
      if (rb.lost) fail_lost(rb, "");
      throw usage_error("a statement left the session inside a transaction that no pqscope scope owns; pqscope "
                        "rolled it back. Use pqscope::transaction or pqscope::atomic for transactions");
    }
    // The transaction ended behind the scopes' back: nothing is left to undo.
    for (frame& f : frames_) f.sent = false;
    pending_.clear();
    doom_ = doom{0, "the transaction was ended by a statement outside pqscope's control", ""};
    if (!had_error)
      throw usage_error("a statement ended the transaction behind pqscope's back; the open scopes can only roll "
                        "back now");
  }

  void commit_outermost(bool* committed) {
    auto done = [&] {
      ++stats_.transactions_committed;
      if (committed != nullptr) *committed = true;
    };
    frame f = std::move(frames_.front());
    frames_.pop_back();
    if (!f.sent) {  // nothing ever reached the server: nothing to commit
      pending_.clear();
      if (committed != nullptr) *committed = true;
      run_callbacks(f.on_commit, false);
      return;
    }
    // COMMIT releases every savepoint and ends every SET LOCAL: of what is pending,
    // only a ROLLBACK TO still matters (it undoes writes, or a failed state).
    drop_pending([](const control& c) { return c.k != control::rollback_to; });
    batch b = pending_batch();
    b.statements.push_back(statement{"COMMIT", 0, nullptr, nullptr});
    batch_reply br = exchange(b.statements, 0);
    if (br.lost && f.opts.resolve_in_doubt) {
      mark_broken(br.lost_message);
      const std::string outcome = xid_.empty() ? "committed" : xact_status(xid_);
      if (outcome == "committed") {  // without an xid the transaction wrote nothing: nothing was lost
        done();
        run_callbacks(f.on_commit, false);
        return;
      }
      if (outcome == "aborted") {
        ++stats_.transactions_rolled_back;
        run_callbacks(f.on_rollback, false);
        throw connection_error("the connection was lost while COMMIT was in flight, and the server rolled the "
                               "transaction back (pg_xact_status of xid " + xid_ + "): " + br.lost_message);
      }
      throw in_doubt_error("the connection was lost after COMMIT was sent, and asking the server about xid " + xid_ +
                           " gave no answer (" + outcome + "); the transaction may or may not have committed: " +
                           br.lost_message);
    }
    if (br.lost)
      fail_lost(br, "the connection was lost after COMMIT was sent, so the transaction may or may not have "
                    "committed: ");
    auto failed = settle_controls(br, b.count);
    pending_.clear();
    doom_.reset();
    const reply& mine = br.replies.back();
    if (failed || mine.st != reply::status::ok) {
      if (br.state != server_state::idle) {  // COMMIT was skipped: the transaction is still open
        batch_reply rb = exchange_one("ROLLBACK");
        if (rb.lost) fail_lost(rb, "");
      }
      ++stats_.transactions_rolled_back;
      run_callbacks(f.on_rollback, false);
      if (failed) raise(*failed);
      throw_sql_error(mine.message, mine.sqlstate, mine.detail, mine.hint);
    }
    if (mine.command != "COMMIT") {  // the server answers ROLLBACK for a failed transaction
      ++stats_.transactions_rolled_back;
      run_callbacks(f.on_rollback, false);
      throw transaction_aborted("COMMIT was answered with " + mine.command +
                                    ": the transaction had failed and was rolled back",
                                "the server rolled the transaction back", "");
    }
    done();
    run_callbacks(f.on_commit, false);
  }

  void commit_nested(std::size_t i) {
    frame f = std::move(frames_.back());
    frames_.pop_back();
    // Timeouts that never went out need no undoing; ones that did are restored
    // below, since SET LOCAL survives RELEASE SAVEPOINT.
    const auto before = pending_.size();
    drop_pending([&](const control& c) { return c.frame_id == f.id && c.k == control::timeout; });
    const bool timeouts_sent = before == pending_.size();
    if (f.owning && !f.sent)
      drop_pending([&](const control& c) { return c.frame_id == f.id && c.k == control::open; });
    lower_levels(i);
    if (f.owning && f.sent) {
      // RELEASE of savepoint i also releases the deeper ones still waiting at the tail.
      while (!pending_.empty() && pending_.back().k == control::release) pending_.pop_back();
      queue(control::release, f.id, i - 1, "RELEASE SAVEPOINT " + savepoint_name(i));
    }
    if (timeouts_sent) {
      restore_timeout(f, i, "statement_timeout", &transaction_options::statement_timeout);
      restore_timeout(f, i, "lock_timeout", &transaction_options::lock_timeout);
    }
    frame& parent = frames_.back();
    for (auto& cb : f.on_commit) parent.on_commit.push_back(std::move(cb));
    for (auto& cb : f.on_rollback) parent.on_rollback.push_back(std::move(cb));
  }

  void restore_timeout(const frame& f, std::size_t i, const char* name,
                       std::chrono::milliseconds transaction_options::*member) {
    if ((f.opts.*member).count() <= 0) return;
    std::string value = "DEFAULT";
    for (std::size_t j = frames_.size(); j-- > 0;)
      if ((frames_[j].opts.*member).count() > 0) {
        value = std::to_string((frames_[j].opts.*member).count());
        break;
      }
    queue(control::restore, f.id, i - 1, std::string("SET LOCAL ") + name + " TO " + value);
  }

  // Ends frame i (the innermost) by rolling back. `quiet`: never throw (destructor
  // path): callback exceptions are swallowed.
  void end_rollback(std::size_t i, bool quiet) {
    frame f = std::move(frames_.back());
    frames_.pop_back();
    if (i == 0) {
      pending_.clear();
      doom_.reset();
      bool lost = false;
      batch_reply rb;
      // In a forked child the socket is the parent's: send nothing on it.
      if (f.sent && !closed_ && !broken_ && opened_by_this_process()) {
        rb = exchange_one("ROLLBACK");
        ++stats_.transactions_rolled_back;
        if (rb.lost) {
          mark_broken(rb.lost_message);
          lost = true;
        }
      }
      // A lost connection rolls back too: the server never saw a COMMIT. In a forked
      // child nothing was rolled back: the transaction is the parent's.
      if (opened_by_this_process()) run_callbacks(f.on_rollback, quiet);
      if (lost && !quiet) throw connection_error("connection lost during ROLLBACK: " + rb.lost_message);
      return;
    }
    if (f.owning) {
      drop_pending([&](const control& c) { return c.level >= i; });
      if (f.sent) {
        queue(control::rollback_to, f.id, i - 1, "ROLLBACK TO SAVEPOINT " + savepoint_name(i));
        queue(control::release, f.id, i - 1, "RELEASE SAVEPOINT " + savepoint_name(i));
      }
      if (doom_ && doom_->level >= i) doom_.reset();
    } else {
      lower_levels(i);
      // Its work is undone only with the enclosing scope: its on_rollback callbacks wait for that.
      for (auto& cb : f.on_rollback) frames_.back().on_rollback.push_back(std::move(cb));
      // Without a savepoint nothing can be undone on its own: the enclosing scope is doomed.
      if (!doom_) {
        std::size_t level = i - 1;
        while (level > 0 && !frames_[level].owning) --level;
        doom_ = doom{level, "a nested scope without a savepoint was rolled back", ""};
      }
    }
  }

  // Runs every callback; the first exception is rethrown after all ran (not when quiet).
  static void run_callbacks(std::vector<callback>& cbs, bool quiet) {
    std::exception_ptr first;
    for (auto& cb : cbs) {
      try {
        cb();
      } catch (...) {
        if (!first) first = std::current_exception();
      }
    }
    if (first && !quiet) std::rethrow_exception(first);
  }

  std::vector<frame> frames_;
  std::vector<control> pending_;
  std::optional<doom> doom_;
  std::uint64_t next_id_ = 1;
  bool closed_ = false;
  bool broken_ = false;
  std::string broken_reason_;
  std::string xid_;  // the transaction's id once it has one (resolve_in_doubt)
  pid_t pid_ = current_pid();
  connection_stats stats_;
};

// The machine bound to a driver.
template <class Driver>
class driver_session final : public scope_machine {
 public:
  explicit driver_session(std::string info) : conninfo(std::move(info)) {}

  Driver driver;
  std::string conninfo;  // what the session was opened with; also for resolving a lost COMMIT

 protected:
  batch_reply do_exchange(const std::vector<statement>& statements) override { return driver.exchange(statements); }

  std::string xact_status(const std::string& xid) noexcept override {
    try {
      Driver fresh;
      fresh.open(conninfo, "pqscope in-doubt resolver");
      const char* values[] = {xid.c_str()};
      const statement ask{"SELECT pg_catalog.pg_xact_status($1::xid8)", 1, values, nullptr};
      // A backend that was cut off may still be finishing: wait for its verdict.
      for (int attempt = 0; attempt < 100; ++attempt) {
        batch_reply br = fresh.exchange({ask});
        if (br.lost) return "connection lost: " + br.lost_message;
        const reply& r = br.replies.front();
        if (r.st != reply::status::ok) return "error: " + r.message;
        if (r.res.size() != 1 || r.res[0][0].is_null()) return "unknown xid";
        std::string status(r.res[0][0].text());
        if (status != "in progress") return status;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
      return "still in progress after 5 s";
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown failure";
    }
  }
};

}  // namespace pqscope::detail
