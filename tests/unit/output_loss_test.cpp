// The loss from model outputs: the chunked fused-linear path (hidden states + output head) against the same
// loss on full logits through the ATen composite, loss and gradients; and the streaming evaluator.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "distill/config/config.h"
#include "distill/loss/output_loss.h"
#include "distill/models/model.h"
#include "distill/train/evaluate.h"

using distill::KdLossOptions;
using distill::ModelOutput;
using distill::OutputLossOptions;

namespace {

struct Case {
  const char* name;
  distill::kernels::Divergence kind;
  int64_t topk;
  distill::kernels::TopkTail tail;
};

at::Tensor close_to(const at::Tensor& a) { return a.detach().clone(); }

}  // namespace

TEST_CASE("chunked head + loss equals the composite on full logits, loss and gradients") {
  torch::manual_seed(3);
  const int64_t B = 3, T = 7, H = 16, V = 53, Vt = 57;
  const Case cases[] = {
      {"forward_kl", distill::kernels::Divergence::forward_kl, 0, distill::kernels::TopkTail::ignore},
      {"reverse_kl", distill::kernels::Divergence::reverse_kl, 0, distill::kernels::TopkTail::ignore},
      {"jsd", distill::kernels::Divergence::jsd, 0, distill::kernels::TopkTail::ignore},
      {"top-k tail", distill::kernels::Divergence::forward_kl, 9, distill::kernels::TopkTail::tail},
      {"top-k ignore", distill::kernels::Divergence::forward_kl, 9, distill::kernels::TopkTail::ignore},
  };
  for (const Case& c : cases) {
    for (int64_t chunk : {int64_t{1}, int64_t{5}, int64_t{64}}) {
      for (bool teacher_head : {false, true}) {
        INFO(c.name << ", chunk " << chunk << (teacher_head ? ", teacher hidden + head" : ", teacher logits"));
        at::Tensor hidden = torch::randn({B, T, H}, torch::requires_grad());
        at::Tensor weight = (torch::randn({V, H}) * 0.3).requires_grad_();
        at::Tensor t_hidden = torch::randn({B, T, H});
        at::Tensor t_weight = torch::randn({Vt, H}) * 0.3;
        at::Tensor targets = torch::randint(0, V, {B, T}, torch::kInt64);
        targets.index_put_({0, 2}, -100);
        targets.index_put_({2, 6}, -100);
        OutputLossOptions o;
        o.kd.kind = c.kind;
        o.kd.temperature = 2.0;
        o.kd.alpha = 0.7;
        o.kd.beta = 0.3;
        o.kd.vocab = distill::VocabPolicy::truncate;
        o.kd.topk_tail = c.tail;
        o.topk = c.topk;
        o.chunk_rows = chunk;
        const double normalizer = 37;  // the step's valid targets, more than this micro-batch's

        ModelOutput student{at::Tensor(), hidden, weight, at::Tensor()};
        ModelOutput teacher;
        if (teacher_head) teacher = {at::Tensor(), t_hidden, t_weight, at::Tensor()};
        else teacher.logits = at::linear(t_hidden, t_weight);
        distill::LossTerms got = distill::output_kd_loss(student, &teacher, {}, targets, o, normalizer);
        got.loss.mul(2.0).backward();  // grad_output 2: the backward scales
        const at::Tensor gh = close_to(hidden.grad()), gw = close_to(weight.grad());

        // Reference: the same rows through full logits and the ATen composite.
        at::Tensor h2 = hidden.detach().clone().requires_grad_();
        at::Tensor w2 = weight.detach().clone().requires_grad_();
        at::Tensor s_logits = at::linear(h2, w2).reshape({-1, V});
        at::Tensor t_logits = at::linear(t_hidden, t_weight).reshape({-1, Vt});
        distill::LossTerms want;
        if (c.topk > 0)
          want = distill::kd_loss_sparse_composite(s_logits, distill::sparse_teacher_topk(t_logits, c.topk, V, o.kd),
                                                   targets.reshape({-1}), o.kd, normalizer);
        else
          want = distill::kd_loss_composite(s_logits, t_logits, targets.reshape({-1}), o.kd, normalizer);
        want.loss.mul(2.0).backward();
        CHECK(got.loss.item<double>() == Approx(want.loss.item<double>()).epsilon(1e-5));
        CHECK(got.kd.item<double>() == Approx(want.kd.item<double>()).epsilon(1e-5));
        CHECK(got.ce.item<double>() == Approx(want.ce.item<double>()).epsilon(1e-5));
        CHECK(torch::allclose(gh, h2.grad(), 1e-4, 1e-6));
        CHECK(torch::allclose(gw, w2.grad(), 1e-4, 1e-6));
      }
    }
  }
}

