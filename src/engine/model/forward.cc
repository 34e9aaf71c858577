#include "engine/model/forward.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "engine/kernels/quant_blocks.h"
#include "engine/kernels/quantize.h"

namespace darkbloom::engine {
namespace {

void add_in_place(float* dst, const float* src, size_t n) {
  for (size_t i = 0; i < n; ++i) dst[i] += src[i];
}

void rms_norm(const float* in, const float* weight, float* out, int width, float epsilon) {
  double sum_squares = 0.0;
  for (int i = 0; i < width; ++i) sum_squares += static_cast<double>(in[i]) * in[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(sum_squares / width + epsilon));
  for (int i = 0; i < width; ++i) out[i] = in[i] * scale * weight[i];
}

// A packed copy replaces the file's bytes of a matrix for this pass: let the kernel drop the
// mapped pages (they are clean file pages and come back from the file if anything reads them), so
// the copy does not double the memory the weights take.
void drop_mapped_pages(const kernels::WeightMatrix& w) {
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto begin = (reinterpret_cast<uintptr_t>(w.data) + page - 1) / page * page;
  const auto end = (reinterpret_cast<uintptr_t>(w.data) + w.row_bytes * static_cast<size_t>(w.rows)) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

}  // namespace

ForwardPass::ForwardPass(const Model& model, ThreadPool& pool, const kernels::KernelSet& kernels)
    : model_(model), pool_(pool), kernels_(kernels) {
  const ModelConfig& c = model.config();
  const auto& factors = model.rope_freq_factors();
  inverse_frequencies_.resize(static_cast<size_t>(c.rope_dims / 2));
  for (int j = 0; j < c.rope_dims / 2; ++j) {
    double inverse = std::pow(static_cast<double>(c.rope_theta), -2.0 * j / c.rope_dims);
    if (!factors.empty()) inverse /= factors[static_cast<size_t>(j)];
    inverse_frequencies_[static_cast<size_t>(j)] = static_cast<float>(inverse);
  }
  if (c.rope_theta_sliding > 0.0f) {
    inverse_frequencies_sliding_.resize(static_cast<size_t>(c.rope_dims / 2));
    for (int j = 0; j < c.rope_dims / 2; ++j) {
      inverse_frequencies_sliding_[static_cast<size_t>(j)] =
          static_cast<float>(std::pow(static_cast<double>(c.rope_theta_sliding), -2.0 * j / c.rope_dims));
    }
  }
  attention_scratch_.resize(static_cast<size_t>(pool.size()));
  for (const LayerWeights& layer : model.layers()) {
    auto pack = [&](const kernels::WeightMatrix& w) {
      kernels::WeightMatrix packed = packed_.pack(pool, kernels, w);
      if (packed.data != w.data && model.file().mapped()) drop_mapped_pages(w);
      return packed;
    };
    Matrices m{.wq = pack(layer.wq),
               .wk = pack(layer.wk),
               .wv = pack(layer.wv),
               .wo = pack(layer.wo),
               .w_gate = pack(layer.w_gate),
               .w_up = pack(layer.w_up),
               .w_down = pack(layer.w_down),
               .wqkv = pack(layer.wqkv),
               .router = pack(layer.router),
               .shared_gate = pack(layer.shared_gate),
               .shared_up = pack(layer.shared_up),
               .shared_down = pack(layer.shared_down),
               .expert_gate = {},
               .expert_up = {},
               .expert_down = {}};
    for (size_t e = 0; e < layer.expert_gate.size(); ++e) {
      m.expert_gate.push_back(pack(layer.expert_gate[e]));
      m.expert_up.push_back(pack(layer.expert_up[e]));
      m.expert_down.push_back(pack(layer.expert_down[e]));
    }
    matrices_.push_back(std::move(m));
  }
  expert_tokens_.resize(static_cast<size_t>(c.n_expert));
  output_ = packed_.pack(pool, kernels, model.output());
  if (output_.data != model.output().data && model.file().mapped()) drop_mapped_pages(model.output());
}

void ForwardPass::matmul(const kernels::WeightMatrix& w, const float* in, int n_rows, float* out) {
  kernels::matmul(pool_, kernels_, w, in, n_rows, out, matmul_scratch_);
}

void ForwardPass::rms_norm_rows(const float* in, const std::vector<float>& weight, float* out, int n_rows, int width) {
  const float epsilon = model_.config().rms_epsilon;
  pool_.run(n_rows, [&](int t, int) {
    rms_norm(in + static_cast<size_t>(t) * width, weight.data(), out + static_cast<size_t>(t) * width, width, epsilon);
  });
}

void ForwardPass::apply_rope(float* rows, int n_rows, int row_width, int n_heads, bool sliding_layer) {
  const ModelConfig& c = model_.config();
  const int half = c.rope_dims / 2;
  const bool own = sliding_layer && !inverse_frequencies_sliding_.empty();
  const std::vector<float>& cosines = own ? rope_cos_sliding_ : rope_cos_;
  const std::vector<float>& sines = own ? rope_sin_sliding_ : rope_sin_;
  for (int t = 0; t < n_rows; ++t) {
    const float* cos_t = cosines.data() + static_cast<size_t>(t) * half;
    const float* sin_t = sines.data() + static_cast<size_t>(t) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* head = rows + static_cast<size_t>(t) * row_width + static_cast<size_t>(h) * c.head_dim;
      for (int j = 0; j < half; ++j) {
        // normal: dims (2j, 2j+1); neox: dims (j, j + rope_dims/2).
        const int i0 = c.rope_style == RopeStyle::normal ? 2 * j : j;
        const int i1 = c.rope_style == RopeStyle::normal ? 2 * j + 1 : j + half;
        const float a = head[i0], b = head[i1];
        head[i0] = a * cos_t[j] - b * sin_t[j];
        head[i1] = a * sin_t[j] + b * cos_t[j];
      }
    }
  }
}

// Within a block, a layer's keys (and values) are stored head-major: head h's rows for positions
// 0..kBlockTokens-1, each head_bytes long, so attention reads one contiguous run per head.
void ForwardPass::store_kv(std::span<const BatchToken> batch, KvCache& cache, int layer) {
  const ModelConfig& c = model_.config();
  const size_t head_bytes = cache.row_bytes() / static_cast<size_t>(c.n_head_kv);
  pool_.run(static_cast<int>(batch.size()), [&](int t, int) {
    const BatchToken& token = batch[static_cast<size_t>(t)];
    const int32_t block = token.blocks[token.position / KvCache::kBlockTokens];
    const int offset = token.position % KvCache::kBlockTokens;
    for (int h = 0; h < c.n_head_kv; ++h) {
      const size_t source = static_cast<size_t>(t) * c.kv_width() + static_cast<size_t>(h) * c.head_dim;
      const size_t target = head_bytes * (static_cast<size_t>(h) * KvCache::kBlockTokens + offset);
      const float* k = k_.data() + source;
      const float* v = v_.data() + source;
      uint8_t* key_row = cache.keys(block, layer) + target;
      uint8_t* value_row = cache.values(block, layer) + target;
      switch (cache.type()) {
        case KvType::f32:
          std::copy_n(k, c.head_dim, reinterpret_cast<float*>(key_row));
          std::copy_n(v, c.head_dim, reinterpret_cast<float*>(value_row));
          break;
        case KvType::f16:
          kernels_.f32_to_f16(k, reinterpret_cast<uint16_t*>(key_row), c.head_dim);
          kernels_.f32_to_f16(v, reinterpret_cast<uint16_t*>(value_row), c.head_dim);
          break;
        case KvType::q8_0:
          kernels::quantize_row(GgmlType::q8_0, k, key_row, c.head_dim);
          kernels::quantize_row(GgmlType::q8_0, v, value_row, c.head_dim);
          break;
      }
    }
  });
}

// See attention.h: one task per run and KV head, so the head's keys and values are read once for
// all the query heads, of all the run's tokens, that share them.
void ForwardPass::attention(std::span<const BatchToken> batch, const KvCache& cache, int layer) {
  const ModelConfig& c = model_.config();
  const AttentionLayer shared{c, kernels_, cache, layer, q_.data(), attn_.data()};
  pool_.run(static_cast<int>(runs_.size()) * c.n_head_kv, [&](int task, int thread) {
    attend_run(shared, batch, runs_[static_cast<size_t>(task / c.n_head_kv)], task % c.n_head_kv,
               attention_scratch_[static_cast<size_t>(thread)]);
  });
}

void ForwardPass::activate_times(float* gate, const float* up, int n, int width, int stride) {
  const bool gelu = model_.config().ffn_activation == FfnActivation::gelu;
  pool_.run(n, [&](int t, int) {
    float* g = gate + static_cast<size_t>(t) * stride;
    const float* u = up + static_cast<size_t>(t) * stride;
    if (gelu) {
      // GELU, tanh form: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
      constexpr float kSqrt2OverPi = 0.7978845608028654f;
      for (int i = 0; i < width; ++i) {
        const float x = g[i];
        g[i] = 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x))) * u[i];
      }
    } else {
      for (int i = 0; i < width; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  });
}

