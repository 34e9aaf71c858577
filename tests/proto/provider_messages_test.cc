#include "proto/provider_messages.h"

#include <gtest/gtest.h>

#include "base/encoding.h"

namespace darkbloom::proto {
namespace {

Register sample_register() {
  Register m;
  m.provider_version = "0.1.0";
  m.backend = "darkbloom-cpu";
  m.hardware = {"AMD EPYC", 16, 64.0, "", 0};
  m.models = {{"qwen3-0.6b", 123456, "q8_0", std::string(64, 'a')}};
  m.encryption_key.assign(32, 7);
  m.prefill_tps = 500;
  m.decode_tps = 40;
  m.max_concurrency = 4;
  return m;
}

std::string replace(std::string text, const std::string& from, const std::string& to) {
  const size_t at = text.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return text.replace(at, from.size(), to);
}

template <class Variant>
std::string encode_again(const Variant& message) {
  return std::visit(
      [](const auto& m) -> std::string {
        if constexpr (std::is_same_v<std::decay_t<decltype(m)>, UnknownMessage>) {
          return "";
        } else {
          return encode(m);
        }
      },
      message);
}

TEST(ProviderMessages, register_round_trips) {
  auto decoded = decode_provider_message(encode(sample_register()));
  ASSERT_TRUE(decoded) << decoded.error().message;
  const auto& m = std::get<Register>(*decoded);
  EXPECT_EQ(m.models.at(0).id, "qwen3-0.6b");
  EXPECT_EQ(m.hardware.cores, 16);
  EXPECT_EQ(m.encryption_key, std::vector<uint8_t>(32, 7));
  EXPECT_EQ(m.max_concurrency, 4);
}

TEST(ProviderMessages, every_message_round_trips) {
  SealedPayload sealed{std::vector<uint8_t>(32, 1), std::vector<uint8_t>(60, 2)};
  for (const std::string& frame :
       {encode(Heartbeat{"serving", "m", 3, 40, 1, 2, 100, 900, 0.5, 0.25}), encode(InferenceAccepted{"r1"}),
        encode(InferenceChunk{"r1", sealed}), encode(InferenceComplete{"r1", sealed}),
        encode(InferenceError{"r1", 499, "cancelled", ""}),
        encode(InferenceError{"r1", 400, "too long", "context_length_exceeded"}),
        encode(LoadModelStatus{"m", "succeeded", ""})}) {
    auto decoded = decode_provider_message(frame);
    ASSERT_TRUE(decoded) << frame << ": " << decoded.error().message;
    EXPECT_EQ(encode_again(*decoded), frame);
  }
  for (const std::string& frame :
       {encode(Registered{"prov_1", 1, 5000}), encode(InferenceRequest{"r1", "m", sealed}), encode(Cancel{"r1"}),
        encode(LoadModel{"m"}), encode(TrustStatus{"none", "why"}), encode(Earned{"r1", 950})}) {
    auto decoded = decode_coordinator_message(frame);
    ASSERT_TRUE(decoded) << frame << ": " << decoded.error().message;
    EXPECT_EQ(encode_again(*decoded), frame);
  }
}

// Blind requests: the terms in clear on the request, the signed usage on the completion.
TEST(ProviderMessages, blind_fields_round_trip) {
  SealedPayload sealed{std::vector<uint8_t>(32, 1), std::vector<uint8_t>(60, 2)};
  InferenceRequest request{"att_1", "m", sealed, BlindTerms{64, 2}};
  auto decoded_request = decode_coordinator_message(encode(request));
  ASSERT_TRUE(decoded_request);
  const auto& terms = std::get<InferenceRequest>(*decoded_request).blind;
  ASSERT_TRUE(terms);
  EXPECT_EQ(terms->max_tokens, 64);
  EXPECT_EQ(terms->n, 2);
  EXPECT_FALSE(
      std::get<InferenceRequest>(*decode_coordinator_message(encode(InferenceRequest{"r", "m", sealed}))).blind);
  EXPECT_FALSE(decode_coordinator_message(replace(encode(request), R"("n":2)", R"("n":9)"))) << "more choices than any";
  EXPECT_FALSE(decode_coordinator_message(replace(encode(request), R"("max_tokens":64)", R"("max_tokens":0)")));

  InferenceComplete complete{"att_1", sealed, BlindUsage{10, 20, 3, "c2ln"}};
  auto decoded = decode_provider_message(encode(complete));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(encode_again(*decoded), encode(complete));
  const auto& usage = std::get<InferenceComplete>(*decoded).usage;
  ASSERT_TRUE(usage);
  EXPECT_EQ(usage->completion_tokens, 20);
  EXPECT_EQ(usage->chunks, 3u);
  EXPECT_FALSE(decode_provider_message(replace(encode(complete), R"("prompt_tokens":10)", R"("prompt_tokens":-1)")));
  EXPECT_EQ(feature_bits({std::string(kFeatureBlind)}), kFeatureBitBlind);
}

// Model proofs and the hardware level: challenges, answers, refusals and TPM evidence.
TEST(ProviderMessages, proof_messages_round_trip) {
  AttestationResponse answer{"n", "t", "s", "{}", "ss", {}};
  answer.model_proofs.push_back({"m", 7, std::vector<uint8_t>(1000, 3), {std::string(64, 'a'), std::string(64, 'b')}});
  CredentialResponse credential;
  credential.credential.assign(32, 9);
  CredentialResponse refused;
  refused.error = "the TPM said no";
  Register registered = sample_register();
  registered.models.front().merkle_root = std::string(64, 'c');
  registered.attestation =
      AttestationBundle{"{}", "sig", "", "", std::vector<uint8_t>(900, 1), std::vector<uint8_t>(90, 2)};
  for (const std::string& frame : {encode(answer), encode(credential), encode(refused), encode(registered)}) {
    auto decoded = decode_provider_message(frame);
    ASSERT_TRUE(decoded) << frame.substr(0, 200) << ": " << decoded.error().message;
    EXPECT_EQ(encode_again(*decoded), frame);
  }
  AttestationChallenge challenge{"n", "t", {{"m", 3}, {"m", 9}}};
  Registered welcome{"prov_1", 1, 5000, {{"other", "model refused: why"}}};
  CredentialChallenge activation{std::vector<uint8_t>(70, 4), std::vector<uint8_t>(258, 5)};
  for (const std::string& frame : {encode(challenge), encode(welcome), encode(activation)}) {
    auto decoded = decode_coordinator_message(frame);
    ASSERT_TRUE(decoded) << frame << ": " << decoded.error().message;
    EXPECT_EQ(encode_again(*decoded), frame);
  }
}

TEST(ProviderMessages, unknown_types_and_fields_are_tolerated) {
  auto unknown = decode_provider_message(R"({"type":"telemetry","x":1})");
  ASSERT_TRUE(unknown);
  EXPECT_EQ(std::get<UnknownMessage>(*unknown).type, "telemetry");
  auto extra = decode_provider_message(R"({"type":"inference_accepted","request_id":"r","future_field":[1,2]})");
  ASSERT_TRUE(extra);
}

TEST(ProviderMessages, malformed_frames_name_the_problem) {
  const std::string good = encode(sample_register());
  const std::pair<std::string, std::string> cases[] = {
      {"not json", "invalid JSON"},
      {"[1,2]", "not a JSON object"},
      {R"({"no_type":1})", "type: is required"},
      {replace(good, "\"protocol_version\":1", "\"protocol_version\":2"), "protocol_version: 2 is not supported"},
      {replace(good, "\"cores\":16", "\"cores\":\"16\""), "cores: must be an integer"},
      {replace(good, "\"max_concurrency\":4", "\"max_concurrency\":0"), "max_concurrency: must be between"},
      {replace(good, base64_encode(std::vector<uint8_t>(32, 7)), "AAAA"), "encryption_key"},
      {R"({"type":"inference_chunk","request_id":"r","text":"plaintext"})", "sealed: is required"},
      {R"({"type":"inference_chunk","request_id":"r","sealed":{"ephemeral_public_key":"AAAA","ciphertext":"AAAA"}})",
       "ephemeral_public_key must be 32 bytes"},
      {R"({"type":"inference_complete","request_id":"r","usage":{"prompt_tokens":1,"completion_tokens":2},"finish_reason":"stop"})",
       "sealed: is required"},
      {R"({"type":"inference_error","request_id":"","status_code":500,"message":"x"})",
       "request_id: must not be empty"},
      {R"({"type":"heartbeat","status":"sleeping"})", "status: must be idle or serving"},
      {replace(good, "\"models\":[",
               "\"models\":[{\"id\":\"qwen3-0.6b\",\"size_bytes\":1,\"quantization\":\"q8_0\","
               "\"weight_hash\":\"00\"},"),
       "id: appears twice"},
      {replace(good, "\"weight_hash\":", "\"merkle_root\":\"ABCD\",\"weight_hash\":"),
       "merkle_root: must be 64 lowercase"},
      {R"({"type":"credential_response","credential":"AAAA","error":"x"})", "exactly one of credential and error"},
      {R"({"type":"credential_response","credential":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"})",  // 33 bytes
       "at most 32 bytes"},
      {R"({"type":"attestation_response","nonce":"n","timestamp":"t","signature":"s","status":"{}",)"
       R"("status_signature":"s","model_proofs":[{"model":"m","index":1,"chunk":"AAAA","path":["zz"]}]})",
       "path: entries must be 64 lowercase hex digits"},
  };
  for (const auto& [frame, expected] : cases) {
    auto decoded = decode_provider_message(frame);
    ASSERT_FALSE(decoded) << frame;
    EXPECT_NE(decoded.error().message.find(expected), std::string::npos) << decoded.error().message;
  }
}

