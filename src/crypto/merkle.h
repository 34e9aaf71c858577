// Merkle trees over a file's 1 MiB chunks: the proof that a provider holds a model file. The
// catalogue names a model by its root and size; a challenge names chunk indices, and the provider
// answers with each chunk's bytes and the sibling hashes up to the root. The verifier hashes the
// bytes itself and checks the path against the root, without the file. (An answer of leaf
// hashes alone would prove nothing: they fit in 32 bytes per MiB, kept by anyone who once
// hashed the file.)
//   leaf  = SHA-256(0x00 || chunk)             (the last chunk may be shorter; an empty file has
//                                               one empty chunk)
//   node  = SHA-256(0x01 || left || right)
//   a level with an odd number of nodes carries its last node up unchanged.
// The prefixes keep a leaf from passing for a node (RFC 6962 does the same).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "base/result.h"
#include "crypto/hash.h"

namespace darkbloom::crypto {

inline constexpr uint64_t kMerkleChunkBytes = uint64_t{1} << 20;

// Chunks of a file of `size` bytes (at least 1).
uint64_t merkle_chunk_count(uint64_t size);

Sha256 merkle_leaf(std::span<const uint8_t> chunk);
Sha256 merkle_node(const Sha256& left, const Sha256& right);

class MerkleTree {
 public:
  // Every level of the tree over these leaves, in chunk order. Throws std::invalid_argument for
  // no leaves.
  static MerkleTree from_leaves(std::vector<Sha256> leaves, uint64_t size);

  const Sha256& root() const { return levels_.back().front(); }
  uint64_t size() const { return size_; }
  uint64_t chunk_count() const { return levels_.front().size(); }
  // Throws std::out_of_range for index >= chunk_count().
  const Sha256& leaf(uint64_t index) const { return levels_.front().at(index); }
  // The sibling hashes from chunk `index`'s leaf up to the root (levels where the node has no
  // sibling are skipped). Throws std::out_of_range for index >= chunk_count().
  std::vector<Sha256> path(uint64_t index) const;

 private:
  std::vector<std::vector<Sha256>> levels_;
  uint64_t size_ = 0;
};

// Reads the file once, chunk by chunk. `progress`, when set, is called after each chunk with
// the bytes hashed so far; `file_hash`, when given, receives the plain SHA-256 of the whole file
// from the same pass.
Result<MerkleTree> merkle_tree_of_file(const std::string& path,
                                       const std::function<void(uint64_t done, uint64_t total)>& progress = {},
                                       Sha256* file_hash = nullptr);

// Chunk `index` of the file as it is now, for a file expected to be `size` bytes: what a
// challenge answer carries. Errc::out_of_range for an index past the last chunk; Errc::io_error
// when the file is no longer `size` bytes long.
Result<std::vector<uint8_t>> read_merkle_chunk(const std::string& path, uint64_t size, uint64_t index);

// Whether `leaf` at chunk `index` of a tree of `chunk_count` chunks leads through `path` to `root`.
// False for an index out of range, a count of 0 or past 2^44 (16 EiB of chunks), or a path of
// the wrong length. The count is the verifier's (from the catalogued size), never the prover's.
bool verify_merkle_path(const Sha256& root, uint64_t chunk_count, uint64_t index, const Sha256& leaf,
                        std::span<const Sha256> path);

// A challenge answer: chunk `index` of a file of `size` bytes whose root is `root`, given as its
// bytes and its path. False unless the bytes are exactly that chunk's length (1 MiB, less for the
// last) and their leaf leads through `path` to `root`.
bool verify_merkle_chunk(const Sha256& root, uint64_t size, uint64_t index, std::span<const uint8_t> chunk,
                         std::span<const Sha256> path);

}  // namespace darkbloom::crypto
