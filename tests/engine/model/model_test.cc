#include "engine/model/model.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>

#include "base/file.h"
#include "engine/gguf/gguf_writer.h"
#include "engine/model/model_synth.h"
#include "support/temp_dir.h"

namespace darkbloom::engine {
namespace {

using darkbloom::testing::TempDir;

// Copies a GGUF file, letting the caller change metadata and tensors on the way.
struct Rewrite {
  std::function<bool(GgufKeyValue&)> metadata = [](GgufKeyValue&) { return true; };  // false drops it
  std::function<bool(GgufTensorInfo&)> tensor = [](GgufTensorInfo&) { return true; };
};

std::string rewrite(const std::string& source, const std::string& target, const Rewrite& edit) {
  auto file = GgufFile::open(source);
  EXPECT_TRUE(file);
  GgufWriter writer;
  for (GgufKeyValue kv : file->metadata()) {
    if (edit.metadata(kv)) writer.add_metadata(kv.key, kv.value);
  }
  for (GgufTensorInfo tensor : file->tensors()) {
    const uint8_t* data = file->tensor_data(tensor);
    const uint64_t original_bytes = tensor.n_bytes;
    if (!edit.tensor(tensor)) continue;
    EXPECT_TRUE(writer.add_tensor(tensor.name, tensor.type, tensor.dims, [data, original_bytes, tensor](uint8_t* out) {
      const auto info = ggml_type_info(static_cast<uint32_t>(tensor.type));
      const uint64_t bytes = tensor.n_elements / info->block_elements * info->block_bytes;
      std::memcpy(out, data, std::min(bytes, original_bytes));
    }));
  }
  EXPECT_TRUE(writer.write(target));
  return target;
}

class ModelLoading : public ::testing::Test {
 protected:
  void SetUp() override {
    SynthOptions options;
    options.n_layer = 1;
    options.n_vocab = 300;
    source_ = dir_.file("source.gguf");
    ASSERT_TRUE(synthesize_model(options, source_));
  }
  std::string error_after(const Rewrite& edit) {
    auto model = Model::load(rewrite(source_, dir_.file("edited.gguf"), edit));
    return model ? std::string() : model.error().message;
  }
  TempDir dir_;
  std::string source_;
};

TEST_F(ModelLoading, a_synthesised_model_loads) {
  auto model = Model::load(source_);
  ASSERT_TRUE(model) << model.error().message;
  EXPECT_EQ((*model)->config().n_layer, 1);
  EXPECT_EQ((*model)->config().n_vocab, 300);
  EXPECT_FALSE((*model)->tied_output());
}

TEST_F(ModelLoading, unknown_architecture_is_named) {
  const std::string error = error_after({.metadata = [](GgufKeyValue& kv) {
    if (kv.key == "general.architecture") kv.value = gguf_string("gptj");
    return true;
  }});
  EXPECT_NE(error.find("architecture 'gptj' is not supported"), std::string::npos) << error;
}

TEST_F(ModelLoading, missing_tensor_is_named) {
  const std::string error = error_after({.tensor = [](GgufTensorInfo& t) { return t.name != "blk.0.ffn_up.weight"; }});
  EXPECT_NE(error.find("missing tensor 'blk.0.ffn_up.weight'"), std::string::npos) << error;
}

TEST_F(ModelLoading, missing_output_matrix_means_tied_embeddings) {
  auto model = Model::load(rewrite(source_, dir_.file("tied.gguf"),
                                   {.tensor = [](GgufTensorInfo& t) { return t.name != "output.weight"; }}));
  ASSERT_TRUE(model) << model.error().message;
  EXPECT_TRUE((*model)->tied_output());
}

TEST_F(ModelLoading, unsupported_tensor_type_is_named) {
  const std::string error = error_after({.tensor = [](GgufTensorInfo& t) {
    if (t.name == "blk.0.attn_q.weight") t.type = GgmlType::iq2_xxs;
    return true;
  }});
  EXPECT_NE(error.find("'blk.0.attn_q.weight' has type iq2_xxs"), std::string::npos) << error;
}

// A mixture-of-experts file with wrong expert counts or shapes is refused by name.
class MoeLoading : public ModelLoading {
 protected:
  void SetUp() override {
    SynthOptions options;
    options.architecture = "qwen2moe";
    options.n_layer = 1;
    options.n_vocab = 300;
    options.n_expert = 4;
    options.n_expert_used = 2;
    options.n_ff_expert = 64;
    options.n_ff_shared = 128;
    source_ = dir_.file("moe.gguf");
    ASSERT_TRUE(synthesize_model(options, source_));
  }
};

TEST_F(MoeLoading, a_synthesised_mixture_loads_with_its_experts) {
  auto model = Model::load(source_);
  ASSERT_TRUE(model) << model.error().message;
  const ModelConfig& c = (*model)->config();
  EXPECT_EQ(c.n_expert, 4);
  EXPECT_EQ(c.n_expert_used, 2);
  EXPECT_EQ(c.n_ff_expert, 64);
  EXPECT_EQ(c.n_ff_shared, 128);
  EXPECT_FALSE(c.normalize_expert_weights);
  const LayerWeights& layer = (*model)->layers()[0];
  ASSERT_EQ(layer.expert_down.size(), 4u);
  // Each expert is its own slice of the 3-D tensor.
  EXPECT_EQ(layer.expert_down[1].data, layer.expert_down[0].data + 256 * layer.expert_down[0].row_bytes);
}

TEST_F(MoeLoading, more_experts_used_than_there_are_is_an_error) {
  const std::string error = error_after({.metadata = [](GgufKeyValue& kv) {
    if (kv.key == "qwen2moe.expert_used_count") kv.value = gguf_u32(5);
    return true;
  }});
  EXPECT_NE(error.find("expert_used_count 5 is more than expert_count 4"), std::string::npos) << error;
}

TEST_F(MoeLoading, an_expert_tensor_of_the_wrong_shape_is_named) {
  const std::string error = error_after({.tensor = [](GgufTensorInfo& t) {
    if (t.name == "blk.0.ffn_up_exps.weight") t.dims = {256, 64, 3};
    return true;
  }});
  EXPECT_NE(error.find("'blk.0.ffn_up_exps.weight' has shape [256, 64, 3], expected [256, 64, 4]"), std::string::npos)
      << error;
}

TEST_F(MoeLoading, the_shared_expert_is_required_and_its_gate_may_be_a_column) {
  std::string error =
      error_after({.tensor = [](GgufTensorInfo& t) { return t.name != "blk.0.ffn_down_shexp.weight"; }});
  EXPECT_NE(error.find("missing tensor 'blk.0.ffn_down_shexp.weight'"), std::string::npos) << error;
  error = error_after({.tensor = [](GgufTensorInfo& t) {
    if (t.name == "blk.0.ffn_gate_inp_shexp.weight") t.dims = {256, 1};
    return true;
  }});
  EXPECT_EQ(error, "");
}

TEST_F(ModelLoading, gemma_and_phi3_files_load_with_their_variants) {
  for (const char* arch : {"gemma2", "gemma3", "phi3"}) {
    SCOPED_TRACE(arch);
    SynthOptions options;
    options.architecture = arch;
    options.n_layer = 6;
    options.n_vocab = 300;
    options.rope_dims = std::string(arch) == "phi3" ? 32 : 0;
    const std::string path = dir_.file(std::string(arch) + ".gguf");
    ASSERT_TRUE(synthesize_model(options, path));
    auto model = Model::load(path);
    ASSERT_TRUE(model) << model.error().message;
    const ModelConfig& c = (*model)->config();
    if (std::string(arch) == "phi3") {
      EXPECT_TRUE(c.fused_qkv && c.fused_gate_up);
      EXPECT_EQ(c.rope_dims, 32);
      EXPECT_EQ(c.sliding_window, 2047);
      for (int l = 0; l < 6; ++l) EXPECT_TRUE(c.is_sliding(l));
      EXPECT_EQ((*model)->layers()[0].w_up.rows, 2 * c.n_ff);
      // Phi-4's converted files say sliding_window = 0: no window.
      source_ = path;
      const std::string no_window = error_after({.metadata = [](GgufKeyValue& kv) {
        if (kv.key == "phi3.attention.sliding_window") kv.value = gguf_u32(0);
        return true;
      }});
      EXPECT_EQ(no_window, "");
      auto phi4 = Model::load(dir_.file("edited.gguf"));
      ASSERT_TRUE(phi4);
      EXPECT_FALSE((*phi4)->config().is_sliding(0));
    } else {
      EXPECT_TRUE(c.scale_embedding && c.has_post_norms);
      EXPECT_EQ(c.ffn_activation, FfnActivation::gelu);
      // gemma2: layers 0, 2, 4 slide; gemma3: all but layer 5.
      const bool gemma2 = std::string(arch) == "gemma2";
      for (int l = 0; l < 6; ++l) EXPECT_EQ(c.is_sliding(l), gemma2 ? l % 2 == 0 : l != 5) << l;
      EXPECT_EQ(c.attn_softcap, gemma2 ? 50.0f : 0.0f);
      EXPECT_EQ(c.rope_theta_sliding, gemma2 ? 0.0f : 10000.0f);
    }
  }
}

TEST_F(ModelLoading, overlapping_tensors_are_refused) {
  // Point one tensor's data at another's: a small file must not stand for more weights than it holds.
  const std::string path = rewrite(source_, dir_.file("plain.gguf"), {});
  auto file = GgufFile::open(path);
  ASSERT_TRUE(file);
  auto read = read_file(path);
  ASSERT_TRUE(read);
  std::string bytes = *read;
  // The tensor infos end with a u64 offset; the second tensor's offset becomes the first's (0).
  const GgufTensorInfo& second = file->tensors()[1];
  const size_t at = bytes.find(second.name);
  ASSERT_NE(at, std::string::npos);
  const size_t offset_at = at + second.name.size() + 4 + 8 * second.dims.size() + 4;
  std::memset(bytes.data() + offset_at, 0, 8);
  const std::string bad = dir_.file("overlap.gguf");
  ASSERT_TRUE(write_file(bad, bytes));
  auto reopened = GgufFile::open(bad);
  ASSERT_FALSE(reopened);
  EXPECT_NE(reopened.error().message.find("overlap"), std::string::npos) << reopened.error().message;
}

TEST_F(ModelLoading, wrong_shape_is_named_with_both_shapes) {
  const std::string error = error_after({.tensor = [](GgufTensorInfo& t) {
    if (t.name == "blk.0.ffn_norm.weight") t.dims = {128};
    return true;
  }});
  EXPECT_NE(error.find("'blk.0.ffn_norm.weight' has shape [128], expected [256]"), std::string::npos) << error;
}

TEST_F(ModelLoading, missing_hyperparameter_is_named) {
  const std::string error = error_after({.metadata = [](GgufKeyValue& kv) { return kv.key != "llama.block_count"; }});
  EXPECT_NE(error.find("missing metadata 'llama.block_count'"), std::string::npos) << error;
}

// Sizes are bounded so that width products cannot overflow: a head count that would wrap the
// query width to a small number must be refused, not loaded.
TEST_F(ModelLoading, absurd_sizes_are_refused_before_anything_is_allocated) {
  std::string error = error_after({.metadata = [](GgufKeyValue& kv) {
    if (kv.key == "llama.attention.head_count") kv.value = gguf_u32(268435457);
    return true;
  }});
  EXPECT_NE(error.find("'llama.attention.head_count' must be a positive integer up to 1024"), std::string::npos)
      << error;
  error = error_after({.metadata = [](GgufKeyValue& kv) {
    if (kv.key == "llama.block_count") kv.value = gguf_u32(50000000);
    return true;
  }});
  EXPECT_NE(error.find("'llama.block_count' must be a positive integer up to 1024"), std::string::npos) << error;
  error = error_after({.metadata = [](GgufKeyValue& kv) {
    if (kv.key == "llama.block_count") kv.value = gguf_u32(1000);
    return true;
  }});
  EXPECT_NE(error.find("block_count 1000 is more than the file's"), std::string::npos) << error;
}

TEST_F(ModelLoading, unsupported_rope_scaling_is_named) {
  const std::string error = error_after({.metadata = [](GgufKeyValue& kv) {
    if (kv.key == "llama.rope.freq_base") kv = {"llama.rope.scaling.type", gguf_string("yarn")};
    return true;
  }});
  EXPECT_NE(error.find("RoPE scaling 'yarn' is not supported"), std::string::npos) << error;
}

}  // namespace
}  // namespace darkbloom::engine
