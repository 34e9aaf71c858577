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
  server_.set_header_check(
      [this](const http::Request& request,
             const std::string&) -> awaitable<std::optional<std::pair<proto::ApiError, http::Headers>>> {
        // Built in a plain function: GCC 12 mis-compiles braced temporaries inside coroutines.
        co_return refusal_for(request);
      });
}

std::optional<std::pair<proto::ApiError, http::Headers>> LocalServer::refusal_for(const http::Request& request) const {
  const std::string_view target(request.target().data(), request.target().size());
  if (target == "/health" || key_matches(request)) return std::nullopt;
  return std::make_pair(
      proto::authentication_error("Incorrect or missing API key: send \"Authorization: Bearer <key>\""),
      http::Headers{{"WWW-Authenticate", "Bearer"}});
}

awaitable<bool> LocalServer::authorized(http::Exchange& exchange) {
  // Requests with a body were checked before it was read; these are the others (GET).
  const std::optional<std::pair<proto::ApiError, http::Headers>> refusal =
      api_key_.empty() ? std::nullopt : refusal_for(exchange.request());
  if (!refusal) co_return true;
  co_await exchange.respond_error(refusal->first, refusal->second);
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
  router.add(http::bhttp::verb::post, "/v1/responses",
             [this](http::Exchange& exchange) { return handle_completion(exchange, proto::Endpoint::responses); });
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
  auto request = endpoint == proto::Endpoint::responses
                     ? proto::parse_responses_body(exchange.request().body(), &error)
                     : proto::parse_completion_body(endpoint, exchange.request().body(), &error);
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
  // A Responses request runs as the chat completion it was translated into.
  const proto::Endpoint runs_as = endpoint == proto::Endpoint::responses ? proto::Endpoint::chat_completions : endpoint;
  auto run = std::make_shared<ChoiceRun>(engine_, executor_, runs_as, std::move(*generation), request->n,
                                         tool_call_parser(engine_, *request));
  if (auto started = run->start(); !started) {
    co_await exchange.respond_error(proto::invalid_request(started.error().message));
    co_return;
  }
  exchange.on_client_gone([run] { run->cancel(); });

  const std::string request_id = next_request_id();
  const int64_t parse_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - parse_start).count();
  Answer answer{proto::answer_writer(*request, request_id, unix_seconds_now()), request_id, parse_us};
  if (request->stream) {
    co_await relay_stream(exchange, *run, answer, request->include_usage);
  } else {
    co_await respond_whole(exchange, *run, answer);
  }
}

http::Headers LocalServer::Answer::headers(const engine::FinishEvent* finished) const {
  const std::string timing = finished == nullptr
                                 ? fmt::format(R"({{"parse_us":{}}})", parse_us)
                                 : fmt::format(R"({{"parse_us":{},"queue_us":{},"prefill_us":{},"decode_us":{}}})",
                                               parse_us, static_cast<int64_t>(finished->queue_ms * 1000),
                                               static_cast<int64_t>(finished->prefill_ms * 1000),
                                               static_cast<int64_t>(finished->decode_ms * 1000));
  return {{"X-Request-Id", request_id}, {"X-Timing", timing}};
}

namespace {

// What the choices of an answer add up to, once every one has finished.
struct Totals {
  proto::Usage usage;
  const engine::FinishEvent* failed = nullptr;  // an error first, else a cancellation
};

Totals totals_of(const std::vector<engine::FinishEvent>& finishes) {
  Totals totals;
  totals.usage.prompt_tokens = finishes[0].prompt_tokens;  // the prompt once, as OpenAI counts it
  for (const auto& finish : finishes) {
    totals.usage.completion_tokens += finish.completion_tokens;
    if (finish.reason == engine::FinishReason::error) {
      if (totals.failed == nullptr || totals.failed->reason != engine::FinishReason::error) totals.failed = &finish;
    } else if (finish.reason == engine::FinishReason::cancelled && totals.failed == nullptr) {
      totals.failed = &finish;
    }
  }
  return totals;
}

}  // namespace

awaitable<void> LocalServer::respond_whole(http::Exchange& exchange, ChoiceRun& run, Answer& answer) {
  std::vector<proto::ChunkFormatter::Choice> choices(static_cast<size_t>(run.choices()));
  std::vector<engine::FinishEvent> finishes(choices.size());
  while (!run.finished()) {
    ChoiceRun::Event event = co_await run.next();
    auto& choice = choices[static_cast<size_t>(event.index)];
    if (!event.finish) {
      choice.text += event.text;
      proto::append_logprobs(&choice.logprobs, event.logprobs);
      for (const auto& delta : event.tool_calls) proto::append_tool_call(&choice.tool_calls, delta);
      continue;
    }
    finishes[static_cast<size_t>(event.index)] = *event.finish;
    choice.finish_reason = event.finish_reason;
    if (event.finish->reason == engine::FinishReason::error) run.cancel();  // the answer cannot be whole
  }
  const Totals totals = totals_of(finishes);
  if (totals.failed && totals.failed->reason == engine::FinishReason::cancelled) co_return;  // the client left
  if (totals.failed) {
    const http::Headers headers = answer.headers();
    co_await exchange.respond_error(proto::server_error("Generation failed: " + totals.failed->error), headers);
    co_return;
  }
  const std::string body = answer.writer->whole(choices, totals.usage, nullptr);
  // A whole answer knows every phase by now (of its first choice).
  const http::Headers headers = answer.headers(&finishes[0]);
  co_await exchange.respond_json(200, body, headers);
}

awaitable<void> LocalServer::relay_stream(http::Exchange& exchange, ChoiceRun& run, Answer& answer,
                                          bool include_usage) {
  const http::Headers headers = answer.headers();
  if (!co_await exchange.start_events(headers)) {
    run.cancel();
    co_return;
  }
  proto::AnswerWriter& writer = *answer.writer;
  bool client_ok = co_await http::send_events(exchange, writer.start(run.choices()));
  std::vector<engine::FinishEvent> finishes(static_cast<size_t>(run.choices()));
  std::vector<std::string> reasons(finishes.size());
  while (!run.finished()) {
    ChoiceRun::Event event = co_await run.next();
    std::vector<proto::StreamEvent> events;
    if (!event.finish) {
      events = writer.piece(event.index, event.text, event.logprobs, event.tool_calls);
    } else {
      finishes[static_cast<size_t>(event.index)] = *event.finish;
      reasons[static_cast<size_t>(event.index)] = event.finish_reason;
      const engine::FinishReason reason = event.finish->reason;
      if (reason == engine::FinishReason::cancelled || reason == engine::FinishReason::error) {
        run.cancel();  // the answer cannot be whole
        continue;
      }
      events = writer.finish_choice(event.index, event.finish_reason);
    }
    if (!client_ok) continue;
    client_ok = co_await http::send_events(exchange, std::move(events));
    if (!client_ok) run.cancel();
  }
  const Totals totals = totals_of(finishes);
  if (!client_ok || (totals.failed && totals.failed->reason == engine::FinishReason::cancelled)) co_return;
  if (totals.failed) {
    co_await http::send_events(exchange,
                               writer.error(proto::server_error("Generation failed: " + totals.failed->error)));
  } else {
    co_await http::send_events(exchange, writer.end(reasons, totals.usage, include_usage, nullptr));
  }
  co_await exchange.end_events();
}

}  // namespace darkbloom::provider
