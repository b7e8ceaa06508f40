#pragma once
// The bodies of <pqscope/uuid.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/uuid.hpp>

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
