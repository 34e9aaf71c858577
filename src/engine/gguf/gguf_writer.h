// Writes GGUF version 3 files: metadata of any value type and tensors whose bytes are produced
// on demand while writing, so a large model never sits in memory at once.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "base/result.h"
#include "engine/gguf/gguf_file.h"

namespace darkbloom::engine {

// Value constructors for metadata.
GgufValue gguf_u32(uint32_t v);
GgufValue gguf_i32(int32_t v);
GgufValue gguf_u64(uint64_t v);
GgufValue gguf_f32(float v);
GgufValue gguf_bool(bool v);
GgufValue gguf_string(std::string v);
GgufValue gguf_string_array(std::vector<std::string> items);
GgufValue gguf_f32_array(const std::vector<float>& items);
GgufValue gguf_i32_array(const std::vector<int32_t>& items);

class GgufWriter {
 public:
  // Fills the tensor's bytes (exactly its n_bytes) when the writer reaches it.
  using TensorFill = std::function<void(uint8_t* out)>;

  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

  void add_metadata(std::string key, GgufValue value);
  // `dims[0]` is the row length; it must be a whole number of the type's blocks.
  Status add_tensor(std::string name, GgmlType type, std::vector<uint64_t> dims, TensorFill fill);

  // Writes the file (to a temporary name, renamed into place at the end). `progress` is called
  // after each tensor with (tensors written, total).
  Status write(const std::string& path, const std::function<void(size_t, size_t)>& progress = {}) const;

 private:
  struct PendingTensor {
    GgufTensorInfo info;
    TensorFill fill;
  };
  uint32_t alignment_;
  std::vector<GgufKeyValue> metadata_;
  std::vector<PendingTensor> tensors_;
};

}  // namespace darkbloom::engine
