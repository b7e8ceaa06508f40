#pragma once
// connection_stats: counters kept per connection, counted where pqscope talks to libpq.

#include <cstdint>

namespace pqscope {

struct connection_stats {
  std::uint64_t round_trips = 0;               // batches sent, each ending in one sync
  std::uint64_t statements = 0;                // user statements sent
  std::uint64_t control_statements = 0;        // BEGIN, SAVEPOINT, RELEASE, SET LOCAL, COMMIT, ...
  std::uint64_t transactions_committed = 0;    // outermost scopes whose COMMIT succeeded
  std::uint64_t transactions_rolled_back = 0;  // outermost scopes that reached the server and rolled back
  std::uint64_t savepoints = 0;                // SAVEPOINTs the server executed
  std::uint64_t batched_attempts = 0;          // outermost atomic() attempts run with batch = true
  std::uint64_t replays = 0;                   // functions run again unbatched after a batched send failed
  std::uint64_t prepared = 0;                  // Parses of named statements sent (connection_options::prepare)
  // transaction_options::at_least: checks of a standby's replay position sent, how
  // many found it behind, and how many went alone (repeatable read, serializable).
  std::uint64_t replica_checks = 0;
  std::uint64_t replica_behind = 0;
  std::uint64_t replica_checks_alone = 0;
  // Subtransactions the current transaction holds (savepoints executed and not
  // rolled back; an upper bound, since one that never writes gets no id), the most
  // any transaction on this connection held, and savepoints opened past the limit.
  std::uint64_t savepoints_in_transaction = 0;
  std::uint64_t max_savepoints_in_transaction = 0;
  std::uint64_t savepoint_limit_exceeded = 0;
};

}  // namespace pqscope
