#include "engine/model/model.h"

#include <fmt/format.h>

#include <string_view>

#include "engine/kernels/quantize.h"

namespace darkbloom::engine {
namespace {

class TensorLoader {
 public:
  explicit TensorLoader(const GgufFile& file) : file_(file) {}

  // A matrix of `rows` rows of `cols` elements in a type the kernels support.
  Result<kernels::WeightMatrix> matrix(const std::string& name, int64_t cols, int64_t rows) const {
    const GgufTensorInfo* tensor = file_.find_tensor(name);
    if (tensor == nullptr) return missing(name);
    if (tensor->dims.size() != 2 || tensor->dims[0] != static_cast<uint64_t>(cols) ||
        tensor->dims[1] != static_cast<uint64_t>(rows)) {
      return wrong_shape(*tensor, fmt::format("[{}, {}]", cols, rows));
    }
    DARKBLOOM_RETURN_IF_ERROR(check_type(*tensor));
    kernels::WeightMatrix matrix;
    matrix.type = tensor->type;
    matrix.data = file_.tensor_data(*tensor);
    matrix.rows = rows;
    matrix.cols = cols;
    matrix.row_bytes = ggml_row_bytes(tensor->type, static_cast<uint64_t>(cols));
    return matrix;
  }

  // The experts of a three-dimensional tensor [cols, rows, n_expert]: one matrix view each.
  Result<std::vector<kernels::WeightMatrix>> experts(const std::string& name, int64_t cols, int64_t rows,
                                                     int64_t n_expert) const {
    const GgufTensorInfo* tensor = file_.find_tensor(name);
    if (tensor == nullptr) return missing(name);
    if (tensor->dims.size() != 3 || tensor->dims[0] != static_cast<uint64_t>(cols) ||
        tensor->dims[1] != static_cast<uint64_t>(rows) || tensor->dims[2] != static_cast<uint64_t>(n_expert)) {
      return wrong_shape(*tensor, fmt::format("[{}, {}, {}]", cols, rows, n_expert));
    }
    DARKBLOOM_RETURN_IF_ERROR(check_type(*tensor));
    std::vector<kernels::WeightMatrix> views(static_cast<size_t>(n_expert));
    const size_t row_bytes = ggml_row_bytes(tensor->type, static_cast<uint64_t>(cols));
    for (int64_t e = 0; e < n_expert; ++e) {
      kernels::WeightMatrix& view = views[static_cast<size_t>(e)];
      view.type = tensor->type;
      view.data = file_.tensor_data(*tensor) + static_cast<size_t>(e) * static_cast<size_t>(rows) * row_bytes;
      view.rows = rows;
      view.cols = cols;
      view.row_bytes = row_bytes;
    }
    return views;
  }

  // A vector of `length` values, converted to float.
  // (A [length, 1] matrix counts as such a vector when `column` is set, as converters write some.)
  Result<std::vector<float>> vector(const std::string& name, int64_t length, bool column = false) const {
    const GgufTensorInfo* tensor = file_.find_tensor(name);
    if (tensor == nullptr) return missing(name);
    const bool as_column = column && tensor->dims.size() == 2 && tensor->dims[1] == 1;
    if ((tensor->dims.size() != 1 && !as_column) || tensor->dims[0] != static_cast<uint64_t>(length)) {
      return wrong_shape(*tensor, fmt::format("[{}]", length));
    }
    DARKBLOOM_RETURN_IF_ERROR(check_type(*tensor));
    std::vector<float> values(static_cast<size_t>(length));
    kernels::dequantize_row(tensor->type, file_.tensor_data(*tensor), values.data(), length);
    return values;
  }

  bool has(const std::string& name) const { return file_.find_tensor(name) != nullptr; }

 private:
  Error missing(const std::string& name) const {
    return make_error(Errc::bad_format, fmt::format("{}: missing tensor '{}'", file_.name(), name));
  }

