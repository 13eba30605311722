// Problem builder and comparison helpers shared by the CPU and CUDA kernel tests.
#pragma once

#include <algorithm>
#include <initializer_list>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "distill/kernels/kd_loss_kernels.h"
#include "distill/kernels/kd_loss_reference.h"

namespace kd_test {

using namespace distill::kernels;

enum class Fill {
  normal,        // N(0, scale^2) logits
  masked,        // ~30% of the entries -inf in both rows; row 0 all -inf in both, row 1 teacher all -inf
  extreme,       // +-1e4 + N(0, scale^2)
  student_inf,   // a few entries -inf in the student only
  teacher_inf,   // a few entries -inf in the teacher only
};

inline const char* name(ScalarType t) { return t == ScalarType::f32 ? "f32" : t == ScalarType::bf16 ? "bf16" : "f16"; }
inline const char* name(Divergence d) {
  return d == Divergence::forward_kl ? "fkl" : d == Divergence::reverse_kl ? "rkl" : "jsd";
}
inline const char* name(Fill f) {
  switch (f) {
    case Fill::normal: return "normal";
    case Fill::masked: return "masked";
    case Fill::extreme: return "extreme";
    case Fill::student_inf: return "student_inf";
    case Fill::teacher_inf: return "teacher_inf";
  }
  return "?";
}
inline int64_t element_bytes(ScalarType t) { return t == ScalarType::f32 ? 4 : 2; }

struct Spec {
  int64_t N = 7, V = 10;
  ScalarType sdt = ScalarType::f32, tdt = ScalarType::f32;
  Divergence kind = Divergence::forward_kl;
  float beta = 0.5f, T = 1.0f;
  bool t2 = true;
  float alpha = 1.0f;
  bool labels = false;
  int ignore_every = 0;  // every k-th row (starting at row 1) has label == ignore_index
  bool all_ignored = false;
  int64_t s_pad = 0, t_pad = 0;  // extra columns: row strides V + pad
  Fill fill = Fill::normal;
  bool sparse = false;
  TopkTail tail = TopkTail::ignore;
  int64_t K = 0;
  // Sparse: absent entries (index -1, as imported API logprobs give): row i % absent_every == 0 has none
  // present, other rows their last i % K entries absent. 0: every entry present.
  int absent_every = 0;
  float inv_norm = 1.0f;
  float scale = 3.0f;
  uint32_t seed = 1;
  bool want_grad = true;

