#include "engine/gguf/gguf_writer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>

namespace darkbloom::engine {
namespace {

class ByteSink {
 public:
  explicit ByteSink(std::FILE* file) : file_(file) {}

  template <class T>
  void put(T value) {
    write(&value, sizeof value);
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    write(s.data(), s.size());
  }
  void write(const void* data, size_t n) {
    if (n > 0 && std::fwrite(data, 1, n, file_) != n) failed_ = true;
    written_ += n;
  }
  void pad_to(uint64_t alignment) {
    static const char zeros[64] = {};
    uint64_t padding = (alignment - written_ % alignment) % alignment;
    while (padding > 0) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(padding, sizeof zeros));
      write(zeros, n);
      padding -= n;
    }
  }
  bool failed() const { return failed_; }

 private:
  std::FILE* file_;
  uint64_t written_ = 0;
  bool failed_ = false;
};

void put_value(ByteSink& out, const GgufValue& value) {
  switch (value.type) {
    case GgufValueType::u8:
      out.put(static_cast<uint8_t>(std::get<uint64_t>(value.data)));
      break;
    case GgufValueType::i8:
      out.put(static_cast<int8_t>(std::get<int64_t>(value.data)));
      break;
    case GgufValueType::u16:
      out.put(static_cast<uint16_t>(std::get<uint64_t>(value.data)));
      break;
    case GgufValueType::i16:
      out.put(static_cast<int16_t>(std::get<int64_t>(value.data)));
      break;
    case GgufValueType::u32:
      out.put(static_cast<uint32_t>(std::get<uint64_t>(value.data)));
      break;
    case GgufValueType::i32:
      out.put(static_cast<int32_t>(std::get<int64_t>(value.data)));
      break;
    case GgufValueType::u64:
      out.put(std::get<uint64_t>(value.data));
      break;
    case GgufValueType::i64:
      out.put(std::get<int64_t>(value.data));
      break;
    case GgufValueType::f32:
      out.put(static_cast<float>(std::get<double>(value.data)));
      break;
    case GgufValueType::f64:
      out.put(std::get<double>(value.data));
      break;
    case GgufValueType::boolean:
      out.put(static_cast<uint8_t>(std::get<bool>(value.data) ? 1 : 0));
      break;
    case GgufValueType::string:
      out.put_string(std::get<std::string>(value.data));
      break;
    case GgufValueType::array: {
      const GgufArray& array = std::get<GgufArray>(value.data);
      out.put(static_cast<uint32_t>(array.element_type));
      out.put(static_cast<uint64_t>(array.size()));
      if (array.element_type == GgufValueType::string) {
        for (const auto& s : array.strings) out.put_string(s);
      } else if (array.element_type == GgufValueType::array) {
        for (const auto& nested : array.arrays) put_value(out, nested);
      } else {
        out.write(array.raw.data(), array.raw.size());
      }
      break;
    }
  }
}

template <class T>
GgufValue packed_array(GgufValueType type, const std::vector<T>& items) {
  GgufValue value;
  value.type = GgufValueType::array;
  GgufArray array;
  array.element_type = type;
  array.raw.resize(items.size() * sizeof(T));
  if (!items.empty()) std::memcpy(array.raw.data(), items.data(), array.raw.size());
  value.data = std::move(array);
  return value;
}

}  // namespace

GgufValue gguf_u32(uint32_t v) {
  return {GgufValueType::u32, uint64_t{v}};
}
GgufValue gguf_i32(int32_t v) {
  return {GgufValueType::i32, int64_t{v}};
}
GgufValue gguf_u64(uint64_t v) {
  return {GgufValueType::u64, v};
}
GgufValue gguf_f32(float v) {
  return {GgufValueType::f32, double{v}};
}
GgufValue gguf_bool(bool v) {
  return {GgufValueType::boolean, v};
}
GgufValue gguf_string(std::string v) {
  return {GgufValueType::string, std::move(v)};
}

