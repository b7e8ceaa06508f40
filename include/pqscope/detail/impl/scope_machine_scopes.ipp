#pragma once
// Frames and the doomed state: opening and ending scopes (the outermost one's
// COMMIT or ROLLBACK, a nested one's RELEASE or ROLLBACK TO), the savepoint budget,
// SET LOCAL and its restoring, on_commit / on_rollback callbacks, and the end step
// of an operation. Included by detail/scope_machine.hpp.

#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/impl/queue_edits.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pqscope::detail {

PQSCOPE_DECL std::string scope_machine::savepoint_name(std::size_t level) { return "pqscope_" + std::to_string(level); }

PQSCOPE_DECL void scope_machine::set_observer(pqscope::callback<void(const statement_event&)> o) {
  observer_ = std::move(o);
}

PQSCOPE_DECL scope_machine::~scope_machine() { fail_queued(closed_error()); }

PQSCOPE_DECL void scope_machine::set_savepoint_limit(std::size_t limit, bool refuse) noexcept {
  savepoint_limit_ = limit;
  refuse_past_limit_ = refuse;
}

PQSCOPE_DECL std::uint64_t scope_machine::open(const transaction_options& o, attempt_info attempt) {
  check_usable();
  if (o.statement_timeout.count() < 0 || o.lock_timeout.count() < 0 || o.resolve_wait.count() < 0)
    throw usage_error("transaction_options: statement_timeout, lock_timeout and resolve_wait must not be negative");
  if (frames_.empty()) lost_statement_ = false;
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
    if (root.at_least < o.at_least)
      throw usage_error("a nested scope cannot ask to see a later WAL position (at_least " + o.at_least.to_string() +
                        ") than its transaction does (" + root.at_least.to_string() +
                        "): set at_least on the outermost scope");
    throw_if_void("opening a nested scope");
    throw_if_doomed("opening a nested scope");
    attempt = frames_.front().attempt;
  }
  const std::size_t i = frames_.size();
  if (i > 0 && o.savepoint) check_savepoint_budget(frames_.front().opts, i);
  frame f;
  f.id = next_id_++;
  f.opts = o;
  f.owning = i == 0 || o.savepoint;
  f.attempt = attempt;
  frames_.push_back(std::move(f));
  const std::uint64_t id = frames_.back().id;
  if (i == 0) {
    xid_ = in_doubt{};
    xid_pending_ = false;
    void_.reset();
    if (attempt.batched) ++stats_.batched_attempts;
    if (!o.at_least.empty()) queue_check(id, o);
    queue(item::begin, id, 0, "BEGIN");
    // Not BEGIN ISOLATION LEVEL ...: Pgpool-II 4.3 (streaming_replication mode)
    // drops the modes from BEGIN, and keeps SET TRANSACTION. Same batch: no round trip.
    std::string modes = modes_sql(o);
    if (!modes.empty()) queue_owned(item::begin, id, 0, std::move(modes));
  } else if (o.savepoint) {
    queue(item::savepoint, id, i).sp = i;  // its text is written when it is sent (most never are)
  }
  if (o.statement_timeout.count() > 0)
    queue_owned(item::timeout, id, i, "SET LOCAL statement_timeout = " + std::to_string(o.statement_timeout.count()));
  if (o.lock_timeout.count() > 0)
    queue_owned(item::timeout, id, i, "SET LOCAL lock_timeout = " + std::to_string(o.lock_timeout.count()));
  return id;
}

PQSCOPE_DECL std::optional<std::size_t> scope_machine::index_of(std::uint64_t id) const noexcept {
  for (std::size_t i = 0; i < frames_.size(); ++i)
    if (frames_[i].id == id) return i;
  return std::nullopt;
}

PQSCOPE_DECL bool scope_machine::end_scope(std::uint64_t id, bool commit, bool quiet) {
  if (!quiet && !opened_by_this_process()) check_usable();
  const std::size_t i = innermost_index(id, commit ? "commit()" : "rollback()");
  reset_operation();
  op_.commit = commit;
  op_.quiet = quiet;
  if ((closed_ || broken_) && commit) {
    if (i == 0) {
      pop_outermost();
      if (opened_by_this_process()) run_callbacks(op_.ended.on_rollback, true);
      reset_operation();
    } else {
      end_nested_rollback(i);
    }
    check_usable();  // throws
  }
  if (void_) {  // the attempt is rolled back on the server already; its callbacks never fire
    frames_.pop_back();
    if (i == 0) {
      queue_.clear();
      op_.replay = true;
      return true;
    }
    if (commit && !quiet) throw_void("commit() refused");
    return false;
  }
  if (commit && doom_) {
    op_.refused = *doom_;
    op_.commit = false;
  }
  if (i == 0) {
    start_outermost();
    return true;
  }
  if (op_.commit) {
    commit_nested(i);
    return false;
  }
  end_nested_rollback(i);
  if (op_.refused && !quiet) refuse(*op_.refused);
  return false;
}

