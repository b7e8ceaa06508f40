#pragma once
// Whether a column's type can fill a member of a given type (row.to<T>()), and the
// names that an error about it shows.

#include <cstddef>
#include <string>
#include <string_view>

#include <libpq-fe.h>

#include <pqscope/detail/config.hpp>

namespace pqscope::detail {

// member_oid is value_traits<M>::oid (0: the member reads any column's text, as
// std::string and enums do). Integers read any integer column (the value is
// range-checked when read), floating point and numeric any number column, a time point
// timestamp as well as timestamptz, json and jsonb each other; arrays by their elements.
PQSCOPE_DECL bool column_type_fits(unsigned member_oid, unsigned column_oid) noexcept;

// "integer", "text", ... for the built-in types pqscope knows; "type oid N" otherwise.
PQSCOPE_DECL std::string type_name(unsigned oid);

// conversion_error unless column_type_fits: names the column, its type, the member and its type.
PQSCOPE_DECL void check_column_type(unsigned member_oid, unsigned column_oid, std::string_view column,
                                    std::string_view type, std::string_view member);

// For each of the n members (names and oids), the column that fills it, into out:
// the column of the same name, or the i-th with by_position. usage_error when a member
// has no column, a column no member or two columns one name (or the counts differ,
// by position); then check_column_type for each.
PQSCOPE_DECL void map_columns(const PGresult* r, std::string_view type, const std::string_view* members,
                              const unsigned* member_oids, std::size_t n, bool by_position, int* out);

}  // namespace pqscope::detail

#ifdef PQSCOPE_BODIES
#include <pqscope/detail/impl/column_types.ipp>
#endif
