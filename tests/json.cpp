#define BOOST_TEST_MODULE json
#include <boost/test/unit_test.hpp>

// json and jsonb against the server's own reading and rendering, seeded and random:
// std::string carries the server's text unchanged; nlohmann::json and ordered_json
// (<pqscope/nlohmann_json.hpp>) read every text the server reads, to the same value,
// or refuse it with conversion_error where nlohmann could not hold it exactly; and
// documents go through parameters, results, arrays, NULL and COPY unchanged, blocking
// and asio, on every target.
//
// PQSCOPE_TYPES_SEED sets the seed (printed); PQSCOPE_TYPES_TEXTS the documents and
// texts per check (default 1000).

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iostream>
#include <iterator>
#include <limits>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>
#include <pqscope/nlohmann_json.hpp>

#include "support/asio_run.hpp"
#include "support/seeded.hpp"
#include "support/servers.hpp"

using pqtest::awaitable;
using pqtest::for_each_target;
using pqtest::use_awaitable;
using json = nlohmann::json;
using ordered_json = nlohmann::ordered_json;

namespace {

std::uint64_t seed() { return pqtest::types_seed("json"); }
int documents() { return pqtest::types_count(1000); }

// A document in a failure message: its start.
template <class Json>
std::string shown(const Json& j) {
  return pqscope::detail::quote_value(j.dump());
}

template <class Json>
Json read(std::string_view text) {
  return pqscope::value_traits<Json>::from_text(text);
}

// Whether f threw conversion_error (its what() into *why); any other exception goes on.
bool conversion_refused(const std::function<void()>& f, std::string* why = nullptr) {
  try {
    f();
  } catch (const pqscope::conversion_error& e) {
    if (why != nullptr) *why = e.what();
    return true;
  }
  return false;
}

// ---- random documents --------------------------------------------------------------

void append_utf8(std::string& s, char32_t c) {
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
}

// Any code point but NUL (jsonb refuses it: a test of its own) and the surrogates.
char32_t random_code_point(std::mt19937_64& rng) {
  switch (rng() % 8) {
    case 0: return U"\"\\/\b\f\n\r\t"[rng() % 8];
    case 1: return rng() % 2 == 0 ? static_cast<char32_t>(1 + rng() % 0x1F) : 0x7F;  // control characters
    case 2: return static_cast<char32_t>(0x80 + rng() % (0x800 - 0x80));
    case 3: {
      char32_t c = 0;
      do c = static_cast<char32_t>(0x800 + rng() % (0x10000 - 0x800));
      while (c >= 0xD800 && c <= 0xDFFF);
      return c;
    }
    case 4: return static_cast<char32_t>(0x10000 + rng() % (0x110000 - 0x10000));  // surrogate pairs when escaped
    case 5: return U"\uFEFF\u2028\uFFFF\U0010FFFF\U0001F600"[rng() % 5];
    default: return static_cast<char32_t>(0x20 + rng() % (0x7F - 0x20));
  }
}

std::string random_string(std::mt19937_64& rng, std::size_t max_length) {
  std::string s;
  const std::size_t n = rng() % (max_length + 1);
  for (std::size_t i = 0; i < n; ++i) append_utf8(s, random_code_point(rng));
  return s;
}

double random_double(std::mt19937_64& rng) {
  static const double picked[] = {0.0, -0.0, 0.1, 1.0, 1.5, -2.5e-3, 1e300, -1e-300, 5e-324,
                                  2.2250738585072014e-308, 1.7976931348623157e308, 1e17, 123456.789, 3.0e15};
  if (rng() % 3 == 0) return picked[rng() % std::size(picked)];
  for (;;) {  // any finite double: nlohmann writes it the shortest way that reads back
    const std::uint64_t bits = rng();
    double d = 0;
    std::memcpy(&d, &bits, sizeof d);
    if (std::isfinite(d)) return d;
  }
}

ordered_json random_number(std::mt19937_64& rng) {
  switch (rng() % 8) {
    case 0: {
      static const std::int64_t edges[] = {0, -1, 1, std::numeric_limits<std::int64_t>::min(),
                                           std::numeric_limits<std::int64_t>::max()};
      return edges[rng() % std::size(edges)];
    }
    case 1: return rng() % 2 == 0 ? std::numeric_limits<std::uint64_t>::max()
                                  : (std::uint64_t{1} << 63) | (rng() & 0x7FFFFFFFFFFFFFFF);
    case 2: return static_cast<std::int64_t>(rng());
    case 3: return static_cast<std::int64_t>(rng() % 2000) - 1000;
    default: return random_double(rng);
  }
}

// Key order as inserted: an ordered_json, so that the json column's key order is tested.
// A document is mostly an object or an array; what is inside, anything.
ordered_json random_doc(std::mt19937_64& rng, int depth, bool top = true) {
  const unsigned r = static_cast<unsigned>(top && rng() % 4 != 0 ? rng() % 6 : rng() % 16);
  if (depth > 0 && r < 6) {
    const bool object = r < 3;
    ordered_json c = object ? ordered_json::object() : ordered_json::array();
    const std::size_t n = rng() % 5 == 0 ? 0 : 1 + rng() % 5;
    for (std::size_t i = 0; i < n; ++i) {
      if (object)
        c[random_string(rng, 6)] = random_doc(rng, depth - 1, false);
      else
        c.push_back(random_doc(rng, depth - 1, false));
    }
    return c;
  }
  switch (r % 5) {
    case 0: return nullptr;
    case 1: return rng() % 2 == 0;
    case 2:
    case 3: return random_number(rng);
    default: return random_string(rng, 12);
  }
}

// Nested `depth` times, arrays and objects in turn, around a string. Built from the
// inside out: no recursion.
template <class Json>
Json deep_doc(int depth) {
  Json doc = "at the bottom";
  for (int i = 0; i < depth; ++i) {
    Json outer = i % 2 == 0 ? Json::array() : Json::object();
    if (i % 2 == 0)
      outer.push_back(std::move(doc));
    else
      outer["k"] = std::move(doc);
    doc = std::move(outer);
  }
  return doc;
}

// ---- the same document as a text the way people write it ---------------------------

void write_space(std::string& out, std::mt19937_64& rng) {
  while (rng() % 5 == 0) out += " \t\n\r"[rng() % 4];
}

// \uXXXX, the hex digits in either case.
std::string escape_u(unsigned code_unit, std::mt19937_64& rng) {
  char hex[8];
  std::snprintf(hex, sizeof hex, rng() % 2 == 0 ? "\\u%04x" : "\\u%04X", code_unit);
  return hex;
}

void write_string(std::string& out, const std::string& s, std::mt19937_64& rng) {
  out += '"';
  for (std::size_t i = 0; i < s.size();) {
    // One code point: its bytes, and its value.
    const unsigned char lead = static_cast<unsigned char>(s[i]);
    const std::size_t n = lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
    char32_t c = n == 1 ? lead : n == 2 ? lead & 0x1F : n == 3 ? lead & 0x0F : lead & 0x07;
    for (std::size_t k = 1; k < n; ++k) c = c << 6 | (static_cast<unsigned char>(s[i + k]) & 0x3F);
    const bool must = c < 0x20 || c == '"' || c == '\\';
    const std::string_view short_escapes("\b\f\n\r\t");
    if (!must && rng() % 3 != 0) {
      out.append(s, i, n);
    } else if (c == '"' || c == '\\' || (c == '/' && rng() % 2 == 0)) {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x80 && short_escapes.find(static_cast<char>(c)) != std::string_view::npos && rng() % 2 == 0) {
      out += '\\';
      out += "bfnrt"[short_escapes.find(static_cast<char>(c))];
    } else if (c < 0x10000) {
      out += escape_u(static_cast<unsigned>(c), rng);
    } else {  // a surrogate pair
      const unsigned v = static_cast<unsigned>(c) - 0x10000;
      out += escape_u(0xD800 + (v >> 10), rng);
      out += escape_u(0xDC00 + (v & 0x3FF), rng);
    }
    i += n;
  }
  out += '"';
}

// A number as written by hand or by another program: the same value in another form,
// or (17 digits) one that may hold more than a double does.
void write_number(std::string& out, const ordered_json& v, std::mt19937_64& rng) {
  std::string text = v.dump();
  if (v.is_number_float()) {
    char buf[64];
    switch (rng() % 4) {
      case 0: std::snprintf(buf, sizeof buf, "%.17g", v.get<double>()); text = buf; break;
      case 1: std::snprintf(buf, sizeof buf, "%.15E", v.get<double>()); text = buf; break;
      default: break;
    }
    if (text.find_first_of("eE.") == std::string::npos) text += ".0";  // "%.17g" of 1.0 is "1"
  } else if (v.is_number_integer() && std::abs(v.get<double>()) < 1000) {
    switch (rng() % 4) {
      case 0: text += "e0"; break;
      case 1: text += "0E-1"; break;
      case 2: text += ".000"; break;
      default: break;
    }
  }
  out += text;
}

void write_text(std::string& out, const ordered_json& v, std::mt19937_64& rng) {
  write_space(out, rng);
  if (v.is_object()) {
    out += '{';
    bool first = true;
    for (const auto& [k, e] : v.items()) {
      if (!first) out += ',';
      first = false;
      if (rng() % 12 == 0) {  // a repeated key: the last one counts, in jsonb and here
        write_string(out, k, rng);
        out += ":\"replaced\",";
      }
      write_space(out, rng);
      write_string(out, k, rng);
      write_space(out, rng);
      out += ':';
      write_text(out, e, rng);
    }
    write_space(out, rng);
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    for (std::size_t i = 0; i < v.size(); ++i) {
      if (i != 0) out += ',';
      write_text(out, v[i], rng);
    }
    write_space(out, rng);
    out += ']';
  } else if (v.is_string()) {
    write_string(out, v.get_ref<const std::string&>(), rng);
  } else if (v.is_number()) {
    write_number(out, v, rng);
  } else {
    out += v.dump();
  }
  write_space(out, rng);
}

std::string mutate(std::string s, std::mt19937_64& rng) {
  static const std::string alphabet = "{}[]\",:\\0123456789.eE+-tfnulx \x01";
  if (s.empty()) return s;
  const std::size_t at = rng() % s.size();
  switch (rng() % 6) {
    case 0: s.erase(at, 1); break;
    case 1: s.insert(at, 1, alphabet[rng() % alphabet.size()]); break;
    case 2: s[at] = alphabet[rng() % alphabet.size()]; break;
    case 3: s.resize(at); break;
    case 4: s.insert(at, s.substr(at, 1 + rng() % 4)); break;
    default: s += alphabet[rng() % alphabet.size()]; break;
  }
  return s;
}

// What the server makes of a text as jsonb: its rendering, or its SQLSTATE.
struct server_reading {
  std::optional<std::string> rendering;
  std::string sqlstate;
};
server_reading server_reads(pqscope::connection& c, const std::string& text) {
  try {
    return {c.query_value<std::string>("SELECT $1::text::jsonb::text", text), {}};
  } catch (const pqscope::sql_error& e) {
    // Syntax, an unsupported \u0000, a number beyond numeric, nesting beyond max_stack_depth,
    // bytes that are not UTF-8 (a mutation cut a character).
    BOOST_TEST_REQUIRE((e.sqlstate() == "22P02" || e.sqlstate() == "22P05" || e.sqlstate() == "22003" ||
                        e.sqlstate() == "54001" || e.sqlstate() == "22021"),
                       e.sqlstate() << ": " << e.what());
    return {std::nullopt, e.sqlstate()};
  }
}

// Whether nlohmann's own parser (no checks) changes what the text says, by the
// server's jsonb equality; what the adapter refuses, it must.
bool nlohmann_would_change(pqscope::connection& c, const std::string& text) {
  json lenient;
  try {
    lenient = json::parse(text);
  } catch (const json::out_of_range& e) {
    return e.id == 406;  // beyond double's range
  }
  return !c.query_value<bool>("SELECT $1::text::jsonb = $2", text, lenient);
}

// The number a refusal names ("cannot hold the number \"...\" exactly").
std::optional<std::string> named_number(const std::string& why) {
  const std::string before = "the number \"";
  const std::size_t at = why.find(before);
  if (at == std::string::npos) return std::nullopt;
  const std::size_t start = at + before.size(), end = why.find('"', start);
  return why.substr(start, end - start);
}

}  // namespace

