#pragma once
// The COPY of the asio connection: the state a writer or reader shares with its
// operations, and the operations. Their meaning is the blocking COPY's (copy.hpp):
// what the scopes queued goes out first, the COPY runs outside the pipeline, its
// answer reaches the scopes like any statement's. Until it ends the COPY holds the
// session (session::user_busy, session::copying): every other operation is refused.
// One that is abandoned (its writer or reader destroyed first) is ended in the
// background, as an abandoned scope's rollback is, and the next operation waits
// for that at the session's gate.

#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <pqscope/errors.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/copy_rows.hpp>
#include <pqscope/detail/copy_text.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/detail/sql_text.hpp>
#include <pqscope/asio/link.hpp>
#include <pqscope/asio/query.hpp>
#include <pqscope/asio/detail/operation.hpp>
#include <pqscope/asio/detail/session.hpp>

namespace pqscope::asio::detail {

// A COPY in progress, shared by its writer or reader and the operation in flight.
// The last owner of one still open ends it in the background.
struct copy_state {
  copy_state(std::shared_ptr<session> sess, std::shared_ptr<pqscope::detail::statement_slot> st, bool copy_in)
      : s(std::move(sess)), slot(std::move(st)), in(copy_in) {}
  copy_state(const copy_state&) = delete;
  copy_state& operator=(const copy_state&) = delete;
  copy_state(copy_state&&) = delete;
  copy_state& operator=(copy_state&&) = delete;
  ~copy_state();

  // An operation of this COPY starts: nullptr, or why it cannot (it is given to the
  // operation, which fails with it). `ended_ok`: a COPY that has ended is no error.
  std::exception_ptr claim(const char* what, bool ended_ok) {
    if (busy)
      return std::make_exception_ptr(usage_error(
          std::string(what) + " while another operation of this COPY is in progress; await each one first"));
    if (!open && !ended_ok)
      return std::make_exception_ptr(usage_error(std::string(what) + ": this COPY has already ended" +
                                                 (why.empty() ? std::string() : " (" + why + ")")));
    busy = true;
    return nullptr;
  }

  std::shared_ptr<session> s;
  std::shared_ptr<pqscope::detail::statement_slot> slot;
  bool in;             // COPY FROM STDIN
  bool open = true;    // not ended
  bool busy = false;   // an operation of it is in flight
  std::string why;     // why it ended, if by an error
  pqscope::detail::copy_buffer sending;   // a writer's rows on their way
  pqscope::detail::copy_row_decoder rows;  // a reader's last row
  std::uint64_t read = 0;                 // rows read
};

// The operation's claim on its COPY, released when the operation ends.
class copy_claim {
 public:
  copy_claim(std::shared_ptr<copy_state> st, const std::exception_ptr& refused) : st_(std::move(st)) {
    if (refused) {
      st_.reset();  // claimed by someone else
      std::rethrow_exception(refused);
    }
  }
  copy_claim(const copy_claim&) = delete;
  copy_claim& operator=(const copy_claim&) = delete;
  ~copy_claim() {
    if (st_) st_->busy = false;
  }

 private:
  std::shared_ptr<copy_state> st_;
};

// async_copy_in / async_copy_out: the COPY statement, sent alone after everything
// queued (as a script is). Completes once the COPY has started; the session is then
// the COPY's until copy_end_work.
struct copy_start_work : out_of_band_work {
  using value_type = std::shared_ptr<copy_state>;
  static constexpr bool copies = true;
  copy_start_work(query text, char direction) : out_of_band_work(std::move(text)), dir(direction) {}

  [[nodiscard]] const char* what() const { return dir == 'i' ? "async_copy_in()" : "async_copy_out()"; }

  bool start(session& s) {
    return start_with(s, what(), [&](std::string_view sql) {
      if (pqscope::detail::copy_direction(sql) != dir)
        throw usage_error(std::string(what()) + " needs a COPY ... " + (dir == 'i' ? "FROM STDIN" : "TO STDOUT") +
                          " statement: " + std::string(sql.substr(0, 200)));
      pqscope::detail::check_placeholders(sql, 0);
    });
  }
  void take(session& s, batch_reply& br) {
    taken = true;
    if (s.io->copy_mode() != 0) {  // started: its answer comes at its end
      state = std::make_shared<copy_state>(s.shared_from_this(), slot, s.io->copy_mode() == 'i');
      s.copying = started = true;
      return;
    }
    s.machine.apply(std::move(br));
  }
  std::shared_ptr<copy_state> finish(session& s) {
    // Moved out: the operation object may outlive its completion for a while, and
    // the last owner of the state is the one whose end aborts the COPY.
    if (started) return std::move(state);
    s.machine.finish();
    (void)slot->wait();  // the server's error
    throw usage_error(std::string(what()) + ": the statement did not start a COPY");
  }
  [[nodiscard]] bool holds_session() const { return started; }