// Whatever nesting a consumer's body may have, the provider reads it inside the sealed envelope.
TEST(ProviderMessages, a_sealed_request_holds_a_body_nested_as_deeply_as_a_consumer_may_send) {
  // The body object and kMaxDepth - 1 arrays inside it: as deep as a consumer's body may nest.
  std::string nested = "1";
  for (size_t depth = 1; depth < json::kMaxDepth; ++depth) nested = "[" + nested + "]";
  const std::string body = R"({"model":"m","deep":)" + nested + "}";
  auto parsed = json::parse(body, "body");
  ASSERT_TRUE(parsed) << parsed.error().message;
  ASSERT_FALSE(static_cast<bool>(json::parse(R"({"deep":[)" + nested + "]}", "deeper")))
      << "the test nests to the limit";
  auto decoded = decode_sealed_request(encode(SealedRequest{"chat.completions", parsed->as_object()}));
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(json::dump(decoded->body), body);
}

TEST(ProviderMessages, frames_over_the_limit_are_refused) {
  // docs/protocol.md states this number: the frame for a 10 MiB body, sealed, in base64, + 64 KiB.
  static_assert(kMaxFrameBytes == 14'046'550);
  // Valid in every field: only the frame's size is wrong.
  const std::string padding(kMaxFrameBytes, 'x');
  auto huge = decode_provider_message(R"({"type":"inference_accepted","request_id":"r","padding":")" + padding + "\"}");
  ASSERT_FALSE(huge);
  EXPECT_NE(huge.error().message.find("larger than " + std::to_string(kMaxFrameBytes) + " bytes"), std::string::npos);
  EXPECT_TRUE(decode_provider_message(R"({"type":"inference_accepted","request_id":"r","padding":")" +
                                      padding.substr(0, 1000) + "\"}"));
}

