// The harness every dev/cuda program shares, after llm.c's dev/cuda/common.h: the command line, the inputs,
// validation against the double-precision CPU reference (src/kernels/kd_loss_reference.cpp), timing with CUDA
// events, and one line per setting. A program names its settings (each a Variant: a plan and a launch of its
// kernel) and calls run_program; README.md says how to build and run them.
//
// Validation, for every setting, before it is timed:
// * a grid of problems (tests/kernels/kd_loss_test_util.h: the kernel tests' dense grid, special values, large
//   vocabularies, a many-row JSD) against the reference, every output and every gradient element;
// * at the timing shape, the first and last --check-rows / 2 rows against the reference, every gradient element
//   of them written, the sums consistent with the row values, and the sums after the timed launches bit-identical
//   to the first launch's (the one-launch sum re-arms its counter, and the order of the sum is fixed).
// The programs take dense teachers whose dtype is the student's, the shapes the designs are timed at.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "src/kernels/kd_loss_cuda_common.cuh"
#include "tests/kernels/kd_loss_test_util.h"

namespace dev {

using distill::kernels::Divergence;
using distill::kernels::KdLossArgs;
using distill::kernels::ScalarType;

[[noreturn]] inline void fail(const std::string& message) {
  std::fprintf(stderr, "error: %s\n", message.c_str());
  std::exit(1);
}

inline void cuda_check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(std::string(what) + ": " + cudaGetErrorString(e));
}

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) { cuda_check(cudaMalloc(&ptr, std::max<size_t>(n, 1) * sizeof(T)), "cudaMalloc"); }
  DeviceBuffer(const T* host, size_t n) : DeviceBuffer(n) {
    if (n) cuda_check(cudaMemcpy(ptr, host, n * sizeof(T), cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { cudaFree(ptr); }
};

// The properties the plans need.
struct Device {
  int sm_major = 0, sms = 1, smem_optin = 48 << 10, smem_per_sm = 48 << 10;
  std::string name;
};

inline const Device& device() {
  static const Device d = [] {
    Device r;
    int dev = 0;
    cuda_check(cudaGetDevice(&dev), "cudaGetDevice");
    const char* what = "cudaDeviceGetAttribute";
    cuda_check(cudaDeviceGetAttribute(&r.sm_major, cudaDevAttrComputeCapabilityMajor, dev), what);
    cuda_check(cudaDeviceGetAttribute(&r.sms, cudaDevAttrMultiProcessorCount, dev), what);
    cuda_check(cudaDeviceGetAttribute(&r.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), what);
    cuda_check(cudaDeviceGetAttribute(&r.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev), what);
    cudaDeviceProp prop;
    cuda_check(cudaGetDeviceProperties(&prop, dev), "cudaGetDeviceProperties");
    r.name = prop.name;
    return r;
  }();
  return d;
}

// Lets `kernel` use `smem` bytes of dynamic shared memory (above 48 KiB it needs an opt-in), asking the driver
// once per kernel and size, so that timed launches make no attribute calls.
template <class... Params>
void allow_dynamic_smem(void (*kernel)(Params...), size_t smem) {
  static std::map<const void*, size_t> allowed;
  size_t& got = allowed[reinterpret_cast<const void*>(kernel)];
  if (smem <= (48u << 10) || smem <= got) return;
  cuda_check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "cudaFuncSetAttribute");
  got = smem;
}

// Launches `kernel` through cudaLaunchKernelEx (which the CUDA emulator implements too, so the programs need
// no launch hook): as clusters of `cluster` blocks, or a plain launch for cluster = 0.
template <class... Params, class... Args>
void launch_kernel(void (*kernel)(Params...), unsigned grid, unsigned threads, size_t smem, unsigned cluster,
                   cudaStream_t stream, Args&&... args) {
  allow_dynamic_smem(kernel, smem);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(grid);
  cfg.blockDim = dim3(threads);
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  if (cluster > 0) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = cluster;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
  }
  cuda_check(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...), "cudaLaunchKernelEx");
  cuda_check(cudaGetLastError(), "launch");
}

template <class T>
struct Type {
  using type = T;
};