  std::string str() const {
    std::ostringstream o;
    o << "N=" << N << " V=" << V << " s=" << name(sdt) << " t=" << name(tdt) << " kind=" << name(kind)
      << " beta=" << beta << " T=" << T << " t2=" << t2 << " alpha=" << alpha << " labels=" << labels
      << " ignore_every=" << ignore_every << " all_ignored=" << all_ignored << " pad=" << s_pad << "/" << t_pad
      << " fill=" << name(fill);
    if (sparse) o << " sparse K=" << K << (tail == TopkTail::tail ? " tail" : " ignore") << " absent_every=" << absent_every;
    o << " inv_norm=" << inv_norm << " seed=" << seed;
    return o.str();
  }
};

inline void put(std::vector<uint8_t>& buf, ScalarType t, int64_t i, float x) {
  if (t == ScalarType::f32) {
    std::memcpy(buf.data() + 4 * i, &x, 4);
  } else {
    const uint16_t h = t == ScalarType::bf16 ? float_to_bf16_bits(x) : float_to_f16_bits(x);
    std::memcpy(buf.data() + 2 * i, &h, 2);
  }
}

inline double get(const void* base, ScalarType t, int64_t i) {
  if (t == ScalarType::f32) return static_cast<const float*>(base)[i];
  const uint16_t h = static_cast<const uint16_t*>(base)[i];
  return t == ScalarType::bf16 ? bf16_bits_to_float(h) : f16_bits_to_float(h);
}

// Inputs in host memory, `args` pointing into them (outputs left for the caller to set).
struct Problem {
  Spec spec;
  std::vector<uint8_t> student, teacher, topk_logits;
  std::vector<int64_t> labels, topk_index;
  std::vector<float> teacher_lse;
  KdLossArgs args;
  Problem() = default;
  Problem(const Problem&) = delete;
  Problem& operator=(const Problem&) = delete;
};

inline std::unique_ptr<Problem> make_problem(const Spec& sp) {
  auto pr = std::make_unique<Problem>();
  Problem& p = *pr;
  p.spec = sp;
  std::mt19937 rng(sp.seed * 7919u + static_cast<uint32_t>(sp.V * 31 + sp.N));
  std::normal_distribution<float> normal(0.0f, sp.scale);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t N = sp.N, V = sp.V, s_stride = V + sp.s_pad, t_stride = V + sp.t_pad;
  p.student.assign(static_cast<size_t>(std::max<int64_t>(1, N * s_stride) * element_bytes(sp.sdt)), 0);
  std::vector<float> s(static_cast<size_t>(N * s_stride)), t(static_cast<size_t>(N * t_stride));
  for (int64_t i = 0; i < N; ++i) {
    // Teacher and student correlated, as in practice.
    for (int64_t v = 0; v < t_stride; ++v) t[i * t_stride + v] = normal(rng);
    for (int64_t v = 0; v < s_stride; ++v)
      s[i * s_stride + v] = v < V ? 0.6f * t[i * t_stride + v] + 0.8f * normal(rng) : normal(rng);
    for (int64_t v = 0; v < V; ++v) {
      float& sv = s[i * s_stride + v];
      float& tv = t[i * t_stride + v];
      switch (sp.fill) {
        case Fill::normal: break;
        case Fill::masked:
          if (unit(rng) < 0.3f || i == 0) sv = tv = -inf;
          if (i == 1) tv = -inf;
          break;
        case Fill::extreme: {
          const float sign = unit(rng) < 0.5f ? -1.0f : 1.0f;
          sv += sign * 1e4f;
          tv += (unit(rng) < 0.8f ? sign : -sign) * 1e4f;
          break;
        }
        case Fill::student_inf:
          if (unit(rng) < 0.2f && v != 0) sv = -inf;
          break;
        case Fill::teacher_inf:
          if (unit(rng) < 0.2f && v != 0) tv = -inf;
          break;
      }
    }
  }
  // Padding columns hold garbage the kernels must not read: NaN.
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t v = V; v < s_stride; ++v) s[i * s_stride + v] = std::numeric_limits<float>::quiet_NaN();
  }
  for (int64_t j = 0; j < N * s_stride; ++j) put(p.student, sp.sdt, j, s[j]);

  KdLossArgs& a = p.args;
  a.rows = N;
  a.vocab = V;
  a.student = p.student.data();
  a.student_row_stride = s_stride;
  a.student_dtype = sp.sdt;
  a.teacher_dtype = sp.tdt;
  if (!sp.sparse) {
    for (int64_t i = 0; i < N; ++i)
      for (int64_t v = V; v < t_stride; ++v) t[i * t_stride + v] = std::numeric_limits<float>::quiet_NaN();
    p.teacher.assign(static_cast<size_t>(std::max<int64_t>(1, N * t_stride) * element_bytes(sp.tdt)), 0);
    for (int64_t j = 0; j < N * t_stride; ++j) put(p.teacher, sp.tdt, j, t[j]);
    a.teacher = p.teacher.data();
    a.teacher_row_stride = t_stride;
  } else {
    // Top-K of a full teacher row; teacher_lse over the full (quantised) row at temperature T.
    const int64_t K = sp.K;
    p.topk_index.resize(static_cast<size_t>(std::max<int64_t>(1, N * K)));
    p.topk_logits.assign(static_cast<size_t>(std::max<int64_t>(1, N * K) * element_bytes(sp.tdt)), 0);
    p.teacher_lse.resize(static_cast<size_t>(N));
    std::vector<uint8_t> q(4);
    for (int64_t i = 0; i < N; ++i) {
      std::vector<std::pair<float, int64_t>> row(static_cast<size_t>(V));
      double m = -inf;
      for (int64_t v = 0; v < V; ++v) {
        put(q, sp.tdt, 0, t[i * t_stride + v]);
        const float tq = static_cast<float>(get(q.data(), sp.tdt, 0));
        row[static_cast<size_t>(v)] = {tq, v};
        m = std::max(m, static_cast<double>(tq) / sp.T);
      }
      double sum = 0;
      for (auto& e : row) sum += std::exp(static_cast<double>(e.first) / sp.T - m);
      p.teacher_lse[static_cast<size_t>(i)] = static_cast<float>(m + std::log(sum));
      std::partial_sort(row.begin(), row.begin() + K, row.end(),
                        [](const auto& x, const auto& y) { return x.first > y.first; });
      // Shuffle the order within the top-K: the kernels must not rely on it.
      std::shuffle(row.begin(), row.begin() + K, rng);
      for (int64_t k = 0; k < K; ++k) {
        p.topk_index[static_cast<size_t>(i * K + k)] = row[static_cast<size_t>(k)].second;
        put(p.topk_logits, sp.tdt, i * K + k, row[static_cast<size_t>(k)].first);
      }
      if (sp.absent_every > 0) {
        const int64_t absent = i % sp.absent_every == 0 ? K : i % std::max<int64_t>(K, 1);
        for (int64_t k = K - absent; k < K; ++k) {
          p.topk_index[static_cast<size_t>(i * K + k)] = -1;
          put(p.topk_logits, sp.tdt, i * K + k, 1e4f);  // must be read as nothing
        }
      }
    }
    a.topk_index = p.topk_index.data();
    a.topk_logits = p.topk_logits.data();
    a.topk = K;
    a.teacher_lse = sp.tail == TopkTail::tail ? p.teacher_lse.data() : nullptr;
    a.topk_tail = sp.tail;
  }
  if (sp.labels || sp.ignore_every || sp.all_ignored) {
    p.labels.resize(static_cast<size_t>(std::max<int64_t>(1, N)));
    std::uniform_int_distribution<int64_t> pick(0, V - 1);
    for (int64_t i = 0; i < N; ++i) {
      int64_t y = pick(rng);
      if (sp.fill == Fill::masked) {  // a label on a finite student entry (when there is one)
        for (int64_t tries = 0; tries < V && std::isinf(s[i * s_stride + y]); ++tries) y = (y + 1) % V;
      }
      const bool ignored = sp.all_ignored || (sp.ignore_every > 0 && i % sp.ignore_every == 1);
      p.labels[static_cast<size_t>(i)] = ignored ? -100 : y;
    }
    a.labels = p.labels.data();
  }
  a.ignore_index = -100;
  a.kind = sp.kind;
  a.beta = sp.beta;
  a.temperature = sp.T;
  a.t2_scale = sp.t2;
  a.alpha = sp.alpha;
  a.inv_normalizer = sp.inv_norm;
  return pr;
}