TEST(SealedContents, round_trip_and_validate) {
  SealedRequest request{"chat.completions", json::bj::object{{"model", "m"}}};
  auto decoded = decode_sealed_request(encode(request));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->endpoint, "chat.completions");
  EXPECT_FALSE(decode_sealed_request(R"({"endpoint":"embeddings","body":{}})"));
  auto chunk = decode_chunk_content(encode(ChunkContent{7, "héllo"}));
  ASSERT_TRUE(chunk);
  EXPECT_EQ(chunk->seq, 7u);
  EXPECT_EQ(chunk->text, "héllo");
  EXPECT_FALSE(decode_chunk_content(R"({"text":"no sequence number"})"));
  auto completion = decode_completion_content(encode(CompletionContent{3, 10, 20, "length"}));
  ASSERT_TRUE(completion);
  EXPECT_EQ(completion->seq, 3u);
  EXPECT_EQ(completion->completion_tokens, 20);
  EXPECT_FALSE(
      decode_completion_content(R"({"seq":0,"prompt_tokens":1,"completion_tokens":1,"finish_reason":"maybe"})"));
  EXPECT_TRUE(
      decode_completion_content(R"({"seq":0,"prompt_tokens":1,"completion_tokens":1,"finish_reason":"tool_calls"})"));
}

TEST(SealedContents, tool_call_pieces_round_trip_and_are_bounded) {
  ChunkContent content;
  content.seq = 2;
  content.tool_calls = {{0, "call_x", "get_weather", R"({"a":)"}, {1, "", "", "1}"}};
  auto decoded = decode_chunk_content(encode(content));
  ASSERT_TRUE(decoded) << decoded.error().message;
  ASSERT_EQ(decoded->tool_calls.size(), 2u);
  EXPECT_EQ(decoded->tool_calls[0].id, "call_x");
  EXPECT_EQ(decoded->tool_calls[0].name, "get_weather");
  EXPECT_EQ(decoded->tool_calls[1].index, 1);
  EXPECT_EQ(decoded->tool_calls[1].arguments, "1}");
  EXPECT_FALSE(decode_chunk_content(R"({"seq":0,"text":"","tool_calls":[{"index":16,"arguments":""}]})"));
  EXPECT_FALSE(decode_chunk_content(R"({"seq":0,"text":"","tool_calls":[{"index":0}]})"));
  EXPECT_FALSE(decode_chunk_content(R"({"seq":0,"text":"","tool_calls":{"index":0}})"));
}

}  // namespace
}  // namespace darkbloom::proto
