// Hugging Face model folders: config.json -> arch "llama" options, mapped weights (one file or shards), and
// the folder a trained student is written as.
#include <torch/torch.h>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "distill/config/config.h"
#include "distill/config/schema.h"
#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "distill/models/hf_folder.h"
#include "distill/models/model.h"
#include "distill/text/tokenizer.h"
#include "models/llama.h"

namespace distill {

namespace {

using json = nlohmann::json;

const char* const kSupportedTypes = "llama, mistral, qwen2";

std::string read_text(const std::string& path, const std::string& key) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(key + ": cannot read " + path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

json read_json(const std::string& path, const std::string& key) {
  json j = json::parse(read_text(path, key), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) throw Error(key + ": " + path + " is not a JSON object");
  return j;
}

// config.json's value of `name` as T; `fallback` when absent or null.
template <class T> T get_or(const json& cfg, const char* name, T fallback, const std::string& where) {
  auto it = cfg.find(name);
  if (it == cfg.end() || it->is_null()) return fallback;
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw Error(where + ": '" + name + "' has the wrong type (" + it->dump() + ")");
  }
}

template <class T> T get_required(const json& cfg, const char* name, const std::string& where) {
  if (!cfg.contains(name) || cfg[name].is_null())
    throw Error(where + ": '" + name + "' is missing; a " + get_or<std::string>(cfg, "model_type", "llama", where) +
                " config.json needs it");
  return get_or<T>(cfg, name, T{}, where);
}

// An id or a list of ids (Llama 3 lists several eos ids): the first.
std::optional<int64_t> first_id(const json& cfg, const char* name) {
  auto it = cfg.find(name);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_array() && !it->empty() && (*it)[0].is_number_integer()) return (*it)[0].get<int64_t>();
  return std::nullopt;
}

// Names transformers skips when loading: buffers that are recomputed, and a tied model's head.
bool skipped_on_load(const std::string& name, const Model& model) {
  if (name.find("rotary_emb.inv_freq") != std::string::npos) return true;
  if (name == "lm_head.weight") {
    const json cfg = model.hf_config();
    return cfg.is_object() && cfg.value("tie_word_embeddings", false);
  }
  return false;
}

}  // namespace