PQSCOPE_DECL std::optional<in_doubt> scope_machine::needs_resolution() const {
  if (op_.lost && op_.commit && op_.sent_end && op_.ended.opts.resolve_in_doubt && op_.xid.known()) {
    in_doubt q = op_.xid;
    q.wait = op_.ended.opts.resolve_wait;
    return q;
  }
  return std::nullopt;
}

PQSCOPE_DECL void scope_machine::resolve(std::string outcome) {
  op_.resolved = true;
  op_.resolution = std::move(outcome);
}

PQSCOPE_DECL void scope_machine::finish_end(bool* committed) {
  if (committed != nullptr) *committed = false;
  operation op = std::move(op_);
  reset_operation();
  frame& f = op.ended;
  if (op.replay) {
    if (op.quiet) return;
    throw_void(op.commit ? "commit() refused" : "rollback()");
  }
  if (!op.commit) {
    if (op.sent_end) ++stats_.transactions_rolled_back;
    // In a forked child nothing was rolled back: the transaction is the parent's.
    if (opened_by_this_process()) run_callbacks(f.on_rollback, op.quiet);
    if (op.lost && !op.quiet) throw connection_error("connection lost during ROLLBACK: " + *op.lost);
    if (op.refused && !op.quiet) refuse(*op.refused);
    return;
  }
  auto done = [&] {
    ++stats_.transactions_committed;
    if (committed != nullptr) *committed = true;
    // Before on_commit, which may read it. A commit whose position is unknown (its
    // query failed, or the answer was lost) leaves no position rather than an older
    // one that this transaction's writes are past.
    if (op.position_asked) last_commit_position_ = op.position;
    run_callbacks(f.on_commit, false);
  };
  if (!op.sent_end) {  // nothing ever reached the server: nothing to commit
    if (committed != nullptr) *committed = true;
    run_callbacks(f.on_commit, false);
    return;
  }
  // The COMMIT's own answer arrived before the connection went (only the position
  // query behind it was lost): it committed.
  if (op.lost && op.end_reply.st == reply::status::ok && op.end_reply.tag() == "COMMIT") return done();
  if (op.lost && f.opts.resolve_in_doubt && !op.xid_unknown) {
    // Without an xid the transaction wrote nothing: nothing was lost.
    const std::string outcome = !op.xid.known() ? "committed" : op.resolved ? op.resolution : "not asked";
    if (outcome == "committed") return done();
    if (outcome == "aborted" || is_absent(outcome)) {
      ++stats_.transactions_rolled_back;
      run_callbacks(f.on_rollback, false);
      throw connection_error(
          "the connection was lost while COMMIT was in flight, and the transaction did not commit (" +
          (is_absent(outcome) ? "xid " + op.xid.xid + " is not in the server's history; " + outcome.substr(8)
                              : "pg_xact_status of xid " + op.xid.xid + ": aborted") +
          "): " + *op.lost);
    }
    forget_position(op);
    throw in_doubt_error("the connection was lost after COMMIT was sent, and asking the server about xid " +
                         op.xid.xid + " gave no answer (" + outcome +
                         "); the transaction may or may not have committed: " + *op.lost);
  }
  if (op.lost) {
    forget_position(op);
    throw in_doubt_error("the connection was lost after COMMIT was sent, so the transaction may or may not have "
                         "committed: " + *op.lost);
  }
  if (op.failure || op.end_reply.st != reply::status::ok) {
    ++stats_.transactions_rolled_back;
    run_callbacks(f.on_rollback, false);
    if (op.followup_lost) throw connection_error("connection lost: " + *op.followup_lost);
    if (op.failure) std::rethrow_exception(op.failure);
    std::rethrow_exception(sql_error_ptr(op.end_reply, "COMMIT"));
  }
  if (op.end_reply.tag() != "COMMIT") {  // the server answers ROLLBACK for a failed transaction
    ++stats_.transactions_rolled_back;
    run_callbacks(f.on_rollback, false);
    throw transaction_aborted("COMMIT was answered with " + std::string(op.end_reply.tag()) +
                                  ": the transaction had failed and was rolled back",
                              "the server rolled the transaction back", "");
  }
  done();
}

