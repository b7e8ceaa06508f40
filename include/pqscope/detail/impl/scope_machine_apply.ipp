#pragma once
// Applying a batch's answers: each reply settles its item (a frame's BEGIN or
// SAVEPOINT sent, a statement answered, a savepoint released or rolled back), a
// failure dooms the scope that can undo it or voids a batched attempt, and the
// server's transaction state after the batch is checked against the scopes. The
// observer hears of every statement here. Included by detail/scope_machine.hpp.

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

PQSCOPE_DECL void scope_machine::apply(batch_reply& br) {
  std::vector<item> batch;
  batch.swap(in_flight_);
  // The batch's memory goes back to in_flight_ for the next plan(), however this returns.
  auto give_back = [&]() noexcept {
    for (item& it : batch) recycle(std::move(it.slot));
    batch.clear();
    if (in_flight_.empty() && in_flight_.capacity() < batch.capacity()) in_flight_.swap(batch);
  };
  try {
    apply_batch(batch, br);
  } catch (...) {
    give_back();
    throw;
  }
  give_back();
}

PQSCOPE_DECL void scope_machine::apply_batch(std::vector<item>& batch, batch_reply& br) {
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - sent_at_);
  const bool out_of_band = std::exchange(out_of_band_, false);
  if (br.replies.size() < batch.size()) br.replies.resize(batch.size());

  if (!batch.empty() && batch.front().k == item::followup) {
    end_of_transaction();
    if (br.lost) {
      mark_broken(br.lost_message);
      if (op_.followup) op_.followup_lost = br.lost_message;
    }
    return;
  }

  statement_loss loss;
  if (prepared_.enabled() && !out_of_band) loss = settle_prepared(batch, br);
  if (loss.what == statement_loss::lost && !br.lost && resend_lost(batch, br, loss.at)) return;

  if (!batch.empty() && batch.front().k == item::check && !br.lost && check_says(br.replies[0], isolation_marker)) {
    resend_check_alone(batch, br);
    return;
  }

  std::optional<std::size_t> failed_at;
  bool end_in_batch = false;
  for (std::size_t k = 0; k < batch.size(); ++k) {
    item& it = batch[k];
    reply& r = br.replies[k];
    if (it.k == item::end) {
      end_in_batch = true;
      op_.sent_end = true;
      op_.end_reply = r;
      end_of_transaction();
    }
    if (it.k == item::position) {
      op_.position_asked = true;
      // Never a failure of the batch: the COMMIT before it stands, whatever this
      // query answers (a cancel, an error, nothing); the position is then left empty.
      if (op_.end_reply.st == reply::status::ok && op_.end_reply.tag() == "COMMIT") op_.position = read_position(r);
      continue;
    }
    if (r.st == reply::status::error && !failed_at) failed_at = k;
    if (r.st != reply::status::ok) continue;
    switch (it.k) {
      case item::begin:
      case item::savepoint:
        if (auto at = index_of(it.frame_id)) frames_[*at].sent = true;
        if (it.k == item::begin) held_.assign(1, 0);
        if (it.k == item::savepoint) {
          ++stats_.savepoints;
          hold(it.sp);
        }
        break;
      case item::release:
        fold(it.sp, false);
        break;
      case item::rollback_to:
        fold(it.sp, true);
        break;
      case item::user:
        notify(*it.slot, elapsed, nullptr, &r.res);
        it.slot->answer(std::move(r.res));
        break;
      case item::xid:
        xid_pending_ = false;
        (void)read_probe(r.res, xid_);
        break;
      default: break;
    }
  }

  if (br.lost) {
    if (end_in_batch) {
      op_.lost = br.lost_message;
      op_.xid = xid_;
      op_.xid_unknown = !xid_.known() && xid_pending_;
    }
    mark_broken(br.lost_message);
    const auto e = std::make_exception_ptr(connection_error("connection lost: " + br.lost_message));
    fail_unanswered(batch, e, elapsed);
    return;
  }

  if (failed_at && batch[*failed_at].k == item::check && is_behind(br.replies[*failed_at])) ++stats_.replica_behind;
  // The outermost frame has left the stack once its COMMIT or ROLLBACK is queued:
  // in this batch, or still waiting behind a check that went alone.
  const bool ending = frames_.empty() && op_.ended.id != 0;
  const bool batched_attempt = !out_of_band && (batching() || (ending && op_.ended.attempt.batched));
  if (failed_at && batched_attempt && batch[*failed_at].k != item::end) {
    std::exception_ptr first = failure_of(batch[*failed_at], br.replies[*failed_at], loss, *failed_at);
    void_attempt(batch, *failed_at, br, elapsed, ending, first);
    if (loss.what == statement_loss::misconfigured && loss.at == *failed_at) void_->cause = batch[*failed_at].slot->error;
    return;
  }

  if (failed_at) {
    const item& it = batch[*failed_at];
    const reply& r = br.replies[*failed_at];
    std::exception_ptr first = failure_of(it, r, loss, *failed_at);
    if (loss.what == statement_loss::lost && loss.at == *failed_at && !frames_.empty()) lost_statement_ = true;
    if (it.k == item::check) {
      try {
        std::rethrow_exception(first);
      } catch (const std::exception& e) {
        doom_here(e.what(), is_behind(r) ? std::string() : r.failure().sqlstate);
      }
    } else if (it.k != item::end) {
      doom_here(it.context() + r.failure().message, r.failure().sqlstate);
      if (end_in_batch) op_.failure = first;
    }
    std::size_t told = fail_unanswered(batch, first, elapsed);
    if (it.k == item::check && it.alone) {
      // The statements that waited for it fail with it, unsent.
      told += fail_unanswered(queue_, first, elapsed);
      drop_queued([](const item& c) { return c.k == item::user; });
      send_requested_ = send_all_ = false;
    }
    if (it.k == item::check && told == 0 && doom_) doom_->untold = first;
    if (!end_in_batch) {
      // Skipped controls never ran: back to the queue, to ride with the next batch.
      std::vector<item> back;
      for (std::size_t k = *failed_at + 1; k < batch.size(); ++k)
        if (batch[k].k != item::user && batch[k].k != item::xid && batch[k].k != item::position)
          back.push_back(std::move(batch[k]));
      queue_.insert(queue_.begin(), std::make_move_iterator(back.begin()), std::make_move_iterator(back.end()));
    }
  }
  if (end_in_batch) {
    // COMMIT or ROLLBACK was skipped or refused and the transaction is still open:
    // end it now (whatever skipped it, no transaction is left open).
    if ((failed_at || op_.end_reply.st != reply::status::ok) && br.state != server_state::idle)
      push_followup("ROLLBACK", true);
    return;
  }
  check_state(br, failed_at.has_value());
}

