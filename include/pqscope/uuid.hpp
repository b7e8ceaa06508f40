#pragma once
// pqscope::uuid: PostgreSQL's uuid, 16 bytes held by value, for parameters, results,
// arrays (uuid[]) and COPY.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>
#include <pqscope/detail/config.hpp>

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
#include <pqscope/impl/uuid.ipp>
#endif
