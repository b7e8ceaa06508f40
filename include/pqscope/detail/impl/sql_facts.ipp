#pragma once
// The bodies of <pqscope/detail/sql_facts.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/sql_facts.hpp>

namespace pqscope::detail {

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
  entry& e = entries_[slot_hash(sql) % slots];
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

}  // namespace pqscope::detail
