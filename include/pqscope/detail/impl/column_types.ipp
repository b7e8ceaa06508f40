#pragma once
// The bodies of <pqscope/detail/column_types.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <array>
#include <cstddef>

#include <pqscope/detail/column_types.hpp>
#include <pqscope/errors.hpp>
#include <pqscope/params.hpp>

namespace pqscope::detail {

constexpr bool is_integer_type(unsigned oid) noexcept { return oid == 20 || oid == 21 || oid == 23; }
constexpr bool is_number_type(unsigned oid) noexcept {
  return is_integer_type(oid) || oid == 700 || oid == 701 || oid == 1700;
}

// The element type of each array type array_oid() knows (params.hpp), found once at
// compile time by running array_oid() over every element oid below 4000.
constexpr unsigned oid_scan_end = 4000;
constexpr std::size_t known_array_types() noexcept {
  std::size_t n = 0;
  for (unsigned e = 1; e < oid_scan_end; ++e) n += array_oid(e) != 0 ? 1 : 0;
  return n;
}
struct array_and_element {
  unsigned array, element;
};
constexpr std::array<array_and_element, known_array_types()> array_types = [] {
  std::array<array_and_element, known_array_types()> t{};
  std::size_t n = 0;
  for (unsigned e = 1; e < oid_scan_end; ++e)
    if (const unsigned a = array_oid(e); a != 0) t[n++] = {a, e};
  return t;
}();

constexpr unsigned array_element_oid(unsigned array) noexcept {
  for (const array_and_element& t : array_types)
    if (t.array == array) return t.element;
  return 0;
}

PQSCOPE_DECL bool column_type_fits(unsigned member_oid, unsigned column_oid) noexcept {
  if (member_oid == 0 || member_oid == column_oid) return true;
  if (const unsigned m = array_element_oid(member_oid); m != 0) {
    const unsigned c = array_element_oid(column_oid);
    return c != 0 && column_type_fits(m, c);
  }
  switch (member_oid) {
    case 20:
    case 21:
    case 23: return is_integer_type(column_oid);
    case 700:
    case 701:
    case 1700: return is_number_type(column_oid);
    case 1184: return column_oid == 1114;
    case 114: return column_oid == 3802;
    case 3802: return column_oid == 114;
    default: return false;
  }
}

PQSCOPE_DECL std::string type_name(unsigned oid) {
  if (const unsigned e = array_element_oid(oid); e != 0) return type_name(e) + "[]";
  switch (oid) {
    case 16: return "boolean";
    case 17: return "bytea";
    case 20: return "bigint";
    case 21: return "smallint";
    case 23: return "integer";
    case 25: return "text";
    case 114: return "json";
    case 700: return "real";
    case 701: return "double precision";
    case 1042: return "character";
    case 1043: return "character varying";
    case 1082: return "date";
    case 1114: return "timestamp without time zone";
    case 1184: return "timestamp with time zone";
    case 1186: return "interval";
    case 1700: return "numeric";
    case 2950: return "uuid";
    case 3802: return "jsonb";
    default: return "type oid " + std::to_string(oid);
  }
}

PQSCOPE_DECL void check_column_type(unsigned member_oid, unsigned column_oid, std::string_view column,
                                    std::string_view type, std::string_view member) {
  if (column_type_fits(member_oid, column_oid)) return;
  throw conversion_error("column \"" + std::string(column) + "\" is " + type_name(column_oid) + ", which " +
                         std::string(type) + "::" + std::string(member) + " (sent as " + type_name(member_oid) +
                         ") does not read; cast the column in the query or change the member's type");
}


PQSCOPE_DECL void map_columns(const PGresult* r, std::string_view type, const std::string_view* members,
                              const unsigned* member_oids, std::size_t n, bool by_position, int* out) {
  const int columns = r != nullptr ? PQnfields(r) : 0;
  std::string listed;
  for (std::size_t i = 0; i < n; ++i) listed += (i ? ", " : "") + std::string(members[i]);
  const auto column_list = [&] {
    std::string names;
    for (int c = 0; c < columns; ++c) names += (c ? ", " : "") + std::string(PQfname(r, c));
    return names;
  };
  const std::string who = "row.to<" + std::string(type) + ">()";
  if (by_position) {
    if (static_cast<std::size_t>(columns) != n)
      throw usage_error(who + " by position reads " + std::to_string(n) + " column(s) (" + listed +
                        ") but the result has " + std::to_string(columns) + " (" + column_list() + ")");
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<int>(i);
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      out[i] = -1;
      for (int c = 0; c < columns; ++c) {
        if (members[i] != PQfname(r, c)) continue;
        if (out[i] >= 0)
          throw usage_error(who + ": the result has two columns named \"" + std::string(members[i]) +
                            "\"; give them distinct names (AS) or read by position");
        out[i] = c;
      }
      if (out[i] < 0)
        throw usage_error(who + ": no column named \"" + std::string(members[i]) + "\" for " + std::string(type) +
                          "::" + std::string(members[i]) + " (columns: " + column_list() + ")");
    }
    const auto unused = [&](int c) {
      return usage_error(who + ": the column \"" + std::string(PQfname(r, c)) + "\" fills no member (" +
                         std::string(type) + " lists " + listed + "); leave it out of the query, or read by position");
    };
    for (int c = 0; c < columns; ++c) {
      bool used = false;
      for (std::size_t i = 0; i < n && !used; ++i) used = out[i] == c;
      if (!used) throw unused(c);
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    check_column_type(member_oids[i], PQftype(r, out[i]), PQfname(r, out[i]), type, members[i]);
}

}  // namespace pqscope::detail
