#pragma once
// The scope state machine: the whole of pqscope's transaction logic, and no I/O.
// This header declares it; its bodies are in impl/, by what they do:
// scope_machine_queue.ipp (checking and queuing statements, planning a batch),
// scope_machine_apply.ipp (applying a batch's answers), scope_machine_scopes.ipp
// (frames, the doomed state, ending scopes). sync_session.hpp is the blocking loop
// around it; asio/connection.hpp the coroutine one.
//
// A connection holds a stack of frames, one per open scope. Frame 0 is the
// transaction; a nested frame owns a savepoint unless it was opened with
// savepoint = false. Nothing is sent when a scope opens: its BEGIN or SAVEPOINT
// waits in the queue and goes out in the same pipeline batch as the next
// statement (one round trip), as do RELEASE and ROLLBACK TO of scopes that ended.
// Only the end of the outermost scope is sent at once, so that no transaction is
// ever left idle behind PgBouncer.
//
// The machine never sends anything itself. An operation queues what it needs and
// may ask for a send; the front end then loops
//     while (m.wants_send()) m.apply(exchange(m.plan()));
// (plan: the statements of one batch, ending in one sync; apply: their answers)
// and finally calls the operation's end step, which throws or returns. The
// blocking connection and any non-blocking front end share this one machine.
//
// Every queued item has a `level`: the index of the innermost frame whose
// savepoint would undo it. Rolling back frame k drops what is queued at level
// >= k (unless statements wait there, which must still go out); ending frame k
// moves what it leaves behind down to level k - 1.
//
// A failure inside a scope dooms it: `doom_` names the innermost frame that owns
// a savepoint (or the transaction) and the first error. Until that frame is
// rolled back, statements and commits throw transaction_aborted without a round
// trip; committing it rolls it back and throws.
//
// Batched attempts (transaction_options::batch, outermost atomic() only): user
// statements wait in the queue too, and go out when a result is read, on flush(),
// or with the COMMIT. A failure in such a send voids the whole attempt: it is
// rolled back at once, its callbacks are dropped, and atomic() runs the function
// again unbatched, where errors surface where they happen. So a savepoint is only
// needed where a scope rolls back or stays open across a send.

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/callback.hpp>
#include <pqscope/driver.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>
#include <pqscope/params.hpp>
#include <pqscope/result.hpp>
#include <pqscope/stats.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/in_doubt.hpp>
#include <pqscope/detail/sql_facts.hpp>
#include <pqscope/detail/prepared_statements.hpp>
#include <pqscope/detail/process.hpp>
#include <pqscope/detail/sql_text.hpp>
#include <pqscope/detail/statement_slot.hpp>

namespace pqscope::detail {

// The first failure of a voided batched attempt.
struct attempt_failure {
  std::string message, sqlstate;
  std::exception_ptr cause;  // set when running the function again cannot help: atomic() throws it
};

// Which attempt of an outermost atomic() a scope belongs to.
struct attempt_info {
  bool batched = false;
  std::size_t number = 0;
};

class scope_machine {
 public:
  using callback = pqscope::callback<void()>;
  using clock = std::chrono::steady_clock;

  scope_machine() = default;
  scope_machine(const scope_machine&) = delete;
  scope_machine& operator=(const scope_machine&) = delete;
  ~scope_machine();

  [[nodiscard]] std::size_t depth() const noexcept { return frames_.size(); }
  [[nodiscard]] const connection_stats& stats() const noexcept { return stats_; }
  void set_observer(pqscope::callback<void(const statement_event&)> o);
  void set_savepoint_limit(std::size_t limit, bool refuse) noexcept;
  // How many named statements the session may make (0: none), and whether the limit is
  // a pooler's word; see prepared_statements.hpp.
  void set_prepare_limit(std::size_t limit, bool pooled = false) noexcept { prepared_.set_limit(limit, pooled); }
  [[nodiscard]] const prepared_statements& prepared() const noexcept { return prepared_; }
  // connection_options::commit_positions: a read-write outermost COMMIT carries the
  // WAL position query in its batch.
  void set_commit_positions(bool on) noexcept { commit_positions_ = on; }
  // Where the last outermost COMMIT with commit_positions ended in the WAL; empty
  // until one succeeded, or when its position is unknown (the query failed, the
  // COMMIT is in doubt). Set before that scope's on_commit callbacks run.
  [[nodiscard]] wal_position last_commit_position() const noexcept { return last_commit_position_; }
  // Statements of a batched attempt wait in the queue instead of going out at once.
  [[nodiscard]] bool batching() const noexcept { return !frames_.empty() && frames_.front().attempt.batched; }
  [[nodiscard]] std::uint64_t innermost_id() const noexcept { return frames_.empty() ? 0 : frames_.back().id; }

