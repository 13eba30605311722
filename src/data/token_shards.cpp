// Token shards and masks (include/distill/data/token_shards.h): checked views of mapped files, their
// writers, glob expansion, and the per-index permutation of training windows. Torch-free.
#include "distill/data/token_shards.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "token shards are read in place: a little-endian host is assumed");

namespace distill {

namespace {

int32_t header_int(const uint8_t* data, size_t i) {
  int32_t v;
  std::memcpy(&v, data + 4 * i, 4);
  return v;
}

std::string n(int64_t v) { return std::to_string(v); }

const char* width_name(int width) { return width == 2 ? "uint16" : "uint32"; }

// The checks both file kinds share: the header is there, the magic and the version are known, the size
// matches the count. Returns the count.
int64_t check_header(const uint8_t* data, size_t size, const std::string& name, int32_t magic, const char* kind,
                     const std::string& fix, int* width_out) {
  if (size < kTokenHeaderBytes)
    throw Error(name + ": " + n(static_cast<int64_t>(size)) + " bytes, shorter than the 1024-byte header of a " + kind +
                "; the file is truncated or is not a " + kind + " (" + fix + ")");
  const int32_t found_magic = header_int(data, 0);
  if (found_magic != magic) {
    std::string hint = magic == kTokenShardMagic && found_magic == kTokenMaskMagic
                           ? "; this is a mask file: name the .bin shards in data.path, their .mask files are found beside them"
                           : "; " + fix;
    throw Error(name + ": magic number " + n(found_magic) + " at byte 0, expected " + n(magic) + ": not a " + kind + hint);
  }
  const int32_t version = header_int(data, 1);
  int width = 0;
  if (magic == kTokenShardMagic) width = version == 1 ? 2 : version == 2 ? 4 : 0;
  else width = version == 1 ? 1 : 0;
  if (width == 0)
    throw Error(name + ": " + kind + " version " + n(version) + " (header int 1, byte 4) is not supported; " +
                (magic == kTokenShardMagic ? "1 = uint16 tokens, 2 = uint32 tokens" : "1 = one byte per token") +
                " (" + fix + ")");
  const int64_t count = header_int(data, 2);
  if (count < 0)
    throw Error(name + ": the header's token count (int 2, byte 8) is " + n(count) + ", negative; the file is corrupt (" +
                fix + ")");
  const int64_t payload = static_cast<int64_t>(size - kTokenHeaderBytes);
  const int64_t expected = count * width;
  if (payload != expected) {
    std::string unit = magic == kTokenShardMagic ? std::string(width_name(width)) + " tokens" : "mask bytes";
    std::string what = payload < expected ? "the file is truncated" : "the file has bytes after them";
    if (payload % width != 0) what += " (" + n(payload) + " bytes after the header is not a whole number of " + unit + ")";
    throw Error(name + ": " + n(static_cast<int64_t>(size)) + " bytes, but its header says " + n(count) + " " + unit +
                " (1024 + " + n(expected) + " = " + n(1024 + expected) + " bytes): " + what + " (" + fix + ")");
  }
  *width_out = width;
  return count;
}

std::string errno_text() { return std::strerror(errno); }

bool has_glob_chars(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

}  // namespace

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + errno_text() + ")");
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = errno_text();
    ::close(fd);
    throw Error(path + ": cannot read its size (" + why + ")");
  }
  if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": is a folder, not a file");
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      throw Error(path + ": cannot map it into memory (" + why + ")");
    }
    data_ = static_cast<const uint8_t*>(p);
  }
  ::close(fd);  // the mapping stays valid
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<uint8_t*>(data_), size_);
}

