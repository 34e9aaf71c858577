// A model file held in memory by a test's fake provider: its Merkle tree (crypto/merkle.h) and
// the proof of any chunk, as a provider answers a model challenge.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "base/encoding.h"
#include "crypto/merkle.h"
#include "proto/provider_messages.h"

namespace darkbloom::testing {

struct ModelFile {
  std::vector<uint8_t> bytes;
  crypto::MerkleTree tree;

  // `size` bytes of a pattern that differs with `seed`.
  ModelFile(size_t size, uint8_t seed) : ModelFile(pattern(size, seed)) {}
  explicit ModelFile(std::vector<uint8_t> content) : bytes(std::move(content)), tree(tree_of(bytes)) {}

  std::string root() const { return hex_encode(tree.root()); }
  proto::ModelChunkProof proof(const std::string& model, uint64_t index) const {
    proto::ModelChunkProof proof{model, index, {}, {}};
    const size_t at = index * crypto::kMerkleChunkBytes;
    const size_t end = std::min<size_t>(bytes.size(), at + crypto::kMerkleChunkBytes);
    proof.chunk.assign(bytes.begin() + static_cast<ptrdiff_t>(at), bytes.begin() + static_cast<ptrdiff_t>(end));
    for (const auto& hash : tree.path(index)) proof.path.push_back(hex_encode(hash));
    return proof;
  }

 private:
  static std::vector<uint8_t> pattern(size_t size, uint8_t seed) {
    std::vector<uint8_t> out(size);
    for (size_t i = 0; i < size; ++i) out[i] = static_cast<uint8_t>(i * 131 + seed);
    return out;
  }
  static crypto::MerkleTree tree_of(const std::vector<uint8_t>& bytes) {
    std::vector<crypto::Sha256> leaves;
    for (size_t at = 0; at < bytes.size() || leaves.empty(); at += crypto::kMerkleChunkBytes) {
      const size_t n = std::min<size_t>(crypto::kMerkleChunkBytes, bytes.size() - at);
      leaves.push_back(crypto::merkle_leaf(std::span(bytes).subspan(at, n)));
    }
    return crypto::MerkleTree::from_leaves(std::move(leaves), bytes.size());
  }
};

}  // namespace darkbloom::testing
