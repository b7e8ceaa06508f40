#pragma once
// The bodies of <pqscope/result.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/result.hpp>

namespace pqscope::detail {

PQSCOPE_DECL result_handle adopt(PGresult* r) { return result_handle(r, pg_result_deleter{}); }

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL std::size_t result::size() const {
  return get() != nullptr ? static_cast<std::size_t>(PQntuples(res_.get())) : 0;
}

PQSCOPE_DECL std::size_t result::columns() const {
  return get() != nullptr ? static_cast<std::size_t>(PQnfields(res_.get())) : 0;
}

PQSCOPE_DECL std::string_view result::column_name(std::size_t i) const& {
  check_column(i);
  return PQfname(res_.get(), static_cast<int>(i));
}

PQSCOPE_DECL std::size_t result::column_index(std::string_view name) const {
  for (std::size_t i = 0; i < columns(); ++i)
    if (name == PQfname(res_.get(), static_cast<int>(i))) return i;
  std::string names;
  for (std::size_t i = 0; i < columns(); ++i)
    names += (i ? ", " : "") + std::string(PQfname(res_.get(), static_cast<int>(i)));
  throw usage_error("no column named \"" + std::string(name) + "\" in the result (columns: " + names + ")");
}

PQSCOPE_DECL std::uint64_t result::affected_rows() const {
  if (get() == nullptr) return 0;
  const char* n = PQcmdTuples(res_.get());
  return *n ? std::stoull(n) : 0;
}

PQSCOPE_DECL PGresult* result::get() const {
  if (pending_) {
    result r = pending_->wait();
    res_ = std::move(r.res_);
    pending_.reset();
  }
  return res_.get();
}

PQSCOPE_DECL void result::check_column(std::size_t i) const {
  if (i >= columns())
    throw usage_error("column index " + std::to_string(i) + " is out of range: the result has " +
                      std::to_string(columns()) + " column(s)");
}

}  // namespace pqscope
