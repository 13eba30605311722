// Fused distillation loss on the CPU: forward KL / reverse KL / generalized JSD between the tempered teacher
// and student softmaxes, plus the T = 1 cross-entropy on the hard labels, plus the gradient w.r.t. the student
// logits, in one call.
//
// Fuses: upcast (bf16/f16 -> fp32), division by T, both softmaxes (online, Milakov & Gimelshein 2018), the
// divergence, the cross-entropy, the alpha mix, T^2 and 1/normalizer scaling, and the gradient (written in
// the student's dtype). Never materialises: P, Q, log P, log Q, M, or any fp32 copy of a logits tensor. The
// only [N, V] buffer is the caller's gradient; the only [N] buffers are per-row kd / ce values (the caller's
// row_kd / row_ce when given), summed in row order at the end so that results do not depend on threads.
//
// Passes over each row (chunks of kChunk elements stay in L1 between a chunk's sweeps; rows larger than L2
// are re-read from L3 / memory for the gradient):
//   forward_kl, reverse_kl, sparse   stats (1 read of s and t) + gradient (1 read, 1 write)
//   jsd                              stats + KL(P||M), KL(Q||M) + gradient; the middle sweep keeps Q and
//                                    log Q - log M of the row (2 floats per element, one row per thread)
//                                    for the gradient sweep, which reads no logits then
// Inner loops: AVX-512, AVX2+FMA+F16C, or scalar, picked once per process (__builtin_cpu_supports).
#include <ATen/Config.h>
#include <ATen/Parallel.h>

#if AT_PARALLEL_OPENMP && !defined(_OPENMP)
#error "LibTorch parallelises with OpenMP: compile this file with OpenMP (-fopenmp), or at::parallel_for runs serially"
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "distill/kernels/kd_loss_kernels.h"
#include "kd_loss_cpu_simd.h"

namespace distill::kernels {
namespace cpu {

constexpr int64_t kChunk = 1024;  // fp32 elements per chunk: 3 chunk buffers = 12 KiB of L1
constexpr double kTailMassFloor = kd_loss_tail_mass_floor;

inline int64_t element_bytes(ScalarType t) { return t == ScalarType::f32 ? 4 : 2; }

// Rows per at::parallel_for task: ~32K elements at least, so that small-V shapes do not pay a dispatch per row.
inline int64_t row_grain(int64_t vocab) { return std::max<int64_t>(1, (int64_t{1} << 15) / vocab); }

// How the cross-entropy's T = 1 student softmax exp(s - max) is formed. With T = 1 it is the KD softmax itself;
// with T = 2 or 4 it is the square or fourth power of the KD term exp((s - max) / T), whose argument is exact
// (a division by a power of two): one exp per element fewer in each sweep, 10% of a step at [4096, 32000].
// Measured at [64, 32001] f32, cross-entropy only: worst relative error of the gradient 3.3e-6 (T = 2) and
// 3.5e-6 (T = 4) against 2.1e-6 with its own exp (both mostly the rounding of large exponents' arguments).
// Any other T: its own exp.
enum class CeSoftmax { shared, own, square, fourth };
constexpr bool is_power(CeSoftmax ce) { return ce == CeSoftmax::square || ce == CeSoftmax::fourth; }
constexpr float power_of(CeSoftmax ce) { return ce == CeSoftmax::fourth ? 4.0f : 2.0f; }  // the T of a power mode

// Per-call constants.
struct Plan {
  bool sparse = false, has_labels = false;
  // Labels and T != 1: the cross-entropy needs its own T = 1 softmax sums (sep_ce), formed as ce_softmax says.
  CeSoftmax ce_softmax = CeSoftmax::shared;
  bool sep_ce() const { return ce_softmax != CeSoftmax::shared; }
  bool ce_grad = false;  // labels and alpha != 1
  Divergence kind = Divergence::forward_kl;
  float inv_t = 1, beta = 0.5f, log_beta = 0, log_1m_beta = 0;
  float ck = 0;  // alpha * inv_normalizer * (T^2 if t2_scale else 1) / T
  float cc = 0;  // (1 - alpha) * inv_normalizer
  double kd_scale = 1;
};

// ----------------------------------------------------------------------------------------------------------
// Kernels: kd_loss_cpu_rows.inc once per instruction set.

namespace isa_scalar {
using Vec = VecScalar;
#include "kd_loss_cpu_rows.inc"
}  // namespace isa_scalar

DISTILL_TARGET_PUSH("avx2,fma,f16c")
namespace isa_avx2 {
using Vec = VecAvx2;
#include "kd_loss_cpu_rows.inc"
}  // namespace isa_avx2
DISTILL_TARGET_POP

DISTILL_TARGET_PUSH("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
namespace isa_avx512 {
using Vec = VecAvx512;
#include "kd_loss_cpu_rows.inc"
}  // namespace isa_avx512
DISTILL_TARGET_POP

// ----------------------------------------------------------------------------------------------------------
// Launcher.

using RowsFn = void (*)(const KdLossArgs&, const Plan&, int64_t, int64_t, float*, float*);

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                         __builtin_cpu_supports("f16c");
  return ok;
}

bool cpu_has_avx512() {
  static const bool ok = cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  return ok;
}

Plan make_plan(const KdLossArgs& a) {
  Plan p;
  p.sparse = a.topk_index != nullptr;
  p.has_labels = a.labels != nullptr;
  p.kind = a.kind;
  p.beta = a.beta;
  if (p.kind == Divergence::jsd && a.beta == 0.0f) p.kind = Divergence::forward_kl;  // exact endpoints
  if (p.kind == Divergence::jsd && a.beta == 1.0f) p.kind = Divergence::reverse_kl;
  const double T = a.temperature;
  p.inv_t = static_cast<float>(1.0 / T);
  p.ce_softmax = !p.has_labels || a.temperature == 1.0f ? CeSoftmax::shared
                 : a.temperature == 2.0f                 ? CeSoftmax::square
                 : a.temperature == 4.0f                 ? CeSoftmax::fourth
                                                         : CeSoftmax::own;
  p.log_beta = static_cast<float>(std::log(static_cast<double>(a.beta)));
  p.log_1m_beta = static_cast<float>(std::log1p(-static_cast<double>(a.beta)));
  p.kd_scale = a.t2_scale ? T * T : 1.0;
  p.ck = static_cast<float>(a.alpha * static_cast<double>(a.inv_normalizer) * p.kd_scale / T);
  p.cc = p.has_labels ? static_cast<float>((1.0 - a.alpha) * static_cast<double>(a.inv_normalizer)) : 0.0f;
  p.ce_grad = p.has_labels && p.cc != 0.0f;
  return p;
}

}  // namespace cpu

CpuIsa kd_loss_cpu_best_isa() {
  if (cpu::cpu_has_avx512()) return CpuIsa::avx512;
  if (cpu::cpu_has_avx2()) return CpuIsa::avx2;
  return CpuIsa::scalar;
}

bool kd_loss_cpu_isa_supported(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::best:
    case CpuIsa::scalar: return true;
    case CpuIsa::avx2: return cpu::cpu_has_avx2();
    case CpuIsa::avx512: return cpu::cpu_has_avx512();
  }
  return false;
}

