// Compiled (never run) by tests/compile_fail.cmake in C++20, as misuse.cpp is: a
// result the asio connection hands back is a temporary like any other, and an
// operation called in the blocking call's shape (parameters beside the text, or no
// completion token) is refused by pqscope's static_assert, not by Asio's internals.
//
// case asio_temporary_field_view: as<std::string_view>() on a field of a temporary result
// case asio_execute_blocking_shape: pqscope: async_execute(query, token) takes the parameters in braces
// case asio_execute_params_then_token: pqscope: async_execute(query, token) takes the parameters in braces
// case asio_execute_no_token: pqscope: async_execute(query, token) takes the parameters in braces
// case asio_execute_text_parameter: pqscope: async_execute(query, token) takes the parameters in braces
// case asio_query_value_blocking_shape: pqscope: async_query_value<T>(query, token) takes the parameters in braces
#include <utility>  // g++ 12 with Boost 1.74's awaitable.hpp: std::exchange

#include <pqscope/asio.hpp>

#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <string>
#include <string_view>

void on_result(std::exception_ptr, pqscope::result);
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
#elif defined(PQSCOPE_CASE_asio_execute_blocking_shape)
#ifdef PQSCOPE_OK
  n += (co_await conn.async_execute({"SELECT $1", 1}, boost::asio::use_awaitable)).size();
#else
  n += (co_await conn.async_execute("SELECT $1", 1)).size();
#endif
#elif defined(PQSCOPE_CASE_asio_execute_params_then_token)
#ifdef PQSCOPE_OK
  n += (co_await conn.async_execute({"SELECT $1, $2", 1, "x"}, boost::asio::use_awaitable)).size();
#else
  n += (co_await conn.async_execute("SELECT $1, $2", 1, "x", boost::asio::use_awaitable)).size();
#endif
#elif defined(PQSCOPE_CASE_asio_execute_no_token)
#ifdef PQSCOPE_OK
  n += (co_await conn.async_execute("SELECT 1", boost::asio::use_awaitable)).size();
  // a handler is a completion token too, a function pointer as well as a lambda
  conn.async_execute("SELECT 1", [](std::exception_ptr, pqscope::result) {});
  conn.async_execute("SELECT 1", &on_result);
#else
  n += (co_await conn.async_execute("SELECT 1")).size();
#endif
#elif defined(PQSCOPE_CASE_asio_execute_text_parameter)
#ifdef PQSCOPE_OK
  const std::string name = "x";
  n += (co_await conn.async_execute({"SELECT $1", name}, boost::asio::use_awaitable)).size();
#else
  const std::string name = "x";
  n += (co_await conn.async_execute("SELECT $1", name)).size();
#endif
#elif defined(PQSCOPE_CASE_asio_query_value_blocking_shape)
#ifdef PQSCOPE_OK
  n += static_cast<std::size_t>(
      co_await conn.async_query_value<long>({"SELECT $1::bigint", 1}, boost::asio::use_awaitable));
#else
  n += static_cast<std::size_t>(co_await conn.async_query_value<long>("SELECT $1::bigint", 1));
#endif
#else
#error "compile with -DPQSCOPE_CASE_<name>"
#endif
  co_return n;
}
