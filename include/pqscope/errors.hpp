#pragma once
// Error hierarchy. Every exception pqscope throws derives from pqscope::error.
//
//   error (std::runtime_error)
//   |- usage_error            misuse of the API, detected before anything is sent
//   |- conversion_error       a value could not be converted (parameter or field)
//   |- transaction_aborted    the scope is doomed by an earlier failure; end it
//   |  `- batch_failed         a statement of a batched attempt failed: atomic() runs it again unbatched
//   |- connection_error       the connection is unusable
//   |  `- in_doubt_error      COMMIT was sent and no answer came: outcome unknown
//   `- sql_error              the server reported an error (SQLSTATE, detail, hint)
//      |- data_exception                    22xxx
//      |- integrity_constraint_violation    23xxx
//      |  |- not_null_violation             23502
//      |  |- foreign_key_violation          23503
//      |  |- unique_violation               23505
//      |  `- check_violation                23514
//      |- transaction_rollback              40xxx
//      |  |- serialization_failure          40001
//      |  `- deadlock_detected              40P01
//      |- lock_not_available                55P03
//      `- query_canceled                    57014

#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

namespace pqscope {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class usage_error : public error {
 public:
  using error::error;
};

class conversion_error : public error {
 public:
  using error::error;
};

class connection_error : public error {
 public:
  using error::error;
};

class in_doubt_error : public connection_error {
 public:
  using connection_error::connection_error;
};

// Thrown for a statement (or commit) attempted after an earlier failure doomed the
// enclosing scope. No round trip is made. first_error() names that failure.
class transaction_aborted : public error {
 public:
  transaction_aborted(const std::string& what, std::string first_error, std::string first_sqlstate)
      : error(what),
        first_(std::make_shared<const std::pair<std::string, std::string>>(std::move(first_error),
                                                                           std::move(first_sqlstate))) {}
  // The message of the failure that doomed the scope.
  [[nodiscard]] const std::string& first_error() const noexcept { return first_->first; }
  // Its SQLSTATE; empty when the scope was doomed by an exception or an inner rollback.
  [[nodiscard]] const std::string& first_sqlstate() const noexcept { return first_->second; }

 private:
  // shared so that copying the exception never throws
  std::shared_ptr<const std::pair<std::string, std::string>> first_;
};

// Thrown inside a batched attempt (transaction_options::batch) once a statement
// sent with it has failed: the attempt is already rolled back, every later call in
// it throws this without a round trip, and atomic() runs the function again
// without batching, where the failure surfaces at the statement that caused it.
// first_error()/first_sqlstate() name the failure.
class batch_failed : public transaction_aborted {
 public:
  using transaction_aborted::transaction_aborted;
};

class sql_error : public error {
 public:
  sql_error(const std::string& message, std::string sqlstate, std::string detail = {},
            std::string hint = {})
      : error(message),
        fields_(std::make_shared<const fields>(fields{std::move(sqlstate), std::move(detail), std::move(hint)})) {}

  // Five-character SQLSTATE code, e.g. "23505".
  [[nodiscard]] const std::string& sqlstate() const noexcept { return fields_->sqlstate; }
  [[nodiscard]] const std::string& detail() const noexcept { return fields_->detail; }
  [[nodiscard]] const std::string& hint() const noexcept { return fields_->hint; }

 private:
  struct fields {
    std::string sqlstate, detail, hint;
  };
  std::shared_ptr<const fields> fields_;
};

#define PQSCOPE_SQL_ERROR_CLASS(name, base) \
  class name : public base { /* NOLINT(bugprone-macro-parentheses): names, not expressions */ \
   public:                                  \
    using base::base;                       \
  }

PQSCOPE_SQL_ERROR_CLASS(data_exception, sql_error);                        // 22xxx
PQSCOPE_SQL_ERROR_CLASS(integrity_constraint_violation, sql_error);        // 23xxx
PQSCOPE_SQL_ERROR_CLASS(not_null_violation, integrity_constraint_violation);     // 23502
PQSCOPE_SQL_ERROR_CLASS(foreign_key_violation, integrity_constraint_violation);  // 23503
PQSCOPE_SQL_ERROR_CLASS(unique_violation, integrity_constraint_violation);       // 23505
PQSCOPE_SQL_ERROR_CLASS(check_violation, integrity_constraint_violation);        // 23514
PQSCOPE_SQL_ERROR_CLASS(transaction_rollback, sql_error);                  // 40xxx
PQSCOPE_SQL_ERROR_CLASS(serialization_failure, transaction_rollback);      // 40001
PQSCOPE_SQL_ERROR_CLASS(deadlock_detected, transaction_rollback);          // 40P01
PQSCOPE_SQL_ERROR_CLASS(lock_not_available, sql_error);                    // 55P03
PQSCOPE_SQL_ERROR_CLASS(query_canceled, sql_error);                        // 57014

#undef PQSCOPE_SQL_ERROR_CLASS

namespace detail {

// Throws the most specific sql_error subclass for the SQLSTATE.
[[noreturn]] inline void throw_sql_error(const std::string& message, const std::string& state,
                                         const std::string& detail, const std::string& hint) {
  auto is = [&](const char* code) { return state == code; };
  auto in_class = [&](const char* cls) { return state.compare(0, 2, cls) == 0; };
  if (is("23502")) throw not_null_violation(message, state, detail, hint);
  if (is("23503")) throw foreign_key_violation(message, state, detail, hint);
  if (is("23505")) throw unique_violation(message, state, detail, hint);
  if (is("23514")) throw check_violation(message, state, detail, hint);
  if (in_class("23")) throw integrity_constraint_violation(message, state, detail, hint);
  if (is("40001")) throw serialization_failure(message, state, detail, hint);
  if (is("40P01")) throw deadlock_detected(message, state, detail, hint);
  if (in_class("40")) throw transaction_rollback(message, state, detail, hint);
  if (in_class("22")) throw data_exception(message, state, detail, hint);
  if (is("55P03")) throw lock_not_available(message, state, detail, hint);
  if (is("57014")) throw query_canceled(message, state, detail, hint);
  throw sql_error(message, state, detail, hint);
}

}  // namespace detail
}  // namespace pqscope
