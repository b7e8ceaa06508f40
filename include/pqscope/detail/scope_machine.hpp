#pragma once
// The scope state machine: the whole of pqscope's transaction logic, and no I/O.
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
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_facts.hpp>
#include <pqscope/detail/sql_text.hpp>

// What only the function bodies need (PQSCOPE_SEPARATE_COMPILATION: only the
// implementation unit sees them).
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
#include <pthread.h>

#include <algorithm>
#endif

namespace pqscope::detail {

// The process id, read once and refreshed in the child by a fork handler: getpid()
// is a system call (glibc no longer caches it) and the fork check runs on every
// statement and scope.
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::atomic<pid_t>& pid_slot() noexcept {
  static std::atomic<pid_t> pid{::getpid()};
  return pid;
}
#endif
PQSCOPE_DECL pid_t current_pid() noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL pid_t current_pid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { pid_slot().store(::getpid(), std::memory_order_relaxed); });
    pid_slot().store(::getpid(), std::memory_order_relaxed);  // in case a fork came before registration
    return true;
  }();
  (void)registered;
  return pid_slot().load(std::memory_order_relaxed);
}
#endif

// The error a failed statement raises: the server's fields, the statement's text
// (for the caret), and `context` before the message (set_local names its setting).
PQSCOPE_DECL std::exception_ptr sql_error_ptr(const reply& r, std::string_view sql, const std::string& context = {});
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::exception_ptr sql_error_ptr(const reply& r, std::string_view sql, const std::string& context) {
  try {
    const reply_error& e = r.failure();
    if (e.misuse) throw usage_error(context + e.message);
    throw_sql_error(error_fields{e.sqlstate, context + e.message, e.detail, e.hint, std::string(sql), e.position,
                                 e.schema, e.table, e.column, e.datatype, e.constraint});
  } catch (...) {
    return std::current_exception();
  }
}
#endif

// Whatever can send the queue now: the front end that owns the machine.
class sender {
 public:
  sender() = default;
  sender(const sender&) = delete;
  sender& operator=(const sender&) = delete;
  sender(sender&&) = delete;
  sender& operator=(sender&&) = delete;
  virtual ~sender() = default;
  virtual void flush() = 0;
};

// A user statement and, once it is known, its answer. Queued statements of a
// batched attempt own a copy of their text and parameters; a statement sent at
// once borrows the caller's.
class statement_slot final : public deferred_answer {
 public:
  enum class state { queued, answered, failed };

  PQSCOPE_DECL result wait() override;  // inline in header-only mode: no key function, no vtable in every TU

  void answer(result r);
  void fail(std::exception_ptr e);

  // Copies the text and parameters, so the statement can wait past the caller's call.
  void own();

  state st = state::queued;
  result res;
  std::exception_ptr error;
  std::weak_ptr<sender> owner;
  statement stmt;        // what is sent
  std::string_view sql;  // for the observer
  std::size_t depth = 0, attempt = 0;
  bool batched = false;

