// Private to src/loss: the vocabulary rule shared by the fused op and the composite.
#pragma once

#include <ATen/core/Tensor.h>

#include "distill/loss/kd_loss.h"

namespace distill {

// The teacher logits to compare with `student`: the same tensor when the widths match, the first V columns
// when V_t > V and the policy is truncate; otherwise distill::Error naming loss.vocab.
at::Tensor fit_teacher_vocab(const at::Tensor& student, const at::Tensor& teacher, VocabPolicy policy);
// The same rule for a student with `student_vocab` outputs (no row check).
at::Tensor fit_teacher_vocab(const at::Tensor& teacher, int64_t student_vocab, VocabPolicy policy);

}  // namespace distill
