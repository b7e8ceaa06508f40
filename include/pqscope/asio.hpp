#pragma once
// pqscope on Boost.Asio: the same nested transaction scopes, on an executor, from
// C++20 coroutines or with any completion token. Needs C++20 and Boost.Asio
// (1.74 or newer, header-only); not included by <pqscope/pqscope.hpp>, which stays
// C++17 with no Boost.
//
//   #include <pqscope/asio.hpp>
//   pqscope::asio::connection c{io.get_executor(), "postgresql://app@127.0.0.1:6432/app"};
//   co_await c.async_connect(use_awaitable);
//   co_await pqscope::asio::async_atomic(c, [&]() -> awaitable<void> {
//     co_await c.async_execute({"UPDATE account SET cents = cents - $1 WHERE id = $2", 100, 1}, use_awaitable);
//     co_await deposit(c, 2, 100);  // may open an async_atomic of its own: a savepoint
//   });
//
// One transaction engine: the scope machine of the blocking connection
// (detail/scope_machine.hpp) plans every batch; this front end only sends it and
// reads the answers without blocking (asio/link.hpp).

#if __cplusplus < 202002L
#error "pqscope/asio.hpp needs C++20 (coroutines): compile with -std=c++20"
#endif

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility> (g++ 12).
#include <utility>

// Boost 1.74 recognises coroutines under clang only with libc++
// (<experimental/coroutine>); with libstdc++ it has to be told. Defined only when
// the compiler has C++20 coroutines and Asio did not find them itself. With clang,
// include this header before Asio's coroutine headers (co_spawn, use_awaitable).
#if defined(__clang__) && defined(__cpp_impl_coroutine) && !defined(BOOST_ASIO_HAS_CO_AWAIT) && \
    !defined(BOOST_ASIO_DISABLE_CO_AWAIT)
#if __has_include(<coroutine>)
#define BOOST_ASIO_HAS_CO_AWAIT 1
#define BOOST_ASIO_HAS_STD_COROUTINE 1
#endif
#endif

#include <boost/asio/awaitable.hpp>
#include <boost/asio/version.hpp>

#if !defined(BOOST_ASIO_HAS_CO_AWAIT)
#error "pqscope/asio.hpp: Boost.Asio does not see C++20 coroutines; include <pqscope/asio.hpp> before any Boost.Asio header, or define BOOST_ASIO_HAS_CO_AWAIT and BOOST_ASIO_HAS_STD_COROUTINE"
#endif
#if BOOST_ASIO_VERSION < 101800
#error "pqscope/asio.hpp needs Boost.Asio 1.18 (Boost 1.74) or newer"
#endif

#include <pqscope/pqscope.hpp>

#include <pqscope/asio/link.hpp>
#include <pqscope/asio/connection.hpp>
#include <pqscope/asio/copy.hpp>
#include <pqscope/asio/transaction.hpp>
#include <pqscope/asio/pool.hpp>
#include <pqscope/asio/replica_set.hpp>
