#pragma once
// pqscope::wal_position: a position in the server's write-ahead log (PostgreSQL's
// pg_lsn), for parameters and results, and the token of read-your-writes: with
// connection_options::commit_positions, basic_connection::last_commit_position()
// (and the Asio connection's) is where the last COMMIT's record ends in the WAL.
// A standby that has replayed up to it sees that transaction.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/detail/config.hpp>

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
#include <pqscope/impl/wal_position.ipp>
#endif
