#pragma once
// The bodies of <pqscope/detail/sync_session.hpp>: included at its end in header-only mode, and
// compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/sync_session.hpp>

namespace pqscope::detail {

PQSCOPE_DECL std::uintptr_t this_thread_token() noexcept {
  static thread_local char tag = 0;
  return reinterpret_cast<std::uintptr_t>(&tag);
}

PQSCOPE_DECL sync_session::call::call(sync_session& s, const char* what, bool of_stream) : s_(s) {
  const std::uintptr_t me = this_thread_token();
  std::uintptr_t expected = 0;
  if (s_.owner_.compare_exchange_strong(expected, me, std::memory_order_acquire)) {
    outer_ = true;
  } else if (expected != me) {
    throw_busy(what);
  }
  if (s_.stream_ != nullptr && !of_stream) {
    if (outer_) leave(s_);
    throw usage_error(std::string(what) + ": a COPY is in progress on this connection; finish() the "
                      "copy_writer, or read the copy_reader to its end, first");
  }
}

PQSCOPE_DECL void sync_session::call::throw_busy(const char* what) {
  throw usage_error(std::string(what) +
                    ": this connection is in use by another thread, whose call is still in progress. A "
                    "connection and its scopes serve one thread at a time; give each thread its own connection "
                    "(pqscope::pool), or hand it over between calls");
}

PQSCOPE_DECL bool sync_session::call::try_enter(sync_session& s, bool& outer) noexcept {
  const std::uintptr_t me = this_thread_token();
  std::uintptr_t expected = 0;
  outer = s.owner_.compare_exchange_strong(expected, me, std::memory_order_acquire);
  return outer || expected == me;
}

PQSCOPE_DECL void sync_session::begin_out_of_band(const std::shared_ptr<statement_slot>& slot) {
  machine.request_sync_point();
  drive();
  machine.finish();
  machine.stage_out_of_band(slot);
}

PQSCOPE_DECL result sync_session::end_out_of_band(const std::shared_ptr<statement_slot>& slot, batch_reply br) {
  machine.apply(std::move(br));
  drive();
  machine.finish();
  return slot->wait();
}

PQSCOPE_DECL void sync_session::drive() {
  if (driving_) throw usage_error("the connection was used while it was busy (from a statement observer?)");
  driving_ = true;
  try {
    while (machine.wants_send()) {
      exchange(machine.plan(), reply_);
      machine.apply(reply_);
    }
  } catch (...) {
    driving_ = false;
    throw;
  }
  driving_ = false;
}

PQSCOPE_DECL void sync_session::flush() {
  call guard(*this, "reading a result");
  machine.request_flush();
  drive();
  machine.finish();
}

PQSCOPE_DECL result sync_session::complete(const std::shared_ptr<statement_slot>& slot) {
  if (slot->batched) return result(std::shared_ptr<deferred_answer>(slot));
  drive();
  machine.finish();
  return slot->wait();
}

PQSCOPE_DECL void sync_session::end(std::uint64_t id, bool commit, bool* committed) {
  if (committed != nullptr) *committed = false;
  if (!machine.end_scope(id, commit)) {
    if (committed != nullptr) *committed = commit;
    return;
  }
  drive();
  if (auto xid = machine.needs_resolution()) machine.resolve(xact_status(*xid));
  machine.finish_end(committed);
}

PQSCOPE_DECL void sync_session::abandon(std::uint64_t id) noexcept {
  // Another thread in a call: touching the machine now would race with it.
  bool outer = false;
  if (!call::try_enter(*this, outer)) return;
  struct leave_on_exit {
    sync_session& s;
    bool outer;
    leave_on_exit(sync_session& session, bool was_outer) : s(session), outer(was_outer) {}
    leave_on_exit(const leave_on_exit&) = delete;
    leave_on_exit& operator=(const leave_on_exit&) = delete;
    leave_on_exit(leave_on_exit&&) = delete;
    leave_on_exit& operator=(leave_on_exit&&) = delete;
    ~leave_on_exit() {
      if (outer) call::leave(s);
    }
  } leave{*this, outer};
  end_stream_quietly();  // a COPY still open in this scope fails it first
  auto at = machine.index_of(id);
  if (!at) return;
  while (machine.depth() > *at) {
    try {
      if (machine.end_scope(machine.innermost_id(), false, /*quiet=*/true)) {
        drive();
        machine.finish_end();
      }
    } catch (...) {
      // quiet endings only throw if memory runs out; the frame is gone either way
    }
  }
}

}  // namespace pqscope::detail
