#pragma once
// Values in and out of PostgreSQL's text format, and the customization point.
//
// To pass or read a type of your own, specialize pqscope::value_traits:
//
//   template <> struct pqscope::value_traits<money> {
//     static constexpr unsigned oid = 0;                     // optional: parameter type, 0 = let the server infer
//     static std::string to_text(const money& m);            // for parameters
//     static money from_text(std::string_view text);         // for result fields
//   };
//
// Either function may be left out if that direction is not needed. Throw
// pqscope::conversion_error from from_text for text you cannot parse. NULL is
// handled by the library: use std::optional<money>.

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include <pqscope/errors.hpp>

namespace pqscope {

template <class T, class Enable = void>
struct value_traits;  // no definition: a type without traits is a compile error naming value_traits<T>

template <>
struct value_traits<bool> {
  static constexpr unsigned oid = 16;
  static std::string to_text(bool v) { return v ? "t" : "f"; }
  static bool from_text(std::string_view s) {
    if (s == "t" || s == "true") return true;
    if (s == "f" || s == "false") return false;
    throw conversion_error("cannot read \"" + std::string(s) + "\" as bool (expected t or f)");
  }
};

// All integer types except plain char (a character, not a number: pass std::string(1, c)
// or an int) and bool.
template <class T>
struct value_traits<T, std::enable_if_t<std::is_integral_v<T> && sizeof(T) <= 8 && !std::is_same_v<T, bool> &&
                                        !std::is_same_v<T, char>>> {
  // The narrowest PostgreSQL type that holds every value of T; uint64 needs numeric.
  static constexpr unsigned oid = sizeof(T) < 4 && std::is_signed_v<T> ? 21                // int2
                                  : (sizeof(T) < 4 || (sizeof(T) == 4 && std::is_signed_v<T>)) ? 23  // int4
                                  : (sizeof(T) == 8 && std::is_unsigned_v<T>) ? 1700       // numeric
                                                                               : 20;        // int8
  static std::string to_text(T v) {
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v);
    return std::string(buf, r.ptr);
  }
  static T from_text(std::string_view s) {
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc::result_out_of_range ||
        (r.ec == std::errc() && r.ptr == s.data() + s.size())) {
      if (r.ec == std::errc()) return v;
      throw conversion_error("value " + std::string(s) + " does not fit in the requested " +
                             std::to_string(sizeof(T) * 8) + "-bit " +
                             (std::is_signed_v<T> ? "signed" : "unsigned") + " integer (range " +
                             std::to_string(+std::numeric_limits<T>::min()) + ".." +
                             std::to_string(+std::numeric_limits<T>::max()) + "); read a wider type");
    }
    throw conversion_error("cannot read \"" + std::string(s) + "\" as an integer");
  }
};

template <class T>
struct value_traits<T, std::enable_if_t<std::is_floating_point_v<T>>> {
  static constexpr unsigned oid = sizeof(T) == 4 ? 700 : 701;  // float4 / float8
  static std::string to_text(T v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "Infinity" : "-Infinity";
    char buf[64];
    auto r = std::to_chars(buf, buf + sizeof buf, v);  // shortest text that reads back exactly
    return std::string(buf, r.ptr);
  }
  static T from_text(std::string_view s) {
    if (s == "NaN") return std::numeric_limits<T>::quiet_NaN();
    if (s == "Infinity") return std::numeric_limits<T>::infinity();
    if (s == "-Infinity") return -std::numeric_limits<T>::infinity();
    T v{};
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    if (r.ec == std::errc() && r.ptr == s.data() + s.size()) return v;
    if (r.ec == std::errc::result_out_of_range)
      throw conversion_error("value " + std::string(s) + " is out of range for a " +
                             std::to_string(sizeof(T) * 8) + "-bit floating-point number");
    throw conversion_error("cannot read \"" + std::string(s) + "\" as a floating-point number");
  }
};

template <>
struct value_traits<std::string> {
  static constexpr unsigned oid = 0;  // unknown: the server infers text, varchar, json, ...
  static const std::string& to_text(const std::string& v) { return v; }
  static std::string from_text(std::string_view s) { return std::string(s); }
};

// A view into the result's memory: valid while the result (or a row or field of it) lives.
template <>
struct value_traits<std::string_view> {
  static constexpr unsigned oid = 0;
  static std::string_view to_text(std::string_view v) { return v; }
  static std::string_view from_text(std::string_view s) { return s; }
};

