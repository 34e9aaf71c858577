#include "crypto/merkle.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "base/file.h"

namespace darkbloom::crypto {
namespace {

constexpr uint8_t kLeafPrefix = 0x00;
constexpr uint8_t kNodePrefix = 0x01;

// SHA-256 through OpenSSL, which uses the CPU's SHA extensions where there are some (about 5x
// libsodium's portable code here: the whole file goes through it).
class Sha256Stream {
 public:
  Sha256Stream() : context_(EVP_MD_CTX_new(), &EVP_MD_CTX_free) {
    if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1) {
      throw std::runtime_error("SHA-256: OpenSSL cannot start a digest");
    }
  }
  void update(const void* data, size_t size) {
    if (size > 0 && EVP_DigestUpdate(context_.get(), data, size) != 1) throw std::runtime_error("SHA-256 update");
  }
  Sha256 finish() {
    Sha256 digest;
    unsigned int length = 0;
    if (EVP_DigestFinal_ex(context_.get(), digest.data(), &length) != 1 || length != digest.size()) {
      throw std::runtime_error("SHA-256 final");
    }
    return digest;
  }

 private:
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> context_;
};

}  // namespace

uint64_t merkle_chunk_count(uint64_t size) {
  return size == 0 ? 1 : size / kMerkleChunkBytes + (size % kMerkleChunkBytes != 0 ? 1 : 0);
}

Sha256 merkle_leaf(std::span<const uint8_t> chunk) {
  Sha256Stream stream;
  stream.update(&kLeafPrefix, 1);
  stream.update(chunk.data(), chunk.size());
  return stream.finish();
}

Sha256 merkle_node(const Sha256& left, const Sha256& right) {
  Sha256Stream stream;
  stream.update(&kNodePrefix, 1);
  stream.update(left.data(), left.size());
  stream.update(right.data(), right.size());
  return stream.finish();
}

MerkleTree MerkleTree::from_leaves(std::vector<Sha256> leaves, uint64_t size) {
  if (leaves.empty()) throw std::invalid_argument("a Merkle tree needs at least one leaf");
  MerkleTree tree;
  tree.size_ = size;
  tree.levels_.push_back(std::move(leaves));
  while (tree.levels_.back().size() > 1) {
    const std::vector<Sha256>& below = tree.levels_.back();
    std::vector<Sha256> level;
    level.reserve((below.size() + 1) / 2);
    for (size_t i = 0; i + 1 < below.size(); i += 2) level.push_back(merkle_node(below[i], below[i + 1]));
    if (below.size() % 2 == 1) level.push_back(below.back());
    tree.levels_.push_back(std::move(level));
  }
  return tree;
}

std::vector<Sha256> MerkleTree::path(uint64_t index) const {
  if (index >= chunk_count()) throw std::out_of_range("Merkle path: chunk index past the end");
  std::vector<Sha256> siblings;
  for (size_t l = 0; l + 1 < levels_.size(); ++l) {
    const std::vector<Sha256>& level = levels_[l];
    const uint64_t sibling = index ^ 1;
    if (sibling < level.size()) siblings.push_back(level[sibling]);
    index /= 2;
  }
  return siblings;
}

Result<MerkleTree> merkle_tree_of_file(const std::string& path,
                                       const std::function<void(uint64_t done, uint64_t total)>& progress,
                                       Sha256* file_hash) {
  std::error_code size_error;
  const uint64_t size = std::filesystem::file_size(path, size_error);
  if (size_error) {
    return make_error(size_error == std::errc::no_such_file_or_directory ? Errc::not_found : Errc::io_error,
                      path + ": " + size_error.message());
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) {
    const int error = errno;
    return make_error(error == ENOENT ? Errc::not_found : Errc::io_error, path + ": " + errno_message(error));
  }
  const uint64_t chunks = merkle_chunk_count(size);
  std::vector<Sha256> leaves;
  leaves.reserve(chunks);
  std::vector<uint8_t> buffer(kMerkleChunkBytes);
  Sha256Stream whole;
  uint64_t done = 0;
  for (uint64_t c = 0; c < chunks; ++c) {
    const size_t want = static_cast<size_t>(std::min(kMerkleChunkBytes, size - done));
    errno = 0;
    const size_t got = std::fread(buffer.data(), 1, want, file.get());
    if (got != want) {
      const int error = errno;
      if (std::ferror(file.get())) return make_error(Errc::io_error, path + ": read failed: " + errno_message(error));
      return make_error(Errc::io_error, path + ": the file shrank while it was read");
    }
    leaves.push_back(merkle_leaf(std::span<const uint8_t>(buffer.data(), got)));
    if (file_hash) whole.update(buffer.data(), got);
    done += got;
    if (progress) progress(done, size);
  }
  // A file that grew while it was read would give a root for bytes that are no longer all of it.
  if (std::fgetc(file.get()) != EOF) return make_error(Errc::io_error, path + ": the file grew while it was read");
  if (std::ferror(file.get())) return make_error(Errc::io_error, path + ": read failed");
  if (file_hash) *file_hash = whole.finish();
  return MerkleTree::from_leaves(std::move(leaves), size);
}

Result<std::vector<uint8_t>> read_merkle_chunk(const std::string& path, uint64_t size, uint64_t index) {
  if (index >= merkle_chunk_count(size)) {
    return make_error(Errc::out_of_range, "chunk " + std::to_string(index) + " is past the end of " + path);
  }
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) return make_error(Errc::io_error, path + ": " + errno_message(errno));
  if (::fseeko(file.get(), 0, SEEK_END) != 0 || static_cast<uint64_t>(::ftello(file.get())) != size) {
    return make_error(Errc::io_error, path + ": the file is no longer " + std::to_string(size) + " bytes long");
  }
  const uint64_t offset = index * kMerkleChunkBytes;
  std::vector<uint8_t> chunk(static_cast<size_t>(std::min(kMerkleChunkBytes, size - offset)));
  if (::fseeko(file.get(), static_cast<off_t>(offset), SEEK_SET) != 0 ||
      std::fread(chunk.data(), 1, chunk.size(), file.get()) != chunk.size()) {
    return make_error(Errc::io_error, path + ": cannot read chunk " + std::to_string(index));
  }
  return chunk;
}

bool verify_merkle_path(const Sha256& root, uint64_t chunk_count, uint64_t index, const Sha256& leaf,
                        std::span<const Sha256> path) {
  if (chunk_count == 0 || chunk_count > (uint64_t{1} << 44) || index >= chunk_count) return false;
  Sha256 node = leaf;
  size_t used = 0;
  for (uint64_t width = chunk_count; width > 1; width = (width + 1) / 2) {
    const uint64_t sibling = index ^ 1;
    if (sibling < width) {
      if (used == path.size()) return false;
      node = (index % 2 == 0) ? merkle_node(node, path[used]) : merkle_node(path[used], node);
      ++used;
    }
    index /= 2;
  }
  return used == path.size() && equal_constant_time(node, root);
}

bool verify_merkle_chunk(const Sha256& root, uint64_t size, uint64_t index, std::span<const uint8_t> chunk,
                         std::span<const Sha256> path) {
  const uint64_t chunks = merkle_chunk_count(size);
  if (index >= chunks) return false;
  const uint64_t expected = index + 1 < chunks ? kMerkleChunkBytes : size - index * kMerkleChunkBytes;
  if (chunk.size() != expected) return false;
  return verify_merkle_path(root, chunks, index, merkle_leaf(chunk), path);
}

}  // namespace darkbloom::crypto
