// Boost.Beast names used across the http module and its users, in one place, on top of the
// runtime names of net/asio.h.
#pragma once

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/channel.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include "net/asio.h"

namespace darkbloom::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using net::as_tuple_awaitable;
using net::awaitable;
using net::error_code;
using net::use_awaitable;

}  // namespace darkbloom::http