PQSCOPE_DECL void scope_machine::set_local(std::string_view name, std::string_view value) {
  check_usable();
  if (frames_.empty())
    throw usage_error("set_local(\"" + std::string(name) +
                      "\") outside a scope: a session-level setting would leak to other clients of a "
                      "pooled server connection; open a pqscope::transaction first");
  if (name.empty()) throw usage_error("set_local(): the setting name is empty");
  throw_if_void("set_local() refused");
  throw_if_doomed("set_local() refused");
  param_list check = param_list::of(name, value);  // refuses NUL bytes before anything is queued
  (void)check;
  item& c =
      queue_owned(item::setting, frames_.back().id, frames_.size() - 1, "SELECT pg_catalog.set_config($1, $2, true)");
  c.owned->args = {std::string(name), std::string(value)};
  c.owned->context = "set_local(\"" + std::string(name) + "\"): ";
}

PQSCOPE_DECL void scope_machine::on_commit(callback fn) {
  check_usable();
  if (frames_.empty()) {
    fn();  // autocommit: what ran before is already durable
    return;
  }
  frames_.back().on_commit.push_back(std::move(fn));
}

PQSCOPE_DECL void scope_machine::on_rollback(callback fn) {
  check_usable();
  if (!frames_.empty()) frames_.back().on_rollback.push_back(std::move(fn));
  // outside a scope there is nothing to roll back: the callback can never run
}

PQSCOPE_DECL std::size_t scope_machine::innermost_index(std::uint64_t id, const char* what) const {
  auto at = index_of(id);
  if (!at) throw usage_error(std::string(what) + ": this scope has already ended");
  if (*at + 1 != frames_.size())
    throw usage_error(std::string(what) + " on a scope while " + std::to_string(frames_.size() - *at - 1) +
                      " scope(s) opened inside it are still open; end the inner scopes first");
  return *at;
}

PQSCOPE_DECL void scope_machine::throw_if_doomed(const char* what) const {
  if (frames_.empty() || !doom_) return;
  if (doom_->untold) std::rethrow_exception(std::exchange(doom_->untold, nullptr));
  throw transaction_aborted(std::string(what) + ": an earlier failure in this scope (" + doom_->message +
                                ") means it can only roll back; let the exception leave the scope, or "
                                "catch it outside the scope",
                            doom_->message, doom_->sqlstate);
}

PQSCOPE_DECL void scope_machine::throw_if_void(const char* what) const {
  if (void_ && !frames_.empty()) throw_void(what);
}

PQSCOPE_DECL void scope_machine::throw_void(const char* what) const {
  throw batch_failed(std::string(what) + ": a statement sent with this batched attempt failed (" + void_->message +
                         "); the attempt was rolled back and atomic() runs the function again without batching",
                     void_->message, void_->sqlstate);
}

PQSCOPE_DECL void scope_machine::refuse(const doom& d) {
  throw transaction_aborted("commit() refused: the scope was rolled back instead, because " + d.message, d.message,
                            d.sqlstate);
}

PQSCOPE_DECL std::size_t scope_machine::undo_level() const noexcept {
  for (std::size_t i = frames_.size(); i-- > 0;)
    if (frames_[i].owning && frames_[i].sent) return i;
  return 0;
}

PQSCOPE_DECL void scope_machine::doom_here(const std::string& message, const std::string& sqlstate) {
  if (!frames_.empty() && !doom_) doom_ = doom{undo_level(), message, sqlstate, nullptr};
}

PQSCOPE_DECL void scope_machine::check_savepoint_budget(const transaction_options& root, std::size_t i) {
  const std::size_t limit = root.savepoint_limit != 0 ? root.savepoint_limit : savepoint_limit_;
  if (limit == 0) return;
  std::uint64_t in_use = stats_.savepoints_in_transaction;
  for (const item& c : queue_) in_use += c.k == item::savepoint ? 1 : 0;
  if (in_use < limit) return;
  ++stats_.savepoint_limit_exceeded;
  const std::string why = "opening savepoint " + std::to_string(i) + " would make " + std::to_string(in_use + 1) +
                          " subtransactions in this transaction, past the limit of " + std::to_string(limit) +
                          " (PostgreSQL caches 64 per backend; past that every snapshot slows down)";
  const std::string refusal_text =
      why + "; raise savepoint_limit, use savepoint = false for inner scopes, or split the transaction";
  const usage_error refusal(refusal_text);
  if (observer_) {
    try {
      statement_event ev;
      ev.sql = "SAVEPOINT";
      ev.depth = depth();
      ev.warning = why;
      ev.error = refuse_past_limit_ ? &refusal : nullptr;
      observer_(ev);
    } catch (...) {
      // a logging hook must not change what the transaction does
    }
  }
  if (refuse_past_limit_) throw usage_error(refusal_text);
}

