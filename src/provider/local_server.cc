#include "provider/local_server.h"

#include <fmt/format.h>

#include <atomic>
#include <chrono>

#include "base/json.h"
#include "base/log.h"
#include "base/time.h"
#include "provider/openai_bridge.h"

namespace darkbloom::provider {
namespace {

namespace bj = json::bj;
using net::awaitable;

std::string next_request_id() {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("local-{:x}-{}", unix_seconds_now(), counter.fetch_add(1));
}

}  // namespace

LocalServer::LocalServer(net::asio::any_io_executor executor, engine::Engine& engine, std::string model_id,
                         http::ServerLimits limits, std::string api_key)
    : executor_(executor),
      engine_(engine),
      api_key_(std::move(api_key)),
      model_id_(std::move(model_id)),
      created_(unix_seconds_now()),
      server_(executor, routes(), limits) {
  if (api_key_.empty()) return;
  server_.set_header_check([this](const http::Request& request, const std::string&)
                               -> awaitable<std::optional<std::pair<proto::ApiError, http::Headers>>> {
    std::optional<std::pair<proto::ApiError, http::Headers>> refusal;
    const std::string_view target(request.target().data(), request.target().size());
    if (target == "/health" || key_matches(request)) co_return refusal;
    refusal.emplace(proto::authentication_error("Incorrect or missing API key: send \"Authorization: Bearer <key>\""),
                    http::Headers{{"WWW-Authenticate", "Bearer"}});
    co_return refusal;
  });
}

awaitable<bool> LocalServer::authorized(http::Exchange& exchange) {
  // Requests with a body were checked before it was read; these are the others (GET).
  if (api_key_.empty() || key_matches(exchange.request())) co_return true;
  const proto::ApiError refusal =
      proto::authentication_error("Incorrect or missing API key: send \"Authorization: Bearer <key>\"");
  co_await exchange.respond_error(refusal);
  co_return false;
}

bool LocalServer::key_matches(const http::Request& request) const {
  const auto header = request.find(http::bhttp::field::authorization);
  if (header == request.end()) return false;
  const std::string_view value(header->value().data(), header->value().size());
  constexpr std::string_view kBearer = "Bearer ";
  if (!value.starts_with(kBearer)) return false;
  const std::string_view given = value.substr(kBearer.size());
  // Constant time in the key's contents: a wrong key says nothing about how close it was.
  unsigned char difference = given.size() == api_key_.size() ? 0 : 1;
  for (size_t i = 0; i < api_key_.size(); ++i) {
    difference |= static_cast<unsigned char>(api_key_[i] ^ (i < given.size() ? given[i] : 0));
  }
  return difference == 0;
}

http::Router LocalServer::routes() {
  http::Router router;
  router.add(http::bhttp::verb::get, "/health", [](http::Exchange& exchange) -> awaitable<void> {
    co_await exchange.respond_json(200, R"({"status":"ok"})");
  });
  router.add(http::bhttp::verb::get, "/v1/models",
             [this](http::Exchange& exchange) { return handle_models(exchange); });
  router.add_prefix(http::bhttp::verb::get, "/v1/models/",
                    [this](http::Exchange& exchange) { return handle_model(exchange); });
  router.add(http::bhttp::verb::post, "/v1/chat/completions", [this](http::Exchange& exchange) {
    return handle_completion(exchange, proto::Endpoint::chat_completions);
  });
  router.add(http::bhttp::verb::post, "/v1/completions",
             [this](http::Exchange& exchange) { return handle_completion(exchange, proto::Endpoint::completions); });
  return router;
}

bj::object LocalServer::model_object() const {
  // Built outside the coroutine: GCC 12 mis-compiles brace-initialised JSON inside coroutines.
  const auto& config = engine_.model_config();
  bj::object metadata;
  metadata["architecture"] = config.architecture_name;
  metadata["context_length"] = engine_.context();
  metadata["name"] = config.name;
  bj::object model;
  model["id"] = model_id_;
  model["object"] = "model";
  model["created"] = created_;
  model["owned_by"] = "darkbloom";
  model["metadata"] = std::move(metadata);
  return model;
}

std::string LocalServer::models_json() const {
  bj::array data;
  data.push_back(model_object());
  bj::object list;
  list["object"] = "list";
  list["data"] = std::move(data);
  return bj::serialize(list);
}

awaitable<void> LocalServer::handle_models(http::Exchange& exchange) {
  // A named result: GCC 12 mishandles a co_await inside a condition.
  const bool allowed = co_await authorized(exchange);
  if (!allowed) co_return;
  co_await exchange.respond_json(200, models_json());
}

awaitable<void> LocalServer::handle_model(http::Exchange& exchange) {
  // A named result: GCC 12 mishandles a co_await inside a condition.
  const bool allowed = co_await authorized(exchange);
  if (!allowed) co_return;
  const std::string id = http::percent_decode(exchange.path().substr(std::string_view("/v1/models/").size()));
  if (id != model_id_) {
    const proto::ApiError not_found = proto::model_not_found(id);
    co_await exchange.respond_error(not_found);
    co_return;
  }
  const std::string body = bj::serialize(model_object());
  co_await exchange.respond_json(200, body);
}

awaitable<void> LocalServer::handle_completion(http::Exchange& exchange, proto::Endpoint endpoint) {
  const auto parse_start = std::chrono::steady_clock::now();
  // A named result: GCC 12 mishandles a co_await inside a condition.
  const bool allowed = co_await authorized(exchange);
  if (!allowed) co_return;
  proto::ApiError error;
  auto request = proto::parse_completion_body(endpoint, exchange.request().body(), &error);
  if (!request) {
    co_await exchange.respond_error(error);
    co_return;
  }
  if (request->model != model_id_) {
    proto::ApiError not_found = proto::model_not_found(request->model);
    not_found.message += fmt::format(" (this server serves '{}')", model_id_);
    co_await exchange.respond_error(not_found);
    co_return;
  }
  auto generation = to_generation_request(engine_, *request, &error);
  if (!generation) {
    co_await exchange.respond_error(error);
    co_return;
  }
  auto queue = std::make_shared<EngineEventQueue>(executor_);
  auto id = engine_.submit(std::move(*generation), std::make_shared<QueueSink>(queue));
  if (!id) {
    co_await exchange.respond_error(proto::invalid_request(id.error().message));
    co_return;
  }
  const engine::RequestId engine_id = *id;
  exchange.on_client_gone([this, engine_id] { engine_.cancel(engine_id); });

  const std::string request_id = next_request_id();
  const int64_t parse_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - parse_start).count();
  const Answer answer{
      endpoint,
      proto::ChunkFormatter(endpoint, proto::response_id(endpoint, request_id), model_id_, unix_seconds_now()),
      {{"X-Request-Id", request_id}, {"X-Timing", fmt::format(R"({{"parse_us":{}}})", parse_us)}},
      parse_us};
  if (request->stream) {
    co_await relay_stream(exchange, *queue, engine_id, answer, request->include_usage);
  } else {
    co_await respond_whole(exchange, *queue, answer);
  }
}

