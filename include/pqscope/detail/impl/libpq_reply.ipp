#pragma once
// The bodies of <pqscope/detail/libpq_reply.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/libpq_reply.hpp>

#include <cstdlib>
#include <cstring>
#include <utility>

namespace pqscope::detail {

PQSCOPE_DECL bool send_statement(PGconn* c, const statement& s) {
  if (s.name == nullptr) return PQsendQueryParams(c, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0) == 1;
  if (s.parse && PQsendPrepare(c, s.name, s.sql, s.n_params, s.types) != 1) return false;
  return PQsendQueryPrepared(c, s.name, s.n_params, s.values, nullptr, nullptr, 0) == 1;
}

PQSCOPE_DECL std::string trimmed(const char* s) {
  std::string r = s != nullptr ? s : "";
  while (!r.empty() && (r.back() == '\n' || r.back() == ' ')) r.pop_back();
  return r;
}

PQSCOPE_DECL std::shared_ptr<reply_error> error_of(const PGresult* raw) {
  auto field = [raw](int code) {
    const char* v = PQresultErrorField(raw, code);
    return std::string(v != nullptr ? v : "");
  };
  auto e = std::make_shared<reply_error>();
  e->sqlstate = field(PG_DIAG_SQLSTATE);
  e->message = field(PG_DIAG_MESSAGE_PRIMARY);
  e->detail = field(PG_DIAG_MESSAGE_DETAIL);
  e->hint = field(PG_DIAG_MESSAGE_HINT);
  e->position = static_cast<std::size_t>(std::strtoul(field(PG_DIAG_STATEMENT_POSITION).c_str(), nullptr, 10));
  e->schema = field(PG_DIAG_SCHEMA_NAME);
  e->table = field(PG_DIAG_TABLE_NAME);
  e->column = field(PG_DIAG_COLUMN_NAME);
  e->datatype = field(PG_DIAG_DATATYPE_NAME);
  e->constraint = field(PG_DIAG_CONSTRAINT_NAME);
  if (e->message.empty()) e->message = trimmed(PQresultErrorMessage(raw));
  return e;
}

PQSCOPE_DECL std::string fatal_reason(const PGresult* raw) {
  const char* severity = PQresultErrorField(raw, PG_DIAG_SEVERITY_NONLOCALIZED);
  if (severity == nullptr) severity = PQresultErrorField(raw, PG_DIAG_SEVERITY);  // PgBouncer sends only this one
  if (severity == nullptr || (std::strcmp(severity, "FATAL") != 0 && std::strcmp(severity, "PANIC") != 0)) return {};
  std::string why = "the server ended the session: " + trimmed(PQresultErrorMessage(raw));
  if (why.find("statement pooling mode") != std::string::npos)
    why += " (PgBouncer in pool_mode = statement allows no transaction, so no pqscope scope can run there: use "
           "pool_mode = transaction or session for this database)";
  return why;
}

PQSCOPE_DECL std::shared_ptr<reply_error> copy_misuse(bool copy_in) {
  auto e = std::make_shared<reply_error>();
  e->misuse = true;
  e->message = std::string("the statement started COPY ") + (copy_in ? "FROM STDIN" : "TO STDOUT") +
               ", which execute() cannot carry; pqscope " + (copy_in ? "failed the COPY" : "dropped its rows") +
               ". Use copy_in() / copy_out()";
  return e;
}

PQSCOPE_DECL std::string copy_in_kills_session() {
  return "a statement started COPY FROM STDIN, which execute() cannot carry, with statements queued behind it: the "
         "server reads them as broken COPY data and ends the session. Use copy_in()";
}

PQSCOPE_DECL server_state state_of(PGTransactionStatusType t) {
  switch (t) {
    case PQTRANS_IDLE: return server_state::idle;
    case PQTRANS_INTRANS: return server_state::in_transaction;
    case PQTRANS_INERROR: return server_state::failed_transaction;
    default: return server_state::unknown;
  }
}

PQSCOPE_DECL answer read_answer(PGconn* c, PGresult* raw, reply& r) {
  answer a;
  if (raw == nullptr) {
    a.why = trimmed(PQerrorMessage(c));
    return a;
  }
  result res{adopt(raw)};  // frees raw on every path
  switch (PQresultStatus(raw)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      r.st = reply::status::ok;
      r.res = std::move(res);
      a.k = answer::filled;
      return a;
    case PGRES_PIPELINE_ABORTED:
      r.st = reply::status::skipped;
      a.k = answer::skipped;
      break;
    case PGRES_FATAL_ERROR:
      if (PQstatus(c) == CONNECTION_BAD) {
        a.why = trimmed(PQresultErrorMessage(raw));
        return a;
      }
      r.st = reply::status::error;
      r.error = error_of(raw);
      a.fatal = fatal_reason(raw);
      a.k = answer::filled;
      return a;
    case PGRES_COPY_IN: a.k = answer::copy_in; break;
    case PGRES_COPY_OUT: a.k = answer::copy_out; break;
    default: a.k = answer::unexpected; break;
  }
  // Where a caller cannot take this kind of answer, this is what it reports.
  a.why = "unexpected answer from the server: " + std::string(PQresStatus(PQresultStatus(raw)));
  return a;
}

PQSCOPE_DECL answer read_script_answer(PGconn* c, PGresult* raw, reply& r) {
  if (PQresultStatus(raw) == PGRES_EMPTY_QUERY) {
    PQclear(raw);
    answer a;
    a.k = answer::skipped;
    return a;
  }
  answer a = read_answer(c, raw, r);
  switch (a.k) {
    case answer::copy_in:
      // Refused before sending; should one slip through, end it so the session stays usable.
      (void)PQputCopyEnd(c, "COPY is not allowed in a script");
      [[fallthrough]];
    case answer::copy_out:
      r.st = reply::status::error;
      r.error = std::make_shared<const reply_error>(
          reply_error{"0A000", "COPY FROM STDIN / TO STDOUT is not allowed in a script", {}, {}, 0, {}, {}, {}, {}, {}});
      a.k = answer::filled;
      a.why.clear();
      break;
    default: break;
  }
  return a;
}

PQSCOPE_DECL batch_reply script_outcome(batch_reply& all, std::vector<result>& results) {
  batch_reply one;
  one.lost = all.lost;
  one.lost_message = std::move(all.lost_message);
  one.state = all.state;
  one.replies.resize(1);
  for (reply& r : all.replies) {
    if (r.st == reply::status::error) {
      one.replies[0] = std::move(r);
      break;
    }
    results.push_back(r.res);
    one.replies[0] = std::move(r);
  }
  if (all.replies.empty() && !all.lost) one.replies[0].st = reply::status::ok;  // only blanks and comments
  return one;
}

}  // namespace pqscope::detail
