// The loss of a micro-batch from model outputs: flattened logits through the fused op, or hidden states and
// the output head through the chunked fused-linear op below.
#include <torch/torch.h>

#include <algorithm>

#include "distill/loss/output_loss.h"

namespace distill {

namespace {

// One model's output flattened to rows: logits [N, V], or hidden states [N, H] and the head.
struct FlatOutput {
  at::Tensor logits, hidden, weight, bias;

  static FlatOutput of(const ModelOutput& o) {
    FlatOutput f;
    if (o.logits.defined()) {
      f.logits = o.logits.reshape({-1, o.logits.size(-1)});
    } else {
      TORCH_INTERNAL_ASSERT(o.hidden.defined() && o.head_weight.defined(), "a model output needs logits or hidden + head");
      f.hidden = o.hidden.reshape({-1, o.hidden.size(-1)});
      f.weight = o.head_weight;
      f.bias = o.head_bias;
    }
    return f;
  }
  bool has_logits() const { return logits.defined(); }
  int64_t rows() const { return has_logits() ? logits.size(0) : hidden.size(0); }
  int64_t vocab() const { return has_logits() ? logits.size(1) : weight.size(0); }
  // Logits of rows [b, e).
  at::Tensor logits_of(int64_t b, int64_t e) const {
    if (has_logits()) return logits.slice(0, b, e);
    const at::Tensor h = hidden.slice(0, b, e);
    return bias.defined() ? at::linear(h, weight, bias) : at::linear(h, weight);
  }
  at::Tensor all_logits() const { return has_logits() ? logits : logits_of(0, rows()); }
};

SparseTeacher sparse_rows(const SparseTeacher& t, int64_t b, int64_t e) {
  SparseTeacher out;
  out.index = t.index.slice(0, b, e);
  out.logits = t.logits.slice(0, b, e);
  if (t.lse.defined()) out.lse = t.lse.slice(0, b, e);
  return out;
}

// Where a chunk's teacher comes from: a cached sparse teacher, a teacher's output (dense, or its top-k), or none.
struct TeacherSide {
  const FlatOutput* output = nullptr;
  SparseTeacher cached;
  int64_t topk = 0;

