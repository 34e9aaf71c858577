// The money routes: admin credit, pricing and referrals (admin token); a consumer's balance and
// usage (API key). Amounts are integer micro-USD everywhere; bad input is an OpenAI-shaped 400
// and leaves the ledger untouched.
#include <algorithm>

#include "coordinator/api/api_context.h"
#include "coordinator/api/http_replies.h"
#include "proto/coordinator_api.h"

namespace darkbloom::coordinator {
namespace {

using net::awaitable;

struct CreditBody {
  std::string account;
  int64_t amount = 0;
  std::optional<std::string> idempotency_key;
};
CreditBody read_credit(json::ObjectReader& reader) {
  return {reader.string("account_id", 128), reader.integer("amount_micro_usd", 1, kMaxEntryAmount),
          reader.optional_string("idempotency_key", 64)};
}

Price read_price(json::ObjectReader& reader) {
  Price price;
  price.model = reader.optional_string("model", 128).value_or("");
  price.input_per_million = reader.integer("input_per_million", 0, kMaxEntryAmount);
  price.output_per_million = reader.integer("output_per_million", 0, kMaxEntryAmount);
  return price;
}

std::pair<std::string, std::string> read_referral(json::ObjectReader& reader) {
  return {reader.string("account_id", 128), reader.string("referrer_id", 128)};
}

std::vector<proto::ModelPrice> price_list(const std::vector<Price>& prices) {
  std::vector<proto::ModelPrice> out;
  for (const Price& price : prices) out.push_back({price.model, price.input_per_million, price.output_per_million});
  return out;
}

// {"account_id", "amount_micro_usd", "idempotency_key"?}: the key makes a retried call a no-op.
awaitable<void> handle_admin_credit(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  proto::ApiError error;
  const auto body = read_body(exchange, read_credit, &error);
  if (!body) {
    co_await exchange.respond_error(error);
    co_return;
  }
  const std::string request_id =
      "credit_" + (body->idempotency_key ? *body->idempotency_key : context.random.id("", 12));
  const std::vector<LedgerEntry> credit{
      LedgerEntry{request_id, body->account, LedgerKind::admin_credit, body->amount, 0}};
  auto apply = [&context, &credit] { return context.store.apply(credit); };
  auto applied = co_await context.store_worker.run(apply);
  if (!applied) {
    co_await respond_store_failure(exchange, applied.error());
    co_return;
  }
  auto read_balance = [&context, account = body->account] { return context.ledger.balance(account); };
  auto balance = co_await context.store_worker.run(read_balance);
  if (!balance) {
    co_await respond_store_failure(exchange, balance.error());
    co_return;
  }
  // credited 0: this idempotency key was used before.
  // Encoded before the co_await: GCC 12 destroys a braced temporary inside a co_await
  // expression twice (a double free).
  const std::string answer = proto::encode_credit({body->account, *applied > 0 ? body->amount : 0, *balance});
  co_await exchange.respond_json(200, answer);
}

// Sets a price and reloads the ledger's; an error is answered, and false returned.
awaitable<bool> set_price(http::Exchange& exchange, ApiContext& context) {
  proto::ApiError error;
  const auto price = read_body(exchange, read_price, &error);
  if (!price) {
    co_await exchange.respond_error(error);
    co_return false;
  }
  auto store_price = [&context, &price]() -> Status {
    DARKBLOOM_RETURN_IF_ERROR(context.store.set_price(*price));
    return context.ledger.reload_prices();
  };
  const Status done = co_await context.store_worker.run(store_price);
  if (!done) {
    co_await respond_store_failure(exchange, done.error());
    co_return false;
  }
  co_return true;
}

// PUT {"model"?, "input_per_million", "output_per_million"} sets a price ("" or absent: the
// default); GET lists them.
awaitable<void> handle_admin_pricing(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  if (exchange.request().method() == http::bhttp::verb::put) {
    const bool set = co_await set_price(exchange, context);
    if (!set) co_return;
  }
  auto read_prices = [&context] { return context.store.prices(); };
  auto prices = co_await context.store_worker.run(read_prices);
  if (!prices) {
    co_await respond_store_failure(exchange, prices.error());
    co_return;
  }
  const BillingOptions& billing = context.config.billing;
  // Encoded before the co_await: GCC 12 destroys a braced temporary inside a co_await
  // expression twice (a double free).
  const std::string answer = proto::encode_price_list({price_list(*prices), billing.default_input_per_million,
                                                       billing.default_output_per_million, billing.minimum_charge});
  co_await exchange.respond_json(200, answer);
}

// {"account_id", "referrer_id"}: set once.
awaitable<void> handle_admin_referrals(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  proto::ApiError error;
  const auto body = read_body(exchange, read_referral, &error);
  if (!body) {
    co_await exchange.respond_error(error);
    co_return;
  }
  const auto& [account, referrer] = *body;
  auto store_referrer = [&context, &body] { return context.store.set_referrer(body->first, body->second); };
  const Status set = co_await context.store_worker.run(store_referrer);
  if (!set) {
    co_await respond_store_failure(exchange, set.error());
    co_return;
  }
  co_await exchange.respond_json(200, proto::encode_referral(account, referrer));
}

AccountLimits read_limits(json::ObjectReader& reader) {
  AccountLimits limits;
  limits.account_id = reader.string("account_id", 128);
  limits.requests_per_second = reader.integer("requests_per_second", 0, 1'000'000);
  limits.burst = reader.integer("burst", 0, 1'000'000);
  limits.max_concurrent = reader.integer("max_concurrent", 0, 1'000'000);
  return limits;
}

// PUT {"account_id", "requests_per_second", "burst", "max_concurrent"} (0 = unlimited): the
// account's own limits, kept in the store and in force at once on this coordinator.
awaitable<void> handle_admin_limits(http::Exchange& exchange, ApiContext& context) {
  if (!co_await authorize_admin(exchange, context.config.admin_token, context.admin_failures)) co_return;
  proto::ApiError error;
  const auto limits = read_body(exchange, read_limits, &error);
  if (!limits) {
    co_await exchange.respond_error(error);
    co_return;
  }
  auto store_limits = [&context, &limits] { return context.store.set_account_limits(*limits); };
  if (const Status stored = co_await context.store_worker.run(store_limits); !stored) {
    co_await respond_store_failure(exchange, stored.error());
    co_return;
  }
  context.limiter.set(limits->account_id,
                      RateLimits{limits->requests_per_second, limits->burst, limits->max_concurrent});
  json::bj::object answer;
  answer["account_id"] = limits->account_id;
  answer["requests_per_second"] = limits->requests_per_second;
  answer["burst"] = limits->burst;
  answer["max_concurrent"] = limits->max_concurrent;
  const std::string body = json::bj::serialize(answer);
  co_await exchange.respond_json(200, body);
}

awaitable<void> handle_balance(http::Exchange& exchange, ApiContext& context) {
  const std::optional<std::string> account =
      co_await authenticate_consumer(exchange, context.keys, context.store_worker);
  if (!account) co_return;
  auto read_balance = [&context, &account] { return context.ledger.balance(*account); };
  auto balance = co_await context.store_worker.run(read_balance);
  if (!balance) {
    co_await respond_store_failure(exchange, balance.error());
    co_return;
  }
  co_await exchange.respond_json(200, proto::encode_balance(*account, *balance));
}

// The account's charges, newest first (?limit=N, at most 1000, default 100).
awaitable<void> handle_usage(http::Exchange& exchange, ApiContext& context) {
  const std::optional<std::string> account =
      co_await authenticate_consumer(exchange, context.keys, context.store_worker);
  if (!account) co_return;
  const std::optional<int> limit = limit_param(exchange.query(), 100, 1000);
  if (!limit) {
    co_await exchange.respond_error(proto::invalid_request("limit must be a number from 1 to 1000", "limit"));
    co_return;
  }
  auto read_charges = [&context, &account, &limit] { return context.store.charges(*account, *limit); };
  auto charges = co_await context.store_worker.run(read_charges);
  if (!charges) {
    co_await respond_store_failure(exchange, charges.error());
    co_return;
  }
  std::vector<proto::UsageEntry> entries;
  for (const LedgerEntry& charge : *charges) entries.push_back({charge.request_id, -charge.amount, charge.created_at});
  co_await exchange.respond_json(200, proto::encode_usage(*account, entries));
}

}  // namespace

void add_billing_routes(http::Router& routes, ApiContext& context) {
  using http::bhttp::verb;
  auto route = [&context](auto handler) {
    return [&context, handler](http::Exchange& e) { return handler(e, context); };
  };
  routes.add(verb::post, "/v1/admin/credit", route(handle_admin_credit));
  routes.add(verb::put, "/v1/admin/pricing", route(handle_admin_pricing));
  routes.add(verb::get, "/v1/admin/pricing", route(handle_admin_pricing));
  routes.add(verb::post, "/v1/admin/referrals", route(handle_admin_referrals));
  routes.add(verb::put, "/v1/admin/limits", route(handle_admin_limits));
  routes.add(verb::get, "/v1/balance", route(handle_balance));
  routes.add(verb::get, "/v1/usage", route(handle_usage));
}

}  // namespace darkbloom::coordinator