namespace detail {

template <class T, class = void>
struct has_to_text : std::false_type {};
template <class T>
struct has_to_text<T, std::void_t<decltype(value_traits<T>::to_text(std::declval<const T&>()))>>
    : std::true_type {};

template <class T, class = void>
struct has_from_text : std::false_type {};
template <class T>
struct has_from_text<T, std::void_t<decltype(value_traits<T>::from_text(std::string_view{}))>>
    : std::true_type {};

template <class T, class = void>
struct traits_oid : std::integral_constant<unsigned, 0> {};
template <class T>
struct traits_oid<T, std::void_t<decltype(value_traits<T>::oid)>>
    : std::integral_constant<unsigned, value_traits<T>::oid> {};

template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};

// Parameters of one statement, in the form libpq takes them. Values that are not
// already NUL-terminated strings are copied into `storage_`, which of() reserves
// up front (one string per parameter at most), so that it never reallocates and
// the pointers in `values_` stay valid.
class param_list {
 public:
  param_list() = default;
  param_list(const param_list&) = delete;
  param_list& operator=(const param_list&) = delete;
  param_list(param_list&&) = default;
  param_list& operator=(param_list&&) = default;
  ~param_list() = default;

  template <class... Ts>
  static param_list of(const Ts&... vs) {
    param_list p;
    p.storage_.reserve(sizeof...(Ts));
    p.values_.reserve(sizeof...(Ts));
    p.types_.reserve(sizeof...(Ts));
    (p.add(vs), ...);
    return p;
  }

  template <class T>
  void add(const T& v) {
    using U = std::decay_t<T>;
    if constexpr (std::is_same_v<U, std::nullptr_t> || std::is_same_v<U, std::nullopt_t>) {
      push_null(0);
    } else if constexpr (is_optional<U>::value) {
      if (v)
        add(*v);
      else
        push_null(traits_oid<typename U::value_type>::value);
    } else if constexpr (std::is_array_v<T> && std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>) {
      // a string literal or char buffer: never null; read up to its first NUL, and
      // never past its end when it has none
      const std::size_t n = ::strnlen(v, std::extent_v<T>);
      push_text(std::string_view(v, n), 0, /*terminated=*/n < std::extent_v<T>);
    } else if constexpr (std::is_same_v<U, const char*> || std::is_same_v<U, char*>) {
      if (v == nullptr)
        push_null(0);
      else
        push_text(std::string_view(v), 0, /*terminated=*/true);
    } else if constexpr (std::is_same_v<U, std::string>) {
      push_text(v, 0, true);
    } else if constexpr (std::is_same_v<U, char>) {
      static_assert(!std::is_same_v<U, char>,
                    "pqscope: pass a char as std::string(1, c) (text) or as an int (number)");
    } else {
      static_assert(has_to_text<U>::value,
                    "pqscope: no value_traits<T>::to_text for this parameter type; specialize "
                    "pqscope::value_traits<T> (see params.hpp)");
      decltype(auto) text = value_traits<U>::to_text(v);
      using R = std::decay_t<decltype(text)>;
      if constexpr (std::is_same_v<R, std::string>)
        push_owned(std::string(text), traits_oid<U>::value);
      else
        push_text(std::string_view(text), traits_oid<U>::value, false);
    }
  }

  [[nodiscard]] int size() const noexcept { return static_cast<int>(values_.size()); }
  [[nodiscard]] const char* const* values() const noexcept { return values_.empty() ? nullptr : values_.data(); }
  [[nodiscard]] const unsigned* types() const noexcept { return types_.empty() ? nullptr : types_.data(); }

 private:
  void push_null(unsigned oid) {
    values_.push_back(nullptr);
    types_.push_back(oid);
  }
  void check_nul(std::string_view s) const {
    if (std::memchr(s.data(), '\0', s.size()) != nullptr)
      throw usage_error("parameter $" + std::to_string(values_.size() + 1) +
                        " contains a NUL byte, which PostgreSQL text cannot hold; strip it, or send "
                        "binary data as hex text into a bytea column (decode($1, 'hex'))");
  }
  void push_text(std::string_view s, unsigned oid, bool terminated) {
    check_nul(s);
    if (terminated) {
      values_.push_back(s.data());
      types_.push_back(oid);
    } else {
      push_owned(std::string(s), oid);
    }
  }
  void push_owned(std::string s, unsigned oid) {
    check_nul(s);
    if (storage_.size() == storage_.capacity()) throw usage_error("param_list: storage not reserved");  // never
    storage_.push_back(std::move(s));
    values_.push_back(storage_.back().c_str());
    types_.push_back(oid);
  }

  std::vector<std::string> storage_;
  std::vector<const char*> values_;
  std::vector<unsigned> types_;
};

}  // namespace detail
}  // namespace pqscope
