#pragma once
// The blocking front end: a scope machine, a driver, and the loop between them
// (sync_session::drive: plan, exchange, apply), one public call at a time per
// connection; driver_session binds it to a driver and resolves a lost COMMIT on a
// fresh connection. The in-doubt resolver's clock is shared with the asio front end.

#include <sys/types.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/driver.hpp>
#include <pqscope/notification.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/result.hpp>
#include <pqscope/detail/config.hpp>
#include <pqscope/detail/scope_machine.hpp>

namespace pqscope::detail {

// A token for the calling thread: the address of a thread_local, unique among
// live threads (cheaper to include than <thread>).
PQSCOPE_DECL std::uintptr_t this_thread_token() noexcept;

// The blocking front end: the machine, a driver, and the loop between them.
class sync_session : public sender, public std::enable_shared_from_this<sync_session> {
 public:
  scope_machine machine;

  // Held for the length of every public call: a call from a second thread while
  // one is in progress is refused before anything is touched or sent. The same
  // thread may re-enter (an on_commit callback that runs a statement).
  class call {
   public:
    // `of_stream`: a call of the COPY in progress itself; any other call is
    // refused while a COPY streams.
    call(sync_session& s, const char* what, bool of_stream = false);
    [[noreturn]] static void throw_busy(const char* what);
    // For destructors: false when another thread is in a call (nothing may be touched).
    static bool try_enter(sync_session& s, bool& outer) noexcept;
    static void leave(sync_session& s) noexcept { s.owner_.store(0, std::memory_order_release); }
    call(const call&) = delete;
    call& operator=(const call&) = delete;
    ~call() {
      if (outer_) leave(s_);
    }

   private:
    sync_session& s_;
    bool outer_ = false;
  };

  // A COPY in progress: ended (aborted, or read to its end) before the scopes
  // around it end or the connection closes.
  class stream {
   public:
    stream() = default;
    stream(const stream&) = delete;
    stream& operator=(const stream&) = delete;
    stream(stream&&) = delete;
    stream& operator=(stream&&) = delete;
    virtual ~stream() = default;
    virtual void end_quietly() noexcept = 0;
  };
  void open_stream(stream* s) noexcept { stream_ = s; }
  void close_stream(stream* s) noexcept {
    if (stream_ == s) stream_ = nullptr;
  }
  [[nodiscard]] bool streaming() const noexcept { return stream_ != nullptr; }
  void end_stream_quietly() noexcept {
    if (stream_ != nullptr) stream_->end_quietly();  // which calls close_stream()
    stream_ = nullptr;
  }

  // ---- statements outside the pipeline (see scope_machine::prepare_out_of_band) ----
  // Sends what is queued, controls too, then puts `slot` in flight.
  void begin_out_of_band(const std::shared_ptr<statement_slot>& slot);
  // Its answer: the scopes learn it, then the result or the error.
  result end_out_of_band(const std::shared_ptr<statement_slot>& slot, batch_reply br);
  // The driver's calls (libpq_driver has them; a driver without them refuses).
  virtual int copy_start(const statement& s, batch_reply& out) = 0;  // PGRES_COPY_IN/OUT if started, else 0
  virtual bool copy_put(std::string_view data) = 0;
  virtual batch_reply copy_end(const char* abort_reason) = 0;
  virtual bool copy_get(std::string_view& row) = 0;
  virtual batch_reply copy_out_end() = 0;
  virtual batch_reply script(const char* sql) = 0;

  // The one loop: every send of every operation goes through here.
  void drive();

  // Sends what is queued and waits (a batched result is read, connection::flush()).
  PQSCOPE_DECL void flush() override;  // (see statement_slot::wait)

  // A statement from queue_statement(): a batched one waits, any other is sent now.
  result complete(const std::shared_ptr<statement_slot>& slot);

  void end(std::uint64_t id, bool commit, bool* committed = nullptr);

  // Ends scope `id` and every scope opened inside it, rolling back; never throws.
  // Used by destructors, also when scopes are destroyed out of order.
  void abandon(std::uint64_t id) noexcept;

