// The distillation loss: one fused op (CPU and CUDA kernels, include/distill/kernels/kd_loss_kernels.h)
// that the trainer calls, and the composite of ATen ops it is tested and benchmarked against.
//
// With teacher logits z_t [N, V_t], student logits z_s [N, V], labels y [N] and temperature T, in float32
// (logits are upcast BEFORE dividing by T):
//   P = softmax(z_t / T) (teacher),  Q = softmax(z_s / T) (student)
//   forward_kl  D_i = KL(P||Q) = sum_v P_v (log P_v - log Q_v)        (Hinton, Vinyals, Dean 2015)
//   reverse_kl  D_i = KL(Q||P)                                        (MiniLLM, Gu et al. 2024)
//   jsd         M = beta P + (1-beta) Q,  D_i = beta KL(P||M) + (1-beta) KL(Q||M)
//               (generalised JSD of GKD, Agarwal et al. 2024, in TRL's convention); beta = 0 is exactly
//               forward_kl and beta = 1 exactly reverse_kl (special-cased: the formula itself tends to 0 there)
//   kd_i = D_i * (T^2 if t2_scale else 1)
//   ce_i = -log softmax(z_s)_i[y_i]                                   (T = 1)
//   rows with y_i == ignore_index count in neither sum nor normaliser
//   loss = (alpha * sum_i kd_i + (1 - alpha) * sum_i ce_i) / normalizer
// The caller passes `normalizer`: the number of valid rows in the whole optimizer step (all micro-batches,
// all ranks), so that gradient accumulation and data parallelism divide by the global count. With one
// micro-batch of valid rows, forward_kl's KD term equals PyTorch's
//   F.kl_div(F.log_softmax(s/T, -1), F.log_softmax(t/T, -1), log_target=True, reduction='batchmean') * T*T.
// Vocabulary: V_t > V (padded embedding tables) is an error unless vocab = truncate (the teacher's first V
// logits are used); V_t < V is always an error.
// Sparse teachers (cached top-k): see kd_loss_kernels.h for `ignore` and `tail`.
#pragma once

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

#include "distill/kernels/kd_loss_kernels.h"
#include "distill/loss/loss_names.h"

namespace distill {

struct LossConfig;

struct KdLossOptions {
  kernels::Divergence kind = kernels::Divergence::forward_kl;
  double beta = 0.5;
  double temperature = 1.0;
  bool t2_scale = true;
  double alpha = 1.0;  // in [0, 1]: the weight of the KD term, 1 - alpha that of the cross-entropy
  int64_t ignore_index = -100;
  VocabPolicy vocab = VocabPolicy::error;
  kernels::TopkTail topk_tail = kernels::TopkTail::ignore;

  static KdLossOptions from_config(const LossConfig& config);
};

// A cached sparse teacher: top-k indices [N, K] (int64) and logits [N, K]; lse [N] (float32, logsumexp of the
// full teacher row / T) is required for TopkTail::tail.
struct SparseTeacher {
  at::Tensor index, logits, lse;
};

// The sparse teacher of dense teacher logits [N, V_t] for a student with `student_vocab` outputs: the vocabulary
// rule first (options.vocab), then the k largest logits of each row (ties: torch::topk's order), and, for
// TopkTail::tail, lse = logsumexp(z_t / T) over the fitted row in float32. What `loss.topk` trains with, and
// what a teacher cache would store. Needs 1 <= k <= student_vocab.
SparseTeacher sparse_teacher_topk(const at::Tensor& teacher_logits, int64_t k, int64_t student_vocab,
                                  const KdLossOptions& options);

struct LossTerms {
  at::Tensor loss;  // scalar, differentiable w.r.t. the student logits
  at::Tensor kd;    // scalar sum_i kd_i / normalizer (detached); 0 without a teacher
  at::Tensor ce;    // scalar sum_i ce_i / normalizer (detached)
};

// The fused op (a torch::autograd::Function): one pass over each row pair computes the loss and writes the
// gradient; backward only scales that gradient by grad_output (skipped, with no host synchronisation, when
// grad_output is exactly 1). `teacher` undefined: supervised (loss = CE, alpha ignored). `labels` may be
// undefined (then every row is valid, ce = 0, and alpha must be 1).
LossTerms kd_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                  const KdLossOptions& options, double normalizer);
LossTerms kd_loss_sparse(const at::Tensor& student, const SparseTeacher& teacher, const at::Tensor& labels,
                         const KdLossOptions& options, double normalizer);

// The fused op without autograd: the loss terms and, when `want_grad`, the gradient of `loss` w.r.t. the student
// logits (like `student`; on the CPU from the reused buffer below). What the chunked loss of
// include/distill/loss/output_loss.h calls once per chunk of positions.
struct KdLossValue {
  at::Tensor sums;  // [3] float32: loss, kd, ce (each already divided by the normalizer)
  at::Tensor grad;  // undefined unless want_grad
};
KdLossValue kd_loss_value(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                          const KdLossOptions& options, double normalizer, bool want_grad);
KdLossValue kd_loss_sparse_value(const at::Tensor& student, const SparseTeacher& teacher, const at::Tensor& labels,
                                 const KdLossOptions& options, double normalizer, bool want_grad);

// The fused op's kernel call without autograd, for timing the kernel alone (`distill bench loss --device
// cuda`): the same input checks and kernel arguments as kd_loss / kd_loss_sparse make, with a fresh gradient
// and sums as the outputs. `args` points into the tensors beside it; keep the struct alive while using it.
struct KdLossKernelCall {
  kernels::KdLossArgs args;
  at::Tensor grad, sums;            // the outputs args writes
  std::vector<at::Tensor> inputs;   // what args reads (student, teacher or top-k, labels, as the kernel takes them)
};
KdLossKernelCall kd_loss_kernel_call(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                                     const KdLossOptions& options, double normalizer);
KdLossKernelCall kd_loss_sparse_kernel_call(const at::Tensor& student, const SparseTeacher& teacher,
                                            const at::Tensor& labels, const KdLossOptions& options, double normalizer);

// Memory: the op allocates nothing of size [N, V] but the gradient, and none at all when no gradient is wanted
// (grad mode off, or a student that does not require grad). On the CPU the gradient's storage is reused from
// call to call once nothing else refers to it, so that a training loop does not fault a fresh [N, V] buffer
// in at every step; the storage of the largest such gradient stays held between steps.
struct CpuGradientBufferStats {
  int64_t allocations = 0;  // CPU gradients allocated
  int64_t reuses = 0;       // CPU gradients served from the held storage
  int64_t held_bytes = 0;   // size of the held storage
};
CpuGradientBufferStats kd_loss_cpu_gradient_buffer_stats();
// Lets go of the held storage (freed once no gradient uses it): for a process that is done training.
void kd_loss_release_cpu_gradient_buffer();

// The instruction set of the CPU kernel's inner loops: the environment variable DISTILL_CPU_ISA (scalar, avx2
// or avx512; read once per process) or, unset or empty, the widest this CPU supports. Results agree across
// instruction sets to rounding, not bit for bit. Throws distill::Error for an unknown or unsupported name.
kernels::CpuIsa kd_loss_cpu_isa();

// The same semantics composed from ATen ops (log_softmax, exp, sums, cross_entropy): the reference the fused
// op is tested against and the baseline `distill bench loss` times it against.
LossTerms kd_loss_composite(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                            const KdLossOptions& options, double normalizer);
LossTerms kd_loss_sparse_composite(const at::Tensor& student, const SparseTeacher& teacher, const at::Tensor& labels,
                                   const KdLossOptions& options, double normalizer);

}  // namespace distill