 private:
  // own(): the text, then each non-NULL value, each NUL-terminated, in one buffer;
  // the value pointers and types inline for the few parameters most statements have.
  static constexpr int inline_params = 4;
  [[nodiscard]] bool owned() const noexcept {
    return stmt.sql == inline_text_ || (heap_text_ && stmt.sql == heap_text_.get());
  }
  char inline_text_[120] = {};
  std::unique_ptr<char[]> heap_text_;
  const char* inline_pointers_[inline_params] = {};
  unsigned inline_types_[inline_params] = {};
  std::vector<const char*> pointers_;
  std::vector<unsigned> types_;
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

PQSCOPE_DECL result statement_slot::wait() {
  if (st == state::queued) {
    std::shared_ptr<sender> s = owner.lock();
    if (!s) throw connection_error("the connection was closed before this statement was sent");
    s->flush();
  }
  if (st == state::failed) std::rethrow_exception(error);
  if (st == state::queued) throw usage_error("this statement's answer is not available");  // cannot happen
  return res;
}

PQSCOPE_DECL void statement_slot::answer(result r) {
  st = state::answered;
  res = std::move(r);
}

PQSCOPE_DECL void statement_slot::fail(std::exception_ptr e) {
  st = state::failed;
  error = std::move(e);
}

PQSCOPE_DECL void statement_slot::own() {
  if (owned()) return;
  const int n = stmt.n_params;
  const auto count = static_cast<std::size_t>(n);
  std::size_t total = sql.size() + 1;
  for (int i = 0; i < n; ++i)
    if (stmt.values[i] != nullptr) total += std::strlen(stmt.values[i]) + 1;
  // Most statements fit the slot's own buffer: no allocation for them.
  char* text = inline_text_;
  if (total > sizeof inline_text_) {
    heap_text_.reset(new char[total]);
    text = heap_text_.get();
  }
  const char** pointers = inline_pointers_;
  unsigned* types = inline_types_;
  if (n > inline_params) {
    pointers_.assign(count, nullptr);
    types_.assign(count, 0);
    pointers = pointers_.data();
    types = types_.data();
  }
  std::memcpy(text, sql.data(), sql.size());
  text[sql.size()] = '\0';
  std::size_t at = sql.size() + 1;
  for (int i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    pointers[k] = nullptr;
    if (stmt.values[i] != nullptr) {
      const std::size_t size = std::strlen(stmt.values[i]) + 1;
      std::memcpy(text + at, stmt.values[i], size);
      pointers[k] = text + at;
      at += size;
    }
    types[k] = stmt.types != nullptr ? stmt.types[i] : 0;
  }
  sql = std::string_view(text, sql.size());
  stmt.sql = text;
  stmt.values = n > 0 ? pointers : nullptr;
  stmt.types = n > 0 && stmt.types != nullptr ? types : nullptr;
}
#endif

// The first failure of a voided batched attempt.
struct attempt_failure {
  std::string message, sqlstate;
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
  [[nodiscard]] std::optional<std::string> needs_resolution() const;
  void resolve(std::string outcome);

  // After the loop: settles the outermost COMMIT or ROLLBACK, runs callbacks and
  // throws what the operation must throw. `committed` tells whether the work was
  // committed, also when an on_commit callback throws afterwards.
  void finish_end(bool* committed = nullptr);

  // The last outermost attempt was voided by a failed batched send: atomic() runs
  // the function again. Its first failure, or nothing.
  [[nodiscard]] const std::optional<attempt_failure>& voided() const noexcept { return void_; }
  void count_replay() noexcept { ++stats_.replays; }

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
  void apply(batch_reply br);

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
    enum kind : unsigned char { begin, savepoint, timeout, setting, release, rollback_to, restore, user, xid, end, followup };
    kind k = user;
    std::uint64_t frame_id = 0;             // the frame that queued it
    std::size_t level = 0;                  // the innermost frame whose savepoint undoes it
    std::shared_ptr<statement_slot> slot;  // user
    std::size_t sp = 0;                    // savepoint, release, rollback_to: the savepoint's number
    const char* fixed = nullptr;           // a static text, or one of savepoint_texts_ (set by plan())
    std::unique_ptr<owned_text> owned;     // instead of fixed
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
    std::string xid, resolution;
    bool xid_unknown = false, resolved = false;
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
  // Statements of the batch that got no answer get `e`.
  void fail_unanswered(std::vector<item>& batch, const std::exception_ptr& e, std::chrono::microseconds elapsed);
  void fail_queued(const std::exception_ptr& e) noexcept;

