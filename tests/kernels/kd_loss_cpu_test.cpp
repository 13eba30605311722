// The fused CPU distillation-loss kernel against the double-precision reference, over many shapes, dtypes,
// kinds and options; the reference's own gradient against central differences; determinism; and the
// vectorised exp / log against libm.
#include <ATen/Parallel.h>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <limits>

#include "../../src/kernels/kd_loss_cpu_simd.h"
#include "kd_loss_test_util.h"

using namespace distill::kernels;
using namespace kd_test;

namespace {

std::vector<CpuIsa> isas() {
  std::vector<CpuIsa> out;
  for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512})
    if (kd_loss_cpu_isa_supported(isa)) out.push_back(isa);
  return out;
}

Outputs run_cpu(const Problem& p, CpuIsa isa) {
  Outputs o;
  KdLossArgs a = p.args;
  const int64_t N = p.spec.N, V = p.spec.V;
  if (p.spec.want_grad) {
    o.grad.assign(static_cast<size_t>(std::max<int64_t>(1, N * V) * element_bytes(p.spec.sdt)), 0xA5);  // poison
    a.grad = o.grad.data();
  }
  o.row_kd.assign(static_cast<size_t>(N), -1.0f);
  o.row_ce.assign(static_cast<size_t>(N), -1.0f);
  a.row_kd = o.row_kd.data();
  a.row_ce = o.row_ce.data();
  a.sums = o.sums;
  kd_loss_forward_cpu(a, isa);
  return o;
}

// Runs every supported instruction set on one problem and checks each against the reference.
void check(const Spec& spec) {
  auto p = make_problem(spec);
  const Reference ref = run_reference(*p);
  const Tolerance tol = tolerance(*p);
  for (CpuIsa isa : isas()) {
    const Outputs o = run_cpu(*p, isa);
    const std::string err = compare(*p, ref, o, tol);
    INFO(kd_loss_cpu_isa_name(isa) << " " << spec.str() << "\n" << err);
    CHECK(err.empty());
  }
}

bool same_bits(const Outputs& x, const Outputs& y) {
  return x.grad == y.grad && std::memcmp(x.sums, y.sums, sizeof x.sums) == 0 &&
         std::memcmp(x.row_kd.data(), y.row_kd.data(), x.row_kd.size() * 4) == 0 &&
         std::memcmp(x.row_ce.data(), y.row_ce.data(), x.row_ce.size() * 4) == 0;
}

// Restores the ATen thread count when a test changes it.
struct ThreadCount {
  int saved = at::get_num_threads();
  ~ThreadCount() { at::set_num_threads(saved); }
};

}  // namespace

TEST_CASE("kd_loss cpu: dense grid of shapes, dtypes, kinds and options", "[kd_loss][cpu]") {
  for (const Spec& s : dense_grid({1, 2, 10, 17, 1000, 1029, 2053})) check(s);
}

TEST_CASE("kd_loss cpu: large vocabularies", "[kd_loss][cpu]") {
  int variant = 0;
  for (int64_t V : {32001, 128256}) {
    for (ScalarType dt : {ScalarType::f32, ScalarType::bf16, ScalarType::f16}) {
      for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
        Spec s;
        s.N = V == 32001 ? 7 : 2, s.V = V, s.sdt = dt, s.tdt = dt, s.kind = kind;
        s.T = variant % 2 ? 2.0f : 1.0f;
        s.alpha = 0.5f, s.labels = true;
        s.seed = static_cast<uint32_t>(100 + variant++);
        check(s);
      }
    }
  }
}

TEST_CASE("kd_loss cpu: many rows", "[kd_loss][cpu]") {
  for (int64_t V : {10, 1000}) {
    Spec s;
    s.N = 4096, s.V = V, s.sdt = ScalarType::bf16, s.tdt = ScalarType::bf16;
    s.labels = true, s.alpha = 0.5f, s.T = 2.0f, s.ignore_every = 5, s.inv_norm = 1.0f / 3000;
    check(s);
  }
  Spec s;
  s.N = 4096, s.V = 32001, s.kind = Divergence::forward_kl, s.labels = true, s.alpha = 0.7f, s.inv_norm = 1.0f / 4096;
  check(s);
}

