// The CUDA distillation-loss kernels against the double-precision reference (and, for shapes too large for
// it, against the fused CPU kernel), for every production variant (the experimental ones check themselves in
// dev/cuda). Host code: the CUDA runtime API only.
// Without a device every test prints "SKIPPED: no CUDA device" and passes (ctest marks it skipped).
#include <cuda_runtime.h>

#include <catch2/catch.hpp>

#include <cstdio>

#include "kd_loss_test_util.h"

using namespace distill::kernels;
using namespace kd_test;

namespace {

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define REQUIRE_DEVICE()                         \
  do {                                           \
    if (!have_device()) {                        \
      std::puts("SKIPPED: no CUDA device");      \
      return;                                    \
    }                                            \
  } while (0)

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(e));
}

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  size_t count = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : count(n) {
    cuda_ok(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc");
  }
  DeviceBuffer(const T* host, size_t n) : DeviceBuffer(n) {
    if (n) cuda_ok(cudaMemcpy(ptr, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
};

const CudaVariant kVariants[] = {CudaVariant::rows_per_warp, CudaVariant::block_per_row, CudaVariant::automatic};

const char* name(CudaVariant v) {
  switch (v) {
    case CudaVariant::automatic: return "automatic";
    case CudaVariant::rows_per_warp: return "rows_per_warp";
    case CudaVariant::block_per_row: return "block_per_row";
  }
  return "?";
}

// The problem's inputs on the device.
struct DeviceProblem {
  DeviceBuffer<uint8_t> student, teacher, topk_logits;
  DeviceBuffer<int64_t> labels, topk_index;
  DeviceBuffer<float> teacher_lse;
  KdLossArgs args;
  explicit DeviceProblem(const Problem& p)
      : student(p.student.data(), p.student.size()),
        teacher(p.teacher.data(), p.teacher.size()),
        topk_logits(p.topk_logits.data(), p.topk_logits.size()),
        labels(p.labels.data(), p.labels.size()),
        topk_index(p.topk_index.data(), p.topk_index.size()),
        teacher_lse(p.teacher_lse.data(), p.teacher_lse.size()) {
    args = p.args;
    args.student = student.ptr;
    if (p.args.teacher) args.teacher = teacher.ptr;
    if (p.args.topk_logits) args.topk_logits = topk_logits.ptr;
    if (p.args.labels) args.labels = labels.ptr;
    if (p.args.topk_index) args.topk_index = topk_index.ptr;
    if (p.args.teacher_lse) args.teacher_lse = teacher_lse.ptr;
  }
};

// Runs the kernel on a fresh stream with a poisoned gradient buffer; `unwritten` counts gradient elements
// still holding the poison afterwards (all-ones bits: NaN in every dtype).
Outputs run_cuda(const Problem& p, const DeviceProblem& d, CudaVariant variant, int64_t* unwritten,
                 bool row_outputs = true) {
  const int64_t N = p.spec.N, V = p.spec.V;
  const size_t grad_bytes = static_cast<size_t>(N * V * element_bytes(p.spec.sdt));
  DeviceBuffer<uint8_t> grad(p.spec.want_grad ? grad_bytes : 0);
  DeviceBuffer<float> row_kd(static_cast<size_t>(N)), row_ce(static_cast<size_t>(N)), sums(3);
  DeviceBuffer<uint8_t> workspace(static_cast<size_t>(kd_loss_cuda_workspace_bytes(d.args)));
  if (p.spec.want_grad) cuda_ok(cudaMemset(grad.ptr, 0xff, grad_bytes), "cudaMemset");
  KdLossArgs a = d.args;
  a.grad = p.spec.want_grad ? grad.ptr : nullptr;
  a.row_kd = row_outputs ? row_kd.ptr : nullptr;
  a.row_ce = row_outputs ? row_ce.ptr : nullptr;
  a.sums = sums.ptr;
  cudaStream_t stream;
  cuda_ok(cudaStreamCreate(&stream), "cudaStreamCreate");
  kd_loss_forward_cuda(a, workspace.ptr, stream, variant);
  cuda_ok(cudaStreamSynchronize(stream), "kernel");
  cuda_ok(cudaStreamDestroy(stream), "cudaStreamDestroy");
  Outputs o;
  o.row_kd.resize(static_cast<size_t>(N));
  o.row_ce.resize(static_cast<size_t>(N));
  if (row_outputs && N > 0) {
    cuda_ok(cudaMemcpy(o.row_kd.data(), row_kd.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
    cuda_ok(cudaMemcpy(o.row_ce.data(), row_ce.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  }
  cuda_ok(cudaMemcpy(o.sums, sums.ptr, sizeof o.sums, cudaMemcpyDeviceToHost), "D2H");
  if (p.spec.want_grad) {
    o.grad.resize(grad_bytes);
    if (grad_bytes) cuda_ok(cudaMemcpy(o.grad.data(), grad.ptr, grad_bytes, cudaMemcpyDeviceToHost), "D2H");
    int64_t left = 0;
    const int eb = static_cast<int>(element_bytes(p.spec.sdt));
    for (size_t j = 0; j < grad_bytes; j += static_cast<size_t>(eb)) {
      bool poison = true;
      for (int b = 0; b < eb; ++b) poison = poison && o.grad[j + static_cast<size_t>(b)] == 0xff;
      left += poison;
    }
    if (unwritten) *unwritten = left;
  }
  return o;
}

bool same_bits(const Outputs& x, const Outputs& y) {
  return x.grad == y.grad && std::memcmp(x.sums, y.sums, sizeof x.sums) == 0 &&
         std::memcmp(x.row_kd.data(), y.row_kd.data(), x.row_kd.size() * 4) == 0 &&
         std::memcmp(x.row_ce.data(), y.row_ce.data(), x.row_ce.size() * 4) == 0;
}

// Every variant against the double reference; every gradient element written.
void check(const Spec& spec) {
  auto p = make_problem(spec);
  const Reference ref = run_reference(*p);
  Tolerance tol = tolerance(*p);
  DeviceProblem d(*p);
  for (CudaVariant v : kVariants) {
    int64_t unwritten = 0;
    const Outputs o = run_cuda(*p, d, v, &unwritten);
    const std::string err = compare(*p, ref, o, tol);
    INFO(name(v) << " (" << kd_loss_cuda_describe(d.args, v) << ") " << spec.str() << "\n" << err);
    CHECK(err.empty());
    CHECK(unwritten == 0);
  }
}

// A fast host generator for the large shapes (std::normal_distribution is too slow for 2e9 values).
inline float hash_normalish(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  // Sum of four 16-bit uniforms: roughly normal, mean 0, sd ~1.
  float s = 0;
  for (int k = 0; k < 4; ++k) s += static_cast<float>((x >> (16 * k)) & 0xffff) * (1.0f / 65536.0f);
  return (s - 2.0f) * 3.4641f;
}

}  // namespace

TEST_CASE("kd_loss cuda: dense grid of shapes, dtypes, kinds and options", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  for (const Spec& s : dense_grid({1, 2, 10, 17, 1000, 1029, 2053, 4099})) check(s);
}

TEST_CASE("kd_loss cuda: large vocabularies, misaligned rows, many rows", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  int variant = 0;
  for (int64_t V : {32001, 128256}) {
    for (ScalarType dt : {ScalarType::f32, ScalarType::bf16, ScalarType::f16}) {
      for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
        Spec s;
        s.N = 5, s.V = V, s.sdt = dt, s.tdt = dt, s.kind = kind;
        s.T = variant % 2 ? 2.0f : 1.0f;
        s.alpha = 0.5f, s.labels = true;
        s.seed = static_cast<uint32_t>(100 + variant++);
        check(s);
      }
    }
  }
  for (int64_t V : {10, 1000}) {
    Spec s;
    s.N = 4096, s.V = V, s.sdt = s.tdt = ScalarType::bf16, s.labels = true, s.alpha = 0.5f, s.T = 2.0f,
    s.ignore_every = 5, s.inv_norm = 1.0f / 3000;
    check(s);
  }
}

TEST_CASE("kd_loss cuda: mixed dtypes and strided rows", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  for (const Spec& s : mixed_dtype_grid()) check(s);
}

TEST_CASE("kd_loss cuda: jsd beta endpoints are exactly forward / reverse KL", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  for (int64_t V : {10, 4099}) {
    for (float beta : {0.0f, 1.0f}) {
      Spec s;
      s.N = 7, s.V = V, s.kind = Divergence::jsd, s.beta = beta, s.T = 2.0f, s.labels = true, s.alpha = 0.5f;
      check(s);
      auto jsd = make_problem(s);
      s.kind = beta == 0.0f ? Divergence::forward_kl : Divergence::reverse_kl;
      auto kl = make_problem(s);
      DeviceProblem dj(*jsd), dk(*kl);
      for (CudaVariant v : kVariants) {
        INFO(name(v) << " V=" << V << " beta=" << beta);
        CHECK(same_bits(run_cuda(*jsd, dj, v, nullptr), run_cuda(*kl, dk, v, nullptr)));
      }
    }
  }
  for (float beta : {0.1f, 0.9f}) {
    Spec s;
    s.N = 7, s.V = 1000, s.kind = Divergence::jsd, s.beta = beta, s.T = 1.5f;
    check(s);
  }
}

TEST_CASE("kd_loss cuda: ignored rows, masked vocabularies, extreme logits", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  for (const Spec& s : special_values_grid({10, 1000, 20011})) check(s);
  for (bool with_rows : {true, false}) {  // all rows ignored; also without row outputs (workspace path)
    Spec s;
    s.N = 6, s.V = 33, s.all_ignored = true, s.alpha = 0.5f, s.inv_norm = 0.0f;
    auto p = make_problem(s);
    DeviceProblem d(*p);
    for (CudaVariant v : kVariants) {
      const Outputs o = run_cuda(*p, d, v, nullptr, with_rows);
      for (float x : o.sums) CHECK(x == 0.0f);
      for (int64_t j = 0; j < s.N * s.V; ++j) CHECK(get(o.grad.data(), s.sdt, j) == 0.0);
    }
  }
}

TEST_CASE("kd_loss cuda: sparse top-k teacher", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  for (const Spec& s : sparse_grid()) check(s);
}

TEST_CASE("kd_loss cuda: loss only, deterministic, errors", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
    Spec s;
    s.N = 7, s.V = 20011, s.kind = kind, s.want_grad = false, s.labels = true, s.alpha = 0.25f, s.T = 3.0f;
    check(s);
  }
  Spec s;
  s.N = 301, s.V = 30011, s.kind = Divergence::jsd, s.sdt = s.tdt = ScalarType::bf16, s.labels = true,
  s.alpha = 0.5f, s.ignore_every = 7;
  auto p = make_problem(s);
  DeviceProblem d(*p);
  for (CudaVariant v : kVariants) {
    INFO(name(v));
    CHECK(same_bits(run_cuda(*p, d, v, nullptr), run_cuda(*p, d, v, nullptr)));
  }
  KdLossArgs bad = d.args;
  bad.sums = nullptr;
  CHECK_THROWS_AS(kd_loss_forward_cuda(bad, nullptr, nullptr), std::invalid_argument);
  bad = d.args;
  float* sums = nullptr;
  cuda_ok(cudaMalloc(&sums, 3 * sizeof(float)), "cudaMalloc");
  bad.sums = sums;
  CHECK_THROWS_WITH(kd_loss_forward_cuda(bad, nullptr, nullptr), Catch::Contains("workspace"));
  cudaFree(sums);
  CHECK(kd_loss_cuda_compiled());
}

// One launch per call: each block counts itself done on a per-stream arrival counter, and the last one writes
// sums[] and re-arms the counter. Back-to-back launches on one stream, and launches interleaved on two streams
// with no synchronisation between them, must each see their own counter at zero and give the sums of a lone
// launch, bit for bit.
TEST_CASE("kd_loss cuda: back-to-back launches on one stream and on two streams", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  Spec sa;  // rows_per_warp, 256 blocks
  sa.N = 65536, sa.V = 10, sa.labels = true, sa.alpha = 0.5f, sa.T = 2.0f, sa.ignore_every = 5, sa.want_grad = false;
  Spec sb;  // block_per_row, 67 blocks
  sb.N = 67, sb.V = 5003, sb.kind = Divergence::jsd, sb.sdt = sb.tdt = ScalarType::bf16, sb.want_grad = false;
  auto pa = make_problem(sa), pb = make_problem(sb);
  DeviceProblem da(*pa), db(*pb);
  const Outputs lone_a = run_cuda(*pa, da, CudaVariant::automatic, nullptr);
  const Outputs lone_b = run_cuda(*pb, db, CudaVariant::automatic, nullptr);
  REQUIRE(compare(*pa, run_reference(*pa), lone_a, tolerance(*pa)).empty());

  constexpr int kRounds = 6;
  DeviceBuffer<float> sums(static_cast<size_t>(6 * kRounds));
  DeviceBuffer<uint8_t> ws_a(static_cast<size_t>(kd_loss_cuda_workspace_bytes(da.args)));
  DeviceBuffer<uint8_t> ws_b(static_cast<size_t>(kd_loss_cuda_workspace_bytes(db.args)));
  cudaStream_t one, two;
  cuda_ok(cudaStreamCreateWithFlags(&one, cudaStreamNonBlocking), "cudaStreamCreate");
  cuda_ok(cudaStreamCreateWithFlags(&two, cudaStreamNonBlocking), "cudaStreamCreate");
  for (int r = 0; r < kRounds; ++r) {
    KdLossArgs a = da.args, b = db.args;
    a.grad = b.grad = nullptr;
    a.sums = sums.ptr + 6 * r;
    b.sums = sums.ptr + 6 * r + 3;
    kd_loss_forward_cuda(a, ws_a.ptr, one);
    // Rounds 0-2: b waits behind a on the same stream; rounds 3-5: b runs beside a on its own stream.
    kd_loss_forward_cuda(b, ws_b.ptr, r < kRounds / 2 ? one : two);
  }
  cuda_ok(cudaStreamSynchronize(one), "kernels on stream one");
  cuda_ok(cudaStreamSynchronize(two), "kernels on stream two");
  float got[6 * kRounds];
  cuda_ok(cudaMemcpy(got, sums.ptr, sizeof got, cudaMemcpyDeviceToHost), "D2H");
  for (int r = 0; r < kRounds; ++r) {
    INFO("round " << r);
    CHECK(std::memcmp(got + 6 * r, lone_a.sums, sizeof lone_a.sums) == 0);
    CHECK(std::memcmp(got + 6 * r + 3, lone_b.sums, sizeof lone_b.sums) == 0);
  }
  cuda_ok(cudaStreamDestroy(one), "cudaStreamDestroy");
  cuda_ok(cudaStreamDestroy(two), "cudaStreamDestroy");
}

// The launch plans that docs/kernels.md describes: rows_per_warp up to V = 2048, block_per_row above, the
// share of a row cached in shared memory while two blocks share an SM (checked on devices with sm_90's
// limits: H100, H200 and the emulator), cp.async fills only where the cache holds at least 3/4 of the row.
TEST_CASE("kd_loss cuda: launch plans", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  auto plan = [](int64_t V, ScalarType sdt, ScalarType tdt, CudaVariant v, bool sparse = false) {
    static const int64_t index = 0;  // make_plan only asks whether the teacher is sparse
    KdLossArgs a;
    a.rows = 4096, a.vocab = V, a.student_dtype = sdt, a.teacher_dtype = tdt;
    if (sparse) a.topk_index = &index, a.topk = 1;
    return kd_loss_cuda_describe(a, v);
  };
  using Catch::StartsWith;
  const ScalarType f32 = ScalarType::f32, bf16 = ScalarType::bf16;
  CHECK_THAT(plan(10, f32, f32, CudaVariant::automatic), StartsWith("rows-per-warp/2 lanes"));
  CHECK_THAT(plan(2048, f32, f32, CudaVariant::automatic), StartsWith("rows-per-warp/32 lanes"));
  CHECK_THAT(plan(2049, f32, f32, CudaVariant::automatic), StartsWith("block-per-row/512 threads"));
  CHECK_THAT(plan(128256, bf16, bf16, CudaVariant::automatic), StartsWith("block-per-row/"));
  CHECK_THAT(plan(128256, bf16, bf16, CudaVariant::rows_per_warp), StartsWith("rows-per-warp/32 lanes"));
  CHECK_THAT(plan(10, bf16, bf16, CudaVariant::block_per_row, true), StartsWith("block-per-row/512 threads"));

  int major = 0, optin = 0, per_sm = 0;
  cuda_ok(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0), "cudaDeviceGetAttribute");
  cuda_ok(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0), "cudaDeviceGetAttribute");
  cuda_ok(cudaDeviceGetAttribute(&per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, 0), "cudaDeviceGetAttribute");
  if (major != 9 || optin != 232448 || per_sm != 233472) return;
  // (233472 / 2 - 1024 - 768 bytes of scratch) / 32 bytes per bf16 pack pair: 3592 packs, a whole row to V = 28736.
  CHECK(plan(32000, bf16, bf16, CudaVariant::automatic) ==
        "block-per-row/512 threads, 3592 of 4000 packs cached (cp.async)");
  CHECK(plan(128256, bf16, bf16, CudaVariant::automatic) == "block-per-row/512 threads, 3592 of 16032 packs cached");
  CHECK(plan(32000, f32, f32, CudaVariant::automatic) == "block-per-row/512 threads, 1796 of 4000 packs cached");
}

// The experimental variants' enum values are gone: asking for one is an error, not a silent fallback.
TEST_CASE("kd_loss cuda: only the production variants", "[kd_loss][cuda]") {
  REQUIRE_DEVICE();
  Spec s;
  s.N = 2, s.V = 100;
  auto p = make_problem(s);
  DeviceProblem d(*p);
  KdLossArgs a = d.args;
  DeviceBuffer<float> row_kd(2), row_ce(2), sums(3);
  a.row_kd = row_kd.ptr, a.row_ce = row_ce.ptr, a.sums = sums.ptr;
  CHECK_THROWS_WITH(kd_loss_forward_cuda(a, nullptr, nullptr, static_cast<CudaVariant>(3)),
                    Catch::Contains("not one of automatic, rows_per_warp, block_per_row"));
}

#if defined(DISTILL_CUDA_EMULATOR)
// Small shapes are launch-bound: after the first launch of a kernel, launches of it make no attribute or
// occupancy queries (each costs microseconds of host time on a GPU). Only the emulator can count them.
TEST_CASE("kd_loss cuda: repeated launches make no driver queries", "[kd_loss][cuda]") {
  Spec s;  // f32/f32 at V = 20011: block_per_row caches 160 KB, beyond the 48 KiB that needs no opt-in
  s.N = 5, s.V = 20011, s.labels = true, s.alpha = 0.5f, s.T = 2.0f, s.want_grad = false;
  auto p = make_problem(s);
  DeviceProblem d(*p);
  Spec more = s;  // the same kernels with more rows
  more.N = 9;
  auto pm = make_problem(more);
  DeviceProblem dm(*pm);
  for (CudaVariant v : kVariants) {
    INFO(name(v));
    const Outputs first = run_cuda(*p, d, v, nullptr);
    const long queries = emu::driver_queries();
    CHECK(same_bits(run_cuda(*p, d, v, nullptr), first));
    run_cuda(*pm, dm, v, nullptr);
    CHECK(emu::driver_queries() == queries);
  }
}
#endif

// Shapes that only a GPU does quickly, against the fused CPU kernel (the double reference would take minutes).
TEST_CASE("kd_loss cuda: [16384, 128256]-class shapes against the CPU kernel", "[kd_loss][cuda][large]") {
  REQUIRE_DEVICE();
  struct Big {
    int64_t N, V;
    ScalarType dt;
    Divergence kind;
  };
  for (Big b : {Big{16384, 128256, ScalarType::bf16, Divergence::forward_kl},
                Big{16384, 32001, ScalarType::bf16, Divergence::reverse_kl},
                Big{4096, 128256, ScalarType::f32, Divergence::jsd},
                Big{65536, 1000, ScalarType::f16, Divergence::forward_kl}}) {
    const int64_t N = b.N, V = b.V, eb = element_bytes(b.dt), count = N * V;
    std::vector<uint8_t> s(static_cast<size_t>(count * eb)), t(static_cast<size_t>(count * eb));
    for (int64_t j = 0; j < count; ++j) {
      const float tv = hash_normalish(static_cast<uint64_t>(j) * 2 + 1);
      put(t, b.dt, j, tv);
      put(s, b.dt, j, 0.6f * tv + 0.8f * hash_normalish(static_cast<uint64_t>(j) * 2));
    }
    std::vector<int64_t> labels(static_cast<size_t>(N));
    for (int64_t i = 0; i < N; ++i) labels[static_cast<size_t>(i)] = i % 11 == 3 ? -100 : (i * 7919) % V;
    KdLossArgs a;
    a.rows = N, a.vocab = V, a.student_row_stride = V, a.teacher_row_stride = V;
    a.student_dtype = a.teacher_dtype = b.dt;
    a.kind = b.kind, a.temperature = 2.0f, a.alpha = 0.5f, a.inv_normalizer = 1.0f / static_cast<float>(N);
    // CPU fused kernel as the reference.
    std::vector<uint8_t> cpu_grad(static_cast<size_t>(count * eb));
    std::vector<float> cpu_kd(static_cast<size_t>(N)), cpu_ce(static_cast<size_t>(N));
    float cpu_sums[3];
    KdLossArgs c = a;
    c.student = s.data(), c.teacher = t.data(), c.labels = labels.data(), c.grad = cpu_grad.data();
    c.row_kd = cpu_kd.data(), c.row_ce = cpu_ce.data(), c.sums = cpu_sums;
    kd_loss_forward_cpu(c);
    DeviceBuffer<uint8_t> ds(s.data(), s.size()), dt(t.data(), t.size()), dgrad(s.size());
    DeviceBuffer<int64_t> dl(labels.data(), labels.size());
    DeviceBuffer<float> dkd(static_cast<size_t>(N)), dce(static_cast<size_t>(N)), dsums(3);
    DeviceBuffer<uint8_t> ws(static_cast<size_t>(kd_loss_cuda_workspace_bytes(a)));
    KdLossArgs g = a;
    g.student = ds.ptr, g.teacher = dt.ptr, g.labels = dl.ptr, g.grad = dgrad.ptr;
    g.row_kd = dkd.ptr, g.row_ce = dce.ptr, g.sums = dsums.ptr;
    Spec spec;  // for the tolerance only
    spec.N = N, spec.V = V, spec.sdt = spec.tdt = b.dt, spec.kind = b.kind, spec.T = a.temperature;
    spec.alpha = a.alpha, spec.labels = true, spec.inv_norm = a.inv_normalizer;
    Problem tol_problem;
    tol_problem.spec = spec;
    const Tolerance tol = tolerance(tol_problem);
    for (CudaVariant v : {CudaVariant::automatic, CudaVariant::block_per_row}) {
      cuda_ok(cudaMemset(dgrad.ptr, 0xff, s.size()), "cudaMemset");
      kd_loss_forward_cuda(g, ws.ptr, nullptr, v);
      cuda_ok(cudaDeviceSynchronize(), "kernel");
      std::vector<uint8_t> grad(s.size());
      std::vector<float> kd(static_cast<size_t>(N)), ce(static_cast<size_t>(N));
      float sums[3];
      cuda_ok(cudaMemcpy(grad.data(), dgrad.ptr, grad.size(), cudaMemcpyDeviceToHost), "D2H");
      cuda_ok(cudaMemcpy(kd.data(), dkd.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
      cuda_ok(cudaMemcpy(ce.data(), dce.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
      cuda_ok(cudaMemcpy(sums, dsums.ptr, sizeof sums, cudaMemcpyDeviceToHost), "D2H");
      int64_t bad_grad = 0, bad_rows = 0, first_bad = -1;
      for (int64_t j = 0; j < count; ++j) {
        const double x = get(grad.data(), b.dt, j), r = get(cpu_grad.data(), b.dt, j);
        // Both sides are rounded to the dtype: allow two roundings.
        if (!close(x, r, 2 * tol.grad_atol, 2 * tol.grad_rtol)) {
          if (first_bad < 0) first_bad = j;
          ++bad_grad;
        }
      }
      for (int64_t i = 0; i < N; ++i) {
        const size_t k = static_cast<size_t>(i);
        bad_rows += !close(kd[k], cpu_kd[k], 2 * tol.loss_atol, 2 * tol.loss_rtol) ||
                    !close(ce[k], cpu_ce[k], 2 * tol.loss_atol, 2 * tol.loss_rtol);
      }
      INFO(name(v) << " (" << kd_loss_cuda_describe(g, v) << ") N=" << N << " V=" << V << " " << kd_test::name(b.dt)
                   << " " << kd_test::name(b.kind) << ": " << bad_grad << " gradient mismatches (first at " << first_bad
                   << "), " << bad_rows << " row mismatches; sums " << sums[0] << " vs " << cpu_sums[0]);
      CHECK(bad_grad == 0);
      CHECK(bad_rows == 0);
      for (int k = 0; k < 3; ++k) CHECK(close(sums[k], cpu_sums[k], 2 * tol.loss_atol, 1e-4));
    }
  }
}
