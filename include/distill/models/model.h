// Teacher and student models behind one interface: the built-in zoo (mlp, cnn; parameter names equal those
// of the equivalent PyTorch nn.Sequential) and TorchScript modules loaded with torch::jit::load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>
#include <nlohmann/json_fwd.hpp>

#include "distill/data/io_shape.h"
#include "distill/io/safetensors.h"

namespace distill {

struct ModelConfig;

// A tensor shape for messages: "[2, 3]".
std::string shape_text(at::IntArrayRef sizes);

// What a model gives the loss: logits, or the final hidden states and the output head, which the loss applies
// chunk by chunk of positions so that no [positions, vocab] tensor beyond one chunk's is alive.
struct ModelOutput {
  at::Tensor logits;       // [N, classes] or [B, T, vocab]; undefined when `hidden` is given
  at::Tensor hidden;       // [..., H]: the states the output head reads (after the final norm)
  at::Tensor head_weight;  // [vocab, H]
  at::Tensor head_bias;    // [vocab], or undefined
  // The logits in full (computed from the hidden states when not given).
  at::Tensor full_logits() const;
  // A model that hands over its logits.
  static ModelOutput of_logits(at::Tensor logits) {
    ModelOutput out;
    out.logits = std::move(logits);
    return out;
  }
};

// The keys and values of every layer's past positions, for decoding one token at a time.
struct KvCache {
  std::vector<at::Tensor> keys, values;  // per layer: [B, kv_heads, positions, head_dim]
  int64_t length = 0;                    // positions held
};

class Model {
 public:
  virtual ~Model() = default;
  // [N, features] float32 rows, or [B, T] int64 tokens -> the output.
  virtual ModelOutput forward_output(const at::Tensor& x) = 0;
  // The logits in full: forward_output(x).full_logits().
  at::Tensor forward(const at::Tensor& x);
  // Parameters then buffers under their PyTorch state_dict names; live tensors, not copies.
  virtual NamedTensors state() = 0;
  virtual std::vector<at::Tensor> parameters() = 0;
  virtual void set_training(bool on) = 0;
  virtual void to(const c10::Device& device) = 0;
  // Holds the floating-point weights in `dtype` (a teacher in bfloat16); the forward then computes in it.
  virtual void cast(c10::ScalarType dtype) = 0;
  // Arch description stored in safetensors metadata so that `distill eval` and users can rebuild the model.
  virtual nlohmann::json arch_json() const = 0;
  virtual std::string describe() const = 0;
  virtual bool is_torchscript() const { return false; }
  // Language models with a KV cache: the logits [B, T, vocab] of `ids` [B, T] placed after the positions the
  // cache holds, which it then holds too. Without one (has_kv_cache() false), a caller re-runs forward().
  virtual bool has_kv_cache() const { return false; }
  virtual at::Tensor forward_cached(const at::Tensor& ids, KvCache& cache);
  // The longest sequence a language model takes (max_position_embeddings); 0: no limit known.
  virtual int64_t max_positions() const { return 0; }
  // The Hugging Face config.json that rebuilds the model in `transformers` (built-in language models);
  // null for the others.
  virtual nlohmann::json hf_config() const;
  // TorchScript models only: save the (trained) module back as TorchScript, atomically.
  virtual void save_torchscript(const std::string& path);

  int64_t parameter_count();
  void set_requires_grad(bool on);
};

// Builds the model a config section describes (a TorchScript module, or a built-in arch through the
// registry). `role` ("teacher" / "student") names the section in errors. Built-in models are initialised from
// ATen's global generator (seed it first).
std::unique_ptr<Model> make_model(const ModelConfig& config, const IoShape& io, const std::string& role);

// Copies weights by name. Every model tensor must be present with its shape; extra tensors are an error
// too. Errors name each missing, misshaped and unexpected tensor, and `origin` (the file).
void load_weights(Model& model, const SafetensorsContents& weights, const std::string& origin);

// `config` with arch, hidden, dropout, input_shape and channels taken from the "arch" metadata that distill
// writes into its safetensors (so a teacher can be given by its weights alone). `origin` names the file.
ModelConfig arch_from_metadata(const ModelConfig& config, const Metadata& metadata, const std::string& origin);

// How many outputs check_model_io accepts: exactly io.classes, or that many or more (a teacher whose extra
// outputs loss.vocab = truncate drops; a language model's padded embedding table).
enum class OutputWidth { exact, at_least };

// Checks that a model maps [N, io.features] to [N, io.classes] (rows), or [N, T] tokens to [N, T, io.classes]
// within io.seq_len positions, and returns its number of outputs; `role` names it in the error.
int64_t check_model_io(Model& model, const IoShape& io, const std::string& role, const c10::Device& device,
                       OutputWidth width = OutputWidth::exact);

}  // namespace distill
