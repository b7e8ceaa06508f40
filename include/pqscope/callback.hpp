#pragma once
// pqscope::callback<R(Args...)>: a copyable holder of any callable, as
// std::function is, for connection_options::observer and the on_commit and
// on_rollback callbacks. <functional> would cost every includer about 8,000 lines
// (its searchers bring <unordered_map>) for std::function alone.
//
// A lambda, a function pointer or a std::function converts to it (a null function
// pointer or an empty std::function gives an empty callback), and it converts to
// std::function in turn. Empty when default-constructed or set to nullptr; calling
// an empty callback throws usage_error. Like std::function, the callable must be
// copyable; it is called as a non-const lvalue.

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

#include <pqscope/errors.hpp>

namespace pqscope {

template <class Signature>
class callback;

namespace detail {
// Whether `f == nullptr` compiles: function pointers, std::function, callbacks.
template <class F, class = void>
struct nullable : std::false_type {};
template <class F>
struct nullable<F, std::void_t<decltype(std::declval<const F&>() == nullptr)>> : std::true_type {};
template <class F>
bool is_null(const F& f) noexcept {
  if constexpr (nullable<F>::value)
    return f == nullptr;
  else
    return false;
}

[[noreturn]] inline void empty_callback() { throw usage_error("an empty pqscope::callback was called"); }
}  // namespace detail

template <class R, class... Args>
class callback<R(Args...)> {
  // Small callables whose bytes can be copied (captures of a few references or
  // pointers, function pointers) live inside, as std::function keeps them; the
  // rest on the heap.
  union storage {
    void* heap;
    alignas(void*) unsigned char local[2 * sizeof(void*)];
  };
  template <class F>
  static constexpr bool is_local =
      std::conjunction_v<std::bool_constant<sizeof(F) <= sizeof(storage)>,
                         std::bool_constant<alignof(F) <= alignof(storage)>, std::is_trivially_copyable<F>,
                         std::is_trivially_destructible<F>>;

  struct ops {
    R (*call)(const storage&, Args&&...);
    void* (*clone)(const void*);  // nullptr: local, copied with the storage's bytes
    void (*destroy)(void*) noexcept;
  };

  template <class F>
  static F& target(const storage& s) noexcept {
    if constexpr (is_local<F>)
      // NOLINTNEXTLINE: the object lives in those bytes
      return *std::launder(reinterpret_cast<F*>(const_cast<unsigned char*>(s.local)));
    else
      return *static_cast<F*>(s.heap);
  }
  template <class F>
  static R call(const storage& s, Args&&... args) {
    if constexpr (std::is_void_v<R>)
      target<F>(s)(std::forward<Args>(args)...);
    else
      return target<F>(s)(std::forward<Args>(args)...);
  }
  template <class F>
  static void* clone(const void* p) {
    return new F(*static_cast<const F*>(p));
  }
  template <class F>
  static void destroy(void* p) noexcept {
    delete static_cast<F*>(p);
  }
  template <class F>
  static constexpr ops make_ops() noexcept {
    if constexpr (is_local<F>)
      return {&call<F>, nullptr, nullptr};
    else
      return {&call<F>, &clone<F>, &destroy<F>};
  }
  template <class F>
  static constexpr ops ops_for = make_ops<F>();

  template <class F>
  using accepts = std::enable_if_t<!std::is_same_v<std::decay_t<F>, callback> &&
                                   !std::is_member_pointer_v<std::decay_t<F>> &&
                                   std::is_copy_constructible_v<std::decay_t<F>> &&
                                   std::is_invocable_r_v<R, std::decay_t<F>&, Args...>>;

 public:
  using result_type = R;

  callback() noexcept = default;
  callback(std::nullptr_t) noexcept {}  // NOLINT(google-explicit-constructor): as std::function

  template <class F, class = accepts<F>>
  callback(F&& f) {  // NOLINT(google-explicit-constructor,bugprone-forwarding-reference-overload): as std::function
    using D = std::decay_t<F>;
    if (detail::is_null<D>(f)) return;
    if constexpr (is_local<D>)
      ::new (static_cast<void*>(s_.local)) D(std::forward<F>(f));
    else
      s_.heap = new D(std::forward<F>(f));
    ops_ = &ops_for<D>;
  }

  callback(const callback& other) : ops_(other.ops_) {
    if (ops_ != nullptr && ops_->clone != nullptr)
      s_.heap = ops_->clone(other.s_.heap);
    else
      s_ = other.s_;
  }
  callback(callback&& other) noexcept : s_(other.s_), ops_(std::exchange(other.ops_, nullptr)) {}
  callback& operator=(const callback& other) {
    if (this != &other) callback(other).swap(*this);
    return *this;
  }
  callback& operator=(callback&& other) noexcept {
    if (this != &other) callback(std::move(other)).swap(*this);
    return *this;
  }
  callback& operator=(std::nullptr_t) noexcept {
    reset();
    return *this;
  }
  template <class F, class = accepts<F>>
  callback& operator=(F&& f) {
    callback(std::forward<F>(f)).swap(*this);
    return *this;
  }
  ~callback() { reset(); }

  void swap(callback& other) noexcept {
    std::swap(s_, other.s_);
    std::swap(ops_, other.ops_);
  }

  [[nodiscard]] explicit operator bool() const noexcept { return ops_ != nullptr; }

  R operator()(Args... args) const {
    if (ops_ == nullptr) detail::empty_callback();
    return ops_->call(s_, std::forward<Args>(args)...);
  }

  friend bool operator==(const callback& c, std::nullptr_t) noexcept { return !c; }
  friend bool operator==(std::nullptr_t, const callback& c) noexcept { return !c; }
  friend bool operator!=(const callback& c, std::nullptr_t) noexcept { return static_cast<bool>(c); }
  friend bool operator!=(std::nullptr_t, const callback& c) noexcept { return static_cast<bool>(c); }

 private:
  void reset() noexcept {
    if (ops_ != nullptr && ops_->destroy != nullptr) ops_->destroy(s_.heap);
    ops_ = nullptr;
  }

  storage s_{};
  const ops* ops_ = nullptr;
};

template <class R, class... Args>
void swap(callback<R(Args...)>& a, callback<R(Args...)>& b) noexcept {
  a.swap(b);
}

}  // namespace pqscope
