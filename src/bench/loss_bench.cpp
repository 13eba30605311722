#include "distill/bench/loss_bench.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

#include "bench/device_memory.h"
#include "distill/config/dtype_names.h"
#include "distill/error.h"
#include "distill/loss/kd_loss.h"
#include "distill/loss/output_loss.h"
#include "distill/train/trainer.h"

namespace distill {

using json = nlohmann::json;

namespace {

// Linux: peak resident set since the last reset_peak_rss(), from /proc/self/status.
int64_t status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind(key, 0) == 0) return std::stoll(line.substr(std::string(key).size()));
  return -1;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

at::ScalarType dtype_of(const std::string& name) {
  switch (dtype_named(name, "--dtype")) {
    case DTypeName::bfloat16: return at::kBFloat16;
    case DTypeName::float16: return at::kHalf;
    default: return at::kFloat;
  }
}

struct Timing {
  double median_ms = 0, min_ms = 0;
  int64_t extra_peak_bytes = -1;
};

// Extra peak memory is measured over the whole series but its first warm-up step (one-time initialisation),
// from a baseline taken after `release` has dropped everything the path keeps between steps (the student's
// .grad, the fused op's reused CPU gradient): so it counts what the path holds across steps as well as what
// one step allocates.
template <class Step, class Release>
Timing time_path(Step step, Release release, const LossBenchOptions& o, const c10::Device& device) {
  auto sync = [&] {
    if (device.is_cuda()) cuda_synchronize(device);
  };
  if (o.warmup > 0) step(), sync();
  release();
  int64_t before = -1;
  if (device.is_cuda()) {
    before = cuda_reset_peak(device);
  } else {
    reset_peak_rss();
    before = status_kib("VmRSS:");
  }
  for (int64_t i = 1; i < o.warmup; ++i) step();
  sync();
  std::vector<double> ms;
  for (int64_t i = 0; i < o.repeats; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    step();
    sync();
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  Timing t;
  t.median_ms = ms[ms.size() / 2];
  t.min_ms = ms.front();
  if (device.is_cuda()) {
    t.extra_peak_bytes = cuda_peak_bytes(device) - before;
  } else {
    const int64_t peak = status_kib("VmHWM:");
    if (before >= 0 && peak >= 0) t.extra_peak_bytes = (peak - before) * 1024;
  }
  return t;
}

// --hidden H: the language-model path. Both paths start from the student's hidden states and head (and the
// teacher's), as a Llama hands them to the loss: the chunked fused-linear op of output_loss.h, which never holds
// more than one chunk's logits, against at::linear to full [rows, V] logits for both models, the ATen
// composite, and backward through the linear (what a PyTorch user writes).
json run_head_loss_bench(const LossBenchOptions& o, at::ScalarType dt, const c10::Device& device, int64_t threads,
                         const KdLossOptions& lo) {
  if (o.topk > 0) throw Error("--topk: not with --hidden (the dense teacher only)");
  const int64_t h = o.hidden;
  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(at::kFloat).device(device);
  // Heads scaled so the logits have a standard deviation of 2, as the logits-only cases draw them.
  const double head_std = 2.0 / std::sqrt(static_cast<double>(h));
  at::Tensor student_hidden = torch::randn({o.rows, h}, opts).to(dt).requires_grad_(true);
  at::Tensor student_head = (torch::randn({o.vocab, h}, opts) * head_std).to(dt).requires_grad_(true);
  at::Tensor teacher_hidden = torch::randn({o.rows, h}, opts).to(dt);
  at::Tensor teacher_head = (torch::randn({o.vocab, h}, opts) * head_std).to(dt);
  at::Tensor labels = torch::randint(0, o.vocab, {o.rows}, opts.dtype(at::kLong));
  const double normalizer = static_cast<double>(o.rows);
  OutputLossOptions loss_options;
  loss_options.kd = lo;

  auto reset_grads = [&] {
    student_hidden.mutable_grad().reset();
    student_head.mutable_grad().reset();
  };
  auto release = [&] {
    reset_grads();
    kd_loss_release_cpu_gradient_buffer();
  };
  auto fused_step = [&] {
    reset_grads();
    ModelOutput student, teacher;
    student.hidden = student_hidden;
    student.head_weight = student_head;
    teacher.hidden = teacher_hidden;
    teacher.head_weight = teacher_head;
    output_kd_loss(student, &teacher, SparseTeacher{}, labels, loss_options, normalizer).loss.backward();
  };
  auto composite_step = [&] {
    reset_grads();
    at::Tensor teacher_logits;
    {
      torch::NoGradGuard no_grad;
      teacher_logits = at::linear(teacher_hidden, teacher_head);
    }
    const at::Tensor student_logits = at::linear(student_hidden, student_head);
    kd_loss_composite(student_logits, teacher_logits, labels, lo, normalizer).loss.backward();
  };
  // The head's matrix products: the two models' logits, then the student's dHidden and dHead.
  const double flops = 8.0 * static_cast<double>(o.rows) * static_cast<double>(o.vocab) * static_cast<double>(h);
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dt));
  json out = {{"rows", o.rows},
              {"vocab", o.vocab},
              {"hidden", h},
              {"dtype", o.dtype},
              {"device", device.str()},
              {"kind", o.kind},
              {"threads", threads},
              {"repeats", o.repeats},
              {"chunk_rows", loss_chunk_rows(0, o.vocab)},
              {"head_flops", flops},
              {"logits_bytes", o.rows * o.vocab * elem},
              {"parameter_gradient_bytes", (o.rows + o.vocab) * h * elem}};
  if (device.is_cuda()) out["device_name"] = cuda_device_name(device);
  if (!device.is_cuda()) out["cpu_isa"] = kernels::kd_loss_cpu_isa_name(kd_loss_cpu_isa());
  auto record = [&](const char* name, const Timing& t) {
    out[name] = {{"median_ms", t.median_ms},
                 {"min_ms", t.min_ms},
                 {"gflop_per_s", flops / (t.median_ms * 1e-3) / 1e9},
                 {"extra_peak_bytes", t.extra_peak_bytes}};
  };
  const Timing fused = time_path(fused_step, release, o, device);
  record("fused", fused);
  if (o.composite) {
    const Timing composite = time_path(composite_step, release, o, device);
    record("composite", composite);
    out["speedup"] = composite.median_ms / fused.median_ms;
    if (fused.extra_peak_bytes >= 0 && composite.extra_peak_bytes > 0)
      out["peak_ratio"] = static_cast<double>(fused.extra_peak_bytes) / static_cast<double>(composite.extra_peak_bytes);
  }
  return out;
}

}  // namespace

