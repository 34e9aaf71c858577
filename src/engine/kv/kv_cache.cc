#include "engine/kv/kv_cache.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "engine/kernels/quant_blocks.h"

namespace darkbloom::engine {

const char* kv_type_name(KvType type) {
  switch (type) {
    case KvType::f32:
      return "f32";
    case KvType::f16:
      return "f16";
    case KvType::q8_0:
      return "q8_0";
  }
  return "f16";
}

std::optional<KvType> parse_kv_type(std::string_view name) {
  if (name == "f32") return KvType::f32;
  if (name == "f16") return KvType::f16;
  if (name == "q8_0") return KvType::q8_0;
  return std::nullopt;
}

size_t KvCache::row_bytes(KvType type, int kv_width) {
  switch (type) {
    case KvType::f32:
      return sizeof(float) * static_cast<size_t>(kv_width);
    case KvType::f16:
      return sizeof(uint16_t) * static_cast<size_t>(kv_width);
    case KvType::q8_0:
      return sizeof(kernels::BlockQ8_0) * static_cast<size_t>(kv_width / 32);
  }
  return 0;
}

size_t KvCache::block_bytes(KvType type, int n_layer, int kv_width) {
  return row_bytes(type, kv_width) * 2 * kBlockTokens * static_cast<size_t>(n_layer);
}

KvCache::KvCache(int n_layer, int kv_width, KvType type, int64_t n_blocks)
    : n_layer_(n_layer),
      kv_width_(kv_width),
      type_(type),
      n_blocks_(n_blocks),
      row_bytes_(row_bytes(type, kv_width)),
      block_bytes_(block_bytes(type, n_layer, kv_width)),
      storage_(new uint8_t[block_bytes_ * static_cast<size_t>(n_blocks)]),
      owners_(static_cast<size_t>(n_blocks), 0),
      idle_position_(static_cast<size_t>(n_blocks)),
      published_(static_cast<size_t>(n_blocks)) {
  if (type == KvType::q8_0 && kv_width % 32 != 0) {
    throw std::invalid_argument("a q8_0 KV cache needs rows that are a multiple of 32 wide");
  }
  free_.reserve(static_cast<size_t>(n_blocks));
  // Handed out lowest id first.
  for (int64_t b = n_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

uint8_t* KvCache::row(int32_t block, int layer, int kind, int offset) const {
  // Block layout: [layer][keys | values][kBlockTokens rows' bytes, arranged by the forward pass].
  const size_t index =
      ((static_cast<size_t>(layer) * 2 + static_cast<size_t>(kind)) * kBlockTokens + static_cast<size_t>(offset));
  return storage_.get() + block_bytes_ * static_cast<size_t>(block) + index * row_bytes_;
}

std::optional<int32_t> KvCache::allocate() {
  int32_t block;
  if (!free_.empty()) {
    block = free_.back();
    free_.pop_back();
  } else if (!idle_.empty()) {
    // Evict the published block released longest ago.
    block = idle_.front();
    idle_.pop_front();
    unpublish(block);
  } else {
    return std::nullopt;
  }
  owners_[static_cast<size_t>(block)] = 1;
  return block;
}

void KvCache::retain(int32_t block) {
  int32_t& owners = owners_[static_cast<size_t>(block)];
  if (owners == 0) idle_.erase(idle_position_[static_cast<size_t>(block)]);  // revived
  owners += 1;
}

void KvCache::release(int32_t block) {
  int32_t& owners = owners_[static_cast<size_t>(block)];
  if (owners <= 0) throw std::logic_error("KV block " + std::to_string(block) + " released more often than held");
  if (--owners > 0) return;
  if (published_[static_cast<size_t>(block)]) {
    idle_.push_back(block);
    idle_position_[static_cast<size_t>(block)] = std::prev(idle_.end());
  } else {
    free_.push_back(block);
  }
}

uint64_t KvCache::chain_hash(uint64_t parent, std::span<const int32_t> tokens) {
  // FNV-1a over the parent hash and the token ids, then a final avalanche (splitmix64).
  uint64_t h = 0xcbf29ce484222325ull ^ parent;
  for (int32_t token : tokens) {
    for (int byte = 0; byte < 4; ++byte) {
      h ^= (static_cast<uint32_t>(token) >> (8 * byte)) & 0xFF;
      h *= 0x100000001b3ull;
    }
  }
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

void KvCache::publish(int32_t block, uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  if (tokens.size() != kBlockTokens || by_hash_.count(hash) || published_[static_cast<size_t>(block)]) return;
  Published entry;
  entry.hash = hash;
  entry.parent = parent;
  std::copy(tokens.begin(), tokens.end(), entry.tokens.begin());
  published_[static_cast<size_t>(block)] = entry;
  by_hash_[hash] = block;
}

std::optional<int32_t> KvCache::find(uint64_t hash, uint64_t parent, std::span<const int32_t> tokens) {
  const auto it = by_hash_.find(hash);
  if (it == by_hash_.end() || tokens.size() != kBlockTokens) return std::nullopt;
  const Published& entry = *published_[static_cast<size_t>(it->second)];
  if (entry.parent != parent || !std::equal(tokens.begin(), tokens.end(), entry.tokens.begin())) return std::nullopt;
  retain(it->second);
  return it->second;
}

void KvCache::unpublish(int32_t block) {
  auto& entry = published_[static_cast<size_t>(block)];
  if (!entry) return;
  by_hash_.erase(entry->hash);
  entry.reset();
}

}  // namespace darkbloom::engine
