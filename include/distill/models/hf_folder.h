// Hugging Face model folders, as transformers reads and writes them:
//   config.json                          the architecture (model_type and its hyperparameters)
//   model.safetensors                    the weights, or shards named by model.safetensors.index.json's weight_map
//   generation_config.json               bos / eos ids for generation
//   tokenizer.json, tokenizer.model, tokenizer_config.json, special_tokens_map.json   the tokenizer, when present
// Supported model types: llama, qwen2, mistral (arch "llama"). Weights are mapped, not read whole, and may be
// float32, bfloat16 or float16; they are converted to the model's dtype.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "distill/io/safetensors.h"

namespace distill {

class Model;
struct ModelConfig;

// Whether `path` is a model folder: config.json beside weights, or a config.json that names a model_type (a
// distill run folder's config.json does not).
bool is_hf_folder(const std::string& path);

// The model config.json describes: arch "llama" with its options. `key` ("teacher.path") names the config
// key in errors; an unsupported model_type names the supported ones.
ModelConfig hf_model_config(const std::string& folder, const std::string& key);

// The folder's weights (model.safetensors, or every shard of model.safetensors.index.json), mapped.
SafetensorsContents map_hf_weights(const std::string& folder, const std::string& key);

// The model the folder describes, with its weights loaded. Tensors transformers ignores when loading
// (rotary_emb.inv_freq buffers, lm_head.weight of a tied model) are skipped; anything else missing,
// misshaped or extra is an error naming the tensors.
std::unique_ptr<Model> load_hf_model(const std::string& folder, const std::string& key);

// Copies `weights` into `model` by transformers' names, skipping what transformers would skip (above).
void load_hf_weights(Model& model, const SafetensorsContents& weights, const std::string& origin);

// The tokenizer files of a folder (tokenizer.json, tokenizer.model, tokenizer_config.json,
// special_tokens_map.json), those that exist.
std::vector<std::string> hf_tokenizer_files(const std::string& folder);

// Writes `model` (a built-in language model: model.hf_config() is not null) as a folder that
// AutoModelForCausalLM.from_pretrained loads: config.json, model.safetensors, generation_config.json, and a
// copy of each file in `tokenizer_files`. Each file is written atomically, and the folder is replaced whole.
void save_hf_folder(Model& model, const std::string& folder, const std::vector<std::string>& tokenizer_files);

}  // namespace distill