// Calls f(Type<T>{}, std::integral_constant<Kind, K>{}) for the arguments' dtype (the student's, which is the
// teacher's) and kind: the instantiations a program compiles.
template <class F>
void dispatch(const KdLossArgs& a, F&& f) {
  using namespace distill::kernels;
  if (a.topk_index || a.student_dtype != a.teacher_dtype)
    fail("the dev/cuda programs take dense teachers of the student's dtype");
  auto by_kind = [&](auto t) {
    switch (kind_of(a)) {
      case kForward: f(t, std::integral_constant<Kind, kForward>{}); break;
      case kReverse: f(t, std::integral_constant<Kind, kReverse>{}); break;
      case kJsd: f(t, std::integral_constant<Kind, kJsd>{}); break;
      default: fail("sparse teachers are not instantiated here");
    }
  };
  switch (a.student_dtype) {
    case ScalarType::f32: by_kind(Type<float>{}); break;
    case ScalarType::bf16: by_kind(Type<__nv_bfloat16>{}); break;
    case ScalarType::f16: by_kind(Type<__half>{}); break;
  }
}

// One design under test: a setting of the program's knobs.
struct Variant {
  std::string setting;  // as given on the command line, e.g. "async=0" or "cluster=4"
  // Why it cannot run these arguments on this device ("" when it can): no sm_90, a slice too big, ...
  std::function<std::string(const KdLossArgs&)> why_not;
  std::function<std::string(const KdLossArgs&)> describe;  // the launch shape
  // One launch on `stream`. `arrivals` is the one-launch sum's counter: zero before the first launch on the
  // stream, and every launch leaves it zero. Row outputs are always given, so no workspace is needed.
  std::function<void(const KdLossArgs&, unsigned* arrivals, cudaStream_t)> launch;
};

// Params of one launch (make_params with the harness's counter).
inline distill::kernels::Params params_of(const KdLossArgs& a, unsigned* arrivals) {
  distill::kernels::Params p = distill::kernels::make_params(a, nullptr);
  p.arrivals = arrivals;
  return p;
}

struct Options {
  int64_t rows = 16384, vocab = 128256;
  ScalarType dtype = ScalarType::bf16;
  Divergence kind = Divergence::forward_kl;
  int repeats = 20, warmup = 3;
  int64_t check_rows = 16;
  bool validate_only = false, json = false;
  bool grid = true;        // --no-grid: skip the validation grid (already run in this session, or under ncu)
  bool production = true;  // --no-production: skip timing the production kernel beside the settings
  std::vector<std::string> settings;
};

inline const char* dtype_name(ScalarType t) { return kd_test::name(t); }
inline const char* kind_name(Divergence d) {
  return d == Divergence::forward_kl ? "forward_kl" : d == Divergence::reverse_kl ? "reverse_kl" : "jsd";
}