TEST_CASE("chunked loss: no teacher, and no gradient wanted") {
  torch::manual_seed(5);
  at::Tensor hidden = torch::randn({10, 8}, torch::requires_grad());
  at::Tensor weight = torch::randn({11, 8}, torch::requires_grad());
  at::Tensor targets = torch::randint(0, 11, {10}, torch::kInt64);
  OutputLossOptions o;
  o.chunk_rows = 3;
  ModelOutput student{at::Tensor(), hidden, weight, at::Tensor()};
  distill::LossTerms got = distill::output_kd_loss(student, nullptr, {}, targets, o, 10);
  at::Tensor want = torch::nn::functional::cross_entropy(at::linear(hidden, weight), targets);
  CHECK(got.loss.item<double>() == Approx(want.item<double>()).epsilon(1e-5));
  CHECK(got.kd.item<double>() == 0.0);
  {
    torch::NoGradGuard no_grad;
    distill::LossTerms again = distill::output_kd_loss(student, nullptr, {}, targets, o, 10);
    CHECK(again.loss.item<double>() == Approx(want.item<double>()).epsilon(1e-5));
    CHECK_FALSE(again.loss.requires_grad());
  }
}

TEST_CASE("evaluation accumulates over batches what one pass over all of them gives") {
  torch::manual_seed(7);
  const int64_t N = 40, V = 13;
  at::Tensor s = torch::randn({N, V}), t = torch::randn({N, V});
  at::Tensor y = torch::randint(0, V, {N}, torch::kInt64);
  y.index_put_({torch::tensor({1, 5, 9})}, -100);
  distill::LossConfig loss;
  loss.temperature = 2;
  distill::EvalAccumulator parts(loss, 4), whole(loss, 0);
  for (int64_t b = 0; b < N; b += 9) {
    const int64_t e = std::min(N, b + 9);
    ModelOutput so{s.slice(0, b, e)}, to{t.slice(0, b, e)};
    parts.add(so, &to, y.slice(0, b, e), e - b);
  }
  ModelOutput so{s}, to{t};
  whole.add(so, &to, y, N);
  const distill::EvalResult a = parts.result(), w = whole.result();
  CHECK(a.targets == 37);
  CHECK(a.examples == N);
  CHECK(a.student_accuracy == w.student_accuracy);
  CHECK(a.teacher_accuracy == w.teacher_accuracy);
  CHECK(a.agreement == w.agreement);
  CHECK(a.kd_loss == Approx(w.kd_loss).epsilon(1e-6));
  CHECK(a.ce_loss == Approx(w.ce_loss).epsilon(1e-6));
  CHECK(a.teacher_ce_loss == Approx(w.teacher_ce_loss).epsilon(1e-6));
  // Against ATen: the valid rows only.
  at::Tensor valid = y.ne(-100);
  at::Tensor ce = torch::nn::functional::cross_entropy(s, y, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  CHECK(a.ce_loss == Approx(ce.item<double>()).epsilon(1e-5));
  at::Tensor acc = s.argmax(1).eq(y).logical_and(valid).sum().to(torch::kDouble) / 37.0;
  CHECK(a.student_accuracy == Approx(acc.item<double>()));
  at::Tensor tce = torch::nn::functional::cross_entropy(t, y, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
  CHECK(a.teacher_ce_loss == Approx(tce.item<double>()).epsilon(1e-5));
  CHECK(a.teacher_perplexity() == Approx(std::exp(tce.item<double>())).epsilon(1e-5));
}
