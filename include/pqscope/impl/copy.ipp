#pragma once
// The bodies of <pqscope/copy.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/copy.hpp>

#include <cstring>

namespace pqscope::detail {

PQSCOPE_DECL copy_stream::copy_stream(std::shared_ptr<sync_session> s, std::shared_ptr<statement_slot> slot, bool in)
    : s_(std::move(s)), slot_(std::move(slot)), in_(in) {
  s_->open_stream(this);
}

PQSCOPE_DECL copy_stream::~copy_stream() { end_quietly(); }

PQSCOPE_DECL void copy_stream::check_open(const char* what) const {
  if (!open_)
    throw usage_error(std::string(what) + ": this COPY has already ended" +
                      (why_.empty() ? std::string() : " (" + why_ + ")"));
}

PQSCOPE_DECL void copy_stream::put(std::string_view data) {
  if (!s_->copy_put(data)) {
    // The connection failed: copy_end() reports it, and the scopes learn it.
    (void)end(s_->copy_end(nullptr));
  }
}

PQSCOPE_DECL result copy_stream::end(batch_reply br) {
  open_ = false;
  s_->close_stream(this);
  try {
    return s_->end_out_of_band(slot_, std::move(br));
  } catch (const std::exception& e) {
    why_ = e.what();
    throw;
  }
}

PQSCOPE_DECL void copy_stream::end_quietly() noexcept {
  if (!open_) return;
  try {
    if (in_) {
      (void)end(s_->copy_end("the copy_writer was destroyed (or its scope ended) before finish()"));
    } else {
      std::string_view ignored;
      while (s_->copy_get(ignored)) {
      }
      (void)end(s_->copy_out_end());
    }
  } catch (...) {
    // the scopes know: a failed COPY dooms its scope, a lost connection breaks it
  }
  open_ = false;
  s_->close_stream(this);
}

}  // namespace pqscope::detail

namespace pqscope {

PQSCOPE_DECL copy_writer::copy_writer(std::unique_ptr<detail::copy_stream> st) : st_(std::move(st)) {}

PQSCOPE_DECL void copy_writer::write_raw(std::string_view text) {
  check("write_raw()");
  detail::sync_session::call guard(st_->session(), "write_raw()", true);
  rows_.write_raw(text);
  if (rows_.buffer().size() >= chunk) send();
}

PQSCOPE_DECL std::uint64_t copy_writer::finish() {
  check("finish()");
  detail::sync_session::call guard(st_->session(), "finish()", true);
  send();
  const result r = st_->end(st_->session().copy_end(nullptr));
  return r.affected_rows();
}

PQSCOPE_DECL void copy_writer::check(const char* what) const {
  if (!st_) throw usage_error(std::string(what) + " on a moved-from copy_writer");
  st_->check_open(what);
}

PQSCOPE_DECL void copy_writer::send() {
  detail::copy_buffer& buf = rows_.buffer();
  if (buf.empty()) return;
  st_->put(buf.view());
  buf.clear();
}

PQSCOPE_DECL copy_reader::copy_reader(std::unique_ptr<detail::copy_stream> st) : st_(std::move(st)) {}

PQSCOPE_DECL bool copy_reader::read_row(std::vector<std::optional<std::string>>& fields) {
  std::string_view line;
  if (!next_line(line)) return false;
  detail::parse_copy_row(line, fields);
  return true;
}

PQSCOPE_DECL bool copy_reader::next_line(std::string_view& line) {
  if (!st_) throw usage_error("reading a moved-from copy_reader");
  if (!st_->open()) return false;
  detail::sync_session::call guard(st_->session(), "reading a copy_reader", true);
  if (st_->session().copy_get(line)) {
    ++read_;
    return true;
  }
  (void)st_->end(st_->session().copy_out_end());
  return false;
}

}  // namespace pqscope
