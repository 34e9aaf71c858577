#include "engine/model/attention.h"

#include <algorithm>
#include <array>
#include <cmath>

#include "engine/kernels/quantize.h"
#include "engine/model/forward.h"

namespace darkbloom::engine {
namespace {

constexpr int kBlock = KvCache::kBlockTokens;
// F16 rows that at least this many queries read are expanded to f32 once rather than converted by
// each. The kernels compute the same numbers from either (the conversion is exact), so a token's
// scores do not depend on how many queries it shares a block with.
constexpr int kExpandF16Queries = 4;

// A token's positions: it sees [first, n). A sliding layer's window starts at `first`, its blocks
// at first_block, and the positions of that block before `first` get no weight.
struct Extent {
  int n, first, first_block, n_blocks;
};

class RunAttention {
 public:
  RunAttention(const AttentionLayer& layer, std::span<const BatchToken> batch, AttentionRun run, int kv_head,
               AttentionScratch& scratch);

  void attend() {
    gather_queries();
    score();
    normalize();
    accumulate();
  }

 private:
  size_t query_offset(int r) const {
    return (static_cast<size_t>(run_.first) + static_cast<size_t>(r)) * c_.q_width() + head_offset_;
  }
  const Extent& extent(int r) const { return extent_[static_cast<size_t>(r)]; }
  const Extent& last() const { return extent(run_.count - 1); }
  float* scores_of(int query) { return scratch_.scores.data() + static_cast<size_t>(query) * scores_stride_; }

  void gather_queries();
  void score();
  void score_int8(const uint8_t* keys, int count, int first_query, int n_queries, float scale, float* block_scores);
  void normalize();
  void accumulate();

  // The run's tokens that see block b: [*lo, *hi). Both ends only move forward as b grows.
  void tokens_seeing(int b, int* lo, int* hi) const {
    while (*hi < run_.count && extent(*hi).first_block <= b) ++*hi;
    while (*lo < *hi && extent(*lo).n_blocks <= b) ++*lo;
  }
  // Blocks lie anywhere in the cache: ask for the next one's rows while this one is computed.
  void prefetch_head(const uint8_t* block_rows) const {
    const uint8_t* rows = block_rows + head_bytes_ * static_cast<size_t>(kv_head_) * kBlock;
    for (size_t offset = 0; offset < head_bytes_ * kBlock; offset += 64) __builtin_prefetch(rows + offset);
  }
  bool expand(int n_queries) const {
    return type_ == KvType::q8_0 || (type_ == KvType::f16 && n_queries >= kExpandF16Queries);
  }
  const void* head_rows(const uint8_t* block_rows, int count, bool expanded);