  // A send of a batched attempt failed: the whole attempt is rolled back at once
  // (the server refuses everything until then), every waiting statement gets
  // batch_failed, and the frames stay for atomic() to unwind and run again.
  void void_attempt(std::vector<item>& batch, std::size_t at, const batch_reply& br,
                    std::chrono::microseconds elapsed, bool end_in_batch);

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
  std::vector<item> queue_;      // not yet sent, in order
  std::vector<item> followup_;   // a ROLLBACK due before anything else
  std::vector<item> in_flight_;  // the batch from plan(), until apply()
  std::vector<statement> out_;
  std::vector<std::vector<const char*>> out_args_;
  std::vector<std::string> savepoint_texts_;  // [3 * number + verb]: SAVEPOINT, RELEASE, ROLLBACK TO
  clock::time_point sent_at_{};
  bool send_requested_ = false;
  bool send_all_ = false;     // request_sync_point(): controls go out too
  bool out_of_band_ = false;  // in_flight_ is a statement sent outside the pipeline
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
  std::string xid_;           // the transaction's id once it has one (resolve_in_doubt)
  bool xid_pending_ = false;  // statements were sent since the last answer to the id query
  pid_t pid_ = current_pid();
  connection_stats stats_;
  pqscope::callback<void(const statement_event&)> observer_;
  std::vector<std::uint64_t> held_;  // subtransactions per savepoint level, see hold()
  std::size_t savepoint_limit_ = 64;
  bool refuse_past_limit_ = false;
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

template <class Pred>
void scope_machine::drop_queued(Pred pred) {
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), pred), queue_.end());
}

template <class Pred>
void scope_machine::trim_tail(Pred pred) {
  std::size_t last_user = 0;
  for (std::size_t k = 0; k < queue_.size(); ++k)
    if (queue_[k].k == item::user) last_user = k + 1;
  queue_.erase(std::remove_if(queue_.begin() + static_cast<std::ptrdiff_t>(last_user), queue_.end(), pred),
               queue_.end());
}

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
  auto slot = std::make_shared<statement_slot>();
  slot->stmt = statement{sql, params.size(), params.values(), params.types()};
  slot->sql = text;
  slot->owner = std::move(owner);
  slot->depth = depth();
  if (!frames_.empty()) slot->attempt = frames_.front().attempt.number;
  return slot;
}

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
    xid_.clear();
    xid_pending_ = false;
    void_.reset();
    if (attempt.batched) ++stats_.batched_attempts;
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

