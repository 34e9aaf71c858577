#include "proto/blind.h"

#include <gtest/gtest.h>

#include "base/encoding.h"

namespace darkbloom::proto {
namespace {

SealedPayload sealed(uint8_t fill, size_t bytes = 64) {
  SealedPayload payload;
  payload.sender_public_key.assign(32, fill);
  payload.ciphertext.assign(bytes, static_cast<uint8_t>(fill + 1));
  return payload;
}

BlindRequest sample() {
  BlindRequest request;
  request.model = "m";
  request.max_tokens = 32;
  request.n = 2;
  request.copies = {{"prov_a", sealed(1)}, {"prov_b", sealed(2, 100)}};
  return request;
}

TEST(BlindRequest, RoundTrips) {
  ApiError error;
  auto decoded = decode_blind_request(encode(sample()), &error);
  ASSERT_TRUE(decoded) << error.message;
  EXPECT_EQ(decoded->model, "m");
  EXPECT_EQ(decoded->max_tokens, 32);
  EXPECT_EQ(decoded->n, 2);
  ASSERT_EQ(decoded->copies.size(), 2u);
  EXPECT_EQ(decoded->copies[1].provider_id, "prov_b");
  EXPECT_EQ(decoded->copies[1].sealed_body.ciphertext, sample().copies[1].sealed_body.ciphertext);
  EXPECT_EQ(decoded->copies[0].sealed_body.sender_public_key, sample().copies[0].sealed_body.sender_public_key);
}

TEST(BlindRequest, RefusesWhatRoutingOrBillingCannotUse) {
  auto refused = [](BlindRequest request, const std::string& param) {
    ApiError error;
    EXPECT_FALSE(decode_blind_request(encode(request), &error)) << param;
    EXPECT_EQ(error.status, 400);
    EXPECT_NE(error.param.find(param), std::string::npos) << error.param << " / " << error.message;
  };
  BlindRequest none = sample();
  none.copies.clear();
  refused(none, "copies");
  BlindRequest four = sample();
  four.copies = {{"a", sealed(1)}, {"b", sealed(1)}, {"c", sealed(1)}, {"d", sealed(1)}};
  refused(four, "copies");
  BlindRequest twice = sample();
  twice.copies[1].provider_id = "prov_a";
  refused(twice, "provider_id");
  BlindRequest no_tokens = sample();
  no_tokens.max_tokens = 0;
  refused(no_tokens, "max_tokens");
  BlindRequest many = sample();
  many.n = kMaxChoices + 1;
  refused(many, "n");
  BlindRequest short_box = sample();
  short_box.copies[0].sealed_body.ciphertext.resize(39);  // less than nonce and MAC
  refused(short_box, "sealed_body");
  ApiError error;
  EXPECT_FALSE(decode_blind_request("{\"model\": \"m\", \"copies\": []}", &error));
  EXPECT_FALSE(decode_blind_request("[]", &error));
  EXPECT_FALSE(decode_blind_request("not json", &error));
}

TEST(BlindEvents, ChunkAndCompletionRoundTrip) {
  auto chunk = decode_blind_chunk(encode_blind_chunk(sealed(5)));
  ASSERT_TRUE(chunk);
  EXPECT_EQ(chunk->ciphertext, sealed(5).ciphertext);
  BlindCompletion completion{sealed(6), 11, 22};
  auto decoded = decode_blind_completion(encode(completion));
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->prompt_tokens, 11);
  EXPECT_EQ(decoded->completion_tokens, 22);
  EXPECT_EQ(decoded->sealed.sender_public_key, sealed(6).sender_public_key);
  EXPECT_FALSE(decode_blind_chunk(R"({"ephemeral_public_key": "AAAA", "ciphertext": "AAAA"})"));
  EXPECT_FALSE(decode_blind_completion(R"({"sealed": {}})"));
}

TEST(AttestationPage, ReadsTheListingAsTheCoordinatorWritesIt) {
  ProviderAttestation entry;
  entry.provider_id = "prov_1";
  entry.trust_level = "hardware";
  entry.models = {"m1", "m2"};
  entry.features = {"blind", "tools"};
  entry.attested = true;
  entry.public_key = "cGs=";
  entry.attestation = R"({"a":1})";
  entry.signature = "c2ln";
  entry.hardware = "proven (...)";
  entry.ek_certificate = "ZWs=";
  entry.key_public = "a3A=";
  ProviderAttestation bare;
  bare.provider_id = "prov_2";
  bare.trust_level = "none";
  const std::vector<ProviderAttestation> entries{entry, bare};
  auto page = decode_attestation_page(encode_attestation_page(entries, true));
  ASSERT_TRUE(page) << page.error().message;
  EXPECT_TRUE(page->has_more);
  ASSERT_EQ(page->providers.size(), 2u);
  const ProviderAttestation& read = page->providers[0];
  EXPECT_EQ(read.models, entry.models);
  EXPECT_EQ(read.features, entry.features);
  EXPECT_TRUE(read.attested);
  EXPECT_EQ(read.attestation, entry.attestation);
  EXPECT_EQ(read.hardware, entry.hardware);
  EXPECT_EQ(read.ek_certificate, entry.ek_certificate);
  EXPECT_FALSE(page->providers[1].attested);
  EXPECT_FALSE(decode_attestation_page(R"({"data": [{"provider_id": 5}]})"));
  EXPECT_FALSE(decode_attestation_page(R"({"data": [{"provider_id": "p", "trust_level": "x", "models": [1]}]})"));
}

}  // namespace
}  // namespace darkbloom::proto