// V <= 64 with contiguous rows runs a tile of W rows at a time (one row per SIMD lane); tiles with an ignored
// label or a row without mass fall back to the row-by-row path, and the N % W rows left over take it too.
TEST_CASE("kd_loss cpu: small vocabularies, several rows per vector", "[kd_loss][cpu]") {
  // T = 1, 4, 2, 3: the cross-entropy's softmax shared, as a fourth power, as a square, and its own.
  const float temps[] = {1.0f, 4.0f, 2.0f, 3.0f};
  const float alphas[] = {1.0f, 0.5f, 0.0f};
  const Fill fills[] = {Fill::normal, Fill::masked, Fill::extreme, Fill::student_inf, Fill::normal};
  int variant = 0;
  for (int64_t V : {1, 2, 3, 10, 16, 33, 64, 65}) {
    for (int64_t N : {16, 45, 130}) {
      for (ScalarType dt : {ScalarType::f32, ScalarType::bf16, ScalarType::f16}) {
        for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
          Spec s;
          s.N = N, s.V = V, s.sdt = dt, s.tdt = dt, s.kind = kind;
          s.T = temps[variant % 4];
          s.alpha = alphas[(variant / 2) % 3];
          s.labels = s.alpha != 1.0f || variant % 4 == 0;
          s.ignore_every = s.labels && variant % 3 == 0 ? 7 : 0;
          s.fill = fills[variant % 5];
          s.t2 = variant % 7 != 0;
          s.beta = 0.4f;
          s.inv_norm = 1.0f / float(N);
          s.want_grad = variant % 11 != 0;
          s.seed = static_cast<uint32_t>(500 + variant);
          ++variant;
          check(s);
        }
      }
    }
  }
  // A teacher row without mass in every tile (Fill::teacher_inf leaves rows finite; masked has rows 0 and 1).
  Spec s;
  s.N = 64, s.V = 10, s.fill = Fill::teacher_inf, s.labels = true, s.alpha = 0.5f, s.T = 2.0f;
  check(s);
}

TEST_CASE("kd_loss cpu: mixed dtypes and strided rows", "[kd_loss][cpu]") {
  for (const Spec& s : mixed_dtype_grid()) check(s);
}

TEST_CASE("kd_loss cpu: jsd beta endpoints are exactly forward / reverse KL", "[kd_loss][cpu]") {
  for (int64_t V : {10, 1029}) {
    for (float beta : {0.0f, 1.0f}) {
      Spec s;
      s.N = 7, s.V = V, s.kind = Divergence::jsd, s.beta = beta, s.T = 2.0f, s.labels = true, s.alpha = 0.5f;
      check(s);
      auto jsd = make_problem(s);
      s.kind = beta == 0.0f ? Divergence::forward_kl : Divergence::reverse_kl;
      auto kl = make_problem(s);
      for (CpuIsa isa : isas()) {
        INFO(kd_loss_cpu_isa_name(isa) << " V=" << V << " beta=" << beta);
        CHECK(same_bits(run_cpu(*jsd, isa), run_cpu(*kl, isa)));
      }
    }
  }
  // Interior beta: the generalized JSD itself.
  for (float beta : {0.1f, 0.5f, 0.9f}) {
    Spec s;
    s.N = 7, s.V = 1000, s.kind = Divergence::jsd, s.beta = beta, s.T = 1.5f;
    check(s);
  }
}

TEST_CASE("kd_loss cpu: ignored rows, masked vocabularies, extreme logits", "[kd_loss][cpu]") {
  for (const Spec& s : special_values_grid({10, 1000, 2053})) check(s);
}

TEST_CASE("kd_loss cpu: infinite divergences are reported as +inf", "[kd_loss][cpu]") {
  // A finite teacher entry where the student is -inf: KL(P||Q) = inf, gradient still finite.
  Spec s;
  s.N = 4, s.V = 50, s.fill = Fill::student_inf;
  auto p = make_problem(s);
  const Outputs o = run_cpu(*p, CpuIsa::best);
  const Reference ref = run_reference(*p);
  for (int64_t i = 0; i < s.N; ++i) {
    CHECK(std::isinf(ref.row_kd[static_cast<size_t>(i)]));
    CHECK(o.row_kd[static_cast<size_t>(i)] == std::numeric_limits<float>::infinity());
  }
  for (int64_t j = 0; j < s.N * s.V; ++j) CHECK(std::isfinite(get(o.grad.data(), s.sdt, j)));
  // Reverse KL with the teacher -inf where the student is finite: inf as well.
  s.fill = Fill::teacher_inf, s.kind = Divergence::reverse_kl;
  auto r = make_problem(s);
  const Outputs ro = run_cpu(*r, CpuIsa::best);
  for (int64_t i = 0; i < s.N; ++i) CHECK(ro.row_kd[static_cast<size_t>(i)] == std::numeric_limits<float>::infinity());
}