PQSCOPE_DECL std::optional<std::string> scope_machine::needs_resolution() const {
  if (op_.lost && op_.commit && op_.sent_end && op_.ended.opts.resolve_in_doubt && !op_.xid.empty())
    return op_.xid;
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
    run_callbacks(f.on_commit, false);
  };
  if (!op.sent_end) {  // nothing ever reached the server: nothing to commit
    if (committed != nullptr) *committed = true;
    run_callbacks(f.on_commit, false);
    return;
  }
  if (op.lost && f.opts.resolve_in_doubt && !op.xid_unknown) {
    // Without an xid the transaction wrote nothing: nothing was lost.
    const std::string outcome = op.xid.empty() ? "committed" : op.resolved ? op.resolution : "not asked";
    if (outcome == "committed") return done();
    if (outcome == "aborted") {
      ++stats_.transactions_rolled_back;
      run_callbacks(f.on_rollback, false);
      throw connection_error("the connection was lost while COMMIT was in flight, and the server rolled the "
                             "transaction back (pg_xact_status of xid " + op.xid + "): " + *op.lost);
    }
    throw in_doubt_error("the connection was lost after COMMIT was sent, and asking the server about xid " +
                         op.xid + " gave no answer (" + outcome +
                         "); the transaction may or may not have committed: " + *op.lost);
  }
  if (op.lost)
    throw in_doubt_error("the connection was lost after COMMIT was sent, so the transaction may or may not have "
                         "committed: " + *op.lost);
  if (op.failure || op.end_reply.st != reply::status::ok) {
    ++stats_.transactions_rolled_back;
    run_callbacks(f.on_rollback, false);
    if (op.followup_lost) throw connection_error("connection lost: " + *op.followup_lost);
    if (op.failure) std::rethrow_exception(op.failure);
    std::rethrow_exception(sql_error_ptr(op.end_reply, "COMMIT"));
  }
  if (op.end_reply.command != "COMMIT") {  // the server answers ROLLBACK for a failed transaction
    ++stats_.transactions_rolled_back;
    run_callbacks(f.on_rollback, false);
    throw transaction_aborted("COMMIT was answered with " + op.end_reply.command +
                                  ": the transaction had failed and was rolled back",
                              "the server rolled the transaction back", "");
  }
  done();
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
    if (std::exchange(send_all_, false)) n = queue_.size();
    // Learn the transaction id in the same round trip, for resolving a lost COMMIT:
    // after the last statement, or before the COMMIT if statements went out unanswered.
    // Never in front of a ROLLBACK: the transaction may be aborted there, the query
    // would fail (25P02) and the server would skip the ROLLBACK behind it; and a
    // rolled-back transaction has nothing to resolve.
    const bool ends = n > 0 && queue_[n - 1].k == item::end;
    const bool rolls_back = ends && std::strcmp(queue_[n - 1].text(), "ROLLBACK") == 0;
    const bool xid = !rolls_back && (last_user > 0 || (ends && xid_pending_)) && wants_xid();
    const std::size_t xid_after = last_user > 0 ? last_user : n - 1;
    for (std::size_t k = 0; k < n; ++k) {
      if (xid && last_user == 0 && k == xid_after) in_flight_.push_back(xid_item());
      in_flight_.push_back(std::move(queue_[k]));
      if (xid && last_user > 0 && k + 1 == xid_after) in_flight_.push_back(xid_item());
    }
    // Until an answer to the id query comes back, statements sent may have written.
    if (last_user > 0) xid_pending_ = true;
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  out_.clear();
  if (out_args_.size() < in_flight_.size()) out_args_.resize(in_flight_.size());
  // Savepoint texts first: making a higher number's moves the earlier ones.
  for (const item& it : in_flight_)
    if (is_savepoint_kind(it)) (void)savepoint_text(it);
  std::size_t users = 0;
  for (std::size_t k = 0; k < in_flight_.size(); ++k) {
    item& it = in_flight_[k];
    if (is_savepoint_kind(it)) it.fixed = savepoint_text(it);
    if (it.k == item::user) {
      ++users;
      out_.push_back(it.slot->stmt);
      continue;
    }
    out_args_[k].clear();
    if (it.owned)
      for (const std::string& a : it.owned->args) out_args_[k].push_back(a.c_str());
    out_.push_back(statement{it.text(), static_cast<int>(out_args_[k].size()),
                             out_args_[k].empty() ? nullptr : out_args_[k].data(), nullptr});
  }
  ++stats_.round_trips;
  stats_.statements += users;
  stats_.control_statements += out_.size() - users;
  sent_at_ = clock::now();
  return out_;
}

