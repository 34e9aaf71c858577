// `darkbloom serve`: the engine alone behind the OpenAI API on a local port, with no coordinator
// and no sealing. POST /v1/chat/completions, POST /v1/completions (streaming and not),
// GET /v1/models, GET /v1/models/{id}, GET /health. Optional API key (--api-key-file); X-Timing
// carries parse_us, and for whole answers queue_us, prefill_us and decode_us.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "http/server.h"
#include "proto/answer_stream.h"
#include "provider/openai_bridge.h"

namespace darkbloom::provider {

class LocalServer {
 public:
  // With an `api_key`, every route but /health needs "Authorization: Bearer <api_key>" (401 in
  // the OpenAI shape before the body is read).
  LocalServer(net::asio::any_io_executor executor, engine::Engine& engine, std::string model_id,
              http::ServerLimits limits = {}, std::string api_key = {});

  Result<uint16_t> listen(const std::string& host, uint16_t port) { return server_.listen(host, port); }
  void stop() { server_.stop(); }

 private:
  http::Router routes();
  bool key_matches(const http::Request& request) const;
  // The 401 (with its WWW-Authenticate header) for a request without the key; nullopt when it has it.
  std::optional<std::pair<proto::ApiError, http::Headers>> refusal_for(const http::Request& request) const;
  // True when no key is set or the request carries it; else answers 401.
  net::awaitable<bool> authorized(http::Exchange& exchange);
  // Parses, checks the model, submits to the engine, then answers in one of the two ways below.
  net::awaitable<void> handle_completion(http::Exchange& exchange, proto::Endpoint endpoint);
  // How an answer is written: the chunk format and the headers every answer carries.
  struct Answer {
    std::unique_ptr<proto::AnswerWriter> writer;  // the endpoint's shape
    std::string request_id;
    int64_t parse_us = 0;  // body read → submitted to the engine (parsing, template, tokens, grammar)
    // X-Request-Id and X-Timing: parse_us, and with the first choice's finish every phase.
    http::Headers headers(const engine::FinishEvent* finished = nullptr) const;
  };
  // stream: false. One JSON response once the engine has finished.
  net::awaitable<void> respond_whole(http::Exchange& exchange, ChoiceRun& run, Answer& answer);
  // stream: true. One SSE event per delta; a client that leaves cancels the generation.
  net::awaitable<void> relay_stream(http::Exchange& exchange, ChoiceRun& run, Answer& answer, bool include_usage);
  net::awaitable<void> handle_models(http::Exchange& exchange);
  // GET /v1/models/{id}: the one model, or 404.
  net::awaitable<void> handle_model(http::Exchange& exchange);
  json::bj::object model_object() const;
  std::string models_json() const;

  net::asio::any_io_executor executor_;
  engine::Engine& engine_;
  std::string api_key_;
  std::string model_id_;
  int64_t created_;
  http::Server server_;
};

}  // namespace darkbloom::provider