TokenShardView parse_token_shard(const uint8_t* data, size_t size, const std::string& name, int64_t vocab_limit) {
  const std::string fix = "write token shards with `distill data pack`, or llm.c's dev/data scripts";
  TokenShardView v;
  v.count = check_header(data, size, name, kTokenShardMagic, "token shard (llm.c .bin)", fix, &v.width);
  if (v.count == 0) throw Error(name + ": the shard holds no tokens (its header's count is 0); remove it from the data");
  v.tokens = data + kTokenHeaderBytes;
  // One pass over every id: the largest, and the first at or above the limit.
  uint32_t max_id = 0;
  const uint32_t limit = vocab_limit > 0 && vocab_limit <= INT64_C(0xFFFFFFFF) ? static_cast<uint32_t>(vocab_limit) : 0;
  auto scan = [&](auto zero) {
    using Id = decltype(zero);
    auto id_at = [&](int64_t i) {
      Id id;
      std::memcpy(&id, v.tokens + i * static_cast<int64_t>(sizeof(Id)), sizeof(Id));  // no alignment assumed
      return static_cast<uint32_t>(id);
    };
    for (int64_t i = 0; i < v.count; ++i) max_id = std::max(max_id, id_at(i));
    if (limit == 0 || max_id < limit) return;
    for (int64_t i = 0; i < v.count; ++i)
      if (id_at(i) >= limit)
        throw Error(name + ": token " + n(id_at(i)) + " at index " + n(i) + " (byte offset " +
                    n(static_cast<int64_t>(kTokenHeaderBytes) + i * v.width) + ") is not below the vocabulary size " +
                    n(vocab_limit) + "; the shard was tokenized with another tokenizer, or set data.vocab_size to "
                    "the model's vocabulary");
  };
  if (v.width == 2) scan(uint16_t{0});
  else scan(uint32_t{0});
  if (max_id > static_cast<uint32_t>(INT32_MAX))
    throw Error(name + ": holds token id " + n(max_id) + ", beyond any vocabulary (ids must be below 2^31); the file "
                "is corrupt");
  v.max_token = max_id;
  return v;
}

const uint8_t* parse_token_mask(const uint8_t* data, size_t size, const std::string& name, int64_t shard_count,
                                const std::string& shard_name) {
  const std::string fix =
      "re-create the shard and its mask with `distill data pack`, or delete the mask to train on every token";
  int width = 0;
  if (size >= kTokenHeaderBytes && header_int(data, 0) == kTokenMaskMagic && header_int(data, 1) == 1 &&
      header_int(data, 2) >= 0 && header_int(data, 2) != shard_count)
    throw Error(name + ": a mask of " + n(header_int(data, 2)) + " tokens, but its shard " + shard_name + " has " +
                n(shard_count) + " tokens; they do not belong together (" + fix + ")");
  check_header(data, size, name, kTokenMaskMagic, "token mask file", fix, &width);
  const uint8_t* mask = data + kTokenHeaderBytes;
  for (int64_t i = 0; i < shard_count; ++i)
    if (mask[i] > 1)
      throw Error(name + ": byte " + n(mask[i]) + " for token " + n(i) + " (byte offset " +
                  n(static_cast<int64_t>(kTokenHeaderBytes) + i) + ") is neither 0 (not a target) nor 1 (a target); " + fix);
  return mask;
}

std::string token_mask_path(const std::string& shard_path) {
  const std::string file = paths::filename(shard_path);
  const size_t dot = file.rfind('.');
  const std::string stem = dot == std::string::npos || dot == 0 ? file : file.substr(0, dot);
  return paths::join(paths::parent(shard_path), stem + ".mask");
}

TokenShard open_token_shard(const std::string& path, int64_t vocab_limit) {
  TokenShard s;
  s.path = path;
  s.file = std::make_shared<MappedFile>(path);
  s.view = parse_token_shard(s.file->data(), s.file->size(), path, vocab_limit);
  const std::string mask_path = token_mask_path(path);
  if (mask_path != path && paths::is_regular_file(mask_path)) {
    s.mask_path = mask_path;
    s.mask_file = std::make_shared<MappedFile>(mask_path);
    s.mask = parse_token_mask(s.mask_file->data(), s.mask_file->size(), mask_path, s.view.count, path);
  }
  return s;
}

