#pragma once
#include <chrono>

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
  // atomic()/transactional() only, outermost scope only: re-run the whole function
  // after serialization_failure (40001) or deadlock_detected (40P01).
  int retries = 0;
  // Backoff before retry n (0-based): a random delay in [d/2, d], d = min(max, base * 2^n).
  std::chrono::milliseconds retry_base_delay{5};
  std::chrono::milliseconds retry_max_delay{200};
};

}  // namespace pqscope