PQSCOPE_DECL void scope_machine::apply(batch_reply br) {
  std::vector<item> batch;
  batch.swap(in_flight_);
  // The batch's memory goes back to in_flight_ for the next plan(), however this returns.
  auto give_back = [&]() noexcept {
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
        it.slot->answer(r.res);
        notify(*it.slot, elapsed, nullptr, &r.res);
        break;
      case item::xid:
        xid_pending_ = false;
        if (r.res.size() == 1 && !r.res[0][0].is_null()) xid_ = r.res[0][0].text();
        break;
      default: break;
    }
  }

  if (br.lost) {
    if (end_in_batch) {
      op_.lost = br.lost_message;
      op_.xid = xid_;
      op_.xid_unknown = xid_.empty() && xid_pending_;
    }
    mark_broken(br.lost_message);
    const auto e = std::make_exception_ptr(connection_error("connection lost: " + br.lost_message));
    fail_unanswered(batch, e, elapsed);
    return;
  }

  // The outermost frame has left the stack once its COMMIT or ROLLBACK is queued.
  const bool batched_attempt = !out_of_band && (batching() || (end_in_batch && op_.ended.attempt.batched));
  if (failed_at && batched_attempt && batch[*failed_at].k != item::end) {
    void_attempt(batch, *failed_at, br, elapsed, end_in_batch);
    return;
  }

  if (failed_at) {
    const item& it = batch[*failed_at];
    const reply& r = br.replies[*failed_at];
    std::exception_ptr first = sql_error_ptr(r, it.k == item::user ? it.slot->sql : std::string_view(it.text()), it.context());
    if (it.k != item::end) {
      doom_here(it.context() + r.failure().message, r.failure().sqlstate);
      if (end_in_batch) op_.failure = first;
    }
    fail_unanswered(batch, first, elapsed);
    if (!end_in_batch) {
      // Skipped controls never ran: back to the queue, to ride with the next batch.
      std::vector<item> back;
      for (std::size_t k = *failed_at + 1; k < batch.size(); ++k)
        if (batch[k].k != item::user && batch[k].k != item::xid) back.push_back(std::move(batch[k]));
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

PQSCOPE_DECL void scope_machine::mark_open() noexcept {
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
  it.fixed = "SELECT pg_catalog.pg_current_xact_id_if_assigned()::text";
  return it;
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
  return resolve && xid_.empty();
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
  if (!frames_.empty() && !doom_) doom_ = doom{undo_level(), message, sqlstate};
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

PQSCOPE_DECL void
scope_machine::fail_unanswered(std::vector<item>& batch, const std::exception_ptr& e, std::chrono::microseconds elapsed) {
  for (item& it : batch) {
    if (it.k != item::user || it.slot->st != statement_slot::state::queued) continue;
    it.slot->fail(e);
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      notify(*it.slot, elapsed, &x, nullptr);
    } catch (...) {
    }
  }
}

PQSCOPE_DECL void scope_machine::fail_queued(const std::exception_ptr& e) noexcept {
  for (item& it : queue_)
    if (it.k == item::user && it.slot && it.slot->st == statement_slot::state::queued) it.slot->fail(e);
}

PQSCOPE_DECL void scope_machine::void_attempt(std::vector<item>& batch, std::size_t at, const batch_reply& br,
                                              std::chrono::microseconds elapsed, bool end_in_batch) {
  const item& it = batch[at];
  const reply& r = br.replies[at];
  void_ = attempt_failure{it.context() + r.failure().message, r.failure().sqlstate};
  if (it.k == item::user) {
    it.slot->fail(sql_error_ptr(r, it.slot->sql));
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
  if (end_in_batch) op_.replay = true;
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
  doom_ = doom{0, "the transaction was ended by a statement outside pqscope's control", ""};
  if (!had_error)
    op_.stray = std::make_exception_ptr(usage_error(
        "a statement ended the transaction behind pqscope's back; the open scopes can only roll back now"));
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
      doom_ = doom{level, "a nested scope without a savepoint was rolled back", ""};
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
#endif

// A token for the calling thread: the address of a thread_local, unique among
// live threads (cheaper to include than <thread>).
PQSCOPE_DECL std::uintptr_t this_thread_token() noexcept;
#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL std::uintptr_t this_thread_token() noexcept {
  static thread_local char tag = 0;
  return reinterpret_cast<std::uintptr_t>(&tag);
}
#endif

// The blocking front end: the machine, a driver, and the loop between them.
class sync_session : public sender, public std::enable_shared_from_this<sync_session> {
 public:
  scope_machine machine;

  // Held for the length of every public call: a call from a second thread while
  // one is in progress is refused before anything is touched or sent. The same
  // thread may re-enter (an on_commit callback that runs a statement).
  class call {
   public:
    // `of_stream`: a call of the COPY in progress itself; any other call is
    // refused while a COPY streams.
    call(sync_session& s, const char* what, bool of_stream = false);
    [[noreturn]] static void throw_busy(const char* what);
    // For destructors: false when another thread is in a call (nothing may be touched).
    static bool try_enter(sync_session& s, bool& outer) noexcept;
    static void leave(sync_session& s) noexcept { s.owner_.store(0, std::memory_order_release); }
    call(const call&) = delete;
    call& operator=(const call&) = delete;
    ~call() {
      if (outer_) leave(s_);
    }

   private:
    sync_session& s_;
    bool outer_ = false;
  };

  // A COPY in progress: ended (aborted, or read to its end) before the scopes
  // around it end or the connection closes.
  class stream {
   public:
    stream() = default;
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    stream(stream&&) = delete;
    stream& operator=(stream&&) = delete;
    virtual ~stream() = default;
    virtual void end_quietly() noexcept = 0;
  };
  void open_stream(stream* s) noexcept { stream_ = s; }
  void close_stream(stream* s) noexcept {
    if (stream_ == s) stream_ = nullptr;
  }
  [[nodiscard]] bool streaming() const noexcept { return stream_ != nullptr; }
  void end_stream_quietly() noexcept {
    if (stream_ != nullptr) stream_->end_quietly();  // which calls close_stream()
    stream_ = nullptr;
  }

  // ---- statements outside the pipeline (see scope_machine::prepare_out_of_band) ----
  // Sends what is queued, controls too, then puts `slot` in flight.
  void begin_out_of_band(const std::shared_ptr<statement_slot>& slot);
  // Its answer: the scopes learn it, then the result or the error.
  result end_out_of_band(const std::shared_ptr<statement_slot>& slot, batch_reply br);
  // The driver's calls (libpq_driver has them; a driver without them refuses).
  virtual int copy_start(const statement& s, batch_reply& out) = 0;  // PGRES_COPY_IN/OUT if started, else 0
  virtual bool copy_put(std::string_view data) = 0;
  virtual batch_reply copy_end(const char* abort_reason) = 0;
  virtual bool copy_get(std::string_view& row) = 0;
  virtual batch_reply copy_out_end() = 0;
  virtual batch_reply script(const char* sql) = 0;

  // The one loop: every send of every operation goes through here.
  void drive();

  // Sends what is queued and waits (a batched result is read, connection::flush()).
  PQSCOPE_DECL void flush() override;  // (see statement_slot::wait)

  // A statement from queue_statement(): a batched one waits, any other is sent now.
  result complete(const std::shared_ptr<statement_slot>& slot);

  void end(std::uint64_t id, bool commit, bool* committed = nullptr);

  // Ends scope `id` and every scope opened inside it, rolling back; never throws.
  // Used by destructors, also when scopes are destroyed out of order.
  void abandon(std::uint64_t id) noexcept;

 protected:
  virtual batch_reply exchange(const std::vector<statement>& statements) = 0;
  // "committed", "aborted", or why it could not tell; asked on a fresh connection.
  virtual std::string xact_status(const std::string& xid) noexcept = 0;

 private:
  bool driving_ = false;
  stream* stream_ = nullptr;  // the COPY in progress, if any
  std::atomic<std::uintptr_t> owner_{0};  // this_thread_token() of the thread in a call, or 0
};

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)

PQSCOPE_DECL sync_session::call::call(sync_session& s, const char* what, bool of_stream) : s_(s) {
  const std::uintptr_t me = this_thread_token();
  std::uintptr_t expected = 0;
  if (s_.owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) {
    outer_ = true;
  } else if (expected != me) {
    throw_busy(what);
  }
  if (s_.stream_ != nullptr && !of_stream) {
    if (outer_) leave(s_);
    throw usage_error(std::string(what) + ": a COPY is in progress on this connection; finish() the "
                      "copy_writer, or read the copy_reader to its end, first");
  }
}

PQSCOPE_DECL void sync_session::call::throw_busy(const char* what) {
  throw usage_error(std::string(what) +
                    ": this connection is in use by another thread, whose call is still in progress. A "
                    "connection and its scopes serve one thread at a time; give each thread its own connection "
                    "(pqscope::pool), or hand it over between calls");
}

PQSCOPE_DECL bool sync_session::call::try_enter(sync_session& s, bool& outer) noexcept {
  const std::uintptr_t me = this_thread_token();
  std::uintptr_t expected = 0;
  outer = s.owner_.compare_exchange_strong(expected, me, std::memory_order_acquire);
  return outer || expected == me;
}

PQSCOPE_DECL void sync_session::begin_out_of_band(const std::shared_ptr<statement_slot>& slot) {
  machine.request_sync_point();
  drive();
  machine.finish();
  machine.stage_out_of_band(slot);
}

PQSCOPE_DECL result sync_session::end_out_of_band(const std::shared_ptr<statement_slot>& slot, batch_reply br) {
  machine.apply(std::move(br));
  drive();
  machine.finish();
  return slot->wait();
}

PQSCOPE_DECL void sync_session::drive() {
  if (driving_) throw usage_error("the connection was used while it was busy (from a statement observer?)");
  driving_ = true;
  try {
    while (machine.wants_send()) machine.apply(exchange(machine.plan()));
  } catch (...) {
    driving_ = false;
    throw;
  }
  driving_ = false;
}

PQSCOPE_DECL void sync_session::flush() {
  call guard(*this, "reading a result");
  machine.request_flush();
  drive();
  machine.finish();
}

PQSCOPE_DECL result sync_session::complete(const std::shared_ptr<statement_slot>& slot) {
  if (slot->batched) return result(std::shared_ptr<deferred_answer>(slot));
  drive();
  machine.finish();
  return slot->wait();
}

PQSCOPE_DECL void sync_session::end(std::uint64_t id, bool commit, bool* committed) {
  if (committed != nullptr) *committed = false;
  if (!machine.end_scope(id, commit)) {
    if (committed != nullptr) *committed = commit;
    return;
  }
  drive();
  if (auto xid = machine.needs_resolution()) machine.resolve(xact_status(*xid));
  machine.finish_end(committed);
}

PQSCOPE_DECL void sync_session::abandon(std::uint64_t id) noexcept {
  // Another thread in a call: touching the machine now would race with it.
  bool outer = false;
  if (!call::try_enter(*this, outer)) return;
  struct leave_on_exit {
    sync_session& s;
    bool outer;
    leave_on_exit(sync_session& session, bool was_outer) : s(session), outer(was_outer) {}
    leave_on_exit(const leave_on_exit&) = delete;
    leave_on_exit& operator=(const leave_on_exit&) = delete;
    leave_on_exit(leave_on_exit&&) = delete;
    leave_on_exit& operator=(leave_on_exit&&) = delete;
    ~leave_on_exit() {
      if (outer) call::leave(s);
    }
  } leave{*this, outer};
  end_stream_quietly();  // a COPY still open in this scope fails it first
  auto at = machine.index_of(id);
  if (!at) return;
  while (machine.depth() > *at) {
    try {
      if (machine.end_scope(machine.innermost_id(), false, /*quiet=*/true)) {
        drive();
        machine.finish_end();
      }
    } catch (...) {
      // quiet endings only throw if memory runs out; the frame is gone either way
    }
  }
}
#endif

// Whether a driver can send statements outside the pipeline (COPY, scripts).
template <class D, class = void>
struct has_out_of_band : std::false_type {};
template <class D>
struct has_out_of_band<D, std::void_t<decltype(std::declval<D&>().script(""))>> : std::true_type {};

[[noreturn]] inline void unsupported(const char* what) {
  throw usage_error(std::string(what) + " needs a driver that can send statements outside a pipeline (libpq_driver)");
}

// How long the in-doubt resolver may take, from the moment the COMMIT was lost:
// one network_timeout plus its grace (the bound of one more round trip), or 5 s of
// polling without a network_timeout. Connecting counts, but is bounded only by
// connect_timeout (whole seconds, at least 2, per host: libpq's rule).
template <class D>
std::chrono::milliseconds resolver_budget(const D& d) {
  if constexpr (takes_network<D>::value) {
    const std::chrono::milliseconds t = d.network().timeout;
    if (t.count() > 0) return t + libpq_driver::grace_for(t);
  }
  return std::chrono::milliseconds(0);
}

// The resolver's deadline, shared by both front ends.
class resolver_clock {
 public:
  using clock = std::chrono::steady_clock;
  // budget 0: no network_timeout; polling stops after 5 s, round trips are unbounded.
  explicit resolver_clock(std::chrono::milliseconds budget)
      : bounded_(budget.count() > 0),
        budget_(bounded_ ? budget : std::chrono::milliseconds(5000)),
        deadline_(clock::now() + budget_) {}
  [[nodiscard]] std::chrono::milliseconds left() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock::now());
  }
  // The next round trip's network_timeout, so that it and its grace end by the
  // deadline (grace_for(t) <= t); false once nothing is left.
  [[nodiscard]] std::chrono::milliseconds round_trip_timeout() const {
    const std::chrono::milliseconds l = left();
    if (l.count() <= 1) return std::chrono::milliseconds(0);
    return l > std::chrono::milliseconds(2000) ? l - std::chrono::milliseconds(1000) : l / 2;
  }
  template <class D>
  bool bound_round_trip(D& d) const {
    if (!bounded_) return left().count() > 0;
    const std::chrono::milliseconds t = round_trip_timeout();
    if (t.count() <= 0) return false;
    if constexpr (takes_network<D>::value) d.set_network(network_settings{t});
    return true;
  }
  // Before asking again: 50 ms, or what is left; 0: stop.
  [[nodiscard]] std::chrono::milliseconds pause() const {
    const std::chrono::milliseconds l = left();
    if (l.count() <= (bounded_ ? 2 : 0)) return std::chrono::milliseconds(0);
    return l < std::chrono::milliseconds(50) ? l : std::chrono::milliseconds(50);
  }
  [[nodiscard]] std::string spent() const {
    return "no verdict within " + std::to_string(budget_.count()) + " ms" +
           (bounded_ ? " (network_timeout and its grace)" : "");
  }

 private:
  bool bounded_;
  std::chrono::milliseconds budget_;
  clock::time_point deadline_;
};