bool is_hf_folder(const std::string& path) {
  if (!paths::is_directory(path) || !paths::is_regular_file(paths::join(path, "config.json"))) return false;
  for (const char* weights : {"model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"})
    if (paths::exists(paths::join(path, weights))) return true;
  // Without weights, a model's config.json still names its model_type (a run folder's config.json does not).
  std::ifstream in(paths::join(path, "config.json"), std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  const json cfg = json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  return cfg.is_object() && cfg.contains("model_type");
}

ModelConfig hf_model_config(const std::string& folder, const std::string& key) {
  const std::string where = key + ": " + paths::join(folder, "config.json");
  if (!paths::is_regular_file(paths::join(folder, "config.json")))
    throw Error(key + ": " + folder + " holds no config.json; a Hugging Face model folder needs config.json and "
                "model.safetensors (or model.safetensors.index.json and its shards)");
  const json cfg = read_json(paths::join(folder, "config.json"), key);
  const std::string type = get_or<std::string>(cfg, "model_type", "", where);
  if (type != "llama" && type != "qwen2" && type != "mistral")
    throw Error(where + ": model_type '" + type + "' is not supported; supported: " + kSupportedTypes +
                " (Llama-family causal language models)");
  models::LlamaOptions o;
  o.model_type = type;
  o.vocab_size = get_required<int64_t>(cfg, "vocab_size", where);
  o.hidden_size = get_required<int64_t>(cfg, "hidden_size", where);
  o.intermediate_size = get_required<int64_t>(cfg, "intermediate_size", where);
  o.num_hidden_layers = get_required<int64_t>(cfg, "num_hidden_layers", where);
  o.num_attention_heads = get_required<int64_t>(cfg, "num_attention_heads", where);
  o.num_key_value_heads = get_or<int64_t>(cfg, "num_key_value_heads", 0, where);
  o.head_dim = get_or<int64_t>(cfg, "head_dim", 0, where);
  o.rms_norm_eps = get_or<double>(cfg, "rms_norm_eps", 1e-6, where);
  // transformers 5 moved rope_theta and rope_scaling into rope_parameters.
  const json rope_parameters = cfg.value("rope_parameters", json::object());
  o.rope_theta = get_or<double>(rope_parameters.is_object() ? rope_parameters : json::object(), "rope_theta",
                                get_or<double>(cfg, "rope_theta", 10000.0, where), where);
  o.rope_scaling = cfg.value("rope_scaling", json());
  if (o.rope_scaling.is_null() && rope_parameters.is_object() &&
      rope_parameters.value("rope_type", std::string("default")) != "default")
    o.rope_scaling = rope_parameters;
  o.max_position_embeddings = get_or<int64_t>(cfg, "max_position_embeddings", 2048, where);
  o.tie_word_embeddings = get_or<bool>(cfg, "tie_word_embeddings", false, where);
  o.initializer_range = get_or<double>(cfg, "initializer_range", 0.02, where);
  o.hidden_act = get_or<std::string>(cfg, "hidden_act", "silu", where);
  if (get_or<double>(cfg, "partial_rotary_factor", 1.0, where) != 1.0)
    throw Error(where + ": partial_rotary_factor other than 1 is not supported");
  if (type == "llama") {
    o.attention_bias = get_or<bool>(cfg, "attention_bias", false, where);
    o.mlp_bias = get_or<bool>(cfg, "mlp_bias", false, where);
  }
  if (type == "qwen2" && get_or<bool>(cfg, "use_sliding_window", false, where))
    throw Error(where + ": use_sliding_window true is not supported for qwen2");
  if (type == "mistral") o.sliding_window = get_or<int64_t>(cfg, "sliding_window", 4096, where);
  o.bos_token_id = first_id(cfg, "bos_token_id");
  o.eos_token_id = first_id(cfg, "eos_token_id");
  o.pad_token_id = first_id(cfg, "pad_token_id");
  ModelConfig mc;
  mc.arch = "llama";
  mc.options = schema::write_fields(o);
  return mc;
}

SafetensorsContents map_hf_weights(const std::string& folder, const std::string& key) {
  const std::string single = paths::join(folder, "model.safetensors");
  const std::string index = paths::join(folder, "model.safetensors.index.json");
  if (paths::is_regular_file(single)) return map_safetensors(single);
  if (!paths::is_regular_file(index)) {
    std::string hint;
    if (paths::exists(paths::join(folder, "pytorch_model.bin")))
      hint = " (it has pytorch_model.bin, a pickle distill does not read: save it as safetensors, e.g. "
             "model.save_pretrained(folder, safe_serialization=True))";
    throw Error(key + ": " + folder + " has config.json but no weights: no model.safetensors and no "
                "model.safetensors.index.json" + hint);
  }
  const json idx = read_json(index, key);
  if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
    throw Error(key + ": " + index + " has no weight_map object");
  std::map<std::string, std::set<std::string>> by_shard;
  for (auto it = idx["weight_map"].begin(); it != idx["weight_map"].end(); ++it) {
    if (!it.value().is_string()) throw Error(key + ": " + index + ": weight_map." + it.key() + " is not a file name");
    by_shard[it.value().get<std::string>()].insert(it.key());
  }
  SafetensorsContents all;
  for (const auto& [shard, names] : by_shard) {
    const std::string path = paths::join(folder, shard);
    if (shard.find('/') != std::string::npos || !paths::is_regular_file(path))
      throw Error(key + ": " + index + " names shard " + shard + ", which is missing from " + folder);
    SafetensorsContents part = map_safetensors(path);
    std::set<std::string> held;
    for (auto& [name, t] : part.tensors) {
      held.insert(name);
      if (!names.count(name))
        throw Error(key + ": " + path + " holds '" + name + "', which " + index + " does not map to this shard");
      all.tensors.emplace_back(name, t);
    }
    for (const auto& name : names)
      if (!held.count(name)) throw Error(key + ": " + index + " maps '" + name + "' to " + shard + ", which does not hold it");
    for (auto& [k, v] : part.metadata) all.metadata[k] = v;
  }
  return all;
}

void load_hf_weights(Model& model, const SafetensorsContents& weights, const std::string& origin) {
  SafetensorsContents kept;
  kept.metadata = weights.metadata;
  for (const auto& [name, t] : weights.tensors)
    if (!skipped_on_load(name, model)) kept.tensors.emplace_back(name, t);
  load_weights(model, kept, origin);
}

std::unique_ptr<Model> load_hf_model(const std::string& folder, const std::string& key) {
  const ModelConfig mc = hf_model_config(folder, key);
  models::LlamaOptions o = schema::read_fields<models::LlamaOptions>(mc.options, key);
  std::unique_ptr<Model> model = models::make_llama_model(o, /*init_like_hf=*/false);
  load_hf_weights(*model, map_hf_weights(folder, key), folder);
  return model;
}

std::vector<std::string> hf_tokenizer_files(const std::string& folder) {
  std::vector<std::string> out;
  for (const char* name : {"tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"}) {
    const std::string p = paths::join(folder, name);
    if (paths::is_regular_file(p)) out.push_back(p);
  }
  return out;
}

void save_hf_folder(Model& model, const std::string& folder, const std::vector<std::string>& tokenizer_files) {
  json config = model.hf_config();
  if (!config.is_object())
    throw Error(folder + ": " + model.describe() + " is not a built-in language model; only those are written as "
                "Hugging Face folders");
  // Everything goes to a fresh folder beside the target, which then replaces it whole.
  const std::string tmp = folder + ".tmp." + std::to_string(::getpid());
  paths::remove_tree(tmp);
  std::string why;
  if (!paths::create_directories(tmp, &why)) throw Error(folder + ": cannot create " + tmp + " (" + why + ")");
  NamedTensors tensors;
  for (auto& [name, t] : model.state()) tensors.emplace_back(name, t.detach().to(at::kCPU).contiguous());
  save_safetensors(paths::join(tmp, "model.safetensors"), tensors, {{"format", "pt"}});
  write_file_atomic(paths::join(tmp, "config.json"), config.dump(2) + "\n");
  json generation = {{"_from_model_config", true}};
  if (config.contains("bos_token_id")) generation["bos_token_id"] = config["bos_token_id"];
  if (config.contains("eos_token_id")) generation["eos_token_id"] = config["eos_token_id"];
  if (config.contains("pad_token_id")) generation["pad_token_id"] = config["pad_token_id"];
  write_file_atomic(paths::join(tmp, "generation_config.json"), generation.dump(2) + "\n");
  // Files keep their names, but for a SentencePiece model of any name, which transformers knows as
  // tokenizer.model; alone, it needs a tokenizer_config.json saying which tokenizer class reads it.
  bool has_config = false, spm = false;
  for (const auto& file : tokenizer_files) {
    std::string name = paths::filename(file);
    if (name.size() > 6 && name.compare(name.size() - 6, 6, ".model") == 0) {
      name = "tokenizer.model";
      spm = true;
    }
    has_config = has_config || name == "tokenizer_config.json";
    write_file_atomic(paths::join(tmp, name), read_text(file, folder));
  }
  if (spm && !has_config) {
    json tc = {{"tokenizer_class", "LlamaTokenizer"}, {"add_bos_token", true}, {"add_eos_token", false},
               {"legacy", true}, {"clean_up_tokenization_spaces", false}};
    const std::unique_ptr<Tokenizer> tok = Tokenizer::load(paths::join(tmp, "tokenizer.model"));
    if (tok->bos_id()) tc["bos_token"] = tok->id_to_token(*tok->bos_id());
    if (tok->eos_id()) tc["eos_token"] = tok->id_to_token(*tok->eos_id());
    if (auto unk = tok->token_to_id("<unk>")) tc["unk_token"] = "<unk>";
    write_file_atomic(paths::join(tmp, "tokenizer_config.json"), tc.dump(2) + "\n");
  }
  const std::string old = folder + ".old." + std::to_string(::getpid());
  const bool had = paths::exists(folder);
  if (had && std::rename(folder.c_str(), old.c_str()) != 0)
    throw Error(folder + ": cannot replace the existing folder (" + std::string(std::strerror(errno)) + ")");
  if (std::rename(tmp.c_str(), folder.c_str()) != 0)
    throw Error(folder + ": cannot move the new folder into place (" + std::string(std::strerror(errno)) + ")");
  fsync_directory(paths::parent(paths::absolute(folder)));
  if (had) paths::remove_tree(old);
}

}  // namespace distill