// ---- the parameter types ------------------------------------------------------------

BOOST_AUTO_TEST_CASE(parameter_types_work_where_json_is_used) {
  pqtest::scratch_table table{"id int PRIMARY KEY, j json, b jsonb, ja json[], ba jsonb[]"};
  const json j = {{"k", {1, 2}}, {"s", "x"}};
  const ordered_json o = {{"z", 1}, {"k", {1, 2}}, {"a", nullptr}};
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    // The types the server sees.
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", j) == "jsonb");
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", o) == "json");
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::optional<json>()) == "jsonb");
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::vector<json>{j}) == "jsonb[]");
    BOOST_TEST(c.query_value<std::string>("SELECT pg_typeof($1)::text", std::vector<ordered_json>{o}) == "json[]");
    // nlohmann::json (jsonb): every operator.
    BOOST_TEST((c.query_value<json>("SELECT $1 -> 'k'", j) == json{1, 2}));
    BOOST_TEST(c.query_value<std::string>("SELECT $1 ->> 's'", j) == "x");
    BOOST_TEST(c.query_value<bool>("SELECT $1 @> $2", j, json{{"k", {2}}}));
    BOOST_TEST(!c.query_value<bool>("SELECT $1 @> $2", j, json{{"k", {3}}}));
    BOOST_TEST(c.query_value<bool>("SELECT $1 ? 'k'", j));
    BOOST_TEST((c.query_value<json>("SELECT $1 || $2", j, json{{"n", 1}}) == json{{"k", {1, 2}}, {"s", "x"}, {"n", 1}}));
    // ordered_json (json): the json operators; a jsonb-only one needs a cast.
    BOOST_TEST((c.query_value<ordered_json>("SELECT $1 -> 'k'", o) == ordered_json{1, 2}));
    BOOST_TEST(c.query_value<bool>("SELECT $1::jsonb @> $2", o, json{{"z", 1}}));
    try {
      (void)c.query_value<bool>("SELECT $1 @> $2", o, json{{"z", 1}});
      BOOST_ERROR("json @> jsonb was accepted");
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.sqlstate() == "42883");  // undefined_function: there is no json @> operator
    }
    // Text is untyped: the server cannot choose between json -> and jsonb ->.
    try {
      (void)c.query_value<std::string>("SELECT $1 -> 'k'", j.dump());
      BOOST_ERROR("an untyped -> was accepted");
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.sqlstate() == "42725");  // ambiguous_function
    }
    BOOST_TEST(c.query_value<std::string>("SELECT $1::jsonb -> 'k'", j.dump()) == "[1, 2]");
    // Both into both kinds of column, arrays too; a json column keeps ordered_json's order.
    c.execute("INSERT INTO " + table.name() + " VALUES (1, $1, $1, $2, $2)", j, std::vector<json>{j, json()});
    c.execute("INSERT INTO " + table.name() + " VALUES (2, $1, $1, $2, $2)", o, std::vector<ordered_json>{o});
    // (Untyped, a parameter is given one type: one each for the json and the jsonb column.)
    c.execute("INSERT INTO " + table.name() + " VALUES (3, $1, $2, $3, $4)", j.dump(), j.dump(),
              std::vector<std::string>{j.dump(), "null"}, std::vector<std::string>{j.dump(), "null"});
    const auto r = c.execute("SELECT j, b, ja, ba, j::text FROM " + table.name() + " ORDER BY id");
    BOOST_TEST((r[0][0].as<json>() == j && r[0][1].as<json>() == j));
    BOOST_TEST((r[0][2].as<std::vector<json>>() == std::vector<json>{j, json()}));
    BOOST_TEST((r[0][3].as<std::vector<json>>() == std::vector<json>{j, json()}));
    BOOST_TEST(r[1][4].as<std::string>() == o.dump());
    BOOST_TEST((r[1][0].as<ordered_json>() == o));  // ordered_json compares the key order too
    BOOST_TEST((r[1][1].as<ordered_json>() != o));  // jsonb: shorter keys first
    BOOST_TEST((r[1][1].as<json>() == json::parse(o.dump())));
    BOOST_TEST((r[2][0].as<json>() == j && r[2][1].as<json>() == j));
    BOOST_TEST((r[2][3].as<std::vector<json>>() == std::vector<json>{j, json()}));
  });
}

