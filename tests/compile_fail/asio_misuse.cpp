// Compiled (never run) by tests/compile_fail.cmake in C++20, as misuse.cpp is: a
// result the asio connection hands back is a temporary like any other.
//
// case asio_temporary_field_view: as<std::string_view>() on a field of a temporary result
#include <utility>  // g++ 12 with Boost 1.74's awaitable.hpp: std::exchange

#include <pqscope/asio.hpp>

#include <boost/asio/use_awaitable.hpp>

#include <string>
#include <string_view>

boost::asio::awaitable<std::size_t> use(pqscope::asio::connection& conn);
boost::asio::awaitable<std::size_t> use(pqscope::asio::connection& conn) {
  std::size_t n = 0;
#if defined(PQSCOPE_CASE_asio_temporary_field_view)
#ifdef PQSCOPE_OK
  auto r = co_await conn.async_execute("SELECT 'x'", boost::asio::use_awaitable);
  n += r[0][0].as<std::string_view>().size();
  n += (co_await conn.async_execute("SELECT 'x'", boost::asio::use_awaitable))[0][0].as<std::string>().size();
#else
  n += (co_await conn.async_execute("SELECT 'x'", boost::asio::use_awaitable))[0][0].as<std::string_view>().size();
#endif
#else
#error "compile with -DPQSCOPE_CASE_<name>"
#endif
  co_return n;
}
