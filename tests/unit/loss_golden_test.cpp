// The loss op (fused kernel through the autograd Function) and the ATen composite, against golden values
// from PyTorch (tests/fixtures/make_loss_golden.py) and against each other.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/loss/kd_loss.h"

using distill::KdLossOptions;
using distill::kernels::Divergence;
using nlohmann::json;

namespace {

at::Tensor tensor_of(const json& rows) {
  std::vector<float> flat;
  int64_t n = rows.size(), v = rows[0].size();
  for (const auto& r : rows)
    for (const auto& x : r)
      flat.push_back(x.is_string() ? (x == "-inf" ? -INFINITY : INFINITY) : x.get<float>());
  return torch::tensor(flat).reshape({n, v});
}

at::ScalarType dtype_of(const std::string& name) {
  return name == "bf16" ? at::kBFloat16 : name == "f16" ? at::kHalf : at::kFloat;
}

void check_close(double got, double want, double rtol, double atol, const char* what) {
  INFO(what << ": got " << got << " want " << want);
  CHECK(std::abs(got - want) <= atol + rtol * std::abs(want));
}

// |got - want| <= atol + rtol |want| elementwise, with atol relative to the largest |want|: gradient entries
// near zero come from cancellation, where two correct fp32 computations differ by more than rtol.
void check_tensor_close(const at::Tensor& got, const at::Tensor& want, double rtol, double atol_scale, const char* what) {
  at::Tensor g = got.to(at::kDouble), w = want.to(at::kDouble);
  // Floor: fp32 rounding of a difference of probabilities (Q - P near 0.5 each) is ~6e-8.
  const double atol = std::max(3e-7, atol_scale * w.abs().nan_to_num(0, 0, 0).max().item<double>());
  at::Tensor bad = ((g - w).abs() > atol + rtol * w.abs()) | (g.isnan() != w.isnan());
  INFO(what << ": max |diff| " << (g - w).abs().nan_to_num(0).max().item<double>() << ", mismatches "
            << bad.sum().item<int64_t>() << " of " << g.numel());
  CHECK_FALSE(bad.any().item<bool>());
}

KdLossOptions options_of(const json& c) {
  KdLossOptions o;
  o.kind = distill::divergence_named(c["kind"], "fixture kind");
  o.beta = c["beta"];
  o.temperature = c["temperature"];
  o.alpha = c["alpha"];
  o.t2_scale = c["t2_scale"];
  o.vocab = distill::vocab_policy_named(c["vocab"], "fixture vocab");
  return o;
}

struct Computed {
  distill::LossTerms terms;
  at::Tensor grad;
};

template <class Op> Computed run_op(Op op, at::Tensor s, const at::Tensor& t, const at::Tensor& y, const KdLossOptions& o,
                                    double normalizer) {
  s = s.detach().requires_grad_(true);
  auto terms = op(s, t, y, o, normalizer);
  terms.loss.backward();
  return {terms, s.grad()};
}

}  // namespace

TEST_CASE("kd loss: fused op and composite equal PyTorch's golden values and gradients") {
  json golden = json::parse(distill::test::read_text(distill::test::source_path("tests/fixtures/loss_golden.json")));
  REQUIRE(golden["cases"].size() >= 80);
  for (const auto& c : golden["cases"]) {
    const std::string name = c["name"];
    INFO("case " << name);
    at::ScalarType dt = dtype_of(c["dtype"]);
    at::Tensor s = tensor_of(c["student"]).to(dt), t = tensor_of(c["teacher"]).to(dt);
    at::Tensor y = torch::tensor(c["labels"].get<std::vector<int64_t>>());
    KdLossOptions o = options_of(c);
    double norm = c["normalizer"];
    at::Tensor want_grad = tensor_of(c["grad"]);
    // fp32 math either way; a low-precision gradient is stored in the student's dtype.
    const double grad_rtol = dt == at::kFloat ? 2e-4 : 1e-2, grad_atol = dt == at::kFloat ? 1e-5 : 1e-2;
    const auto fused = run_op(distill::kd_loss, s, t, y, o, norm);
    const auto composite = run_op(distill::kd_loss_composite, s, t, y, o, norm);
    for (const auto* r : {&fused, &composite}) {
      INFO((r == &fused ? "fused" : "composite"));
      check_close(r->terms.loss.item<double>(), c["loss"], 1e-4, 1e-5, "loss");
      check_close(r->terms.kd.item<double>(), c["kd"], 1e-4, 1e-5, "kd");
      check_close(r->terms.ce.item<double>(), c["ce"], 1e-4, 1e-5, "ce");
      REQUIRE(r->grad.defined());
      CHECK(r->grad.scalar_type() == dt);
      check_tensor_close(r->grad, want_grad, grad_rtol, grad_atol, "gradient");
    }
  }
}