GgufValue gguf_string_array(std::vector<std::string> items) {
  GgufValue value;
  value.type = GgufValueType::array;
  GgufArray array;
  array.element_type = GgufValueType::string;
  array.strings = std::move(items);
  value.data = std::move(array);
  return value;
}

GgufValue gguf_f32_array(const std::vector<float>& items) {
  return packed_array(GgufValueType::f32, items);
}
GgufValue gguf_i32_array(const std::vector<int32_t>& items) {
  return packed_array(GgufValueType::i32, items);
}

void GgufWriter::add_metadata(std::string key, GgufValue value) {
  metadata_.push_back({std::move(key), std::move(value)});
}

Status GgufWriter::add_tensor(std::string name, GgmlType type, std::vector<uint64_t> dims, TensorFill fill) {
  GgufTensorInfo info;
  info.name = std::move(name);
  info.type = type;
  info.dims = std::move(dims);
  info.n_elements = 1;
  for (uint64_t d : info.dims) info.n_elements *= d;
  const size_t row_bytes = ggml_row_bytes(type, info.dims.at(0));
  if (row_bytes == 0) {
    return make_error(Errc::invalid_argument, fmt::format("tensor '{}': rows of {} elements are not whole {} blocks",
                                                          info.name, info.dims[0], ggml_type_name(type)));
  }
  info.n_bytes = row_bytes * (info.n_elements / info.dims[0]);
  tensors_.push_back({std::move(info), std::move(fill)});
  return {};
}

Status GgufWriter::write(const std::string& path, const std::function<void(size_t, size_t)>& progress) const {
  const std::string temporary = path + ".partial";
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(temporary.c_str(), "wb"), &std::fclose);
  if (!file) return make_error(Errc::io_error, fmt::format("{}: {}", temporary, std::strerror(errno)));
  ByteSink out(file.get());

  out.put<uint32_t>(GgufFile::kMagic);
  out.put<uint32_t>(3);
  out.put<uint64_t>(tensors_.size());
  const bool write_alignment = alignment_ != GgufFile::kDefaultAlignment;
  out.put<uint64_t>(metadata_.size() + (write_alignment ? 1 : 0));
  if (write_alignment) {
    out.put_string("general.alignment");
    out.put(static_cast<uint32_t>(GgufValueType::u32));
    out.put<uint32_t>(alignment_);
  }
  for (const auto& kv : metadata_) {
    out.put_string(kv.key);
    out.put(static_cast<uint32_t>(kv.value.type));
    put_value(out, kv.value);
  }
  uint64_t offset = 0;
  for (const auto& tensor : tensors_) {
    out.put_string(tensor.info.name);
    out.put(static_cast<uint32_t>(tensor.info.dims.size()));
    for (uint64_t d : tensor.info.dims) out.put(d);
    out.put(static_cast<uint32_t>(tensor.info.type));
    out.put(offset);
    offset += (tensor.info.n_bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  out.pad_to(alignment_);
  std::vector<uint8_t> buffer;
  for (size_t i = 0; i < tensors_.size(); ++i) {
    const auto& tensor = tensors_[i];
    buffer.assign(static_cast<size_t>(tensor.info.n_bytes), 0);
    tensor.fill(buffer.data());
    out.write(buffer.data(), buffer.size());
    out.pad_to(alignment_);
    if (progress) progress(i + 1, tensors_.size());
    if (out.failed()) break;
  }
  const bool write_failed = out.failed();
  const int close_result = std::fclose(file.release());
  if (write_failed || close_result != 0) {
    std::remove(temporary.c_str());
    return make_error(Errc::io_error, fmt::format("{}: write failed (disk full?)", temporary));
  }
  if (std::rename(temporary.c_str(), path.c_str()) != 0) {
    const int e = errno;
    std::remove(temporary.c_str());
    return make_error(Errc::io_error, fmt::format("{}: {}", path, std::strerror(e)));
  }
  return {};
}

}  // namespace darkbloom::engine