// ---- reading: the server is the oracle ---------------------------------------------

BOOST_AUTO_TEST_CASE(reads_every_text_as_the_server_does) {
  std::mt19937_64 rng(seed());
  pqscope::connection& c = pqtest::shared_observer();
  int accepted = 0, refused = 0, inexact = 0, nul = 0;
  for (int n = 0; n < 2 * documents(); ++n) {
    std::string text;
    write_text(text, random_doc(rng, 5), rng);
    if (n % 2 == 1) text = mutate(text, rng);
    const server_reading server = server_reads(c, text);
    std::optional<json> ours;
    std::string why;
    conversion_refused([&] { ours = read<json>(text); }, &why);
    // ordered_json reads the same texts to the same values.
    std::optional<ordered_json> ours_ordered;
    conversion_refused([&] { ours_ordered = read<ordered_json>(text); });
    BOOST_TEST(ours.has_value() == ours_ordered.has_value(), "text " << pqscope::detail::quote_value(text));
    if (ours && ours_ordered) BOOST_TEST((json::parse(ours_ordered->dump()) == *ours));

    if (server.rendering && ours) {
      ++accepted;
      // The same value: what the server rendered reads the same, and the server finds
      // the document sent back equal to its own parse of the text.
      BOOST_TEST((read<json>(*server.rendering) == *ours),
                 "text " << pqscope::detail::quote_value(text) << ": server " << *server.rendering << ", pqscope "
                         << shown(*ours));
      BOOST_TEST(c.query_value<bool>("SELECT $1 = $2::text::jsonb", *ours, text),
                 "text " << pqscope::detail::quote_value(text));
    } else if (server.rendering) {
      // Refused only where nlohmann's number types would change a number.
      // (Also a number in a member that a repeated key replaces later: that one alone.)
      ++inexact;
      const std::optional<std::string> number = named_number(why);
      BOOST_TEST((nlohmann_would_change(c, text) ||
                  (number && text.find(*number) != std::string::npos && nlohmann_would_change(c, *number))),
                 "text " << pqscope::detail::quote_value(text) << " refused: " << why);
    } else if (ours) {
      // Accepted only where jsonb refuses "\u0000" (json keeps it, and so does nlohmann).
      ++nul;
      BOOST_TEST(server.sqlstate == "22P05", "text " << pqscope::detail::quote_value(text));
      BOOST_TEST(c.query_value<bool>("SELECT $1::text::json IS NOT NULL", text));
    } else {
      ++refused;
    }
  }
  std::cout << "json: " << accepted << " texts read as the server reads them, " << refused << " refused by both, "
            << inexact << " refused for a number nlohmann cannot hold, " << nul << " with \\u0000" << std::endl;
  BOOST_TEST(accepted > documents() / 2);
  BOOST_TEST(refused > documents() / 5);
  BOOST_TEST(inexact > 0);
}