std::string token_header(int32_t magic, int32_t version, int64_t count) {
  if (count < 0 || count > INT32_MAX)
    throw Error("a token shard holds at most 2^31 - 1 tokens (its header's count is an int32), got " + n(count));
  std::string header(kTokenHeaderBytes, '\0');
  const int32_t ints[3] = {magic, version, static_cast<int32_t>(count)};
  std::memcpy(header.data(), ints, sizeof ints);
  return header;
}

void write_token_shard(const std::string& path, const std::vector<uint32_t>& ids, int width) {
  if (width != 2 && width != 4) throw Error(path + ": token width must be 2 or 4 bytes, got " + n(width));
  AtomicFile file(path);
  file.write(token_header(kTokenShardMagic, width == 2 ? 1 : 2, static_cast<int64_t>(ids.size())));
  if (width == 4) {
    file.write(ids.data(), ids.size() * 4);
  } else {
    std::vector<uint16_t> chunk;
    for (size_t begin = 0; begin < ids.size(); begin += size_t{1} << 20) {
      const size_t end = std::min(ids.size(), begin + (size_t{1} << 20));
      chunk.resize(end - begin);
      for (size_t i = begin; i < end; ++i) {
        if (ids[i] > 0xFFFF)
          throw Error(path + ": token " + n(ids[i]) + " does not fit a uint16 shard; write uint32 tokens (version 2)");
        chunk[i - begin] = static_cast<uint16_t>(ids[i]);
      }
      file.write(chunk.data(), chunk.size() * 2);
    }
  }
  file.commit();
}

void write_token_mask(const std::string& path, const std::vector<uint8_t>& mask) {
  AtomicFile file(path);
  file.write(token_header(kTokenMaskMagic, 1, static_cast<int64_t>(mask.size())));
  file.write(mask.data(), mask.size());
  file.commit();
}

TokenSegment TokenSegment::packed(std::string name, TokenShardView view, const uint8_t* mask, int64_t seq_len,
                                  std::shared_ptr<const void> owner) {
  TokenSegment s{std::move(name), view, mask, seq_len, 0, std::move(owner)};
  s.windows = seq_len > 0 && view.count > seq_len ? (view.count - 1) / seq_len : 0;
  return s;
}

TokenSegment TokenSegment::padded(std::string name, TokenShardView view, const uint8_t* mask, int64_t seq_len,
                                  std::shared_ptr<const void> owner) {
  TokenSegment s{std::move(name), view, mask, seq_len + 1, 0, std::move(owner)};
  s.windows = seq_len > 0 ? view.count / (seq_len + 1) : 0;
  return s;
}

TokenWindows::TokenWindows(std::vector<TokenSegment> segments, int64_t seq_len)
    : segments_(std::move(segments)), seq_len_(seq_len) {
  if (seq_len <= 0) throw Error("token windows need seq_len > 0, got " + n(seq_len));
  for (const TokenSegment& s : segments_) {
    if (s.windows > 0 && (s.windows - 1) * s.stride + seq_len + 1 > s.view.count)
      throw Error(s.name + ": " + n(s.windows) + " windows of " + n(seq_len + 1) + " tokens every " + n(s.stride) +
                  " do not fit in its " + n(s.view.count) + " tokens");
    first_window_.push_back(total_windows_);
    total_windows_ += s.windows;
  }
  first_window_.push_back(total_windows_);
}

int64_t TokenWindows::tokens() const {
  int64_t total = 0;
  for (const TokenSegment& s : segments_) total += s.view.count;
  return total;
}

std::pair<size_t, int64_t> TokenWindows::locate(int64_t w) const {
  if (w < 0 || w >= total_windows_) throw Error("window " + n(w) + " is outside [0, " + n(total_windows_) + ")");
  // The last segment whose first window is <= w; segments without windows share their successor's first.
  const auto it = std::upper_bound(first_window_.begin(), first_window_.end() - 1, w);
  const size_t seg = static_cast<size_t>(it - first_window_.begin()) - 1;
  return {seg, (w - first_window_[seg]) * segments_[seg].stride};
}

