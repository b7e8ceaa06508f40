#pragma once
// Shared between the benchmark's translation units. libpqxx lives in its own
// file so that the rest builds without it.

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

namespace bench {

// One implementation's connection, able to run each benchmark shape as one
// transaction. Failures throw std::runtime_error.
class client {
 public:
  client() = default;
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  virtual ~client() = default;

  // A transaction with `depth` nested scopes (outermost included); only the
  // innermost runs `statements` INSERTs. `seq` varies the inserted value.
  virtual void matrix(int depth, int statements, int seq) = 0;
  // An outer scope calling two nested scopes, each running one UPDATE. Accounts
  // are updated in id order (first < second), so concurrent transfers cannot deadlock.
  virtual void transfer(int first, int second, int amount) = 0;
  // Starts (file != nullptr) or stops libpq's protocol trace on this connection.
  virtual void trace(std::FILE* file) = 0;
};

// nullptr when the benchmark was built without libpqxx.
std::unique_ptr<client> make_pqxx_client(const std::string& conninfo);
std::string pqxx_version();  // "not built" without libpqxx

}  // namespace bench
