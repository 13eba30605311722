#include <torch/torch.h>

#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/loss/kd_loss.h"

namespace distill {

LossTerms kd_loss_reference(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                            const at::Tensor& labels, const LossConfig& config, double normalizer) {
  TORCH_CHECK(student_logits.dim() == 2, "student logits must be [N, V], got ", student_logits.sizes());
  TORCH_CHECK(normalizer > 0, "normalizer must be > 0, got ", normalizer);
  at::Tensor s = student_logits.to(torch::kFloat32);
  at::Tensor ce = torch::nn::functional::cross_entropy(
                      s, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum)) /
                  normalizer;
  if (!teacher_logits.defined()) return {ce, torch::zeros({}, s.options()), ce.detach()};
  TORCH_CHECK(teacher_logits.sizes() == student_logits.sizes(), "teacher logits ", teacher_logits.sizes(),
              " != student logits ", student_logits.sizes());
  const double T = config.temperature;
  at::Tensor log_q = torch::log_softmax(s / T, -1);
  at::Tensor log_p = torch::log_softmax(teacher_logits.to(torch::kFloat32) / T, -1);
  // P (log P - log Q) with 0 log 0 = 0 where the teacher puts no mass.
  at::Tensor p = log_p.exp();
  at::Tensor pointwise = torch::where(p > 0, p * (log_p - log_q), torch::zeros_like(p));
  at::Tensor kd = pointwise.sum() / normalizer;
  if (config.t2_scale) kd = kd * (T * T);
  at::Tensor loss = config.alpha * kd + (1.0 - config.alpha) * ce;
  return {loss, kd.detach(), ce.detach()};
}

}  // namespace distill
