#include "base/file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace darkbloom {
namespace {

Errc errc_from_errno(int error_number) {
  switch (error_number) {
    case ENOENT:
      return Errc::not_found;
    case EISDIR:
      return Errc::invalid_argument;
    default:
      return Errc::io_error;
  }
}

}  // namespace

std::string errno_message(int error_number) {
  char buffer[256];
  // GNU strerror_r returns the message pointer (which may not be `buffer`).
  return strerror_r(error_number, buffer, sizeof buffer);
}

Result<MappedFile> MappedFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int e = errno;
    return make_error(errc_from_errno(e), path + ": " + errno_message(e));
  }
  struct stat info {};
  if (fstat(fd, &info) != 0) {
    const int e = errno;
    ::close(fd);
    return make_error(Errc::io_error, path + ": " + errno_message(e));
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return make_error(Errc::invalid_argument, path + ": not a regular file");
  }
  MappedFile file;
  file.path_ = path;
  file.size_ = static_cast<size_t>(info.st_size);
  if (file.size_ > 0) {
    void* mapped = mmap(nullptr, file.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (mapped == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      return make_error(Errc::io_error, path + ": cannot map: " + errno_message(e));
    }
    file.data_ = static_cast<const uint8_t*>(mapped);
  }
  ::close(fd);
  return file;
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(other.data_), size_(other.size_), path_(std::move(other.path_)) {
  other.data_ = nullptr;
  other.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    size_ = other.size_;
    path_ = std::move(other.path_);
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

MappedFile::~MappedFile() {
  reset();
}

void MappedFile::reset() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
  data_ = nullptr;
  size_ = 0;
}

Result<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int e = errno;
    return make_error(errc_from_errno(e), path + ": " + errno_message(e));
  }
  std::ostringstream contents;
  contents << in.rdbuf();
  if (in.bad()) return make_error(Errc::io_error, path + ": read failed");
  return contents.str();
}

Status write_file(const std::string& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    const int e = errno;
    return make_error(errc_from_errno(e), path + ": " + errno_message(e));
  }
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.flush();
  if (!out) return make_error(Errc::io_error, path + ": write failed");
  return {};
}

}  // namespace darkbloom
