// Small pieces every coordinator handler shares: the Retry-After header, reading a JSON object
// body into fields, the OpenAI error for a store failure, and the two credential checks (a
// consumer's API key, the operator's admin token).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "base/json.h"
#include "coordinator/auth/api_keys.h"
#include "coordinator/auth/failed_attempts.h"
#include "http/server.h"

namespace darkbloom::coordinator {

using Headers = http::Headers;

Headers retry_after(int seconds);

// The value of `name` in a query string ("a=1&b=2"), undecoded; nullopt when absent.
std::optional<std::string_view> query_value(std::string_view query, std::string_view name);
// ?limit=N: `fallback` when absent, nullopt unless 1..`max`.
std::optional<int> limit_param(std::string_view query, int fallback, int max);

// The OpenAI-shaped answer to a store error: 503 while the database is not answering
// (Errc::unavailable, see StoreWorker), 404, 400 for a refused change, else a logged 500.
proto::ApiError store_error(const Error& error);
// Answers store_error(error), with Retry-After on a 503.
net::awaitable<void> respond_store_failure(http::Exchange& exchange, const Error& error);
inline constexpr int kStoreRetryAfterSeconds = 2;

// The JSON object body read by `read` (a function of json::ObjectReader&), or (nullopt) the
// OpenAI-shaped 400 to answer in `error`.
template <class Read>
auto read_body(const http::Exchange& exchange, Read read, proto::ApiError* error)
    -> std::optional<decltype(read(std::declval<json::ObjectReader&>()))> {
  auto body = json::parse(exchange.request().body(), "request body");
  if (!body || !body->is_object()) {
    *error = proto::invalid_request("The request body must be a JSON object");
    return std::nullopt;
  }
  json::ObjectReader reader(body->as_object(), "");
  auto fields = read(reader);
  if (!reader.ok()) {
    *error = proto::invalid_request(reader.error().message, reader.failed_field());
    return std::nullopt;
  }
  return fields;
}

// An error to answer and the headers that go with it.
using Refusal = std::pair<proto::ApiError, Headers>;
// The account of an Authorization header's API key, or the refusal: 401; 503 with Retry-After
// while the database is not answering; 500 if the lookup failed.
net::awaitable<std::variant<std::string, Refusal>> check_consumer_key(std::string_view authorization, ApiKeys& keys,
                                                                      StoreWorker& worker);
// The account of the request's API key; otherwise answers check_consumer_key's refusal and
// returns nullopt.
net::awaitable<std::optional<std::string>> authenticate_consumer(http::Exchange& exchange, ApiKeys& keys,
                                                                 StoreWorker& worker);

// The 401 for an Authorization header without the admin token (an empty token disables the
// admin API); nullopt when it carries it.
std::optional<proto::ApiError> admin_refusal(std::string_view authorization, const std::string& admin_token);
// admin_refusal, counting failures per address (`address` as http::address_key names it): an
// address that failed too often gets 429 with Retry-After for every admin request for a while.
std::optional<Refusal> admin_refusal(std::string_view authorization, const std::string& admin_token,
                                     FailedAttempts& failures, const std::string& address);
// Answers that refusal and returns false unless the request carries the admin token.
net::awaitable<bool> authorize_admin(http::Exchange& exchange, const std::string& admin_token,
                                     FailedAttempts& failures);

}  // namespace darkbloom::coordinator
