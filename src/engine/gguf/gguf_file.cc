#include "engine/gguf/gguf_file.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <unordered_set>

namespace darkbloom::engine {
namespace {

// GGUF layout (little-endian):
//   u32 magic "GGUF", u32 version, u64 tensor_count, u64 metadata_kv_count,
//   metadata: { string key, u32 value_type, value }*,
//   tensor infos: { string name, u32 n_dims, u64 dims[n_dims], u32 ggml_type, u64 offset }*,
//   padding to `general.alignment` (default 32), then the tensor data section.
// Strings are u64 length + bytes (no terminator). Arrays are u32 element type, u64 count, items.
constexpr uint32_t kMaxDims = 4;   // ggml tensors have at most 4 dimensions
constexpr int kMaxArrayDepth = 8;  // nesting deeper than this is hostile, not useful
constexpr uint64_t kMaxStringBytes = 1u << 30;
constexpr uint64_t kMaxNestedArrays = 1u << 16;

class Cursor {
 public:
  Cursor(std::span<const uint8_t> bytes, const std::string& name) : bytes_(bytes), name_(name) {}

  size_t position() const { return pos_; }
  size_t remaining() const { return bytes_.size() - pos_; }

  template <class T>
  Result<T> read(std::string_view what) {
    if (remaining() < sizeof(T)) return truncated(what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }

  Result<std::string> read_string(std::string_view what) {
    auto length = read<uint64_t>(what);
    if (!length) return length.error();
    if (*length > remaining() || *length > kMaxStringBytes) {
      return fail(fmt::format("{} claims {} bytes but only {} remain", what, *length, remaining()));
    }
    std::string text(reinterpret_cast<const char*>(bytes_.data() + pos_), *length);
    pos_ += *length;
    return text;
  }

  Result<std::span<const uint8_t>> read_bytes(uint64_t n, std::string_view what) {
    if (n > remaining()) return truncated(what);
    const auto view = bytes_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return view;
  }

  Error truncated(std::string_view what) const { return fail(fmt::format("truncated file: {} is cut off", what)); }
  Error fail(const std::string& message) const {
    return make_error(Errc::bad_format, fmt::format("{}: {} (at byte {})", name_, message, pos_));
  }

 private:
  std::span<const uint8_t> bytes_;
  const std::string& name_;
  size_t pos_ = 0;
};

// Smallest encoded size of one value of a type; bounds array counts before allocating.
uint64_t min_encoded_size(GgufValueType type) {
  switch (type) {
    case GgufValueType::u8:
    case GgufValueType::i8:
    case GgufValueType::boolean:
      return 1;
    case GgufValueType::u16:
    case GgufValueType::i16:
      return 2;
    case GgufValueType::u32:
    case GgufValueType::i32:
    case GgufValueType::f32:
      return 4;
    case GgufValueType::u64:
    case GgufValueType::i64:
    case GgufValueType::f64:
    case GgufValueType::string:
      return 8;
    case GgufValueType::array:
      return 12;
  }
  return 1;
}

bool valid_value_type(uint32_t raw) {
  return raw <= static_cast<uint32_t>(GgufValueType::f64);
}

// Reads one T and stores it widened to `Stored` (uint64_t, int64_t or double).
template <class T, class Stored>
Status read_scalar(Cursor& cursor, std::string_view what, GgufValue* value) {
  auto v = cursor.read<T>(what);
  if (!v) return v.error();
  value->data = static_cast<Stored>(*v);
  return {};
}

// NOLINTNEXTLINE(readability-function-size): a parser: one case per GGUF value type.
Result<GgufValue> read_value(Cursor& cursor, GgufValueType type, int depth, std::string_view what) {
  GgufValue value;
  value.type = type;
  switch (type) {
    case GgufValueType::u8:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<uint8_t, uint64_t>(cursor, what, &value)));
      break;
    case GgufValueType::i8:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<int8_t, int64_t>(cursor, what, &value)));
      break;
    case GgufValueType::u16:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<uint16_t, uint64_t>(cursor, what, &value)));
      break;
    case GgufValueType::i16:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<int16_t, int64_t>(cursor, what, &value)));
      break;
    case GgufValueType::u32:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<uint32_t, uint64_t>(cursor, what, &value)));
      break;
    case GgufValueType::i32:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<int32_t, int64_t>(cursor, what, &value)));
      break;
    case GgufValueType::u64:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<uint64_t, uint64_t>(cursor, what, &value)));
      break;
    case GgufValueType::i64:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<int64_t, int64_t>(cursor, what, &value)));
      break;
    case GgufValueType::f32:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<float, double>(cursor, what, &value)));
      break;
    case GgufValueType::f64:
      DARKBLOOM_RETURN_IF_ERROR((read_scalar<double, double>(cursor, what, &value)));
      break;
    case GgufValueType::boolean: {
      auto v = cursor.read<uint8_t>(what);
      if (!v) return v.error();
      if (*v > 1) return cursor.fail(fmt::format("{} is a bool with value {}", what, *v));
      value.data = *v != 0;
      break;
    }
    case GgufValueType::string: {
      auto v = cursor.read_string(what);
      if (!v) return v.error();
      value.data = std::move(*v);
      break;
    }
    case GgufValueType::array: {
      if (depth >= kMaxArrayDepth) return cursor.fail(fmt::format("{} nests arrays too deeply", what));
      auto raw_type = cursor.read<uint32_t>(what);
      if (!raw_type) return raw_type.error();
      if (!valid_value_type(*raw_type)) {
        return cursor.fail(fmt::format("{} has unknown array element type {}", what, *raw_type));
      }
      auto count = cursor.read<uint64_t>(what);
      if (!count) return count.error();
      const auto element_type = static_cast<GgufValueType>(*raw_type);
      if (*count > cursor.remaining() / min_encoded_size(element_type)) {
        return cursor.fail(fmt::format("{} claims {} elements, more than the file can hold", what, *count));
      }
      GgufArray array;
      array.element_type = element_type;
      if (element_type == GgufValueType::string) {
        array.strings.reserve(static_cast<size_t>(*count));
        for (uint64_t i = 0; i < *count; ++i) {
          auto item = cursor.read_string(what);
          if (!item) return item.error();
          array.strings.push_back(std::move(*item));
        }
      } else if (element_type == GgufValueType::array) {
        if (*count > kMaxNestedArrays) return cursor.fail(fmt::format("{} holds too many nested arrays", what));
        array.arrays.reserve(static_cast<size_t>(*count));
        for (uint64_t i = 0; i < *count; ++i) {
          auto item = read_value(cursor, element_type, depth + 1, what);
          if (!item) return item.error();
          array.arrays.push_back(std::move(*item));
        }
      } else {
        const uint64_t n_bytes = *count * min_encoded_size(element_type);
        auto raw = cursor.read_bytes(n_bytes, what);
        if (!raw) return raw.error();
        array.raw.assign(raw->begin(), raw->end());
        if (element_type == GgufValueType::boolean) {
          for (uint8_t b : array.raw) {
            if (b > 1) return cursor.fail(fmt::format("{} holds a bool with value {}", what, b));
          }
        }
      }
      value.data = std::move(array);
      break;
    }
  }
  return value;
}

