#pragma once
// The bodies of <pqscope/wal_position.hpp>: included at its end in header-only mode,
// and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/wal_position.hpp>

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
