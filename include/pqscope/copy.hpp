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
#include <pqscope/detail/copy_rows.hpp>
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
#include <pqscope/impl/copy.ipp>
#endif