inline Options parse_options(int argc, char** argv, const char* program, const char* about,
                             const std::vector<Variant>& variants) {
  Options o;
  auto usage = [&](const std::string& why) {
    if (!why.empty()) std::fprintf(stderr, "error: %s\n", why.c_str());
    std::fprintf(stderr,
                 "%s: %s\n"
                 "usage: %s [--rows N] [--vocab V] [--dtype bf16|f16|f32] [--kind forward_kl|reverse_kl|jsd]\n"
                 "          [--repeats R] [--warmup W] [--check-rows C] [--validate-only | --no-grid]\n"
                 "          [--no-production] [--json] [SETTING...]\n"
                 "Validates each SETTING against the CPU reference on a grid of problems, then times it at\n"
                 "[rows, vocab] (default [16384, 128256] bf16 forward_kl, T = 2, alpha 0.5, labels) beside the\n"
                 "production kernel, checking the first and last C / 2 rows (default 16) of that launch too.\n"
                 "Settings (default: all of them):",
                 program, about, program);
    for (const Variant& v : variants) std::fprintf(stderr, " %s", v.setting.c_str());
    std::fprintf(stderr, "\n");
    std::exit(why.empty() ? 0 : 2);
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(arg + " needs a value");
      return argv[++i];
    };
    auto number = [&](int64_t min) -> int64_t {
      const std::string v = value();
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end || n < min) usage(arg + ": '" + v + "' is not an integer >= " + std::to_string(min));
      return n;
    };
    if (arg == "--help" || arg == "-h") {
      usage("");
    } else if (arg == "--rows") {
      o.rows = number(1);
    } else if (arg == "--vocab") {
      o.vocab = number(1);
    } else if (arg == "--repeats") {
      o.repeats = static_cast<int>(number(1));
    } else if (arg == "--warmup") {
      o.warmup = static_cast<int>(number(0));
    } else if (arg == "--check-rows") {
      o.check_rows = number(0);
    } else if (arg == "--dtype") {
      const std::string v = value();
      if (v == "f32") {
        o.dtype = ScalarType::f32;
      } else if (v == "bf16") {
        o.dtype = ScalarType::bf16;
      } else if (v == "f16") {
        o.dtype = ScalarType::f16;
      } else {
        usage("--dtype: '" + v + "' is not one of bf16, f16, f32");
      }
    } else if (arg == "--kind") {
      const std::string v = value();
      if (v == "forward_kl") {
        o.kind = Divergence::forward_kl;
      } else if (v == "reverse_kl") {
        o.kind = Divergence::reverse_kl;
      } else if (v == "jsd") {
        o.kind = Divergence::jsd;
      } else {
        usage("--kind: '" + v + "' is not one of forward_kl, reverse_kl, jsd");
      }
    } else if (arg == "--validate-only") {
      o.validate_only = true;
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--no-grid") {
      o.grid = false;
    } else if (arg == "--no-production") {
      o.production = false;
    } else if (!arg.empty() && arg[0] == '-') {
      usage("unknown option " + arg);
    } else {
      const bool known = std::any_of(variants.begin(), variants.end(), [&](const Variant& v) { return v.setting == arg; });
      if (!known) usage("unknown setting '" + arg + "'");
      o.settings.push_back(arg);
    }
  }
  if (o.validate_only && !o.grid) usage("--validate-only and --no-grid leave nothing to do");
  return o;
}

// ------------------------------------------------------------------------------------------------------------
// Validation

// The problems every setting is checked on before it is timed (dense, the student's dtype for the teacher).
inline std::vector<kd_test::Spec> validation_grid() {
  std::vector<kd_test::Spec> grid = kd_test::dense_grid({1, 17, 1000, 2053, 4099});
  for (const kd_test::Spec& s : kd_test::special_values_grid({1000, 20011})) grid.push_back(s);
  int seed = 100;
  for (int64_t V : {32001, 128256}) {  // one to eight blocks per row, rows that are not 16-byte aligned
    for (ScalarType dt : {ScalarType::f32, ScalarType::bf16, ScalarType::f16}) {
      for (Divergence kind : {Divergence::forward_kl, Divergence::reverse_kl, Divergence::jsd}) {
        kd_test::Spec s;
        s.N = 3, s.V = V, s.sdt = s.tdt = dt, s.kind = kind, s.T = seed % 2 ? 2.0f : 1.0f;
        s.alpha = 0.5f, s.labels = true, s.seed = static_cast<uint32_t>(seed++);
        grid.push_back(s);
      }
    }
  }
  kd_test::Spec many;  // more rows than a one-wave grid of clusters has clusters, on an H200 too
  many.N = 301, many.V = 30011, many.kind = Divergence::jsd, many.sdt = many.tdt = ScalarType::bf16;
  many.labels = true, many.alpha = 0.5f, many.ignore_every = 7;
  grid.push_back(many);
  return grid;
}

// The problem's inputs on the device.
struct DeviceProblem {
  DeviceBuffer<uint8_t> student, teacher;
  DeviceBuffer<int64_t> labels;
  KdLossArgs args;
  explicit DeviceProblem(const kd_test::Problem& p)
      : student(p.student.data(), p.student.size()),
        teacher(p.teacher.data(), p.teacher.size()),
        labels(p.labels.data(), p.labels.size()) {
    args = p.args;
    args.student = student.ptr;
    args.teacher = teacher.ptr;
    if (p.args.labels) args.labels = labels.ptr;
  }
};