  const AttentionLayer& layer_;
  const ModelConfig& c_;
  const kernels::KernelSet& kernels_;
  AttentionRun run_;
  int kv_head_;
  AttentionScratch& scratch_;
  const int32_t* blocks_;
  int group_;
  KvType type_;
  // Q8_0 keys are scored in int8 against queries quantized to Q8_0 per head (the weight
  // kernels' Q8_0 dot products), except by the float set, which expands them to f32 as it does
  // Q8_0 values.
  bool int8_keys_;
  size_t head_bytes_;  // one position's row of this head
  size_t stride_;      // elements from one position's row to the next
  size_t query_bytes_;
  size_t head_offset_;
  size_t scores_stride_;
  std::array<Extent, kRunTokens> extent_{};
  const float* queries_ = nullptr;  // [token][query head][head_dim]
};

RunAttention::RunAttention(const AttentionLayer& layer, std::span<const BatchToken> batch, AttentionRun run,
                           int kv_head, AttentionScratch& scratch)
    : layer_(layer),
      c_(layer.config),
      kernels_(layer.kernels),
      run_(run),
      kv_head_(kv_head),
      scratch_(scratch),
      blocks_(batch[static_cast<size_t>(run.first)].blocks),
      group_(c_.n_head / c_.n_head_kv),
      type_(layer.cache.type()),
      int8_keys_(type_ == KvType::q8_0 && !kernels_.float_activations),
      head_bytes_(layer.cache.row_bytes() / static_cast<size_t>(c_.n_head_kv)),
      stride_(static_cast<size_t>(c_.head_dim)),
      query_bytes_(kernels::activation_row_bytes(kernels::ActivationFormat::q8_0, c_.head_dim)),
      head_offset_(static_cast<size_t>(kv_head * group_) * c_.head_dim) {
  const int window = c_.is_sliding(layer.layer) ? c_.sliding_window : 0;
  for (int r = 0; r < run.count; ++r) {
    const int n = batch[static_cast<size_t>(run.first) + static_cast<size_t>(r)].position + 1;
    const int first = window > 0 ? std::max(0, n - window) : 0;
    extent_[static_cast<size_t>(r)] = {n, first, first / kBlock, (n + kBlock - 1) / kBlock};
  }
  scores_stride_ = static_cast<size_t>(last().n);
  const size_t n_scores = static_cast<size_t>(run.count * group_) * scores_stride_;
  if (scratch.scores.size() < n_scores) scratch.scores.resize(n_scores);
  scratch.expanded.resize(static_cast<size_t>(c_.head_dim) * kBlock);
}

// The run's queries for this KV head, contiguous, and quantized for int8 keys.
void RunAttention::gather_queries() {
  const int n_queries = run_.count * group_;
  queries_ = layer_.queries + query_offset(0);
  if (run_.count > 1) {
    scratch_.queries.resize(static_cast<size_t>(n_queries) * c_.head_dim);
    for (int r = 0; r < run_.count; ++r) {
      std::copy_n(layer_.queries + query_offset(r), static_cast<size_t>(group_) * c_.head_dim,
                  scratch_.queries.data() + static_cast<size_t>(r * group_) * c_.head_dim);
    }
    queries_ = scratch_.queries.data();
  }
  if (int8_keys_) {
    scratch_.quantized.resize(static_cast<size_t>(n_queries) * query_bytes_);
    for (int g = 0; g < n_queries; ++g) {
      kernels_.quantize_q8_0(queries_ + static_cast<size_t>(g) * c_.head_dim,
                             scratch_.quantized.data() + static_cast<size_t>(g) * query_bytes_, c_.head_dim);
    }
  }
}

// This head's rows of one block (see ForwardPass::store_kv), as stored or expanded to f32
// (exactly, for f16; Q8_0 rows as their dequantized values).
const void* RunAttention::head_rows(const uint8_t* block_rows, int count, bool expanded) {
  const uint8_t* rows = block_rows + head_bytes_ * static_cast<size_t>(kv_head_) * kBlock;
  if (!expanded) return rows;
  const int64_t n = static_cast<int64_t>(count) * c_.head_dim;
  if (type_ == KvType::f16) {
    kernels_.f16_to_f32(reinterpret_cast<const uint16_t*>(rows), scratch_.expanded.data(), n);
  } else {
    kernels::dequantize_row(GgmlType::q8_0, rows, scratch_.expanded.data(), n);
  }
  return scratch_.expanded.data();
}

// Scores of every query against the keys of the blocks it sees.
void RunAttention::score() {
  const float scale =
      c_.attention_scale > 0.0f ? c_.attention_scale : 1.0f / std::sqrt(static_cast<float>(c_.head_dim));
  const kernels::KvScoresFn stored = type_ == KvType::f16 ? kernels_.scores_f16 : kernels_.scores_f32;
  int lo = 0, hi = 0;
  for (int b = extent(0).first_block; b < last().n_blocks; ++b) {
    tokens_seeing(b, &lo, &hi);
    // Rows up to the latest of these tokens' positions; earlier tokens' scores past their own
    // positions are computed but never read.
    const int count = std::min(kBlock, extent(hi - 1).n - b * kBlock);
    if (b + 1 < last().n_blocks) prefetch_head(layer_.cache.keys(blocks_[b + 1], layer_.layer));
    const int n_queries = (hi - lo) * group_;
    const bool expanded = !int8_keys_ && expand(n_queries);
    const void* keys = head_rows(layer_.cache.keys(blocks_[b], layer_.layer), count, expanded);
    float* block_scores = scores_of(lo * group_) + static_cast<size_t>(b) * kBlock;
    if (int8_keys_) {
      score_int8(static_cast<const uint8_t*>(keys), count, lo * group_, n_queries, scale, block_scores);
    } else {
      (expanded ? kernels_.scores_f32 : stored)(keys, stride_, count,
                                                queries_ + static_cast<size_t>(lo * group_) * c_.head_dim, n_queries,
                                                c_.head_dim, scale, block_scores, scores_stride_);
    }
  }
}

// Q8_0 key rows against the quantized queries, up to kMaxDotRows queries per call.
void RunAttention::score_int8(const uint8_t* keys, int count, int first_query, int n_queries, float scale,
                              float* block_scores) {
  const uint8_t* quantized = scratch_.quantized.data() + static_cast<size_t>(first_query) * query_bytes_;
  for (int p = 0; p < count; ++p) {
    const uint8_t* key = keys + head_bytes_ * static_cast<size_t>(p);
    for (int g = 0; g < n_queries; g += kernels::kMaxDotRows) {
      const int n_dots = std::min(kernels::kMaxDotRows, n_queries - g);
      float dots[kernels::kMaxDotRows];
      kernels_.rows_q8_0(c_.head_dim, key, quantized + static_cast<size_t>(g) * query_bytes_, query_bytes_, n_dots,
                         dots);
      for (int j = 0; j < n_dots; ++j) block_scores[static_cast<size_t>(g + j) * scores_stride_ + p] = dots[j] * scale;
    }
  }
}

// Each query's softmax over the positions it sees (soft-capped first where the model says so),
// and the outputs cleared for accumulate().
void RunAttention::normalize() {
  const float cap = c_.attn_softcap;
  for (int r = 0; r < run_.count; ++r) {
    const Extent& e = extent(r);
    for (int g = 0; g < group_; ++g) {
      float* s = scores_of(r * group_ + g);
      if (cap > 0.0f) {
        for (int p = e.first; p < e.n; ++p) s[p] = cap * std::tanh(s[p] / cap);  // soft-capping (gemma2)
      }
      kernels_.softmax(s + e.first, e.n - e.first);
      std::fill(s + e.first_block * kBlock, s + e.first, 0.0f);  // outside the window (and skipped below)
    }
    float* out = layer_.out + query_offset(r);
    std::fill(out, out + static_cast<size_t>(group_) * c_.head_dim, 0.0f);
  }
}

// Each token's output: its weights times the value rows it sees, block by block in order.
void RunAttention::accumulate() {
  const kernels::KvAccumulateFn stored = type_ == KvType::f16 ? kernels_.accumulate_f16 : kernels_.accumulate_f32;
  int lo = 0, hi = 0;
  if (last().n_blocks > extent(0).first_block)
    prefetch_head(layer_.cache.values(blocks_[extent(0).first_block], layer_.layer));
  for (int b = extent(0).first_block; b < last().n_blocks; ++b) {
    tokens_seeing(b, &lo, &hi);
    const int count = std::min(kBlock, extent(hi - 1).n - b * kBlock);
    if (b + 1 < last().n_blocks) prefetch_head(layer_.cache.values(blocks_[b + 1], layer_.layer));
    const bool expanded = expand((hi - lo) * group_);
    const auto* values =
        static_cast<const uint8_t*>(head_rows(layer_.cache.values(blocks_[b], layer_.layer), count, expanded));
    const size_t element_bytes = expanded || type_ == KvType::f32 ? sizeof(float) : sizeof(uint16_t);
    const kernels::KvAccumulateFn accumulate_fn = expanded ? kernels_.accumulate_f32 : stored;
    for (int r = lo; r < hi; ++r) {
      const Extent& e = extent(r);
      // In the window's first block, the rows before `first` are skipped (not weighted by 0,
      // which would turn a cached inf into NaN).
      const int skip = b == e.first_block ? e.first - e.first_block * kBlock : 0;
      const int own = std::min(kBlock, e.n - b * kBlock);
      accumulate_fn(values + static_cast<size_t>(skip) * stride_ * element_bytes, stride_, own - skip,
                    scores_of(r * group_) + static_cast<size_t>(b) * kBlock + skip, scores_stride_, group_, c_.head_dim,
                    layer_.out + query_offset(r));
    }
  }
}

}  // namespace

void find_attention_runs(std::span<const BatchToken> batch, std::vector<AttentionRun>* runs) {
  runs->clear();
  for (size_t t = 0; t < batch.size(); ++t) {
    const bool continues = t > 0 && runs->back().count < kRunTokens && batch[t - 1].blocks == batch[t].blocks &&
                           batch[t - 1].position + 1 == batch[t].position;
    if (continues) {
      ++runs->back().count;
    } else {
      runs->push_back({static_cast<int>(t), 1});
    }
  }
}

void attend_run(const AttentionLayer& layer, std::span<const BatchToken> batch, AttentionRun run, int kv_head,
                AttentionScratch& scratch) {
  RunAttention(layer, batch, run, kv_head, scratch).attend();
}

}  // namespace darkbloom::engine
