// Runs a blocking call (a TPM signature, a file hash) on a worker pool and resumes the calling
// coroutine on its own executor with the result, so the network thread never waits on hardware.
#pragma once

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "base/result.h"
#include "net/asio.h"

namespace darkbloom::net {

// `function` returns a Result<T>; an exception it throws comes back as an error, never escaping
// into the pool (where it would end the process).
template <class Function>
awaitable<std::invoke_result_t<Function>> run_blocking(asio::thread_pool& pool, Function function) {
  using Value = std::invoke_result_t<Function>;
  static_assert(std::is_constructible_v<Value, Error>, "run_blocking runs functions that return a Result");
  auto executor = co_await asio::this_coro::executor;
  // Lives in this coroutine's frame, which stays put while it is suspended below.
  std::optional<Value> result;
  // Named, not a temporary in the co_await operand: GCC 12 destroys such temporaries twice.
  auto initiate = [&pool, &result, &function, executor](auto handler) {
    asio::post(pool, [&result, &function, executor, handler = std::move(handler)]() mutable {
      try {
        result.emplace(function());
      } catch (const std::exception& e) {
        result.emplace(make_error(Errc::internal, e.what()));
      }
      asio::post(executor, std::move(handler));
    });
  };
  co_await asio::async_initiate<decltype(use_awaitable), void()>(std::move(initiate), use_awaitable);
  co_return std::move(*result);
}

}  // namespace darkbloom::net
