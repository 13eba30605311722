#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "distill/config/config.h"
#include "distill/data/batch.h"
#include "distill/loss/output_loss.h"
#include "distill/models/model.h"
#include "distill/train/evaluate.h"

namespace distill {

double EvalResult::student_perplexity() const { return std::exp(ce_loss); }
double EvalResult::teacher_perplexity() const { return std::exp(teacher_ce_loss); }

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = {{"val_accuracy", student_accuracy}, {"val_ce", ce_loss}};
  if (tokens) {
    j["val_sequences"] = examples;
    j["val_tokens"] = targets;
    j["val_ppl"] = student_perplexity();
    j["tokens_per_s"] = seconds > 0 ? static_cast<double>(targets) / seconds : 0.0;
  } else {
    j["val_rows"] = examples;
  }
  if (has_teacher) {
    j["teacher_val_accuracy"] = teacher_accuracy;
    j["teacher_val_ce"] = teacher_ce_loss;
    if (tokens) j["teacher_val_ppl"] = teacher_perplexity();
    j["agreement"] = agreement;
    j["val_kd"] = kd_loss;
  }
  return j;
}

std::string eval_summary(const EvalResult& r) {
  char line[320];
  if (r.tokens) {
    const double tokens_per_s = r.seconds > 0 ? static_cast<double>(r.targets) / r.seconds : 0.0;
    if (r.has_teacher)
      std::snprintf(line, sizeof line,
                    "val ppl %.3f (teacher %.3f), val ce %.4f, top-1 %.2f%% (teacher %.2f%%, agreement %.2f%%), "
                    "val kd %.4f, %lld tokens at %.0f tokens/s",
                    r.student_perplexity(), r.teacher_perplexity(), r.ce_loss, 100 * r.student_accuracy,
                    100 * r.teacher_accuracy, 100 * r.agreement, r.kd_loss, static_cast<long long>(r.targets), tokens_per_s);
    else
      std::snprintf(line, sizeof line, "val ppl %.3f, val ce %.4f, top-1 %.2f%%, %lld tokens at %.0f tokens/s",
                    r.student_perplexity(), r.ce_loss, 100 * r.student_accuracy, static_cast<long long>(r.targets),
                    tokens_per_s);
  } else if (r.has_teacher) {
    std::snprintf(line, sizeof line, "val accuracy %.2f%% (teacher %.2f%%, agreement %.2f%%), val kd %.4f, val ce %.4f",
                  100 * r.student_accuracy, 100 * r.teacher_accuracy, 100 * r.agreement, r.kd_loss, r.ce_loss);
  } else {
    std::snprintf(line, sizeof line, "val accuracy %.2f%%, val ce %.4f", 100 * r.student_accuracy, r.ce_loss);
  }
  return line;
}

EvalAccumulator::EvalAccumulator(const LossConfig& loss, int64_t chunk_rows)
    : options_(KdLossOptions::from_config(loss)), chunk_rows_(chunk_rows) {}