awaitable<void> LocalServer::respond_whole(http::Exchange& exchange, EngineEventQueue& queue, const Answer& answer) {
  std::string text;
  LogprobsCollector collector(answer.endpoint, engine_.tokenizer());
  bj::value logprobs;
  for (;;) {
    EngineEvent event = co_await queue.pop();
    if (auto* sampled = std::get_if<engine::SampledToken>(&event)) {
      collector.add(*sampled);
      continue;
    }
    if (auto* delta = std::get_if<std::string>(&event)) {
      text += *delta;
      proto::append_logprobs(&logprobs, collector.take(*delta));
      continue;
    }
    const auto& finish = std::get<engine::FinishEvent>(event);
    if (finish.reason == engine::FinishReason::cancelled) co_return;  // the client left
    if (finish.reason == engine::FinishReason::error) {
      co_await exchange.respond_error(proto::server_error("Generation failed: " + finish.error), answer.headers);
      co_return;
    }
    const proto::Usage usage{finish.prompt_tokens, finish.completion_tokens};
    const std::string body =
        answer.format.complete_response(text, openai_finish_reason(finish.reason), usage, logprobs);
    // A whole answer knows every phase by now.
    std::vector<std::pair<std::string, std::string>> headers{answer.headers.front()};
    headers.emplace_back("X-Timing", fmt::format(R"({{"parse_us":{},"queue_us":{},"prefill_us":{},"decode_us":{}}})",
                                                 answer.parse_us, static_cast<int64_t>(finish.queue_ms * 1000),
                                                 static_cast<int64_t>(finish.prefill_ms * 1000),
                                                 static_cast<int64_t>(finish.decode_ms * 1000)));
    co_await exchange.respond_json(200, body, headers);
    co_return;
  }
}

awaitable<void> LocalServer::relay_stream(http::Exchange& exchange, EngineEventQueue& queue,
                                          engine::RequestId engine_id, const Answer& answer, bool include_usage) {
  if (!co_await exchange.start_events(answer.headers)) {
    engine_.cancel(engine_id);
    co_return;
  }
  const proto::ChunkFormatter& format = answer.format;
  bool client_ok = true;
  if (auto opening = format.opening_chunk()) client_ok = co_await exchange.send_event(*opening);
  LogprobsCollector collector(answer.endpoint, engine_.tokenizer());
  for (;;) {
    EngineEvent event = co_await queue.pop();
    if (auto* sampled = std::get_if<engine::SampledToken>(&event)) {
      collector.add(*sampled);
      continue;
    }
    if (auto* delta = std::get_if<std::string>(&event)) {
      const std::string chunk = format.content_chunk(*delta, collector.take(*delta));
      if (client_ok && !co_await exchange.send_event(chunk)) {
        client_ok = false;
        engine_.cancel(engine_id);
      }
      continue;
    }
    const auto& finish = std::get<engine::FinishEvent>(event);
    if (!client_ok || finish.reason == engine::FinishReason::cancelled) co_return;
    if (finish.reason == engine::FinishReason::error) {
      co_await exchange.send_event(
          proto::stream_error_event(proto::server_error("Generation failed: " + finish.error)));
    } else {
      co_await exchange.send_event(format.finish_chunk(openai_finish_reason(finish.reason)));
      if (include_usage) {
        co_await exchange.send_event(format.usage_chunk({finish.prompt_tokens, finish.completion_tokens}));
      }
    }
    co_await exchange.send_event("[DONE]");
    co_await exchange.end_events();
    co_return;
  }
}

}  // namespace darkbloom::provider