PQSCOPE_DECL void scope_machine::pop_outermost() {
  op_.ended = std::move(frames_.front());
  frames_.pop_back();
}

PQSCOPE_DECL void scope_machine::start_outermost() {
  pop_outermost();
  doom_.reset();
  const bool statements = statement_queued_at(0);
  if (op_.commit)
    // COMMIT releases every savepoint and ends every SET LOCAL: of the controls
    // after the last statement, only a ROLLBACK TO still matters (it undoes writes).
    trim_tail([](const item& c) { return c.k != item::rollback_to; });
  else
    trim_tail([](const item&) { return true; });
  if ((!op_.ended.sent && !statements) || closed_ || broken_ || !opened_by_this_process()) {
    clear_queue();  // nothing reached the server, or nothing can
    return;
  }
  queue(item::end, op_.ended.id, 0, op_.commit ? "COMMIT" : "ROLLBACK");
  send_requested_ = true;
}

PQSCOPE_DECL void scope_machine::commit_nested(std::size_t i) {
  frame f = std::move(frames_.back());
  frames_.pop_back();
  // A SET LOCAL with no statement after it needs no undoing; one that ran, or
  // that a waiting statement needs, is restored below (SET LOCAL survives RELEASE).
  bool timeouts_live = false;
  std::size_t dropped = 0;
  for (std::size_t k = queue_.size(); k-- > 0;) {
    if (queue_[k].frame_id != f.id || queue_[k].k != item::timeout) continue;
    const bool needed = std::any_of(queue_.begin() + static_cast<std::ptrdiff_t>(k) + 1, queue_.end(),
                                    [](const item& c) { return c.k == item::user; });
    if (needed) {
      timeouts_live = true;
    } else {
      queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(k));
      ++dropped;
    }
  }
  const std::size_t timeouts =
      (f.opts.statement_timeout.count() > 0 ? 1u : 0u) + (f.opts.lock_timeout.count() > 0 ? 1u : 0u);
  if (dropped < timeouts) timeouts_live = true;
  // A savepoint not yet sent is not needed: the scope can no longer roll back on
  // its own, and a failure of a waiting statement voids the whole attempt.
  if (f.owning && !f.sent)
    drop_queued([&](const item& c) { return c.frame_id == f.id && c.k == item::savepoint; });
  lower_levels(i);
  if (f.owning && f.sent) {
    // RELEASE of savepoint i also releases the deeper ones still waiting at the tail.
    while (!queue_.empty() && queue_.back().k == item::release) queue_.pop_back();
    queue(item::release, f.id, i - 1).sp = i;
  }
  if (timeouts_live) {
    restore_timeout(f, i, "statement_timeout", &transaction_options::statement_timeout);
    restore_timeout(f, i, "lock_timeout", &transaction_options::lock_timeout);
  }
  frame& parent = frames_.back();
  for (auto& cb : f.on_commit) parent.on_commit.push_back(std::move(cb));
  for (auto& cb : f.on_rollback) parent.on_rollback.push_back(std::move(cb));
}

PQSCOPE_DECL void scope_machine::restore_timeout(const frame& f, std::size_t i, const char* name,
                                                 std::chrono::milliseconds transaction_options::*member) {
  if ((f.opts.*member).count() <= 0) return;
  std::string value = "DEFAULT";
  for (std::size_t j = frames_.size(); j-- > 0;)
    if ((frames_[j].opts.*member).count() > 0) {
      value = std::to_string((frames_[j].opts.*member).count());
      break;
    }
  queue_owned(item::restore, f.id, i - 1, std::string("SET LOCAL ") + name + " TO " + value);
}

PQSCOPE_DECL void scope_machine::end_nested_rollback(std::size_t i) {
  frame f = std::move(frames_.back());
  frames_.pop_back();
  if (f.owning) {
    if (statement_queued_at(i)) {
      // Its statements still wait: they go out after its SAVEPOINT and are undone
      // by the ROLLBACK TO behind them, so their success is still confirmed.
      lower_levels(i);
      queue_rollback_to(f.id, i);
    } else {
      drop_queued([&](const item& c) { return c.level >= i; });
      if (f.sent) queue_rollback_to(f.id, i);
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
      doom_ = doom{level, "a nested scope without a savepoint was rolled back", "", nullptr};
    }
  }
}

PQSCOPE_DECL void scope_machine::run_callbacks(std::vector<callback>& cbs, bool quiet) {
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

}  // namespace pqscope::detail
