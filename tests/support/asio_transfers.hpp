#pragma once
// The transfer workload of the asio load tests (asio_load, asio_pool): a deposit is a
// scope of its own, a transfer nests two, and either may fail on purpose after its
// UPDATE ran, so that every rollback path is taken under load.

#include <stdexcept>
#include <string>

#include <pqscope/asio.hpp>

#include "asio_run.hpp"

namespace pqtest {

struct app_error : std::runtime_error {
  app_error() : std::runtime_error("deliberate application error") {}
};
struct rollback_request : std::runtime_error {
  rollback_request() : std::runtime_error("deliberate rollback") {}
};

// then_fail throws after the UPDATE ran.
inline awaitable<void> deposit(pqscope::asio::connection& c, const std::string& table, int id, long cents,
                               bool then_fail = false) {
  co_await pqscope::asio::async_atomic(c, [&]() -> awaitable<void> {
    co_await c.async_execute({"UPDATE " + table + " SET cents = cents + $2 WHERE id = $1", id, cents},
                             use_awaitable);
    if (then_fail) throw app_error{};
  });
}

// Credit first: a debit that fails must take the credit back with it.
inline awaitable<void> transfer(pqscope::asio::connection& c, const std::string& table, int from, int to, long cents,
                                bool then_fail = false) {
  co_await pqscope::asio::async_atomic(c, [&]() -> awaitable<void> {
    co_await deposit(c, table, to, cents);
    co_await deposit(c, table, from, -cents, then_fail);
  });
}

// One unit of the workload, an outermost async_atomic(opts): a transfer, then maybe
// a nested one that fails on purpose (overdraw: on the server, by the table's CHECK;
// else in the application), then maybe a rollback the function asks for.
struct unit_result {
  bool committed = false, rolled_back = false, gave_up = false, nested_failure = false;
  int attempts = 0;
  std::string unexpected;  // an error the workload does not expect, and after how many attempts
  [[nodiscard]] bool completed() const { return committed || rolled_back; }
};

inline awaitable<unit_result> transfer_unit(pqscope::asio::connection& c, const pqscope::transaction_options& opts,
                                            const std::string& table, int from, int to, long cents, bool fail_nested,
                                            bool overdraw, bool rollback_all) {
  unit_result u;
  bool failed_as_planned = false;
  try {
    co_await pqscope::asio::async_atomic(c, opts, [&]() -> awaitable<void> {
      ++u.attempts;
      failed_as_planned = false;
      co_await transfer(c, table, from, to, cents);
      if (fail_nested) {
        try {
          co_await transfer(c, table, to, from, overdraw ? 1'000'000'000L : cents, /*then_fail=*/!overdraw);
        } catch (const pqscope::check_violation&) {
          if (!overdraw) throw;
          failed_as_planned = true;
        } catch (const app_error&) {
          failed_as_planned = true;
        }
        if (!failed_as_planned) throw std::logic_error("a transfer meant to fail went through");
      }
      if (rollback_all) throw rollback_request{};
    });
    u.committed = true;
    u.nested_failure = failed_as_planned;
  } catch (const rollback_request&) {
    u.rolled_back = true;
  } catch (const std::exception& e) {
    // A conflict in every one of 1 + retries attempts is SERIALIZABLE's answer, not a defect.
    const bool conflict = dynamic_cast<const pqscope::serialization_failure*>(&e) != nullptr ||
                          dynamic_cast<const pqscope::deadlock_detected*>(&e) != nullptr;
    if (conflict && u.attempts == opts.retries + 1)
      u.gave_up = true;
    else
      u.unexpected = e.what() + std::string(" (after ") + std::to_string(u.attempts) + " attempt(s))";
  }
  co_return u;
}

}  // namespace pqtest
