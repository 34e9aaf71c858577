#include "engine/model/forward.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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
  scores_.resize(static_cast<size_t>(pool.size()));
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

void ForwardPass::apply_rope(float* rows, int n_rows, int row_width, int n_heads) {
  const ModelConfig& c = model_.config();
  const int half = c.rope_dims / 2;
  for (int t = 0; t < n_rows; ++t) {
    const float* cos_t = rope_cos_.data() + static_cast<size_t>(t) * half;
    const float* sin_t = rope_sin_.data() + static_cast<size_t>(t) * half;
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

void ForwardPass::attention(std::span<const BatchToken> batch, const KvCache& cache, int layer) {
  const ModelConfig& c = model_.config();
  const int n_rows = static_cast<int>(batch.size());
  const int group = c.n_head / c.n_head_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
  const int kv_width = c.kv_width();
  pool_.run(n_rows * c.n_head, [&](int task, int thread) {
    const int t = task / c.n_head;
    const int h = task % c.n_head;
    const BatchToken& token = batch[static_cast<size_t>(t)];
    const int n_positions = token.position + 1;
    const float* q = q_.data() + static_cast<size_t>(t) * c.q_width() + static_cast<size_t>(h) * c.head_dim;
    const int kv_head = h / group;
    const float* keys = cache.keys(token.slot, layer) + static_cast<size_t>(kv_head) * c.head_dim;
    const float* values = cache.values(token.slot, layer) + static_cast<size_t>(kv_head) * c.head_dim;
    std::vector<float>& scores = scores_[static_cast<size_t>(thread)];
    if (scores.size() < static_cast<size_t>(n_positions)) scores.resize(static_cast<size_t>(cache.context()));

    float max_score = -INFINITY;
    for (int p = 0; p < n_positions; ++p) {
      const float s = kernels_.dot_f32(c.head_dim, q, keys + static_cast<size_t>(p) * kv_width) * scale;
      scores[static_cast<size_t>(p)] = s;
      max_score = std::max(max_score, s);
    }
    float total = 0.0f;
    for (int p = 0; p < n_positions; ++p) {
      const float e = std::exp(scores[static_cast<size_t>(p)] - max_score);
      scores[static_cast<size_t>(p)] = e;
      total += e;
    }
    const float inverse_total = 1.0f / total;
    float* out = attn_.data() + static_cast<size_t>(t) * c.q_width() + static_cast<size_t>(h) * c.head_dim;
    std::fill(out, out + c.head_dim, 0.0f);
    for (int p = 0; p < n_positions; ++p) {
      const float weight = scores[static_cast<size_t>(p)] * inverse_total;
      const float* v = values + static_cast<size_t>(p) * kv_width;
      for (int i = 0; i < c.head_dim; ++i) out[i] += weight * v[i];
    }
  });
}

void ForwardPass::run(std::span<const BatchToken> batch, KvCache& cache, float* logits) {
  const ModelConfig& c = model_.config();
  const int n = static_cast<int>(batch.size());
  if (n == 0) return;
  for (const BatchToken& token : batch) {
    if (token.token < 0 || token.token >= c.n_vocab) throw std::out_of_range("token id " + std::to_string(token.token));
    if (token.position < 0 || token.position >= cache.context()) {
      throw std::out_of_range("position " + std::to_string(token.position) + " outside the context");
    }
    if (token.slot < 0 || token.slot >= cache.n_slots())
      throw std::out_of_range("KV slot " + std::to_string(token.slot));
  }
  const size_t rows = static_cast<size_t>(n);
  x_.resize(rows * c.n_embd);
  norm_.resize(rows * c.n_embd);
  tmp_.resize(rows * c.n_embd);
  q_.resize(rows * c.q_width());
  attn_.resize(rows * c.q_width());
  k_.resize(rows * c.kv_width());
  v_.resize(rows * c.v_width());
  gate_.resize(rows * c.n_ff);
  up_.resize(rows * c.n_ff);

  const auto& embedding = model_.token_embedding();
  for (int t = 0; t < n; ++t) {
    kernels::dequantize_row(embedding.type, embedding.row(batch[static_cast<size_t>(t)].token),
                            x_.data() + static_cast<size_t>(t) * c.n_embd, c.n_embd);
  }

  const int half = c.rope_dims / 2;
  rope_cos_.resize(rows * half);
  rope_sin_.resize(rows * half);
  for (int t = 0; t < n; ++t) {
    const double position = batch[static_cast<size_t>(t)].position / static_cast<double>(c.rope_linear_scale);
    for (int j = 0; j < half; ++j) {
      const double angle = position * inverse_frequencies_[static_cast<size_t>(j)];
      rope_cos_[static_cast<size_t>(t) * half + j] = static_cast<float>(std::cos(angle));
      rope_sin_[static_cast<size_t>(t) * half + j] = static_cast<float>(std::sin(angle));
    }
  }

  for (int l = 0; l < c.n_layer; ++l) {
    const LayerWeights& layer = model_.layers()[static_cast<size_t>(l)];
    rms_norm_rows(x_.data(), layer.attn_norm, norm_.data(), n, c.n_embd);
    matmul(layer.wq, norm_.data(), n, q_.data());
    matmul(layer.wk, norm_.data(), n, k_.data());
    matmul(layer.wv, norm_.data(), n, v_.data());
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
    apply_rope(q_.data(), n, c.q_width(), c.n_head);
    apply_rope(k_.data(), n, c.kv_width(), c.n_head_kv);
    for (int t = 0; t < n; ++t) {
      const BatchToken& token = batch[static_cast<size_t>(t)];
      std::copy_n(k_.data() + static_cast<size_t>(t) * c.kv_width(), c.kv_width(),
                  cache.key(token.slot, l, token.position));
      std::copy_n(v_.data() + static_cast<size_t>(t) * c.v_width(), c.v_width(),
                  cache.value(token.slot, l, token.position));
    }
    attention(batch, cache, l);
    matmul(layer.wo, attn_.data(), n, tmp_.data());
    add_in_place(x_.data(), tmp_.data(), rows * c.n_embd);

    rms_norm_rows(x_.data(), layer.ffn_norm, norm_.data(), n, c.n_embd);
    matmul(layer.w_gate, norm_.data(), n, gate_.data());
    matmul(layer.w_up, norm_.data(), n, up_.data());
    pool_.run(n, [&](int t, int) {
      float* g = gate_.data() + static_cast<size_t>(t) * c.n_ff;
      const float* u = up_.data() + static_cast<size_t>(t) * c.n_ff;
      for (int i = 0; i < c.n_ff; ++i) g[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];  // SiLU(gate) * up
    });
    matmul(layer.w_down, gate_.data(), n, tmp_.data());
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
  if (n_out > 0) matmul(model_.output(), norm_.data(), n_out, logits);
}

}  // namespace darkbloom::engine