BOOST_AUTO_TEST_CASE(numbers_exact_or_refused) {
  std::mt19937_64 rng(seed() + 1);
  pqscope::connection& c = pqtest::shared_observer();
  std::vector<std::string> texts = {"1e400", "-1e400", "123456789012345678901234567890", "18446744073709551616",
                                    "-9223372036854775809", "1e-400", "0.30000000000000001", "4.9e-324",
                                    "100000000000000000000", "1.50", "-0", "-0.0", "5e-324", "18446744073709551615",
                                    "-9223372036854775808", "1.7976931348623157e308", "1.7976931348623159e308",
                                    "0.1", "1E2", "123456789012345.678"};
  for (int i = 0; i < documents(); ++i) {
    std::string t;
    if (rng() % 2 == 0) t += '-';
    const int digits = 1 + static_cast<int>(rng() % 30);
    t += static_cast<char>('1' + rng() % 9);
    for (int k = 1; k < digits; ++k) t += static_cast<char>('0' + rng() % 10);
    if (rng() % 2 == 0) t.insert(1 + (t[0] == '-') + rng() % static_cast<std::size_t>(digits), ".");
    if (t.back() == '.') t += '0';
    if (rng() % 2 == 0) t += "e" + std::to_string(static_cast<int>(rng() % 800) - 400);
    texts.push_back(t);
  }
  int accepted = 0, refused = 0;
  for (const std::string& t : texts) {
    std::optional<json> ours;
    std::string why;
    conversion_refused([&] { ours = read<json>(t); }, &why);
    BOOST_TEST(ours.has_value() == !nlohmann_would_change(c, t), "number " << t << ": " << why);
    if (ours) {
      ++accepted;
      BOOST_TEST(c.query_value<bool>("SELECT $1 = $2::text::jsonb", *ours, t), "number " << t);
    } else {
      ++refused;
    }
  }
  BOOST_TEST(accepted > documents() / 10);
  BOOST_TEST(refused > documents() / 10);
  // The cases by name.
  std::string why;
  BOOST_TEST(conversion_refused([] { (void)read<json>("[1e400]"); }, &why));
  BOOST_TEST(why.find("number overflow") != std::string::npos, why);
  BOOST_TEST(conversion_refused([] { (void)read<json>("{\"n\": 123456789012345678901234567890}"); }, &why));
  BOOST_TEST(why.find("123456789012345678901234567890") != std::string::npos, why);
  BOOST_TEST(why.find("1.2345678901234568e+29") != std::string::npos, why);
  BOOST_TEST(conversion_refused([] { (void)read<ordered_json>("1e-400"); }, &why));
  BOOST_TEST(why.find("below double's range") != std::string::npos, why);
  BOOST_TEST(conversion_refused([] { (void)read<json>("0.30000000000000001"); }));
  BOOST_TEST(read<json>("18446744073709551615").get<std::uint64_t>() == std::numeric_limits<std::uint64_t>::max());
  BOOST_TEST(read<json>("-9223372036854775808").get<std::int64_t>() == std::numeric_limits<std::int64_t>::min());
  BOOST_TEST(read<json>("100000000000000000000").get<double>() == 1e20);
  BOOST_TEST(read<json>("1.50").get<double>() == 1.5);
  // From a jsonb column: refused with the column's name; std::string has the number.
  const auto r = c.execute("SELECT '[1e400]'::jsonb AS big, '123456789012345678901234567890'::jsonb AS long_int");
  BOOST_TEST(conversion_refused([&] { (void)r[0]["big"].as<json>(); }, &why));
  BOOST_TEST(why.find("column \"big\"") != std::string::npos, why);
  BOOST_TEST(r[0]["big"].as<std::string>() == "[1" + std::string(400, '0') + "]");
  BOOST_TEST(conversion_refused([&] { (void)r[0]["long_int"].as<std::optional<json>>(); }, &why));
  BOOST_TEST(why.find("column \"long_int\"") != std::string::npos, why);
  // jsonb renders every number without an exponent: a double with an integral value
  // comes back as an integer (equal, but no longer a float).
  const json back = c.query_value<json>("SELECT $1", json(1e17));
  BOOST_TEST((back == json(1e17)));
  BOOST_TEST(back.is_number_unsigned());
  BOOST_TEST(c.query_value<json>("SELECT $1::json", ordered_json(1e17)).is_number_float());
}

