#pragma once
// The bodies of <pqscope/detail/libpq_connect.hpp>: included at its end in header-only
// mode, and compiled once by the implementation unit otherwise (detail/config.hpp).

#include <pqscope/detail/libpq_connect.hpp>

#include <cstdlib>
#include <cstring>
#include <iterator>

#include <pqscope/errors.hpp>

namespace pqscope::detail {

PQSCOPE_DECL void check_conninfo(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (opts != nullptr) {
    PQconninfoFree(opts);
    return;
  }
  std::string msg = err != nullptr ? err : "out of memory";
  PQfreemem(err);
  while (!msg.empty() && msg.back() == '\n') msg.pop_back();
  throw usage_error("invalid connection string: " + redact(msg, conninfo));  // libpq quotes the bad part
}

PQSCOPE_DECL std::string connect_timeout_for(std::chrono::milliseconds t) {
  const long long s = (t.count() + 999) / 1000;
  return std::to_string(s < 2 ? 2 : s);
}

PQSCOPE_DECL bool conninfo_sets(const std::string& conninfo, const char* key) {
  bool set = false;
  if (PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), nullptr)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (std::strcmp(o->keyword, key) == 0 && o->val != nullptr && *o->val != '\0') set = true;
    PQconninfoFree(opts);
  }
  if (set) return true;
  if (PQconninfoOption* defs = PQconndefaults()) {
    for (PQconninfoOption* o = defs; o->keyword != nullptr; ++o) {
      if (std::strcmp(o->keyword, key) != 0 || o->envvar == nullptr) continue;
      // Read-only, as libpq itself reads the environment while connecting.
      const char* v = std::getenv(o->envvar);  // NOLINT(concurrency-mt-unsafe)
      if (v != nullptr && *v != '\0') set = true;
    }
    PQconninfoFree(defs);
  }
  return set;
}

PQSCOPE_DECL connect_params::connect_params(const std::string& conninfo, const std::string& fallback_application_name,
                                            std::chrono::milliseconds timeout) {
  owned_.reserve(std::size(network_defaults));  // no reallocation: keys_ and values_ point into it
  for (const auto& d : network_defaults) {
    if (conninfo_sets(conninfo, d.key)) continue;
    std::string value = d.value;
    if (std::strcmp(d.key, "connect_timeout") == 0 && timeout.count() > 0) value = connect_timeout_for(timeout);
    owned_.push_back(std::move(value));
    keys_.push_back(d.key);
    values_.push_back(owned_.back().c_str());
  }
  keys_.insert(keys_.end(), {"dbname", "fallback_application_name", nullptr});
  values_.insert(values_.end(), {conninfo.c_str(), fallback_application_name.c_str(), nullptr});
}

PQSCOPE_DECL std::string connect_failure(PGconn* c, const std::string& conninfo) {
  std::string msg = c != nullptr ? PQerrorMessage(c) : "out of memory";
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  return "could not connect: " + redact(std::move(msg), conninfo);
}

PQSCOPE_DECL std::string conninfo_of(PGconn* c) {
  std::string out;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr || *o->val == '\0') continue;
      if (!out.empty()) out += ' ';
      out += o->keyword;
      out += "='";
      for (const char* v = o->val; *v != '\0'; ++v) {
        if (*v == '\'' || *v == '\\') out += '\\';
        out += *v;
      }
      out += '\'';
    }
    PQconninfoFree(opts);
  }
  return out;
}

PQSCOPE_DECL std::string application_name_of(PGconn* c) {
  if (c == nullptr) return {};
  if (const char* v = PQparameterStatus(c, "application_name")) return v;
  std::string name, fallback;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
      if (o->val == nullptr) continue;
      if (std::strcmp(o->keyword, "application_name") == 0) name = o->val;
      if (std::strcmp(o->keyword, "fallback_application_name") == 0) fallback = o->val;
    }
    PQconninfoFree(opts);
  }
  return name.empty() ? fallback : name;
}

PQSCOPE_DECL std::chrono::milliseconds connect_timeout_of(PGconn* c) {
  std::chrono::milliseconds out{0};
  if (c == nullptr) return out;
  if (PQconninfoOption* opts = PQconninfo(c)) {
    for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
      if (o->val != nullptr && std::strcmp(o->keyword, "connect_timeout") == 0) {
        const long s = std::strtol(o->val, nullptr, 10);
        if (s > 0) out = std::chrono::seconds(s < 2 ? 2 : s);  // libpq's own minimum
      }
    PQconninfoFree(opts);
  }
  return out;
}

}  // namespace pqscope::detail
