// The teacher cache on disk: for every example of a dataset, for every position of it, the teacher's k most
// probable token ids (or classes), their log-probabilities at the cache's temperature, and the exact
// probability mass outside them. Torch-free (fuzzed: fuzz/teacher_cache_fuzz.cpp).
//
// A cache is a folder:
//   manifest.json  what was cached, from what (teacher, tokenizer, data, temperature, k) and whether it is
//                  complete; written first with "complete": false, rewritten atomically when the last chunk
//                  is in. A reader refuses an incomplete cache.
//   chunks.bin     zstd frames, one per chunk of `chunk_examples` consecutive examples (the last may be
//                  shorter), appended in order. Each frame carries zstd's content checksum.
//   index.bin      "DTCINDEX" then one entry per chunk: u64 offset in chunks.bin, u64 compressed bytes,
//                  u64 FNV-1a 64 of the compressed bytes (little-endian). Chunk c holds examples
//                  [c * chunk_examples, ...), so any example is found without a search.
// A killed writer leaves a prefix of complete chunks: the index is appended only after its chunk, so on
// resume the writer keeps the chunks the index names, cuts chunks.bin after the last of them, and goes on.
//
// A chunk, decompressed (little-endian; multi-byte columns are stored byte-plane by byte-plane, which lets
// zstd see the slowly varying high bytes together):
//   header     u32 magic "DTC1", u32 value encoding, i64 first example, i64 examples, i64 positions per
//              example, i64 k, i64 id bytes (2 or 4)
//   u32        input hash of each example (input_hash(): what the teacher saw, checked on every read)
//   float32 (exact: a cache of k = V trains as the live teacher does, to float32 rounding):
//     f32      tail mass of each row (rows = examples x positions): the probability outside the k
//     ids      k per row, most probable first, 2 or 4 bytes each (2 when the vocabulary fits)
//     f32      k log-probabilities per row, in the same order
//   log16 (each probability and tail mass to 0.2%, relative; about half float32's bytes):
//     u16      tail mass of each row as round(-log(m) * 256), 65535 for 0
//     ids      k per row in increasing id order, as differences: the first id, then id_j - id_{j-1} (>= 1),
//              2 or 4 bytes each (a set of k ids is cheaper to store than the same ids in probability order)
//     u16      k per row, beside the ids: round(-logprob * 256), clamped to 65535
//   Decoded, every row is most probable first (ties: the smaller id first), whatever its encoding.
// A chunk whose rows do not all hold k entries (imported API logprobs: fewer returned than asked, positions
// without any) has the magic "DTC2" and, after the input hashes, the count of each row (id bytes wide); the
// id and value columns then hold only the entries present, row after row. Decoded, such a row's absent
// entries come last, as id -1 with log-probability -inf, and its tail mass is the probability outside the
// entries present (1 for a row without entries).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distill::cache {

enum class ValueEncoding : uint32_t { float32 = 0, log16 = 1 };
ValueEncoding value_encoding_named(const std::string& name, const std::string& key);
std::string value_encoding_name(ValueEncoding e);

constexpr double kLog16Scale = 256.0;  // log16 steps per nat
// The most a chunk may hold decompressed: what a reader allocates for one, so a damaged or hostile frame
// header cannot ask for more. The writer keeps its chunks below it.
constexpr int64_t kMaxChunkRawBytes = int64_t{256} << 20;
// A chunk's decompressed size.
int64_t chunk_raw_bytes(int64_t examples, int64_t positions, int64_t k, int64_t vocab, ValueEncoding encoding);

// One chunk's rows, decoded.
struct Chunk {
  int64_t first_example = 0, examples = 0, positions = 0, k = 0;
  std::vector<uint32_t> input_hash;  // [examples]
  std::vector<float> tail_mass;      // [examples * positions]
  std::vector<int32_t> ids;          // [rows * k]
  std::vector<float> logprobs;       // [rows * k]
  // Entries present per row (the first counts[r] of its k; the rest are id -1, log-probability -inf); empty
  // when every row holds k.
  std::vector<uint32_t> counts;
  int64_t rows() const { return examples * positions; }
};

// The hash of an example's inputs that a chunk stores: FNV-1a over the bytes, folded to 32 bits.
uint32_t input_hash(const void* data, size_t bytes);
uint64_t fnv1a64(const void* data, size_t bytes);

// Chunk <-> zstd frame. encode_chunk checks the shapes (throws distill::Error); decode_chunk checks
// everything it reads and throws distill::Error naming `where` on any inconsistency (never reads out of bounds).
std::string encode_chunk(const Chunk& chunk, ValueEncoding encoding, int64_t vocab, int compression_level = 3);
Chunk decode_chunk(const void* frame, size_t bytes, int64_t vocab, const std::string& where);

// manifest.json, read and checked (throws distill::Error naming the file and key).
struct Manifest {
  int64_t k = 0, vocab = 0, positions = 0, examples = 0, chunk_examples = 0;
  ValueEncoding encoding = ValueEncoding::float32;
  double temperature = 1.0;
  bool complete = false;
  nlohmann::json raw;  // the whole file: teacher, tokenizer and data identities
  int64_t chunks() const { return chunk_examples > 0 ? (examples + chunk_examples - 1) / chunk_examples : 0; }
};
Manifest read_manifest(const std::string& dir);
Manifest manifest_from_json(const nlohmann::json& j, const std::string& where);

struct IndexEntry {
  uint64_t offset = 0, bytes = 0, checksum = 0;
};
// index.bin's entries; a trailing partial entry (a killed writer) is dropped.
std::vector<IndexEntry> read_index(const std::string& dir);

// Appends chunks to a cache folder: fresh, or continuing an incomplete one with the same manifest.
class Writer {
 public:
  // `manifest` must hold the Manifest keys. An existing folder: a complete cache with the same identity is
  // left alone (done() is true); an incomplete one with the same identity continues after its last indexed
  // chunk; anything else is an error unless `overwrite` (then the folder's cache files are replaced).
  Writer(std::string dir, nlohmann::json manifest, bool overwrite);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  bool done() const { return done_; }
  int64_t next_chunk() const { return static_cast<int64_t>(index_.size()); }
  const Manifest& manifest() const { return manifest_; }
  // Chunk next_chunk(), encoded by encode_chunk. Durable once this returns (data, then its index entry).
  void append(const std::string& frame);
  // After the last chunk: totals into the manifest, "complete": true, atomically.
  void finish(const nlohmann::json& totals);

 private:
  std::string dir_;
  Manifest manifest_;
  std::vector<IndexEntry> index_;
  int data_fd_ = -1, index_fd_ = -1;
  uint64_t data_end_ = 0;
  bool done_ = false;
};

// The fields two manifests must share for one to stand for the other (everything but the totals and
// "complete"); the first that differs as "key: a vs b", or empty.
std::string identity_difference(const nlohmann::json& a, const nlohmann::json& b);

}  // namespace distill::cache
