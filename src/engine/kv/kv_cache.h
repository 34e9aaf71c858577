// Keys and values of past positions in fixed-size blocks of kBlockTokens positions. A sequence
// owns a block table (block ids in position order); blocks come from one pool sized from a
// memory budget and go back the moment a sequence ends. Full blocks can be published under a
// hash of everything up to their end, so a later sequence that starts with the same tokens takes
// them instead of recomputing them (prefix reuse); a released published block stays findable
// until its memory is needed for something else.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace darkbloom::engine {

enum class KvType { f32, f16, q8_0 };
const char* kv_type_name(KvType type);
std::optional<KvType> parse_kv_type(std::string_view name);

class KvCache {
 public:
  static constexpr int kBlockTokens = 16;

  // Storage for one position of one layer (its keys, or its values): kv_width elements.
  static size_t row_bytes(KvType type, int kv_width);
  // One block: keys and values of kBlockTokens positions for every layer.
  static size_t block_bytes(KvType type, int n_layer, int kv_width);

  KvCache(int n_layer, int kv_width, KvType type, int64_t n_blocks);

  KvType type() const { return type_; }
  int n_layer() const { return n_layer_; }
  int kv_width() const { return kv_width_; }
  size_t row_bytes() const { return row_bytes_; }
  int64_t n_blocks() const { return n_blocks_; }
  // Blocks allocate() can hand out: never used, or released (published ones are then evicted).
  int64_t free_blocks() const { return static_cast<int64_t>(free_.size() + idle_.size()); }
  int64_t used_blocks() const { return n_blocks_ - free_blocks(); }
  size_t bytes() const { return block_bytes_ * static_cast<size_t>(n_blocks_); }

  // A block for one owner, or nullopt when every block is in use.
  std::optional<int32_t> allocate();
  void retain(int32_t block);
  // Drops one owner; at zero the block is free again (kept findable if published).
  void release(int32_t block);
  int owners(int32_t block) const { return owners_[static_cast<size_t>(block)]; }

  // A block's keys (or values) of one layer: kBlockTokens * row_bytes() bytes, laid out by the
  // forward pass (head-major: every position of KV head 0, then of head 1, ...).
  uint8_t* keys(int32_t block, int layer) { return row(block, layer, 0, 0); }
  uint8_t* values(int32_t block, int layer) { return row(block, layer, 1, 0); }
  const uint8_t* keys(int32_t block, int layer) const { return row(block, layer, 0, 0); }
  const uint8_t* values(int32_t block, int layer) const { return row(block, layer, 1, 0); }

  // Prefix reuse. `hash` identifies the block's tokens and everything before them; `parent` is
  // the hash of the block before it (0 for the first) and `tokens` its kBlockTokens tokens, both
  // checked on lookup, so a hash collision cannot hand out the wrong keys and values.
  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> tokens);
  void publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  // A published block with these contents, retained for the caller; nullopt when none.
  std::optional<int32_t> find(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens);
  int64_t published_blocks() const { return static_cast<int64_t>(by_hash_.size()); }

 private:
  uint8_t* row(int32_t block, int layer, int kind, int offset) const;
  void unpublish(int32_t block);

  struct Published {
    uint64_t hash = 0;
    uint64_t parent = 0;
    std::array<int32_t, kBlockTokens> tokens{};
  };

  int n_layer_, kv_width_;
  KvType type_;
  int64_t n_blocks_;
  size_t row_bytes_;
  size_t block_bytes_;
  // Not initialised: pages of blocks never used are never touched, so a large budget costs
  // address space, not memory, until requests fill it.
  std::unique_ptr<uint8_t[]> storage_;
  std::vector<int32_t> owners_;
  std::vector<int32_t> free_;  // unused, nothing published
  std::list<int32_t> idle_;    // released but published, least recently released first
  std::vector<std::list<int32_t>::iterator> idle_position_;
  std::vector<std::optional<Published>> published_;
  std::unordered_map<uint64_t, int32_t> by_hash_;
};

}  // namespace darkbloom::engine
