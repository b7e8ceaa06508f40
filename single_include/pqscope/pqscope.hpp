#pragma once
// pqscope 0.1.0, single-header edition.
//
// Generated from include/ by scripts/amalgamate.py. DO NOT EDIT: changes here
// are lost. Edit the headers in include/ and regenerate with `scripts/dev.sh amalgamate`.

// pqscope: nestable transaction scopes for libpq, safe behind PgBouncer's
// transaction pooling. Include this header (or the single header of the same
// name in single_include/) and link libpq.

// #include <pqscope/errors.hpp>
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

// #include <pqscope/detail/config.hpp>
// Header-only (the default) or separate compilation: the one place that decides.
//
// By default every function of pqscope is defined in the headers, inline. A
// program with several translation units can instead compile the library's
// non-template code once: define PQSCOPE_SEPARATE_COMPILATION for every
// translation unit (e.g. on the compiler's command line), and in exactly one of
// them also define PQSCOPE_IMPLEMENTATION before including pqscope:
//
//     // pqscope.cpp
//     #define PQSCOPE_IMPLEMENTATION
//     #include <pqscope/pqscope.hpp>
//
// The other translation units then see declarations only. CMake users can link
// pqscope::compiled instead, which does both (src/pqscope.cpp). The two modes must
// not be mixed in one program: one that does stops at startup (build_mode.hpp).
//
// How the headers follow it: `foo.hpp` declares, and the non-template bodies live in
// `impl/foo.ipp`, which `foo.hpp` includes at its end when PQSCOPE_BODIES is
// defined (header-only mode, or the implementation unit). Template bodies are
// in the headers, or in `impl/foo.hpp` when long; the asio front end is header-only.
//
// PQSCOPE_DECL marks the definitions that move to that one translation unit:
// `inline` in header-only mode, nothing in separate compilation.
// PQSCOPE_COMPILED_ONCE(class x<y>) instantiates a template specialization the
// library uses itself in the implementation unit only, and keeps every other
// unit of a separately compiled program from instantiating it again.

#if defined(PQSCOPE_SEPARATE_COMPILATION)
#define PQSCOPE_DECL
#if defined(PQSCOPE_IMPLEMENTATION)
#define PQSCOPE_BODIES
#define PQSCOPE_COMPILED_ONCE(...) template __VA_ARGS__;
#else
#define PQSCOPE_COMPILED_ONCE(...) extern template __VA_ARGS__;
#endif
#else
#define PQSCOPE_DECL inline
#define PQSCOPE_BODIES
#define PQSCOPE_COMPILED_ONCE(...)
#endif

// #include <pqscope/detail/build_mode.hpp>
// A program must not mix the two build modes of config.hpp. Mixed, the linker keeps
// one copy of each function, the inline one of a header-only unit or the compiled
// one, and the program works by chance, until the two were built from different
// versions or settings. No linker reports it (an inline definition gives way to a
// strong one silently), so the program says so at startup instead: each mode
// registers once per program, from the inline variable below, and the second mode
// to register stops it with a message.

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace pqscope::detail::build_mode {

enum : unsigned { header_only = 1U, separate = 2U };

// One object for the whole program, whichever units define it; constant-initialized,
// so it is ready before any unit's dynamic initialization runs.
inline std::atomic<unsigned> seen{0U};

inline bool join(unsigned mode) noexcept {
  if ((seen.fetch_or(mode) | mode) == (header_only | separate)) {
    std::fputs(
        "pqscope: this program mixes header-only units with separately compiled ones "
        "(PQSCOPE_SEPARATE_COMPILATION, pqscope::compiled). Define PQSCOPE_SEPARATE_COMPILATION for "
        "every translation unit that includes pqscope, or for none (see pqscope/detail/config.hpp).\n",
        stderr);
    std::abort();
  }
  return true;
}

// Inline: initialized once per program, not once per unit.
#if defined(PQSCOPE_SEPARATE_COMPILATION)
inline const bool joined_separate = join(separate);
#else
inline const bool joined_header_only = join(header_only);
#endif

}  // namespace pqscope::detail::build_mode

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
// #include <pqscope/impl/errors.ipp>
// The bodies of <pqscope/errors.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/errors.hpp> (inlined above)

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
#endif
// #include <pqscope/callback.hpp>
// pqscope::callback<R(Args...)>: a copyable holder of any callable, as
// std::function is, for connection_options::observer and the on_commit and
// on_rollback callbacks. <functional> would cost every includer about 8,000 lines
// (its searchers bring <unordered_map>) for std::function alone.
//
// A lambda, a function pointer or a std::function converts to it (a null function
// pointer or an empty std::function gives an empty callback), and it converts to
// std::function in turn. Empty when default-constructed or set to nullptr; calling
// an empty callback throws usage_error. Like std::function, the callable must be
// copyable; it is called as a non-const lvalue.

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

// #include <pqscope/errors.hpp> (inlined above)

namespace pqscope {

template <class Signature>
class callback;

namespace detail {
// Whether `f == nullptr` compiles: function pointers, std::function, callbacks.
template <class F, class = void>
struct nullable : std::false_type {};
template <class F>
struct nullable<F, std::void_t<decltype(std::declval<const F&>() == nullptr)>> : std::true_type {};
template <class F>
bool is_null(const F& f) noexcept {
  if constexpr (nullable<F>::value)
    return f == nullptr;
  else
    return false;
}

[[noreturn]] inline void empty_callback() { throw usage_error("an empty pqscope::callback was called"); }
}  // namespace detail

template <class R, class... Args>
class callback<R(Args...)> {
  // Small callables whose bytes can be copied (captures of a few references or
  // pointers, function pointers) live inside, as std::function keeps them; the
  // rest on the heap.
  union storage {
    void* heap;
    alignas(void*) unsigned char local[2 * sizeof(void*)];
  };
  template <class F>
  static constexpr bool is_local =
      std::conjunction_v<std::bool_constant<sizeof(F) <= sizeof(storage)>,
                         std::bool_constant<alignof(F) <= alignof(storage)>, std::is_trivially_copyable<F>,
                         std::is_trivially_destructible<F>>;

  struct ops {
    R (*call)(const storage&, Args&&...);
    void* (*clone)(const void*);  // nullptr: local, copied with the storage's bytes
    void (*destroy)(void*) noexcept;
  };

  template <class F>
  static F& target(const storage& s) noexcept {
    if constexpr (is_local<F>)
      // NOLINTNEXTLINE: the object lives in those bytes
      return *std::launder(reinterpret_cast<F*>(const_cast<unsigned char*>(s.local)));
    else
      return *static_cast<F*>(s.heap);
  }
  template <class F>
  static R call(const storage& s, Args&&... args) {
    if constexpr (std::is_void_v<R>)
      target<F>(s)(std::forward<Args>(args)...);
    else
      return target<F>(s)(std::forward<Args>(args)...);
  }
  template <class F>
  static void* clone(const void* p) {
    return new F(*static_cast<const F*>(p));
  }
  template <class F>
  static void destroy(void* p) noexcept {
    delete static_cast<F*>(p);
  }
  template <class F>
  static constexpr ops make_ops() noexcept {
    if constexpr (is_local<F>)
      return {&call<F>, nullptr, nullptr};
    else
      return {&call<F>, &clone<F>, &destroy<F>};
  }
  template <class F>
  static constexpr ops ops_for = make_ops<F>();

  template <class F>
  using accepts = std::enable_if_t<!std::is_same_v<std::decay_t<F>, callback> &&
                                   !std::is_member_pointer_v<std::decay_t<F>> &&
                                   std::is_copy_constructible_v<std::decay_t<F>> &&
                                   std::is_invocable_r_v<R, std::decay_t<F>&, Args...>>;

 public:
  using result_type = R;

  callback() noexcept = default;
  callback(std::nullptr_t) noexcept {}  // NOLINT(google-explicit-constructor): as std::function

  template <class F, class = accepts<F>>
  callback(F&& f) {  // NOLINT(google-explicit-constructor,bugprone-forwarding-reference-overload): as std::function
    using D = std::decay_t<F>;
    if (detail::is_null<D>(f)) return;
    if constexpr (is_local<D>)
      ::new (static_cast<void*>(s_.local)) D(std::forward<F>(f));
    else
      s_.heap = new D(std::forward<F>(f));
    ops_ = &ops_for<D>;
  }

  callback(const callback& other) : ops_(other.ops_) {
    if (ops_ != nullptr && ops_->clone != nullptr)
      s_.heap = ops_->clone(other.s_.heap);
    else
      s_ = other.s_;
  }
  callback(callback&& other) noexcept : s_(other.s_), ops_(std::exchange(other.ops_, nullptr)) {}
  callback& operator=(const callback& other) {
    if (this != &other) callback(other).swap(*this);
    return *this;
  }
  callback& operator=(callback&& other) noexcept {
    if (this != &other) callback(std::move(other)).swap(*this);
    return *this;
  }
  callback& operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }
  template <class F, class = accepts<F>>
  callback& operator=(F&& f) {
    callback(std::forward<F>(f)).swap(*this);
    return *this;
  }
  ~callback() { reset(); }

  void swap(callback& other) noexcept {
    std::swap(s_, other.s_);
    std::swap(ops_, other.ops_);
  }

  [[nodiscard]] explicit operator bool() const noexcept { return ops_ != nullptr; }

  R operator()(Args... args) const {
    if (ops_ == nullptr) detail::empty_callback();
    return ops_->call(s_, std::forward<Args>(args)...);
  }

  friend bool operator==(const callback& c, std::nullptr_t) noexcept { return !c; }
  friend bool operator==(std::nullptr_t, const callback& c) noexcept { return !c; }
  friend bool operator!=(const callback& c, std::nullptr_t) noexcept { return static_cast<bool>(c); }
  friend bool operator!=(std::nullptr_t, const callback& c) noexcept { return static_cast<bool>(c); }

 private:
  void reset() noexcept {
    if (ops_ != nullptr && ops_->destroy != nullptr) ops_->destroy(s_.heap);
    ops_ = nullptr;
  }

  storage s_{};
  const ops* ops_ = nullptr;
};

template <class R, class... Args>
void swap(callback<R(Args...)>& a, callback<R(Args...)>& b) noexcept {
  a.swap(b);
}

}  // namespace pqscope
// #include <pqscope/options.hpp>
// Options: of one transaction scope, and of a connection.

#include <chrono>
#include <cstddef>
#include <exception>
#include <string_view>

// #include <pqscope/callback.hpp> (inlined above)
// #include <pqscope/wal_position.hpp>
// pqscope::wal_position: a position in the server's write-ahead log (PostgreSQL's
// pg_lsn), for parameters and results, and the token of read-your-writes: with
// connection_options::commit_positions, basic_connection::last_commit_position()
// (and the Asio connection's) is where the last COMMIT's record ends in the WAL.
// A standby that has replayed up to it sees that transaction.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp>
// Values in and out of PostgreSQL's text format, and the customization point.
// Built in: bool, integers, floating point, std::string(_view), system_clock time
// points and timestamp_or_infinity (timestamptz), date, bytea (std::vector<std::byte>,
// bytes_view) and one-dimensional arrays (std::vector<T>, std::vector<std::optional<T>>).
//
// To pass or read a type of your own, specialize pqscope::value_traits:
//
//   template <> struct pqscope::value_traits<money> {
//     static constexpr unsigned oid = 0;                     // optional: parameter type, 0 = let the server infer
//     static std::string to_text(const money& m);            // for parameters
//     static money from_text(std::string_view text);         // for result fields
//   };
//
// Either function may be left out if that direction is not needed. Throw
// pqscope::conversion_error from from_text for text you cannot parse. NULL is
// handled by the library: use std::optional<money>.

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <ratio>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/text_codecs.hpp>
// PostgreSQL text formats that need more than one line: calendar arithmetic and
// ISO timestamps, bytea (hex and escape), and one-dimensional array literals.
// No value_traits here; params.hpp builds the traits on these functions.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {
namespace detail {

// The value as it goes into an error message: quoted, and cut short if long.
PQSCOPE_DECL std::string quote_value(std::string_view s);

// ---- calendar: the proleptic Gregorian calendar PostgreSQL uses, astronomical years (0 is 1 BC)

constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t q = a / b;
  if (a % b != 0 && ((a < 0) != (b < 0))) --q;
  return q;
}

constexpr bool is_leap_year(std::int64_t y) noexcept { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

constexpr unsigned days_in_month(std::int64_t y, unsigned m) noexcept {
  constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

// Days from 1970-01-01 to y-m-d (negative before). m and d must be valid.
constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) noexcept {
  // Leap years in [0, y): year 0 is one, and floor division counts the rest on either side of it.
  const std::int64_t leaps = floor_div(y - 1, 4) - floor_div(y - 1, 100) + floor_div(y - 1, 400) + 1;
  constexpr unsigned before_month[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
  constexpr std::int64_t year_0_to_1970 = 719528;
  return 365 * y + leaps + before_month[m - 1] + (m > 2 && is_leap_year(y) ? 1 : 0) + d - 1 - year_0_to_1970;
}

struct civil_date {
  std::int64_t year;
  unsigned month, day;
};

constexpr civil_date civil_from_days(std::int64_t days) noexcept {
  // H. Hinnant's algorithm: eras of 400 years (146097 days) from 0000-03-01, so that
  // the leap day ends a year. No loop: this runs for every timestamp a COPY writes.
  const std::int64_t z = days + 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);                 // [0, 146096]
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);             // [0, 365]
  const unsigned mp = (5 * doy + 2) / 153;                                  // March = 0
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  return {static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0), m, d};
}

constexpr std::int64_t micros_per_second = 1'000'000;
constexpr std::int64_t micros_per_day = 86'400 * micros_per_second;
// PostgreSQL's earliest timestamp, 4714-11-24 BC 00:00 UTC; its latest (294276 AD) lies
// beyond what int64 microseconds since 1970 can hold, so no time_point reaches it.
constexpr std::int64_t min_timestamp_micros = days_from_civil(-4713, 11, 24) * micros_per_day;
// The server counts microseconds from 2000-01-01 (its epoch), which is how its whole range
// fits in 64 bits; the text codecs count from there too. [min, end) is that range.
constexpr std::int64_t pg_epoch_days = days_from_civil(2000, 1, 1);
constexpr std::int64_t pg_epoch_micros = pg_epoch_days * micros_per_day;
constexpr std::int64_t pg_min_timestamp = min_timestamp_micros - pg_epoch_micros;
constexpr std::int64_t pg_end_timestamp = (days_from_civil(294277, 1, 1) - pg_epoch_days) * micros_per_day;
// PostgreSQL's date range: 4714-11-24 BC to 5874897-12-31.
constexpr std::int64_t min_date_days = days_from_civil(-4713, 11, 24);
constexpr std::int64_t max_date_days = days_from_civil(5874897, 12, 31);

PQSCOPE_DECL void append_number(std::string& out, std::uint64_t v, int width);

// "YYYY-MM-DD" with " BC" left to the caller: years before 1 AD are written as PostgreSQL
// writes them, 1 - y with the suffix.
PQSCOPE_DECL void append_civil_date(std::string& out, const civil_date& c);

// Microseconds since 2000 (finite, in PostgreSQL's range) in ISO 8601, in UTC with an
// explicit offset, so the server reads the same instant whatever its DateStyle order and
// TimeZone: "2024-01-02 03:04:05.123456+00", at p, which has room for
// timestamp_text_size bytes. Returns the end.
constexpr std::size_t timestamp_text_size = 48;
PQSCOPE_DECL char* write_timestamp(char* p, std::int64_t pg_micros) noexcept;

PQSCOPE_DECL std::string format_date(const civil_date& c);

// Reads fixed-format text left to right; every step says whether it matched.
class text_cursor {
 public:
  explicit text_cursor(std::string_view s) noexcept : s_(s) {}
  [[nodiscard]] bool done() const noexcept { return i_ == s_.size(); }
  [[nodiscard]] bool peek(char c) const noexcept { return i_ < s_.size() && s_[i_] == c; }
  [[nodiscard]] bool peek_digit() const noexcept { return i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9'; }
  bool eat(char c) noexcept {
    if (!peek(c)) return false;
    ++i_;
    return true;
  }
  bool eat(std::string_view word) noexcept {
    if (s_.substr(i_, word.size()) != word) return false;
    i_ += word.size();
    return true;
  }
  // Between min and max decimal digits; `count` tells how many were read.
  bool digits(int min, int max, std::int64_t& out, int* count = nullptr) noexcept {
    int n = 0;
    out = 0;
    while (n < max && i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') {
      out = out * 10 + (s_[i_++] - '0');
      ++n;
    }
    if (count != nullptr) *count = n;
    return n >= min;
  }

 protected:  // readers of other formats extend it (impl/interval.ipp)
  std::string_view s_;
  std::size_t i_ = 0;
};

PQSCOPE_DECL std::string iso_format_hint(const char* format);

// "YYYY-MM-DD" at the cursor, years of four or more digits; checked for a real day.
PQSCOPE_DECL bool read_civil_date(text_cursor& c, civil_date& out);

// " BC" turns the year PostgreSQL wrote into an astronomical one; then the day is checked.
PQSCOPE_DECL bool finish_civil_date(text_cursor& c, civil_date& out);

PQSCOPE_DECL civil_date parse_date(std::string_view s);

struct timestamp_text {
  int infinite;         // 0 finite, +1 'infinity', -1 '-infinity'
  std::int64_t micros;  // since 2000-01-01 00:00 UTC (PostgreSQL's epoch), when finite
};

// Timestamps as PostgreSQL writes them with DateStyle ISO: timestamptz with any UTC
// offset (+05:30, -08, +00:09:21 for local mean time), timestamp without one (read as UTC),
// 0 to 6 fractional digits, years before 1 AD with " BC".
PQSCOPE_DECL timestamp_text parse_timestamp(std::string_view s);

// ---- bytea

PQSCOPE_DECL std::string bytea_to_text(const std::byte* p, std::size_t n);

PQSCOPE_DECL int hex_value(char c) noexcept;

// Both of PostgreSQL's output formats: hex ("\x0aff", the default bytea_output) and escape
// ("\012\377", printable bytes as themselves, a backslash doubled).
PQSCOPE_DECL std::vector<std::byte> bytea_from_text(std::string_view s);

// ---- one-dimensional arrays

PQSCOPE_DECL bool is_array_space(char c) noexcept;

PQSCOPE_DECL bool is_null_word(std::string_view s) noexcept;

// Appends one element to an array literal, double-quoted when the server would otherwise
// read it differently: empty, the word NULL in any case, a delimiter, brace, quote,
// backslash or white space; inside quotes only " and \ need a backslash.
PQSCOPE_DECL void append_array_element(std::string& out, std::string_view text);

// The element delimiter in the text of an array type (pg_type.typdelim of its element).
// Every built-in type has ',' but box, whose text has commas of its own: box[] (OID
// 1020) uses ';'. A table of OIDs is enough for the built-in types because the server
// reports a domain-typed column as its base type (a domain over box[] arrives as 1020).
// It cannot cover array types created later (an array of a domain over box, an extension
// type declared with another DELIMITER): their OIDs vary per database, so they read
// with ','; the README says to cast such a column to box[] (or text[]).
constexpr char array_delimiter(unsigned array_oid) noexcept { return array_oid == 1020 ? ';' : ','; }

// Splits the server's text for a one-dimensional array into its elements and calls
// on_element(index, text, is_null) for each, index from 0. More dimensions, or a
// lower bound other than 1 ("[0:2]={...}"), are a conversion_error. `delimiter`
// separates the elements (array_delimiter()).
template <class OnElement>
void parse_array(std::string_view s, const char* type_name, OnElement&& on_element, char delimiter = ',') {
  auto fail = [&](const std::string& why) {
    return conversion_error("cannot read " + quote_value(s) + " as " + type_name + ": " + why);
  };
  std::size_t i = 0;
  if (!s.empty() && s[0] == '[') {
    // Dimension decoration, written only when some lower bound is not 1: "[lo:hi][lo:hi]=".
    int dims = 0;
    std::string lower_bound;
    while (i < s.size() && s[i] == '[') {
      const std::size_t colon = s.find(':', i), close = s.find(']', i);
      if (colon == std::string_view::npos || close == std::string_view::npos || colon > close)
        throw fail("malformed dimensions");
      if (++dims == 1) lower_bound = std::string(s.substr(i + 1, colon - i - 1));
      i = close + 1;
    }
    if (i >= s.size() || s[i] != '=') throw fail("malformed dimensions");
    ++i;
    if (dims != 1)
      throw fail("it has " + std::to_string(dims) + " dimensions; pqscope reads one-dimensional arrays only");
    if (lower_bound != "1")
      throw fail("its lower bound is " + lower_bound +
                 ", not 1; pqscope reads arrays indexed from 1 only (select arr[:], which starts at 1)");
  }
  if (i >= s.size() || s[i] != '{') throw fail("an array starts with {");
  int depth = 0;
  for (std::size_t j = i; j < s.size() && s[j] == '{'; ++j) ++depth;
  if (depth > 1)
    throw fail("it has " + std::to_string(depth) + " dimensions; pqscope reads one-dimensional arrays only");
  ++i;
  auto skip_space = [&] {
    while (i < s.size() && is_array_space(s[i])) ++i;
  };
  skip_space();
  if (i < s.size() && s[i] == '}') {
    if (i + 1 != s.size()) throw fail("text after the closing }");
    return;
  }
  std::string element;
  for (std::size_t index = 0;; ++index) {
    skip_space();
    element.clear();
    bool quoted = false, escaped = false;
    if (i < s.size() && s[i] == '"') {
      quoted = true;
      for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] == '\\' && ++i == s.size()) break;
        element += s[i];
      }
      if (i >= s.size()) throw fail("unterminated quoted element");
      ++i;
      skip_space();
    } else {
      std::size_t kept = 0;  // trailing white space of an unquoted element is not part of it
      for (; i < s.size() && s[i] != delimiter && s[i] != '}'; ++i) {
        if (s[i] == '{' || s[i] == '"')
          throw fail(s[i] == '{' ? "a nested { (more than one dimension)" : "a quote inside an unquoted element");
        if (s[i] == '\\') {
          if (++i == s.size()) break;
          escaped = true;
          element += s[i];
          kept = element.size();
          continue;
        }
        element += s[i];
        if (!is_array_space(s[i])) kept = element.size();
      }
      element.resize(kept);
      if (element.empty()) throw fail("an empty unquoted element");
    }
    if (i >= s.size()) throw fail("missing closing }");
    const bool is_null = !quoted && !escaped && is_null_word(element);
    on_element(index, std::string_view(element), is_null);
    if (s[i] == '}') {
      if (i + 1 != s.size()) throw fail("text after the closing }");
      return;
    }
    if (s[i] != delimiter) throw fail(std::string("expected '") + delimiter + "' or } after element " +
                                      std::to_string(index + 1));
    ++i;  // the delimiter
  }
}

}  // namespace detail
}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/text_codecs.ipp>
// The bodies of <pqscope/detail/text_codecs.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/text_codecs.hpp> (inlined above)

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL std::string quote_value(std::string_view s) {
  constexpr std::size_t limit = 80;
  if (s.size() <= limit) return "\"" + std::string(s) + "\"";
  return "\"" + std::string(s.substr(0, limit)) + "\"... (" + std::to_string(s.size()) + " bytes)";
}

// v's digits at p, at least `width` of them (zeros in front): the end.
inline char* put_digits(char* p, std::uint64_t v, int width) noexcept {
  char buf[20];
  int n = 0;
  do {
    buf[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (int i = n; i < width; ++i) *p++ = '0';
  while (n > 0) *p++ = buf[--n];
  return p;
}

PQSCOPE_DECL void append_number(std::string& out, std::uint64_t v, int width) {
  char buf[24];
  out.append(buf, static_cast<std::size_t>(put_digits(buf, v, width) - buf));
}

PQSCOPE_DECL void append_civil_date(std::string& out, const civil_date& c) {
  append_number(out, static_cast<std::uint64_t>(c.year > 0 ? c.year : 1 - c.year), 4);
  out += '-';
  append_number(out, c.month, 2);
  out += '-';
  append_number(out, c.day, 2);
}

// Exactly `width` digits of v (v < 10^width), written from the right.
inline char* put_fixed(char* p, std::uint64_t v, int width) noexcept {
  for (int i = width - 1; i >= 0; --i, v /= 10) p[i] = static_cast<char>('0' + v % 10);
  return p + width;
}

PQSCOPE_DECL char* write_timestamp(char* p, std::int64_t pg_micros) noexcept {
  std::int64_t days = pg_micros / micros_per_day;
  std::int64_t in_day = pg_micros % micros_per_day;
  if (in_day < 0) {
    in_day += micros_per_day;
    --days;
  }
  const civil_date c = civil_from_days(days + pg_epoch_days);
  const auto secs = static_cast<std::uint64_t>(in_day / micros_per_second);
  const auto frac = static_cast<std::uint64_t>(in_day % micros_per_second);
  const auto year = static_cast<std::uint64_t>(c.year > 0 ? c.year : 1 - c.year);
  p = year < 10000 ? put_fixed(p, year, 4) : put_digits(p, year, 4);
  *p++ = '-';
  p = put_fixed(p, c.month, 2);
  *p++ = '-';
  p = put_fixed(p, c.day, 2);
  *p++ = ' ';
  p = put_fixed(p, secs / 3600, 2);
  *p++ = ':';
  p = put_fixed(p, secs / 60 % 60, 2);
  *p++ = ':';
  p = put_fixed(p, secs % 60, 2);
  if (frac != 0) {
    *p++ = '.';
    p = put_fixed(p, frac, 6);
  }
  *p++ = '+';
  *p++ = '0';
  *p++ = '0';
  if (c.year <= 0) {
    *p++ = ' ';
    *p++ = 'B';
    *p++ = 'C';
  }
  return p;
}

PQSCOPE_DECL std::string format_date(const civil_date& c) {
  std::string out;
  append_civil_date(out, c);
  if (c.year <= 0) out += " BC";
  return out;
}

PQSCOPE_DECL std::string iso_format_hint(const char* format) {
  return std::string("pqscope reads PostgreSQL's ISO output (") + format +
         "), which the server writes only with DateStyle ISO (the default, 'ISO, MDY'; SET DateStyle = 'ISO')";
}

PQSCOPE_DECL bool read_civil_date(text_cursor& c, civil_date& out) {
  std::int64_t y = 0, m = 0, d = 0;
  if (!c.digits(4, 9, y) || !c.eat('-') || !c.digits(2, 2, m) || !c.eat('-') || !c.digits(2, 2, d)) return false;
  if (m < 1 || m > 12 || d < 1) return false;
  out = {y, static_cast<unsigned>(m), static_cast<unsigned>(d)};
  return true;
}

PQSCOPE_DECL bool finish_civil_date(text_cursor& c, civil_date& out) {
  if (c.eat(" BC")) {
    if (out.year == 0) return false;
    out.year = 1 - out.year;
  }
  return out.day <= days_in_month(out.year, out.month);
}

PQSCOPE_DECL civil_date parse_date(std::string_view s) {
  text_cursor c{s};
  civil_date d{};
  if (s == "infinity" || s == "-infinity")
    throw conversion_error("cannot read date " + quote_value(s) +
                           " as pqscope::date: an infinite date has no calendar day; read it as std::string");
  if (!read_civil_date(c, d) || !finish_civil_date(c, d) || !c.done())
    throw conversion_error("cannot read " + quote_value(s) + " as a date (pqscope::date): " + iso_format_hint("YYYY-MM-DD[ BC]"));
  return d;
}

PQSCOPE_DECL timestamp_text parse_timestamp(std::string_view s) {
  if (s == "infinity") return {1, 0};
  if (s == "-infinity") return {-1, 0};
  text_cursor c{s};
  civil_date d{};
  std::int64_t hh = 0, mi = 0, ss = 0, frac = 0;
  int frac_digits = 0;
  bool ok = read_civil_date(c, d) && (c.eat(' ') || c.eat('T')) && c.digits(2, 2, hh) && c.eat(':') &&
            c.digits(2, 2, mi) && c.eat(':') && c.digits(2, 2, ss);
  if (ok && c.eat('.')) ok = c.digits(1, 6, frac, &frac_digits) && !c.peek_digit();  // 7+ digits: refused
  for (int i = frac_digits; i < 6; ++i) frac *= 10;
  std::int64_t offset = 0;  // seconds east of UTC
  if (ok && (c.peek('+') || c.peek('-'))) {
    const bool west = c.eat('-');
    if (!west) c.eat('+');
    std::int64_t oh = 0, om = 0, os = 0;
    ok = c.digits(2, 2, oh) && (!c.eat(':') || (c.digits(2, 2, om) && (!c.eat(':') || c.digits(2, 2, os))));
    ok = ok && om < 60 && os < 60;
    offset = (oh * 3600 + om * 60 + os) * (west ? -1 : 1);
  }
  ok = ok && finish_civil_date(c, d) && c.done() && hh < 24 && mi < 60 && ss < 60;
  if (!ok) throw conversion_error("cannot read " + quote_value(s) + " as a timestamp: " +
                           iso_format_hint("YYYY-MM-DD HH:MM:SS[.ffffff][+HH[:MM[:SS]]][ BC]"));
  const std::int64_t in_day = ((hh * 60 + mi) * 60 + ss) * micros_per_second + frac;
  std::int64_t micros = 0;
  if (__builtin_mul_overflow(days_from_civil(d.year, d.month, d.day) - pg_epoch_days, micros_per_day, &micros) ||
      __builtin_add_overflow(micros, in_day - offset * micros_per_second, &micros) || micros < pg_min_timestamp ||
      micros >= pg_end_timestamp)
    throw conversion_error("timestamp " + quote_value(s) +
                           " is outside PostgreSQL's range (4714-11-24 00:00:00 BC to 294276-12-31 23:59:59.999999 UTC)");
  return {0, micros};
}

PQSCOPE_DECL std::string bytea_to_text(const std::byte* p, std::size_t n) {
  constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 + 2 * n);
  out += "\\x";
  for (std::size_t i = 0; i < n; ++i) {
    const auto b = static_cast<unsigned>(p[i]);
    out += hex[b >> 4];
    out += hex[b & 15U];
  }
  return out;
}

PQSCOPE_DECL int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

PQSCOPE_DECL std::vector<std::byte> bytea_from_text(std::string_view s) {
  std::vector<std::byte> out;
  auto fail = [&](const char* why) {
    return conversion_error("cannot read " + quote_value(s) + " as bytea (std::vector<std::byte>): " + why);
  };
  if (s.substr(0, 2) == "\\x") {
    if (s.size() % 2 != 0) throw fail("odd number of hex digits");
    out.reserve((s.size() - 2) / 2);
    for (std::size_t i = 2; i < s.size(); i += 2) {
      const int hi = hex_value(s[i]), lo = hex_value(s[i + 1]);
      if (hi < 0 || lo < 0) throw fail("not a hex digit");
      out.push_back(static_cast<std::byte>(hi * 16 + lo));
    }
    return out;
  }
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out.push_back(static_cast<std::byte>(s[i]));
    } else if (i + 1 < s.size() && s[i + 1] == '\\') {
      out.push_back(std::byte{'\\'});
      ++i;
    } else if (i + 3 < s.size() && s[i + 1] >= '0' && s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
               s[i + 3] >= '0' && s[i + 3] <= '7') {
      out.push_back(static_cast<std::byte>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      throw fail("a backslash must start \\\\ or a three-digit octal escape");
    }
  }
  return out;
}

PQSCOPE_DECL bool is_array_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

PQSCOPE_DECL bool is_null_word(std::string_view s) noexcept {
  if (s.size() != 4) return false;
  for (std::size_t i = 0; i < 4; ++i)
    if ((s[i] | 0x20) != "null"[i]) return false;
  return true;
}

PQSCOPE_DECL void append_array_element(std::string& out, std::string_view text) {
  bool quote = text.empty() || is_null_word(text);
  for (const char ch : text)
    if (ch == ',' || ch == '{' || ch == '}' || ch == '"' || ch == '\\' || is_array_space(ch)) quote = true;
  if (!quote) {
    out += text;
    return;
  }
  out += '"';
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  out += '"';
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/errors.hpp> (inlined above)

namespace pqscope {

template <class T, class Enable = void>
struct value_traits;  // no definition: a type without traits is a compile error naming value_traits<T>

template <>
struct value_traits<bool> {
  static constexpr unsigned oid = 16;
  static std::string to_text(bool v) { return v ? "t" : "f"; }
  static bool from_text(std::string_view s);
};

// All integer types except plain char (a character, not a number: pass std::string(1, c)
// or an int) and bool.
template <class T>
struct value_traits<T, std::enable_if_t<std::is_integral_v<T> && sizeof(T) <= 8 && !std::is_same_v<T, bool> &&
                                        !std::is_same_v<T, char>>> {
  // The narrowest PostgreSQL type that holds every value of T; uint64 needs numeric.
  static constexpr unsigned oid = sizeof(T) < 4 && std::is_signed_v<T> ? 21                // int2
                                  : (sizeof(T) < 4 || (sizeof(T) == 4 && std::is_signed_v<T>)) ? 23  // int4
                                  : (sizeof(T) == 8 && std::is_unsigned_v<T>) ? 1700       // numeric
                                                                               : 20;        // int8
  // A parameter list writes it with std::to_chars into its own buffer: no string made.
  using to_chars_number = void;
  static std::string to_text(T v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
  }
  static T from_text(std::string_view s) {
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range ||
        (r.ec == std::errc() && r.ptr == s.data() + s.size())) {
      if (r.ec == std::errc()) return v;
      throw conversion_error("value " + std::string(s) + " does not fit in the requested " +
                             std::to_string(sizeof(T) * 8) + "-bit " +
                             (std::is_signed_v<T> ? "signed" : "unsigned") + " integer (range " +
                             std::to_string(+std::numeric_limits<T>::min()) + ".." +
                             std::to_string(+std::numeric_limits<T>::max()) + "); read a wider type");
    }
    throw conversion_error("cannot read \"" + std::string(s) + "\" as an integer");
  }
};

template <class T>
struct value_traits<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static constexpr unsigned oid = sizeof(T) == 4 ? 700 : 701;  // float4 / float8
  static std::string to_text(T v) {
    char buf[unescaped_size];
    return std::string(buf, write_unescaped(buf, v));
  }
  // The text at p (room for unescaped_size bytes), for a COPY row: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = 64;
  static char* write_unescaped(char* p, T v) noexcept {
    auto put = [&](const char* s, std::size_t n) {
      std::memcpy(p, s, n);
      return p + n;
    };
    // Compared, not std::isnan/isinf: <cmath> would cost every includer ~8k lines.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wfloat-equal"
#endif
    if (v != v) return put("NaN", 3);  // NOLINT(misc-redundant-expression): true only for NaN
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
    if (v > std::numeric_limits<T>::max()) return put("Infinity", 8);
    if (v < std::numeric_limits<T>::lowest()) return put("-Infinity", 9);
    return std::to_chars(p, p + unescaped_size, v).ptr;  // shortest text that reads back exactly
  }
  static T from_text(std::string_view s) {
    if (s == "NaN") return std::numeric_limits<T>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<T>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<T>::infinity();
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return v;
    if (r.ec == std::errc::result_out_of_range)
      throw conversion_error("value " + std::string(s) + " is out of range for a " +
                             std::to_string(sizeof(T) * 8) + "-bit floating-point number");
    throw conversion_error("cannot read \"" + std::string(s) + "\" as a floating-point number");
  }
};

template <>
struct value_traits<std::string> {
  static constexpr unsigned oid = 0;  // unknown: the server infers text, varchar, json, ...
  static const std::string& to_text(const std::string& v) { return v; }
  static std::string from_text(std::string_view s) { return std::string(s); }
};

// A view into the result's memory: valid while the result (or a row or field of it) lives.
template <>
struct value_traits<std::string_view> {
  static constexpr unsigned oid = 0;
  static std::string_view to_text(std::string_view v) { return v; }
  static std::string_view from_text(std::string_view s) { return s; }
};

namespace detail {

template <class T, class = void>
struct has_to_text : std::false_type {};
template <class T>
struct has_to_text<T, std::void_t<decltype(value_traits<T>::to_text(std::declval<const T&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_from_text : std::false_type {};
template <class T>
struct has_from_text<T, std::void_t<decltype(value_traits<T>::from_text(std::string_view{}))>>
    : std::true_type {};

// Arrays: from_text(text, delimiter) takes the element delimiter of the column's type.
template <class T, class = void>
struct has_delimited_from_text : std::false_type {};
template <class T>
struct has_delimited_from_text<T, std::void_t<decltype(value_traits<T>::from_text(std::string_view{}, ','))>>
    : std::true_type {};

template <class T, class = void>
struct traits_oid : std::integral_constant<unsigned, 0> {};
template <class T>
struct traits_oid<T, std::void_t<decltype(value_traits<T>::oid)>>
    : std::integral_constant<unsigned, value_traits<T>::oid> {};

// value_traits<T> is pqscope's own for an integer (a user's specialization is not).
template <class T, class = void>
struct is_chars_number : std::false_type {};
template <class T>
struct is_chars_number<T, std::void_t<typename value_traits<T>::to_chars_number>> : std::true_type {};

// value_traits<T>::write_unescaped: text written in place that COPY need not escape.
template <class T, class = void>
struct has_write_unescaped : std::false_type {};
template <class T>
struct has_write_unescaped<T, std::void_t<decltype(value_traits<T>::write_unescaped(std::declval<char*>(),
                                                                                    std::declval<const T&>()))>>
    : std::true_type {};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// Durations that hold whole microseconds exactly (microseconds, nanoseconds, ...).
template <class D>
struct divides_micro
    : std::bool_constant<std::is_integral_v<typename D::rep> &&
                         std::ratio_divide<std::micro, typename D::period>::den == 1> {};

template <class T>
struct optional_inner {
  using type = T;
};
template <class T>
struct optional_inner<std::optional<T>> {
  using type = T;
};

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};

// The array type of an element type; 0 (let the server infer) for the ones not listed.
// Element oids stay below 4000: detail/column_types reverses this table by scanning them.
constexpr unsigned array_oid(unsigned element_oid) noexcept {
  switch (element_oid) {
    case 16: return 1000;    // bool
    case 17: return 1001;    // bytea
    case 20: return 1016;    // int8
    case 21: return 1005;    // int2
    case 23: return 1007;    // int4
    case 25: return 1009;    // text
    case 114: return 199;    // json
    case 700: return 1021;   // float4
    case 701: return 1022;   // float8
    case 1043: return 1015;  // varchar
    case 1082: return 1182;  // date
    case 1114: return 1115;  // timestamp
    case 1184: return 1185;  // timestamptz
    case 1186: return 1187;  // interval
    case 1700: return 1231;  // numeric
    case 2950: return 2951;  // uuid
    case 3220: return 3221;  // pg_lsn
    case 3802: return 3807;  // jsonb
    default: return 0;
  }
}

// Microseconds since 2000 (PostgreSQL's epoch) as a time_point of duration D;
// conversion_error if D cannot hold them.
template <class TimePoint>
TimePoint time_point_from_micros(std::int64_t pg_micros, std::string_view text) {
  using duration = typename TimePoint::duration;
  using rep = typename duration::rep;
  constexpr auto ticks_per_micro = std::ratio_divide<std::micro, typename duration::period>::num;
  std::int64_t micros = 0, ticks = 0;
  if (__builtin_add_overflow(pg_micros, pg_epoch_micros, &micros) ||
      __builtin_mul_overflow(micros, static_cast<std::int64_t>(ticks_per_micro), &ticks) ||
      ticks < static_cast<std::int64_t>(std::numeric_limits<rep>::min()) ||
      (ticks > 0 && static_cast<std::uint64_t>(ticks) > static_cast<std::uint64_t>(std::numeric_limits<rep>::max())))
    throw conversion_error("timestamp " + quote_value(text) +
                           " is outside the range of the time_point's duration (with nanoseconds, as "
                           "std::chrono::system_clock has on libstdc++, the years 1677 to 2262); "
                           "pqscope::timestamptz holds PostgreSQL's whole range");
  return TimePoint(duration(static_cast<rep>(ticks)));
}

}  // namespace detail

// ---- dates and times

// A calendar day, as PostgreSQL's date (oid 1082): proleptic Gregorian, 4714 BC to
// 5874897 AD. The year is astronomical: 0 is 1 BC, -1 is 2 BC.
struct date {
  int year = 1970;
  unsigned month = 1;  // 1..12
  unsigned day = 1;    // 1..31

  [[nodiscard]] constexpr bool is_valid() const noexcept {
    return month >= 1 && month <= 12 && day >= 1 && day <= detail::days_in_month(year, month);
  }
  // Days since 1970-01-01, negative before; conversion_error for an invalid date.
  [[nodiscard]] constexpr std::int64_t days_since_epoch() const {
    if (!is_valid())
      throw conversion_error("invalid date: year " + std::to_string(year) + ", month " + std::to_string(month) +
                             ", day " + std::to_string(day));
    return detail::days_from_civil(year, month, day);
  }
  // The inverse, for days within PostgreSQL's range.
  [[nodiscard]] static constexpr date from_days_since_epoch(std::int64_t days) noexcept {
    const detail::civil_date c = detail::civil_from_days(days);
    return date{static_cast<int>(c.year), c.month, c.day};
  }

  friend constexpr bool operator==(const date& a, const date& b) noexcept {
    return a.year == b.year && a.month == b.month && a.day == b.day;
  }
  friend constexpr bool operator!=(const date& a, const date& b) noexcept { return !(a == b); }
  friend constexpr bool operator<(const date& a, const date& b) noexcept {
    return a.year != b.year ? a.year < b.year : a.month != b.month ? a.month < b.month : a.day < b.day;
  }
};

template <>
struct value_traits<date> {
  static constexpr unsigned oid = 1082;
  static std::string to_text(const date& d);
  static date from_text(std::string_view s);
};

// std::chrono::system_clock::time_point (and any system_clock time_point whose duration
// holds whole microseconds) as timestamptz. Sent in UTC with an explicit offset, so the
// server's TimeZone and DateStyle order do not matter; the part below a microsecond is
// dropped (rounded toward the past). Read from timestamptz in any TimeZone, or from
// timestamp without time zone taken as UTC; needs DateStyle ISO. 'infinity' is a
// conversion_error: read it as timestamp_or_infinity.
template <class D>
struct value_traits<std::chrono::time_point<std::chrono::system_clock, D>,
                    std::enable_if_t<detail::divides_micro<D>::value>> {
  using time_point = std::chrono::time_point<std::chrono::system_clock, D>;
  static constexpr unsigned oid = 1184;
  static std::string to_text(const time_point& t) {
    char out[detail::timestamp_text_size];
    return std::string(out, write_unescaped(out, t));
  }
  // The text at p (room for unescaped_size bytes), for a COPY row: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = detail::timestamp_text_size;
  static char* write_unescaped(char* p, const time_point& t) {
    const auto micros = std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count();
    if (micros < detail::min_timestamp_micros)
      throw conversion_error("time point " + std::to_string(micros) +
                             " us since 1970 is before PostgreSQL's earliest timestamp, 4714-11-24 00:00:00 BC UTC");
    return detail::write_timestamp(p, micros - detail::pg_epoch_micros);
  }
  static time_point from_text(std::string_view s) {
    const detail::timestamp_text t = detail::parse_timestamp(s);
    if (t.infinite != 0)
      throw conversion_error("cannot read timestamp " + detail::quote_value(s) +
                             " as a std::chrono::system_clock::time_point; read it as "
                             "pqscope::timestamp_or_infinity");
    return detail::time_point_from_micros<time_point>(t.micros, s);
  }
};

// A timestamptz that may also be 'infinity' or '-infinity'. Converts implicitly from a
// time_point; ordered -infinity < every time point < infinity.
class timestamp_or_infinity {
 public:
  using time_point = std::chrono::system_clock::time_point;

  constexpr timestamp_or_infinity() noexcept = default;  // the epoch
  constexpr timestamp_or_infinity(time_point t) noexcept : time_(t) {}  // NOLINT(google-explicit-constructor)
  [[nodiscard]] static constexpr timestamp_or_infinity infinity() noexcept { return timestamp_or_infinity(1); }
  [[nodiscard]] static constexpr timestamp_or_infinity minus_infinity() noexcept {
    return timestamp_or_infinity(-1);
  }

  [[nodiscard]] constexpr bool is_finite() const noexcept { return infinite_ == 0; }
  [[nodiscard]] constexpr bool is_infinity() const noexcept { return infinite_ > 0; }
  [[nodiscard]] constexpr bool is_minus_infinity() const noexcept { return infinite_ < 0; }
  // The time point; conversion_error when infinite.
  [[nodiscard]] time_point value() const;

  friend constexpr bool operator==(const timestamp_or_infinity& a, const timestamp_or_infinity& b) noexcept {
    return a.infinite_ == b.infinite_ && (a.infinite_ != 0 || a.time_ == b.time_);
  }
  friend constexpr bool operator!=(const timestamp_or_infinity& a, const timestamp_or_infinity& b) noexcept {
    return !(a == b);
  }
  friend constexpr bool operator<(const timestamp_or_infinity& a, const timestamp_or_infinity& b) noexcept {
    return a.infinite_ != b.infinite_ ? a.infinite_ < b.infinite_ : a.infinite_ == 0 && a.time_ < b.time_;
  }

 private:
  explicit constexpr timestamp_or_infinity(int infinite) noexcept : infinite_(infinite) {}
  time_point time_{};
  int infinite_ = 0;  // +1 infinity, -1 -infinity
};

template <>
struct value_traits<timestamp_or_infinity> {
  static constexpr unsigned oid = 1184;
  static std::string to_text(const timestamp_or_infinity& t);
  static timestamp_or_infinity from_text(std::string_view s);
};

// ---- bytea

// Bytes for a bytea parameter, without copying them into a vector first. Holds a pointer:
// the bytes must outlive the call.
class bytes_view {
 public:
  constexpr bytes_view() noexcept = default;
  bytes_view(const void* data, std::size_t size) noexcept : data_(static_cast<const std::byte*>(data)), size_(size) {}
  bytes_view(const std::vector<std::byte>& v) noexcept  // NOLINT(google-explicit-constructor)
      : data_(v.data()), size_(v.size()) {}
  [[nodiscard]] constexpr const std::byte* data() const noexcept { return data_; }
  [[nodiscard]] constexpr std::size_t size() const noexcept { return size_; }

 private:
  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
};

template <>
struct value_traits<bytes_view> {
  static constexpr unsigned oid = 17;
  static std::string to_text(bytes_view b) { return detail::bytea_to_text(b.data(), b.size()); }
};

// Every byte value 0-255; sent in hex, read in hex or escape format (bytea_output).
template <>
struct value_traits<std::vector<std::byte>> {
  static constexpr unsigned oid = 17;
  static std::string to_text(const std::vector<std::byte>& v) { return detail::bytea_to_text(v.data(), v.size()); }
  static std::vector<std::byte> from_text(std::string_view s);
};

// ---- one-dimensional arrays

// std::vector<T> and std::vector<std::optional<T>> as T[] (element NULLs through the
// optional), for every T with value_traits. Sent as an array literal with each element
// quoted as needed; read from the server's output, indexed from 1, one dimension.
template <class T>
struct value_traits<std::vector<T>, std::enable_if_t<!std::is_same_v<T, std::byte>>> {
  using element = typename detail::optional_inner<T>::type;
  static_assert(!std::is_same_v<element, char> && !std::is_same_v<element, signed char> &&
                    !std::is_same_v<element, unsigned char>,
                "pqscope: a vector of char, signed char or unsigned char is ambiguous: std::vector<std::byte> is "
                "bytea, std::string is text, std::vector<short> or std::vector<int> is an array of numbers");
  static_assert(!detail::is_vector<element>::value || std::is_same_v<element, std::vector<std::byte>>,
                "pqscope: arrays of more than one dimension are not supported");
  static constexpr unsigned oid = detail::array_oid(detail::traits_oid<element>::value);

  static std::string to_text(const std::vector<T>& v) {
    static_assert(detail::has_to_text<element>::value,
                  "pqscope: no value_traits<T>::to_text for this array's element type");
    std::string out = "{";
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) out += ',';
      if constexpr (detail::is_optional<T>::value) {
        if (v[i])
          append(out, *v[i]);
        else
          out += "NULL";
      } else {
        append(out, v[i]);
      }
    }
    out += '}';
    return out;
  }

  static std::vector<T> from_text(std::string_view s) { return from_text(s, ','); }
  // `delimiter`: what separates the elements (';' for box[]); field::as<T>() passes the
  // column type's (detail::array_delimiter).
  static std::vector<T> from_text(std::string_view s, char delimiter) {
    static_assert(detail::has_from_text<element>::value,
                  "pqscope: no value_traits<T>::from_text for this array's element type");
    static_assert(!std::is_same_v<element, std::string_view>,
                  "pqscope: read arrays of text as std::vector<std::string> (an element may be unescaped, so it "
                  "cannot point into the result)");
    std::vector<T> out;
    detail::parse_array(s, "a one-dimensional array (std::vector)",
                        [&](std::size_t index, std::string_view text, bool is_null) {
                          const std::string where = "element " + std::to_string(index + 1) + " of array " +
                                                    detail::quote_value(s);
                          if (is_null) {
                            if constexpr (detail::is_optional<T>::value) {
                              out.emplace_back();
                              return;
                            } else {
                              throw conversion_error(where +
                                                     " is NULL; read the array as std::vector<std::optional<T>>");
                            }
                          }
                          try {
                            out.push_back(T(value_traits<element>::from_text(text)));
                          } catch (const conversion_error& e) {
                            throw conversion_error(where + ": " + e.what());
                          }
                        },
                        delimiter);
    return out;
  }

 private:
  static void append(std::string& out, const element& e) {
    decltype(auto) text = value_traits<element>::to_text(e);
    detail::append_array_element(out, std::string_view(text));
  }
};

class params;

namespace detail {

// PostgreSQL's limit on the parameters of one statement (the protocol counts them in 16 bits).
inline constexpr std::size_t max_params = 65535;

// Parameters of one statement, in the form libpq takes them. Values that are not
// already NUL-terminated strings are copied into `storage_`, which of() reserves
// up front (one string per parameter at most), so that it never reallocates and
// the pointers in `values_` stay valid.
class param_list {
 public:
  param_list() = default;
  param_list(const param_list&) = delete;
  param_list& operator=(const param_list&) = delete;
  // Moves rebase the values kept in the list's own buffer.
  param_list(param_list&& o) noexcept { take(o); }
  param_list& operator=(param_list&& o) noexcept {
    if (this != &o) take(o);
    return *this;
  }
  ~param_list() = default;

  template <class... Ts>
  static param_list of(const Ts&... vs) {
    param_list p;
    p.owned_capacity_ = sizeof...(Ts);
    (p.add(vs), ...);
    return p;
  }

  // The same list made again for new values, keeping its memory (COPY rows).
  template <class... Ts>
  void assign(const Ts&... vs) {
    storage_.clear();
    values_.clear();
    types_.clear();
    n_ = 0;
    inline_used_ = 0;
    owned_capacity_ = sizeof...(Ts);
    (add(vs), ...);
  }

  template <class T>
  void add(const T& v) {
    using U = std::decay_t<T>;
    if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t>) {
      push_null(0);
    } else if constexpr (is_optional<U>::value) {
      if (v)
        add(*v);
      else
        push_null(traits_oid<typename U::value_type>::value);
    } else if constexpr (std::is_array_v<T> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>) {
      // a string literal or char buffer: never null; read up to its first NUL, and
      // never past its end when it has none
      const std::size_t n = ::strnlen(v, std::extent_v<T>);
      push_text(std::string_view(v, n), 0, /*terminated=*/n < std::extent_v<T>);
    } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
      if (v == nullptr)
        push_null(0);
      else
        push_text(std::string_view(v), 0, /*terminated=*/true);
    } else if constexpr (std::is_same_v<U, std::string>) {
      push_text(v, 0, true);
    } else if constexpr (std::is_same_v<U, params>) {
      splice(v);
    } else if constexpr (is_chars_number<U>::value) {
      char buf[24];
      const auto r = std::to_chars(buf, buf + sizeof buf, v);
      push_number(std::string_view(buf, static_cast<std::size_t>(r.ptr - buf)), value_traits<U>::oid);
    } else if constexpr (std::is_same_v<U, char>) {
      static_assert(!std::is_same_v<U, char>,
                    "pqscope: pass a char as std::string(1, c) (text) or as an int (number)");
    } else {
      static_assert(has_to_text<U>::value,
                    "pqscope: no value_traits<T>::to_text for this parameter type; specialize "
                    "pqscope::value_traits<T> (see params.hpp)");
      decltype(auto) text = value_traits<U>::to_text(v);
      using R = std::decay_t<decltype(text)>;
      if constexpr (std::is_same_v<R, std::string> && !std::is_reference_v<decltype(text)>)
        push_owned(std::move(text), traits_oid<U>::value);  // a fresh string: moved, not copied
      else if constexpr (std::is_same_v<R, std::string>)
        push_owned(std::string(text), traits_oid<U>::value);
      else
        push_text(std::string_view(text), traits_oid<U>::value, false);
    }
  }

  [[nodiscard]] int size() const noexcept { return static_cast<int>(n_); }
  [[nodiscard]] const char* const* values() const noexcept {
    return n_ == 0 ? nullptr : n_ <= inline_params ? inline_values_ : values_.data();
  }
  [[nodiscard]] const unsigned* types() const noexcept {
    return n_ == 0 ? nullptr : n_ <= inline_params ? inline_types_ : types_.data();
  }

 private:
  void push(const char* value, unsigned oid);
  void push_null(unsigned oid);
  void check_nul(std::string_view s) const;
  void push_text(std::string_view s, unsigned oid, bool terminated);
  void push_owned(std::string s, unsigned oid);
  // Digits (no NUL to look for), inline if they fit.
  void push_number(std::string_view digits, unsigned oid);
  // Into the inline buffer if it fits; nullptr if not.
  const char* copy_inline(std::string_view s) noexcept;
  void take(param_list& o) noexcept;
  // Every value of a params list, pointing into it (it lives as long as the call).
  void splice(const params& p);

  // The pointers and types of the first few parameters stay inline: no allocation
  // for them. Converted values live in storage_, whose buffer stays put when the
  // list moves, so the pointers into it stay valid; it is reserved once, for every
  // parameter, before the first one is stored. Short converted values (numbers,
  // mostly) are kept in inline_text_ instead.
  static constexpr std::size_t inline_params = 8;
  static constexpr std::size_t inline_text = 96;
  std::size_t n_ = 0;
  std::size_t inline_used_ = 0;
  char inline_text_[inline_text] = {};
  std::size_t owned_capacity_ = 0;
  const char* inline_values_[inline_params] = {};
  unsigned inline_types_[inline_params] = {};
  std::vector<std::string> storage_;
  std::vector<const char*> values_;  // all of them, past inline_params
  std::vector<unsigned> types_;
};

// How many parameters values... make: one each, a params list its size.
template <class T>
std::size_t param_count_of(const T& v) noexcept;
template <class... Ts>
std::size_t param_count(const Ts&... vs) noexcept {
  return (std::size_t{0} + ... + param_count_of(vs));
}

}  // namespace detail

// Parameters built at run time, for a statement whose parameter count is known only
// then: a VALUES list of N rows, an IN list of N values. add() converts a value as
// execute() would (any parameter type, NULL included), and the list goes wherever a
// statement takes parameters, alone or among others:
//   pqscope::params p;
//   for (const auto& [id, name] : rows) p.add(id).add(name);
//   c.execute("INSERT INTO t (id, name) VALUES " + pqscope::values_list(rows.size(), 2), p);
// The placeholder count is checked as for any statement, against the whole count.
// PostgreSQL takes 65,535 parameters at the most: past that, add() throws usage_error.
class params {
 public:
  params() = default;

  template <class T>
  params& add(const T& v) {
    static_assert(!std::is_same_v<T, params>, "pqscope: params::add(params): pass both to execute() instead");
    detail::param_list one;
    one.assign(v);
    push(one.values()[0], one.types()[0]);
    return *this;
  }

  [[nodiscard]] std::size_t size() const noexcept { return types_.size(); }
  [[nodiscard]] bool empty() const noexcept { return types_.empty(); }
  void clear() noexcept {
    text_.clear();
    null_.clear();
    types_.clear();
  }
  void reserve(std::size_t n) {
    text_.reserve(n);
    null_.reserve(n);
    types_.reserve(n);
  }

 private:
  friend class detail::param_list;
  void push(const char* value, unsigned oid);

  std::vector<std::string> text_;  // "" for NULL
  std::vector<bool> null_;
  std::vector<unsigned> types_;
};

// "($1, $2), ($3, $4), ..." : `rows` groups of `columns` placeholders, numbered from
// `first`, for a VALUES list whose values are a params list.
PQSCOPE_DECL std::string values_list(std::size_t rows, std::size_t columns, std::size_t first = 1);

template <class T>
std::size_t detail::param_count_of(const T& v) noexcept {
  if constexpr (std::is_same_v<T, params>)
    return v.size();
  else
    return 1;
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/params.ipp>
// The bodies of <pqscope/params.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/params.hpp> (inlined above)

namespace pqscope {

PQSCOPE_DECL bool value_traits<bool>::from_text(std::string_view s) {
  if (s == "t" || s == "true") return true;
  if (s == "f" || s == "false") return false;
  throw conversion_error("cannot read \"" + std::string(s) + "\" as bool (expected t or f)");
}

PQSCOPE_DECL std::string value_traits<date>::to_text(const date& d) {
  const std::int64_t days = d.days_since_epoch();
  if (days < detail::min_date_days || days > detail::max_date_days)
    throw conversion_error("date " + detail::format_date({d.year, d.month, d.day}) +
                           " is outside PostgreSQL's date range (4714-11-24 BC to 5874897-12-31)");
  return detail::format_date({d.year, d.month, d.day});
}

PQSCOPE_DECL date value_traits<date>::from_text(std::string_view s) {
  const detail::civil_date c = detail::parse_date(s);
  return date{static_cast<int>(c.year), c.month, c.day};
}

PQSCOPE_DECL timestamp_or_infinity::time_point timestamp_or_infinity::value() const {
  if (!is_finite())
    throw conversion_error(std::string("timestamp_or_infinity::value(): the timestamp is ") +
                           (is_infinity() ? "'infinity'" : "'-infinity'") + "; check is_finite() first");
  return time_;
}

PQSCOPE_DECL std::string value_traits<timestamp_or_infinity>::to_text(const timestamp_or_infinity& t) {
  if (t.is_infinity()) return "infinity";
  if (t.is_minus_infinity()) return "-infinity";
  return value_traits<timestamp_or_infinity::time_point>::to_text(t.value());
}

PQSCOPE_DECL timestamp_or_infinity value_traits<timestamp_or_infinity>::from_text(std::string_view s) {
  const detail::timestamp_text t = detail::parse_timestamp(s);
  if (t.infinite > 0) return timestamp_or_infinity::infinity();
  if (t.infinite < 0) return timestamp_or_infinity::minus_infinity();
  return detail::time_point_from_micros<timestamp_or_infinity::time_point>(t.micros, s);
}

PQSCOPE_DECL std::vector<std::byte> value_traits<std::vector<std::byte>>::from_text(std::string_view s) {
  return detail::bytea_from_text(s);
}

PQSCOPE_DECL void params::push(const char* value, unsigned oid) {
  if (types_.size() >= detail::max_params)
    throw usage_error("params: more than 65,535 parameters, PostgreSQL's limit for one statement; split the rows "
                      "over several statements, or send them as arrays or with COPY");
  text_.emplace_back(value != nullptr ? value : "");
  null_.push_back(value == nullptr);
  types_.push_back(oid);
}

PQSCOPE_DECL std::string values_list(std::size_t rows, std::size_t columns, std::size_t first) {
  if (columns == 0 && rows > 0) throw usage_error("values_list(): a row needs at least one column");
  std::string out;
  out.reserve(rows * columns * 8);
  std::size_t n = first;
  for (std::size_t r = 0; r < rows; ++r) {
    out += r == 0 ? "(" : ", (";
    for (std::size_t c = 0; c < columns; ++c) {
      if (c > 0) out += ", ";
      out += '$';
      out += std::to_string(n++);
    }
    out += ')';
  }
  return out;
}

}  // namespace pqscope

namespace pqscope::detail {

PQSCOPE_DECL void param_list::splice(const params& p) {
  for (std::size_t i = 0; i < p.size(); ++i) push(p.null_[i] ? nullptr : p.text_[i].c_str(), p.types_[i]);
}

PQSCOPE_DECL void param_list::push(const char* value, unsigned oid) {
  if (n_ >= max_params)
    throw usage_error("more than 65,535 parameters, PostgreSQL's limit for one statement");
  if (n_ < inline_params) {
    inline_values_[n_] = value;
    inline_types_[n_] = oid;
  } else {
    if (n_ == inline_params) {
      values_.assign(inline_values_, inline_values_ + inline_params);
      types_.assign(inline_types_, inline_types_ + inline_params);
    }
    values_.push_back(value);
    types_.push_back(oid);
  }
  ++n_;
}

PQSCOPE_DECL void param_list::push_null(unsigned oid) { push(nullptr, oid); }

PQSCOPE_DECL void param_list::check_nul(std::string_view s) const {
  // No string is longer than max_size(); saying so keeps GCC's -Wstringop-overread
  // from reading a path it cannot rule out as a bound of SIZE_MAX.
  if (s.size() > s.max_size()) return;
  if (std::memchr(s.data(), '\0', s.size()) != nullptr)
    throw usage_error("parameter $" + std::to_string(n_ + 1) +
                      " contains a NUL byte, which PostgreSQL text cannot hold; strip it, or send "
                      "binary data as hex text into a bytea column (decode($1, 'hex'))");
}

PQSCOPE_DECL void param_list::push_text(std::string_view s, unsigned oid, bool terminated) {
  check_nul(s);
  if (terminated) {
    push(s.data(), oid);
  } else if (const char* at = copy_inline(s)) {
    push(at, oid);
  } else {
    push_owned(std::string(s), oid);
  }
}

PQSCOPE_DECL const char* param_list::copy_inline(std::string_view s) noexcept {
  if (s.size() >= inline_text - inline_used_) return nullptr;
  char* at = inline_text_ + inline_used_;
  std::memcpy(at, s.data(), s.size());
  at[s.size()] = '\0';
  inline_used_ += s.size() + 1;
  return at;
}

PQSCOPE_DECL void param_list::take(param_list& o) noexcept {
  n_ = std::exchange(o.n_, 0);
  owned_capacity_ = o.owned_capacity_;
  inline_used_ = std::exchange(o.inline_used_, 0);
  std::memcpy(inline_text_, o.inline_text_, inline_used_);
  std::memcpy(inline_values_, o.inline_values_, sizeof inline_values_);
  std::memcpy(inline_types_, o.inline_types_, sizeof inline_types_);
  storage_ = std::move(o.storage_);
  values_ = std::move(o.values_);
  types_ = std::move(o.types_);
  o.storage_.clear();
  o.values_.clear();
  o.types_.clear();
  // Values in o's inline buffer now live at the same offset in this one.
  const auto from = reinterpret_cast<std::uintptr_t>(o.inline_text_);
  const char** v = n_ <= inline_params ? inline_values_ : values_.data();
  for (std::size_t i = 0; i < n_; ++i) {
    const auto at = reinterpret_cast<std::uintptr_t>(v[i]);
    if (v[i] != nullptr && at >= from && at < from + inline_used_) v[i] = inline_text_ + (at - from);
  }
}

PQSCOPE_DECL void param_list::push_number(std::string_view digits, unsigned oid) {
  if (const char* at = copy_inline(digits))
    push(at, oid);
  else
    push_owned(std::string(digits), oid);
}

PQSCOPE_DECL void param_list::push_owned(std::string s, unsigned oid) {
  check_nul(s);
  if (const char* at = copy_inline(s)) {
    push(at, oid);
    return;
  }
  if (storage_.empty()) storage_.reserve(owned_capacity_);
  if (storage_.size() == storage_.capacity()) throw usage_error("param_list: storage not reserved");  // never
  storage_.push_back(std::move(s));
  push(storage_.back().c_str(), oid);
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

class wal_position {
 public:
  // PostgreSQL's defaults (XLOG_BLCKSZ, wal_segment_size) and its page header sizes
  // (SizeOfXLogShortPHD, SizeOfXLogLongPHD on 64-bit builds).
  static constexpr std::uint64_t default_block_size = 8192;
  static constexpr std::uint64_t default_segment_size = std::uint64_t{16} * 1024 * 1024;
  static constexpr std::uint64_t short_page_header = 24;
  static constexpr std::uint64_t long_page_header = 40;

  constexpr wal_position() noexcept = default;  // 0/0: no position
  explicit constexpr wal_position(std::uint64_t v) noexcept : value_(v) {}

  // pg_lsn's text: 1 to 8 hex digits, '/', 1 to 8 hex digits ("16/B374D848"), either
  // case. Anything else is a conversion_error.
  static wal_position parse(std::string_view text);
  // As the server writes it: uppercase hex, no leading zeros ("16/B374D848", "0/0").
  [[nodiscard]] std::string to_string() const;
  // The same into p (room for max_text_size bytes); returns where it ends.
  static constexpr std::size_t max_text_size = 17;
  char* write(char* p) const noexcept;

  [[nodiscard]] constexpr std::uint64_t value() const noexcept { return value_; }
  [[nodiscard]] constexpr bool empty() const noexcept { return value_ == 0; }

  // The later of two tokens (positions only grow on a server and its standbys, across
  // a promotion too): what a client that read through both must wait for.
  [[nodiscard]] static constexpr wal_position latest(wal_position a, wal_position b) noexcept {
    return a.value_ < b.value_ ? b : a;
  }
  void merge(wal_position other) noexcept { *this = latest(*this, other); }

  // pg_current_wal_insert_lsn() gives where the next record will start. When the
  // last record ended exactly at a page boundary that is past the next page's
  // header: the boundary + 24, or + 40 at the start of a segment. A standby that
  // replayed that record reports the boundary itself (PostgreSQL's
  // XLogBytePosToRecPtr against XLogBytePosToEndRecPtr). This is the end form: the
  // header taken off, so that the position compares with a replay position.
  // `block_size` and `segment_size` are the server's wal_block_size and
  // wal_segment_size (wrong ones could move a position that is not on a boundary).
  [[nodiscard]] constexpr wal_position record_end(std::uint64_t block_size = default_block_size,
                                                  std::uint64_t segment_size = default_segment_size) const noexcept {
    if (segment_size != 0 && value_ % segment_size == long_page_header)
      return wal_position(value_ - long_page_header);
    // A segment's first page has the long header: 24 bytes into it is no boundary.
    const bool segment_start = segment_size != 0 && value_ % segment_size == short_page_header;
    if (block_size != 0 && value_ % block_size == short_page_header && !segment_start)
      return wal_position(value_ - short_page_header);
    return *this;
  }

  friend constexpr bool operator==(wal_position a, wal_position b) noexcept { return a.value_ == b.value_; }
  friend constexpr bool operator!=(wal_position a, wal_position b) noexcept { return a.value_ != b.value_; }
  friend constexpr bool operator<(wal_position a, wal_position b) noexcept { return a.value_ < b.value_; }
  friend constexpr bool operator>(wal_position a, wal_position b) noexcept { return a.value_ > b.value_; }
  friend constexpr bool operator<=(wal_position a, wal_position b) noexcept { return a.value_ <= b.value_; }
  friend constexpr bool operator>=(wal_position a, wal_position b) noexcept { return a.value_ >= b.value_; }

 private:
  std::uint64_t value_ = 0;
};

// transaction_options::at_least: the standby has not replayed up to the position the
// transaction must see. Nothing of the transaction ran (the check comes before it)
// and the scope is doomed: end it, wait, or run the work elsewhere (replica_set does).
class replica_behind : public error {
 public:
  replica_behind(wal_position replayed, wal_position required);
  // Where the standby's replay stood when it was checked, and what was asked for.
  [[nodiscard]] wal_position replayed() const noexcept { return replayed_; }
  [[nodiscard]] wal_position required() const noexcept { return required_; }

 private:
  wal_position replayed_, required_;
};

template <>
struct value_traits<wal_position> {
  static constexpr unsigned oid = 3220;  // pg_lsn
  static std::string to_text(const wal_position& p) { return p.to_string(); }
  static wal_position from_text(std::string_view s) { return wal_position::parse(s); }
  // COPY rows: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = wal_position::max_text_size;
  static char* write_unescaped(char* p, const wal_position& v) noexcept { return v.write(p); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/wal_position.ipp>
// The bodies of <pqscope/wal_position.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/wal_position.hpp> (inlined above)

namespace pqscope {

PQSCOPE_DECL replica_behind::replica_behind(wal_position replayed, wal_position required)
    : error("the standby has replayed the WAL up to " + replayed.to_string() + ", and this transaction must see " +
            required.to_string() + " (transaction_options::at_least): it is behind; nothing ran"),
      replayed_(replayed),
      required_(required) {}

PQSCOPE_DECL wal_position wal_position::parse(std::string_view text) {
  // PostgreSQL's pg_lsn_in_internal (src/backend/utils/adt/pg_lsn.c).
  auto refuse = [&]() -> wal_position {
    throw conversion_error("cannot read \"" + std::string(text.substr(0, 80)) + "\" as a WAL position (pg_lsn)");
  };
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::uint64_t halves[2] = {0, 0};
  std::size_t at = 0;
  for (int half = 0; half < 2; ++half) {
    std::size_t digits = 0;
    for (; at < text.size() && hex(text[at]) >= 0; ++at, ++digits)
      halves[half] = halves[half] * 16 + static_cast<std::uint64_t>(hex(text[at]));
    if (digits < 1 || digits > 8) return refuse();
    if (half == 0) {
      if (at >= text.size() || text[at] != '/') return refuse();
      ++at;
    }
  }
  if (at != text.size()) return refuse();
  return wal_position((halves[0] << 32) | halves[1]);
}

PQSCOPE_DECL char* wal_position::write(char* p) const noexcept {
  static constexpr char digits[] = "0123456789ABCDEF";
  auto put = [&](std::uint32_t v) {
    int shift = 28;
    while (shift > 0 && ((v >> shift) & 0xf) == 0) shift -= 4;
    for (; shift >= 0; shift -= 4) *p++ = digits[(v >> shift) & 0xf];
  };
  put(static_cast<std::uint32_t>(value_ >> 32));
  *p++ = '/';
  put(static_cast<std::uint32_t>(value_));
  return p;
}

PQSCOPE_DECL std::string wal_position::to_string() const {
  char out[max_text_size];
  return std::string(out, write(out));
}

}  // namespace pqscope
#endif

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
  // With resolve_in_doubt: how long the resolver keeps asking while no server can
  // tell (none reachable, a standby not yet promoted). Zero: network_timeout and its
  // grace, or 5 s without one. Each round trip is still bounded by network_timeout.
  std::chrono::milliseconds resolve_wait{0};
  // atomic()/transactional() only, outermost scope only: re-run the whole function
  // after serialization_failure (40001) or deadlock_detected (40P01).
  int retries = 0;
  // Outermost scope only: subtransactions this transaction may hold before
  // opening another savepoint is reported (and refused, if the connection says so);
  // 0: the connection's savepoint_limit.
  std::size_t savepoint_limit = 0;
  // atomic()/transactional() only, outermost scope only: statements are queued
  // and sent together, with BEGIN, savepoints and COMMIT, when a result is read,
  // on connection::flush(), or at the end (one round trip for a transaction that
  // reads nothing). If any statement of a send fails, the attempt is rolled back,
  // its callbacks are dropped and the function runs again without batching, where
  // every error surfaces where it happened. Ignored on a nested scope;
  // usage_error on a transaction object, which cannot run code again.
  bool batch = false;
  // Backoff before retry n (0-based): a random delay in [d/2, d], d = min(max, base * 2^n).
  std::chrono::milliseconds retry_base_delay{5};
  std::chrono::milliseconds retry_max_delay{200};
  // Read-your-writes, outermost scope: the transaction must see every commit up to
  // this position (a last_commit_position(), or the latest of several). On a standby
  // that has not replayed that far its first statement throws replica_behind and
  // nothing else runs; the check rides in the batch of the BEGIN (read committed or
  // the server's default isolation when that is read committed), or goes just before
  // it, alone, for repeatable read and serializable: checked inside the transaction
  // it would run after that transaction's snapshot was taken. On a primary (a
  // promoted standby too) the check always passes. Empty (the default): no check. A nested scope may only repeat a
  // position its outermost scope already covers.
  wal_position at_least{};
  // atomic()/async_atomic() only, outermost scope only, with at_least: how long to
  // wait for a standby that is behind. The function runs again after short pauses
  // (each attempt's check is the poll, in the round trip the attempt makes anyway)
  // until the standby caught up or this passed; then replica_behind is thrown.
  // Zero: thrown at once.
  std::chrono::milliseconds replica_wait{0};
};

// What sits between the application and PostgreSQL.
enum class pooling {
  none,        // PostgreSQL itself, or a session-pooling PgBouncer: session state is allowed
  transaction  // the default; PgBouncer in pool_mode = transaction: session state is refused (see connection_options)
};

// Whether statements are prepared on the server (named statements), so that the
// server parses and plans a statement the application runs again once, not each time.
enum class prepare {
  never,     // every statement is unnamed: parsed and planned again on each run
  automatic  // a text run a second time is prepared; its Parse rides in the same batch
};

// A message from the server that is not an error: a NOTICE (DROP TABLE IF EXISTS of
// a missing table, RAISE NOTICE in a function), a WARNING, INFO, LOG or DEBUG. The
// views are valid during the call only.
struct notice {
  std::string_view severity;  // NOTICE, WARNING, INFO, LOG or DEBUG, never translated
  std::string_view sqlstate;  // 00000 for a NOTICE, 01000 for a WARNING, or what RAISE set
  std::string_view message;   // the primary message
  std::string_view detail, hint;  // empty when the server sent none
};

// What the statement observer is told after each statement the application runs.
struct statement_event {
  std::string_view sql;
  std::size_t params = 0;
  std::size_t depth = 0;                   // open scopes when it ran
  std::chrono::microseconds duration{0};   // its round trip, control statements that rode with it included
  std::size_t rows = 0;                    // rows returned, or affected by INSERT/UPDATE/DELETE
  const std::exception* error = nullptr;   // what the statement throws (or threw), or nullptr
  // The attempt of the outermost atomic() it belonged to (0: the first), and
  // whether that attempt was batched: a replayed statement is reported twice.
  std::size_t attempt = 0;
  bool batched = false;
  // Set, with sql "SAVEPOINT", when a scope opens past the savepoint limit.
  std::string_view warning;
  // Set, with sql empty, for a server notice when connection_options has no
  // notice_handler: the notice, in the order the server sent it.
  const pqscope::notice* server_notice = nullptr;
};

struct connection_options {
  // pooling::transaction (the default): statements that would leave session state
  // behind (a session SET, LISTEN, PREPARE, session advisory locks, ...) are refused
  // with usage_error before anything is sent; behind PgBouncer's transaction pooling
  // the next client of the server connection would inherit them. Wrap one statement
  // in allow_session_state() to send it anyway, or choose pooling::none for a direct
  // connection that wants session settings.
  pqscope::pooling pooling = pqscope::pooling::transaction;
  // prepare::automatic (the default) prepares a statement text on its second run on
  // the connection, at no extra round trip; later runs send only Bind and Execute.
  // With pooling::transaction nothing is prepared unless pooler_max_prepared_statements
  // says the pooler tracks prepared statements.
  pqscope::prepare prepare = pqscope::prepare::automatic;
  // PgBouncer's max_prepared_statements, copied from its configuration: PgBouncer
  // 1.21 and later track protocol-level prepared statements in transaction pooling
  // when it is above 0 (1.24's default: 200). 0 (the default): the pooler is not known
  // to track them (PgBouncer before 1.21 does not: a statement prepared on one server
  // connection is missing on the next), and pooling::transaction prepares nothing.
  // It also bounds the statements one connection prepares. Set for a pooler that does
  // not track them, the first statement it loses throws configuration_error, and
  // that connection prepares nothing more.
  std::size_t pooler_max_prepared_statements = 0;
  // Called once for every statement given to execute()/query_value(), on the
  // calling thread, when its answer arrives (for a batched statement: with the
  // batch that carried it), or when it is refused before it was sent (error set).
  // It must not use the connection. Exceptions it
  // throws are swallowed: a logging hook must not change what a transaction does.
  // Any callable: a lambda, a function, a std::function (see callback.hpp).
  callback<void(const statement_event&)> observer;
  // Where the server's notices go, in the order it sends them, on the thread that
  // reads the answers: this handler; without one, the observer (a statement_event
  // with server_notice set); without either, libpq's default (standard error).
  // Exceptions it throws are swallowed. A borrowed PGconn* keeps its own receiver.
  callback<void(const notice&)> notice_handler;
  // PostgreSQL caches 64 subtransaction ids per backend; a transaction that holds
  // more (savepoints that wrote; released ones count until the transaction ends)
  // slows every snapshot in the cluster. Opening a savepoint past this many is
  // counted (connection_stats::savepoint_limit_exceeded) and reported to the
  // observer, and refused with usage_error if refuse_past_savepoint_limit. 0: no limit.
  std::size_t savepoint_limit = 64;
  bool refuse_past_savepoint_limit = false;
  // A client-side bound on each round trip. When it passes, a cancel request is
  // sent and the answer is awaited for a grace of min(network_timeout, 1 s): a
  // cancelled statement throws query_canceled (dooming its scope, as any failed
  // statement does); no answer closes the connection and throws connection_error,
  // or in_doubt_error when COMMIT was awaited (never cancelled). Also bounds
  // connecting (connect_timeout, whole seconds, at least 2, unless the conninfo
  // sets one). Zero (default): no bound per round trip; connecting is still
  // bounded (connect_timeout=10) and a dead peer is still noticed by TCP keepalives
  // and tcp_user_timeout defaults. Set it above the longest statement you run.
  std::chrono::milliseconds network_timeout{0};
  // Read-your-writes: the COMMIT of a read-write outermost scope carries, in the same
  // batch (no round trip), a query for the WAL position the server reached, and
  // last_commit_position() returns it once the COMMIT succeeded (also inside
  // on_commit callbacks). A standby that has replayed up to it sees the transaction.
  // Statements in autocommit (whose commit a query in their batch would precede),
  // savepoints, read-only and rolled-back scopes leave it as it was. If only the
  // position query fails (a cancel, say), the commit stands and the position is left
  // empty (unknown), as after a COMMIT in doubt. Off by default.
  bool commit_positions = false;
};

namespace detail {
// How many named statements a connection with these options may make (0: none).
inline std::size_t prepare_limit(const connection_options& o) noexcept {
  constexpr std::size_t most = 256;
  if (o.prepare == prepare::never) return 0;
  if (o.pooling == pooling::none) return most;
  return o.pooler_max_prepared_statements < most ? o.pooler_max_prepared_statements : most;
}
}  // namespace detail

}  // namespace pqscope
// #include <pqscope/stats.hpp>
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
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/numeric.hpp>
// pqscope::numeric: PostgreSQL's numeric, kept as its exact decimal text, so that
// no value is rounded on its way through (money, quantities). Exact conversions to
// and from the integer types, a checked one to double. std::string keeps working
// for numeric columns as well.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

class numeric {
 public:
  numeric() = default;  // 0
  // Exact: every integer type but bool and char.
  template <class Int, std::enable_if_t<std::is_integral_v<Int> && !std::is_same_v<Int, bool> &&
                                            !std::is_same_v<Int, char>,
                                        int> = 0>
  numeric(Int v) : text_(value_traits<Int>::to_text(v)) {}  // NOLINT: implicit, as the integer is exact
  // PostgreSQL's numeric input: an optional sign, digits with an optional decimal
  // point, an optional exponent (1.5e-3), or NaN, Infinity, -Infinity (any case;
  // inf for Infinity); spaces around it are dropped. The text is kept as written;
  // anything else is a conversion_error.
  explicit numeric(std::string_view text);

  [[nodiscard]] const std::string& str() const noexcept { return text_; }
  [[nodiscard]] bool is_nan() const noexcept;
  [[nodiscard]] bool is_infinite() const noexcept;

  // The exact integer: conversion_error if the value has a fraction, is NaN or
  // infinite, or does not fit in T (an integer type).
  template <class T>
  [[nodiscard]] T to() const {
    static_assert(std::is_integral_v<T> && !std::is_same_v<T, bool>, "numeric::to<T>(): T is an integer type");
    return value_traits<T>::from_text(integer_text());
  }
  // The nearest double: conversion_error if the value is beyond double's range (or
  // so small that it would read as 0). NaN and the infinities convert as such.
  [[nodiscard]] double to_double() const;

  // Equal values: 1.50 == 1.5, 0 == -0.0, NaN == NaN (as PostgreSQL compares them).
  friend bool operator==(const numeric& a, const numeric& b) { return a.canonical() == b.canonical(); }
  friend bool operator!=(const numeric& a, const numeric& b) { return !(a == b); }

 private:
  // The value as "-ddd" (digits without leading or trailing zeros) and an exponent,
  // "d...eN": equal values have equal forms.
  [[nodiscard]] std::string canonical() const;
  // The integer's digits, for value_traits<Int>::from_text; conversion_error if none.
  [[nodiscard]] std::string integer_text() const;

  std::string text_ = "0";
};

template <>
struct value_traits<numeric> {
  static constexpr unsigned oid = 1700;
  static const std::string& to_text(const numeric& n) { return n.str(); }
  static numeric from_text(std::string_view s) { return numeric(s); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/numeric.ipp>
// The bodies of <pqscope/numeric.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/numeric.hpp> (inlined above)

#include <charconv>
#include <limits>
#include <system_error>

namespace pqscope {

namespace detail {

inline bool same_word(std::string_view a, std::string_view word) noexcept {
  if (a.size() != word.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char c = a[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != word[i]) return false;
  }
  return true;
}

// The parts of a finite numeric's text: its sign, its digits (the point removed)
// and the power of ten of the last one.
struct decimal_parts {
  bool negative = false;
  std::string digits;
  long long exponent = 0;
};

// false for text that is not a finite number in PostgreSQL 15's numeric syntax.
inline bool split_decimal(std::string_view s, decimal_parts& out) {
  std::size_t i = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) out.negative = s[i++] == '-';
  bool point = false, any = false;
  long long after_point = 0;
  for (; i < s.size(); ++i) {
    const char c = s[i];
    if (c >= '0' && c <= '9') {
      out.digits += c;
      any = true;
      if (point) ++after_point;
    } else if (c == '.' && !point) {
      point = true;
    } else {
      break;
    }
  }
  if (!any) return false;
  long long exp = 0;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    // The server reads the exponent with strtol(), which skips white space first.
    while (i < s.size() && (s[i] == ' ' || (s[i] >= '\t' && s[i] <= '\r'))) ++i;
    bool neg = false;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
    const std::size_t start = i;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
      if (exp > 1000000000) return false;  // far beyond numeric's range: the server refuses it too
      exp = exp * 10 + (s[i] - '0');
    }
    if (i == start) return false;
    if (neg) exp = -exp;
  }
  if (i != s.size()) return false;
  out.exponent = exp - after_point;
  return true;
}

// What the server stores: a display scale (digits after the point, as written,
// less the exponent) of at most 16,383, and a first non-zero digit at most 131,071
// places before the point (its weight in base 10,000 fits a 16-bit field).
inline bool within_numeric_range(const decimal_parts& p) noexcept {
  const long long scale = -p.exponent;  // digits after the point
  if (scale > 16383) return false;
  const std::size_t first = p.digits.find_first_not_of('0');
  if (first == std::string::npos) return true;  // zero
  const long long msd = p.exponent + static_cast<long long>(p.digits.size() - 1 - first);
  const long long weight = msd >= 0 ? msd / 4 : -((-msd + 3) / 4);
  return weight <= 32767;
}

inline std::string_view trim_spaces(std::string_view s) noexcept {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace detail

PQSCOPE_DECL numeric::numeric(std::string_view text) {
  const std::string_view s = detail::trim_spaces(text);
  std::string_view word = s;
  if (!word.empty() && (word[0] == '+' || word[0] == '-')) word.remove_prefix(1);
  detail::decimal_parts parts;
  const bool special = detail::same_word(s, "nan") || detail::same_word(word, "infinity") ||
                       detail::same_word(word, "inf");
  if (!special && !detail::split_decimal(s, parts))
    throw conversion_error("cannot read \"" + std::string(text.substr(0, 80)) + "\" as a numeric");
  if (!special && !detail::within_numeric_range(parts))
    throw conversion_error("numeric \"" + std::string(text.substr(0, 80)) +
                           "\" is beyond PostgreSQL's numeric range (131,072 digits before the point, 16,383 after)");
  text_ = std::string(s);
}

PQSCOPE_DECL bool numeric::is_nan() const noexcept { return detail::same_word(text_, "nan"); }

PQSCOPE_DECL bool numeric::is_infinite() const noexcept {
  std::string_view word = text_;
  if (!word.empty() && (word[0] == '+' || word[0] == '-')) word.remove_prefix(1);
  return detail::same_word(word, "infinity") || detail::same_word(word, "inf");
}

PQSCOPE_DECL std::string numeric::canonical() const {
  if (is_nan()) return "NaN";
  if (is_infinite()) return text_[0] == '-' ? "-Infinity" : "Infinity";
  detail::decimal_parts p;
  (void)detail::split_decimal(text_, p);
  std::size_t first = p.digits.find_first_not_of('0');
  if (first == std::string::npos) return "0";
  std::size_t last = p.digits.find_last_not_of('0');
  const long long exponent = p.exponent + static_cast<long long>(p.digits.size() - 1 - last);
  return (p.negative ? "-" : "") + p.digits.substr(first, last - first + 1) + "e" + std::to_string(exponent);
}

PQSCOPE_DECL std::string numeric::integer_text() const {
  auto refuse = [&](const char* why) -> std::string {
    throw conversion_error("numeric " + text_.substr(0, 80) + " " + why);
  };
  if (is_nan() || is_infinite()) return refuse("is not a number an integer can hold");
  detail::decimal_parts p;
  (void)detail::split_decimal(text_, p);
  const std::size_t first = p.digits.find_first_not_of('0');
  if (first == std::string::npos) return "0";
  const std::size_t last = p.digits.find_last_not_of('0');
  const long long exponent = p.exponent + static_cast<long long>(p.digits.size() - 1 - last);
  if (exponent < 0) return refuse("has a fraction; read it as numeric or double");
  const std::string digits = p.digits.substr(first, last - first + 1);
  if (static_cast<long long>(digits.size()) + exponent > 40) return refuse("does not fit in any integer type");
  return (p.negative ? "-" : "") + digits + std::string(static_cast<std::size_t>(exponent), '0');
}

PQSCOPE_DECL double numeric::to_double() const {
  if (is_nan()) return std::numeric_limits<double>::quiet_NaN();
  if (is_infinite())
    return text_[0] == '-' ? -std::numeric_limits<double>::infinity() : std::numeric_limits<double>::infinity();
  // From its parts: the text may have spaces around or inside the exponent, which
  // the server reads and from_chars does not.
  detail::decimal_parts p;
  (void)detail::split_decimal(text_, p);
  const std::string plain = (p.negative ? "-" : "") + p.digits + "e" + std::to_string(p.exponent);
  double v = 0;
  const auto r = std::from_chars(plain.data(), plain.data() + plain.size(), v);
  if (r.ec == std::errc::result_out_of_range)
    throw conversion_error("numeric " + text_.substr(0, 80) + " is beyond the range of a double");
  if (r.ec != std::errc() || r.ptr != plain.data() + plain.size())
    throw conversion_error("cannot read numeric " + text_.substr(0, 80) + " as a double");
  return v;
}

}  // namespace pqscope
#endif
// #include <pqscope/interval.hpp>
// pqscope::interval: PostgreSQL's interval, its three fields kept apart as the server
// keeps them, for parameters, results, arrays (interval[]) and COPY. std::chrono
// durations with an integer count go in and out as interval too, exactly or not at all.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <ratio>
#include <string>
#include <string_view>
#include <type_traits>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

namespace detail {

// Wide enough for days * 86,400,000,000 + microseconds, scaled to any std::ratio
// (GCC and Clang, as the overflow builtins pqscope uses elsewhere).
__extension__ typedef __int128 int128;

// conversion_error("interval of 1 months, 2 days and 3 microseconds cannot be a std::chrono duration: <why>").
[[noreturn]] PQSCOPE_DECL void throw_interval_conversion(std::int32_t months, std::int32_t days,
                                                         std::int64_t microseconds, const char* why);

}  // namespace detail

// The fields are not normalized into one another: a month is not 30 days (it is 28
// to 31 of them) and a day is not 24 hours (it is 23 or 25 across a daylight-saving
// change when added to a timestamptz), so PostgreSQL keeps all three.
struct interval {
  std::int32_t months = 0;
  std::int32_t days = 0;
  std::int64_t microseconds = 0;

  // What the server writes under each IntervalStyle: postgres (the default,
  // "1 year 2 mons -3 days +04:05:06.789"), postgres_verbose ("@ 1 year 2 mons ..."),
  // sql_standard ("+1-2 -3 +4:05:06.789") and iso_8601 ("P1Y2M-3DT4H5M6.789S"); and
  // what to_string() writes. Anything else, a fraction below a microsecond, or a
  // value beyond the fields is a conversion_error.
  [[nodiscard]] static interval parse(std::string_view text);

  // "+14 mons -3 days +04:05:06.789000": every field signed, so that the server reads
  // the same three fields whatever its IntervalStyle. (The lowest microseconds, which
  // the server reads in no time field, go as "-2562047788 hours -54.775808 secs".)
  [[nodiscard]] std::string to_string() const;
  // The same into p (room for max_text_size bytes); returns where it ends. The longest
  // is "-2147483648 mons -2147483648 days -2562047788 hours -54.775808 secs" (67).
  char* write(char* p) const noexcept;
  static constexpr std::size_t max_text_size = 72;

  // The length, with a day as 24 hours (as PostgreSQL's extract(epoch) counts it).
  // conversion_error when months is not 0 (a month has no fixed length), when D
  // cannot hold the value, or when D's unit cannot hold it exactly (1.5 s as
  // std::chrono::seconds): nothing is rounded.
  template <class D = std::chrono::microseconds>
  [[nodiscard]] D to_duration() const;

  // The duration as microseconds (months and days 0: a duration has a fixed length).
  // conversion_error for a part below a microsecond or beyond int64 microseconds
  // (about 292,000 years).
  template <class Rep, class Period>
  [[nodiscard]] static interval from_duration(std::chrono::duration<Rep, Period> d);

  // Field by field. PostgreSQL's own `=` normalizes first (30 days = 1 month, 24 hours
  // = 1 day), so '1 mon' = '30 days' there; here they differ.
  friend constexpr bool operator==(const interval& a, const interval& b) noexcept {
    return a.months == b.months && a.days == b.days && a.microseconds == b.microseconds;
  }
  friend constexpr bool operator!=(const interval& a, const interval& b) noexcept { return !(a == b); }
};

template <class D>
D interval::to_duration() const {
  using rep = typename D::rep;
  static_assert(std::is_integral_v<rep> && std::is_same_v<D, std::chrono::duration<rep, typename D::period>>,
                "pqscope: interval::to_duration<D>(): D is a std::chrono::duration with an integer count");
  if (months != 0) detail::throw_interval_conversion(months, days, microseconds, "a month has no fixed length");
  using ticks_per_micro = std::ratio_divide<std::micro, typename D::period>;
  // Below 2^68 in magnitude: no overflow here.
  const detail::int128 total = detail::int128{days} * 86'400'000'000 + microseconds;
  detail::int128 scaled = 0;
  if (__builtin_mul_overflow(total, detail::int128{ticks_per_micro::num}, &scaled) ||
      scaled / ticks_per_micro::den < static_cast<detail::int128>(std::numeric_limits<rep>::min()) ||
      scaled / ticks_per_micro::den > static_cast<detail::int128>(std::numeric_limits<rep>::max()))
    detail::throw_interval_conversion(months, days, microseconds, "it is beyond the range of the duration type");
  if (scaled % ticks_per_micro::den != 0)
    detail::throw_interval_conversion(months, days, microseconds,
                                      "it is not a whole number of the duration type's units");
  return D(static_cast<rep>(scaled / ticks_per_micro::den));
}

template <class Rep, class Period>
interval interval::from_duration(std::chrono::duration<Rep, Period> d) {
  static_assert(std::is_integral_v<Rep>,
                "pqscope: interval::from_duration(): a duration with an integer count (convert a floating-point one "
                "with std::chrono::round first)");
  using micros_per_tick = std::ratio_divide<Period, std::micro>;
  const auto refuse = [&](const char* why) -> interval {
    throw conversion_error("std::chrono duration of " + std::to_string(d.count()) + " ticks of " +
                           std::to_string(Period::num) + "/" + std::to_string(Period::den) +
                           " s cannot be an interval: " + why);
  };
  detail::int128 scaled = 0;
  if (__builtin_mul_overflow(detail::int128{d.count()}, detail::int128{micros_per_tick::num}, &scaled) ||
      scaled / micros_per_tick::den < std::numeric_limits<std::int64_t>::min() ||
      scaled / micros_per_tick::den > std::numeric_limits<std::int64_t>::max())
    return refuse("it is beyond an interval's 64-bit microseconds");
  if (scaled % micros_per_tick::den != 0) return refuse("it has a part below a microsecond");
  return interval{0, 0, static_cast<std::int64_t>(scaled / micros_per_tick::den)};
}

template <>
struct value_traits<interval> {
  static constexpr unsigned oid = 1186;
  static std::string to_text(const interval& v) { return v.to_string(); }
  static interval from_text(std::string_view s) { return interval::parse(s); }
  // COPY rows: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = interval::max_text_size;
  static char* write_unescaped(char* p, const interval& v) noexcept { return v.write(p); }
};

// std::chrono::duration with an integer count as interval, through interval::from_duration
// and interval::to_duration: a result with months, or one the duration cannot hold
// exactly, is a conversion_error.
template <class Rep, class Period>
struct value_traits<std::chrono::duration<Rep, Period>, std::enable_if_t<std::is_integral_v<Rep>>> {
  using duration = std::chrono::duration<Rep, Period>;
  static constexpr unsigned oid = 1186;
  static std::string to_text(const duration& d) { return interval::from_duration(d).to_string(); }
  static duration from_text(std::string_view s) { return interval::parse(s).to_duration<duration>(); }
  static constexpr std::size_t unescaped_size = interval::max_text_size;
  static char* write_unescaped(char* p, const duration& d) { return interval::from_duration(d).write(p); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/interval.ipp>
// The bodies of <pqscope/interval.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/interval.hpp> (inlined above)
// #include <pqscope/detail/text_codecs.hpp> (inlined above)

#include <cstring>

namespace pqscope {

// detail::put_digits is text_codecs.ipp's, compiled wherever these bodies are.
namespace detail {

PQSCOPE_DECL void throw_interval_conversion(std::int32_t months, std::int32_t days, std::int64_t microseconds,
                                            const char* why) {
  throw conversion_error("interval of " + std::to_string(months) + " months, " + std::to_string(days) + " days and " +
                         std::to_string(microseconds) + " microseconds cannot be a std::chrono duration: " + why);
}

inline std::uint64_t interval_magnitude(std::int64_t v) noexcept {
  return v < 0 ? 0 - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
}

// "+N unit " or "-N unit ".
inline char* put_interval_field(char* p, std::int64_t v, std::string_view unit) noexcept {
  *p++ = v < 0 ? '-' : '+';
  p = put_digits(p, interval_magnitude(v), 1);
  *p++ = ' ';
  std::memcpy(p, unit.data(), unit.size());
  return p + unit.size();
}

// The fields read so far, wider than interval's: the range is checked once, at the end.
struct interval_sum {
  int128 months = 0, days = 0, micros = 0;
};

constexpr std::int64_t micros_per_minute = 60 * micros_per_second;
constexpr std::int64_t micros_per_hour = 60 * micros_per_minute;

// Reads interval text left to right; every step says whether it matched.
class interval_reader : public text_cursor {
 public:
  using text_cursor::text_cursor;
  // -1 for '-', +1 for '+', 0 for neither (nothing eaten).
  int sign() noexcept { return eat('-') ? -1 : eat('+') ? 1 : 0; }
  // 1 to 18 digits: more than any field the server writes, less than int64 overflows at.
  bool number(std::int64_t& out) noexcept {
    int n = 0;
    out = 0;
    while (n < 18 && peek_digit()) {
      out = out * 10 + (s_[i_++] - '0');
      ++n;
    }
    return n > 0 && !peek_digit();
  }
  // Digits after a decimal point, 1 to 6 of them, as microseconds: a seventh would be
  // below a microsecond, which the server never writes.
  bool fraction(std::int64_t& micros) noexcept {
    std::int64_t v = 0;
    int n = 0;
    while (n < 6 && peek_digit()) {
      v = v * 10 + (s_[i_++] - '0');
      ++n;
    }
    if (n == 0 || peek_digit()) return false;
    for (; n < 6; ++n) v *= 10;
    micros = v;
    return true;
  }
  // Exactly two digits below `limit` (minutes and seconds of a time field).
  bool two_digits(std::int64_t limit, std::int64_t& out) noexcept {
    if (s_.size() - i_ < 2 || !peek_digit() || s_[i_ + 1] < '0' || s_[i_ + 1] > '9') return false;
    out = (s_[i_] - '0') * 10 + (s_[i_ + 1] - '0');
    i_ += 2;
    return out < limit;
  }
  // A lowercase word, up to a space or the end.
  std::string_view word() noexcept {
    const std::size_t start = i_;
    while (i_ < s_.size() && s_[i_] >= 'a' && s_[i_] <= 'z') ++i_;
    return s_.substr(start, i_ - start);
  }
  // H:MM:SS[.ffffff], hours of any length, without its sign: microseconds.
  bool time(int128& micros) noexcept {
    std::int64_t h = 0, m = 0, sec = 0, f = 0;
    if (!number(h) || !eat(':') || !two_digits(60, m) || !eat(':') || !two_digits(60, sec)) return false;
    if (eat('.') && !fraction(f)) return false;
    micros = int128{h} * micros_per_hour + int128{m} * micros_per_minute + int128{sec} * micros_per_second + f;
    return true;
  }
  // Whether a time field (digits then ':') starts here, past any sign.
  [[nodiscard]] bool at_time() const noexcept {
    std::size_t j = i_;
    if (j < s_.size() && (s_[j] == '-' || s_[j] == '+')) ++j;
    while (j < s_.size() && s_[j] >= '0' && s_[j] <= '9') ++j;
    return j < s_.size() && s_[j] == ':';
  }
};

// Adds n[.fraction] of unit u (0 years, 1 months, 2 days, 3 hours, 4 minutes, 5 seconds).
inline void add_interval_unit(interval_sum& out, int u, int sign, std::int64_t n, std::int64_t fraction) {
  int128 v = n;
  switch (u) {
    case 0: v *= 12; break;
    case 3: v *= micros_per_hour; break;
    case 4: v *= micros_per_minute; break;
    case 5: v = v * micros_per_second + fraction; break;
    default: break;
  }
  if (sign < 0) v = -v;
  (u <= 1 ? out.months : u == 2 ? out.days : out.micros) += v;
}

// "mon" or "mons" for unit "mon".
inline bool is_unit(std::string_view word, std::string_view unit) noexcept {
  return word == unit || (word.size() == unit.size() + 1 && word.back() == 's' && word.substr(0, unit.size()) == unit);
}

// IntervalStyle postgres, postgres_verbose and interval::to_string(): signed numbers
// with units, in order from years to seconds, each unit once, then (not in the
// verbose "@" form) an optional signed time field. Every field carries its own sign;
// a trailing " ago" (verbose form) negates them all.
inline bool read_interval_units(interval_reader& r, interval_sum& out) {
  const bool verbose = r.eat('@');
  if (verbose && !r.eat(' ')) return false;
  int rank = -1;  // the unit read last
  bool any = false;
  while (!r.done()) {
    if (any && !r.eat(' ')) return false;
    if (verbose && any && r.peek('a')) {
      if (r.word() != "ago" || !r.done()) return false;
      out.months = -out.months;
      out.days = -out.days;
      out.micros = -out.micros;
      return true;
    }
    if (!verbose && r.at_time()) {
      const int sign = r.sign();
      int128 micros = 0;
      if (rank >= 3 || !r.time(micros)) return false;
      out.micros += sign < 0 ? -micros : micros;
      rank = 5;
      any = true;
      continue;
    }
    const int sign = r.sign();
    std::int64_t n = 0, fraction = 0;
    if (!r.number(n)) return false;
    const bool has_fraction = r.eat('.');
    if (has_fraction && !r.fraction(fraction)) return false;
    if (verbose && !any && n == 0 && !has_fraction && sign == 0 && r.done()) return true;  // "@ 0"
    if (!r.eat(' ')) return false;
    const std::string_view word = r.word();
    static constexpr std::string_view units[] = {"year", "mon", "day", "hour", "min", "sec"};
    int u = 0;
    while (u < 6 && !is_unit(word, units[u])) ++u;
    if (u == 6 || u <= rank || (has_fraction && u != 5)) return false;
    rank = u;
    add_interval_unit(out, u, sign, n, fraction);
    any = true;
  }
  return any;
}

// IntervalStyle sql_standard: "0", or year-month "Y-M", days "D" (a time follows) and
// a time "H:MM:SS[.ffffff]", in that order, separated by spaces. As PostgreSQL reads
// it, a field without a sign takes a leading '-' of the first ("-1 2:03:04" is -1 day
// -2:03:04); the server signs every field when their signs differ.
inline bool read_interval_sql(interval_reader& r, interval_sum& out) {
  int first_sign = 0;
  int rank = -1;  // 0 year-month, 1 days, 2 time
  for (;;) {
    const bool time = r.at_time();
    int sign = r.sign();
    if (rank == -1) first_sign = sign;
    if (sign == 0) sign = first_sign;
    if (time) {
      int128 micros = 0;
      if (rank >= 2 || !r.time(micros)) return false;
      out.micros = sign < 0 ? -micros : micros;
      rank = 2;
    } else {
      std::int64_t n = 0;
      if (!r.number(n)) return false;
      if (r.eat('-')) {  // Y-M, M below 12
        std::int64_t m = 0;
        if (rank >= 0 || !r.number(m) || m >= 12) return false;
        out.months = (int128{n} * 12 + m) * (sign < 0 ? -1 : 1);
        rank = 0;
      } else if (rank == -1 && n == 0 && sign == 0 && r.done()) {
        return true;  // "0"
      } else {  // days: a time must follow, which the rank checks of the next field see to
        if (rank >= 1 || r.done()) return false;
        out.days = int128{n} * (sign < 0 ? -1 : 1);
        rank = 1;
      }
    }
    if (r.done()) return true;
    if (!r.eat(' ')) return false;
  }
}

// IntervalStyle iso_8601: P[nY][nM][nD][T[nH][nM][n[.f]S]], every number signed on
// its own; a negative fraction of a second is written "-0.5S".
inline bool read_interval_iso(interval_reader& r, interval_sum& out) {
  if (!r.eat('P')) return false;
  bool any = false, time = false;
  int rank = -1;  // 0 Y, 1 M, 2 D, then after T: 3 H, 4 M, 5 S
  while (!r.done()) {
    if (!time && r.eat('T')) {
      time = true;
      rank = 2;
      if (r.done()) return false;
      continue;
    }
    const int sign = r.sign();
    std::int64_t n = 0, fraction = 0;
    if (!r.number(n)) return false;
    const bool has_fraction = r.eat('.');
    if (has_fraction && !r.fraction(fraction)) return false;
    const char* designators = time ? "HMS" : "YMD";
    int u = 0;
    while (u < 3 && !r.eat(designators[u])) ++u;
    if (u == 3) return false;
    u += time ? 3 : 0;
    if (u <= rank || (has_fraction && u != 5)) return false;
    rank = u;
    add_interval_unit(out, u, sign, n, fraction);
    any = true;
  }
  return any;
}

}  // namespace detail

PQSCOPE_DECL interval interval::parse(std::string_view text) {
  if (text == "infinity" || text == "-infinity")
    throw conversion_error("cannot read interval " + detail::quote_value(text) +
                           " as pqscope::interval: an infinite interval (PostgreSQL 17) has no value here");
  detail::interval_reader r(text);
  detail::interval_sum sum;
  bool ok = false;
  if (!text.empty() && text[0] == 'P')
    ok = detail::read_interval_iso(r, sum);
  else if (text.find_first_of("@abcdefghijklmnopqrstuvwxyz") != std::string_view::npos)
    ok = detail::read_interval_units(r, sum);
  else
    ok = detail::read_interval_sql(r, sum);
  if (!ok)
    throw conversion_error("cannot read " + detail::quote_value(text) +
                           " as an interval: not in a form the server writes under IntervalStyle postgres, "
                           "postgres_verbose, sql_standard or iso_8601");
  constexpr auto i32_min = std::numeric_limits<std::int32_t>::min(), i32_max = std::numeric_limits<std::int32_t>::max();
  constexpr auto i64_min = std::numeric_limits<std::int64_t>::min(), i64_max = std::numeric_limits<std::int64_t>::max();
  if (sum.months < i32_min || sum.months > i32_max || sum.days < i32_min || sum.days > i32_max ||
      sum.micros < i64_min || sum.micros > i64_max)
    throw conversion_error("interval " + detail::quote_value(text) +
                           " is beyond PostgreSQL's range (32-bit months and days, 64-bit microseconds)");
  return interval{static_cast<std::int32_t>(sum.months), static_cast<std::int32_t>(sum.days),
                  static_cast<std::int64_t>(sum.micros)};
}

PQSCOPE_DECL char* interval::write(char* p) const noexcept {
  // Every field signed: under IntervalStyle sql_standard the server gives a field
  // without a sign the sign of a leading '-'.
  p = detail::put_interval_field(p, months, "mons ");
  p = detail::put_interval_field(p, days, "days ");
  std::uint64_t us = detail::interval_magnitude(microseconds);
  if (microseconds == std::numeric_limits<std::int64_t>::min()) {
    // The server reads a time field's magnitude into int64 before the sign, so it
    // refuses -2562047788:00:54.775808 (which it writes itself); in units it reads it.
    static constexpr char lowest[] = "-2562047788 hours -54.775808 secs";
    std::memcpy(p, lowest, sizeof lowest - 1);
    return p + sizeof lowest - 1;
  }
  *p++ = microseconds < 0 ? '-' : '+';
  const std::uint64_t per_hour = detail::micros_per_hour, per_minute = detail::micros_per_minute,
                      per_second = detail::micros_per_second;
  p = detail::put_digits(p, us / per_hour, 2);
  us %= per_hour;
  *p++ = ':';
  p = detail::put_digits(p, us / per_minute, 2);
  us %= per_minute;
  *p++ = ':';
  p = detail::put_digits(p, us / per_second, 2);
  us %= per_second;
  if (us != 0) {
    *p++ = '.';
    p = detail::put_digits(p, us, 6);
  }
  return p;
}

PQSCOPE_DECL std::string interval::to_string() const {
  char out[max_text_size];
  return std::string(out, write(out));
}

}  // namespace pqscope
#endif
// #include <pqscope/uuid.hpp>
// pqscope::uuid: PostgreSQL's uuid, 16 bytes held by value, for parameters, results,
// arrays (uuid[]) and COPY.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

class uuid {
 public:
  using bytes_type = std::array<std::uint8_t, 16>;

  constexpr uuid() noexcept = default;  // the nil uuid, 00000000-0000-0000-0000-000000000000
  explicit constexpr uuid(const bytes_type& b) noexcept : bytes_(b) {}

  // The text forms PostgreSQL reads: 32 hex digits in either case, a hyphen allowed
  // after any group of four but the last, the whole optionally in braces
  // ("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "{A0EEBC999C0B4EF8BB6D6BB9BD380A11}").
  // Anything else is a conversion_error.
  static uuid parse(std::string_view text);

  // Lowercase, 8-4-4-4-12: as the server writes it.
  [[nodiscard]] std::string to_string() const;
  // The same into p (room for 36 bytes); returns where it ends.
  char* write(char* p) const noexcept;

  [[nodiscard]] constexpr const bytes_type& bytes() const noexcept { return bytes_; }
  [[nodiscard]] constexpr bool is_nil() const noexcept {
    for (const std::uint8_t b : bytes_)
      if (b != 0) return false;
    return true;
  }

  friend constexpr bool operator==(const uuid& a, const uuid& b) noexcept { return compare(a, b) == 0; }
  friend constexpr bool operator!=(const uuid& a, const uuid& b) noexcept { return compare(a, b) != 0; }
  // Byte order, as PostgreSQL orders uuids.
  friend constexpr bool operator<(const uuid& a, const uuid& b) noexcept { return compare(a, b) < 0; }

 private:
  static constexpr int compare(const uuid& a, const uuid& b) noexcept {
    for (std::size_t i = 0; i < 16; ++i)
      if (a.bytes_[i] != b.bytes_[i]) return a.bytes_[i] < b.bytes_[i] ? -1 : 1;
    return 0;
  }
  bytes_type bytes_{};
};

template <>
struct value_traits<uuid> {
  static constexpr unsigned oid = 2950;
  static std::string to_text(const uuid& u) { return u.to_string(); }
  static uuid from_text(std::string_view s) { return uuid::parse(s); }
  // COPY rows: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = 36;
  static char* write_unescaped(char* p, const uuid& u) noexcept { return u.write(p); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/uuid.ipp>
// The bodies of <pqscope/uuid.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/uuid.hpp> (inlined above)

namespace pqscope {

PQSCOPE_DECL uuid uuid::parse(std::string_view text) {
  // PostgreSQL's string_to_uuid (src/backend/utils/adt/uuid.c), rule for rule.
  auto refuse = [&]() -> uuid {
    throw conversion_error("cannot read \"" + std::string(text.substr(0, 80)) + "\" as a uuid");
  };
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::size_t at = 0;
  const bool braces = !text.empty() && text[0] == '{';
  if (braces) ++at;
  bytes_type b{};
  for (std::size_t i = 0; i < 16; ++i) {
    if (text.size() - at < 2) return refuse();
    const int hi = hex(text[at]), lo = hex(text[at + 1]);
    if (hi < 0 || lo < 0) return refuse();
    b[i] = static_cast<std::uint8_t>(hi * 16 + lo);
    at += 2;
    if (at < text.size() && text[at] == '-' && i % 2 == 1 && i < 15) ++at;
  }
  if (braces) {
    if (at >= text.size() || text[at] != '}') return refuse();
    ++at;
  }
  if (at != text.size()) return refuse();
  return uuid(b);
}

PQSCOPE_DECL char* uuid::write(char* p) const noexcept {
  static constexpr char digits[] = "0123456789abcdef";
  for (std::size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
    *p++ = digits[bytes_[i] >> 4];
    *p++ = digits[bytes_[i] & 0xf];
  }
  return p;
}

PQSCOPE_DECL std::string uuid::to_string() const {
  char out[36];
  return std::string(out, write(out));
}

}  // namespace pqscope
#endif
// #include <pqscope/wal_position.hpp> (inlined above)
// #include <pqscope/timestamptz.hpp>
// pqscope::timestamptz: PostgreSQL's timestamptz as the server keeps it, 64-bit
// microseconds since 2000-01-01 00:00 UTC. That spans the server's whole range,
// 4714-11-24 BC to 294276-12-31 AD, and its two infinities; a system_clock time_point
// does not (nanoseconds end in 2262, microseconds since 1970 in 294247).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/text_codecs.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)

namespace pqscope {

class timestamptz {
 public:
  constexpr timestamptz() noexcept = default;  // 2000-01-01 00:00:00 UTC, PostgreSQL's epoch

  // From a system_clock time point; the part below a microsecond is dropped (rounded
  // toward the past), as for time point parameters. conversion_error before 4714 BC.
  template <class D>
  timestamptz(std::chrono::time_point<std::chrono::system_clock, D> t)  // NOLINT(google-explicit-constructor)
      : timestamptz(from_unix_micros(std::chrono::floor<std::chrono::microseconds>(t.time_since_epoch()).count())) {}

  // conversion_error outside PostgreSQL's range.
  [[nodiscard]] static timestamptz from_micros_since_2000(std::int64_t micros);
  [[nodiscard]] static timestamptz from_unix_micros(std::int64_t micros_since_1970);
  [[nodiscard]] static constexpr timestamptz infinity() noexcept { return timestamptz(plus_infinity_); }
  [[nodiscard]] static constexpr timestamptz minus_infinity() noexcept { return timestamptz(minus_infinity_); }

  [[nodiscard]] constexpr bool is_finite() const noexcept { return !is_infinity() && !is_minus_infinity(); }
  [[nodiscard]] constexpr bool is_infinity() const noexcept { return micros_ == plus_infinity_; }
  [[nodiscard]] constexpr bool is_minus_infinity() const noexcept { return micros_ == minus_infinity_; }

  // PostgreSQL's own value: microseconds since 2000-01-01 00:00 UTC; for the
  // infinities, the int64 limits, as the server stores them.
  [[nodiscard]] constexpr std::int64_t micros_since_2000() const noexcept { return micros_; }

  // The time point; conversion_error when infinite or when its duration cannot hold
  // the value (nanoseconds: the years 1677 to 2262; microseconds: up to 294247 AD).
  template <class D = std::chrono::system_clock::duration>
  [[nodiscard]] std::chrono::time_point<std::chrono::system_clock, D> to_time_point() const {
    static_assert(detail::divides_micro<D>::value,
                  "pqscope: timestamptz::to_time_point needs a duration that holds whole microseconds");
    if (!is_finite()) throw conversion_error(std::string("timestamptz::to_time_point(): the timestamp is ") +
                                             (is_infinity() ? "'infinity'" : "'-infinity'"));
    return detail::time_point_from_micros<std::chrono::time_point<std::chrono::system_clock, D>>(micros_,
                                                                                                to_string());
  }

  // As the server writes it with DateStyle ISO, in UTC: "294276-12-31 23:59:59.999999+00".
  [[nodiscard]] std::string to_string() const;
  // The same into p (room for detail::timestamp_text_size bytes); returns where it ends.
  char* write(char* p) const noexcept;

  // Ordered as the server orders them: -infinity first, infinity last.
  friend constexpr bool operator==(timestamptz a, timestamptz b) noexcept { return a.micros_ == b.micros_; }
  friend constexpr bool operator!=(timestamptz a, timestamptz b) noexcept { return a.micros_ != b.micros_; }
  friend constexpr bool operator<(timestamptz a, timestamptz b) noexcept { return a.micros_ < b.micros_; }
  friend constexpr bool operator<=(timestamptz a, timestamptz b) noexcept { return a.micros_ <= b.micros_; }
  friend constexpr bool operator>(timestamptz a, timestamptz b) noexcept { return a.micros_ > b.micros_; }
  friend constexpr bool operator>=(timestamptz a, timestamptz b) noexcept { return a.micros_ >= b.micros_; }

 private:
  // PostgreSQL's DT_NOBEGIN and DT_NOEND.
  static constexpr std::int64_t minus_infinity_ = std::numeric_limits<std::int64_t>::min();
  static constexpr std::int64_t plus_infinity_ = std::numeric_limits<std::int64_t>::max();
  explicit constexpr timestamptz(std::int64_t micros) noexcept : micros_(micros) {}
  std::int64_t micros_ = 0;
};

// Sent as timestamptz in UTC with an explicit offset; read from timestamptz in any
// TimeZone or from timestamp without time zone taken as UTC (DateStyle ISO), as the
// time point parameters are.
template <>
struct value_traits<timestamptz> {
  static constexpr unsigned oid = 1184;
  static std::string to_text(const timestamptz& t) { return t.to_string(); }
  static timestamptz from_text(std::string_view s);
  // COPY rows: nothing in it needs escaping.
  static constexpr std::size_t unescaped_size = detail::timestamp_text_size;
  static char* write_unescaped(char* p, const timestamptz& t) noexcept { return t.write(p); }
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/timestamptz.ipp>
// The bodies of <pqscope/timestamptz.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <algorithm>

// #include <pqscope/timestamptz.hpp> (inlined above)

namespace pqscope {

PQSCOPE_DECL timestamptz timestamptz::from_micros_since_2000(std::int64_t micros) {
  // The infinities are values of their own, not the ends of the range.
  if (micros < detail::pg_min_timestamp || micros >= detail::pg_end_timestamp)
    throw conversion_error("timestamptz: " + std::to_string(micros) +
                           " microseconds since 2000 is outside PostgreSQL's range (4714-11-24 00:00:00 BC to "
                           "294276-12-31 23:59:59.999999 UTC); use infinity() or minus_infinity() for those");
  return timestamptz(micros);
}

PQSCOPE_DECL timestamptz timestamptz::from_unix_micros(std::int64_t micros_since_1970) {
  if (micros_since_1970 < detail::min_timestamp_micros)
    throw conversion_error("timestamptz: " + std::to_string(micros_since_1970) +
                           " microseconds since 1970 is before PostgreSQL's earliest timestamp, 4714-11-24 00:00:00 "
                           "BC UTC");
  // No overflow: the subtraction only moves the value toward zero here.
  return from_micros_since_2000(micros_since_1970 - detail::pg_epoch_micros);
}

PQSCOPE_DECL char* timestamptz::write(char* p) const noexcept {
  if (is_finite()) return detail::write_timestamp(p, micros_);
  const std::string_view word = is_infinity() ? "infinity" : "-infinity";
  return std::copy(word.begin(), word.end(), p);
}

PQSCOPE_DECL std::string timestamptz::to_string() const {
  char out[detail::timestamp_text_size];
  return std::string(out, write(out));
}

PQSCOPE_DECL timestamptz value_traits<timestamptz>::from_text(std::string_view s) {
  const detail::timestamp_text t = detail::parse_timestamp(s);
  if (t.infinite > 0) return timestamptz::infinity();
  if (t.infinite < 0) return timestamptz::minus_infinity();
  return timestamptz::from_micros_since_2000(t.micros);
}

}  // namespace pqscope
#endif
// #include <pqscope/enums.hpp>
// A C++ enum mapped to a PostgreSQL enum type in one declaration, beside the enum (in
// its namespace, where argument-dependent lookup finds it):
//
//   enum class mood { sad, ok, happy };
//   constexpr auto pqscope_enum(mood) {
//     return pqscope::enum_labels<mood>({{mood::sad, "sad"}, {mood::ok, "ok"}, {mood::happy, "happy"}});
//   }
//
// The enum then goes wherever a value does (parameters, results, arrays, COPY) as its
// label. Labels are checked when the program is compiled: each 1 to 63 bytes (the
// server's limit), no label or value twice. A label the mapping lacks, read from the
// server, is a conversion_error naming it; a value it lacks, sent, is one too.

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)

namespace pqscope {

template <class E>
struct enum_label {
  E value;
  std::string_view label;
};

template <class E, std::size_t N>
struct enum_mapping {
  enum_label<E> entries[N];

  [[nodiscard]] constexpr const std::string_view* find(E v) const noexcept {
    for (const auto& e : entries)
      if (e.value == v) return &e.label;
    return nullptr;
  }
  [[nodiscard]] constexpr const E* find(std::string_view label) const noexcept {
    for (const auto& e : entries)
      if (e.label == label) return &e.value;
    return nullptr;
  }
};

namespace detail {
// Not constexpr on purpose: reaching it while a mapping is evaluated at compile time
// makes the program ill-formed, with this name in the compiler's message.
inline void enum_mapping_is_invalid(const char* /*why*/) {}
}  // namespace detail

template <class E, std::size_t N>
constexpr enum_mapping<E, N> enum_labels(const enum_label<E> (&entries)[N]) {
  static_assert(std::is_enum_v<E>, "pqscope: enum_labels<E> maps an enum type");
  enum_mapping<E, N> m{};
  for (std::size_t i = 0; i < N; ++i) {
    const std::string_view l = entries[i].label;
    // PostgreSQL's names end at NAMEDATALEN - 1 = 63 bytes.
    if (l.empty() || l.size() > 63) detail::enum_mapping_is_invalid("a label must have 1 to 63 bytes");
    for (std::size_t j = 0; j < i; ++j) {
      if (entries[j].label == l) detail::enum_mapping_is_invalid("a label is mapped twice");
      if (entries[j].value == entries[i].value) detail::enum_mapping_is_invalid("a value is mapped twice");
    }
    m.entries[i] = entries[i];
  }
  return m;
}

namespace detail {
template <class E, class = void>
struct has_enum_mapping : std::false_type {};
template <class E>
struct has_enum_mapping<E, std::void_t<decltype(pqscope_enum(std::declval<E>()))>> : std::true_type {};
}  // namespace detail

template <class E>
struct value_traits<E, std::enable_if_t<std::is_enum_v<E> && detail::has_enum_mapping<E>::value>> {
  // Evaluated once, at compile time: an invalid mapping does not compile.
  static constexpr auto mapping = pqscope_enum(E{});
  // An enum type of the user's has no fixed oid: the server takes the type from the
  // context (a column, a cast such as $1::mood, or $1::mood[] for an array).
  static constexpr unsigned oid = 0;

  static std::string_view to_text(E v) {
    if (const std::string_view* l = mapping.find(v)) return *l;
    throw conversion_error("the enum value " + std::to_string(static_cast<std::underlying_type_t<E>>(v)) +
                           " has no label in its pqscope_enum mapping");
  }
  static E from_text(std::string_view s) {
    if (const E* v = mapping.find(s)) return *v;
    std::string known;
    for (const auto& e : mapping.entries) known += (known.empty() ? "" : ", ") + std::string(e.label);
    throw conversion_error("the label " + detail::quote_value(s) + " is not in the enum's pqscope_enum mapping (" +
                           known + ")");
  }
};

}  // namespace pqscope
// #include <pqscope/result.hpp>
// Query results. result, row and field share ownership of the underlying
// PGresult, so a row or field stays valid after the result object is gone.

#include <cstddef>
#include <array>
#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <libpq-fe.h>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/fields.hpp>
// Rows into structs. One declaration beside a struct (in its namespace, where
// argument-dependent lookup finds it) lists the members a row fills:
//
//   struct order { std::int64_t id; std::string customer; pqscope::numeric total; };
//   PQSCOPE_FIELDS(order, id, customer, total)
//
// Then row.to<order>() fills each member from the column of the same name, and
// row.to<order>(pqscope::by_position) from the columns in the listed order;
// result.to_vector<order>() does every row. Each column's type is checked against the
// member's before a value is read (an int member does not read a text column), and
// every error names the column. Members are read as field::as reads them: a NULL
// needs a std::optional member.

#include <cstddef>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

// #include <pqscope/detail/for_each_macro.hpp>
// PQSCOPE_DETAIL_FOR_EACH(m, a, x1, ..., xn) expands to m(a, x1), m(a, x2), ..., m(a, xn):
// the macro behind PQSCOPE_FIELDS, for up to 64 names. (The count passes one argument
// more than it needs: C++17 wants at least one for the "..." of PQSCOPE_DETAIL_NTH.)

#define PQSCOPE_DETAIL_EXPAND(x) x
#define PQSCOPE_DETAIL_NTH(_1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _13, _14, _15, _16, _17, _18, _19, _20, _21, _22, _23, _24, _25, _26, _27, _28, _29, _30, _31, _32, _33, _34, _35, _36, _37, _38, _39, _40, _41, _42, _43, _44, _45, _46, _47, _48, _49, _50, _51, _52, _53, _54, _55, _56, _57, _58, _59, _60, _61, _62, _63, _64, n, ...) n
#define PQSCOPE_DETAIL_COUNT(...) PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_NTH(__VA_ARGS__, 64, 63, 62, 61, 60, 59, 58, 57, 56, 55, 54, 53, 52, 51, 50, 49, 48, 47, 46, 45, 44, 43, 42, 41, 40, 39, 38, 37, 36, 35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0))
#define PQSCOPE_DETAIL_CAT(a, b) PQSCOPE_DETAIL_CAT_(a, b)
#define PQSCOPE_DETAIL_CAT_(a, b) a##b
#define PQSCOPE_DETAIL_FOR_EACH(m, a, ...) \
  PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_CAT(PQSCOPE_DETAIL_FE_, PQSCOPE_DETAIL_COUNT(__VA_ARGS__))(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_1(m, a, x) m(a, x)
#define PQSCOPE_DETAIL_FE_2(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_1(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_3(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_2(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_4(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_3(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_5(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_4(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_6(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_5(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_7(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_6(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_8(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_7(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_9(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_8(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_10(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_9(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_11(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_10(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_12(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_11(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_13(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_12(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_14(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_13(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_15(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_14(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_16(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_15(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_17(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_16(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_18(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_17(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_19(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_18(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_20(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_19(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_21(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_20(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_22(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_21(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_23(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_22(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_24(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_23(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_25(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_24(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_26(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_25(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_27(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_26(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_28(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_27(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_29(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_28(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_30(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_29(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_31(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_30(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_32(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_31(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_33(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_32(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_34(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_33(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_35(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_34(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_36(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_35(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_37(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_36(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_38(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_37(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_39(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_38(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_40(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_39(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_41(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_40(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_42(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_41(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_43(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_42(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_44(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_43(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_45(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_44(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_46(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_45(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_47(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_46(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_48(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_47(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_49(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_48(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_50(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_49(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_51(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_50(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_52(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_51(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_53(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_52(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_54(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_53(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_55(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_54(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_56(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_55(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_57(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_56(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_58(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_57(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_59(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_58(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_60(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_59(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_61(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_60(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_62(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_61(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_63(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_62(m, a, __VA_ARGS__))
#define PQSCOPE_DETAIL_FE_64(m, a, x, ...) m(a, x), PQSCOPE_DETAIL_EXPAND(PQSCOPE_DETAIL_FE_63(m, a, __VA_ARGS__))

namespace pqscope {

// Selects the positional mapping: row.to<T>(pqscope::by_position).
struct by_position_t {
  explicit constexpr by_position_t() = default;
};
inline constexpr by_position_t by_position{};

namespace detail {

template <class T, class M>
struct member_field {
  using type = M;
  std::string_view name;
  M T::*member;
};

template <class T, class M>
constexpr member_field<T, M> make_member_field(std::string_view name, M T::*member) noexcept {
  return {name, member};
}

template <class... Fields>
struct field_list {
  std::string_view type_name;
  std::tuple<Fields...> members;
};

template <class... Fields>
constexpr field_list<Fields...> make_field_list(std::string_view type_name, Fields... f) noexcept {
  return {type_name, std::tuple<Fields...>(f...)};
}

template <class T, class = void>
struct has_fields : std::false_type {};
template <class T>
struct has_fields<T, std::void_t<decltype(pqscope_fields(static_cast<const T*>(nullptr)))>> : std::true_type {};

// Whether a listed member is a view into the result (row_of_temporary refuses those).
template <class M>
constexpr bool is_view_member = std::is_same_v<M, std::string_view> || std::is_same_v<M, std::optional<std::string_view>>;
template <class List>
struct list_holds_view : std::false_type {};
template <class... Fields>
struct list_holds_view<field_list<Fields...>> : std::bool_constant<(is_view_member<typename Fields::type> || ...)> {};
template <class T, class = void>
struct fields_hold_view : std::false_type {};
template <class T>
struct fields_hold_view<T, std::enable_if_t<has_fields<T>::value>>
    : list_holds_view<decltype(pqscope_fields(static_cast<const T*>(nullptr)))> {};

template <class T>
constexpr auto fields_of() {
  static_assert(has_fields<T>::value,
                "pqscope: row.to<T>() needs the members of T listed beside it: PQSCOPE_FIELDS(T, member, ...)");
  return pqscope_fields(static_cast<const T*>(nullptr));
}

}  // namespace detail
}  // namespace pqscope

#define PQSCOPE_DETAIL_MEMBER_FIELD(Type, member) ::pqscope::detail::make_member_field(#member, &Type::member)

// Lists Type's members for row.to<Type>(), in the order by_position reads them.
#define PQSCOPE_FIELDS(Type, ...)                                                                            \
  [[maybe_unused]] constexpr auto pqscope_fields(const Type*) noexcept {                                     \
    return ::pqscope::detail::make_field_list(                                                               \
        #Type, PQSCOPE_DETAIL_FOR_EACH(PQSCOPE_DETAIL_MEMBER_FIELD, Type, __VA_ARGS__));                     \
  }
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

class row;

namespace detail {
class row_of_temporary;
class field_of_temporary;
// Values that point into the text they were read from rather than own a copy.
template <class T>
struct is_text_view : std::false_type {};
template <>
struct is_text_view<std::string_view> : std::true_type {};
template <>
struct is_text_view<std::optional<std::string_view>> : std::true_type {};

struct pg_result_deleter {
  void operator()(PGresult* r) const noexcept { PQclear(r); }
};
using result_handle = std::shared_ptr<PGresult>;
PQSCOPE_DECL result_handle adopt(PGresult* r);
}  // namespace detail

class result;

namespace detail {
// The answer to a statement that waits in a batched attempt's queue.
class deferred_answer {
 public:
  deferred_answer() = default;
  deferred_answer(const deferred_answer&) = delete;
  deferred_answer& operator=(const deferred_answer&) = delete;
  deferred_answer(deferred_answer&&) = delete;
  deferred_answer& operator=(deferred_answer&&) = delete;
  virtual ~deferred_answer() = default;
  // Sends what is queued if it has not gone out yet, then returns the answer or
  // throws what the statement raised.
  virtual result wait() = 0;
};
}  // namespace detail

class field {
 public:
  [[nodiscard]] bool is_null() const { return PQgetisnull(res_.get(), row_, col_) != 0; }
  // The text as the server sent it; empty for NULL.
  [[nodiscard]] std::string_view text() const {
    return {PQgetvalue(res_.get(), row_, col_), static_cast<std::size_t>(PQgetlength(res_.get(), row_, col_))};
  }
  [[nodiscard]] std::string_view name() const { return PQfname(res_.get(), col_); }
  [[nodiscard]] std::size_t row_index() const noexcept { return static_cast<std::size_t>(row_); }
  [[nodiscard]] std::size_t column_index() const noexcept { return static_cast<std::size_t>(col_); }

  // Converts the value; std::optional<T> reads NULL as std::nullopt. A NULL read
  // as a non-optional type, or text that does not convert, throws conversion_error.
  template <class T>
  [[nodiscard]] T as() const {
    if constexpr (detail::is_optional<T>::value) {
      if (is_null()) return std::nullopt;
      return T(as<typename T::value_type>());
    } else {
      static_assert(detail::has_from_text<T>::value,
                    "pqscope: no value_traits<T>::from_text for this type; specialize "
                    "pqscope::value_traits<T> (see params.hpp)");
      if (is_null())
        throw conversion_error("column \"" + std::string(name()) + "\" of row " + std::to_string(row_) +
                               " is NULL; read it as std::optional<T>");
      try {
        if constexpr (detail::has_delimited_from_text<T>::value)  // arrays: box[] separates with ';'
          return value_traits<T>::from_text(text(), detail::array_delimiter(PQftype(res_.get(), col_)));
        else
          return value_traits<T>::from_text(text());
      } catch (const conversion_error& e) {
        throw conversion_error(std::string(e.what()) + " (column \"" + std::string(name()) + "\" of row " +
                               std::to_string(row_) + ")");
      }
    }
  }

 private:
  friend class row;
  field(detail::result_handle r, int row, int col) : res_(std::move(r)), row_(row), col_(col) {}
  detail::result_handle res_;
  int row_, col_;
};

// The answer to one statement. In a batched attempt (transaction_options::batch)
// execute() returns it before the statement is sent: the first use of any member
// sends everything queued and waits, and throws if the statement failed.
class result {
 public:
  class const_iterator;

  result() = default;
  explicit result(detail::result_handle r) : res_(std::move(r)) {}
  explicit result(std::shared_ptr<detail::deferred_answer> pending) : pending_(std::move(pending)) {}

  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] bool empty() const { return size() == 0; }
  [[nodiscard]] std::size_t columns() const;
  [[nodiscard]] std::string_view column_name(std::size_t i) const&;
  [[nodiscard]] std::string column_name(std::size_t i) const&& { return std::string(column_name(i)); }
  // Exact, case-sensitive match on the name the server sent; usage_error if absent.
  [[nodiscard]] std::size_t column_index(std::string_view name) const;
  // Rows inserted, updated, deleted, ... by the command; 0 for commands that report none.
  [[nodiscard]] std::uint64_t affected_rows() const;
  // The command tag, e.g. "INSERT 0 1".
  [[nodiscard]] std::string_view command() const& { return get() != nullptr ? PQcmdStatus(res_.get()) : ""; }

  [[nodiscard]] row operator[](std::size_t i) const&;
  [[nodiscard]] const_iterator begin() const&;
  [[nodiscard]] const_iterator end() const&;

  // Every row as a T listed with PQSCOPE_FIELDS (fields.hpp): by column name, or by
  // position. The columns are matched and their types checked once, before any row.
  template <class T>
  [[nodiscard]] std::vector<T> to_vector() const& {
    return collect<T>(false);
  }
  template <class T>
  [[nodiscard]] std::vector<T> to_vector(by_position_t) const& {
    return collect<T>(true);
  }
  // From a temporary result, members that view its memory would dangle: refused.
  template <class T>
  [[nodiscard]] std::vector<T> to_vector() const&& {
    static_assert(!detail::fields_hold_view<T>::value,
                  "pqscope: to_vector<T>() of a temporary result, where T has a std::string_view member, would "
                  "point into memory freed at the end of this expression; keep the result in a variable first");
    return collect<T>(false);
  }
  template <class T>
  [[nodiscard]] std::vector<T> to_vector(by_position_t) const&& {
    static_assert(!detail::fields_hold_view<T>::value,
                  "pqscope: to_vector<T>() of a temporary result, where T has a std::string_view member, would "
                  "point into memory freed at the end of this expression; keep the result in a variable first");
    return collect<T>(true);
  }

  // A temporary result (conn.execute(...)) is freed at the end of the full expression,
  // so nothing it hands out may point into it: strings are copies, rows and fields
  // refuse string_view at compile time (detail::row_of_temporary), and iterators,
  // which would point to the result object itself, are refused.
  [[nodiscard]] std::string command() const&& { return std::string(command()); }
  [[nodiscard]] detail::row_of_temporary operator[](std::size_t i) const&&;
  const_iterator begin() const&& = delete;
  const_iterator end() const&& = delete;

  [[nodiscard]] PGresult* native_handle() const { return get(); }

 private:
  friend class row;
  template <class T>
  std::vector<T> collect(bool by_position) const;
  // The answer, once it is here; waits for it first if the statement is queued.
  PGresult* get() const;
  void check_column(std::size_t i) const;
  mutable detail::result_handle res_;
  mutable std::shared_ptr<detail::deferred_answer> pending_;
};

class row {
 public:
  [[nodiscard]] std::size_t size() const { return res_.columns(); }
  [[nodiscard]] std::size_t index() const noexcept { return static_cast<std::size_t>(row_); }
  [[nodiscard]] field operator[](std::size_t col) const {
    res_.check_column(col);
    return field(res_.res_, row_, static_cast<int>(col));
  }
  [[nodiscard]] field operator[](std::string_view name) const { return (*this)[res_.column_index(name)]; }

  // Converts the whole row: auto [id, name] = row.as<int, std::string>();
  template <class... Ts>
  [[nodiscard]] std::tuple<Ts...> as() const {
    if (sizeof...(Ts) != size())
      throw usage_error("row.as<...>() asked for " + std::to_string(sizeof...(Ts)) + " column(s) but the row has " +
                        std::to_string(size()));
    return as_impl<Ts...>(std::index_sequence_for<Ts...>{});
  }

  // The row as a T listed with PQSCOPE_FIELDS (fields.hpp): each member from the column
  // of its name (every column filling one member), or by position. Column types are
  // checked against the members' first; errors name the column.
  template <class T>
  [[nodiscard]] T to() const;
  template <class T>
  [[nodiscard]] T to(by_position_t) const;

 private:
  friend class result;
  row(result r, int i) : res_(std::move(r)), row_(i) {}
  template <class T, std::size_t N>
  T fill(const std::array<int, N>& columns) const;
  template <class... Ts, std::size_t... I>
  std::tuple<Ts...> as_impl(std::index_sequence<I...>) const {
    return std::tuple<Ts...>((*this)[I].template as<Ts>()...);
  }
  result res_;
  int row_;
};

class result::const_iterator {
 public:
  using iterator_category = std::forward_iterator_tag;
  using value_type = row;
  using difference_type = std::ptrdiff_t;
  using pointer = void;
  using reference = row;

  const_iterator() = default;
  row operator*() const { return (*res_)[i_]; }
  const_iterator& operator++() {
    ++i_;
    return *this;
  }
  const_iterator operator++(int) {
    auto old = *this;
    ++i_;
    return old;
  }
  friend bool operator==(const const_iterator& a, const const_iterator& b) { return a.i_ == b.i_; }
  friend bool operator!=(const const_iterator& a, const const_iterator& b) { return a.i_ != b.i_; }

 private:
  friend class result;
  const_iterator(const result* r, std::size_t i) : res_(r), i_(i) {}
  const result* res_ = nullptr;
  std::size_t i_ = 0;
};

inline row result::operator[](std::size_t i) const& {
  if (i >= size())
    throw usage_error("row index " + std::to_string(i) + " is out of range: the result has " + std::to_string(size()) +
                      " row(s)");
  return row(*this, static_cast<int>(i));
}
inline result::const_iterator result::begin() const& { return const_iterator(this, 0); }
inline result::const_iterator result::end() const& { return const_iterator(this, size()); }

namespace detail {
// A field reached from a temporary result: conn.execute(...)[0][0]. It shares the
// result, so kept in a variable it is a field like any other; used as a temporary
// itself it is the result's last owner, freed at the end of the full expression, so
// as<std::string_view>() would dangle (a heap use-after-free) and is refused.
class field_of_temporary : public field {
 public:
  explicit field_of_temporary(field f) : field(std::move(f)) {}

  [[nodiscard]] std::string_view text() const& { return field::text(); }
  [[nodiscard]] std::string text() const&& { return std::string(field::text()); }
  [[nodiscard]] std::string_view name() const& { return field::name(); }
  [[nodiscard]] std::string name() const&& { return std::string(field::name()); }
  template <class T>
  [[nodiscard]] T as() const& {
    return field::as<T>();
  }
  template <class T>
  [[nodiscard]] T as() const&& {
    static_assert(!is_text_view<T>::value,
                  "pqscope: as<std::string_view>() on a field of a temporary result would point into memory freed "
                  "at the end of this expression; keep the result in a variable first (auto r = "
                  "conn.execute(...); r[0][0].as<std::string_view>()), or read a std::string");
    return field::as<T>();
  }
};

// A row of a temporary result: conn.execute(...)[0]. The same rule as field_of_temporary.
class row_of_temporary : public row {
 public:
  explicit row_of_temporary(row r) : row(std::move(r)) {}

  [[nodiscard]] field operator[](std::size_t col) const& { return row::operator[](col); }
  [[nodiscard]] field operator[](std::string_view name) const& { return row::operator[](name); }
  [[nodiscard]] field_of_temporary operator[](std::size_t col) const&& {
    return field_of_temporary(row::operator[](col));
  }
  [[nodiscard]] field_of_temporary operator[](std::string_view name) const&& {
    return field_of_temporary(row::operator[](name));
  }
  template <class... Ts>
  [[nodiscard]] std::tuple<Ts...> as() const& {
    return row::as<Ts...>();
  }
  template <class... Ts>
  [[nodiscard]] std::tuple<Ts...> as() const&& {
    static_assert(!(is_text_view<Ts>::value || ...),
                  "pqscope: as<std::string_view>() on a row of a temporary result would point into memory freed at "
                  "the end of this expression; keep the result in a variable first (auto r = conn.execute(...); "
                  "r[0].as<...>()), or read a std::string");
    return row::as<Ts...>();
  }
  template <class T>
  [[nodiscard]] T to() const& {
    return row::to<T>();
  }
  template <class T>
  [[nodiscard]] T to(by_position_t p) const& {
    return row::to<T>(p);
  }
  template <class T>
  [[nodiscard]] T to() const&& {
    static_assert(!fields_hold_view<T>::value, "pqscope: to<T>() of a row of a temporary result, where T has a std::string_view member, would point "
                  "into memory freed at the end of this expression; keep the result in a variable first, or make "
                  "the member a std::string");
    return row::to<T>();
  }
  template <class T>
  [[nodiscard]] T to(by_position_t p) const&& {
    static_assert(!fields_hold_view<T>::value, "pqscope: to<T>() of a row of a temporary result, where T has a std::string_view member, would point "
                  "into memory freed at the end of this expression; keep the result in a variable first, or make "
                  "the member a std::string");
    return row::to<T>(p);
  }
};
}  // namespace detail

inline detail::row_of_temporary result::operator[](std::size_t i) const&& {
  return detail::row_of_temporary((*this)[i]);
}

}  // namespace pqscope

// #include <pqscope/impl/row_to.hpp>
// The template bodies of row.to<T>() and result.to_vector<T>() (result.hpp): members
// listed with PQSCOPE_FIELDS (fields.hpp) filled from a row.

#include <array>
#include <cstddef>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

// #include <pqscope/detail/column_types.hpp>
// Whether a column's type can fill a member of a given type (row.to<T>()), and the
// names that an error about it shows.

#include <cstddef>
#include <string>
#include <string_view>

#include <libpq-fe.h>

// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// member_oid is value_traits<M>::oid (0: the member reads any column's text, as
// std::string and enums do). Integers read any integer column (the value is
// range-checked when read), floating point and numeric any number column, a time point
// timestamp as well as timestamptz, json and jsonb each other; arrays by their elements.
PQSCOPE_DECL bool column_type_fits(unsigned member_oid, unsigned column_oid) noexcept;

// "integer", "text", ... for the built-in types pqscope knows; "type oid N" otherwise.
PQSCOPE_DECL std::string type_name(unsigned oid);

// conversion_error unless column_type_fits: names the column, its type, the member and its type.
PQSCOPE_DECL void check_column_type(unsigned member_oid, unsigned column_oid, std::string_view column,
                                    std::string_view type, std::string_view member);

// For each of the n members (names and oids), the column that fills it, into out:
// the column of the same name, or the i-th with by_position. usage_error when a member
// has no column, a column no member or two columns one name (or the counts differ,
// by position); then check_column_type for each.
PQSCOPE_DECL void map_columns(const PGresult* r, std::string_view type, const std::string_view* members,
                              const unsigned* member_oids, std::size_t n, bool by_position, int* out);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/column_types.ipp>
// The bodies of <pqscope/detail/column_types.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <array>
#include <cstddef>

// #include <pqscope/detail/column_types.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)

namespace pqscope::detail {

constexpr bool is_integer_type(unsigned oid) noexcept { return oid == 20 || oid == 21 || oid == 23; }
constexpr bool is_number_type(unsigned oid) noexcept {
  return is_integer_type(oid) || oid == 700 || oid == 701 || oid == 1700;
}

// The element type of each array type array_oid() knows (params.hpp), found once at
// compile time by running array_oid() over every element oid below 4000.
constexpr unsigned oid_scan_end = 4000;
constexpr std::size_t known_array_types() noexcept {
  std::size_t n = 0;
  for (unsigned e = 1; e < oid_scan_end; ++e) n += array_oid(e) != 0 ? 1 : 0;
  return n;
}
struct array_and_element {
  unsigned array, element;
};
constexpr std::array<array_and_element, known_array_types()> array_types = [] {
  std::array<array_and_element, known_array_types()> t{};
  std::size_t n = 0;
  for (unsigned e = 1; e < oid_scan_end; ++e)
    if (const unsigned a = array_oid(e); a != 0) t[n++] = {a, e};
  return t;
}();

constexpr unsigned array_element_oid(unsigned array) noexcept {
  for (const array_and_element& t : array_types)
    if (t.array == array) return t.element;
  return 0;
}

PQSCOPE_DECL bool column_type_fits(unsigned member_oid, unsigned column_oid) noexcept {
  if (member_oid == 0 || member_oid == column_oid) return true;
  if (const unsigned m = array_element_oid(member_oid); m != 0) {
    const unsigned c = array_element_oid(column_oid);
    return c != 0 && column_type_fits(m, c);
  }
  switch (member_oid) {
    case 20:
    case 21:
    case 23: return is_integer_type(column_oid);
    case 700:
    case 701:
    case 1700: return is_number_type(column_oid);
    case 1184: return column_oid == 1114;
    case 114: return column_oid == 3802;
    case 3802: return column_oid == 114;
    default: return false;
  }
}

PQSCOPE_DECL std::string type_name(unsigned oid) {
  if (const unsigned e = array_element_oid(oid); e != 0) return type_name(e) + "[]";
  switch (oid) {
    case 16: return "boolean";
    case 17: return "bytea";
    case 20: return "bigint";
    case 21: return "smallint";
    case 23: return "integer";
    case 25: return "text";
    case 114: return "json";
    case 700: return "real";
    case 701: return "double precision";
    case 1042: return "character";
    case 1043: return "character varying";
    case 1082: return "date";
    case 1114: return "timestamp without time zone";
    case 1184: return "timestamp with time zone";
    case 1186: return "interval";
    case 1700: return "numeric";
    case 2950: return "uuid";
    case 3802: return "jsonb";
    default: return "type oid " + std::to_string(oid);
  }
}

PQSCOPE_DECL void check_column_type(unsigned member_oid, unsigned column_oid, std::string_view column,
                                    std::string_view type, std::string_view member) {
  if (column_type_fits(member_oid, column_oid)) return;
  throw conversion_error("column \"" + std::string(column) + "\" is " + type_name(column_oid) + ", which " +
                         std::string(type) + "::" + std::string(member) + " (sent as " + type_name(member_oid) +
                         ") does not read; cast the column in the query or change the member's type");
}


PQSCOPE_DECL void map_columns(const PGresult* r, std::string_view type, const std::string_view* members,
                              const unsigned* member_oids, std::size_t n, bool by_position, int* out) {
  const int columns = r != nullptr ? PQnfields(r) : 0;
  std::string listed;
  for (std::size_t i = 0; i < n; ++i) listed += (i ? ", " : "") + std::string(members[i]);
  const auto column_list = [&] {
    std::string names;
    for (int c = 0; c < columns; ++c) names += (c ? ", " : "") + std::string(PQfname(r, c));
    return names;
  };
  const std::string who = "row.to<" + std::string(type) + ">()";
  if (by_position) {
    if (static_cast<std::size_t>(columns) != n)
      throw usage_error(who + " by position reads " + std::to_string(n) + " column(s) (" + listed +
                        ") but the result has " + std::to_string(columns) + " (" + column_list() + ")");
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<int>(i);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      out[i] = -1;
      for (int c = 0; c < columns; ++c) {
        if (members[i] != PQfname(r, c)) continue;
        if (out[i] >= 0)
          throw usage_error(who + ": the result has two columns named \"" + std::string(members[i]) +
                            "\"; give them distinct names (AS) or read by position");
        out[i] = c;
      }
      if (out[i] < 0)
        throw usage_error(who + ": no column named \"" + std::string(members[i]) + "\" for " + std::string(type) +
                          "::" + std::string(members[i]) + " (columns: " + column_list() + ")");
    }
    const auto unused = [&](int c) {
      return usage_error(who + ": the column \"" + std::string(PQfname(r, c)) + "\" fills no member (" +
                         std::string(type) + " lists " + listed + "); leave it out of the query, or read by position");
    };
    for (int c = 0; c < columns; ++c) {
      bool used = false;
      for (std::size_t i = 0; i < n && !used; ++i) used = out[i] == c;
      if (!used) throw unused(c);
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    check_column_type(member_oids[i], PQftype(r, out[i]), PQfname(r, out[i]), type, members[i]);
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/fields.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)

namespace pqscope {
namespace detail {

// What the check compares a column's type with: the member's parameter type.
template <class M>
constexpr unsigned member_oid() noexcept {
  return traits_oid<typename optional_inner<M>::type>::value;
}

// The column of each listed member of T in r, matched and type-checked (map_columns).
template <class T>
auto plan_columns(const PGresult* r, bool by_position) {
  static_assert(std::is_default_constructible_v<T>,
                "pqscope: row.to<T>() fills the members of a default-constructed T");
  constexpr auto list = fields_of<T>();
  constexpr std::size_t n = std::tuple_size_v<decltype(list.members)>;
  const auto names = std::apply([](const auto&... f) { return std::array<std::string_view, n>{f.name...}; },
                                list.members);
  const auto oids = std::apply(
      [](const auto&... f) { return std::array<unsigned, n>{member_oid<typename std::decay_t<decltype(f)>::type>()...}; },
      list.members);
  std::array<int, n> columns{};
  map_columns(r, list.type_name, names.data(), oids.data(), n, by_position, columns.data());
  return columns;
}

}  // namespace detail

template <class T, std::size_t N>
T row::fill(const std::array<int, N>& columns) const {
  constexpr auto list = detail::fields_of<T>();
  T out{};
  std::size_t i = 0;
  std::apply(
      [&](const auto&... f) {
        ((out.*(f.member) =
              (*this)[static_cast<std::size_t>(columns[i++])].template as<typename std::decay_t<decltype(f)>::type>()),
         ...);
      },
      list.members);
  return out;
}

template <class T>
T row::to() const {
  return fill<T>(detail::plan_columns<T>(res_.get(), false));
}

template <class T>
T row::to(by_position_t) const {
  return fill<T>(detail::plan_columns<T>(res_.get(), true));
}

template <class T>
std::vector<T> result::collect(bool by_position) const {
  const auto columns = detail::plan_columns<T>(get(), by_position);
  std::vector<T> out;
  out.reserve(size());
  for (std::size_t i = 0; i < size(); ++i) out.push_back((*this)[i].template fill<T>(columns));
  return out;
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/result.ipp>
// The bodies of <pqscope/result.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/result.hpp> (inlined above)

namespace pqscope::detail {

PQSCOPE_DECL result_handle adopt(PGresult* r) { return result_handle(r, pg_result_deleter{}); }

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL std::size_t result::size() const {
  return get() != nullptr ? static_cast<std::size_t>(PQntuples(res_.get())) : 0;
}

PQSCOPE_DECL std::size_t result::columns() const {
  return get() != nullptr ? static_cast<std::size_t>(PQnfields(res_.get())) : 0;
}

PQSCOPE_DECL std::string_view result::column_name(std::size_t i) const& {
  check_column(i);
  return PQfname(res_.get(), static_cast<int>(i));
}

PQSCOPE_DECL std::size_t result::column_index(std::string_view name) const {
  for (std::size_t i = 0; i < columns(); ++i)
    if (name == PQfname(res_.get(), static_cast<int>(i))) return i;
  std::string names;
  for (std::size_t i = 0; i < columns(); ++i)
    names += (i ? ", " : "") + std::string(PQfname(res_.get(), static_cast<int>(i)));
  throw usage_error("no column named \"" + std::string(name) + "\" in the result (columns: " + names + ")");
}

PQSCOPE_DECL std::uint64_t result::affected_rows() const {
  if (get() == nullptr) return 0;
  const char* n = PQcmdTuples(res_.get());
  return *n ? std::stoull(n) : 0;
}

PQSCOPE_DECL PGresult* result::get() const {
  if (pending_) {
    result r = pending_->wait();
    res_ = std::move(r.res_);
    pending_.reset();
  }
  return res_.get();
}

PQSCOPE_DECL void result::check_column(std::size_t i) const {
  if (i >= columns())
    throw usage_error("column index " + std::to_string(i) + " is out of range: the result has " +
                      std::to_string(columns()) + " column(s)");
}

}  // namespace pqscope
#endif
// #include <pqscope/notification.hpp>
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

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)

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
// #include <pqscope/driver.hpp>
// The driver: the only part of pqscope that talks to the network.
//
// basic_connection<Driver> works with any type that offers the members of
// libpq_driver below: open(), close(), abandon(), is_open(), exchange(),
// application_name() and native_handle(); adopt() (connection::borrow), and the
// calls outside the pipeline (copy_*, script), only where they are used.
// exchange() is one round trip: it sends
// a batch of statements followed by one sync and reads every answer. A driver
// that wraps libpq_driver can count, log or delay; a scripted driver (see
// tests/support) replays answers with no server at all.
//
// The bodies: impl/driver.ipp (connecting, exchange), impl/driver_wait.ipp (waits,
// deadlines, cancel requests), impl/driver_copy.ipp (COPY and scripts). What the
// asio front end does the same way lives in detail/libpq_connect.hpp (conninfo,
// defaults), detail/libpq_reply.hpp (reading answers) and detail/middleware.hpp.
//
// Time bounds (see connection_options::network_timeout and the README's
// "Timeouts" section): connecting is bounded by default (connect_timeout, TCP
// keepalives and tcp_user_timeout are added to a conninfo that does not set
// them); with a network_timeout each round trip is bounded too: when it expires
// a cancel request is sent and a grace is waited for the server's answer, after
// which the connection is closed and the batch reported lost.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <libpq-fe.h>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/notification.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/reply.hpp>
// What a driver is given and what it gives back: a batch of statements goes out
// in one round trip, and a batch_reply comes back with one reply per statement and
// the session's state after them. The scope machine plans the batches and applies
// the replies; a driver (driver.hpp, asio/link.hpp, a test's scripted driver) only
// carries them.

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/result.hpp> (inlined above)

namespace pqscope {

// What the server says about the session after a batch (PQtransactionStatus).
enum class server_state { idle, in_transaction, failed_transaction, unknown };

struct statement {
  const char* sql = nullptr;  // NUL-terminated
  int n_params = 0;
  const char* const* values = nullptr;  // n_params entries; nullptr means NULL
  const unsigned* types = nullptr;      // n_params OIDs or nullptr; 0 lets the server infer
  // nullptr: an unnamed statement (Parse, Bind, Execute every time). Otherwise the
  // prepared statement of that name is bound and executed; with `parse`, `sql` is
  // first prepared under it in the same batch (one round trip all the same). A name
  // is never parsed twice on a session: PgBouncer disconnects a client that does.
  const char* name = nullptr;
  bool parse = false;
};

// What the server reported about a failed statement.
struct reply_error {
  std::string sqlstate, message, detail, hint;
  std::size_t position = 0;  // 1-based character, 0 if none
  std::string schema, table, column, datatype, constraint;
  // Not the server's refusal: the statement broke the protocol pqscope speaks
  // (a COPY that reached the server through execute()). Raised as usage_error.
  bool misuse = false;
};

struct reply {
  enum class status { ok, error, skipped };  // skipped: not run because an earlier statement failed
  status st = status::skipped;
  result res;           // status::ok
  // status::ok: the command tag (e.g. "COMMIT" or "INSERT 0 1") where `res` has
  // none to give, as from a driver without PGresults; libpq's drivers leave it
  // empty. Read it with tag().
  std::string command;
  // status::error. Out of line: a batch's replies are made for every statement,
  // and few statements fail.
  std::shared_ptr<const reply_error> error;
  // statement::parse: the server accepted the Parse, so the name now exists on the
  // session (whatever became of the execution behind it).
  bool parsed = false;
  [[nodiscard]] const reply_error& failure() const noexcept {
    static const reply_error none;
    return error ? *error : none;
  }
  // The command tag: `command` if the driver set it, else the result's own.
  [[nodiscard]] std::string_view tag() const { return command.empty() ? res.command() : std::string_view(command); }
  void clear() noexcept {
    st = status::skipped;
    res = result();
    command.clear();
    error.reset();
    parsed = false;
  }
};

struct batch_reply {
  std::vector<reply> replies;  // one per statement, in order
  bool lost = false;           // the connection died; replies past the loss are `skipped`
  std::string lost_message;
  server_state state = server_state::unknown;
  // Set when the session was idle before the batch, no statement in it opens a
  // transaction, and it ended inside one anyway: what opened it, when the driver
  // can tell (e.g. Pgpool-II in raw mode), else empty. For the error the scope
  // machine raises about a transaction no scope owns.
  std::string diagnostic;

  // Empty again, for `n` statements, keeping the memory (libpq_driver::exchange).
  void clear(std::size_t n) {
    replies.resize(n);
    for (reply& r : replies) r.clear();
    lost = false;
    lost_message.clear();
    state = server_state::unknown;
    diagnostic.clear();
  }
};

}  // namespace pqscope
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/libpq_connect.hpp>
// Connecting with libpq, as both front ends do it (driver.hpp blocks, asio/link.hpp
// does not): the conninfo checked before anything is tried, the time bounds added
// to a conninfo that sets none, and what a connection says about itself after.
// Passwords never reach a message: see conninfo_redaction.hpp.

#include <chrono>
#include <string>
#include <vector>

#include <libpq-fe.h>

// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/conninfo_redaction.hpp>
// Passwords never reach a message pqscope makes, nor a conninfo() accessor.
//
// libpq quotes the part of a malformed conninfo it could not read (a password with a
// bad %-escape; a whole URI with an unclosed IPv6 bracket), so every message made
// while checking a conninfo or connecting with it goes through redact(), and the
// conninfo() accessors return redacted_conninfo(). Both front ends (the blocking
// driver and the Asio link) call these; nothing else builds such messages.
//
// The scan is lenient on purpose: the strings whose errors quote a password are the
// malformed ones, which PQconninfoParse refuses to take apart for us.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// One secret value in a conninfo: where it is written (quotes and escapes included)
// and the texts a message might show of it.
struct conninfo_secret {
  std::size_t begin = 0, end = 0;
  std::vector<std::string> forms;  // as written, as libpq reads it, and pieces of it
};

PQSCOPE_DECL std::vector<conninfo_secret> conninfo_secrets(std::string_view conninfo);
// The conninfo with each password (password, sslpassword) replaced by ***; the same
// string when it has none.
PQSCOPE_DECL std::string redacted_conninfo(std::string_view conninfo);
// The message with the conninfo (whole, as libpq quotes a bad URI) and every form of
// its passwords replaced. A short password may blank out more than itself: that is
// the price of never showing it.
PQSCOPE_DECL std::string redact(std::string message, std::string_view conninfo);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/conninfo_redaction.ipp>
// The bodies of <pqscope/detail/conninfo_redaction.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/conninfo_redaction.hpp> (inlined above)

#include <algorithm>  // the function bodies only

namespace pqscope::detail {

namespace redaction {
inline bool is_secret_key(std::string_view k) noexcept { return k == "password" || k == "sslpassword"; }
inline bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
inline int hex(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
// %XX decoded; a malformed escape is kept as it is (libpq would refuse it, and quote it raw).
inline std::string percent_decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
      out += static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}
inline void add_form(conninfo_secret& s, std::string f) {
  if (!f.empty() && std::find(s.forms.begin(), s.forms.end(), f) == s.forms.end()) s.forms.push_back(std::move(f));
}
inline void replace_all(std::string& text, std::string_view what, std::string_view with) {
  if (what.empty()) return;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size()))
    text.replace(at, what.size(), with);
}
}  // namespace redaction

PQSCOPE_DECL std::vector<conninfo_secret> conninfo_secrets(std::string_view s) {
  std::vector<conninfo_secret> out;
  std::size_t start = 0;
  for (std::string_view prefix : {"postgresql://", "postgres://"})
    if (s.substr(0, prefix.size()) == prefix) start = prefix.size();
  if (start != 0) {
    // URI. libpq takes user[:password] up to the first '@' before any '/'; a user who
    // left an '@' or '/' unescaped in the password meant the last '@' before the query,
    // and libpq then quotes pieces of it as host, port or database: cover both readings.
    const std::size_t query = s.find('?', start);
    const std::size_t at = s.substr(0, query).rfind('@');
    std::size_t after_userinfo = start;
    if (at != std::string_view::npos && at >= start) {
      after_userinfo = at + 1;
      const std::size_t colon = s.find(':', start);
      if (colon < at) {
        conninfo_secret sec;
        sec.begin = colon + 1;
        sec.end = at;
        const std::string_view raw = s.substr(sec.begin, sec.end - sec.begin);
        redaction::add_form(sec, std::string(raw));
        redaction::add_form(sec, redaction::percent_decoded(raw));
        for (std::size_t b = 0, e = 0; b <= raw.size(); b = e + 1) {
          e = std::min(raw.find_first_of("@/?", b), raw.size());
          redaction::add_form(sec, std::string(raw.substr(b, e - b)));
          redaction::add_form(sec, redaction::percent_decoded(raw.substr(b, e - b)));
        }
        if (!sec.forms.empty()) out.push_back(std::move(sec));
      }
    }
    // Query parameters: ...?password=pw&sslpassword=pw2
    const std::size_t q = s.find('?', after_userinfo);
    for (std::size_t b = q == std::string_view::npos ? s.size() : q + 1; b < s.size();) {
      const std::size_t e = std::min(s.find('&', b), s.size());
      const std::string_view param = s.substr(b, e - b);
      const std::size_t eq = param.find('=');
      const bool secret = eq != std::string_view::npos &&
                          redaction::is_secret_key(redaction::percent_decoded(param.substr(0, eq)));
      if (secret) {
        conninfo_secret sec;
        sec.begin = b + eq + 1;
        sec.end = e;
        const std::string_view raw = param.substr(eq + 1);
        redaction::add_form(sec, std::string(raw));
        redaction::add_form(sec, redaction::percent_decoded(raw));
        const std::size_t first = raw.find_first_not_of('=');  // password==pw is refused, quoting pieces
        if (first != std::string_view::npos) {
          redaction::add_form(sec, std::string(raw.substr(first)));
          redaction::add_form(sec, redaction::percent_decoded(raw.substr(first)));
        }
        if (!sec.forms.empty()) out.push_back(std::move(sec));
      }
      b = e + 1;
    }
    return out;
  }
  // key=value pairs, read as libpq's conninfo_parse reads them: a key ends at '=' or
  // white space; a value is 'quoted' (backslash escapes anything, an unclosed quote runs
  // to the end) or runs to white space (backslash escapes the next character).
  std::size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && redaction::is_space(s[i])) ++i;
    const std::size_t key_begin = i;
    while (i < s.size() && s[i] != '=' && !redaction::is_space(s[i])) ++i;
    const std::string_view key = s.substr(key_begin, i - key_begin);
    while (i < s.size() && redaction::is_space(s[i])) ++i;
    if (i >= s.size() || s[i] != '=') continue;  // malformed: libpq names the key only
    ++i;
    while (i < s.size() && redaction::is_space(s[i])) ++i;
    const std::size_t value_begin = i;
    std::string value;
    if (i < s.size() && s[i] == '\'') {
      for (++i; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) {
          value += s[++i];
        } else if (s[i] == '\'') {
          ++i;
          break;
        } else {
          value += s[i];
        }
      }
    } else {
      for (; i < s.size() && !redaction::is_space(s[i]); ++i) {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        value += s[i];
      }
    }
    if (!redaction::is_secret_key(key)) continue;
    conninfo_secret sec;
    sec.begin = value_begin;
    sec.end = i;
    redaction::add_form(sec, std::string(s.substr(value_begin, i - value_begin)));
    redaction::add_form(sec, value);
    if (!sec.forms.empty()) out.push_back(std::move(sec));
  }
  return out;
}

PQSCOPE_DECL std::string redacted_conninfo(std::string_view conninfo) {
  std::string out(conninfo);
  const std::vector<conninfo_secret> secrets = conninfo_secrets(conninfo);
  // From the last to the first, so that earlier positions stay valid.
  for (auto it = secrets.rbegin(); it != secrets.rend(); ++it) out.replace(it->begin, it->end - it->begin, "***");
  return out;
}

PQSCOPE_DECL std::string redact(std::string message, std::string_view conninfo) {
  const std::vector<conninfo_secret> secrets = conninfo_secrets(conninfo);
  if (secrets.empty()) return message;
  redaction::replace_all(message, conninfo, redacted_conninfo(conninfo));
  std::vector<std::string> forms;
  for (const conninfo_secret& sec : secrets) forms.insert(forms.end(), sec.forms.begin(), sec.forms.end());
  // Longest first: a piece must not break up a longer form before it is replaced.
  std::sort(forms.begin(), forms.end(), [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& f : forms) redaction::replace_all(message, f, "***");
  return message;
}

}  // namespace pqscope::detail
#endif

namespace pqscope::detail {

// A malformed connection string is the caller's mistake: usage_error before connecting.
PQSCOPE_DECL void check_conninfo(const std::string& conninfo);

// What pqscope adds to a conninfo that sets none of these (nor their environment
// variables): a dead peer, a black-holed path or a server that accepts and never
// answers is noticed in seconds, not after the kernel's minutes (or hours, for an
// idle connection's keepalive).
struct network_default {
  const char* key;
  const char* value;
};
inline constexpr network_default network_defaults[] = {
    {"connect_timeout", "10"},      // seconds, per host and address tried (libpq has no default)
    {"keepalives_idle", "15"},      // seconds of silence before the first probe (kernel: 7200)
    {"keepalives_interval", "5"},   // seconds between probes (kernel: 75)
    {"keepalives_count", "3"},      // probes before giving up (kernel: 9)
    {"tcp_user_timeout", "30000"},  // ms that sent data may stay unacknowledged (kernel: about 15 min)
};

// connect_timeout (whole seconds, libpq's unit) for a network_timeout: rounded
// up, at least 2 (libpq treats 1 as 2).
PQSCOPE_DECL std::string connect_timeout_for(std::chrono::milliseconds t);

// Whether the conninfo, or the environment variable of `key` (PGCONNECT_TIMEOUT,
// ...), sets it.
PQSCOPE_DECL bool conninfo_sets(const std::string& conninfo, const char* key);

// The keyword and value arrays of PQconnectdbParams / PQconnectStartParams: the
// network defaults the conninfo leaves unset (connect_timeout from `timeout` when
// it is not 0), then the conninfo itself (expand_dbname: what it sets wins), then
// the fallback application name. Pinned in place: the arrays point into it.
class connect_params {
 public:
  PQSCOPE_DECL connect_params(const std::string& conninfo, const std::string& fallback_application_name,
                              std::chrono::milliseconds timeout);
  connect_params(const connect_params&) = delete;
  connect_params& operator=(const connect_params&) = delete;
  connect_params(connect_params&&) = delete;
  connect_params& operator=(connect_params&&) = delete;
  ~connect_params() = default;

  [[nodiscard]] const char* const* keys() const noexcept { return keys_.data(); }
  [[nodiscard]] const char* const* values() const noexcept { return values_.data(); }

 private:
  std::vector<std::string> owned_;  // values that must outlive the call
  std::vector<const char*> keys_, values_;
};

// "could not connect: " and libpq's message, with any password in it masked.
PQSCOPE_DECL std::string connect_failure(PGconn* c, const std::string& conninfo);

// A conninfo string that opens another session like `c` (the in-doubt resolver of
// a borrowed connection).
PQSCOPE_DECL std::string conninfo_of(PGconn* c);

// The session's application_name: the server's, else the conninfo's, else the fallback.
PQSCOPE_DECL std::string application_name_of(PGconn* c);

// The connection's connect_timeout as libpq applies it (0: none).
PQSCOPE_DECL std::chrono::milliseconds connect_timeout_of(PGconn* c);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/libpq_connect.ipp>
// The bodies of <pqscope/detail/libpq_connect.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/libpq_connect.hpp> (inlined above)

#include <cstdlib>
#include <cstring>
#include <iterator>

// #include <pqscope/errors.hpp> (inlined above)

namespace pqscope::detail {

PQSCOPE_DECL void check_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts != nullptr) {
    PQconninfoFree(opts);
    return;
  }
  std::string msg = err != nullptr ? err : "out of memory";
  PQfreemem(err);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  throw usage_error("invalid connection string: " + redact(msg, conninfo));  // libpq quotes the bad part
}

PQSCOPE_DECL std::string connect_timeout_for(std::chrono::milliseconds t) {
  const long long s = (t.count() + 999) / 1000;
  return std::to_string(s < 2 ? 2 : s);
}

PQSCOPE_DECL bool conninfo_sets(const std::string& conninfo, const char* key) {
  bool set = false;
  if (PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), nullptr)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (std::strcmp(o->keyword, key) == 0 && o->val != nullptr && *o->val != '\0') set = true;
    PQconninfoFree(opts);
  }
  if (set) return true;
  if (PQconninfoOption* defs = PQconndefaults()) {
    for (PQconninfoOption* o = defs; o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, key) != 0 || o->envvar == nullptr) continue;
      // Read-only, as libpq itself reads the environment while connecting.
      const char* v = std::getenv(o->envvar);  // NOLINT(concurrency-mt-unsafe)
      if (v != nullptr && *v != '\0') set = true;
    }
    PQconninfoFree(defs);
  }
  return set;
}

PQSCOPE_DECL connect_params::connect_params(const std::string& conninfo, const std::string& fallback_application_name,
                                            std::chrono::milliseconds timeout) {
  owned_.reserve(std::size(network_defaults));  // no reallocation: keys_ and values_ point into it
  for (const auto& d : network_defaults) {
    if (conninfo_sets(conninfo, d.key)) continue;
    std::string value = d.value;
    if (std::strcmp(d.key, "connect_timeout") == 0 && timeout.count() > 0) value = connect_timeout_for(timeout);
    owned_.push_back(std::move(value));
    keys_.push_back(d.key);
    values_.push_back(owned_.back().c_str());
  }
  keys_.insert(keys_.end(), {"dbname", "fallback_application_name", nullptr});
  values_.insert(values_.end(), {conninfo.c_str(), fallback_application_name.c_str(), nullptr});
}

PQSCOPE_DECL std::string connect_failure(PGconn* c, const std::string& conninfo) {
  std::string msg = c != nullptr ? PQerrorMessage(c) : "out of memory";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return "could not connect: " + redact(std::move(msg), conninfo);
}

PQSCOPE_DECL std::string conninfo_of(PGconn* c) {
  std::string out;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr || *o->val == '\0') continue;
      if (!out.empty()) out += ' ';
      out += o->keyword;
      out += "='";
      for (const char* v = o->val; *v != '\0'; ++v) {
        if (*v == '\'' || *v == '\\') out += '\\';
        out += *v;
      }
      out += '\'';
    }
    PQconninfoFree(opts);
  }
  return out;
}

PQSCOPE_DECL std::string application_name_of(PGconn* c) {
  if (c == nullptr) return {};
  if (const char* v = PQparameterStatus(c, "application_name")) return v;
  std::string name, fallback;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      if (std::strcmp(o->keyword, "application_name") == 0) name = o->val;
      if (std::strcmp(o->keyword, "fallback_application_name") == 0) fallback = o->val;
    }
    PQconninfoFree(opts);
  }
  return name.empty() ? fallback : name;
}

PQSCOPE_DECL std::chrono::milliseconds connect_timeout_of(PGconn* c) {
  std::chrono::milliseconds out{0};
  if (c == nullptr) return out;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (o->val != nullptr && std::strcmp(o->keyword, "connect_timeout") == 0) {
        const long s = std::strtol(o->val, nullptr, 10);
        if (s > 0) out = std::chrono::seconds(s < 2 ? 2 : s);  // libpq's own minimum
      }
    PQconninfoFree(opts);
  }
  return out;
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/libpq_reply.hpp>
// Sending a statement and reading libpq's answers, as both front ends do it: what one PGresult means for a
// statement's reply, the fields of an error, and the few answers that end a session
// or break the protocol pqscope speaks. driver.hpp and asio/link.hpp differ only in
// how they wait for the answers, never in how they read them.

#include <memory>
#include <string>
#include <vector>

#include <libpq-fe.h>

// #include <pqscope/reply.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// Queues one statement of a batch in libpq (pipeline mode): unnamed, or the named
// prepared statement, after its Parse when statement::parse. false: libpq refused
// (PQerrorMessage says why). Each Parse answers on its own before the statement.
[[nodiscard]] PQSCOPE_DECL bool send_statement(PGconn* c, const statement& s);

// libpq's message without its trailing newline.
PQSCOPE_DECL std::string trimmed(const char* s);

// The fields of a failed statement's answer.
PQSCOPE_DECL std::shared_ptr<reply_error> error_of(const PGresult* raw);

// For an error of severity FATAL or PANIC (the session ends after it): the lost
// message, with the cause named where pqscope knows it; else "".
PQSCOPE_DECL std::string fatal_reason(const PGresult* raw);

// The answer given to a statement that started the COPY sub-protocol inside a
// batch (COPY OUT read to its end and dropped, COPY IN failed at once).
PQSCOPE_DECL std::shared_ptr<reply_error> copy_misuse(bool copy_in);

// The message of a COPY FROM STDIN with statements behind it in the same batch:
// the server reads those as broken COPY data and ends the session.
PQSCOPE_DECL std::string copy_in_kills_session();

// What the abort message of a COPY FROM STDIN that execute() met tells the server.
inline constexpr const char* copy_in_refused = "pqscope: COPY FROM STDIN cannot run through execute(); use copy_in()";

PQSCOPE_DECL server_state state_of(PGTransactionStatusType t);

// What the first PGresult of a statement says.
struct answer {
  enum kind {
    filled,      // the reply holds it: ok (with its result and command tag) or error
    skipped,     // PGRES_PIPELINE_ABORTED: an earlier statement of the pipeline failed
    copy_in,     // the statement started COPY FROM STDIN / TO STDOUT: the caller ends it
    copy_out,
    lost,        // the session is gone (`why`)
    unexpected,  // no answer a statement can give (`why`)
  };
  kind k = lost;
  std::string why;  // lost: the reason; any other kind but filled: "unexpected answer ..."
  // filled with an error of severity FATAL: why the server is about to end the
  // session (a later `lost` should say this rather than libpq's "server closed").
  std::string fatal;
};

// Reads `raw` (nullptr: no result, libpq's error is the reason) into `r`; frees it.
[[nodiscard]] PQSCOPE_DECL answer read_answer(PGconn* c, PGresult* raw, reply& r);

// One answer of a script (several statements, one simple-protocol query), `raw` not
// null: filled (append `r`), skipped (a script of blanks and comments runs no
// statement), or the session is gone. A COPY that slipped through is ended here and
// answered as an error.
[[nodiscard]] PQSCOPE_DECL answer read_script_answer(PGconn* c, PGresult* raw, reply& r);

// The scopes see a script as one statement: its first error, or its last answer
// (ok for a script that ran none). `results`: each statement's result, up to the
// first error. `all` is left moved from.
[[nodiscard]] PQSCOPE_DECL batch_reply script_outcome(batch_reply& all, std::vector<result>& results);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/libpq_reply.ipp>
// The bodies of <pqscope/detail/libpq_reply.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/libpq_reply.hpp> (inlined above)

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
#endif
// #include <pqscope/detail/middleware.hpp>
// Naming a middleware that changes what a session does. The one known case:
// Pgpool-II in raw mode wraps the first write of a session sent with the extended
// protocol in a BEGIN of its own and never ends it. A front end sees a batch that
// opens no transaction end inside one; it then sends the probes below, each alone
// in the simple protocol (a middleware's own commands are not understood in the
// extended one), and reads the answers with diagnose_middleware(). Only asked on
// that anomaly (plain PostgreSQL never does it), so the probes cost nothing in the
// common case; the transaction is rolled back after, whatever they say.

#include <string>
#include <vector>

// #include <pqscope/reply.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// Whether a statement of the batch opens a transaction itself (BEGIN, START TRANSACTION).
[[nodiscard]] PQSCOPE_DECL bool opens_transaction(const std::vector<statement>& batch);

// Sent in this order; the second only when the first answered with a value.
inline constexpr const char* middleware_probes[] = {"SHOW pool_version", "PGPOOL SHOW backend_clustering_mode"};

// The diagnostic from the probes' first values ("" where a probe failed or was not
// sent): what opened the transaction, or "" when that is not known.
[[nodiscard]] PQSCOPE_DECL std::string diagnose_middleware(const std::string& pool_version,
                                                           const std::string& clustering_mode);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/middleware.ipp>
// The bodies of <pqscope/detail/middleware.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/middleware.hpp> (inlined above)

#include <strings.h>

namespace pqscope::detail {

PQSCOPE_DECL bool opens_transaction(const std::vector<statement>& batch) {
  for (const statement& s : batch) {
    const char* p = s.sql;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '(') ++p;
    if (strncasecmp(p, "BEGIN", 5) == 0 || strncasecmp(p, "START", 5) == 0) return true;
  }
  return false;
}

PQSCOPE_DECL std::string diagnose_middleware(const std::string& pool_version, const std::string& clustering_mode) {
  // Only raw mode opens transactions of its own; in any other mode a statement
  // of the application did, and the generic message says so.
  if (pool_version.empty() || clustering_mode != "raw") return {};
  return "Pgpool-II (" + pool_version + ") opened it: in raw mode (backend_clustering_mode = 'raw') it wraps the "
         "first write of a session sent with the extended protocol in a BEGIN of its own and never ends that "
         "transaction. Run Pgpool-II in streaming_replication mode, or connect to PostgreSQL directly";
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/notices.hpp>
// The server's notices (connection_options::notice_handler), as both front ends
// route them: libpq calls a receiver while it reads the answers, in the order the
// server sent them; the receiver hands each to the handler, or else to the observer.

#include <libpq-fe.h>

// #include <pqscope/callback.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

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
// #include <pqscope/detail/impl/notices.ipp>
// The bodies of <pqscope/detail/notices.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/notices.hpp> (inlined above)

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
#endif

#ifndef LIBPQ_HAS_PIPELINING
#error "pqscope needs libpq 14 or newer (pipeline mode)"
#endif

namespace pqscope {

// The driver's time bounds, taken from connection_options.
struct network_settings {
  // Each round trip (and connecting, as connect_timeout when the conninfo sets none). 0: unbounded.
  std::chrono::milliseconds timeout{0};
};

class libpq_driver {
 public:
  using clock = std::chrono::steady_clock;

  libpq_driver() = default;
  libpq_driver(const libpq_driver&) = delete;
  libpq_driver& operator=(const libpq_driver&) = delete;
  ~libpq_driver() { close(); }

  // Before open(): the time bounds (connection_options::network_timeout).
  void set_network(const network_settings& s) noexcept { net_ = s; }
  // Where the server's notices go on the sessions this driver opens (notices.hpp).
  void set_notices(detail::notice_callback h) {
    notices_ = std::move(h);
    if (!borrowed_) detail::install_notices(conn_, &notices_);
  }
  [[nodiscard]] const network_settings& network() const noexcept { return net_; }

  // After a round trip's network_timeout expired: how long pqscope waits for the
  // answer to its cancel request before it gives the connection up.
  [[nodiscard]] static std::chrono::milliseconds grace_for(std::chrono::milliseconds timeout) noexcept;

  // Throws connection_error (usage_error for a malformed conninfo). fallback_application_name applies unless the
  // conninfo or PGAPPNAME names one (libpq's own rule). Time bounds the conninfo (or the environment) leaves unset
  // are added: see detail::network_defaults.
  void open(const std::string& conninfo, const std::string& fallback_application_name);

  void close() noexcept;

  // Frees the connection without telling the server: used in a child process
  // after fork(), where PQfinish would end the parent's session. The socket is
  // pointed at /dev/null first, so the goodbye message goes nowhere.
  void abandon() noexcept;

  [[nodiscard]] bool is_open() const noexcept { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

  // One round trip: every statement in one pipeline, one sync, all answers read.
  // Only one sync is ever in flight (PgBouncer before 1.21 mishandles more).
  //
  // With a network_timeout, the round trip has a deadline. When it passes, a
  // cancel request is sent (not while the answer awaited is COMMIT's: see
  // expire()) and the answers are awaited for a grace more; a cancelled
  // statement then answers 57014 like any failed statement. If the answers do
  // not all arrive by then, the connection is closed and the batch is lost. The
  // next round trip first waits for that cancel request to be handled.
  batch_reply exchange(const std::vector<statement>& batch);
  // The same, filling `out`, whose memory is used again: a front end that keeps
  // one batch_reply allocates nothing per round trip for it.
  batch_reply& exchange(const std::vector<statement>& batch, batch_reply& out);

  [[nodiscard]] std::string application_name() const;

  [[nodiscard]] PGconn* native_handle() const noexcept { return conn_; }

  // ---- an existing PGconn* ------------------------------------------------

  // Uses a session the caller opened and keeps: it must be connected, idle (no
  // transaction, no query in progress) and out of pipeline mode. release() or
  // the destructor hands it back in that state and never closes it.
  void adopt(PGconn* c);
  [[nodiscard]] bool borrowed() const noexcept { return borrowed_; }

  // ---- outside the pipeline: COPY and scripts ----------------------------
  // The caller has sent everything queued first. Each call has its own
  // network_timeout deadline, handled as a round trip's (cancel, grace, give up).

  // Sends `s` (extended protocol, no pipeline) and reads until the server enters
  // the COPY sub-protocol (PGRES_COPY_IN or PGRES_COPY_OUT) or answers otherwise
  // (0: `out` holds the answer).
  int copy_start(const statement& s, batch_reply& out);

  // Queues COPY FROM STDIN data, sending when libpq's buffer fills. false if the
  // connection failed or timed out; copy_end() then reports why.
  bool copy_put(std::string_view data);

  // Ends COPY FROM STDIN (abort_reason != nullptr: the server fails the COPY with
  // it) and reads the answer.
  batch_reply copy_end(const char* abort_reason);

  // The next row of COPY TO STDOUT, its newline included: true; false at the end
  // or on failure (copy_out_end() tells which). The row is valid until the next call.
  bool copy_get(std::string_view& row);

  // After copy_get() returned false: the COPY's answer.
  batch_reply copy_out_end();

  // A script of several statements in one simple-protocol query: one reply per
  // statement that answered; the server runs nothing after the first error.
  // results: the result of each statement that succeeded, in order.
  batch_reply script(const char* sql);

  // ---- notifications (LISTEN), between round trips --------------------------
  enum class notice_wait { received, timed_out, lost };

  // The oldest notification libpq holds: kept since it arrived, also during other
  // statements and after the connection was lost, until taken here.
  bool take_notification(notification& out);

  // take_notification(), or waits up to `timeout` (0: only what has arrived) for one.
  // lost: the connection failed; every notification it had received was taken first.
  notice_wait wait_notification(std::chrono::milliseconds timeout, notification& out);

 private:
  enum class io { ok, failed, expired };

  // One round trip's clock: the deadline, then (after a cancel request) the grace.
  struct round_trip {
    explicit round_trip(const std::vector<statement>& b) : batch(b) {}
    const std::vector<statement>& batch;
    bool bounded = false;
    bool in_grace = false;
    bool cancel_sent = false;
    clock::time_point deadline{};
    std::size_t awaiting = 0;  // the statement whose answer is awaited (batch.size(): the sync)
  };

  // A cancel request on its way. libpq 15's PQcancel blocks (a connect, a send,
  // then it waits for the server to close), so it runs on a thread of its own
  // that owns its PGcancel; the connection only waits for it up to the grace.
  // Defined with the implementation: only it needs <mutex> and <condition_variable>.
  struct cancel_state;

  // Waits for the socket; `expired` once the deadline and the grace have passed.
  io wait(round_trip& rt, short events, short& revents);

  // The deadline passed: the first time, send a cancel request and allow the
  // grace (true); after the grace, give up (false). No cancel while the answer
  // awaited is COMMIT's: a COMMIT cannot be undone, and cancelling one that waits
  // for a synchronous standby turns it into a local commit reported as success.
  bool expire(round_trip& rt);

  bool send_cancel() noexcept;

  // Sends what libpq still holds; reads meanwhile, so a server that is itself
  // blocked writing to us cannot deadlock the two.
  io flush(round_trip& rt);

  // Until PQgetResult would not block. A broken connection returns ok: PQgetResult reports it.
  io await_result(round_trip& rt);

  // A cancel request sent during an earlier round trip must have been handled
  // before anything else is sent: PostgreSQL signals the backend twice (the
  // process, then its process group), and a second signal that comes late cancels
  // whatever runs then. PQcancel returns once the server has closed the request's
  // connection, after both. Waited for until this round trip's deadline; false if
  // it has not returned by then.
  bool await_pending_cancel(const round_trip& rt);

  batch_reply& give_up_pending(batch_reply& out);

  // A COPY started inside a batch: its rows read and dropped, or COPY FROM STDIN failed.
  io drain_copy_out(round_trip& rt);
  io fail_copy_in(round_trip& rt);

  // One simple-protocol query (detail/middleware.hpp); the first value, or nothing on error.
  bool simple_query(const char* sql, std::string& value);

  void give_up_quietly();

  // A transaction no statement of the batch opened: is a middleware to blame?
  std::string diagnose_foreign_transaction();

  batch_reply& give_up(batch_reply& out, const round_trip& rt);

  // A borrowed session goes back idle and out of pipeline mode, in the blocking
  // mode it came in. A transaction still open is rolled back; a session that
  // cannot be brought back (mid-round-trip after a timeout, a lost link) has its
  // socket shut down, so that the server ends it and rolls back, and its owner
  // sees CONNECTION_BAD on next use (PQreset() reconnects it).
  void hand_back() noexcept;

  // A clock for one call outside the pipeline.
  round_trip trip() const;

  // libpq's COPY buffer is full: send some of it, reading meanwhile.
  bool copy_drain(round_trip& rt);
  // A COPY call's deadline and grace passed: the connection is given up.
  bool copy_expired(const round_trip& rt);
  bool copy_failed(std::string why);
  std::string lost_reason() const;
  void free_copy_row() noexcept;

  // The answer that ends a COPY.
  batch_reply& finish_copy(round_trip& rt, batch_reply& out);

  // One statement's answer outside the pipeline, then the null result that ends it.
  batch_reply& read_final(round_trip& rt, PGresult* raw, batch_reply& out);

  batch_reply& lost(batch_reply& out, std::string why);

  PGconn* conn_ = nullptr;
  bool borrowed_ = false;         // adopt(): the caller's session, never closed here
  bool was_nonblocking_ = false;  // adopt(): its mode, restored when it is handed back
  std::string copy_lost_;         // why the COPY in progress cannot go on
  char* copy_row_ = nullptr;      // the last row copy_get() returned (libpq's memory)
  network_settings net_;
  detail::notice_callback notices_;  // its address is given to libpq: the driver does not move once open
  std::shared_ptr<cancel_state> cancel_;  // a cancel request not yet known to be handled
  std::string closed_reason_;             // why exchange() finds the connection closed, if pqscope closed it
  std::string fatal_;  // a FATAL error answered in this batch: why the server is about to close the session
};

namespace detail {
// Hands connection_options to a driver that takes time bounds (libpq_driver and
// drivers derived from it); other drivers are left alone.
template <class D, class = void>
struct takes_network : std::false_type {};
template <class D>
struct takes_network<D, std::void_t<decltype(std::declval<D&>().set_network(network_settings{})),
                                    decltype(std::declval<const D&>().network())>> : std::true_type {};

template <class D>
void configure_driver(D& d, const connection_options& o) {
  if constexpr (takes_network<D>::value) {
    network_settings s;
    s.timeout = o.network_timeout;
    d.set_network(s);
  }
  if constexpr (std::is_same_v<D, libpq_driver>) d.set_notices(notice_route(o));
}

// A second driver with the same time bounds (the in-doubt resolver's fresh connection).
template <class D>
void copy_driver_settings(D& to, const D& from) {
  if constexpr (takes_network<D>::value) to.set_network(from.network());
}
}  // namespace detail

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/driver_wait.ipp>
// libpq_driver, its waits: every wait is a poll() with the round trip's deadline, then a cancel
// request and its grace, then the connection given up (see driver.hpp).
// Part of the bodies of <pqscope/driver.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/driver.hpp> (inlined above)

#include <poll.h>

#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace pqscope {

struct libpq_driver::cancel_state {
  std::mutex m;
  std::condition_variable cv;
  bool done = false;
};

PQSCOPE_DECL std::chrono::milliseconds libpq_driver::grace_for(std::chrono::milliseconds timeout) noexcept {
  return timeout < std::chrono::milliseconds(1000) ? timeout : std::chrono::milliseconds(1000);
}

PQSCOPE_DECL libpq_driver::round_trip libpq_driver::trip() const {
  static const std::vector<statement> none;
  round_trip rt{none};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.deadline = clock::now() + net_.timeout;
  }
  return rt;
}

PQSCOPE_DECL libpq_driver::io libpq_driver::wait(round_trip& rt, short events, short& revents) {
  for (;;) {
    int timeout_ms = -1;
    if (rt.bounded) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(rt.deadline - clock::now()).count();
      if (left <= 0) {
        if (!expire(rt)) return io::expired;
        continue;
      }
      timeout_ms = left > 1000000 ? 1000000 : static_cast<int>(left);
    }
    pollfd p{PQsocket(conn_), events, 0};
    if (p.fd < 0) return io::failed;
    const int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno != EINTR) return io::failed;
    if (r > 0) {
      revents = p.revents;
      return io::ok;
    }
  }
}

PQSCOPE_DECL bool libpq_driver::take_notification(notification& out) {
  return detail::take_notification(conn_, out);
}

PQSCOPE_DECL libpq_driver::notice_wait libpq_driver::wait_notification(std::chrono::milliseconds timeout,
                                                                      notification& out) {
  static const std::vector<statement> none;
  round_trip rt{none};
  rt.bounded = true;
  rt.in_grace = true;  // a deadline of the caller's: nothing runs that a cancel could stop
  rt.deadline = clock::now() + timeout;
  bool read = false;
  for (;;) {
    if (take_notification(out)) return notice_wait::received;
    if (!is_open()) return notice_wait::lost;
    if (!read) {  // what the socket holds now, without waiting
      read = true;
      (void)PQconsumeInput(conn_);  // a failure shows in is_open() once what it read is taken
      continue;
    }
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w == io::expired) return notice_wait::timed_out;
    if (w == io::failed) return notice_wait::lost;
    read = false;
  }
}

PQSCOPE_DECL bool libpq_driver::expire(round_trip& rt) {
  if (rt.in_grace) return false;
  rt.in_grace = true;
  rt.deadline += grace_for(net_.timeout);
  const bool commit = rt.awaiting < rt.batch.size() && std::strcmp(rt.batch[rt.awaiting].sql, "COMMIT") == 0;
  if (!commit) rt.cancel_sent = send_cancel();
  return true;
}

PQSCOPE_DECL bool libpq_driver::send_cancel() noexcept {
  PGcancel* c = PQgetCancel(conn_);
  if (c == nullptr) return false;
  try {
    auto state = std::make_shared<cancel_state>();
    std::thread([c, state] {
      char err[256];
      (void)PQcancel(c, err, sizeof err);  // a failure leaves the statement running: the grace decides
      PQfreeCancel(c);
      std::lock_guard<std::mutex> lock(state->m);
      state->done = true;
      state->cv.notify_all();
    }).detach();
    cancel_ = std::move(state);
    return true;
  } catch (...) {
    PQfreeCancel(c);
    return false;
  }
}

PQSCOPE_DECL libpq_driver::io libpq_driver::flush(round_trip& rt) {
  for (;;) {
    const int f = PQflush(conn_);
    if (f == 0) return io::ok;
    if (f < 0) return io::failed;
    short revents = 0;
    const io w = wait(rt, POLLIN | POLLOUT, revents);
    if (w != io::ok) return w;
    if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0 && PQconsumeInput(conn_) != 1) return io::failed;
  }
}

PQSCOPE_DECL libpq_driver::io libpq_driver::await_result(round_trip& rt) {
  while (PQisBusy(conn_) != 0) {
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w == io::expired) return w;
    if (w == io::failed || PQconsumeInput(conn_) != 1) return io::ok;
  }
  return io::ok;
}

PQSCOPE_DECL bool libpq_driver::await_pending_cancel(const round_trip& rt) {
  if (!cancel_) return true;
  std::shared_ptr<cancel_state> c = std::move(cancel_);
  std::unique_lock<std::mutex> lock(c->m);
  if (!rt.bounded) {
    c->cv.wait(lock, [&] { return c->done; });
    return true;
  }
  return c->cv.wait_until(lock, rt.deadline, [&] { return c->done; });
}

PQSCOPE_DECL batch_reply& libpq_driver::give_up_pending(batch_reply& out) {
  std::string why = "a cancel request sent after an earlier round trip exceeded network_timeout had not been "
                    "handled by the server within network_timeout, and it could cancel this statement; the "
                    "connection was closed before anything was sent";
  close();
  closed_reason_ = why;
  return lost(out, std::move(why));
}

PQSCOPE_DECL batch_reply& libpq_driver::give_up(batch_reply& out, const round_trip& rt) {
  const long long ms = net_.timeout.count() + grace_for(net_.timeout).count();
  std::string why = "no answer from the server within network_timeout (" + std::to_string(net_.timeout.count()) +
                    " ms) and the grace after " + (rt.cancel_sent ? "a cancel request" : "it") + " (" +
                    std::to_string(ms) + " ms in all); the connection was closed";
  close();
  closed_reason_ = why;
  return lost(out, std::move(why));
}

}  // namespace pqscope
// #include <pqscope/impl/driver.ipp>
// libpq_driver, the session: connecting, one round trip (exchange), a borrowed PGconn*, and the
// middleware probes after a transaction no statement opened.
// Part of the bodies of <pqscope/driver.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/driver.hpp> (inlined above)

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <utility>


namespace pqscope {

PQSCOPE_DECL void libpq_driver::open(const std::string& conninfo, const std::string& fallback_application_name) {
  close();
  detail::check_conninfo(conninfo);
  const detail::connect_params params{conninfo, fallback_application_name, net_.timeout};
  conn_ = PQconnectdbParams(params.keys(), params.values(), /*expand_dbname=*/1);
  if (conn_ == nullptr) throw connection_error("could not connect: out of memory");
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = detail::connect_failure(conn_, conninfo);
    close();
    throw connection_error(msg);
  }
  // Every wait is a poll() with a deadline; libpq never blocks on the socket.
  if (PQsetnonblocking(conn_, 1) != 0) {
    std::string msg = detail::connect_failure(conn_, conninfo);
    close();
    throw connection_error(msg);
  }
  detail::install_notices(conn_, &notices_);
  closed_reason_.clear();
}

PQSCOPE_DECL void libpq_driver::close() noexcept {
  free_copy_row();
  if (conn_ != nullptr && borrowed_)
    hand_back();
  else if (conn_ != nullptr)
    PQfinish(conn_);  // non-blocking: the goodbye never waits on a stalled path
  conn_ = nullptr;
  borrowed_ = false;
  cancel_.reset();
}

PQSCOPE_DECL void libpq_driver::abandon() noexcept {
  if (conn_ == nullptr) return;
  if (borrowed_) {  // the caller's handle: theirs to deal with in the child
    conn_ = nullptr;
    borrowed_ = false;
    cancel_.reset();
    return;
  }
  int sock = PQsocket(conn_);
  int devnull = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (sock >= 0 && devnull >= 0) ::dup2(devnull, sock);
  if (devnull >= 0) ::close(devnull);
  PQfinish(conn_);
  conn_ = nullptr;
  cancel_.reset();
}

PQSCOPE_DECL void libpq_driver::adopt(PGconn* c) {
  close();
  if (c == nullptr) throw usage_error("borrow(): the PGconn* is null");
  if (PQstatus(c) != CONNECTION_OK) throw usage_error("borrow(): the PGconn* is not connected (PQstatus is not CONNECTION_OK)");
  if (PQpipelineStatus(c) != PQ_PIPELINE_OFF) throw usage_error("borrow(): the PGconn* is in pipeline mode; leave it first");
  switch (PQtransactionStatus(c)) {
    case PQTRANS_IDLE: break;
    case PQTRANS_ACTIVE: throw usage_error("borrow(): the PGconn* has a query in progress; read its results first");
    default:
      throw usage_error("borrow(): the PGconn* is inside a transaction; pqscope's scopes must own the transactions "
                        "they run in, so end it first");
  }
  if (PQisBusy(c) != 0) throw usage_error("borrow(): the PGconn* has results not yet read");
  was_nonblocking_ = PQisnonblocking(c) != 0;
  if (!was_nonblocking_ && PQsetnonblocking(c, 1) != 0)
    throw connection_error("borrow(): " + detail::trimmed(PQerrorMessage(c)));
  conn_ = c;
  borrowed_ = true;
  closed_reason_.clear();
}

PQSCOPE_DECL void libpq_driver::hand_back() noexcept {
  PGconn* c = conn_;
  const bool settled = PQstatus(c) == CONNECTION_OK && PQpipelineStatus(c) == PQ_PIPELINE_OFF && PQisBusy(c) == 0;
  if (settled && (PQtransactionStatus(c) == PQTRANS_INTRANS || PQtransactionStatus(c) == PQTRANS_INERROR)) {
    try {
      static const statement rollback{"ROLLBACK", 0, nullptr, nullptr};
      borrowed_ = false;  // a timeout inside must not come back here
      (void)exchange({rollback});
      borrowed_ = true;
    } catch (...) {
      borrowed_ = true;  // out of memory: the check below shuts the socket down
    }
  }
  if (conn_ == nullptr || PQstatus(c) != CONNECTION_OK || PQpipelineStatus(c) != PQ_PIPELINE_OFF ||
      PQtransactionStatus(c) != PQTRANS_IDLE) {
    const int sock = PQsocket(c);
    if (sock >= 0) ::shutdown(sock, SHUT_RDWR);
  }
  if (!was_nonblocking_) (void)PQsetnonblocking(c, 0);
}

PQSCOPE_DECL std::string libpq_driver::application_name() const { return detail::application_name_of(conn_); }

PQSCOPE_DECL batch_reply libpq_driver::exchange(const std::vector<statement>& batch) {
  batch_reply out;
  exchange(batch, out);
  return out;
}

PQSCOPE_DECL batch_reply& libpq_driver::exchange(const std::vector<statement>& batch, batch_reply& out) {
  out.clear(batch.size());
  fatal_.clear();
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_);
  round_trip rt{batch};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.deadline = clock::now() + net_.timeout;
  }
  if (!await_pending_cancel(rt)) return give_up_pending(out);
  // The session's state before the batch, for diagnose_foreign_transaction() below;
  // libpq's word is exact here (nothing in flight).
  const server_state before = detail::state_of(PQtransactionStatus(conn_));
  if (PQenterPipelineMode(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  for (const statement& s : batch)
    if (!detail::send_statement(conn_, s)) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  if (PQpipelineSync(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }

  for (std::size_t i = 0; i < out.replies.size(); ++i) {
    reply& r = out.replies[i];
    rt.awaiting = i;
    // A Parse sent with the statement answers first, on its own (then a null result).
    bool parse_failed = false;
    if (batch[i].parse) {
      if (await_result(rt) == io::expired) return give_up(out, rt);
      detail::answer p = detail::read_answer(conn_, PQgetResult(conn_), r);
      switch (p.k) {
        case detail::answer::filled:
          if (r.st == reply::status::error) {
            parse_failed = true;
            fatal_ = std::move(p.fatal);
          }
          break;
        case detail::answer::skipped: break;
        default: return lost(out, std::move(p.why));
      }
      if (await_result(rt) == io::expired) return give_up(out, rt);
      if (PGresult* extra = PQgetResult(conn_)) {
        PQclear(extra);
        return lost(out, "unexpected extra answer from the server");
      }
      r.parsed = r.st == reply::status::ok;
    }
    if (await_result(rt) == io::expired) return give_up(out, rt);
    reply behind_failed_parse;  // skipped by the server: the Parse's error is the answer
    detail::answer a = detail::read_answer(conn_, PQgetResult(conn_), parse_failed ? behind_failed_parse : r);
    switch (a.k) {
      case detail::answer::filled:
        if (!parse_failed && r.st == reply::status::error) fatal_ = std::move(a.fatal);
        break;
      case detail::answer::skipped: break;
      case detail::answer::copy_in:
      case detail::answer::copy_out: {
        // A COPY the statement checks did not recognise: end it here so the
        // session stays usable, and report it (reply_error::misuse).
        const bool in = a.k == detail::answer::copy_in;
        if (in && i + 1 < batch.size()) return lost(out, detail::copy_in_kills_session());
        const io e = in ? fail_copy_in(rt) : drain_copy_out(rt);
        if (e == io::expired) return give_up(out, rt);
        if (e == io::failed) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
        if (await_result(rt) == io::expired) return give_up(out, rt);
        PGresult* end = PQgetResult(conn_);  // the COPY's own answer
        if (end == nullptr || PQstatus(conn_) == CONNECTION_BAD) {
          if (end != nullptr) PQclear(end);
          return lost(out, detail::trimmed(PQerrorMessage(conn_)));
        }
        PQclear(end);
        r.st = reply::status::error;
        r.error = detail::copy_misuse(in);
        break;
      }
      case detail::answer::lost:
      case detail::answer::unexpected: return lost(out, std::move(a.why));
    }
    // Each statement's answers end with a null result.
    if (await_result(rt) == io::expired) return give_up(out, rt);
    if (PGresult* extra = PQgetResult(conn_)) {
      PQclear(extra);
      return lost(out, "unexpected extra answer from the server");
    }
  }
  rt.awaiting = batch.size();
  if (await_result(rt) == io::expired) return give_up(out, rt);
  PGresult* sync = PQgetResult(conn_);
  bool sync_ok = sync != nullptr && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
  if (sync != nullptr) PQclear(sync);
  if (!sync_ok) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  if (PQexitPipelineMode(conn_) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  out.state = detail::state_of(PQtransactionStatus(conn_));
  if (before == server_state::idle && out.state == server_state::in_transaction && !detail::opens_transaction(batch) &&
      is_open())
    out.diagnostic = diagnose_foreign_transaction();
  return out;
}

PQSCOPE_DECL bool libpq_driver::simple_query(const char* sql, std::string& value) {
  static const std::vector<statement> none;
  round_trip rt{none};
  if (net_.timeout.count() > 0) {
    rt.bounded = true;
    rt.in_grace = true;  // no cancel for a probe: its deadline is final
    rt.deadline = clock::now() + net_.timeout;
  }
  if (!await_pending_cancel(rt)) {
    give_up_quietly();
    return false;
  }
  if (PQsendQuery(conn_, sql) != 1) return false;
  const io sent = flush(rt);
  if (sent == io::expired) {
    give_up_quietly();
    return false;
  }
  // Every answer is read, an error's too: the session must be left idle for the
  // next batch (a diagnosis must never break the connection).
  bool ok = sent == io::ok;
  for (;;) {
    if (await_result(rt) != io::ok) {
      give_up_quietly();
      return false;
    }
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) break;
    const ExecStatusType st = PQresultStatus(r);
    if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) value = PQgetvalue(r, 0, 0);
    else if (st != PGRES_TUPLES_OK) ok = false;
    PQclear(r);
    if (PQstatus(conn_) == CONNECTION_BAD) return false;
  }
  return ok && is_open();
}

PQSCOPE_DECL void libpq_driver::give_up_quietly() {
  close();
  closed_reason_ = "no answer from the server to a diagnostic query within network_timeout";
}

PQSCOPE_DECL std::string libpq_driver::diagnose_foreign_transaction() {
  std::string version, mode;
  if (!simple_query(detail::middleware_probes[0], version) || version.empty()) return {};
  simple_query(detail::middleware_probes[1], mode);
  return detail::diagnose_middleware(version, mode);
}

PQSCOPE_DECL batch_reply& libpq_driver::lost(batch_reply& out, std::string why) {
  // The server (or PgBouncer) said why before it closed: that, not libpq's "server closed the connection".
  if (!fatal_.empty()) why = std::exchange(fatal_, {});
  out.lost = true;
  out.lost_message = why.empty() ? "connection lost" : std::move(why);
  out.state = server_state::unknown;
  // Answers already read stay as read; the rest never ran as far as we know.
  return out;
}

}  // namespace pqscope
// #include <pqscope/impl/driver_copy.ipp>
// libpq_driver, outside the pipeline: COPY FROM STDIN and TO STDOUT, a COPY that reached
// exchange() unannounced, and scripts in the simple protocol.
// Part of the bodies of <pqscope/driver.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/driver.hpp> (inlined above)

#include <poll.h>

#include <cstring>
#include <memory>
#include <utility>

namespace pqscope {

PQSCOPE_DECL int libpq_driver::copy_start(const statement& s, batch_reply& out) {
  out.replies.assign(1, reply{});
  copy_lost_.clear();
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_), 0;
  round_trip rt = trip();
  if (!await_pending_cancel(rt)) return give_up_pending(out), 0;
  // COPY takes no parameters, and goes as a simple query: Pgpool-II never answers
  // the end of a COPY started with the extended protocol (seen with 4.3).
  const int sent = s.n_params == 0 ? PQsendQuery(conn_, s.sql)
                                   : PQsendQueryParams(conn_, s.sql, s.n_params, s.types, s.values, nullptr, nullptr, 0);
  if (sent != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_))), 0;
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_))), 0;
    case io::expired: return give_up(out, rt), 0;
  }
  if (await_result(rt) == io::expired) return give_up(out, rt), 0;
  PGresult* raw = PQgetResult(conn_);
  if (raw == nullptr) return lost(out, detail::trimmed(PQerrorMessage(conn_))), 0;
  const ExecStatusType st = PQresultStatus(raw);
  if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT) {
    PQclear(raw);
    return st;
  }
  read_final(rt, raw, out);
  return 0;
}

PQSCOPE_DECL bool libpq_driver::copy_put(std::string_view data) {
  if (!copy_lost_.empty() || conn_ == nullptr) return false;
  round_trip rt = trip();
  for (;;) {
    const int r = PQputCopyData(conn_, data.data(), static_cast<int>(data.size()));
    if (r == 1) break;
    if (r < 0) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
    if (!copy_drain(rt)) return false;  // 0: libpq's buffer is full; send some and try again
  }
  // In non-blocking mode libpq's buffer grows instead of refusing data: send it
  // all before taking more, so memory stays at about one chunk.
  switch (flush(rt)) {
    case io::ok: return true;
    case io::failed: return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return copy_expired(rt);
  }
  return true;
}

PQSCOPE_DECL batch_reply libpq_driver::copy_end(const char* abort_reason) {
  batch_reply out;
  out.replies.assign(1, reply{});
  if (!copy_lost_.empty() || conn_ == nullptr) return lost(out, lost_reason());
  round_trip rt = trip();
  for (;;) {
    const int r = PQputCopyEnd(conn_, abort_reason);
    if (r == 1) break;
    if (r < 0) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    if (!copy_drain(rt)) return lost(out, lost_reason());
  }
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }
  return finish_copy(rt, out);
}

PQSCOPE_DECL bool libpq_driver::copy_get(std::string_view& row) {
  free_copy_row();
  if (!copy_lost_.empty() || conn_ == nullptr) return false;
  round_trip rt = trip();
  for (;;) {
    char* buf = nullptr;
    const int n = PQgetCopyData(conn_, &buf, /*async=*/1);
    if (n > 0) {
      copy_row_ = buf;
      row = std::string_view(buf, static_cast<std::size_t>(n));
      return true;
    }
    if (n == -1) return false;  // done: the final answer follows
    if (n < -1) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w == io::expired) return copy_expired(rt);
    if (w == io::failed || PQconsumeInput(conn_) != 1) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  }
}

PQSCOPE_DECL batch_reply libpq_driver::copy_out_end() {
  free_copy_row();
  batch_reply out;
  out.replies.assign(1, reply{});
  if (!copy_lost_.empty() || conn_ == nullptr) return lost(out, lost_reason());
  round_trip rt = trip();
  return finish_copy(rt, out);
}

PQSCOPE_DECL batch_reply libpq_driver::script(const char* sql) {
  batch_reply out;
  if (!is_open()) return lost(out, closed_reason_.empty() ? "the connection is closed" : closed_reason_);
  round_trip rt = trip();
  if (!await_pending_cancel(rt)) return give_up_pending(out);
  if (PQsendQuery(conn_, sql) != 1) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  switch (flush(rt)) {
    case io::ok: break;
    case io::failed: return lost(out, detail::trimmed(PQerrorMessage(conn_)));
    case io::expired: return give_up(out, rt);
  }
  for (;;) {
    if (await_result(rt) == io::expired) return give_up(out, rt);
    PGresult* raw = PQgetResult(conn_);
    if (raw == nullptr) break;
    reply r;
    detail::answer a = detail::read_script_answer(conn_, raw, r);
    if (a.k == detail::answer::skipped) continue;  // a script of blanks and comments: no statement ran
    if (a.k != detail::answer::filled) return lost(out, std::move(a.why));  // lost, or no statement's answer
    out.replies.push_back(std::move(r));
  }
  out.state = detail::state_of(PQtransactionStatus(conn_));
  return out;
}

PQSCOPE_DECL bool libpq_driver::copy_drain(round_trip& rt) {
  short revents = 0;
  const io w = wait(rt, POLLIN | POLLOUT, revents);
  if (w == io::expired) return copy_expired(rt);
  if (w == io::failed) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  if ((revents & (POLLIN | POLLERR | POLLHUP)) != 0 && PQconsumeInput(conn_) != 1)
    return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  if (PQflush(conn_) < 0) return copy_failed(detail::trimmed(PQerrorMessage(conn_)));
  return true;
}

PQSCOPE_DECL bool libpq_driver::copy_expired(const round_trip& rt) {
  batch_reply ignored;
  give_up(ignored, rt);
  copy_lost_ = closed_reason_;
  return false;
}

PQSCOPE_DECL bool libpq_driver::copy_failed(std::string why) {
  copy_lost_ = why.empty() ? "connection lost during COPY" : std::move(why);
  return false;
}

PQSCOPE_DECL std::string libpq_driver::lost_reason() const {
  if (!copy_lost_.empty()) return copy_lost_;
  return closed_reason_.empty() ? "the connection is closed" : closed_reason_;
}

PQSCOPE_DECL void libpq_driver::free_copy_row() noexcept {
  if (copy_row_ != nullptr) PQfreemem(copy_row_);
  copy_row_ = nullptr;
}

PQSCOPE_DECL batch_reply& libpq_driver::finish_copy(round_trip& rt, batch_reply& out) {
  if (await_result(rt) == io::expired) return give_up(out, rt);
  PGresult* raw = PQgetResult(conn_);
  if (raw == nullptr) return lost(out, detail::trimmed(PQerrorMessage(conn_)));
  return read_final(rt, raw, out);
}

PQSCOPE_DECL batch_reply& libpq_driver::read_final(round_trip& rt, PGresult* raw, batch_reply& out) {
  detail::answer a = detail::read_answer(conn_, raw, out.replies.front());
  if (a.k != detail::answer::filled) return lost(out, std::move(a.why));
  for (;;) {
    if (await_result(rt) == io::expired) return give_up(out, rt);
    PGresult* extra = PQgetResult(conn_);
    if (extra == nullptr) break;
    const ExecStatusType st = PQresultStatus(extra);
    PQclear(extra);
    // COPY TO STDOUT of a failed COPY FROM: cannot happen; anything else is a broken stream.
    if (st != PGRES_COMMAND_OK) return lost(out, "unexpected extra answer from the server");
  }
  out.state = detail::state_of(PQtransactionStatus(conn_));
  return out;
}

PQSCOPE_DECL libpq_driver::io libpq_driver::drain_copy_out(round_trip& rt) {
  for (;;) {
    char* row = nullptr;
    const int n = PQgetCopyData(conn_, &row, /*async=*/1);
    if (row != nullptr) PQfreemem(row);
    if (n > 0) continue;
    if (n == -1) return io::ok;  // the end: the COPY's answer follows
    if (n < -1) return io::failed;
    short revents = 0;
    const io w = wait(rt, POLLIN, revents);
    if (w != io::ok) return w;
    if (PQconsumeInput(conn_) != 1) return io::failed;
  }
}

PQSCOPE_DECL libpq_driver::io libpq_driver::fail_copy_in(round_trip& rt) {
  for (;;) {
    const int r = PQputCopyEnd(conn_, detail::copy_in_refused);
    if (r == 1) return flush(rt);
    if (r < 0) return io::failed;
    const io f = flush(rt);  // 0: no room in libpq's buffer yet
    if (f != io::ok) return f;
  }
}

}  // namespace pqscope
#endif
// #include <pqscope/copy.hpp>
// COPY FROM STDIN and COPY TO STDOUT, in autocommit or inside any scope.
//
// What the scopes queued goes out first (BEGIN, SAVEPOINT, ...), then the COPY
// runs outside the pipeline, and its answer reaches the scopes like any
// statement's: a COPY that fails dooms its scope. Until it ends, the connection
// refuses every other call. Values are converted as parameters are
// (value_traits<T>::to_text / from_text), and escaped for COPY's text format here.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/detail/copy_rows.hpp>
// COPY rows in the text format, one at a time, without I/O: what write_row() does
// with values and what next<Ts...>() does with a line. Shared by the blocking COPY
// (copy.hpp) and the asio one (asio/copy.hpp), which only differ in how the bytes
// move.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/copy_text.hpp>
// COPY's text format: one row per line, fields separated by tabs, \N for NULL,
// and backslash escapes for the characters that would break the line up.

#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/sql_text.hpp>
// What pqscope reads off a statement's text before sending it: transaction
// control that would go behind the scope machine's back, COPY, the $n
// placeholders, and where the statements of a script begin and end. All of it
// from the tokens of sql_lexer.hpp, which follows the server's lexical rules.
// The server-state check after every batch backs these checks up.

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/sql_lexer.hpp>
// PostgreSQL's lexical rules (src/backend/parser/scan.l in PostgreSQL 15), as
// far as pqscope's checks need them: where comments, string constants, quoted
// names and dollar quotes begin and end, and what a name or a string stands for
// once decoded. The checks that read statements (transaction control, COPY, the
// pooler guard, placeholders, splitting scripts) all read tokens from here, so
// that none of them can disagree with the server about where code is.
//
// Differences from the server are all on the side of seeing more code, never
// less: a vertical tab separates tokens (PostgreSQL 15 rejects it), and numbers
// are read loosely (1x reads as 1 and x; the server rejects it or reads the same).
// The tests hold this lexer against libpg_query (PostgreSQL's own parser).

#include <cstddef>
#include <string>
#include <string_view>

// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

struct sql_token {
  enum kind_t : unsigned char {
    end,        // no more tokens
    ident,      // an unquoted name or keyword
    qident,     // "quoted name"
    uident,     // U&"quoted name" [UESCAPE 'c']
    string,     // 'standard' or N'national': backslash escapes only without standard_conforming_strings
    estring,    // E'escape string'
    ustring,    // U&'unicode string' [UESCAPE 'c']
    bitstring,  // B'0101' or X'1f': no escapes at all
    dstring,    // $tag$dollar-quoted$tag$
    param,      // $1
    number,
    symbol,     // one character of punctuation or of an operator; "::" is one
  };
  kind_t kind = end;
  std::string_view text;  // as written, prefix, quotes and any UESCAPE clause included
  std::string_view body;  // ident: the text; quoted forms: between the quotes, escapes as written
  char escape = '\\';     // uident, ustring: the Unicode escape character

  [[nodiscard]] bool is(char c) const noexcept { return kind == symbol && text.size() == 1 && text[0] == c; }
  // An unquoted word equal to `upper` (ASCII letters, compared case-insensitively).
  [[nodiscard]] bool keyword(std::string_view upper) const noexcept;
  [[nodiscard]] bool is_name() const noexcept { return kind == ident || kind == qident || kind == uident; }
  [[nodiscard]] bool is_string() const noexcept {
    return kind == string || kind == estring || kind == ustring || kind == dstring || kind == bitstring;
  }
};

class sql_lexer {
 public:
  // standard_strings: the session's standard_conforming_strings (on by default
  // since PostgreSQL 9.1); off, a backslash in a plain 'literal' escapes the quote.
  explicit sql_lexer(std::string_view sql, bool standard_strings = true) noexcept
      : s_(sql), standard_(standard_strings) {}

  // The next token; kind end at the end of the text, and also where the text
  // ends inside a comment, string or quoted name (then broken() is true: the
  // server rejects such a text whole).
  sql_token next() noexcept;
  [[nodiscard]] bool broken() const noexcept { return broken_; }
  [[nodiscard]] std::size_t offset() const noexcept { return pos_; }
  [[nodiscard]] bool standard_strings() const noexcept { return standard_; }

 private:
  void skip_blank() noexcept;
  std::size_t quoted_end(std::size_t from, char quote, bool backslash) noexcept;  // npos: unterminated
  void read_uescape(sql_token& t) noexcept;

  std::string_view s_;
  std::size_t pos_ = 0;
  bool standard_;
  bool broken_ = false;
};

// White space as the lexer skips it; a vertical tab counts (see the top).
constexpr bool sql_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// The name a name token stands for, as the server resolves it: unquoted names
// folded to lower case (ASCII letters: the server leaves other bytes alone in
// UTF-8 databases), quoted ones with "" undoubled, U&"..." decoded to UTF-8.
// False if `t` is no name or does not decode (the server rejects it then).
PQSCOPE_DECL bool token_name(const sql_token& t, std::string& out);
// Whether `t` names exactly `lower` (a lower-case ASCII name). Allocates only
// for U&"..." names.
PQSCOPE_DECL bool names(const sql_token& t, std::string_view lower);
// The value of a string constant, escapes decoded as the server decodes them
// with the given standard_conforming_strings. False if `t` is no string or an
// escape is invalid (the server rejects it then).
PQSCOPE_DECL bool token_string(const sql_token& t, bool standard_strings, std::string& out);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/sql_lexer.ipp>
// The bodies of <pqscope/detail/sql_lexer.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/sql_lexer.hpp> (inlined above)

namespace pqscope::detail {

namespace lex {
constexpr bool ident_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || static_cast<unsigned char>(c) >= 0x80;
}
constexpr bool digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool ident_cont(char c) noexcept { return ident_start(c) || digit(c) || c == '$'; }
constexpr char lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
constexpr bool hex(char c) noexcept { return digit(c) || (lower(c) >= 'a' && lower(c) <= 'f'); }
constexpr int hex_value(char c) noexcept { return digit(c) ? c - '0' : lower(c) - 'a' + 10; }

inline void put_utf8(std::string& out, unsigned long cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// A code point, joining a surrogate pair as the server does; false if invalid.
inline bool add_code_point(std::string& out, unsigned long cp, unsigned long& pending_high) {
  if (pending_high != 0) {
    if (cp < 0xDC00 || cp > 0xDFFF) return false;
    cp = 0x10000 + ((pending_high - 0xD800) << 10) + (cp - 0xDC00);
    pending_high = 0;
  } else if (cp >= 0xD800 && cp <= 0xDBFF) {
    pending_high = cp;
    return true;
  } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
    return false;
  }
  if (cp == 0 || cp > 0x10FFFF) return false;
  put_utf8(out, cp);
  return true;
}

// U&"..." and U&'...' bodies: \XXXX, \+XXXXXX, and the escape doubled.
inline bool decode_unicode(std::string_view body, char escape, char quote, std::string& out) {
  unsigned long high = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == quote) {  // doubled quote
      if (high != 0) return false;
      out += c;
      ++i;
      continue;
    }
    if (c != escape) {
      if (high != 0) return false;
      out += c;
      continue;
    }
    if (i + 1 < body.size() && body[i + 1] == escape) {
      if (high != 0) return false;
      out += escape;
      ++i;
      continue;
    }
    std::size_t digits = 4, at = i + 1;
    if (at < body.size() && body[at] == '+') {
      digits = 6;
      ++at;
    }
    if (at + digits > body.size()) return false;
    unsigned long cp = 0;
    for (std::size_t k = 0; k < digits; ++k) {
      if (!hex(body[at + k])) return false;
      cp = cp * 16 + static_cast<unsigned long>(hex_value(body[at + k]));
    }
    if (!add_code_point(out, cp, high)) return false;
    i = at + digits - 1;
  }
  return high == 0;
}

// Backslash escapes of E'...' (and of '...' without standard_conforming_strings).
inline bool decode_backslashes(std::string_view body, std::string& out) {
  unsigned long high = 0;
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c == '\'') {  // doubled quote
      out += c;
      ++i;
      continue;
    }
    if (c != '\\' || i + 1 >= body.size()) {
      if (high != 0) return false;
      out += c;
      continue;
    }
    const char e = body[++i];
    if (e == 'u' || e == 'U') {
      const std::size_t digits = e == 'u' ? 4 : 8;
      if (i + digits >= body.size()) return false;
      unsigned long cp = 0;
      for (std::size_t k = 1; k <= digits; ++k) {
        if (!hex(body[i + k])) return false;
        cp = cp * 16 + static_cast<unsigned long>(hex_value(body[i + k]));
      }
      if (!add_code_point(out, cp, high)) return false;
      i += digits;
      continue;
    }
    if (high != 0) return false;
    if (e >= '0' && e <= '7') {
      int v = e - '0';
      for (int k = 0; k < 2 && i + 1 < body.size() && body[i + 1] >= '0' && body[i + 1] <= '7'; ++k)
        v = v * 8 + (body[++i] - '0');
      out += static_cast<char>(v & 0xFF);
    } else if (e == 'x' && i + 1 < body.size() && hex(body[i + 1])) {
      int v = hex_value(body[++i]);
      if (i + 1 < body.size() && hex(body[i + 1])) v = v * 16 + hex_value(body[++i]);
      out += static_cast<char>(v);
    } else {
      switch (e) {
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        default: out += e; break;
      }
    }
  }
  return high == 0;
}
}  // namespace lex

PQSCOPE_DECL bool sql_token::keyword(std::string_view upper) const noexcept {
  if (kind != ident || text.size() != upper.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i)
    if (lex::lower(text[i]) != lex::lower(upper[i])) return false;
  return true;
}

PQSCOPE_DECL void sql_lexer::skip_blank() noexcept {
  while (pos_ < s_.size()) {
    const char c = s_[pos_];
    if (sql_space(c)) {
      ++pos_;
    } else if (c == '-' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '-') {
      // A -- comment ends at a newline or a carriage return (scan.l: non_newline [^\n\r]).
      while (pos_ < s_.size() && s_[pos_] != '\n' && s_[pos_] != '\r') ++pos_;
    } else if (c == '/' && pos_ + 1 < s_.size() && s_[pos_ + 1] == '*') {
      int level = 0;
      std::size_t i = pos_;
      for (; i + 1 < s_.size(); ++i) {
        if (s_[i] == '/' && s_[i + 1] == '*') {
          ++level;
          ++i;
        } else if (s_[i] == '*' && s_[i + 1] == '/') {
          ++i;
          if (--level == 0) break;
        }
      }
      if (level != 0) {
        broken_ = true;
        pos_ = s_.size();
        return;
      }
      pos_ = i + 1;
    } else {
      return;
    }
  }
}

// The index just past the closing quote of a body starting at `from`; doubled
// quotes stay inside, and so does a quote after a backslash when `backslash`.
PQSCOPE_DECL std::size_t sql_lexer::quoted_end(std::size_t from, char quote, bool backslash) noexcept {
  for (std::size_t i = from; i < s_.size(); ++i) {
    if (backslash && s_[i] == '\\') {
      ++i;
      continue;
    }
    if (s_[i] != quote) continue;
    if (i + 1 < s_.size() && s_[i + 1] == quote) {
      ++i;
      continue;
    }
    return i + 1;
  }
  return std::string_view::npos;
}

// U&"..." UESCAPE 'c': the server's grammar reads the clause after the token.
PQSCOPE_DECL void sql_lexer::read_uescape(sql_token& t) noexcept {
  const std::size_t start = t.text.data() - s_.data();
  const std::size_t save = pos_;
  const bool was_broken = broken_;
  skip_blank();
  if (s_.size() - pos_ >= 7) {
    bool word = true;
    for (std::size_t k = 0; k < 7; ++k) word = word && lex::lower(s_[pos_ + k]) == "uescape"[k];
    if (word && (pos_ + 7 == s_.size() || !lex::ident_cont(s_[pos_ + 7]))) {
      pos_ += 7;
      skip_blank();
      if (pos_ + 2 < s_.size() && s_[pos_] == '\'' && s_[pos_ + 2] == '\'') {
        t.escape = s_[pos_ + 1];
        pos_ += 3;
        t.text = s_.substr(start, pos_ - start);
        return;
      }
    }
  }
  pos_ = save;
  broken_ = was_broken;
}

PQSCOPE_DECL sql_token sql_lexer::next() noexcept {
  sql_token t;
  skip_blank();
  if (broken_ || pos_ >= s_.size()) return t;
  const std::size_t start = pos_;
  const char c = s_[pos_];
  const char c1 = pos_ + 1 < s_.size() ? s_[pos_ + 1] : '\0';
  const char c2 = pos_ + 2 < s_.size() ? s_[pos_ + 2] : '\0';

  auto quoted = [&](sql_token::kind_t kind, std::size_t prefix, char quote, bool backslash) {
    const std::size_t end = quoted_end(start + prefix + 1, quote, backslash);
    if (end == std::string_view::npos) {
      broken_ = true;
      pos_ = s_.size();
      return sql_token{};
    }
    t.kind = kind;
    t.body = s_.substr(start + prefix + 1, end - 1 - (start + prefix + 1));
    pos_ = end;
    t.text = s_.substr(start, pos_ - start);
    if (kind == sql_token::uident || kind == sql_token::ustring) read_uescape(t);
    return t;
  };

  if ((c == 'u' || c == 'U') && c1 == '&' && (c2 == '\'' || c2 == '"'))
    return quoted(c2 == '"' ? sql_token::uident : sql_token::ustring, 2, c2, false);
  if ((c == 'e' || c == 'E') && c1 == '\'') return quoted(sql_token::estring, 1, '\'', true);
  if ((c == 'n' || c == 'N') && c1 == '\'') return quoted(sql_token::string, 1, '\'', !standard_);
  if ((c == 'b' || c == 'B' || c == 'x' || c == 'X') && c1 == '\'') return quoted(sql_token::bitstring, 1, '\'', false);
  if (c == '\'') return quoted(sql_token::string, 0, '\'', !standard_);
  if (c == '"') return quoted(sql_token::qident, 0, '"', false);

  if (lex::ident_start(c)) {
    while (pos_ < s_.size() && lex::ident_cont(s_[pos_])) ++pos_;
    t.kind = sql_token::ident;
    t.text = t.body = s_.substr(start, pos_ - start);
    return t;
  }
  if (c == '$') {
    if (lex::digit(c1)) {
      ++pos_;
      while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
      t.kind = sql_token::param;
      t.text = t.body = s_.substr(start, pos_ - start);
      return t;
    }
    // $tag$: the tag is empty or starts with a letter; no $ inside it.
    std::size_t j = pos_ + 1;
    if (j < s_.size() && lex::ident_start(s_[j]))
      while (j < s_.size() && (lex::ident_start(s_[j]) || lex::digit(s_[j]))) ++j;
    if (j < s_.size() && s_[j] == '$') {
      const std::string_view tag = s_.substr(start, j + 1 - start);
      const std::size_t close = s_.find(tag, j + 1);
      if (close == std::string_view::npos) {
        broken_ = true;
        pos_ = s_.size();
        return sql_token{};
      }
      t.kind = sql_token::dstring;
      t.body = s_.substr(j + 1, close - (j + 1));
      pos_ = close + tag.size();
      t.text = s_.substr(start, pos_ - start);
      return t;
    }
  }
  if (lex::digit(c) || (c == '.' && lex::digit(c1))) {
    while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
    if (pos_ < s_.size() && s_[pos_] == '.' && !(pos_ + 1 < s_.size() && s_[pos_ + 1] == '.')) {
      ++pos_;
      while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      std::size_t k = pos_ + 1;
      if (k < s_.size() && (s_[k] == '+' || s_[k] == '-')) ++k;
      if (k < s_.size() && lex::digit(s_[k])) {
        pos_ = k;
        while (pos_ < s_.size() && lex::digit(s_[pos_])) ++pos_;
      }
    }
    t.kind = sql_token::number;
    t.text = t.body = s_.substr(start, pos_ - start);
    return t;
  }
  t.kind = sql_token::symbol;
  pos_ += (c == ':' && c1 == ':') ? 2 : 1;
  t.text = t.body = s_.substr(start, pos_ - start);
  return t;
}

PQSCOPE_DECL bool token_name(const sql_token& t, std::string& out) {
  out.clear();
  switch (t.kind) {
    case sql_token::ident:
      for (char c : t.text) out += lex::lower(c);
      break;
    case sql_token::qident:
      for (std::size_t i = 0; i < t.body.size(); ++i) {
        out += t.body[i];
        if (t.body[i] == '"') ++i;
      }
      if (out.empty()) return false;  // zero-length delimited identifier
      break;
    case sql_token::uident:
      if (!lex::decode_unicode(t.body, t.escape, '"', out) || out.empty()) return false;
      break;
    default: return false;
  }
  if (out.size() > 63) out.resize(63);  // NAMEDATALEN - 1, as the server truncates
  return true;
}

PQSCOPE_DECL bool names(const sql_token& t, std::string_view lower) {
  if (t.kind == sql_token::ident) {
    if (t.text.size() != lower.size()) return false;
    for (std::size_t i = 0; i < lower.size(); ++i)
      if (lex::lower(t.text[i]) != lower[i]) return false;
    return true;
  }
  if (t.kind == sql_token::qident && t.body.find('"') == std::string_view::npos) return t.body == lower;
  std::string n;
  return token_name(t, n) && n == lower;
}

PQSCOPE_DECL bool token_string(const sql_token& t, bool standard_strings, std::string& out) {
  out.clear();
  switch (t.kind) {
    case sql_token::string:
      if (!standard_strings) return lex::decode_backslashes(t.body, out);
      for (std::size_t i = 0; i < t.body.size(); ++i) {
        out += t.body[i];
        if (t.body[i] == '\'') ++i;
      }
      return true;
    case sql_token::estring: return lex::decode_backslashes(t.body, out);
    case sql_token::ustring: return lex::decode_unicode(t.body, t.escape, '\'', out);
    case sql_token::dstring: out.assign(t.body.data(), t.body.size()); return true;
    default: return false;
  }
}

}  // namespace pqscope::detail
#endif

namespace pqscope::detail {

// ASCII classes, as the server's lexer uses them (the C library's are locale-aware
// calls, and this runs for every statement).
constexpr bool ascii_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
constexpr bool ascii_digit(char c) { return c >= '0' && c <= '9'; }
constexpr bool ascii_space(char c) { return sql_space(c); }
constexpr char ascii_upper(char c) { return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c; }

// The tokens of a text and its statements, as [first, last) token ranges: split
// at semicolons, except inside a BEGIN ATOMIC ... END function body; empty
// statements dropped. broken: the text ends inside a comment, string or quoted
// name (the server rejects all of it).
struct sql_statements {
  std::vector<sql_token> tokens;
  std::vector<std::pair<std::size_t, std::size_t>> ranges;
  bool broken = false;
};
// atomic_bodies false: every semicolon ends a statement (a PL/pgSQL body).
PQSCOPE_DECL sql_statements read_statements(std::string_view sql, bool standard_strings = true,
                                            bool atomic_bodies = true);

// Non-empty (the keyword) when the text's first statement starts, commits or
// rolls back a transaction or a savepoint.
PQSCOPE_DECL std::string_view transaction_control_keyword(std::string_view sql);

// 'i' for COPY ... FROM STDIN, 'o' for COPY ... TO STDOUT (the copy sub-protocol,
// which a pipeline cannot carry), '\0' for anything else.
PQSCOPE_DECL char copy_stream_direction(std::string_view sql);
PQSCOPE_DECL bool is_copy_stream(std::string_view sql);

// A script (several statements, one simple-protocol query): the first statement
// that controls the transaction or streams COPY, as written; empty if none. The
// text is read both with and without standard_conforming_strings, so that a
// statement is found whichever the session has.
PQSCOPE_DECL std::string script_control_statement(std::string_view sql);
PQSCOPE_DECL std::string script_copy_statement(std::string_view sql);
// usage_error, naming `what`, for a script with such a statement.
PQSCOPE_DECL void check_script(std::string_view sql, const char* what);

// The highest $n placeholder in a statement: the number of parameters the server
// will want. Placeholders inside literals, quoted identifiers and comments do not
// count. Returns -1 for SQL it cannot read to the end (an unterminated quote or
// comment): the server will say what is wrong.
PQSCOPE_DECL int highest_placeholder(std::string_view s);

// The statement's placeholders must match the parameters given, both ways: the
// server's own message ("bind message supplies 1 parameters, but prepared
// statement \"\" requires 2") names a prepared statement the caller never made,
// and too many are accepted silently.
// `wanted` is highest_placeholder(sql), when the caller knows it.
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given, int wanted);
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/sql_text.ipp>
// The bodies of <pqscope/detail/sql_text.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/sql_text.hpp> (inlined above)

#include <algorithm>  // the function bodies only

namespace pqscope::detail {

PQSCOPE_DECL sql_statements read_statements(std::string_view sql, bool standard_strings, bool atomic_bodies) {
  sql_statements out;
  sql_lexer lx(sql, standard_strings);
  for (sql_token t = lx.next(); t.kind != sql_token::end; t = lx.next()) out.tokens.push_back(t);
  out.broken = lx.broken();
  std::size_t start = 0, atomic = 0;
  bool after_begin = false;
  auto add = [&](std::size_t end) {
    if (end > start) out.ranges.emplace_back(start, end);
  };
  for (std::size_t i = 0; i < out.tokens.size(); ++i) {
    const sql_token& t = out.tokens[i];
    if (atomic_bodies && t.kind == sql_token::ident) {
      // BEGIN ATOMIC ... END, in which CASE ... END nests.
      if ((after_begin && t.keyword("ATOMIC")) || (atomic > 0 && t.keyword("CASE")))
        ++atomic;
      else if (atomic > 0 && t.keyword("END"))
        --atomic;
      after_begin = t.keyword("BEGIN");
      continue;
    }
    after_begin = false;
    if (t.is(';') && atomic == 0) {
      add(i);
      start = i + 1;
    }
  }
  add(out.tokens.size());
  return out;
}

namespace sql_text {
// The keyword of a statement given its first two tokens, or empty.
inline std::string_view control_keyword(const sql_token& first, const sql_token& second) {
  if (first.keyword("BEGIN")) return "BEGIN";
  if (first.keyword("SAVEPOINT")) return "SAVEPOINT";
  if (first.keyword("RELEASE")) return "RELEASE";
  if (first.keyword("START") && second.keyword("TRANSACTION")) return "START TRANSACTION";
  if (first.keyword("PREPARE") && second.keyword("TRANSACTION")) return "PREPARE TRANSACTION";
  // COMMIT PREPARED / ROLLBACK PREPARED finish a two-phase transaction, not this session's.
  if (first.keyword("COMMIT") && !second.keyword("PREPARED")) return "COMMIT";
  if (first.keyword("ROLLBACK") && !second.keyword("PREPARED")) return "ROLLBACK";
  if (first.keyword("END")) return "END";
  if (first.keyword("ABORT")) return "ABORT";
  return {};
}

inline std::string_view text_of(const sql_statements& st, std::size_t b, std::size_t e) {
  const char* from = st.tokens[b].text.data();
  const char* to = st.tokens[e - 1].text.data() + st.tokens[e - 1].text.size();
  return {from, static_cast<std::size_t>(to - from)};
}

// The first statement of a script for which `hit(tokens, n)` is true, under
// either setting of standard_conforming_strings.
template <class Hit>
std::string find_in_script(std::string_view sql, Hit hit) {
  for (int pass = 0; pass < 2; ++pass) {
    if (pass == 1 && sql.find('\\') == std::string_view::npos) break;  // both read the same
    const sql_statements st = read_statements(sql, pass == 0);
    for (const auto& [b, e] : st.ranges)
      if (hit(&st.tokens[b], e - b)) return std::string(text_of(st, b, e));
  }
  return {};
}
}  // namespace sql_text

PQSCOPE_DECL std::string_view transaction_control_keyword(std::string_view sql) {
  // Only blanks, comments and empty statements can come first: no string, so the
  // setting of standard_conforming_strings does not matter here.
  sql_lexer lx(sql);
  sql_token first = lx.next();
  while (first.is(';')) first = lx.next();
  const sql_token second = lx.next();
  return sql_text::control_keyword(first, second);
}

PQSCOPE_DECL char copy_stream_direction(std::string_view sql) {
  sql_lexer lx(sql);
  sql_token t = lx.next();
  while (t.is(';')) t = lx.next();
  if (!t.keyword("COPY")) return '\0';
  bool in = false, out = false;
  for (; t.kind != sql_token::end && !t.is(';'); t = lx.next()) {
    in = in || t.keyword("STDIN");
    out = out || t.keyword("STDOUT");
  }
  return in && !out ? 'i' : out && !in ? 'o' : '\0';
}

PQSCOPE_DECL bool is_copy_stream(std::string_view sql) {
  sql_lexer lx(sql);
  sql_token t = lx.next();
  while (t.is(';')) t = lx.next();
  if (!t.keyword("COPY")) return false;
  for (; t.kind != sql_token::end; t = lx.next())
    if (t.keyword("STDIN") || t.keyword("STDOUT")) return true;
  return false;
}

PQSCOPE_DECL std::string script_control_statement(std::string_view sql) {
  return sql_text::find_in_script(sql, [](const sql_token* t, std::size_t n) {
    return !sql_text::control_keyword(t[0], n > 1 ? t[1] : sql_token{}).empty();
  });
}

PQSCOPE_DECL std::string script_copy_statement(std::string_view sql) {
  return sql_text::find_in_script(sql, [](const sql_token* t, std::size_t n) {
    if (!t[0].keyword("COPY")) return false;
    for (std::size_t i = 1; i < n; ++i)
      if (t[i].keyword("STDIN") || t[i].keyword("STDOUT")) return true;
    return false;
  });
}

PQSCOPE_DECL int highest_placeholder(std::string_view s) {
  int highest = 0;
  sql_lexer lx(s);
  for (sql_token t = lx.next(); t.kind != sql_token::end; t = lx.next()) {
    if (t.kind != sql_token::param) continue;
    long v = 0;
    for (char d : t.text.substr(1))
      if (v < 100000) v = v * 10 + (d - '0');
    if (v > highest) highest = static_cast<int>(std::min<long>(v, 100000));
  }
  return lx.broken() ? -1 : highest;
}

PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given) {
  check_placeholders(sql, given, highest_placeholder(sql));
}
PQSCOPE_DECL void check_placeholders(std::string_view sql, std::size_t given, int wanted) {
  if (wanted < 0 || static_cast<std::size_t>(wanted) == given) return;  // < 0: the server will say what is wrong
  if (wanted == 0)
    throw usage_error("the statement has no $n placeholder, but " + std::to_string(given) +
                      " parameter(s) were given: " + std::string(sql.substr(0, 200)));
  throw usage_error("the statement uses placeholders up to $" + std::to_string(wanted) + " but " +
                    std::to_string(given) + " parameter(s) were given: " + std::string(sql.substr(0, 200)));
}

PQSCOPE_DECL void check_script(std::string_view sql, const char* what) {
  // Every statement of the script, read as the server reads it.
  if (const std::string one = script_control_statement(sql); !one.empty())
    throw usage_error(std::string(what) + ": its statement \"" + one.substr(0, 60) +
                      "\" would control the transaction behind pqscope's back; use pqscope::transaction "
                      "or pqscope::atomic around the script instead");
  if (!script_copy_statement(sql).empty())
    throw usage_error(std::string(what) +
                      ": COPY FROM STDIN / TO STDOUT cannot run in a script; use copy_in() or copy_out()");
}

}  // namespace pqscope::detail
#endif

namespace pqscope::detail {

// The rows a copy_writer gathers before sending them: appends write in place,
// without a library call per field or per separator.
class copy_buffer {
 public:
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] bool empty() const noexcept { return size_ == 0; }
  [[nodiscard]] std::string_view view() const noexcept { return {data_.get(), size_}; }
  void clear() noexcept { size_ = 0; }
  void truncate(std::size_t n) noexcept { size_ = n < size_ ? n : size_; }
  // Room for n more bytes at the end; write them, then commit() where they end.
  char* room(std::size_t n) {
    if (cap_ - size_ < n) grow(n);
    return data_.get() + size_;
  }
  void commit(const char* end) noexcept { size_ = static_cast<std::size_t>(end - data_.get()); }
  void put(char c) { *room(1) = c, ++size_; }
  void append(const char* s, std::size_t n) {
    std::memcpy(room(n), s, n);
    size_ += n;
  }
  // One field's text, escaped for COPY's text format.
  void append_escaped(std::string_view text) {
    char* p = room(2 * text.size());
    for (const char c : text) {
      switch (c) {
        case '\\': *p++ = '\\'; *p++ = '\\'; break;
        case '\n': *p++ = '\\'; *p++ = 'n'; break;
        case '\r': *p++ = '\\'; *p++ = 'r'; break;
        case '\t': *p++ = '\\'; *p++ = 't'; break;
        default: *p++ = c;
      }
    }
    commit(p);
  }

 private:
  PQSCOPE_DECL void grow(std::size_t n);
  std::unique_ptr<char[]> data_;
  std::size_t size_ = 0, cap_ = 0;
};

PQSCOPE_DECL int hex_digit(char c);

// Splits one line of COPY TO STDOUT output (its newline included or not) into
// fields, undoing the escapes; \N reads as NULL.
PQSCOPE_DECL void parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& fields);

// Which way a COPY statement streams: 'i' (FROM STDIN), 'o' (TO STDOUT) or 0.
// A quick look at the words; the server's answer has the last word.
PQSCOPE_DECL char copy_direction(std::string_view sql);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/copy_text.ipp>
// The bodies of <pqscope/detail/copy_text.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/copy_text.hpp> (inlined above)

namespace pqscope::detail {

PQSCOPE_DECL void copy_buffer::grow(std::size_t n) {
  std::size_t cap = cap_ == 0 ? std::size_t{1} << 16 : cap_;
  while (cap - size_ < n) cap *= 2;
  std::unique_ptr<char[]> bigger(new char[cap]);
  if (size_ > 0) std::memcpy(bigger.get(), data_.get(), size_);
  data_ = std::move(bigger);
  cap_ = cap;
}

PQSCOPE_DECL int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

PQSCOPE_DECL void parse_copy_row(std::string_view line, std::vector<std::optional<std::string>>& fields) {
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  fields.clear();
  std::string cur;
  bool raw_null = false;  // the field so far is exactly \N
  std::size_t field_start = 0;
  auto end_field = [&](std::size_t at) {
    if (raw_null && at - field_start == 2)
      fields.emplace_back(std::nullopt);
    else
      fields.emplace_back(std::move(cur));
    cur.clear();
    raw_null = false;
  };
  for (std::size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (c == '\t') {
      end_field(i);
      field_start = i + 1;
      continue;
    }
    if (c != '\\' || i + 1 == line.size()) {
      cur += c;
      continue;
    }
    const char e = line[++i];
    switch (e) {
      case 'b': cur += '\b'; break;
      case 'f': cur += '\f'; break;
      case 'n': cur += '\n'; break;
      case 'r': cur += '\r'; break;
      case 't': cur += '\t'; break;
      case 'v': cur += '\v'; break;
      case 'N':
        if (i - 1 == field_start) raw_null = true;
        cur += 'N';  // kept in case more follows (then it is not a NULL marker)
        break;
      case 'x': {
        int v = 0, n = 0;
        while (n < 2 && i + 1 < line.size() && hex_digit(line[i + 1]) >= 0) v = v * 16 + hex_digit(line[++i]), ++n;
        if (n == 0)
          cur += 'x';
        else
          cur += static_cast<char>(v);
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0', n = 1;
          while (n < 3 && i + 1 < line.size() && line[i + 1] >= '0' && line[i + 1] <= '7') v = v * 8 + (line[++i] - '0'), ++n;
          cur += static_cast<char>(v & 0xff);
        } else {
          cur += e;
        }
    }
  }
  end_field(line.size());
}

PQSCOPE_DECL char copy_direction(std::string_view sql) { return copy_stream_direction(sql); }

}  // namespace pqscope::detail
#endif

namespace pqscope::detail {

// Rows into COPY's text format, gathered in a buffer the front end sends.
class copy_row_encoder {
 public:
  // One row: one value per column, converted as parameters are; std::nullopt or
  // nullptr is NULL. A value that does not convert leaves no part of its row.
  template <class... Ts>
  void write_row(const Ts&... values) {
    const std::size_t start = buf_.size();
    try {
      std::size_t column = 0;
      ((column > 0 ? buf_.put('\t') : void(), put_field(values, column), ++column), ...);
    } catch (...) {
      buf_.truncate(start);
      throw;
    }
    buf_.put('\n');
  }
  void write_raw(std::string_view text) { buf_.append(text.data(), text.size()); }

  [[nodiscard]] copy_buffer& buffer() noexcept { return buf_; }
  [[nodiscard]] const copy_buffer& buffer() const noexcept { return buf_; }

 private:
  // One value, converted as a parameter is, straight into the row: numbers need no
  // escaping, strings are escaped from where they are, the rest through to_text().
  template <class T>
  void put_field(const T& v, std::size_t column) {
    using U = std::decay_t<T>;
    // A char buffer is read up to its end, as a parameter is; so is any other type
    // without a form of its own here.
    constexpr bool direct = !std::is_array_v<T> &&
                            (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t> ||
                             is_optional<U>::value || is_chars_number<U>::value || has_write_unescaped<U>::value ||
                             std::is_same_v<U, const char*> || std::is_same_v<U, char*> ||
                             std::is_same_v<U, std::string> || std::is_same_v<U, std::string_view>);
    if constexpr (!direct) {
      put_converted(v);
    } else if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t>) {
      buf_.append("\\N", 2);
    } else if constexpr (is_optional<U>::value) {
      if (v)
        put_field(*v, column);
      else
        buf_.append("\\N", 2);
    } else if constexpr (is_chars_number<U>::value) {
      char* at = buf_.room(24);
      buf_.commit(std::to_chars(at, at + 24, v).ptr);
    } else if constexpr (has_write_unescaped<U>::value) {
      buf_.commit(value_traits<U>::write_unescaped(buf_.room(value_traits<U>::unescaped_size), v));
    } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
      if (v == nullptr)
        buf_.append("\\N", 2);
      else
        put_text(std::string_view(v), column);
    } else {
      put_text(v, column);  // std::string, std::string_view
    }
  }
  // Through value_traits<T>::to_text, as a parameter is.
  template <class T>
  void put_converted(const T& v) {
    params_.assign(v);
    if (params_.values()[0] == nullptr)
      buf_.append("\\N", 2);
    else
      buf_.append_escaped(params_.values()[0]);
  }
  PQSCOPE_DECL void put_text(std::string_view text, std::size_t column);

  copy_buffer buf_;
  param_list params_;
};

// Lines of COPY TO STDOUT into fields, and fields into typed values.
class copy_row_decoder {
 public:
  // Line `number` (from 1) of the COPY, as Ts... (std::optional<T> for a column
  // that may be NULL). The values own their text: the next line reuses the fields.
  template <class... Ts>
  std::tuple<Ts...> row(std::string_view line, std::uint64_t number) {
    static_assert(!(is_text_view<Ts>::value || ...),
                  "pqscope: copy_reader::next<std::string_view>() would point into a buffer the next row "
                  "overwrites; read std::string (or std::optional<std::string>)");
    number_ = number;
    parse_copy_row(line, fields_);
    if (fields_.size() != sizeof...(Ts))
      throw conversion_error("COPY row " + std::to_string(number_) + " has " + std::to_string(fields_.size()) +
                             " column(s), but next<...>() asks for " + std::to_string(sizeof...(Ts)));
    return convert<Ts...>(std::index_sequence_for<Ts...>{});
  }

 private:
  template <class T>
  T field_as(std::size_t i) const {
    const std::optional<std::string>& f = fields_[i];
    if constexpr (is_optional<T>::value) {
      if (!f) return std::nullopt;
      return T(value_traits<typename T::value_type>::from_text(*f));
    } else {
      if (!f)
        throw conversion_error("column " + std::to_string(i) + " of COPY row " + std::to_string(number_) +
                               " is NULL; read it as std::optional<T>");
      return value_traits<T>::from_text(*f);
    }
  }
  template <class... Ts, std::size_t... I>
  std::tuple<Ts...> convert(std::index_sequence<I...>) const {
    return std::tuple<Ts...>(field_as<Ts>(I)...);
  }

  std::vector<std::optional<std::string>> fields_;
  std::uint64_t number_ = 0;
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/copy_rows.ipp>
// The bodies of <pqscope/detail/copy_rows.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/copy_rows.hpp> (inlined above)

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL void copy_row_encoder::put_text(std::string_view text, std::size_t column) {
  if (std::memchr(text.data(), '\0', text.size()) != nullptr)
    throw usage_error("COPY column " + std::to_string(column + 1) +
                      " contains a NUL byte, which PostgreSQL text cannot hold; strip it, or send binary data as "
                      "hex text into a bytea column");
  buf_.append_escaped(text);
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/copy_text.hpp> (inlined above)
// #include <pqscope/detail/scope_machine.hpp>
// The scope state machine: the whole of pqscope's transaction logic, and no I/O.
// This header declares it; its bodies are in impl/, by what they do:
// scope_machine_queue.ipp (checking and queuing statements, planning a batch),
// scope_machine_apply.ipp (applying a batch's answers), scope_machine_scopes.ipp
// (frames, the doomed state, ending scopes). sync_session.hpp is the blocking loop
// around it; asio/connection.hpp the coroutine one.
//
// A connection holds a stack of frames, one per open scope. Frame 0 is the
// transaction; a nested frame owns a savepoint unless it was opened with
// savepoint = false. Nothing is sent when a scope opens: its BEGIN or SAVEPOINT
// waits in the queue and goes out in the same pipeline batch as the next
// statement (one round trip), as do RELEASE and ROLLBACK TO of scopes that ended.
// Only the end of the outermost scope is sent at once, so that no transaction is
// ever left idle behind PgBouncer.
//
// The machine never sends anything itself. An operation queues what it needs and
// may ask for a send; the front end then loops
//     while (m.wants_send()) m.apply(exchange(m.plan()));
// (plan: the statements of one batch, ending in one sync; apply: their answers)
// and finally calls the operation's end step, which throws or returns. The
// blocking connection and any non-blocking front end share this one machine.
//
// Every queued item has a `level`: the index of the innermost frame whose
// savepoint would undo it. Rolling back frame k drops what is queued at level
// >= k (unless statements wait there, which must still go out); ending frame k
// moves what it leaves behind down to level k - 1.
//
// A failure inside a scope dooms it: `doom_` names the innermost frame that owns
// a savepoint (or the transaction) and the first error. Until that frame is
// rolled back, statements and commits throw transaction_aborted without a round
// trip; committing it rolls it back and throws.
//
// Batched attempts (transaction_options::batch, outermost atomic() only): user
// statements wait in the queue too, and go out when a result is read, on flush(),
// or with the COMMIT. A failure in such a send voids the whole attempt: it is
// rolled back at once, its callbacks are dropped, and atomic() runs the function
// again unbatched, where errors surface where they happen. So a savepoint is only
// needed where a scope rolls back or stays open across a send.

#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/callback.hpp> (inlined above)
// #include <pqscope/driver.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/stats.hpp> (inlined above)
// #include <pqscope/wal_position.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/in_doubt.hpp>
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

// #include <pqscope/reply.hpp> (inlined above)
// #include <pqscope/wal_position.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

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
// #include <pqscope/detail/impl/in_doubt.ipp>
// The bodies of <pqscope/detail/in_doubt.hpp>.

// #include <pqscope/detail/in_doubt.hpp> (inlined above)

#include <cstddef>
#include <string>
#include <utility>

namespace pqscope::detail {

PQSCOPE_DECL bool read_probe(const result& r, in_doubt& out) {
  if (r.size() != 1 || r.columns() != 4 || r[0][0].is_null()) return false;
  for (std::size_t c = 1; c < 4; ++c)
    if (r[0][c].is_null()) return false;
  out.xid = std::string(r[0][0].text());
  out.first_write = wal_position::parse(r[0][1].text());
  out.timeline = std::string(r[0][2].text());
  out.replayed = std::string(r[0][3].text());
  return true;
}

PQSCOPE_DECL verdict_question::verdict_question(const in_doubt& q)
    // At a page boundary the insert position counts the next page's header, which
    // no replay position ever does.
    : position_(q.first_write.record_end().to_string()),
      values_{q.xid.c_str(), position_.c_str(), q.timeline.c_str(), q.replayed.c_str()} {}

PQSCOPE_DECL verdict read_verdict(const reply& r, const in_doubt& q) {
  using then = verdict::then;
  if (r.st != reply::status::ok) return {then::done, "error: " + r.failure().message};
  if (r.res.size() != 1 || r.res.columns() != 2) return {then::done, "an answer of another shape"};
  if (r.res[0][0].is_null()) return {then::done, "unknown xid"};  // older than the server keeps
  std::string word(r.res[0][0].text());
  if (word == "committed" || word == "aborted") return {then::done, std::move(word)};
  if (word == "in progress") return {then::ask_again, "still in progress"};
  if (word == "standby") return {then::reconnect, "the server that answered is a standby"};
  if (word == "absent")
    return {then::done, "absent: the server that answered replayed up to " + std::string(r.res[0][1].text()) +
                            " before it left recovery, and the transaction's first write ended at " +
                            q.first_write.to_string()};
  if (word == "no history")
    return {then::done, "the server that answered is on another timeline than " + q.timeline +
                            " and reports no replay position, so its history cannot be checked"};
  return {then::done, "pg_xact_status said " + word};
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/sql_facts.hpp>
// What pqscope's checks read off a statement's text before it is queued, and a
// small cache of it: an application runs the same few statements again and again,
// and reading a text costs more than the rest of queuing it.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/session_state.hpp>
// Statements that leave session state behind, refused on connections with
// pooling::transaction. Behind PgBouncer in transaction pooling mode the server
// connection goes back to the pool after every transaction (after every statement
// in autocommit), so whatever a statement leaves in the server session is
// inherited by the next client that borrows it.
//
// The text is read as the server's lexer reads it (sql_lexer.hpp), and twice when
// it has a backslash: once with standard_conforming_strings on and once off, so
// that the verdict holds whichever the session has. Every statement of the text
// is read; what cannot be shown to end with the transaction is refused. Refused:
//  - SET, except SET LOCAL, SET TRANSACTION and SET CONSTRAINTS (all of which end
//    with the transaction), and RESET. Except the parameters PgBouncer itself
//    tracks per client and restores on every server connection it lends:
//    client_encoding (SET NAMES), DateStyle, TimeZone (SET TIME ZONE),
//    standard_conforming_strings and application_name.
//  - LISTEN, UNLISTEN; PREPARE, EXECUTE, DEALLOCATE (PREPARE TRANSACTION is left
//    to the transaction control check); DECLARE ... WITH HOLD; DISCARD; LOAD.
//  - UPDATE of pg_settings (a session-level SET by another name).
//  - Temporary objects, which outlive the transaction: CREATE TEMP TABLE without
//    ON COMMIT DROP, temporary views and sequences, anything created in pg_temp,
//    SELECT ... INTO TEMP; also behind EXPLAIN ANALYZE.
//  - Calls, anywhere in the code, of the session advisory lock functions
//    (pg_advisory_lock, pg_try_advisory_lock, their _shared forms, pg_advisory_unlock*),
//    and of set_config() unless its third argument is the literal true ('t', 'on',
//    ... as a plain string, optionally ::bool). Names are compared as the server
//    resolves them: case-folded, "quoted", U&"escaped", schema-qualified or not.
//  - DO blocks whose body (in any string form) does any of the above, runs dynamic
//    SQL (EXECUTE), or is in a language other than PL/pgSQL.
// Not seen, so sent as written: what functions, procedures, triggers and rules do
// when they run (a function may SET or lock internally); SET inside dblink and
// the like; views that become temporary because they read a temporary table.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/sql_text.hpp> (inlined above)

namespace pqscope::detail {

// Empty when the statement is safe behind a transaction-pooling PgBouncer;
// otherwise why not, and what to use instead.
PQSCOPE_DECL std::string session_state_hazard(std::string_view sql);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/session_state.ipp>
// The bodies of <pqscope/detail/session_state.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/session_state.hpp> (inlined above)

namespace pqscope::detail {

namespace session_scan {

constexpr std::string_view use_set_local =
    "use set_local() inside a scope (SET LOCAL / set_config(..., true)), which ends with the transaction";
constexpr std::string_view use_xact_lock = "use pg_advisory_xact_lock() inside a scope, which the transaction's end releases";

inline std::string refuse(std::string_view statement, std::string_view why, std::string_view instead) {
  std::string m = "execute(\"";
  m += statement;
  m += "\") acts on the server session, which PgBouncer in transaction pooling mode (pooling::transaction) "
       "lends to other clients: ";
  m += why;
  m += "; ";
  m += instead;
  m += ". To send it anyway, wrap the SQL in pqscope::allow_session_state()";
  return m;
}

// A statement's tokens [b, e), read under one setting of standard_conforming_strings.
struct stmt {
  const std::vector<sql_token>& tokens;
  std::size_t b, e;
  bool standard;
  [[nodiscard]] const sql_token& at(std::size_t i) const {
    static const sql_token none;
    return i < e ? tokens[i] : none;
  }
};

// How a name is written in a message: as written, or decoded for U&"...".
inline std::string shown(const sql_token& t) {
  if (t.kind == sql_token::ident) return std::string(t.text);
  std::string n;
  if (t.kind == sql_token::uident && token_name(t, n)) return n;
  return std::string(t.body);
}

// Setting names compare case-insensitively, quoted or not.
inline bool setting_is(const sql_token& t, std::string_view lower) {
  std::string n;
  if (!token_name(t, n) || n.size() != lower.size()) return false;
  for (std::size_t i = 0; i < n.size(); ++i)
    if ((n[i] >= 'A' && n[i] <= 'Z' ? static_cast<char>(n[i] - 'A' + 'a') : n[i]) != lower[i]) return false;
  return true;
}

// PgBouncer keeps these per client and sets them on every server connection it
// lends that client, so a session-level SET of one of them does not leak.
// `i` is the token after SET or RESET.
inline bool tracked_by_pgbouncer(const stmt& s, std::size_t i) {
  if (s.at(i).keyword("SESSION") && !s.at(i + 1).is('.')) ++i;
  const sql_token& name = s.at(i);
  if (s.at(i + 1).is('.')) return false;  // a custom setting such as app.timezone
  if (name.keyword("TIME")) return s.at(i + 1).keyword("ZONE");
  if (name.keyword("NAMES")) return true;
  for (std::string_view n : {"timezone", "datestyle", "client_encoding", "application_name", "standard_conforming_strings"})
    if (setting_is(name, n)) return true;
  return false;
}

// "SET search_path ...": the keyword and the setting name as written.
inline std::string label(std::string_view keyword, const stmt& s, std::size_t i) {
  std::string m(keyword);
  if (s.at(i).keyword("SESSION")) {
    m += " SESSION";
    ++i;
  }
  for (char sep = ' '; s.at(i).is_name() && s.at(i).text.size() <= 63; sep = '.') {
    m += sep;
    m += shown(s.at(i));
    if (!s.at(i + 1).is('.')) break;
    i += 2;
  }
  m += " ...";
  return m;
}

// pg_temp, or a backend's own pg_temp_N: the schema of temporary objects.
inline bool temp_schema(const sql_token& t) {
  std::string n;
  if (!token_name(t, n) || n.compare(0, 7, "pg_temp") != 0) return false;
  if (n.size() == 7) return true;
  if (n[7] != '_' || n.size() == 8) return false;
  for (std::size_t k = 8; k < n.size(); ++k)
    if (n[k] < '0' || n[k] > '9') return false;
  return true;
}

// A plain string the server reads as boolean true (parse_bool: prefixes of
// "true" and "yes", "on", "1"). Escape forms are not trusted to be read right.
inline bool spells_true(const sql_token& t) {
  if (t.kind != sql_token::string || t.text.front() != '\'' ||
      t.body.find_first_of("\\'") != std::string_view::npos)
    return false;
  std::string_view v = t.body;
  while (!v.empty() && sql_space(v.front())) v.remove_prefix(1);
  while (!v.empty() && sql_space(v.back())) v.remove_suffix(1);
  auto prefix_of = [&](std::string_view word, std::size_t min) {
    if (v.size() < min || v.size() > word.size()) return false;
    for (std::size_t i = 0; i < v.size(); ++i)
      if ((v[i] >= 'A' && v[i] <= 'Z' ? static_cast<char>(v[i] - 'A' + 'a') : v[i]) != word[i]) return false;
    return true;
  };
  return prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || v == "1";
}

// set_config(a, b, c) at `open` (its parenthesis): whether c is the literal true,
// so that the setting ends with the transaction.
inline bool local_set_config(const stmt& s, std::size_t open) {
  int depth = 0, commas = 0;
  std::size_t i = open + 1;
  for (; i < s.e; ++i) {
    const sql_token& t = s.tokens[i];
    if (t.is('(') || t.is('[')) {
      ++depth;
    } else if (t.is(')') || t.is(']')) {
      if (--depth < 0) return false;  // fewer than three arguments
    } else if (depth == 0 && t.is(',') && ++commas == 2) {
      break;
    }
  }
  const sql_token& value = s.at(i + 1);
  if (!value.keyword("TRUE") && !spells_true(value)) return false;
  std::size_t k = i + 2;
  if (s.at(k).kind == sql_token::symbol && s.at(k).text == "::") {
    if (!s.at(k + 1).keyword("BOOL") && !s.at(k + 1).keyword("BOOLEAN")) return false;
    k += 2;
  }
  return s.at(k).is(')');
}

inline bool session_lock_function(const sql_token& t) {
  for (std::string_view n : {"pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock",
                             "pg_try_advisory_lock_shared", "pg_advisory_unlock", "pg_advisory_unlock_shared",
                             "pg_advisory_unlock_all"})
    if (names(t, n)) return true;
  return false;
}

// What any statement may do wherever in its text: calls, UPDATE pg_settings,
// SELECT ... INTO TEMP.
inline std::string anywhere(const stmt& s) {
  const bool selects = s.at(s.b).keyword("SELECT") || s.at(s.b).keyword("WITH") || s.at(s.b).is('(');
  for (std::size_t i = s.b; i < s.e; ++i) {
    const sql_token& t = s.tokens[i];
    if (t.is_name() && s.at(i + 1).is('(')) {
      if (session_lock_function(t))
        return refuse(shown(t) + "(...)",
                      "a session advisory lock stays with the server connection, not with this client, after the "
                      "transaction",
                      use_xact_lock);
      if (names(t, "set_config") && !local_set_config(s, i + 1))
        return refuse("set_config(...)",
                      "set_config() whose third argument is not the literal true is a session-level setting, which "
                      "outlives the transaction",
                      use_set_local);
    }
    if (t.keyword("UPDATE")) {
      std::size_t k = i + 1;
      if (s.at(k).keyword("ONLY")) ++k;
      while (s.at(k).is_name() && s.at(k + 1).is('.')) k += 2;
      if (names(s.at(k), "pg_settings"))
        return refuse("UPDATE pg_settings ...", "updating pg_settings is a session-level SET, which outlives the transaction",
                      use_set_local);
    }
    if (selects && t.keyword("INTO") && !(i > s.b && s.at(i - 1).keyword("INSERT")) &&
        !(i > s.b && s.at(i - 1).keyword("MERGE"))) {
      std::size_t k = i + 1;
      if (s.at(k).keyword("LOCAL") || s.at(k).keyword("GLOBAL")) ++k;
      if (s.at(k).keyword("TEMP") || s.at(k).keyword("TEMPORARY") || (temp_schema(s.at(k)) && s.at(k + 1).is('.')))
        return refuse("SELECT ... INTO TEMP ...",
                      "a temporary table outlives the transaction, and the next client of the server connection "
                      "sees it",
                      "use CREATE TEMP TABLE ... ON COMMIT DROP AS SELECT ... inside a scope");
    }
  }
  return {};
}

// CREATE of a temporary object: allowed only for a table dropped at commit.
inline std::string create_temp(const stmt& s) {
  std::size_t i = s.b + 1;
  if (s.at(i).keyword("OR") && s.at(i + 1).keyword("REPLACE")) i += 2;
  bool temp = false;
  if (s.at(i).keyword("GLOBAL") || s.at(i).keyword("LOCAL")) ++i;
  if (s.at(i).keyword("TEMP") || s.at(i).keyword("TEMPORARY")) {
    temp = true;
    ++i;
  }
  if (s.at(i).keyword("UNLOGGED")) ++i;
  const sql_token& kind = s.at(i);
  for (std::size_t k = s.b; k < s.e && !temp; ++k) temp = temp_schema(s.tokens[k]) && s.at(k + 1).is('.');
  if (!temp) return {};
  if (kind.keyword("TABLE")) {
    for (std::size_t k = i; k + 2 < s.e; ++k)
      if (s.tokens[k].keyword("ON") && s.tokens[k + 1].keyword("COMMIT") && s.tokens[k + 2].keyword("DROP")) return {};
    return refuse("CREATE TEMP TABLE ...",
                  "a temporary table without ON COMMIT DROP outlives the transaction, and the next client of the "
                  "server connection sees it",
                  "add ON COMMIT DROP and create it inside the scope that uses it");
  }
  return refuse("CREATE TEMP " + std::string(kind.is_name() ? kind.text : std::string_view("object")) + " ...",
                "a temporary object outlives the transaction, and the next client of the server connection sees it",
                "use a temporary table with ON COMMIT DROP inside a scope, or a WITH query");
}

inline std::string hazard_in(std::string_view sql, bool standard, int depth);

// DO [LANGUAGE l] 'body' [LANGUAGE l]: the body is code that runs now.
inline std::string do_block(const stmt& s, int depth) {
  if (depth > 0) return {};  // a DO inside PL/pgSQL is a syntax error
  std::size_t i = s.b + 1;
  const sql_token* language = nullptr;
  if (s.at(i).keyword("LANGUAGE")) {
    language = &s.at(i + 1);
    i += 2;
  }
  std::string body, piece;
  // 'a'\n'b' continues a string; several strings in a row are read as one (more
  // than the server would: without a newline between them it rejects them).
  for (; i < s.e && s.tokens[i].is_string(); ++i) {
    if (!token_string(s.tokens[i], s.standard, piece)) return {};  // the server rejects the escape
    body += piece;
  }
  if (s.at(i).keyword("LANGUAGE")) language = &s.at(i + 1);
  if (language != nullptr) {
    std::string lang;
    if (!token_name(*language, lang) && !token_string(*language, s.standard, lang)) lang.clear();
    for (char& c : lang) c = c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    if (lang != "plpgsql")
      return refuse("DO ...", "pqscope reads PL/pgSQL bodies only, and cannot tell what this one leaves behind",
                    "put the code in a function, or check it yourself");
  }
  // PL/pgSQL compiles the body with the session's standard_conforming_strings.
  std::string m = hazard_in(body, true, depth + 1);
  if (m.empty() && body.find('\\') != std::string::npos) m = hazard_in(body, false, depth + 1);
  return m;
}

// The rules read from a statement's first keyword, at token `b`.
inline std::string leading(const stmt& s, int depth) {
  const sql_token& first = s.at(s.b);
  const sql_token& second = s.at(s.b + 1);
  if (first.keyword("SET") || first.keyword("RESET")) {
    if (tracked_by_pgbouncer(s, s.b + 1)) return {};
    if (first.keyword("RESET"))
      return refuse(label("RESET", s, s.b + 1), "RESET changes the setting for the whole server session", use_set_local);
    const bool dotted = s.at(s.b + 2).is('.');  // SET local.x: a setting named like a keyword
    if (!dotted && (second.keyword("LOCAL") || second.keyword("TRANSACTION") || second.keyword("CONSTRAINTS")))
      return {};
    if (second.keyword("SESSION") && s.at(s.b + 2).keyword("CHARACTERISTICS"))
      return refuse("SET SESSION CHARACTERISTICS ...", "it changes the default transaction modes of the server session",
                    "set isolation / read_only / deferrable in the outermost scope's transaction_options");
    return refuse(label("SET", s, s.b + 1), "a session-level SET outlives the transaction", use_set_local);
  }
  if (first.keyword("LISTEN") || first.keyword("UNLISTEN"))
    return refuse(first.keyword("LISTEN") ? "LISTEN ..." : "UNLISTEN ...",
                  "notifications arrive on a server connection the client does not keep",
                  "use a dedicated direct connection (pooling::none, not through PgBouncer)");
  if (first.keyword("EXECUTE") && depth > 0)
    return refuse("DO ... EXECUTE ...", "pqscope cannot see what dynamic SQL in a DO body runs",
                  "run the statements with execute() instead");
  if ((first.keyword("PREPARE") && !second.keyword("TRANSACTION")) || first.keyword("EXECUTE") ||
      first.keyword("DEALLOCATE"))
    return refuse(first.keyword("PREPARE") ? "PREPARE ..." : first.keyword("EXECUTE") ? "EXECUTE ..." : "DEALLOCATE ...",
                  "prepared statements live in the server session", "pass parameters to execute() instead");
  if (first.keyword("DECLARE")) {
    // DECLARE name [BINARY] [ASENSITIVE | INSENSITIVE] [[NO] SCROLL] CURSOR [WITH[OUT] HOLD] FOR query
    for (std::size_t i = s.b + 1; i < s.e && !s.tokens[i].keyword("FOR"); ++i)
      if (s.tokens[i].keyword("WITH") && s.at(i + 1).keyword("HOLD"))
        return refuse("DECLARE ... WITH HOLD", "a WITH HOLD cursor outlives the transaction",
                      "DECLARE it without HOLD inside a scope and FETCH from it before the scope ends");
  }
  if (first.keyword("DISCARD"))
    return refuse("DISCARD ...", "it acts on whichever server session the pooler lends, not on this client's",
                  "leave resetting server sessions to PgBouncer (server_reset_query)");
  if (first.keyword("LOAD"))
    return refuse("LOAD ...", "the library stays loaded in the server process the next client gets",
                  "preload it with shared_preload_libraries or session_preload_libraries");
  if (first.keyword("CREATE")) return create_temp(s);
  if (first.keyword("DO")) return do_block(s, depth);
  if (first.keyword("EXPLAIN")) {
    // EXPLAIN ANALYZE runs the statement (CREATE TABLE AS among them).
    std::size_t i = s.b + 1;
    if (s.at(i).is('(')) {
      while (i < s.e && !s.tokens[i].is(')')) ++i;
      ++i;
    }
    while (s.at(i).keyword("ANALYZE") || s.at(i).keyword("ANALYSE") || s.at(i).keyword("VERBOSE")) ++i;
    if (i < s.e && i > s.b) return leading(stmt{s.tokens, i, s.e, s.standard}, depth);
  }
  return {};
}

// Where PL/pgSQL statements start inside one ;-separated piece of a body.
inline bool starts_after(const sql_token& t) {
  return t.keyword("BEGIN") || t.keyword("THEN") || t.keyword("ELSE") || t.keyword("LOOP") || t.keyword("DECLARE") ||
         t.is('>');
}

inline std::string hazard_in(std::string_view sql, bool standard, int depth) {
  const sql_statements st = read_statements(sql, standard, depth == 0);
  if (st.broken) return {};  // the server rejects the whole text read this way
  for (const auto& [b, e] : st.ranges) {
    const stmt s{st.tokens, b, e, standard};
    if (depth > 0) {
      for (std::size_t i = b; i < e; ++i)
        if (st.tokens[i].keyword("EXECUTE"))
          return refuse("DO ... EXECUTE ...", "pqscope cannot see what dynamic SQL in a DO body runs",
                        "run the statements with execute() instead");
      for (std::size_t i = b; i < e; ++i) {
        if (i != b && !starts_after(st.tokens[i - 1])) continue;
        std::string m = leading(stmt{st.tokens, i, e, standard}, depth);
        if (!m.empty()) return m;
      }
    } else if (std::string m = leading(s, depth); !m.empty()) {
      return m;
    }
    if (std::string m = anywhere(s); !m.empty()) return m;
  }
  return {};
}

}  // namespace session_scan

PQSCOPE_DECL std::string session_state_hazard(std::string_view sql) {
  std::string m = session_scan::hazard_in(sql, true, 0);
  if (m.empty() && sql.find('\\') != std::string_view::npos) m = session_scan::hazard_in(sql, false, 0);
  return m;
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/sql_text.hpp> (inlined above)

namespace pqscope::detail {

// Where a text goes in a small direct-mapped cache: every byte read 8 at a time,
// which costs a fraction of std::hash's byte loop on a statement's text.
inline std::size_t slot_hash(std::string_view s) noexcept {
  // A multiply carries bits upward only, and the slot is taken from the low bits:
  // each word is folded in with a shift down, and the end is splitmix64's mixer.
  std::uint64_t h = s.size() * 0x9E3779B97F4A7C15ULL;
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
  }
  if (i < s.size()) {
    std::uint64_t w = 0;
    std::memcpy(&w, s.data() + i, s.size() - i);
    h = (h ^ w) * 0xBF58476D1CE4E5B9ULL;
  }
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ULL;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBULL;
  return static_cast<std::size_t>(h ^ (h >> 31));
}

struct sql_facts {
  int placeholders = 0;      // highest_placeholder(): -1 when the text cannot be read to its end
  std::string_view control;  // transaction_control_keyword(): a static text, or empty
  bool copy_stream = false;  // is_copy_stream()
  bool hazard_read = false;  // whether `hazard` was looked for (only pooling::transaction needs it)
  std::string hazard;        // session_state_hazard(): empty when safe
};

class sql_facts_cache {
 public:
  // The facts of `sql`, the session-state hazard included when `hazard` is true.
  // Valid until the next call. Throws only if memory runs out.
  const sql_facts& get(std::string_view sql, bool hazard);

 private:
  struct entry {
    std::string text;
    sql_facts facts;
    bool used = false;
  };
  static constexpr std::size_t slots = 64;     // direct-mapped by the text's hash
  static constexpr std::size_t longest = 4096;  // longer texts are read each time, not kept
  static void read(std::string_view sql, bool hazard, sql_facts& f);

  std::vector<entry> entries_;
  sql_facts uncached_;
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/sql_facts.ipp>
// The bodies of <pqscope/detail/sql_facts.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/sql_facts.hpp> (inlined above)

namespace pqscope::detail {

PQSCOPE_DECL void sql_facts_cache::read(std::string_view sql, bool hazard, sql_facts& f) {
  f.placeholders = highest_placeholder(sql);
  f.control = transaction_control_keyword(sql);
  f.copy_stream = is_copy_stream(sql);
  f.hazard_read = hazard;
  f.hazard = hazard ? session_state_hazard(sql) : std::string();
}

PQSCOPE_DECL const sql_facts& sql_facts_cache::get(std::string_view sql, bool hazard) {
  if (sql.size() > longest) {
    read(sql, hazard, uncached_);
    return uncached_;
  }
  if (entries_.empty()) entries_.resize(slots);
  entry& e = entries_[slot_hash(sql) % slots];
  if (!e.used || e.text != sql) {
    e.used = false;  // stays unused if reading throws
    read(sql, hazard, e.facts);
    e.text.assign(sql.data(), sql.size());
    e.used = true;
  } else if (hazard && !e.facts.hazard_read) {
    e.facts.hazard = session_state_hazard(sql);
    e.facts.hazard_read = true;
  }
  return e.facts;
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/prepared_statements.hpp>
// The named statements of one session (connection_options::prepare): which texts
// have one, under which name, and which to prepare next. The scope machine asks
// plan() for every user statement it puts in a batch and tells settle() what the
// Parse sent with it did. No I/O. A name is never parsed twice on a session:
// PgBouncer disconnects a client that does, so a Parse that did not take burns it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/sql_facts.hpp> (inlined above)

namespace pqscope::detail {

class prepared_statements {
 public:
  // How a statement goes out: unnamed (name == nullptr), or bound to `name`, after
  // its Parse when `parse`, of `text` instead of its own when set. Both are valid
  // until the next call.
  struct use {
    const char* name = nullptr;
    bool parse = false;
    const char* text = nullptr;
  };

  // How many names a session may make (0: nothing is prepared). Behind a pooler
  // (`pooled`), its max_prepared_statements; a full cache stops preparing new texts
  // (libpq 15 cannot send Close, and PgBouncer does not track SQL DEALLOCATE).
  void set_limit(std::size_t limit, bool pooled = false) noexcept {
    limit_ = limit;
    pooled_ = pooled;
  }
  [[nodiscard]] bool enabled() const noexcept { return limit_ > 0; }
  // The limit is a pooler's word (pooler_max_prepared_statements), which a lost statement proves wrong.
  [[nodiscard]] bool pooled() const noexcept { return pooled_; }
  [[nodiscard]] std::size_t made() const noexcept { return made_.size(); }
  // Every name made on this session, for a borrowed session handed back (DEALLOCATE).
  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return made_; }

  // A statement of this text and these parameter types goes out in the batch being
  // planned. Its second use is prepared (the Parse rides with it); later ones bind.
  PQSCOPE_DECL use plan(std::string_view text, int n_params, const unsigned* types);

  // Its batch answered: whether the Parse sent under `name` took.
  PQSCOPE_DECL void settle(std::string_view text, int n_params, const unsigned* types, const char* name,
                           bool parsed) noexcept;

  // The statement under `name` must not be used again (its plan's result type
  // changed after DDL): its text gets a new name on its next use. Behind a pooler
  // also a new text (a comment added): PgBouncer shares one server statement among
  // all clients that prepare the same text, and the old one keeps its old plan.
  PQSCOPE_DECL void forget(std::string_view text, int n_params, const unsigned* types) noexcept;

  // The session has none any more (a new session; DISCARD ALL; a pooler that lost them).
  PQSCOPE_DECL void forget_all() noexcept;

 private:
  enum class state : unsigned char { seen, parsing, ready };
  struct entry {
    bool used = false;
    state st = state::seen;
    unsigned uses = 0;
    std::string text;
    std::vector<unsigned> types;  // empty: the server infers every parameter's type
    std::string name;
    unsigned replans = 0;  // forget() behind a pooler
    std::string replanned;  // the text prepared instead, when replans > 0
  };
  static constexpr std::size_t slots = 256;     // by the text's and types' hash,
  static constexpr std::size_t ways = 4;        // in any of 4 slots from there: hot texts do not evict each other
  static constexpr std::size_t longest = 4096;  // longer texts are not prepared
  static constexpr unsigned threshold = 2;      // the use on which a text is prepared

  // The entry of this text and types (same = true), or the slot to take for it: a free
  // one, else the least used that no Parse of this batch waits on; nullptr if none.
  entry* find(std::string_view text, int n_params, const unsigned* types, bool& same) noexcept;

  // Names start with a prefix new for each session, so that statements a session
  // pooler hands on from another client (or this one's earlier session) never collide.
  PQSCOPE_DECL void new_prefix();

  std::vector<entry> entries_;
  std::size_t limit_ = 0;
  bool pooled_ = false;
  std::vector<std::string> made_;  // never more than limit_
  std::string prefix_;
  std::uint64_t next_ = 0;  // names are never reused on a session
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/prepared_statements.ipp>
// The bodies of <pqscope/detail/prepared_statements.hpp>: included at its end in
// header-only mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/prepared_statements.hpp> (inlined above)

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string_view>

namespace pqscope::detail {

PQSCOPE_DECL prepared_statements::entry* prepared_statements::find(std::string_view text, int n_params,
                                                                   const unsigned* types, bool& same) noexcept {
  std::size_t h = slot_hash(text);
  if (types != nullptr)
    for (int i = 0; i < n_params; ++i) h = (h ^ types[i]) * 0x9E3779B97F4A7C15ULL;
  h ^= h >> 32;
  auto matches = [&](const entry& e) {
    if (!e.used || e.text != text) return false;
    if (types == nullptr) return e.types.empty();
    if (e.types.size() != static_cast<std::size_t>(n_params)) return false;
    for (int i = 0; i < n_params; ++i)
      if (e.types[static_cast<std::size_t>(i)] != types[i]) return false;
    return true;
  };
  entry* victim = nullptr;
  for (std::size_t w = 0; w < ways; ++w) {
    entry& e = entries_[(h + w) % slots];
    if (matches(e)) {
      same = true;
      return &e;
    }
    if (!e.used) {
      if (victim == nullptr || victim->used) victim = &e;
    } else if (e.st != state::parsing && (victim == nullptr || (victim->used && e.uses < victim->uses))) {
      victim = &e;  // the least used, unless a Parse of this batch waits on it
    }
  }
  same = false;
  return victim;
}

PQSCOPE_DECL prepared_statements::use prepared_statements::plan(std::string_view text, int n_params,
                                                                const unsigned* types) {
  if (!enabled() || text.size() > longest) return {};
  if (entries_.empty()) entries_.resize(slots);
  bool same = false;
  entry* e = find(text, n_params, types, same);
  if (same) {
    ++e->uses;
    const char* own = e->replans > 0 ? e->replanned.c_str() : nullptr;
    if (e->st != state::seen) return {e->name.c_str(), false, own};  // ready, or parsed earlier in this batch
  } else {
    if (e == nullptr) return {};  // every slot it may use waits on a Parse of this batch
    // Replaced: a name it had stays on the server unused, and counts against the limit.
    e->used = false;
    e->text.assign(text.data(), text.size());
    e->types.assign(types, types == nullptr ? types : types + n_params);
    e->name.clear();
    e->replans = 0;
    e->replanned.clear();
    e->st = state::seen;
    e->uses = 1;
    e->used = true;
  }
  if (e->uses < threshold || made_.size() >= limit_) return {};
  if (prefix_.empty()) new_prefix();
  e->name = prefix_ + std::to_string(++next_);
  e->st = state::parsing;
  made_.push_back(e->name);
  return {e->name.c_str(), true, e->replans > 0 ? e->replanned.c_str() : nullptr};
}

PQSCOPE_DECL void prepared_statements::settle(std::string_view text, int n_params, const unsigned* types,
                                              const char* name, bool parsed) noexcept {
  if (entries_.empty()) return;
  bool same = false;
  entry* e = find(text, n_params, types, same);
  if (!same || e->st != state::parsing || e->name != name) return;
  if (parsed) {
    e->st = state::ready;
  } else {
    e->st = state::seen;  // the name is burnt; the next use tries a new one
    e->name.clear();
  }
}

PQSCOPE_DECL void prepared_statements::forget(std::string_view text, int n_params, const unsigned* types) noexcept {
  if (entries_.empty()) return;
  bool same = false;
  entry* e = find(text, n_params, types, same);
  if (!same) return;
  e->st = state::seen;
  e->name.clear();
  if (!pooled_) return;
  try {
    // A line comment could swallow what follows; a block comment after a newline cannot.
    std::string t(text);
    t += "\n/* pqscope: planned again (" + std::to_string(++e->replans) + ") */";
    e->replanned = std::move(t);
  } catch (...) {
    // out of memory: the text as it was; the server may refuse it once more
  }
}

PQSCOPE_DECL void prepared_statements::forget_all() noexcept {
  for (entry& e : entries_) {
    e.st = state::seen;
    e.name.clear();
  }
  made_.clear();
  prefix_.clear();  // the next name starts a new prefix
}

PQSCOPE_DECL void prepared_statements::new_prefix() {
  static std::atomic<std::uint64_t> sessions{0};
  std::uint64_t x = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  x ^= (static_cast<std::uint64_t>(::getpid()) << 32) ^ (sessions.fetch_add(1) * 0x9E3779B97F4A7C15ULL);
  x ^= x >> 29;
  char buf[16];
  std::snprintf(buf, sizeof buf, "pqs%08x_", static_cast<unsigned>(x ^ (x >> 32)));
  prefix_ = buf;
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/process.hpp>
// Which process this is: a connection opened before a fork belongs to the parent,
// and the fork check runs on every statement and scope.

#include <sys/types.h>

// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// The process id, read once and refreshed in the child by a fork handler: getpid()
// is a system call (glibc no longer caches it) and the fork check runs on every
// statement and scope.
PQSCOPE_DECL pid_t current_pid() noexcept;

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/process.ipp>
// The bodies of <pqscope/detail/process.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/process.hpp> (inlined above)

#include <pthread.h>
#include <unistd.h>

#include <atomic>

namespace pqscope::detail {

PQSCOPE_DECL std::atomic<pid_t>& pid_slot() noexcept {
  static std::atomic<pid_t> pid{::getpid()};
  return pid;
}
PQSCOPE_DECL pid_t current_pid() noexcept {
  static const bool registered = [] {
    ::pthread_atfork(nullptr, nullptr, [] { pid_slot().store(::getpid(), std::memory_order_relaxed); });
    pid_slot().store(::getpid(), std::memory_order_relaxed);  // in case a fork came before registration
    return true;
  }();
  (void)registered;
  return pid_slot().load(std::memory_order_relaxed);
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/sql_text.hpp> (inlined above)
// #include <pqscope/detail/statement_slot.hpp>
// A user statement on its way: its text and parameters, then its answer or its
// error. The scope machine queues slots; the front end that owns the machine (a
// `sender`) sends them when an answer is asked for.

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

// #include <pqscope/reply.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// The error a failed statement raises: the server's fields, the statement's text
// (for the caret), and `context` before the message (set_local names its setting).
PQSCOPE_DECL std::exception_ptr sql_error_ptr(const reply& r, std::string_view sql, const std::string& context = {});

// Whatever can send the queue now: the front end that owns the machine.
class sender {
 public:
  sender() = default;
  sender(const sender&) = delete;
  sender& operator=(const sender&) = delete;
  sender(sender&&) = delete;
  sender& operator=(sender&&) = delete;
  virtual ~sender() = default;
  virtual void flush() = 0;
};

// A user statement and, once it is known, its answer. Queued statements of a
// batched attempt own a copy of their text and parameters; a statement sent at
// once borrows the caller's.
class statement_slot final : public deferred_answer {
 public:
  enum class state { queued, answered, failed };

  PQSCOPE_DECL result wait() override;  // inline in header-only mode: no key function, no vtable in every TU

  void answer(result r);
  void fail(std::exception_ptr e);

  // Copies the text and parameters, so the statement can wait past the caller's call.
  void own();

  // Back to a fresh slot's state, for the machine to use again (scope_machine::recycle).
  void recycle() noexcept;

  state st = state::queued;
  result res;
  std::exception_ptr error;
  std::weak_ptr<sender> owner;
  statement stmt;        // what is sent
  std::string_view sql;  // for the observer
  std::size_t depth = 0, attempt = 0;
  bool batched = false;
  bool resent = false;  // sent again after the session lost its prepared statement

 private:
  // own(): the text, then each non-NULL value, each NUL-terminated, in one buffer;
  // the value pointers and types inline for the few parameters most statements have.
  static constexpr int inline_params = 4;
  [[nodiscard]] bool owned() const noexcept {
    return stmt.sql == inline_text_ || (heap_text_ && stmt.sql == heap_text_.get());
  }
  char inline_text_[120] = {};
  std::unique_ptr<char[]> heap_text_;
  const char* inline_pointers_[inline_params] = {};
  unsigned inline_types_[inline_params] = {};
  std::vector<const char*> pointers_;
  std::vector<unsigned> types_;
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/statement_slot.ipp>
// The bodies of <pqscope/detail/statement_slot.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/statement_slot.hpp> (inlined above)

#include <cstring>

// #include <pqscope/errors.hpp> (inlined above)

namespace pqscope::detail {

PQSCOPE_DECL std::exception_ptr sql_error_ptr(const reply& r, std::string_view sql, const std::string& context) {
  try {
    const reply_error& e = r.failure();
    if (e.misuse) throw usage_error(context + e.message);
    throw_sql_error(error_fields{e.sqlstate, context + e.message, e.detail, e.hint, std::string(sql), e.position,
                                 e.schema, e.table, e.column, e.datatype, e.constraint});
  } catch (...) {
    return std::current_exception();
  }
}

PQSCOPE_DECL result statement_slot::wait() {
  if (st == state::queued) {
    std::shared_ptr<sender> s = owner.lock();
    if (!s) throw connection_error("the connection was closed before this statement was sent");
    s->flush();
  }
  if (st == state::failed) std::rethrow_exception(error);
  if (st == state::queued) throw usage_error("this statement's answer is not available");  // cannot happen
  return res;
}

PQSCOPE_DECL void statement_slot::answer(result r) {
  st = state::answered;
  res = std::move(r);
}

PQSCOPE_DECL void statement_slot::fail(std::exception_ptr e) {
  st = state::failed;
  error = std::move(e);
}

PQSCOPE_DECL void statement_slot::recycle() noexcept {
  st = state::queued;
  res = result();
  error = nullptr;
  owner.reset();
  stmt = statement{};
  sql = {};
  depth = attempt = 0;
  batched = resent = false;
  heap_text_.reset();  // a long text's copy is not kept for the next statement
}

PQSCOPE_DECL void statement_slot::own() {
  if (owned()) return;
  const int n = stmt.n_params;
  const auto count = static_cast<std::size_t>(n);
  std::size_t total = sql.size() + 1;
  for (int i = 0; i < n; ++i)
    if (stmt.values[i] != nullptr) total += std::strlen(stmt.values[i]) + 1;
  // Most statements fit the slot's own buffer: no allocation for them.
  char* text = inline_text_;
  if (total > sizeof inline_text_) {
    heap_text_.reset(new char[total]);
    text = heap_text_.get();
  }
  const char** pointers = inline_pointers_;
  unsigned* types = inline_types_;
  if (n > inline_params) {
    pointers_.assign(count, nullptr);
    types_.assign(count, 0);
    pointers = pointers_.data();
    types = types_.data();
  }
  std::memcpy(text, sql.data(), sql.size());
  text[sql.size()] = '\0';
  std::size_t at = sql.size() + 1;
  for (int i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    pointers[k] = nullptr;
    if (stmt.values[i] != nullptr) {
      const std::size_t size = std::strlen(stmt.values[i]) + 1;
      std::memcpy(text + at, stmt.values[i], size);
      pointers[k] = text + at;
      at += size;
    }
    types[k] = stmt.types != nullptr ? stmt.types[i] : 0;
  }
  sql = std::string_view(text, sql.size());
  stmt.sql = text;
  stmt.values = n > 0 ? pointers : nullptr;
  stmt.types = n > 0 && stmt.types != nullptr ? types : nullptr;
}

}  // namespace pqscope::detail
#endif

namespace pqscope::detail {

// The first failure of a voided batched attempt.
struct attempt_failure {
  std::string message, sqlstate;
  std::exception_ptr cause;  // set when running the function again cannot help: atomic() throws it
};

// Which attempt of an outermost atomic() a scope belongs to.
struct attempt_info {
  bool batched = false;
  std::size_t number = 0;
};

class scope_machine {
 public:
  using callback = pqscope::callback<void()>;
  using clock = std::chrono::steady_clock;

  scope_machine() = default;
  scope_machine(const scope_machine&) = delete;
  scope_machine& operator=(const scope_machine&) = delete;
  ~scope_machine();

  [[nodiscard]] std::size_t depth() const noexcept { return frames_.size(); }
  [[nodiscard]] const connection_stats& stats() const noexcept { return stats_; }
  void set_observer(pqscope::callback<void(const statement_event&)> o);
  void set_savepoint_limit(std::size_t limit, bool refuse) noexcept;
  // How many named statements the session may make (0: none), and whether the limit is
  // a pooler's word; see prepared_statements.hpp.
  void set_prepare_limit(std::size_t limit, bool pooled = false) noexcept { prepared_.set_limit(limit, pooled); }
  [[nodiscard]] const prepared_statements& prepared() const noexcept { return prepared_; }
  // connection_options::commit_positions: a read-write outermost COMMIT carries the
  // WAL position query in its batch.
  void set_commit_positions(bool on) noexcept { commit_positions_ = on; }
  // Where the last outermost COMMIT with commit_positions ended in the WAL; empty
  // until one succeeded, or when its position is unknown (the query failed, the
  // COMMIT is in doubt). Set before that scope's on_commit callbacks run.
  [[nodiscard]] wal_position last_commit_position() const noexcept { return last_commit_position_; }
  // Statements of a batched attempt wait in the queue instead of going out at once.
  [[nodiscard]] bool batching() const noexcept { return !frames_.empty() && frames_.front().attempt.batched; }
  [[nodiscard]] std::uint64_t innermost_id() const noexcept { return frames_.empty() ? 0 : frames_.back().id; }

  // ---- scopes -------------------------------------------------------------

  std::uint64_t open(const transaction_options& o, attempt_info attempt = {});

  [[nodiscard]] std::optional<std::size_t> index_of(std::uint64_t id) const noexcept;

  // Ends scope `id` (the innermost) by commit or rollback. A nested scope ends
  // here (false). The outermost one returns true: drive the loop, settle a lost
  // COMMIT if needs_resolution() asks, then finish_end(). `quiet`: the destructor
  // path, which throws nothing later.
  bool end_scope(std::uint64_t id, bool commit, bool quiet = false);

  // The transaction id whose fate a lost COMMIT left unknown, when the front end
  // should ask a fresh connection (resolve_in_doubt); then resolve() with the answer.
  [[nodiscard]] std::optional<in_doubt> needs_resolution() const;
  void resolve(std::string outcome);

  // After the loop: settles the outermost COMMIT or ROLLBACK, runs callbacks and
  // throws what the operation must throw. `committed` tells whether the work was
  // committed, also when an on_commit callback throws afterwards.
  void finish_end(bool* committed = nullptr);

  // The last outermost attempt was voided by a failed batched send: atomic() runs
  // the function again. Its first failure, or nothing.
  [[nodiscard]] const std::optional<attempt_failure>& voided() const noexcept { return void_; }
  void count_replay() noexcept { ++stats_.replays; }
  // A statement of the last outermost attempt failed because the session lost its
  // prepared statement (prepared_statement_lost): running the attempt again
  // prepares it anew. True once per loss.
  [[nodiscard]] bool take_lost_statement() noexcept { return std::exchange(lost_statement_, false); }

  // ---- statements -----------------------------------------------------------

  // The checks of a user statement's text, before its parameters are converted:
  // the pooler guard when `guard` (pooling::transaction without
  // allow_session_state), then the placeholder count against `params`. Returns
  // what was read off the text (kept per text), for queue_statement(); valid
  // until the next call.
  const sql_facts& check_statement(std::string_view sql, std::size_t params, bool guard);

  // Queues a user statement, `f` from check_statement(). Unbatched it is due at once: drive,
  // finish(), then read the slot. In a batched attempt it waits; the slot fills
  // when it is sent.
  std::shared_ptr<statement_slot> queue_statement(const char* sql, std::string_view text, const sql_facts& f,
                                                  const param_list& params, std::weak_ptr<sender> owner);

  // A slot its caller is done with: kept for the next statement if nothing else
  // holds it (no result refers to it), so that a statement costs no allocation.
  void recycle(std::shared_ptr<statement_slot>&& slot) noexcept;

  // ---- statements outside the pipeline (COPY, scripts) ----
  // Such a statement must find the server's transaction and savepoints exactly as
  // the scopes say, so everything queued goes out first, controls included:
  //   slot = prepare_out_of_band(...); request_sync_point(); drive; finish();
  //   stage_out_of_band(slot); the driver's own calls; apply() with one reply;
  //   drive; finish(); then the slot holds the answer.
  // A failure dooms the scope as an unbatched statement's does, also in a batched
  // attempt: everything before it was confirmed by the sync point.
  std::shared_ptr<statement_slot> prepare_out_of_band(const char* sql, std::string_view text,
                                                      std::weak_ptr<sender> owner);
  void request_sync_point();
  void stage_out_of_band(const std::shared_ptr<statement_slot>& slot);

  // Asks for what is queued, up to the last statement, to go out now (a batched
  // result is read, connection::flush()). Then drive and finish().
  void request_flush();

  // After driving a statement or a flush: throws what the loop found.
  void finish();

  void set_local(std::string_view name, std::string_view value);

  void on_commit(callback fn);

  void on_rollback(callback fn);

  // ---- the loop -------------------------------------------------------------

  [[nodiscard]] bool wants_send() noexcept;

  // The next batch: one pipeline, one sync. Valid until apply().
  const std::vector<statement>& plan();

  // Applies the answers to the batch from plan(). Throws only if memory runs out.
  // Takes the results out of `br`, whose memory the caller may use again.
  void apply(batch_reply& br);
  void apply(batch_reply&& br) { apply(static_cast<batch_reply&>(br)); }

  // ---- connection life --------------------------------------------------------

  // The connection object is gone (or reconnecting): scopes still open end quietly.
  void mark_closed() noexcept;
  void mark_open() noexcept;
  [[nodiscard]] bool opened_by_this_process() const noexcept { return pid_ == current_pid(); }

  void check_usable() const;

 private:
  // A text made for one item (BEGIN with modes, SET LOCAL, set_local()), kept
  // out of line: items move along the queue, and most have a static text.
  struct owned_text {
    std::string sql;
    std::vector<std::string> args;
    std::string context;  // prefix for its error message
  };
  struct item {
    enum kind : unsigned char {
      begin, savepoint, timeout, setting, release, rollback_to, restore, user, xid, end, followup,
      position,  // the WAL position right after a COMMIT (commit_positions); see position_item()
      check      // a standby's replay position against transaction_options::at_least; see queue_check()
    };
    kind k = user;
    std::uint64_t frame_id = 0;             // the frame that queued it
    std::size_t level = 0;                  // the innermost frame whose savepoint undoes it
    std::shared_ptr<statement_slot> slot;  // user
    std::size_t sp = 0;                    // savepoint, release, rollback_to: the savepoint's number
    const char* fixed = nullptr;           // a static text, or one of savepoint_texts_ (set by plan())
    std::unique_ptr<owned_text> owned;     // instead of fixed
    bool alone = false;                    // check: goes out in a batch of its own
    [[nodiscard]] const char* text() const noexcept {
      return fixed != nullptr ? fixed : owned ? owned->sql.c_str() : "";
    }
    item() = default;
    explicit item(kind what, std::uint64_t frame = 0, std::size_t lvl = 0) : k(what), frame_id(frame), level(lvl) {}
    [[nodiscard]] const std::string& context() const noexcept {
      static const std::string none;
      return owned ? owned->context : none;
    }
  };
  struct frame {
    std::uint64_t id = 0;
    transaction_options opts;
    bool owning = true;
    bool sent = false;  // its BEGIN / SAVEPOINT has run on the server
    attempt_info attempt;
    std::vector<callback> on_commit, on_rollback;
  };
  struct doom {
    std::size_t level;
    std::string message, sqlstate;
    // The failure itself, when no statement was told of it (a check that found the
    // standby behind, sent before a COPY or a script): the next statement refused
    // gets it, as the first statement of the batch would have.
    mutable std::exception_ptr untold;
  };
  // What the operation in progress learned from the loop, for its end step.
  struct operation {
    // Not "= default": the chrono members' defaults are not declared noexcept,
    // though nothing in them can throw; reset_operation() needs noexcept.
    operation() noexcept {}  // NOLINT(modernize-use-equals-default)
    bool commit = false, quiet = false;
    frame ended;             // the outermost scope being ended
    bool sent_end = false;   // its COMMIT / ROLLBACK went out
    bool replay = false;     // the batched attempt was voided
    bool followup = false;   // a ROLLBACK the operation waits for is due
    reply end_reply;
    std::exception_ptr failure;  // a statement or control sent with the COMMIT failed
    std::exception_ptr stray;    // the server's transaction state disagreed with the scopes
    std::optional<std::string> lost, followup_lost;
    std::optional<doom> refused;  // commit() of a doomed scope: rolled back instead
    in_doubt xid;  // what the resolver asks about
    std::string resolution;
    bool xid_unknown = false, resolved = false;
    bool position_asked = false;  // the COMMIT's batch carried the position query
    wal_position position;        // what it answered, or empty
  };

  std::shared_ptr<statement_slot> make_slot(const char* sql, std::string_view text, const param_list& params,
                                            std::weak_ptr<sender> owner);

  static std::string savepoint_name(std::size_t level);
  // The SAVEPOINT, RELEASE or ROLLBACK TO text of a savepoint item, made once per
  // savepoint number and connection. Valid until the next call with a higher number.
  const char* savepoint_text(const item& it);
  static bool is_savepoint_kind(const item& it) noexcept {
    return (it.k == item::savepoint || it.k == item::release || it.k == item::rollback_to) && !it.owned;
  }

  // "SET TRANSACTION <modes>", sent right after a plain BEGIN, or "" without modes.
  static std::string modes_sql(const transaction_options& o);

  static std::exception_ptr closed_error() noexcept;

  item& queue(item::kind k, std::uint64_t frame_id, std::size_t level, const char* fixed = nullptr);
  item& queue_owned(item::kind k, std::uint64_t frame_id, std::size_t level, std::string sql);
  static item xid_item();
  static item position_item();
  // Queues the read-your-writes check of an outermost scope with at_least, ahead
  // of its BEGIN.
  void queue_check(std::uint64_t frame_id, const transaction_options& o);
  // The check found the session's default isolation is not read committed: its
  // snapshot would be the transaction's. The batch goes again, the check alone.
  void resend_check_alone(std::vector<item>& batch, const batch_reply& br);
  // The check's two texts (why they read so: queue_check() in impl/scope_machine_queue.ipp).
  static constexpr const char* check_in_batch_sql =
      "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() AND s.r < $1::pg_catalog.pg_lsn "
      "THEN ('pqscope: replica behind, replayed ' || s.r::text)::pg_catalog.pg_lsn "
      "WHEN pg_catalog.current_setting('transaction_isolation') <> 'read committed' "
      "THEN ('pqscope: isolation ' || pg_catalog.current_setting('transaction_isolation'))::pg_catalog.pg_lsn END "
      "FROM (SELECT pg_catalog.pg_last_wal_replay_lsn() AS r) AS s";
  static constexpr const char* check_alone_sql =
      "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() AND s.r < $1::pg_catalog.pg_lsn "
      "THEN ('pqscope: replica behind, replayed ' || s.r::text)::pg_catalog.pg_lsn END "
      "FROM (SELECT pg_catalog.pg_last_wal_replay_lsn() AS r) AS s";
  static constexpr const char* behind_marker = "pqscope: replica behind, replayed ";
  static constexpr const char* isolation_marker = "pqscope: isolation ";
  // The check's own verdict: pg_lsn refused to read the marker (22P02). Any other
  // error is just that, even when its message quotes the check's text.
  [[nodiscard]] static bool check_says(const reply& r, const char* marker) {
    return r.st == reply::status::error && r.failure().sqlstate == "22P02" &&
           r.failure().message.find(marker) != std::string::npos;
  }
  [[nodiscard]] static bool is_behind(const reply& r) { return check_says(r, behind_marker); }
  // Reads the position query's answer; empty for anything unexpected (never throws).
  static wal_position read_position(const reply& r) noexcept;
  void queue_rollback_to(std::uint64_t frame_id, std::size_t i);
  void push_followup(const char* sql, bool awaited);
  template <class Pred>
  void drop_queued(Pred pred);
  void lower_levels(std::size_t from);
  // A statement waits in the queue at `level` or deeper.
  [[nodiscard]] bool statement_queued_at(std::size_t level) const;
  // Drops controls queued after the last statement that `pred` selects.
  template <class Pred>
  void trim_tail(Pred pred);
  void clear_queue() noexcept;
  // Whether a send with user statements must also ask for the transaction id; the
  // outermost frame has left the stack once its COMMIT is queued.
  [[nodiscard]] bool wants_xid() const;

  std::size_t innermost_index(std::uint64_t id, const char* what) const;

  // `what`: a static text naming the refused step (a string only when it throws).
  void throw_if_doomed(const char* what) const;
  void throw_if_void(const char* what) const;
  [[noreturn]] void throw_void(const char* what) const;
  [[noreturn]] static void refuse(const doom& d);

  // The innermost frame whose savepoint (or transaction) can undo a failure.
  [[nodiscard]] std::size_t undo_level() const noexcept;
  void doom_here(const std::string& message, const std::string& sqlstate);

  void notify(const statement_slot& s, std::chrono::microseconds elapsed, const std::exception* e,
              const result* r) noexcept;
  void apply_batch(std::vector<item>& batch, batch_reply& br);
  // What the batch's answers say about its prepared statements, and whether a
  // statement failed because the session lost the one pqscope had prepared for it.
  struct statement_loss {
    enum kind : unsigned char { none, lost, misconfigured } what = none;
    std::size_t at = 0;
  };
  statement_loss settle_prepared(const std::vector<item>& batch, const batch_reply& br) noexcept;
  // Sends the batch again when nothing before the lost statement did anything but
  // open the transaction it runs in.
  bool resend_lost(std::vector<item>& batch, const batch_reply& br, std::size_t at);
  // The error the failed statement at `at` raises.
  std::exception_ptr failure_of(const item& it, const reply& r, const statement_loss& loss, std::size_t at) const;
  // Statements of the batch that got no answer get `e`.
  // How many statements it failed.
  std::size_t fail_unanswered(std::vector<item>& batch, const std::exception_ptr& e, std::chrono::microseconds elapsed);
  void fail_queued(const std::exception_ptr& e) noexcept;

  // A send of a batched attempt failed: the whole attempt is rolled back at once
  // (the server refuses everything until then), every waiting statement gets
  // batch_failed, and the frames stay for atomic() to unwind and run again.
  void void_attempt(std::vector<item>& batch, std::size_t at, const batch_reply& br,
                    std::chrono::microseconds elapsed, bool ending, std::exception_ptr failure);

  // ---- the subtransaction budget ----
  // PostgreSQL caches 64 subtransaction ids per backend (PGPROC_MAX_CACHED_SUBXIDS);
  // past that every snapshot in the cluster consults pg_subtrans. A released
  // savepoint keeps its id until the transaction ends; only ROLLBACK TO gives it
  // back. held_[i]: subtransactions begun under savepoint i (itself included) and
  // not rolled back; held_[0] those released into the top level. Savepoints that
  // never write get no id, so this is an upper bound.
  void hold(std::size_t sp);
  void fold(std::size_t sp, bool rolled_back);
  void note_held();
  void end_of_transaction();
  // Opening savepoint `i`: past the limit, the observer is told and it is counted;
  // with refuse_past_savepoint_limit it is a usage_error before anything is queued.
  void check_savepoint_budget(const transaction_options& root, std::size_t i);

  // The session is gone: nothing queued can be sent, nothing doomed can be undone.
  void mark_broken(const std::string& why);

  // The server's own word on the session must match the scope stack.
  void check_state(const batch_reply& br, bool had_error);

  void pop_outermost();

  // A COMMIT in doubt may have committed past the last position: none is known then.
  void forget_position(const operation& op) noexcept {
    if (op.position_asked) last_commit_position_ = wal_position();
  }

  // The outermost scope ends: its COMMIT or ROLLBACK is queued behind whatever
  // statements still wait, so they go out together.
  void start_outermost();

  void commit_nested(std::size_t i);

  void restore_timeout(const frame& f, std::size_t i, const char* name,
                       std::chrono::milliseconds transaction_options::*member);

  // Ends nested frame i (the innermost) by rolling back; sends nothing.
  void end_nested_rollback(std::size_t i);

  // Runs every callback; the first exception is rethrown after all ran (not when quiet).
  static void run_callbacks(std::vector<callback>& cbs, bool quiet);

  std::vector<frame> frames_;
  sql_facts_cache facts_;
  prepared_statements prepared_;
  std::vector<std::shared_ptr<statement_slot>> spare_;  // see recycle()
  static constexpr std::size_t spare_slots = 16;
  std::vector<item> queue_;      // not yet sent, in order
  std::vector<item> followup_;   // a ROLLBACK due before anything else
  std::vector<item> in_flight_;  // the batch from plan(), until apply()
  std::vector<statement> out_;
  std::vector<std::string> out_names_;  // the prepared statements' names of out_
  std::vector<std::string> out_texts_;  // their texts, where not the statement's own (prepared_statements::forget)
  std::vector<std::vector<const char*>> out_args_;
  std::vector<std::string> savepoint_texts_;  // [3 * number + verb]: SAVEPOINT, RELEASE, ROLLBACK TO
  clock::time_point sent_at_{};
  bool send_requested_ = false;
  bool send_all_ = false;     // request_sync_point(): controls go out too
  bool out_of_band_ = false;  // in_flight_ is a statement sent outside the pipeline
  bool planned_all_ = false;  // in_flight_ was planned after request_sync_point()
  bool lost_statement_ = false;   // see take_lost_statement()
  operation op_;
  // op_ = operation{} without the member-by-member move (it runs several times per scope).
  void reset_operation() noexcept {
    static_assert(std::is_nothrow_default_constructible_v<operation>, "reset_operation() rebuilds op_ in place");
    op_.~operation();
    ::new (static_cast<void*>(&op_)) operation();
  }
  std::optional<doom> doom_;
  std::optional<attempt_failure> void_;
  std::uint64_t next_id_ = 1;
  bool closed_ = false;
  bool broken_ = false;
  std::string broken_reason_;
  in_doubt xid_;              // the transaction's id once it has one (resolve_in_doubt)
  bool xid_pending_ = false;  // statements were sent since the last answer to the id query
  pid_t pid_ = current_pid();
  connection_stats stats_;
  pqscope::callback<void(const statement_event&)> observer_;
  std::vector<std::uint64_t> held_;  // subtransactions per savepoint level, see hold()
  std::size_t savepoint_limit_ = 64;
  bool refuse_past_limit_ = false;
  bool commit_positions_ = false;
  wal_position last_commit_position_;
  bool check_alone_ = false;  // this session's default isolation is not read committed (see queue_check())
};

}  // namespace pqscope::detail

// The machine's bodies, by what they do.
#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/scope_machine_queue.ipp>
// The scope machine's queue and the planning of a batch: statements are checked
// and queued with the controls their scopes need (BEGIN, SAVEPOINT, RELEASE, ROLLBACK
// TO, SET LOCAL), and plan() picks what goes out in the next batch, with the
// transaction-id query where resolve_in_doubt wants it. Included by
// detail/scope_machine.hpp; no I/O.

// #include <pqscope/detail/scope_machine.hpp> (inlined above)
// #include <pqscope/detail/impl/queue_edits.hpp>
// The two edits of the scope machine's queue that every body file makes: drop
// what a predicate picks, or only what trails the last user statement. Templates
// (their predicates are lambdas), included by the scope_machine_*.ipp files.

#include <algorithm>
#include <cstddef>

// #include <pqscope/detail/scope_machine.hpp> (inlined above)

namespace pqscope::detail {

template <class Pred>
void scope_machine::drop_queued(Pred pred) {
  queue_.erase(std::remove_if(queue_.begin(), queue_.end(), pred), queue_.end());
}

template <class Pred>
void scope_machine::trim_tail(Pred pred) {
  std::size_t last_user = 0;
  for (std::size_t k = 0; k < queue_.size(); ++k)
    if (queue_[k].k == item::user) last_user = k + 1;
  queue_.erase(std::remove_if(queue_.begin() + static_cast<std::ptrdiff_t>(last_user), queue_.end(), pred),
               queue_.end());
}

}  // namespace pqscope::detail

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace pqscope::detail {

PQSCOPE_DECL std::shared_ptr<statement_slot> scope_machine::prepare_out_of_band(const char* sql,
                                                                               std::string_view text,
                                                                               std::weak_ptr<sender> owner) {
  check_usable();
  auto slot = make_slot(sql, text, param_list{}, std::move(owner));
  slot->own();
  return slot;
}

PQSCOPE_DECL void scope_machine::request_sync_point() {
  check_usable();
  reset_operation();
  send_requested_ = true;
  send_all_ = true;
}

PQSCOPE_DECL void scope_machine::stage_out_of_band(const std::shared_ptr<statement_slot>& slot) {
  check_usable();
  throw_if_void("statement refused");
  throw_if_doomed("statement refused");
  in_flight_.clear();
  in_flight_.emplace_back(item::user, innermost_id(), frames_.empty() ? 0 : depth() - 1).slot = slot;
  out_of_band_ = true;
  ++stats_.round_trips;
  ++stats_.statements;
  if (!frames_.empty()) xid_pending_ = true;  // it may write: COMMIT asks for the id
  sent_at_ = clock::now();
}

PQSCOPE_DECL std::shared_ptr<statement_slot> scope_machine::make_slot(const char* sql, std::string_view text,
                                                                     const param_list& params,
                                                                     std::weak_ptr<sender> owner) {
  throw_if_void("statement refused");
  throw_if_doomed("statement refused");
  std::shared_ptr<statement_slot> slot;
  if (!spare_.empty()) {
    slot = std::move(spare_.back());
    spare_.pop_back();
  } else {
    if (spare_.capacity() == 0) spare_.reserve(spare_slots);  // recycle() never allocates
    slot = std::make_shared<statement_slot>();
  }
  slot->stmt = statement{sql, params.size(), params.values(), params.types()};
  slot->sql = text;
  slot->owner = std::move(owner);
  slot->depth = depth();
  if (!frames_.empty()) slot->attempt = frames_.front().attempt.number;
  return slot;
}

PQSCOPE_DECL void scope_machine::recycle(std::shared_ptr<statement_slot>&& slot) noexcept {
  // One owner left, and it is the caller: no result can reach the slot any more.
  if (!slot || slot.use_count() != 1 || spare_.size() == spare_.capacity()) return;
  slot->recycle();
  spare_.push_back(std::move(slot));
}

PQSCOPE_DECL std::shared_ptr<statement_slot>
scope_machine::queue_statement(const char* sql, std::string_view text, const sql_facts& f, const param_list& params,
                               std::weak_ptr<sender> owner) {
  check_usable();
  if (!f.control.empty())
    throw usage_error("execute(\"" + std::string(f.control) +
                      " ...\") would control the transaction behind pqscope's back; use "
                      "pqscope::transaction (commit()/rollback()) or pqscope::atomic instead");
  if (f.copy_stream)
    throw usage_error("COPY FROM STDIN / TO STDOUT is not supported by execute(); use native_handle() at depth 0");
  auto slot = make_slot(sql, text, params, std::move(owner));
  const bool lazy = batching();
  slot->batched = lazy;
  if (lazy) slot->own();
  item& it = queue(item::user, innermost_id(), frames_.empty() ? 0 : depth() - 1);
  it.slot = slot;
  if (!lazy) {
    reset_operation();
    send_requested_ = true;
  }
  return slot;
}

PQSCOPE_DECL const sql_facts& scope_machine::check_statement(std::string_view sql, std::size_t params, bool guard) {
  const sql_facts& f = facts_.get(sql, guard);
  if (guard && !f.hazard.empty()) throw usage_error(f.hazard);
  check_placeholders(sql, params, f.placeholders);
  return f;
}

PQSCOPE_DECL void scope_machine::request_flush() {
  check_usable();
  reset_operation();
  send_requested_ = true;
}

PQSCOPE_DECL void scope_machine::finish() {
  operation op = std::move(op_);
  reset_operation();
  if (op.followup_lost) throw connection_error("connection lost: " + *op.followup_lost);
  if (op.stray) std::rethrow_exception(op.stray);
  if (void_ && !frames_.empty()) throw_void("flush()");
}

PQSCOPE_DECL bool scope_machine::wants_send() noexcept {
  if (closed_ || broken_ || !opened_by_this_process()) {
    send_requested_ = false;
    followup_.clear();
    return false;
  }
  if (!followup_.empty()) return true;
  if (!send_requested_) return false;
  if (send_all_) {
    if (!queue_.empty()) return true;
    send_all_ = send_requested_ = false;
    return false;
  }
  for (const item& it : queue_)
    if (it.k == item::user || it.k == item::end) return true;
  send_requested_ = false;
  return false;
}

PQSCOPE_DECL const std::vector<statement>& scope_machine::plan() {
  in_flight_.clear();
  if (!followup_.empty()) {
    in_flight_.push_back(std::move(followup_.front()));
    followup_.erase(followup_.begin());
  } else {
    send_requested_ = false;
    // Up to the last statement or the end of the transaction: controls queued
    // after it wait, so a scope that runs nothing more costs no savepoint.
    std::size_t n = 0, last_user = 0;
    for (std::size_t k = 0; k < queue_.size(); ++k) {
      if (queue_[k].k == item::user) last_user = k + 1;
      if (queue_[k].k == item::user || queue_[k].k == item::end) n = k + 1;
    }
    planned_all_ = std::exchange(send_all_, false);
    if (planned_all_) n = queue_.size();
    // Learn the transaction id in the same round trip, for resolving a lost COMMIT:
    // after the last statement, or before the COMMIT if statements went out unanswered.
    // Never in front of a ROLLBACK: the transaction may be aborted there, the query
    // would fail (25P02) and the server would skip the ROLLBACK behind it; and a
    // rolled-back transaction has nothing to resolve.
    // A check that must run before the transaction's snapshot exists goes alone;
    // the rest follows in the next batch.
    if (n > 0 && queue_.front().k == item::check && queue_.front().alone) {
      n = 1;
      last_user = 0;
      send_requested_ = true;
      send_all_ = planned_all_;
    }
    const bool ends = n > 0 && queue_[n - 1].k == item::end;
    const bool rolls_back = ends && std::strcmp(queue_[n - 1].text(), "ROLLBACK") == 0;
    const bool xid = !rolls_back && (last_user > 0 || (ends && xid_pending_)) && wants_xid();
    const std::size_t xid_after = last_user > 0 ? last_user : n - 1;
    // Read-your-writes: the WAL position right behind the COMMIT, in the same batch.
    // Not for a read-only transaction, which writes no commit record.
    const bool position = commit_positions_ && ends && !rolls_back &&
                          !(op_.ended.id == queue_[n - 1].frame_id && op_.ended.opts.read_only);
    for (std::size_t k = 0; k < n; ++k) {
      if (xid && last_user == 0 && k == xid_after) in_flight_.push_back(xid_item());
      in_flight_.push_back(std::move(queue_[k]));
      if (xid && last_user > 0 && k + 1 == xid_after) in_flight_.push_back(xid_item());
    }
    if (position) in_flight_.push_back(position_item());
    // Until an answer to the id query comes back, statements sent may have written.
    if (last_user > 0) xid_pending_ = true;
    queue_.erase(queue_.begin(), queue_.begin() + static_cast<std::ptrdiff_t>(n));
  }
  out_.clear();
  if (out_args_.size() < in_flight_.size()) out_args_.resize(in_flight_.size());
  if (out_names_.size() < in_flight_.size()) {  // never during the loop below
    out_names_.resize(in_flight_.size());
    out_texts_.resize(in_flight_.size());
  }
  // Savepoint texts first: making a higher number's moves the earlier ones.
  for (const item& it : in_flight_)
    if (is_savepoint_kind(it)) (void)savepoint_text(it);
  std::size_t users = 0;
  for (std::size_t k = 0; k < in_flight_.size(); ++k) {
    item& it = in_flight_[k];
    if (is_savepoint_kind(it)) it.fixed = savepoint_text(it);
    if (it.k == item::check) {
      ++stats_.replica_checks;
      if (it.alone) ++stats_.replica_checks_alone;
    }
    if (it.k == item::user) {
      ++users;
      statement st = it.slot->stmt;
      // Sent again after its statement was lost: unnamed, so that it is planned afresh.
      if (prepared_.enabled() && !it.slot->resent) {
        const prepared_statements::use u = prepared_.plan(it.slot->sql, st.n_params, st.types);
        if (u.name != nullptr) {
          out_names_[k] = u.name;
          st.name = out_names_[k].c_str();
          st.parse = u.parse;
          if (u.text != nullptr) {
            out_texts_[k] = u.text;
            st.sql = out_texts_[k].c_str();
          }
          if (u.parse) ++stats_.prepared;
        }
      }
      out_.push_back(st);
      continue;
    }
    out_args_[k].clear();
    if (it.owned)
      for (const std::string& a : it.owned->args) out_args_[k].push_back(a.c_str());
    out_.push_back(statement{it.text(), static_cast<int>(out_args_[k].size()),
                             out_args_[k].empty() ? nullptr : out_args_[k].data(), nullptr});
    // The read-your-writes check is the same text on every read: prepared like a
    // statement run again (its parse and plan cost more than the check itself).
    if (it.k == item::check && prepared_.enabled()) {
      const prepared_statements::use u = prepared_.plan(it.text(), 1, nullptr);
      if (u.name != nullptr) {
        out_names_[k] = u.name;
        out_.back().name = out_names_[k].c_str();
        out_.back().parse = u.parse;
        if (u.text != nullptr) {
          out_texts_[k] = u.text;
          out_.back().sql = out_texts_[k].c_str();
        }
        if (u.parse) ++stats_.prepared;
      }
    }
  }
  ++stats_.round_trips;
  stats_.statements += users;
  stats_.control_statements += out_.size() - users;
  sent_at_ = clock::now();
  return out_;
}

PQSCOPE_DECL std::string scope_machine::modes_sql(const transaction_options& o) {
  std::string modes;
  auto add = [&](const char* m) { modes += (modes.empty() ? " " : ", ") + std::string(m); };
  switch (o.isolation) {
    case isolation::read_committed: add("ISOLATION LEVEL READ COMMITTED"); break;
    case isolation::repeatable_read: add("ISOLATION LEVEL REPEATABLE READ"); break;
    case isolation::serializable: add("ISOLATION LEVEL SERIALIZABLE"); break;
    case isolation::server_default: break;
  }
  if (o.read_only) add("READ ONLY");
  if (o.deferrable) add("DEFERRABLE");
  return modes.empty() ? modes : "SET TRANSACTION" + modes;
}

PQSCOPE_DECL std::exception_ptr scope_machine::closed_error() noexcept {
  return std::make_exception_ptr(connection_error("the connection was closed before this statement was sent"));
}

PQSCOPE_DECL scope_machine::item&
scope_machine::queue(item::kind k, std::uint64_t frame_id, std::size_t level, const char* fixed) {
  item& it = queue_.emplace_back(k, frame_id, level);
  it.fixed = fixed;
  return it;
}

PQSCOPE_DECL scope_machine::item&
scope_machine::queue_owned(item::kind k, std::uint64_t frame_id, std::size_t level, std::string sql) {
  auto text = std::make_unique<owned_text>();
  text->sql = std::move(sql);
  item& it = queue(k, frame_id, level);
  it.owned = std::move(text);
  return it;
}

PQSCOPE_DECL scope_machine::item scope_machine::xid_item() {
  item it(item::xid);
  it.fixed = in_doubt_probe_sql;
  return it;
}

// After the COMMIT, before the batch's sync. The insert position, not
// pg_current_wal_lsn(): with synchronous_commit = off the write position may still
// be before the commit record; the insert position is past it once COMMIT has
// answered. It is the whole server's and only grows, so whatever ran in between
// only moves it further; and behind PgBouncer's transaction pooling a statement in
// the COMMIT's batch (before its sync) runs on the COMMIT's server connection. The
// function is volatile, so Pgpool-II sends it to the primary. The block and segment
// sizes ride along (no round trip) to take a page header off the position
// (wal_position::record_end); where they cannot be read, PostgreSQL's defaults
// (8 kB, 16 MB) are assumed.
PQSCOPE_DECL scope_machine::item scope_machine::position_item() {
  item it(item::position);
  it.fixed =
      "SELECT pg_catalog.pg_current_wal_insert_lsn(), pg_catalog.current_setting('wal_block_size')::int8, "
      "pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size'))";
  return it;
}

// Read-your-writes on a standby. pg_last_wal_replay_lsn() only grows, and a standby
// marks a transaction committed when it replays its commit record, before it moves
// the replay position past it: a snapshot taken after the check sees every
// transaction the position covers. A primary passes: pg_is_in_recovery() is false
// there (a promoted standby keeps reporting its last replay position, frozen). Behind, the check fails (a cast of a text that no pg_lsn reads; the CASE
// arm is not constant, so the planner does not fold it) and the server skips the
// rest of the batch: BEGIN never runs and the session stays idle.
//
// In the batch of the BEGIN, the check runs before it, in the implicit transaction
// of the batch, whose isolation is the session's default. Under read committed
// each later statement takes a new snapshot, after the check. Under repeatable read
// the check's own snapshot (taken before it reads the position) would become the
// transaction's, and SET TRANSACTION ISOLATION fails after it (25001); so the check
// refuses to pass there, and the batch goes again with the check alone, before it.
PQSCOPE_DECL void scope_machine::queue_check(std::uint64_t frame_id, const transaction_options& o) {
  const bool alone =
      check_alone_ || o.isolation == isolation::repeatable_read || o.isolation == isolation::serializable;
  item& it = queue_owned(item::check, frame_id, 0, alone ? check_alone_sql : check_in_batch_sql);
  it.owned->args.push_back(o.at_least.to_string());
  it.alone = alone;
}

PQSCOPE_DECL wal_position scope_machine::read_position(const reply& r) noexcept {
  try {
    if (r.st != reply::status::ok || r.res.size() != 1 || r.res.columns() < 1 || r.res[0][0].is_null()) return {};
    const wal_position at = wal_position::parse(r.res[0][0].text());
    std::uint64_t sizes[2] = {wal_position::default_block_size, wal_position::default_segment_size};
    for (std::size_t c = 1; c < 3 && c < r.res.columns(); ++c) {
      if (r.res[0][c].is_null()) continue;
      const std::string_view t = r.res[0][c].text();
      std::uint64_t v = 0;
      const auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
      if (ec == std::errc() && end == t.data() + t.size() && v > 0) sizes[c - 1] = v;
    }
    return at.record_end(sizes[0], sizes[1]);
  } catch (...) {
    return {};  // the commit stands without a position
  }
}

PQSCOPE_DECL const char* scope_machine::savepoint_text(const item& it) {
  const std::size_t verb = it.k == item::savepoint ? 0 : it.k == item::release ? 1 : 2;
  if (savepoint_texts_.size() <= 3 * it.sp + verb) {
    const std::size_t from = savepoint_texts_.size() / 3;
    savepoint_texts_.resize(3 * (it.sp + 1));
    for (std::size_t n = from; n <= it.sp; ++n) {
      const std::string name = savepoint_name(n);
      savepoint_texts_[3 * n] = "SAVEPOINT " + name;
      savepoint_texts_[3 * n + 1] = "RELEASE SAVEPOINT " + name;
      savepoint_texts_[3 * n + 2] = "ROLLBACK TO SAVEPOINT " + name;
    }
  }
  return savepoint_texts_[3 * it.sp + verb].c_str();
}

PQSCOPE_DECL void scope_machine::queue_rollback_to(std::uint64_t frame_id, std::size_t i) {
  queue(item::rollback_to, frame_id, i - 1).sp = i;
  queue(item::release, frame_id, i - 1).sp = i;
}

PQSCOPE_DECL void scope_machine::push_followup(const char* sql, bool awaited) {
  followup_.emplace_back(item::followup);
  followup_.back().fixed = sql;  // a static text
  if (awaited) op_.followup = true;
}

PQSCOPE_DECL void scope_machine::lower_levels(std::size_t from) {
  for (item& c : queue_)
    if (c.level >= from) c.level = from - 1;
}

PQSCOPE_DECL bool scope_machine::statement_queued_at(std::size_t level) const {
  return std::any_of(queue_.begin(), queue_.end(), [&](const item& c) { return c.k == item::user && c.level >= level; });
}

PQSCOPE_DECL void scope_machine::clear_queue() noexcept {
  fail_queued(closed_error());
  queue_.clear();
  followup_.clear();
}

PQSCOPE_DECL bool scope_machine::wants_xid() const {
  const bool resolve = frames_.empty() ? op_.ended.id != 0 && op_.ended.opts.resolve_in_doubt
                                       : frames_.front().opts.resolve_in_doubt;
  return resolve && !xid_.known();
}

}  // namespace pqscope::detail
// #include <pqscope/detail/impl/scope_machine_apply.ipp>
// Applying a batch's answers: each reply settles its item (a frame's BEGIN or
// SAVEPOINT sent, a statement answered, a savepoint released or rolled back), a
// failure dooms the scope that can undo it or voids a batched attempt, and the
// server's transaction state after the batch is checked against the scopes. The
// observer hears of every statement here. Included by detail/scope_machine.hpp.

// #include <pqscope/detail/scope_machine.hpp> (inlined above)
// #include <pqscope/detail/impl/queue_edits.hpp> (inlined above)

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pqscope::detail {

PQSCOPE_DECL void scope_machine::apply(batch_reply& br) {
  std::vector<item> batch;
  batch.swap(in_flight_);
  // The batch's memory goes back to in_flight_ for the next plan(), however this returns.
  auto give_back = [&]() noexcept {
    for (item& it : batch) recycle(std::move(it.slot));
    batch.clear();
    if (in_flight_.empty() && in_flight_.capacity() < batch.capacity()) in_flight_.swap(batch);
  };
  try {
    apply_batch(batch, br);
  } catch (...) {
    give_back();
    throw;
  }
  give_back();
}

PQSCOPE_DECL void scope_machine::apply_batch(std::vector<item>& batch, batch_reply& br) {
  const auto elapsed = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - sent_at_);
  const bool out_of_band = std::exchange(out_of_band_, false);
  if (br.replies.size() < batch.size()) br.replies.resize(batch.size());

  if (!batch.empty() && batch.front().k == item::followup) {
    end_of_transaction();
    if (br.lost) {
      mark_broken(br.lost_message);
      if (op_.followup) op_.followup_lost = br.lost_message;
    }
    return;
  }

  statement_loss loss;
  if (prepared_.enabled() && !out_of_band) loss = settle_prepared(batch, br);
  if (loss.what == statement_loss::lost && !br.lost && resend_lost(batch, br, loss.at)) return;

  if (!batch.empty() && batch.front().k == item::check && !br.lost && check_says(br.replies[0], isolation_marker)) {
    resend_check_alone(batch, br);
    return;
  }

  std::optional<std::size_t> failed_at;
  bool end_in_batch = false;
  for (std::size_t k = 0; k < batch.size(); ++k) {
    item& it = batch[k];
    reply& r = br.replies[k];
    if (it.k == item::end) {
      end_in_batch = true;
      op_.sent_end = true;
      op_.end_reply = r;
      end_of_transaction();
    }
    if (it.k == item::position) {
      op_.position_asked = true;
      // Never a failure of the batch: the COMMIT before it stands, whatever this
      // query answers (a cancel, an error, nothing); the position is then left empty.
      if (op_.end_reply.st == reply::status::ok && op_.end_reply.tag() == "COMMIT") op_.position = read_position(r);
      continue;
    }
    if (r.st == reply::status::error && !failed_at) failed_at = k;
    if (r.st != reply::status::ok) continue;
    switch (it.k) {
      case item::begin:
      case item::savepoint:
        if (auto at = index_of(it.frame_id)) frames_[*at].sent = true;
        if (it.k == item::begin) held_.assign(1, 0);
        if (it.k == item::savepoint) {
          ++stats_.savepoints;
          hold(it.sp);
        }
        break;
      case item::release:
        fold(it.sp, false);
        break;
      case item::rollback_to:
        fold(it.sp, true);
        break;
      case item::user:
        notify(*it.slot, elapsed, nullptr, &r.res);
        it.slot->answer(std::move(r.res));
        break;
      case item::xid:
        xid_pending_ = false;
        (void)read_probe(r.res, xid_);
        break;
      default: break;
    }
  }

  if (br.lost) {
    if (end_in_batch) {
      op_.lost = br.lost_message;
      op_.xid = xid_;
      op_.xid_unknown = !xid_.known() && xid_pending_;
    }
    mark_broken(br.lost_message);
    const auto e = std::make_exception_ptr(connection_error("connection lost: " + br.lost_message));
    fail_unanswered(batch, e, elapsed);
    return;
  }

  if (failed_at && batch[*failed_at].k == item::check && is_behind(br.replies[*failed_at])) ++stats_.replica_behind;
  // The outermost frame has left the stack once its COMMIT or ROLLBACK is queued:
  // in this batch, or still waiting behind a check that went alone.
  const bool ending = frames_.empty() && op_.ended.id != 0;
  const bool batched_attempt = !out_of_band && (batching() || (ending && op_.ended.attempt.batched));
  if (failed_at && batched_attempt && batch[*failed_at].k != item::end) {
    std::exception_ptr first = failure_of(batch[*failed_at], br.replies[*failed_at], loss, *failed_at);
    void_attempt(batch, *failed_at, br, elapsed, ending, first);
    if (loss.what == statement_loss::misconfigured && loss.at == *failed_at) void_->cause = batch[*failed_at].slot->error;
    return;
  }

  if (failed_at) {
    const item& it = batch[*failed_at];
    const reply& r = br.replies[*failed_at];
    std::exception_ptr first = failure_of(it, r, loss, *failed_at);
    if (loss.what == statement_loss::lost && loss.at == *failed_at && !frames_.empty()) lost_statement_ = true;
    if (it.k == item::check) {
      try {
        std::rethrow_exception(first);
      } catch (const std::exception& e) {
        doom_here(e.what(), is_behind(r) ? std::string() : r.failure().sqlstate);
      }
    } else if (it.k != item::end) {
      doom_here(it.context() + r.failure().message, r.failure().sqlstate);
      if (end_in_batch) op_.failure = first;
    }
    std::size_t told = fail_unanswered(batch, first, elapsed);
    if (it.k == item::check && it.alone) {
      // The statements that waited for it fail with it, unsent.
      told += fail_unanswered(queue_, first, elapsed);
      drop_queued([](const item& c) { return c.k == item::user; });
      send_requested_ = send_all_ = false;
    }
    if (it.k == item::check && told == 0 && doom_) doom_->untold = first;
    if (!end_in_batch) {
      // Skipped controls never ran: back to the queue, to ride with the next batch.
      std::vector<item> back;
      for (std::size_t k = *failed_at + 1; k < batch.size(); ++k)
        if (batch[k].k != item::user && batch[k].k != item::xid && batch[k].k != item::position)
          back.push_back(std::move(batch[k]));
      queue_.insert(queue_.begin(), std::make_move_iterator(back.begin()), std::make_move_iterator(back.end()));
    }
  }
  if (end_in_batch) {
    // COMMIT or ROLLBACK was skipped or refused and the transaction is still open:
    // end it now (whatever skipped it, no transaction is left open).
    if ((failed_at || op_.end_reply.st != reply::status::ok) && br.state != server_state::idle)
      push_followup("ROLLBACK", true);
    return;
  }
  check_state(br, failed_at.has_value());
}

PQSCOPE_DECL void scope_machine::mark_closed() noexcept {
  closed_ = true;
  clear_queue();
  doom_.reset();
  observer_ = nullptr;
}

PQSCOPE_DECL scope_machine::statement_loss scope_machine::settle_prepared(const std::vector<item>& batch,
                                                                        const batch_reply& br) noexcept {
  statement_loss loss;
  for (std::size_t k = 0; k < batch.size() && k < out_.size(); ++k) {
    const statement& st = out_[k];
    if ((batch[k].k != item::user && batch[k].k != item::check) || st.name == nullptr) continue;
    const std::string_view text = batch[k].k == item::user ? std::string_view(batch[k].slot->sql)
                                                           : std::string_view(batch[k].text());
    if (st.parse) prepared_.settle(text, st.n_params, st.types, st.name, k < br.replies.size() && br.replies[k].parsed);
    if (k >= br.replies.size() || br.replies[k].st != reply::status::error) continue;
    const reply_error& e = br.replies[k].failure();
    if (e.sqlstate == "26000" && !st.parse) {
      // The session lost its statements (DISCARD ALL, DEALLOCATE ALL): start again.
      // Behind a pooler said to track them, it is the pooler that does not.
      prepared_.forget_all();
      const bool pooled = prepared_.pooled();
      loss = {pooled ? statement_loss::misconfigured : statement_loss::lost, k};
      if (pooled) prepared_.set_limit(0, true);
    } else if (e.sqlstate == "0A000" && e.message.find("cached plan must not change result type") != std::string::npos) {
      // Its result type changed after DDL: this text gets a new name. Also just after
      // its Parse: PgBouncer binds a Parse of a text it already holds on that server
      // connection to the statement it has, old plan and all.
      prepared_.forget(text, st.n_params, st.types);
      loss = {statement_loss::lost, k};
    }
  }
  return loss;
}

PQSCOPE_DECL bool scope_machine::resend_lost(std::vector<item>& batch, const batch_reply& br, std::size_t at) {
  // A lost check fails its scope, which atomic() runs again (take_lost_statement()).
  if (batch[at].k != item::user || batch[at].slot->resent) return false;
  // Sending it again is exact only if what ran before it in this batch runs again
  // the same: controls of a transaction that began in this batch (rolled back
  // first), or nothing at all in autocommit.
  bool began_here = false, ends_here = false;
  for (std::size_t k = 0; k < batch.size(); ++k) {
    if (k < at && (batch[k].k == item::user || batch[k].k == item::followup)) return false;
    if (k < at && batch[k].k == item::begin) began_here = true;
    if (batch[k].k == item::end) ends_here = true;
  }
  if (!began_here && (!frames_.empty() || ends_here)) return false;
  batch[at].slot->resent = true;
  std::vector<item> again;
  again.reserve(batch.size());
  for (item& it : batch)
    if (it.k != item::xid && it.k != item::position) again.push_back(std::move(it));  // plan() adds them again
  queue_.insert(queue_.begin(), std::make_move_iterator(again.begin()), std::make_move_iterator(again.end()));
  for (frame& f : frames_) f.sent = false;
  if (br.state != server_state::idle) push_followup("ROLLBACK", false);
  send_requested_ = true;
  send_all_ = planned_all_;
  return true;
}

PQSCOPE_DECL std::exception_ptr scope_machine::failure_of(const item& it, const reply& r, const statement_loss& loss,
                                                         std::size_t at) const {
  if (it.k == item::check && is_behind(r)) {
    // The message carries the replay position: "... pg_lsn: "pqscope: replica behind, replayed 0/3000060"".
    const std::string& m = r.failure().message;
    const std::size_t from = m.find(behind_marker) + std::strlen(behind_marker);
    const std::size_t to = m.find('"', from);
    wal_position replayed;
    try {
      replayed = wal_position::parse(std::string_view(m).substr(from, to == std::string::npos ? to : to - from));
    } catch (const conversion_error&) {
      // an unexpected message: the position stays unknown, the error is still this one
    }
    return std::make_exception_ptr(replica_behind(replayed, wal_position::parse(it.owned->args.at(0))));
  }
  if (it.k != item::user) return sql_error_ptr(r, it.text(), it.context());
  if (loss.what == statement_loss::none || loss.at != at) return sql_error_ptr(r, it.slot->sql);
  const reply_error& e = r.failure();
  if (loss.what == statement_loss::misconfigured)
    return std::make_exception_ptr(configuration_error(
        "the pooler lost a statement pqscope had prepared (" + e.sqlstate + ": " + e.message +
        "): connection_options::pooler_max_prepared_statements says it tracks prepared statements, but it does "
        "not (PgBouncer before 1.21, or its max_prepared_statements is 0). Set pooler_max_prepared_statements "
        "to 0 for this pooler; this connection prepares nothing more"));
  error_fields f{e.sqlstate, e.message, e.detail, e.hint, std::string(it.slot->sql), e.position,
                 e.schema, e.table, e.column, e.datatype, e.constraint};
  f.message = "the session lost the statement pqscope prepared for this text (" + e.message +
              "); it did not run, and is prepared again on its next use: run it again (atomic() does so itself)";
  return std::make_exception_ptr(prepared_statement_lost(std::move(f)));
}

PQSCOPE_DECL void scope_machine::resend_check_alone(std::vector<item>& batch, const batch_reply& br) {
  check_alone_ = true;
  std::vector<item> again;
  again.reserve(batch.size());
  for (item& it : batch)
    if (it.k != item::xid && it.k != item::position) again.push_back(std::move(it));  // plan() adds them again
  again.front().owned->sql = check_alone_sql;
  again.front().alone = true;
  queue_.insert(queue_.begin(), std::make_move_iterator(again.begin()), std::make_move_iterator(again.end()));
  // The check came first: the server skipped the rest, nothing began.
  if (br.state != server_state::idle) push_followup("ROLLBACK", false);
  send_requested_ = true;
  send_all_ = planned_all_;
}

PQSCOPE_DECL void scope_machine::mark_open() noexcept {
  prepared_.forget_all();  // a new session has none
  check_alone_ = false;    // and may have another default isolation
  closed_ = false;
  broken_ = false;
  broken_reason_.clear();
  clear_queue();
  doom_.reset();
  void_.reset();
  pid_ = current_pid();
}

PQSCOPE_DECL void scope_machine::check_usable() const {
  if (pid_ != current_pid())
    throw usage_error("this connection was opened by process " + std::to_string(pid_) +
                      "; after fork() a child must open its own connection (database::connect())");
  if (closed_) throw connection_error("the connection was closed while this scope was open");
  if (broken_)
    throw connection_error("the connection is broken (" + broken_reason_ +
                           "); end the open scopes and call reconnect()");
}

PQSCOPE_DECL void
scope_machine::notify(const statement_slot& s, std::chrono::microseconds elapsed, const std::exception* e,
                      const result* r) noexcept {
  if (!observer_) return;
  try {
    statement_event ev;
    ev.sql = s.sql;
    ev.params = static_cast<std::size_t>(s.stmt.n_params);
    ev.depth = s.depth;
    ev.duration = elapsed;
    ev.error = e;
    ev.attempt = s.attempt;
    ev.batched = s.batched;
    if (r != nullptr) ev.rows = r->columns() > 0 ? r->size() : r->affected_rows();
    observer_(ev);
  } catch (...) {
    // a logging hook must not change what the transaction does
  }
}

PQSCOPE_DECL std::size_t
scope_machine::fail_unanswered(std::vector<item>& batch, const std::exception_ptr& e, std::chrono::microseconds elapsed) {
  std::size_t failed = 0;
  for (item& it : batch) {
    if (it.k != item::user || it.slot->st != statement_slot::state::queued) continue;
    ++failed;
    it.slot->fail(e);
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& x) {
      notify(*it.slot, elapsed, &x, nullptr);
    } catch (...) {
    }
  }
  return failed;
}

PQSCOPE_DECL void scope_machine::fail_queued(const std::exception_ptr& e) noexcept {
  for (item& it : queue_)
    if (it.k == item::user && it.slot && it.slot->st == statement_slot::state::queued) it.slot->fail(e);
}

PQSCOPE_DECL void scope_machine::void_attempt(std::vector<item>& batch, std::size_t at, const batch_reply& br,
                                              std::chrono::microseconds elapsed, bool ending,
                                              std::exception_ptr failure) {
  const item& it = batch[at];
  const reply& r = br.replies[at];
  void_ = attempt_failure{it.context() + r.failure().message, r.failure().sqlstate, nullptr};
  if (it.k == item::check && is_behind(r)) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      void_ = attempt_failure{e.what(), "", failure};
    }
  }
  if (it.k == item::user) {
    it.slot->fail(std::move(failure));
    try {
      std::rethrow_exception(it.slot->error);
    } catch (const std::exception& x) {
      notify(*it.slot, elapsed, &x, nullptr);
    }
  }
  std::exception_ptr e;
  try {
    throw_void("not run");
  } catch (...) {
    e = std::current_exception();
  }
  fail_unanswered(batch, e, elapsed);
  fail_queued(e);
  queue_.clear();
  doom_.reset();
  for (frame& f : frames_) f.sent = false;
  if (ending) op_.replay = true;  // the outermost scope's end step throws batch_failed
  if (br.state != server_state::idle) {
    ++stats_.transactions_rolled_back;
    push_followup("ROLLBACK", false);
  }
}

PQSCOPE_DECL void scope_machine::hold(std::size_t sp) {
  if (held_.size() <= sp) held_.resize(sp + 1, 0);
  held_[sp] += 1;
  note_held();
}

PQSCOPE_DECL void scope_machine::fold(std::size_t sp, bool rolled_back) {
  if (sp == 0 || held_.size() <= sp) return;
  std::uint64_t under = 0;
  for (std::size_t j = sp; j < held_.size(); ++j) under += std::exchange(held_[j], 0);
  if (!rolled_back) held_[sp - 1] += under;
  note_held();
}

PQSCOPE_DECL void scope_machine::note_held() {
  std::uint64_t total = 0;
  for (auto n : held_) total += n;
  stats_.savepoints_in_transaction = total;
  stats_.max_savepoints_in_transaction = std::max(stats_.max_savepoints_in_transaction, total);
}

PQSCOPE_DECL void scope_machine::end_of_transaction() {
  held_.clear();
  stats_.savepoints_in_transaction = 0;
}

PQSCOPE_DECL void scope_machine::mark_broken(const std::string& why) {
  broken_ = true;
  broken_reason_ = why;
  fail_queued(std::make_exception_ptr(connection_error("connection lost: " + why)));
  queue_.clear();
  followup_.clear();
  doom_.reset();
}

PQSCOPE_DECL void scope_machine::check_state(const batch_reply& br, bool had_error) {
  const bool began = !frames_.empty() && frames_.front().sent;
  if (began && (br.state == server_state::in_transaction || br.state == server_state::failed_transaction)) return;
  if (!began && br.state == server_state::idle) return;
  if (frames_.empty() || !began) {
    // A transaction is open that no scope owns: never leave it idle behind PgBouncer.
    push_followup("ROLLBACK", true);
    // The driver may know who opened it (a middleware such as Pgpool-II in raw mode).
    op_.stray = std::make_exception_ptr(usage_error(
        br.diagnostic.empty()
            ? "a statement left the session inside a transaction that no pqscope scope owns; pqscope rolled it "
              "back. Use pqscope::transaction or pqscope::atomic for transactions"
            : "the session was left inside a transaction that no pqscope scope owns, and pqscope rolled it back: " +
                  br.diagnostic));
    return;
  }
  // The transaction ended behind the scopes' back: nothing is left to undo.
  for (frame& f : frames_) f.sent = false;
  queue_.clear();
  doom_ = doom{0, "the transaction was ended by a statement outside pqscope's control", "", nullptr};
  if (!had_error)
    op_.stray = std::make_exception_ptr(usage_error(
        "a statement ended the transaction behind pqscope's back; the open scopes can only roll back now"));
}

}  // namespace pqscope::detail
// #include <pqscope/detail/impl/scope_machine_scopes.ipp>
// Frames and the doomed state: opening and ending scopes (the outermost one's
// COMMIT or ROLLBACK, a nested one's RELEASE or ROLLBACK TO), the savepoint budget,
// SET LOCAL and its restoring, on_commit / on_rollback callbacks, and the end step
// of an operation. Included by detail/scope_machine.hpp.

// #include <pqscope/detail/scope_machine.hpp> (inlined above)
// #include <pqscope/detail/impl/queue_edits.hpp> (inlined above)

#include <algorithm>
#include <chrono>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace pqscope::detail {

PQSCOPE_DECL std::string scope_machine::savepoint_name(std::size_t level) { return "pqscope_" + std::to_string(level); }

PQSCOPE_DECL void scope_machine::set_observer(pqscope::callback<void(const statement_event&)> o) {
  observer_ = std::move(o);
}

PQSCOPE_DECL scope_machine::~scope_machine() { fail_queued(closed_error()); }

PQSCOPE_DECL void scope_machine::set_savepoint_limit(std::size_t limit, bool refuse) noexcept {
  savepoint_limit_ = limit;
  refuse_past_limit_ = refuse;
}

PQSCOPE_DECL std::uint64_t scope_machine::open(const transaction_options& o, attempt_info attempt) {
  check_usable();
  if (o.statement_timeout.count() < 0 || o.lock_timeout.count() < 0 || o.resolve_wait.count() < 0)
    throw usage_error("transaction_options: statement_timeout, lock_timeout and resolve_wait must not be negative");
  if (frames_.empty()) lost_statement_ = false;
  if (!frames_.empty()) {
    const transaction_options& root = frames_.front().opts;
    if (o.durable)
      throw usage_error("a durable scope must be the outermost one, but " + std::to_string(depth()) +
                        " scope(s) are open: a durable scope promises a real COMMIT at its end");
    if (o.isolation != isolation::server_default && o.isolation != root.isolation)
      throw usage_error("a nested scope cannot change the isolation level of the transaction it is part of; "
                        "set it on the outermost scope");
    if (o.read_only && !root.read_only)
      throw usage_error("a nested scope cannot make a read-write transaction read-only; set read_only on the "
                        "outermost scope");
    if (o.deferrable && !root.deferrable)
      throw usage_error("a nested scope cannot make the transaction deferrable; set it on the outermost scope");
    if (root.at_least < o.at_least)
      throw usage_error("a nested scope cannot ask to see a later WAL position (at_least " + o.at_least.to_string() +
                        ") than its transaction does (" + root.at_least.to_string() +
                        "): set at_least on the outermost scope");
    throw_if_void("opening a nested scope");
    throw_if_doomed("opening a nested scope");
    attempt = frames_.front().attempt;
  }
  const std::size_t i = frames_.size();
  if (i > 0 && o.savepoint) check_savepoint_budget(frames_.front().opts, i);
  frame f;
  f.id = next_id_++;
  f.opts = o;
  f.owning = i == 0 || o.savepoint;
  f.attempt = attempt;
  frames_.push_back(std::move(f));
  const std::uint64_t id = frames_.back().id;
  if (i == 0) {
    xid_ = in_doubt{};
    xid_pending_ = false;
    void_.reset();
    if (attempt.batched) ++stats_.batched_attempts;
    if (!o.at_least.empty()) queue_check(id, o);
    queue(item::begin, id, 0, "BEGIN");
    // Not BEGIN ISOLATION LEVEL ...: Pgpool-II 4.3 (streaming_replication mode)
    // drops the modes from BEGIN, and keeps SET TRANSACTION. Same batch: no round trip.
    std::string modes = modes_sql(o);
    if (!modes.empty()) queue_owned(item::begin, id, 0, std::move(modes));
  } else if (o.savepoint) {
    queue(item::savepoint, id, i).sp = i;  // its text is written when it is sent (most never are)
  }
  if (o.statement_timeout.count() > 0)
    queue_owned(item::timeout, id, i, "SET LOCAL statement_timeout = " + std::to_string(o.statement_timeout.count()));
  if (o.lock_timeout.count() > 0)
    queue_owned(item::timeout, id, i, "SET LOCAL lock_timeout = " + std::to_string(o.lock_timeout.count()));
  return id;
}

PQSCOPE_DECL std::optional<std::size_t> scope_machine::index_of(std::uint64_t id) const noexcept {
  for (std::size_t i = 0; i < frames_.size(); ++i)
    if (frames_[i].id == id) return i;
  return std::nullopt;
}

PQSCOPE_DECL bool scope_machine::end_scope(std::uint64_t id, bool commit, bool quiet) {
  if (!quiet && !opened_by_this_process()) check_usable();
  const std::size_t i = innermost_index(id, commit ? "commit()" : "rollback()");
  reset_operation();
  op_.commit = commit;
  op_.quiet = quiet;
  if ((closed_ || broken_) && commit) {
    if (i == 0) {
      pop_outermost();
      if (opened_by_this_process()) run_callbacks(op_.ended.on_rollback, true);
      reset_operation();
    } else {
      end_nested_rollback(i);
    }
    check_usable();  // throws
  }
  if (void_) {  // the attempt is rolled back on the server already; its callbacks never fire
    frames_.pop_back();
    if (i == 0) {
      queue_.clear();
      op_.replay = true;
      return true;
    }
    if (commit && !quiet) throw_void("commit() refused");
    return false;
  }
  if (commit && doom_) {
    op_.refused = *doom_;
    op_.commit = false;
  }
  if (i == 0) {
    start_outermost();
    return true;
  }
  if (op_.commit) {
    commit_nested(i);
    return false;
  }
  end_nested_rollback(i);
  if (op_.refused && !quiet) refuse(*op_.refused);
  return false;
}

PQSCOPE_DECL std::optional<in_doubt> scope_machine::needs_resolution() const {
  if (op_.lost && op_.commit && op_.sent_end && op_.ended.opts.resolve_in_doubt && op_.xid.known()) {
    in_doubt q = op_.xid;
    q.wait = op_.ended.opts.resolve_wait;
    return q;
  }
  return std::nullopt;
}

PQSCOPE_DECL void scope_machine::resolve(std::string outcome) {
  op_.resolved = true;
  op_.resolution = std::move(outcome);
}

PQSCOPE_DECL void scope_machine::finish_end(bool* committed) {
  if (committed != nullptr) *committed = false;
  operation op = std::move(op_);
  reset_operation();
  frame& f = op.ended;
  if (op.replay) {
    if (op.quiet) return;
    throw_void(op.commit ? "commit() refused" : "rollback()");
  }
  if (!op.commit) {
    if (op.sent_end) ++stats_.transactions_rolled_back;
    // In a forked child nothing was rolled back: the transaction is the parent's.
    if (opened_by_this_process()) run_callbacks(f.on_rollback, op.quiet);
    if (op.lost && !op.quiet) throw connection_error("connection lost during ROLLBACK: " + *op.lost);
    if (op.refused && !op.quiet) refuse(*op.refused);
    return;
  }
  auto done = [&] {
    ++stats_.transactions_committed;
    if (committed != nullptr) *committed = true;
    // Before on_commit, which may read it. A commit whose position is unknown (its
    // query failed, or the answer was lost) leaves no position rather than an older
    // one that this transaction's writes are past.
    if (op.position_asked) last_commit_position_ = op.position;
    run_callbacks(f.on_commit, false);
  };
  if (!op.sent_end) {  // nothing ever reached the server: nothing to commit
    if (committed != nullptr) *committed = true;
    run_callbacks(f.on_commit, false);
    return;
  }
  // The COMMIT's own answer arrived before the connection went (only the position
  // query behind it was lost): it committed.
  if (op.lost && op.end_reply.st == reply::status::ok && op.end_reply.tag() == "COMMIT") return done();
  if (op.lost && f.opts.resolve_in_doubt && !op.xid_unknown) {
    // Without an xid the transaction wrote nothing: nothing was lost.
    const std::string outcome = !op.xid.known() ? "committed" : op.resolved ? op.resolution : "not asked";
    if (outcome == "committed") return done();
    if (outcome == "aborted" || is_absent(outcome)) {
      ++stats_.transactions_rolled_back;
      run_callbacks(f.on_rollback, false);
      throw connection_error(
          "the connection was lost while COMMIT was in flight, and the transaction did not commit (" +
          (is_absent(outcome) ? "xid " + op.xid.xid + " is not in the server's history; " + outcome.substr(8)
                              : "pg_xact_status of xid " + op.xid.xid + ": aborted") +
          "): " + *op.lost);
    }
    forget_position(op);
    throw in_doubt_error("the connection was lost after COMMIT was sent, and asking the server about xid " +
                         op.xid.xid + " gave no answer (" + outcome +
                         "); the transaction may or may not have committed: " + *op.lost);
  }
  if (op.lost) {
    forget_position(op);
    throw in_doubt_error("the connection was lost after COMMIT was sent, so the transaction may or may not have "
                         "committed: " + *op.lost);
  }
  if (op.failure || op.end_reply.st != reply::status::ok) {
    ++stats_.transactions_rolled_back;
    run_callbacks(f.on_rollback, false);
    if (op.followup_lost) throw connection_error("connection lost: " + *op.followup_lost);
    if (op.failure) std::rethrow_exception(op.failure);
    std::rethrow_exception(sql_error_ptr(op.end_reply, "COMMIT"));
  }
  if (op.end_reply.tag() != "COMMIT") {  // the server answers ROLLBACK for a failed transaction
    ++stats_.transactions_rolled_back;
    run_callbacks(f.on_rollback, false);
    throw transaction_aborted("COMMIT was answered with " + std::string(op.end_reply.tag()) +
                                  ": the transaction had failed and was rolled back",
                              "the server rolled the transaction back", "");
  }
  done();
}

PQSCOPE_DECL void scope_machine::set_local(std::string_view name, std::string_view value) {
  check_usable();
  if (frames_.empty())
    throw usage_error("set_local(\"" + std::string(name) +
                      "\") outside a scope: a session-level setting would leak to other clients of a "
                      "pooled server connection; open a pqscope::transaction first");
  if (name.empty()) throw usage_error("set_local(): the setting name is empty");
  throw_if_void("set_local() refused");
  throw_if_doomed("set_local() refused");
  param_list check = param_list::of(name, value);  // refuses NUL bytes before anything is queued
  (void)check;
  item& c =
      queue_owned(item::setting, frames_.back().id, frames_.size() - 1, "SELECT pg_catalog.set_config($1, $2, true)");
  c.owned->args = {std::string(name), std::string(value)};
  c.owned->context = "set_local(\"" + std::string(name) + "\"): ";
}

PQSCOPE_DECL void scope_machine::on_commit(callback fn) {
  check_usable();
  if (frames_.empty()) {
    fn();  // autocommit: what ran before is already durable
    return;
  }
  frames_.back().on_commit.push_back(std::move(fn));
}

PQSCOPE_DECL void scope_machine::on_rollback(callback fn) {
  check_usable();
  if (!frames_.empty()) frames_.back().on_rollback.push_back(std::move(fn));
  // outside a scope there is nothing to roll back: the callback can never run
}

PQSCOPE_DECL std::size_t scope_machine::innermost_index(std::uint64_t id, const char* what) const {
  auto at = index_of(id);
  if (!at) throw usage_error(std::string(what) + ": this scope has already ended");
  if (*at + 1 != frames_.size())
    throw usage_error(std::string(what) + " on a scope while " + std::to_string(frames_.size() - *at - 1) +
                      " scope(s) opened inside it are still open; end the inner scopes first");
  return *at;
}

PQSCOPE_DECL void scope_machine::throw_if_doomed(const char* what) const {
  if (frames_.empty() || !doom_) return;
  if (doom_->untold) std::rethrow_exception(std::exchange(doom_->untold, nullptr));
  throw transaction_aborted(std::string(what) + ": an earlier failure in this scope (" + doom_->message +
                                ") means it can only roll back; let the exception leave the scope, or "
                                "catch it outside the scope",
                            doom_->message, doom_->sqlstate);
}

PQSCOPE_DECL void scope_machine::throw_if_void(const char* what) const {
  if (void_ && !frames_.empty()) throw_void(what);
}

PQSCOPE_DECL void scope_machine::throw_void(const char* what) const {
  throw batch_failed(std::string(what) + ": a statement sent with this batched attempt failed (" + void_->message +
                         "); the attempt was rolled back and atomic() runs the function again without batching",
                     void_->message, void_->sqlstate);
}

PQSCOPE_DECL void scope_machine::refuse(const doom& d) {
  throw transaction_aborted("commit() refused: the scope was rolled back instead, because " + d.message, d.message,
                            d.sqlstate);
}

PQSCOPE_DECL std::size_t scope_machine::undo_level() const noexcept {
  for (std::size_t i = frames_.size(); i-- > 0;)
    if (frames_[i].owning && frames_[i].sent) return i;
  return 0;
}

PQSCOPE_DECL void scope_machine::doom_here(const std::string& message, const std::string& sqlstate) {
  if (!frames_.empty() && !doom_) doom_ = doom{undo_level(), message, sqlstate, nullptr};
}

PQSCOPE_DECL void scope_machine::check_savepoint_budget(const transaction_options& root, std::size_t i) {
  const std::size_t limit = root.savepoint_limit != 0 ? root.savepoint_limit : savepoint_limit_;
  if (limit == 0) return;
  std::uint64_t in_use = stats_.savepoints_in_transaction;
  for (const item& c : queue_) in_use += c.k == item::savepoint ? 1 : 0;
  if (in_use < limit) return;
  ++stats_.savepoint_limit_exceeded;
  const std::string why = "opening savepoint " + std::to_string(i) + " would make " + std::to_string(in_use + 1) +
                          " subtransactions in this transaction, past the limit of " + std::to_string(limit) +
                          " (PostgreSQL caches 64 per backend; past that every snapshot slows down)";
  const std::string refusal_text =
      why + "; raise savepoint_limit, use savepoint = false for inner scopes, or split the transaction";
  const usage_error refusal(refusal_text);
  if (observer_) {
    try {
      statement_event ev;
      ev.sql = "SAVEPOINT";
      ev.depth = depth();
      ev.warning = why;
      ev.error = refuse_past_limit_ ? &refusal : nullptr;
      observer_(ev);
    } catch (...) {
      // a logging hook must not change what the transaction does
    }
  }
  if (refuse_past_limit_) throw usage_error(refusal_text);
}

PQSCOPE_DECL void scope_machine::pop_outermost() {
  op_.ended = std::move(frames_.front());
  frames_.pop_back();
}

PQSCOPE_DECL void scope_machine::start_outermost() {
  pop_outermost();
  doom_.reset();
  const bool statements = statement_queued_at(0);
  if (op_.commit)
    // COMMIT releases every savepoint and ends every SET LOCAL: of the controls
    // after the last statement, only a ROLLBACK TO still matters (it undoes writes).
    trim_tail([](const item& c) { return c.k != item::rollback_to; });
  else
    trim_tail([](const item&) { return true; });
  if ((!op_.ended.sent && !statements) || closed_ || broken_ || !opened_by_this_process()) {
    clear_queue();  // nothing reached the server, or nothing can
    return;
  }
  queue(item::end, op_.ended.id, 0, op_.commit ? "COMMIT" : "ROLLBACK");
  send_requested_ = true;
}

PQSCOPE_DECL void scope_machine::commit_nested(std::size_t i) {
  frame f = std::move(frames_.back());
  frames_.pop_back();
  // A SET LOCAL with no statement after it needs no undoing; one that ran, or
  // that a waiting statement needs, is restored below (SET LOCAL survives RELEASE).
  bool timeouts_live = false;
  std::size_t dropped = 0;
  for (std::size_t k = queue_.size(); k-- > 0;) {
    if (queue_[k].frame_id != f.id || queue_[k].k != item::timeout) continue;
    const bool needed = std::any_of(queue_.begin() + static_cast<std::ptrdiff_t>(k) + 1, queue_.end(),
                                    [](const item& c) { return c.k == item::user; });
    if (needed) {
      timeouts_live = true;
    } else {
      queue_.erase(queue_.begin() + static_cast<std::ptrdiff_t>(k));
      ++dropped;
    }
  }
  const std::size_t timeouts =
      (f.opts.statement_timeout.count() > 0 ? 1u : 0u) + (f.opts.lock_timeout.count() > 0 ? 1u : 0u);
  if (dropped < timeouts) timeouts_live = true;
  // A savepoint not yet sent is not needed: the scope can no longer roll back on
  // its own, and a failure of a waiting statement voids the whole attempt.
  if (f.owning && !f.sent)
    drop_queued([&](const item& c) { return c.frame_id == f.id && c.k == item::savepoint; });
  lower_levels(i);
  if (f.owning && f.sent) {
    // RELEASE of savepoint i also releases the deeper ones still waiting at the tail.
    while (!queue_.empty() && queue_.back().k == item::release) queue_.pop_back();
    queue(item::release, f.id, i - 1).sp = i;
  }
  if (timeouts_live) {
    restore_timeout(f, i, "statement_timeout", &transaction_options::statement_timeout);
    restore_timeout(f, i, "lock_timeout", &transaction_options::lock_timeout);
  }
  frame& parent = frames_.back();
  for (auto& cb : f.on_commit) parent.on_commit.push_back(std::move(cb));
  for (auto& cb : f.on_rollback) parent.on_rollback.push_back(std::move(cb));
}

PQSCOPE_DECL void scope_machine::restore_timeout(const frame& f, std::size_t i, const char* name,
                                                 std::chrono::milliseconds transaction_options::*member) {
  if ((f.opts.*member).count() <= 0) return;
  std::string value = "DEFAULT";
  for (std::size_t j = frames_.size(); j-- > 0;)
    if ((frames_[j].opts.*member).count() > 0) {
      value = std::to_string((frames_[j].opts.*member).count());
      break;
    }
  queue_owned(item::restore, f.id, i - 1, std::string("SET LOCAL ") + name + " TO " + value);
}

PQSCOPE_DECL void scope_machine::end_nested_rollback(std::size_t i) {
  frame f = std::move(frames_.back());
  frames_.pop_back();
  if (f.owning) {
    if (statement_queued_at(i)) {
      // Its statements still wait: they go out after its SAVEPOINT and are undone
      // by the ROLLBACK TO behind them, so their success is still confirmed.
      lower_levels(i);
      queue_rollback_to(f.id, i);
    } else {
      drop_queued([&](const item& c) { return c.level >= i; });
      if (f.sent) queue_rollback_to(f.id, i);
    }
    if (doom_ && doom_->level >= i) doom_.reset();
  } else {
    lower_levels(i);
    // Its work is undone only with the enclosing scope: its on_rollback callbacks wait for that.
    for (auto& cb : f.on_rollback) frames_.back().on_rollback.push_back(std::move(cb));
    // Without a savepoint nothing can be undone on its own: the enclosing scope is doomed.
    if (!doom_) {
      std::size_t level = i - 1;
      while (level > 0 && !frames_[level].owning) --level;
      doom_ = doom{level, "a nested scope without a savepoint was rolled back", "", nullptr};
    }
  }
}

PQSCOPE_DECL void scope_machine::run_callbacks(std::vector<callback>& cbs, bool quiet) {
  std::exception_ptr first;
  for (auto& cb : cbs) {
    try {
      cb();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first && !quiet) std::rethrow_exception(first);
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/sync_session.hpp>
// The blocking front end: a scope machine, a driver, and the loop between them
// (sync_session::drive: plan, exchange, apply), one public call at a time per
// connection; driver_session binds it to a driver and resolves a lost COMMIT on a
// fresh connection. The in-doubt resolver's clock is shared with the asio front end.

#include <sys/types.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/driver.hpp> (inlined above)
// #include <pqscope/notification.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/scope_machine.hpp> (inlined above)

namespace pqscope::detail {

// A token for the calling thread: the address of a thread_local, unique among
// live threads (cheaper to include than <thread>).
PQSCOPE_DECL std::uintptr_t this_thread_token() noexcept;

// The blocking front end: the machine, a driver, and the loop between them.
class sync_session : public sender, public std::enable_shared_from_this<sync_session> {
 public:
  scope_machine machine;

  // Held for the length of every public call: a call from a second thread while
  // one is in progress is refused before anything is touched or sent. The same
  // thread may re-enter (an on_commit callback that runs a statement).
  class call {
   public:
    // `of_stream`: a call of the COPY in progress itself; any other call is
    // refused while a COPY streams.
    call(sync_session& s, const char* what, bool of_stream = false);
    [[noreturn]] static void throw_busy(const char* what);
    // For destructors: false when another thread is in a call (nothing may be touched).
    static bool try_enter(sync_session& s, bool& outer) noexcept;
    static void leave(sync_session& s) noexcept { s.owner_.store(0, std::memory_order_release); }
    call(const call&) = delete;
    call& operator=(const call&) = delete;
    ~call() {
      if (outer_) leave(s_);
    }

   private:
    sync_session& s_;
    bool outer_ = false;
  };

  // A COPY in progress: ended (aborted, or read to its end) before the scopes
  // around it end or the connection closes.
  class stream {
   public:
    stream() = default;
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    stream(stream&&) = delete;
    stream& operator=(stream&&) = delete;
    virtual ~stream() = default;
    virtual void end_quietly() noexcept = 0;
  };
  void open_stream(stream* s) noexcept { stream_ = s; }
  void close_stream(stream* s) noexcept {
    if (stream_ == s) stream_ = nullptr;
  }
  [[nodiscard]] bool streaming() const noexcept { return stream_ != nullptr; }
  void end_stream_quietly() noexcept {
    if (stream_ != nullptr) stream_->end_quietly();  // which calls close_stream()
    stream_ = nullptr;
  }

  // ---- statements outside the pipeline (see scope_machine::prepare_out_of_band) ----
  // Sends what is queued, controls too, then puts `slot` in flight.
  void begin_out_of_band(const std::shared_ptr<statement_slot>& slot);
  // Its answer: the scopes learn it, then the result or the error.
  result end_out_of_band(const std::shared_ptr<statement_slot>& slot, batch_reply br);
  // The driver's calls (libpq_driver has them; a driver without them refuses).
  virtual int copy_start(const statement& s, batch_reply& out) = 0;  // PGRES_COPY_IN/OUT if started, else 0
  virtual bool copy_put(std::string_view data) = 0;
  virtual batch_reply copy_end(const char* abort_reason) = 0;
  virtual bool copy_get(std::string_view& row) = 0;
  virtual batch_reply copy_out_end() = 0;
  virtual batch_reply script(const char* sql) = 0;

  // The one loop: every send of every operation goes through here.
  void drive();

  // Sends what is queued and waits (a batched result is read, connection::flush()).
  PQSCOPE_DECL void flush() override;  // (see statement_slot::wait)

  // A statement from queue_statement(): a batched one waits, any other is sent now.
  result complete(const std::shared_ptr<statement_slot>& slot);

  void end(std::uint64_t id, bool commit, bool* committed = nullptr);

  // Ends scope `id` and every scope opened inside it, rolling back; never throws.
  // Used by destructors, also when scopes are destroyed out of order.
  void abandon(std::uint64_t id) noexcept;

 protected:
  // Fills `out` (its memory is used again from one round trip to the next).
  virtual void exchange(const std::vector<statement>& statements, batch_reply& out) = 0;
  // "committed", "aborted", "absent: ..." or why it could not tell; asked on a fresh
  // connection (detail/in_doubt.hpp).
  virtual std::string xact_status(const in_doubt& q) noexcept = 0;

 private:
  bool driving_ = false;
  batch_reply reply_;  // drive()'s, kept for its memory
  stream* stream_ = nullptr;  // the COPY in progress, if any
  std::atomic<std::uintptr_t> owner_{0};  // this_thread_token() of the thread in a call, or 0
};

// Whether a driver can fill a batch_reply it is given (libpq_driver::exchange).
template <class D, class = void>
struct fills_reply : std::false_type {};
template <class D>
struct fills_reply<D, std::void_t<decltype(std::declval<D&>().exchange(std::declval<const std::vector<statement>&>(),
                                                                       std::declval<batch_reply&>()))>>
    : std::true_type {};

// Whether a driver can wait for notifications (LISTEN) between round trips.
template <class D, class = void>
struct has_notifications : std::false_type {};
template <class D>
struct has_notifications<D, std::void_t<decltype(std::declval<D&>().take_notification(std::declval<notification&>()))>>
    : std::true_type {};

// Whether a driver can send statements outside the pipeline (COPY, scripts).
template <class D, class = void>
struct has_out_of_band : std::false_type {};
template <class D>
struct has_out_of_band<D, std::void_t<decltype(std::declval<D&>().script(""))>> : std::true_type {};

[[noreturn]] inline void unsupported(const char* what) {
  throw usage_error(std::string(what) + " needs a driver that can send statements outside a pipeline (libpq_driver)");
}

// How long the in-doubt resolver may take, from the moment the COMMIT was lost:
// one network_timeout plus its grace (the bound of one more round trip), or 5 s of
// polling without a network_timeout; transaction_options::resolve_wait instead when
// it is set. Connecting counts, but is bounded only by connect_timeout (whole
// seconds, at least 2, per host: libpq's rule).
template <class D>
std::chrono::milliseconds resolver_budget(const D& d) {
  if constexpr (takes_network<D>::value) {
    const std::chrono::milliseconds t = d.network().timeout;
    if (t.count() > 0) return t + libpq_driver::grace_for(t);
  }
  return std::chrono::milliseconds(0);
}

// The resolver's deadline, shared by both front ends.
class resolver_clock {
 public:
  using clock = std::chrono::steady_clock;
  // budget 0: no network_timeout; round trips are unbounded, and polling stops after
  // 5 s, or after `wait` (resolve_wait) when it is set.
  explicit resolver_clock(std::chrono::milliseconds budget, std::chrono::milliseconds wait = {})
      : bounded_(budget.count() > 0),
        waits_(wait.count() > 0),
        budget_(waits_ ? wait : bounded_ ? budget : std::chrono::milliseconds(5000)),
        deadline_(clock::now() + budget_) {}
  [[nodiscard]] std::chrono::milliseconds left() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock::now());
  }
  // The next round trip's network_timeout, so that it and its grace end by the
  // deadline (grace_for(t) <= t); false once nothing is left.
  [[nodiscard]] std::chrono::milliseconds round_trip_timeout() const {
    const std::chrono::milliseconds l = left();
    if (l.count() <= 1) return std::chrono::milliseconds(0);
    return l > std::chrono::milliseconds(2000) ? l - std::chrono::milliseconds(1000) : l / 2;
  }
  template <class D>
  bool bound_round_trip(D& d) const {
    if (!bounded_) return left().count() > 0;
    const std::chrono::milliseconds t = round_trip_timeout();
    if (t.count() <= 0) return false;
    if constexpr (takes_network<D>::value) d.set_network(network_settings{t});
    return true;
  }
  // Before asking again: 50 ms, or what is left; 0: stop.
  [[nodiscard]] std::chrono::milliseconds pause() const { return pause_of(std::chrono::milliseconds(50)); }
  // Before connecting again (no server could tell: a failover may be under way).
  [[nodiscard]] std::chrono::milliseconds reconnect_pause() const { return pause_of(std::chrono::milliseconds(200)); }
  // Why there is no verdict; `last`: what the last attempt saw.
  [[nodiscard]] std::string spent(const std::string& last = {}) const {
    return "no verdict within " + std::to_string(budget_.count()) + " ms" +
           (waits_ ? " (resolve_wait)" : bounded_ ? " (network_timeout and its grace)" : "") +
           (last.empty() ? "" : "; last: " + last);
  }

 private:
  [[nodiscard]] std::chrono::milliseconds pause_of(std::chrono::milliseconds most) const {
    const std::chrono::milliseconds l = left();
    if (l.count() <= (bounded_ ? 2 : 0)) return std::chrono::milliseconds(0);
    return l < most ? l : most;
  }
  bool bounded_;
  bool waits_;
  std::chrono::milliseconds budget_;
  clock::time_point deadline_;
};

// The blocking front end bound to a driver.
template <class Driver>
class driver_session final : public sync_session {
 public:
  explicit driver_session(std::string info) : conninfo(std::move(info)) {}

  Driver driver;
  std::string conninfo;  // what the session was opened with; also for resolving a lost COMMIT

  int copy_start(const statement& s, batch_reply& out) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_start(s, out);
    else unsupported("COPY");
  }
  bool copy_put(std::string_view data) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_put(data);
    else unsupported("COPY");
  }
  batch_reply copy_end(const char* abort_reason) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_end(abort_reason);
    else unsupported("COPY");
  }
  bool copy_get(std::string_view& row) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_get(row);
    else unsupported("COPY");
  }
  batch_reply copy_out_end() override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_out_end();
    else unsupported("COPY");
  }
  batch_reply script(const char* sql) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.script(sql);
    else unsupported("execute_script()");
  }

 protected:
  void exchange(const std::vector<statement>& statements, batch_reply& out) override {
    if constexpr (fills_reply<Driver>::value)
      (void)driver.exchange(statements, out);
    else
      out = driver.exchange(statements);
  }

  std::string xact_status(const in_doubt& q) noexcept override {
    try {
      const resolver_clock clock(resolver_budget(driver), q.wait);
      const verdict_question question(q);
      const statement ask = question.ask();
      std::string last;
      for (;;) {  // a fresh connection each time round: the conninfo may now lead elsewhere
        Driver fresh;
        copy_driver_settings(fresh, driver);  // the same network_timeout bounds the resolver
        try {
          fresh.open(conninfo, "pqscope in-doubt resolver");
          // A backend that was cut off may still be finishing: wait for its verdict.
          for (;;) {
            if (!clock.bound_round_trip(fresh)) return clock.spent(last);
            batch_reply br = fresh.exchange({ask});
            if (br.lost) {
              last = "connection lost: " + br.lost_message;
              break;
            }
            verdict v = read_verdict(br.replies.front(), q);
            if (v.next == verdict::then::done) return std::move(v.outcome);
            last = std::move(v.outcome);
            if (v.next == verdict::then::reconnect) break;
            const std::chrono::milliseconds pause = clock.pause();
            if (pause.count() <= 0) return clock.spent(last);
            ::usleep(static_cast<useconds_t>(pause.count() * 1000));
          }
        } catch (const connection_error& e) {
          last = e.what();  // no server reachable: a failover may be under way
        }
        const std::chrono::milliseconds pause = clock.reconnect_pause();
        if (pause.count() <= 0) return clock.spent(last);
        ::usleep(static_cast<useconds_t>(pause.count() * 1000));
      }
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown failure";
    }
  }
};

// Separate compilation: the session of the default driver is compiled once, with the rest.
PQSCOPE_COMPILED_ONCE(class driver_session<libpq_driver>)

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/sync_session.ipp>
// The bodies of <pqscope/detail/sync_session.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/sync_session.hpp> (inlined above)

namespace pqscope::detail {

PQSCOPE_DECL std::uintptr_t this_thread_token() noexcept {
  static thread_local char tag = 0;
  return reinterpret_cast<std::uintptr_t>(&tag);
}

PQSCOPE_DECL sync_session::call::call(sync_session& s, const char* what, bool of_stream) : s_(s) {
  const std::uintptr_t me = this_thread_token();
  std::uintptr_t expected = 0;
  if (s_.owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) {
    outer_ = true;
  } else if (expected != me) {
    throw_busy(what);
  }
  if (s_.stream_ != nullptr && !of_stream) {
    if (outer_) leave(s_);
    throw usage_error(std::string(what) + ": a COPY is in progress on this connection; finish() the "
                      "copy_writer, or read the copy_reader to its end, first");
  }
}

PQSCOPE_DECL void sync_session::call::throw_busy(const char* what) {
  throw usage_error(std::string(what) +
                    ": this connection is in use by another thread, whose call is still in progress. A "
                    "connection and its scopes serve one thread at a time; give each thread its own connection "
                    "(pqscope::pool), or hand it over between calls");
}

PQSCOPE_DECL bool sync_session::call::try_enter(sync_session& s, bool& outer) noexcept {
  const std::uintptr_t me = this_thread_token();
  std::uintptr_t expected = 0;
  outer = s.owner_.compare_exchange_strong(expected, me, std::memory_order_acquire);
  return outer || expected == me;
}

PQSCOPE_DECL void sync_session::begin_out_of_band(const std::shared_ptr<statement_slot>& slot) {
  machine.request_sync_point();
  drive();
  machine.finish();
  machine.stage_out_of_band(slot);
}

PQSCOPE_DECL result sync_session::end_out_of_band(const std::shared_ptr<statement_slot>& slot, batch_reply br) {
  machine.apply(std::move(br));
  drive();
  machine.finish();
  return slot->wait();
}

PQSCOPE_DECL void sync_session::drive() {
  if (driving_) throw usage_error("the connection was used while it was busy (from a statement observer?)");
  driving_ = true;
  try {
    while (machine.wants_send()) {
      exchange(machine.plan(), reply_);
      machine.apply(reply_);
    }
  } catch (...) {
    driving_ = false;
    throw;
  }
  driving_ = false;
}

PQSCOPE_DECL void sync_session::flush() {
  call guard(*this, "reading a result");
  machine.request_flush();
  drive();
  machine.finish();
}

PQSCOPE_DECL result sync_session::complete(const std::shared_ptr<statement_slot>& slot) {
  if (slot->batched) return result(std::shared_ptr<deferred_answer>(slot));
  drive();
  machine.finish();
  return slot->wait();
}

PQSCOPE_DECL void sync_session::end(std::uint64_t id, bool commit, bool* committed) {
  if (committed != nullptr) *committed = false;
  if (!machine.end_scope(id, commit)) {
    if (committed != nullptr) *committed = commit;
    return;
  }
  drive();
  if (auto xid = machine.needs_resolution()) machine.resolve(xact_status(*xid));
  machine.finish_end(committed);
}

PQSCOPE_DECL void sync_session::abandon(std::uint64_t id) noexcept {
  // Another thread in a call: touching the machine now would race with it.
  bool outer = false;
  if (!call::try_enter(*this, outer)) return;
  struct leave_on_exit {
    sync_session& s;
    bool outer;
    leave_on_exit(sync_session& session, bool was_outer) : s(session), outer(was_outer) {}
    leave_on_exit(const leave_on_exit&) = delete;
    leave_on_exit& operator=(const leave_on_exit&) = delete;
    leave_on_exit(leave_on_exit&&) = delete;
    leave_on_exit& operator=(leave_on_exit&&) = delete;
    ~leave_on_exit() {
      if (outer) call::leave(s);
    }
  } leave{*this, outer};
  end_stream_quietly();  // a COPY still open in this scope fails it first
  auto at = machine.index_of(id);
  if (!at) return;
  while (machine.depth() > *at) {
    try {
      if (machine.end_scope(machine.innermost_id(), false, /*quiet=*/true)) {
        drive();
        machine.finish_end();
      }
    } catch (...) {
      // quiet endings only throw if memory runs out; the frame is gone either way
    }
  }
}

}  // namespace pqscope::detail
#endif

namespace pqscope {

namespace detail {
// The COPY in progress on a session, shared by copy_writer and copy_reader.
class copy_stream final : public sync_session::stream {
 public:
  copy_stream(std::shared_ptr<sync_session> s, std::shared_ptr<statement_slot> slot, bool in);
  copy_stream(const copy_stream&) = delete;
  copy_stream& operator=(const copy_stream&) = delete;
  copy_stream(copy_stream&&) = delete;
  copy_stream& operator=(copy_stream&&) = delete;
  PQSCOPE_DECL ~copy_stream() override;  // inline in header-only mode: no key function, no vtable in every TU

  [[nodiscard]] bool open() const noexcept { return open_; }
  [[nodiscard]] sync_session& session() const noexcept { return *s_; }

  void check_open(const char* what) const;

  // COPY FROM STDIN: rows are gathered and sent in chunks.
  void put(std::string_view data);
  // The COPY's answer, applied to the scopes; throws what the statement raised.
  result end(batch_reply br);

  // A destructor, or a scope ending around the COPY: a COPY FROM STDIN is
  // aborted (nothing of it is kept), a COPY TO STDOUT is read to its end.
  PQSCOPE_DECL void end_quietly() noexcept override;  // (see the destructor)

 private:
  std::shared_ptr<sync_session> s_;
  std::shared_ptr<statement_slot> slot_;
  bool in_;
  bool open_ = true;
  std::string why_;  // why it ended, if by an error
};

}  // namespace detail

// Streams rows into COPY ... FROM STDIN (connection::copy_in). finish() ends the
// COPY and returns the number of rows the server took; a writer destroyed (or
// whose scope ends) before finish() aborts the COPY, so nothing of it is kept.
class copy_writer {
 public:
  copy_writer(copy_writer&&) noexcept = default;
  copy_writer& operator=(copy_writer&&) noexcept = default;
  copy_writer(const copy_writer&) = delete;
  copy_writer& operator=(const copy_writer&) = delete;
  ~copy_writer() = default;  // the stream aborts an unfinished COPY

  // One row: one value per column of the COPY's column list, converted as
  // parameters are; std::nullopt or nullptr is NULL.
  template <class... Ts>
  void write_row(const Ts&... values) {
    check("write_row()");
    detail::sync_session::call guard(st_->session(), "write_row()", true);
    rows_.write_row(values...);
    ++written_;
    if (rows_.buffer().size() >= chunk) send();
  }

  // Rows already in COPY's text format (tab-separated, escaped, each ending in a
  // newline), for data that comes that way.
  void write_raw(std::string_view text);

  // Ends the COPY: the rows the server took (its "COPY n"). Throws what the COPY
  // raised (a constraint, a bad value: the scope is doomed, as for any statement).
  std::uint64_t finish();

  // Rows written so far (write_row() calls).
  [[nodiscard]] std::uint64_t rows_written() const noexcept { return written_; }

 private:
  template <class Driver>
  friend class basic_connection;
  explicit copy_writer(std::unique_ptr<detail::copy_stream> st);
  static constexpr std::size_t chunk = std::size_t{64} * 1024;

  void check(const char* what) const;
  void send();

  std::unique_ptr<detail::copy_stream> st_;
  detail::copy_row_encoder rows_;
  std::uint64_t written_ = 0;
};

// Reads the rows of COPY ... TO STDOUT (connection::copy_out). The COPY ends
// when the last row has been read; a reader destroyed before that reads the rest
// and drops it.
class copy_reader {
 public:
  copy_reader(copy_reader&&) noexcept = default;
  copy_reader& operator=(copy_reader&&) noexcept = default;
  copy_reader(const copy_reader&) = delete;
  copy_reader& operator=(const copy_reader&) = delete;
  ~copy_reader() = default;

  // The next row's fields as text (std::nullopt for NULL); false after the last
  // row, once the COPY has ended (throws if it failed).
  bool read_row(std::vector<std::optional<std::string>>& fields);

  // The next row converted to Ts... (std::optional<T> for a column that may be
  // NULL); std::nullopt after the last row. conversion_error if the row does not
  // have sizeof...(Ts) columns. The values own their text: std::string_view is
  // refused, since the next row reuses the reader's buffers.
  template <class... Ts>
  std::optional<std::tuple<Ts...>> next() {
    std::string_view line;
    if (!next_line(line)) return std::nullopt;
    return rows_.row<Ts...>(line, read_);
  }

  // Rows read so far.
  [[nodiscard]] std::uint64_t rows_read() const noexcept { return read_; }
  // Whether the COPY has ended (every row read).
  [[nodiscard]] bool done() const noexcept { return !st_ || !st_->open(); }

 private:
  template <class Driver>
  friend class basic_connection;
  explicit copy_reader(std::unique_ptr<detail::copy_stream> st);

  bool next_line(std::string_view& line);

  std::unique_ptr<detail::copy_stream> st_;
  detail::copy_row_decoder rows_;
  std::uint64_t read_ = 0;
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/copy.ipp>
// The bodies of <pqscope/copy.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/copy.hpp> (inlined above)

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL copy_stream::copy_stream(std::shared_ptr<sync_session> s, std::shared_ptr<statement_slot> slot, bool in)
    : s_(std::move(s)), slot_(std::move(slot)), in_(in) {
  s_->open_stream(this);
}

PQSCOPE_DECL copy_stream::~copy_stream() { end_quietly(); }

PQSCOPE_DECL void copy_stream::check_open(const char* what) const {
  if (!open_)
    throw usage_error(std::string(what) + ": this COPY has already ended" +
                      (why_.empty() ? std::string() : " (" + why_ + ")"));
}

PQSCOPE_DECL void copy_stream::put(std::string_view data) {
  if (!s_->copy_put(data)) {
    // The connection failed: copy_end() reports it, and the scopes learn it.
    (void)end(s_->copy_end(nullptr));
  }
}

PQSCOPE_DECL result copy_stream::end(batch_reply br) {
  open_ = false;
  s_->close_stream(this);
  try {
    return s_->end_out_of_band(slot_, std::move(br));
  } catch (const std::exception& e) {
    why_ = e.what();
    throw;
  }
}

PQSCOPE_DECL void copy_stream::end_quietly() noexcept {
  if (!open_) return;
  try {
    if (in_) {
      (void)end(s_->copy_end("the copy_writer was destroyed (or its scope ended) before finish()"));
    } else {
      std::string_view ignored;
      while (s_->copy_get(ignored)) {
      }
      (void)end(s_->copy_out_end());
    }
  } catch (...) {
    // the scopes know: a failed COPY dooms its scope, a lost connection breaks it
  }
  open_ = false;
  s_->close_stream(this);
}

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL copy_writer::copy_writer(std::unique_ptr<detail::copy_stream> st) : st_(std::move(st)) {}

PQSCOPE_DECL void copy_writer::write_raw(std::string_view text) {
  check("write_raw()");
  detail::sync_session::call guard(st_->session(), "write_raw()", true);
  rows_.write_raw(text);
  if (rows_.buffer().size() >= chunk) send();
}

PQSCOPE_DECL std::uint64_t copy_writer::finish() {
  check("finish()");
  detail::sync_session::call guard(st_->session(), "finish()", true);
  send();
  const result r = st_->end(st_->session().copy_end(nullptr));
  return r.affected_rows();
}

PQSCOPE_DECL void copy_writer::check(const char* what) const {
  if (!st_) throw usage_error(std::string(what) + " on a moved-from copy_writer");
  st_->check_open(what);
}

PQSCOPE_DECL void copy_writer::send() {
  detail::copy_buffer& buf = rows_.buffer();
  if (buf.empty()) return;
  st_->put(buf.view());
  buf.clear();
}

PQSCOPE_DECL copy_reader::copy_reader(std::unique_ptr<detail::copy_stream> st) : st_(std::move(st)) {}

PQSCOPE_DECL bool copy_reader::read_row(std::vector<std::optional<std::string>>& fields) {
  std::string_view line;
  if (!next_line(line)) return false;
  detail::parse_copy_row(line, fields);
  return true;
}

PQSCOPE_DECL bool copy_reader::next_line(std::string_view& line) {
  if (!st_) throw usage_error("reading a moved-from copy_reader");
  if (!st_->open()) return false;
  detail::sync_session::call guard(st_->session(), "reading a copy_reader", true);
  if (st_->session().copy_get(line)) {
    ++read_;
    return true;
  }
  (void)st_->end(st_->session().copy_out_end());
  return false;
}

}  // namespace pqscope
#endif
// #include <pqscope/connection.hpp>
// An autocommit connection that tracks nested transaction scopes.

#include <chrono>
#include <algorithm>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/callback.hpp> (inlined above)
// #include <pqscope/copy.hpp> (inlined above)
// #include <pqscope/driver.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/notification.hpp> (inlined above)
// #include <pqscope/params.hpp> (inlined above)
// #include <pqscope/result.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/stats.hpp> (inlined above)
// #include <pqscope/wal_position.hpp> (inlined above)
// #include <pqscope/detail/application_name.hpp>
// The default application_name, "program:user@host", so that every client is
// recognisable in pg_stat_activity, also through PgBouncer.

#include <cstddef>
#include <string>

// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope::detail {

// PostgreSQL keeps NAMEDATALEN - 1 = 63 bytes; cut on a UTF-8 character boundary.
PQSCOPE_DECL std::string cut_utf8(std::string s, std::size_t max_bytes);

// argv[0] from /proc (plain read(2): <fstream> would cost every includer ~36k lines).
PQSCOPE_DECL std::string program_name();

PQSCOPE_DECL std::string default_application_name();

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/application_name.ipp>
// The bodies of <pqscope/detail/application_name.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/detail/application_name.hpp> (inlined above)

#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL std::string cut_utf8(std::string s, std::size_t max_bytes) {
  if (s.size() <= max_bytes) return s;
  std::size_t n = max_bytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  s.resize(n);
  return s;
}

PQSCOPE_DECL std::string program_name() {
  std::string cmdline;
  const int fd = ::open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[512];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::close(fd);
    if (n > 0) cmdline.assign(buf, ::strnlen(buf, static_cast<std::size_t>(n)));
  }
  auto slash = cmdline.rfind('/');
  if (slash != std::string::npos) cmdline.erase(0, slash + 1);
  return cmdline.empty() ? "pqscope" : cmdline;
}

PQSCOPE_DECL std::string default_application_name() {
  std::string user;
  struct passwd pw {};
  struct passwd* found = nullptr;
  char buf[4096];
  if (getpwuid_r(geteuid(), &pw, buf, sizeof buf, &found) == 0 && found != nullptr) user = found->pw_name;
  if (user.empty()) user = std::to_string(geteuid());
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) host[0] = '\0';
  std::string h = host;
  h = h.substr(0, h.find('.'));
  return cut_utf8(program_name() + ":" + user + "@" + h, 63);
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/detail/session_state.hpp> (inlined above)
// #include <pqscope/detail/scope_machine.hpp> (inlined above)
// #include <pqscope/detail/sync_session.hpp> (inlined above)

namespace pqscope {

class transaction;
namespace detail {
struct connection_access;
}  // namespace detail

// A statement that is sent even though it leaves session state behind, on a
// connection with pooling::transaction: execute(allow_session_state("LISTEN jobs")).
struct allow_session_state {
  explicit allow_session_state(std::string text) : sql(std::move(text)) {}
  std::string sql;
};

namespace detail {
// SQL text as libpq wants it: NUL-terminated, with no NUL inside.
class sql_ref {
 public:
  sql_ref(const char* s) : ptr_(s != nullptr ? s : ""), size_(std::strlen(ptr_)), no_nul_(true) {}  // NOLINT: implicit on purpose
  sql_ref(const std::string& s) : ptr_(s.c_str()), size_(s.size()) {}                // NOLINT
  sql_ref(std::string_view s) : owned_(s), ptr_(owned_.c_str()), size_(s.size()) {}   // NOLINT
  sql_ref(const allow_session_state& s)                                               // NOLINT
      : ptr_(s.sql.c_str()), size_(s.sql.size()), session_state_allowed_(true) {}
  sql_ref(const sql_ref&) = delete;
  sql_ref& operator=(const sql_ref&) = delete;
  ~sql_ref() = default;

  [[nodiscard]] const char* c_str() const {
    if (!no_nul_ && std::strlen(ptr_) != size_) throw usage_error("the SQL text contains a NUL byte");
    return ptr_;
  }
  [[nodiscard]] std::string_view view() const noexcept { return {ptr_, size_}; }
  [[nodiscard]] bool session_state_allowed() const noexcept { return session_state_allowed_; }

 private:
  std::string owned_;
  const char* ptr_;
  std::size_t size_;
  bool session_state_allowed_ = false;
  bool no_nul_ = false;  // measured up to its NUL: nothing to check
};
}  // namespace detail

template <class Driver>
class basic_connection {
 public:
  using driver_type = Driver;

  // Connects at once; throws connection_error (usage_error for a malformed conninfo).
  explicit basic_connection(std::string conninfo, connection_options options = {});
  // Wraps a session the caller opened and keeps (raw libpq code, a framework's
  // pool). It must be connected, idle (no transaction, no query in progress) and
  // out of pipeline mode, else usage_error. Scopes, batching, the pooler guard and
  // stats work as on any connection. pqscope never closes it: when the wrapper
  // ends, the session is handed back idle (a transaction still open is rolled
  // back), out of pipeline mode, in the blocking mode it came in. One it cannot
  // bring back (a network_timeout expired mid-round-trip) has its socket shut
  // down: the server rolls back, and the owner sees CONNECTION_BAD (PQreset).
  [[nodiscard]] static basic_connection<Driver> borrow(PGconn* handle, connection_options options = {}) {
    return basic_connection(handle, std::move(options));
  }

  basic_connection(basic_connection&&) noexcept = default;
  basic_connection& operator=(basic_connection&& other) noexcept {
    if (this != &other) {
      close();
      options_ = std::move(other.options_);
      s_ = std::move(other.s_);
      borrowed_ = other.borrowed_;
      conninfo_shown_ = std::move(other.conninfo_shown_);
    }
    return *this;
  }
  basic_connection(const basic_connection&) = delete;
  basic_connection& operator=(const basic_connection&) = delete;
  // Closes the session. Scopes still open end without a word to the server, which
  // rolls back a transaction whose connection closes.
  ~basic_connection() { close(); }

  // Runs one statement. Parameters travel out of line ($1, $2, ...), never
  // spliced into the SQL. Outside any scope it commits at once (autocommit);
  // inside, pending BEGIN/SAVEPOINT/RELEASE ride in the same round trip. In a
  // batched attempt it is queued, and the result sends the queue when first used.
  template <class... Params>
  result execute(detail::sql_ref sql, const Params&... params) {
    return run(sql, params...);
  }

  // One value: the query must return exactly one row of one column.
  template <class T, class... Params>
  [[nodiscard]] T query_value(detail::sql_ref sql, const Params&... params) {
    static_assert(!std::is_same_v<T, std::string_view> && !std::is_same_v<T, std::optional<std::string_view>>,
                  "query_value<std::string_view> would point into a result that is already freed; use std::string");
    result r = run(sql, params...);  // keeps allow_session_state
    if (r.size() != 1 || r.columns() != 1)
      throw conversion_error("query_value() needs exactly one row of one column, but the query returned " +
                             std::to_string(r.size()) + " row(s) of " + std::to_string(r.columns()) + " column(s)");
    return r[0][0].template as<T>();
  }

  // Sends every statement a batched attempt has queued and waits for the answers
  // (for code that needs a statement to have run before something outside the
  // database happens). Throws batch_failed if one of them failed. Nothing queued:
  // nothing is sent.
  void flush();

  // COPY ... FROM STDIN: write rows, then finish(). In autocommit the COPY is its
  // own transaction (all rows or none); inside a scope it is part of it.
  [[nodiscard]] copy_writer copy_in(detail::sql_ref sql) { return copy_writer(start_copy(sql, 'i', "copy_in()")); }
  // COPY ... TO STDOUT: read rows until next() or read_row() says there are no more.
  [[nodiscard]] copy_reader copy_out(detail::sql_ref sql) { return copy_reader(start_copy(sql, 'o', "copy_out()")); }

  // Runs a script of several statements separated by semicolons (schema set-up, a
  // migration) in one simple-protocol query: one result per statement. In
  // autocommit the server runs it as one transaction (all or nothing); inside a
  // scope it is part of it. Each statement is checked as execute() checks one
  // (no transaction control, the pooler guard); no parameters.
  std::vector<result> execute_script(detail::sql_ref sql) {
    auto& s = machine_session();
    detail::sync_session::call guard(s, "execute_script()");
    std::shared_ptr<detail::statement_slot> slot;
    try {
      const char* text = sql.c_str();
      detail::check_script(sql.view(), "execute_script()");
      check_session_state(sql.view(), sql.session_state_allowed());
      slot = s.machine.prepare_out_of_band(text, sql.view(), s.weak_from_this());
    } catch (const std::exception& e) {
      if (options_.observer) notify_refusal(sql, 0, e);
      throw;
    }
    s.begin_out_of_band(slot);
    batch_reply all = s.script(slot->stmt.sql);
    std::vector<result> results;
    (void)s.end_out_of_band(slot, detail::script_outcome(all, results));
    return results;
  }

  // Open scopes on this connection (0: autocommit).
  [[nodiscard]] std::size_t depth() const noexcept { return s_ ? s_->machine.depth() : 0; }
  [[nodiscard]] bool in_transaction() const noexcept { return depth() > 0; }

  // Runs fn after the outermost transaction commits (at once outside any scope).
  // Dropped if the scope that registered it rolls back.
  template <class F>
  void on_commit(F&& fn) {
    detail::sync_session::call guard(machine_session(), "on_commit()");
    machine().on_commit(callback<void()>(std::forward<F>(fn)));
  }
  // Runs fn after the outermost transaction rolls back. Dropped if the scope that
  // registered it is a savepoint that rolls back, and outside any scope.
  template <class F>
  void on_rollback(F&& fn) {
    detail::sync_session::call guard(machine_session(), "on_rollback()");
    machine().on_rollback(callback<void()>(std::forward<F>(fn)));
  }

  // SET LOCAL for the current transaction (set_config(name, value, true)): it ends
  // with the transaction, so nothing leaks to the next client of a pooled server
  // connection. usage_error outside a scope.
  void set_local(std::string_view name, std::string_view value) {
    detail::sync_session::call guard(machine_session(), "set_local()");
    machine().set_local(name, value);
  }

  [[nodiscard]] std::string application_name() const { return s_ ? s_->driver.application_name() : std::string(); }
  [[nodiscard]] const connection_stats& stats() const { return machine().stats(); }
  // With connection_options::commit_positions: where the last committed outermost
  // scope's COMMIT ended in the WAL (see wal_position.hpp), set before its on_commit
  // callbacks run. Empty until one committed, or when the last one's is unknown;
  // statements in autocommit leave it as it is.
  [[nodiscard]] wal_position last_commit_position() const { return machine().last_commit_position(); }
  [[nodiscard]] auto native_handle() const { return s_ ? s_->driver.native_handle() : decltype(s_->driver.native_handle()){}; }
  [[nodiscard]] Driver& driver() { return machine_session().driver; }
  // The conninfo with its passwords replaced by *** (the session keeps the original).
  [[nodiscard]] const std::string& conninfo() const noexcept {
    static const std::string none;  // a moved-from connection has no session
    return s_ ? conninfo_shown_ : none;
  }
  [[nodiscard]] const connection_options& options() const noexcept { return options_; }

  // Opens a new session with the same settings, e.g. after connection_error.
  // Only at depth 0: a scope cannot move to another session. The channels listened
  // to are listened to again, and the next wait_notification() reports the gap.
  void reconnect();

  // ---- LISTEN / NOTIFY (see notification.hpp) ----
  // Listens to `channel` (its name quoted: case and characters kept); again is a
  // no-op. Outside any scope (a LISTEN in a transaction would wait for its COMMIT,
  // and a rollback would undo it), and only with pooling::none: usage_error otherwise.
  void listen(std::string_view channel);
  // Stops listening to `channel`; one not listened to is a no-op. Outside any scope.
  void unlisten(std::string_view channel);
  // The channels listened to, in the order they were first listened to.
  [[nodiscard]] const std::vector<std::string>& channels() const noexcept { return channels_; }
  // The next notification: one that arrived already (while other statements ran,
  // say), else the first to arrive within `timeout` (0: none is waited for);
  // nothing if none came. Outside any scope. If the session is lost meanwhile, what
  // it had received comes first; then a new session is opened, listens to the
  // channels again, and one notification with gap = true says that anything sent
  // in between was missed. connection_error if the new session cannot be opened
  // (or nothing is listened to): call again to retry.
  std::optional<notification> wait_notification(std::chrono::milliseconds timeout);

 private:
  friend class transaction;
  friend struct detail::connection_access;

  basic_connection(PGconn* handle, connection_options options)
      : options_(std::move(options)),
        s_(std::make_shared<detail::driver_session<Driver>>(std::string())),
        borrowed_(true) {
    s_->machine.set_observer(options_.observer);
    s_->machine.set_savepoint_limit(options_.savepoint_limit, options_.refuse_past_savepoint_limit);
    s_->machine.set_commit_positions(options_.commit_positions);
    // Behind a pooler a borrowed session prepares nothing: its names would outlive the
    // wrapper (libpq 15 cannot close a statement, PgBouncer does not track DEALLOCATE).
    // Directly, the wrapper deallocates its own when it hands the session back.
    s_->machine.set_prepare_limit(options_.pooling == pooling::none ? detail::prepare_limit(options_) : 0);
    detail::configure_driver(s_->driver, options_);
    s_->driver.adopt(handle);
    s_->conninfo = detail::conninfo_of(handle);
    conninfo_shown_ = detail::redacted_conninfo(s_->conninfo);
  }

  detail::driver_session<Driver>& machine_session() const {
    if (!s_) throw usage_error("this connection was moved from");
    return *s_;
  }
  detail::scope_machine& machine() const { return machine_session().machine; }

  // The observer hears of a statement from the machine once its answer arrives,
  // and from here when it is refused before it could be queued.
  template <class... Params>
  result run(const detail::sql_ref& sql, const Params&... params) {
    auto& s = machine_session();
    detail::sync_session::call guard(s, "execute()");
    detail::param_list list;  // lives until the statement is sent or owns a copy
    std::shared_ptr<detail::statement_slot> slot;
    try {
      const detail::sql_facts& f = s.machine.check_statement(sql.view(), detail::param_count(params...),
                                                             guards(sql.session_state_allowed()));
      list.assign(params...);
      slot = s.machine.queue_statement(sql.c_str(), sql.view(), f, list, s.weak_from_this());
    } catch (const std::exception& e) {
      if (options_.observer) notify_refusal(sql, detail::param_count(params...), e);
      throw;
    }
    result r = s.complete(slot);
    s.machine.recycle(std::move(slot));
    return r;
  }

  void check_session_state(const detail::sql_ref& sql) const {
    check_session_state(sql.view(), sql.session_state_allowed());
  }
  // Whether the pooler guard applies to a statement (allowed: allow_session_state).
  [[nodiscard]] bool guards(bool allowed) const noexcept { return options_.pooling == pooling::transaction && !allowed; }
  void check_session_state(std::string_view sql, bool allowed) const {
    if (!guards(allowed)) return;
    std::string hazard = detail::session_state_hazard(sql);
    if (!hazard.empty()) throw usage_error(hazard);
  }

  // Sends what is queued, then starts the COPY; `dir` 'i' (FROM STDIN) or 'o' (TO STDOUT).
  std::unique_ptr<detail::copy_stream> start_copy(const detail::sql_ref& sql, char dir, const char* what) {
    auto& s = machine_session();
    detail::sync_session::call guard(s, what);
    std::shared_ptr<detail::statement_slot> slot;
    try {
      const char* text = sql.c_str();
      if (detail::copy_direction(sql.view()) != dir)
        throw usage_error(std::string(what) + " needs a COPY ... " + (dir == 'i' ? "FROM STDIN" : "TO STDOUT") +
                          " statement: " + std::string(sql.view().substr(0, 200)));
      check_session_state(sql);
      detail::check_placeholders(sql.view(), 0);
      slot = s.machine.prepare_out_of_band(text, sql.view(), s.weak_from_this());
    } catch (const std::exception& e) {
      if (options_.observer) notify_refusal(sql, 0, e);
      throw;
    }
    s.begin_out_of_band(slot);
    batch_reply br;
    const int started = s.copy_start(slot->stmt, br);
    if (started == 0) {
      (void)s.end_out_of_band(slot, std::move(br));  // throws the server's error
      throw usage_error(std::string(what) + ": the statement did not start a COPY");
    }
    auto st = std::make_unique<detail::copy_stream>(s.shared_from_this(), slot, started == PGRES_COPY_IN);
    if ((started == PGRES_COPY_IN) != (dir == 'i')) {
      st->end_quietly();
      throw usage_error(std::string(what) + ": the server started a COPY in the other direction; use " +
                        (dir == 'i' ? "copy_out()" : "copy_in()"));
    }
    return st;
  }


  void notify_refusal(const detail::sql_ref& sql, std::size_t params, const std::exception& e) const noexcept {
    statement_event ev;
    ev.sql = sql.view();
    ev.params = params;
    ev.depth = depth();
    ev.error = &e;
    try {
      options_.observer(ev);
    } catch (...) {
      // a logging hook must not change what the transaction does
    }
  }

  void close() noexcept;
  void check_listen(const char* what) const { detail::check_listen(what, options_.pooling, depth()); }
  // Notifications the session received and nobody took yet, kept before it closes.
  void keep_received();
  // A new session if the last one was lost, then LISTEN for every channel.
  void restore_listening();
  // A borrowed session goes back without the statements this wrapper prepared.
  void deallocate_prepared() noexcept;

  connection_options options_;
  std::shared_ptr<detail::driver_session<Driver>> s_;
  bool borrowed_ = false;  // borrow(): the caller's PGconn*, handed back, never closed
  std::string conninfo_shown_;  // what conninfo() returns: no password
  std::vector<std::string> channels_;  // listen()
  std::deque<notification> received_;  // taken from a session before it closed
  bool relisten_ = false;              // a new session does not listen to channels_ yet
  bool gap_ = false;                   // a gap to report (wait_notification)
};

// Defined out of the class so that, in separate compilation, the explicit
// instantiation below is the only one of basic_connection<libpq_driver>.
template <class Driver>
PQSCOPE_DECL basic_connection<Driver>::basic_connection(std::string conninfo, connection_options options)
    : options_(std::move(options)),
      s_(std::make_shared<detail::driver_session<Driver>>(std::move(conninfo))),
      conninfo_shown_(detail::redacted_conninfo(s_->conninfo)) {
  s_->machine.set_observer(options_.observer);
  s_->machine.set_savepoint_limit(options_.savepoint_limit, options_.refuse_past_savepoint_limit);
  s_->machine.set_prepare_limit(detail::prepare_limit(options_), options_.pooling == pooling::transaction);
  s_->machine.set_commit_positions(options_.commit_positions);
  detail::configure_driver(s_->driver, options_);
  s_->driver.open(s_->conninfo, detail::default_application_name());
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::flush() {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "flush()");
  s.flush();
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::reconnect() {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "reconnect()");
  if (borrowed_)
    throw usage_error("reconnect() on a borrowed connection: its PGconn* belongs to the code that lent it "
                      "(PQreset() it there, then borrow() it again)");
  if (!s.machine.opened_by_this_process()) s.machine.check_usable();
  if (s.machine.depth() != 0)
    throw usage_error("reconnect() with " + std::to_string(s.machine.depth()) + " scope(s) open; end them first");
  keep_received();
  s.driver.close();
  s.machine.mark_open();
  s.driver.open(s.conninfo, detail::default_application_name());
  if (!channels_.empty()) {
    gap_ = relisten_ = true;
    restore_listening();
  }
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::listen(std::string_view channel) {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "listen()");
  check_listen("listen()");
  const std::string sql = "LISTEN " + detail::listen_identifier(channel, "listen()");
  if (std::find(channels_.begin(), channels_.end(), channel) != channels_.end()) return;
  (void)execute(allow_session_state(sql));
  channels_.emplace_back(channel);
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::unlisten(std::string_view channel) {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "unlisten()");
  check_listen("unlisten()");
  const std::string sql = "UNLISTEN " + detail::listen_identifier(channel, "unlisten()");
  const auto at = std::find(channels_.begin(), channels_.end(), channel);
  if (at == channels_.end()) return;
  (void)execute(allow_session_state(sql));
  channels_.erase(at);
}

template <class Driver>
PQSCOPE_DECL std::optional<notification>
basic_connection<Driver>::wait_notification(std::chrono::milliseconds timeout) {
  auto& s = machine_session();
  detail::sync_session::call guard(s, "wait_notification()");
  check_listen("wait_notification()");
  static_assert(detail::has_notifications<Driver>::value,
                "pqscope: wait_notification() needs a driver with take_notification() and wait_notification() "
                "(libpq_driver)");
  if (timeout.count() < 0) throw usage_error("wait_notification(): the timeout must not be negative");
  for (;;) {
    if (!received_.empty()) {
      notification n = std::move(received_.front());
      received_.pop_front();
      return n;
    }
    if (relisten_) restore_listening();  // throws connection_error while the server cannot be reached
    if (std::exchange(gap_, false)) return detail::gap_notification();
    notification n;
    switch (s.driver.wait_notification(timeout, n)) {
      case Driver::notice_wait::received: return n;
      case Driver::notice_wait::timed_out: return std::nullopt;
      case Driver::notice_wait::lost: break;
    }
    const std::string why = detail::trimmed(PQerrorMessage(s.driver.native_handle()));
    if (channels_.empty()) throw connection_error("connection lost while waiting for notifications: " + why);
    gap_ = relisten_ = true;  // and around again: a new session, then the gap
  }
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::keep_received() {
  auto& s = machine_session();
  if constexpr (detail::has_notifications<Driver>::value) {
    for (;;) {
      notification n;
      if (!s.driver.take_notification(n)) return;
      received_.push_back(std::move(n));
    }
  }
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::restore_listening() {
  auto& s = machine_session();
  if (!s.driver.is_open()) {
    if (borrowed_)
      throw connection_error("the borrowed session was lost; its owner must open a new one and borrow() it again");
    keep_received();
    s.driver.close();
    s.machine.mark_open();
    s.driver.open(s.conninfo, detail::default_application_name());
  }
  for (const std::string& c : channels_)
    (void)execute(allow_session_state("LISTEN " + detail::listen_identifier(c, "listen()")));
  relisten_ = false;
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::close() noexcept {
  if (!s_) return;
  s_->end_stream_quietly();
  s_->machine.mark_closed();
  // In a forked child, closing would end the parent's session.
  if (s_->machine.opened_by_this_process()) {
    if (borrowed_) deallocate_prepared();
    s_->driver.close();
  }
  else
    s_->driver.abandon();
}

template <class Driver>
PQSCOPE_DECL void basic_connection<Driver>::deallocate_prepared() noexcept {
  const std::vector<std::string>& names = s_->machine.prepared().names();
  if (names.empty()) return;
  try {
    std::vector<std::string> texts;
    std::vector<statement> batch;
    texts.reserve(names.size());
    batch.reserve(names.size());
    for (const std::string& n : names) texts.push_back("DEALLOCATE " + n);  // pqscope's names need no quoting
    for (const std::string& t : texts) batch.push_back(statement{t.c_str(), 0, nullptr, nullptr});
    (void)s_->driver.exchange(batch);
  } catch (...) {
    // the session is handed back as it is; the names stay until it ends
  }
}

using connection = basic_connection<libpq_driver>;

// Separate compilation: the connection of the default driver is compiled once, with the rest.
PQSCOPE_COMPILED_ONCE(class basic_connection<libpq_driver>)

}  // namespace pqscope
// #include <pqscope/database.hpp>
// Connection settings. No socket: copy it freely, share it between threads, and
// across fork(): each process (or thread) connects on its own.

#include <memory>
#include <string>

// #include <pqscope/connection.hpp> (inlined above)
// #include <pqscope/driver.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

namespace detail {
struct database_access;
}  // namespace detail

class database {
 public:
  // conninfo: "postgresql://user@host:port/db?..." or "host=... dbname=...".
  // A malformed string is a usage_error here, before any connection is tried.
  explicit database(std::string conninfo, connection_options options = {});

  [[nodiscard]] connection connect() const;
  // The conninfo with its passwords replaced by *** (connect() uses the original).
  [[nodiscard]] const std::string& conninfo() const noexcept { return settings_->shown; }
  [[nodiscard]] const connection_options& options() const noexcept { return settings_->options; }

 private:
  friend struct detail::database_access;
  struct settings {
    std::string shown;  // conninfo without its passwords (first: made before conninfo is moved in)
    std::string conninfo;
    connection_options options;
  };
  std::shared_ptr<const settings> settings_;
};

namespace detail {
// The conninfo with its password, for the front ends that connect with a database.
struct database_access {
  static const std::string& conninfo(const database& db) noexcept { return db.settings_->conninfo; }
};
}  // namespace detail

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/database.ipp>
// The bodies of <pqscope/database.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/database.hpp> (inlined above)

namespace pqscope {

PQSCOPE_DECL database::database(std::string conninfo, connection_options options)
    : settings_(std::make_shared<const settings>(
          settings{detail::redacted_conninfo(conninfo), std::move(conninfo), std::move(options)})) {
  detail::check_conninfo(settings_->conninfo);
}

PQSCOPE_DECL connection database::connect() const { return connection{settings_->conninfo, settings_->options}; }

}  // namespace pqscope
#endif
// #include <pqscope/transaction.hpp>
// Transaction scopes: the transaction object, atomic() and transactional().
// The logic lives in detail/scope_machine.hpp; these are its faces.

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

// #include <pqscope/connection.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/scope_machine.hpp> (inlined above)
// #include <pqscope/detail/sync_session.hpp> (inlined above)

namespace pqscope {

namespace detail {
struct connection_access {
  template <class Driver>
  static std::shared_ptr<sync_session> session(basic_connection<Driver>& c) {
    return c.s_;
  }
};
}  // namespace detail

// One scope. The outermost scope on a connection is a transaction (BEGIN ...
// COMMIT), a nested one a savepoint; the caller never passes the parent: nesting
// is tracked on the connection, so functions compose without knowing each other.
// Destroyed without commit() or rollback(), it rolls back and never throws.
class transaction {
 public:
  template <class Driver>
  explicit transaction(basic_connection<Driver>& c, const transaction_options& options = {})
      : transaction(checked(c.s_, options), options, {}) {}
  transaction(transaction&& other) noexcept
      : machine_(std::move(other.machine_)),
        id_(std::exchange(other.id_, 0)),
        outermost_(other.outermost_),
        state_(std::exchange(other.state_, state::moved_from)) {}
  transaction& operator=(transaction&&) = delete;
  transaction(const transaction&) = delete;
  transaction& operator=(const transaction&) = delete;

  ~transaction() {
    if (state_ == state::open) machine_->abandon(id_);
  }

  // Outermost: COMMIT, then the on_commit callbacks. Nested: RELEASE SAVEPOINT
  // (sent with the next statement). A doomed scope rolls back and throws
  // transaction_aborted. Either way the scope has ended when commit() returns or
  // throws, except for usage_error (an inner scope is still open).
  void commit() { finish(true); }
  // Outermost: ROLLBACK at once. Nested: ROLLBACK TO SAVEPOINT, sent with the next statement.
  void rollback() { finish(false); }

  [[nodiscard]] bool is_outermost() const noexcept { return outermost_; }

 private:
  template <class Driver, class Fn>
  friend auto atomic(basic_connection<Driver>& c, const transaction_options& options, Fn&& fn);

  enum class state { open, committed, rolled_back, moved_from };

  transaction(std::shared_ptr<detail::sync_session> s, const transaction_options& options,
              detail::attempt_info attempt);

  static std::shared_ptr<detail::sync_session> checked(std::shared_ptr<detail::sync_session> s,
                                                       const transaction_options& options);

  // atomic(): ends the attempt if the function left it open (rolling back, after
  // the statements still queued went out), and tells whether a failed batched send
  // voided it. Throws only connection_error.
  bool end_attempt();

  void finish(bool commit);

  std::shared_ptr<detail::sync_session> machine_;
  std::uint64_t id_ = 0;
  bool outermost_ = false;
  state state_ = state::open;
};

namespace detail {

// std::apply calls as std::invoke does (member pointers too) and is declared in
// <tuple>: std::invoke would take <functional>, about 8,000 lines per includer.
template <class Fn, class Conn>
decltype(auto) call_with_optional_connection(Fn& fn, Conn& c) {
  if constexpr (std::is_invocable_v<Fn&, Conn&>) {
    return std::apply(fn, std::forward_as_tuple(c));
  } else {
    static_assert(std::is_invocable_v<Fn&>,
                  "pqscope::atomic: the function must take the connection (Connection&) or nothing");
    return std::apply(fn, std::tuple<>());
  }
}

// What fn returns, called as atomic() calls it on a Conn. One alias for every
// caller: g++ 12 took two decltypes of this call, spelled alike but naming
// different connection types, for one type (async_atomic then failed to compile).
template <class Fn, class Conn>
using call_result_t = decltype(call_with_optional_connection(std::declval<Fn&>(), std::declval<Conn&>()));

PQSCOPE_DECL bool is_retryable(const std::exception_ptr& e);

// Jitter needs spread, not quality: splitmix64 over a per-thread state seeded from
// the clock, the process and the thread (no <random>, ~47k lines per includer).
PQSCOPE_DECL std::uint64_t jitter_bits() noexcept;

// Jittered exponential backoff: spreads out clients that conflicted with each other.
PQSCOPE_DECL std::chrono::milliseconds retry_delay(const transaction_options& o, int attempt);

// How many times one atomic() runs its function again because the session lost a
// statement pqscope had prepared (prepared_statement_lost): once after DISCARD ALL or
// DDL; a function that changes its own tables' shape each time would never end.
inline constexpr int max_reruns = 3;

// transaction_options::replica_wait for one atomic() call.
struct replica_waiter {
  std::chrono::steady_clock::time_point deadline{};
  int pauses = 0;
  // After a failure: the pause before running the function again when it is
  // replica_behind and the wait is not spent (short ones: the next attempt's check
  // is the poll); zero otherwise.
  std::chrono::milliseconds next(const transaction_options& o, const std::exception_ptr& e);
};

// Sleeps without <thread> (~17k lines per includer).
PQSCOPE_DECL void pause(std::chrono::milliseconds d) noexcept;

}  // namespace detail

// Runs fn in a scope: commits when fn returns (and returns its value), rolls back
// and rethrows when it throws. fn takes the connection or nothing. With
// options.retries > 0 and no scope open around it, fn is re-run after
// serialization_failure or deadlock_detected; nested, the error propagates to the
// outermost atomic(), which alone can retry.
//
// options.batch (outermost only): statements are queued and sent together (see
// transaction_options::batch). If a send fails, the attempt is rolled back and fn
// runs again unbatched; a serialization failure or deadlock is retried batched.
template <class Driver, class Fn>
auto atomic(basic_connection<Driver>& c, const transaction_options& options, Fn&& fn) {
  if (options.retries < 0) throw usage_error("transaction_options::retries must not be negative");
  if (options.replica_wait.count() < 0) throw usage_error("transaction_options::replica_wait must not be negative");
  transaction_options scope = options;
  scope.retries = 0;
  scope.batch = false;
  scope.replica_wait = std::chrono::milliseconds{0};
  const std::shared_ptr<detail::sync_session> session = detail::connection_access::session(c);
  if (!session) throw usage_error("atomic() on a moved-from connection");
  // One call from start to end: another thread cannot slip a statement into this transaction.
  detail::sync_session::call guard(*session, "atomic()");
  const bool outermost = session->machine.depth() == 0;
  bool replay = false;  // the previous attempt was voided: run unbatched, where errors surface in place
  int reruns = 0;       // attempts run again because the session lost a prepared statement
  detail::replica_waiter waiter;
  std::chrono::milliseconds behind{0};  // the standby was behind: pause this long, then run again
  std::size_t number = 0;
  for (int attempt = 0;; ++number) {
    const bool batched = outermost && options.batch && !replay;
    if (replay) session->machine.count_replay();
    replay = false;
    {
      transaction tx{session, scope, {batched, number}};
      try {
        using R = decltype(detail::call_with_optional_connection(fn, c));
        if constexpr (std::is_void_v<R>) {
          detail::call_with_optional_connection(fn, c);
          tx.commit();
          return;
        } else {
          std::decay_t<R> value = detail::call_with_optional_connection(fn, c);
          tx.commit();
          return value;
        }
      } catch (...) {
        if (batched && tx.end_attempt()) {
          // Whatever fn saw or caught, a failed send voids the attempt.
          const auto& failed = *session->machine.voided();
          if (failed.cause) {
            behind = waiter.next(options, failed.cause);
            if (behind.count() == 0) std::rethrow_exception(failed.cause);
          } else if (!((failed.sqlstate == "40001" || failed.sqlstate == "40P01") && attempt < options.retries)) {
            replay = true;
            continue;
          }
        } else if (outermost && (behind = waiter.next(options, std::current_exception())).count() > 0) {
          // paused below, once the scope has ended
        } else if (outermost && reruns < detail::max_reruns && session->machine.take_lost_statement()) {
          ++reruns;  // prepared anew on the next attempt, at once
          continue;
        } else if (!outermost || attempt >= options.retries || !detail::is_retryable(std::current_exception())) {
          throw;
        }
      }
    }  // the failed attempt is rolled back here, before the pause
    if (behind.count() > 0) {
      detail::pause(std::exchange(behind, std::chrono::milliseconds{0}));
      continue;
    }
    detail::pause(detail::retry_delay(options, attempt));
    ++attempt;
  }
}

template <class Driver, class Fn>
auto atomic(basic_connection<Driver>& c, Fn&& fn) {
  return atomic(c, transaction_options{}, std::forward<Fn>(fn));
}

// Wraps fn(connection&, args...) so that every call runs in atomic(): the result
// takes the same arguments and returns what fn returns.
template <class Fn>
auto transactional(Fn fn, transaction_options options = {}) {
  return [fn = std::move(fn), options](auto& conn, auto&&... args) {
    return atomic(conn, options,
                  [&]() -> decltype(auto) { return std::apply(fn, std::forward_as_tuple(conn, args...)); });
  };
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/transaction.ipp>
// The bodies of <pqscope/transaction.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/transaction.hpp> (inlined above)

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace pqscope {

PQSCOPE_DECL transaction::transaction(std::shared_ptr<detail::sync_session> s, const transaction_options& options,
                                      detail::attempt_info attempt)
    : machine_(std::move(s)) {
  if (!machine_) throw usage_error("transaction on a moved-from connection");
  detail::sync_session::call guard(*machine_, "opening a scope");
  id_ = machine_->machine.open(options, attempt);
  outermost_ = machine_->machine.depth() == 1;
}

PQSCOPE_DECL std::shared_ptr<detail::sync_session> transaction::checked(std::shared_ptr<detail::sync_session> s,
                                                                        const transaction_options& options) {
  if (options.retries != 0 || options.batch || options.replica_wait.count() != 0)
    throw usage_error(std::string("transaction_options::") +
                      (options.batch ? "batch" : options.retries != 0 ? "retries" : "replica_wait") +
                      " may run a function again, which a transaction object cannot do: use pqscope::atomic or "
                      "pqscope::transactional");
  return s;
}

PQSCOPE_DECL bool transaction::end_attempt() {
  if (state_ == state::open && machine_->machine.index_of(id_)) {
    state_ = state::rolled_back;
    machine_->abandon(id_);
    if (!machine_->machine.voided()) machine_->machine.check_usable();
  }
  return machine_->machine.voided().has_value();
}

PQSCOPE_DECL void transaction::finish(bool commit) {
  const char* what = commit ? "commit()" : "rollback()";
  switch (state_) {
    case state::open: break;
    case state::committed: throw usage_error(std::string(what) + ": this scope has already been committed");
    case state::rolled_back: throw usage_error(std::string(what) + ": this scope has already been rolled back");
    case state::moved_from: throw usage_error(std::string(what) + ": this transaction object was moved from");
  }
  if (!machine_->machine.index_of(id_)) {
    state_ = state::rolled_back;
    throw usage_error(std::string(what) + ": this scope was already rolled back, because a scope enclosing it "
                                          "ended first");
  }
  bool committed = false;
  detail::sync_session::call guard(*machine_, what);
  try {
    machine_->end(id_, commit, &committed);
    state_ = commit ? state::committed : state::rolled_back;
  } catch (...) {
    // The scope has ended if it left the stack; an on_commit callback may have
    // thrown after a successful COMMIT.
    if (!machine_->machine.index_of(id_)) state_ = committed ? state::committed : state::rolled_back;
    throw;
  }
}

}  // namespace pqscope

namespace pqscope::detail {

PQSCOPE_DECL bool is_retryable(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const serialization_failure&) {
    return true;
  } catch (const deadlock_detected&) {
    return true;
  } catch (const transaction_aborted& t) {  // an inner scope caught it and carried on
    return t.first_sqlstate() == "40001" || t.first_sqlstate() == "40P01";
  } catch (...) {
    return false;
  }
}

PQSCOPE_DECL std::chrono::milliseconds replica_waiter::next(const transaction_options& o, const std::exception_ptr& e) {
  using std::chrono::milliseconds;
  if (o.replica_wait.count() <= 0 || o.at_least.empty()) return milliseconds{0};
  try {
    std::rethrow_exception(e);
  } catch (const replica_behind&) {
  } catch (...) {
    return milliseconds{0};
  }
  const auto now = std::chrono::steady_clock::now();
  if (pauses++ == 0) deadline = now + o.replica_wait;
  if (now >= deadline) return milliseconds{0};
  // 1, 2, 4, 8, then 10 ms: a standby that streams catches up within milliseconds.
  const milliseconds step{std::min(10, 1 << std::min(pauses - 1, 4))};
  const auto left = std::chrono::ceil<milliseconds>(deadline - now);
  return std::min(step, left);
}

PQSCOPE_DECL std::uint64_t jitter_bits() noexcept {
  static thread_local std::uint64_t state =
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
      (static_cast<std::uint64_t>(::getpid()) << 32) ^ reinterpret_cast<std::uintptr_t>(&state);
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

PQSCOPE_DECL std::chrono::milliseconds retry_delay(const transaction_options& o, int attempt) {
  const auto base = std::max<std::int64_t>(o.retry_base_delay.count(), 0);
  const auto cap = std::max<std::int64_t>(o.retry_max_delay.count(), 0);
  const std::int64_t d = std::min<std::int64_t>(cap, base << std::min(attempt, 20));
  const std::uint64_t span = static_cast<std::uint64_t>(d - d / 2) + 1;  // [d/2, d]
  return std::chrono::milliseconds(d / 2 + static_cast<std::int64_t>(jitter_bits() % span));
}

PQSCOPE_DECL void pause(std::chrono::milliseconds d) noexcept {
  if (d.count() <= 0) return;
  timespec ts{static_cast<time_t>(d.count() / 1000), static_cast<long>((d.count() % 1000) * 1000000)};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

}  // namespace pqscope::detail
#endif
// #include <pqscope/pool.hpp>
// A bounded, thread-safe pool of connections to PostgreSQL itself.
//
// Behind PgBouncer keep pqscope::database (the null pool): PgBouncer already
// pools, and a second pool in front of it only pins server connections. Talking
// to PostgreSQL directly, a pool saves the connect (a fork of a backend) per unit
// of work and caps the backends one process can hold.
//
//   pqscope::pool p{"host=db dbname=app", {.max_size = 8}};   // C++20 designated init
//   {
//     auto c = p.acquire();              // waits up to acquire_timeout
//     pqscope::atomic(*c, [&] { ... });
//   }                                    // back to the pool, if clean
//
// A connection goes back to the pool only when nothing of the lease's work can
// reach the next one: its session is idle (no transaction, not even a failed one),
// no pqscope scope is open on it, and it was opened by this process. Anything else
// is closed, which makes the server roll back. Session state set outside a
// transaction (SET, LISTEN, temporary tables, advisory locks) does travel with the
// connection, as in any pool: prefer set_local() and scopes.
//
// No background thread: idle and expired connections are closed when the pool
// next looks at them (acquire, return).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

// #include <pqscope/connection.hpp> (inlined above)
// #include <pqscope/driver.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/scope_machine.hpp> (inlined above)

namespace pqscope {

// acquire() waited acquire_timeout and no connection came free.
class pool_timeout : public error {
 public:
  using error::error;
};

// Durations must not be negative.
struct pool_options {
  // Connections open at once, leased or idle: the cap on this pool's backends.
  std::size_t max_size = 10;
  // How long acquire() waits for a free connection. The connect itself is bounded
  // by connect_timeout in the conninfo, not by this.
  std::chrono::milliseconds acquire_timeout{5000};
  // An idle connection unused this long is closed when next seen (0: never).
  std::chrono::milliseconds idle_timeout{60000};
  // A connection this old is closed instead of reused (0: never), so that server
  // side memory and settings changes do not live forever.
  std::chrono::milliseconds max_lifetime{1800000};
  // A connection idle longer than this is checked with a round trip ("SELECT 1")
  // before it is leased, since a server restart or an idle-session timeout kills
  // sessions silently; 0 = always.
  std::chrono::milliseconds health_check_after{1000};
};

// Counters since the pool was created.
struct pool_stats {
  std::uint64_t created = 0;                // connections opened
  std::uint64_t reused = 0;                 // leases served by an idle connection
  std::uint64_t closed_dirty = 0;           // returned mid-transaction, with scopes open, broken or from another process
  std::uint64_t closed_expired = 0;         // past max_lifetime, or idle past idle_timeout
  std::uint64_t health_check_failures = 0;  // idle connections found dead before a lease
  std::uint64_t timeouts = 0;               // acquire() calls that threw pool_timeout
};

namespace detail {

using pool_clock = std::chrono::steady_clock;

struct pool_entry {
  // On the heap so that a connection& taken from a lease survives moving the lease.
  std::unique_ptr<connection> conn;
  pool_clock::time_point created;
  pool_clock::time_point last_used;
};

// Everything a lease needs after the pool object is gone: leases share it.
// Defined with the implementation: only it needs <mutex> and <condition_variable>.
struct pool_state;

}  // namespace detail

class pool;

// One connection borrowed from a pool, returned when the lease is destroyed or
// released. Move-only; use it from one thread at a time, like a connection.
class lease {
 public:
  lease(lease&& other) noexcept;
  lease& operator=(lease&& other) noexcept;
  lease(const lease&) = delete;
  lease& operator=(const lease&) = delete;
  ~lease() { give_back(); }

  // usage_error once released or moved from.
  [[nodiscard]] connection& get();
  [[nodiscard]] connection& operator*() { return get(); }
  [[nodiscard]] connection* operator->() { return &get(); }

  // Returns the connection now rather than at the end of the lease's scope; using
  // the lease afterwards is a usage_error, and so is releasing it twice.
  void release();

 private:
  friend class pool;
  enum class status { active, released, moved_from };

  lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry);

  void check() const;

  void give_back() noexcept;

  std::shared_ptr<detail::pool_state> state_;
  detail::pool_entry entry_;  // conn == nullptr: none (an optional here trips g++'s maybe-uninitialized)
  status status_ = status::active;
};

class pool {
 public:
  // No connection is opened here; a malformed conninfo is a usage_error at once.
  explicit pool(std::string conninfo, pool_options options = {}, connection_options connection = {});
  // Leases point to the pool's state, not to the object, but a pool that moved
  // would still surprise whoever holds a reference to it.
  pool(const pool&) = delete;
  pool& operator=(const pool&) = delete;
  pool(pool&&) = delete;
  pool& operator=(pool&&) = delete;
  // Closes the idle connections. Leases still out keep working; their connections
  // are closed when they end.
  ~pool();

  // An idle connection (checked first if it sat longer than health_check_after),
  // or a new one while fewer than max_size are open; otherwise waits up to
  // acquire_timeout and throws pool_timeout. connection_error if connecting fails.
  [[nodiscard]] lease acquire();

  // Connections open or being opened, leased or idle.
  [[nodiscard]] std::size_t size() const;
  [[nodiscard]] std::size_t idle() const;
  [[nodiscard]] std::size_t max_size() const noexcept;
  [[nodiscard]] pool_stats stats() const;

 private:
  // Under the lock: moves idle connections past idle_timeout or max_lifetime to `doomed`.
  void sweep(std::vector<detail::pool_entry>& doomed);

  // Called with a slot reserved; gives it back if the connect fails.
  detail::pool_entry open_new();

  static bool healthy(connection& c) noexcept;

  std::shared_ptr<detail::pool_state> state_;
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/pool.ipp>
// The bodies of <pqscope/pool.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/pool.hpp> (inlined above)

#include <libpq-fe.h>
#include <sys/types.h>

#include <condition_variable>
#include <mutex>

namespace pqscope::detail {

struct pool_state {
  pool_state(std::string ci, const pool_options& o, connection_options co)
      : conninfo(std::move(ci)), opts(o), conn_opts(std::move(co)) {}

  const std::string conninfo;
  const pool_options opts;
  const connection_options conn_opts;  // for every connection the pool opens
  const pid_t pid = current_pid();

  std::mutex m;
  std::condition_variable freed;  // an idle connection or a free slot appeared
  std::vector<pool_entry> idle;   // most recently returned last
  std::size_t open = 0;           // idle + leased + being opened; never above max_size
  bool closed = false;            // the pool object was destroyed
  pool_stats stats;

  [[nodiscard]] bool in_creating_process() const noexcept { return pid == current_pid(); }

  // Clean enough for the next lease: nothing of this lease's work can reach it.
  static bool reusable(const connection& c) noexcept;

  [[nodiscard]] bool expired(const pool_entry& e, pool_clock::time_point now) const noexcept;

  // Never throws: called from lease destructors. Connections are closed outside the lock.
  void give_back(pool_entry e) noexcept;
};

PQSCOPE_DECL bool pool_state::reusable(const connection& c) noexcept {
  PGconn* h = c.native_handle();
  return h != nullptr && c.depth() == 0 && PQstatus(h) == CONNECTION_OK &&
         PQtransactionStatus(h) == PQTRANS_IDLE &&
         // an exchange cut short leaves pipeline mode on
         PQpipelineStatus(h) == PQ_PIPELINE_OFF;
}

PQSCOPE_DECL bool pool_state::expired(const pool_entry& e, pool_clock::time_point now) const noexcept {
  return opts.max_lifetime.count() > 0 && now - e.created >= opts.max_lifetime;
}

PQSCOPE_DECL void pool_state::give_back(pool_entry e) noexcept {
  // In a forked child the mutex may be held by a parent thread that does not
  // exist here; the connection's destructor abandons the parent's session.
  if (!in_creating_process()) return;
  const bool clean = e.conn && reusable(*e.conn);
  const auto now = pool_clock::now();
  std::unique_lock<std::mutex> lock(m);
  if (!clean) ++stats.closed_dirty;
  if (clean && !closed && !expired(e, now)) {
    e.last_used = now;
    try {
      idle.push_back(std::move(e));
      freed.notify_one();
      return;
    } catch (...) {  // out of memory: close it instead
    }
  } else if (clean && !closed) {
    ++stats.closed_expired;
  }
  --open;
  freed.notify_one();
  lock.unlock();
  e.conn.reset();
}

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL lease::lease(std::shared_ptr<detail::pool_state> state, detail::pool_entry entry)
    : state_(std::move(state)), entry_(std::move(entry)) {}

PQSCOPE_DECL lease::lease(lease&& other) noexcept
    : state_(std::move(other.state_)), entry_(std::move(other.entry_)), status_(other.status_) {
  other.entry_ = detail::pool_entry{};
  other.status_ = status::moved_from;
}

PQSCOPE_DECL lease& lease::operator=(lease&& other) noexcept {
  if (this != &other) {
    give_back();
    state_ = std::move(other.state_);
    entry_ = std::move(other.entry_);
    status_ = other.status_;
    other.entry_ = detail::pool_entry{};
    other.status_ = status::moved_from;
  }
  return *this;
}

PQSCOPE_DECL connection& lease::get() {
  check();
  return *entry_.conn;
}

PQSCOPE_DECL void lease::release() {
  check();
  give_back();
  status_ = status::released;
}

PQSCOPE_DECL void lease::check() const {
  if (status_ == status::released) throw usage_error("this lease was released; acquire() another");
  if (status_ == status::moved_from) throw usage_error("this lease was moved from");
}

PQSCOPE_DECL void lease::give_back() noexcept {
  if (entry_.conn && state_) state_->give_back(std::move(entry_));
  entry_ = detail::pool_entry{};
  state_.reset();
}

PQSCOPE_DECL pool::pool(std::string conninfo, pool_options options, connection_options connection) {
  detail::check_conninfo(conninfo);
  if (options.max_size == 0) throw usage_error("pool_options::max_size must be at least 1");
  if (options.acquire_timeout.count() < 0 || options.idle_timeout.count() < 0 ||
      options.max_lifetime.count() < 0 || options.health_check_after.count() < 0)
    throw usage_error("pool_options: durations must not be negative");
  state_ = std::make_shared<detail::pool_state>(std::move(conninfo), options, std::move(connection));
}

PQSCOPE_DECL pool::~pool() {
  if (!state_->in_creating_process()) return;  // the idle connections are abandoned with the state
  std::vector<detail::pool_entry> doomed;
  {
    std::lock_guard<std::mutex> lock(state_->m);
    state_->closed = true;
    doomed.swap(state_->idle);
    state_->open -= doomed.size();
  }
}

PQSCOPE_DECL std::size_t pool::max_size() const noexcept { return state_->opts.max_size; }

PQSCOPE_DECL lease pool::acquire() {
  detail::pool_state& s = *state_;
  if (!s.in_creating_process())
    throw usage_error("this pool was created by process " + std::to_string(s.pid) +
                      "; its connections belong to that process: create the pool after fork()");
  // A timeout too long to add (milliseconds::max() for "no bound") waits forever.
  const auto now = detail::pool_clock::now();
  const auto room = std::chrono::duration_cast<std::chrono::milliseconds>(detail::pool_clock::time_point::max() - now);
  const auto deadline =
      s.opts.acquire_timeout < room ? now + s.opts.acquire_timeout : detail::pool_clock::time_point::max();
  for (;;) {
    std::vector<detail::pool_entry> doomed;  // closed after the lock is let go
    std::unique_lock<std::mutex> lock(s.m);
    for (;;) {
      sweep(doomed);
      if (!s.idle.empty() || s.open < s.opts.max_size) break;
      if (!s.freed.wait_until(lock, deadline, [&] { return !s.idle.empty() || s.open < s.opts.max_size; })) {
        ++s.stats.timeouts;
        throw pool_timeout("no connection came free within " + std::to_string(s.opts.acquire_timeout.count()) +
                           " ms (max_size " + std::to_string(s.opts.max_size) + ", all leased)");
      }
    }

    if (s.idle.empty()) {
      ++s.open;  // reserve the slot, then connect without the lock
      lock.unlock();
      doomed.clear();
      return lease(state_, open_new());
    }

    detail::pool_entry e = std::move(s.idle.back());
    s.idle.pop_back();
    const auto now = detail::pool_clock::now();
    const bool check = s.opts.health_check_after.count() == 0 || now - e.last_used > s.opts.health_check_after;
    lock.unlock();
    doomed.clear();
    if (!check || healthy(*e.conn)) {
      lock.lock();
      ++s.stats.reused;
      lock.unlock();
      return lease(state_, std::move(e));
    }
    lock.lock();
    ++s.stats.health_check_failures;
    --s.open;
    s.freed.notify_one();
    lock.unlock();
    e.conn.reset();
    // and round again: another idle connection, or a new one in the freed slot
  }
}

PQSCOPE_DECL std::size_t pool::size() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->open;
}

PQSCOPE_DECL std::size_t pool::idle() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->idle.size();
}

PQSCOPE_DECL pool_stats pool::stats() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->stats;
}

PQSCOPE_DECL void pool::sweep(std::vector<detail::pool_entry>& doomed) {
  detail::pool_state& s = *state_;
  const auto now = detail::pool_clock::now();
  std::size_t before = doomed.size();
  for (auto it = s.idle.begin(); it != s.idle.end();) {
    const bool idle_too_long = s.opts.idle_timeout.count() > 0 && now - it->last_used >= s.opts.idle_timeout;
    if (idle_too_long || s.expired(*it, now)) {
      doomed.push_back(std::move(*it));
      it = s.idle.erase(it);
    } else {
      ++it;
    }
  }
  const std::size_t n = doomed.size() - before;
  if (n == 0) return;
  s.open -= n;
  s.stats.closed_expired += n;
  s.freed.notify_all();  // more slots than this caller needs may have come free
}

PQSCOPE_DECL detail::pool_entry pool::open_new() {
  detail::pool_state& s = *state_;
  try {
    detail::pool_entry e;
    e.conn = std::make_unique<connection>(s.conninfo, s.conn_opts);
    e.created = e.last_used = detail::pool_clock::now();
    std::lock_guard<std::mutex> lock(s.m);
    ++s.stats.created;
    return e;
  } catch (...) {
    std::lock_guard<std::mutex> lock(s.m);
    --s.open;
    s.freed.notify_one();
    throw;
  }
}

PQSCOPE_DECL bool pool::healthy(connection& c) noexcept {
  try {
    c.execute("SELECT 1");
    return detail::pool_state::reusable(c);
  } catch (...) {
    return false;
  }
}

}  // namespace pqscope
#endif
// #include <pqscope/replica_set.hpp>
// A primary and its streaming standbys, each with a pool: writes go to the primary,
// reads to a standby that has replayed what the caller must see (read-your-writes).
//
//   pqscope::replica_set db{"host=db1,db2 target_session_attrs=read-write dbname=app",
//                           {"host=db2 dbname=app", "host=db3 dbname=app"}};
//   pqscope::wal_position seen;   // carry it along: a cookie, a header, a job's payload
//   db.write(seen, [](pqscope::connection& c) { c.execute("UPDATE ..."); });
//   auto n = db.read(seen, [](pqscope::connection& c) { return c.query_value<long>("SELECT ..."); });
//
// write() runs atomic() on the primary with connection_options::commit_positions,
// and merges the commit's WAL position into `seen`. read() runs a read-only
// atomic() with at_least = seen on a standby, whose BEGIN batch checks the
// standby's replay position (no extra round trip, see transaction_options::at_least).
// Standbys are tried round robin; one that is down or behind is passed over and
// tried again after recheck_after. When none can serve, the read waits up to
// replica_wait on the closest one, then runs on the primary (fallback_to_primary)
// or throws replica_behind.
//
// A read's function may run more than once, on several nodes (a standby behind, or
// failing under it): keep what it does outside the database idempotent.
// Each node may sit behind its own PgBouncer (pool_mode = transaction): its conninfo
// then names the PgBouncer. Not for Pgpool-II with load balancing, which would send
// the check and the reads to nodes of its own choosing.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// #include <pqscope/connection.hpp> (inlined above)
// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/pool.hpp> (inlined above)
// #include <pqscope/transaction.hpp> (inlined above)
// #include <pqscope/wal_position.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)
// #include <pqscope/detail/replica_router.hpp>
// Which node of a replica set serves a read: the routing of pqscope::replica_set and
// pqscope::asio::replica_set, without I/O, shared by both. Thread-safe.
//
// Standbys are tried round robin. A standby that failed to connect (or failed under
// a read) is passed over for recheck_after; one that was behind a read's position
// is passed over, for reads that need more than it had replayed, for as long. The
// first read after that tries it again: no background thread watches the nodes.

#include <chrono>
#include <cstddef>
#include <exception>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

// #include <pqscope/errors.hpp> (inlined above)
// #include <pqscope/options.hpp> (inlined above)
// #include <pqscope/wal_position.hpp> (inlined above)
// #include <pqscope/detail/config.hpp> (inlined above)

namespace pqscope {

// Counters since the replica set was created.
struct replica_set_stats {
  std::uint64_t writes = 0;             // write() calls that committed
  std::uint64_t reads_on_standby = 0;   // read() calls served by a standby
  std::uint64_t reads_on_primary = 0;   // read() calls no standby could serve (fallback_to_primary)
  std::uint64_t standby_behind = 0;     // standbys found behind a read's position
  std::uint64_t standby_down = 0;       // standbys found unreachable or failing
};

namespace detail {

struct replica_router_state;

class replica_router {
 public:
  using clock = std::chrono::steady_clock;

  replica_router(std::size_t standbys, std::chrono::milliseconds recheck_after);

  [[nodiscard]] std::size_t standbys() const noexcept { return n_; }

  // The standbys to try for a read that must see `at_least`, in order.
  [[nodiscard]] std::vector<std::size_t> plan(wal_position at_least) const;
  // The standby to wait on when none could serve: of those not down, the one known
  // to have replayed the most.
  [[nodiscard]] std::optional<std::size_t> closest() const;

  void served(std::size_t i, wal_position at_least) noexcept;
  void behind(std::size_t i, wal_position replayed) noexcept;
  void down(std::size_t i) noexcept;
  void on_primary() noexcept;
  void wrote() noexcept;

  [[nodiscard]] replica_set_stats stats() const;

 private:
  std::size_t n_;
  std::shared_ptr<replica_router_state> state_;  // behind a pointer: <mutex> stays in the .ipp
};

// One read's way through a replica set, shared by both front ends, which run each
// attempt and report how it went: the standbys in the router's order; then, when
// none served, the closest one once more with the wait (without fallback, asked at
// least once: the plan may have passed over every standby as behind); then the
// primary, or replica_behind / connection_error when fallback_to_primary is off.
class read_route {
 public:
  struct attempt {
    std::size_t node;
    transaction_options options;
  };

  // `options`: the call's; `set_wait`: the set's replica_wait, for a call that sets none.
  read_route(replica_router& router, const transaction_options& options, wal_position seen,
             std::chrono::milliseconds set_wait, bool fallback, bool has_standbys);

  // The next standby to run the read on, and how; nothing once none is left.
  [[nodiscard]] std::optional<attempt> next();
  void served(std::size_t node) noexcept;
  // The attempt on `node` failed with `e`: a standby behind or down is marked, and the
  // route goes on; anything else (in_doubt_error, the function's own errors) is rethrown.
  void failed(std::size_t node, const std::exception_ptr& e);
  // No standby served: the options for the primary, or the refusal without fallback.
  [[nodiscard]] transaction_options to_primary();

 private:
  replica_router& router_;
  transaction_options options_;
  std::chrono::milliseconds wait_;
  bool fallback_, has_standbys_;
  std::vector<std::size_t> plan_;
  std::size_t at_ = 0;
  bool waited_ = false;
  std::optional<replica_behind> last_behind_;
};

}  // namespace detail
}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/detail/impl/replica_router.ipp>
// The bodies of <pqscope/detail/replica_router.hpp>.

// #include <pqscope/detail/replica_router.hpp> (inlined above)

#include <algorithm>
#include <mutex>
#include <utility>

namespace pqscope::detail {

struct replica_router_state {
  struct node {
    replica_router::clock::time_point down_until{};
    replica_router::clock::time_point behind_until{};
    wal_position replayed;  // the most this standby is known to have replayed
  };
  std::chrono::milliseconds recheck_after{0};
  mutable std::mutex m;
  std::vector<node> nodes;
  std::size_t next = 0;  // round robin
  replica_set_stats stats;
};

PQSCOPE_DECL replica_router::replica_router(std::size_t standbys, std::chrono::milliseconds recheck_after)
    : n_(standbys), state_(std::make_shared<replica_router_state>()) {
  state_->recheck_after = recheck_after;
  state_->nodes.resize(standbys);
}

PQSCOPE_DECL std::vector<std::size_t> replica_router::plan(wal_position at_least) const {
  std::vector<std::size_t> order;
  if (n_ == 0) return order;
  const auto now = clock::now();
  std::lock_guard<std::mutex> lock(state_->m);
  const std::size_t first = state_->next++ % n_;
  for (std::size_t k = 0; k < n_; ++k) {
    const std::size_t i = (first + k) % n_;
    const auto& nd = state_->nodes[i];
    if (now < nd.down_until) continue;
    if (now < nd.behind_until && nd.replayed < at_least) continue;
    order.push_back(i);
  }
  return order;
}

PQSCOPE_DECL std::optional<std::size_t> replica_router::closest() const {
  const auto now = clock::now();
  std::lock_guard<std::mutex> lock(state_->m);
  std::optional<std::size_t> best;
  for (std::size_t i = 0; i < n_; ++i) {
    const auto& nd = state_->nodes[i];
    if (now < nd.down_until) continue;
    if (!best || state_->nodes[*best].replayed < nd.replayed) best = i;
  }
  return best;
}

PQSCOPE_DECL void replica_router::served(std::size_t i, wal_position at_least) noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  auto& nd = state_->nodes[i];
  nd.replayed.merge(at_least);
  nd.down_until = nd.behind_until = clock::time_point{};
  ++state_->stats.reads_on_standby;
}

PQSCOPE_DECL void replica_router::behind(std::size_t i, wal_position replayed) noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  auto& nd = state_->nodes[i];
  nd.replayed.merge(replayed);
  nd.behind_until = clock::now() + state_->recheck_after;
  ++state_->stats.standby_behind;
}

PQSCOPE_DECL void replica_router::down(std::size_t i) noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  state_->nodes[i].down_until = clock::now() + state_->recheck_after;
  ++state_->stats.standby_down;
}

PQSCOPE_DECL void replica_router::on_primary() noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  ++state_->stats.reads_on_primary;
}

PQSCOPE_DECL void replica_router::wrote() noexcept {
  std::lock_guard<std::mutex> lock(state_->m);
  ++state_->stats.writes;
}

PQSCOPE_DECL replica_set_stats replica_router::stats() const {
  std::lock_guard<std::mutex> lock(state_->m);
  return state_->stats;
}

PQSCOPE_DECL read_route::read_route(replica_router& router, const transaction_options& options, wal_position seen,
                                    std::chrono::milliseconds set_wait, bool fallback, bool has_standbys)
    : router_(router),
      options_(options),
      wait_(options_.replica_wait.count() != 0 ? options_.replica_wait : set_wait),
      fallback_(fallback),
      has_standbys_(has_standbys) {
  if (options_.replica_wait.count() < 0) throw usage_error("transaction_options::replica_wait must not be negative");
  options_.read_only = true;
  options_.at_least.merge(seen);
  options_.replica_wait = std::chrono::milliseconds{0};  // the route waits, on the closest standby only
  plan_ = router_.plan(options_.at_least);
}

PQSCOPE_DECL std::optional<read_route::attempt> read_route::next() {
  if (at_ < plan_.size()) return attempt{plan_[at_++], options_};
  if (waited_) return std::nullopt;
  waited_ = true;
  if (options_.at_least.empty() || (wait_.count() <= 0 && fallback_)) return std::nullopt;
  const std::optional<std::size_t> i = router_.closest();
  if (!i || (wait_.count() <= 0 && std::find(plan_.begin(), plan_.end(), *i) != plan_.end())) return std::nullopt;
  attempt a{*i, options_};
  a.options.replica_wait = wait_;
  return a;
}

PQSCOPE_DECL void read_route::served(std::size_t node) noexcept { router_.served(node, options_.at_least); }

PQSCOPE_DECL void read_route::failed(std::size_t node, const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const replica_behind& b) {
    router_.behind(node, b.replayed());
    last_behind_ = b;
  } catch (const in_doubt_error&) {
    throw;  // a read-only COMMIT cannot be in doubt; never hide one
  } catch (const connection_error&) {
    router_.down(node);  // its work was read-only: run it elsewhere
  }
}

PQSCOPE_DECL transaction_options read_route::to_primary() {
  if (!fallback_ && has_standbys_) {
    if (last_behind_) throw replica_behind(last_behind_->replayed(), last_behind_->required());
    throw connection_error("replica_set: no standby could serve the read, and fallback_to_primary is off");
  }
  router_.on_primary();
  transaction_options o = options_;
  o.at_least = wal_position{};  // the primary has every commit it acknowledged
  return o;
}

}  // namespace pqscope::detail
#endif

namespace pqscope {

struct replica_set_options {
  // For each node's pool, and each connection (commit_positions is turned on for the
  // primary's whatever this says).
  pool_options pool;
  connection_options connection;
  // A read that no standby could serve at once waits this long on the closest one
  // (see transaction_options::replica_wait) before falling back. transaction_options
  // given to read() may set their own.
  std::chrono::milliseconds replica_wait{0};
  // Then it runs on the primary; false: replica_behind is thrown.
  bool fallback_to_primary = true;
  // A standby found down, or behind a read's position, is passed over this long.
  std::chrono::milliseconds recheck_after{1000};
};

class replica_set {
 public:
  // No connection is opened here. standbys may be empty: every read goes to the primary.
  explicit replica_set(std::string primary, std::vector<std::string> standbys, replica_set_options options = {});

  // atomic(primary, options, fn); the commit's WAL position is merged into `seen`.
  template <class Fn>
  auto write(wal_position& seen, Fn&& fn, transaction_options options = {});
  template <class Fn>
  auto write(Fn&& fn, transaction_options options = {}) {
    wal_position ignored;
    return write(ignored, std::forward<Fn>(fn), options);
  }

  // A read-only atomic(standby, options, fn) on a standby that has replayed `seen`
  // (merged with options.at_least), or on the primary (see the top of this file).
  template <class Fn>
  auto read(wal_position seen, Fn&& fn, transaction_options options = {});
  template <class Fn>
  auto read(Fn&& fn, transaction_options options = {}) {
    return read(wal_position{}, std::forward<Fn>(fn), options);
  }

  // Leases for work of one's own: the primary's, and a standby's (round robin,
  // passing over those found down; the primary's when none answers). No position
  // is checked: pass transaction_options::at_least to its scopes for that.
  [[nodiscard]] lease primary();
  [[nodiscard]] lease standby();

  [[nodiscard]] std::size_t standbys() const noexcept { return standbys_.size(); }
  [[nodiscard]] pool& primary_pool() noexcept { return *primary_; }
  [[nodiscard]] pool& standby_pool(std::size_t i) { return *standbys_.at(i); }
  [[nodiscard]] replica_set_stats stats() const { return router_.stats(); }

 private:
  // What a read on standby i did: served (result set), behind, or the standby failed.
  template <class R>
  struct outcome {
    std::optional<R> value;
    bool behind = false;
  };
  template <class Fn>
  using result_of = detail::call_result_t<Fn, connection>;

  // Leases standby i, or nothing when it cannot connect (it is marked down).
  std::optional<lease> lease_standby(std::size_t i);

  replica_set_options options_;
  std::unique_ptr<pool> primary_;
  std::vector<std::unique_ptr<pool>> standbys_;
  detail::replica_router router_;
};

namespace detail {
// void results travel as this through the router's loop.
struct no_value {};
template <class R>
using stored_t = std::conditional_t<std::is_void_v<R>, no_value, std::decay_t<R>>;

template <class Fn>
auto run_stored(Fn& fn) {
  using R = decltype(fn());
  if constexpr (std::is_void_v<R>) {
    fn();
    return no_value{};
  } else {
    return fn();
  }
}
}  // namespace detail

template <class Fn>
auto replica_set::write(wal_position& seen, Fn&& fn, transaction_options options) {
  lease l = primary_->acquire();
  connection& c = *l;
  using R = result_of<Fn>;
  if constexpr (std::is_void_v<R>) {
    atomic(c, options, fn);
    seen.merge(c.last_commit_position());
    router_.wrote();
  } else {
    R value = atomic(c, options, fn);
    seen.merge(c.last_commit_position());
    router_.wrote();
    return value;
  }
}

template <class Fn>
auto replica_set::read(wal_position seen, Fn&& fn, transaction_options options) {
  using R = result_of<Fn>;
  detail::read_route route(router_, options, seen, options_.replica_wait, options_.fallback_to_primary,
                           !standbys_.empty());
  while (const auto a = route.next()) {
    std::optional<lease> l = lease_standby(a->node);
    if (!l) continue;
    try {
      auto run = [&]() -> decltype(auto) { return atomic(**l, a->options, fn); };
      detail::stored_t<R> v = detail::run_stored(run);
      route.served(a->node);
      if constexpr (!std::is_void_v<R>) return R(std::move(v));
      else return;
    } catch (...) {
      route.failed(a->node, std::current_exception());
    }
  }
  const transaction_options on_primary = route.to_primary();
  lease l = primary_->acquire();
  return atomic(*l, on_primary, fn);
}

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
// #include <pqscope/impl/replica_set.ipp>
// The bodies of <pqscope/replica_set.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

// #include <pqscope/replica_set.hpp> (inlined above)

namespace pqscope {

namespace detail {
// The primary's connections report where each commit ended (write() passes it on).
inline connection_options with_commit_positions(connection_options o) {
  o.commit_positions = true;
  return o;
}
}  // namespace detail

PQSCOPE_DECL replica_set::replica_set(std::string primary, std::vector<std::string> standbys,
                                      replica_set_options options)
    : options_(std::move(options)),
      primary_(std::make_unique<pool>(std::move(primary), options_.pool, detail::with_commit_positions(options_.connection))),
      router_(standbys.size(), options_.recheck_after) {
  if (options_.replica_wait.count() < 0 || options_.recheck_after.count() < 0)
    throw usage_error("replica_set_options: replica_wait and recheck_after must not be negative");
  standbys_.reserve(standbys.size());
  for (std::string& s : standbys)
    standbys_.push_back(std::make_unique<pool>(std::move(s), options_.pool, options_.connection));
}

PQSCOPE_DECL std::optional<lease> replica_set::lease_standby(std::size_t i) {
  try {
    return standbys_[i]->acquire();
  } catch (const connection_error&) {
    router_.down(i);
  } catch (const pool_timeout&) {
    // busy, not down: the next one may have room
  }
  return std::nullopt;
}

PQSCOPE_DECL lease replica_set::primary() { return primary_->acquire(); }

PQSCOPE_DECL lease replica_set::standby() {
  for (std::size_t i : router_.plan(wal_position{}))
    if (std::optional<lease> l = lease_standby(i)) return std::move(*l);
  return primary_->acquire();
}

}  // namespace pqscope
#endif

#define PQSCOPE_VERSION_MAJOR 0
#define PQSCOPE_VERSION_MINOR 1
#define PQSCOPE_VERSION_PATCH 0