// Runs `v` once on a fresh stream with a poisoned gradient (all-ones bits: NaN in every dtype); `unwritten`
// counts the gradient elements still poisoned afterwards.
inline kd_test::Outputs run_variant(const Variant& v, const kd_test::Problem& p, const DeviceProblem& d,
                                    int64_t* unwritten) {
  const int64_t N = p.spec.N, V = p.spec.V;
  const size_t grad_bytes = static_cast<size_t>(N * V * kd_test::element_bytes(p.spec.sdt));
  DeviceBuffer<uint8_t> grad(p.spec.want_grad ? grad_bytes : 0);
  DeviceBuffer<float> row_kd(static_cast<size_t>(N)), row_ce(static_cast<size_t>(N)), sums(3);
  DeviceBuffer<unsigned> arrivals(1);
  cuda_check(cudaMemset(arrivals.ptr, 0, sizeof(unsigned)), "cudaMemset");
  if (p.spec.want_grad) cuda_check(cudaMemset(grad.ptr, 0xff, grad_bytes), "cudaMemset");
  KdLossArgs a = d.args;
  a.grad = p.spec.want_grad ? grad.ptr : nullptr;
  a.row_kd = row_kd.ptr;
  a.row_ce = row_ce.ptr;
  a.sums = sums.ptr;
  distill::kernels::kd_loss_check_args(a);
  cudaStream_t stream;
  cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  v.launch(a, arrivals.ptr, stream);
  cuda_check(cudaStreamSynchronize(stream), v.setting.c_str());
  cuda_check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  kd_test::Outputs o;
  o.row_kd.resize(static_cast<size_t>(N));
  o.row_ce.resize(static_cast<size_t>(N));
  cuda_check(cudaMemcpy(o.row_kd.data(), row_kd.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  cuda_check(cudaMemcpy(o.row_ce.data(), row_ce.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
  cuda_check(cudaMemcpy(o.sums, sums.ptr, sizeof o.sums, cudaMemcpyDeviceToHost), "D2H");
  if (p.spec.want_grad) {
    o.grad.resize(grad_bytes);
    cuda_check(cudaMemcpy(o.grad.data(), grad.ptr, grad_bytes, cudaMemcpyDeviceToHost), "D2H");
    const int eb = static_cast<int>(kd_test::element_bytes(p.spec.sdt));
    int64_t left = 0;
    for (size_t j = 0; j < grad_bytes; j += static_cast<size_t>(eb)) {
      bool poison = true;
      for (int b = 0; b < eb; ++b) poison = poison && o.grad[j + static_cast<size_t>(b)] == 0xff;
      left += poison;
    }
    *unwritten = left;
  }
  return o;
}

struct GridResult {
  int checked = 0, skipped = 0, failed = 0;
};

// Every selected setting on every problem of the grid; the reference once per problem. Reports the first
// failures of each setting on stderr.
inline std::vector<GridResult> validate_grid(const std::vector<const Variant*>& variants) {
  std::vector<GridResult> results(variants.size());
  for (const kd_test::Spec& spec : validation_grid()) {
    auto p = kd_test::make_problem(spec);
    const kd_test::Reference ref = kd_test::run_reference(*p);
    const kd_test::Tolerance tol = kd_test::tolerance(*p);
    DeviceProblem d(*p);
    for (size_t k = 0; k < variants.size(); ++k) {
      GridResult& r = results[k];
      if (!variants[k]->why_not(d.args).empty()) {
        ++r.skipped;
        continue;
      }
      int64_t unwritten = 0;
      const kd_test::Outputs o = run_variant(*variants[k], *p, d, &unwritten);
      std::string err = kd_test::compare(*p, ref, o, tol);
      if (unwritten) err += std::to_string(unwritten) + " gradient elements never written\n";
      ++r.checked;
      if (!err.empty() && r.failed++ < 3)
        std::fprintf(stderr, "FAILED %s (%s) %s\n%s", variants[k]->setting.c_str(),
                     variants[k]->describe(d.args).c_str(), spec.str().c_str(), err.c_str());
    }
  }
  return results;
}

// ------------------------------------------------------------------------------------------------------------
// The timing shape

// Logits of roughly N(0, 2^2), from a hash of the element index (std::normal_distribution would take minutes
// at [16384, 128256]).
__device__ __forceinline__ float hash_logit(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  float s = 0.f;  // the sum of four 16-bit uniforms: mean 2, sd 1 / sqrt(3)
  for (int k = 0; k < 4; ++k) s += static_cast<float>((x >> (16 * k)) & 0xffff) * (1.0f / 65536.0f);
  return (s - 2.0f) * 3.4641f;  // in (-6.93, 6.93)
}

template <class T>
__global__ void fill_logits_kernel(T* out, int64_t count, uint64_t stream_id) {
  using distill::kernels::from_f32;
  const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < count; j += step)
    out[j] = from_f32<T>(hash_logit(static_cast<uint64_t>(j) * 2 + stream_id));
}

inline void fill_logits(void* out, ScalarType dt, int64_t count, uint64_t stream_id) {
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>((count + 255) / 256, 4096));
  switch (dt) {
    case ScalarType::f32: launch_kernel(fill_logits_kernel<float>, grid, 256, 0, 0, nullptr, static_cast<float*>(out), count, stream_id); break;
    case ScalarType::bf16:
      launch_kernel(fill_logits_kernel<__nv_bfloat16>, grid, 256, 0, 0, nullptr, static_cast<__nv_bfloat16*>(out), count, stream_id);
      break;
    case ScalarType::f16: launch_kernel(fill_logits_kernel<__half>, grid, 256, 0, 0, nullptr, static_cast<__half*>(out), count, stream_id); break;
  }
  cuda_check(cudaDeviceSynchronize(), "fill_logits");
}

// The benchmark's problem on the device: forward KL (or --kind) at T = 2 with T^2 scaling, the cross-entropy
// on labels (none ignored), alpha 0.5, mean over rows: what `distill bench loss` times.
struct TimingProblem {
  Options o;
  size_t elem_bytes;
  DeviceBuffer<uint8_t> student, teacher, grad;
  DeviceBuffer<int64_t> labels;
  DeviceBuffer<float> row_kd, row_ce, sums;
  std::vector<int64_t> host_labels;
  KdLossArgs args;
  explicit TimingProblem(const Options& opt)
      : o(opt),
        elem_bytes(static_cast<size_t>(kd_test::element_bytes(opt.dtype))),
        student(static_cast<size_t>(opt.rows * opt.vocab) * elem_bytes),
        teacher(static_cast<size_t>(opt.rows * opt.vocab) * elem_bytes),
        grad(static_cast<size_t>(opt.rows * opt.vocab) * elem_bytes),
        labels(static_cast<size_t>(opt.rows)),
        row_kd(static_cast<size_t>(opt.rows)),
        row_ce(static_cast<size_t>(opt.rows)),
        sums(3) {
    const int64_t count = o.rows * o.vocab;
    fill_logits(student.ptr, o.dtype, count, 0);
    fill_logits(teacher.ptr, o.dtype, count, 1);
    host_labels.resize(static_cast<size_t>(o.rows));
    for (int64_t i = 0; i < o.rows; ++i) host_labels[static_cast<size_t>(i)] = (i * 7919) % o.vocab;
    cuda_check(cudaMemcpy(labels.ptr, host_labels.data(), host_labels.size() * sizeof(int64_t), cudaMemcpyHostToDevice),
               "H2D");
    args.rows = o.rows, args.vocab = o.vocab;
    args.student = student.ptr, args.teacher = teacher.ptr;
    args.student_row_stride = args.teacher_row_stride = o.vocab;
    args.student_dtype = args.teacher_dtype = o.dtype;
    args.labels = labels.ptr;
    args.kind = o.kind, args.beta = 0.5f, args.temperature = 2.0f, args.t2_scale = true, args.alpha = 0.5f;
    args.inv_normalizer = 1.0f / static_cast<float>(o.rows);
    args.grad = grad.ptr, args.row_kd = row_kd.ptr, args.row_ce = row_ce.ptr, args.sums = sums.ptr;
  }

  // Checks the launch just made: the first and last check_rows / 2 rows against the reference (every gradient
  // element of them written), and the sums against the row values. Returns "" or what is wrong.
  std::string check(float (&got_sums)[3]) const {
    std::ostringstream err;
    const int64_t N = o.rows, V = o.vocab;
    std::vector<float> kd(static_cast<size_t>(N)), ce(static_cast<size_t>(N));
    cuda_check(cudaMemcpy(kd.data(), row_kd.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
    cuda_check(cudaMemcpy(ce.data(), row_ce.ptr, N * sizeof(float), cudaMemcpyDeviceToHost), "D2H");
    cuda_check(cudaMemcpy(got_sums, sums.ptr, sizeof got_sums, cudaMemcpyDeviceToHost), "D2H");
    // The rows to check, as a problem of their own for the reference.
    std::vector<int64_t> rows;
    for (int64_t i = 0; i < std::min(N, o.check_rows / 2); ++i) rows.push_back(i);
    for (int64_t i = std::max(o.check_rows / 2, N - (o.check_rows - o.check_rows / 2)); i < N; ++i) rows.push_back(i);
    const int64_t C = static_cast<int64_t>(rows.size());
    const size_t row_bytes = static_cast<size_t>(V) * elem_bytes;
    std::vector<uint8_t> s(C * row_bytes), t(C * row_bytes), g(C * row_bytes);
    std::vector<int64_t> y(static_cast<size_t>(std::max<int64_t>(C, 1)));
    for (int64_t c = 0; c < C; ++c) {
      const size_t at = static_cast<size_t>(rows[c]) * row_bytes, to = static_cast<size_t>(c) * row_bytes;
      cuda_check(cudaMemcpy(s.data() + to, student.ptr + at, row_bytes, cudaMemcpyDeviceToHost), "D2H");
      cuda_check(cudaMemcpy(t.data() + to, teacher.ptr + at, row_bytes, cudaMemcpyDeviceToHost), "D2H");
      cuda_check(cudaMemcpy(g.data() + to, grad.ptr + at, row_bytes, cudaMemcpyDeviceToHost), "D2H");
      y[static_cast<size_t>(c)] = host_labels[static_cast<size_t>(rows[c])];
    }
    KdLossArgs r = args;
    r.rows = C, r.student = s.data(), r.teacher = t.data(), r.labels = y.data();
    std::vector<double> ref_grad(static_cast<size_t>(C * V)), ref_kd(static_cast<size_t>(C)), ref_ce(static_cast<size_t>(C));
    double ref_sums[3];
    distill::kernels::kd_loss_forward_reference(r, ref_grad.data(), ref_kd.data(), ref_ce.data(), ref_sums);
    kd_test::Problem tol_problem;  // the kernel tests' tolerances for this spec
    kd_test::Spec& spec = tol_problem.spec;
    spec.N = C, spec.V = V, spec.sdt = spec.tdt = o.dtype, spec.kind = o.kind, spec.T = args.temperature;
    spec.alpha = args.alpha, spec.labels = true, spec.inv_norm = args.inv_normalizer, spec.scale = 2.0f;
    const kd_test::Tolerance tol = kd_test::tolerance(tol_problem);
    int64_t bad_grad = 0, unwritten = 0, bad_rows = 0;
    for (int64_t c = 0; c < C; ++c) {
      const size_t i = static_cast<size_t>(rows[c]);
      if (!kd_test::close(kd[i], ref_kd[c], tol.loss_atol, tol.loss_rtol) ||
          !kd_test::close(ce[i], ref_ce[c], tol.loss_atol, tol.loss_rtol)) {
        if (bad_rows++ < 3)
          err << "row " << i << ": kd " << kd[i] << " want " << ref_kd[c] << ", ce " << ce[i] << " want " << ref_ce[c]
              << "\n";
      }
      for (int64_t v = 0; v < V; ++v) {
        const int64_t j = c * V + v;
        bool poison = true;
        for (size_t b = 0; b < elem_bytes; ++b) poison = poison && g[static_cast<size_t>(j) * elem_bytes + b] == 0xff;
        unwritten += poison;
        const double x = kd_test::get(g.data(), o.dtype, j), want = ref_grad[static_cast<size_t>(j)];
        if (!poison && !kd_test::close(x, want, tol.grad_atol, tol.grad_rtol) && bad_grad++ < 3)
          err << "grad[" << i << "," << v << "] " << x << " want " << want << "\n";
      }
    }
    if (bad_grad) err << bad_grad << " gradient mismatches in the checked rows\n";
    if (unwritten) err << unwritten << " gradient elements of the checked rows never written\n";
    // The sums against the rows: the one-launch sum in double, in a fixed order.
    double kd_sum = 0, ce_sum = 0;
    for (int64_t i = 0; i < N; ++i) kd_sum += kd[static_cast<size_t>(i)], ce_sum += ce[static_cast<size_t>(i)];
    const double inv_n = args.inv_normalizer, alpha = args.alpha;
    const double want[3] = {(alpha * kd_sum + (1 - alpha) * ce_sum) * inv_n, kd_sum * inv_n, ce_sum * inv_n};
    for (int k = 0; k < 3; ++k)
      if (!kd_test::close(got_sums[k], want[k], 1e-6, 1e-5)) err << "sums[" << k << "] " << got_sums[k] << " want " << want[k] << "\n";
    return err.str();
  }
};

struct Timing {
  double median_ms = 0, min_ms = 0;
};

// Median and minimum of `repeats` launches, each between two events (as `distill bench loss` times the raw
// kernel), after `warmup` untimed ones.
inline Timing time_launches(const std::function<void(cudaStream_t)>& launch, int warmup, int repeats) {
  cudaStream_t stream;
  cuda_check(cudaStreamCreate(&stream), "cudaStreamCreate");
  cudaEvent_t start, stop;
  cuda_check(cudaEventCreate(&start), "cudaEventCreate");
  cuda_check(cudaEventCreate(&stop), "cudaEventCreate");
  for (int i = 0; i < warmup; ++i) launch(stream);
  std::vector<double> ms;
  for (int i = 0; i < repeats; ++i) {
    cuda_check(cudaEventRecord(start, stream), "cudaEventRecord");
    launch(stream);
    cuda_check(cudaEventRecord(stop, stream), "cudaEventRecord");
    cuda_check(cudaEventSynchronize(stop), "launch");
    float t = 0;
    cuda_check(cudaEventElapsedTime(&t, start, stop), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cuda_check(cudaEventDestroy(start), "cudaEventDestroy");
  cuda_check(cudaEventDestroy(stop), "cudaEventDestroy");
  cuda_check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  std::sort(ms.begin(), ms.end());
  return {ms[ms.size() / 2], ms.front()};
}

inline std::string json_string(const std::string& s) {
  std::string r = "\"";
  for (char c : s) r += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  return r + "\"";
}

// ------------------------------------------------------------------------------------------------------------
// The program

// Validates and times the selected settings (all by default) beside the production kernel
// (kd_loss_forward_cuda, automatic plan). Prints a table, or with --json one JSON object per line. Returns the
// exit code: 1 when any setting failed a check.
inline int run_program(int argc, char** argv, const char* program, const char* about, const std::vector<Variant>& all) {
  const Options o = parse_options(argc, argv, program, about, all);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0)
    fail(std::string(program) + " needs a CUDA device (without one, build it for the CUDA emulator: " + program +
         "_emulated, cmake -DDISTILL_CUDA_DEV=ON)");
  std::vector<const Variant*> variants;
  for (const Variant& v : all)
    if (o.settings.empty() || std::find(o.settings.begin(), o.settings.end(), v.setting) != o.settings.end())
      variants.push_back(&v);
  const Device& dev = device();
  auto info = [&](const char* fmt, auto... args) {  // the table goes to stdout, or to stderr beside --json
    std::fprintf(o.json ? stderr : stdout, fmt, args...);
  };
  info("%s on %s: %s\n", program, dev.name.c_str(), about);

  bool ok = true;
  const std::vector<GridResult> grid = o.grid ? validate_grid(variants) : std::vector<GridResult>(variants.size());
  for (size_t k = 0; k < variants.size() && o.grid; ++k) {
    info("  %-24s grid: %d problems checked, %d skipped (cannot run), %d failed\n", variants[k]->setting.c_str(),
         grid[k].checked, grid[k].skipped, grid[k].failed);
    ok = ok && grid[k].failed == 0;
  }
  if (o.validate_only) return ok ? 0 : 1;

  TimingProblem tp(o);
  const double model_bytes = static_cast<double>(distill::kernels::kd_loss_min_bytes(tp.args));
  info("[%lld, %lld] %s %s, T = 2, alpha 0.5, labels; median of %d launches (CUDA events); %.3f GB moved at least\n",
       static_cast<long long>(o.rows), static_cast<long long>(o.vocab), dtype_name(o.dtype), kind_name(o.kind),
       o.repeats, model_bytes / 1e9);
  info("  %-24s %10s %10s %9s  %-6s %s\n", "setting", "median ms", "min ms", "GB/s", "check", "launch");
  DeviceBuffer<unsigned> arrivals(1);
  cuda_check(cudaMemset(arrivals.ptr, 0, sizeof(unsigned)), "cudaMemset");
  DeviceBuffer<uint8_t> workspace(static_cast<size_t>(distill::kernels::kd_loss_cuda_workspace_bytes(tp.args)));
  auto measure = [&](const std::string& setting, const std::string& shape, int grid_failed,
                     const std::function<void(cudaStream_t)>& launch) {
    cuda_check(cudaMemset(tp.grad.ptr, 0xff, static_cast<size_t>(o.rows * o.vocab) * tp.elem_bytes), "cudaMemset");
    launch(nullptr);
    cuda_check(cudaDeviceSynchronize(), setting.c_str());
    float first[3], last[3];
    std::string err = tp.check(first);
    const Timing t = time_launches(launch, o.warmup, o.repeats);
    cuda_check(cudaMemcpy(last, tp.sums.ptr, sizeof last, cudaMemcpyDeviceToHost), "D2H");
    if (std::memcmp(first, last, sizeof first) != 0) err += "the sums changed between launches of the same inputs\n";
    const bool passed = err.empty() && grid_failed == 0;
    ok = ok && passed;
    if (!err.empty()) std::fprintf(stderr, "FAILED %s at the timing shape:\n%s", setting.c_str(), err.c_str());
    const double gbs = model_bytes / (t.median_ms * 1e-3) / 1e9;
    info("  %-24s %10.3f %10.3f %9.1f  %-6s %s\n", setting.c_str(), t.median_ms, t.min_ms, gbs, passed ? "ok" : "FAIL",
         shape.c_str());
    if (o.json)
      std::printf(
          "{\"program\": %s, \"setting\": %s, \"device_name\": %s, \"rows\": %lld, \"vocab\": %lld, \"dtype\": %s, "
          "\"kind\": %s, \"repeats\": %d, \"median_ms\": %.6f, \"min_ms\": %.6f, \"model_bytes\": %.0f, "
          "\"gb_per_s\": %.3f, \"shape\": %s, \"ok\": %s}\n",
          json_string(program).c_str(), json_string(setting).c_str(), json_string(dev.name).c_str(),
          static_cast<long long>(o.rows), static_cast<long long>(o.vocab), json_string(dtype_name(o.dtype)).c_str(),
          json_string(kind_name(o.kind)).c_str(), o.repeats, t.median_ms, t.min_ms, model_bytes, gbs,
          json_string(shape).c_str(), passed ? "true" : "false");
    std::fflush(stdout);
  };
  if (o.production)
    measure("production", distill::kernels::kd_loss_cuda_describe(tp.args), 0, [&](cudaStream_t stream) {
      distill::kernels::kd_loss_forward_cuda(tp.args, workspace.ptr, stream);
    });
  for (size_t k = 0; k < variants.size(); ++k) {
    const Variant& v = *variants[k];
    const std::string why = v.why_not(tp.args);
    if (!why.empty()) {
      info("  %-24s cannot run this shape here: %s\n", v.setting.c_str(), why.c_str());
      continue;
    }
    measure(v.setting, v.describe(tp.args), grid[k].failed,
            [&](cudaStream_t stream) { v.launch(tp.args, arrivals.ptr, stream); });
  }
  return ok ? 0 : 1;
}

}  // namespace dev
