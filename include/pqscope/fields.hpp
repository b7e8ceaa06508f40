#pragma once
// Rows into structs. One declaration beside a struct (in its namespace, where
// argument-dependent lookup finds it) lists the members a row fills:
//
//   struct order { std::int64_t id; std::string customer; pqscope::numeric total; };
//   PQSCOPE_FIELDS(order, id, customer, total)
//
// Then row.to<order>() fills each member from the column of the same name, and
// row.to<order>(pqscope::by_position) from the columns in the listed order;
// result.to_vector<order>() does every row. Each column's type is checked against the
// member's before a value is read (an int member does not read a text column), and
// every error names the column. Members are read as field::as reads them: a NULL
// needs a std::optional member.

#include <cstddef>
#include <optional>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>

#include <pqscope/detail/for_each_macro.hpp>

namespace pqscope {

// Selects the positional mapping: row.to<T>(pqscope::by_position).
struct by_position_t {
  explicit constexpr by_position_t() = default;
};
inline constexpr by_position_t by_position{};

namespace detail {

template <class T, class M>
struct member_field {
  using type = M;
  std::string_view name;
  M T::*member;
};

template <class T, class M>
constexpr member_field<T, M> make_member_field(std::string_view name, M T::*member) noexcept {
  return {name, member};
}

template <class... Fields>
struct field_list {
  std::string_view type_name;
  std::tuple<Fields...> members;
};

template <class... Fields>
constexpr field_list<Fields...> make_field_list(std::string_view type_name, Fields... f) noexcept {
  return {type_name, std::tuple<Fields...>(f...)};
}

template <class T, class = void>
struct has_fields : std::false_type {};
template <class T>
struct has_fields<T, std::void_t<decltype(pqscope_fields(static_cast<const T*>(nullptr)))>> : std::true_type {};

// Whether a listed member is a view into the result (row_of_temporary refuses those).
template <class M>
constexpr bool is_view_member = std::is_same_v<M, std::string_view> || std::is_same_v<M, std::optional<std::string_view>>;
template <class List>
struct list_holds_view : std::false_type {};
template <class... Fields>
struct list_holds_view<field_list<Fields...>> : std::bool_constant<(is_view_member<typename Fields::type> || ...)> {};
template <class T, class = void>
struct fields_hold_view : std::false_type {};
template <class T>
struct fields_hold_view<T, std::enable_if_t<has_fields<T>::value>>
    : list_holds_view<decltype(pqscope_fields(static_cast<const T*>(nullptr)))> {};

template <class T>
constexpr auto fields_of() {
  static_assert(has_fields<T>::value,
                "pqscope: row.to<T>() needs the members of T listed beside it: PQSCOPE_FIELDS(T, member, ...)");
  return pqscope_fields(static_cast<const T*>(nullptr));
}

}  // namespace detail
}  // namespace pqscope

#define PQSCOPE_DETAIL_MEMBER_FIELD(Type, member) ::pqscope::detail::make_member_field(#member, &Type::member)

// Lists Type's members for row.to<Type>(), in the order by_position reads them.
#define PQSCOPE_FIELDS(Type, ...)                                                                            \
  [[maybe_unused]] constexpr auto pqscope_fields(const Type*) noexcept {                                     \
    return ::pqscope::detail::make_field_list(                                                               \
        #Type, PQSCOPE_DETAIL_FOR_EACH(PQSCOPE_DETAIL_MEMBER_FIELD, Type, __VA_ARGS__));                     \
  }