TEST_CASE("kd_loss cpu: all rows ignored gives a zero, finite loss and a zero gradient", "[kd_loss][cpu]") {
  for (ScalarType dt : {ScalarType::f32, ScalarType::bf16}) {
    Spec s;
    s.N = 6, s.V = 33, s.sdt = s.tdt = dt, s.all_ignored = true, s.alpha = 0.5f, s.inv_norm = 0.0f;
    check(s);
    auto p = make_problem(s);
    for (CpuIsa isa : isas()) {
      const Outputs o = run_cpu(*p, isa);
      for (float x : o.sums) CHECK(x == 0.0f);
      for (int64_t j = 0; j < s.N * s.V; ++j) CHECK(get(o.grad.data(), dt, j) == 0.0);
    }
  }
}

TEST_CASE("kd_loss cpu: sparse top-k teacher", "[kd_loss][cpu]") {
  for (const Spec& s : sparse_grid()) check(s);
}

TEST_CASE("kd_loss cpu: loss only (no gradient buffer)", "[kd_loss][cpu]") {
  for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
    Spec s;
    s.N = 7, s.V = 2053, s.kind = kind, s.want_grad = false, s.labels = true, s.alpha = 0.25f, s.T = 3.0f;
    check(s);
  }
}

TEST_CASE("kd_loss reference: analytic gradient equals central differences", "[kd_loss][cpu][reference]") {
  // fp32 inputs with values on a 2^-9 grid, so that s +- h is exact; the loss is evaluated in double.
  const double h = 1.0 / 512;
  std::vector<Spec> specs;
  for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
    Spec s;
    s.N = 3, s.V = 11, s.kind = kind, s.beta = 0.3f, s.T = 2.0f, s.labels = true, s.alpha = 0.6f,
    s.inv_norm = 0.5f, s.ignore_every = 2;
    specs.push_back(s);
    s.T = 1.0f, s.t2 = false, s.fill = Fill::masked, s.N = 4, s.ignore_every = 0;
    specs.push_back(s);
  }
  for (TopkTail tail : {TopkTail::ignore, TopkTail::tail}) {
    Spec s;
    s.N = 3, s.V = 12, s.sparse = true, s.K = 4, s.tail = tail, s.T = 1.5f, s.labels = true, s.alpha = 0.7f;
    specs.push_back(s);
    s.N = 4, s.absent_every = 3;  // rows 0 and 3 without entries, rows 1 and 2 with 3 and 2 of 4
    specs.push_back(s);
  }
  for (const Spec& spec : specs) {
    auto p = make_problem(spec);
    float* s = reinterpret_cast<float*>(p->student.data());
    for (int64_t j = 0; j < spec.N * spec.V; ++j)
      if (std::isfinite(s[j])) s[j] = std::round(s[j] * 512.0f) / 512.0f;
    const Reference ref = run_reference(*p);
    for (int64_t i = 0; i < spec.N; ++i) {
      for (int64_t v = 0; v < spec.V; ++v) {
        float& x = s[i * p->args.student_row_stride + v];
        if (std::isinf(x)) continue;
        const float saved = x;
        double loss[2];
        for (int side = 0; side < 2; ++side) {
          x = saved + static_cast<float>(side ? -h : h);
          loss[side] = run_reference(*p).sums[0];
        }
        x = saved;
        const double numeric = (loss[0] - loss[1]) / (2 * h);
        const double analytic = ref.grad[static_cast<size_t>(i * spec.V + v)];
        INFO(spec.str() << " at [" << i << "," << v << "] numeric " << numeric << " analytic " << analytic);
        CHECK(std::fabs(numeric - analytic) <= 1e-6 + 1e-3 * std::fabs(analytic));
      }
    }
  }
}

