// Teachers that do not run every step: `distill cache-teacher` runs the config's teacher once over the
// training data and keeps its top-k (files: cache_format.h); `teacher.cache` trains from that folder with the
// sparse loss and no teacher forward, in any order, with any batch size, seed or number of ranks.
//
// What the cache holds per position: the k most probable ids, log p at the cache's temperature T_c (the run's
// loss.temperature when it was made), and the mass outside them. Training hands the loss logits T_c * log p
// and, for loss.topk_tail "tail", the row's log-normaliser log(sum_k p_k / (1 - tail)), so that the k
// probabilities the loss sees plus the stored tail sum to exactly 1 whatever rounding the values took.
// With loss.topk_tail "ignore" any temperature works (the top-k are renormalised); "tail" needs T = T_c.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "distill/cache/cache_format.h"
#include "distill/data/batch.h"

namespace distill {

struct Config;

struct CacheTeacherOptions {
  int64_t topk = 0;                 // 0: 64, or the vocabulary when smaller
  std::string out;                  // empty: teacher.cache, else <run.out_dir>/teacher-cache
  std::string values = "float32";   // float32 | log16
  bool overwrite = false;
  int64_t batch_size = 0;           // teacher forward batch; 0: train.eval_batch_size's rule
  int64_t chunk_examples = 0;       // examples per compressed chunk; 0: about 1 MiB of raw entries
  // --from: build the cache from log-probabilities a server or API returned (cache/logprob_import.h) instead
  // of running the teacher; record i of the file is training example i (records past the training examples,
  // the validation split, are not read). topk 0 then keeps every entry (the most any position holds).
  std::string from;
  double from_temperature = 1.0;    // the temperature the server sampled the log-probabilities at
};

// Runs (or continues) the cache of `config`'s teacher; returns the manifest's totals and where it went.
// Progress lines go to stderr. Throws distill::Error.
nlohmann::json cache_teacher(const Config& config, const CacheTeacherOptions& options);

// The cache built from `options.from` (called by cache_teacher when it is set). Refuses the whole import on the
// first record that does not parse, map or match its training example (no complete cache is written).
nlohmann::json import_teacher_logprobs(const Config& config, const CacheTeacherOptions& options);

// Shared by cache_teacher and import_teacher_logprobs. Examples per chunk: `requested`, or about 1 MiB of raw
// entries when 0; halved until a chunk fits the format's limit (an example that cannot fit is an error).
int64_t cache_chunk_examples(int64_t requested, int64_t examples, int64_t positions, int64_t k, int64_t vocab,
                             cache::ValueEncoding encoding);
// When `writer`'s cache is complete already: says so on stderr and returns its totals (with "out" and
// "already_complete"); otherwise nothing.
std::optional<nlohmann::json> report_if_complete(const cache::Writer& writer, const std::string& out);
// Chunk `index` of a cache of `examples` examples in chunks of `chunk_examples`: its place and shape, no rows.
cache::Chunk chunk_at(int64_t index, int64_t chunk_examples, int64_t examples, int64_t positions, int64_t k);

// Per example of `inputs` ([B, ...]): the hash a cache stores of what the teacher saw.
std::vector<uint32_t> cache_input_hashes(const at::Tensor& inputs);

// `distill bench cache`: every chunk of a complete cache decoded and turned into the loss's inputs, in a
// random order, on one thread; the median of `repeats` passes as positions per second, with the bytes per
// position on disk. The chunks are read into memory first (the disk is not what is timed).
nlohmann::json bench_teacher_cache(const std::string& dir, int64_t repeats);

// A complete cache opened for training: checked against the run's data and loss, chunks decoded on demand
// (a few kept in memory). Thread-safe.
class TeacherCache {
 public:
  // Opens `dir` (teacher.cache) and checks it against the data the run trains on and its loss options.
  TeacherCache(const std::string& dir, const BatchSource& train, const std::string& data_format,
               const std::optional<std::string>& tokenizer_sha256, int64_t student_vocab, int64_t positions,
               const Config& config);
  ~TeacherCache();

  // The sparse teacher of `batch` (rows in the batch's order, [B * positions, k]); checks that each example
  // is the one the teacher saw (input hash).
  SparseTeacher lookup(const Batch& batch) const;

  const cache::Manifest& manifest() const;
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace distill
