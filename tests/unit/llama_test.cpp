// arch "llama" against the PyTorch reference of transformers' LlamaForCausalLM (tests/fixtures/llama_ref.py):
// logits of Hugging Face folders (GQA, tied + llama3 rope scaling + biases + bf16 weights, qwen2, sharded),
// greedy decoding with the KV cache, initialisation from a config, the folder a student is saved as, and the
// errors of bad folders.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/generate/generate.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"
#include "distill/models/hf_folder.h"
#include "distill/models/model.h"

using nlohmann::json;

namespace {

const std::string kFixtures = distill::test::source_path("tests/fixtures/llama");

json golden() { return json::parse(distill::test::read_text(kFixtures + "/golden.json")); }

at::Tensor input_ids(const json& ids) {
  std::vector<int64_t> flat;
  for (const auto& row : ids)
    for (const auto& v : row) flat.push_back(v.get<int64_t>());
  return torch::tensor(flat, torch::kInt64).reshape({static_cast<int64_t>(ids.size()), -1});
}

void copy_folder(const std::string& from, const std::string& to) {
  distill::paths::create_directories(to);
  for (const auto& name : distill::paths::list_dir(from))
    distill::test::write_text(to + "/" + name, distill::test::read_text(from + "/" + name));
}

}  // namespace

TEST_CASE("llama: Hugging Face folders compute the reference logits") {
  const json g = golden();
  const at::Tensor ids = input_ids(g["input_ids"]);
  const distill::SafetensorsContents want = distill::load_safetensors(kFixtures + "/golden_logits.safetensors");
  for (const char* name : {"tiny-gqa", "tiny-tied", "tiny-qwen2", "tiny-sharded"}) {
    INFO(name);
    auto model = distill::load_hf_model(kFixtures + "/" + name, "teacher.path");
    torch::NoGradGuard no_grad;
    model->set_training(false);
    const at::Tensor logits = model->forward(ids);
    const at::Tensor* ref = want.find(g["models"][name]["logits_key"].get<std::string>());
    REQUIRE(ref);
    REQUIRE(logits.sizes() == ref->sizes());
    CHECK(torch::allclose(logits, *ref, /*rtol=*/1e-4, /*atol=*/1e-5));
    // The output the loss sees: final hidden states and the head, whose product is the same logits.
    const distill::ModelOutput out = model->forward_output(ids);
    CHECK_FALSE(out.logits.defined());
    CHECK(torch::equal(out.full_logits(), logits));
  }
}

TEST_CASE("llama: greedy decoding with the KV cache equals the reference token for token") {
  const json g = golden();
  for (const char* name : {"tiny-gqa", "tiny-tied", "tiny-qwen2", "tiny-sharded"}) {
    INFO(name);
    auto model = distill::load_hf_model(kFixtures + "/" + name, "--model");
    const json& greedy = g["models"][name]["greedy"]["float32"];
    distill::GenerateOptions o;
    o.max_new_tokens = g["max_new_tokens"].get<int64_t>();
    const auto ids = distill::generate_ids(*model, greedy["prompt"].get<std::vector<int64_t>>(), o, c10::Device(c10::kCPU));
    CHECK(ids == greedy["tokens"].get<std::vector<int64_t>>());
  }
}

