#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "distill/config/config.h"
#include "distill/loss/kd_loss.h"
#include "distill/models/model.h"
#include "distill/train/evaluate.h"

namespace distill {

nlohmann::json EvalResult::to_json() const {
  nlohmann::json j = {{"val_rows", rows}, {"val_accuracy", student_accuracy}, {"val_ce", ce_loss}};
  if (has_teacher) {
    j["teacher_val_accuracy"] = teacher_accuracy;
    j["agreement"] = agreement;
    j["val_kd"] = kd_loss;
  }
  return j;
}

at::Tensor predict_logits(Model& model, const at::Tensor& x, int64_t batch_size, const c10::Device& device) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  std::vector<at::Tensor> parts;
  for (int64_t begin = 0; begin < x.size(0); begin += batch_size) {
    int64_t end = std::min(x.size(0), begin + batch_size);
    parts.push_back(model.forward(x.slice(0, begin, end).to(device)).to(torch::kCPU, torch::kFloat32));
  }
  return torch::cat(parts);
}

EvalResult evaluate_logits(const at::Tensor& student_logits, const at::Tensor& teacher_logits, const at::Tensor& labels,
                           const LossConfig& loss) {
  torch::NoGradGuard no_grad;
  EvalResult r;
  r.rows = labels.size(0);
  at::Tensor student_top1 = student_logits.argmax(1);
  r.student_accuracy = student_top1.eq(labels).to(torch::kFloat64).mean().item<double>();
  KdLossOptions options = KdLossOptions::from_config(loss);
  // The fused op under NoGradGuard writes no gradient: nothing of the logits' size is allocated, where the
  // ATen composite would hold several such temporaries for the whole validation set.
  LossTerms terms = kd_loss(student_logits, teacher_logits, labels, options, static_cast<double>(r.rows));
  r.ce_loss = terms.ce.item<double>();
  if (teacher_logits.defined()) {
    // A wider teacher (loss.vocab = truncate) is scored on the classes the student has.
    at::Tensor teacher_top1 = teacher_logits.narrow(1, 0, student_logits.size(1)).argmax(1);
    r.has_teacher = true;
    r.teacher_accuracy = teacher_top1.eq(labels).to(torch::kFloat64).mean().item<double>();
    r.agreement = teacher_top1.eq(student_top1).to(torch::kFloat64).mean().item<double>();
    r.kd_loss = terms.kd.item<double>();
  }
  return r;
}

}  // namespace distill
