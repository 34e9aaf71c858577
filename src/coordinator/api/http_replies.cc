#include "coordinator/api/http_replies.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/encoding.h"
#include "base/log.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {

std::optional<std::string_view> query_value(std::string_view query, std::string_view name) {
  while (!query.empty()) {
    const size_t end = std::min(query.find('&'), query.size());
    const std::string_view pair = query.substr(0, end);
    query.remove_prefix(std::min(end + 1, query.size()));
    if (pair.size() > name.size() && pair.substr(0, name.size()) == name && pair[name.size()] == '=') {
      return pair.substr(name.size() + 1);
    }
  }
  return std::nullopt;
}

std::optional<int> limit_param(std::string_view query, int fallback, int max) {
  const auto digits = query_value(query, "limit");
  if (!digits) return fallback;
  if (digits->empty() || digits->size() > 9 ||
      !std::all_of(digits->begin(), digits->end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return std::nullopt;
  }
  const int limit = std::stoi(std::string(*digits));
  if (limit < 1 || limit > max) return std::nullopt;
  return limit;
}

Headers retry_after(int seconds) {
  return Headers{{"Retry-After", std::to_string(seconds)}};
}

proto::ApiError store_error(const Error& error) {
  switch (error.code) {
    case Errc::unavailable:
      return proto::service_unavailable("The database is not answering; retry shortly (" + error.message + ")");
    case Errc::not_found:
      return proto::not_found_error(error.message);
    case Errc::invalid_argument:
    case Errc::already_exists:
    case Errc::resource_exhausted:
      return proto::invalid_request(error.message);
    default:
      log::error("store: {}", error.message);
      return proto::server_error("The database failed; nothing was changed");
  }
}

net::awaitable<void> respond_store_failure(http::Exchange& exchange, const Error& error) {
  const Headers headers = error.code == Errc::unavailable ? retry_after(kStoreRetryAfterSeconds) : Headers{};
  co_await exchange.respond_error(store_error(error), headers);
}

net::awaitable<std::variant<std::string, Refusal>> check_consumer_key(std::string_view authorization, ApiKeys& keys,
                                                                      StoreWorker& worker) {
  auto account = co_await keys.authenticate(authorization, worker);
  if (!account) {
    if (account.error().code != Errc::unavailable) log::error("key lookup failed: {}", account.error().message);
    const Headers headers =
        account.error().code == Errc::unavailable ? retry_after(kStoreRetryAfterSeconds) : Headers{};
    co_return Refusal{store_error(account.error()), headers};
  }
  if (!*account) {
    co_return Refusal{proto::authentication_error("Missing or unknown API key: send 'Authorization: Bearer db-...'"),
                      Headers{}};
  }
  co_return std::move(**account);
}

net::awaitable<std::optional<std::string>> authenticate_consumer(http::Exchange& exchange, ApiKeys& keys,
                                                                 StoreWorker& worker) {
  auto checked = co_await check_consumer_key(exchange.header("Authorization"), keys, worker);
  if (auto* refusal = std::get_if<Refusal>(&checked)) {
    co_await exchange.respond_error(refusal->first, refusal->second);
    co_return std::nullopt;
  }
  co_return std::move(std::get<std::string>(checked));
}

std::optional<proto::ApiError> admin_refusal(std::string_view authorization, const std::string& admin_token) {
  if (admin_token.empty()) {
    return proto::authentication_error("The admin API is disabled: set an admin token (DARKBLOOM_ADMIN_TOKEN)");
  }
  // Hashes of equal length, compared in constant time: the token's length and bytes stay secret.
  const std::string_view token = bearer_token(authorization);
  if (!crypto::equal_constant_time(crypto::sha256(as_bytes(token)), crypto::sha256(as_bytes(admin_token)))) {
    return proto::authentication_error("Missing or wrong admin token");
  }
  return std::nullopt;
}

std::optional<Refusal> admin_refusal(std::string_view authorization, const std::string& admin_token,
                                     FailedAttempts& failures, const std::string& address) {
  // A disabled admin API is not something to guess at: said as it is, nothing counted.
  if (admin_token.empty()) return Refusal{*admin_refusal(authorization, admin_token), Headers{}};
  if (const int wait = failures.wait_seconds(address); wait > 0) {
    return Refusal{
        proto::rate_limited(fmt::format("Too many failed admin attempts from your address; retry in {} s", wait)),
        retry_after(wait)};
  }
  std::optional<proto::ApiError> refusal = admin_refusal(authorization, admin_token);
  if (!refusal) return std::nullopt;
  failures.failed(address);
  return Refusal{std::move(*refusal), Headers{}};
}

net::awaitable<bool> authorize_admin(http::Exchange& exchange, const std::string& admin_token,
                                     FailedAttempts& failures) {
  const std::optional<Refusal> refusal = admin_refusal(exchange.header("Authorization"), admin_token, failures,
                                                       http::address_key(exchange.remote_address()));
  if (!refusal) co_return true;
  co_await exchange.respond_error(refusal->first, refusal->second);
  co_return false;
}

}  // namespace darkbloom::coordinator
