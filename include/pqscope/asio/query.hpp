#pragma once
// pqscope::asio::query: one statement and its parameters, owned, as an
// asynchronous operation takes them.

#include <cstddef>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <pqscope/connection.hpp>  // allow_session_state
#include <pqscope/params.hpp>

namespace pqscope::asio {


// One statement and its parameters, as an operation takes it. The text and the
// parameters are copied, so the operation may start after the caller's values are
// gone:
//   co_await c.async_execute("SELECT 1", use_awaitable);
//   co_await c.async_execute({"UPDATE account SET cents = $1 WHERE id = $2", cents, id}, use_awaitable);
// Parameters are the blocking connection's (params.hpp): encoded when the
// operation starts, and an error in them fails the operation.
class query {
 public:
  query(const char* sql) : sql_(sql != nullptr ? sql : "") {}  // NOLINT: implicit on purpose
  query(std::string sql) : sql_(std::move(sql)) {}              // NOLINT
  query(std::string_view sql) : sql_(sql) {}                    // NOLINT
  query(const allow_session_state& s) : sql_(s.sql), session_state_allowed_(true) {}  // NOLINT
  template <class Sql, class P, class... Ps>
  query(Sql&& sql, const P& p, const Ps&... ps)  // NOLINT: implicit, so that {sql, params...} works
      : query(std::forward<Sql>(sql)) {
    params_ = std::make_shared<const params_of<stored_t<P>, stored_t<Ps>...>>(store(p), store(ps)...);
    count_ = pqscope::detail::param_count(p, ps...);
  }

  [[nodiscard]] std::string_view text() const noexcept { return sql_; }
  [[nodiscard]] std::size_t param_count() const noexcept { return count_; }
  [[nodiscard]] bool session_state_allowed() const noexcept { return session_state_allowed_; }

 private:
  friend struct detail_access;

  // The text as libpq wants it: NUL-terminated, with no NUL inside.
  [[nodiscard]] const char* c_str() const {
    if (std::strlen(sql_.c_str()) != sql_.size()) throw usage_error("the SQL text contains a NUL byte");
    return sql_.c_str();
  }
  [[nodiscard]] pqscope::detail::param_list params() const {
    return params_ ? params_->make() : pqscope::detail::param_list{};
  }

  // What a parameter is kept as: views and C strings become strings of their own.
  template <class T>
  static auto store(const T& v) {
    if constexpr (std::is_array_v<T> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>) {
      return std::string(v, ::strnlen(v, std::extent_v<T>));  // as params.hpp reads a char array
    } else if constexpr (std::is_same_v<T, const char*> || std::is_same_v<T, char*>) {
      return v != nullptr ? std::optional<std::string>(v) : std::optional<std::string>();
    } else if constexpr (std::is_same_v<T, std::string_view>) {
      return std::string(v);
    } else if constexpr (std::is_same_v<T, std::optional<std::string_view>>) {
      return v ? std::optional<std::string>(std::string(*v)) : std::optional<std::string>();
    } else {
      return v;
    }
  }
  template <class T>
  using stored_t = decltype(store(std::declval<const T&>()));

  struct params_base {
    params_base() = default;
    params_base(const params_base&) = delete;
    params_base& operator=(const params_base&) = delete;
    params_base(params_base&&) = delete;
    params_base& operator=(params_base&&) = delete;
    virtual ~params_base() = default;
    [[nodiscard]] virtual pqscope::detail::param_list make() const = 0;
  };
  template <class... Ts>
  struct params_of final : params_base {
    explicit params_of(Ts... v) : values(std::move(v)...) {}
    [[nodiscard]] pqscope::detail::param_list make() const override {
      return std::apply([](const Ts&... v) { return pqscope::detail::param_list::of(v...); }, values);
    }
    std::tuple<Ts...> values;
  };

  std::string sql_;
  bool session_state_allowed_ = false;
  std::shared_ptr<const params_base> params_;
  std::size_t count_ = 0;
};

struct detail_access {
  static const char* c_str(const query& q) { return q.c_str(); }
  static pqscope::detail::param_list params(const query& q) { return q.params(); }
};

namespace detail {

// A value that would be a statement's parameter, passed where an operation takes its
// completion token: the blocking call's shape, async_execute("SELECT $1", 1). Asio
// would report it from deep inside async_compose; the operation refuses it instead,
// with one static_assert that says what to write. Asio's tokens are class types
// (use_awaitable, deferred, a handler, a yield_context) that no parameter is.
template <class T>
struct parameter_like
    : std::disjunction<std::negation<std::is_class<T>>, std::is_same<T, std::string>, std::is_same<T, std::nullopt_t>,
                       std::is_same<T, pqscope::params>, pqscope::detail::is_optional<T>, pqscope::detail::is_vector<T>,
                       pqscope::detail::has_to_text<T>> {};

// A completion token for an operation that completes with void(std::exception_ptr, Value):
// anything but a parameter, or a function pointer that takes the completion.
template <class Token, class Value>
inline constexpr bool completion_token_v =
    std::disjunction_v<std::negation<parameter_like<std::decay_t<Token>>>,
                       std::is_invocable<std::decay_t<Token>&, std::exception_ptr, Value>>;
template <class Token, class Value>
using if_completion_token = std::enable_if_t<completion_token_v<Token, Value>, int>;

template <class...>
inline constexpr bool refused_shape = false;

}  // namespace detail

}  // namespace pqscope::asio
