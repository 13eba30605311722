// Scalar double-precision reference of the fused distillation loss (semantics in kd_loss_kernels.h).
// Written for clarity, not speed: per row it forms log P, log Q and the divergence term by term from the
// definitions, and the gradient from the closed forms below. The fused kernels are tested against it, and its
// analytic gradient is tested against central differences of its own loss.
//
// Closed-form gradients w.r.t. the student logits at temperature T (b = s / T, so d/ds = (1/T) d/db):
//   forward_kl          dD/db_v = Q_v - P_v
//   reverse_kl          dD/db_v = Q_v (log Q_v - log P_v - D)
//   jsd                 dD/db_v = (1 - beta) Q_v (log Q_v - log M_v - KL(Q||M))
//   sparse, ignore      dD/db_v = Q_v - P_v            (P_v = 0 off the top-k)
//   sparse, tail        dD/db_v = Q_v - P_v on the top-k, Q_v (1 - m_t / m_s) off it
//   cross-entropy       dce/ds_v = softmax(s)_v - [v == y]
#pragma once

#include <cstdint>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill::kernels {

// Reads args exactly as the kernels do (including args.student_dtype / teacher_dtype, strides, top-k) and
// ignores args.grad / row_kd / row_ce / sums; writes instead, each optional (nullptr = skip):
//   grad [N, V] contiguous, row_kd [N], row_ce [N], sums [3], all in double.
void kd_loss_forward_reference(const KdLossArgs& args, double* grad, double* row_kd, double* row_ce,
                               double* sums);

// Scalar conversions shared by the reference, the CPU kernel's scalar paths and the tests.
float bf16_bits_to_float(uint16_t bits);
uint16_t float_to_bf16_bits(float x);  // round to nearest even; NaN stays NaN
float f16_bits_to_float(uint16_t bits);
uint16_t float_to_f16_bits(float x);   // round to nearest even; overflow to inf; NaN stays NaN

}  // namespace distill::kernels