// ---- writing: what nlohmann would change is refused --------------------------------

BOOST_AUTO_TEST_CASE(what_cannot_be_sent_is_refused) {
  pqscope::connection& c = pqtest::shared_observer();
  std::string why;
  const json not_utf8 = {{"k", std::string("caf\xE9")}};  // Latin-1
  BOOST_TEST(conversion_refused([&] { (void)c.query_value<json>("SELECT $1", not_utf8); }, &why));
  BOOST_TEST(why.find("not valid UTF-8") != std::string::npos, why);
  const ordered_json bad_key = {{std::string("\xC0\x80"), 1}};
  BOOST_TEST(conversion_refused([&] { c.execute("SELECT $1", bad_key); }));
  BOOST_TEST(conversion_refused([&] { c.execute("SELECT $1", json{1, std::numeric_limits<double>::quiet_NaN()}); }, &why));
  BOOST_TEST(why.find("NaN or infinity") != std::string::npos, why);
  BOOST_TEST(conversion_refused([&] { c.execute("SELECT $1", json{{"x", -std::numeric_limits<double>::infinity()}}); }));
  BOOST_TEST(conversion_refused([&] { c.execute("SELECT $1", json::binary({1, 2, 3})); }));
  // Nothing was sent: the connection goes on.
  BOOST_TEST(c.query_value<int>("SELECT 1") == 1);
}

