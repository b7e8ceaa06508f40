#pragma once
// pqscope 0.1.0, single-header edition: the nlohmann/json adapter; needs pqscope/pqscope.hpp beside it.
//
// Generated from include/ by scripts/amalgamate.py. DO NOT EDIT: changes here
// are lost. Edit the headers in include/ and regenerate with `scripts/dev.sh amalgamate`.

// nlohmann::json and nlohmann::ordered_json as PostgreSQL json / jsonb values, for
// parameters, results, arrays (std::vector<nlohmann::json> as jsonb[]) and COPY.
// Not part of <pqscope/pqscope.hpp>, which keeps no dependency: include this header
// where you want the adapter (it needs nlohmann/json 3.x, Debian's nlohmann-json3-dev).
// Without it, json and jsonb read and write as std::string, the server's text unchanged
// (an untyped parameter: the column's type applies, or write $1::jsonb in an expression).
//
// Parameter types, chosen so that the parameter works in the usual places:
//   nlohmann::json         jsonb. Goes into json and jsonb columns (PostgreSQL casts
//                          jsonb to json on assignment) and works with every json
//                          operator: $1 -> 'k', $1 @> '{"k": 1}', $1 ? 'k'. A json
//                          parameter could not take @> or ? (they exist for jsonb
//                          only), and an untyped one is ambiguous for ->. Its keys are
//                          sorted (std::map), so jsonb's reordering loses nothing.
//   nlohmann::ordered_json json. Its key order is what it is for, and jsonb would reorder
//                          the keys: as json, a json column keeps the text as sent. In a
//                          jsonb-only operator, cast it: $1::jsonb @> ...
//
// Exact in both directions (equal as jsonb compares values), or a conversion_error:
//   - Numbers: nlohmann holds int64, uint64 or double. Reading, a number whose double
//     nlohmann would write back as another value is a conversion_error: more digits
//     than a double keeps (0.30000000000000001), an integer beyond uint64
//     (123456789012345678901234567890, which nlohmann would make 1.2345678901234568e+29),
//     1e-400 (it would make 0.0); so is one beyond double's range (1e400, nlohmann's
//     out_of_range 406). A number written the shortest way that reads back as its
//     double (as nlohmann, JavaScript and Python write them), or with at most 15
//     significant digits within 2.3e-308 to 1.7e308 in size, reads exactly. Read a document with other numbers as
//     std::string, or round them in SQL. Sending, a NaN or infinite double (nlohmann
//     would write null) and a binary value are refused.
//     Equal means equal as numbers: jsonb's 1.50 reads as 1.5; and jsonb writes no
//     exponents, so the double 1e17 comes back from jsonb as the integer
//     100000000000000000 (== to it, but no longer is_number_float()).
//     A number is checked as it is read, so one in a member that a repeated key
//     replaces later counts too.
//   - Strings must be valid UTF-8 (nlohmann's type_error 316 otherwise). "\u0000" in a
//     string: a json value keeps it, jsonb refuses it (SQLSTATE 22P05, "unsupported
//     Unicode escape sequence"); so a nlohmann::json holding a NUL character cannot be
//     sent (it is jsonb), an ordered_json can, into a json column. A json column may
//     also hold a lone surrogate escape ("\ud800"), which nlohmann refuses to read.
//   - Depth: the reader here is iterative and nlohmann destroys documents iteratively,
//     so reading takes any depth; but nlohmann's dump() (used to send), copy and ==
//     recurse, a frame per level: on an 8 MB stack, a copy of some 10,000 levels
//     overflows it unoptimized, 65,000 at -O2. PostgreSQL refuses a document deeper than
//     its max_stack_depth allows (about 20,000 levels at the default 2MB, SQLSTATE 54001).
//   - What a json column keeps that nlohmann does not: whitespace, and for
//     nlohmann::json the key order; for duplicate keys the last one wins, as in jsonb.
// The connection's client_encoding must be UTF8 (the default for a UTF8 database).

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqscope/pqscope.hpp>  // the single header beside this one

namespace pqscope {
namespace detail {

// The value of a JSON number's text, so that two texts compare as numbers:
// 0.digits x 10^exponent, digits without leading or trailing zeros (none for zero).
struct json_number_value {
  bool negative = false;
  std::string digits;
  long long exponent = 0;

  friend bool operator==(const json_number_value& a, const json_number_value& b) {
    return a.negative == b.negative && a.exponent == b.exponent && a.digits == b.digits;
  }
};

// `text` is valid JSON number syntax (nlohmann checked it). Its decimal point may be
// the C locale's: nlohmann's lexer puts that in the token it hands over.
inline json_number_value json_number_of(std::string_view text) {
  json_number_value v;
  std::size_t i = 0;
  if (i < text.size() && text[i] == '-') {
    v.negative = true;
    ++i;
  }
  long long whole_digits = 0;  // before the point
  bool after_point = false;
  for (; i < text.size() && text[i] != 'e' && text[i] != 'E'; ++i) {
    if (text[i] < '0' || text[i] > '9') {
      after_point = true;
      continue;
    }
    if (!after_point) ++whole_digits;
    if (text[i] == '0' && v.digits.empty()) {
      --whole_digits;  // a leading zero moves the point, nothing else
      continue;
    }
    v.digits += text[i];
  }
  long long exponent = 0;
  if (i < text.size()) {
    bool negative = false;
    if (++i < text.size() && (text[i] == '+' || text[i] == '-')) negative = text[i++] == '-';
    // Capped: far beyond any double, and the other side of a comparison never gets there.
    for (; i < text.size(); ++i) exponent = std::min(exponent * 10 + (text[i] - '0'), 1'000'000'000'000LL);
    if (negative) exponent = -exponent;
  }
  while (!v.digits.empty() && v.digits.back() == '0') v.digits.pop_back();
  if (v.digits.empty()) return {};  // zero, whatever its sign
  v.exponent = whole_digits + exponent;
  return v;
}

// Builds the document as nlohmann's own parser does, and refuses a number whose double
// nlohmann would write back as another value. Iterative: any depth.
template <class Json>
class json_reader {
 public:
  using number_integer_t = typename Json::number_integer_t;
  using number_unsigned_t = typename Json::number_unsigned_t;
  using number_float_t = typename Json::number_float_t;
  using string_t = typename Json::string_t;
  using binary_t = typename Json::binary_t;

