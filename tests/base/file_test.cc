#include "base/file.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include <unistd.h>

namespace darkbloom {
namespace {

TEST(File, missing_file_is_not_found_with_its_path) {
  auto mapped = MappedFile::open("/nonexistent/darkbloom-test");
  ASSERT_FALSE(mapped);
  EXPECT_EQ(mapped.error().code, Errc::not_found);
  EXPECT_NE(mapped.error().message.find("/nonexistent/darkbloom-test"), std::string::npos);
}

TEST(File, directory_is_rejected) {
  auto mapped = MappedFile::open(std::filesystem::temp_directory_path().string());
  ASSERT_FALSE(mapped);
  EXPECT_NE(mapped.error().message.find("not a regular file"), std::string::npos);
}

TEST(File, written_bytes_map_back_identically) {
  const auto path =
      (std::filesystem::temp_directory_path() / ("darkbloom-file-test-" + std::to_string(::getpid()))).string();
  const std::string contents("binary\0bytes\xFF", 13);
  ASSERT_TRUE(write_file(path, contents));
  auto mapped = MappedFile::open(path);
  ASSERT_TRUE(mapped);
  ASSERT_EQ(mapped->size(), contents.size());
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(mapped->data()), mapped->size()), contents);
  auto read = read_file(path);
  ASSERT_TRUE(read);
  EXPECT_EQ(*read, contents);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace darkbloom
