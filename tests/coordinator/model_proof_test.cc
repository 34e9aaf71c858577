// Model proofs as pure functions: which root a model is held to (the catalogue's before its
// own), the chunks a challenge asks for, and answers that are checked against exactly those.
#include "coordinator/trust/model_proof.h"

#include <gtest/gtest.h>

#include "base/encoding.h"
#include "crypto/merkle.h"
#include "support/model_file.h"

namespace darkbloom::coordinator {
namespace {

using crypto::kMerkleChunkBytes;

using File = testing::ModelFile;

proto::ModelInfo info(const std::string& id, const File& file) {
  proto::ModelInfo model;
  model.id = id;
  model.size_bytes = file.bytes.size();
  model.merkle_root = file.root();
  return model;
}

TEST(ModelProof, a_catalogued_id_needs_the_catalogued_root_and_size) {
  const File file(3 * kMerkleChunkBytes + 10, 1);
  const File other(3 * kMerkleChunkBytes + 10, 2);
  ModelCatalog catalog;
  catalog["m"] = CatalogModel{"m", file.root(), file.bytes.size(), 0};
  EXPECT_FALSE(catalog_refusal(catalog, info("m", file)));
  EXPECT_FALSE(catalog_refusal(catalog, info("elsewhere", other)));  // not catalogued
  auto refused = catalog_refusal(catalog, info("m", other));
  ASSERT_TRUE(refused);
  EXPECT_NE(refused->find("is not the catalogue's"), std::string::npos) << *refused;
  proto::ModelInfo resized = info("m", file);
  resized.size_bytes += 1;
  EXPECT_TRUE(catalog_refusal(catalog, resized));
  proto::ModelInfo rootless = info("m", file);
  rootless.merkle_root.clear();
  EXPECT_TRUE(catalog_refusal(catalog, rootless));
}

TEST(ModelProof, challenges_ask_distinct_chunks_and_take_the_catalogues_root_first) {
  const File file(3 * kMerkleChunkBytes + 10, 1);
  const File other(5 * kMerkleChunkBytes, 2);
  SeededRandom random(7);
  ModelCatalog catalog;
  // Outside the catalogue: its own root. No root at all: nothing to ask.
  auto own = model_challenge(catalog, info("m", file), 4, random);
  ASSERT_TRUE(own);
  EXPECT_EQ(own->root, file.tree.root());
  std::vector<uint64_t> sorted = own->indices;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, (std::vector<uint64_t>{0, 1, 2, 3}));  // all four chunks, each once
  proto::ModelInfo rootless = info("m", file);
  rootless.merkle_root.clear();
  EXPECT_FALSE(model_challenge(catalog, rootless, 2, random));
  EXPECT_FALSE(model_challenge(catalog, info("m", file), 0, random));
  // Catalogued: the catalogue's root and size, whatever the provider announced.
  catalog["m"] = CatalogModel{"m", other.root(), other.bytes.size(), 0};
  auto held = model_challenge(catalog, info("m", file), 2, random);
  ASSERT_TRUE(held);
  EXPECT_EQ(held->root, other.tree.root());
  EXPECT_EQ(held->size, other.bytes.size());
  // A one-chunk file asked for two chunks: its one chunk, once.
  const File tiny(100, 3);
  auto once = model_challenge({}, info("t", tiny), 2, random);
  ASSERT_TRUE(once);
  EXPECT_EQ(once->indices, (std::vector<uint64_t>{0}));
  EXPECT_TRUE(provable({}, info("t", tiny)));
  EXPECT_FALSE(provable({}, rootless));
}

TEST(ModelProof, only_the_asked_chunks_of_the_file_in_order_pass) {
  const File file(3 * kMerkleChunkBytes + 10, 1);
  const File other(3 * kMerkleChunkBytes + 10, 2);
  ModelChallenge challenge{"m", file.tree.root(), file.bytes.size(), {3, 1}};
  std::vector<proto::ModelChunkProof> good{file.proof("m", 3), file.proof("m", 1)};
  EXPECT_TRUE(verify_model_proofs(challenge, good));
  std::vector<proto::ModelChunkProof> swapped{good[1], good[0]};
  EXPECT_FALSE(verify_model_proofs(challenge, swapped));
  EXPECT_FALSE(verify_model_proofs(challenge, std::span(good).first(1)));
  std::vector<proto::ModelChunkProof> foreign{other.proof("m", 3), other.proof("m", 1)};
  const Status wrong = verify_model_proofs(challenge, foreign);
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().code, Errc::permission_denied);
  std::vector<proto::ModelChunkProof> renamed = good;
  renamed[0].model.assign(1, 'n');  // (a literal here trips a false -Wrestrict in GCC 12)
  EXPECT_FALSE(verify_model_proofs(challenge, renamed));
  std::vector<proto::ModelChunkProof> bad_path = good;
  bad_path[1].path[0] = std::string(64, 'z');
  EXPECT_FALSE(verify_model_proofs(challenge, bad_path));
}

}  // namespace
}  // namespace darkbloom::coordinator