TEST_CASE("kd loss: fused equals composite over shapes, dtypes, kinds, betas and temperatures") {
  torch::manual_seed(7);
  struct Shape {
    int64_t n, v;
  };
  // [64, 32001] fp32: an 8 MB gradient, which the op asks to back with huge pages before the kernel writes it.
  const std::vector<Shape> shapes = {{1, 1},     {7, 2},       {4096, 10}, {7, 1000},
                                     {1, 32001}, {7, 32001}, {64, 32001}, {1, 128256}};
  for (auto shape : shapes) {
    for (auto dt : {at::kFloat, at::kBFloat16, at::kHalf}) {
      for (auto [kind, beta] : std::vector<std::pair<Divergence, double>>{
               {Divergence::forward_kl, 0.5}, {Divergence::reverse_kl, 0.5}, {Divergence::jsd, 0.0},
               {Divergence::jsd, 0.5}, {Divergence::jsd, 1.0}}) {
        for (double T : {1.0, 4.0, 20.0}) {
          INFO("N " << shape.n << " V " << shape.v << " dtype " << dt << " kind " << static_cast<int>(kind) << " beta " << beta
                    << " T " << T);
          at::Tensor s = (torch::randn({shape.n, shape.v}) * 3).to(dt), t = (torch::randn({shape.n, shape.v}) * 3).to(dt);
          at::Tensor y = torch::randint(0, shape.v, {shape.n});
          if (shape.n > 2) y.index_put_({torch::arange(0, shape.n, 3)}, -100);  // every third row ignored
          if (shape.v > 4) {  // a masked vocabulary column in both
            s.select(1, 1).fill_(-INFINITY);
            t.select(1, 1).fill_(-INFINITY);
            y.masked_fill_(y == 1, 0);
          }
          KdLossOptions o;
          o.kind = kind;
          o.beta = beta;
          o.temperature = T;
          o.alpha = 0.7;
          double norm = std::max<int64_t>(1, (y != -100).sum().item<int64_t>());
          auto fused = run_op(distill::kd_loss, s, t, y, o, norm);
          auto composite = run_op(distill::kd_loss_composite, s, t, y, o, norm);
          // fp32 sums over up to 224k terms in two different orders: 5e-4 relative.
          check_close(fused.terms.loss.item<double>(), composite.terms.loss.item<double>(), 5e-4, 1e-5, "loss");
          check_close(fused.terms.kd.item<double>(), composite.terms.kd.item<double>(), 5e-4, 1e-5, "kd");
          check_close(fused.terms.ce.item<double>(), composite.terms.ce.item<double>(), 5e-4, 1e-5, "ce");
          const double rtol = dt == at::kFloat ? 1e-3 : 2e-2, atol = dt == at::kFloat ? 1e-5 : 1e-2;
          check_tensor_close(fused.grad, composite.grad, rtol, atol, "gradient");
        }
      }
    }
  }
}

