// Keys and values of past positions, per sequence slot and layer. Each slot holds one sequence of
// up to `context` positions in contiguous float storage. (The paged, block-table cache of the
// batching work replaces the inside of this class, not the way the forward pass asks for rows.)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace darkbloom::engine {

class KvCache {
 public:
  KvCache(int n_layer, int kv_width, int context, int n_slots);

  int context() const { return context_; }
  int n_slots() const { return n_slots_; }
  int kv_width() const { return kv_width_; }
  size_t bytes() const { return keys_.size() * sizeof(float) * 2; }

  float* key(int slot, int layer, int position) { return keys_.data() + offset(slot, layer, position); }
  float* value(int slot, int layer, int position) { return values_.data() + offset(slot, layer, position); }
  // Rows of positions [0, context) of one slot and layer, kv_width floats apart.
  const float* keys(int slot, int layer) const { return keys_.data() + offset(slot, layer, 0); }
  const float* values(int slot, int layer) const { return values_.data() + offset(slot, layer, 0); }

  // Number of leading positions of a slot that hold valid entries (maintained by the caller).
  int length(int slot) const { return lengths_[static_cast<size_t>(slot)]; }
  void set_length(int slot, int length) { lengths_[static_cast<size_t>(slot)] = length; }

 private:
  size_t offset(int slot, int layer, int position) const {
    return ((static_cast<size_t>(slot) * n_layer_ + static_cast<size_t>(layer)) * context_ +
            static_cast<size_t>(position)) *
           kv_width_;
  }

  int n_layer_, kv_width_, context_, n_slots_;
  std::vector<float> keys_, values_;
  std::vector<int> lengths_;
};

}  // namespace darkbloom::engine