 protected:
  // Fills `out` (its memory is used again from one round trip to the next).
  virtual void exchange(const std::vector<statement>& statements, batch_reply& out) = 0;
  // "committed", "aborted", "absent: ..." or why it could not tell; asked on a fresh
  // connection (detail/in_doubt.hpp).
  virtual std::string xact_status(const in_doubt& q) noexcept = 0;

 private:
  bool driving_ = false;
  batch_reply reply_;  // drive()'s, kept for its memory
  stream* stream_ = nullptr;  // the COPY in progress, if any
  std::atomic<std::uintptr_t> owner_{0};  // this_thread_token() of the thread in a call, or 0
};

// Whether a driver can fill a batch_reply it is given (libpq_driver::exchange).
template <class D, class = void>
struct fills_reply : std::false_type {};
template <class D>
struct fills_reply<D, std::void_t<decltype(std::declval<D&>().exchange(std::declval<const std::vector<statement>&>(),
                                                                       std::declval<batch_reply&>()))>>
    : std::true_type {};

// Whether a driver can wait for notifications (LISTEN) between round trips.
template <class D, class = void>
struct has_notifications : std::false_type {};
template <class D>
struct has_notifications<D, std::void_t<decltype(std::declval<D&>().take_notification(std::declval<notification&>()))>>
    : std::true_type {};

// Whether a driver can send statements outside the pipeline (COPY, scripts).
template <class D, class = void>
struct has_out_of_band : std::false_type {};
template <class D>
struct has_out_of_band<D, std::void_t<decltype(std::declval<D&>().script(""))>> : std::true_type {};

[[noreturn]] inline void unsupported(const char* what) {
  throw usage_error(std::string(what) + " needs a driver that can send statements outside a pipeline (libpq_driver)");
}

// How long the in-doubt resolver may take, from the moment the COMMIT was lost:
// one network_timeout plus its grace (the bound of one more round trip), or 5 s of
// polling without a network_timeout; transaction_options::resolve_wait instead when
// it is set. Connecting counts, but is bounded only by connect_timeout (whole
// seconds, at least 2, per host: libpq's rule).
template <class D>
std::chrono::milliseconds resolver_budget(const D& d) {
  if constexpr (takes_network<D>::value) {
    const std::chrono::milliseconds t = d.network().timeout;
    if (t.count() > 0) return t + libpq_driver::grace_for(t);
  }
  return std::chrono::milliseconds(0);
}

// The resolver's deadline, shared by both front ends.
class resolver_clock {
 public:
  using clock = std::chrono::steady_clock;
  // budget 0: no network_timeout; round trips are unbounded, and polling stops after
  // 5 s, or after `wait` (resolve_wait) when it is set.
  explicit resolver_clock(std::chrono::milliseconds budget, std::chrono::milliseconds wait = {})
      : bounded_(budget.count() > 0),
        waits_(wait.count() > 0),
        budget_(waits_ ? wait : bounded_ ? budget : std::chrono::milliseconds(5000)),
        deadline_(clock::now() + budget_) {}
  [[nodiscard]] std::chrono::milliseconds left() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - clock::now());
  }
  // The next round trip's network_timeout, so that it and its grace end by the
  // deadline (grace_for(t) <= t); false once nothing is left.
  [[nodiscard]] std::chrono::milliseconds round_trip_timeout() const {
    const std::chrono::milliseconds l = left();
    if (l.count() <= 1) return std::chrono::milliseconds(0);
    return l > std::chrono::milliseconds(2000) ? l - std::chrono::milliseconds(1000) : l / 2;
  }
  template <class D>
  bool bound_round_trip(D& d) const {
    if (!bounded_) return left().count() > 0;
    const std::chrono::milliseconds t = round_trip_timeout();
    if (t.count() <= 0) return false;
    if constexpr (takes_network<D>::value) d.set_network(network_settings{t});
    return true;
  }
  // Before asking again: 50 ms, or what is left; 0: stop.
  [[nodiscard]] std::chrono::milliseconds pause() const { return pause_of(std::chrono::milliseconds(50)); }
  // Before connecting again (no server could tell: a failover may be under way).
  [[nodiscard]] std::chrono::milliseconds reconnect_pause() const { return pause_of(std::chrono::milliseconds(200)); }
  // Why there is no verdict; `last`: what the last attempt saw.
  [[nodiscard]] std::string spent(const std::string& last = {}) const {
    return "no verdict within " + std::to_string(budget_.count()) + " ms" +
           (waits_ ? " (resolve_wait)" : bounded_ ? " (network_timeout and its grace)" : "") +
           (last.empty() ? "" : "; last: " + last);
  }

 private:
  [[nodiscard]] std::chrono::milliseconds pause_of(std::chrono::milliseconds most) const {
    const std::chrono::milliseconds l = left();
    if (l.count() <= (bounded_ ? 2 : 0)) return std::chrono::milliseconds(0);
    return l < most ? l : most;
  }
  bool bounded_;
  bool waits_;
  std::chrono::milliseconds budget_;
  clock::time_point deadline_;
};

