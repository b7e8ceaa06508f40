// Compiled (never run) by tests/compile_fail.cmake, once per case below: with
// -DPQSCOPE_CASE_<name> the misuse must fail to compile with the message given, and
// with -DPQSCOPE_OK as well the correct code next to it must compile, so that the
// failure is the one meant and not a typo.
//
// case temporary_field_view: as<std::string_view>() on a field of a temporary result
// case temporary_field_optional_view: as<std::string_view>() on a field of a temporary result
// case temporary_row_view: as<std::string_view>() on a row of a temporary result
// case temporary_row_field_view: as<std::string_view>() on a field of a temporary result
// case temporary_result_iterator: deleted function
// case copy_reader_view: copy_reader::next<std::string_view>() would point into a buffer
// case temporary_struct_view: to<T>() of a row of a temporary result, where T has a std::string_view member
// case temporary_vector_view: to_vector<T>() of a temporary result, where T has a std::string_view member
// case enum_label_twice: enum_mapping_is_invalid
#include <pqscope/pqscope.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>

namespace shop {
struct named {
  std::int64_t id = 0;
  std::string name;
};
PQSCOPE_FIELDS(named, id, name)
struct viewed {
  std::int64_t id = 0;
  std::string_view name;
};
PQSCOPE_FIELDS(viewed, id, name)
enum class mood { sad, happy };
#if defined(PQSCOPE_CASE_enum_label_twice) && !defined(PQSCOPE_OK)
constexpr auto pqscope_enum(mood) { return pqscope::enum_labels<mood>({{mood::sad, "sad"}, {mood::happy, "sad"}}); }
#else
constexpr auto pqscope_enum(mood) { return pqscope::enum_labels<mood>({{mood::sad, "sad"}, {mood::happy, "happy"}}); }
#endif
}  // namespace shop

std::size_t use(pqscope::connection& conn, pqscope::copy_reader& reader);
std::size_t use(pqscope::connection& conn, pqscope::copy_reader& reader) {
  std::size_t n = 0;
  (void)reader;
#if defined(PQSCOPE_CASE_temporary_field_view)
#ifdef PQSCOPE_OK
  auto r = conn.execute("SELECT 'x'");
  n += r[0][0].as<std::string_view>().size();             // the result is named: views stay valid
  n += conn.execute("SELECT 'x'")[0][0].as<std::string>().size();  // a copy
  n += static_cast<std::size_t>(conn.execute("SELECT 1")[0][0].as<int>());
  auto f = conn.execute("SELECT 'x'")[0][0];              // a named field owns the result too
  n += f.as<std::string_view>().size();
#else
  n += conn.execute("SELECT 'x'")[0][0].as<std::string_view>().size();
#endif
#elif defined(PQSCOPE_CASE_temporary_field_optional_view)
#ifdef PQSCOPE_OK
  n += conn.execute("SELECT 'x' AS v")[0]["v"].as<std::optional<std::string>>()->size();
#else
  n += conn.execute("SELECT 'x' AS v")[0]["v"].as<std::optional<std::string_view>>()->size();
#endif
#elif defined(PQSCOPE_CASE_temporary_row_view)
#ifdef PQSCOPE_OK
  auto row = conn.execute("SELECT 1, 'x'")[0];  // a named row owns the result
  n += std::get<1>(row.as<int, std::string_view>()).size();
  n += std::get<1>(conn.execute("SELECT 1, 'x'")[0].as<int, std::string>()).size();
#else
  n += std::get<1>(conn.execute("SELECT 1, 'x'")[0].as<int, std::string_view>()).size();
#endif
#elif defined(PQSCOPE_CASE_temporary_row_field_view)
#ifdef PQSCOPE_OK
  auto row = conn.execute("SELECT 'x'")[0];
  n += row[0].as<std::string_view>().size();
#else
  n += conn.execute("SELECT 'x'")[0][0].as<std::string_view>().size();
#endif
#elif defined(PQSCOPE_CASE_temporary_result_iterator)
#ifdef PQSCOPE_OK
  for (const pqscope::row r : conn.execute("SELECT 'x'")) n += r[0].as<std::string_view>().size();
#else
  const auto it = conn.execute("SELECT 'x'").begin();  // would point to the freed result object
  (void)it;
#endif
#elif defined(PQSCOPE_CASE_copy_reader_view)
#ifdef PQSCOPE_OK
  if (auto row = reader.next<std::string, std::optional<std::string>>()) n += std::get<0>(*row).size();
#else
  if (auto row = reader.next<std::string_view>()) n += std::get<0>(*row).size();
#endif
#elif defined(PQSCOPE_CASE_temporary_struct_view)
#ifdef PQSCOPE_OK
  n += conn.execute("SELECT 1 AS id, 'x' AS name")[0].to<shop::named>().name.size();
  auto r = conn.execute("SELECT 1 AS id, 'x' AS name");
  n += r[0].to<shop::viewed>().name.size();  // the result is named: views stay valid
#else
  n += conn.execute("SELECT 1 AS id, 'x' AS name")[0].to<shop::viewed>().name.size();
#endif
#elif defined(PQSCOPE_CASE_temporary_vector_view)
#ifdef PQSCOPE_OK
  n += conn.execute("SELECT 1 AS id, 'x' AS name").to_vector<shop::named>(pqscope::by_position).size();
#else
  n += conn.execute("SELECT 1 AS id, 'x' AS name").to_vector<shop::viewed>(pqscope::by_position).size();
#endif
#elif defined(PQSCOPE_CASE_enum_label_twice)
  n += conn.query_value<shop::mood>("SELECT $1::text", shop::mood::happy) == shop::mood::happy ? 1 : 0;
#else
#error "compile with -DPQSCOPE_CASE_<name>"
#endif
  (void)conn;
  return n;
}
