// Teacher and student models behind one interface: the built-in zoo (mlp, cnn; parameter names equal those
// of the equivalent PyTorch nn.Sequential) and TorchScript modules loaded with torch::jit::load.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
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
  // Arch description stored in safetensors metadata so that `distill eval` and users can rebuild the model.
  virtual nlohmann::json arch_json() const = 0;
  virtual std::string describe() const = 0;
  virtual bool is_torchscript() const { return false; }
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

// Checks that a model maps [N, io.features] to [N, io.classes] (rows), or [N, T] tokens to [N, T, io.classes]
// (or more outputs, when `allow_wider`: a teacher whose extra outputs loss.vocab = truncate drops); `role`
// names it in the error.
void check_model_io(Model& model, const IoShape& io, const std::string& role, const c10::Device& device,
                    bool allow_wider = false);

}  // namespace distill
