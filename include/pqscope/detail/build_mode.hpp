#pragma once
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
