#include "engine/model/model.h"

#include <gtest/gtest.h>

#include <cstring>
#include <functional>

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
