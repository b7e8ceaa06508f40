#pragma once
// What a driver is given and what it gives back: a batch of statements goes out
// in one round trip, and a batch_reply comes back with one reply per statement and
// the session's state after them. The scope machine plans the batches and applies
// the replies; a driver (driver.hpp, asio/link.hpp, a test's scripted driver) only
// carries them.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/result.hpp>

namespace pqscope {

// What the server says about the session after a batch (PQtransactionStatus).
enum class server_state { idle, in_transaction, failed_transaction, unknown };

struct statement {
  const char* sql = nullptr;  // NUL-terminated
  int n_params = 0;
  const char* const* values = nullptr;  // n_params entries; nullptr means NULL
  const unsigned* types = nullptr;      // n_params OIDs or nullptr; 0 lets the server infer
  // nullptr: an unnamed statement (Parse, Bind, Execute every time). Otherwise the
  // prepared statement of that name is bound and executed; with `parse`, `sql` is
  // first prepared under it in the same batch (one round trip all the same). A name
  // is never parsed twice on a session: PgBouncer disconnects a client that does.
  const char* name = nullptr;
  bool parse = false;
};

// What the server reported about a failed statement.
struct reply_error {
  std::string sqlstate, message, detail, hint;
  std::size_t position = 0;  // 1-based character, 0 if none
  std::string schema, table, column, datatype, constraint;
  // Not the server's refusal: the statement broke the protocol pqscope speaks
  // (a COPY that reached the server through execute()). Raised as usage_error.
  bool misuse = false;
};

struct reply {
  enum class status { ok, error, skipped };  // skipped: not run because an earlier statement failed
  status st = status::skipped;
  result res;           // status::ok
  // status::ok: the command tag (e.g. "COMMIT" or "INSERT 0 1") where `res` has
  // none to give, as from a driver without PGresults; libpq's drivers leave it
  // empty. Read it with tag().
  std::string command;
  // status::error. Out of line: a batch's replies are made for every statement,
  // and few statements fail.
  std::shared_ptr<const reply_error> error;
  // statement::parse: the server accepted the Parse, so the name now exists on the
  // session (whatever became of the execution behind it).
  bool parsed = false;
  [[nodiscard]] const reply_error& failure() const noexcept {
    static const reply_error none;
    return error ? *error : none;
  }
  // The command tag: `command` if the driver set it, else the result's own.
  [[nodiscard]] std::string_view tag() const { return command.empty() ? res.command() : std::string_view(command); }
  void clear() noexcept {
    st = status::skipped;
    res = result();
    command.clear();
    error.reset();
    parsed = false;
  }
};

struct batch_reply {
  std::vector<reply> replies;  // one per statement, in order
  bool lost = false;           // the connection died; replies past the loss are `skipped`
  std::string lost_message;
  server_state state = server_state::unknown;
  // Set when the session was idle before the batch, no statement in it opens a
  // transaction, and it ended inside one anyway: what opened it, when the driver
  // can tell (e.g. Pgpool-II in raw mode), else empty. For the error the scope
  // machine raises about a transaction no scope owns.
  std::string diagnostic;

  // Empty again, for `n` statements, keeping the memory (libpq_driver::exchange).
  void clear(std::size_t n) {
    replies.resize(n);
    for (reply& r : replies) r.clear();
    lost = false;
    lost_message.clear();
    state = server_state::unknown;
    diagnostic.clear();
  }
};

}  // namespace pqscope
