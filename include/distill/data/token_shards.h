// Token shards: llm.c's .bin files and distill's loss-mask companions, read through mmap, and the order in
// which training visits their windows. Torch-free (fuzzed: fuzz/token_shard_fuzz.cpp).
//
// Shard (llm.c, dev/data/data_common.py):  bytes [0, 1024): 256 little-endian int32
//   header[0] = 20240520 (magic), header[1] = 1 (uint16 tokens) | 2 (uint32 tokens), header[2] = token count,
//   the rest 0; then the tokens, little-endian, and nothing after them (size = 1024 + count * width).
// Mask (distill; beside the shard, same stem, ".mask" instead of ".bin"):  the same 1024-byte header with
//   header[0] = 20261203, header[1] = 1 (one byte per token), header[2] = token count (equal to its shard's);
//   then one byte per token: 1 = this token counts as a target, 0 = it does not (a prompt, padding).
//
// Windows: training example k of a shard is its tokens [k * seq_len, k * seq_len + seq_len + 1): inputs are
// the first seq_len, next-token targets the last seq_len. Windows never cross a shard's end, so a shard of n
// tokens holds (n - 1) / seq_len of them (llm.c's loader steps the same way, B * T tokens at a time).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace distill {

constexpr int32_t kTokenShardMagic = 20240520;
constexpr int32_t kTokenMaskMagic = 20261203;
constexpr size_t kTokenHeaderInts = 256;
constexpr size_t kTokenHeaderBytes = kTokenHeaderInts * 4;

// A read-only mapping of a whole file (empty files map to nothing). Movable, not copyable.
class MappedFile {
 public:
  // Throws distill::Error naming the file when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// A shard's tokens, viewed in place (the bytes belong to a MappedFile or another owner).
struct TokenShardView {
  const uint8_t* tokens = nullptr;  // count * width bytes, little-endian
  int64_t count = 0;
  int width = 2;          // bytes per token: 2 (version 1) or 4 (version 2)
  int64_t max_token = -1; // the largest id (-1: no tokens)
  uint32_t token(int64_t i) const {
    const uint8_t* p = tokens + i * width;
    return width == 2 ? static_cast<uint32_t>(p[0] | (p[1] << 8))
                      : static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 |
                            static_cast<uint32_t>(p[2]) << 16 | static_cast<uint32_t>(p[3]) << 24;
  }
};

// Checks a shard's bytes and views its tokens. `name` stands for the file in messages. vocab_limit > 0: every
// id must be below it (the error names the token's index and byte offset). Every malformed input (short,
// truncated, trailing bytes, wrong magic, unknown version, empty, an id at or above the limit) is a
// distill::Error with one line saying what is wrong and how to fix it.
TokenShardView parse_token_shard(const uint8_t* data, size_t size, const std::string& name, int64_t vocab_limit = 0);
// Checks a mask file's bytes against its shard's token count; returns its per-token bytes (each 0 or 1).
const uint8_t* parse_token_mask(const uint8_t* data, size_t size, const std::string& name, int64_t shard_count,
                                const std::string& shard_name);

// An opened shard: the mapping, the checked view and its optional mask.
struct TokenShard {
  std::string path, mask_path;  // mask_path empty: no mask
  std::shared_ptr<MappedFile> file, mask_file;
  TokenShardView view;
  const uint8_t* mask = nullptr;  // view.count bytes, or null
};
// Maps and checks `path`, and "<stem>.mask" beside it when that file exists.
TokenShard open_token_shard(const std::string& path, int64_t vocab_limit = 0);
// The companion mask path of a shard: "a/train_000000.bin" -> "a/train_000000.mask".
std::string token_mask_path(const std::string& shard_path);

// The 1024-byte header of a shard (magic 20240520, version 1 or 2) or a mask (magic 20261203, version 1).
std::string token_header(int32_t magic, int32_t version, int64_t count);
// Writes a shard atomically (include/distill/io/atomic_file.h): uint16 ids when width is 2 (every id must
// then be below 65536), else uint32.
void write_token_shard(const std::string& path, const std::vector<uint32_t>& ids, int width);
// Writes a mask file atomically: one byte (0 or 1) per token of its shard.
void write_token_mask(const std::string& path, const std::vector<uint8_t>& mask);

// A run of tokens served as windows: a mapped shard, or tokens held in memory (data.format "jsonl").
struct TokenSegment {
  std::string name;               // the file, for messages and summaries
  TokenShardView view;
  const uint8_t* mask = nullptr;  // view.count bytes (0: that token is no target), or null: every token is one
  int64_t stride = 0;             // window k starts at token k * stride
  int64_t windows = 0;
  std::shared_ptr<const void> owner;  // keeps the bytes alive (a MappedFile, a vector)

  // Packed: windows of seq_len + 1 tokens every seq_len tokens, as long as they fit: (count - 1) / seq_len.
  static TokenSegment packed(std::string name, TokenShardView view, const uint8_t* mask, int64_t seq_len,
                             std::shared_ptr<const void> owner);
  // Padded: `view` holds whole examples of seq_len + 1 tokens each, back to back: count / (seq_len + 1).
  static TokenSegment padded(std::string name, TokenShardView view, const uint8_t* mask, int64_t seq_len,
                             std::shared_ptr<const void> owner);
};

// The windows of a list of segments, numbered in order: window w of the whole list is window w - first of
// the segment that holds it.
class TokenWindows {
 public:
  TokenWindows(std::vector<TokenSegment> segments, int64_t seq_len);
  int64_t size() const { return total_windows_; }
  int64_t seq_len() const { return seq_len_; }
  int64_t tokens() const;  // in all segments
  const std::vector<TokenSegment>& segments() const { return segments_; }
  // The segment of window w and the offset of its first token in it.
  std::pair<size_t, int64_t> locate(int64_t w) const;
  // Writes window w's inputs (its first seq_len tokens) and next-token targets (its last seq_len tokens) as
  // int64; a target whose mask byte is 0 becomes ignore_index. Returns the number of valid targets.
  int64_t fill(int64_t w, int64_t* inputs, int64_t* targets, int64_t ignore_index) const;

 private:
  std::vector<TokenSegment> segments_;
  std::vector<int64_t> first_window_;  // per segment; plus the total at the end
  int64_t seq_len_ = 0, total_windows_ = 0;
};

// `patterns` (files or globs, each expanded with glob(3) and sorted) as a list of files, in order. A glob
// that matches nothing, or a file that does not exist, is an error naming `key` and the pattern.
std::vector<std::string> expand_token_paths(const std::vector<std::string>& patterns, const std::string& key);

// A seeded permutation of [0, n), evaluated one index at a time in O(1) time and memory: a balanced Feistel
// network over the smallest even number of bits that holds n, cycle-walked back into [0, n) (each step
// is a bijection of the larger domain, so the walk from an index in range returns into range). The same
// (n, key) gives the same order on every platform.
class IndexPermutation {
 public:
  IndexPermutation(uint64_t n, uint64_t key);
  uint64_t operator()(uint64_t i) const;
  uint64_t size() const { return n_; }

 private:
  uint64_t round(uint64_t half, int r) const;
  uint64_t n_, key_;
  int half_bits_ = 0;
  uint64_t half_mask_ = 0;
};

// The permutation key of one epoch of a run: a mix of run.seed and the epoch.
uint64_t epoch_permutation_key(int64_t seed, int64_t epoch);

}  // namespace distill
