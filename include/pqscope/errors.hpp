#pragma once
// Error hierarchy. Every exception pqscope throws derives from pqscope::error.
//
//   error (std::runtime_error)
//   |- usage_error            misuse of the API, detected before anything is sent
//   |  `- configuration_error  the options say something of the server or pooler that is not so
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
//      |- read_only_sql_transaction         25006 (a write on a standby or in a READ ONLY transaction)
//      |- lock_not_available                55P03
//      |- query_canceled                    57014
//      `- prepared_statement_lost           26000 / 0A000 on a statement pqscope prepared

#include <cstddef>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include <pqscope/detail/config.hpp>

namespace pqscope {

class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class usage_error : public error {
 public:
  using error::error;
};

// The connection_options describe the server or the pooler wrongly, and it showed:
// e.g. pooler_max_prepared_statements says the pooler tracks prepared statements,
// and a server connection lacked one (PgBouncer before 1.21). The message names
// the setting; the connection stops doing what the setting allowed.
class configuration_error : public usage_error {
 public:
  using usage_error::usage_error;
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
  transaction_aborted(const std::string& what, std::string first_error, std::string first_sqlstate);
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

// What the server said about an error (libpq's PQresultErrorField), and the
// statement it was about.
struct error_fields {
  std::string sqlstate, message, detail, hint;
  std::string statement;  // the SQL that failed, when known
  std::size_t position = 0;  // 1-based character in `statement` the server points at; 0: none
  std::string schema, table, column, datatype, constraint;
};

namespace detail {
// The message as psql shows it: the statement line with a caret under the position,
// then DETAIL and HINT.
PQSCOPE_DECL std::string describe(const error_fields& f);
}  // namespace detail

class sql_error : public error {
 public:
  sql_error(const std::string& message, std::string sqlstate, std::string detail = {},
            std::string hint = {});
  explicit sql_error(error_fields f);

  // Five-character SQLSTATE code, e.g. "23505".
  [[nodiscard]] const std::string& sqlstate() const noexcept { return fields_->sqlstate; }
  // The server's primary message alone (what() adds the statement, caret, detail and hint).
  [[nodiscard]] const std::string& message() const noexcept { return fields_->message; }
  [[nodiscard]] const std::string& detail() const noexcept { return fields_->detail; }
  [[nodiscard]] const std::string& hint() const noexcept { return fields_->hint; }
  [[nodiscard]] const std::string& statement() const noexcept { return fields_->statement; }
  // 1-based character position in statement(), 0 when the server gave none.
  [[nodiscard]] std::size_t position() const noexcept { return fields_->position; }
  [[nodiscard]] const std::string& schema_name() const noexcept { return fields_->schema; }
  [[nodiscard]] const std::string& table_name() const noexcept { return fields_->table; }
  [[nodiscard]] const std::string& column_name() const noexcept { return fields_->column; }
  [[nodiscard]] const std::string& datatype_name() const noexcept { return fields_->datatype; }
  [[nodiscard]] const std::string& constraint_name() const noexcept { return fields_->constraint; }
  [[nodiscard]] const error_fields& fields() const noexcept { return *fields_; }

 private:
  std::shared_ptr<const error_fields> fields_;
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
PQSCOPE_SQL_ERROR_CLASS(read_only_sql_transaction, sql_error);             // 25006
PQSCOPE_SQL_ERROR_CLASS(lock_not_available, sql_error);                    // 55P03
PQSCOPE_SQL_ERROR_CLASS(query_canceled, sql_error);                        // 57014
// The session lost the statement pqscope had prepared for this text (26000: DISCARD
// ALL, DEALLOCATE) or can no longer run it (0A000: DDL changed its result type). It
// did not run; the text is prepared again on its next use. Thrown only where running
// it again was not pqscope's to decide: inside a transaction that had already done
// work, outside atomic() (which runs its function again itself).
PQSCOPE_SQL_ERROR_CLASS(prepared_statement_lost, sql_error);               // 26000, 0A000

#undef PQSCOPE_SQL_ERROR_CLASS

namespace detail {

// Throws the most specific sql_error subclass for the SQLSTATE.
[[noreturn]] PQSCOPE_DECL void throw_sql_error(error_fields f);
[[noreturn]] inline void throw_sql_error(const std::string& message, const std::string& state,
                                         const std::string& detail, const std::string& hint) {
  throw_sql_error(error_fields{state, message, detail, hint, {}, 0, {}, {}, {}, {}, {}});
}

}  // namespace detail
}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/errors.ipp>
#endif
