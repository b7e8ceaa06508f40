#pragma once
// LISTEN / NOTIFY: what connection::wait_notification() and the asio connection's
// async_wait_notification() hand back.
//
// A connection listens with listen(channel), outside any scope and only with
// pooling::none: behind a transaction-mode pooler the LISTEN would stay on a
// server connection that other clients share. Notifications that arrive while
// other statements run are kept (libpq queues them) until they are waited for.
// When the session is lost, the connection opens a new one, listens to its
// channels again, and reports the gap once: notifications sent in between are
// gone, so whatever they announce must be read again.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

#include <libpq-fe.h>

#include <pqscope/errors.hpp>
#include <pqscope/options.hpp>

namespace pqscope {

struct notification {
  std::string channel;
  std::string payload;
  int sender_pid = 0;  // the server process of the session that sent it
  // The session was lost and a new one listens again: notifications sent in
  // between were not received. channel and payload are empty.
  bool gap = false;
};

namespace detail {

// A channel name as LISTEN takes it: quoted, so that its case and characters are kept.
// PostgreSQL cuts identifiers at 63 bytes and would deliver under the cut name.
inline std::string listen_identifier(std::string_view channel, const char* what) {
  if (channel.empty()) throw usage_error(std::string(what) + ": the channel name is empty");
  if (channel.size() > 63)
    throw usage_error(std::string(what) + ": the channel name is longer than 63 bytes, which PostgreSQL would cut");
  std::string quoted = "\"";
  for (const char ch : channel) {
    if (ch == '\0') throw usage_error(std::string(what) + ": the channel name contains a NUL byte");
    quoted += ch;
    if (ch == '"') quoted += '"';
  }
  quoted += '"';
  return quoted;
}

// Listening, and waiting, need a session of the connection's own, outside any scope.
inline void check_listen(const char* what, pooling p, std::size_t depth) {
  if (p != pooling::none)
    throw usage_error(std::string(what) +
                      " needs a session of its own (pooling::none): behind a transaction-mode pooler the LISTEN "
                      "stays on a server connection other clients share, and its notifications reach them");
  if (depth != 0)
    throw usage_error(std::string(what) + " inside a scope: a LISTEN in a transaction waits for its COMMIT (and a "
                      "rollback undoes it), and a wait would hold the transaction open; call it outside any scope");
}

// The oldest notification libpq holds for `c` (PQnotifies), if any.
inline bool take_notification(PGconn* c, notification& out) {
  if (c == nullptr) return false;
  struct freer {
    void operator()(PGnotify* n) const noexcept { PQfreemem(n); }
  };
  const std::unique_ptr<PGnotify, freer> n(PQnotifies(c));
  if (!n) return false;
  out.channel = n->relname;
  out.payload = n->extra != nullptr ? n->extra : "";
  out.sender_pid = n->be_pid;
  out.gap = false;
  return true;
}

inline notification gap_notification() {
  notification g;
  g.gap = true;
  return g;
}

}  // namespace detail
}  // namespace pqscope
