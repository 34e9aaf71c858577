// Proof of the model: the admin catalogue names each model by the Merkle root of its file's 1 MiB
// chunks (crypto/merkle.h) and its size. A provider offering a catalogued id must announce that
// root; a challenge then names random chunks of one of its models, and the answer must carry
// those chunks' bytes and paths that lead to the root (the catalogue's, or for a model outside it
// the root the provider announced), so a provider that does not hold the file cannot answer.
// Pure functions; the gateway issues the challenges and acts on the results.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/random.h"
#include "base/result.h"
#include "coordinator/store/store.h"
#include "crypto/hash.h"
#include "proto/provider_messages.h"

namespace darkbloom::coordinator {

// The catalogue by model id, loaded from the store at start and changed by the admin route.
using ModelCatalog = std::map<std::string, CatalogModel, std::less<>>;

// Why `model` may not be served under the catalogue (another root or size, or no root at all);
// nullopt when it may (it matches, or the id is not catalogued).
std::optional<std::string> catalog_refusal(const ModelCatalog& catalog, const proto::ModelInfo& model);

// Whether the model has a root its chunks can be checked against (catalogued, or announced).
bool provable(const ModelCatalog& catalog, const proto::ModelInfo& model);

// The chunks one challenge asks of one model, and what they are checked against.
struct ModelChallenge {
  std::string model;
  crypto::Sha256 root{};
  uint64_t size = 0;
  std::vector<uint64_t> indices;  // distinct where the file has enough chunks
};

// A challenge of `chunks` distinct random chunks of `model` (fewer when the file has fewer):
// against the catalogue's root when the id is catalogued, else the provider's announced root;
// nullopt when there is neither.
std::optional<ModelChallenge> model_challenge(const ModelCatalog& catalog, const proto::ModelInfo& model, size_t chunks,
                                              RandomSource& random);

// The answer's proofs, one per chunk asked, in the order asked: each the chunk's exact bytes
// with a path to the root. The error names the first wrong proof.
Status verify_model_proofs(const ModelChallenge& challenge, std::span<const proto::ModelChunkProof> proofs);

// The challenge as the provider sees it.
std::vector<proto::ModelChunkRequest> chunk_requests(const ModelChallenge& challenge);

}  // namespace darkbloom::coordinator