  KdLossValue value(const at::Tensor& student, int64_t b, int64_t e, const at::Tensor& labels, const KdLossOptions& o,
                    double normalizer, bool want_grad) const {
    if (cached.index.defined())
      return kd_loss_sparse_value(student, sparse_rows(cached, b, e), labels, o, normalizer, want_grad);
    if (!output) return kd_loss_value(student, at::Tensor(), labels, o, normalizer, want_grad);
    const at::Tensor t = output->logits_of(b, e);
    if (topk > 0)
      return kd_loss_sparse_value(student, sparse_teacher_topk(t, topk, student.size(1), o), labels, o, normalizer,
                                  want_grad);
    return kd_loss_value(student, t, labels, o, normalizer, want_grad);
  }
};

struct ChunkPlan {
  TeacherSide teacher;
  at::Tensor labels;  // [N]
  KdLossOptions options;
  double normalizer = 1;
  int64_t chunk_rows = 1;
};

// loss(hidden, weight, bias) with the head and the loss fused chunk by chunk. The forward computes the loss
// and, as it goes, the gradients of hidden, weight and bias; the backward scales them by grad_output. A head
// without bias passes an empty tensor (autograd takes no undefined inputs).
struct ChunkedHeadLoss : public torch::autograd::Function<ChunkedHeadLoss> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& hidden,
                                                const at::Tensor& weight, const at::Tensor& bias_or_empty,
                                                const ChunkPlan& plan, bool grad_hidden_wanted, bool grad_weight_wanted) {
    const at::Tensor bias = bias_or_empty.numel() > 0 ? bias_or_empty : at::Tensor();
    const int64_t n = hidden.size(0);
    const bool want_grad = grad_hidden_wanted || grad_weight_wanted;
    at::Tensor grad_hidden = grad_hidden_wanted ? at::empty_like(hidden) : at::Tensor();
    at::Tensor grad_weight = grad_weight_wanted ? at::zeros_like(weight) : at::Tensor();
    at::Tensor grad_bias = grad_weight_wanted && bias.defined() ? at::zeros_like(bias) : at::Tensor();
    at::Tensor sums = at::zeros({3}, hidden.options().dtype(at::kFloat));
    for (int64_t b = 0; b < n; b += plan.chunk_rows) {
      const int64_t e = std::min(n, b + plan.chunk_rows);
      const at::Tensor h = hidden.slice(0, b, e);
      const at::Tensor logits = bias.defined() ? at::linear(h, weight, bias) : at::linear(h, weight);
      KdLossValue v = plan.teacher.value(logits, b, e, plan.labels.slice(0, b, e), plan.options, plan.normalizer, want_grad);
      sums.add_(v.sums);
      if (!want_grad) continue;
      // The logits' gradient in the inputs' dtype (under autocast the logits may be bfloat16 while the
      // hidden states and the head are float32); the head's gradient accumulates in the head's dtype.
      const at::Tensor g = v.grad.to(hidden.scalar_type());
      if (grad_hidden_wanted) {
        at::Tensor rows = grad_hidden.slice(0, b, e);
        at::mm_out(rows, g, weight.to(hidden.scalar_type()));
      }
      if (grad_weight_wanted) {
        grad_weight.addmm_(g.t().to(weight.scalar_type()), h.to(weight.scalar_type()));
        if (grad_bias.defined()) grad_bias.add_(g.sum(0).to(bias.scalar_type()));
      }
    }
    ctx->saved_data["grad_hidden"] = grad_hidden;
    ctx->saved_data["grad_weight"] = grad_weight;
    ctx->saved_data["grad_bias"] = grad_bias;
    at::Tensor loss = sums.select(0, 0), kd = sums.select(0, 1), ce = sums.select(0, 2);
    ctx->mark_non_differentiable({kd, ce});
    return {loss, kd, ce};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    TORCH_CHECK(ctx->saved_data.count("grad_hidden"),
                "chunked loss: backward called twice; it hands its gradients over once (no retain_graph)");
    auto take = [&](const char* name) {
      at::Tensor t = ctx->saved_data[name].isTensor() ? ctx->saved_data[name].toTensor() : at::Tensor();
      ctx->saved_data.erase(name);
      return t;
    };
    at::Tensor gh = take("grad_hidden"), gw = take("grad_weight"), gb = take("grad_bias");
    const at::Tensor& g = grad_outputs[0];
    if (g.defined() && !(g.is_cpu() && g.item<float>() == 1.0f)) {
      for (at::Tensor* t : {&gh, &gw, &gb})
        if (t->defined()) t->mul_(g.to(t->scalar_type()));
    }
    return {gh, gw, gb, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

int64_t loss_chunk_rows(int64_t chunk_rows, int64_t vocab) {
  if (chunk_rows > 0) return chunk_rows;
  constexpr int64_t kChunkBytes = int64_t{32} << 20;
  return std::max<int64_t>(8, kChunkBytes / (4 * std::max<int64_t>(vocab, 1)));
}

LossTerms output_kd_loss(const ModelOutput& student_out, const ModelOutput* teacher_out, const SparseTeacher& cached,
                         const at::Tensor& targets, const OutputLossOptions& o, double normalizer) {
  const FlatOutput student = FlatOutput::of(student_out);
  const at::Tensor labels = targets.reshape({-1});
  TORCH_CHECK(labels.size(0) == student.rows(), "targets ", targets.sizes(), " do not match the student's ",
              student.rows(), " predictions");
  FlatOutput teacher;
  TeacherSide side;
  side.topk = o.topk;
  side.cached = cached;
  if (teacher_out && !cached.index.defined()) {
    teacher = FlatOutput::of(*teacher_out);
    TORCH_CHECK(teacher.rows() == student.rows(), "the teacher gave ", teacher.rows(), " predictions, the student ",
                student.rows());
    side.output = &teacher;
  }
  const bool has_teacher = side.output || cached.index.defined();

  if (student.has_logits()) {
    // Logits in full: one call of the fused op (a teacher with a head is applied in full too).
    const at::Tensor& s = student.logits;
    if (cached.index.defined()) return kd_loss_sparse(s, cached, labels, o.kd, normalizer);
    if (!side.output) return kd_loss(s, at::Tensor(), labels, o.kd, normalizer);
    at::Tensor t;
    {
      torch::NoGradGuard no_grad;
      t = teacher.all_logits();
    }
    if (o.topk > 0) return kd_loss_sparse(s, sparse_teacher_topk(t, o.topk, s.size(1), o.kd), labels, o.kd, normalizer);
    return kd_loss(s, t, labels, o.kd, normalizer);
  }

  ChunkPlan plan;
  plan.teacher = side;
  plan.labels = labels.contiguous();
  plan.options = o.kd;
  plan.normalizer = normalizer;
  plan.chunk_rows = loss_chunk_rows(o.chunk_rows, student.vocab());
  const bool grad_on = at::GradMode::is_enabled();
  const bool grad_hidden = grad_on && student.hidden.requires_grad();
  const bool grad_weight = grad_on && student.weight.requires_grad();
  const at::Tensor bias = student.bias.defined() ? student.bias : at::empty({0}, student.weight.options());
  auto outs = ChunkedHeadLoss::apply(student.hidden, student.weight, bias, plan, grad_hidden, grad_weight);
  LossTerms terms{outs[0], outs[1], outs[2]};
  if (!has_teacher) terms.kd = torch::zeros_like(terms.kd);
  return terms;
}

void for_each_logits_chunk(const ModelOutput& student_out, const ModelOutput* teacher_out, const at::Tensor& targets,
                           int64_t chunk_rows,
                           const std::function<void(const at::Tensor&, const at::Tensor&, const at::Tensor&)>& fn) {
  torch::NoGradGuard no_grad;
  const FlatOutput student = FlatOutput::of(student_out);
  FlatOutput teacher;
  if (teacher_out) teacher = FlatOutput::of(*teacher_out);
  const at::Tensor labels = targets.reshape({-1});
  const int64_t n = student.rows();
  const int64_t step = loss_chunk_rows(chunk_rows, student.vocab());
  for (int64_t b = 0; b < n; b += step) {
    const int64_t e = std::min(n, b + step);
    fn(student.logits_of(b, e), teacher_out ? teacher.logits_of(b, e) : at::Tensor(), labels.slice(0, b, e));
  }
}

}  // namespace distill
