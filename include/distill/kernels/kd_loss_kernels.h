// Raw-pointer fused distillation-loss kernels (CPU and CUDA). No LibTorch types here: this header is
// included by nvcc-compiled code that links only the CUDA runtime. The ATen glue (src/loss/) turns
// tensors into KdLossArgs; the autograd Function calls only that glue.
//
// Semantics, per row i of N (student row s_i of V logits, teacher row t_i):
//   a = upcast(t_i) / T,  b = upcast(s_i) / T          (fp32 math; upcast BEFORE dividing by T)
//   P = softmax(a) (teacher),  Q = softmax(b) (student)
//   forward_kl: D = KL(P||Q) = sum_v P_v (log P_v - log Q_v)
//   reverse_kl: D = KL(Q||P)
//   jsd:        M = beta*P + (1-beta)*Q,  D = beta*KL(P||M) + (1-beta)*KL(Q||M)   (TRL convention);
//               beta == 0 is exactly forward_kl and beta == 1 exactly reverse_kl (special-cased).
//   kd_i = D * (T^2 if t2_scale else 1)
//   ce_i = -log softmax(s_i)[y_i]   (T = 1; only when labels != nullptr; 0 otherwise)
//   a row is ignored when labels != nullptr and y_i == ignore_index: kd_i = ce_i = 0, gradient row = 0.
//   loss = (alpha * sum_i kd_i + (1 - alpha) * sum_i ce_i) * inv_normalizer
// The caller chooses inv_normalizer (1 / global count of valid rows of the optimizer step), so gradient
// accumulation and data parallelism reduce exactly.
//
// Sparse teacher (topk_index != nullptr): the teacher row is K (index, logit) pairs instead of V logits.
//   Q and log Q are the student's, normalised over the full vocabulary, gathered at the teacher's indices.
//   topk_tail == ignore: P_k = softmax over the K teacher logits / T (renormalised over the top-k);
//                        D = sum_k P_k (log P_k - log Q_k)    (forward_kl only)
//   topk_tail == tail:   P_k = exp(t_k / T - teacher_lse_i), where teacher_lse_i = logsumexp over the FULL
//                        teacher vocabulary of t / T (given per row); m_t = 1 - sum_k P_k,
//                        m_s = 1 - sum_k Q_k; D = sum_k P_k (log P_k - log Q_k) + m_t (log m_t - log m_s)
//                        Numerics: m_s is summed directly over the vocabulary outside the top-k (1 - sum_k Q_k
//                        cancels when the top-k holds nearly all of Q), and m_t < kd_loss_tail_mass_floor is
//                        taken as 0 (it is then below the rounding of an fp32 teacher_lse; without the floor,
//                        K = V would give m_t ~ 1e-7 against m_s = 0, an infinite loss).
//   Indices must be distinct within a row and in [0, V), or -1: an absent entry (a row with fewer than K
//   entries, as API logprobs give), which is in no sum and gets no gradient of its own; P_k, m_t and m_s
//   are then over the entries present, so a row of K absent entries has no KD term (kd = 0, no KD gradient)
//   and still its CE term. A row with another index outside [0, V) gets kd = NaN and no KD gradient (never
//   an out-of-bounds read). Sparse teachers support only forward_kl.
//
// Conventions: 0 * log 0 = 0. A vocabulary entry whose teacher and student logits are both -inf contributes
// nothing. Gradients are finite whenever the loss is. Logits are finite or -inf (+inf and NaN propagate).
//   A student row of all -inf has no distribution: the row counts nowhere (kd = ce = 0, gradient row 0).
//   A dense teacher row of all -inf (or a top-k row of all -inf with `ignore`): kd = 0, no KD gradient.
//   -inf in the student where the teacher has mass: forward KL (and a label there: ce) is +inf, gradient finite.
//   -inf in the teacher where the student has mass: reverse KL is +inf (its gradient is then not finite).
//   A label outside [0, V) that is not ignore_index: ce = NaN, no one-hot term (never an out-of-bounds read).
//   Temperature: the kernels multiply by 1/T in fp32 (within 1 ulp of dividing), after the upcast, and form
//   every exponent as (x - rowmax) / T, so large common offsets cancel exactly. jsd needs 0 <= beta <= 1.
//   kd_i is clamped at 0 from below (a divergence is >= 0; rounding could otherwise give -1e-9).
//
// Outputs (all written by the forward; there is no separate backward pass):
//   grad[i, v] = d loss / d s[i, v]  (already includes alpha, T^2, 1/T, inv_normalizer); dtype = student's
//   row_kd[i], row_ce[i]  (optional, fp32, unscaled by alpha or inv_normalizer; 0 for ignored rows)
//   sums[0] = loss, sums[1] = sum_i kd_i * inv_normalizer, sums[2] = sum_i ce_i * inv_normalizer  (fp32)
//   Reductions are deterministic: the same inputs give bit-identical outputs run to run.
#pragma once

#include <cstdint>
#include <string>

namespace distill::kernels {

enum class Divergence : int32_t { forward_kl = 0, reverse_kl = 1, jsd = 2 };

// Sparse tail mode: teacher tail masses m_t below this are treated as 0 (see above).
constexpr double kd_loss_tail_mass_floor = 1e-5;
enum class TopkTail : int32_t { ignore = 0, tail = 1 };
enum class ScalarType : int32_t { f32 = 0, bf16 = 1, f16 = 2 };

struct KdLossArgs {
  int64_t rows = 0;   // N
  int64_t vocab = 0;  // V: the student's vocabulary (a wider dense teacher row is read up to V: "truncate")

