#pragma once
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

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/copy_text.hpp>
#include <pqscope/detail/scope_machine.hpp>
#include <pqscope/detail/sync_session.hpp>

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
    const std::size_t start = buf_.size();
    try {
      std::size_t column = 0;
      ((column > 0 ? buf_.put('\t') : void(), put_field(values, column), ++column), ...);
    } catch (...) {
      buf_.truncate(start);  // a value that does not convert leaves no part of its row
      throw;
    }
    buf_.put('\n');
    ++rows_;
    if (buf_.size() >= chunk) send();
  }

  // Rows already in COPY's text format (tab-separated, escaped, each ending in a
  // newline), for data that comes that way.
  void write_raw(std::string_view text);

  // Ends the COPY: the rows the server took (its "COPY n"). Throws what the COPY
  // raised (a constraint, a bad value: the scope is doomed, as for any statement).
  std::uint64_t finish();

  // Rows written so far (write_row() calls).
  [[nodiscard]] std::uint64_t rows_written() const noexcept { return rows_; }

 private:
  template <class Driver>
  friend class basic_connection;
  explicit copy_writer(std::unique_ptr<detail::copy_stream> st);
  static constexpr std::size_t chunk = std::size_t{64} * 1024;

  void check(const char* what) const;
  void send();

  // One value, converted as a parameter is, straight into the row: numbers need no
  // escaping, strings are escaped from where they are, the rest through to_text().
  template <class T>
  void put_field(const T& v, std::size_t column) {
    using U = std::decay_t<T>;
    // A char buffer is read up to its end, as a parameter is; so is any other type
    // without a form of its own here.
    constexpr bool direct = !std::is_array_v<T> &&
                            (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t> ||
                             detail::is_optional<U>::value || detail::is_chars_number<U>::value ||
                             detail::has_write_unescaped<U>::value || std::is_same_v<U, const char*> ||
                             std::is_same_v<U, char*> || std::is_same_v<U, std::string> ||
                             std::is_same_v<U, std::string_view>);
    if constexpr (!direct) {
      put_converted(v, column);
    } else if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t>) {
      buf_.append("\\N", 2);
    } else if constexpr (detail::is_optional<U>::value) {
      if (v)
        put_field(*v, column);
      else
        buf_.append("\\N", 2);
    } else if constexpr (detail::is_chars_number<U>::value) {
      char* at = buf_.room(24);
      buf_.commit(std::to_chars(at, at + 24, v).ptr);
    } else if constexpr (detail::has_write_unescaped<U>::value) {
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
  void put_converted(const T& v, std::size_t /*column*/) {
    params_.assign(v);
    if (params_.values()[0] == nullptr)
      buf_.append("\\N", 2);
    else
      buf_.append_escaped(params_.values()[0]);
  }
  void put_text(std::string_view text, std::size_t column);

  std::unique_ptr<detail::copy_stream> st_;
  detail::copy_buffer buf_;
  detail::param_list params_;
  std::uint64_t rows_ = 0;
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
    static_assert(!(detail::is_text_view<Ts>::value || ...),
                  "pqscope: copy_reader::next<std::string_view>() would point into a buffer the next row "
                  "overwrites; read std::string (or std::optional<std::string>)");
    if (!read_row(fields_)) return std::nullopt;
    if (fields_.size() != sizeof...(Ts))
      throw conversion_error("COPY row " + std::to_string(rows_) + " has " + std::to_string(fields_.size()) +
                             " column(s), but next<...>() asks for " + std::to_string(sizeof...(Ts)));
    return convert<Ts...>(std::index_sequence_for<Ts...>{});
  }

  // Rows read so far.
  [[nodiscard]] std::uint64_t rows_read() const noexcept { return rows_; }
  // Whether the COPY has ended (every row read).
  [[nodiscard]] bool done() const noexcept { return !st_ || !st_->open(); }

 private:
  template <class Driver>
  friend class basic_connection;
  explicit copy_reader(std::unique_ptr<detail::copy_stream> st);

  bool next_line(std::string_view& line);

  template <class T>
  T field_as(std::size_t i) const {
    const std::optional<std::string>& f = fields_[i];
    if constexpr (detail::is_optional<T>::value) {
      if (!f) return std::nullopt;
      return T(value_traits<typename T::value_type>::from_text(*f));
    } else {
      if (!f)
        throw conversion_error("column " + std::to_string(i) + " of COPY row " + std::to_string(rows_) +
                               " is NULL; read it as std::optional<T>");
      return value_traits<T>::from_text(*f);
    }
  }
  template <class... Ts, std::size_t... I>
  std::tuple<Ts...> convert(std::index_sequence<I...>) const {
    return std::tuple<Ts...>(field_as<Ts>(I)...);
  }

  std::unique_ptr<detail::copy_stream> st_;
  std::vector<std::optional<std::string>> fields_;
  std::uint64_t rows_ = 0;
};

}  // namespace pqscope

#ifdef PQSCOPE_BODIES
#include <pqscope/impl/copy.ipp>
#endif
