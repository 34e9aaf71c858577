// Coordinator-blind requests (docs/trust.md, "Requests the coordinator cannot read"): what the
// consumer's sealing proxy (`darkbloom proxy`) and the coordinator say to each other.
//
// The proxy seals the request body to up to kMaxBlindCopies providers, one copy each, and posts
// POST /v1/blind/completions with only what routing and billing need in clear. The coordinator
// answers with server-sent events: `chunk` (a sealed chunk, as the provider sealed it),
// `complete` (the sealed completion and the usage billed) or `error` (an OpenAI error object).
// The response headers X-Provider-Id and X-Attempt-Id name the copy that was served: the proxy
// opens the chunks with that copy's key and checks the receipt against that attempt id.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/result.h"
#include "proto/coordinator_api.h"
#include "proto/openai.h"
#include "proto/provider_messages.h"

namespace darkbloom::proto {

inline constexpr std::string_view kBlindPath = "/v1/blind/completions";
inline constexpr size_t kMaxBlindCopies = 3;
inline constexpr size_t kMaxProviderIdBytes = 128;

struct BlindCopy {
  std::string provider_id;
  SealedPayload sealed_body;  // opens, for that provider only, to a SealedRequest
};

struct BlindRequest {
  std::string model;
  int max_tokens = 0;  // per choice; the sealed body must not ask for more (the provider checks)
  int n = 1;
  bool ignore_eos = false;        // the body's, for the usage bound (BlindTerms)
  std::vector<BlindCopy> copies;  // 1 to kMaxBlindCopies, distinct providers, in order of preference
};

std::string encode(const BlindRequest& request);
// Validated: a problem is an invalid_request naming the field (`error`), and nullopt.
std::optional<BlindRequest> decode_blind_request(std::string_view body, ApiError* error);

// The `complete` event: the provider's sealed completion and what was billed for it.
struct BlindCompletion {
  SealedPayload sealed;
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
};
std::string encode_blind_chunk(const SealedPayload& sealed);
Result<SealedPayload> decode_blind_chunk(std::string_view data);
std::string encode(const BlindCompletion& completion);
Result<BlindCompletion> decode_blind_completion(std::string_view data);

// One page of GET /v1/providers/attestation, read back (the fields the proxy checks).
struct AttestationPage {
  std::vector<ProviderAttestation> providers;
  bool has_more = false;
};
Result<AttestationPage> decode_attestation_page(std::string_view body);

}  // namespace darkbloom::proto
