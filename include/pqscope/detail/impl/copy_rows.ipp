#pragma once
// The bodies of <pqscope/detail/copy_rows.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/copy_rows.hpp>

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
