#include "engine/gguf/gguf_file.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "base/file.h"
#include "engine/gguf/gguf_writer.h"
#include "support/temp_dir.h"

namespace darkbloom::engine {
namespace {

using darkbloom::testing::TempDir;

std::string file_bytes(const std::string& path) {
  return *read_file(path);
}

Result<GgufFile> parse_bytes(const std::string& bytes) {
  return GgufFile::parse({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}, "test.gguf");
}

// A small file with every metadata type and two tensors.
std::string write_sample(const TempDir& dir, uint32_t alignment = 32) {
  GgufWriter writer(alignment);
  writer.add_metadata("u8", {GgufValueType::u8, uint64_t{200}});
  writer.add_metadata("i8", {GgufValueType::i8, int64_t{-100}});
  writer.add_metadata("u16", {GgufValueType::u16, uint64_t{60000}});
  writer.add_metadata("i16", {GgufValueType::i16, int64_t{-30000}});
  writer.add_metadata("u32", gguf_u32(4000000000u));
  writer.add_metadata("i32", gguf_i32(-2000000000));
  writer.add_metadata("u64", gguf_u64(1ull << 60));
  writer.add_metadata("i64", {GgufValueType::i64, int64_t{-(1ll << 60)}});
  writer.add_metadata("f32", gguf_f32(1.5f));
  writer.add_metadata("f64", {GgufValueType::f64, 2.25});
  writer.add_metadata("bool", gguf_bool(true));
  writer.add_metadata("string", gguf_string("héllo"));
  writer.add_metadata("strings", gguf_string_array({"a", "", "ccc"}));
  writer.add_metadata("floats", gguf_f32_array({0.5f, -1.0f}));
  GgufValue nested;
  nested.type = GgufValueType::array;
  GgufArray outer;
  outer.element_type = GgufValueType::array;
  outer.arrays = {gguf_i32_array({1, 2, 3}), gguf_i32_array({})};
  nested.data = outer;
  writer.add_metadata("nested", nested);
  EXPECT_TRUE(writer.add_tensor("vector", GgmlType::f32, {3}, [](uint8_t* out) {
    const float values[3] = {1.0f, 2.0f, 3.0f};
    std::memcpy(out, values, sizeof values);
  }));
  EXPECT_TRUE(
      writer.add_tensor("matrix", GgmlType::q8_0, {64, 2}, [](uint8_t* out) { std::memset(out, 7, 2 * 2 * 34); }));
  const std::string path = dir.file("sample.gguf");
  EXPECT_TRUE(writer.write(path));
  return path;
}

TEST(GgufFile, reads_back_every_metadata_type_and_tensor) {
  TempDir dir;
  auto file = GgufFile::open(write_sample(dir));
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(file->version(), 3u);
  EXPECT_EQ(*file->find("u8")->as_uint(), 200u);
  EXPECT_EQ(*file->find("i8")->as_int(), -100);
  EXPECT_EQ(*file->find("u16")->as_uint(), 60000u);
  EXPECT_EQ(*file->find("i16")->as_int(), -30000);
  EXPECT_EQ(*file->find("u32")->as_uint(), 4000000000u);
  EXPECT_EQ(*file->find("i32")->as_int(), -2000000000);
  EXPECT_EQ(*file->find("u64")->as_uint(), 1ull << 60);
  EXPECT_EQ(*file->find("i64")->as_int(), -(1ll << 60));
  EXPECT_EQ(*file->find("f32")->as_double(), 1.5);
  EXPECT_EQ(*file->find("f64")->as_double(), 2.25);
  EXPECT_EQ(*file->find("bool")->as_bool(), true);
  EXPECT_EQ(*file->find("string")->as_string(), "héllo");
  EXPECT_EQ(file->find("strings")->as_array()->strings, (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(*file->find("floats")->as_array()->number_at(1), -1.0);
  const GgufArray* nested = file->find("nested")->as_array();
  ASSERT_EQ(nested->size(), 2u);
  EXPECT_EQ(*nested->arrays[0].as_array()->int_at(2), 3);
  EXPECT_EQ(nested->arrays[1].as_array()->size(), 0u);
  EXPECT_EQ(file->find("missing"), nullptr);

  const GgufTensorInfo* vector = file->find_tensor("vector");
  ASSERT_NE(vector, nullptr);
  float values[3];
  std::memcpy(values, file->tensor_data(*vector), sizeof values);
  EXPECT_EQ(values[2], 3.0f);
  const GgufTensorInfo* matrix = file->find_tensor("matrix");
  ASSERT_NE(matrix, nullptr);
  EXPECT_EQ(matrix->dims, (std::vector<uint64_t>{64, 2}));
  EXPECT_EQ(matrix->n_bytes, 2u * 2u * 34u);
  EXPECT_EQ(file->tensor_data(*matrix)[0], 7);
  EXPECT_EQ(file->data_offset() % 32, 0u);
}

TEST(GgufFile, honours_a_custom_alignment) {
  TempDir dir;
  auto file = GgufFile::open(write_sample(dir, 256));
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(file->alignment(), 256u);
  EXPECT_EQ(file->data_offset() % 256, 0u);
}

TEST(GgufFile, reads_version_2) {
  TempDir dir;
  std::string bytes = file_bytes(write_sample(dir));
  bytes[4] = 2;  // versions 2 and 3 share the layout
  auto file = parse_bytes(bytes);
  ASSERT_TRUE(file) << file.error().message;
  EXPECT_EQ(file->version(), 2u);
}

TEST(GgufFile, every_truncation_is_an_error_not_a_crash) {
  TempDir dir;
  const std::string bytes = file_bytes(write_sample(dir));
  auto whole = parse_bytes(bytes);
  ASSERT_TRUE(whole);
  const GgufTensorInfo* last = whole->find_tensor("matrix");
  // Only the padding after the last tensor may be cut without losing data.
  const size_t data_end = whole->data_offset() + last->offset + last->n_bytes;
  ASSERT_LT(data_end, bytes.size());
  for (size_t length = 0; length < bytes.size(); ++length) {
    auto file = parse_bytes(bytes.substr(0, length));
    EXPECT_EQ(file.ok(), length >= data_end) << "prefix of " << length << " bytes";
  }
}

TEST(GgufFile, rejects_wrong_magic_old_and_unknown_versions_and_big_endian) {
  TempDir dir;
  const std::string good = file_bytes(write_sample(dir));
  std::string bad = good;
  bad[0] = 'X';
  EXPECT_NE(parse_bytes(bad).error().message.find("wrong magic"), std::string::npos);
  bad = good;
  bad[4] = 1;
  EXPECT_NE(parse_bytes(bad).error().message.find("version 1"), std::string::npos);
  bad = good;
  bad[4] = 9;
  EXPECT_NE(parse_bytes(bad).error().message.find("unknown GGUF version 9"), std::string::npos);
  bad = good;
  bad[4] = 0;
  bad[7] = 3;
  EXPECT_NE(parse_bytes(bad).error().message.find("big-endian"), std::string::npos);
  EXPECT_NE(parse_bytes("").error().message.find("not a GGUF file"), std::string::npos);
}

TEST(GgufFile, rejects_impossible_counts_before_allocating) {
  TempDir dir;
  std::string bytes = file_bytes(write_sample(dir));
  const uint64_t huge = 1ull << 62;
  std::string patched = bytes;
  std::memcpy(patched.data() + 8, &huge, 8);  // tensor count
  EXPECT_FALSE(parse_bytes(patched));
  patched = bytes;
  std::memcpy(patched.data() + 16, &huge, 8);  // metadata count
  EXPECT_FALSE(parse_bytes(patched));
  patched = bytes;
  std::memcpy(patched.data() + 24, &huge, 8);  // length of the first key
  EXPECT_NE(parse_bytes(patched).error().message.find("claims"), std::string::npos);
}

TEST(GgufFile, rejects_tensor_data_outside_the_file) {
  TempDir dir;
  const std::string bytes = file_bytes(write_sample(dir));
  auto file = parse_bytes(bytes);
  ASSERT_TRUE(file);
  // The last tensor (136 bytes) is followed by 24 bytes of padding; cutting 33 bytes cuts into it.
  auto cut = parse_bytes(bytes.substr(0, bytes.size() - 33));
  ASSERT_FALSE(cut);
  EXPECT_NE(cut.error().message.find("tensor 'matrix'"), std::string::npos);
}

TEST(GgufFile, missing_file_names_the_path) {
  auto file = GgufFile::open("/nonexistent/model.gguf");
  ASSERT_FALSE(file);
  EXPECT_NE(file.error().message.find("/nonexistent/model.gguf"), std::string::npos);
}

// Every file of the corpus of broken files must give the error corpus_expected_errors.tsv names
// (files "bad_*") or parse (files "ok_*"), and never crash. Fuzzer findings join this corpus.
TEST(GgufFile, corpus_of_broken_files_gives_the_expected_errors) {
  const std::filesystem::path corpus = DARKBLOOM_GGUF_CORPUS_DIR;
  ASSERT_TRUE(std::filesystem::is_directory(corpus)) << corpus;
  std::map<std::string, std::string> expected;
  std::ifstream table(corpus.parent_path() / "corpus_expected_errors.tsv");
  for (std::string line; std::getline(table, line);) {
    const size_t tab = line.find('\t');
    if (tab != std::string::npos) expected[line.substr(0, tab)] = line.substr(tab + 1);
  }
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(corpus)) {
    const std::string name = entry.path().filename().string();
    const std::string bytes = file_bytes(entry.path().string());
    auto file = parse_bytes(bytes);
    if (name.rfind("bad_", 0) == 0) {
      ASSERT_FALSE(file) << name << " parsed";
      const auto it = expected.find(name);
      if (it != expected.end()) {
        EXPECT_NE(file.error().message.find(it->second), std::string::npos)
            << name << ": expected '" << it->second << "' in: " << file.error().message;
      }
    } else if (name.rfind("ok_", 0) == 0) {
      EXPECT_TRUE(file) << name << ": " << (file ? "" : file.error().message);
    }
    ++files;
  }
  EXPECT_GE(files, 30);
  EXPECT_GE(expected.size(), 25u);
}

}  // namespace
}  // namespace darkbloom::engine