PQSCOPE_DECL void scope_machine::mark_closed() noexcept {
  closed_ = true;
  clear_queue();
  doom_.reset();
  observer_ = nullptr;
}

PQSCOPE_DECL scope_machine::statement_loss scope_machine::settle_prepared(const std::vector<item>& batch,
                                                                        const batch_reply& br) noexcept {
  statement_loss loss;
  for (std::size_t k = 0; k < batch.size() && k < out_.size(); ++k) {
    const statement& st = out_[k];
    if ((batch[k].k != item::user && batch[k].k != item::check) || st.name == nullptr) continue;
    const std::string_view text = batch[k].k == item::user ? std::string_view(batch[k].slot->sql)
                                                           : std::string_view(batch[k].text());
    if (st.parse) prepared_.settle(text, st.n_params, st.types, st.name, k < br.replies.size() && br.replies[k].parsed);
    if (k >= br.replies.size() || br.replies[k].st != reply::status::error) continue;
    const reply_error& e = br.replies[k].failure();
    if (e.sqlstate == "26000" && !st.parse) {
      // The session lost its statements (DISCARD ALL, DEALLOCATE ALL): start again.
      // Behind a pooler said to track them, it is the pooler that does not.
      prepared_.forget_all();
      const bool pooled = prepared_.pooled();
      loss = {pooled ? statement_loss::misconfigured : statement_loss::lost, k};
      if (pooled) prepared_.set_limit(0, true);
    } else if (e.sqlstate == "0A000" && e.message.find("cached plan must not change result type") != std::string::npos) {
      // Its result type changed after DDL: this text gets a new name. Also just after
      // its Parse: PgBouncer binds a Parse of a text it already holds on that server
      // connection to the statement it has, old plan and all.
      prepared_.forget(text, st.n_params, st.types);
      loss = {statement_loss::lost, k};
    }
  }
  return loss;
}

PQSCOPE_DECL bool scope_machine::resend_lost(std::vector<item>& batch, const batch_reply& br, std::size_t at) {
  // A lost check fails its scope, which atomic() runs again (take_lost_statement()).
  if (batch[at].k != item::user || batch[at].slot->resent) return false;
  // Sending it again is exact only if what ran before it in this batch runs again
  // the same: controls of a transaction that began in this batch (rolled back
  // first), or nothing at all in autocommit.
  bool began_here = false, ends_here = false;
  for (std::size_t k = 0; k < batch.size(); ++k) {
    if (k < at && (batch[k].k == item::user || batch[k].k == item::followup)) return false;
    if (k < at && batch[k].k == item::begin) began_here = true;
    if (batch[k].k == item::end) ends_here = true;
  }
  if (!began_here && (!frames_.empty() || ends_here)) return false;
  batch[at].slot->resent = true;
  std::vector<item> again;
  again.reserve(batch.size());
  for (item& it : batch)
    if (it.k != item::xid && it.k != item::position) again.push_back(std::move(it));  // plan() adds them again
  queue_.insert(queue_.begin(), std::make_move_iterator(again.begin()), std::make_move_iterator(again.end()));
  for (frame& f : frames_) f.sent = false;
  if (br.state != server_state::idle) push_followup("ROLLBACK", false);
  send_requested_ = true;
  send_all_ = planned_all_;
  return true;
}

