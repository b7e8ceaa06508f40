#pragma once
// The bodies of <pqscope/detail/in_doubt.hpp>.

#include <pqscope/detail/in_doubt.hpp>

#include <cstddef>
#include <string>
#include <utility>

namespace pqscope::detail {

PQSCOPE_DECL bool read_probe(const result& r, in_doubt& out) {
  if (r.size() != 1 || r.columns() != 4 || r[0][0].is_null()) return false;
  for (std::size_t c = 1; c < 4; ++c)
    if (r[0][c].is_null()) return false;
  out.xid = std::string(r[0][0].text());
  out.first_write = wal_position::parse(r[0][1].text());
  out.timeline = std::string(r[0][2].text());
  out.replayed = std::string(r[0][3].text());
  return true;
}

PQSCOPE_DECL verdict_question::verdict_question(const in_doubt& q)
    // At a page boundary the insert position counts the next page's header, which
    // no replay position ever does.
    : position_(q.first_write.record_end().to_string()),
      values_{q.xid.c_str(), position_.c_str(), q.timeline.c_str(), q.replayed.c_str()} {}

PQSCOPE_DECL verdict read_verdict(const reply& r, const in_doubt& q) {
  using then = verdict::then;
  if (r.st != reply::status::ok) return {then::done, "error: " + r.failure().message};
  if (r.res.size() != 1 || r.res.columns() != 2) return {then::done, "an answer of another shape"};
  if (r.res[0][0].is_null()) return {then::done, "unknown xid"};  // older than the server keeps
  std::string word(r.res[0][0].text());
  if (word == "committed" || word == "aborted") return {then::done, std::move(word)};
  if (word == "in progress") return {then::ask_again, "still in progress"};
  if (word == "standby") return {then::reconnect, "the server that answered is a standby"};
  if (word == "absent")
    return {then::done, "absent: the server that answered replayed up to " + std::string(r.res[0][1].text()) +
                            " before it left recovery, and the transaction's first write ended at " +
                            q.first_write.to_string()};
  if (word == "no history")
    return {then::done, "the server that answered is on another timeline than " + q.timeline +
                            " and reports no replay position, so its history cannot be checked"};
  return {then::done, "pg_xact_status said " + word};
}

}  // namespace pqscope::detail