struct Reference {
  std::vector<double> grad, row_kd, row_ce;
  double sums[3] = {0, 0, 0};
};

inline Reference run_reference(const Problem& p) {
  Reference r;
  const int64_t N = p.spec.N, V = p.spec.V;
  if (p.spec.want_grad) r.grad.resize(static_cast<size_t>(N * V));
  r.row_kd.resize(static_cast<size_t>(N));
  r.row_ce.resize(static_cast<size_t>(N));
  kd_loss_forward_reference(p.args, p.spec.want_grad ? r.grad.data() : nullptr, r.row_kd.data(), r.row_ce.data(),
                            r.sums);
  return r;
}

// Kernel outputs in host memory.
struct Outputs {
  std::vector<uint8_t> grad;
  std::vector<float> row_kd, row_ce;
  float sums[3] = {0, 0, 0};
};

struct Tolerance {
  double grad_atol, grad_rtol, loss_atol, loss_rtol;
};

inline double max_abs_logit(const Problem& p) {
  return p.spec.fill == Fill::extreme ? 1e4 + 6 * p.spec.scale : 6 * p.spec.scale;
}

// fp32 arithmetic against the double reference. Losses: the row sums carry ~1e-6 relative error, and the
// log-ratio terms are differences of logits / T; gradients: the result is rounded once to the student's dtype.
inline Tolerance tolerance(const Problem& p) {
  const Spec& s = p.spec;
  const double kd_scale = s.t2 ? double(s.T) * s.T : 1.0;
  const double ck = std::fabs(s.alpha * s.inv_norm * kd_scale / s.T), cc = std::fabs((1 - s.alpha) * s.inv_norm);
  Tolerance t;
  const double logit_range = max_abs_logit(p) / s.T;
  t.loss_rtol = 1e-5;
  t.loss_atol = 2e-6 * (1.0 + std::log(double(s.V))) * (kd_scale + 1.0) * (1.0 + 1e-2 * logit_range);
  const double g = (ck + cc);
  switch (s.sdt) {
    case ScalarType::f32: t.grad_rtol = 5e-5, t.grad_atol = 1e-6 * g; break;
    case ScalarType::bf16: t.grad_rtol = 1.0 / 128, t.grad_atol = 1e-6 * g; break;        // 2^-9 rounding
    case ScalarType::f16: t.grad_rtol = 1.0 / 512, t.grad_atol = 1e-6 * g + 6e-8; break;  // 2^-11, subnormals
  }
  if (s.kind == Divergence::jsd && s.beta > 0 && s.beta < 1) t.grad_atol *= 4;  // log-add-exp per element
  if (const char* e = std::getenv("KD_TOL")) {  // scales every tolerance, to see the margin
    double f = std::atof(e);
    t.grad_atol *= f;
    t.grad_rtol *= f;
    t.loss_atol *= f;
    t.loss_rtol *= f;
  }
  return t;
}

