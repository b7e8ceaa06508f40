#pragma once
// The named statements of one session (connection_options::prepare): which texts
// have one, under which name, and which to prepare next. The scope machine asks
// plan() for every user statement it puts in a batch and tells settle() what the
// Parse sent with it did. No I/O. A name is never parsed twice on a session:
// PgBouncer disconnects a client that does, so a Parse that did not take burns it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <pqscope/detail/config.hpp>
#include <pqscope/detail/sql_facts.hpp>  // slot_hash

namespace pqscope::detail {

class prepared_statements {
 public:
  // How a statement goes out: unnamed (name == nullptr), or bound to `name`, after
  // its Parse when `parse`, of `text` instead of its own when set. Both are valid
  // until the next call.
  struct use {
    const char* name = nullptr;
    bool parse = false;
    const char* text = nullptr;
  };

  // How many names a session may make (0: nothing is prepared). Behind a pooler
  // (`pooled`), its max_prepared_statements; a full cache stops preparing new texts
  // (libpq 15 cannot send Close, and PgBouncer does not track SQL DEALLOCATE).
  void set_limit(std::size_t limit, bool pooled = false) noexcept {
    limit_ = limit;
    pooled_ = pooled;
  }
  [[nodiscard]] bool enabled() const noexcept { return limit_ > 0; }
  // The limit is a pooler's word (pooler_max_prepared_statements), which a lost statement proves wrong.
  [[nodiscard]] bool pooled() const noexcept { return pooled_; }
  [[nodiscard]] std::size_t made() const noexcept { return made_.size(); }
  // Every name made on this session, for a borrowed session handed back (DEALLOCATE).
  [[nodiscard]] const std::vector<std::string>& names() const noexcept { return made_; }

  // A statement of this text and these parameter types goes out in the batch being
  // planned. Its second use is prepared (the Parse rides with it); later ones bind.
  PQSCOPE_DECL use plan(std::string_view text, int n_params, const unsigned* types);

  // Its batch answered: whether the Parse sent under `name` took.
  PQSCOPE_DECL void settle(std::string_view text, int n_params, const unsigned* types, const char* name,
                           bool parsed) noexcept;

  // The statement under `name` must not be used again (its plan's result type
  // changed after DDL): its text gets a new name on its next use. Behind a pooler
  // also a new text (a comment added): PgBouncer shares one server statement among
  // all clients that prepare the same text, and the old one keeps its old plan.
  PQSCOPE_DECL void forget(std::string_view text, int n_params, const unsigned* types) noexcept;

  // The session has none any more (a new session; DISCARD ALL; a pooler that lost them).
  PQSCOPE_DECL void forget_all() noexcept;

 private:
  enum class state : unsigned char { seen, parsing, ready };
  struct entry {
    bool used = false;
    state st = state::seen;
    unsigned uses = 0;
    std::string text;
    std::vector<unsigned> types;  // empty: the server infers every parameter's type
    std::string name;
    unsigned replans = 0;  // forget() behind a pooler
    std::string replanned;  // the text prepared instead, when replans > 0
  };
  static constexpr std::size_t slots = 256;     // by the text's and types' hash,
  static constexpr std::size_t ways = 4;        // in any of 4 slots from there: hot texts do not evict each other
  static constexpr std::size_t longest = 4096;  // longer texts are not prepared
  static constexpr unsigned threshold = 2;      // the use on which a text is prepared

  // The entry of this text and types (same = true), or the slot to take for it: a free
  // one, else the least used that no Parse of this batch waits on; nullptr if none.
  entry* find(std::string_view text, int n_params, const unsigned* types, bool& same) noexcept;

  // Names start with a prefix new for each session, so that statements a session
  // pooler hands on from another client (or this one's earlier session) never collide.
  PQSCOPE_DECL void new_prefix();

  std::vector<entry> entries_;
  std::size_t limit_ = 0;
  bool pooled_ = false;
  std::vector<std::string> made_;  // never more than limit_
  std::string prefix_;
  std::uint64_t next_ = 0;  // names are never reused on a session
};

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/prepared_statements.ipp>
#endif
