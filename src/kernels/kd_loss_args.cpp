// Argument checks and the byte model shared by the CPU and CUDA kernels. Compiled into
// distill_cuda_kernels when that library exists (so it needs nothing else), into distill_core otherwise.
#include <cmath>
#include <stdexcept>
#include <string>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill::kernels {

namespace {

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("kd_loss kernel: " + what);
}

int64_t element_bytes(ScalarType t) { return t == ScalarType::f32 ? 4 : 2; }

bool known(ScalarType t) { return t == ScalarType::f32 || t == ScalarType::bf16 || t == ScalarType::f16; }

}  // namespace

void kd_loss_check_args(const KdLossArgs& a) {
  if (a.rows < 0) fail("rows must be >= 0, got " + std::to_string(a.rows));
  if (a.vocab < 1) fail("vocab must be >= 1, got " + std::to_string(a.vocab));
  if (!a.sums) fail("sums (float[3]) is required");
  if (!known(a.student_dtype) || !known(a.teacher_dtype)) fail("dtypes must be f32, bf16 or f16");
  if (!(a.temperature > 0.0f) || !std::isfinite(a.temperature))
    fail("temperature must be finite and > 0, got " + std::to_string(a.temperature));
  if (!(a.alpha >= 0.0f && a.alpha <= 1.0f)) fail("alpha must be in [0, 1], got " + std::to_string(a.alpha));
  if (!(a.inv_normalizer >= 0.0f) || !std::isfinite(a.inv_normalizer))
    fail("inv_normalizer must be finite and >= 0, got " + std::to_string(a.inv_normalizer));
  if (a.rows == 0) return;
  if (!a.student) fail("student logits are required");
  if (a.student_row_stride < a.vocab)
    fail("student_row_stride " + std::to_string(a.student_row_stride) + " < vocab " + std::to_string(a.vocab));
  const bool sparse = a.topk_index != nullptr;
  if (sparse) {
    if (a.teacher) fail("give either a dense teacher or a top-k teacher, not both");
    if (!a.topk_logits) fail("topk_logits is required with topk_index");
    if (a.topk < 0) fail("topk must be >= 0, got " + std::to_string(a.topk));
    if (a.kind != Divergence::forward_kl) fail("a top-k teacher supports only Divergence::forward_kl");
    if (a.topk_tail == TopkTail::tail && !a.teacher_lse) fail("TopkTail::tail needs teacher_lse [N]");
    if (a.topk_tail != TopkTail::ignore && a.topk_tail != TopkTail::tail) fail("unknown TopkTail");
  } else {
    if (!a.teacher) fail("teacher logits are required (dense teacher or topk_index + topk_logits)");
    if (a.teacher_row_stride < a.vocab)
      fail("teacher_row_stride " + std::to_string(a.teacher_row_stride) + " < vocab " + std::to_string(a.vocab) +
           " (a teacher row must hold at least the student's vocabulary)");
  }
  if (a.kind != Divergence::forward_kl && a.kind != Divergence::reverse_kl && a.kind != Divergence::jsd)
    fail("unknown Divergence");
  if (a.kind == Divergence::jsd && !(a.beta >= 0.0f && a.beta <= 1.0f))
    fail("jsd beta must be in [0, 1], got " + std::to_string(a.beta));
}

int64_t kd_loss_min_bytes(const KdLossArgs& a) {
  const int64_t elements = a.rows * a.vocab;
  int64_t bytes = elements * element_bytes(a.student_dtype);
  if (a.topk_index) {
    bytes += a.rows * a.topk * (8 + element_bytes(a.teacher_dtype));
    if (a.teacher_lse) bytes += a.rows * 4;
  } else {
    bytes += elements * element_bytes(a.teacher_dtype);
  }
  if (a.grad) bytes += elements * element_bytes(a.student_dtype);
  if (a.labels) bytes += a.rows * 8;
  return bytes;
}

}  // namespace distill::kernels
