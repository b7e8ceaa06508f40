#pragma once
// The bodies of <pqscope/detail/prepared_statements.hpp>: included at its end in
// header-only mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/prepared_statements.hpp>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string_view>

namespace pqscope::detail {

PQSCOPE_DECL prepared_statements::entry* prepared_statements::find(std::string_view text, int n_params,
                                                                   const unsigned* types, bool& same) noexcept {
  std::size_t h = slot_hash(text);
  if (types != nullptr)
    for (int i = 0; i < n_params; ++i) h = (h ^ types[i]) * 0x9E3779B97F4A7C15ULL;
  h ^= h >> 32;
  auto matches = [&](const entry& e) {
    if (!e.used || e.text != text) return false;
    if (types == nullptr) return e.types.empty();
    if (e.types.size() != static_cast<std::size_t>(n_params)) return false;
    for (int i = 0; i < n_params; ++i)
      if (e.types[static_cast<std::size_t>(i)] != types[i]) return false;
    return true;
  };
  entry* victim = nullptr;
  for (std::size_t w = 0; w < ways; ++w) {
    entry& e = entries_[(h + w) % slots];
    if (matches(e)) {
      same = true;
      return &e;
    }
    if (!e.used) {
      if (victim == nullptr || victim->used) victim = &e;
    } else if (e.st != state::parsing && (victim == nullptr || (victim->used && e.uses < victim->uses))) {
      victim = &e;  // the least used, unless a Parse of this batch waits on it
    }
  }
  same = false;
  return victim;
}

PQSCOPE_DECL prepared_statements::use prepared_statements::plan(std::string_view text, int n_params,
                                                                const unsigned* types) {
  if (!enabled() || text.size() > longest) return {};
  if (entries_.empty()) entries_.resize(slots);
  bool same = false;
  entry* e = find(text, n_params, types, same);
  if (same) {
    ++e->uses;
    const char* own = e->replans > 0 ? e->replanned.c_str() : nullptr;
    if (e->st != state::seen) return {e->name.c_str(), false, own};  // ready, or parsed earlier in this batch
  } else {
    if (e == nullptr) return {};  // every slot it may use waits on a Parse of this batch
    // Replaced: a name it had stays on the server unused, and counts against the limit.
    e->used = false;
    e->text.assign(text.data(), text.size());
    e->types.assign(types, types == nullptr ? types : types + n_params);
    e->name.clear();
    e->replans = 0;
    e->replanned.clear();
    e->st = state::seen;
    e->uses = 1;
    e->used = true;
  }
  if (e->uses < threshold || made_.size() >= limit_) return {};
  if (prefix_.empty()) new_prefix();
  e->name = prefix_ + std::to_string(++next_);
  e->st = state::parsing;
  made_.push_back(e->name);
  return {e->name.c_str(), true, e->replans > 0 ? e->replanned.c_str() : nullptr};
}

PQSCOPE_DECL void prepared_statements::settle(std::string_view text, int n_params, const unsigned* types,
                                              const char* name, bool parsed) noexcept {
  if (entries_.empty()) return;
  bool same = false;
  entry* e = find(text, n_params, types, same);
  if (!same || e->st != state::parsing || e->name != name) return;
  if (parsed) {
    e->st = state::ready;
  } else {
    e->st = state::seen;  // the name is burnt; the next use tries a new one
    e->name.clear();
  }
}

PQSCOPE_DECL void prepared_statements::forget(std::string_view text, int n_params, const unsigned* types) noexcept {
  if (entries_.empty()) return;
  bool same = false;
  entry* e = find(text, n_params, types, same);
  if (!same) return;
  e->st = state::seen;
  e->name.clear();
  if (!pooled_) return;
  try {
    // A line comment could swallow what follows; a block comment after a newline cannot.
    std::string t(text);
    t += "\n/* pqscope: planned again (" + std::to_string(++e->replans) + ") */";
    e->replanned = std::move(t);
  } catch (...) {
    // out of memory: the text as it was; the server may refuse it once more
  }
}

PQSCOPE_DECL void prepared_statements::forget_all() noexcept {
  for (entry& e : entries_) {
    e.st = state::seen;
    e.name.clear();
  }
  made_.clear();
  prefix_.clear();  // the next name starts a new prefix
}

PQSCOPE_DECL void prepared_statements::new_prefix() {
  static std::atomic<std::uint64_t> sessions{0};
  std::uint64_t x = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  x ^= (static_cast<std::uint64_t>(::getpid()) << 32) ^ (sessions.fetch_add(1) * 0x9E3779B97F4A7C15ULL);
  x ^= x >> 29;
  char buf[16];
  std::snprintf(buf, sizeof buf, "pqs%08x_", static_cast<unsigned>(x ^ (x >> 32)));
  prefix_ = buf;
}

}  // namespace pqscope::detail