  const void* student = nullptr;  // [N, V] rows `student_row_stride` elements apart
  int64_t student_row_stride = 0;
  ScalarType student_dtype = ScalarType::f32;

  // Dense teacher: [N, >= V] rows `teacher_row_stride` elements apart. nullptr when sparse.
  const void* teacher = nullptr;
  int64_t teacher_row_stride = 0;
  ScalarType teacher_dtype = ScalarType::f32;  // also the dtype of topk_logits

  // Sparse teacher: topk_index [N, K] int64, topk_logits [N, K] (teacher_dtype), both contiguous.
  const int64_t* topk_index = nullptr;
  const void* topk_logits = nullptr;
  int64_t topk = 0;
  const float* teacher_lse = nullptr;  // [N], required for TopkTail::tail
  TopkTail topk_tail = TopkTail::ignore;

  const int64_t* labels = nullptr;  // [N] or nullptr (then every row is valid and ce = 0)
  int64_t ignore_index = -100;

  Divergence kind = Divergence::forward_kl;
  float beta = 0.5f;
  float temperature = 1.0f;
  bool t2_scale = true;
  float alpha = 1.0f;           // in [0, 1]
  float inv_normalizer = 1.0f;  // finite, >= 0 (0: a step without valid rows)

  void* grad = nullptr;  // [N, V] contiguous, student_dtype; nullptr = loss only
  float* row_kd = nullptr;  // [N] or nullptr
  float* row_ce = nullptr;  // [N] or nullptr
  float* sums = nullptr;    // [3], required
};

// CPU: rows in parallel (at::parallel_for), one streaming pass per row with online softmax.
// Throws std::invalid_argument when the arguments are inconsistent (see kd_loss_check_args).
void kd_loss_forward_cpu(const KdLossArgs& args);

// Instruction set of the CPU kernel's inner loops. `best` is what kd_loss_forward_cpu(args) uses: the widest
// one this CPU supports (checked once with __builtin_cpu_supports). Tests and benchmarks pin one explicitly;
// asking for one the CPU lacks throws std::invalid_argument.
enum class CpuIsa : int32_t { best = 0, scalar = 1, avx2 = 2, avx512 = 3 };
void kd_loss_forward_cpu(const KdLossArgs& args, CpuIsa isa);
CpuIsa kd_loss_cpu_best_isa();               // never `best`
// How many threads kd_loss_forward_cpu splits `rows` rows of `vocab` elements across under the current ATen
// thread setting: its own at::parallel_for, same range and grain, compiled with the same flags. 1 where it
// would run serially (too few rows, one thread set, or a build whose at::parallel_for cannot parallelise).
int64_t kd_loss_cpu_parallel_width(int64_t rows, int64_t vocab);
bool kd_loss_cpu_isa_supported(CpuIsa isa);  // compiled in and supported by this CPU
const char* kd_loss_cpu_isa_name(CpuIsa isa);

// Caller errors that need no look at the data (null pointers, strides < V, sparse with a kind other than
// forward_kl, temperature <= 0, beta outside [0, 1], ...): throws std::invalid_argument naming the field.
// Both kd_loss_forward_cpu and kd_loss_forward_cuda call it; the ATen glue may call it first.
void kd_loss_check_args(const KdLossArgs& args);

// Bytes a perfect single pass moves: reads student + teacher (dense, or top-k logits + indices, + teacher_lse),
// + labels, writes the gradient (when requested). The `distill bench loss` bandwidth model (6 bytes per
// element for bf16 with a dense teacher).
int64_t kd_loss_min_bytes(const KdLossArgs& args);

// CUDA: launched on `stream` (a cudaStream_t); device pointers throughout; checks its launch and throws
// std::runtime_error with the CUDA error string on failure. Needs scratch for deterministic reductions:
// kd_loss_cuda_workspace_bytes(args) bytes at `workspace` (device memory, 256-byte aligned; may be null when
// row_kd and row_ce are both given). One launch: the last block to finish sums the row values into sums[] in a
// fixed order (bit-identical run to run); no host synchronisation. Keeps one 4-byte arrival counter per
// (device, stream) for the life of the process, allocated on first use.
int64_t kd_loss_cuda_workspace_bytes(const KdLossArgs& args);
void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream);

// Kernel shape. `automatic` is what the overload above uses: rows_per_warp for V <= 2048 (2^k lanes per row,
// several rows per warp), block_per_row otherwise (part of the row cached in shared memory, the rest re-read
// from L2 in reverse order). Tests and benchmarks pin the other two. These are the variants that ship; the
// experimental ones (cluster_per_row, cluster_persistent: a row's slices in the shared memory of a
// thread-block cluster, slower than block_per_row on an H100 and an H200; and block_per_row's design knobs,
// once DISTILL_KD_CUDA_TUNE) live in dev/cuda as standalone programs (docs/kernels.md). Any other value is an
// error (std::invalid_argument).
enum class CudaVariant : int32_t {
  automatic = 0,
  rows_per_warp = 1,
  block_per_row = 2,
};
void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream, CudaVariant variant);

// True when this build has the CUDA kernels compiled in (DISTILL_CUDA_KERNELS).
bool kd_loss_cuda_compiled();

// Which CUDA kernel kd_loss_forward_cuda(args, ..., variant) runs on the current device, for benchmark
// reports, e.g. "rows-per-warp/8 lanes", "block-per-row/512 threads, 1234 of 4009 packs cached (cp.async)";
// "none" when not compiled.
std::string kd_loss_cuda_describe(const KdLossArgs& args, CudaVariant variant = CudaVariant::automatic);

}  // namespace distill::kernels