PQSCOPE_DECL std::exception_ptr scope_machine::failure_of(const item& it, const reply& r, const statement_loss& loss,
                                                         std::size_t at) const {
  if (it.k == item::check && is_behind(r)) {
    // The message carries the replay position: "... pg_lsn: "pqscope: replica behind, replayed 0/3000060"".
    const std::string& m = r.failure().message;
    const std::size_t from = m.find(behind_marker) + std::strlen(behind_marker);
    const std::size_t to = m.find('"', from);
    wal_position replayed;
    try {
      replayed = wal_position::parse(std::string_view(m).substr(from, to == std::string::npos ? to : to - from));
    } catch (const conversion_error&) {
      // an unexpected message: the position stays unknown, the error is still this one
    }
    return std::make_exception_ptr(replica_behind(replayed, wal_position::parse(it.owned->args.at(0))));
  }
  if (it.k != item::user) return sql_error_ptr(r, it.text(), it.context());
  if (loss.what == statement_loss::none || loss.at != at) return sql_error_ptr(r, it.slot->sql);
  const reply_error& e = r.failure();
  if (loss.what == statement_loss::misconfigured)
    return std::make_exception_ptr(configuration_error(
        "the pooler lost a statement pqscope had prepared (" + e.sqlstate + ": " + e.message +
        "): connection_options::pooler_max_prepared_statements says it tracks prepared statements, but it does "
        "not (PgBouncer before 1.21, or its max_prepared_statements is 0). Set pooler_max_prepared_statements "
        "to 0 for this pooler; this connection prepares nothing more"));
  error_fields f{e.sqlstate, e.message, e.detail, e.hint, std::string(it.slot->sql), e.position,
                 e.schema, e.table, e.column, e.datatype, e.constraint};
  f.message = "the session lost the statement pqscope prepared for this text (" + e.message +
              "); it did not run, and is prepared again on its next use: run it again (atomic() does so itself)";
  return std::make_exception_ptr(prepared_statement_lost(std::move(f)));
}

PQSCOPE_DECL void scope_machine::resend_check_alone(std::vector<item>& batch, const batch_reply& br) {
  check_alone_ = true;
  std::vector<item> again;
  again.reserve(batch.size());
  for (item& it : batch)
    if (it.k != item::xid && it.k != item::position) again.push_back(std::move(it));  // plan() adds them again
  again.front().owned->sql = check_alone_sql;
  again.front().alone = true;
  queue_.insert(queue_.begin(), std::make_move_iterator(again.begin()), std::make_move_iterator(again.end()));
  // The check came first: the server skipped the rest, nothing began.
  if (br.state != server_state::idle) push_followup("ROLLBACK", false);
  send_requested_ = true;
  send_all_ = planned_all_;
}

PQSCOPE_DECL void scope_machine::mark_open() noexcept {
  prepared_.forget_all();  // a new session has none
  check_alone_ = false;    // and may have another default isolation
  closed_ = false;
  broken_ = false;
  broken_reason_.clear();
  clear_queue();
  doom_.reset();
  void_.reset();
  pid_ = current_pid();
}

PQSCOPE_DECL void scope_machine::check_usable() const {
  if (pid_ != current_pid())
    throw usage_error("this connection was opened by process " + std::to_string(pid_) +
                      "; after fork() a child must open its own connection (database::connect())");
  if (closed_) throw connection_error("the connection was closed while this scope was open");
  if (broken_)
    throw connection_error("the connection is broken (" + broken_reason_ +
                           "); end the open scopes and call reconnect()");
}

PQSCOPE_DECL void
scope_machine::notify(const statement_slot& s, std::chrono::microseconds elapsed, const std::exception* e,
                      const result* r) noexcept {
  if (!observer_) return;
  try {
    statement_event ev;
    ev.sql = s.sql;
    ev.params = static_cast<std::size_t>(s.stmt.n_params);
    ev.depth = s.depth;
    ev.duration = elapsed;
    ev.error = e;
    ev.attempt = s.attempt;
    ev.batched = s.batched;
    if (r != nullptr) ev.rows = r->columns() > 0 ? r->size() : r->affected_rows();
    observer_(ev);
  } catch (...) {
    // a logging hook must not change what the transaction does
  }
}