// The blocking front end bound to a driver.
template <class Driver>
class driver_session final : public sync_session {
 public:
  explicit driver_session(std::string info) : conninfo(std::move(info)) {}

  Driver driver;
  std::string conninfo;  // what the session was opened with; also for resolving a lost COMMIT

  int copy_start(const statement& s, batch_reply& out) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_start(s, out);
    else unsupported("COPY");
  }
  bool copy_put(std::string_view data) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_put(data);
    else unsupported("COPY");
  }
  batch_reply copy_end(const char* abort_reason) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_end(abort_reason);
    else unsupported("COPY");
  }
  bool copy_get(std::string_view& row) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_get(row);
    else unsupported("COPY");
  }
  batch_reply copy_out_end() override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_out_end();
    else unsupported("COPY");
  }
  batch_reply script(const char* sql) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.script(sql);
    else unsupported("execute_script()");
  }

 protected:
  batch_reply exchange(const std::vector<statement>& statements) override { return driver.exchange(statements); }

  std::string xact_status(const std::string& xid) noexcept override {
    try {
      using std::chrono::milliseconds;
      Driver fresh;
      copy_driver_settings(fresh, driver);  // the same network_timeout bounds the resolver
      const resolver_clock clock(resolver_budget(fresh));
      fresh.open(conninfo, "pqscope in-doubt resolver");
      const char* values[] = {xid.c_str()};
      const statement ask{"SELECT pg_catalog.pg_xact_status($1::xid8)", 1, values, nullptr};
      // A backend that was cut off may still be finishing: wait for its verdict,
      // within the budget (the call's bound holds with resolve_in_doubt).
      for (;;) {
        if (!clock.bound_round_trip(fresh)) return clock.spent();
        batch_reply br = fresh.exchange({ask});
        if (br.lost) return "connection lost: " + br.lost_message;
        const reply& r = br.replies.front();
        if (r.st != reply::status::ok) return "error: " + r.failure().message;
        if (r.res.size() != 1 || r.res[0][0].is_null()) return "unknown xid";
        std::string status(r.res[0][0].text());
        if (status != "in progress") return status;
        const milliseconds pause = clock.pause();
        if (pause.count() <= 0) return clock.spent();
        ::usleep(static_cast<useconds_t>(pause.count() * 1000));
      }
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown failure";
    }
  }
};

// Separate compilation: the session of the default driver is compiled once, with the rest.
#if defined(PQSCOPE_SEPARATE_COMPILATION) && defined(PQSCOPE_IMPLEMENTATION)
template class driver_session<libpq_driver>;
#elif defined(PQSCOPE_SEPARATE_COMPILATION)
extern template class driver_session<libpq_driver>;
#endif

}  // namespace pqscope::detail