const char* kd_loss_cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::best: return kd_loss_cpu_isa_name(kd_loss_cpu_best_isa());
    case CpuIsa::scalar: return "scalar";
    case CpuIsa::avx2: return "avx2";
    case CpuIsa::avx512: return "avx512";
  }
  return "unknown";
}

void kd_loss_forward_cpu(const KdLossArgs& args) { kd_loss_forward_cpu(args, CpuIsa::best); }

int64_t kd_loss_cpu_parallel_width(int64_t rows, int64_t vocab) {
  if (rows <= 0 || vocab <= 0) return 1;
  std::atomic<int64_t> tasks{0};
  at::parallel_for(0, rows, cpu::row_grain(vocab), [&](int64_t, int64_t) { tasks.fetch_add(1); });
  return std::max<int64_t>(1, tasks.load());
}

void kd_loss_forward_cpu(const KdLossArgs& args, CpuIsa isa) {
  kd_loss_check_args(args);
  if (isa == CpuIsa::best) isa = kd_loss_cpu_best_isa();
  if (!kd_loss_cpu_isa_supported(isa))
    throw std::invalid_argument(std::string("kd_loss_forward_cpu: this CPU does not support ") +
                                kd_loss_cpu_isa_name(isa));
  const int64_t N = args.rows;
  if (N == 0) {
    args.sums[0] = args.sums[1] = args.sums[2] = 0.0f;
    return;
  }
  const cpu::Plan plan = cpu::make_plan(args);
  const cpu::RowsFn rows_fn = isa == CpuIsa::avx512 ? cpu::isa_avx512::rows
                              : isa == CpuIsa::avx2 ? cpu::isa_avx2::rows
                                                    : cpu::isa_scalar::rows;
  std::vector<float> kd_scratch, ce_scratch;
  float* row_kd = args.row_kd;
  float* row_ce = args.row_ce;
  if (!row_kd) kd_scratch.resize(static_cast<size_t>(N)), row_kd = kd_scratch.data();
  if (!row_ce) ce_scratch.resize(static_cast<size_t>(N)), row_ce = ce_scratch.data();

  at::parallel_for(0, N, cpu::row_grain(args.vocab),
                   [&](int64_t begin, int64_t end) { rows_fn(args, plan, begin, end, row_kd, row_ce); });

  // Fixed-order sums over rows (deterministic for any thread count), in double.
  double sum_kd = 0, sum_ce = 0;
  for (int64_t i = 0; i < N; ++i) {
    sum_kd += row_kd[i];
    sum_ce += row_ce[i];
  }
  const double alpha = args.alpha, inv_normalizer = args.inv_normalizer;
  args.sums[0] = static_cast<float>((alpha * sum_kd + (1.0 - alpha) * sum_ce) * inv_normalizer);
  args.sums[1] = static_cast<float>(sum_kd * inv_normalizer);
  args.sums[2] = static_cast<float>(sum_ce * inv_normalizer);
}

}  // namespace distill::kernels
