#pragma once
// The template bodies of row.to<T>() and result.to_vector<T>() (result.hpp): members
// listed with PQSCOPE_FIELDS (fields.hpp) filled from a row.

#include <array>
#include <cstddef>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include <pqscope/detail/column_types.hpp>
#include <pqscope/fields.hpp>
#include <pqscope/result.hpp>

namespace pqscope {
namespace detail {

// What the check compares a column's type with: the member's parameter type.
template <class M>
constexpr unsigned member_oid() noexcept {
  return traits_oid<typename optional_inner<M>::type>::value;
}

// The column of each listed member of T in r, matched and type-checked (map_columns).
template <class T>
auto plan_columns(const PGresult* r, bool by_position) {
  static_assert(std::is_default_constructible_v<T>,
                "pqscope: row.to<T>() fills the members of a default-constructed T");
  constexpr auto list = fields_of<T>();
  constexpr std::size_t n = std::tuple_size_v<decltype(list.members)>;
  const auto names = std::apply([](const auto&... f) { return std::array<std::string_view, n>{f.name...}; },
                                list.members);
  const auto oids = std::apply(
      [](const auto&... f) { return std::array<unsigned, n>{member_oid<typename std::decay_t<decltype(f)>::type>()...}; },
      list.members);
  std::array<int, n> columns{};
  map_columns(r, list.type_name, names.data(), oids.data(), n, by_position, columns.data());
  return columns;
}

}  // namespace detail

template <class T, std::size_t N>
T row::fill(const std::array<int, N>& columns) const {
  constexpr auto list = detail::fields_of<T>();
  T out{};
  std::size_t i = 0;
  std::apply(
      [&](const auto&... f) {
        ((out.*(f.member) =
              (*this)[static_cast<std::size_t>(columns[i++])].template as<typename std::decay_t<decltype(f)>::type>()),
         ...);
      },
      list.members);
  return out;
}

template <class T>
T row::to() const {
  return fill<T>(detail::plan_columns<T>(res_.get(), false));
}

template <class T>
T row::to(by_position_t) const {
  return fill<T>(detail::plan_columns<T>(res_.get(), true));
}

template <class T>
std::vector<T> result::collect(bool by_position) const {
  const auto columns = detail::plan_columns<T>(get(), by_position);
  std::vector<T> out;
  out.reserve(size());
  for (std::size_t i = 0; i < size(); ++i) out.push_back((*this)[i].template fill<T>(columns));
  return out;
}

}  // namespace pqscope
