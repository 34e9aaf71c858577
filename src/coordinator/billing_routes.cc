// The money routes of the coordinator: admin credit, pricing and referrals; a consumer's balance
// and usage. Amounts are integer micro-USD everywhere; bad input is an OpenAI-shaped 400 and
// leaves the ledger untouched.
#include <fmt/format.h>

#include "base/encoding.h"
#include "base/json.h"
#include "base/log.h"
#include "coordinator/coordinator.h"
#include "crypto/hash.h"

namespace darkbloom::coordinator {
namespace {

namespace bj = json::bj;
using http::awaitable;

// The JSON object body read by `read`, or (nullopt) the OpenAI-shaped 400 to answer in `error`.
template <class Read>
auto read_body(http::Exchange& exchange, Read read, proto::ApiError* error)
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

proto::ApiError store_error(const Error& error) {
  switch (error.code) {
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

// ?limit=N of /v1/usage: 100 when absent, nullopt unless 1..1000.
std::optional<int> usage_limit(std::string_view query) {
  int limit = 100;
  while (!query.empty()) {
    const size_t end = std::min(query.find('&'), query.size());
    const std::string_view pair = query.substr(0, end);
    query.remove_prefix(std::min(end + 1, query.size()));
    if (pair.substr(0, 6) != "limit=") continue;
    const std::string_view digits = pair.substr(6);
    if (digits.empty() || digits.size() > 4 ||
        !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::nullopt;
    }
    limit = std::stoi(std::string(digits));
  }
  if (limit < 1 || limit > 1000) return std::nullopt;
  return limit;
}

std::string usd(int64_t micro) {
  return fmt::format("{}{}.{:06d}", micro < 0 ? "-" : "", std::abs(micro) / 1'000'000, std::abs(micro) % 1'000'000);
}

bj::array prices_json(const std::vector<Price>& prices) {
  bj::array data;
  for (const Price& price : prices) {
    bj::object entry;
    entry["model"] = price.model;
    entry["input_per_million"] = price.input_per_million;
    entry["output_per_million"] = price.output_per_million;
    data.push_back(std::move(entry));
  }
  return data;
}

}  // namespace

// {"account_id", "amount_micro_usd", "idempotency_key"?}: the key makes a retried call a no-op.
awaitable<void> Coordinator::handle_admin_credit(http::Exchange& exchange) {
  if (!co_await check_admin(exchange)) co_return;
  proto::ApiError error;
  const auto body = read_body(exchange, read_credit, &error);
  if (!body) {
    co_await exchange.respond_error(error);
    co_return;
  }
  const std::string& account = body->account;
  const int64_t amount = body->amount;
  const std::string request_id =
      "credit_" + (body->idempotency_key ? *body->idempotency_key : hex_encode(crypto::random_bytes(12)));
  auto applied = store_->apply({LedgerEntry{request_id, account, LedgerKind::admin_credit, amount, 0}});
  if (!applied) {
    co_await exchange.respond_error(store_error(applied.error()));
    co_return;
  }
  auto balance = ledger_->balance(account);
  if (!balance) {
    co_await exchange.respond_error(store_error(balance.error()));
    co_return;
  }
  bj::object answer;
  answer["account_id"] = account;
  answer["credited_micro_usd"] = *applied > 0 ? amount : 0;  // 0: this idempotency key was used before
  answer["balance_micro_usd"] = *balance;
  co_await exchange.respond_json(200, bj::serialize(answer));
}

// PUT {"model"?, "input_per_million", "output_per_million"} sets a price ("" or absent: the
// default); GET lists them.
awaitable<void> Coordinator::handle_admin_pricing(http::Exchange& exchange) {
  if (!co_await check_admin(exchange)) co_return;
  if (exchange.request().method() == http::bhttp::verb::put) {
    proto::ApiError error;
    const auto price = read_body(exchange, read_price, &error);
    if (!price) {
      co_await exchange.respond_error(error);
      co_return;
    }
    if (auto set = store_->set_price(*price); !set) {
      co_await exchange.respond_error(store_error(set.error()));
      co_return;
    }
    if (auto reloaded = ledger_->reload_prices(); !reloaded) {
      co_await exchange.respond_error(store_error(reloaded.error()));
      co_return;
    }
  }
  auto prices = store_->prices();
  if (!prices) {
    co_await exchange.respond_error(store_error(prices.error()));
    co_return;
  }
  bj::object answer;
  answer["object"] = "list";
  answer["data"] = prices_json(*prices);
  bj::object defaults;
  defaults["input_per_million"] = config_.billing.default_input_per_million;
  defaults["output_per_million"] = config_.billing.default_output_per_million;
  defaults["minimum_charge"] = config_.billing.minimum_charge;
  answer["built_in_default"] = std::move(defaults);
  co_await exchange.respond_json(200, bj::serialize(answer));
}

// {"account_id", "referrer_id"}: set once.
awaitable<void> Coordinator::handle_admin_referrals(http::Exchange& exchange) {
  if (!co_await check_admin(exchange)) co_return;
  proto::ApiError error;
  const auto body = read_body(exchange, read_referral, &error);
  if (!body) {
    co_await exchange.respond_error(error);
    co_return;
  }
  const auto& [account, referrer] = *body;
  if (auto set = store_->set_referrer(account, referrer); !set) {
    co_await exchange.respond_error(store_error(set.error()));
    co_return;
  }
  bj::object answer;
  answer["account_id"] = account;
  answer["referrer_id"] = referrer;
  co_await exchange.respond_json(200, bj::serialize(answer));
}

awaitable<void> Coordinator::handle_balance(http::Exchange& exchange) {
  const std::optional<std::string> account = co_await consumer_account(exchange);
  if (!account) co_return;
  auto balance = ledger_->balance(*account);
  if (!balance) {
    co_await exchange.respond_error(store_error(balance.error()));
    co_return;
  }
  bj::object answer;
  answer["object"] = "balance";
  answer["account_id"] = *account;
  answer["balance_micro_usd"] = *balance;
  answer["balance_usd"] = usd(*balance);
  co_await exchange.respond_json(200, bj::serialize(answer));
}

// The account's charges, newest first (?limit=N, at most 1000, default 100).
awaitable<void> Coordinator::handle_usage(http::Exchange& exchange) {
  const std::optional<std::string> account = co_await consumer_account(exchange);
  if (!account) co_return;
  const std::optional<int> limit = usage_limit(exchange.query());
  if (!limit) {
    co_await exchange.respond_error(proto::invalid_request("limit must be a number from 1 to 1000", "limit"));
    co_return;
  }
  auto charges = store_->charges(*account, *limit);
  if (!charges) {
    co_await exchange.respond_error(store_error(charges.error()));
    co_return;
  }
  bj::array data;
  for (const LedgerEntry& charge : *charges) {
    bj::object entry;
    entry["request_id"] = charge.request_id;
    entry["cost_micro_usd"] = -charge.amount;
    entry["created"] = charge.created_at;
    data.push_back(std::move(entry));
  }
  bj::object answer;
  answer["object"] = "list";
  answer["account_id"] = *account;
  answer["data"] = std::move(data);
  co_await exchange.respond_json(200, bj::serialize(answer));
}

}  // namespace darkbloom::coordinator