void ForwardPass::project_qkv(const LayerWeights& layer, const Matrices& m, int n) {
  const ModelConfig& c = model_.config();
  if (c.fused_qkv) {
    // One product, then each row's q | k | v parts to their own buffers.
    const size_t width = static_cast<size_t>(c.q_width() + c.kv_width() + c.v_width());
    fused_.resize(static_cast<size_t>(n) * width);
    matmul(m.wqkv, norm_.data(), n, fused_.data());
    for (int t = 0; t < n; ++t) {
      const float* row = fused_.data() + static_cast<size_t>(t) * width;
      std::copy_n(row, c.q_width(), q_.data() + static_cast<size_t>(t) * c.q_width());
      std::copy_n(row + c.q_width(), c.kv_width(), k_.data() + static_cast<size_t>(t) * c.kv_width());
      std::copy_n(row + c.q_width() + c.kv_width(), c.v_width(), v_.data() + static_cast<size_t>(t) * c.v_width());
    }
  } else {
    const kernels::MatmulJob jobs[] = {
        {&m.wq, norm_.data(), n, q_.data()}, {&m.wk, norm_.data(), n, k_.data()}, {&m.wv, norm_.data(), n, v_.data()}};
    kernels::matmul_many(pool_, kernels_, jobs, matmul_scratch_);
  }
  if (c.has_qkv_bias) {
    for (int t = 0; t < n; ++t) {
      add_in_place(q_.data() + static_cast<size_t>(t) * c.q_width(), layer.q_bias.data(),
                   static_cast<size_t>(c.q_width()));
      add_in_place(k_.data() + static_cast<size_t>(t) * c.kv_width(), layer.k_bias.data(),
                   static_cast<size_t>(c.kv_width()));
      add_in_place(v_.data() + static_cast<size_t>(t) * c.v_width(), layer.v_bias.data(),
                   static_cast<size_t>(c.v_width()));
    }
  }
  if (c.has_qk_norm) {
    // Each head's query and key vector is RMS-normalised on its own, before RoPE.
    for (int t = 0; t < n; ++t) {
      for (int h = 0; h < c.n_head; ++h) {
        float* head = q_.data() + static_cast<size_t>(t) * c.q_width() + static_cast<size_t>(h) * c.head_dim;
        rms_norm(head, layer.q_norm.data(), head, c.head_dim, c.rms_epsilon);
      }
      for (int h = 0; h < c.n_head_kv; ++h) {
        float* head = k_.data() + static_cast<size_t>(t) * c.kv_width() + static_cast<size_t>(h) * c.head_dim;
        rms_norm(head, layer.k_norm.data(), head, c.head_dim, c.rms_epsilon);
      }
    }
  }
}

