#pragma once
// What pqscope's checks read off a statement's text before it is queued, and a
// small cache of it: an application runs the same few statements again and again,
// and reading a text costs more than the rest of queuing it.

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/session_state.hpp>
#include <pqscope/detail/sql_text.hpp>

namespace pqscope::detail {

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

#if !defined(PQSCOPE_SEPARATE_COMPILATION) || defined(PQSCOPE_IMPLEMENTATION)
PQSCOPE_DECL void sql_facts_cache::read(std::string_view sql, bool hazard, sql_facts& f) {
  f.placeholders = highest_placeholder(sql);
  f.control = transaction_control_keyword(sql);
  f.copy_stream = is_copy_stream(sql);
  f.hazard_read = hazard;
  f.hazard = hazard ? session_state_hazard(sql) : std::string();
}

PQSCOPE_DECL const sql_facts& sql_facts_cache::get(std::string_view sql, bool hazard) {
  if (sql.size() > longest) {
    read(sql, hazard, uncached_);
    return uncached_;
  }
  if (entries_.empty()) entries_.resize(slots);
  entry& e = entries_[std::hash<std::string_view>{}(sql) % slots];
  if (!e.used || e.text != sql) {
    e.used = false;  // stays unused if reading throws
    read(sql, hazard, e.facts);
    e.text.assign(sql.data(), sql.size());
    e.used = true;
  } else if (hazard && !e.facts.hazard_read) {
    e.facts.hazard = session_state_hazard(sql);
    e.facts.hazard_read = true;
  }
  return e.facts;
}
#endif

}  // namespace pqscope::detail
