// The fused distillation loss as an autograd op: tensors -> kernels::KdLossArgs -> the CPU or CUDA kernel.
// The forward writes the gradient (unless no gradient is wanted); the backward hands it back scaled by
// grad_output, in place, and skips even that when grad_output is exactly 1 (decided where grad_output lives,
// so the host never waits on a device). CPU gradients reuse one buffer across calls (CpuGradientBuffer).
#include <sys/mman.h>
#include <torch/torch.h>

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>

#include "distill/error.h"
#include "distill/loss/kd_loss.h"
#include "loss/fused_dispatch.h"
#include "loss/vocab.h"

namespace distill {

at::Tensor fit_teacher_vocab(const at::Tensor& teacher, int64_t v, VocabPolicy policy) {
  const int64_t v_t = teacher.size(1);
  if (v_t == v) return teacher;
  if (v_t < v)
    throw Error("loss: the teacher has " + std::to_string(v_t) + " outputs, fewer than the student's " + std::to_string(v) +
                "; the student's extra classes would have no teacher probability. Use a student with " +
                std::to_string(v_t) + " outputs");
  if (policy == VocabPolicy::truncate) return teacher.narrow(1, 0, v);
  throw Error("loss.vocab: the teacher has " + std::to_string(v_t) + " outputs and the student " + std::to_string(v) +
              " (a padded embedding table?); set loss.vocab to \"truncate\" to compare the first " + std::to_string(v) +
              " only, if the extra rows are padding");
}

at::Tensor fit_teacher_vocab(const at::Tensor& student, const at::Tensor& teacher, VocabPolicy policy) {
  TORCH_CHECK(teacher.dim() == 2 && teacher.size(0) == student.size(0), "teacher logits ", teacher.sizes(),
              " do not match student logits ", student.sizes(), " row for row");
  return fit_teacher_vocab(teacher, student.size(1), policy);
}

SparseTeacher sparse_teacher_topk(const at::Tensor& teacher_logits, int64_t k, int64_t student_vocab,
                                  const KdLossOptions& o) {
  TORCH_CHECK(teacher_logits.dim() == 2, "teacher logits must be [N, V], got ", teacher_logits.sizes());
  if (k < 1 || k > student_vocab)
    throw Error("loss.topk: " + std::to_string(k) + " is not in [1, " + std::to_string(student_vocab) +
                "] (the student has " + std::to_string(student_vocab) + " outputs); use at most " +
                std::to_string(student_vocab) + ", or 0 for the whole teacher row");
  const at::Tensor t = teacher_logits.detach();
  const at::Tensor fitted = fit_teacher_vocab(t, student_vocab, o.vocab);
  SparseTeacher sparse;
  auto [values, index] = fitted.topk(k, 1);
  sparse.index = index.contiguous();
  sparse.logits = values.contiguous();
  if (o.topk_tail == kernels::TopkTail::tail)
    sparse.lse = at::logsumexp(fitted.to(at::kFloat) / o.temperature, {1}).contiguous();
  return sparse;
}

namespace {

// A large CPU gradient is written for the first time by the kernel, and with 4 KiB pages a third of a step at
// [4096, 32000] went to page faults (docs/benchmarks.md). Ask for transparent huge pages on the 2 MiB-aligned
// interior before that first touch: one fault per 2 MiB. Best effort: without THP (or with it set to
// "never") madvise fails or changes nothing, and the result is the same either way.
void advise_huge_pages(const at::Tensor& t) {
#ifdef MADV_HUGEPAGE
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  const size_t bytes = t.nbytes();
  if (!t.device().is_cpu() || bytes < 4 * kHuge) return;
  const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = (begin + bytes) & ~(kHuge - 1);
  if (hi > lo) ::madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#endif
}

// The CPU gradient of each call is an [N, V] buffer, and a training loop asks for one of the same size every
// step. glibc maps blocks that large fresh from the kernel and unmaps them when freed, so every step paid for
// the kernel zeroing and faulting in the whole gradient again: 14% of a step at [4096, 32000] f32, even with
// huge pages (docs/benchmarks.md). So the op keeps the storage of a gradient it handed out and hands it out
// again once nothing else refers to it: autograd passes the gradient on and drops it within the step's
// backward. A gradient still held anywhere (a user's copy of `.grad`, a graph not yet backpropagated, a view)
// keeps its storage's use count above one and is never reused; that call allocates afresh. Held between
// steps: one gradient's storage, replaced when a call needs more and it is free; every step needs that much at
// its peak anyway. (CUDA gradients come from PyTorch's caching allocator, which already does this.)
class CpuGradientBuffer {
 public:
  at::Tensor take(int64_t rows, int64_t vocab, const at::TensorOptions& options) {
    const size_t bytes = static_cast<size_t>(rows * vocab) * c10::elementSize(c10::typeMetaToScalarType(options.dtype()));
    std::lock_guard<std::mutex> lock(mutex_);
    const bool free = storage_ && storage_.use_count() == 1;
    if (free && storage_.nbytes() >= bytes) {
      ++stats_.reuses;
      return at::empty({0}, options).set_(storage_, 0, {rows, vocab}, {vocab, 1});
    }
    at::Tensor t = at::empty({rows, vocab}, options);
    advise_huge_pages(t);
    ++stats_.allocations;
    if (!storage_ || free) {  // a busy one comes back free after its step; keep waiting for it
      storage_ = t.storage();
      stats_.held_bytes = static_cast<int64_t>(storage_.nbytes());
    }
    return t;
  }