TEST_CASE("kd loss: backward scales by grad_output, accumulation weights micro-batches by rows") {
  torch::manual_seed(3);
  at::Tensor s = torch::randn({9, 12}), t = torch::randn({9, 12});
  at::Tensor y = torch::randint(0, 12, {9});
  KdLossOptions o;
  o.temperature = 3;
  o.alpha = 0.6;
  auto once = run_op(distill::kd_loss, s, t, y, o, 9);
  at::Tensor s3 = s.clone().requires_grad_(true);
  (distill::kd_loss(s3, t, y, o, 9).loss * 3).backward();
  check_tensor_close(s3.grad(), once.grad * 3, 1e-6, 1e-7, "3 x loss");
  // Two micro-batches of 6 and 3 rows normalised by the step's 9 rows add up to the whole batch.
  at::Tensor sa = s.slice(0, 0, 6).clone().requires_grad_(true), sb = s.slice(0, 6).clone().requires_grad_(true);
  auto a = distill::kd_loss(sa, t.slice(0, 0, 6), y.slice(0, 0, 6), o, 9);
  auto b = distill::kd_loss(sb, t.slice(0, 6), y.slice(0, 6), o, 9);
  (a.loss + b.loss).backward();
  check_close((a.loss + b.loss).item<double>(), once.terms.loss.item<double>(), 1e-6, 1e-7, "accumulated loss");
  check_tensor_close(torch::cat({sa.grad(), sb.grad()}), once.grad, 1e-5, 1e-6, "accumulated gradient");
  // Backward twice through the fused op is refused clearly rather than double-scaling the gradient.
  at::Tensor sr = s.clone().requires_grad_(true);
  auto r = distill::kd_loss(sr, t, y, o, 9);
  r.loss.backward({}, /*retain_graph=*/true);
  CHECK_THROWS_WITH(r.loss.backward(), Catch::Contains("backward called twice"));
  // alpha outside [0, 1] (the kernels' argument check) and a non-positive normaliser are refused, not computed.
  KdLossOptions wrong = o;
  wrong.alpha = 1.5;
  CHECK_THROWS_WITH(distill::kd_loss(s, t, y, wrong, 9), Catch::Contains("alpha must be in [0, 1]"));
  CHECK_THROWS_WITH(distill::kd_loss(s, t, y, o, 0), Catch::Contains("normalizer must be > 0"));
}

TEST_CASE("kd loss: the CPU gradient buffer is reused only once nothing holds it") {
  torch::manual_seed(11);
  const int64_t n = 64, v = 300;
  at::Tensor t = torch::randn({n, v}), y = torch::randint(0, v, {n});
  KdLossOptions o;
  o.temperature = 2;
  o.alpha = 0.5;
  auto step = [&](const at::Tensor& logits, const at::Tensor& labels) {
    at::Tensor s = logits.detach().requires_grad_(true);
    distill::kd_loss(s, t.slice(0, 0, s.size(0)), labels, o, n).loss.backward();
    return s.grad();  // the op's gradient itself: AccumulateGrad keeps the tensor it is handed
  };
  const at::Tensor s1 = torch::randn({n, v}), s2 = torch::randn({n, v}) * 3;
  const at::Tensor want1 = run_op(distill::kd_loss_composite, s1, t, y, o, n).grad;
  const at::Tensor want2 = run_op(distill::kd_loss_composite, s2, t, y, o, n).grad;

  // Held by the caller: the next call must not write into it.
  at::Tensor g1 = step(s1, y);
  const auto before = distill::kd_loss_cpu_gradient_buffer_stats();
  at::Tensor g2 = step(s2, y);
  auto after = distill::kd_loss_cpu_gradient_buffer_stats();
  CHECK(after.allocations == before.allocations + 1);
  CHECK(after.reuses == before.reuses);
  CHECK(g2.data_ptr() != g1.data_ptr());
  check_tensor_close(g1, want1, 1e-5, 1e-6, "held gradient, after another call");
  check_tensor_close(g2, want2, 1e-5, 1e-6, "second gradient");

  // Dropped: the next call of the same or a smaller size reuses one, and overwrites every element of it, also
  // in rows it only zeroes (ignored labels).
  g1 = g2 = at::Tensor();
  at::Tensor y_ignored = y.clone();
  y_ignored.slice(0, 0, n / 2).fill_(-100);
  const at::Tensor want3 = run_op(distill::kd_loss_composite, s1, t, y_ignored, o, n).grad;
  at::Tensor g3 = step(s1, y_ignored);
  after = distill::kd_loss_cpu_gradient_buffer_stats();
  CHECK(after.reuses == before.reuses + 1);
  CHECK(after.held_bytes >= n * v * 4);
  check_tensor_close(g3, want3, 1e-5, 1e-6, "reused gradient");
  CHECK(g3.slice(0, 0, n / 2).abs().max().item<float>() == 0.0f);
  g3 = at::Tensor();
  at::Tensor small = step(s1.slice(0, 0, 5), y.slice(0, 0, 5));
  CHECK(distill::kd_loss_cpu_gradient_buffer_stats().reuses == before.reuses + 2);
  CHECK(small.sizes() == at::IntArrayRef({5, v}));
  CHECK(small.is_contiguous());
  // A view keeps the storage busy as well.
  at::Tensor view = small.slice(0, 1, 3);
  small = at::Tensor();
  const auto busy = distill::kd_loss_cpu_gradient_buffer_stats();
  at::Tensor g4 = step(s1, y);
  CHECK(distill::kd_loss_cpu_gradient_buffer_stats().allocations == busy.allocations + 1);
  CHECK(g4.data_ptr() != view.data_ptr());

  // No gradient wanted (no grad mode, or a student that needs none): nothing of size [N, V] is allocated.
  view = g4 = at::Tensor();
  const auto quiet = distill::kd_loss_cpu_gradient_buffer_stats();
  {
    torch::NoGradGuard no_grad;
    auto r = distill::kd_loss(s1.detach().requires_grad_(true), t, y, o, n);
    CHECK(r.loss.item<double>() == Approx(distill::kd_loss(s1, t, y, o, n).loss.item<double>()));
  }
  auto r = distill::kd_loss(s1, t, y, o, n);  // s1 does not require grad
  CHECK_FALSE(r.loss.requires_grad());
  const auto after_quiet = distill::kd_loss_cpu_gradient_buffer_stats();
  CHECK(after_quiet.allocations == quiet.allocations);
  CHECK(after_quiet.reuses == quiet.reuses);
}