  char dir;
  std::shared_ptr<copy_state> state;
  bool started = false;
};

// The COPY has ended (or was lost): its answer goes to the scopes, and the session
// is free again. Background: the end of an abandoned COPY, which no one awaits.
template <bool Background>
struct copy_end_work : work_base {
  using value_type = result;
  static constexpr bool background = Background;
  static constexpr bool continues = !Background;
  copy_end_work(std::shared_ptr<pqscope::detail::statement_slot> st, batch_reply reply)
      : slot(std::move(st)), br(std::move(reply)) {}

  bool start(session& s) {
    s.copying = false;
    s.machine.apply(std::move(br));
    return true;
  }
  result finish(session& s) {
    s.machine.finish();
    return slot->wait();  // throws what the COPY raised
  }

  std::shared_ptr<pqscope::detail::statement_slot> slot;
  batch_reply br;
};

// The COPY has ended: the scopes learn its answer; throws its error.
inline net::awaitable<result> end_copy(std::shared_ptr<copy_state> st, batch_reply br) {
  st->open = false;
  try {
    co_return co_await start(st->s, copy_end_work<false>{st->slot, std::move(br)}, net::use_awaitable);
  } catch (const std::exception& e) {
    st->why = e.what();
    throw;
  }
}

// A writer's rows (st->sending) onto the socket; with `end`, then the end of the
// COPY: the rows the server took.
inline net::awaitable<std::uint64_t> put_rows(std::shared_ptr<copy_state> st, std::exception_ptr refused, bool end) {
  const copy_claim claim(st, refused);
  st->s->io->begin_copy_put(st->sending.view(), end, nullptr);
  batch_reply br = co_await async_copy_step(st->s->io, net::use_awaitable);
  st->sending.clear();
  if (!end && !br.lost) co_return 0;
  const result r = co_await end_copy(st, std::move(br));
  co_return r.affected_rows();
}

// A reader's next line (in the link, copy_row()); false at the COPY's end.
inline net::awaitable<bool> next_line(std::shared_ptr<copy_state> st) {
  if (!st->open) co_return false;
  st->s->io->begin_copy_get(/*drop=*/false);
  batch_reply br = co_await async_copy_step(st->s->io, net::use_awaitable);
  if (!br.lost && br.replies.empty()) {
    ++st->read;
    co_return true;
  }
  (void)co_await end_copy(st, std::move(br));
  co_return false;
}

template <class... Ts>
net::awaitable<std::optional<std::tuple<Ts...>>> next_row(std::shared_ptr<copy_state> st, std::exception_ptr refused) {
  const copy_claim claim(st, refused);
  if (!co_await next_line(st)) co_return std::nullopt;
  co_return st->rows.template row<Ts...>(st->s->io->copy_row(), st->read);
}

inline net::awaitable<std::optional<std::vector<std::optional<std::string>>>> next_fields(
    std::shared_ptr<copy_state> st, std::exception_ptr refused) {
  const copy_claim claim(st, refused);
  if (!co_await next_line(st)) co_return std::nullopt;
  std::vector<std::optional<std::string>> fields;
  pqscope::detail::parse_copy_row(st->s->io->copy_row(), fields);
  co_return fields;
}

// An abandoned COPY: a COPY FROM STDIN is failed (nothing of it is kept), a COPY TO
// STDOUT read to its end; then its answer goes to the scopes.
inline net::awaitable<void> end_abandoned(std::shared_ptr<session> s,
                                          std::shared_ptr<pqscope::detail::statement_slot> slot, bool in) {
  bool handed = false;  // to the end work, which opens the gate when done
  try {
    if (in)
      s->io->begin_copy_put({}, true, "the copy_writer was destroyed before async_finish()");
    else
      s->io->begin_copy_get(/*drop=*/true);
    batch_reply br = co_await async_copy_step(s->io, net::use_awaitable);
    handed = true;
    (void)co_await start(s, copy_end_work<true>{std::move(slot), std::move(br)}, net::use_awaitable);
  } catch (...) {
    // the scopes know: an aborted COPY dooms its scope, a lost connection breaks it
  }
  if (!handed) {
    s->background = false;
    error_code ignored;
    s->gate.cancel(ignored);
    s->process_abandoned();
  }
}

inline copy_state::~copy_state() {
  if (!open) return;
  // Until it has ended, the next operation waits at the gate, as behind an
  // abandoned scope's rollback.
  s->user_busy = false;
  s->copying = false;
  s->background = true;
  try {
    s->gate.expires_at(net::steady_timer::time_point::max());
    net::co_spawn(s->executor, end_abandoned(s, slot, in), net::detached);
  } catch (...) {
    // out of memory: closing the connection ends the session
    s->background = false;
    s->user_busy = true;
  }
}

}  // namespace pqscope::asio::detail
