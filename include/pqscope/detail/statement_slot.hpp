#pragma once
// A user statement on its way: its text and parameters, then its answer or its
// error. The scope machine queues slots; the front end that owns the machine (a
// `sender`) sends them when an answer is asked for.

#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/reply.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// The error a failed statement raises: the server's fields, the statement's text
// (for the caret), and `context` before the message (set_local names its setting).
PQSCOPE_DECL std::exception_ptr sql_error_ptr(const reply& r, std::string_view sql, const std::string& context = {});

// Whatever can send the queue now: the front end that owns the machine.
class sender {
 public:
  sender() = default;
  sender(const sender&) = delete;
  sender& operator=(const sender&) = delete;
  sender(sender&&) = delete;
  sender& operator=(sender&&) = delete;
  virtual ~sender() = default;
  virtual void flush() = 0;
};

// A user statement and, once it is known, its answer. Queued statements of a
// batched attempt own a copy of their text and parameters; a statement sent at
// once borrows the caller's.
class statement_slot final : public deferred_answer {
 public:
  enum class state { queued, answered, failed };

  PQSCOPE_DECL result wait() override;  // inline in header-only mode: no key function, no vtable in every TU

  void answer(result r);
  void fail(std::exception_ptr e);

  // Copies the text and parameters, so the statement can wait past the caller's call.
  void own();

  // Back to a fresh slot's state, for the machine to use again (scope_machine::recycle).
  void recycle() noexcept;

  state st = state::queued;
  result res;
  std::exception_ptr error;
  std::weak_ptr<sender> owner;
  statement stmt;        // what is sent
  std::string_view sql;  // for the observer
  std::size_t depth = 0, attempt = 0;
  bool batched = false;
  bool resent = false;  // sent again after the session lost its prepared statement

 private:
  // own(): the text, then each non-NULL value, each NUL-terminated, in one buffer;
  // the value pointers and types inline for the few parameters most statements have.
  static constexpr int inline_params = 4;
  [[nodiscard]] bool owned() const noexcept {
    return stmt.sql == inline_text_ || (heap_text_ && stmt.sql == heap_text_.get());
  }
  char inline_text_[120] = {};
  std::unique_ptr<char[]> heap_text_;
  const char* inline_pointers_[inline_params] = {};
  unsigned inline_types_[inline_params] = {};
  std::vector<const char*> pointers_;
  std::vector<unsigned> types_;
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/statement_slot.ipp>
#endif