  explicit json_reader(Json& root) : root_(root) {}

  bool null() { return put(Json(nullptr)); }
  bool boolean(bool v) { return put(Json(v)); }
  bool number_integer(number_integer_t v) { return put(Json(v)); }
  bool number_unsigned(number_unsigned_t v) { return put(Json(v)); }
  bool number_float(number_float_t v, const string_t& text) {
    Json number(v);
    std::string written = number.dump();
    if (json_number_of(written) == json_number_of(text)) return put(std::move(number));
    std::string shown(text);
    for (char& c : shown)  // the locale's decimal point, back to JSON's
      if (c != '-' && c != '+' && c != 'e' && c != 'E' && (c < '0' || c > '9')) c = '.';
    error_ = "nlohmann::json cannot hold the number " + quote_value(shown) + " exactly: it would hold " + written +
             (v == 0 ? " (the number is below double's range)" : "") +
             "; read the document as std::string, or round the number in SQL";
    return false;
  }
  bool string(string_t& v) { return put(Json(std::move(v))); }
  bool binary(binary_t& v) { return put(Json::binary(std::move(v))); }
  bool start_object(std::size_t /*elements*/) { return open(Json::object()); }
  bool key(string_t& k) {
    key_ = std::move(k);
    return true;
  }
  bool end_object() { return close(); }
  bool start_array(std::size_t /*elements*/) { return open(Json::array()); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t /*position*/, const std::string& /*last_token*/,
                   const typename Json::exception& e) {
    error_ = e.what();
    return false;
  }

  [[nodiscard]] const std::string& error() const noexcept { return error_; }

 private:
  // Into the innermost open array or object. Only that one grows, so the pointers to
  // the open ones (each the last element of its parent) stay valid.
  Json* place(Json&& v) {
    if (open_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json& parent = *open_.back();
    if (parent.is_array()) {
      parent.push_back(std::move(v));
      return &parent.back();
    }
    Json& slot = parent[key_];  // a repeated key: the last value wins, as in jsonb
    slot = std::move(v);
    return &slot;
  }
  bool put(Json&& v) {
    place(std::move(v));
    return true;
  }
  bool open(Json&& container) {
    open_.push_back(place(std::move(container)));
    return true;
  }
  bool close() {
    open_.pop_back();
    return true;
  }

  Json& root_;
  std::vector<Json*> open_;
  string_t key_;
  std::string error_;
};

// What dump() would silently change: a NaN or infinity (written as null) and binary
// values (written as an object). Iterative, like the reader.
template <class Json>
void check_json_sendable(const Json& doc) {
  std::vector<const Json*> todo{&doc};
  while (!todo.empty()) {
    const Json& v = *todo.back();
    todo.pop_back();
    if (v.is_number_float()) {
      if (!std::isfinite(v.template get<typename Json::number_float_t>()))
        throw conversion_error("cannot send a JSON document holding the number " +
                               std::to_string(v.template get<typename Json::number_float_t>()) +
                               ": JSON has no NaN or infinity (nlohmann would write null)");
    } else if (v.is_binary()) {
      throw conversion_error("cannot send a JSON document holding a binary value: JSON has none");
    } else if (v.is_structured()) {
      for (const Json& e : v) todo.push_back(&e);
    }
  }
}

template <class Json, unsigned Oid>
struct nlohmann_value_traits {
  static constexpr unsigned oid = Oid;

  static std::string to_text(const Json& doc) {
    check_json_sendable(doc);
    try {
      return doc.dump();
    } catch (const typename Json::type_error& e) {
      if (e.id != 316) throw;
      throw conversion_error(std::string("cannot send a JSON document with a string that is not valid UTF-8: ") +
                             e.what());
    }
  }

  static Json from_text(std::string_view text) {
    Json doc;
    json_reader<Json> reader(doc);
    if (!Json::sax_parse(text.data(), text.data() + text.size(), &reader))
      throw conversion_error("cannot read " + quote_value(text) + " as JSON: " + reader.error());
    return doc;
  }
};

}  // namespace detail

template <>
struct value_traits<nlohmann::json> : detail::nlohmann_value_traits<nlohmann::json, 3802> {};  // jsonb

template <>
struct value_traits<nlohmann::ordered_json> : detail::nlohmann_value_traits<nlohmann::ordered_json, 114> {};  // json

}  // namespace pqscope
