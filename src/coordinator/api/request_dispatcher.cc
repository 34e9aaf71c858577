#include "coordinator/api/request_dispatcher.h"

#include <fmt/format.h>

#include <algorithm>

#include "base/encoding.h"
#include "base/log.h"

namespace darkbloom::coordinator {

using net::awaitable;

namespace {

// The parts of a prompt a chat template wraps in markers of its own (billing/usage_bounds.h):
// each message, each tool call in the history, each tool definition, and the instructions that
// come with tools (counted as eight parts).
int64_t prompt_parts(const proto::CompletionRequest& request) {
  auto parts = static_cast<int64_t>(request.messages.size() + request.tools.size());
  for (const auto& message : request.messages) parts += static_cast<int64_t>(message.tool_calls.size());
  if (!request.tools.empty()) parts += 8;
  return parts;
}

// Attempt ids: "att_" and 8 random bytes, so every one has the same length.
std::string new_attempt_id(RandomSource& random) {
  return random.id("att_", 8);
}

// The size of the inference_request frame that will carry `request` to any provider: ids have
// one length and the ciphertext is the plaintext plus nonce and MAC, so it is known before
// choosing whom to seal it for.
size_t frame_bytes_of(const PendingRequest& request, RandomSource& random) {
  proto::InferenceRequest probe;
  probe.request_id = new_attempt_id(random);
  probe.model = request.parsed.model;
  if (request.blind) {
    // The largest copy's frame, counted rather than encoded (copies can be megabytes).
    size_t largest = 0;
    for (const proto::BlindCopy& copy : request.blind->copies) {
      largest = std::max(largest, copy.sealed_body.ciphertext.size());
    }
    probe.blind = proto::BlindTerms{request.blind->max_tokens, request.blind->n, request.blind->ignore_eos};
    probe.sealed_body.sender_public_key.assign(crypto::kPublicKeyBytes, 0);
    return proto::encode(probe).size() + 4 * ((largest + 2) / 3);
  }
  probe.sealed_body.sender_public_key.assign(crypto::kPublicKeyBytes, 0);
  const size_t ciphertext = request.plaintext.size() + crypto::kNonceBytes + crypto::kMacBytes;
  return proto::encode(probe).size() + 4 * ((ciphertext + 2) / 3);  // base64 of the ciphertext
}

}  // namespace

RequestDispatcher::RequestDispatcher(Dependencies d)
    : executor_(std::move(d.executor)),
      config_(d.config),
      clock_(d.clock),
      random_(d.random),
      router_(d.router),
      gateway_(d.gateway),
      offload_(d.offload) {}

void RequestDispatcher::client_gone(PendingRequest& request) {
  request.client_gone = true;
  if (request.waiter) router_.abandon(request.waiter);
  if (request.attempt) request.attempt->events->push_here(provider_event::ClientGone{});
}

awaitable<DispatchOutcome> RequestDispatcher::dispatch(std::shared_ptr<PendingRequest> request) {
  request->frame_bytes = frame_bytes_of(*request, random_);
  if (const size_t largest = router_.largest_frame(request->parsed.model);
      largest > 0 && request->frame_bytes > largest) {
    // Sent anyway, the frame would cost the provider its connection and every stream on it.
    co_return NoAnswer{proto::request_too_large_for_providers(request->frame_bytes, largest), {}};
  }
  if (request->blind && !router_.has_candidates(request->parsed.model, {}, needs_of(*request))) {
    co_return NoAnswer{proto::no_provider_available(
                           "None of the providers this request was sealed for can take it now (they left, lost "
                           "their trust or read smaller frames); seal it again for the providers listed now"),
                       retry_after(1)};
  }
  if (router_.has_candidates(request->parsed.model, {}, ProviderNeeds{request->frame_bytes}) &&
      !router_.has_candidates(request->parsed.model, {}, needs_of(*request))) {
    // Providers of the model are there, but all of them run a version without what it asks for.
    co_return NoAnswer{proto::no_provider_available(fmt::format(
                           "No provider of '{}' supports all of {} yet (they run an older version); retry later",
                           request->parsed.model, proto::feature_names(needs_of(*request).features))),
                       retry_after(30)};
  }
  std::set<std::string> excluded;
  proto::ApiError last_error = proto::provider_error("No provider could serve the request");
  for (int attempt_number = 0; attempt_number < config_.max_attempts && !request->client_gone; ++attempt_number) {
    Pick pick = co_await pick_provider(*request, excluded);
    if (pick.refusal) co_return std::move(*pick.refusal);
    if (!pick.provider) break;
    std::shared_ptr<ProviderSession> provider = pick.provider;

    // Seal for this provider with a key pair made for this attempt alone. The attempt counts as
    // in flight from here, so the provider's capacity stays taken while a large body is sealed.
    const auto encrypt_started = clock_.now();
    auto fresh = new_attempt(*request, *provider);
    if (!fresh) {
      excluded.insert(provider->id());
      last_error = proto::provider_error("Sealing to the provider failed");
      continue;
    }
    request->attempt = fresh->attempt;
    gateway_.reserve_attempt(*provider, fresh->attempt);
    std::optional<std::string> frame;
    try {
      frame = co_await seal_frame(*request, *fresh);
    } catch (...) {
      gateway_.abandon_attempt(*provider, fresh->attempt->request_id, false);
      throw;
    }
    request->timing.encrypt_us += clock_.micros_since(encrypt_started);
    if (!frame) {  // the coordinator is stopping
      gateway_.abandon_attempt(*provider, fresh->attempt->request_id, false);
      request->attempt.reset();
      co_return NoAnswer{proto::service_unavailable("The coordinator is stopping; retry shortly"), retry_after(1)};
    }
    if (request->client_gone) {  // left while the body was sealed: nothing to send
      gateway_.abandon_attempt(*provider, fresh->attempt->request_id, false);
      request->attempt.reset();
      break;
    }
    const auto dispatch_started = clock_.now();
    const bool sent = gateway_.send_attempt(*provider, *fresh->attempt, std::move(*frame));
    request->timing.dispatch_us += clock_.micros_since(dispatch_started);
    if (!sent) {  // gone or distrusted while it was sealed, or larger than it reads: never sent
      request->attempt.reset();
      excluded.insert(provider->id());
      last_error = proto::provider_error("The provider left or lost its trust before the request was sent");
      continue;
    }

    AttemptEnd end = co_await await_first_chunk(*request, provider, fresh->attempt, last_error);
    if (end.answer) co_return std::move(*end.answer);
    if (end.final_error) co_return std::move(*end.final_error);
    request->attempt.reset();
    if (end.client_left) break;
    excluded.insert(provider->id());
  }
  co_return NoAnswer{last_error, {}};
}

ProviderNeeds RequestDispatcher::needs_of(const PendingRequest& request) {
  if (request.blind) {
    // What the body asks for is sealed: the proxy chose providers that offer it.
    return ProviderNeeds{request.frame_bytes, proto::kFeatureBitBlind, request.parsed.n, &request.candidates};
  }
  ProviderNeeds needs{request.frame_bytes, 0, request.parsed.n};
  if (request.parsed.response_format != "text") needs.features |= proto::kFeatureBitResponseFormat;
  if (request.parsed.logprobs) needs.features |= proto::kFeatureBitLogprobs;
  if (request.parsed.n > 1) needs.features |= proto::kFeatureBitChoices;
  bool tool_history = false;
  for (const auto& message : request.parsed.messages) tool_history |= !message.tool_calls.empty();
  if (!request.parsed.tools.empty() || tool_history) needs.features |= proto::kFeatureBitTools;
  return needs;
}

std::shared_ptr<ProviderSession> RequestDispatcher::timed_pick(PendingRequest& request,
                                                               const std::set<std::string>& excluded) {
  const auto started = clock_.now();
  auto provider = router_.pick(request.parsed.model, request.max_tokens, excluded, needs_of(request));
  request.timing.route_us += clock_.micros_since(started);
  return provider;
}

awaitable<RequestDispatcher::Pick> RequestDispatcher::pick_provider(PendingRequest& request,
                                                                    const std::set<std::string>& excluded) {
  const std::string& model = request.parsed.model;
  // First in, first out: while others wait for this model, a new request waits behind them.
  std::shared_ptr<ProviderSession> provider;
  if (router_.queued(model) == 0) provider = timed_pick(request, excluded);
  bool lost_turn = false;
  // Waiting helps only if some provider of the model has not failed this request already.
  while (!provider && router_.has_candidates(model, excluded, needs_of(request))) {
    const auto queue_started = clock_.now();
    if (!request.waiter) request.waiter = router_.make_waiter();
    const QueueOutcome outcome = co_await router_.wait_for_capacity(model, request.waiter, lost_turn);
    request.timing.queue_us += clock_.micros_since(queue_started);
    if (outcome == QueueOutcome::abandoned || request.client_gone) co_return Pick{};
    if (outcome == QueueOutcome::full) {
      co_return Pick{nullptr,
                     NoAnswer{proto::rate_limited(fmt::format(
                                  "All providers of '{}' are busy and its queue is full; retry shortly", model)),
                              retry_after(1)}};
    }
    if (outcome == QueueOutcome::expired) {
      co_return Pick{
          nullptr,
          NoAnswer{proto::rate_limited(fmt::format("No provider of '{}' became free within {:.1f} s; retry later",
                                                   model, std::chrono::duration<double>(config_.queue_wait).count())),
                   retry_after(5)}};
    }
    provider = timed_pick(request, excluded);
    lost_turn = true;  // if another request took the slot first, wait again at the front
    // Woken for a provider this request cannot use (its frames are too small, it lacks a feature):
    // the wake-up is for the next in line, or that provider would sit idle while they wait.
    if (!provider && router_.has_free_provider(model, excluded)) router_.pass_wake_up(model, *request.waiter);
  }
  request.waiter.reset();
  co_return Pick{provider, std::nullopt};
}

Result<RequestDispatcher::NewAttempt> RequestDispatcher::new_attempt(const PendingRequest& request,
                                                                     const ProviderSession& provider) {
  try {
    NewAttempt fresh{std::make_shared<Attempt>(), {}};
    Attempt& attempt = *fresh.attempt;
    attempt.request_id = new_attempt_id(random_);
    attempt.model = request.parsed.model;
    attempt.max_tokens = request.max_tokens;
    attempt.choices = request.parsed.n;
    if (request.parsed.logprobs) {
      // Entries are bounded when the request is admitted (kMaxLogprobEntries); what an honest
      // provider writes for them, with room for the chunks' JSON around them.
      attempt.max_logprobs_bytes = proto::max_logprobs_bytes(request.max_tokens, request.parsed.top_logprobs);
    }
    attempt.body_bytes = request.body_bytes;
    attempt.messages = prompt_parts(request.parsed);
    attempt.tools = proto::tool_call_rules(request.parsed);
    attempt.calls.resize(static_cast<size_t>(request.parsed.n));
    attempt.ignore_eos = request.parsed.ignore_eos;
    attempt.events = std::make_shared<net::AsyncQueue<ProviderEvent>>(executor_, clock_);
    fresh.message.request_id = attempt.request_id;
    fresh.message.model = attempt.model;
    if (request.blind) {
      // Forwarded as the proxy sealed it: the provider answers to the proxy's key, not ours.
      attempt.blind = true;
      const auto& copies = request.blind->copies;
      const auto copy = std::find_if(copies.begin(), copies.end(),
                                     [&](const proto::BlindCopy& c) { return c.provider_id == provider.id(); });
      if (copy == copies.end()) return make_error(Errc::internal, "no copy was sealed for this provider");
      fresh.message.sealed_body = copy->sealed_body;
      fresh.message.blind = proto::BlindTerms{request.blind->max_tokens, request.blind->n, request.blind->ignore_eos};
      return fresh;
    }
    const crypto::KeyPair session_keys = crypto::KeyPair::generate();
    attempt.channel = std::make_unique<crypto::Channel>(provider.encryption_key(), session_keys);
    fresh.message.sealed_body.sender_public_key.assign(session_keys.public_key().begin(),
                                                       session_keys.public_key().end());
    return fresh;
  } catch (const std::exception& e) {
    return make_error(Errc::invalid_argument, e.what());
  }
}

namespace {

// The plaintext sealed on the attempt's channel, in its inference_request frame.
std::string sealed_frame(std::string_view plaintext, const crypto::Channel& channel,
                         const proto::InferenceRequest& message) {
  proto::InferenceRequest sealed = message;
  sealed.sealed_body.ciphertext = channel.seal(as_bytes(plaintext));
  return proto::encode(sealed);
}

}  // namespace

awaitable<std::optional<std::string>> RequestDispatcher::seal_frame(const PendingRequest& request,
                                                                    const NewAttempt& fresh) {
  if (request.blind) {  // sealed already, by the proxy: only encoded (base64), on the workers when large
    if (fresh.message.sealed_body.ciphertext.size() < kOffloadBodyBytes) co_return proto::encode(fresh.message);
    auto encode = [message = &fresh.message] { return proto::encode(*message); };
    co_return co_await offload_.run(encode, net::Offload::Bound::unbounded);
  }
  if (request.plaintext.size() < kOffloadBodyBytes) {
    co_return sealed_frame(request.plaintext, *fresh.attempt->channel, fresh.message);
  }
  // The request and the attempt outlive the job: the caller holds both while it waits. Not
  // refused for being busy: the provider slot is taken already, which bounds these calls.
  auto job = [plaintext = std::string_view(request.plaintext), channel = fresh.attempt->channel.get(),
              message = &fresh.message] { return sealed_frame(plaintext, *channel, *message); };
  co_return co_await offload_.run(job, net::Offload::Bound::unbounded);
}

awaitable<RequestDispatcher::AttemptEnd> RequestDispatcher::await_first_chunk(PendingRequest& request,
                                                                              std::shared_ptr<ProviderSession> provider,
                                                                              std::shared_ptr<Attempt> attempt,
                                                                              proto::ApiError& last_error) {
  const auto dispatched = clock_.now();
  const auto deadline = dispatched + config_.first_chunk_timeout;
  for (;;) {
    auto event = co_await attempt->events->pop_until(deadline);
    if (!event) {
      log::warn("request {}: no first chunk from {} within {} ms", request.public_id, provider->id(),
                config_.first_chunk_timeout.count());
      gateway_.abandon_attempt(*provider, attempt->request_id, true);
      last_error = proto::timeout_error("The provider did not start answering in time");
      co_return AttemptEnd{};
    }
    if (std::holds_alternative<provider_event::Accepted>(*event)) continue;
    if (std::holds_alternative<provider_event::Text>(*event) ||
        std::holds_alternative<provider_event::Complete>(*event)) {
      request.timing.provider_us = clock_.micros_since(dispatched);
      co_return AttemptEnd{FirstAnswer{provider, attempt, std::move(*event)}, std::nullopt, false};
    }
    if (auto* failed = std::get_if<provider_event::Failed>(&*event)) {
      const bool forced_call = request.parsed.tool_choice == proto::ToolChoice::named ||
                               request.parsed.tool_choice == proto::ToolChoice::required;
      // A provider refuses a blind body only for what is in it (it checked the terms in clear
      // first): the next copy is the same request.
      if ((request.blind && failed->status_code == 400) || failed->code == "context_length_exceeded" ||
          failed->code == "chat_template_error" ||
          (failed->status_code == 400 && failed->param == "response_format" &&
           request.parsed.response_format != "text") ||
          (failed->status_code == 400 && forced_call &&
           (failed->param == "tools" || failed->param.starts_with("tools[")))) {
        // The request itself is too long for the model, the model's chat template refuses its
        // messages, or one of its fields cannot be served (a schema the provider cannot compile):
        // no other provider of the model would do better.
        proto::ApiError rejected = proto::invalid_request(failed->message, failed->param);
        if (!failed->code.empty()) rejected.code = failed->code;
        co_return AttemptEnd{std::nullopt, NoAnswer{rejected, {}}, false};
      }
      last_error = proto::provider_error("The provider failed: " + failed->message);
      co_return AttemptEnd{};
    }
    if (auto* gone = std::get_if<provider_event::Gone>(&*event)) {
      last_error = proto::provider_error("The provider disconnected: " + gone->reason);
      co_return AttemptEnd{};
    }
    if (std::holds_alternative<provider_event::ClientGone>(*event)) {
      gateway_.abandon_attempt(*provider, attempt->request_id, true);
      co_return AttemptEnd{std::nullopt, std::nullopt, true};
    }
  }
}

}  // namespace darkbloom::coordinator
