// The inference frames of a provider: accepted, sealed chunks, the sealed completion with its
// receipt, and errors. A frame for an unknown or abandoned request id is dropped: that is what
// keeps a retried request from being answered (or billed) twice.
#include <fmt/format.h>

#include <algorithm>

#include "base/log.h"
#include "coordinator/gateway/provider_gateway.h"
#include "crypto/secure_bytes.h"

namespace darkbloom::coordinator {
namespace {

bool sealed_by(const proto::SealedPayload& sealed, const crypto::PublicKey& key) {
  return std::equal(sealed.sender_public_key.begin(), sealed.sender_public_key.end(), key.begin(), key.end());
}

// Weight of the newest answer in the provider's observed decode rate.
constexpr double kObservedRateWeight = 0.2;
// The observed rate is believed up to this multiple of the provider's (capped) claim, so one
// answer with a made-up token count cannot draw all the traffic.
constexpr double kObservedRateCap = 2;

}  // namespace

void ProviderGateway::on_inference_message(ProviderSession& session, proto::ProviderMessage& message) {
  // A frame for an attempt that is not in flight is late (abandoned, retried elsewhere or
  // cancelled before the provider knew; an honest provider sends one for every id it got, maybe
  // much later) and is ignored, within a budget that refills over time: a provider sending them
  // faster than that is flooding.
  auto attempt_of = [&](const std::string& request_id) -> std::shared_ptr<Attempt> {
    const auto it = session.in_flight_.find(request_id);
    if (it != session.in_flight_.end()) return it->second;
    if (!session.take_late_frame(clock_.now())) drop(session, "too many frames for requests not in flight");
    return nullptr;
  };
  if (auto* accepted = std::get_if<proto::InferenceAccepted>(&message)) {
    if (auto attempt = attempt_of(accepted->request_id)) {
      // Once, and before any output: repeats would only grow the attempt's event queue.
      if (attempt->accepted || attempt->next_seq > 0) {
        drop(session, "inference_accepted sent twice or after output");
        return;
      }
      attempt->accepted = true;
      attempt->events->push_here(provider_event::Accepted{});
    }
  } else if (auto* chunk = std::get_if<proto::InferenceChunk>(&message)) {
    if (auto attempt = attempt_of(chunk->request_id)) {
      if (attempt->blind) {
        on_blind_chunk(session, *attempt, *chunk);
      } else {
        on_chunk(session, *attempt, *chunk);
      }
    }
  } else if (auto* complete = std::get_if<proto::InferenceComplete>(&message)) {
    if (auto attempt = attempt_of(complete->request_id)) {
      if (attempt->blind) {
        on_blind_complete(session, *attempt, *complete);
      } else {
        on_complete(session, *attempt, *complete);
      }
    }
  } else if (auto* error = std::get_if<proto::InferenceError>(&message)) {
    if (attempt_of(error->request_id)) {
      finish_attempt(session, error->request_id,
                     provider_event::Failed{error->status_code, error->message, error->code, error->param});
    }
  }
}

void ProviderGateway::on_chunk(ProviderSession& session, Attempt& attempt, const proto::InferenceChunk& chunk) {
  // Chunks must come from the registered key, open under this attempt's session key and carry
  // the next sequence number; anything else is a provider that cannot be trusted with traffic.
  if (!sealed_by(chunk.sealed, session.encryption_key_)) {
    drop(session, "chunk sealed by a key other than the registered one");
    return;
  }
  auto plaintext = attempt.channel->open(chunk.sealed.ciphertext);
  if (!plaintext) {
    drop(session, "chunk does not open under the session key");
    return;
  }
  auto content = proto::decode_chunk_content(plaintext->view());
  if (!content) {
    drop(session, "sealed chunk is malformed: " + content.error().message);
    return;
  }
  if (content->seq != attempt.next_seq) {
    drop(session, fmt::format("chunk {} arrived where {} was due (replayed, reordered or lost)", content->seq,
                              attempt.next_seq));
    return;
  }
  if (content->index >= attempt.choices) {
    drop(session, fmt::format("chunk for choice {} of a request with {}", content->index, attempt.choices));
    return;
  }
  if (auto problem = check_tool_calls(attempt, *content)) {
    drop(session, *problem);
    return;
  }
  attempt.next_seq += 1;
  attempt.chunks_received += 1;
  attempt.bytes_received += content->text.size();
  if (!content->logprobs.is_null()) attempt.logprobs_bytes += plaintext->size() - content->text.size();
  if (attempt.bytes_received > kMaxAttemptBytes || attempt.chunks_received > attempt.max_chunks() ||
      attempt.logprobs_bytes > attempt.max_logprobs_bytes) {
    drop(session, "answer larger than any request allows");
    return;
  }
  if (attempt.next_seq == 1) attempt.first_chunk_at = clock_.now();
  if (content->text.empty() && content->tool_calls.empty()) return;  // nothing to relay, nothing to bill
  if (!session.trust_state_.public_key.empty()) {                    // for the receipt
    if (attempt.texts.size() < static_cast<size_t>(attempt.choices))
      attempt.texts.resize(static_cast<size_t>(attempt.choices));
    attempt.texts[static_cast<size_t>(content->index)] += content->text;
  }
  attempt.events->push_here(provider_event::Text{std::move(content->text), std::move(content->logprobs), content->index,
                                                 std::move(content->tool_calls)});
}

std::optional<std::string> ProviderGateway::check_tool_calls(Attempt& attempt, const proto::ChunkContent& content) {
  attempt.calls.resize(std::max(attempt.calls.size(), static_cast<size_t>(attempt.choices)));
  return proto::check_tool_pieces(attempt.tools, attempt.calls[static_cast<size_t>(content.index)],
                                  !content.text.empty(), content.tool_calls, &attempt.bytes_received);
}

void ProviderGateway::on_complete(ProviderSession& session, Attempt& attempt,
                                  const proto::InferenceComplete& complete) {
  if (!sealed_by(complete.sealed, session.encryption_key_)) {
    drop(session, "completion sealed by a key other than the registered one");
    return;
  }
  auto plaintext = attempt.channel->open(complete.sealed.ciphertext);
  auto content = plaintext ? proto::decode_completion_content(plaintext->view())
                           : Result<proto::CompletionContent>(plaintext.error());
  if (!content) {
    drop(session, "completion does not open or is malformed: " + content.error().message);
    return;
  }
  if (content->seq != attempt.next_seq) {
    drop(session, fmt::format("completion after {} chunks, {} were received", content->seq, attempt.next_seq));
    return;
  }
  std::vector<std::string> reasons = content->finish_reasons;
  if (reasons.empty() && attempt.choices == 1) reasons.push_back(content->finish_reason);
  if (static_cast<int>(reasons.size()) != attempt.choices) {
    drop(session, fmt::format("completion with {} finish reasons for {} choices", reasons.size(), attempt.choices));
    return;
  }
  attempt.calls.resize(std::max(attempt.calls.size(), static_cast<size_t>(attempt.choices)));
  if (auto problem = proto::check_tool_finish(attempt.tools, attempt.calls, reasons)) {
    drop(session, *problem);
    return;
  }
  // Usage is the provider's word, believed up to what the coordinator saw (docs/billing.md).
  const BilledUsage billed = bill_usage(
      content->prompt_tokens, content->completion_tokens,
      usage_bound(attempt.body_bytes, attempt.messages, static_cast<int64_t>(attempt.bytes_received), attempt.choices));
  observe_decode_rate(session, attempt, billed.completion_tokens);
  provider_event::Complete done;
  done.prompt_tokens = static_cast<int>(billed.prompt_tokens);
  done.completion_tokens = static_cast<int>(billed.completion_tokens);
  done.finish_reason = content->finish_reason;
  done.finish_reasons = std::move(reasons);
  check_receipt(session, attempt, *content, done);
  for (std::string& text : attempt.texts) crypto::wipe_memory(text.data(), text.size());
  attempt.texts.clear();
  for (auto& choice : attempt.calls) {
    for (auto& call : choice.calls) crypto::wipe_memory(call.arguments.data(), call.arguments.size());
  }
  attempt.calls.clear();
  const std::string lie =
      billed.beyond_honest && !attempt.ignore_eos
          ? fmt::format(
                "reported {} prompt and {} completion tokens for a "
                "{}-byte request and {} bytes of answer",
                content->prompt_tokens, content->completion_tokens, attempt.body_bytes, attempt.bytes_received)
          : std::string();
  finish_attempt(session, complete.request_id, std::move(done));
  if (!lie.empty()) over_reported(session, lie);
}

void ProviderGateway::over_reported(ProviderSession& session, const std::string& lie) {
  // The answer was billed at the bound; the provider loses its trust, or, with none to lose, its session.
  if (session.trust_ == TrustLevel::none) {
    drop(session, lie);
  } else {
    distrust(session, lie);
  }
}

void ProviderGateway::on_blind_chunk(ProviderSession& session, Attempt& attempt, proto::InferenceChunk& chunk) {
  // Sealed to the consumer's proxy: what can be checked here is who sealed it, how many chunks
  // came and how large they are. The proxy checks their order and content when it opens them.
  if (!sealed_by(chunk.sealed, session.encryption_key_)) {
    drop(session, "chunk sealed by a key other than the registered one");
    return;
  }
  // What the chunk can hold, at most: its plaintext less the JSON every chunk has around its
  // text ({"seq":N,"text":""}).
  const size_t plaintext = chunk.sealed.ciphertext.size() - crypto::kNonceBytes - crypto::kMacBytes;
  const size_t wrapper = kChunkWrapperBytes + std::to_string(attempt.next_seq).size();
  if (plaintext < wrapper) {
    drop(session, "a sealed chunk too small to hold a chunk");
    return;
  }
  attempt.next_seq += 1;
  attempt.chunks_received += 1;
  attempt.bytes_received += plaintext - wrapper;
  if (attempt.chunks_received > attempt.max_chunks()) {
    drop(session, "more chunks than the request's max_tokens allows");
    return;
  }
  if (attempt.bytes_received > kMaxAttemptBytes + kMaxAttemptLogprobsBytes) {
    // Text and logprobs together, unseen: an honest provider may get here on a request its
    // client made huge, so the answer ends and the session stays.
    finish_attempt(session, chunk.request_id,
                   provider_event::Failed{502, "the sealed answer grew larger than the coordinator relays", "", ""});
    if (session.link_->is_open()) session.link_->send(proto::encode(proto::Cancel{chunk.request_id}));
    return;
  }
  if (attempt.next_seq == 1) attempt.first_chunk_at = clock_.now();
  provider_event::Text text;
  text.sealed = std::move(chunk.sealed);
  attempt.events->push_here(std::move(text));
}

void ProviderGateway::on_blind_complete(ProviderSession& session, Attempt& attempt,
                                        proto::InferenceComplete& complete) {
  if (!sealed_by(complete.sealed, session.encryption_key_)) {
    drop(session, "completion sealed by a key other than the registered one");
    return;
  }
  if (!complete.usage) {
    drop(session, "a blind answer ended without its signed usage");
    return;
  }
  const proto::BlindUsage& usage = *complete.usage;
  if (usage.chunks != attempt.next_seq) {
    drop(session, fmt::format("usage signed for {} chunks, {} were received", usage.chunks, attempt.next_seq));
    return;
  }
  const TrustState& trust = session.trust_state_;
  if (auto signed_usage = attest::verify_usage(usage, attempt.request_id, trust.public_key); !signed_usage) {
    drop(session, "blind usage rejected: " + signed_usage.error().message);
    return;
  }
  // The provider's word, bounded by what was relayed: the sealed body's size and the chunks'
  // plaintext sizes (docs/billing.md). The prompt's parts (messages, tools) are not visible: at
  // most one per kMinBlindPartBytes of the body.
  const int64_t parts = attempt.body_bytes / kMinBlindPartBytes + 1;
  BilledUsage billed =
      bill_usage(usage.prompt_tokens, usage.completion_tokens,
                 usage_bound(attempt.body_bytes, parts, static_cast<int64_t>(attempt.bytes_received), attempt.choices));
  // max_tokens is in clear and the provider checked the body keeps to it: no honest answer is longer.
  const bool beyond_max = usage.completion_tokens > attempt.max_tokens;
  billed.completion_tokens = std::min<int64_t>(billed.completion_tokens, attempt.max_tokens);
  observe_decode_rate(session, attempt, billed.completion_tokens);
  provider_event::Complete done;
  done.prompt_tokens = static_cast<int>(billed.prompt_tokens);
  done.completion_tokens = static_cast<int>(billed.completion_tokens);
  done.sealed = std::move(complete.sealed);
  const std::string lie =
      (billed.beyond_honest && !attempt.ignore_eos) || beyond_max
          ? fmt::format(
                "reported {} prompt and {} completion tokens for a {}-byte sealed request and {} "
                "bytes of sealed answer",
                usage.prompt_tokens, usage.completion_tokens, attempt.body_bytes, attempt.bytes_received)
          : std::string();
  finish_attempt(session, complete.request_id, std::move(done));
  if (!lie.empty()) over_reported(session, lie);
}

void ProviderGateway::observe_decode_rate(ProviderSession& session, const Attempt& attempt, int64_t tokens) {
  // The provider's speed as observed on its own answers replaces its claim for routing, smoothed
  // and capped.
  if (tokens <= 1 || attempt.next_seq == 0) return;
  const double seconds = std::chrono::duration<double>(clock_.now() - attempt.first_chunk_at).count();
  if (seconds <= 0) return;
  // The choices of one request decode side by side: the provider's speed is one choice's.
  const double rate = std::min(static_cast<double>(tokens - 1) / attempt.choices / seconds,
                               kObservedRateCap * Router::claimed_decode_rate(session));
  const double old_rate = session.observed_decode_tps_;
  session.observed_decode_tps_ =
      old_rate > 0 ? (1 - kObservedRateWeight) * old_rate + kObservedRateWeight * rate : rate;
}

void ProviderGateway::check_receipt(ProviderSession& session, const Attempt& attempt,
                                    const proto::CompletionContent& content, provider_event::Complete& done) {
  const TrustState& trust = session.trust_state_;
  if (trust.public_key.empty()) return;  // nothing to check a receipt against
  if (content.response_hash.empty()) {
    // An attested provider signs every answer; one it will not vouch for is not vouched for here.
    distrust(session, "an answer came without its receipt");
    return;
  }
  std::vector<std::string> texts = attempt.texts;
  texts.resize(static_cast<size_t>(attempt.choices));  // choices that sent no text
  const bool framed = !attempt.tools.names.empty();    // the request could call tools
  for (size_t i = 0; i < texts.size() && framed; ++i) {
    std::string with_calls = proto::receipt_choice_text(texts[i], attempt.calls[i].calls, framed);
    crypto::wipe_memory(texts[i].data(), texts[i].size());
    texts[i] = std::move(with_calls);
  }
  std::string covered = attest::receipt_text(texts);
  auto receipt = attest::verify_receipt(attempt.request_id, content.completion_tokens, covered, content.response_hash,
                                        content.receipt_signature, trust.public_key);
  crypto::wipe_memory(covered.data(), covered.size());
  for (std::string& text : texts) crypto::wipe_memory(text.data(), text.size());
  if (!receipt) {
    // The answer may still be right, but this provider signs what it did not send.
    distrust(session, "receipt rejected: " + receipt.error().message);
    return;
  }
  done.receipt_completion_tokens = content.completion_tokens;
  done.receipt_request_id = attempt.request_id;
  done.response_hash = content.response_hash;
  done.receipt_signature = content.receipt_signature;
}

}  // namespace darkbloom::coordinator
