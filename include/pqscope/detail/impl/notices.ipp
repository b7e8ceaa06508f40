#pragma once
// The bodies of <pqscope/detail/notices.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/notices.hpp>

namespace pqscope::detail {

PQSCOPE_DECL notice_callback notice_route(const connection_options& o) {
  if (o.notice_handler) return o.notice_handler;
  if (!o.observer) return {};
  return notice_callback([observer = o.observer](const notice& n) mutable {
    statement_event ev;
    ev.server_notice = &n;
    observer(ev);
  });
}

PQSCOPE_DECL void receive_notice(void* arg, const PGresult* r) noexcept {
  auto field = [r](int code) {
    const char* v = PQresultErrorField(r, code);
    return v != nullptr ? std::string_view(v) : std::string_view();
  };
  notice n;
  n.severity = field(PG_DIAG_SEVERITY_NONLOCALIZED);
  if (n.severity.empty()) n.severity = field(PG_DIAG_SEVERITY);  // servers before 9.6
  n.sqlstate = field(PG_DIAG_SQLSTATE);
  n.message = field(PG_DIAG_MESSAGE_PRIMARY);
  n.detail = field(PG_DIAG_MESSAGE_DETAIL);
  n.hint = field(PG_DIAG_MESSAGE_HINT);
  try {
    (*static_cast<notice_callback*>(arg))(n);
  } catch (...) {
    // a handler's exception must not cross libpq, nor change what a statement does
  }
}

}  // namespace pqscope::detail
