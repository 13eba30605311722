#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "distill/config/config.h"
#include "distill/loss/kd_loss.h"

using nlohmann::json;

namespace {

at::Tensor tensor_of(const json& rows) {
  std::vector<float> flat;
  int64_t n = rows.size(), v = rows[0].size();
  for (const auto& r : rows)
    for (const auto& x : r) flat.push_back(x.get<float>());
  return torch::tensor(flat).reshape({n, v});
}

void check_close(double got, double want, double rtol = 1e-5, double atol = 1e-6) {
  INFO("got " << got << " want " << want);
  CHECK(std::abs(got - want) <= atol + rtol * std::abs(want));
}

}  // namespace

TEST_CASE("kd loss reference equals PyTorch golden values and gradients") {
  json golden = json::parse(distill::test::read_text(distill::test::source_path("tests/fixtures/loss_golden.json")));
  REQUIRE(golden["cases"].size() > 40);
  for (const auto& c : golden["cases"]) {
    INFO("case " << c["name"].get<std::string>());
    at::Tensor s = tensor_of(c["student"]).requires_grad_(true);
    at::Tensor t = tensor_of(c["teacher"]);
    at::Tensor y = torch::tensor(c["labels"].get<std::vector<int64_t>>());
    distill::LossConfig lc;
    lc.temperature = c["temperature"];
    lc.alpha = c["alpha"];
    lc.t2_scale = c["t2_scale"];
    auto terms = distill::kd_loss_reference(s, t, y, lc, static_cast<double>(s.size(0)));
    check_close(terms.loss.item<double>(), c["loss"]);
    check_close(terms.kd.item<double>(), c["kd"]);
    check_close(terms.ce.item<double>(), c["ce"]);
    terms.loss.backward();
    at::Tensor want = tensor_of(c["grad"]);
    at::Tensor diff = (s.grad() - want).abs();
    CHECK((diff <= 1e-6 + 1e-4 * want.abs()).all().item<bool>());
  }
}

TEST_CASE("kd loss: micro-batches are weighted by their rows, not averaged as means") {
  torch::manual_seed(0);
  at::Tensor s = torch::randn({7, 5}), t = torch::randn({7, 5});
  at::Tensor y = torch::randint(0, 5, {7});
  distill::LossConfig lc;
  lc.temperature = 3;
  lc.alpha = 0.6;
  auto whole = distill::kd_loss_reference(s, t, y, lc, 7);
  auto a = distill::kd_loss_reference(s.slice(0, 0, 6), t.slice(0, 0, 6), y.slice(0, 0, 6), lc, 7);
  auto b = distill::kd_loss_reference(s.slice(0, 6), t.slice(0, 6), y.slice(0, 6), lc, 7);
  CHECK((a.loss + b.loss).item<double>() == Approx(whole.loss.item<double>()).epsilon(1e-6));
  // The mean of the two micro-batch means would differ.
  auto a_mean = distill::kd_loss_reference(s.slice(0, 0, 6), t.slice(0, 0, 6), y.slice(0, 0, 6), lc, 6);
  auto b_mean = distill::kd_loss_reference(s.slice(0, 6), t.slice(0, 6), y.slice(0, 6), lc, 1);
  CHECK(std::abs(((a_mean.loss + b_mean.loss) / 2).item<double>() - whole.loss.item<double>()) > 1e-4);
}

TEST_CASE("kd loss: no teacher is plain cross-entropy; a masked teacher entry is finite") {
  at::Tensor s = torch::tensor({{1.0f, 2.0f, 3.0f}}).requires_grad_(true);
  at::Tensor y = torch::tensor({2}, torch::kInt64);
  distill::LossConfig lc;
  auto sup = distill::kd_loss_reference(s, at::Tensor(), y, lc, 1);
  CHECK(sup.loss.item<double>() == Approx(torch::nn::functional::cross_entropy(s, y).item<double>()));
  CHECK(sup.kd.item<double>() == 0);
  at::Tensor t = torch::tensor({{-INFINITY, 0.0f, 1.0f}});
  auto masked = distill::kd_loss_reference(s, t, y, lc, 1);
  CHECK(std::isfinite(masked.loss.item<double>()));
  masked.loss.backward();
  CHECK(torch::isfinite(s.grad()).all().item<bool>());
}
