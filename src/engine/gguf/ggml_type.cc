#include "engine/gguf/ggml_type.h"

#include <cctype>
#include <string>

namespace darkbloom::engine {
namespace {

struct Entry {
  GgmlType type;
  GgmlTypeInfo info;
};

// Block geometry is part of the GGUF format: elements per block and bytes per block.
constexpr Entry kTypes[] = {
    {GgmlType::f32, {"f32", 1, 4}},
    {GgmlType::f16, {"f16", 1, 2}},
    {GgmlType::q4_0, {"q4_0", 32, 18}},
    {GgmlType::q4_1, {"q4_1", 32, 20}},
    {GgmlType::q5_0, {"q5_0", 32, 22}},
    {GgmlType::q5_1, {"q5_1", 32, 24}},
    {GgmlType::q8_0, {"q8_0", 32, 34}},
    {GgmlType::q8_1, {"q8_1", 32, 36}},
    {GgmlType::q2_k, {"q2_k", 256, 84}},
    {GgmlType::q3_k, {"q3_k", 256, 110}},
    {GgmlType::q4_k, {"q4_k", 256, 144}},
    {GgmlType::q5_k, {"q5_k", 256, 176}},
    {GgmlType::q6_k, {"q6_k", 256, 210}},
    {GgmlType::q8_k, {"q8_k", 256, 292}},
    {GgmlType::iq2_xxs, {"iq2_xxs", 256, 66}},
    {GgmlType::iq2_xs, {"iq2_xs", 256, 74}},
    {GgmlType::iq3_xxs, {"iq3_xxs", 256, 98}},
    {GgmlType::iq1_s, {"iq1_s", 256, 50}},
    {GgmlType::iq4_nl, {"iq4_nl", 32, 18}},
    {GgmlType::iq3_s, {"iq3_s", 256, 110}},
    {GgmlType::iq2_s, {"iq2_s", 256, 82}},
    {GgmlType::iq4_xs, {"iq4_xs", 256, 136}},
    {GgmlType::i8, {"i8", 1, 1}},
    {GgmlType::i16, {"i16", 1, 2}},
    {GgmlType::i32, {"i32", 1, 4}},
    {GgmlType::i64, {"i64", 1, 8}},
    {GgmlType::f64, {"f64", 1, 8}},
    {GgmlType::iq1_m, {"iq1_m", 256, 56}},
    {GgmlType::bf16, {"bf16", 1, 2}},
    {GgmlType::tq1_0, {"tq1_0", 256, 54}},
    {GgmlType::tq2_0, {"tq2_0", 256, 66}},
};

}  // namespace

std::optional<GgmlTypeInfo> ggml_type_info(uint32_t type) {
  for (const auto& entry : kTypes) {
    if (static_cast<uint32_t>(entry.type) == type) return entry.info;
  }
  return std::nullopt;
}

std::string_view ggml_type_name(GgmlType type) {
  const auto info = ggml_type_info(static_cast<uint32_t>(type));
  return info ? info->name : std::string_view("unknown");
}

bool ggml_type_supported(GgmlType type) {
  switch (type) {
    case GgmlType::f32:
    case GgmlType::f16:
    case GgmlType::bf16:
    case GgmlType::q8_0:
    case GgmlType::q4_0:
    case GgmlType::q4_k:
    case GgmlType::q6_k:
    case GgmlType::q4_1:
    case GgmlType::q5_0:
    case GgmlType::q5_1:
    case GgmlType::iq4_nl:
    case GgmlType::q2_k:
    case GgmlType::q3_k:
    case GgmlType::q5_k:
    case GgmlType::iq4_xs:
      return true;
    default:
      return false;
  }
}

std::string supported_ggml_type_names() {
  std::string names;
  for (const auto& entry : kTypes) {
    if (!ggml_type_supported(entry.type)) continue;
    if (!names.empty()) names += ", ";
    names += entry.info.name;
  }
  return names;
}

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  std::string lower(name);
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  for (const auto& entry : kTypes) {
    if (entry.info.name == lower) return entry.type;
  }
  return std::nullopt;
}

size_t ggml_row_bytes(GgmlType type, uint64_t elements) {
  const auto info = ggml_type_info(static_cast<uint32_t>(type));
  if (!info || elements % info->block_elements != 0) return 0;
  return static_cast<size_t>(elements / info->block_elements) * info->block_bytes;
}

}  // namespace darkbloom::engine
