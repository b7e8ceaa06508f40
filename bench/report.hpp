#pragma once
// What every benchmark's report says about the machine it ran on, how it prints
// its numbers, how it counts failed checks, and the small libpq and timing helpers
// the benchmark programs of bench/ share.

#include <sched.h>
#include <time.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <libpq-fe.h>

namespace bench {

inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) {
      auto p = line.find(':');
      return p == std::string::npos ? line : line.substr(p + 2);
    }
  return "unknown";
}

inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string one, five, fifteen;
  in >> one >> five >> fifteen;
  return one.empty() ? "unknown" : one + " " + five + " " + fifteen;
}

// The CPUs this process may run on (a container's share, not the host's).
inline int cpu_count() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return static_cast<int>(std::thread::hardware_concurrency());
}

inline std::string now_text() {
  std::time_t t = std::time(nullptr);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&t));
  return buf;
}

inline std::string fmt(double v, int decimals = 0) {
  if (std::isnan(v)) return "n/a";
  std::ostringstream s;
  s << std::fixed << std::setprecision(decimals) << v;
  return s.str();
}

inline std::string ratio(double a, double b) {
  return std::isnan(a) || std::isnan(b) || b <= 0 ? "n/a" : fmt(a / b, 2);
}

// ---- failures: a failed check prints "FAIL ..." and makes the exit code nonzero ----

namespace detail {
inline std::mutex fail_mutex;
inline int fail_count = 0;
}  // namespace detail

// From any thread; only the first `printed` failures are shown, all are counted.
inline void fail(const std::string& what, int printed = 30) {
  std::lock_guard<std::mutex> lock(detail::fail_mutex);
  if (++detail::fail_count <= printed) std::cout << "FAIL " << what << std::endl;
}

inline int failures() {
  std::lock_guard<std::mutex> lock(detail::fail_mutex);
  return detail::fail_count;
}

// ---- raw libpq ----------------------------------------------------------------------

inline PGconn* connect_raw(const std::string& conninfo) {
  PGconn* c = PQconnectdb(conninfo.c_str());
  if (PQstatus(c) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(c);
    PQfinish(c);
    throw std::runtime_error("connect: " + msg);
  }
  return c;
}

// The same, with the server's notices dropped instead of printed to stderr.
inline PGconn* connect_raw_quiet(const std::string& conninfo) {
  PGconn* c = connect_raw(conninfo);
  PQsetNoticeProcessor(c, [](void*, const char*) {}, nullptr);  // "table does not exist, skipping"
  return c;
}

// The first value of a query's answer; empty when there is none or it failed.
inline std::string query_text(PGconn* c, const char* sql) {
  PGresult* r = PQexec(c, sql);
  std::string out;
  if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0) out = PQgetvalue(r, 0, 0);
  PQclear(r);
  return out;
}

// One application_name for every session of a benchmark: PgBouncer sends a SET to the
// server whenever a client's name differs from the previous one's on that server
// connection, which would tax whichever implementation follows another.
inline std::string with_app_name(const std::string& conninfo, const std::string& name) {
  const bool uri = conninfo.rfind("postgres://", 0) == 0 || conninfo.rfind("postgresql://", 0) == 0;
  if (!uri) return conninfo + " application_name=" + name;
  return conninfo + (conninfo.find('?') == std::string::npos ? "?" : "&") + "application_name=" + name;
}

// ---- timing -------------------------------------------------------------------------

// CPU time of the calling thread: the client-side cost of a transaction, which,
// unlike wall time, machine load and the network do not inflate much.
inline double thread_cpu_us() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e6 + static_cast<double>(ts.tv_nsec) / 1e3;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace bench