TEST_CASE("kd loss: vocabulary rules and supervised mode") {
  at::Tensor s = torch::randn({3, 5}), wide = torch::randn({3, 8}), narrow = torch::randn({3, 4});
  at::Tensor y = torch::tensor({0, 4, 2});
  KdLossOptions o;
  CHECK_THROWS_WITH(distill::kd_loss(s, wide, y, o, 3), Catch::Contains("loss.vocab") && Catch::Contains("\"truncate\""));
  CHECK_THROWS_WITH(distill::kd_loss(s, narrow, y, o, 3), Catch::Contains("fewer than the student's 5"));
  o.vocab = distill::VocabPolicy::truncate;
  auto truncated = distill::kd_loss(s, wide, y, o, 3);
  auto same = distill::kd_loss(s, wide.narrow(1, 0, 5).contiguous(), y, o, 3);
  CHECK(truncated.loss.item<double>() == same.loss.item<double>());
  // No teacher: plain cross-entropy.
  at::Tensor sg = s.clone().requires_grad_(true);
  auto sup = distill::kd_loss(sg, at::Tensor(), y, o, 3);
  CHECK(sup.kd.item<double>() == 0.0);
  CHECK(sup.loss.item<double>() == Approx(torch::nn::functional::cross_entropy(s, y).item<double>()).epsilon(1e-6));
}

TEST_CASE("kd loss: sparse top-k teachers, ignore and tail") {
  torch::manual_seed(11);
  const int64_t n = 6, v = 50, k = 8;
  at::Tensor s = torch::randn({n, v}) * 2, full = torch::randn({n, v}) * 2;
  at::Tensor y = torch::randint(0, v, {n});
  y[2] = -100;
  KdLossOptions o;
  o.temperature = 2;
  o.alpha = 0.8;
  auto top = full.topk(k, 1);
  distill::SparseTeacher sparse{std::get<1>(top), std::get<0>(top), torch::logsumexp(full / o.temperature, 1)};
  for (auto tail : {distill::kernels::TopkTail::ignore, distill::kernels::TopkTail::tail}) {
    o.topk_tail = tail;
    auto fused = run_op([&](auto s_, auto, auto y_, auto o_, double norm) { return distill::kd_loss_sparse(s_, sparse, y_, o_, norm); },
                        s, at::Tensor(), y, o, 5);
    auto composite = run_op([&](auto s_, auto, auto y_, auto o_, double norm) {
      return distill::kd_loss_sparse_composite(s_, sparse, y_, o_, norm);
    }, s, at::Tensor(), y, o, 5);
    check_close(fused.terms.loss.item<double>(), composite.terms.loss.item<double>(), 1e-4, 1e-6, "loss");
    check_tensor_close(fused.grad, composite.grad, 1e-3, 1e-5, "gradient");
  }
  // With K = V and the tail term, the sparse teacher is the dense one.
  auto all = full.topk(v, 1);
  distill::SparseTeacher complete{std::get<1>(all), std::get<0>(all), torch::logsumexp(full / o.temperature, 1)};
  o.topk_tail = distill::kernels::TopkTail::tail;
  auto dense = distill::kd_loss(s, full, y, o, 5);
  auto as_sparse = distill::kd_loss_sparse(s, complete, y, o, 5);
  check_close(as_sparse.loss.item<double>(), dense.loss.item<double>(), 1e-4, 1e-6, "K = V");
}

