// The distillation loss composed from ATen ops: the reference for the fused kernels and the baseline of
// `distill bench loss`. It materialises what the fused op never does (log-probabilities and probabilities of
// both rows, the pointwise terms, and their gradients), which is exactly why it is slow.
#include <torch/torch.h>

#include <limits>

#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/loss/kd_loss.h"
#include "loss/vocab.h"

namespace distill {

namespace {

// sum_v a_v (log_a_v - log_b_v) with 0 log 0 = 0, safe for -inf entries (no NaN in either where() branch,
// so the gradient stays finite too).
at::Tensor kl_rows(const at::Tensor& log_a, const at::Tensor& log_b) {
  at::Tensor a = log_a.exp();
  at::Tensor has_mass = a > 0;
  at::Tensor zero = torch::zeros({}, log_a.options());
  at::Tensor safe_a = torch::where(has_mass, log_a, zero);
  at::Tensor safe_b = torch::where(has_mass, log_b, zero);
  return torch::where(has_mass, a * (safe_a - safe_b), zero).sum(-1);
}

at::Tensor divergence_rows(const at::Tensor& log_p, const at::Tensor& log_q, const KdLossOptions& o) {
  using kernels::Divergence;
  if (o.kind == Divergence::forward_kl || (o.kind == Divergence::jsd && o.beta == 0.0)) return kl_rows(log_p, log_q);
  if (o.kind == Divergence::reverse_kl || (o.kind == Divergence::jsd && o.beta == 1.0)) return kl_rows(log_q, log_p);
  // Entries masked in both rows have no mixture mass; keep -inf out of logsumexp, whose gradient there is NaN.
  at::Tensor masked = torch::isinf(log_p) & torch::isinf(log_q);
  at::Tensor zero = torch::zeros({}, log_p.options());
  at::Tensor lp = torch::where(masked, zero, log_p), lq = torch::where(masked, zero, log_q);
  at::Tensor log_m = torch::logsumexp(torch::stack({lp + std::log(o.beta), lq + std::log1p(-o.beta)}), 0);
  return o.beta * kl_rows(log_p, log_m) + (1.0 - o.beta) * kl_rows(log_q, log_m);
}

// kd, ce per row (float32, 0 on ignored rows) and the loss.
LossTerms combine(at::Tensor kd_rows, const at::Tensor& student, const at::Tensor& labels, const KdLossOptions& o,
                  double normalizer, bool has_teacher) {
  TORCH_CHECK(normalizer > 0, "normalizer must be > 0, got ", normalizer);
  if (o.t2_scale) kd_rows = kd_rows * (o.temperature * o.temperature);
  at::Tensor ce_rows = torch::zeros_like(kd_rows);
  if (labels.defined()) {
    at::Tensor valid = labels != o.ignore_index;
    kd_rows = torch::where(valid, kd_rows, torch::zeros_like(kd_rows));
    ce_rows = torch::nn::functional::cross_entropy(
        student.to(torch::kFloat32), labels,
        torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone).ignore_index(o.ignore_index));
  }
  at::Tensor kd = kd_rows.sum() / normalizer, ce = ce_rows.sum() / normalizer;
  if (!has_teacher) return {ce, torch::zeros_like(kd).detach(), ce.detach()};
  at::Tensor loss = labels.defined() ? o.alpha * kd + (1.0 - o.alpha) * ce : kd;
  return {loss, kd.detach(), ce.detach()};
}

}  // namespace

LossTerms kd_loss_composite(const at::Tensor& student, const at::Tensor& teacher_in, const at::Tensor& labels,
                            const KdLossOptions& o, double normalizer) {
  TORCH_CHECK(student.dim() == 2, "student logits must be [N, V], got ", student.sizes());
  if (!teacher_in.defined()) return combine(torch::zeros({student.size(0)}, student.options().dtype(torch::kFloat32)),
                                            student, labels, o, normalizer, false);
  at::Tensor teacher = fit_teacher_vocab(student, teacher_in, o.vocab);
  const double T = o.temperature;
  at::Tensor log_q = torch::log_softmax(student.to(torch::kFloat32) / T, -1);
  at::Tensor log_p = torch::log_softmax(teacher.to(torch::kFloat32) / T, -1);
  return combine(divergence_rows(log_p, log_q, o), student, labels, o, normalizer, true);
}

LossTerms kd_loss_sparse_composite(const at::Tensor& student, const SparseTeacher& t, const at::Tensor& labels,
                                   const KdLossOptions& o, double normalizer) {
  TORCH_CHECK(o.kind == kernels::Divergence::forward_kl, "sparse (top-k) teachers support only forward_kl");
  const double T = o.temperature;
  // index -1: an absent entry (probability 0, in no sum); gathered at 0 and masked.
  const at::Tensor present = t.index >= 0;
  const at::Tensor index = t.index.clamp_min(0);
  const double neg_inf = -std::numeric_limits<double>::infinity();
  at::Tensor log_q_full = torch::log_softmax(student.to(torch::kFloat32) / T, -1);
  at::Tensor log_q = log_q_full.gather(1, index);
  at::Tensor logits = t.logits.to(torch::kFloat32).masked_fill(~present, neg_inf);
  const at::Tensor any = present.any(-1);
  at::Tensor d;
  if (o.topk_tail == kernels::TopkTail::ignore) {
    // A row without entries has no teacher distribution (its log_softmax would be NaN): no KD term.
    at::Tensor log_p = torch::log_softmax(torch::where(any.unsqueeze(1), logits, torch::zeros_like(logits)) / T, -1);
    d = torch::where(any, kl_rows(log_p.masked_fill(~present, neg_inf), log_q), torch::zeros_like(any, torch::kFloat32));
  } else {
    TORCH_CHECK(t.lse.defined(), "topk_tail = tail needs the teacher's full-vocabulary logsumexp per row");
    at::Tensor log_p = logits / T - t.lse.to(torch::kFloat32).unsqueeze(1);
    at::Tensor p = log_p.exp();
    at::Tensor m_t = 1.0 - p.sum(-1);
    m_t = torch::where(m_t < kernels::kd_loss_tail_mass_floor, torch::zeros_like(m_t), m_t);
    // m_s summed over the entries outside the top-k (1 - sum_k Q_k cancels when the top-k holds nearly all).
    at::Tensor hits = torch::zeros_like(log_q_full).scatter_add(1, index, present.to(torch::kFloat32));
    at::Tensor outside = hits == 0;
    at::Tensor m_s = torch::where(outside, log_q_full.exp(), torch::zeros_like(log_q_full)).sum(-1);
    at::Tensor safe_m_t = torch::where(m_t > 0, m_t, torch::ones_like(m_t));
    at::Tensor tail = torch::where(m_t > 0, m_t * (safe_m_t.log() - m_s.log()), torch::zeros_like(m_t));
    d = kl_rows(log_p, log_q) + tail;
  }
  return combine(d, student, labels, o, normalizer, true);
}

KdLossOptions KdLossOptions::from_config(const LossConfig& c) {
  KdLossOptions o;
  o.kind = divergence_named(c.kind, "loss.kind");
  o.beta = c.beta;
  o.temperature = c.temperature;
  o.t2_scale = c.t2_scale;
  o.alpha = c.alpha;
  o.ignore_index = c.ignore_index;
  o.vocab = vocab_policy_named(c.vocab, "loss.vocab");
  o.topk_tail = topk_tail_named(c.topk_tail, "loss.topk_tail");
  return o;
}

}  // namespace distill
