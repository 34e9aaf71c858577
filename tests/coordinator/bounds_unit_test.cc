// What one hostile party can make the coordinator do to everyone else, without a network: a
// request too large for a provider's frames is never sent to it, a provider's word about its
// usage and speed is believed only as far as what the coordinator saw, and the registry keeps
// out connections that would only take places.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "coordinator/billing/usage_bounds.h"
#include "coordinator/coordinator_harness.h"
#include "coordinator/gateway/provider_text.h"

namespace darkbloom::coordinator {
namespace {

using namespace std::chrono_literals;
using testing::CoordinatorHarness;
using testing::FakeProvider;
using testing::new_outcome;

// A provider whose frames may be at most `bytes`.
FakeProvider connect_reading(CoordinatorHarness& h, const std::string& model, size_t bytes) {
  return h.connect_with(model, [bytes](proto::Register& hello) { hello.max_frame_bytes = bytes; });
}

// A request whose sealed plaintext is about `bytes` long.
std::shared_ptr<PendingRequest> request_of_size(CoordinatorHarness& h, const std::string& model, size_t bytes) {
  auto request = h.request(model);
  request->plaintext = R"({"endpoint":"chat.completions","body":{"x":")" + std::string(bytes, 'a') + "\"}}";
  return request;
}

TEST(FrameLimits, the_frame_for_the_largest_default_body_fits_what_providers_read) {
  CoordinatorHarness h;
  auto provider = connect_reading(h, "m", proto::kMaxFrameBytes);
  // A body at the default limit, re-encoded inside the SealedRequest as the handler does.
  auto request = request_of_size(h, "m", proto::kDefaultMaxBodyBytes);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  ASSERT_EQ(provider.session->in_flight(), 1u);
  EXPECT_LE(provider.link->frames.back().size(), proto::kMaxFrameBytes);
  EXPECT_EQ(provider.link->frames.back().size(), request->frame_bytes);  // the estimate is exact
}

TEST(FrameLimits, a_request_goes_only_to_providers_that_read_its_frame) {
  CoordinatorHarness h;
  auto small = connect_reading(h, "m", proto::kMinFrameBytes);
  auto large = connect_reading(h, "m", proto::kMaxFrameBytes);
  for (int i = 0; i < 3; ++i) {
    auto request = request_of_size(h, "m", 100'000);
    auto outcome = new_outcome();
    h.dispatch(request, outcome);
    EXPECT_EQ(large.session->in_flight(), 1u);
    h.dispatcher.client_gone(*request);
    h.run();
  }
  EXPECT_TRUE(small.link->sent<proto::InferenceRequest>().empty());
  EXPECT_FALSE(small.session->dropped());
  // The router itself leaves the small one out (the gateway's own check is the last resort).
  const ProviderNeeds large_frames{proto::kMinFrameBytes + 1};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(h.router.pick("m", 10, {}, large_frames), large.session);
  EXPECT_FALSE(h.router.has_candidates("m", {large.session->id()}, large_frames));
  // A small request may go to either.
  auto request = request_of_size(h, "m", 100);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  EXPECT_EQ(small.session->in_flight() + large.session->in_flight(), 1u);
}

TEST(FrameLimits, a_request_larger_than_every_provider_reads_is_refused_with_413_and_nobody_is_dropped) {
  CoordinatorHarness h;
  auto provider = connect_reading(h, "m", proto::kMinFrameBytes);
  auto request = request_of_size(h, "m", 100'000);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  ASSERT_TRUE(*outcome);
  const proto::ApiError& error = std::get<NoAnswer>(**outcome).error;
  EXPECT_EQ(error.status, 413);
  EXPECT_NE(error.message.find("too large for the providers"), std::string::npos);
  EXPECT_TRUE(provider.link->sent<proto::InferenceRequest>().empty());
  EXPECT_FALSE(provider.session->dropped());
}

TEST(FrameLimits, a_provider_that_announces_no_limit_is_taken_to_read_ten_mebibytes) {
  proto::Register hello;
  hello.models.push_back({"m", 1, "q8_0", ""});
  hello.encryption_key.assign(32, 1);
  hello.hardware.cores = 1;
  std::string frame = proto::encode(hello);
  const std::string field = ",\"max_frame_bytes\":" + std::to_string(hello.max_frame_bytes);
  ASSERT_NE(frame.find(field), std::string::npos);
  frame.erase(frame.find(field), field.size());
  auto decoded = proto::decode_provider_message(frame);
  ASSERT_TRUE(decoded) << decoded.error().message;
  EXPECT_EQ(std::get<proto::Register>(*decoded).max_frame_bytes, proto::kLegacyFrameBytes);
}

TEST(UsageBounds, reports_are_billed_up_to_the_bytes_seen_and_lies_are_told_from_honest_overshoot) {
  const UsageBound bound = usage_bound(1000, 2, 40);
  EXPECT_EQ(bound.prompt_tokens, 1000 + 2 * kTemplateTokensPerMessage + kTemplateTokensPerRequest);
  EXPECT_EQ(bound.completion_tokens, 41);  // every byte a token, and the end-of-sequence token

  const BilledUsage fair = bill_usage(300, 12, bound);
  EXPECT_EQ(fair.prompt_tokens, 300);
  EXPECT_EQ(fair.completion_tokens, 12);
  EXPECT_FALSE(fair.beyond_honest);

  // A stop string of 256 bytes held back: more tokens than bytes, billed at the bound, believed.
  const BilledUsage held_back = bill_usage(300, 41 + 256, bound);
  EXPECT_EQ(held_back.completion_tokens, 41);
  EXPECT_FALSE(held_back.beyond_honest);

  const BilledUsage lie = bill_usage(300, 1 << 30, bound);
  EXPECT_EQ(lie.completion_tokens, 41);
  EXPECT_TRUE(lie.beyond_honest);
  EXPECT_TRUE(bill_usage(honest_ceiling(bound.prompt_tokens) + 1, 1, bound).beyond_honest);
  EXPECT_FALSE(bill_usage(honest_ceiling(bound.prompt_tokens), honest_ceiling(41), bound).beyond_honest);
  EXPECT_EQ(bill_usage(-5, -5, bound).completion_tokens, 0);
}

// Dispatches a request to `provider` and has it answer `pieces`, then complete reporting the
// given usage. Returns the request's events after the first one, the Complete last.
struct Answered {
  FirstAnswer answer;
  std::vector<ProviderEvent> events;  // after the first
};
Answered answer_with(CoordinatorHarness& h, FakeProvider& provider, const std::vector<std::string>& pieces,
                     int prompt_tokens, int completion_tokens, bool ignore_eos = false) {
  auto request = h.request("m", 64);
  request->body_bytes = 200;
  request->parsed.ignore_eos = ignore_eos;
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  const proto::InferenceRequest sent = provider.link->sent<proto::InferenceRequest>().back();
  std::string text;
  for (size_t i = 0; i < pieces.size(); ++i) {
    h.gateway.receive(*provider.session, provider.chunk_frame(sent, i, pieces[i]));
    text += pieces[i];
  }
  h.gateway.receive(*provider.session,
                    provider.complete_frame(sent, pieces.size(), prompt_tokens, completion_tokens, text));
  h.run();
  EXPECT_TRUE(*outcome);
  Answered answered{std::get<FirstAnswer>(std::move(**outcome)), {}};
  while (auto event = answered.answer.attempt->events->try_pop()) answered.events.push_back(std::move(*event));
  return answered;
}

TEST(UsageBounds, a_provider_claiming_more_tokens_than_it_sent_is_billed_at_the_bound_and_distrusted) {
  CoordinatorHarness h;
  auto provider = h.connect_attested("m");
  ASSERT_EQ(provider.session->trust(), TrustLevel::self_signed);
  Answered answered = answer_with(h, provider, {"hi"}, 5, 1 << 30);
  const auto& done = std::get<provider_event::Complete>(answered.events.back());
  EXPECT_EQ(done.completion_tokens, 3);  // 2 bytes + the end token
  EXPECT_EQ(done.prompt_tokens, 5);
  EXPECT_EQ(done.receipt_completion_tokens, 1 << 30);  // what it signed, passed on as signed
  EXPECT_EQ(provider.session->trust(), TrustLevel::none);
  EXPECT_NE(provider.session->trust_state().reason.find("completion tokens"), std::string::npos);
  EXPECT_FALSE(provider.session->dropped());
}

TEST(UsageBounds, an_unattested_provider_that_lies_about_usage_is_dropped_after_its_answer) {
  CoordinatorHarness h;
  auto provider = h.connect("m");
  Answered answered = answer_with(h, provider, {"hello"}, 1 << 30, 2);
  const auto& done = std::get<provider_event::Complete>(answered.events.back());
  EXPECT_EQ(done.prompt_tokens, usage_bound(200, 0, 5).prompt_tokens);
  EXPECT_TRUE(provider.session->dropped());
}

TEST(UsageBounds, with_ignore_eos_many_tokens_without_text_are_billed_at_the_bound_and_trusted) {
  CoordinatorHarness h;
  auto provider = h.connect_attested("m");
  // The consumer asked to generate past end-of-sequence tokens, which render as nothing.
  Answered answered = answer_with(h, provider, {"a"}, 5, 8000, true);
  EXPECT_EQ(std::get<provider_event::Complete>(answered.events.back()).completion_tokens, 2);
  EXPECT_EQ(provider.session->trust(), TrustLevel::self_signed);
}

TEST(UsageBounds, an_honest_overshoot_is_billed_at_the_bound_and_trusted) {
  CoordinatorHarness h;
  auto provider = h.connect_attested("m");
  // Ten tokens of a held-back stop string on top of a 4-byte answer.
  Answered answered = answer_with(h, provider, {"ab", "cd"}, 20, 15);
  EXPECT_EQ(std::get<provider_event::Complete>(answered.events.back()).completion_tokens, 5);
  EXPECT_EQ(provider.session->trust(), TrustLevel::self_signed);
}

TEST(UsageBounds, empty_chunks_relay_and_bill_nothing_and_are_bounded_in_number) {
  CoordinatorHarness h;
  auto provider = h.connect("m");
  Answered answered = answer_with(h, provider, {"a", "", "", "b"}, 3, 2);
  // The first event was "a"; then only "b" and the completion: the empty chunks were not relayed.
  ASSERT_EQ(answered.events.size(), 2u);
  EXPECT_EQ(std::get<provider_event::Text>(answered.events[0]).text, "b");
  EXPECT_FALSE(provider.session->dropped());

  // More chunks than an honest provider sends for max_tokens drops it.
  auto request = h.request("m", 4);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  const proto::InferenceRequest sent = provider.link->sent<proto::InferenceRequest>().back();
  const int64_t allowed = int64_t{4} + kHonestSlackTokens + 1;
  for (int64_t seq = 0; seq <= allowed && !provider.session->dropped(); ++seq) {
    h.gateway.receive(*provider.session, provider.chunk_frame(sent, static_cast<uint64_t>(seq), ""));
  }
  EXPECT_TRUE(provider.session->dropped());
  EXPECT_NE(provider.link->close_reason.find("larger than any request allows"), std::string::npos);
}

TEST(UsageBounds, observed_speed_counts_billed_tokens_and_is_capped_at_twice_the_claim) {
  CoordinatorHarness h;
  auto provider = h.connect("m", 1, 50);
  auto request = h.request("m", 64);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  const proto::InferenceRequest sent = provider.link->sent<proto::InferenceRequest>().back();
  h.gateway.receive(*provider.session, provider.chunk_frame(sent, 0, std::string(60, 'x')));
  h.advance(1ms);
  // 61 tokens billable in 1 ms would be 60,000 tokens/s; the claim was 50.
  h.gateway.receive(*provider.session, provider.complete_frame(sent, 1, 3, 61, ""));
  h.run();
  EXPECT_DOUBLE_EQ(provider.session->observed_decode_tps(), 100);
}

// A connection that has not registered (yet), from `remote`.
std::shared_ptr<testing::FakeLink> connect_silent(CoordinatorHarness& h, const std::string& remote) {
  auto link = std::make_shared<testing::FakeLink>();
  link->remote_address = remote;
  h.gateway.connect(link);
  return link;
}

TEST(Registry, a_connection_that_does_not_register_in_time_is_dropped) {
  CoordinatorHarness h;
  auto silent = connect_silent(h, "10.0.0.9:1");
  auto provider = h.connect("m");
  h.advance(h.config().register_timeout - 1ms);
  EXPECT_TRUE(silent->open);
  h.advance(1ms);
  EXPECT_FALSE(silent->open);
  EXPECT_NE(silent->close_reason.find("no valid register"), std::string::npos);
  EXPECT_FALSE(provider.session->dropped());
  EXPECT_EQ(h.registry.size(), 1u);
}

TEST(Registry, new_connections_are_refused_past_the_idle_and_per_address_caps) {
  auto config = CoordinatorHarness::default_config();
  config.max_untrusted_providers = 3;
  config.max_providers_per_address = 2;
  CoordinatorHarness h(config);
  // Registered providers that serve (open mode) count toward neither idle cap.
  for (int i = 0; i < 4; ++i) {
    h.connect_with("m", [](proto::Register&) {}).link->remote_address = fmt::format("10.0.1.{}:1", i);
  }
  EXPECT_FALSE(h.gateway.admission_refusal("10.0.0.7:5"));
  connect_silent(h, "10.0.0.7:5");
  connect_silent(h, "10.0.0.7:6");
  auto per_address = h.gateway.admission_refusal("10.0.0.7:7");
  ASSERT_TRUE(per_address);
  EXPECT_EQ(per_address->status, 429);
  EXPECT_NE(per_address->message.find("from this address"), std::string::npos);
  EXPECT_FALSE(h.gateway.admission_refusal("10.0.0.8:1"));  // another address is still welcome
  connect_silent(h, "10.0.0.8:1");
  auto idle = h.gateway.admission_refusal("10.0.0.9:1");
  ASSERT_TRUE(idle);
  EXPECT_NE(idle->message.find("waiting to be trusted"), std::string::npos);
  // Once the silent ones are dropped, there is room again.
  h.advance(h.config().register_timeout);
  EXPECT_FALSE(h.gateway.admission_refusal("10.0.0.9:1"));
  EXPECT_EQ(http::address_key("127.0.0.2:9"), "127.0.0.2");
  EXPECT_EQ(http::address_key("[2001:db8::1]:80"), "2001:db8::/64");
  EXPECT_EQ(http::address_key("2001:db8::2:80"), "2001:db8::/64");  // as Exchange::remote_address writes it
  EXPECT_EQ(http::address_key("[::ffff:10.0.0.1]:80"), "10.0.0.1");
}

TEST(Registry, an_unattested_provider_is_closed_unless_in_open_mode) {
  auto config = CoordinatorHarness::default_config();
  config.min_trust = TrustLevel::self_signed;
  CoordinatorHarness h(config);
  auto unattested = h.connect("m");
  EXPECT_TRUE(unattested.session->dropped());
  EXPECT_NE(unattested.link->close_reason.find("serves only attested providers"), std::string::npos);
  auto attested = h.connect_attested("m");
  EXPECT_FALSE(attested.session->dropped());
}

TEST(Registry, outside_open_mode_a_provider_nobody_can_route_to_is_closed_after_a_while) {
  auto config = CoordinatorHarness::default_config();
  config.min_trust = TrustLevel::self_signed;
  CoordinatorHarness h(config);
  auto mute = h.connect_attested("m");  // never answers its challenges
  auto honest = h.connect_attested("m");
  h.gateway.receive(*honest.session, proto::encode(honest.answer_last_challenge()));
  h.run();
  ASSERT_TRUE(honest.session->routable(config.min_trust, h.clock.now()));
  // Eviction passes see the mute one unroutable; the honest one answers each new challenge.
  size_t answered = honest.challenges().size();
  for (auto elapsed = 0ms; elapsed <= config.unroutable_timeout + config.eviction_interval() * 2;
       elapsed += config.eviction_interval()) {
    h.advance(config.eviction_interval());
    h.gateway.receive(*mute.session, proto::encode(proto::Heartbeat{"idle", "m"}));
    h.gateway.receive(*honest.session, proto::encode(proto::Heartbeat{"idle", "m"}));
    if (honest.challenges().size() > answered) {
      answered = honest.challenges().size();
      h.gateway.receive(*honest.session, proto::encode(honest.answer_last_challenge()));
    }
    h.run();
    h.gateway.evict_silent();
  }
  EXPECT_TRUE(mute.session->dropped());
  EXPECT_NE(mute.link->close_reason.find("not trusted enough to serve"), std::string::npos);
  EXPECT_FALSE(honest.session->dropped());
  h.gateway.stop();
  h.run();
}

TEST(Registry, a_provider_with_more_models_than_allowed_is_refused) {
  CoordinatorHarness h;
  auto greedy = h.connect_with("m0", [&](proto::Register& hello) {
    for (size_t i = 1; i <= h.config().max_models_per_provider; ++i) {
      hello.models.push_back({fmt::format("m{}", i), 1, "q8_0", ""});
    }
  });
  EXPECT_TRUE(greedy.session->dropped());
  EXPECT_NE(greedy.link->close_reason.find("at most"), std::string::npos);
}

TEST(Registry, a_key_is_recorded_only_once_it_passes_a_challenge) {
  CoordinatorHarness h;
  auto provider = h.connect_attested("m");
  const std::string key = provider.identity->document.public_key;
  EXPECT_FALSE(h.store().find_provider_key(key)->has_value());
  h.gateway.receive(*provider.session, proto::encode(provider.answer_last_challenge()));
  h.run();
  ASSERT_EQ(provider.session->trust_state().passed, 1u);
  EXPECT_TRUE(h.store().find_provider_key(key)->has_value());

  // One that never answers leaves nothing behind.
  auto silent = h.connect_attested("m");
  h.advance(h.config().challenge_timeout);
  EXPECT_FALSE(h.store().find_provider_key(silent.identity->document.public_key)->has_value());
  h.gateway.stop();
  h.run();
}

TEST(ProviderInfluence, a_repeated_accept_is_a_protocol_error_and_late_frames_are_bounded) {
  CoordinatorHarness h;
  auto provider = h.connect("m");
  auto request = h.request("m");
  auto outcome = testing::new_outcome();
  h.dispatch(request, outcome);
  const proto::InferenceRequest sent = provider.link->sent<proto::InferenceRequest>().back();
  h.gateway.receive(*provider.session, proto::encode(proto::InferenceAccepted{sent.request_id}));
  EXPECT_FALSE(provider.session->dropped());
  h.gateway.receive(*provider.session, proto::encode(proto::InferenceAccepted{sent.request_id}));
  EXPECT_TRUE(provider.session->dropped());
  EXPECT_NE(provider.link->close_reason.find("inference_accepted sent twice"), std::string::npos);

  // Frames for attempts not in flight (ended, or never sent) are ignored, within a budget that
  // refills over time; a provider sending them faster is flooding.
  auto other = h.connect("m");
  auto second = h.request("m");
  auto second_outcome = testing::new_outcome();
  h.dispatch(second, second_outcome);
  const proto::InferenceRequest abandoned = other.link->sent<proto::InferenceRequest>().back();
  h.dispatcher.client_gone(*second);
  h.run();
  h.gateway.receive(*other.session, proto::encode(proto::InferenceAccepted{abandoned.request_id}));
  h.gateway.receive(*other.session, other.chunk_frame(abandoned, 0, "late"));
  h.gateway.receive(*other.session, proto::encode(proto::InferenceAccepted{"att_never_sent"}));
  EXPECT_FALSE(other.session->dropped());
  const std::string late = proto::encode(proto::InferenceAccepted{"att_late"});
  for (int i = 0; i < static_cast<int>(ProviderSession::kLateFrameBurst) && !other.session->dropped(); ++i) {
    h.gateway.receive(*other.session, late);
  }
  EXPECT_TRUE(other.session->dropped());
  EXPECT_NE(other.link->close_reason.find("too many frames"), std::string::npos);
  // At an honest pace the budget refills.
  auto third = h.connect("m");
  for (int i = 0; i < 3 * static_cast<int>(ProviderSession::kLateFrameBurst); ++i) {
    h.gateway.receive(*third.session, late);
    if (i % 100 == 99) h.clock.advance(std::chrono::milliseconds(200));
  }
  EXPECT_FALSE(third.session->dropped());
}

TEST(ProviderInfluence, provider_text_is_escaped_and_its_log_lines_are_rate_limited) {
  EXPECT_EQ(printable("ok\n2026-01-01 info forged\x01"), "ok\\n2026-01-01 info forged\\x01");
  EXPECT_EQ(printable(std::string(400, 'a'), 10), std::string(10, 'a') + "…");
  EXPECT_EQ(printable("a\u2028b\u0085c"), "a\\u2028b\\u0085c");
  EXPECT_EQ(printable("ab\u00e9", 3), "ab…");  // not half of é

  CoordinatorHarness h;
  auto provider = h.connect("m");
  int allowed = 0;
  uint64_t suppressed = 0;
  for (int i = 0; i < 100; ++i) allowed += provider.session->may_log(h.clock.now(), &suppressed) ? 1 : 0;
  EXPECT_EQ(allowed, static_cast<int>(ProviderSession::kLogBurst));
  h.clock.advance(ProviderSession::kLogRefill);
  EXPECT_TRUE(provider.session->may_log(h.clock.now(), &suppressed));
  EXPECT_EQ(suppressed, 100u - static_cast<uint64_t>(ProviderSession::kLogBurst));
  EXPECT_FALSE(provider.session->may_log(h.clock.now(), &suppressed));
}

}  // namespace
}  // namespace darkbloom::coordinator

namespace darkbloom::coordinator {
namespace {

// Large bodies are sealed off the network thread: the provider's slot is taken meanwhile, and
// whatever happens to the provider or the client in that window decides whether it is sent.
struct SealingWindow : ::testing::Test {
  static std::shared_ptr<PendingRequest> large_request(CoordinatorHarness& h) {
    return request_of_size(h, "m", kOffloadBodyBytes);
  }
};

TEST_F(SealingWindow, the_slot_is_taken_while_a_large_body_is_sealed_and_the_frame_follows) {
  CoordinatorHarness h;
  h.offload.hold(true);
  auto provider = h.connect("m");
  auto request = large_request(h);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  EXPECT_EQ(h.offload.held(), 1u);
  EXPECT_EQ(provider.session->in_flight(), 1u);
  EXPECT_FALSE(provider.session->has_capacity());
  EXPECT_TRUE(provider.link->sent<proto::InferenceRequest>().empty());
  h.offload.run_held();
  h.run();
  ASSERT_EQ(provider.link->sent<proto::InferenceRequest>().size(), 1u);
  EXPECT_EQ(provider.link->frames.back().size(), request->frame_bytes);
}

TEST_F(SealingWindow, a_provider_dropped_meanwhile_gets_nothing_and_another_one_serves) {
  CoordinatorHarness h;
  h.offload.hold(true);
  auto a = h.connect("m");
  auto b = h.connect("m");
  auto request = large_request(h);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  FakeProvider& picked = a.session->in_flight() == 1 ? a : b;
  FakeProvider& other = &picked == &a ? b : a;
  h.gateway.drop(*picked.session, "gone while sealing");
  h.offload.run_held();
  h.run();
  EXPECT_TRUE(picked.link->sent<proto::InferenceRequest>().empty());
  EXPECT_EQ(picked.session->in_flight(), 0u);
  h.offload.run_held();  // the second attempt's seal
  h.run();
  EXPECT_EQ(other.link->sent<proto::InferenceRequest>().size(), 1u);
  EXPECT_EQ(other.session->in_flight(), 1u);
}

TEST_F(SealingWindow, a_provider_distrusted_meanwhile_gets_no_plaintext) {
  auto config = CoordinatorHarness::default_config();
  config.min_trust = TrustLevel::self_signed;
  CoordinatorHarness h(config);
  auto provider = h.connect_attested("m");
  h.gateway.receive(*provider.session, proto::encode(provider.answer_last_challenge()));
  h.run();
  ASSERT_TRUE(provider.session->routable(config.min_trust, h.clock.now()));
  h.offload.hold(true);
  auto request = large_request(h);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  ASSERT_EQ(provider.session->in_flight(), 1u);
  // The next challenge comes, and a forged answer to it, while the body is sealed: distrusted.
  const size_t challenges = provider.challenges().size();
  h.advance(config.challenge_interval);
  ASSERT_GT(provider.challenges().size(), challenges);
  testing::FakeAttester forger(provider.keys.public_key(), h.clock.wall_now());
  forger.document = provider.identity->document;
  h.gateway.receive(*provider.session, proto::encode(provider.answer_last_challenge(forger)));
  h.run();
  ASSERT_EQ(provider.session->trust(), TrustLevel::none);
  h.offload.run_held();
  h.run();
  EXPECT_TRUE(provider.link->sent<proto::InferenceRequest>().empty());
  EXPECT_EQ(provider.session->in_flight(), 0u);
  ASSERT_TRUE(*outcome);
  EXPECT_TRUE(std::holds_alternative<NoAnswer>(**outcome));
  h.gateway.stop();
  h.run();
}

TEST_F(SealingWindow, a_client_that_left_meanwhile_sends_nothing_and_frees_the_slot) {
  CoordinatorHarness h;
  h.offload.hold(true);
  auto provider = h.connect("m");
  auto request = large_request(h);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  h.dispatcher.client_gone(*request);
  h.run();
  h.offload.run_held();
  h.run();
  EXPECT_TRUE(provider.link->sent<proto::InferenceRequest>().empty());
  EXPECT_TRUE(provider.link->sent<proto::Cancel>().empty());
  EXPECT_EQ(provider.session->in_flight(), 0u);
  EXPECT_TRUE(*outcome);
}

}  // namespace
}  // namespace darkbloom::coordinator

namespace darkbloom::coordinator {
namespace {

TEST(ProviderFeatures, requests_that_need_structured_output_go_only_to_providers_that_announced_it) {
  CoordinatorHarness h;
  auto old = h.connect_with("m", [](proto::Register& hello) { hello.features.clear(); });
  auto current = h.connect_with("m", [](proto::Register& hello) { hello.features = proto::provider_features(); });
  const ProviderNeeds structured{0, proto::kFeatureBitResponseFormat | proto::kFeatureBitLogprobs};
  for (int i = 0; i < 10; ++i) EXPECT_EQ(h.router.pick("m", 10, {}, structured), current.session);
  EXPECT_FALSE(h.router.has_candidates("m", {current.session->id()}, structured));
  // Plain requests may go to either.
  std::set<std::string> chosen;
  for (int i = 0; i < 50; ++i) chosen.insert(h.router.pick("m", 10, {})->id());
  EXPECT_EQ(chosen.size(), 2u);
}

TEST(ProviderFeatures, with_only_older_providers_a_structured_request_is_refused_with_503_and_nothing_is_sent) {
  CoordinatorHarness h;
  auto old = h.connect_with("m", [](proto::Register& hello) { hello.features.clear(); });
  auto request = h.request("m");
  request->parsed.response_format = "json_schema";
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  ASSERT_TRUE(outcome->has_value());
  auto* refused = std::get_if<NoAnswer>(&**outcome);
  ASSERT_NE(refused, nullptr);
  EXPECT_EQ(refused->error.status, 503);
  EXPECT_NE(refused->error.message.find("response_format"), std::string::npos);
  EXPECT_TRUE(old.link->sent<proto::InferenceRequest>().empty());
}

}  // namespace
}  // namespace darkbloom::coordinator

namespace darkbloom::coordinator {
namespace {

// A provider of this version: it announces every feature.
FakeProvider connect_current(CoordinatorHarness& h) {
  return h.connect_with("m", [](proto::Register& hello) { hello.features = proto::provider_features(); });
}

// A request for `n` choices dispatched to `provider`; returns what it was sent.
proto::InferenceRequest dispatch_choices(CoordinatorHarness& h, FakeProvider& provider, int n,
                                         std::shared_ptr<PendingRequest>* request) {
  *request = h.request("m", 64);
  (*request)->parsed.n = n;
  auto outcome = new_outcome();
  h.dispatch(*request, outcome);
  const auto sent = provider.link->sent<proto::InferenceRequest>();
  EXPECT_EQ(sent.size(), 1u);
  return sent.empty() ? proto::InferenceRequest{} : sent.back();
}

std::string chunk_for_choice(const FakeProvider& provider, const proto::InferenceRequest& sent, uint64_t seq,
                             int index) {
  proto::ChunkContent content;
  content.seq = seq;
  content.text = "x";
  content.index = index;
  return proto::encode(proto::InferenceChunk{sent.request_id, provider.seal_for(sent, proto::encode(content))});
}

TEST(Choices, a_chunk_for_a_choice_the_request_did_not_ask_for_drops_the_provider) {
  CoordinatorHarness h;
  auto provider = connect_current(h);
  std::shared_ptr<PendingRequest> request;
  const proto::InferenceRequest sent = dispatch_choices(h, provider, 2, &request);
  h.gateway.receive(*provider.session, chunk_for_choice(provider, sent, 0, 1));
  EXPECT_FALSE(provider.session->dropped());
  h.gateway.receive(*provider.session, chunk_for_choice(provider, sent, 1, 2));
  EXPECT_TRUE(provider.session->dropped());
}

// Whether a provider that completes a 2-choice request with these finish reasons is dropped.
bool dropped_for_reasons(const std::vector<std::string>& reasons) {
  CoordinatorHarness h;
  auto provider = connect_current(h);
  std::shared_ptr<PendingRequest> request;
  const proto::InferenceRequest sent = dispatch_choices(h, provider, 2, &request);
  proto::CompletionContent content;
  content.prompt_tokens = 3;
  content.finish_reason = "stop";
  content.finish_reasons = reasons;
  h.gateway.receive(*provider.session, proto::encode(proto::InferenceComplete{
                                           sent.request_id, provider.seal_for(sent, proto::encode(content))}));
  return provider.session->dropped();
}

TEST(Choices, a_completion_must_give_one_finish_reason_per_choice) {
  EXPECT_TRUE(dropped_for_reasons({}));
  EXPECT_TRUE(dropped_for_reasons({"stop"}));
  EXPECT_TRUE(dropped_for_reasons({"stop", "stop", "stop"}));
  EXPECT_FALSE(dropped_for_reasons({"stop", "length"}));
}

}  // namespace
}  // namespace darkbloom::coordinator

namespace darkbloom::coordinator {
namespace {

TEST(Choices, a_request_for_several_choices_takes_as_many_of_the_providers_sequences) {
  CoordinatorHarness h;
  auto provider = h.connect_with("m", [](proto::Register& hello) {
    hello.features = proto::provider_features();
    hello.max_concurrency = 4;
  });
  std::shared_ptr<PendingRequest> request;
  dispatch_choices(h, provider, 3, &request);
  EXPECT_EQ(provider.session->sequences_in_flight(), 3);
  EXPECT_TRUE(provider.session->has_capacity());
  const ProviderNeeds plain{};
  EXPECT_EQ(h.router.pick("m", 10, {}, plain), provider.session);
  std::shared_ptr<PendingRequest> second;
  auto outcome = new_outcome();
  second = h.request("m", 64);
  second->parsed.n = 2;
  h.dispatch(second, outcome);  // 3 + 2 > 4: it waits
  EXPECT_EQ(provider.link->sent<proto::InferenceRequest>().size(), 1u);
}

}  // namespace
}  // namespace darkbloom::coordinator

namespace darkbloom::coordinator {
namespace {

TEST(ProviderFeatures, waiters_that_cannot_use_a_freed_provider_pass_it_on_once_to_one_that_can) {
  CoordinatorConfig config = CoordinatorHarness::default_config();
  config.queue_depth = 4;
  CoordinatorHarness h(config);
  auto old = h.connect_with("m", [](proto::Register& hello) { hello.features.clear(); });
  auto current = connect_current(h);
  // Both busy: a plain request on each.
  std::vector<std::shared_ptr<PendingRequest>> busy;
  for (int i = 0; i < 2; ++i) {
    busy.push_back(h.request("m", 64));
    h.dispatch(busy.back(), new_outcome());
  }
  ASSERT_EQ(old.session->in_flight() + current.session->in_flight(), 2u);
  // Two structured requests and then a plain one wait.
  std::vector<std::shared_ptr<PendingRequest>> waiting;
  std::vector<testing::Outcome> outcomes;
  for (const char* format : {"json_object", "json_object", "text"}) {
    waiting.push_back(h.request("m", 64));
    waiting.back()->parsed.response_format = format;
    outcomes.push_back(new_outcome());
    h.dispatch(waiting.back(), outcomes.back());
  }
  EXPECT_EQ(h.router.queued("m"), 3u);
  // The old provider finishes: the structured waiters cannot use it and hand the wake-up on, each
  // once, to the plain request behind them (no endless passing back and forth).
  const proto::InferenceRequest sent = old.link->sent<proto::InferenceRequest>().back();
  h.gateway.receive(*old.session, old.complete_frame(sent, 0, 3, 1, ""));
  h.run();
  // The plain request went to it (its first chunk is awaited now); the structured ones still wait.
  ASSERT_EQ(old.link->sent<proto::InferenceRequest>().size(), 2u);
  ASSERT_TRUE(waiting[2]->attempt);
  EXPECT_EQ(old.link->sent<proto::InferenceRequest>().back().request_id, waiting[2]->attempt->request_id);
  EXPECT_FALSE(waiting[0]->attempt);
  EXPECT_FALSE(waiting[1]->attempt);
  EXPECT_EQ(h.router.queued("m"), 2u);
}

}  // namespace
}  // namespace darkbloom::coordinator

namespace darkbloom::coordinator {
namespace {

// A chunk of an answer: text, tool-call pieces, or both.
struct Piece {
  std::string text;
  std::vector<proto::ToolCallDelta> calls;
};

// Whether a provider is dropped for answering a request that offers get_weather and add (with
// `choice`; none: no tools at all) with these chunks, then completing with `finish` (if any).
bool dropped_for_calls(const std::vector<Piece>& chunks, const std::string& finish = {},
                       proto::ToolChoice choice = proto::ToolChoice::automatic) {
  CoordinatorHarness h;
  auto provider = h.connect_with("m", [](proto::Register& hello) { hello.features = proto::provider_features(); });
  auto request = h.request("m", 64);
  if (choice != proto::ToolChoice::none) {
    request->parsed.tools.push_back({"get_weather", "", nullptr});
    request->parsed.tools.push_back({"add", "", nullptr});
    request->parsed.tool_choice = choice;
    request->parsed.tool_choice_name = "get_weather";
  }
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  const auto sent = provider.link->sent<proto::InferenceRequest>();
  EXPECT_EQ(sent.size(), 1u);
  if (sent.empty()) return false;
  uint64_t seq = 0;
  for (const auto& piece : chunks) {
    proto::ChunkContent content;
    content.seq = seq++;
    content.text = piece.text;
    content.tool_calls = piece.calls;
    h.gateway.receive(*provider.session, proto::encode(proto::InferenceChunk{
                                             sent[0].request_id, provider.seal_for(sent[0], proto::encode(content))}));
  }
  if (!finish.empty()) {
    proto::CompletionContent content;
    content.seq = seq;
    content.prompt_tokens = 3;
    content.completion_tokens = 2;
    content.finish_reason = finish;
    h.gateway.receive(*provider.session, proto::encode(proto::InferenceComplete{
                                             sent[0].request_id, provider.seal_for(sent[0], proto::encode(content))}));
  }
  return provider.session->dropped();
}

TEST(ToolCalls, a_provider_may_only_call_offered_functions_in_order_with_ids) {
  const proto::ToolCallDelta start{0, "call_1", "get_weather", "{\"ci"};
  const proto::ToolCallDelta more{0, "", "", "ty\":1}"};
  const proto::ToolCallDelta second{1, "call_2", "add", "{}"};
  EXPECT_FALSE(dropped_for_calls({{"", {start}}, {"", {more}}}, "tool_calls"));
  EXPECT_FALSE(dropped_for_calls({{"Let me see.", {start, more}}, {"", {second}}, {"Done.", {}}}, "stop"));
  EXPECT_TRUE(dropped_for_calls({{"", {{0, "call_1", "rm_rf", "{}"}}}}));        // not offered
  EXPECT_TRUE(dropped_for_calls({{"", {{1, "call_1", "get_weather", "{}"}}}}));  // skips call 0
  EXPECT_TRUE(dropped_for_calls({{"", {start}}, {"", {{0, "", "add", "}"}}}}));  // renamed midway
  EXPECT_TRUE(dropped_for_calls({{"", {start}}, {"", {{0, "", "", ""}}}}));      // continued with nothing
  EXPECT_TRUE(dropped_for_calls({{"", {start, second}}, {"", {more}}}));         // an earlier call goes on
  EXPECT_TRUE(dropped_for_calls({{"", {start}}, {"text", {more}}}));             // goes on after text
  EXPECT_TRUE(dropped_for_calls({{"", {{0, "", "get_weather", "{}"}}}}));        // no id
  EXPECT_TRUE(dropped_for_calls({{"", {{0, "call 1", "get_weather", "{}"}}}}));  // a malformed id
  EXPECT_TRUE(dropped_for_calls({{"", {start}}}, {}, proto::ToolChoice::none));  // no tools offered
  EXPECT_TRUE(dropped_for_calls({}, "tool_calls"));                              // finished with calls it never made
}

TEST(ToolCalls, a_forced_call_is_answered_with_that_call_alone) {
  const proto::ToolCallDelta weather{0, "call_1", "get_weather", "{}"};
  EXPECT_FALSE(dropped_for_calls({{"", {weather}}}, "tool_calls", proto::ToolChoice::named));
  EXPECT_FALSE(dropped_for_calls({{"", {weather}}}, "length", proto::ToolChoice::named));
  EXPECT_TRUE(dropped_for_calls({{"", {{0, "call_1", "add", "{}"}}}}, {}, proto::ToolChoice::named));  // another
  EXPECT_TRUE(dropped_for_calls({{"", {weather, {1, "call_2", "get_weather", "{}"}}}}, {},
                                proto::ToolChoice::named));                                // twice
  EXPECT_TRUE(dropped_for_calls({{"Sure!", {}}}, {}, proto::ToolChoice::required));        // text
  EXPECT_TRUE(dropped_for_calls({{"", {weather}}}, "stop", proto::ToolChoice::required));  // not ended as a call
  EXPECT_FALSE(dropped_for_calls({{"", {weather}}, {"", {{1, "call_2", "add", "{}"}}}}, "tool_calls",
                                 proto::ToolChoice::required));
}

TEST(ToolCalls, calls_count_as_output_for_the_usage_bound) {
  // 20 calls' worth of arguments and markup bound more tokens than the 2 bytes of text would.
  EXPECT_GT(usage_bound(100, 1, static_cast<int64_t>(2 + 3 * (11 + kToolCallMarkupBytes))).completion_tokens,
            usage_bound(100, 1, 2).completion_tokens);
  Attempt attempt;
  attempt.choices = 1;
  attempt.tools.names = {"get_weather"};
  attempt.tools.max_calls = 2;
  proto::ChunkContent content;
  content.tool_calls = {{0, "call_1", "get_weather", "{}"}};
  EXPECT_FALSE(ProviderGateway::check_tool_calls(attempt, content));
  EXPECT_EQ(attempt.bytes_received, std::string("get_weather{}").size() + kToolCallMarkupBytes);
  content.tool_calls = {{1, "call_2", "get_weather", "{}"}};
  EXPECT_FALSE(ProviderGateway::check_tool_calls(attempt, content));
  content.tool_calls = {{2, "call_3", "get_weather", "{}"}};
  EXPECT_TRUE(ProviderGateway::check_tool_calls(attempt, content));  // a third call: more than allowed
}

}  // namespace
}  // namespace darkbloom::coordinator
