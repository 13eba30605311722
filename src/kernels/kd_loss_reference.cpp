// Scalar double-precision reference of the fused distillation loss: the definitions of
// kd_loss_kernels.h written out term by term, one row at a time, with full-row temporaries. Slow by design;
// the kernels are tested against it.
#include "distill/kernels/kd_loss_reference.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace distill::kernels {

float bf16_bits_to_float(uint16_t bits) {
  const uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t float_to_bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float f16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    magnitude = mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  uint32_t u;
  std::memcpy(&u, &magnitude, sizeof u);
  u |= sign;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Round to nearest even (F. Giesen's float_to_half_fast3_rtne; the subnormal branch rounds with an fp32 add).
uint16_t float_to_f16_bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, sizeof x);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t out;
  if (x >= (127u + 16u) << 23) {  // >= 2^16 (or inf / NaN): inf, NaN stays NaN
    out = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
  } else if (x < 113u << 23) {  // below 2^-14: subnormal half or zero
    const uint32_t magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    float f, magic;
    std::memcpy(&f, &x, sizeof f);
    std::memcpy(&magic, &magic_bits, sizeof magic);
    f += magic;
    uint32_t r;
    std::memcpy(&r, &f, sizeof r);
    out = static_cast<uint16_t>(r - magic_bits);
  } else {
    const uint32_t mantissa_odd = (x >> 13) & 1u;
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;  // rebias (wraps, as intended) and round
    x += mantissa_odd;
    out = static_cast<uint16_t>(x >> 13);
  }
  return static_cast<uint16_t>(out | (sign >> 16));
}

namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double load(const void* base, ScalarType dtype, int64_t index) {
  switch (dtype) {
    case ScalarType::f32: return static_cast<const float*>(base)[index];
    case ScalarType::bf16: return bf16_bits_to_float(static_cast<const uint16_t*>(base)[index]);
    case ScalarType::f16: return f16_bits_to_float(static_cast<const uint16_t*>(base)[index]);
  }
  return kNaN;
}

// The kernels upcast to fp32 before dividing by T; the reference divides the same fp32 value in double.
double logsumexp(const std::vector<double>& x) {
  double m = kNegInf;
  for (double v : x) m = std::max(m, v);
  if (m == kNegInf) return kNegInf;
  double s = 0;
  for (double v : x) s += std::exp(v - m);
  return m + std::log(s);
}

// log(exp(x) + exp(y)) without overflow, -inf when both are -inf.
double logaddexp(double x, double y) {
  const double m = std::max(x, y);
  if (m == kNegInf) return kNegInf;
  return m + std::log(std::exp(x - m) + std::exp(y - m));
}

}  // namespace