void ForwardPass::feed_forward(const LayerWeights& layer, const Matrices& m, int n) {
  const ModelConfig& c = model_.config();
  if (c.is_moe()) {
    mixture_of_experts(layer, m, n);
    return;
  }
  if (c.fused_gate_up) {
    // Each row of the product is gate (n_ff) then up (n_ff); the activated half stays in place.
    const int width = 2 * c.n_ff;
    fused_.resize(static_cast<size_t>(n) * width);
    matmul(m.w_up, norm_.data(), n, fused_.data());
    activate_times(fused_.data(), fused_.data() + c.n_ff, n, c.n_ff, width);
    for (int t = 0; t < n; ++t) {
      std::copy_n(fused_.data() + static_cast<size_t>(t) * width, c.n_ff,
                  gate_.data() + static_cast<size_t>(t) * c.n_ff);
    }
  } else {
    const kernels::MatmulJob jobs[] = {{&m.w_gate, norm_.data(), n, gate_.data()},
                                       {&m.w_up, norm_.data(), n, up_.data()}};
    kernels::matmul_many(pool_, kernels_, jobs, matmul_scratch_);
    activate_times(gate_.data(), up_.data(), n, c.n_ff, c.n_ff);
  }
  matmul(m.w_down, gate_.data(), n, tmp_.data());
}

