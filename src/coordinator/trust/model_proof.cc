#include "coordinator/trust/model_proof.h"

#include <fmt/format.h>

#include <algorithm>

#include "crypto/merkle.h"

namespace darkbloom::coordinator {
std::optional<std::string> catalog_refusal(const ModelCatalog& catalog, const proto::ModelInfo& model) {
  const auto entry = catalog.find(model.id);
  if (entry == catalog.end()) return std::nullopt;
  if (model.merkle_root.empty()) {
    return "no merkle_root announced for a catalogued model (a provider from before model proofs)";
  }
  if (model.merkle_root != entry->second.merkle_root) {
    return fmt::format("its file's Merkle root {} is not the catalogue's {}", model.merkle_root.substr(0, 16),
                       entry->second.merkle_root.substr(0, 16));
  }
  if (model.size_bytes != entry->second.size_bytes) {
    return fmt::format("its file is {} bytes, the catalogue's is {}", model.size_bytes, entry->second.size_bytes);
  }
  return std::nullopt;
}

bool provable(const ModelCatalog& catalog, const proto::ModelInfo& model) {
  return catalog.count(model.id) != 0 || !model.merkle_root.empty();
}

std::optional<ModelChallenge> model_challenge(const ModelCatalog& catalog, const proto::ModelInfo& model, size_t chunks,
                                              RandomSource& random) {
  ModelChallenge challenge;
  challenge.model = model.id;
  std::optional<crypto::Sha256> root;
  if (const auto entry = catalog.find(model.id); entry != catalog.end()) {
    root = crypto::sha256_from_hex(entry->second.merkle_root);
    challenge.size = entry->second.size_bytes;
  } else if (!model.merkle_root.empty()) {
    root = crypto::sha256_from_hex(model.merkle_root);
    challenge.size = model.size_bytes;
  }
  if (!root || chunks == 0) return std::nullopt;
  challenge.root = *root;
  const uint64_t count = crypto::merkle_chunk_count(challenge.size);
  const size_t wanted = static_cast<size_t>(std::min<uint64_t>(chunks, count));
  while (challenge.indices.size() < wanted) {
    const uint64_t index = random.below(count);
    if (std::find(challenge.indices.begin(), challenge.indices.end(), index) == challenge.indices.end()) {
      challenge.indices.push_back(index);
    }
  }
  return challenge;
}

Status verify_model_proofs(const ModelChallenge& challenge, std::span<const proto::ModelChunkProof> proofs) {
  if (proofs.size() != challenge.indices.size()) {
    return make_error(Errc::permission_denied, fmt::format("model '{}': {} chunk proofs for {} chunks asked",
                                                           challenge.model, proofs.size(), challenge.indices.size()));
  }
  for (size_t i = 0; i < proofs.size(); ++i) {
    const proto::ModelChunkProof& proof = proofs[i];
    const uint64_t index = challenge.indices[i];
    if (proof.model != challenge.model || proof.index != index) {
      return make_error(
          Errc::permission_denied,
          fmt::format("model '{}': proof {} is for another chunk than the one asked ({})", challenge.model, i, index));
    }
    std::vector<crypto::Sha256> path;
    for (const std::string& hex : proof.path) {
      auto hash = crypto::sha256_from_hex(hex);
      if (!hash) return make_error(Errc::permission_denied, "a Merkle path entry is not a SHA-256 in hex");
      path.push_back(*hash);
    }
    if (!crypto::verify_merkle_chunk(challenge.root, challenge.size, index, proof.chunk, path)) {
      return make_error(Errc::permission_denied,
                        fmt::format("model '{}': chunk {} ({} bytes) does not lead to the model's Merkle root",
                                    challenge.model, index, proof.chunk.size()));
    }
  }
  return {};
}

std::vector<proto::ModelChunkRequest> chunk_requests(const ModelChallenge& challenge) {
  std::vector<proto::ModelChunkRequest> requests;
  for (const uint64_t index : challenge.indices) requests.push_back({challenge.model, index});
  return requests;
}

}  // namespace darkbloom::coordinator
