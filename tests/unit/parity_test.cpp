// A `distill train` run and the equivalent plain PyTorch loop (tests/fixtures/make_parity.py) start from the
// same weights and see the same data order: their step losses and final weights must agree.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "../test_util.h"
#include "distill/io/safetensors.h"

using nlohmann::json;

TEST_CASE("parity with the PyTorch reference loop") {
  const std::string fixtures = distill::test::source_path("tests/fixtures/parity");
  json expected = json::parse(distill::test::read_text(fixtures + "/expected.json"))["cases"];
  for (const char* name : {"adamw", "sgd", "adam_supervised"}) {
    INFO("case " << name);
    distill::test::ScratchDir dir(std::string("parity-") + name);
    auto r = distill::test::run_distill("train --config " + fixtures + "/" + name + ".json --out " + (dir / "run"));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::vector<double> losses;
    std::istringstream metrics(distill::test::read_text(dir / "run/metrics.jsonl"));
    for (std::string line; std::getline(metrics, line);) {
      json e = json::parse(line);
      if (e["event"] == "train") losses.push_back(e["loss"]);
    }
    auto want = expected[name]["losses"].get<std::vector<double>>();
    REQUIRE(losses.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      INFO("step " << i + 1);
      CHECK(losses[i] == Approx(want[i]).epsilon(1e-5));
    }
    auto weights = distill::load_safetensors(dir / "run/student.safetensors");
    for (auto& [param, values] : expected[name]["final"].items()) {
      INFO("parameter " << param);
      const at::Tensor* got = weights.find(param);
      REQUIRE(got);
      std::vector<float> flat;
      std::function<void(const json&)> walk = [&](const json& j) {
        if (j.is_array()) for (const auto& x : j) walk(x);
        else flat.push_back(j.get<float>());
      };
      walk(values);
      at::Tensor ref = torch::tensor(flat).reshape(got->sizes());
      CHECK(torch::allclose(*got, ref, /*rtol=*/1e-5, /*atol=*/1e-6));
    }
  }
}

// The language-model trainer against tests/fixtures/make_lm_parity.py: a llama student distilled from a llama
// teacher (Hugging Face folders) on llm.c token shards with a loss mask, gradient accumulation and the valid
// tokens of the whole step as the normaliser, for each divergence.
TEST_CASE("parity with the PyTorch reference loop: language model, per-token distillation") {
  const std::string fixtures = distill::test::source_path("tests/fixtures/lm_parity");
  const json expected = json::parse(distill::test::read_text(fixtures + "/expected.json"));
  for (const char* name : {"forward_kl", "reverse_kl", "jsd"}) {
    INFO("case " << name);
    distill::test::ScratchDir dir(std::string("lm-parity-") + name);
    auto r = distill::test::run_distill("train --config " + fixtures + "/" + name + ".json --out " + (dir / "run"));
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    std::vector<json> steps;
    std::istringstream metrics(distill::test::read_text(dir / "run/metrics.jsonl"));
    for (std::string line; std::getline(metrics, line);) {
      json e = json::parse(line);
      if (e["event"] == "train") steps.push_back(e);
    }
    const json& want = std::string(name) == "forward_kl" ? expected["steps"] : expected["variants"][name]["metrics"];
    REQUIRE(steps.size() == want.size());
    for (size_t i = 0; i < want.size(); ++i) {
      INFO("step " << i + 1);
      CHECK(steps[i]["loss"].get<double>() == Approx(want[i]["loss"].get<double>()).epsilon(2e-5));
      CHECK(steps[i]["kd"].get<double>() == Approx(want[i]["kd"].get<double>()).epsilon(2e-5));
      CHECK(steps[i]["ce"].get<double>() == Approx(want[i]["ce"].get<double>()).epsilon(2e-5));
      CHECK(steps[i]["grad_norm"].get<double>() == Approx(want[i]["grad_norm"].get<double>()).epsilon(1e-4));
    }
    if (std::string(name) != "forward_kl") continue;
    // The student is written as a Hugging Face folder whose weights are the reference's after the same steps.
    auto weights = distill::load_safetensors(dir / "run/student/model.safetensors");
    auto ref = distill::load_safetensors(fixtures + "/final_student.safetensors");
    REQUIRE(weights.tensors.size() == ref.tensors.size());
    for (const auto& [param, t] : ref.tensors) {
      INFO("parameter " << param);
      const at::Tensor* got = weights.find(param);
      REQUIRE(got);
      // On a GPU (run.device auto) the matrix products sum in another order than the CPU reference, and
      // AdamW's per-element normalisation turns those 1e-7 gradient differences into up to ~1% of lr per step
      // where a gradient is near 0: compared there to 5e-4 (seen: fails 1e-6 on an H200).
      CHECK(torch::allclose(*got, t, /*rtol=*/1e-4, /*atol=*/torch::cuda::is_available() ? 5e-4 : 1e-6));
    }
  }
}
