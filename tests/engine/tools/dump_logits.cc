// Test tool: writes the engine's logits for every position of a token sequence as raw
// little-endian float32 (rows of n_vocab), for comparison with the NumPy reference.
// Usage: dump_logits MODEL.gguf 1,2,3 OUT.f32 [scalar|avx2|avx512|float|auto [f32|f16|q8_0]]
// (kernels, then the KV cache type; auto and f32 when left out)
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include "base/file.h"
#include "base/thread_pool.h"
#include "engine/kernels/kernel_set.h"
#include "engine/kv/kv_cache.h"
#include "engine/model/logit_evaluator.h"
#include "engine/model/model.h"

int main(int argc, char** argv) {
  using namespace darkbloom;
  if (argc < 4 || argc > 6) {
    std::fprintf(stderr, "usage: dump_logits MODEL TOKENS OUT [kernels [kv-type]]\n");
    return 2;
  }
  auto model = engine::Model::load(argv[1]);
  if (!model) {
    std::fprintf(stderr, "dump_logits: %s\n", model.error().message.c_str());
    return 1;
  }
  std::vector<int32_t> tokens;
  std::stringstream list(argv[2]);
  for (std::string item; std::getline(list, item, ',');) tokens.push_back(std::stoi(item));
  const auto* kernels = engine::kernels::kernels_by_name(argc >= 5 ? argv[4] : "auto");
  if (kernels == nullptr) {
    std::fprintf(stderr, "dump_logits: kernels not available\n");
    return 1;
  }
  const auto kv_type = engine::parse_kv_type(argc == 6 ? argv[5] : "f32");
  if (!kv_type) {
    std::fprintf(stderr, "dump_logits: unknown KV cache type\n");
    return 1;
  }
  ThreadPool pool(2);
  engine::LogitEvaluator evaluator(**model, pool, *kernels, static_cast<int>(tokens.size()), *kv_type);
  // Small chunks so the batched path (several positions per step) and the cache are both used.
  const std::vector<float> logits = evaluator.evaluate(tokens, 3);
  const auto status = write_file(
      argv[3], std::string_view(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float)));
  if (!status) {
    std::fprintf(stderr, "dump_logits: %s\n", status.error().message.c_str());
    return 1;
  }
  return 0;
}
