#pragma once
// Settling a COMMIT whose answer was lost (transaction_options::resolve_in_doubt):
// what the transaction leaves behind to be asked about, the question a fresh
// connection asks, and how its answer is read. No I/O: both front ends' resolvers
// are loops around it (driver_session::xact_status, asio's resolve_xact).
//
// pg_xact_status() of the transaction id is exact only on a server whose history
// holds a WAL record of the transaction: replaying one moves the server's next id
// past it. A server that lost the id (a standby promoted before the transaction's
// writes reached it; a server whose crash lost WAL not yet written) can hand the same
// id to another transaction, and pg_xact_status() would then describe that one. So
// with the id come the insert position right after the transaction's first write,
// the timeline, and the server's last replay position then (set by a recovery: a
// promotion, or a crash, also the crash of one backend, after which the postmaster
// resets shared memory, WAL buffers included, and recovers; its start time stays).
// The answer is read so:
//   a standby                          not the authority: ask again, on a new
//                                      connection (a promotion may be on its way)
//   same timeline, same replay position  no recovery since: its status
//   replayed up to or past that write  (a promoted standby, a crash recovery) its status
//   replayed less                      neither the write nor the COMMIT after it is in
//                                      this server's history: rolled back
//   never recovered, same timeline     restarted cleanly, which loses nothing: its status
//   never recovered, another timeline  no verdict
// A transaction whose first write logs nothing (temporary or unlogged tables only,
// or an id taken by pg_current_xact_id()) leaves no record before that position;
// the README says what that means.

#include <chrono>
#include <string>

#include <pqscope/reply.hpp>
#include <pqscope/wal_position.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// What a transaction that may end in doubt records, once it has an id.
struct in_doubt {
  std::string xid;          // pg_current_xact_id_if_assigned(), as text
  wal_position first_write;  // the insert position when the id was first seen
  std::string timeline;     // the server's timeline then, as in WAL file names (8 hex digits)
  std::string replayed;     // pg_last_wal_replay_lsn() then, "" for none (no recovery since start)
  std::chrono::milliseconds wait{0};  // transaction_options::resolve_wait

  [[nodiscard]] bool known() const noexcept { return !xid.empty(); }
};

// The id query: rides with the statements (no round trip of its own) until the
// transaction has an id. Never fails on a standby, where no id is ever assigned:
// the WAL functions, which refuse to run there, are asked only with an id.
// COALESCE is grammar, not a function: it cannot be qualified, and cannot be another.
inline constexpr const char* in_doubt_probe_sql =
    "SELECT x::text, CASE WHEN x IS NOT NULL THEN pg_catalog.pg_current_wal_insert_lsn() END, "
    "CASE WHEN x IS NOT NULL THEN pg_catalog.substr(pg_catalog.pg_walfile_name("
    "pg_catalog.pg_current_wal_insert_lsn()), 1, 8) END, "
    "CASE WHEN x IS NOT NULL THEN COALESCE(pg_catalog.pg_last_wal_replay_lsn()::text, '') END "
    "FROM pg_catalog.pg_current_xact_id_if_assigned() AS x";

// Reads the id query's answer into `out`; false while the transaction has no id
// (or the answer is not the query's).
[[nodiscard]] PQSCOPE_DECL bool read_probe(const result& r, in_doubt& out);

// The question of the fresh connection: $1 the id, $2 the position (record_end()),
// $3 the timeline, $4 the replay position then. Answers a word or a status, and the
// replay position now.
inline constexpr const char* in_doubt_verdict_sql =
    "SELECT CASE WHEN rec THEN 'standby' "
    "WHEN tl = $3 AND COALESCE(replayed::text, '') = $4 THEN pg_catalog.pg_xact_status($1::xid8) "
    "WHEN replayed IS NULL THEN CASE WHEN tl = $3 THEN pg_catalog.pg_xact_status($1::xid8) ELSE 'no history' END "
    "WHEN replayed >= $2::pg_lsn THEN pg_catalog.pg_xact_status($1::xid8) "
    "ELSE 'absent' END, replayed::text "
    "FROM (SELECT rec, pg_catalog.pg_last_wal_replay_lsn() AS replayed, "
    "CASE WHEN NOT rec THEN pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_insert_lsn()), "
    "1, 8) END AS tl FROM pg_catalog.pg_is_in_recovery() AS rec) AS s";

// The verdict question's parameters, kept alive for the statement that points at
// them (and at `q`'s strings: `q` must outlive it). Not copied: it points into itself.
class verdict_question {
 public:
  explicit verdict_question(const in_doubt& q);
  verdict_question(const verdict_question&) = delete;
  verdict_question& operator=(const verdict_question&) = delete;
  ~verdict_question() = default;
  [[nodiscard]] statement ask() const noexcept { return statement{in_doubt_verdict_sql, 4, values_, nullptr}; }

 private:
  std::string position_;
  const char* values_[4];
};

// What the resolver does with an answer.
struct verdict {
  enum class then { done, ask_again, reconnect };
  then next = then::done;
  // done: "committed", "aborted", "absent: <why>" (rolled back: not in the history of
  // the server that answered), or why there is no verdict. Otherwise what was seen.
  std::string outcome;
};

[[nodiscard]] PQSCOPE_DECL verdict read_verdict(const reply& r, const in_doubt& q);

// The outcome of a transaction that is not in the answering server's history.
[[nodiscard]] inline bool is_absent(const std::string& outcome) noexcept { return outcome.rfind("absent", 0) == 0; }

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/in_doubt.ipp>
#endif