BOOST_AUTO_TEST_CASE(nul_characters_in_json_but_not_jsonb) {
  pqtest::scratch_table table{"id int PRIMARY KEY, j json, b jsonb"};
  const std::string with_nul("a\0b", 3);
  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    // jsonb refuses it, so nlohmann::json (a jsonb parameter) cannot send it...
    try {
      c.execute("INSERT INTO " + table.name() + " (id, j) VALUES (1, $1)", json(with_nul));
      BOOST_ERROR("jsonb took \\u0000");
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.sqlstate() == "22P05");
    }
    // ... and ordered_json (json) can, into a json column, not into a jsonb one.
    c.execute("INSERT INTO " + table.name() + " (id, j) VALUES (1, $1)", ordered_json{{"s", with_nul}});
    try {
      c.execute("INSERT INTO " + table.name() + " (id, b) VALUES (2, $1)", ordered_json(with_nul));
      BOOST_ERROR("a jsonb column took \\u0000");
    } catch (const pqscope::sql_error& e) {
      BOOST_TEST(e.sqlstate() == "22P05");
    }
    BOOST_TEST(c.query_value<std::string>("SELECT j::text FROM " + table.name()) == R"({"s":"a\u0000b"})");
    BOOST_TEST((c.query_value<json>("SELECT j FROM " + table.name())["s"] == with_nul));
    // In COPY too: the column's type decides.
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, j) FROM STDIN");
      w.write_row(3, json(with_nul));
      BOOST_TEST(w.finish() == 1u);
    }
    auto r = c.copy_out("COPY (SELECT j FROM " + table.name() + " WHERE id = 3) TO STDOUT");
    const auto row = r.next<json>();
    BOOST_TEST((row && std::get<0>(*row) == json(with_nul)));
    while (r.next<json>()) {
    }
  });
}

BOOST_AUTO_TEST_CASE(bad_text_is_refused_naming_the_column) {
  pqscope::connection& c = pqtest::shared_observer();
  const auto r = c.execute(
      "SELECT 'not json'::text AS v, ''::text AS empty, '\"\\ud800\"'::json AS lone_surrogate, '{\"a\": 1} x'::text AS "
      "trailing");
  for (const char* column : {"v", "empty", "lone_surrogate", "trailing"}) {
    std::string why;
    BOOST_TEST(conversion_refused([&] { (void)r[0][column].as<json>(); }, &why), column);
    BOOST_TEST(why.find("column \"" + std::string(column) + "\" of row 0") != std::string::npos, why);
    BOOST_TEST(why.find("as JSON") != std::string::npos, why);
    BOOST_TEST(conversion_refused([&] { (void)r[0][column].as<std::optional<ordered_json>>(); }), column);
  }
  BOOST_TEST(conversion_refused([&] { (void)r[0][0].as<std::vector<json>>(); }));  // not an array either
  // The server's json keeps the lone surrogate as written: as text it reads.
  BOOST_TEST(r[0]["lone_surrogate"].as<std::string>() == "\"\\ud800\"");
  // An array element: the element and the column are named.
  const auto a = c.execute("SELECT ARRAY['{}', 'nope']::text[] AS docs");
  std::string why;
  BOOST_TEST(conversion_refused([&] { (void)a[0][0].as<std::vector<json>>(); }, &why));
  BOOST_TEST(why.find("element 2") != std::string::npos, why);
  BOOST_TEST(why.find("column \"docs\"") != std::string::npos, why);
}

// ---- depth -------------------------------------------------------------------------

BOOST_AUTO_TEST_CASE(deep_documents) {
  pqscope::connection& c = pqtest::shared_observer();
  // 5,000 levels: within the server's limit at the default max_stack_depth (2MB), and
  // within what nlohmann's recursive dump() and == take in an unoptimized build.
  const json deep = deep_doc<json>(5000);
  BOOST_TEST((c.query_value<json>("SELECT $1", deep) == deep));
  BOOST_TEST((c.query_value<ordered_json>("SELECT $1::json", deep_doc<ordered_json>(5000)) ==
              deep_doc<ordered_json>(5000)));
  // 100,000: the server refuses it; the adapter reads it (iteratively) all the same.
  const std::string text = std::string(100000, '[') + std::string(100000, ']');
  try {
    (void)c.query_value<std::string>("SELECT $1::text::jsonb::text", text);
    BOOST_ERROR("the server read 100,000 levels");
  } catch (const pqscope::sql_error& e) {
    BOOST_TEST(e.sqlstate() == "54001");  // statement_too_complex: stack depth limit exceeded
  }
  const json read_back = read<json>(text);
  const json* inner = &read_back;
  int depth = 0;
  while (inner->is_array() && !inner->empty()) {
    inner = &(*inner)[0];
    ++depth;
  }
  BOOST_TEST(depth == 99999);
}

// ---- round trips everywhere --------------------------------------------------------

