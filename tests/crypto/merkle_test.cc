// The Merkle tree over a file's 1 MiB chunks: its root against one computed from the definition
// with plain SHA-256 calls, every chunk's path verifying, and a wrong leaf, index, sibling, path
// length, root or chunk byte failing.
#include "crypto/merkle.h"

#include <gtest/gtest.h>

#include <fstream>
#include <random>

#include "crypto/hash.h"
#include "support/temp_dir.h"

namespace darkbloom::crypto {
namespace {

// SHA-256 of prefix || parts, through the plain hash function.
Sha256 prefixed(uint8_t prefix, std::initializer_list<std::span<const uint8_t>> parts) {
  std::vector<uint8_t> bytes{prefix};
  for (auto part : parts) bytes.insert(bytes.end(), part.begin(), part.end());
  return sha256(bytes);
}

std::vector<uint8_t> random_bytes_seeded(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng());
  return out;
}

std::string write_file(const darkbloom::testing::TempDir& dir, const std::string& name,
                       const std::vector<uint8_t>& bytes) {
  const std::string path = dir.file(name);
  std::ofstream(path, std::ios::binary)
      .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return path;
}

TEST(Merkle, roots_follow_the_definition_for_one_to_five_chunks) {
  darkbloom::testing::TempDir dir;
  constexpr size_t kChunk = kMerkleChunkBytes;
  // Sizes: empty, one byte, one full chunk, one chunk and a byte, three chunks and a bit, five.
  for (size_t size : {size_t{0}, size_t{1}, kChunk, kChunk + 1, 3 * kChunk + 5, 5 * kChunk}) {
    SCOPED_TRACE(size);
    const auto bytes = random_bytes_seeded(size, size + 1);
    Sha256 file_hash{};
    auto tree = merkle_tree_of_file(write_file(dir, std::to_string(size) + ".bin", bytes), {}, &file_hash);
    ASSERT_TRUE(tree) << tree.error().message;
    EXPECT_EQ(file_hash, sha256(bytes));  // the plain hash of the whole file, from the same pass
    std::vector<Sha256> leaves;
    for (size_t at = 0; at < size || leaves.empty(); at += kChunk) {
      const size_t n = std::min(kChunk, size - at);
      leaves.push_back(prefixed(0x00, {std::span<const uint8_t>(bytes.data() + at, n)}));
    }
    EXPECT_EQ(tree->chunk_count(), leaves.size());
    EXPECT_EQ(tree->size(), size);
    // Fold level by level: pairs hashed with 0x01, an odd last node carried up.
    while (leaves.size() > 1) {
      std::vector<Sha256> up;
      for (size_t i = 0; i + 1 < leaves.size(); i += 2) up.push_back(prefixed(0x01, {leaves[i], leaves[i + 1]}));
      if (leaves.size() % 2 == 1) up.push_back(leaves.back());
      leaves = up;
    }
    EXPECT_EQ(tree->root(), leaves.front());
  }
}

TEST(Merkle, every_path_verifies_and_any_change_fails) {
  for (uint64_t chunks : {1, 2, 3, 5, 8, 13}) {
    SCOPED_TRACE(chunks);
    std::vector<Sha256> leaves;
    for (uint64_t i = 0; i < chunks; ++i) leaves.push_back(merkle_leaf(random_bytes_seeded(64, 100 + i)));
    const MerkleTree tree = MerkleTree::from_leaves(leaves, chunks * kMerkleChunkBytes);
    for (uint64_t i = 0; i < chunks; ++i) {
      const auto path = tree.path(i);
      EXPECT_TRUE(verify_merkle_path(tree.root(), chunks, i, leaves[i], path)) << i;
      // Another chunk's leaf, the wrong index, an index past the end, a changed sibling, a short
      // or long path, another root: all refused. (The chunk count is the verifier's, from the
      // catalogued size, not the prover's.)
      if (chunks > 1) {
        EXPECT_FALSE(verify_merkle_path(tree.root(), chunks, i, leaves[(i + 1) % chunks], path)) << i;
        EXPECT_FALSE(verify_merkle_path(tree.root(), chunks, (i + 1) % chunks, leaves[i], path)) << i;
      }
      EXPECT_FALSE(verify_merkle_path(tree.root(), chunks, chunks, leaves[i], path));
      if (!path.empty()) {
        auto changed = path;
        changed.back()[0] ^= 1;
        EXPECT_FALSE(verify_merkle_path(tree.root(), chunks, i, leaves[i], changed)) << i;
        EXPECT_FALSE(verify_merkle_path(tree.root(), chunks, i, leaves[i], std::span(path).first(path.size() - 1)));
      }
      auto longer = path;
      longer.push_back(tree.root());
      EXPECT_FALSE(verify_merkle_path(tree.root(), chunks, i, leaves[i], longer)) << i;
      Sha256 other_root = tree.root();
      other_root[31] ^= 0x80;
      EXPECT_FALSE(verify_merkle_path(other_root, chunks, i, leaves[i], path)) << i;
    }
  }
  EXPECT_FALSE(verify_merkle_path(Sha256{}, 0, 0, Sha256{}, {}));  // no chunks
  EXPECT_THROW(MerkleTree::from_leaves({}, 0), std::invalid_argument);
  const MerkleTree two = MerkleTree::from_leaves({merkle_leaf({}), merkle_leaf({})}, 2);
  EXPECT_THROW((void)two.path(2), std::out_of_range);
}

// A challenge answer carries the chunk's bytes: they must be exactly that chunk (its length too),
// hashed by the verifier.
TEST(Merkle, a_chunk_answer_verifies_only_with_the_chunks_own_bytes) {
  const uint64_t size = 2 * kMerkleChunkBytes + 100;
  const auto bytes = random_bytes_seeded(size, 7);
  std::vector<Sha256> leaves;
  for (uint64_t at = 0; at < size; at += kMerkleChunkBytes) {
    leaves.push_back(merkle_leaf(std::span(bytes).subspan(at, std::min(kMerkleChunkBytes, size - at))));
  }
  const MerkleTree tree = MerkleTree::from_leaves(leaves, size);
  ASSERT_EQ(tree.chunk_count(), 3u);
  for (uint64_t i = 0; i < 3; ++i) {
    const auto chunk =
        std::span(bytes).subspan(i * kMerkleChunkBytes, std::min(kMerkleChunkBytes, size - i * kMerkleChunkBytes));
    EXPECT_TRUE(verify_merkle_chunk(tree.root(), size, i, chunk, tree.path(i))) << i;
    std::vector<uint8_t> changed(chunk.begin(), chunk.end());
    changed[changed.size() / 2] ^= 1;
    EXPECT_FALSE(verify_merkle_chunk(tree.root(), size, i, changed, tree.path(i))) << i;
    EXPECT_FALSE(verify_merkle_chunk(tree.root(), size, i, chunk.first(chunk.size() - 1), tree.path(i))) << i;
    if (i == 2) {
      // Another catalogued size changes the last chunk's length.
      EXPECT_FALSE(verify_merkle_chunk(tree.root(), size + 1, i, chunk, tree.path(i)));
    }
  }
  EXPECT_FALSE(verify_merkle_chunk(tree.root(), size, 3, {}, {}));
  // The last chunk is 100 bytes: a full-size chunk there is refused before any hashing.
  EXPECT_FALSE(verify_merkle_chunk(tree.root(), size, 2, std::span(bytes).first(kMerkleChunkBytes), tree.path(2)));
}

// One chunk: the root is the prefixed leaf hash, not the plain SHA-256 of the bytes.
TEST(Merkle, a_one_chunk_root_is_the_prefixed_leaf_hash) {
  const auto bytes = random_bytes_seeded(1000, 3);
  const MerkleTree tree = MerkleTree::from_leaves({merkle_leaf(bytes)}, bytes.size());
  EXPECT_EQ(tree.root(), prefixed(0x00, {bytes}));
  EXPECT_NE(tree.root(), sha256(bytes));
  EXPECT_TRUE(tree.path(0).empty());
}

TEST(Merkle, a_missing_file_is_named) {
  auto tree = merkle_tree_of_file("/nonexistent/model.gguf");
  ASSERT_FALSE(tree);
  EXPECT_NE(tree.error().message.find("/nonexistent/model.gguf"), std::string::npos);
}

// What a provider sends for a challenge: the chunk as the file holds it now, which then proves
// the root only while the file is unchanged.
TEST(Merkle, chunks_are_read_from_the_file_as_it_is_now) {
  darkbloom::testing::TempDir dir;
  const uint64_t size = 2 * kMerkleChunkBytes + 7;
  auto bytes = random_bytes_seeded(size, 11);
  const std::string path = write_file(dir, "model.bin", bytes);
  auto tree = merkle_tree_of_file(path);
  ASSERT_TRUE(tree) << tree.error().message;
  for (uint64_t i = 0; i < 3; ++i) {
    auto chunk = read_merkle_chunk(path, size, i);
    ASSERT_TRUE(chunk) << chunk.error().message;
    const uint64_t at = i * kMerkleChunkBytes;
    EXPECT_EQ(*chunk,
              std::vector<uint8_t>(bytes.begin() + static_cast<ptrdiff_t>(at),
                                   bytes.begin() + static_cast<ptrdiff_t>(std::min(size, at + kMerkleChunkBytes))));
    EXPECT_TRUE(verify_merkle_chunk(tree->root(), size, i, *chunk, tree->path(i)));
  }
  auto past_end = read_merkle_chunk(path, size, 3);
  ASSERT_FALSE(past_end);
  EXPECT_EQ(past_end.error().code, Errc::out_of_range);
  // The same length with one byte changed reads fine and no longer verifies.
  bytes[kMerkleChunkBytes + 5] ^= 0x40;
  write_file(dir, "model.bin", bytes);
  auto changed = read_merkle_chunk(path, size, 1);
  ASSERT_TRUE(changed) << changed.error().message;
  EXPECT_FALSE(verify_merkle_chunk(tree->root(), size, 1, *changed, tree->path(1)));
  // Another length is an error of its own.
  bytes.push_back(0);
  write_file(dir, "model.bin", bytes);
  auto resized = read_merkle_chunk(path, size, 0);
  ASSERT_FALSE(resized);
  EXPECT_EQ(resized.error().code, Errc::io_error);
}

}  // namespace
}  // namespace darkbloom::crypto