  // ---- scopes -------------------------------------------------------------

  std::uint64_t open(const transaction_options& o, attempt_info attempt = {});

  [[nodiscard]] std::optional<std::size_t> index_of(std::uint64_t id) const noexcept;

  // Ends scope `id` (the innermost) by commit or rollback. A nested scope ends
  // here (false). The outermost one returns true: drive the loop, settle a lost
  // COMMIT if needs_resolution() asks, then finish_end(). `quiet`: the destructor
  // path, which throws nothing later.
  bool end_scope(std::uint64_t id, bool commit, bool quiet = false);

  // The transaction id whose fate a lost COMMIT left unknown, when the front end
  // should ask a fresh connection (resolve_in_doubt); then resolve() with the answer.
  [[nodiscard]] std::optional<in_doubt> needs_resolution() const;
  void resolve(std::string outcome);

  // After the loop: settles the outermost COMMIT or ROLLBACK, runs callbacks and
  // throws what the operation must throw. `committed` tells whether the work was
  // committed, also when an on_commit callback throws afterwards.
  void finish_end(bool* committed = nullptr);

  // The last outermost attempt was voided by a failed batched send: atomic() runs
  // the function again. Its first failure, or nothing.
  [[nodiscard]] const std::optional<attempt_failure>& voided() const noexcept { return void_; }
  void count_replay() noexcept { ++stats_.replays; }
  // A statement of the last outermost attempt failed because the session lost its
  // prepared statement (prepared_statement_lost): running the attempt again
  // prepares it anew. True once per loss.
  [[nodiscard]] bool take_lost_statement() noexcept { return std::exchange(lost_statement_, false); }

  // ---- statements -----------------------------------------------------------

  // The checks of a user statement's text, before its parameters are converted:
  // the pooler guard when `guard` (pooling::transaction without
  // allow_session_state), then the placeholder count against `params`. Returns
  // what was read off the text (kept per text), for queue_statement(); valid
  // until the next call.
  const sql_facts& check_statement(std::string_view sql, std::size_t params, bool guard);

  // Queues a user statement, `f` from check_statement(). Unbatched it is due at once: drive,
  // finish(), then read the slot. In a batched attempt it waits; the slot fills
  // when it is sent.
  std::shared_ptr<statement_slot> queue_statement(const char* sql, std::string_view text, const sql_facts& f,
                                                  const param_list& params, std::weak_ptr<sender> owner);

  // A slot its caller is done with: kept for the next statement if nothing else
  // holds it (no result refers to it), so that a statement costs no allocation.
  void recycle(std::shared_ptr<statement_slot>&& slot) noexcept;

  // ---- statements outside the pipeline (COPY, scripts) ----
  // Such a statement must find the server's transaction and savepoints exactly as
  // the scopes say, so everything queued goes out first, controls included:
  //   slot = prepare_out_of_band(...); request_sync_point(); drive; finish();
  //   stage_out_of_band(slot); the driver's own calls; apply() with one reply;
  //   drive; finish(); then the slot holds the answer.
  // A failure dooms the scope as an unbatched statement's does, also in a batched
  // attempt: everything before it was confirmed by the sync point.
  std::shared_ptr<statement_slot> prepare_out_of_band(const char* sql, std::string_view text,
                                                      std::weak_ptr<sender> owner);
  void request_sync_point();
  void stage_out_of_band(const std::shared_ptr<statement_slot>& slot);

  // Asks for what is queued, up to the last statement, to go out now (a batched
  // result is read, connection::flush()). Then drive and finish().
  void request_flush();

  // After driving a statement or a flush: throws what the loop found.
  void finish();

  void set_local(std::string_view name, std::string_view value);

  void on_commit(callback fn);

  void on_rollback(callback fn);

  // ---- the loop -------------------------------------------------------------

  [[nodiscard]] bool wants_send() noexcept;

  // The next batch: one pipeline, one sync. Valid until apply().
  const std::vector<statement>& plan();

  // Applies the answers to the batch from plan(). Throws only if memory runs out.
  // Takes the results out of `br`, whose memory the caller may use again.
  void apply(batch_reply& br);
  void apply(batch_reply&& br) { apply(static_cast<batch_reply&>(br)); }

  // ---- connection life --------------------------------------------------------

  // The connection object is gone (or reconnecting): scopes still open end quietly.
  void mark_closed() noexcept;
  void mark_open() noexcept;
  [[nodiscard]] bool opened_by_this_process() const noexcept { return pid_ == current_pid(); }

