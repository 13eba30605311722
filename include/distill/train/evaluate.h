// Validation: accumulated while streaming over the validation batches (nothing of the whole split is held).
// Over the valid targets (rows of a classifier, next-token positions of a language model): the student's and
// the teacher's top-1 accuracy and cross-entropy (perplexity = exp(ce) for language models), their top-1
// agreement, and the dense KD term of the loss (kd_loss.h, normalised by the valid targets; the dense
// divergence even when training uses loss.topk, so that runs are scored alike).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json_fwd.hpp>

#include "distill/loss/kd_loss.h"

namespace distill {

class BatchSource;
class Model;
struct LossConfig;
struct ModelOutput;

struct EvalResult {
  int64_t examples = 0;  // rows, or sequences
  int64_t targets = 0;   // valid targets scored: rows, or tokens
  bool tokens = false;   // a language model: perplexities and tokens/s are reported
  double student_accuracy = 0;  // top-1 over the valid targets
  double ce_loss = 0;
  bool has_teacher = false;
  double teacher_accuracy = 0;
  double teacher_ce_loss = 0;
  double agreement = 0;  // fraction of valid targets where the student's top-1 equals the teacher's
  double kd_loss = 0;    // 0 without a teacher
  double seconds = 0;    // wall time of the pass
  double student_perplexity() const;
  double teacher_perplexity() const;
  nlohmann::json to_json() const;
};

// One line for logs and the CLI: "val accuracy 96.66% (teacher 98.61%, agreement 97.2%), val kd 0.1, val ce 0.2",
// or for language models "val ppl 5.2 (teacher 4.1), accuracy 41.0%, agreement 60.1%, kd 0.3, 1.2e4 tokens/s".
std::string eval_summary(const EvalResult& r);

// Sums over the outputs it is given, chunk by chunk of positions.
class EvalAccumulator {
 public:
  EvalAccumulator(const LossConfig& loss, int64_t chunk_rows);
  // `teacher` null: no teacher.
  void add(const ModelOutput& student, const ModelOutput* teacher, const at::Tensor& targets, int64_t examples);
  EvalResult result() const;
  // The counts and sums behind result(), as doubles, and the same set back (added over the ranks of a
  // data-parallel run that each scored a part of the batches).
  std::vector<double> sums() const;
  void set_sums(const std::vector<double>& sums);

 private:
  KdLossOptions options_;
  int64_t chunk_rows_;
  int64_t examples_ = 0, targets_ = 0, correct_ = 0, teacher_correct_ = 0, agree_ = 0;
  double kd_ = 0, ce_ = 0, teacher_ce_ = 0;
  bool has_teacher_ = false, tokens_ = false;
};

// Both models in eval mode over every batch of `source` (`batch_size` examples each), without gradients.
// A data-parallel run passes its rank as `shard` of `shards`: each scores every shards-th batch, and
// `add_over_ranks` sums the accumulated values over the ranks (in place) before the result is taken.
EvalResult evaluate(Model& student, Model* teacher, const BatchSource& source, const LossConfig& loss,
                    int64_t batch_size, int64_t chunk_rows, const c10::Device& device, int64_t shard = 0,
                    int64_t shards = 1, const std::function<void(std::vector<double>&)>& add_over_ranks = {});

}  // namespace distill