  Error wrong_shape(const GgufTensorInfo& tensor, const std::string& expected) const {
    std::string actual = "[";
    for (size_t i = 0; i < tensor.dims.size(); ++i) actual += (i ? ", " : "") + std::to_string(tensor.dims[i]);
    actual += "]";
    return make_error(Errc::bad_format, fmt::format("{}: tensor '{}' has shape {}, expected {}", file_.name(),
                                                    tensor.name, actual, expected));
  }

  Status check_type(const GgufTensorInfo& tensor) const {
    if (ggml_type_supported(tensor.type)) return {};
    return make_error(Errc::unsupported,
                      fmt::format("{}: tensor '{}' has type {}, which this engine does not support (supported: {})",
                                  file_.name(), tensor.name, ggml_type_name(tensor.type), supported_ggml_type_names()));
  }

  const GgufFile& file_;
};

template <class T>
Status assign(T* out, Result<T> value) {
  if (!value) return value.error();
  *out = std::move(*value);
  return {};
}

Status load_experts(const TensorLoader& load, const std::string& p, const ModelConfig& c, LayerWeights* layer) {
  DARKBLOOM_RETURN_IF_ERROR(assign(&layer->router, load.matrix(p + "ffn_gate_inp.weight", c.n_embd, c.n_expert)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&layer->expert_gate, load.experts(p + "ffn_gate_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&layer->expert_up, load.experts(p + "ffn_up_exps.weight", c.n_embd, c.n_ff_expert, c.n_expert)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&layer->expert_down, load.experts(p + "ffn_down_exps.weight", c.n_ff_expert, c.n_embd, c.n_expert)));
  if (c.n_ff_shared == 0) return {};
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&layer->shared_gate_input, load.vector(p + "ffn_gate_inp_shexp.weight", c.n_embd, /*column=*/true)));
  DARKBLOOM_RETURN_IF_ERROR(
      assign(&layer->shared_gate, load.matrix(p + "ffn_gate_shexp.weight", c.n_embd, c.n_ff_shared)));
  DARKBLOOM_RETURN_IF_ERROR(assign(&layer->shared_up, load.matrix(p + "ffn_up_shexp.weight", c.n_embd, c.n_ff_shared)));
  return assign(&layer->shared_down, load.matrix(p + "ffn_down_shexp.weight", c.n_ff_shared, c.n_embd));
}

}  // namespace

Result<std::unique_ptr<Model>> Model::load(const std::string& path) {
  auto file = GgufFile::open(path);
  if (!file) return file.error();
  return from_file(std::move(*file));
}

Result<std::unique_ptr<Model>> Model::from_file(GgufFile file) {
  std::unique_ptr<Model> model(new Model(std::move(file)));
  auto config = read_model_config(model->file_);
  if (!config) return config.error();
  model->config_ = *config;
  const ModelConfig& c = model->config_;
  const TensorLoader load(model->file_);

  DARKBLOOM_RETURN_IF_ERROR(assign(&model->token_embedding_, load.matrix("token_embd.weight", c.n_embd, c.n_vocab)));
  DARKBLOOM_RETURN_IF_ERROR(assign(&model->output_norm_, load.vector("output_norm.weight", c.n_embd)));
  if (load.has("output.weight")) {
    DARKBLOOM_RETURN_IF_ERROR(assign(&model->output_, load.matrix("output.weight", c.n_embd, c.n_vocab)));
  } else {
    model->output_ = model->token_embedding_;
    model->tied_output_ = true;
  }
  if (load.has("rope_freqs.weight")) {
    DARKBLOOM_RETURN_IF_ERROR(assign(&model->rope_freq_factors_, load.vector("rope_freqs.weight", c.rope_dims / 2)));
  }

  model->layers_.resize(static_cast<size_t>(c.n_layer));
  for (int i = 0; i < c.n_layer; ++i) {
    LayerWeights& layer = model->layers_[static_cast<size_t>(i)];
    const std::string p = fmt::format("blk.{}.", i);
    DARKBLOOM_RETURN_IF_ERROR(assign(&layer.attn_norm, load.vector(p + "attn_norm.weight", c.n_embd)));
    if (c.fused_qkv) {
      DARKBLOOM_RETURN_IF_ERROR(
          assign(&layer.wqkv, load.matrix(p + "attn_qkv.weight", c.n_embd, c.q_width() + c.kv_width() + c.v_width())));
    } else {
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.wq, load.matrix(p + "attn_q.weight", c.n_embd, c.q_width())));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.wk, load.matrix(p + "attn_k.weight", c.n_embd, c.kv_width())));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.wv, load.matrix(p + "attn_v.weight", c.n_embd, c.v_width())));
    }
    DARKBLOOM_RETURN_IF_ERROR(
        assign(&layer.wo, load.matrix(p + "attn_output.weight", c.n_head * c.value_dim, c.n_embd)));
    if (c.has_qkv_bias) {
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.q_bias, load.vector(p + "attn_q.bias", c.q_width())));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.k_bias, load.vector(p + "attn_k.bias", c.kv_width())));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.v_bias, load.vector(p + "attn_v.bias", c.v_width())));
    }
    if (c.has_qk_norm) {
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.q_norm, load.vector(p + "attn_q_norm.weight", c.head_dim)));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.k_norm, load.vector(p + "attn_k_norm.weight", c.head_dim)));
    }
    DARKBLOOM_RETURN_IF_ERROR(assign(&layer.ffn_norm, load.vector(p + "ffn_norm.weight", c.n_embd)));
    if (c.has_post_norms) {
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.post_attn_norm, load.vector(p + "post_attention_norm.weight", c.n_embd)));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.post_ffn_norm, load.vector(p + "post_ffw_norm.weight", c.n_embd)));
    }
    if (c.fused_gate_up) {
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.w_up, load.matrix(p + "ffn_up.weight", c.n_embd, 2 * c.n_ff)));
      DARKBLOOM_RETURN_IF_ERROR(assign(&layer.w_down, load.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd)));
      continue;
    }
    if (c.is_moe()) {
      DARKBLOOM_RETURN_IF_ERROR(load_experts(load, p, c, &layer));
      continue;
    }
    DARKBLOOM_RETURN_IF_ERROR(assign(&layer.w_gate, load.matrix(p + "ffn_gate.weight", c.n_embd, c.n_ff)));
    DARKBLOOM_RETURN_IF_ERROR(assign(&layer.w_up, load.matrix(p + "ffn_up.weight", c.n_embd, c.n_ff)));
    DARKBLOOM_RETURN_IF_ERROR(assign(&layer.w_down, load.matrix(p + "ffn_down.weight", c.n_ff, c.n_embd)));
  }
  return model;
}

uint64_t Model::weight_bytes_per_token() const {
  auto bytes = [](const kernels::WeightMatrix& m) { return static_cast<uint64_t>(m.rows) * m.row_bytes; };
  uint64_t total = bytes(output_) + token_embedding_.row_bytes;
  for (const auto& layer : layers_) {
    total += bytes(layer.wq) + bytes(layer.wk) + bytes(layer.wv) + bytes(layer.wqkv) + bytes(layer.wo) +
             bytes(layer.w_gate) + bytes(layer.w_up) + bytes(layer.w_down) + bytes(layer.router) +
             bytes(layer.shared_gate) + bytes(layer.shared_up) + bytes(layer.shared_down);
    if (!layer.expert_gate.empty()) {
      const uint64_t one_expert = bytes(layer.expert_gate[0]) + bytes(layer.expert_up[0]) + bytes(layer.expert_down[0]);
      total += one_expert * static_cast<uint64_t>(config_.n_expert_used);
    }
  }
  return total;
}

uint64_t Model::parameter_count() const {
  uint64_t total = 0;
  for (const auto& tensor : file_.tensors()) total += tensor.n_elements;
  return total;
}

}  // namespace darkbloom::engine
