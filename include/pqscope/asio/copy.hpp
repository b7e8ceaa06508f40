#pragma once
// COPY FROM STDIN and COPY TO STDOUT on the asio connection, without blocking:
// connection::async_copy_in() gives a copy_writer, async_copy_out() a copy_reader.
// The meaning is the blocking COPY's (<pqscope/copy.hpp>), in autocommit or inside
// any scope; until the COPY ends, the connection refuses every other operation.
//
//   auto w = co_await c.async_copy_in("COPY item (id, name) FROM STDIN", use_awaitable);
//   for (const item& i : items) {
//     w.write_row(i.id, i.name);                            // into the writer's buffer
//     if (w.full()) co_await w.async_send(use_awaitable);   // backpressure
//   }
//   std::uint64_t n = co_await w.async_finish(use_awaitable);
//
//   auto r = co_await c.async_copy_out("COPY item (id, name) TO STDOUT", use_awaitable);
//   while (auto row = co_await r.async_next<int, std::string>(use_awaitable)) ...

#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <boost/asio/co_spawn.hpp>

#include <pqscope/errors.hpp>
#include <pqscope/detail/copy_rows.hpp>
#include <pqscope/asio/detail/copy.hpp>

namespace pqscope::asio {

// Streams rows into COPY ... FROM STDIN. write_row() only encodes the row into the
// writer's buffer; async_send() puts the buffer on the wire and completes once all
// of it is on the socket, so a writer that sends whenever full() holds about one
// chunk (64 KiB) in memory, as the blocking writer does. async_finish() sends the
// rest and ends the COPY. A writer destroyed before async_finish() aborts the COPY
// (nothing of it is kept), in the background: the connection's next operation waits
// for that.
class copy_writer {
 public:
  copy_writer() = default;  // no COPY: every call throws usage_error
  copy_writer(copy_writer&&) noexcept = default;
  copy_writer& operator=(copy_writer&&) noexcept = default;
  copy_writer(const copy_writer&) = delete;
  copy_writer& operator=(const copy_writer&) = delete;
  ~copy_writer() = default;  // the state aborts an unfinished COPY

  // One row, as the blocking writer's write_row(): one value per column, converted
  // as parameters are; std::nullopt or nullptr is NULL. A value that does not
  // convert throws and leaves no part of its row. No I/O.
  template <class... Ts>
  void write_row(const Ts&... values) {
    check("write_row()");
    rows_.write_row(values...);
    ++written_;
  }
  // Rows already in COPY's text format (each ending in a newline). No I/O.
  void write_raw(std::string_view text) {
    check("write_raw()");
    rows_.write_raw(text);
  }

  // Bytes written and not yet sent; full(): as many as the blocking writer sends at once.
  [[nodiscard]] std::size_t buffered() const noexcept { return rows_.buffer().size(); }
  [[nodiscard]] bool full() const noexcept { return buffered() >= chunk; }

  // Sends what is buffered; completes when all of it is on the socket (write_row()
  // may go on meanwhile, into a fresh buffer). Completion: void(std::exception_ptr).
  // A connection lost ends the COPY: connection_error, as for any statement.
  template <class Token>
  auto async_send(Token&& token) {
    std::exception_ptr refused = hand_over("async_send()");
    return boost::asio::co_spawn(executor(), send_only(st_, std::move(refused)), std::forward<Token>(token));
  }

  // Sends the rest and ends the COPY. Completion: void(std::exception_ptr,
  // std::uint64_t), the rows the server took; the error is what the COPY raised (a
  // constraint, a bad value: its scope is doomed, as by any failed statement).
  template <class Token>
  auto async_finish(Token&& token) {
    std::exception_ptr refused = hand_over("async_finish()");
    return boost::asio::co_spawn(executor(), detail::put_rows(st_, std::move(refused), true),
                                 std::forward<Token>(token));
  }

  // Rows written so far (write_row() calls).
  [[nodiscard]] std::uint64_t rows_written() const noexcept { return written_; }

