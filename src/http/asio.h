// Boost.Asio / Beast names used across the http module and its users, in one place.
#pragma once

#include <boost/asio.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

namespace darkbloom::http {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;
using net::awaitable;
using net::use_awaitable;
using error_code = boost::system::error_code;

// Return an error_code instead of throwing: `auto [ec, n] = co_await op(..., as_tuple_awaitable);`
inline constexpr auto as_tuple_awaitable = net::as_tuple(net::use_awaitable);

}  // namespace darkbloom::http