  void check_usable() const;

 private:
  // A text made for one item (BEGIN with modes, SET LOCAL, set_local()), kept
  // out of line: items move along the queue, and most have a static text.
  struct owned_text {
    std::string sql;
    std::vector<std::string> args;
    std::string context;  // prefix for its error message
  };
  struct item {
    enum kind : unsigned char {
      begin, savepoint, timeout, setting, release, rollback_to, restore, user, xid, end, followup,
      position,  // the WAL position right after a COMMIT (commit_positions); see position_item()
      check      // a standby's replay position against transaction_options::at_least; see queue_check()
    };
    kind k = user;
    std::uint64_t frame_id = 0;             // the frame that queued it
    std::size_t level = 0;                  // the innermost frame whose savepoint undoes it
    std::shared_ptr<statement_slot> slot;  // user
    std::size_t sp = 0;                    // savepoint, release, rollback_to: the savepoint's number
    const char* fixed = nullptr;           // a static text, or one of savepoint_texts_ (set by plan())
    std::unique_ptr<owned_text> owned;     // instead of fixed
    bool alone = false;                    // check: goes out in a batch of its own
    [[nodiscard]] const char* text() const noexcept {
      return fixed != nullptr ? fixed : owned ? owned->sql.c_str() : "";
    }
    item() = default;
    explicit item(kind what, std::uint64_t frame = 0, std::size_t lvl = 0) : k(what), frame_id(frame), level(lvl) {}
    [[nodiscard]] const std::string& context() const noexcept {
      static const std::string none;
      return owned ? owned->context : none;
    }
  };
  struct frame {
    std::uint64_t id = 0;
    transaction_options opts;
    bool owning = true;
    bool sent = false;  // its BEGIN / SAVEPOINT has run on the server
    attempt_info attempt;
    std::vector<callback> on_commit, on_rollback;
  };
  struct doom {
    std::size_t level;
    std::string message, sqlstate;
    // The failure itself, when no statement was told of it (a check that found the
    // standby behind, sent before a COPY or a script): the next statement refused
    // gets it, as the first statement of the batch would have.
    mutable std::exception_ptr untold;
  };
  // What the operation in progress learned from the loop, for its end step.
  struct operation {
    // Not "= default": the chrono members' defaults are not declared noexcept,
    // though nothing in them can throw; reset_operation() needs noexcept.
    operation() noexcept {}  // NOLINT(modernize-use-equals-default)
    bool commit = false, quiet = false;
    frame ended;             // the outermost scope being ended
    bool sent_end = false;   // its COMMIT / ROLLBACK went out
    bool replay = false;     // the batched attempt was voided
    bool followup = false;   // a ROLLBACK the operation waits for is due
    reply end_reply;
    std::exception_ptr failure;  // a statement or control sent with the COMMIT failed
    std::exception_ptr stray;    // the server's transaction state disagreed with the scopes
    std::optional<std::string> lost, followup_lost;
    std::optional<doom> refused;  // commit() of a doomed scope: rolled back instead
    in_doubt xid;  // what the resolver asks about
    std::string resolution;
    bool xid_unknown = false, resolved = false;
    bool position_asked = false;  // the COMMIT's batch carried the position query
    wal_position position;        // what it answered, or empty
  };

  std::shared_ptr<statement_slot> make_slot(const char* sql, std::string_view text, const param_list& params,
                                            std::weak_ptr<sender> owner);

  static std::string savepoint_name(std::size_t level);
  // The SAVEPOINT, RELEASE or ROLLBACK TO text of a savepoint item, made once per
  // savepoint number and connection. Valid until the next call with a higher number.
  const char* savepoint_text(const item& it);
  static bool is_savepoint_kind(const item& it) noexcept {
    return (it.k == item::savepoint || it.k == item::release || it.k == item::rollback_to) && !it.owned;
  }

  // "SET TRANSACTION <modes>", sent right after a plain BEGIN, or "" without modes.
  static std::string modes_sql(const transaction_options& o);

  static std::exception_ptr closed_error() noexcept;

