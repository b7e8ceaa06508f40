#pragma once
// A C++ enum mapped to a PostgreSQL enum type in one declaration, beside the enum (in
// its namespace, where argument-dependent lookup finds it):
//
//   enum class mood { sad, ok, happy };
//   constexpr auto pqscope_enum(mood) {
//     return pqscope::enum_labels<mood>({{mood::sad, "sad"}, {mood::ok, "ok"}, {mood::happy, "happy"}});
//   }
//
// The enum then goes wherever a value does (parameters, results, arrays, COPY) as its
// label. Labels are checked when the program is compiled: each 1 to 63 bytes (the
// server's limit), no label or value twice. A label the mapping lacks, read from the
// server, is a conversion_error naming it; a value it lacks, sent, is one too.

#include <cstddef>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>

namespace pqscope {

template <class E>
struct enum_label {
  E value;
  std::string_view label;
};

template <class E, std::size_t N>
struct enum_mapping {
  enum_label<E> entries[N];

  [[nodiscard]] constexpr const std::string_view* find(E v) const noexcept {
    for (const auto& e : entries)
      if (e.value == v) return &e.label;
    return nullptr;
  }
  [[nodiscard]] constexpr const E* find(std::string_view label) const noexcept {
    for (const auto& e : entries)
      if (e.label == label) return &e.value;
    return nullptr;
  }
};

namespace detail {
// Not constexpr on purpose: reaching it while a mapping is evaluated at compile time
// makes the program ill-formed, with this name in the compiler's message.
inline void enum_mapping_is_invalid(const char* /*why*/) {}
}  // namespace detail

template <class E, std::size_t N>
constexpr enum_mapping<E, N> enum_labels(const enum_label<E> (&entries)[N]) {
  static_assert(std::is_enum_v<E>, "pqscope: enum_labels<E> maps an enum type");
  enum_mapping<E, N> m{};
  for (std::size_t i = 0; i < N; ++i) {
    const std::string_view l = entries[i].label;
    // PostgreSQL's names end at NAMEDATALEN - 1 = 63 bytes.
    if (l.empty() || l.size() > 63) detail::enum_mapping_is_invalid("a label must have 1 to 63 bytes");
    for (std::size_t j = 0; j < i; ++j) {
      if (entries[j].label == l) detail::enum_mapping_is_invalid("a label is mapped twice");
      if (entries[j].value == entries[i].value) detail::enum_mapping_is_invalid("a value is mapped twice");
    }
    m.entries[i] = entries[i];
  }
  return m;
}

namespace detail {
template <class E, class = void>
struct has_enum_mapping : std::false_type {};
template <class E>
struct has_enum_mapping<E, std::void_t<decltype(pqscope_enum(std::declval<E>()))>> : std::true_type {};
}  // namespace detail

template <class E>
struct value_traits<E, std::enable_if_t<std::is_enum_v<E> && detail::has_enum_mapping<E>::value>> {
  // Evaluated once, at compile time: an invalid mapping does not compile.
  static constexpr auto mapping = pqscope_enum(E{});
  // An enum type of the user's has no fixed oid: the server takes the type from the
  // context (a column, a cast such as $1::mood, or $1::mood[] for an array).
  static constexpr unsigned oid = 0;

  static std::string_view to_text(E v) {
    if (const std::string_view* l = mapping.find(v)) return *l;
    throw conversion_error("the enum value " + std::to_string(static_cast<std::underlying_type_t<E>>(v)) +
                           " has no label in its pqscope_enum mapping");
  }
  static E from_text(std::string_view s) {
    if (const E* v = mapping.find(s)) return *v;
    std::string known;
    for (const auto& e : mapping.entries) known += (known.empty() ? "" : ", ") + std::string(e.label);
    throw conversion_error("the label " + detail::quote_value(s) + " is not in the enum's pqscope_enum mapping (" +
                           known + ")");
  }
};

}  // namespace pqscope
