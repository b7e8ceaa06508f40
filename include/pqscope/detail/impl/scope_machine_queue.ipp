#pragma once
// The scope machine's queue and the planning of a batch: statements are checked
// and queued with the controls their scopes need (BEGIN, SAVEPOINT, RELEASE, ROLLBACK
// TO, SET LOCAL), and plan() picks what goes out in the next batch, with the
// transaction-id query where resolve_in_doubt wants it. Included by
// detail/scope_machine.hpp; no I/O.

#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/impl/queue_edits.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace pqscope::detail {

PQSCOPE_DECL std::shared_ptr<statement_slot> scope_machine::prepare_out_of_band(const char* sql,
                                                                               std::string_view text,
                                                                               std::weak_ptr<sender> owner) {
  check_usable();
  auto slot = make_slot(sql, text, param_list{}, std::move(owner));
  slot->own();
  return slot;
}

PQSCOPE_DECL void scope_machine::request_sync_point() {
  check_usable();
  reset_operation();
  send_requested_ = true;
  send_all_ = true;
}

PQSCOPE_DECL void scope_machine::stage_out_of_band(const std::shared_ptr<statement_slot>& slot) {
  check_usable();
  throw_if_void("statement refused");
  throw_if_doomed("statement refused");
  in_flight_.clear();
  in_flight_.emplace_back(item::user, innermost_id(), frames_.empty() ? 0 : depth() - 1).slot = slot;
  out_of_band_ = true;
  ++stats_.round_trips;
  ++stats_.statements;
  if (!frames_.empty()) xid_pending_ = true;  // it may write: COMMIT asks for the id
  sent_at_ = clock::now();
}

PQSCOPE_DECL std::shared_ptr<statement_slot> scope_machine::make_slot(const char* sql, std::string_view text,
                                                                     const param_list& params,
                                                                     std::weak_ptr<sender> owner) {
  throw_if_void("statement refused");
  throw_if_doomed("statement refused");
  std::shared_ptr<statement_slot> slot;
  if (!spare_.empty()) {
    slot = std::move(spare_.back());
    spare_.pop_back();
  } else {
    if (spare_.capacity() == 0) spare_.reserve(spare_slots);  // recycle() never allocates
    slot = std::make_shared<statement_slot>();
  }
  slot->stmt = statement{sql, params.size(), params.values(), params.types()};
  slot->sql = text;
  slot->owner = std::move(owner);
  slot->depth = depth();
  if (!frames_.empty()) slot->attempt = frames_.front().attempt.number;
  return slot;
}

PQSCOPE_DECL void scope_machine::recycle(std::shared_ptr<statement_slot>&& slot) noexcept {
  // One owner left, and it is the caller: no result can reach the slot any more.
  if (!slot || slot.use_count() != 1 || spare_.size() == spare_.capacity()) return;
  slot->recycle();
  spare_.push_back(std::move(slot));
}

PQSCOPE_DECL std::shared_ptr<statement_slot>
scope_machine::queue_statement(const char* sql, std::string_view text, const sql_facts& f, const param_list& params,
                               std::weak_ptr<sender> owner) {
  check_usable();
  if (!f.control.empty())
    throw usage_error("execute(\"" + std::string(f.control) +
                      " ...\") would control the transaction behind pqscope's back; use "
                      "pqscope::transaction (commit()/rollback()) or pqscope::atomic instead");
  if (f.copy_stream)
    throw usage_error("COPY FROM STDIN / TO STDOUT is not supported by execute(); use native_handle() at depth 0");
  auto slot = make_slot(sql, text, params, std::move(owner));
  const bool lazy = batching();
  slot->batched = lazy;
  if (lazy) slot->own();
  item& it = queue(item::user, innermost_id(), frames_.empty() ? 0 : depth() - 1);
  it.slot = slot;
  if (!lazy) {
    reset_operation();
    send_requested_ = true;
  }
  return slot;
}

PQSCOPE_DECL const sql_facts& scope_machine::check_statement(std::string_view sql, std::size_t params, bool guard) {
  const sql_facts& f = facts_.get(sql, guard);
  if (guard && !f.hazard.empty()) throw usage_error(f.hazard);
  check_placeholders(sql, params, f.placeholders);
  return f;
}