  item& queue(item::kind k, std::uint64_t frame_id, std::size_t level, const char* fixed = nullptr);
  item& queue_owned(item::kind k, std::uint64_t frame_id, std::size_t level, std::string sql);
  static item xid_item();
  static item position_item();
  // Queues the read-your-writes check of an outermost scope with at_least, ahead
  // of its BEGIN.
  void queue_check(std::uint64_t frame_id, const transaction_options& o);
  // The check found the session's default isolation is not read committed: its
  // snapshot would be the transaction's. The batch goes again, the check alone.
  void resend_check_alone(std::vector<item>& batch, const batch_reply& br);
  // The check's two texts (why they read so: queue_check() in impl/scope_machine_queue.ipp).
  static constexpr const char* check_in_batch_sql =
      "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() AND s.r < $1::pg_catalog.pg_lsn "
      "THEN ('pqscope: replica behind, replayed ' || s.r::text)::pg_catalog.pg_lsn "
      "WHEN pg_catalog.current_setting('transaction_isolation') <> 'read committed' "
      "THEN ('pqscope: isolation ' || pg_catalog.current_setting('transaction_isolation'))::pg_catalog.pg_lsn END "
      "FROM (SELECT pg_catalog.pg_last_wal_replay_lsn() AS r) AS s";
  static constexpr const char* check_alone_sql =
      "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() AND s.r < $1::pg_catalog.pg_lsn "
      "THEN ('pqscope: replica behind, replayed ' || s.r::text)::pg_catalog.pg_lsn END "
      "FROM (SELECT pg_catalog.pg_last_wal_replay_lsn() AS r) AS s";
  static constexpr const char* behind_marker = "pqscope: replica behind, replayed ";
  static constexpr const char* isolation_marker = "pqscope: isolation ";
  // The check's own verdict: pg_lsn refused to read the marker (22P02). Any other
  // error is just that, even when its message quotes the check's text.
  [[nodiscard]] static bool check_says(const reply& r, const char* marker) {
    return r.st == reply::status::error && r.failure().sqlstate == "22P02" &&
           r.failure().message.find(marker) != std::string::npos;
  }
  [[nodiscard]] static bool is_behind(const reply& r) { return check_says(r, behind_marker); }
  // Reads the position query's answer; empty for anything unexpected (never throws).
  static wal_position read_position(const reply& r) noexcept;
  void queue_rollback_to(std::uint64_t frame_id, std::size_t i);
  void push_followup(const char* sql, bool awaited);
  template <class Pred>
  void drop_queued(Pred pred);
  void lower_levels(std::size_t from);
  // A statement waits in the queue at `level` or deeper.
  [[nodiscard]] bool statement_queued_at(std::size_t level) const;
  // Drops controls queued after the last statement that `pred` selects.
  template <class Pred>
  void trim_tail(Pred pred);
  void clear_queue() noexcept;
  // Whether a send with user statements must also ask for the transaction id; the
  // outermost frame has left the stack once its COMMIT is queued.
  [[nodiscard]] bool wants_xid() const;

  std::size_t innermost_index(std::uint64_t id, const char* what) const;

  // `what`: a static text naming the refused step (a string only when it throws).
  void throw_if_doomed(const char* what) const;
  void throw_if_void(const char* what) const;
  [[noreturn]] void throw_void(const char* what) const;
  [[noreturn]] static void refuse(const doom& d);

  // The innermost frame whose savepoint (or transaction) can undo a failure.
  [[nodiscard]] std::size_t undo_level() const noexcept;
  void doom_here(const std::string& message, const std::string& sqlstate);

  void notify(const statement_slot& s, std::chrono::microseconds elapsed, const std::exception* e,
              const result* r) noexcept;
  void apply_batch(std::vector<item>& batch, batch_reply& br);
  // What the batch's answers say about its prepared statements, and whether a
  // statement failed because the session lost the one pqscope had prepared for it.
  struct statement_loss {
    enum kind : unsigned char { none, lost, misconfigured } what = none;
    std::size_t at = 0;
  };
  statement_loss settle_prepared(const std::vector<item>& batch, const batch_reply& br) noexcept;
  // Sends the batch again when nothing before the lost statement did anything but
  // open the transaction it runs in.
  bool resend_lost(std::vector<item>& batch, const batch_reply& br, std::size_t at);
  // The error the failed statement at `at` raises.
  std::exception_ptr failure_of(const item& it, const reply& r, const statement_loss& loss, std::size_t at) const;
  // Statements of the batch that got no answer get `e`.
  // How many statements it failed.
  std::size_t fail_unanswered(std::vector<item>& batch, const std::exception_ptr& e, std::chrono::microseconds elapsed);
  void fail_queued(const std::exception_ptr& e) noexcept;

  // A send of a batched attempt failed: the whole attempt is rolled back at once
  // (the server refuses everything until then), every waiting statement gets
  // batch_failed, and the frames stay for atomic() to unwind and run again.
  void void_attempt(std::vector<item>& batch, std::size_t at, const batch_reply& br,
                    std::chrono::microseconds elapsed, bool ending, std::exception_ptr failure);

