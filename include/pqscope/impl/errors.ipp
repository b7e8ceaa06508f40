#pragma once
// The bodies of <pqscope/errors.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/errors.hpp>

namespace pqscope {

PQSCOPE_DECL transaction_aborted::transaction_aborted(const std::string& what, std::string first_error,
                                                      std::string first_sqlstate)
    : error(what),
      first_(std::make_shared<const std::pair<std::string, std::string>>(std::move(first_error),
                                                                         std::move(first_sqlstate))) {}

}  // namespace pqscope

namespace pqscope::detail {

PQSCOPE_DECL std::string describe(const error_fields& f) {
  std::string out = f.message;
  if (f.position > 0 && !f.statement.empty()) {
    // The position counts characters; step over UTF-8 continuation bytes.
    std::size_t at = 0, chars = 1;
    while (at < f.statement.size() && chars < f.position) {
      ++at;
      while (at < f.statement.size() && (static_cast<unsigned char>(f.statement[at]) & 0xC0) == 0x80) ++at;
      ++chars;
    }
    const std::size_t begin = f.statement.rfind('\n', at == 0 ? 0 : at - 1);
    const std::size_t line_start = begin == std::string::npos || at == 0 ? 0 : begin + 1;
    std::size_t line_end = f.statement.find('\n', at);
    if (line_end == std::string::npos) line_end = f.statement.size();
    std::size_t line_no = 1;
    for (std::size_t k = 0; k < line_start; ++k) line_no += f.statement[k] == '\n' ? 1 : 0;
    const std::string prefix = "LINE " + std::to_string(line_no) + ": ";
    const std::string line = f.statement.substr(line_start, line_end - line_start);
    std::size_t column = 0;  // characters before the caret on its line
    for (std::size_t k = line_start; k < at && k < f.statement.size(); ++k)
      column += (static_cast<unsigned char>(f.statement[k]) & 0xC0) != 0x80 ? 1 : 0;
    out += "\n" + prefix + line + "\n" + std::string(prefix.size() + column, ' ') + "^";
  }
  if (!f.detail.empty()) out += "\nDETAIL: " + f.detail;
  if (!f.hint.empty()) out += "\nHINT: " + f.hint;
  return out;
}

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL sql_error::sql_error(const std::string& message, std::string sqlstate, std::string detail,
                                  std::string hint)
    : error(message),
      fields_(std::make_shared<const error_fields>(
          error_fields{std::move(sqlstate), message, std::move(detail), std::move(hint), {}, 0, {}, {}, {}, {}, {}})) {}

PQSCOPE_DECL sql_error::sql_error(error_fields f)
    : error(detail::describe(f)), fields_(std::make_shared<const error_fields>(std::move(f))) {}

}  // namespace pqscope

namespace pqscope::detail {

PQSCOPE_DECL void throw_sql_error(error_fields f) {
  const std::string state = f.sqlstate;
  auto is = [&](const char* code) { return state == code; };
  auto in_class = [&](const char* cls) { return state.compare(0, 2, cls) == 0; };
  if (is("23502")) throw not_null_violation(std::move(f));
  if (is("23503")) throw foreign_key_violation(std::move(f));
  if (is("23505")) throw unique_violation(std::move(f));
  if (is("23514")) throw check_violation(std::move(f));
  if (in_class("23")) throw integrity_constraint_violation(std::move(f));
  if (is("40001")) throw serialization_failure(std::move(f));
  if (is("40P01")) throw deadlock_detected(std::move(f));
  if (in_class("40")) throw transaction_rollback(std::move(f));
  if (in_class("22")) throw data_exception(std::move(f));
  if (is("25006")) throw read_only_sql_transaction(std::move(f));
  if (is("55P03")) throw lock_not_available(std::move(f));
  if (is("57014")) throw query_canceled(std::move(f));
  throw sql_error(std::move(f));
}

}  // namespace pqscope::detail