TEST_CASE("llama: built from a config, it initialises as transformers does, bit for bit") {
  for (const char* name : {"gqa-untied", "tied-qwen2"}) {
    INFO(name);
    const distill::SafetensorsContents want = distill::load_safetensors(kFixtures + "/init/" + std::string(name) + ".safetensors");
    distill::ModelConfig c;
    c.arch = "llama";
    c.options = json::parse(want.metadata.at("config"));
    distill::IoShape io;
    io.classes = c.options["vocab_size"].get<int64_t>();
    io.seq_len = 8;
    torch::manual_seed(std::stoull(want.metadata.at("seed")));
    auto model = distill::make_model(c, io, "student");
    int64_t compared = 0;
    for (auto& [param, t] : model->state()) {
      INFO(param);
      const at::Tensor* ref = want.find(param);
      REQUIRE(ref);
      CHECK(torch::equal(t, *ref));
      ++compared;
    }
    CHECK(compared + 1 == static_cast<int64_t>(want.tensors.size()));  // every tensor but the logits

    // Saved as a Hugging Face folder and loaded back, it computes the reference's logits.
    distill::test::ScratchDir dir(std::string("llama-save-") + name);
    distill::save_hf_folder(*model, dir / "student", {});
    const json config = json::parse(distill::test::read_text(dir / "student/config.json"));
    CHECK(config["model_type"] == c.options["model_type"]);
    CHECK(config["architectures"][0] == (c.options["model_type"] == "qwen2" ? "Qwen2ForCausalLM" : "LlamaForCausalLM"));
    CHECK(config["tie_word_embeddings"] == c.options["tie_word_embeddings"]);
    CHECK(config["num_key_value_heads"] == c.options["num_key_value_heads"]);
    CHECK(distill::paths::exists(dir / "student/generation_config.json"));
    const distill::SafetensorsContents saved = distill::load_safetensors(dir / "student/model.safetensors");
    CHECK((saved.find("lm_head.weight") == nullptr) == config["tie_word_embeddings"].get<bool>());
    auto reloaded = distill::load_hf_model(dir / "student", "student.path");
    torch::NoGradGuard no_grad;
    reloaded->set_training(false);
    const at::Tensor ids = input_ids(json::parse(want.metadata.at("input_ids")));
    CHECK(torch::allclose(reloaded->forward(ids), *want.find("logits"), 1e-4, 1e-6));
  }
}

TEST_CASE("llama: bad model folders are one clear error each") {
  distill::test::ScratchDir dir("llama-bad");
  auto error_of = [&](const std::string& folder) -> std::string {
    try {
      distill::load_hf_model(folder, "teacher.path");
    } catch (const distill::Error& e) {
      return e.what();
    }
    return "";
  };
  SECTION("unsupported model_type") {
    copy_folder(kFixtures + "/tiny-gqa", dir / "gpt2");
    distill::test::write_text(dir / "gpt2/config.json", R"({"model_type": "gpt2", "vocab_size": 10})");
    const std::string e = error_of(dir / "gpt2");
    CHECK_THAT(e, Catch::Contains("model_type 'gpt2' is not supported") && Catch::Contains("llama, mistral, qwen2"));
  }
  SECTION("no weights") {
    distill::paths::create_directories(dir / "empty");
    distill::test::write_text(dir / "empty/config.json", distill::test::read_text(kFixtures + "/tiny-gqa/config.json"));
    CHECK_THAT(error_of(dir / "empty"), Catch::Contains("has config.json but no weights"));
  }
  SECTION("an index naming a missing shard") {
    copy_folder(kFixtures + "/tiny-sharded", dir / "sharded");
    distill::paths::remove_file(dir / "sharded/model-00002-of-00002.safetensors");
    CHECK_THAT(error_of(dir / "sharded"), Catch::Contains("names shard model-00002-of-00002.safetensors, which is missing"));
  }
  SECTION("weights that do not fit the config") {
    copy_folder(kFixtures + "/tiny-gqa", dir / "wide");
    json cfg = json::parse(distill::test::read_text(kFixtures + "/tiny-gqa/config.json"));
    cfg["intermediate_size"] = cfg["intermediate_size"].get<int64_t>() + 8;
    distill::test::write_text(dir / "wide/config.json", cfg.dump());
    const std::string e = error_of(dir / "wide");
    CHECK_THAT(e, Catch::Contains("wrong shape") && Catch::Contains("mlp.gate_proj.weight"));
  }
  SECTION("a config missing a required key") {
    copy_folder(kFixtures + "/tiny-gqa", dir / "nohidden");
    json cfg = json::parse(distill::test::read_text(kFixtures + "/tiny-gqa/config.json"));
    cfg.erase("hidden_size");
    distill::test::write_text(dir / "nohidden/config.json", cfg.dump());
    CHECK_THAT(error_of(dir / "nohidden"), Catch::Contains("'hidden_size' is missing"));
  }
}
