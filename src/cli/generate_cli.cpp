// `distill generate`: a model from a Hugging Face folder, a run folder (its student/), a TorchScript language
// model or a student.safetensors written by distill, and a tokenizer (the folder's, or --tokenizer).
#include <torch/torch.h>

#include <iostream>

#include <nlohmann/json.hpp>

#include "distill/cli/generate_cli.h"
#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"
#include "distill/models/hf_folder.h"
#include "distill/models/model.h"
#include "distill/text/tokenizer.h"
#include "distill/train/trainer.h"

namespace distill {

namespace {

struct LoadedLm {
  std::unique_ptr<Model> model;
  std::string tokenizer_from;  // a folder or file the tokenizer may come from; empty: none known
};

LoadedLm load_lm(const std::string& path) {
  if (!paths::exists(path)) throw Error("--model: " + path + " not found");
  // A run folder: its student, written as a Hugging Face folder.
  if (paths::is_directory(path) && !is_hf_folder(path) && is_hf_folder(paths::join(path, "student")))
    return load_lm(paths::join(path, "student"));
  if (is_hf_folder(path)) return {load_hf_model(path, "--model"), path};
  if (paths::is_directory(path))
    throw Error("--model: " + path + " is a folder without config.json; give a Hugging Face model folder, a run folder "
                "(with student/), a TorchScript .pt or a student.safetensors");
  ModelConfig mc;
  const std::string ext = path.size() >= 12 ? path.substr(path.size() - 12) : "";
  if (ext == ".safetensors") {
    SafetensorsContents weights = load_safetensors(path);
    mc = arch_from_metadata(mc, weights.metadata, path);
    IoShape io;
    io.seq_len = 1;
    auto model = make_model(mc, io, "--model");
    load_weights(*model, weights, path);
    // A student.safetensors sits in its run folder beside student/ (with the tokenizer files).
    const std::string sibling = paths::join(paths::parent(path), "student");
    return {std::move(model), paths::is_directory(sibling) ? sibling : ""};
  }
  mc.path = path;
  return {make_model(mc, IoShape{}, "--model"), ""};
}

}  // namespace

void run_generate_cli(const GenerateCliOptions& o, std::ostream& out) {
  check_generate_options(o.generate);
  apply_threads(o.threads);
  const c10::Device device = resolve_device(o.device, "--device");
  LoadedLm lm = load_lm(o.model);
  const std::string tokenizer_path = !o.tokenizer.empty() ? o.tokenizer : lm.tokenizer_from;
  if (tokenizer_path.empty())
    throw Error("--tokenizer: " + o.model + " carries no tokenizer; give one (tokenizer.json, a .model file, or a folder)");
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(tokenizer_path);
  torch::manual_seed(o.generate.seed);
  lm.model->to(device);

  std::vector<int64_t> prompt;
  if (tokenizer->bos_id()) prompt.push_back(*tokenizer->bos_id());
  for (int32_t id : tokenizer->encode(o.prompt)) prompt.push_back(id);
  GenerateOptions g = o.generate;
  if (!g.eos_id) {
    if (tokenizer->eos_id()) g.eos_id = *tokenizer->eos_id();
    const nlohmann::json cfg = lm.model->hf_config();
    if (!g.eos_id && cfg.is_object() && cfg.contains("eos_token_id") && cfg["eos_token_id"].is_number_integer())
      g.eos_id = cfg["eos_token_id"].get<int64_t>();
  }
  std::vector<int64_t> ids = generate_ids(*lm.model, prompt, g, device);
  if (g.eos_id && !ids.empty() && ids.back() == *g.eos_id) ids.pop_back();  // the text ends there
  std::vector<int32_t> completion(ids.begin(), ids.end());
  out << o.prompt << tokenizer->decode(completion) << "\n";
}

}  // namespace distill
