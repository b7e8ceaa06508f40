#pragma once
// What pqscope's checks read off a statement's text before it is queued, and a
// small cache of it: an application runs the same few statements again and again,
// and reading a text costs more than the rest of queuing it.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/detail/sql_text.hpp>

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
#include <pqscope/detail/impl/sql_facts.ipp>
#endif