  // ---- the subtransaction budget ----
  // PostgreSQL caches 64 subtransaction ids per backend (PGPROC_MAX_CACHED_SUBXIDS);
  // past that every snapshot in the cluster consults pg_subtrans. A released
  // savepoint keeps its id until the transaction ends; only ROLLBACK TO gives it
  // back. held_[i]: subtransactions begun under savepoint i (itself included) and
  // not rolled back; held_[0] those released into the top level. Savepoints that
  // never write get no id, so this is an upper bound.
  void hold(std::size_t sp);
  void fold(std::size_t sp, bool rolled_back);
  void note_held();
  void end_of_transaction();
  // Opening savepoint `i`: past the limit, the observer is told and it is counted;
  // with refuse_past_savepoint_limit it is a usage_error before anything is queued.
  void check_savepoint_budget(const transaction_options& root, std::size_t i);

  // The session is gone: nothing queued can be sent, nothing doomed can be undone.
  void mark_broken(const std::string& why);

  // The server's own word on the session must match the scope stack.
  void check_state(const batch_reply& br, bool had_error);

  void pop_outermost();

  // A COMMIT in doubt may have committed past the last position: none is known then.
  void forget_position(const operation& op) noexcept {
    if (op.position_asked) last_commit_position_ = wal_position();
  }

  // The outermost scope ends: its COMMIT or ROLLBACK is queued behind whatever
  // statements still wait, so they go out together.
  void start_outermost();

  void commit_nested(std::size_t i);

  void restore_timeout(const frame& f, std::size_t i, const char* name,
                       std::chrono::milliseconds transaction_options::*member);

  // Ends nested frame i (the innermost) by rolling back; sends nothing.
  void end_nested_rollback(std::size_t i);

  // Runs every callback; the first exception is rethrown after all ran (not when quiet).
  static void run_callbacks(std::vector<callback>& cbs, bool quiet);

  std::vector<frame> frames_;
  sql_facts_cache facts_;
  prepared_statements prepared_;
  std::vector<std::shared_ptr<statement_slot>> spare_;  // see recycle()
  static constexpr std::size_t spare_slots = 16;
  std::vector<item> queue_;      // not yet sent, in order
  std::vector<item> followup_;   // a ROLLBACK due before anything else
  std::vector<item> in_flight_;  // the batch from plan(), until apply()
  std::vector<statement> out_;
  std::vector<std::string> out_names_;  // the prepared statements' names of out_
  std::vector<std::string> out_texts_;  // their texts, where not the statement's own (prepared_statements::forget)
  std::vector<std::vector<const char*>> out_args_;
  std::vector<std::string> savepoint_texts_;  // [3 * number + verb]: SAVEPOINT, RELEASE, ROLLBACK TO
  clock::time_point sent_at_{};
  bool send_requested_ = false;
  bool send_all_ = false;     // request_sync_point(): controls go out too
  bool out_of_band_ = false;  // in_flight_ is a statement sent outside the pipeline
  bool planned_all_ = false;  // in_flight_ was planned after request_sync_point()
  bool lost_statement_ = false;   // see take_lost_statement()
  operation op_;
  // op_ = operation{} without the member-by-member move (it runs several times per scope).
  void reset_operation() noexcept {
    static_assert(std::is_nothrow_default_constructible_v<operation>, "reset_operation() rebuilds op_ in place");
    op_.~operation();
    ::new (static_cast<void*>(&op_)) operation();
  }
  std::optional<doom> doom_;
  std::optional<attempt_failure> void_;
  std::uint64_t next_id_ = 1;
  bool closed_ = false;
  bool broken_ = false;
  std::string broken_reason_;
  in_doubt xid_;              // the transaction's id once it has one (resolve_in_doubt)
  bool xid_pending_ = false;  // statements were sent since the last answer to the id query
  pid_t pid_ = current_pid();
  connection_stats stats_;
  pqscope::callback<void(const statement_event&)> observer_;
  std::vector<std::uint64_t> held_;  // subtransactions per savepoint level, see hold()
  std::size_t savepoint_limit_ = 64;
  bool refuse_past_limit_ = false;
  bool commit_positions_ = false;
  wal_position last_commit_position_;
  bool check_alone_ = false;  // this session's default isolation is not read committed (see queue_check())
};

}  // namespace pqscope::detail

// The machine's bodies, by what they do.
#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/scope_machine_queue.ipp>
#include <pqscope/detail/impl/scope_machine_apply.ipp>
#include <pqscope/detail/impl/scope_machine_scopes.ipp>
#endif
