#pragma once
// Sending a statement and reading libpq's answers, as both front ends do it: what one PGresult means for a
// statement's reply, the fields of an error, and the few answers that end a session
// or break the protocol pqscope speaks. driver.hpp and asio/link.hpp differ only in
// how they wait for the answers, never in how they read them.

#include <memory>
#include <string>
#include <vector>

#include <libpq-fe.h>

#include <pqscope/reply.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// Queues one statement of a batch in libpq (pipeline mode): unnamed, or the named
// prepared statement, after its Parse when statement::parse. false: libpq refused
// (PQerrorMessage says why). Each Parse answers on its own before the statement.
[[nodiscard]] PQSCOPE_DECL bool send_statement(PGconn* c, const statement& s);

// libpq's message without its trailing newline.
PQSCOPE_DECL std::string trimmed(const char* s);

// The fields of a failed statement's answer.
PQSCOPE_DECL std::shared_ptr<reply_error> error_of(const PGresult* raw);

// For an error of severity FATAL or PANIC (the session ends after it): the lost
// message, with the cause named where pqscope knows it; else "".
PQSCOPE_DECL std::string fatal_reason(const PGresult* raw);

// The answer given to a statement that started the COPY sub-protocol inside a
// batch (COPY OUT read to its end and dropped, COPY IN failed at once).
PQSCOPE_DECL std::shared_ptr<reply_error> copy_misuse(bool copy_in);

// The message of a COPY FROM STDIN with statements behind it in the same batch:
// the server reads those as broken COPY data and ends the session.
PQSCOPE_DECL std::string copy_in_kills_session();

// What the abort message of a COPY FROM STDIN that execute() met tells the server.
inline constexpr const char* copy_in_refused = "pqscope: COPY FROM STDIN cannot run through execute(); use copy_in()";

PQSCOPE_DECL server_state state_of(PGTransactionStatusType t);

// What the first PGresult of a statement says.
struct answer {
  enum kind {
    filled,      // the reply holds it: ok (with its result and command tag) or error
    skipped,     // PGRES_PIPELINE_ABORTED: an earlier statement of the pipeline failed
    copy_in,     // the statement started COPY FROM STDIN / TO STDOUT: the caller ends it
    copy_out,
    lost,        // the session is gone (`why`)
    unexpected,  // no answer a statement can give (`why`)
  };
  kind k = lost;
  std::string why;  // lost: the reason; any other kind but filled: "unexpected answer ..."
  // filled with an error of severity FATAL: why the server is about to end the
  // session (a later `lost` should say this rather than libpq's "server closed").
  std::string fatal;
};

// Reads `raw` (nullptr: no result, libpq's error is the reason) into `r`; frees it.
[[nodiscard]] PQSCOPE_DECL answer read_answer(PGconn* c, PGresult* raw, reply& r);

// One answer of a script (several statements, one simple-protocol query), `raw` not
// null: filled (append `r`), skipped (a script of blanks and comments runs no
// statement), or the session is gone. A COPY that slipped through is ended here and
// answered as an error.
[[nodiscard]] PQSCOPE_DECL answer read_script_answer(PGconn* c, PGresult* raw, reply& r);

// The scopes see a script as one statement: its first error, or its last answer
// (ok for a script that ran none). `results`: each statement's result, up to the
// first error. `all` is left moved from.
[[nodiscard]] PQSCOPE_DECL batch_reply script_outcome(batch_reply& all, std::vector<result>& results);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/libpq_reply.ipp>
#endif
