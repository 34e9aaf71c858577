#include "provider/sealing_proxy.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <random>

#include "attest/attestation_verifier.h"
#include "attest/tpm2_credential.h"
#include "base/encoding.h"
#include "base/log.h"
#include "base/time.h"
#include "proto/answer_stream.h"
#include "proto/responses.h"

namespace darkbloom::provider {
namespace {

using net::awaitable;
namespace bj = json::bj;

constexpr size_t kMaxErrorBodyBytes = 1u << 20;
constexpr size_t kMaxEventBytes = 16u << 20;  // one sealed chunk or completion, in base64
constexpr int kListingPage = 200;
constexpr size_t kMaxListingPageBytes = 64u << 20;
// A copy's JSON around its base64 ciphertext: the provider id, the key, the field names; and the
// request's own fields (model, terms). Generous: the count only decides how many copies fit.
constexpr size_t kCopyJsonBytes = proto::kMaxProviderIdBytes + proto::kMaxModelIdBytes + 256;

int clamp_tokens(int64_t tokens) {
  return static_cast<int>(std::clamp<int64_t>(tokens, 0, std::numeric_limits<int>::max()));
}
constexpr int kMaxListingPages = 50;

// One server-sent event from the coordinator.
struct Event {
  std::string name;
  std::string data;
};

// Splits the coordinator's event stream into events as its pieces arrive.
class EventReader {
 public:
  // Appends a piece; false when an event grows beyond kMaxEventBytes.
  bool add(std::string_view piece) {
    pending_ += piece;
    return pending_.size() <= kMaxEventBytes;
  }
  std::optional<Event> next() {
    // Each byte is scanned once, however many pieces an event comes in.
    const size_t end = pending_.find("\n\n", scanned_);
    if (end == std::string::npos) {
      scanned_ = pending_.size() > 0 ? pending_.size() - 1 : 0;
      return std::nullopt;
    }
    Event event;
    size_t at = 0;
    while (at < end) {
      size_t line_end = pending_.find('\n', at);
      if (line_end == std::string::npos || line_end > end) line_end = end;
      const std::string_view line(pending_.data() + at, line_end - at);
      if (line.starts_with("event: ")) event.name = line.substr(7);
      if (line.starts_with("data: ")) event.data += line.substr(6);
      at = line_end + 1;
    }
    pending_.erase(0, end + 2);
    scanned_ = 0;
    return event;
  }

