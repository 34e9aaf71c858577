// OpenAI request bodies, as a consumer sends them: the coordinator's parsing step (validation,
// the max_tokens bound, the plaintext it seals), the provider reading that plaintext back (it
// must accept the same request), and the provider's prompt building and tokenization on a small
// synthetic model.
// The first byte picks the endpoint; the rest is the body.
#include <unistd.h>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "coordinator/api/completion_handler.h"
#include "engine/engine.h"
#include "engine/model/model_synth.h"
#include "fuzz/fuzz_support.h"
#include "proto/openai.h"
#include "proto/provider_messages.h"
#include "provider/openai_bridge.h"

namespace {

using namespace darkbloom;

std::unique_ptr<engine::Engine> make_engine() {
  const std::filesystem::path path =
      std::filesystem::temp_directory_path() / ("darkbloom-fuzz-model-" + std::to_string(getpid()) + ".gguf");
  engine::SynthOptions options;
  options.n_layer = 1;
  options.n_embd = 64;
  options.n_head = 2;
  options.n_head_kv = 1;
  options.n_ff = 128;
  options.context_length = 512;
  if (!engine::synthesize_model(options, path.string())) fuzz::invariant_failed("cannot write the fuzz model");
  engine::EngineOptions engine_options;
  engine_options.model_path = path.string();
  engine_options.threads = 1;
  engine_options.kv_memory_mb = 4;
  auto engine = engine::Engine::load(engine_options);
  std::filesystem::remove(path);
  if (!engine) fuzz::invariant_failed("cannot load the fuzz model", engine.error().message);
  return std::move(*engine);
}

const engine::Engine& fuzz_engine() {
  static const std::unique_ptr<engine::Engine> engine = make_engine();
  return *engine;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const uint8_t mode = fuzz::take_mode(data, size);
  const auto endpoint = (mode & 1) != 0 ? proto::Endpoint::completions : proto::Endpoint::chat_completions;
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  // What the coordinator does with a body: parse, validate, bound max_tokens, encode the plaintext.
  const coordinator::ParsedBody parsed = coordinator::parse_body(endpoint, body, 8192);
  if (!parsed.parsed) {
    if (parsed.error.status < 400 || parsed.error.status > 499 || parsed.error.message.empty()) {
      fuzz::invariant_failed("a refused body must give a 4xx with a message", parsed.error.to_json());
    }
    return 0;
  }
  const proto::CompletionRequest& request = *parsed.parsed;

  // The plaintext as the provider opens it: it must read and accept exactly that request.
  auto opened = proto::decode_sealed_request(parsed.plaintext);
  if (!opened) fuzz::invariant_failed("the provider cannot read a sealed request", opened.error().message);
  if (opened->endpoint != proto::endpoint_name(endpoint)) fuzz::invariant_failed("the endpoint changed on the way");
  proto::ApiError provider_error;
  auto again = proto::parse_completion_request(endpoint, json::bj::value(std::move(opened->body)), &provider_error);
  if (!again) fuzz::invariant_failed("the provider refuses what the coordinator accepted", provider_error.to_json());
  if (again->model != request.model || again->stream != request.stream || !again->max_tokens ||
      *again->max_tokens != request.max_tokens.value_or(8192) || again->messages.size() != request.messages.size()) {
    fuzz::invariant_failed("the provider reads a request differently from the coordinator");
  }

  // The provider's side: the prompt through the chat template and the tokenizer.
  proto::ApiError build_error;
  auto generation = provider::to_generation_request(fuzz_engine(), *again, &build_error);
  if (!generation && (build_error.status < 400 || build_error.message.empty())) {
    fuzz::invariant_failed("a prompt the engine cannot take must give a clear error", build_error.to_json());
  }

  // The answer's first chunks carry the model name the consumer sent.
  const proto::ChunkFormatter formatter(endpoint, "fuzz", request.model, 0);
  (void)formatter.content_chunk(request.prompt.substr(0, 64));
  (void)formatter.finish_chunk("stop");
  return 0;
}