json run_loss_bench(const LossBenchOptions& o) {
  if (o.rows <= 0) throw Error("--rows: must be > 0, got " + std::to_string(o.rows));
  if (o.vocab <= 0) throw Error("--vocab: must be > 0, got " + std::to_string(o.vocab));
  if (o.repeats <= 0) throw Error("--repeats: must be > 0, got " + std::to_string(o.repeats));
  const at::ScalarType dt = dtype_of(o.dtype);
  const c10::Device device = resolve_device(o.device, "--device");
  int64_t threads = apply_threads(o.threads);
  KdLossOptions lo;
  lo.kind = divergence_named(o.kind, "--kind");
  lo.temperature = 2.0;
  lo.alpha = 0.5;
  if (o.topk < 0 || o.topk > o.vocab)
    throw Error("--topk: " + std::to_string(o.topk) + " is not in [0, " + std::to_string(o.vocab) +
                "] (0 = the dense teacher)");
  if (o.topk > 0 && lo.kind != kernels::Divergence::forward_kl)
    throw Error("--topk: the sparse teacher supports --kind forward_kl only, got " + o.kind);
  lo.topk_tail = topk_tail_named(o.topk_tail, "--topk-tail");
  if (o.hidden < 0) throw Error("--hidden: must be >= 0 (0 = logits only), got " + std::to_string(o.hidden));
  if (o.hidden > 0) return run_head_loss_bench(o, dt, device, threads, lo);

  torch::manual_seed(0);
  auto opts = torch::TensorOptions().dtype(dt).device(device);
  at::Tensor student = (torch::randn({o.rows, o.vocab}, opts.dtype(at::kFloat)) * 2).to(dt).requires_grad_(true);
  at::Tensor teacher = (torch::randn({o.rows, o.vocab}, opts.dtype(at::kFloat)) * 2).to(dt);
  at::Tensor labels = torch::randint(0, o.vocab, {o.rows}, opts.dtype(at::kLong));
  const double normalizer = static_cast<double>(o.rows);

  auto release = [&] {
    student.mutable_grad().reset();
    kd_loss_release_cpu_gradient_buffer();
  };
  // The sparse teacher, when timed, is built once: a teacher cache hands it over ready.
  const SparseTeacher sparse = o.topk > 0 ? sparse_teacher_topk(teacher, o.topk, o.vocab, lo) : SparseTeacher{};
  auto fused_step = [&] {
    student.mutable_grad().reset();
    (o.topk > 0 ? distill::kd_loss_sparse(student, sparse, labels, lo, normalizer)
                : distill::kd_loss(student, teacher, labels, lo, normalizer))
        .loss.backward();
  };
  auto composite_step = [&] {
    student.mutable_grad().reset();
    (o.topk > 0 ? distill::kd_loss_sparse_composite(student, sparse, labels, lo, normalizer)
                : distill::kd_loss_composite(student, teacher, labels, lo, normalizer))
        .loss.backward();
  };
  const int64_t elem = static_cast<int64_t>(c10::elementSize(dt));
  const double cells = static_cast<double>(o.rows) * static_cast<double>(o.vocab);
  // Bytes the fused op must move: S read once, dS written once, and the teacher: T read once, or the top-k
  // (int64 index + logit per entry, and the row's lse in tail mode).
  const double teacher_bytes =
      o.topk > 0 ? static_cast<double>(o.rows) *
                       (static_cast<double>(o.topk) * static_cast<double>(8 + elem) + (lo.topk_tail == kernels::TopkTail::tail ? 4.0 : 0.0))
                 : cells * static_cast<double>(elem);
  const double bytes = cells * 2.0 * static_cast<double>(elem) + teacher_bytes;
  json out = {{"rows", o.rows},       {"vocab", o.vocab},   {"dtype", o.dtype},     {"device", device.str()},
              {"kind", o.kind},       {"threads", threads}, {"repeats", o.repeats}, {"model_bytes", bytes},
              {"gradient_bytes", o.rows * o.vocab * elem}};
  if (o.topk > 0) out["topk"] = o.topk, out["topk_tail"] = o.topk_tail;
  if (device.is_cuda()) out["device_name"] = cuda_device_name(device);
  if (!device.is_cuda()) {
    out["cpu_isa"] = kernels::kd_loss_cpu_isa_name(kd_loss_cpu_isa());
    out["fused_threads"] = kernels::kd_loss_cpu_parallel_width(o.rows, o.vocab);  // what the kernel really uses
  }
  auto record = [&](const char* name, const Timing& t) {
    out[name] = {{"median_ms", t.median_ms},
                 {"min_ms", t.min_ms},
                 {"gb_per_s", bytes / (t.median_ms * 1e-3) / 1e9},
                 {"extra_peak_bytes", t.extra_peak_bytes}};
  };
  const CpuGradientBufferStats buffer_before = kd_loss_cpu_gradient_buffer_stats();
  Timing fused = time_path(fused_step, release, o, device);
  record("fused", fused);
  if (!device.is_cuda()) {
    const CpuGradientBufferStats b = kd_loss_cpu_gradient_buffer_stats();
    out["fused"]["gradient_allocations"] = b.allocations - buffer_before.allocations;
    out["fused"]["gradient_reuses"] = b.reuses - buffer_before.reuses;
  }
  if (device.is_cuda()) {
    // The raw kernel per production variant: where the op's time goes (kernel vs. autograd and allocation).
    // The experimental variants time themselves in dev/cuda.
    const KdLossKernelCall call = o.topk > 0 ? kd_loss_sparse_kernel_call(student, sparse, labels, lo, normalizer)
                                             : kd_loss_kernel_call(student, teacher, labels, lo, normalizer);
    json kernels_json = json::object();
    const std::pair<const char*, kernels::CudaVariant> variants[] = {
        {"automatic", kernels::CudaVariant::automatic},
        {"rows_per_warp", kernels::CudaVariant::rows_per_warp},
        {"block_per_row", kernels::CudaVariant::block_per_row}};
    for (const auto& [name, variant] : variants) {
      double ms = cuda_kernel_median_ms(call.args, static_cast<int>(variant), o.repeats, device);
      kernels_json[name] = {{"median_ms", ms}, {"gb_per_s", bytes / (ms * 1e-3) / 1e9},
                            {"shape", kernels::kd_loss_cuda_describe(call.args, variant)}};
    }
    out["kernel"] = kernels_json;
  }
  if (o.composite) {
    Timing composite = time_path(composite_step, release, o, device);
    record("composite", composite);
    out["speedup"] = composite.median_ms / fused.median_ms;
  }
  return out;
}