namespace {

// One document in every form the round trips need.
struct sample {
  ordered_json ordered;  // sent as json: the text kept as it is
  json doc;              // sent as jsonb
  std::string json_text;   // what a json column holds: ordered.dump()
  std::string jsonb_text;  // the server's rendering of doc as jsonb
};

const char* const columns = "id int PRIMARY KEY, j json, b jsonb, ja json[], ba jsonb[]";

std::vector<ordered_json> ordered_array(const sample& s) { return {s.ordered, ordered_json(), ordered_json::object()}; }
std::vector<std::optional<json>> doc_array(const sample& s) { return {s.doc, std::nullopt, json(), json::array()}; }
std::vector<std::string> json_text_array(const sample& s) { return {s.json_text, "null", "{}"}; }
std::vector<std::optional<std::string>> jsonb_text_array(const sample& s) {
  return {s.jsonb_text, std::nullopt, "null", "[]"};
}

using typed_row = std::tuple<int, ordered_json, json, std::vector<ordered_json>, std::vector<std::optional<json>>>;
using text_row = std::tuple<int, std::string, std::string, std::vector<std::string>,
                            std::vector<std::optional<std::string>>>;

// Rows 0..n-1 were written typed, n..2n-1 as text: all read back the same both ways.
void check_typed(const typed_row& row, const std::vector<sample>& samples) {
  const std::size_t id = static_cast<std::size_t>(std::get<0>(row));
  const sample& s = samples.at(id % samples.size());
  BOOST_TEST((std::get<1>(row) == s.ordered), "row " << id << ": " << shown(std::get<1>(row)));
  BOOST_TEST((std::get<2>(row) == s.doc), "row " << id << ": " << shown(std::get<2>(row)));
  BOOST_TEST((std::get<3>(row) == ordered_array(s)), "row " << id);
  BOOST_TEST((std::get<4>(row) == doc_array(s)), "row " << id);
}
void check_text(const text_row& row, const std::vector<sample>& samples) {
  const std::size_t id = static_cast<std::size_t>(std::get<0>(row));
  const sample& s = samples.at(id % samples.size());
  BOOST_TEST(std::get<1>(row) == s.json_text, "row " << id);
  BOOST_TEST(std::get<2>(row) == s.jsonb_text, "row " << id);
  BOOST_TEST((std::get<3>(row) == json_text_array(s)), "row " << id);
  BOOST_TEST((std::get<4>(row) == jsonb_text_array(s)), "row " << id);
}

std::string select_all(const pqtest::scratch_table& t) {
  return "SELECT id, j, b, ja, ba FROM " + t.name() + " ORDER BY id";
}

}  // namespace

