#pragma once
// The seed and the count of the seeded type tests (everyday_types, interval, json):
// PQSCOPE_TYPES_SEED replays a run (each test prints the one it used), and
// PQSCOPE_TYPES_TEXTS sets how many values or texts each case draws.

#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <random>

namespace pqtest {

// The seed of this process: PQSCOPE_TYPES_SEED, or a random one; printed once.
inline std::uint64_t types_seed(const char* test) {
  static const std::uint64_t s = [test] {
    const char* v = std::getenv("PQSCOPE_TYPES_SEED");
    const std::uint64_t chosen = v != nullptr && *v != '\0' ? std::strtoull(v, nullptr, 10) : std::random_device{}();
    std::cout << test << ": PQSCOPE_TYPES_SEED=" << chosen << std::endl;
    return chosen;
  }();
  return s;
}

inline int types_count(int fallback) {
  const char* v = std::getenv("PQSCOPE_TYPES_TEXTS");
  return v != nullptr && *v != '\0' ? std::atoi(v) : fallback;
}

}  // namespace pqtest
