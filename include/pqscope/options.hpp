#pragma once
// Options: of one transaction scope, and of a connection.

#include <chrono>
#include <cstddef>
#include <exception>
#include <string_view>

#include <pqscope/callback.hpp>
#include <pqscope/wal_position.hpp>

namespace pqscope {

enum class isolation { server_default, read_committed, repeatable_read, serializable };

// Options of one transaction scope. Isolation, read_only and deferrable take
// effect on the outermost scope; a nested scope may only repeat them.
struct transaction_options {
  // Qualified on purpose: inside the struct an unqualified `isolation` would name the member.
  pqscope::isolation isolation = pqscope::isolation::server_default;
  bool read_only = false;
  bool deferrable = false;  // PostgreSQL honours it only for serializable read-only transactions
  // false: a nested scope joins its enclosing scope without a savepoint. A failure
  // inside it then dooms the enclosing scope, whose commit() rolls back and throws
  // transaction_aborted.
  bool savepoint = true;
  bool durable = false;  // must be the outermost scope: guarantees a real COMMIT at its end
  // Sent as SET LOCAL (never a session SET, which would leak to other PgBouncer
  // clients); a nested scope's values are restored when it ends. Zero: the server's.
  std::chrono::milliseconds statement_timeout{0};
  std::chrono::milliseconds lock_timeout{0};
  // Outermost scope only. The transaction id (pg_current_xact_id_if_assigned())
  // rides with each statement until it is known, so that if the connection dies
  // after COMMIT was sent, a fresh connection asks pg_xact_status() and commit()
  // reports what happened instead of in_doubt_error. Costs no round trip.
  bool resolve_in_doubt = false;
  // With resolve_in_doubt: how long the resolver keeps asking while no server can
  // tell (none reachable, a standby not yet promoted). Zero: network_timeout and its
  // grace, or 5 s without one. Each round trip is still bounded by network_timeout.
  std::chrono::milliseconds resolve_wait{0};
  // atomic()/transactional() only, outermost scope only: re-run the whole function
  // after serialization_failure (40001) or deadlock_detected (40P01).
  int retries = 0;
  // Outermost scope only: subtransactions this transaction may hold before
  // opening another savepoint is reported (and refused, if the connection says so);
  // 0: the connection's savepoint_limit.
  std::size_t savepoint_limit = 0;
  // atomic()/transactional() only, outermost scope only: statements are queued
  // and sent together, with BEGIN, savepoints and COMMIT, when a result is read,
  // on connection::flush(), or at the end (one round trip for a transaction that
  // reads nothing). If any statement of a send fails, the attempt is rolled back,
  // its callbacks are dropped and the function runs again without batching, where
  // every error surfaces where it happened. Ignored on a nested scope;
  // usage_error on a transaction object, which cannot run code again.
  bool batch = false;
  // Backoff before retry n (0-based): a random delay in [d/2, d], d = min(max, base * 2^n).
  std::chrono::milliseconds retry_base_delay{5};
  std::chrono::milliseconds retry_max_delay{200};
  // Read-your-writes, outermost scope: the transaction must see every commit up to
  // this position (a last_commit_position(), or the latest of several). On a standby
  // that has not replayed that far its first statement throws replica_behind and
  // nothing else runs; the check rides in the batch of the BEGIN (read committed or
  // the server's default isolation when that is read committed), or goes just before
  // it, alone, for repeatable read and serializable: checked inside the transaction
  // it would run after that transaction's snapshot was taken. On a primary (a
  // promoted standby too) the check always passes. Empty (the default): no check. A nested scope may only repeat a
  // position its outermost scope already covers.
  wal_position at_least{};
  // atomic()/async_atomic() only, outermost scope only, with at_least: how long to
  // wait for a standby that is behind. The function runs again after short pauses
  // (each attempt's check is the poll, in the round trip the attempt makes anyway)
  // until the standby caught up or this passed; then replica_behind is thrown.
  // Zero: thrown at once.
  std::chrono::milliseconds replica_wait{0};
};

// What sits between the application and PostgreSQL.
enum class pooling {
  none,        // PostgreSQL itself, or a session-pooling PgBouncer: session state is allowed
  transaction  // the default; PgBouncer in pool_mode = transaction: session state is refused (see connection_options)
};

// Whether statements are prepared on the server (named statements), so that the
// server parses and plans a statement the application runs again once, not each time.
enum class prepare {
  never,     // every statement is unnamed: parsed and planned again on each run
  automatic  // a text run a second time is prepared; its Parse rides in the same batch
};

// A message from the server that is not an error: a NOTICE (DROP TABLE IF EXISTS of
// a missing table, RAISE NOTICE in a function), a WARNING, INFO, LOG or DEBUG. The
// views are valid during the call only.
struct notice {
  std::string_view severity;  // NOTICE, WARNING, INFO, LOG or DEBUG, never translated
  std::string_view sqlstate;  // 00000 for a NOTICE, 01000 for a WARNING, or what RAISE set
  std::string_view message;   // the primary message
  std::string_view detail, hint;  // empty when the server sent none
};

// What the statement observer is told after each statement the application runs.
struct statement_event {
  std::string_view sql;
  std::size_t params = 0;
  std::size_t depth = 0;                   // open scopes when it ran
  std::chrono::microseconds duration{0};   // its round trip, control statements that rode with it included
  std::size_t rows = 0;                    // rows returned, or affected by INSERT/UPDATE/DELETE
  const std::exception* error = nullptr;   // what the statement throws (or threw), or nullptr
  // The attempt of the outermost atomic() it belonged to (0: the first), and
  // whether that attempt was batched: a replayed statement is reported twice.
  std::size_t attempt = 0;
  bool batched = false;
  // Set, with sql "SAVEPOINT", when a scope opens past the savepoint limit.
  std::string_view warning;
  // Set, with sql empty, for a server notice when connection_options has no
  // notice_handler: the notice, in the order the server sent it.
  const pqscope::notice* server_notice = nullptr;
};

struct connection_options {
  // pooling::transaction (the default): statements that would leave session state
  // behind (a session SET, LISTEN, PREPARE, session advisory locks, ...) are refused
  // with usage_error before anything is sent; behind PgBouncer's transaction pooling
  // the next client of the server connection would inherit them. Wrap one statement
  // in allow_session_state() to send it anyway, or choose pooling::none for a direct
  // connection that wants session settings.
  pqscope::pooling pooling = pqscope::pooling::transaction;
  // prepare::automatic (the default) prepares a statement text on its second run on
  // the connection, at no extra round trip; later runs send only Bind and Execute.
  // With pooling::transaction nothing is prepared unless pooler_max_prepared_statements
  // says the pooler tracks prepared statements.
  pqscope::prepare prepare = pqscope::prepare::automatic;
  // PgBouncer's max_prepared_statements, copied from its configuration: PgBouncer
  // 1.21 and later track protocol-level prepared statements in transaction pooling
  // when it is above 0 (1.24's default: 200). 0 (the default): the pooler is not known
  // to track them (PgBouncer before 1.21 does not: a statement prepared on one server
  // connection is missing on the next), and pooling::transaction prepares nothing.
  // It also bounds the statements one connection prepares. Set for a pooler that does
  // not track them, the first statement it loses throws configuration_error, and
  // that connection prepares nothing more.
  std::size_t pooler_max_prepared_statements = 0;
  // Called once for every statement given to execute()/query_value(), on the
  // calling thread, when its answer arrives (for a batched statement: with the
  // batch that carried it), or when it is refused before it was sent (error set).
  // It must not use the connection. Exceptions it
  // throws are swallowed: a logging hook must not change what a transaction does.
  // Any callable: a lambda, a function, a std::function (see callback.hpp).
  callback<void(const statement_event&)> observer;
  // Where the server's notices go, in the order it sends them, on the thread that
  // reads the answers: this handler; without one, the observer (a statement_event
  // with server_notice set); without either, libpq's default (standard error).
  // Exceptions it throws are swallowed. A borrowed PGconn* keeps its own receiver.
  callback<void(const notice&)> notice_handler;
  // PostgreSQL caches 64 subtransaction ids per backend; a transaction that holds
  // more (savepoints that wrote; released ones count until the transaction ends)
  // slows every snapshot in the cluster. Opening a savepoint past this many is
  // counted (connection_stats::savepoint_limit_exceeded) and reported to the
  // observer, and refused with usage_error if refuse_past_savepoint_limit. 0: no limit.
  std::size_t savepoint_limit = 64;
  bool refuse_past_savepoint_limit = false;
  // A client-side bound on each round trip. When it passes, a cancel request is
  // sent and the answer is awaited for a grace of min(network_timeout, 1 s): a
  // cancelled statement throws query_canceled (dooming its scope, as any failed
  // statement does); no answer closes the connection and throws connection_error,
  // or in_doubt_error when COMMIT was awaited (never cancelled). Also bounds
  // connecting (connect_timeout, whole seconds, at least 2, unless the conninfo
  // sets one). Zero (default): no bound per round trip; connecting is still
  // bounded (connect_timeout=10) and a dead peer is still noticed by TCP keepalives
  // and tcp_user_timeout defaults. Set it above the longest statement you run.
  std::chrono::milliseconds network_timeout{0};
  // Read-your-writes: the COMMIT of a read-write outermost scope carries, in the same
  // batch (no round trip), a query for the WAL position the server reached, and
  // last_commit_position() returns it once the COMMIT succeeded (also inside
  // on_commit callbacks). A standby that has replayed up to it sees the transaction.
  // Statements in autocommit (whose commit a query in their batch would precede),
  // savepoints, read-only and rolled-back scopes leave it as it was. If only the
  // position query fails (a cancel, say), the commit stands and the position is left
  // empty (unknown), as after a COMMIT in doubt. Off by default.
  bool commit_positions = false;
};

namespace detail {
// How many named statements a connection with these options may make (0: none).
inline std::size_t prepare_limit(const connection_options& o) noexcept {
  constexpr std::size_t most = 256;
  if (o.prepare == prepare::never) return 0;
  if (o.pooling == pooling::none) return most;
  return o.pooler_max_prepared_statements < most ? o.pooler_max_prepared_statements : most;
}
}  // namespace detail

}  // namespace pqscope
