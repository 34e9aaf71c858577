// Boost.Asio names used by every module that runs coroutines, in one place: the executor, the
// awaitable type, and the no-throw completion token.
#pragma once

#include <boost/asio.hpp>

namespace darkbloom::net {

namespace asio = boost::asio;
using Executor = asio::any_io_executor;
using asio::awaitable;
using asio::use_awaitable;
using error_code = boost::system::error_code;

// Return an error_code instead of throwing: `auto [ec, n] = co_await op(..., as_tuple_awaitable);`
inline constexpr auto as_tuple_awaitable = asio::as_tuple(asio::use_awaitable);

}  // namespace darkbloom::net