inline bool close(double x, double ref, double atol, double rtol) {
  if (std::isnan(ref)) return std::isnan(x);
  if (std::isinf(ref)) return x == ref;
  if (!std::isfinite(x)) return false;
  return std::fabs(x - ref) <= atol + rtol * std::fabs(ref);
}

// Compares every output; returns "" or a description of the first few mismatches and the worst one.
inline std::string compare(const Problem& p, const Reference& r, const Outputs& o, const Tolerance& t) {
  std::ostringstream err;
  int reported = 0;
  const int64_t N = p.spec.N, V = p.spec.V;
  auto report = [&](const char* what, int64_t i, int64_t v, double x, double ref) {
    if (reported++ < 6) err << what << "[" << i << "," << v << "] got " << x << " want " << ref << "\n";
  };
  for (int64_t i = 0; i < N; ++i) {
    if (!close(o.row_kd[static_cast<size_t>(i)], r.row_kd[static_cast<size_t>(i)], t.loss_atol, t.loss_rtol))
      report("row_kd", i, 0, o.row_kd[static_cast<size_t>(i)], r.row_kd[static_cast<size_t>(i)]);
    if (!close(o.row_ce[static_cast<size_t>(i)], r.row_ce[static_cast<size_t>(i)], t.loss_atol, t.loss_rtol))
      report("row_ce", i, 0, o.row_ce[static_cast<size_t>(i)], r.row_ce[static_cast<size_t>(i)]);
  }
  const double sum_atol = t.loss_atol * std::max<int64_t>(N, 1) * std::fabs(p.spec.inv_norm);
  for (int k = 0; k < 3; ++k)
    if (!close(o.sums[k], r.sums[k], sum_atol, t.loss_rtol * 4)) report("sums", k, 0, o.sums[k], r.sums[k]);
  if (p.spec.want_grad) {
    double worst = 0;
    int64_t worst_at = -1;
    for (int64_t j = 0; j < N * V; ++j) {
      const double x = get(o.grad.data(), p.spec.sdt, j), ref = r.grad[static_cast<size_t>(j)];
      if (!close(x, ref, t.grad_atol, t.grad_rtol)) {
        report("grad", j / V, j % V, x, ref);
        const double excess = std::fabs(x - ref) / (t.grad_atol + t.grad_rtol * std::fabs(ref));
        if (!(excess <= worst)) worst = excess, worst_at = j;
      }
    }
    if (worst_at >= 0)
      err << "worst grad [" << worst_at / V << "," << worst_at % V << "] at " << worst << "x tolerance ("
          << reported << " mismatches)\n";
  }
  return err.str();
}

// ---------------------------------------------------------------------------------------------------------
// The grids of problems both kernels (CPU and CUDA) are checked on; each test passes its own vocabularies.

// Every dtype x kind over `vocabs` x N in {1, 7}; T, alpha, t2, labels and the normaliser cycle so that every
// value meets every shape / dtype / kind over the grid.
inline std::vector<Spec> dense_grid(std::initializer_list<int64_t> vocabs) {
  // 2 and 4 also take the CPU kernel's power path for the cross-entropy's softmax (CeSoftmax).
  const float temps[] = {1.0f, 2.0f, 4.0f, 20.0f};
  const float alphas[] = {1.0f, 0.5f, 0.0f};
  std::vector<Spec> out;
  int variant = 0;
  for (int64_t V : vocabs) {
    for (int64_t N : {1, 7}) {
      for (ScalarType dt : {ScalarType::f32, ScalarType::bf16, ScalarType::f16}) {
        for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
          Spec s;
          s.N = N, s.V = V, s.sdt = dt, s.tdt = dt, s.kind = kind;
          s.T = temps[variant % 4];
          s.alpha = alphas[(variant / 3) % 3];
          s.t2 = (variant / 9) % 2 == 0;
          s.labels = s.alpha != 1.0f || variant % 2 == 0;
          s.beta = kind == Divergence::jsd ? 0.5f : 0.3f;
          s.inv_norm = variant % 5 == 0 ? 1.0f : 1.0f / float(N + variant % 3);
          s.seed = static_cast<uint32_t>(variant);
          ++variant;
          out.push_back(s);
        }
      }
    }
  }
  return out;
}