// The blocking front end bound to a driver.
template <class Driver>
class driver_session final : public sync_session {
 public:
  explicit driver_session(std::string info) : conninfo(std::move(info)) {}

  Driver driver;
  std::string conninfo;  // what the session was opened with; also for resolving a lost COMMIT

  int copy_start(const statement& s, batch_reply& out) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_start(s, out);
    else unsupported("COPY");
  }
  bool copy_put(std::string_view data) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_put(data);
    else unsupported("COPY");
  }
  batch_reply copy_end(const char* abort_reason) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_end(abort_reason);
    else unsupported("COPY");
  }
  bool copy_get(std::string_view& row) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_get(row);
    else unsupported("COPY");
  }
  batch_reply copy_out_end() override {
    if constexpr (has_out_of_band<Driver>::value) return driver.copy_out_end();
    else unsupported("COPY");
  }
  batch_reply script(const char* sql) override {
    if constexpr (has_out_of_band<Driver>::value) return driver.script(sql);
    else unsupported("execute_script()");
  }

 protected:
  void exchange(const std::vector<statement>& statements, batch_reply& out) override {
    if constexpr (fills_reply<Driver>::value)
      (void)driver.exchange(statements, out);
    else
      out = driver.exchange(statements);
  }

  std::string xact_status(const in_doubt& q) noexcept override {
    try {
      const resolver_clock clock(resolver_budget(driver), q.wait);
      const verdict_question question(q);
      const statement ask = question.ask();
      std::string last;
      for (;;) {  // a fresh connection each time round: the conninfo may now lead elsewhere
        Driver fresh;
        copy_driver_settings(fresh, driver);  // the same network_timeout bounds the resolver
        try {
          fresh.open(conninfo, "pqscope in-doubt resolver");
          // A backend that was cut off may still be finishing: wait for its verdict.
          for (;;) {
            if (!clock.bound_round_trip(fresh)) return clock.spent(last);
            batch_reply br = fresh.exchange({ask});
            if (br.lost) {
              last = "connection lost: " + br.lost_message;
              break;
            }
            verdict v = read_verdict(br.replies.front(), q);
            if (v.next == verdict::then::done) return std::move(v.outcome);
            last = std::move(v.outcome);
            if (v.next == verdict::then::reconnect) break;
            const std::chrono::milliseconds pause = clock.pause();
            if (pause.count() <= 0) return clock.spent(last);
            ::usleep(static_cast<useconds_t>(pause.count() * 1000));
          }
        } catch (const connection_error& e) {
          last = e.what();  // no server reachable: a failover may be under way
        }
        const std::chrono::milliseconds pause = clock.reconnect_pause();
        if (pause.count() <= 0) return clock.spent(last);
        ::usleep(static_cast<useconds_t>(pause.count() * 1000));
      }
    } catch (const std::exception& e) {
      return e.what();
    } catch (...) {
      return "unknown failure";
    }
  }
};

// Separate compilation: the session of the default driver is compiled once, with the rest.
PQSCOPE_COMPILED_ONCE(class driver_session<libpq_driver>)

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/sync_session.ipp>
#endif