TEST_CASE("kd loss: sparse_teacher_topk builds the sparse teacher of loss.topk") {
  torch::manual_seed(13);
  const int64_t n = 5, v = 12;
  at::Tensor s = torch::randn({n, v}) * 2, full = torch::randn({n, v + 3}) * 2;
  at::Tensor y = torch::tensor({3, -100, 0, 11, 7});
  KdLossOptions o;
  o.temperature = 3;
  o.alpha = 0.7;
  // Wider teacher: loss.vocab decides first, as for the dense teacher.
  CHECK_THROWS_WITH(distill::sparse_teacher_topk(full, 4, v, o), Catch::Contains("loss.vocab"));
  o.vocab = distill::VocabPolicy::truncate;
  const at::Tensor fitted = full.narrow(1, 0, v);
  auto ignore = distill::sparse_teacher_topk(full, 4, v, o);
  CHECK_FALSE(ignore.lse.defined());
  auto want = fitted.topk(4, 1);
  CHECK(torch::equal(ignore.logits, std::get<0>(want)));
  CHECK(torch::equal(ignore.index, std::get<1>(want)));
  CHECK(ignore.index.max().item<int64_t>() < v);
  o.topk_tail = distill::kernels::TopkTail::tail;
  auto tail = distill::sparse_teacher_topk(full, 4, v, o);
  REQUIRE(tail.lse.defined());
  check_tensor_close(tail.lse, torch::logsumexp(fitted / 3.0, 1), 1e-6, 0, "lse");
  // K = V: both tail modes are the dense forward KL.
  auto dense = distill::kd_loss(s, fitted.contiguous(), y, o, 4);
  for (auto mode : {distill::kernels::TopkTail::ignore, distill::kernels::TopkTail::tail}) {
    o.topk_tail = mode;
    auto all = distill::kd_loss_sparse(s, distill::sparse_teacher_topk(full, v, v, o), y, o, 4);
    check_close(all.loss.item<double>(), dense.loss.item<double>(), 1e-5, 1e-7, "K = V");
    check_close(all.kd.item<double>(), dense.kd.item<double>(), 1e-5, 1e-7, "K = V kd");
  }
  // K < V differs from the dense teacher, and K outside [1, V] names loss.topk.
  auto few = distill::kd_loss_sparse(s, distill::sparse_teacher_topk(full, 2, v, o), y, o, 4);
  CHECK(std::abs(few.kd.item<double>() - dense.kd.item<double>()) > 1e-3);
  CHECK_THROWS_WITH(distill::sparse_teacher_topk(full, v + 1, v, o), Catch::Contains("loss.topk: 13 is not in [1, 12]"));
  CHECK_THROWS_WITH(distill::sparse_teacher_topk(full, 0, v, o), Catch::Contains("loss.topk"));
}

TEST_CASE("kd loss: the kernel call for timing is the op's, argument for argument") {
  torch::manual_seed(17);
  const int64_t n = 6, v = 40;
  at::Tensor s = (torch::randn({n, v}) * 2).to(at::kBFloat16), t = (torch::randn({n, v + 3}) * 2).to(at::kBFloat16);
  at::Tensor y = torch::tensor({3, 7, 0, 39, 5, 1});
  KdLossOptions o;
  o.kind = Divergence::jsd;
  o.beta = 0.3;
  o.temperature = 3;
  o.t2_scale = false;
  o.alpha = 0.6;
  o.ignore_index = 7;  // row 1 ignored: only if the call passes ignore_index on
  o.vocab = distill::VocabPolicy::truncate;
  auto check_same = [&](const distill::KdLossKernelCall& call, const Computed& op) {
    distill::kernels::kd_loss_forward_cpu(call.args, distill::kd_loss_cpu_isa());
    CHECK(call.sums[0].item<float>() == op.terms.loss.item<float>());
    CHECK(call.sums[1].item<float>() == op.terms.kd.item<float>());
    CHECK(call.sums[2].item<float>() == op.terms.ce.item<float>());
    CHECK(torch::equal(call.grad, op.grad));
    CHECK(call.grad[1].abs().max().item<float>() == 0.0f);
  };
  auto op = run_op(distill::kd_loss, s, t, y, o, 5);
  check_same(distill::kd_loss_kernel_call(s, t, y, o, 5), op);
  o.kind = Divergence::forward_kl;
  o.topk_tail = distill::kernels::TopkTail::tail;
  const distill::SparseTeacher sparse = distill::sparse_teacher_topk(t, 6, v, o);
  auto sparse_op = run_op([&](auto s_, auto, auto y_, auto o_, double norm) { return distill::kd_loss_sparse(s_, sparse, y_, o_, norm); },
                          s, at::Tensor(), y, o, 5);
  check_same(distill::kd_loss_sparse_kernel_call(s, sparse, y, o, 5), sparse_op);
  // The op's input checks, too.
  CHECK_THROWS_WITH(distill::kd_loss_kernel_call(s, t, y, o, 0), Catch::Contains("normalizer must be > 0"));
  o.vocab = distill::VocabPolicy::error;
  CHECK_THROWS_WITH(distill::kd_loss_kernel_call(s, t, y, o, 5), Catch::Contains("loss.vocab"));
}

