// The distillation loss (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural Network").
//
//   P = softmax(z_t / T), Q = softmax(z_s / T), computed in float32 (logits are upcast before dividing by T)
//   D_i = sum_v P_iv (log P_iv - log Q_iv)                     forward KL(P || Q) of row i
//   KD  = (T^2 if t2_scale else 1) * sum_i D_i / normalizer
//   CE  = sum_i -log softmax(z_s)_i[y_i] / normalizer          (T = 1)
//   loss = alpha * KD + (1 - alpha) * CE                       (no teacher: loss = CE)
//
// `normalizer` is the number of rows in the whole optimizer step, so that under gradient accumulation each
// micro-batch contributes its rows' share and micro-batches of unequal size are weighted by their rows (not
// averaged as means). With one micro-batch, KD equals PyTorch's
//   F.kl_div(F.log_softmax(s/T, -1), F.log_softmax(t/T, -1), log_target=True, reduction='batchmean') * T*T.
#pragma once

#include <ATen/core/Tensor.h>

namespace distill {

struct LossConfig;

struct LossTerms {
  at::Tensor loss;  // scalar, differentiable w.r.t. the student logits
  at::Tensor kd;    // scalar KD term as defined above (detached); 0 without a teacher
  at::Tensor ce;    // scalar CE term (detached)
};

// Reference composite of ATen ops. `teacher_logits` may be undefined (no teacher).
LossTerms kd_loss_reference(const at::Tensor& student_logits, const at::Tensor& teacher_logits,
                            const at::Tensor& labels, const LossConfig& config, double normalizer);

}  // namespace distill
