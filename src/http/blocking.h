// Runs a blocking call (a TPM signature, a file hash) on a worker pool and resumes the calling
// coroutine on its own executor with the result, so the network thread never waits on hardware.
#pragma once

#include <optional>
#include <type_traits>
#include <utility>

#include "http/asio.h"

namespace darkbloom::http {

template <class Function>
awaitable<std::invoke_result_t<Function>> run_blocking(net::thread_pool& pool, Function function) {
  using Value = std::invoke_result_t<Function>;
  auto executor = co_await net::this_coro::executor;
  // Lives in this coroutine's frame, which stays put while it is suspended below.
  std::optional<Value> result;
  co_await net::async_initiate<decltype(use_awaitable), void()>(
      [&pool, &result, &function, executor](auto handler) {
        net::post(pool, [&result, &function, executor, handler = std::move(handler)]() mutable {
          result.emplace(function());
          net::post(executor, std::move(handler));
        });
      },
      use_awaitable);
  co_return std::move(*result);
}

}  // namespace darkbloom::http