 private:
  friend class connection;
  explicit copy_writer(std::shared_ptr<detail::copy_state> st) : st_(std::move(st)) {}
  static constexpr std::size_t chunk = std::size_t{64} * 1024;

  void check(const char* what) const {
    if (!st_) throw usage_error(std::string(what) + " on a copy_writer with no COPY (moved from, or default)");
    if (!st_->open)
      throw usage_error(std::string(what) + ": this COPY has already ended" +
                        (st_->why.empty() ? std::string() : " (" + st_->why + ")"));
  }
  [[nodiscard]] boost::asio::any_io_executor executor() const {
    if (!st_) throw usage_error("a copy_writer with no COPY (moved from, or default)");
    return st_->s->executor;
  }
  // The operation's claim; the buffer becomes the one on its way (the last one sent,
  // emptied, is written into next).
  std::exception_ptr hand_over(const char* what) {
    (void)executor();  // no COPY: throws
    std::exception_ptr refused = st_->claim(what, /*ended_ok=*/false);
    if (!refused) std::swap(st_->sending, rows_.buffer());
    return refused;
  }
  static boost::asio::awaitable<void> send_only(std::shared_ptr<detail::copy_state> st, std::exception_ptr refused) {
    (void)co_await detail::put_rows(std::move(st), std::move(refused), false);
  }

  std::shared_ptr<detail::copy_state> st_;
  pqscope::detail::copy_row_encoder rows_;
  std::uint64_t written_ = 0;
};

// Reads the rows of COPY ... TO STDOUT. The COPY ends when the last row has been
// read; a reader destroyed before that has the rest read and dropped in the
// background (the connection's next operation waits for that).
class copy_reader {
 public:
  copy_reader() = default;  // no COPY: every call throws usage_error
  copy_reader(copy_reader&&) noexcept = default;
  copy_reader& operator=(copy_reader&&) noexcept = default;
  copy_reader(const copy_reader&) = delete;
  copy_reader& operator=(const copy_reader&) = delete;
  ~copy_reader() = default;

  // The next row converted to Ts..., as the blocking reader's next<Ts...>();
  // std::nullopt after the last row. Completion:
  // void(std::exception_ptr, std::optional<std::tuple<Ts...>>).
  template <class... Ts, class Token>
  auto async_next(Token&& token) {
    static_assert(!(pqscope::detail::is_text_view<Ts>::value || ...),
                  "pqscope: copy_reader::async_next<std::string_view>() would point into a buffer the next row "
                  "overwrites; read std::string (or std::optional<std::string>)");
    std::exception_ptr refused = claim("async_next()");
    return boost::asio::co_spawn(executor(), detail::next_row<Ts...>(st_, std::move(refused)),
                                 std::forward<Token>(token));
  }
  // The next row's fields as text (std::nullopt for NULL); std::nullopt after the
  // last row. Completion: void(std::exception_ptr,
  // std::optional<std::vector<std::optional<std::string>>>).
  template <class Token>
  auto async_read_row(Token&& token) {
    std::exception_ptr refused = claim("async_read_row()");
    return boost::asio::co_spawn(executor(), detail::next_fields(st_, std::move(refused)),
                                 std::forward<Token>(token));
  }

  // Rows read so far.
  [[nodiscard]] std::uint64_t rows_read() const noexcept { return st_ ? st_->read : 0; }
  // Whether the COPY has ended (every row read).
  [[nodiscard]] bool done() const noexcept { return !st_ || !st_->open; }

 private:
  friend class connection;
  explicit copy_reader(std::shared_ptr<detail::copy_state> st) : st_(std::move(st)) {}

  [[nodiscard]] boost::asio::any_io_executor executor() const {
    if (!st_) throw usage_error("a copy_reader with no COPY (moved from, or default)");
    return st_->s->executor;
  }
  std::exception_ptr claim(const char* what) {
    (void)executor();  // no COPY: throws
    return st_->claim(what, /*ended_ok=*/true);
  }

  std::shared_ptr<detail::copy_state> st_;
};

}  // namespace pqscope::asio
