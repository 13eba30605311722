// Private to src/models: the options of arch "llama" (the keys of a Hugging Face config.json, flat in the model
// section), shared by the builder (llama.cpp) and the Hugging Face folder reader and writer (hf_folder.cpp).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "distill/models/model.h"

namespace distill::models {

// Defaults are transformers' LlamaConfig defaults.
struct LlamaOptions {
  std::string model_type = "llama";    // llama | qwen2 | mistral
  int64_t vocab_size = 0;              // 0: the data's vocabulary
  int64_t hidden_size = 4096;
  int64_t intermediate_size = 11008;
  int64_t num_hidden_layers = 32;
  int64_t num_attention_heads = 32;
  int64_t num_key_value_heads = 0;     // 0: num_attention_heads (no grouping)
  int64_t head_dim = 0;                // 0: hidden_size / num_attention_heads
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  nlohmann::json rope_scaling;         // null, {"rope_type": "linear", "factor": f}, or llama3's
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  bool attention_bias = false;         // llama: biases on q, k, v and o (qwen2 always biases q, k, v)
  bool mlp_bias = false;               // llama: biases on gate, up and down
  int64_t sliding_window = 0;          // mistral: each position attends to the last N; 0 = all
  double initializer_range = 0.02;
  std::string hidden_act = "silu";
  std::optional<int64_t> bos_token_id, eos_token_id, pad_token_id;

  int64_t kv_heads() const { return num_key_value_heads > 0 ? num_key_value_heads : num_attention_heads; }
  int64_t dim_per_head() const { return head_dim > 0 ? head_dim : hidden_size / num_attention_heads; }
};

template <class F> void visit_fields(LlamaOptions& c, F&& f) {
  f("model_type", c.model_type, "llama: llama | qwen2 (q, k, v biased) | mistral (sliding window)");
  f("vocab_size", c.vocab_size, "llama: vocabulary size; 0 = the data's");
  f("hidden_size", c.hidden_size, "llama: width of the residual stream");
  f("intermediate_size", c.intermediate_size, "llama: width of the SwiGLU MLP");
  f("num_hidden_layers", c.num_hidden_layers, "llama: decoder layers");
  f("num_attention_heads", c.num_attention_heads, "llama: query heads");
  f("num_key_value_heads", c.num_key_value_heads, "llama: key/value heads (grouped-query attention); 0 = num_attention_heads");
  f("head_dim", c.head_dim, "llama: width of each head; 0 = hidden_size / num_attention_heads");
  f("rms_norm_eps", c.rms_norm_eps, "llama: epsilon of RMSNorm");
  f("rope_theta", c.rope_theta, "llama: base of the rotary embedding frequencies");
  f("rope_scaling", c.rope_scaling, "llama: null, or {\"rope_type\": \"linear\", \"factor\": f}, or Llama 3's {\"rope_type\": \"llama3\", ...}");
  f("max_position_embeddings", c.max_position_embeddings, "llama: longest sequence (must cover data.seq_len)");
  f("tie_word_embeddings", c.tie_word_embeddings, "llama: the output head shares the embedding matrix");
  f("attention_bias", c.attention_bias, "llama: biases on the q, k, v and o projections");
  f("mlp_bias", c.mlp_bias, "llama: biases on the MLP projections");
  f("sliding_window", c.sliding_window, "llama: attend to the last N positions only (mistral); 0 = all");
  f("initializer_range", c.initializer_range, "llama: std of the normal initialisation (as transformers)");
  f("hidden_act", c.hidden_act, "llama: silu");
  f("bos_token_id", c.bos_token_id, "llama: beginning-of-sequence id (written to config.json and generation_config.json)");
  f("eos_token_id", c.eos_token_id, "llama: end-of-sequence id (generation stops at it)");
  f("pad_token_id", c.pad_token_id, "llama: padding id (its embedding row is zero and gets no gradient)");
}

// The model; init_like_hf: initialise as transformers does (else the weights are for a loader to overwrite).
std::unique_ptr<Model> make_llama_model(const LlamaOptions& options, bool init_like_hf);
// The config.json transformers rebuilds the model from.
nlohmann::json llama_hf_config(const LlamaOptions& options);

}  // namespace distill::models
