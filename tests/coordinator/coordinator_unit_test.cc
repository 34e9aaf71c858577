// The coordinator's decisions without a network: routing and its queue, eviction, challenges
// and their strikes, first-chunk timeouts and retries, cancellation, API keys. A ManualClock stands in for time and
// FakeLinks for providers, so each case runs in milliseconds and never sleeps.
#include <gtest/gtest.h>

#include <map>

#include "base/encoding.h"
#include "coordinator/coordinator_harness.h"
#include "support/model_file.h"

namespace darkbloom::coordinator {
namespace {

using namespace std::chrono_literals;
using testing::CoordinatorHarness;
using testing::FakeProvider;
using testing::new_outcome;
TEST(Router, picks_the_provider_with_the_lowest_expected_time) {
  CoordinatorHarness h;
  auto slow = h.connect("m", 4, 10);
  auto fast = h.connect("m", 4, 100);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(h.router.pick("m", 100, {}), fast.session);
  EXPECT_EQ(h.router.pick("m", 100, {fast.session->id()}), slow.session);
  EXPECT_EQ(h.router.pick("other", 100, {}), nullptr);
}

TEST(Router, near_ties_go_to_the_provider_with_fewer_in_flight_then_to_chance) {
  CoordinatorHarness h;
  auto a = h.connect("m", 4, 50);
  auto b = h.connect("m", 4, 50);
  std::map<std::string, int> chosen;
  for (int i = 0; i < 200; ++i) chosen[h.router.pick("m", 10, {})->id()] += 1;
  // Equal providers: both chosen, neither always (200 fair draws land 50-150 each with
  // overwhelming odds; the seed makes the run repeatable).
  EXPECT_GT(chosen[a.session->id()], 50);
  EXPECT_GT(chosen[b.session->id()], 50);

  // One request in flight on `a`: within the near-tie band, `b` (fewer in flight) wins every time.
  auto request = h.request("m", 10);
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  auto busy = a.session->in_flight() == 1 ? a.session : b.session;
  auto idle = busy == a.session ? b.session : a.session;
  for (int i = 0; i < 20; ++i) EXPECT_EQ(h.router.pick("m", 10, {}), idle);
}

TEST(Router, the_queue_is_first_in_first_out_and_bounded) {
  CoordinatorHarness h;
  auto provider = h.connect("m", 1);
  auto running = h.request("m");
  auto running_outcome = new_outcome();
  h.dispatch(running, running_outcome);
  ASSERT_EQ(provider.session->in_flight(), 1u);

  auto first = h.request("m");
  auto second = h.request("m");
  auto third = h.request("m");
  auto first_outcome = new_outcome(), second_outcome = new_outcome(), third_outcome = new_outcome();
  h.dispatch(first, first_outcome);
  h.dispatch(second, second_outcome);
  h.dispatch(third, third_outcome);  // queue depth 2: refused at once
  ASSERT_TRUE(*third_outcome);
  const auto& refused = std::get<NoAnswer>(**third_outcome);
  EXPECT_EQ(refused.error.status, 429);
  EXPECT_EQ(refused.headers, retry_after(1));
  EXPECT_EQ(h.router.queued("m"), 2u);

  // The running request ends: the first in line gets the provider, the second keeps waiting.
  const auto request_frames = provider.link->sent<proto::InferenceRequest>();
  ASSERT_EQ(request_frames.size(), 1u);
  h.gateway.receive(*provider.session,
                    proto::encode(proto::InferenceError{request_frames[0].request_id, 500, "boom", ""}));
  h.run();
  EXPECT_TRUE(first->attempt);
  EXPECT_FALSE(second->attempt);
  EXPECT_EQ(h.router.queued("m"), 1u);
}

TEST(Router, a_queued_request_expires_after_the_queue_wait) {
  // The running request outlasts the wait (no first-chunk timeout frees its provider first).
  auto config = CoordinatorHarness::default_config();
  config.first_chunk_timeout = 2 * config.queue_wait;
  CoordinatorHarness h(config);
  auto provider = h.connect("m", 1);
  auto running = h.request("m");
  auto running_outcome = new_outcome();
  h.dispatch(running, running_outcome);
  auto waiting = h.request("m");
  auto outcome = new_outcome();
  h.dispatch(waiting, outcome);
  h.advance(h.config().queue_wait - 1ms);
  EXPECT_FALSE(*outcome);
  h.advance(1ms);
  ASSERT_TRUE(*outcome);
  const auto& refused = std::get<NoAnswer>(**outcome);
  EXPECT_EQ(refused.error.status, 429);
  EXPECT_EQ(refused.headers, retry_after(5));
  EXPECT_EQ(h.router.queued("m"), 0u);
}

TEST(Gateway, a_silent_provider_is_evicted_and_one_that_heartbeats_stays) {
  CoordinatorHarness h;
  auto silent = h.connect("m");
  auto alive = h.connect("m");
  h.gateway.start();
  for (int i = 0; i < 4; ++i) {
    h.advance(30s);
    proto::Heartbeat heartbeat;
    heartbeat.status = "idle";
    h.gateway.receive(*alive.session, proto::encode(heartbeat));
  }
  EXPECT_TRUE(silent.session->dropped());
  EXPECT_FALSE(silent.link->open);
  EXPECT_NE(silent.link->close_reason.find("silent"), std::string::npos);
  EXPECT_FALSE(alive.session->dropped());
  EXPECT_EQ(h.registry.size(), 1u);
  h.gateway.stop();
  h.advance(60s);
}

TEST(Gateway, a_provider_that_breaks_the_protocol_is_dropped_and_its_attempts_hear_of_it) {
  CoordinatorHarness h;
  auto provider = h.connect("m");
  auto request = h.request("m");
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  h.gateway.receive(*provider.session, "{not json");
  h.run();
  EXPECT_TRUE(provider.session->dropped());
  EXPECT_NE(provider.link->close_reason.find("malformed frame"), std::string::npos);
  ASSERT_TRUE(*outcome);  // its only provider left: nothing to wait for
  EXPECT_NE(std::get<NoAnswer>(**outcome).error.message.find("disconnected"), std::string::npos);
}

// The trust level the coordinator last told the provider, and why.
proto::TrustStatus last_trust_status(const FakeProvider& provider) {
  const auto statuses = provider.link->sent<proto::TrustStatus>();
  return statuses.empty() ? proto::TrustStatus{} : statuses.back();
}

TEST(Challenges, an_attested_provider_is_challenged_at_once_then_every_interval) {
  CoordinatorHarness h;
  auto provider = h.connect_attested("m");
  ASSERT_FALSE(provider.session->dropped()) << provider.link->close_reason;
  EXPECT_EQ(provider.session->trust(), TrustLevel::self_signed);
  ASSERT_EQ(provider.challenges().size(), 1u);
  EXPECT_FALSE(provider.session->routable(TrustLevel::self_signed, h.clock.now()));  // not yet proven

  h.gateway.receive(*provider.session, proto::encode(provider.answer_last_challenge()));
  h.run();
  EXPECT_EQ(provider.session->trust_state().passed, 1u);
  EXPECT_TRUE(provider.session->routable(TrustLevel::self_signed, h.clock.now()));
  EXPECT_EQ(last_trust_status(provider).trust_level, "self_signed");

  // The next challenge waits for the interval, counted from the last one, not from the answer.
  h.advance(h.config().challenge_interval - 1ms);
  EXPECT_EQ(provider.challenges().size(), 1u);
  h.advance(1ms);
  const auto challenges = provider.challenges();
  ASSERT_EQ(challenges.size(), 2u);
  EXPECT_NE(challenges[0].nonce, challenges[1].nonce);
  h.gateway.stop();
  h.run();
}

TEST(Challenges, three_unanswered_challenges_in_a_row_distrust_and_a_pass_resets_the_count) {
  CoordinatorHarness h;
  const auto& config = h.config();
  auto provider = h.connect_attested("m");
  // Misses the first two, answers the third: still trusted, the count starts again.
  for (int miss = 1; miss <= 2; ++miss) {
    h.advance(config.challenge_timeout);
    EXPECT_EQ(provider.session->trust_state().consecutive_failures, miss);
    h.advance(config.challenge_interval - config.challenge_timeout);
  }
  EXPECT_EQ(provider.session->trust(), TrustLevel::self_signed);
  h.gateway.receive(*provider.session, proto::encode(provider.answer_last_challenge()));
  h.run();
  EXPECT_EQ(provider.session->trust_state().consecutive_failures, 0);

  // Then three misses in a row: distrusted, told why, and no longer challenged.
  for (int miss = 1; miss <= 3; ++miss) h.advance(config.challenge_interval);
  h.advance(config.challenge_timeout);  // the third of them unanswered
  EXPECT_EQ(provider.session->trust(), TrustLevel::none);
  EXPECT_EQ(provider.session->trust_state().failed, 5u);
  EXPECT_EQ(last_trust_status(provider).trust_level, "none");
  EXPECT_NE(last_trust_status(provider).reason.find("three challenges in a row failed"), std::string::npos);
  const size_t challenged = provider.challenges().size();
  EXPECT_EQ(challenged, 6u);
  h.advance(config.challenge_interval * 3);
  EXPECT_EQ(provider.challenges().size(), challenged);
  EXPECT_FALSE(provider.session->dropped());  // still serves, at trust level none
}

// Model proofs through the gateway: unproven models are asked first and back to back and are not
// served before; an unanswered challenge asks for the same model again; proven models are asked
// again only after --model-challenge-interval.
TEST(Challenges, models_are_served_once_proven_and_asked_again_until_they_pass) {
  CoordinatorConfig settings = CoordinatorHarness::default_config();
  settings.challenge_interval = 10s;
  settings.challenge_timeout = 5s;
  settings.model_challenge_interval = 60s;
  CoordinatorHarness h(settings);
  const auto& config = h.config();
  const testing::ModelFile a(std::vector<uint8_t>(1000, 1));
  const testing::ModelFile b(std::vector<uint8_t>(2000, 2));
  FakeProvider provider;
  provider.identity = std::make_shared<testing::FakeAttester>(provider.keys.public_key(), h.clock.wall_now());
  h.register_provider(provider, "a", 1, 50, provider.identity->bundle(), [&](proto::Register& hello) {
    hello.models = {{"a", 1000, "q8_0", "", a.root()}, {"b", 2000, "q8_0", "", b.root()}};
  });
  const auto answer = [&](std::vector<proto::ModelChunkProof> proofs) {
    proto::AttestationResponse response = provider.answer_last_challenge();
    response.model_proofs = std::move(proofs);
    h.gateway.receive(*provider.session, proto::encode(response));
    h.run();
  };
  const auto asked = [&] { return provider.challenges().back().model_chunks; };
  ASSERT_EQ(provider.challenges().size(), 1u);
  ASSERT_EQ(asked().size(), 1u);  // one chunk: the whole (small) file
  EXPECT_EQ(asked()[0].model, "a");
  EXPECT_TRUE(h.registry.serving("a", config.min_trust).empty());
  answer({a.proof("a", 0)});
  // Routable for `a` only; `b` asked for at once.
  EXPECT_EQ(h.registry.serving("a", config.min_trust).size(), 1u);
  EXPECT_TRUE(h.registry.serving("b", config.min_trust).empty());
  ASSERT_EQ(provider.challenges().size(), 2u);
  EXPECT_EQ(asked()[0].model, "b");
  // Unanswered: a strike, and the next challenge asks for `b` again.
  h.advance(config.challenge_interval);
  ASSERT_EQ(provider.challenges().size(), 3u);
  EXPECT_EQ(provider.session->trust_state().consecutive_failures, 1);
  EXPECT_EQ(asked()[0].model, "b");
  answer({b.proof("b", 0)});
  EXPECT_EQ(h.registry.serving("b", config.min_trust).size(), 1u);
  // Both proven: challenges within the model interval ask for no chunks; after it, `a` again.
  const auto proven_at = h.clock.now();
  int plain = 0;
  for (; plain < 10; ++plain) {
    h.advance(config.challenge_interval);
    if (!asked().empty()) break;
    answer({});
  }
  EXPECT_GE(h.clock.now() - proven_at, config.model_challenge_interval);
  EXPECT_EQ(plain, 5);  // at 10, 20, 30, 40 and 50 s; chunks again at 60 s
  ASSERT_FALSE(asked().empty());
  EXPECT_EQ(asked()[0].model, "a");
  // A wrong proof: none and closed at once.
  answer({b.proof("a", 0)});
  EXPECT_EQ(provider.session->trust(), TrustLevel::none);
  EXPECT_TRUE(provider.session->dropped());
  h.gateway.stop();
  h.run();
}

// Ten models, two chunks each: eight are proven back to back (the provider's burst of 16 chunks),
// the rest as its budget refills, never by asking more than it proves.
TEST(Challenges, model_proofs_stay_within_the_providers_budget) {
  CoordinatorConfig settings = CoordinatorHarness::default_config();
  settings.challenge_interval = 10s;
  settings.challenge_timeout = 5s;
  CoordinatorHarness h(settings);
  std::vector<testing::ModelFile> files;
  for (uint8_t i = 0; i < 10; ++i) files.emplace_back(3 << 20, i);  // three chunks each
  FakeProvider provider;
  provider.identity = std::make_shared<testing::FakeAttester>(provider.keys.public_key(), h.clock.wall_now());
  h.register_provider(provider, "m0", 1, 50, provider.identity->bundle(), [&](proto::Register& hello) {
    hello.models.clear();
    for (size_t i = 0; i < files.size(); ++i) {
      hello.models.push_back({std::to_string(i).insert(0, 1, 'm'), files[i].bytes.size(), "q8_0", "", files[i].root()});
    }
  });
  // Answers the last challenge: each chunk asked, with its path.
  const auto answer = [&] {
    const auto challenge = provider.challenges().back();
    proto::AttestationResponse response = provider.answer_last_challenge();
    for (const auto& asked : challenge.model_chunks) {
      response.model_proofs.push_back(files.at(std::stoul(asked.model.substr(1))).proof(asked.model, asked.index));
    }
    h.gateway.receive(*provider.session, proto::encode(response));
    h.run();
    return challenge.model_chunks.size();
  };
  size_t chunks = 0;
  for (int i = 0; i < 8; ++i) chunks += answer();
  EXPECT_EQ(chunks, 16u);
  EXPECT_EQ(provider.session->trust_state().unproven.size(), 2u);
  // Spent: plain challenges until two chunks have come back (one per 10 s).
  EXPECT_EQ(answer(), 0u);
  h.advance(settings.challenge_interval);
  EXPECT_EQ(answer(), 0u);
  h.advance(settings.challenge_interval);
  EXPECT_EQ(answer(), 2u);
  EXPECT_EQ(provider.session->trust_state().unproven.size(), 1u);
  EXPECT_EQ(provider.session->trust(), TrustLevel::self_signed);
  h.gateway.stop();
  h.run();
}

TEST(Challenges, an_answer_signed_by_another_key_distrusts_at_once) {
  CoordinatorHarness h;
  auto provider = h.connect_attested("m");
  // The same document, signed for by another key.
  testing::FakeAttester forger(provider.keys.public_key(), h.clock.wall_now());
  forger.document = provider.identity->document;
  h.gateway.receive(*provider.session, proto::encode(provider.answer_last_challenge(forger)));
  h.run();
  EXPECT_EQ(provider.session->trust(), TrustLevel::none);
  EXPECT_EQ(provider.session->trust_state().passed, 0u);
  EXPECT_NE(last_trust_status(provider).reason.find("challenge answer rejected"), std::string::npos);
  h.gateway.stop();
  h.run();
}

TEST(Dispatcher, no_first_chunk_in_time_retries_on_another_provider_under_a_new_id) {
  CoordinatorHarness h;
  auto a = h.connect("m");
  auto b = h.connect("m");
  auto request = h.request("m");
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  FakeProvider& first = a.link->sent<proto::InferenceRequest>().empty() ? b : a;
  FakeProvider& second = &first == &a ? b : a;
  ASSERT_EQ(first.link->sent<proto::InferenceRequest>().size(), 1u);
  const std::string first_id = first.link->sent<proto::InferenceRequest>()[0].request_id;

  h.advance(h.config().first_chunk_timeout - 1ms);
  EXPECT_TRUE(second.link->sent<proto::InferenceRequest>().empty());
  h.advance(1ms);
  // The first provider is told to stop, and the request goes to the other one.
  ASSERT_EQ(first.link->sent<proto::Cancel>().size(), 1u);
  EXPECT_EQ(first.link->sent<proto::Cancel>()[0].request_id, first_id);
  EXPECT_EQ(first.session->in_flight(), 0u);
  ASSERT_EQ(second.link->sent<proto::InferenceRequest>().size(), 1u);
  const proto::InferenceRequest retry = second.link->sent<proto::InferenceRequest>()[0];
  EXPECT_NE(retry.request_id, first_id);
  // A late chunk for the abandoned id is ignored.
  h.gateway.receive(*first.session, proto::encode(proto::InferenceAccepted{first_id}));
  EXPECT_FALSE(first.session->dropped());

  // The second provider answers: its first chunk commits the request to it.
  h.gateway.receive(*second.session, proto::encode(proto::InferenceAccepted{retry.request_id}));
  h.run();
  EXPECT_FALSE(*outcome);  // accepted is not an answer
  h.gateway.receive(*second.session, second.chunk_frame(retry, 0, "Hi"));
  h.run();
  ASSERT_TRUE(*outcome);
  auto& answer = std::get<FirstAnswer>(**outcome);
  EXPECT_EQ(answer.provider, second.session);
  EXPECT_EQ(std::get<provider_event::Text>(*answer.first_event).text, "Hi");
}

TEST(Dispatcher, every_provider_timing_out_ends_in_a_timeout_error) {
  auto config = CoordinatorHarness::default_config();
  config.max_attempts = 2;
  CoordinatorHarness h(config);
  auto only = h.connect("m");
  auto request = h.request("m");
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  h.advance(h.config().first_chunk_timeout);
  ASSERT_TRUE(*outcome);  // the one provider failed this request: no second attempt to wait for
  EXPECT_EQ(std::get<NoAnswer>(**outcome).error.message, "The provider did not start answering in time");
  EXPECT_EQ(only.link->sent<proto::InferenceRequest>().size(), 1u);
}

TEST(Dispatcher, a_client_that_leaves_cancels_its_attempt_at_the_provider) {
  CoordinatorHarness h;
  auto provider = h.connect("m");
  auto request = h.request("m");
  auto outcome = new_outcome();
  h.dispatch(request, outcome);
  ASSERT_EQ(provider.session->in_flight(), 1u);
  h.dispatcher.client_gone(*request);
  h.run();
  ASSERT_TRUE(*outcome);
  EXPECT_TRUE(request->client_gone);
  ASSERT_EQ(provider.link->sent<proto::Cancel>().size(), 1u);
  EXPECT_EQ(provider.session->in_flight(), 0u);
}

TEST(Dispatcher, a_client_that_leaves_the_queue_frees_its_place) {
  CoordinatorHarness h;
  auto provider = h.connect("m", 1);
  auto running = h.request("m");
  auto running_outcome = new_outcome();
  h.dispatch(running, running_outcome);
  auto waiting = h.request("m");
  auto outcome = new_outcome();
  h.dispatch(waiting, outcome);
  EXPECT_EQ(h.router.queued("m"), 1u);
  h.dispatcher.client_gone(*waiting);
  h.run();
  ASSERT_TRUE(*outcome);
  EXPECT_EQ(h.router.queued("m"), 0u);
}

TEST(ApiKeys, a_created_key_authenticates_and_others_do_not) {
  CoordinatorHarness h;
  auto created = h.keys.create_account_key("alice");
  ASSERT_TRUE(created);
  EXPECT_EQ(created->api_key.substr(0, 3), "db-");
  auto account = h.finish(h.keys.authenticate("Bearer " + created->api_key, h.store_worker));
  ASSERT_TRUE(account);
  EXPECT_EQ(*account, std::optional<std::string>(created->account_id));
  // A fresh cache finds it in the store by its hash.
  ApiKeys fresh(h.store(), h.clock, h.random);
  EXPECT_EQ(*h.finish(fresh.authenticate("Bearer " + created->api_key, h.store_worker)),
            std::optional<std::string>(created->account_id));

  std::string other = created->api_key;
  other.back() = other.back() == '0' ? '1' : '0';
  const std::vector<std::string> refused_headers{"Bearer " + other, created->api_key, "Bearer db-short", "Basic x"};
  for (const std::string& header : refused_headers) {
    auto refused = h.finish(h.keys.authenticate(header, h.store_worker));
    ASSERT_TRUE(refused) << header;
    EXPECT_FALSE(*refused) << header;
  }
}

}  // namespace
}  // namespace darkbloom::coordinator
