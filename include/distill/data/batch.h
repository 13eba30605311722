// What the trainer and the evaluator see of the data: batches, handed over by a batch source that can say
// where any example of any epoch is, so that a resumed run (or another rank) continues at any position.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "distill/data/io_shape.h"
#include "distill/io/metadata.h"
#include "distill/loss/kd_loss.h"

namespace distill {

struct Batch {
  at::Tensor student_input;  // [B, F] float32 rows, or [B, T] int64 tokens
  at::Tensor teacher_input;  // what the teacher sees (its own normalisation); often the same tensor
  at::Tensor targets;        // [B] or [B, T] int64; ignore_index marks positions that count nowhere
  SparseTeacher sparse_teacher;  // a cached teacher's top-k (index undefined: none)
  int64_t examples = 0;          // B
  int64_t valid_targets = 0;     // targets that are not ignore_index: this batch's share of the normaliser
  at::Tensor example_ids;        // [B] int64: each example's index in the source's own order (file order): the
                                 // key of a teacher cache, the same whatever the seed, epoch or batch size
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Examples in one pass (an epoch).
  virtual int64_t size() const = 0;
  // Examples [begin, end) of `epoch` in the run's order. The order depends on the seed and the epoch only, so
  // that any range may be asked for in any order (a resumed run, each rank its own part of a step).
  virtual Batch batch(int64_t epoch, int64_t begin, int64_t end) const = 0;
  // Examples [begin, end) of the source's own order (file order, no shuffle): what a teacher cache is made from.
  virtual Batch examples(int64_t begin, int64_t end) const = 0;
  // "1437 rows of data/digits.csv.gz", for logs.
  virtual std::string describe() const = 0;
};

// An opened dataset: what the trainer, the evaluator and `distill validate` need of it.
struct DataSources {
  std::unique_ptr<BatchSource> train, val;
  IoShape io;
  Metadata student_metadata;         // stored with the student (e.g. the CSV normalisation)
  std::vector<std::string> summary;  // `distill validate` lines
  // Token data: the tokenizer its ids come from, when the data knows it (a pack manifest, data.tokenizer),
  // to be checked against a model's own tokenizer. Hex SHA-256 of the tokenizer file, and that file.
  std::optional<std::string> tokenizer_sha256;
  std::string tokenizer_path;
  // Lets the format adapt the teacher's inputs to what the teacher was trained on (its weights' metadata,
  // named by `origin`): a CSV normalisation of its own. Unset: the teacher sees the student's inputs.
  std::function<void(const Metadata& teacher_metadata, const std::string& origin)> fit_teacher;
};

}  // namespace distill