int64_t TokenWindows::fill(int64_t w, int64_t* inputs, int64_t* targets, int64_t ignore_index) const {
  const auto [seg, start] = locate(w);
  const TokenSegment& s = segments_[seg];
  const int64_t t = seq_len_;
  if (s.view.width == 2) {
    const uint8_t* p = s.view.tokens + start * 2;
    for (int64_t i = 0; i <= t; ++i) {
      uint16_t id;
      std::memcpy(&id, p + i * 2, 2);
      if (i < t) inputs[i] = id;
      if (i > 0) targets[i - 1] = id;
    }
  } else {
    const uint8_t* p = s.view.tokens + start * 4;
    for (int64_t i = 0; i <= t; ++i) {
      uint32_t id;
      std::memcpy(&id, p + i * 4, 4);
      if (i < t) inputs[i] = id;
      if (i > 0) targets[i - 1] = id;
    }
  }
  if (!s.mask) return t;
  int64_t valid = 0;
  const uint8_t* m = s.mask + start + 1;  // the mask of target i is that of token i + 1
  for (int64_t i = 0; i < t; ++i) {
    if (m[i]) ++valid;
    else targets[i] = ignore_index;
  }
  return valid;
}

std::vector<std::string> expand_token_paths(const std::vector<std::string>& patterns, const std::string& key) {
  std::vector<std::string> out;
  for (const std::string& pattern : patterns) {
    // A name that exists is taken as it is, even with glob characters in it.
    if (paths::exists(pattern) || !has_glob_chars(pattern)) {
      if (!paths::exists(pattern))
        throw Error(key + ": " + pattern + ": no such file; check the path (relative paths are relative to the config file)");
      out.push_back(pattern);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(pattern.c_str(), GLOB_NOSORT, nullptr, &g);
    std::vector<std::string> matches;
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    if (rc == GLOB_NOSPACE) throw Error(key + ": " + pattern + ": out of memory expanding the glob");
    if (rc == GLOB_ABORTED) throw Error(key + ": " + pattern + ": a folder of the glob cannot be read; check its permissions");
    if (matches.empty())
      throw Error(key + ": the glob " + pattern + " matches no file; check the folder and the pattern (relative paths "
                  "are relative to the config file)");
    std::sort(matches.begin(), matches.end());
    out.insert(out.end(), matches.begin(), matches.end());
  }
  return out;
}

IndexPermutation::IndexPermutation(uint64_t n, uint64_t key) : n_(n), key_(splitmix64(key)) {
  int bits = 2;
  while (bits < 64 && (uint64_t{1} << bits) < n) ++bits;
  if (bits % 2) ++bits;
  half_bits_ = bits / 2;
  half_mask_ = (uint64_t{1} << half_bits_) - 1;
}

uint64_t IndexPermutation::round(uint64_t half, int r) const {
  return splitmix64(key_ ^ splitmix64(half + (static_cast<uint64_t>(r) << 56))) & half_mask_;
}

uint64_t IndexPermutation::operator()(uint64_t i) const {
  if (n_ <= 1) return i;
  uint64_t x = i;
  do {
    uint64_t left = x >> half_bits_, right = x & half_mask_;
    for (int r = 0; r < 6; ++r) {
      const uint64_t next = left ^ round(right, r);
      left = right;
      right = next;
    }
    x = (left << half_bits_) | right;
  } while (x >= n_);  // at most 4x the domain: a few steps on average
  return x;
}

uint64_t epoch_permutation_key(int64_t seed, int64_t epoch) {
  return splitmix64(splitmix64(static_cast<uint64_t>(seed)) ^ (static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ull));
}

}  // namespace distill