std::string format_loss_bench(const json& r) {
  std::ostringstream s;
  char line[256];
  const std::string where = r.contains("device_name") ? " (" + r["device_name"].get<std::string>() + ")"
                            : r.contains("cpu_isa")   ? " (" + r["cpu_isa"].get<std::string>() + ")"
                                                      : "";
  std::string kind = r["kind"];
  if (r.contains("topk"))
    kind += " (top-" + std::to_string(r["topk"].get<int64_t>()) + " teacher, " + r["topk_tail"].get<std::string>() + ")";
  const bool head = r.contains("hidden");
  const std::string fused_threads =
      r.contains("fused_threads") ? " (fused op on " + std::to_string(r["fused_threads"].get<int64_t>()) + ")" : "";
  if (head) {
    std::snprintf(line, sizeof line,
                  "head + kd loss forward+backward, %s, hidden [%lld, %lld] x head [%lld, %lld] %s on %s%s, %lld threads, "
                  "fused in chunks of %lld rows, median of %lld\n",
                  kind.c_str(), static_cast<long long>(r["rows"].get<int64_t>()),
                  static_cast<long long>(r["hidden"].get<int64_t>()), static_cast<long long>(r["vocab"].get<int64_t>()),
                  static_cast<long long>(r["hidden"].get<int64_t>()), r["dtype"].get<std::string>().c_str(),
                  r["device"].get<std::string>().c_str(), where.c_str(), static_cast<long long>(r["threads"].get<int64_t>()),
                  static_cast<long long>(r["chunk_rows"].get<int64_t>()), static_cast<long long>(r["repeats"].get<int64_t>()));
  } else {
    std::snprintf(line, sizeof line, "kd loss forward+backward, %s [%lld, %lld] %s on %s%s, %lld threads%s, median of %lld\n",
                  kind.c_str(), static_cast<long long>(r["rows"].get<int64_t>()),
                  static_cast<long long>(r["vocab"].get<int64_t>()), r["dtype"].get<std::string>().c_str(),
                  r["device"].get<std::string>().c_str(), where.c_str(), static_cast<long long>(r["threads"].get<int64_t>()),
                  fused_threads.c_str(), static_cast<long long>(r["repeats"].get<int64_t>()));
  }
  s << line;
  const char* rate_key = head ? "gflop_per_s" : "gb_per_s";
  std::snprintf(line, sizeof line, "%-10s %10s %10s %12s %18s\n", "path", "median ms", "min ms", head ? "GFLOP/s" : "GB/s",
                "extra peak MB");
  s << line;
  for (const char* name : {"fused", "composite"}) {
    if (!r.contains(name)) continue;
    const json& p = r[name];
    int64_t peak = p["extra_peak_bytes"];
    std::snprintf(line, sizeof line, "%-10s %10.3f %10.3f %12.1f %18s\n", name, p["median_ms"].get<double>(),
                  p["min_ms"].get<double>(), p[rate_key].get<double>(),
                  peak < 0 ? "n/a" : std::to_string(static_cast<double>(peak) / 1e6).substr(0, 8).c_str());
    s << line;
  }
  if (head) {
    std::snprintf(line, sizeof line, "logits %.1f MB, parameter gradients %.1f MB; ",
                  static_cast<double>(r["logits_bytes"].get<int64_t>()) / 1e6,
                  static_cast<double>(r["parameter_gradient_bytes"].get<int64_t>()) / 1e6);
  } else {
    std::snprintf(line, sizeof line, "gradient %.1f MB; ", static_cast<double>(r["gradient_bytes"].get<int64_t>()) / 1e6);
  }
  s << line;
  if (r.contains("peak_ratio")) {
    std::snprintf(line, sizeof line, "fused extra peak is %.3f of the composite's; ", r["peak_ratio"].get<double>());
    s << line;
  }
  if (r.contains("speedup")) {
    std::snprintf(line, sizeof line, "fused is %.2fx the composite's speed\n", r["speedup"].get<double>());
    s << line;
  } else {
    s << "\n";
  }
  return s.str();
}

}  // namespace distill