BOOST_AUTO_TEST_CASE(documents_round_trip_everywhere) {
  pqtest::scratch_table table{columns};
  std::mt19937_64 rng(seed() + 2);
  std::vector<sample> samples;
  std::vector<ordered_json> docs = {ordered_json::object(), ordered_json::array(), ordered_json(),
                                    ordered_json(""),       ordered_json("null"),   deep_doc<ordered_json>(1000),
                                    {{"b", 1}, {"a", 2}, {"aa", {{"z", true}, {"y", false}}}}};
  while (static_cast<int>(docs.size()) < documents()) docs.push_back(random_doc(rng, 6));
  for (ordered_json& o : docs) {
    sample s;
    s.json_text = o.dump();
    s.doc = json::parse(s.json_text);
    s.ordered = std::move(o);
    s.jsonb_text = pqtest::shared_observer().query_value<std::string>("SELECT $1::text", s.doc);
    samples.push_back(std::move(s));
  }
  const int n = static_cast<int>(samples.size());

  for_each_target([&](const pqtest::target& t) {
    pqtest::empty(table);
    pqscope::connection c{t.conninfo};
    for (int i = 0; i < n; ++i) {
      const sample& s = samples[static_cast<std::size_t>(i)];
      // A parameter and a result: the server finds it equal to its own parse of the
      // text, renders it as it renders that, and it reads back unchanged.
      const auto r = c.execute("SELECT $1 = $2::text::jsonb, $1::text, $1, $3::text, $3, $4::jsonb::text", s.doc,
                               s.json_text, s.ordered, s.jsonb_text);
      BOOST_TEST(r[0][0].as<bool>(), "document " << i << ": " << shown(s.doc));
      BOOST_TEST(r[0][1].as<std::string>() == s.jsonb_text);
      BOOST_TEST((r[0][2].as<json>() == s.doc), "document " << i << ": " << shown(s.doc));
      BOOST_TEST(r[0][3].as<std::string>() == s.json_text);  // json keeps the text: key order, escapes
      BOOST_TEST((r[0][4].as<ordered_json>() == s.ordered), "document " << i);
      BOOST_TEST(r[0][5].as<std::string>() == s.jsonb_text);  // the server's rendering is a fixed point
      // Into the columns, typed and as text.
      c.execute("INSERT INTO " + table.name() + " VALUES ($1, $2, $3, $4, $5)", i, s.ordered, s.doc,
                ordered_array(s), doc_array(s));
      c.execute("INSERT INTO " + table.name() + " VALUES ($1, $2, $3, $4, $5)", n + i, s.json_text, s.jsonb_text,
                json_text_array(s), jsonb_text_array(s));
    }
    BOOST_TEST(!c.query_value<std::optional<json>>("SELECT $1", std::optional<json>()).has_value());
    BOOST_TEST(!c.query_value<std::optional<json>>("SELECT NULL::jsonb").has_value());
    BOOST_TEST((c.query_value<std::optional<json>>("SELECT 'null'::jsonb") == json()));
    BOOST_TEST(c.query_value<long>("SELECT count(*) FROM " + table.name() + " WHERE ba[2] IS NULL AND ba[3] = 'null'") ==
               2L * n);
    {
      const pqscope::result r = c.execute(select_all(table));
      BOOST_TEST(r.size() == 2u * static_cast<std::size_t>(n));
      for (const pqscope::row row : r) {
        check_typed(row.as<int, ordered_json, json, std::vector<ordered_json>, std::vector<std::optional<json>>>(),
                    samples);
        check_text(row.as<int, std::string, std::string, std::vector<std::string>,
                          std::vector<std::optional<std::string>>>(),
                   samples);
      }
    }
    // COPY both ways, typed and as text.
    pqtest::empty(table);
    {
      auto w = c.copy_in("COPY " + table.name() + " (id, j, b, ja, ba) FROM STDIN");
      for (int i = 0; i < n; ++i) {
        const sample& s = samples[static_cast<std::size_t>(i)];
        w.write_row(i, s.ordered, s.doc, ordered_array(s), doc_array(s));
        w.write_row(n + i, s.json_text, s.jsonb_text, json_text_array(s), jsonb_text_array(s));
      }
      BOOST_TEST(w.finish() == 2u * static_cast<std::size_t>(n));
    }
    {
      auto reader = c.copy_out("COPY (" + select_all(table) + ") TO STDOUT");
      while (auto row = reader.next<int, ordered_json, json, std::vector<ordered_json>,
                                    std::vector<std::optional<json>>>())
        check_typed(*row, samples);
      BOOST_TEST(reader.rows_read() == 2u * static_cast<std::size_t>(n));
      auto text_reader = c.copy_out("COPY (" + select_all(table) + ") TO STDOUT");
      while (auto row = text_reader.next<int, std::string, std::string, std::vector<std::string>,
                                         std::vector<std::optional<std::string>>>())
        check_text(*row, samples);
    }
    // The same on the asio connection.
    pqtest::empty(table);
    boost::asio::io_context io;
    pqtest::run_coro(io, [&]() -> awaitable<void> {
      auto a = co_await pqtest::connect_async(t.conninfo);
      for (int i = 0; i < n; ++i) {
        const sample& s = samples[static_cast<std::size_t>(i)];
        BOOST_TEST(((co_await a.async_query_value<json>({"SELECT $1", s.doc}, use_awaitable)) == s.doc),
                   "document " << i);
        const pqscope::result r = co_await a.async_execute(
            {"SELECT $1 = $2::text::jsonb, $3::text, $3", s.doc, s.json_text, s.ordered}, use_awaitable);
        BOOST_TEST(r[0][0].as<bool>(), "document " << i);
        BOOST_TEST(r[0][1].as<std::string>() == s.json_text);
        BOOST_TEST((r[0][2].as<ordered_json>() == s.ordered), "document " << i);
        co_await a.async_execute({"INSERT INTO " + table.name() + " VALUES ($1, $2, $3, $4, $5)", i, s.ordered,
                                  s.doc, ordered_array(s), doc_array(s)},
                                 use_awaitable);
      }
      BOOST_TEST(!(co_await a.async_query_value<std::optional<json>>({"SELECT $1", std::optional<json>()},
                                                                     use_awaitable))
                      .has_value());
      {
        const pqscope::result r = co_await a.async_execute({select_all(table)}, use_awaitable);
        BOOST_TEST(r.size() == static_cast<std::size_t>(n));
        for (const pqscope::row row : r)
          check_typed(row.as<int, ordered_json, json, std::vector<ordered_json>, std::vector<std::optional<json>>>(),
                      samples);
      }
      co_await a.async_execute({"DELETE FROM " + table.name()}, use_awaitable);
      auto w = co_await a.async_copy_in("COPY " + table.name() + " (id, j, b, ja, ba) FROM STDIN", use_awaitable);
      for (int i = 0; i < n; ++i) {
        const sample& s = samples[static_cast<std::size_t>(i)];
        w.write_row(i, s.ordered, s.doc, ordered_array(s), doc_array(s));
        w.write_row(n + i, s.json_text, s.jsonb_text, json_text_array(s), jsonb_text_array(s));
      }
      BOOST_TEST((co_await w.async_finish(use_awaitable)) == 2u * static_cast<std::size_t>(n));
      auto reader = co_await a.async_copy_out("COPY (" + select_all(table) + ") TO STDOUT", use_awaitable);
      std::size_t rows = 0;
      while (auto row = co_await reader.async_next<int, ordered_json, json, std::vector<ordered_json>,
                                                   std::vector<std::optional<json>>>(use_awaitable)) {
        check_typed(*row, samples);
        ++rows;
      }
      BOOST_TEST(rows == 2u * static_cast<std::size_t>(n));
      auto text_reader = co_await a.async_copy_out("COPY (" + select_all(table) + ") TO STDOUT", use_awaitable);
      while (auto row = co_await text_reader.async_next<int, std::string, std::string, std::vector<std::string>,
                                                        std::vector<std::optional<std::string>>>(use_awaitable))
        check_text(*row, samples);
    }());
  });
}
