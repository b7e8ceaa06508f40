#pragma once
// One asynchronous operation: a work type says what the operation queues and how
// it ends (one per operation: a statement, a flush, the end of a scope, a connect,
// the rollback of an abandoned scope), and machine_op runs it as an Asio composed
// operation, the loop that sync_session runs blocking:
//     while (machine.wants_send()) machine.apply(co_await exchange(machine.plan()))

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

#include <boost/asio/async_result.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/defer.hpp>
#include <boost/asio/post.hpp>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/application_name.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/detail/sql_text.hpp>
#include <pqscope/asio/link.hpp>
#include <pqscope/asio/query.hpp>
#include <pqscope/asio/detail/session.hpp>

namespace pqscope::asio::detail {

// ---- what operations do with the machine -----------------------------------------
// A work type is one operation's part of sync_session:
//   bool start(session&)                      queue; true: drive the loop
//   value_type finish(session&)               the end step: the value, or throws
//   optional<in_doubt> in_doubt(session&)      (end of a scope) the transaction to resolve
//   void settle(session&)                      (optional) told the outcome, either way
//   background / connects / out_of_band        see machine_op
//   copies / continues / holds_session()       a COPY's (asio/detail/copy.hpp)

struct work_base {
  static constexpr bool background = false;  // a rollback no one awaits (abandoned scope)
  static constexpr bool connects = false;    // opens the link after start()
  // A statement outside the pipeline (a script): after the loop has sent everything
  // queued (the sync point), stage() it and send it alone; take() its answers.
  static constexpr bool out_of_band = false;
  // out_of_band, a COPY: the statement starts a COPY instead of running as a script.
  static constexpr bool copies = false;
  // A step of the COPY that holds the session: it is this operation's already.
  static constexpr bool continues = false;
  // Whether the session stays busy after the operation (a COPY started).
  bool holds_session() const { return false; }
  std::optional<pqscope::detail::in_doubt> in_doubt(session&) const { return std::nullopt; }
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

// A statement sent alone, outside the pipeline (a script, a COPY): checked, then
// everything queued goes out first, controls too, so that it finds the transaction
// and savepoints the scopes say; the scopes then see it as one statement.
struct out_of_band_work : work_base {
  static constexpr bool out_of_band = true;
  explicit out_of_band_work(query text) : q(std::make_unique<query>(std::move(text))) {}

  // `check(sql)` throws for a statement the operation refuses; then the pooler guard.
  template <class Check>
  bool start_with(session& s, const char* what, Check&& check) {
    try {
      const std::string_view sql = q->text();
      if (q->param_count() != 0)
        throw usage_error(std::string(what) + " takes no parameters: the statement goes in the simple protocol");
      check(sql);
      if (s.options.pooling == pooling::transaction && !q->session_state_allowed()) {
        const std::string hazard = pqscope::detail::session_state_hazard(sql);
        if (!hazard.empty()) throw usage_error(hazard);
      }
      slot = s.machine.prepare_out_of_band(detail_access::c_str(*q), sql, s.weak_from_this());
    } catch (const std::exception& e) {
      s.notify_refusal(*q, e);
      throw;
    }
    s.machine.request_sync_point();
    return true;
  }
  // The sync point went out: the statement's turn. Its text, for the link.
  const char* stage(session& s) {
    s.machine.finish();
    s.machine.stage_out_of_band(slot);
    staged = true;
    return slot->stmt.sql;
  }

  std::unique_ptr<query> q;  // the slot points into it: it stays put while the operation moves
  std::shared_ptr<pqscope::detail::statement_slot> slot;
  bool staged = false, taken = false;
};

// execute_script(): several statements in one simple-protocol query.
struct script_work : out_of_band_work {
  using value_type = std::vector<result>;
  using out_of_band_work::out_of_band_work;

  bool start(session& s) {
    return start_with(s, "async_execute_script()",
                      [](std::string_view sql) { pqscope::detail::check_script(sql, "async_execute_script()"); });
  }
  void take(session& s, batch_reply& all) {
    taken = true;
    s.machine.apply(pqscope::detail::script_outcome(all, results));
  }
  std::vector<result> finish(session& s) {
    s.machine.finish();
    (void)slot->wait();  // the script's error, if it failed
    return std::move(results);
  }

  std::vector<result> results;
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
  std::optional<pqscope::detail::in_doubt> in_doubt(session& s) const {
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
    s.keep_received();  // the link closes the old session first
    return true;
  }
  void finish(session& s) {
    s.machine.mark_open();
    // The new session listens to nothing yet: the next wait does, then reports the gap.
    if (!s.channels.empty()) s.relisten = s.gap = true;
  }
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
    if constexpr (Work::out_of_band) {
      if (w_.staged && !w_.taken) {
        w_.take(*s_, br);
        return drive(self);
      }
    }
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
    } else if constexpr (Work::continues) {
      owns_ = true;
      run(self);
    } else {
      if (s_->user_busy) {
        error_ = std::make_exception_ptr(usage_error(
            s_->copying ? detail::session::copy_in_progress("an operation was started")
                        : "an operation was started while another one is in progress on this connection; one at a "
                          "time: await each operation before starting the next"));
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
    if constexpr (Work::out_of_band) {
      if (!w_.staged) {
        const char* sql = nullptr;
        try {
          sql = w_.stage(*s_);
        } catch (...) {
          error_ = std::current_exception();
          return done(self);
        }
        if constexpr (Work::copies) return async_copy_begin(s_->io, sql, park(self));
        return async_script(s_->io, sql, park(self));
      }
    }
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
      } else if (!w_.holds_session()) {
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

}  // namespace pqscope::asio::detail