PQSCOPE_DECL void scope_machine::request_flush() {
  check_usable();
  reset_operation();
  send_requested_ = true;
}

PQSCOPE_DECL void scope_machine::finish() {
  operation op = std::move(op_);
  reset_operation();
  if (op.followup_lost) throw connection_error("connection lost: " + *op.followup_lost);
  if (op.stray) std::rethrow_exception(op.stray);
  if (void_ && !frames_.empty()) throw_void("flush()");
}

PQSCOPE_DECL bool scope_machine::wants_send() noexcept {
  if (closed_ || broken_ || !opened_by_this_process()) {
    send_requested_ = false;
    followup_.clear();
    return false;
  }
  if (!followup_.empty()) return true;
  if (!send_requested_) return false;
  if (send_all_) {
    if (!queue_.empty()) return true;
    send_all_ = send_requested_ = false;
    return false;
  }
  for (const item& it : queue_)
    if (it.k == item::user || it.k == item::end) return true;
  send_requested_ = false;
  return false;
}

PQSCOPE_DECL const std::vector<statement>& scope_machine::plan() {
  in_flight_.clear();
  if (!followup_.empty()) {
    in_flight_.push_back(std::move(followup_.front()));
    followup_.erase(followup_.begin());
  } else {
    send_requested_ = false;
    // Up to the last statement or the end of the transaction: controls queued
    // after it wait, so a scope that runs nothing more costs no savepoint.
    std::size_t n = 0, last_user = 0;
    for (std::size_t k = 0; k < queue_.size(); ++k) {
      if (queue_[k].k == item::user) last_user = k + 1;
      if (queue_[k].k == item::user || queue_[k].k == item::end) n = k + 1;
    }
    planned_all_ = std::exchange(send_all_, false);
    if (planned_all_) n = queue_.size();
    // Learn the transaction id in the same round trip, for resolving a lost COMMIT:
    // after the last statement, or before the COMMIT if statements went out unanswered.
    // Never in front of a ROLLBACK: the transaction may be aborted there, the query
    // would fail (25P02) and the server would skip the ROLLBACK behind it; and a
    // rolled-back transaction has nothing to resolve.
    // A check that must run before the transaction's snapshot exists goes alone;
    // the rest follows in the next batch.
    if (n > 0 && queue_.front().k == item::check && queue_.front().alone) {
      n = 1;
      last_user = 0;
      send_requested_ = true;
      send_all_ = planned_all_;
    }
    const bool ends = n > 0 && queue_[n - 1].k == item::end;
    const bool rolls_back = ends && std::strcmp(queue_[n - 1].text(), "ROLLBACK") == 0;
    const bool xid = !rolls_back && (last_user > 0 || (ends && xid_pending_)) && wants_xid();
    const std::size_t xid_after = last_user > 0 ? last_user : n - 1;
    // Read-your-writes: the WAL position right behind the COMMIT, in the same batch.
    // Not for a read-only transaction, which writes no commit record.
    const bool position = commit_positions_ && ends && !rolls_back &&
                          !(op_.ended.id == queue_[n - 1].frame_id && op_.ended.opts.read_only);
    for (std::size_t k = 0; k < n; ++k) {
      if (xid && last_user == 0 && k == xid_after) in_flight_.push_back(xid_item());
      in_flight_.push_back(std::move(queue_[k]));
      if (xid && last_user > 0 && k + 1 == xid_after) in_flight_.push_back(xid_item());
    }
    if (position) in_flight_.push_back(position_item());
    // Until an answer to the id query comes back, statements sent may have written.
    if (last_user > 0) xid_pending_ = true;
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  out_.clear();
  if (out_args_.size() < in_flight_.size()) out_args_.resize(in_flight_.size());
  if (out_names_.size() < in_flight_.size()) {  // never during the loop below
    out_names_.resize(in_flight_.size());
    out_texts_.resize(in_flight_.size());
  }
  // Savepoint texts first: making a higher number's moves the earlier ones.
  for (const item& it : in_flight_)
    if (is_savepoint_kind(it)) (void)savepoint_text(it);
  std::size_t users = 0;
  for (std::size_t k = 0; k < in_flight_.size(); ++k) {
    item& it = in_flight_[k];
    if (is_savepoint_kind(it)) it.fixed = savepoint_text(it);
    if (it.k == item::check) {
      ++stats_.replica_checks;
      if (it.alone) ++stats_.replica_checks_alone;
    }
    if (it.k == item::user) {
      ++users;
      statement st = it.slot->stmt;
      // Sent again after its statement was lost: unnamed, so that it is planned afresh.
      if (prepared_.enabled() && !it.slot->resent) {
        const prepared_statements::use u = prepared_.plan(it.slot->sql, st.n_params, st.types);
        if (u.name != nullptr) {
          out_names_[k] = u.name;
          st.name = out_names_[k].c_str();
          st.parse = u.parse;
          if (u.text != nullptr) {
            out_texts_[k] = u.text;
            st.sql = out_texts_[k].c_str();
          }
          if (u.parse) ++stats_.prepared;
        }
      }
      out_.push_back(st);
      continue;
    }
    out_args_[k].clear();
    if (it.owned)
      for (const std::string& a : it.owned->args) out_args_[k].push_back(a.c_str());
    out_.push_back(statement{it.text(), static_cast<int>(out_args_[k].size()),
                             out_args_[k].empty() ? nullptr : out_args_[k].data(), nullptr});
    // The read-your-writes check is the same text on every read: prepared like a
    // statement run again (its parse and plan cost more than the check itself).
    if (it.k == item::check && prepared_.enabled()) {
      const prepared_statements::use u = prepared_.plan(it.text(), 1, nullptr);
      if (u.name != nullptr) {
        out_names_[k] = u.name;
        out_.back().name = out_names_[k].c_str();
        out_.back().parse = u.parse;
        if (u.text != nullptr) {
          out_texts_[k] = u.text;
          out_.back().sql = out_texts_[k].c_str();
        }
        if (u.parse) ++stats_.prepared;
      }
    }
  }
  ++stats_.round_trips;
  stats_.statements += users;
  stats_.control_statements += out_.size() - users;
  sent_at_ = clock::now();
  return out_;
}

PQSCOPE_DECL std::string scope_machine::modes_sql(const transaction_options& o) {
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
  return modes.empty() ? modes : "SET TRANSACTION" + modes;
}

PQSCOPE_DECL std::exception_ptr scope_machine::closed_error() noexcept {
  return std::make_exception_ptr(connection_error("the connection was closed before this statement was sent"));
}

PQSCOPE_DECL scope_machine::item&
scope_machine::queue(item::kind k, std::uint64_t frame_id, std::size_t level, const char* fixed) {
  item& it = queue_.emplace_back(k, frame_id, level);
  it.fixed = fixed;
  return it;
}

PQSCOPE_DECL scope_machine::item&
scope_machine::queue_owned(item::kind k, std::uint64_t frame_id, std::size_t level, std::string sql) {
  auto text = std::make_unique<owned_text>();
  text->sql = std::move(sql);
  item& it = queue(k, frame_id, level);
  it.owned = std::move(text);
  return it;
}

PQSCOPE_DECL scope_machine::item scope_machine::xid_item() {
  item it(item::xid);
  it.fixed = in_doubt_probe_sql;
  return it;
}

// After the COMMIT, before the batch's sync. The insert position, not
// pg_current_wal_lsn(): with synchronous_commit = off the write position may still
// be before the commit record; the insert position is past it once COMMIT has
// answered. It is the whole server's and only grows, so whatever ran in between
// only moves it further; and behind PgBouncer's transaction pooling a statement in
// the COMMIT's batch (before its sync) runs on the COMMIT's server connection. The
// function is volatile, so Pgpool-II sends it to the primary. The block and segment
// sizes ride along (no round trip) to take a page header off the position
// (wal_position::record_end); where they cannot be read, PostgreSQL's defaults
// (8 kB, 16 MB) are assumed.
PQSCOPE_DECL scope_machine::item scope_machine::position_item() {
  item it(item::position);
  it.fixed =
      "SELECT pg_catalog.pg_current_wal_insert_lsn(), pg_catalog.current_setting('wal_block_size')::int8, "
      "pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size'))";
  return it;
}

// Read-your-writes on a standby. pg_last_wal_replay_lsn() only grows, and a standby
// marks a transaction committed when it replays its commit record, before it moves
// the replay position past it: a snapshot taken after the check sees every
// transaction the position covers. A primary passes: pg_is_in_recovery() is false
// there (a promoted standby keeps reporting its last replay position, frozen). Behind, the check fails (a cast of a text that no pg_lsn reads; the CASE
// arm is not constant, so the planner does not fold it) and the server skips the
// rest of the batch: BEGIN never runs and the session stays idle.
//
// In the batch of the BEGIN, the check runs before it, in the implicit transaction
// of the batch, whose isolation is the session's default. Under read committed
// each later statement takes a new snapshot, after the check. Under repeatable read
// the check's own snapshot (taken before it reads the position) would become the
// transaction's, and SET TRANSACTION ISOLATION fails after it (25001); so the check
// refuses to pass there, and the batch goes again with the check alone, before it.
PQSCOPE_DECL void scope_machine::queue_check(std::uint64_t frame_id, const transaction_options& o) {
  const bool alone =
      check_alone_ || o.isolation == isolation::repeatable_read || o.isolation == isolation::serializable;
  item& it = queue_owned(item::check, frame_id, 0, alone ? check_alone_sql : check_in_batch_sql);
  it.owned->args.push_back(o.at_least.to_string());
  it.alone = alone;
}

PQSCOPE_DECL wal_position scope_machine::read_position(const reply& r) noexcept {
  try {
    if (r.st != reply::status::ok || r.res.size() != 1 || r.res.columns() < 1 || r.res[0][0].is_null()) return {};
    const wal_position at = wal_position::parse(r.res[0][0].text());
    std::uint64_t sizes[2] = {wal_position::default_block_size, wal_position::default_segment_size};
    for (std::size_t c = 1; c < 3 && c < r.res.columns(); ++c) {
      if (r.res[0][c].is_null()) continue;
      const std::string_view t = r.res[0][c].text();
      std::uint64_t v = 0;
      const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (ec == std::errc() && end == t.data() + t.size() && v > 0) sizes[c - 1] = v;
    }
    return at.record_end(sizes[0], sizes[1]);
  } catch (...) {
    return {};  // the commit stands without a position
  }
}

PQSCOPE_DECL const char* scope_machine::savepoint_text(const item& it) {
  const std::size_t verb = it.k == item::savepoint ? 0 : it.k == item::release ? 1 : 2;
  if (savepoint_texts_.size() <= 3 * it.sp + verb) {
    const std::size_t from = savepoint_texts_.size() / 3;
    savepoint_texts_.resize(3 * (it.sp + 1));
    for (std::size_t n = from; n <= it.sp; ++n) {
      const std::string name = savepoint_name(n);
      savepoint_texts_[3 * n] = "SAVEPOINT " + name;
      savepoint_texts_[3 * n + 1] = "RELEASE SAVEPOINT " + name;
      savepoint_texts_[3 * n + 2] = "ROLLBACK TO SAVEPOINT " + name;
    }
  }
  return savepoint_texts_[3 * it.sp + verb].c_str();
}

PQSCOPE_DECL void scope_machine::queue_rollback_to(std::uint64_t frame_id, std::size_t i) {
  queue(item::rollback_to, frame_id, i - 1).sp = i;
  queue(item::release, frame_id, i - 1).sp = i;
}

PQSCOPE_DECL void scope_machine::push_followup(const char* sql, bool awaited) {
  followup_.emplace_back(item::followup);
  followup_.back().fixed = sql;  // a static text
  if (awaited) op_.followup = true;
}

PQSCOPE_DECL void scope_machine::lower_levels(std::size_t from) {
  for (item& c : queue_)
    if (c.level >= from) c.level = from - 1;
}

PQSCOPE_DECL bool scope_machine::statement_queued_at(std::size_t level) const {
  return std::any_of(queue_.begin(), queue_.end(), [&](const item& c) { return c.k == item::user && c.level >= level; });
}

PQSCOPE_DECL void scope_machine::clear_queue() noexcept {
  fail_queued(closed_error());
  queue_.clear();
  followup_.clear();
}

PQSCOPE_DECL bool scope_machine::wants_xid() const {
  const bool resolve = frames_.empty() ? op_.ended.id != 0 && op_.ended.opts.resolve_in_doubt
                                       : frames_.front().opts.resolve_in_doubt;
  return resolve && !xid_.known();
}

}  // namespace pqscope::detail