 private:
  std::string pending_;
  size_t scanned_ = 0;  // pending_ holds no event end before this
};

// The OpenAI error in an error body or event, or a generic one when it is not one.
proto::ApiError error_from(std::string_view body, unsigned status) {
  proto::ApiError error = proto::provider_error("The coordinator failed the request");
  error.status = static_cast<int>(status);
  auto value = json::parse(body, "error");
  if (!value || !value->is_object()) return error;
  const auto* inner = value->as_object().if_contains("error");
  if (inner == nullptr || !inner->is_object()) return error;
  const bj::object& fields = inner->as_object();
  auto text = [&](const char* key) -> std::string {
    const auto* field = fields.if_contains(key);
    return field != nullptr && field->is_string() ? std::string(field->as_string()) : std::string();
  };
  if (!text("message").empty()) error.message = text("message").substr(0, 4096);
  if (!text("type").empty()) error.type = text("type").substr(0, 64);
  error.code = text("code").substr(0, 64);
  error.param = text("param").substr(0, 128);
  return error;
}

bool has(const std::vector<std::string>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// The features (proto::kFeature*) a request needs of its provider, by name.
std::vector<std::string_view> features_needed(const proto::CompletionRequest& request) {
  std::vector<std::string_view> needed{proto::kFeatureBlind};
  if (request.response_format != "text") needed.push_back(proto::kFeatureResponseFormat);
  if (request.logprobs) needed.push_back(proto::kFeatureLogprobs);
  if (request.n > 1) needed.push_back(proto::kFeatureChoices);
  bool tool_history = false;
  for (const auto& message : request.messages) tool_history |= !message.tool_calls.empty();
  if (!request.tools.empty() || tool_history) needed.push_back(proto::kFeatureTools);
  return needed;
}

// The answer of the provider that took the request: its chunks opened and checked in order, the
// choices gathered for the receipt (and for a whole response), the completion verified.
class BlindAnswer {
 public:
  BlindAnswer(std::shared_ptr<const VerifiedProvider> provider, const crypto::KeyPair& keys,
              const proto::CompletionRequest& request, std::string attempt_id)
      : provider_(std::move(provider)),
        channel_(provider_->encryption_key, keys),
        attempt_id_(std::move(attempt_id)),
        framed_(request.tool_choice != proto::ToolChoice::none && !request.tools.empty()),
        // What the coordinator checks on a plain answer it reads, checked here on a blind one.
        tools_(proto::tool_call_rules(request)),
        calls_(static_cast<size_t>(request.n)),
        logprobs_budget_(
            request.logprobs
                ? proto::max_logprobs_bytes(int64_t{request.max_tokens.value_or(0)} * request.n, request.top_logprobs)
                : 0),
        choices_(static_cast<size_t>(request.n)) {}
  ~BlindAnswer() {
    for (auto& choice : choices_) {
      crypto::wipe_memory(choice.text.data(), choice.text.size());
      for (auto& call : choice.tool_calls) crypto::wipe_memory(call.arguments.data(), call.arguments.size());
    }
    for (auto& choice : calls_) {
      for (auto& call : choice.calls) crypto::wipe_memory(call.arguments.data(), call.arguments.size());
    }
  }

  Result<proto::ChunkContent> open_chunk(std::string_view data) {
    auto sealed = proto::decode_blind_chunk(data);
    if (!sealed) return sealed.error();
    DARKBLOOM_RETURN_IF_ERROR(check_sender(*sealed));
    auto plaintext = channel_.open(sealed->ciphertext);
    if (!plaintext) return make_error(Errc::permission_denied, "a chunk does not open with this request's key");
    auto content = proto::decode_chunk_content(plaintext->view());
    if (!content) return content.error();
    if (!content->logprobs.is_null()) {
      // Logprobs only when asked for, within what an honest provider writes for them.
      logprobs_bytes_ += plaintext->size() - content->text.size();
      if (logprobs_bytes_ > logprobs_budget_) {
        return make_error(Errc::permission_denied, logprobs_budget_ == 0 ? "logprobs the request did not ask for"
                                                                         : "more logprobs than the request allows");
      }
    } else {
      // The coordinator bills on the chunks' sizes: a chunk is exactly its content as a provider
      // writes it, not padded to be billed more. (Logprobs' numbers do not re-encode to the byte.)
      std::string canonical = proto::encode(*content);
      const bool padded = canonical.size() != plaintext->size();
      crypto::wipe_memory(canonical.data(), canonical.size());
      if (padded) {
        return make_error(Errc::permission_denied, fmt::format("chunk {} is padded ({} bytes for {} of content)",
                                                               content->seq, plaintext->size(), canonical.size()));
      }
    }
    if (content->seq != next_seq_) {
      return make_error(
          Errc::permission_denied,
          fmt::format("chunk {} arrived where {} was due (replayed, reordered or lost)", content->seq, next_seq_));
    }
    if (content->index < 0 || static_cast<size_t>(content->index) >= choices_.size()) {
      return make_error(Errc::permission_denied, fmt::format("a chunk for choice {}", content->index));
    }
    size_t counted = 0;
    if (auto problem = proto::check_tool_pieces(tools_, calls_[static_cast<size_t>(content->index)],
                                                !content->text.empty(), content->tool_calls, &counted)) {
      return make_error(Errc::permission_denied, *problem);
    }
    next_seq_ += 1;
    auto& choice = choices_[static_cast<size_t>(content->index)];
    choice.text += content->text;
    proto::append_logprobs(&choice.logprobs, content->logprobs);
    return content;
  }

  // The completion opened, its chunk count and receipt checked; the receipt as OpenAI shows it.
  Result<std::pair<proto::CompletionContent, proto::Receipt>> open_completion(const proto::SealedPayload& sealed) {
    DARKBLOOM_RETURN_IF_ERROR(check_sender(sealed));
    auto plaintext = channel_.open(sealed.ciphertext);
    if (!plaintext) return make_error(Errc::permission_denied, "the completion does not open with this request's key");
    auto content = proto::decode_completion_content(plaintext->view());
    if (!content) return content.error();
    if (content->seq != next_seq_) {
      return make_error(Errc::permission_denied,
                        fmt::format("completion after {} chunks, {} were received", content->seq, next_seq_));
    }
    if (content->finish_reasons.empty()) content->finish_reasons.push_back(content->finish_reason);
    if (content->finish_reasons.size() != choices_.size()) {
      return make_error(Errc::permission_denied, "the completion's finish reasons do not match the choices");
    }
    if (auto problem = proto::check_tool_finish(tools_, calls_, content->finish_reasons)) {
      return make_error(Errc::permission_denied, *problem);
    }
    // The calls, gathered as they were checked, join their choices for the receipt and the answer.
    for (size_t i = 0; i < choices_.size(); ++i) choices_[i].tool_calls = std::move(calls_[i].calls);
    std::vector<std::string> texts;
    for (const auto& choice : choices_) {
      texts.push_back(proto::receipt_choice_text(choice.text, choice.tool_calls, framed_));
    }
    std::string covered = attest::receipt_text(texts);
    auto verified = attest::verify_receipt(attempt_id_, content->completion_tokens, covered, content->response_hash,
                                           content->receipt_signature, provider_->public_key);
    crypto::wipe_memory(covered.data(), covered.size());
    for (std::string& text : texts) crypto::wipe_memory(text.data(), text.size());
    if (!verified) return verified.error();
    proto::Receipt receipt;
    receipt.request_id = attempt_id_;
    receipt.completion_tokens = content->completion_tokens;
    receipt.response_hash = content->response_hash;
    receipt.signature = content->receipt_signature;
    receipt.public_key = provider_->public_key_base64;
    for (size_t i = 0; i < choices_.size(); ++i) choices_[i].finish_reason = content->finish_reasons[i];
    return std::make_pair(std::move(*content), std::move(receipt));
  }

  const std::vector<proto::ChunkFormatter::Choice>& choices() const { return choices_; }

 private:
  Status check_sender(const proto::SealedPayload& sealed) const {
    if (!std::equal(sealed.sender_public_key.begin(), sealed.sender_public_key.end(), provider_->encryption_key.begin(),
                    provider_->encryption_key.end())) {
      return make_error(Errc::permission_denied, "sealed by a key other than the attested provider's");
    }
    return {};
  }

  std::shared_ptr<const VerifiedProvider> provider_;  // held: the listing may be read again meanwhile
  crypto::Channel channel_;
  std::string attempt_id_;
  bool framed_;
  proto::ToolCallRules tools_;
  std::vector<proto::ChoiceCalls> calls_;  // checked as they come
  size_t logprobs_budget_;
  size_t logprobs_bytes_ = 0;
  uint64_t next_seq_ = 0;
  std::vector<proto::ChunkFormatter::Choice> choices_;
};

// The request's plaintext for its providers: OpenAI's body with max_tokens set (a Responses body
// as the chat completion it translates to), as a SealedRequest.
std::string sealed_plaintext(const proto::CompletionRequest& request) {
  proto::SealedRequest sealed;
  sealed.endpoint = std::string(proto::endpoint_name(
      request.endpoint == proto::Endpoint::responses ? proto::Endpoint::chat_completions : request.endpoint));
  sealed.body = request.body;
  return proto::encode(sealed);
}

struct Copies {
  proto::BlindRequest request;
  std::map<std::string, crypto::KeyPair> keys;  // by provider id: opens that provider's answer
};

// Seals `plaintext` to each chosen provider with a key pair made for that copy alone.
using Candidates = std::vector<std::pair<std::string, std::shared_ptr<const VerifiedProvider>>>;

Copies seal_copies(const proto::CompletionRequest& request, std::string_view plaintext, const Candidates& chosen) {
  Copies copies;
  copies.request.model = request.model;
  copies.request.max_tokens = request.max_tokens.value_or(0);
  copies.request.n = request.n;
  copies.request.ignore_eos = request.ignore_eos;
  for (const auto& [id, provider] : chosen) {
    crypto::KeyPair keys = crypto::KeyPair::generate();
    proto::BlindCopy copy;
    copy.provider_id = id;
    copy.sealed_body.sender_public_key.assign(keys.public_key().begin(), keys.public_key().end());
    copy.sealed_body.ciphertext = crypto::seal(as_bytes(plaintext), provider->encryption_key, keys);
    copies.request.copies.push_back(std::move(copy));
    copies.keys.emplace(id, std::move(keys));
  }
  return copies;
}

http::Headers retry_in(int seconds) {
  http::Headers headers;
  headers.emplace_back("Retry-After", std::to_string(seconds));
  return headers;
}

struct ProxyTiming {
  size_t copies = 0;
  std::chrono::steady_clock::time_point started, sealing, sealed;
};

// What the proxy's client learns about its answer: the ids, the provider that answered (its key
// checks the receipt), the coordinator's X-Timing and the proxy's own phases.
http::Headers answer_headers(const http::ClientResponse& upstream, const VerifiedProvider& provider,
                             const ProxyTiming& timing) {
  auto micros = [](auto duration) { return std::chrono::duration_cast<std::chrono::microseconds>(duration).count(); };
  http::Headers headers;
  headers.emplace_back("X-Request-Id", upstream.header("X-Request-Id"));
  headers.emplace_back("X-Provider-Id", upstream.header("X-Provider-Id"));
  headers.emplace_back("X-Attempt-Id", upstream.header("X-Attempt-Id"));
  headers.emplace_back("X-Provider-Public-Key", provider.public_key_base64);
  headers.emplace_back("X-Provider-Trust-Level", provider.entry.trust_level);
  headers.emplace_back("X-Sealed-By", "proxy");
  headers.emplace_back("X-Timing", upstream.header("X-Timing"));
  headers.emplace_back(
      "X-Proxy-Timing",
      fmt::format(R"({{"copies":{},"prepare_us":{},"seal_us":{},"first_answer_us":{}}})", timing.copies,
                  micros(timing.sealing - timing.started), micros(timing.sealed - timing.sealing),
                  micros(std::chrono::steady_clock::now() - timing.sealed)));
  return headers;
}

}  // namespace

SealingProxy::SealingProxy(net::asio::any_io_executor executor, ProxyOptions options)
    : options_(std::move(options)),
      coordinator_(http::ClientPool::create(options_.coordinator_host, options_.coordinator_port, options_.tls,
                                            options_.connect_timeout)),
      server_(executor, routes(), options_.limits) {}

http::Router SealingProxy::routes() {
  http::Router routes;
  using http::bhttp::verb;
  routes.add(verb::post, "/v1/chat/completions",
             [this](http::Exchange& e) { return handle_completion(e, proto::Endpoint::chat_completions); });
  routes.add(verb::post, "/v1/completions",
             [this](http::Exchange& e) { return handle_completion(e, proto::Endpoint::completions); });
  routes.add(verb::post, "/v1/responses",
             [this](http::Exchange& e) { return handle_completion(e, proto::Endpoint::responses); });
  routes.add(verb::get, "/v1/models", [this](http::Exchange& e) { return handle_models(e); });
  routes.add(verb::get, "/health",
             [](http::Exchange& e) -> awaitable<void> { co_await e.respond_json(200, R"({"status":"ok"})"); });
  return routes;
}

VerifiedProvider SealingProxy::verify(const proto::ProviderAttestation& entry) const {
  VerifiedProvider provider;
  provider.entry = entry;
  if (!entry.attested) {
    provider.problem = "no attestation";
    return provider;
  }
  auto document = attest::parse_attestation_document(entry.attestation);
  if (!document) {
    provider.problem = "its attestation does not parse: " + document.error().message;
    return provider;
  }
  auto encryption_key = base64_decode(document->encryption_key);
  if (!encryption_key) {
    provider.problem = "its attested encryption_key is not base64";
    return provider;
  }
  // The document's own X25519 key, under the document's signature: what a copy is sealed to. Its
  // age is not checked here: the coordinator's challenges keep a listed provider fresh.
  attest::VerificationPolicy policy;
  policy.allowed_binaries = options_.allowed_binaries;
  policy.max_clock_skew = std::chrono::hours(24 * 365 * 10);
  proto::AttestationBundle bundle;
  bundle.document = entry.attestation;
  bundle.signature = entry.signature;
  auto verified = attest::verify_attestation(bundle, *encryption_key, policy);
  if (!verified) {
    provider.problem = "attestation rejected: " + verified.error().message;
    return provider;
  }
  auto key = crypto::public_key_from(*encryption_key);
  if (!key || !crypto::usable_public_key(*key)) {
    provider.problem = "its encryption key is unusable";
    return provider;
  }
  provider.encryption_key = *key;
  provider.public_key = verified->public_key;
  provider.public_key_base64 = verified->document.public_key;
  if (entry.trust_level != "self_signed" && entry.trust_level != "hardware") {
    provider.problem = fmt::format("the coordinator trusts it at level {}", entry.trust_level);
  } else if (options_.require_hardware) {
    // The EK chain and the key's public area are checked here; that the key answered the
    // credential activation is the coordinator's word (its listing says "proven").
    if (entry.trust_level != "hardware" || !entry.hardware.starts_with("proven")) {
      provider.problem = "not proven hardware-held by the coordinator (" +
                         (entry.hardware.empty() ? std::string("no TPM evidence") : entry.hardware) + ")";
    } else {
      auto ek = base64_decode(entry.ek_certificate);
      auto area = base64_decode(entry.key_public);
      if (!ek || !area) {
        provider.problem = "its TPM evidence is not base64";
      } else {
        const attest::TpmEvidence evidence{std::move(*ek), std::move(*area)};
        auto checked = attest::check_tpm_evidence(evidence, provider.public_key, options_.hardware->auth_policy,
                                                  options_.hardware->ek_trust, std::chrono::system_clock::now());
        if (!checked) provider.problem = "TPM evidence rejected: " + checked.error().message;
      }
    }
  }
  return provider;
}

std::shared_ptr<const VerifiedProvider> SealingProxy::verified(const proto::ProviderAttestation& entry) {
  auto& known = verified_[entry.provider_id];
  const bool same = known && known->entry.attestation == entry.attestation &&
                    known->entry.signature == entry.signature && known->entry.trust_level == entry.trust_level &&
                    known->entry.hardware == entry.hardware && known->entry.ek_certificate == entry.ek_certificate &&
                    known->entry.key_public == entry.key_public;
  if (!same) {
    auto fresh = std::make_shared<VerifiedProvider>(verify(entry));
    if (!fresh->problem.empty()) log::info("proxy: provider {} is not used: {}", entry.provider_id, fresh->problem);
    known = std::move(fresh);
  }
  return known;
}

awaitable<Result<std::shared_ptr<const SealingProxy::Listing>>> SealingProxy::read_listing() {
  auto listing = std::make_shared<Listing>();
  std::string after;
  const auto deadline = std::chrono::steady_clock::now() + 3 * options_.connect_timeout;
  for (int page = 0;; ++page) {
    if (page == kMaxListingPages || std::chrono::steady_clock::now() > deadline) {
      log::warn("proxy: the attestation listing is longer than this proxy reads ({} entries); using those",
                listing->size());
      break;
    }
    http::ClientRequest request;
    request.target = fmt::format("/v1/providers/attestation?limit={}", kListingPage);
    if (!after.empty()) request.target += "&after=" + after;
    auto response = co_await coordinator_->send(request, options_.connect_timeout);
    if (!response) co_return response.error().with_context("reading the attestation listing");
    auto body = co_await (*response)->read_all(kMaxListingPageBytes, options_.connect_timeout);
    if (!body) co_return body.error().with_context("reading the attestation listing");
    if ((*response)->status() != 200) {
      co_return make_error(Errc::unavailable, fmt::format("the attestation listing answered {}: {}",
                                                          (*response)->status(), error_from(*body, 500).message));
    }
    auto page_read = proto::decode_attestation_page(*body);
    if (!page_read) co_return page_read.error().with_context("the attestation listing");
    for (auto& entry : page_read->providers) listing->push_back(std::move(entry));
    if (!page_read->has_more || page_read->providers.empty()) break;
    after = listing->back().provider_id;
  }
  co_return std::shared_ptr<const Listing>(std::move(listing));
}

namespace {

// Ends a read of the listing however it ends (an error, an exception): the next request may read
// it again, and those waiting for this one wake up.
struct ReadingDone {
  std::shared_ptr<net::WaitList>& reading;
  ~ReadingDone() {
    const std::shared_ptr<net::WaitList> waiting = std::move(reading);
    reading.reset();
    if (waiting) waiting->wake_all();
  }
};

}  // namespace

awaitable<Result<std::shared_ptr<const SealingProxy::Listing>>> SealingProxy::listing() {
  const auto fresh_enough = [&] {
    return listing_at_ && std::chrono::steady_clock::now() - *listing_at_ <= options_.listing_max_age;
  };
  if (fresh_enough()) co_return listing_;
  if (reading_) {
    // Another request is reading it: its result serves this one too.
    const std::shared_ptr<net::WaitList> reading = reading_;
    co_await reading->wait();
    if (listing_) co_return listing_;
    co_return make_error(Errc::unavailable, "the attestation listing could not be read: " + listing_error_);
  }
  reading_ = std::make_shared<net::WaitList>(clock_);
  const ReadingDone done{reading_};
  auto read = co_await read_listing();
  if (read) {
    listing_ = std::move(*read);
    listing_at_ = std::chrono::steady_clock::now();
    // Verdicts on providers no longer listed go.
    std::set<std::string> listed;
    for (const auto& entry : *listing_) listed.insert(entry.provider_id);
    std::erase_if(verified_, [&](const auto& item) { return listed.count(item.first) == 0; });
  } else {
    listing_error_ = read.error().message;
    if (listing_) {
      log::warn("proxy: keeping the previous listing: {}", read.error().message);
      listing_at_ = std::chrono::steady_clock::now();  // not asked again at once
    }
  }
  if (!listing_) co_return read.error();
  co_return listing_;
}

awaitable<void> SealingProxy::handle_models(http::Exchange& exchange) {
  http::ClientRequest request;
  request.target = "/v1/models";
  request.headers.emplace_back("Authorization", "Bearer " + options_.api_key);
  auto response = co_await coordinator_->send(request, options_.connect_timeout);
  auto body = response ? co_await (*response)->read_all(kMaxErrorBodyBytes * 8, options_.connect_timeout)
                       : Result<std::string>(response.error());
  if (!body) {
    co_await exchange.respond_error(
        proto::service_unavailable("The coordinator cannot be reached: " + body.error().message));
    co_return;
  }
  co_await exchange.respond_json((*response)->status(), std::move(*body));
}

awaitable<void> SealingProxy::handle_completion(http::Exchange& exchange, proto::Endpoint endpoint) {
  const auto started = std::chrono::steady_clock::now();
  proto::ApiError error;
  const std::string_view body = exchange.request().body();
  auto parsed = endpoint == proto::Endpoint::responses ? proto::parse_responses_body(body, &error)
                                                       : proto::parse_completion_body(endpoint, body, &error);
  if (!parsed) {
    co_await exchange.respond_error(error);
    co_return;
  }
  // The coordinator reserves for max_tokens in clear, so it must be set (the sealed body agrees).
  if (!parsed->max_tokens) {
    parsed->max_tokens = options_.default_max_tokens;
    parsed->body["max_tokens"] = options_.default_max_tokens;
  }
  if (parsed->logprobs &&
      int64_t{*parsed->max_tokens} * parsed->n * (parsed->top_logprobs + 1) > proto::kMaxLogprobEntries) {
    // What a provider refuses for a blind request (and the coordinator for a plain one).
    co_await exchange.respond_error(proto::invalid_request(
        fmt::format("logprobs for n x max_tokens x (top_logprobs + 1) beyond {} entries; lower max_tokens, n or "
                    "top_logprobs",
                    proto::kMaxLogprobEntries),
        "max_tokens"));
    co_return;
  }
  auto listed = co_await listing();
  if (!listed) {
    co_await exchange.respond_error(
        proto::service_unavailable("The coordinator's attestation listing cannot be read: " + listed.error().message),
        retry_in(5));
    co_return;
  }
  const auto needed = features_needed(*parsed);
  // Only the providers of this model are verified (and their verdicts kept).
  Candidates usable;
  size_t serving = 0;
  for (const proto::ProviderAttestation& entry : **listed) {
    if (!has(entry.models, parsed->model)) continue;
    ++serving;
    if (!std::all_of(needed.begin(), needed.end(), [&](std::string_view f) { return has(entry.features, f); })) {
      continue;
    }
    auto provider = verified(entry);
    if (provider->problem.empty()) usable.emplace_back(entry.provider_id, std::move(provider));
  }
  if (serving == 0) {
    co_await exchange.respond_error(proto::model_not_found(parsed->model));
    co_return;
  }
  if (usable.empty()) {
    const std::string why =
        fmt::format("None of the {} providers of '{}' passes this proxy's checks{} (see its log)", serving,
                    parsed->model, options_.require_hardware ? " for trust level hardware" : "");
    co_await exchange.respond_error(proto::no_provider_available(why), retry_in(5));
    co_return;
  }
  // A few candidates, in random order: the coordinator picks among them by load.
  std::shuffle(usable.begin(), usable.end(), std::mt19937_64(std::random_device{}()));
  usable.resize(std::min(usable.size(), options_.max_copies));
  std::string plaintext = sealed_plaintext(*parsed);
  // Every copy is the body again, in base64: as many as the coordinator's body limit takes.
  const size_t copy_bytes = 4 * ((plaintext.size() + crypto::kNonceBytes + crypto::kMacBytes + 2) / 3) + kCopyJsonBytes;
  const size_t fitting = options_.coordinator_body_bytes / copy_bytes;
  if (fitting == 0) {
    crypto::wipe_memory(plaintext.data(), plaintext.size());
    proto::ApiError too_large = proto::request_too_large(options_.coordinator_body_bytes);
    too_large.message = fmt::format(
        "Sealed for one provider this request takes about {} bytes; the coordinator takes at most {} "
        "(--coordinator-max-body-bytes): send a shorter request",
        copy_bytes, options_.coordinator_body_bytes);
    co_await exchange.respond_error(too_large);
    co_return;
  }
  usable.resize(std::min(usable.size(), fitting));
  const auto sealing = std::chrono::steady_clock::now();
  Copies copies = seal_copies(*parsed, plaintext, usable);
  crypto::wipe_memory(plaintext.data(), plaintext.size());
  const auto sealed = std::chrono::steady_clock::now();

  http::ClientRequest blind;
  blind.method = http::bhttp::verb::post;
  blind.target = std::string(proto::kBlindPath);
  blind.headers.emplace_back("Authorization", "Bearer " + options_.api_key);
  blind.body = proto::encode(copies.request);
  // A client that leaves, while the request waits at the coordinator or while it is answered,
  // closes the connection to the coordinator: it takes the request out of its queue, or cancels
  // it at the provider, and bills what was delivered.
  auto abort = std::make_shared<http::ClientAbort>();
  auto answering = std::make_shared<std::weak_ptr<http::ClientResponse>>();
  exchange.on_client_gone([abort, answering] {
    abort->abort();
    if (auto response = answering->lock()) response->close();
  });
  auto sent = co_await coordinator_->send(blind, options_.answer_timeout, abort);
  if (!sent) {
    if (abort->aborted()) co_return;  // nobody to answer
    co_await exchange.respond_error(
        proto::service_unavailable("The coordinator cannot be reached: " + sent.error().message));
    co_return;
  }
  std::shared_ptr<http::ClientResponse> upstream = std::move(*sent);
  *answering = upstream;
  if (upstream->status() != 200) {
    auto error_body = co_await upstream->read_all(kMaxErrorBodyBytes, options_.connect_timeout);
    http::Headers headers;
    if (const std::string retry = upstream->header("Retry-After"); !retry.empty()) {
      headers.emplace_back("Retry-After", retry);
    }
    co_await exchange.respond_error(error_from(error_body ? *error_body : "", upstream->status()), headers);
    co_return;
  }
  const std::string provider_id = upstream->header("X-Provider-Id");
  const std::string attempt_id = upstream->header("X-Attempt-Id");
  const auto keys = copies.keys.find(provider_id);
  std::shared_ptr<const VerifiedProvider> chosen;
  for (const auto& [id, candidate] : usable) {
    if (id == provider_id) chosen = candidate;
  }
  if (keys == copies.keys.end() || chosen == nullptr || attempt_id.empty()) {
    co_await exchange.respond_error(
        proto::provider_error("The coordinator answered for a provider this request was not sealed for"));
    co_return;
  }
  BlindAnswer answer(chosen, keys->second, *parsed, attempt_id);
  const std::string request_id = upstream->header("X-Request-Id");
  const std::unique_ptr<proto::AnswerWriter> writer =
      proto::answer_writer(*parsed, request_id.empty() ? attempt_id : request_id, unix_seconds_now());
  const ProxyTiming timing{copies.request.copies.size(), started, sealing, sealed};
  const http::Headers headers = answer_headers(*upstream, *chosen, timing);
  const bool stream = parsed->stream;
  bool open = true;
  if (stream) {
    open = co_await exchange.start_events(headers);
    if (open) open = co_await http::send_events(exchange, writer->start(parsed->n));
  }
  // Any failure after the answer started: in-band for a stream, an error response otherwise.
  auto fail = [&](proto::ApiError failure) -> awaitable<void> {
    log::warn("proxy: request {} to provider {}: {}", request_id, provider_id, failure.message);
    if (stream) {
      co_await http::send_events(exchange, writer->error(failure));
      co_await exchange.end_events();
    } else {
      co_await exchange.respond_error(failure, headers);
    }
  };
  EventReader reader;
  while (open) {
    auto piece = co_await upstream->next(options_.answer_timeout);
    if (!piece || piece->empty() || !reader.add(*piece)) {
      const std::string why = !piece ? piece.error().message : piece->empty() ? "it ended early" : "an event too large";
      co_await fail(proto::provider_error("The coordinator's answer broke off: " + why));
      co_return;
    }
    while (auto event = reader.next()) {
      if (event->name == "chunk") {
        auto content = answer.open_chunk(event->data);
        if (!content) {
          co_await fail(proto::provider_error("The answer failed a check: " + content.error().message));
          co_return;
        }
        if (stream && open) {
          open = co_await http::send_events(
              exchange, writer->piece(content->index, content->text, content->logprobs, content->tool_calls));
        }
        crypto::wipe_memory(content->text.data(), content->text.size());
      } else if (event->name == "complete") {
        auto completion = proto::decode_blind_completion(event->data);
        auto opened = completion ? answer.open_completion(completion->sealed)
                                 : Result<std::pair<proto::CompletionContent, proto::Receipt>>(completion.error());
        if (!opened) {
          co_await fail(proto::provider_error("The answer failed a check: " + opened.error().message));
          co_return;
        }
        const auto& [content, receipt] = *opened;
        // What was billed: the provider's counts, bounded by the coordinator. More than the counts
        // the provider sealed for us is a coordinator (or a provider) billing beyond the answer.
        if (completion->prompt_tokens > content.prompt_tokens ||
            completion->completion_tokens > content.completion_tokens) {
          log::warn("proxy: request {} was billed {} + {} tokens; the provider's sealed counts are {} + {}", request_id,
                    completion->prompt_tokens, completion->completion_tokens, content.prompt_tokens,
                    content.completion_tokens);
        }
        const proto::Usage usage{clamp_tokens(completion->prompt_tokens), clamp_tokens(completion->completion_tokens)};
        if (stream) {
          for (size_t i = 0; i < content.finish_reasons.size(); ++i) {
            co_await http::send_events(exchange, writer->finish_choice(static_cast<int>(i), content.finish_reasons[i]));
          }
          co_await http::send_events(exchange,
                                     writer->end(content.finish_reasons, usage, parsed->include_usage, &receipt));
          co_await exchange.end_events();
        } else {
          http::Headers with_receipt = headers;
          with_receipt.emplace_back("X-Response-Hash", receipt.response_hash);
          with_receipt.emplace_back("X-Response-Signature", receipt.signature);
          with_receipt.emplace_back("X-Receipt-Request-Id", receipt.request_id);
          with_receipt.emplace_back("X-Receipt-Completion-Tokens", std::to_string(receipt.completion_tokens));
          std::string whole = writer->whole(answer.choices(), usage, &receipt);
          co_await exchange.respond_json(200, whole, with_receipt);
          crypto::wipe_memory(whole.data(), whole.size());
        }
        // The event stream's end, read so that the connection goes back to the pool.
        for (int piece = 0; piece < 4; ++piece) {
          auto rest = co_await upstream->next(options_.connect_timeout);
          if (!rest || rest->empty()) break;
        }
        co_return;
      } else if (event->name == "error") {
        co_await fail(error_from(event->data, 502));
        co_return;
      }
    }
  }
  upstream->close();  // the client left: the coordinator cancels at the provider
}

}  // namespace darkbloom::provider