TEST_CASE("kd_loss cpu: deterministic, and independent of the thread count", "[kd_loss][cpu]") {
  ThreadCount restore;
  for (Divergence kind : {Divergence::forward_kl, Divergence::jsd}) {
    Spec s;
    s.N = 301, s.V = 3001, s.kind = kind, s.sdt = s.tdt = ScalarType::bf16, s.labels = true, s.alpha = 0.5f,
    s.T = 2.0f, s.ignore_every = 7;
    auto p = make_problem(s);
    at::set_num_threads(2);
    // The rows really are split: at::parallel_for runs serially in code compiled without OpenMP (the kernel
    // did, unnoticed, until distill_core was built with it), and then this test compared one thread with one.
    REQUIRE(distill::kernels::kd_loss_cpu_parallel_width(s.N, s.V) == 2);
    const Outputs a = run_cpu(*p, CpuIsa::best);
    const Outputs b = run_cpu(*p, CpuIsa::best);
    CHECK(same_bits(a, b));
    at::set_num_threads(1);
    const Outputs c = run_cpu(*p, CpuIsa::best);
    CHECK(same_bits(a, c));
  }
}

TEST_CASE("kd_loss cpu: argument errors are reported", "[kd_loss][cpu]") {
  Spec s;
  auto p = make_problem(s);
  float sums[3];
  KdLossArgs a = p->args;
  a.sums = sums;
  CHECK_NOTHROW(kd_loss_forward_cpu(a));
  KdLossArgs bad = a;
  bad.sums = nullptr;
  CHECK_THROWS_AS(kd_loss_forward_cpu(bad), std::invalid_argument);
  bad = a, bad.teacher_row_stride = s.V - 1;
  CHECK_THROWS_WITH(kd_loss_forward_cpu(bad), Catch::Contains("teacher_row_stride"));
  bad = a, bad.temperature = 0.0f;
  CHECK_THROWS_WITH(kd_loss_forward_cpu(bad), Catch::Contains("temperature"));
  bad = a, bad.kind = Divergence::jsd, bad.beta = 1.5f;
  CHECK_THROWS_WITH(kd_loss_forward_cpu(bad), Catch::Contains("beta"));
  for (float alpha : {-0.25f, 1.5f, std::nanf("")}) {
    bad = a, bad.alpha = alpha;
    CHECK_THROWS_WITH(kd_loss_forward_cpu(bad), Catch::Contains("alpha must be in [0, 1]"));
  }
  for (float inv : {-1.0f, std::numeric_limits<float>::infinity(), std::nanf("")}) {
    bad = a, bad.inv_normalizer = inv;
    CHECK_THROWS_WITH(kd_loss_forward_cpu(bad), Catch::Contains("inv_normalizer"));
  }
  bad = a, bad.alpha = 0.0f, bad.inv_normalizer = 0.0f;  // the ends of both ranges are valid
  CHECK_NOTHROW(kd_loss_forward_cpu(bad));
  bad = a, bad.teacher = nullptr;
  CHECK_THROWS_WITH(kd_loss_forward_cpu(bad), Catch::Contains("teacher"));
  // N = 0: nothing to do, sums are zero.
  bad = a, bad.rows = 0, sums[0] = sums[1] = sums[2] = 7.0f;
  CHECK_NOTHROW(kd_loss_forward_cpu(bad));
  CHECK(sums[0] == 0.0f);
  if (!kd_loss_cuda_compiled()) {
    CHECK_THROWS(kd_loss_forward_cuda(a, nullptr, nullptr));
  }
}

// ----------------------------------------------------------------------------------------------------------
// The vectorised exp / log against libm (correctly rounded through double), in units in the last place.

namespace {

int64_t ulp_distance(float x, float y) {
  if (std::isnan(x) || std::isnan(y)) return std::isnan(x) && std::isnan(y) ? 0 : INT64_MAX;
  if (x == y) return 0;
  int32_t a, b;
  std::memcpy(&a, &x, 4);
  std::memcpy(&b, &y, 4);
  if (a < 0) a = INT32_MIN - a;
  if (b < 0) b = INT32_MIN - b;
  return std::llabs(static_cast<int64_t>(a) - b);
}

}  // namespace

enum class MathFn { exp, exp_nonpos, log };