  CpuGradientBufferStats stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return stats_;
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    storage_ = c10::Storage();
    stats_.held_bytes = 0;
  }

 private:
  std::mutex mutex_;
  c10::Storage storage_;
  CpuGradientBufferStats stats_;
};

// Never destroyed: the storage may be freed after other statics at exit otherwise.
CpuGradientBuffer& cpu_gradient_buffer() {
  static auto* buffer = new CpuGradientBuffer;
  return *buffer;
}

kernels::ScalarType kernel_dtype(const at::Tensor& t, const char* what) {
  switch (t.scalar_type()) {
    case at::kFloat: return kernels::ScalarType::f32;
    case at::kBFloat16: return kernels::ScalarType::bf16;
    case at::kHalf: return kernels::ScalarType::f16;
    default: TORCH_CHECK(false, what, " logits must be float32, bfloat16 or float16, got ", t.scalar_type());
  }
}

// Rows must be contiguous along the vocabulary; the row stride may be anything (a truncated teacher).
at::Tensor unit_stride_rows(const at::Tensor& t) { return t.stride(1) == 1 && t.stride(0) >= t.size(1) ? t : t.contiguous(); }

struct FusedInputs {
  at::Tensor student, teacher, labels, topk_index, topk_logits, teacher_lse;
};

// Forward outputs: the loss terms and the gradient w.r.t. the student.
struct FusedOutputs {
  at::Tensor sums;  // [3] float32: loss, kd, ce
  at::Tensor grad;  // like student
};

// Checks the inputs and fills every kernel argument but the outputs (grad, sums).
kernels::KdLossArgs kernel_args(const FusedInputs& in, const KdLossOptions& o, double normalizer, bool has_teacher) {
  const at::Tensor& s = in.student;
  TORCH_CHECK(s.dim() == 2, "student logits must be [N, V], got ", s.sizes());
  TORCH_CHECK(normalizer > 0, "normalizer must be > 0 (the count of valid rows in the step), got ", normalizer);
  TORCH_CHECK(in.labels.defined() || o.alpha == 1.0 || !has_teacher,
              "alpha = ", o.alpha, " mixes in cross-entropy, which needs labels");
  kernels::KdLossArgs a;
  a.rows = s.size(0);
  a.vocab = s.size(1);
  a.student = s.data_ptr();
  a.student_row_stride = s.stride(0);
  a.student_dtype = kernel_dtype(s, "student");
  if (in.topk_index.defined()) {
    TORCH_CHECK(in.topk_index.dim() == 2 && in.topk_index.size(0) == a.rows && in.topk_index.scalar_type() == at::kLong,
                "top-k indices must be int64 [N, K] with N = ", a.rows, ", got ", in.topk_index.sizes(), " ",
                in.topk_index.scalar_type());
    TORCH_CHECK(in.topk_logits.sizes() == in.topk_index.sizes(), "top-k logits ", in.topk_logits.sizes(),
                " != top-k indices ", in.topk_index.sizes());
    a.topk_index = in.topk_index.data_ptr<int64_t>();
    a.topk_logits = in.topk_logits.data_ptr();
    a.teacher_dtype = kernel_dtype(in.topk_logits, "teacher");
    a.topk = in.topk_index.size(1);
    a.topk_tail = o.topk_tail;
    if (in.teacher_lse.defined()) {
      TORCH_CHECK(in.teacher_lse.scalar_type() == at::kFloat && in.teacher_lse.numel() == a.rows,
                  "teacher lse must be float32 [N], got ", in.teacher_lse.sizes(), " ", in.teacher_lse.scalar_type());
      a.teacher_lse = in.teacher_lse.data_ptr<float>();
    }
  } else {
    a.teacher = in.teacher.data_ptr();
    a.teacher_row_stride = in.teacher.stride(0);
    a.teacher_dtype = kernel_dtype(in.teacher, "teacher");
  }
  if (in.labels.defined()) {
    TORCH_CHECK(in.labels.dim() == 1 && in.labels.size(0) == a.rows && in.labels.scalar_type() == at::kLong,
                "labels must be int64 [N] with N = ", a.rows, ", got ", in.labels.sizes(), " ", in.labels.scalar_type());
    a.labels = in.labels.data_ptr<int64_t>();
  }
  a.ignore_index = o.ignore_index;
  a.kind = o.kind;
  a.beta = static_cast<float>(o.beta);
  a.temperature = static_cast<float>(o.temperature);
  a.t2_scale = o.t2_scale;
  a.alpha = has_teacher ? static_cast<float>(o.alpha) : 0.0f;
  a.inv_normalizer = static_cast<float>(1.0 / normalizer);

  return a;
}

// One kernel call, ready to launch: its arguments, pointing into its outputs (and the inputs).
struct PreparedCall {
  kernels::KdLossArgs args;
  FusedOutputs out;
};

// The gradient output is new_grad() (like the student; undefined: no gradient), asked for once the inputs have
// passed their checks.
template <class NewGrad>
PreparedCall prepare_call(const FusedInputs& in, const KdLossOptions& o, double normalizer, bool has_teacher,
                          NewGrad new_grad) {
  PreparedCall c{kernel_args(in, o, normalizer, has_teacher), {}};
  c.out.grad = new_grad();
  if (c.out.grad.defined()) c.args.grad = c.out.grad.data_ptr();
  c.out.sums = at::empty({3}, in.student.options().dtype(at::kFloat));
  c.args.sums = c.out.sums.data_ptr<float>();
  try {
    kernels::kd_loss_check_args(c.args);
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK(false, "kd_loss: ", e.what());
  }
  return c;
}

// want_grad false (no grad mode, or a student that needs none): the kernel writes no gradient.
FusedOutputs run_fused(const FusedInputs& in, const KdLossOptions& o, double normalizer, bool has_teacher,
                       bool want_grad) {
  const at::Tensor& s = in.student;
  PreparedCall c = prepare_call(in, o, normalizer, has_teacher, [&] {
    if (!want_grad) return at::Tensor();
    return s.is_cuda() ? at::empty({s.size(0), s.size(1)}, s.options())
                       : cpu_gradient_buffer().take(s.size(0), s.size(1), s.options());
  });
  if (s.is_cuda()) {
    detail::kd_loss_forward_cuda_glue(c.args, s);
  } else {
    kernels::kd_loss_forward_cpu(c.args, kd_loss_cpu_isa());
  }
  return c.out;
}

struct FusedKdLossFunction : public torch::autograd::Function<FusedKdLossFunction> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& student,
                                                const FusedInputs& inputs, const KdLossOptions& options,
                                                double normalizer, bool has_teacher, bool want_grad) {
    FusedOutputs out = run_fused(inputs, options, normalizer, has_teacher, want_grad);
    ctx->saved_data["grad"] = out.grad;
    at::Tensor loss = out.sums.select(0, 0), kd = out.sums.select(0, 1), ce = out.sums.select(0, 2);
    ctx->mark_non_differentiable({kd, ce});
    return {loss, kd, ce};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto it = ctx->saved_data.find("grad");
    TORCH_CHECK(it != ctx->saved_data.end() && it->second.isTensor(),
                "kd_loss: backward called twice; the fused loss hands its gradient over once (no retain_graph)");
    at::Tensor grad = it->second.toTensor();
    ctx->saved_data.erase("grad");
    const at::Tensor& g = grad_outputs[0];
    if (g.defined()) {
      if (grad.is_cuda()) {
        detail::kd_loss_scale_grad_cuda_glue(grad, g);
      } else if (g.item<float>() != 1.0f) {  // a CPU scalar: reading it costs nothing
        grad.mul_(g);
      }
    }
    return {grad, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

// The kernel's inputs for a dense teacher, or none (supervised: `teacher` undefined).
FusedInputs dense_inputs(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                         const KdLossOptions& o) {
  TORCH_CHECK(student.dim() == 2, "student logits must be [N, V], got ", student.sizes());
  FusedInputs in;
  in.student = unit_stride_rows(student);
  in.labels = labels.defined() ? labels.contiguous() : labels;
  if (teacher.defined()) {
    TORCH_CHECK(teacher.device() == student.device(), "teacher logits on ", teacher.device(), ", student logits on ",
                student.device());
    in.teacher = unit_stride_rows(fit_teacher_vocab(student, teacher.detach(), o.vocab));
  } else {
    TORCH_CHECK(labels.defined(), "supervised training (no teacher) needs labels");
    // No teacher: the kernel still wants one; the student itself gives KL = 0 and alpha is forced to 0.
    in.teacher = unit_stride_rows(student.detach());
  }
  return in;
}

FusedInputs sparse_inputs(const at::Tensor& student, const SparseTeacher& t, const at::Tensor& labels) {
  TORCH_CHECK(student.dim() == 2, "student logits must be [N, V], got ", student.sizes());
  FusedInputs in;
  in.student = unit_stride_rows(student);
  in.labels = labels.defined() ? labels.contiguous() : labels;
  in.topk_index = t.index.contiguous();
  in.topk_logits = t.logits.detach().contiguous();
  if (t.lse.defined()) in.teacher_lse = t.lse.detach().to(at::kFloat).contiguous();
  return in;
}

KdLossKernelCall kernel_call(const FusedInputs& in, const KdLossOptions& o, double normalizer, bool has_teacher) {
  const at::Tensor& s = in.student;
  PreparedCall c =
      prepare_call(in, o, normalizer, has_teacher, [&] { return at::empty({s.size(0), s.size(1)}, s.options()); });
  return {c.args, c.out.grad, c.out.sums, {s, in.teacher, in.labels, in.topk_index, in.topk_logits, in.teacher_lse}};
}

// `inputs` from dense_inputs or sparse_inputs of `student`.
LossTerms apply_fused(const at::Tensor& student, const FusedInputs& inputs, const KdLossOptions& o,
                      double normalizer, bool has_teacher) {
  // Decided here: autograd runs the Function's forward with grad mode off.
  const bool want_grad = at::GradMode::is_enabled() && student.requires_grad();
  auto outs = FusedKdLossFunction::apply(student, inputs, o, normalizer, has_teacher, want_grad);
  LossTerms t{outs[0], outs[1], outs[2]};
  if (!has_teacher) t.kd = torch::zeros_like(t.kd);
  return t;
}

}  // namespace

kernels::CpuIsa kd_loss_cpu_isa() {
  static const kernels::CpuIsa isa = [] {  // a throw leaves it unset: the next call reports the same error
    using kernels::CpuIsa;
    const char* env = std::getenv("DISTILL_CPU_ISA");
    const std::string name = env ? env : "";
    if (name.empty()) return kernels::kd_loss_cpu_best_isa();
    for (CpuIsa isa : {CpuIsa::scalar, CpuIsa::avx2, CpuIsa::avx512}) {
      if (name != kernels::kd_loss_cpu_isa_name(isa)) continue;
      if (!kernels::kd_loss_cpu_isa_supported(isa))
        throw Error("DISTILL_CPU_ISA: this CPU does not support " + name + " (the widest it has is " +
                    kernels::kd_loss_cpu_isa_name(CpuIsa::best) + "); unset it, or name one it has");
      return isa;
    }
    throw Error("DISTILL_CPU_ISA: '" + name + "' is not one of scalar | avx2 | avx512 (unset it for the widest this "
                "CPU supports)");
  }();
  return isa;
}

CpuGradientBufferStats kd_loss_cpu_gradient_buffer_stats() { return cpu_gradient_buffer().stats(); }
void kd_loss_release_cpu_gradient_buffer() { cpu_gradient_buffer().release(); }

LossTerms kd_loss(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                  const KdLossOptions& o, double normalizer) {
  return apply_fused(student, dense_inputs(student, teacher, labels, o), o, normalizer, teacher.defined());
}

LossTerms kd_loss_sparse(const at::Tensor& student, const SparseTeacher& t, const at::Tensor& labels,
                         const KdLossOptions& o, double normalizer) {
  return apply_fused(student, sparse_inputs(student, t, labels), o, normalizer, true);
}

KdLossValue kd_loss_value(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                          const KdLossOptions& o, double normalizer, bool want_grad) {
  const bool has_teacher = teacher.defined();
  FusedOutputs out = run_fused(dense_inputs(student, teacher, labels, o), o, normalizer, has_teacher, want_grad);
  if (!has_teacher) out.sums.select(0, 1).zero_();
  return {out.sums, out.grad};
}

KdLossValue kd_loss_sparse_value(const at::Tensor& student, const SparseTeacher& t, const at::Tensor& labels,
                                 const KdLossOptions& o, double normalizer, bool want_grad) {
  FusedOutputs out = run_fused(sparse_inputs(student, t, labels), o, normalizer, true, want_grad);
  return {out.sums, out.grad};
}

KdLossKernelCall kd_loss_kernel_call(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& labels,
                                     const KdLossOptions& o, double normalizer) {
  return kernel_call(dense_inputs(student, teacher, labels, o), o, normalizer, teacher.defined());
}

KdLossKernelCall kd_loss_sparse_kernel_call(const at::Tensor& student, const SparseTeacher& t,
                                            const at::Tensor& labels, const KdLossOptions& o, double normalizer) {
  return kernel_call(sparse_inputs(student, t, labels), o, normalizer, true);
}

}  // namespace distill