PQSCOPE_DECL std::size_t
scope_machine::fail_unanswered(std::vector<item>& batch, const std::exception_ptr& e, std::chrono::microseconds elapsed) {
  std::size_t failed = 0;
  for (item& it : batch) {
    if (it.k != item::user || it.slot->st != statement_slot::state::queued) continue;
    ++failed;
    it.slot->fail(e);
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      notify(*it.slot, elapsed, &x, nullptr);
    } catch (...) {
    }
  }
  return failed;
}

PQSCOPE_DECL void scope_machine::fail_queued(const std::exception_ptr& e) noexcept {
  for (item& it : queue_)
    if (it.k == item::user && it.slot && it.slot->st == statement_slot::state::queued) it.slot->fail(e);
}

PQSCOPE_DECL void scope_machine::void_attempt(std::vector<item>& batch, std::size_t at, const batch_reply& br,
                                              std::chrono::microseconds elapsed, bool ending,
                                              std::exception_ptr failure) {
  const item& it = batch[at];
  const reply& r = br.replies[at];
  void_ = attempt_failure{it.context() + r.failure().message, r.failure().sqlstate, nullptr};
  if (it.k == item::check && is_behind(r)) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      void_ = attempt_failure{e.what(), "", failure};
    }
  }
  if (it.k == item::user) {
    it.slot->fail(std::move(failure));
    try {
      std::rethrow_exception(it.slot->error);
    } catch (const std::exception& x) {
      notify(*it.slot, elapsed, &x, nullptr);
    }
  }
  std::exception_ptr e;
  try {
    throw_void("not run");
  } catch (...) {
    e = std::current_exception();
  }
  fail_unanswered(batch, e, elapsed);
  fail_queued(e);
  queue_.clear();
  doom_.reset();
  for (frame& f : frames_) f.sent = false;
  if (ending) op_.replay = true;  // the outermost scope's end step throws batch_failed
  if (br.state != server_state::idle) {
    ++stats_.transactions_rolled_back;
    push_followup("ROLLBACK", false);
  }
}

PQSCOPE_DECL void scope_machine::hold(std::size_t sp) {
  if (held_.size() <= sp) held_.resize(sp + 1, 0);
  held_[sp] += 1;
  note_held();
}

PQSCOPE_DECL void scope_machine::fold(std::size_t sp, bool rolled_back) {
  if (sp == 0 || held_.size() <= sp) return;
  std::uint64_t under = 0;
  for (std::size_t j = sp; j < held_.size(); ++j) under += std::exchange(held_[j], 0);
  if (!rolled_back) held_[sp - 1] += under;
  note_held();
}

PQSCOPE_DECL void scope_machine::note_held() {
  std::uint64_t total = 0;
  for (auto n : held_) total += n;
  stats_.savepoints_in_transaction = total;
  stats_.max_savepoints_in_transaction = std::max(stats_.max_savepoints_in_transaction, total);
}

PQSCOPE_DECL void scope_machine::end_of_transaction() {
  held_.clear();
  stats_.savepoints_in_transaction = 0;
}

PQSCOPE_DECL void scope_machine::mark_broken(const std::string& why) {
  broken_ = true;
  broken_reason_ = why;
  fail_queued(std::make_exception_ptr(connection_error("connection lost: " + why)));
  queue_.clear();
  followup_.clear();
  doom_.reset();
}

PQSCOPE_DECL void scope_machine::check_state(const batch_reply& br, bool had_error) {
  const bool began = !frames_.empty() && frames_.front().sent;
  if (began && (br.state == server_state::in_transaction || br.state == server_state::failed_transaction)) return;
  if (!began && br.state == server_state::idle) return;
  if (frames_.empty() || !began) {
    // A transaction is open that no scope owns: never leave it idle behind PgBouncer.
    push_followup("ROLLBACK", true);
    // The driver may know who opened it (a middleware such as Pgpool-II in raw mode).
    op_.stray = std::make_exception_ptr(usage_error(
        br.diagnostic.empty()
            ? "a statement left the session inside a transaction that no pqscope scope owns; pqscope rolled it "
              "back. Use pqscope::transaction or pqscope::atomic for transactions"
            : "the session was left inside a transaction that no pqscope scope owns, and pqscope rolled it back: " +
                  br.diagnostic));
    return;
  }
  // The transaction ended behind the scopes' back: nothing is left to undo.
  for (frame& f : frames_) f.sent = false;
  queue_.clear();
  doom_ = doom{0, "the transaction was ended by a statement outside pqscope's control", "", nullptr};
  if (!had_error)
    op_.stray = std::make_exception_ptr(usage_error(
        "a statement ended the transaction behind pqscope's back; the open scopes can only roll back now"));
}

}  // namespace pqscope::detail