// Student and teacher in different dtypes, rows strided (padded) differently.
inline std::vector<Spec> mixed_dtype_grid() {
  std::vector<Spec> out;
  for (int64_t V : {10, 1000, 32001}) {
    Spec s;
    s.N = 5, s.V = V, s.sdt = ScalarType::bf16, s.tdt = ScalarType::f32, s.t_pad = 13, s.s_pad = 3;
    s.labels = true, s.alpha = 0.5f, s.T = 4.0f;
    out.push_back(s);
    s.sdt = ScalarType::f32, s.tdt = ScalarType::f16, s.kind = Divergence::jsd, s.beta = 0.25f;
    out.push_back(s);
    s.sdt = ScalarType::f16, s.tdt = ScalarType::bf16, s.kind = Divergence::reverse_kl, s.t_pad = 128;
    out.push_back(s);
  }
  return out;
}

// Ignored rows, masked vocabularies (-inf), extreme logits (+-1e4), -inf in one side only, per kind.
inline std::vector<Spec> special_values_grid(std::initializer_list<int64_t> vocabs) {
  std::vector<Spec> out;
  for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
    for (int64_t V : vocabs) {
      Spec s;
      s.N = 9, s.V = V, s.kind = kind, s.labels = true, s.alpha = 0.5f, s.T = 2.0f;
      s.ignore_every = 3;
      out.push_back(s);
      s.ignore_every = 0;
      s.fill = Fill::masked;
      out.push_back(s);
      s.sdt = s.tdt = ScalarType::bf16;
      out.push_back(s);
      s.sdt = s.tdt = ScalarType::f32;
      s.fill = Fill::extreme;
      s.T = 1.0f;
      out.push_back(s);
      s.T = 4.0f;
      s.sdt = s.tdt = ScalarType::f16;
      out.push_back(s);
      s.sdt = s.tdt = ScalarType::f32;
      s.fill = Fill::student_inf;
      out.push_back(s);
      s.fill = Fill::teacher_inf;
      // Reverse KL there: the loss is +inf and its gradient inf - inf (checked separately).
      if (kind != Divergence::reverse_kl) out.push_back(s);
    }
  }
  return out;
}

// Sparse top-k teachers in both tail modes, then K = V (tail mode has no tail: the dense forward KL) and
// K = 0.
inline std::vector<Spec> sparse_grid() {
  std::vector<Spec> out;
  int variant = 0;
  for (TopkTail tail : {TopkTail::ignore, TopkTail::tail}) {
    for (int64_t V : {10, 1000, 32001}) {
      for (int64_t K : {1, 5, 64}) {
        if (K > V) continue;
        for (ScalarType dt : {ScalarType::f32, ScalarType::bf16}) {
          Spec s;
          s.N = 7, s.V = V, s.sparse = true, s.tail = tail, s.K = K, s.sdt = s.tdt = dt;
          s.T = variant % 2 ? 2.0f : 1.0f;
          s.labels = variant % 3 != 0, s.alpha = s.labels ? 0.5f : 1.0f;
          s.ignore_every = variant % 4 == 1 ? 3 : 0;
          s.seed = static_cast<uint32_t>(300 + variant++);
          out.push_back(s);
        }
      }
    }
  }
  // Rows with fewer than K entries and rows with none.
  for (TopkTail tail : {TopkTail::ignore, TopkTail::tail}) {
    for (int64_t V : {10, 1000}) {
      Spec s;
      s.N = 9, s.V = V, s.sparse = true, s.tail = tail, s.K = 5, s.absent_every = 4, s.labels = true, s.alpha = 0.5f;
      s.T = tail == TopkTail::tail ? 1.0f : 2.0f;
      s.seed = static_cast<uint32_t>(400 + V);
      out.push_back(s);
      s.sdt = s.tdt = ScalarType::bf16, s.labels = false, s.alpha = 1.0f, s.seed += 1;
      out.push_back(s);
    }
  }
  Spec s;
  s.N = 3, s.V = 17, s.sparse = true, s.tail = TopkTail::tail, s.K = 17;
  out.push_back(s);
  s.tail = TopkTail::ignore;
  out.push_back(s);
  s.K = 0;
  out.push_back(s);
  return out;
}

}  // namespace kd_test