// Each token goes to the experts its router ranks highest; each expert then runs once over the
// rows of its tokens, so only the chosen experts' weights are read. A token's output adds its
// experts' in expert order whatever else is in the batch, so its numbers do not depend on the
// batch.
// Each of the n tokens to its expert_used_count most probable experts: expert_tokens_[e] lists
// (token, weight) for expert e.
void ForwardPass::route_tokens(const Matrices& m, int n) {
  const ModelConfig& c = model_.config();
  const auto n_expert = static_cast<size_t>(c.n_expert);
  router_.resize(static_cast<size_t>(n) * n_expert);
  matmul(m.router, norm_.data(), n, router_.data());
  for (auto& tokens : expert_tokens_) tokens.clear();
  std::vector<int>& order = expert_order_;
  order.resize(n_expert);
  for (int t = 0; t < n; ++t) {
    float* p = router_.data() + static_cast<size_t>(t) * n_expert;
    // A file's weights may make a router logit NaN or infinite: keep the ranking a strict order
    // and the softmax finite.
    for (size_t e = 0; e < n_expert; ++e) p[e] = std::isnan(p[e]) ? -1e30f : std::clamp(p[e], -1e30f, 1e30f);
    const float top = *std::max_element(p, p + n_expert);
    float total = 0.0f;
    for (size_t e = 0; e < n_expert; ++e) total += p[e] = std::exp(p[e] - top);
    for (size_t e = 0; e < n_expert; ++e) p[e] /= total;  // softmax over every expert
    for (size_t e = 0; e < n_expert; ++e) order[e] = static_cast<int>(e);
    std::partial_sort(order.begin(), order.begin() + c.n_expert_used, order.end(),
                      [p](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
    float chosen = 0.0f;
    for (int i = 0; i < c.n_expert_used; ++i) chosen += p[order[static_cast<size_t>(i)]];
    for (int i = 0; i < c.n_expert_used; ++i) {
      const int e = order[static_cast<size_t>(i)];
      const float weight = c.normalize_expert_weights ? p[e] / chosen : p[e];
      expert_tokens_[static_cast<size_t>(e)].emplace_back(t, weight);
    }
  }
}

// Every routed token's input row, expert after expert, so each expert's tokens are one run of
// rows; the gate and up products of all chosen experts go to the pool together, then their down
// products. tmp_ gets each token's weighted sum of its experts' outputs, in expert order.
void ForwardPass::run_routed_experts(const Matrices& m, int n) {
  const ModelConfig& c = model_.config();
  const size_t width = static_cast<size_t>(c.n_embd);
  const auto n_expert = static_cast<size_t>(c.n_expert);
  std::fill(tmp_.begin(), tmp_.begin() + static_cast<ptrdiff_t>(static_cast<size_t>(n) * width), 0.0f);
  const size_t ff = static_cast<size_t>(c.n_ff_expert);
  size_t total = 0;
  for (const auto& tokens : expert_tokens_) total += tokens.size();
  expert_in_.resize(total * width);
  expert_gate_.resize(total * ff);
  expert_up_.resize(total * ff);
  expert_out_.resize(total * width);
  expert_jobs_.clear();
  size_t first = 0;
  for (size_t e = 0; e < n_expert; ++e) {
    const auto& tokens = expert_tokens_[e];
    if (tokens.empty()) continue;
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::copy_n(norm_.data() + static_cast<size_t>(tokens[i].first) * width, width,
                  expert_in_.data() + (first + i) * width);
    }
    const float* in = expert_in_.data() + first * width;
    const auto count = static_cast<int64_t>(tokens.size());
    expert_jobs_.push_back({&m.expert_gate[e], in, count, expert_gate_.data() + first * ff});
    expert_jobs_.push_back({&m.expert_up[e], in, count, expert_up_.data() + first * ff});
    first += tokens.size();
  }
  kernels::matmul_many(pool_, kernels_, expert_jobs_, matmul_scratch_);
  activate_times(expert_gate_.data(), expert_up_.data(), static_cast<int>(total), c.n_ff_expert, c.n_ff_expert);
  expert_jobs_.clear();
  first = 0;
  for (size_t e = 0; e < n_expert; ++e) {
    const auto& tokens = expert_tokens_[e];
    if (tokens.empty()) continue;
    expert_jobs_.push_back({&m.expert_down[e], expert_gate_.data() + first * ff, static_cast<int64_t>(tokens.size()),
                            expert_out_.data() + first * width});
    first += tokens.size();
  }
  kernels::matmul_many(pool_, kernels_, expert_jobs_, matmul_scratch_);
  // Each token adds its experts' outputs in expert order, whatever else is in the batch.
  first = 0;
  for (size_t e = 0; e < n_expert; ++e) {
    const auto& tokens = expert_tokens_[e];
    for (size_t i = 0; i < tokens.size(); ++i) {
      float* out = tmp_.data() + static_cast<size_t>(tokens[i].first) * width;
      const float* y = expert_out_.data() + (first + i) * width;
      for (size_t j = 0; j < width; ++j) out[j] += tokens[i].second * y[j];
    }
    first += tokens.size();
  }
}

void ForwardPass::mixture_of_experts(const LayerWeights& layer, const Matrices& m, int n) {
  route_tokens(m, n);
  run_routed_experts(m, n);
  const ModelConfig& c = model_.config();
  if (c.n_ff_shared == 0) return;
  const size_t width = static_cast<size_t>(c.n_embd);
  // The shared expert sees every token; a sigmoid of <gate input, x> scales its output.
  const kernels::MatmulJob shared[] = {{&m.shared_gate, norm_.data(), n, gate_.data()},
                                       {&m.shared_up, norm_.data(), n, up_.data()}};
  kernels::matmul_many(pool_, kernels_, shared, matmul_scratch_);
  activate_times(gate_.data(), up_.data(), n, c.n_ff_shared, c.n_ff_shared);
  expert_out_.resize(static_cast<size_t>(n) * width);
  matmul(m.shared_down, gate_.data(), n, expert_out_.data());
  for (int t = 0; t < n; ++t) {
    const float* x = norm_.data() + static_cast<size_t>(t) * width;
    float logit = 0.0f;
    for (size_t j = 0; j < width; ++j) logit += layer.shared_gate_input[j] * x[j];
    const float scale = 1.0f / (1.0f + std::exp(-logit));
    float* out = tmp_.data() + static_cast<size_t>(t) * width;
    const float* y = expert_out_.data() + static_cast<size_t>(t) * width;
    for (size_t j = 0; j < width; ++j) out[j] += scale * y[j];
  }
}

// NOLINTNEXTLINE(readability-function-size): the kernel sequence of one layer, read best in the order it runs.
void ForwardPass::run(std::span<const BatchToken> batch, KvCache& cache, float* logits) {
  const ModelConfig& c = model_.config();
  const int n = static_cast<int>(batch.size());
  if (n == 0) return;
  for (const BatchToken& token : batch) {
    if (token.token < 0 || token.token >= c.n_vocab) throw std::out_of_range("token id " + std::to_string(token.token));
    if (token.position < 0 || token.blocks == nullptr || token.position / KvCache::kBlockTokens >= token.n_blocks) {
      throw std::out_of_range("position " + std::to_string(token.position) + " outside its sequence's blocks");
    }
    for (int b = 0; b <= token.position / KvCache::kBlockTokens; ++b) {
      if (token.blocks[b] < 0 || token.blocks[b] >= cache.n_blocks()) {
        throw std::out_of_range("KV block " + std::to_string(token.blocks[b]));
      }
    }
  }
  const size_t rows = static_cast<size_t>(n);
  x_.resize(rows * c.n_embd);
  norm_.resize(rows * c.n_embd);
  tmp_.resize(rows * c.n_embd);
  q_.resize(rows * c.q_width());
  attn_.resize(rows * c.q_width());
  k_.resize(rows * c.kv_width());
  v_.resize(rows * c.v_width());
  // A mixture of experts never uses n_ff (its experts have their own buffers); a hostile file must
  // not size these by it.
  const int ffn_width = c.is_moe() ? c.n_ff_shared : c.n_ff;
  gate_.resize(rows * ffn_width);
  up_.resize(rows * ffn_width);

  const auto& embedding = model_.token_embedding();
  for (int t = 0; t < n; ++t) {
    kernels::dequantize_row(embedding.type, embedding.row(batch[static_cast<size_t>(t)].token),
                            x_.data() + static_cast<size_t>(t) * c.n_embd, c.n_embd);
  }

  if (c.scale_embedding) {
    const float scale = std::sqrt(static_cast<float>(c.n_embd));
    for (float& v : x_) v *= scale;
  }

  const int half = c.rope_dims / 2;
  // RoPE angles per token: position (over the linear scale) times each inverse frequency.
  auto rope_tables = [&](const std::vector<float>& inverse, double linear_scale, std::vector<float>* cosines,
                         std::vector<float>* sines) {
    cosines->resize(rows * half);
    sines->resize(rows * half);
    for (int t = 0; t < n; ++t) {
      const double position = batch[static_cast<size_t>(t)].position / linear_scale;
      for (int j = 0; j < half; ++j) {
        const double angle = position * inverse[static_cast<size_t>(j)];
        (*cosines)[static_cast<size_t>(t) * half + j] = static_cast<float>(std::cos(angle));
        (*sines)[static_cast<size_t>(t) * half + j] = static_cast<float>(std::sin(angle));
      }
    }
  };
  rope_tables(inverse_frequencies_, c.rope_linear_scale, &rope_cos_, &rope_sin_);
  find_attention_runs(batch, &runs_);  // the same for every layer
  if (!inverse_frequencies_sliding_.empty()) {
    rope_tables(inverse_frequencies_sliding_, 1.0, &rope_cos_sliding_, &rope_sin_sliding_);
  }

  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& layer = model_.layers()[static_cast<size_t>(l)];
    const Matrices& m = matrices_[static_cast<size_t>(l)];
    rms_norm_rows(x_.data(), layer.attn_norm, norm_.data(), n, c.n_embd);
    project_qkv(layer, m, n);
    apply_rope(q_.data(), n, c.q_width(), c.n_head, c.is_sliding(l));
    apply_rope(k_.data(), n, c.kv_width(), c.n_head_kv, c.is_sliding(l));
    store_kv(batch, cache, l);
    attention(batch, cache, l);
    matmul(m.wo, attn_.data(), n, tmp_.data());
    if (c.has_post_norms) rms_norm_rows(tmp_.data(), layer.post_attn_norm, tmp_.data(), n, c.n_embd);
    add_in_place(x_.data(), tmp_.data(), rows * c.n_embd);

    rms_norm_rows(x_.data(), layer.ffn_norm, norm_.data(), n, c.n_embd);
    feed_forward(layer, m, n);
    if (c.has_post_norms) rms_norm_rows(tmp_.data(), layer.post_ffn_norm, tmp_.data(), n, c.n_embd);
    add_in_place(x_.data(), tmp_.data(), rows * c.n_embd);
  }

  // Final norm and output projection only for the rows that want logits.
  int n_out = 0;
  for (int t = 0; t < n; ++t) {
    if (!batch[static_cast<size_t>(t)].want_logits) continue;
    rms_norm(x_.data() + static_cast<size_t>(t) * c.n_embd, model_.output_norm().data(),
             norm_.data() + static_cast<size_t>(n_out) * c.n_embd, c.n_embd, c.rms_epsilon);
    ++n_out;
  }
  if (n_out == 0) return;
  matmul(output_, norm_.data(), n_out, logits);
  if (c.final_softcap > 0.0f) {
    const size_t count = static_cast<size_t>(n_out) * c.n_vocab;
    for (size_t i = 0; i < count; ++i) logits[i] = c.final_softcap * std::tanh(logits[i] / c.final_softcap);
  }
}

}  // namespace darkbloom::engine