void EvalAccumulator::add(const ModelOutput& student, const ModelOutput* teacher, const at::Tensor& targets,
                          int64_t examples) {
  torch::NoGradGuard no_grad;
  examples_ += examples;
  tokens_ = tokens_ || targets.dim() > 1;
  has_teacher_ = has_teacher_ || teacher != nullptr;
  // Per chunk: counts as int64 and sums as double on the host, one transfer per chunk.
  for_each_logits_chunk(student, teacher, targets, chunk_rows_, [&](const at::Tensor& s, const at::Tensor& t, const at::Tensor& y) {
    const at::Tensor valid = y.ne(options_.ignore_index);
    const at::Tensor s_top = s.argmax(1);
    // The fused op with normalizer 1 gives sums over the valid rows: [loss, kd, ce].
    const at::Tensor s_sums = kd_loss_value(s, t, y, options_, 1.0, /*want_grad=*/false).sums;
    std::vector<at::Tensor> parts = {valid.sum(), s_top.eq(y).logical_and(valid).sum()};
    std::vector<at::Tensor> sums = {s_sums.select(0, 1), s_sums.select(0, 2)};
    if (t.defined()) {
      // A wider teacher (loss.vocab = truncate) is scored on the ids the student has.
      const at::Tensor t_fit = t.narrow(1, 0, s.size(1));
      const at::Tensor t_top = t_fit.argmax(1);
      parts.push_back(t_top.eq(y).logical_and(valid).sum());
      parts.push_back(t_top.eq(s_top).logical_and(valid).sum());
      sums.push_back(kd_loss_value(t_fit, at::Tensor(), y, options_, 1.0, false).sums.select(0, 2));
    }
    const at::Tensor counts = torch::stack(parts).to(torch::kCPU, torch::kLong);
    const at::Tensor values = torch::stack(sums).to(torch::kCPU, torch::kDouble);
    const int64_t* c = counts.data_ptr<int64_t>();
    const double* v = values.data_ptr<double>();
    targets_ += c[0];
    correct_ += c[1];
    kd_ += v[0];
    ce_ += v[1];
    if (t.defined()) {
      teacher_correct_ += c[2];
      agree_ += c[3];
      teacher_ce_ += v[2];
    }
  });
}

EvalResult EvalAccumulator::result() const {
  EvalResult r;
  r.examples = examples_;
  r.targets = targets_;
  r.tokens = tokens_;
  r.has_teacher = has_teacher_;
  if (targets_ == 0) return r;
  const double n = static_cast<double>(targets_);
  r.student_accuracy = static_cast<double>(correct_) / n;
  r.ce_loss = ce_ / n;
  if (has_teacher_) {
    r.teacher_accuracy = static_cast<double>(teacher_correct_) / n;
    r.agreement = static_cast<double>(agree_) / n;
    r.kd_loss = kd_ / n;
    r.teacher_ce_loss = teacher_ce_ / n;
  }
  return r;
}

std::vector<double> EvalAccumulator::sums() const {
  return {static_cast<double>(examples_), static_cast<double>(targets_), static_cast<double>(correct_),
          static_cast<double>(teacher_correct_), static_cast<double>(agree_), kd_, ce_, teacher_ce_,
          has_teacher_ ? 1.0 : 0.0, tokens_ ? 1.0 : 0.0};
}

void EvalAccumulator::set_sums(const std::vector<double>& v) {
  TORCH_INTERNAL_ASSERT(v.size() == 10);
  examples_ = std::llround(v[0]);
  targets_ = std::llround(v[1]);
  correct_ = std::llround(v[2]);
  teacher_correct_ = std::llround(v[3]);
  agree_ = std::llround(v[4]);
  kd_ = v[5];
  ce_ = v[6];
  teacher_ce_ = v[7];
  has_teacher_ = v[8] > 0;
  tokens_ = v[9] > 0;
}

EvalResult evaluate(Model& student, Model* teacher, const BatchSource& source, const LossConfig& loss,
                    int64_t batch_size, int64_t chunk_rows, const c10::Device& device, int64_t shard,
                    int64_t shards, const std::function<void(std::vector<double>&)>& add_over_ranks) {
  torch::NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  student.set_training(false);
  if (teacher) teacher->set_training(false);
  EvalAccumulator acc(loss, chunk_rows);
  const int64_t n = source.size();
  for (int64_t begin = shard * batch_size; begin < n; begin += batch_size * shards) {
    const Batch b = source.batch(/*epoch=*/0, begin, std::min(n, begin + batch_size));
    const ModelOutput s = student.forward_output(b.student_input.to(device));
    ModelOutput t;
    if (teacher) t = teacher->forward_output(b.teacher_input.to(device));
    acc.add(s, teacher ? &t : nullptr, b.targets.to(device), b.examples);
  }
  if (add_over_ranks) {
    std::vector<double> sums = acc.sums();
    add_over_ranks(sums);
    acc.set_sums(sums);
  }
  EvalResult r = acc.result();
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return r;
}

}  // namespace distill
