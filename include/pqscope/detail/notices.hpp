#pragma once
// The server's notices (connection_options::notice_handler), as both front ends
// route them: libpq calls a receiver while it reads the answers, in the order the
// server sent them; the receiver hands each to the handler, or else to the observer.

#include <libpq-fe.h>

#include <pqscope/callback.hpp>
#include <pqscope/options.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

using notice_callback = callback<void(const notice&)>;

// Where the options send notices: the handler, else the observer, else nowhere of
// pqscope's (an empty callback: libpq's default receiver stays).
PQSCOPE_DECL notice_callback notice_route(const connection_options& o);

// libpq's notice receiver; `arg` is a notice_callback that outlives the PGconn.
PQSCOPE_DECL void receive_notice(void* arg, const PGresult* r) noexcept;

// On a connection pqscope opened: its notices to `h` (nothing if `h` is empty).
inline void install_notices(PGconn* c, notice_callback* h) noexcept {
  if (c != nullptr && *h) (void)PQsetNoticeReceiver(c, &receive_notice, h);
}

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/notices.ipp>
#endif