// Each wrapper is compiled for its instruction set (the Vec methods are always_inline).
#define DISTILL_APPLY_BODY(Vec)                                                                    \
  for (int64_t i = 0; i + Vec::W <= n; i += Vec::W) {                                            \
    const Vec::R x = Vec::load(in + i);                                                          \
    const Vec::R y = fn == MathFn::exp          ? Vec::exp(x)                                    \
                     : fn == MathFn::exp_nonpos ? Vec::exp_nonpos(x)                             \
                                                : Vec::log(x);                                   \
    Vec::store(out + i, y);                                                                      \
  }

DISTILL_TARGET_PUSH("avx2,fma,f16c")
static void apply_avx2(MathFn fn, const float* in, float* out, int64_t n) {
  DISTILL_APPLY_BODY(distill::kernels::cpu::VecAvx2)
}
DISTILL_TARGET_POP
DISTILL_TARGET_PUSH("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")
static void apply_avx512(MathFn fn, const float* in, float* out, int64_t n) {
  DISTILL_APPLY_BODY(distill::kernels::cpu::VecAvx512)
}
DISTILL_TARGET_POP

TEST_CASE("kd_loss cpu: vectorised exp and log are within 2 ulp of libm", "[kd_loss][cpu][math]") {
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<float> exp_in, log_in;
  for (float x = -110.0f; x < 90.0f; x += 0.0037f) exp_in.push_back(x);
  for (float x : {-inf, inf, 0.0f, -0.0f, -1e4f, 1e4f, -87.3365f, -103.97f, -104.0f, 88.7228f, 88.7229f, 1e-30f})
    exp_in.push_back(x);
  std::mt19937 rng(5);
  std::uniform_int_distribution<uint32_t> bits(0, 0x7f7fffffu);  // every positive finite float, subnormals too
  for (int i = 0; i < 200000; ++i) {
    const uint32_t u = bits(rng);
    float x;
    std::memcpy(&x, &u, 4);
    log_in.push_back(x);
  }
  for (float x : {0.0f, inf, -1.0f, 1.0f, std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min(),
                  std::numeric_limits<float>::max(), 0.70710677f, 1.4142135f})
    log_in.push_back(x);
  // exp_nonpos: the same values as exp for x <= 0, -inf and the subnormal range included.
  std::vector<float> nonpos_in;
  for (float x : exp_in)
    if (x <= 0.0f) nonpos_in.push_back(x);
  for (auto* v : {&exp_in, &log_in})
    while (v->size() % 16) v->push_back(1.0f);
  while (nonpos_in.size() % 16) nonpos_in.push_back(-1.0f);
  for (CpuIsa isa : {CpuIsa::avx2, CpuIsa::avx512}) {
    if (!kd_loss_cpu_isa_supported(isa)) continue;
    auto apply = isa == CpuIsa::avx2 ? apply_avx2 : apply_avx512;
    std::vector<float> via_exp(nonpos_in.size()), via_nonpos(nonpos_in.size());
    apply(MathFn::exp, nonpos_in.data(), via_exp.data(), static_cast<int64_t>(nonpos_in.size()));
    apply(MathFn::exp_nonpos, nonpos_in.data(), via_nonpos.data(), static_cast<int64_t>(nonpos_in.size()));
    INFO(kd_loss_cpu_isa_name(isa) << " exp_nonpos against exp over " << nonpos_in.size() << " inputs <= 0");
    CHECK(std::memcmp(via_exp.data(), via_nonpos.data(), via_exp.size() * sizeof(float)) == 0);
    for (bool is_exp : {true, false}) {
      const std::vector<float>& in = is_exp ? exp_in : log_in;
      std::vector<float> out(in.size());
      apply(is_exp ? MathFn::exp : MathFn::log, in.data(), out.data(), static_cast<int64_t>(in.size()));
      int64_t worst = 0;
      float worst_x = 0;
      for (size_t i = 0; i < in.size(); ++i) {
        const double want_d = is_exp ? std::exp(static_cast<double>(in[i])) : std::log(static_cast<double>(in[i]));
        const float want = static_cast<float>(want_d);
        const int64_t d = ulp_distance(out[i], want);
        if (d > worst) worst = d, worst_x = in[i];
      }
      INFO(kd_loss_cpu_isa_name(isa) << (is_exp ? " exp" : " log") << " worst " << worst << " ulp at " << worst_x);
      CHECK(worst <= 2);
    }
  }
}