void kd_loss_forward_reference(const KdLossArgs& args, double* grad, double* row_kd, double* row_ce,
                               double* sums) {
  KdLossArgs checked = args;  // the reference writes its own double outputs; args.sums may be null
  float unused_sums[3];
  checked.sums = unused_sums;
  kd_loss_check_args(checked);
  const int64_t n_rows = args.rows, V = args.vocab;
  const double T = args.temperature, alpha = args.alpha, beta = args.beta;
  const double inv_normalizer = args.inv_normalizer;
  const bool sparse = args.topk_index != nullptr;
  const bool has_labels = args.labels != nullptr;
  Divergence kind = args.kind;
  if (kind == Divergence::jsd && beta == 0.0) kind = Divergence::forward_kl;
  if (kind == Divergence::jsd && beta == 1.0) kind = Divergence::reverse_kl;
  // d loss / d s = alpha * inv_normalizer * (T^2 or 1) * (1/T) * dD/db + (1 - alpha) * inv_normalizer * dce/ds
  const double kd_scale = args.t2_scale ? T * T : 1.0;
  const double kd_grad_scale = alpha * inv_normalizer * kd_scale / T;
  const double ce_grad_scale = has_labels ? (1.0 - alpha) * inv_normalizer : 0.0;

  std::vector<double> s(V), b(V), a(V), log_p(V), log_q(V), p(V), q(V), dD_db(V);
  double sum_kd = 0, sum_ce = 0;
  for (int64_t i = 0; i < n_rows; ++i) {
    double* g = grad ? grad + i * V : nullptr;
    if (g) std::fill(g, g + V, 0.0);
    double kd = 0, ce = 0;
    const int64_t y = has_labels ? args.labels[i] : 0;
    const bool ignored = has_labels && y == args.ignore_index;
    for (int64_t v = 0; v < V && !ignored; ++v) {
      s[v] = load(args.student, args.student_dtype, i * args.student_row_stride + v);
      b[v] = s[v] / T;
    }
    const double lse_b = ignored ? kNegInf : logsumexp(b);
    // Ignored rows and rows whose student logits are all -inf (no distribution) count nowhere.
    if (!ignored && lse_b != kNegInf) {
      for (int64_t v = 0; v < V; ++v) {
        log_q[v] = b[v] - lse_b;
        q[v] = std::exp(log_q[v]);
      }
      const bool label_in_range = y >= 0 && y < V;
      if (has_labels) ce = label_in_range ? logsumexp(s) - s[y] : kNaN;

      // Divergence D and dD/db.
      double D = 0;
      std::fill(dD_db.begin(), dD_db.end(), 0.0);
      if (!sparse) {
        for (int64_t v = 0; v < V; ++v)
          a[v] = load(args.teacher, args.teacher_dtype, i * args.teacher_row_stride + v) / T;
        const double lse_a = logsumexp(a);
        if (lse_a != kNegInf) {  // a teacher row of all -inf has no distribution: no KD term
          for (int64_t v = 0; v < V; ++v) {
            log_p[v] = a[v] - lse_a;
            p[v] = std::exp(log_p[v]);
          }
          if (kind == Divergence::forward_kl) {
            for (int64_t v = 0; v < V; ++v) {
              if (p[v] > 0) D += p[v] * (log_p[v] - log_q[v]);
              dD_db[v] = q[v] - p[v];
            }
          } else if (kind == Divergence::reverse_kl) {
            for (int64_t v = 0; v < V; ++v)
              if (q[v] > 0) D += q[v] * (log_q[v] - log_p[v]);
            for (int64_t v = 0; v < V; ++v)
              if (q[v] > 0) dD_db[v] = q[v] * (log_q[v] - log_p[v] - D);
          } else {  // jsd, 0 < beta < 1
            double kl_pm = 0, kl_qm = 0;
            std::vector<double> log_m(V);
            for (int64_t v = 0; v < V; ++v) {
              log_m[v] = logaddexp(std::log(beta) + log_p[v], std::log1p(-beta) + log_q[v]);
              if (p[v] > 0) kl_pm += p[v] * (log_p[v] - log_m[v]);
              if (q[v] > 0) kl_qm += q[v] * (log_q[v] - log_m[v]);
            }
            D = beta * kl_pm + (1 - beta) * kl_qm;
            for (int64_t v = 0; v < V; ++v)
              if (q[v] > 0) dD_db[v] = (1 - beta) * q[v] * (log_q[v] - log_m[v] - kl_qm);
          }
        }
      } else {
        const int64_t K = args.topk;
        const int64_t* index = args.topk_index + i * K;
        bool indices_in_range = true;
        std::vector<double> a_k(K);
        for (int64_t k = 0; k < K; ++k) {
          // index -1: an absent entry (a row with fewer than K): probability 0, in no sum, no index.
          a_k[k] = index[k] < 0 ? kNegInf : load(args.topk_logits, args.teacher_dtype, i * K + k) / T;
          indices_in_range = indices_in_range && index[k] >= -1 && index[k] < V;
        }
        if (!indices_in_range) {
          D = kNaN;  // caller error; the kernels report it the same way instead of reading out of bounds
        } else if (args.topk_tail == TopkTail::ignore) {
          const double lse_k = logsumexp(a_k);
          if (lse_k != kNegInf) {
            for (int64_t v = 0; v < V; ++v) dD_db[v] = q[v];
            for (int64_t k = 0; k < K; ++k) {
              if (index[k] < 0) continue;
              const double log_pk = a_k[k] - lse_k, pk = std::exp(log_pk);
              if (pk > 0) D += pk * (log_pk - log_q[index[k]]);
              dD_db[index[k]] = q[index[k]] - pk;
            }
          }
        } else {  // tail
          const double lse_t = args.teacher_lse[i];
          double sum_p = 0;
          std::vector<bool> in_topk(static_cast<size_t>(V), false);
          for (int64_t k = 0; k < K; ++k) {
            if (index[k] < 0) continue;
            const double log_pk = a_k[k] - lse_t, pk = std::exp(log_pk);
            if (pk > 0) D += pk * (log_pk - log_q[index[k]]);
            sum_p += pk;
            in_topk[static_cast<size_t>(index[k])] = true;
          }
          double m_t = 1 - sum_p, m_s = 0;
          if (m_t < kd_loss_tail_mass_floor) m_t = 0;
          for (int64_t v = 0; v < V; ++v)
            if (!in_topk[static_cast<size_t>(v)]) m_s += q[v];
          if (m_t > 0) D += m_t * (std::log(m_t) - std::log(m_s));
          const double off_topk = 1 - (m_s > 0 ? m_t / m_s : 0.0);
          for (int64_t v = 0; v < V; ++v) dD_db[v] = q[v] * off_topk;
          for (int64_t k = 0; k < K; ++k)
            if (index[k] >= 0) dD_db[index[k]] = q[index[k]] - std::exp(a_k[k] - lse_t);
        }
      }
      kd = D * kd_scale;

      if (g) {
        for (int64_t v = 0; v < V; ++v) g[v] = kd_grad_scale * dD_db[v];
        if (has_labels) {
          const double lse_s = logsumexp(s);
          for (int64_t v = 0; v < V; ++v) g[v] += ce_grad_scale * std::exp(s[v] - lse_s);
          if (label_in_range) g[y] -= ce_grad_scale;
        }
      }
    }
    if (row_kd) row_kd[i] = kd;
    if (row_ce) row_ce[i] = ce;
    sum_kd += kd;
    sum_ce += ce;
  }
  if (sums) {
    sums[0] = (alpha * sum_kd + (1 - alpha) * sum_ce) * inv_normalizer;
    sums[1] = sum_kd * inv_normalizer;
    sums[2] = sum_ce * inv_normalizer;
  }
}

}  // namespace distill::kernels