TEST_CASE("kd loss: the fused op's gradient matches finite differences of its own loss") {
  torch::manual_seed(5);
  for (auto [kind, beta] : std::vector<std::pair<Divergence, double>>{
           {Divergence::forward_kl, 0.5}, {Divergence::reverse_kl, 0.5}, {Divergence::jsd, 0.3}}) {
    at::Tensor s = torch::randn({3, 6}), t = torch::randn({3, 6});
    at::Tensor y = torch::tensor({1, -100, 5});
    KdLossOptions o;
    o.kind = kind;
    o.beta = beta;
    o.temperature = 1.5;
    o.alpha = 0.5;
    auto analytic = run_op(distill::kd_loss, s, t, y, o, 2);
    const float eps = 1e-2f;
    for (int64_t i = 0; i < s.numel(); ++i) {
      at::Tensor plus = s.clone(), minus = s.clone();
      plus.view(-1)[i] += eps;
      minus.view(-1)[i] -= eps;
      double numeric = (distill::kd_loss(plus, t, y, o, 2).loss.item<double>() -
                        distill::kd_loss(minus, t, y, o, 2).loss.item<double>()) / (2 * eps);
      INFO("kind " << static_cast<int>(kind) << " element " << i);
      CHECK(analytic.grad.view(-1)[i].item<double>() == Approx(numeric).margin(2e-4).epsilon(2e-2));
    }
  }
}

TEST_CASE("loss config: kinds, beta, vocab and topk are validated") {
  json doc = json::parse(R"({"data": {"path": "d.csv"}, "student": {"arch": "mlp"}})");
  doc["loss"] = {{"kind", "jsd"}, {"beta", 1.5}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("loss.beta: must be in [0, 1], got 1.5"));
  doc["loss"] = {{"kind", "tvd"}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("loss.kind: must be one of forward_kl | reverse_kl | jsd"));
  doc["loss"] = {{"vocab", "pad"}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("loss.vocab: must be one of error | truncate"));
  // loss.topk: a sparse teacher needs forward_kl and a teacher; topk_tail is one of two words.
  doc["loss"] = {{"topk", -1}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("loss.topk: must be >= 0"));
  doc["loss"] = {{"topk", 3}, {"topk_tail", "renormalise"}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("loss.topk_tail: must be one of ignore | tail"));
  doc["loss"] = {{"topk", 3}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("loss.topk: there is no teacher section"));
  doc["teacher"] = {{"path", "t.pt"}};
  doc["loss"] = {{"topk", 3}, {"kind", "jsd"}};
  CHECK_THROWS_WITH(distill::parse_config(doc, "r.json"), Catch::Contains("supports loss.kind \"forward_kl\" only, got \"jsd\""));
  doc["loss"] = {{"topk", 3}, {"topk_tail", "tail"}};
  CHECK(KdLossOptions::from_config(distill::parse_config(doc, "r.json").loss).topk_tail == distill::kernels::TopkTail::tail);
  doc.erase("teacher");
  doc["loss"] = {{"kind", "reverse_kl"}, {"vocab", "truncate"}};
  auto c = distill::parse_config(doc, "r.json");
  auto o = KdLossOptions::from_config(c.loss);
  CHECK(o.kind == Divergence::reverse_kl);
  CHECK(o.vocab == distill::VocabPolicy::truncate);
}
