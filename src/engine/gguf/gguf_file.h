// Reads GGUF files (versions 2 and 3): metadata, tensor infos and a view of the tensor data, all
// checked against the file's size so a truncated or hostile file yields an error, never an
// out-of-bounds read. Mapping is read-only and zero-copy; interpreting tensors is the model's job.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "base/file.h"
#include "base/result.h"
#include "engine/gguf/ggml_type.h"

namespace darkbloom::engine {

enum class GgufValueType : uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType type);

struct GgufValue;

// Arrays keep fixed-size elements packed as in the file, and every count is checked against the
// bytes left before anything is allocated, so a hostile count cannot make the parser allocate
// more than a small multiple of the file's own size.
struct GgufArray {
  GgufValueType element_type = GgufValueType::u8;
  std::vector<uint8_t> raw;          // numeric and bool elements, little-endian as stored
  std::vector<std::string> strings;  // string elements
  std::vector<GgufValue> arrays;     // nested arrays

  size_t size() const;
  // Numeric or bool element `i` (i < size()); nullopt for strings and arrays.
  std::optional<double> number_at(size_t i) const;
  // Integer element `i`; nullopt for non-integers or values outside int64_t.
  std::optional<int64_t> int_at(size_t i) const;
};

struct GgufValue {
  GgufValueType type = GgufValueType::u8;
  // Integers of every width are held as int64_t or uint64_t according to signedness.
  std::variant<uint64_t, int64_t, double, bool, std::string, GgufArray> data;

  // Any integer type that fits; nullopt for other types or values out of range.
  std::optional<int64_t> as_int() const;
  std::optional<uint64_t> as_uint() const;
  // Floats and integers.
  std::optional<double> as_double() const;
  std::optional<bool> as_bool() const;
  const std::string* as_string() const;
  const GgufArray* as_array() const;
};

struct GgufKeyValue {
  std::string key;
  GgufValue value;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::f32;
  std::vector<uint64_t> dims;  // dims[0] varies fastest (the length of a row)
  uint64_t offset = 0;         // relative to the start of the data section
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
};

class GgufFile {
 public:
  static constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
  static constexpr uint64_t kDefaultAlignment = 32;

  // Maps and parses a file. Errors carry the path.
  static Result<GgufFile> open(const std::string& path);
  // Parses bytes the caller keeps alive (fuzzing, tests). `name` prefixes error messages.
  static Result<GgufFile> parse(std::span<const uint8_t> bytes, const std::string& name);

  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const std::string& name() const { return name_; }
  size_t file_size() const { return bytes_.size(); }
  // True when the bytes are this object's read-only mapping of a file (not borrowed memory).
  bool mapped() const { return mapping_.data() != nullptr; }

  const std::vector<GgufKeyValue>& metadata() const { return metadata_; }
  const GgufValue* find(std::string_view key) const;

  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(std::string_view name) const;
  // The tensor's bytes inside the mapping; always within the file (checked at parse time).
  const uint8_t* tensor_data(const GgufTensorInfo& tensor) const {
    return bytes_.data() + data_offset_ + tensor.offset;
  }

 private:
  MappedFile mapping_;  // empty when parsing borrowed bytes
  std::span<const uint8_t> bytes_;
  std::string name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<GgufKeyValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace darkbloom::engine
