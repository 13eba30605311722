#include <catch2/catch.hpp>

#include <torch/torch.h>

#include "../test_util.h"
#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/generate/generate.h"
#include "distill/models/model.h"

#include <nlohmann/json.hpp>

using distill::ModelConfig;

namespace {

std::vector<std::string> names_of(distill::Model& m) {
  std::vector<std::string> out;
  for (auto& [name, t] : m.state()) out.push_back(name);
  return out;
}

ModelConfig mlp(std::vector<int64_t> hidden, double dropout = 0) {
  ModelConfig c;
  c.arch = "mlp";
  c.options = {{"hidden", hidden}, {"dropout", dropout}};
  return c;
}

}  // namespace

TEST_CASE("zoo: mlp parameter names and shapes equal PyTorch's nn.Sequential") {
  auto m = distill::make_model(mlp({16}), {64, 10}, "student");
  CHECK(names_of(*m) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  auto state = m->state();
  CHECK(state[0].second.sizes() == at::IntArrayRef({16, 64}));
  CHECK(state[3].second.sizes() == at::IntArrayRef({10}));
  CHECK(m->parameter_count() == 64 * 16 + 16 + 16 * 10 + 10);
  // Dropout takes an index, as nn.Dropout would in the Sequential.
  auto d = distill::make_model(mlp({8, 8}, 0.1), {4, 3}, "student");
  CHECK(names_of(*d) == std::vector<std::string>{"0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"});
  CHECK(d->forward(torch::randn({5, 4})).sizes() == at::IntArrayRef({5, 3}));
}

TEST_CASE("zoo: cnn reshapes rows to [C, H, W] and names parameters like nn.Sequential") {
  ModelConfig c;
  c.arch = "cnn";
  c.options = {{"input_shape", {1, 8, 8}}, {"channels", {4, 8}}, {"hidden", {12}}};
  auto m = distill::make_model(c, {64, 10}, "teacher");
  CHECK(names_of(*m) == std::vector<std::string>{"1.weight", "1.bias", "4.weight", "4.bias", "8.weight", "8.bias",
                                                 "10.weight", "10.bias"});
  CHECK(m->forward(torch::randn({3, 64})).sizes() == at::IntArrayRef({3, 10}));
  c.options["input_shape"] = {1, 7, 7};
  CHECK_THROWS_WITH(distill::make_model(c, {64, 10}, "teacher"),
                    Catch::Contains("teacher.input_shape: [1, 7, 7] holds 49 values but the data has 64 features"));
  c.options["input_shape"] = {4, 2, 2};
  c.options["channels"] = {4, 4, 4};
  CHECK_THROWS_WITH(distill::make_model(c, {16, 10}, "teacher"), Catch::Contains("teacher.channels: 3 conv blocks"));
}

TEST_CASE("load_weights names every missing, misshaped and unexpected tensor") {
  auto m = distill::make_model(mlp({16}), {64, 10}, "student");
  distill::SafetensorsContents w;
  w.tensors = {{"0.weight", torch::zeros({16, 64})}, {"2.weight", torch::zeros({10, 17})}, {"2.bias", torch::zeros({10})},
               {"9.weight", torch::zeros({1})}};
  try {
    distill::load_weights(*m, w, "init.safetensors");
    FAIL("expected an error");
  } catch (const distill::Error& e) {
    std::string what = e.what();
    CHECK_THAT(what, Catch::Contains("init.safetensors"));
    CHECK_THAT(what, Catch::Contains("missing: 0.bias [16]"));
    CHECK_THAT(what, Catch::Contains("wrong shape: 2.weight is [10, 17], the model needs [10, 16]"));
    CHECK_THAT(what, Catch::Contains("not in the model: 9.weight"));
  }
  // A good set loads exactly.
  distill::SafetensorsContents good;
  for (auto& [name, t] : m->state()) good.tensors.emplace_back(name, torch::full_like(t, 0.5));
  distill::load_weights(*m, good, "good.safetensors");
  for (auto& [name, t] : m->state()) CHECK(t.eq(0.5).all().item<bool>());
}

TEST_CASE("arch from distill metadata rebuilds the model") {
  auto m = distill::make_model(mlp({16, 4}, 0.2), {64, 10}, "student");
  distill::Metadata meta = {{"arch", m->arch_json().dump()}};
  ModelConfig bare;
  ModelConfig rebuilt = distill::arch_from_metadata(bare, meta, "w.safetensors");
  CHECK(rebuilt.arch.value() == "mlp");
  CHECK(rebuilt.options.at("hidden") == nlohmann::json::array({16, 4}));
  CHECK(rebuilt.options.at("dropout").get<double>() == Approx(0.2));
  CHECK_THROWS_WITH(distill::arch_from_metadata(bare, {}, "w.safetensors"), Catch::Contains("no 'arch' metadata"));
}

TEST_CASE("TorchScript models: load, train, check outputs, refuse non-modules") {
  ModelConfig c;
  c.path = distill::test::source_path("tests/fixtures/torchscript/mlp_64_16_10.pt");
  auto m = distill::make_model(c, {64, 10}, "student");
  CHECK(m->is_torchscript());
  CHECK(names_of(*m) == std::vector<std::string>{"0.weight", "0.bias", "2.weight", "2.bias"});
  m->set_requires_grad(true);
  auto out = m->forward(torch::randn({4, 64}));
  out.sum().backward();
  for (auto& p : m->parameters()) CHECK(p.grad().defined());
  distill::check_model_io(*m, {64, 10}, "student", c10::Device(c10::kCPU));
  CHECK_THROWS_WITH(distill::check_model_io(*m, {64, 12}, "student", c10::Device(c10::kCPU)),
                    Catch::Contains("outputs [2, 10]") && Catch::Contains("12 classes"));
  CHECK_THROWS_WITH(distill::check_model_io(*m, {32, 10}, "student", c10::Device(c10::kCPU)),
                    Catch::Contains("student.path") || Catch::Contains("cannot take rows of 32 features"));

  distill::test::ScratchDir dir("ts");
  m->save_torchscript(dir / "again.pt");
  ModelConfig again;
  again.path = dir / "again.pt";
  auto reloaded = distill::make_model(again, {64, 10}, "teacher");
  auto x = torch::randn({3, 64});
  CHECK(torch::allclose(reloaded->forward(x), m->forward(x)));

  ModelConfig tuple;
  tuple.path = distill::test::source_path("tests/fixtures/torchscript/returns_tuple.pt");
  auto t = distill::make_model(tuple, {64, 10}, "teacher");
  CHECK_THROWS_WITH(t->forward(torch::randn({2, 64})), Catch::Contains("must return one Tensor"));

  distill::test::write_text(dir / "junk.pt", "this is not a zip file");
  ModelConfig junk;
  junk.path = dir / "junk.pt";
  CHECK_THROWS_WITH(distill::make_model(junk, {64, 10}, "teacher"), Catch::Contains("teacher.path:") && Catch::Contains("is not a TorchScript module"));
  junk.path = dir / "absent.pt";
  CHECK_THROWS_WITH(distill::make_model(junk, {64, 10}, "teacher"), Catch::Contains("not found"));
}

TEST_CASE("TorchScript causal language models: token ids in, logits per position out, greedy as the reference") {
  ModelConfig c;
  c.path = distill::test::source_path("tests/fixtures/torchscript/causal_lm_128.pt");
  distill::IoShape io;
  io.classes = 128;
  io.seq_len = 16;
  auto m = distill::make_model(c, io, "teacher");
  CHECK(distill::check_model_io(*m, io, "teacher", c10::Device(c10::kCPU)) == 128);
  CHECK(m->forward(torch::zeros({3, 5}, torch::kInt64)).sizes() == at::IntArrayRef({3, 5, 128}));
  CHECK_FALSE(m->has_kv_cache());
  const nlohmann::json want = nlohmann::json::parse(
      distill::test::read_text(distill::test::source_path("tests/fixtures/torchscript/causal_lm_128.greedy.json")));
  distill::GenerateOptions o;
  o.max_new_tokens = static_cast<int64_t>(want["tokens"].size());
  CHECK(distill::generate_ids(*m, want["prompt"].get<std::vector<int64_t>>(), o, c10::Device(c10::kCPU)) ==
        want["tokens"].get<std::vector<int64_t>>());
  // A classifier's rows are not what it takes.
  CHECK_THROWS_WITH(distill::check_model_io(*m, {64, 10}, "teacher", c10::Device(c10::kCPU)),
                    Catch::Contains("teacher.path:") && Catch::Contains("forward() failed on input [2, 64]"));
}