bool checked_multiply(uint64_t a, uint64_t b, uint64_t* out) {
  return !__builtin_mul_overflow(a, b, out);
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  static constexpr std::string_view kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto index = static_cast<uint32_t>(type);
  return index < std::size(kNames) ? kNames[index] : "unknown";
}

std::optional<int64_t> GgufValue::as_int() const {
  if (const auto* v = std::get_if<int64_t>(&data)) return *v;
  if (const auto* v = std::get_if<uint64_t>(&data)) {
    if (*v <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return static_cast<int64_t>(*v);
  }
  return std::nullopt;
}

std::optional<uint64_t> GgufValue::as_uint() const {
  if (const auto* v = std::get_if<uint64_t>(&data)) return *v;
  if (const auto* v = std::get_if<int64_t>(&data)) {
    if (*v >= 0) return static_cast<uint64_t>(*v);
  }
  return std::nullopt;
}

std::optional<double> GgufValue::as_double() const {
  if (const auto* v = std::get_if<double>(&data)) return *v;
  if (const auto* v = std::get_if<int64_t>(&data)) return static_cast<double>(*v);
  if (const auto* v = std::get_if<uint64_t>(&data)) return static_cast<double>(*v);
  return std::nullopt;
}

std::optional<bool> GgufValue::as_bool() const {
  if (const auto* v = std::get_if<bool>(&data)) return *v;
  return std::nullopt;
}

size_t GgufArray::size() const {
  switch (element_type) {
    case GgufValueType::string:
      return strings.size();
    case GgufValueType::array:
      return arrays.size();
    default:
      return raw.size() / min_encoded_size(element_type);
  }
}

std::optional<double> GgufArray::number_at(size_t i) const {
  if (element_type == GgufValueType::string || element_type == GgufValueType::array || i >= size()) {
    return std::nullopt;
  }
  const uint8_t* p = raw.data() + i * min_encoded_size(element_type);
  auto load = [p](auto zero) {
    decltype(zero) v;
    std::memcpy(&v, p, sizeof v);
    return static_cast<double>(v);
  };
  switch (element_type) {
    case GgufValueType::u8:
      return load(uint8_t{});
    case GgufValueType::i8:
      return load(int8_t{});
    case GgufValueType::u16:
      return load(uint16_t{});
    case GgufValueType::i16:
      return load(int16_t{});
    case GgufValueType::u32:
      return load(uint32_t{});
    case GgufValueType::i32:
      return load(int32_t{});
    case GgufValueType::u64:
      return load(uint64_t{});
    case GgufValueType::i64:
      return load(int64_t{});
    case GgufValueType::f32:
      return load(float{});
    case GgufValueType::f64:
      return load(double{});
    case GgufValueType::boolean:
      return load(uint8_t{});
    default:
      return std::nullopt;
  }
}

std::optional<int64_t> GgufArray::int_at(size_t i) const {
  if (i >= size()) return std::nullopt;
  const uint8_t* p = raw.data() + i * min_encoded_size(element_type);
  auto load = [p](auto zero) {
    decltype(zero) v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  switch (element_type) {
    case GgufValueType::u8:
      return load(uint8_t{});
    case GgufValueType::i8:
      return load(int8_t{});
    case GgufValueType::u16:
      return load(uint16_t{});
    case GgufValueType::i16:
      return load(int16_t{});
    case GgufValueType::u32:
      return load(uint32_t{});
    case GgufValueType::i32:
      return load(int32_t{});
    case GgufValueType::i64:
      return load(int64_t{});
    case GgufValueType::u64: {
      const uint64_t v = load(uint64_t{});
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return std::nullopt;
      return static_cast<int64_t>(v);
    }
    default:
      return std::nullopt;
  }
}

const std::string* GgufValue::as_string() const {
  return std::get_if<std::string>(&data);
}
const GgufArray* GgufValue::as_array() const {
  return std::get_if<GgufArray>(&data);
}

Result<GgufFile> GgufFile::open(const std::string& path) {
  auto mapping = MappedFile::open(path);
  if (!mapping) return mapping.error();
  const std::span<const uint8_t> bytes(mapping->data(), mapping->size());
  auto file = parse(bytes, path);
  if (!file) return file.error();
  file->mapping_ = std::move(*mapping);
  return file;
}

// NOLINTNEXTLINE(readability-function-size): a parser: the file format, section by section, in the order of the bytes.
Result<GgufFile> GgufFile::parse(std::span<const uint8_t> bytes, const std::string& name) {
  GgufFile file;
  file.bytes_ = bytes;
  file.name_ = name;
  Cursor cursor(bytes, name);

  auto magic = cursor.read<uint32_t>("magic");
  if (!magic) return make_error(Errc::bad_format, name + ": not a GGUF file (shorter than its magic)");
  if (*magic != kMagic) return make_error(Errc::bad_format, name + ": not a GGUF file (wrong magic)");
  auto version = cursor.read<uint32_t>("version");
  if (!version) return version.error();
  if (*version == 1) {
    return make_error(Errc::unsupported, name + ": GGUF version 1 is not supported (re-convert the model)");
  }
  if (*version != 2 && *version != 3) {
    // A byte-swapped small number means a big-endian file.
    const uint32_t swapped = __builtin_bswap32(*version);
    if (swapped >= 1 && swapped <= 3) {
      return make_error(Errc::unsupported, name + ": big-endian GGUF files are not supported");
    }
    return make_error(Errc::unsupported, fmt::format("{}: unknown GGUF version {}", name, *version));
  }
  file.version_ = *version;

  auto tensor_count = cursor.read<uint64_t>("tensor count");
  if (!tensor_count) return tensor_count.error();
  auto kv_count = cursor.read<uint64_t>("metadata count");
  if (!kv_count) return kv_count.error();
  // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at least
  // 8 + 4 + 4 + 8 bytes. Counts beyond that are lies; reject before allocating.
  if (*kv_count > cursor.remaining() / 13)
    return cursor.fail(fmt::format("metadata count {} is impossible", *kv_count));
  if (*tensor_count > cursor.remaining() / 24)
    return cursor.fail(fmt::format("tensor count {} is impossible", *tensor_count));

  std::unordered_set<std::string> seen_keys;
  for (uint64_t i = 0; i < *kv_count; ++i) {
    auto key = cursor.read_string("metadata key");
    if (!key) return key.error();
    if (!seen_keys.insert(*key).second) return cursor.fail(fmt::format("duplicate metadata key '{}'", *key));
    const std::string what = fmt::format("metadata '{}'", *key);
    auto raw_type = cursor.read<uint32_t>(what);
    if (!raw_type) return raw_type.error();
    if (!valid_value_type(*raw_type)) return cursor.fail(fmt::format("{} has unknown value type {}", what, *raw_type));
    auto value = read_value(cursor, static_cast<GgufValueType>(*raw_type), 0, what);
    if (!value) return value.error();
    file.metadata_.push_back({std::move(*key), std::move(*value)});
  }

  if (const GgufValue* alignment = file.find("general.alignment")) {
    const auto value = alignment->as_uint();
    if (!value || *value == 0 || (*value & (*value - 1)) != 0 || *value > (1u << 20)) {
      return make_error(Errc::bad_format, name + ": general.alignment must be a power of two up to 1 MiB");
    }
    file.alignment_ = *value;
  }

  std::unordered_set<std::string> seen_tensors;
  for (uint64_t i = 0; i < *tensor_count; ++i) {
    GgufTensorInfo tensor;
    auto tensor_name = cursor.read_string("tensor name");
    if (!tensor_name) return tensor_name.error();
    tensor.name = std::move(*tensor_name);
    if (!seen_tensors.insert(tensor.name).second) return cursor.fail(fmt::format("duplicate tensor '{}'", tensor.name));
    const std::string what = fmt::format("tensor '{}'", tensor.name);
    auto n_dims = cursor.read<uint32_t>(what);
    if (!n_dims) return n_dims.error();
    if (*n_dims == 0 || *n_dims > kMaxDims) {
      return cursor.fail(fmt::format("{} has {} dimensions (1 to {} allowed)", what, *n_dims, kMaxDims));
    }
    tensor.n_elements = 1;
    for (uint32_t d = 0; d < *n_dims; ++d) {
      auto dim = cursor.read<uint64_t>(what);
      if (!dim) return dim.error();
      if (*dim == 0) return cursor.fail(fmt::format("{} has a zero-length dimension", what));
      if (!checked_multiply(tensor.n_elements, *dim, &tensor.n_elements) || tensor.n_elements > (uint64_t{1} << 48)) {
        return cursor.fail(fmt::format("{} has an impossible element count", what));
      }
      tensor.dims.push_back(*dim);
    }
    auto raw_type = cursor.read<uint32_t>(what);
    if (!raw_type) return raw_type.error();
    const auto info = ggml_type_info(*raw_type);
    if (!info)
      return make_error(Errc::unsupported, fmt::format("{}: {} has unknown tensor type {}", name, what, *raw_type));
    tensor.type = static_cast<GgmlType>(*raw_type);
    if (tensor.dims[0] % info->block_elements != 0) {
      return cursor.fail(fmt::format("{} of type {} has rows of {} elements, not a multiple of its block size {}", what,
                                     info->name, tensor.dims[0], info->block_elements));
    }
    tensor.n_bytes = tensor.n_elements / info->block_elements * info->block_bytes;
    auto offset = cursor.read<uint64_t>(what);
    if (!offset) return offset.error();
    tensor.offset = *offset;
    file.tensors_.push_back(std::move(tensor));
  }

  const uint64_t header_end = cursor.position();
  file.data_offset_ = (header_end + file.alignment_ - 1) / file.alignment_ * file.alignment_;
  if (file.data_offset_ > bytes.size()) {
    if (!file.tensors_.empty()) return make_error(Errc::bad_format, name + ": truncated file: no tensor data");
    file.data_offset_ = bytes.size();
  }
  const uint64_t data_size = bytes.size() - file.data_offset_;
  for (const auto& tensor : file.tensors_) {
    if (tensor.offset % file.alignment_ != 0) {
      return make_error(Errc::bad_format, fmt::format("{}: tensor '{}' data offset {} is not aligned to {}", name,
                                                      tensor.name, tensor.offset, file.alignment_));
    }
    if (tensor.offset > data_size || tensor.n_bytes > data_size - tensor.offset) {
      return make_error(Errc::bad_format,
                        fmt::format("{}: truncated file: tensor '{}' needs bytes {}..{} of a {}-byte data section",
                                    name, tensor.name, tensor.offset, tensor.offset + tensor.n_bytes, data_size));
    }
  }
  // Tensors may not share bytes: writers lay them out one after another, and a file whose tensors
  // all point at one block could otherwise make a loader build views of far more weights than
  // the file holds.
  std::vector<const GgufTensorInfo*> by_offset;
  for (const auto& tensor : file.tensors_) {
    if (tensor.n_bytes > 0) by_offset.push_back(&tensor);
  }
  std::sort(by_offset.begin(), by_offset.end(),
            [](const GgufTensorInfo* a, const GgufTensorInfo* b) { return a->offset < b->offset; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    if (by_offset[i - 1]->offset + by_offset[i - 1]->n_bytes > by_offset[i]->offset) {
      return make_error(Errc::bad_format, fmt::format("{}: tensors '{}' and '{}' overlap", name, by_offset[i - 1]->name,
                                                      by_offset[i]->name));
    }
  }
  return file;
}

const GgufValue* GgufFile::find(std::string_view key) const {
  for (const auto& kv : metadata_) {
    if (kv.key == key) return &kv.value;
  }
  return nullptr;
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view tensor_name) const {
  for (const auto& tensor : tensors_) {
    if (tensor.name == tensor_name) return &tensor;
  }
  return nullptr;
}

}  // namespace darkbloom::engine
