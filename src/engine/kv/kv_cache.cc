#include "engine/kv/kv_cache.h"

namespace darkbloom::engine {

KvCache::KvCache(int n_layer, int kv_width, int context, int n_slots)
    : n_layer_(n_layer),
      kv_width_(kv_width),
      context_(context),
      n_slots_(n_slots),
      keys_(static_cast<size_t>(n_slots) * n_layer * context * kv_width),
      values_(static_cast<size_t>(n_slots) * n_layer * context * kv_width),
      lengths_(static_cast<size_t>(n_slots), 0) {}

}  // namespace darkbloom::engine
