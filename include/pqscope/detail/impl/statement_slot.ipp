#pragma once
// The bodies of <pqscope/detail/statement_slot.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/statement_slot.hpp>

#include <cstring>

#include <pqscope/errors.hpp>

namespace pqscope::detail {

PQSCOPE_DECL std::exception_ptr sql_error_ptr(const reply& r, std::string_view sql, const std::string& context) {
  try {
    const reply_error& e = r.failure();
    if (e.misuse) throw usage_error(context + e.message);
    throw_sql_error(error_fields{e.sqlstate, context + e.message, e.detail, e.hint, std::string(sql), e.position,
                                 e.schema, e.table, e.column, e.datatype, e.constraint});
  } catch (...) {
    return std::current_exception();
  }
}

PQSCOPE_DECL result statement_slot::wait() {
  if (st == state::queued) {
    std::shared_ptr<sender> s = owner.lock();
    if (!s) throw connection_error("the connection was closed before this statement was sent");
    s->flush();
  }
  if (st == state::failed) std::rethrow_exception(error);
  if (st == state::queued) throw usage_error("this statement's answer is not available");  // cannot happen
  return res;
}

PQSCOPE_DECL void statement_slot::answer(result r) {
  st = state::answered;
  res = std::move(r);
}

PQSCOPE_DECL void statement_slot::fail(std::exception_ptr e) {
  st = state::failed;
  error = std::move(e);
}

PQSCOPE_DECL void statement_slot::recycle() noexcept {
  st = state::queued;
  res = result();
  error = nullptr;
  owner.reset();
  stmt = statement{};
  sql = {};
  depth = attempt = 0;
  batched = resent = false;
  heap_text_.reset();  // a long text's copy is not kept for the next statement
}

PQSCOPE_DECL void statement_slot::own() {
  if (owned()) return;
  const int n = stmt.n_params;
  const auto count = static_cast<std::size_t>(n);
  std::size_t total = sql.size() + 1;
  for (int i = 0; i < n; ++i)
    if (stmt.values[i] != nullptr) total += std::strlen(stmt.values[i]) + 1;
  // Most statements fit the slot's own buffer: no allocation for them.
  char* text = inline_text_;
  if (total > sizeof inline_text_) {
    heap_text_.reset(new char[total]);
    text = heap_text_.get();
  }
  const char** pointers = inline_pointers_;
  unsigned* types = inline_types_;
  if (n > inline_params) {
    pointers_.assign(count, nullptr);
    types_.assign(count, 0);
    pointers = pointers_.data();
    types = types_.data();
  }
  std::memcpy(text, sql.data(), sql.size());
  text[sql.size()] = '\0';
  std::size_t at = sql.size() + 1;
  for (int i = 0; i < n; ++i) {
    const auto k = static_cast<std::size_t>(i);
    pointers[k] = nullptr;
    if (stmt.values[i] != nullptr) {
      const std::size_t size = std::strlen(stmt.values[i]) + 1;
      std::memcpy(text + at, stmt.values[i], size);
      pointers[k] = text + at;
      at += size;
    }
    types[k] = stmt.types != nullptr ? stmt.types[i] : 0;
  }
  sql = std::string_view(text, sql.size());
  stmt.sql = text;
  stmt.values = n > 0 ? pointers : nullptr;
  stmt.types = n > 0 && stmt.types != nullptr ? types : nullptr;
}

}  // namespace pqscope::detail
