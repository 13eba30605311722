// SHA-256 (FIPS 180-4), used as the identity of a file in data manifests (a tokenizer's, a shard's): two
// files with the same digest are taken to be the same file.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace distill {

// Incremental hashing, for data that arrives in pieces.
class Sha256 {
 public:
  Sha256();
  void update(std::string_view bytes);
  std::string hex_digest();  // lower-case hex, 64 characters; the object is spent afterwards

 private:
  void compress(const uint8_t* block);

  uint32_t state_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t total_bytes_ = 0;
};

// The lower-case hex digest of `bytes`.
std::string sha256_hex(std::string_view bytes);
// The digest of a file's contents, read a MiB at a time (weights files need not fit in memory). Throws
// distill::Error naming the file when it cannot be read.
std::string sha256_file(const std::string& path);

}  // namespace distill
