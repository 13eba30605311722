// Optimizers (torch::optim SGD / Adam / AdamW, the same update rules as PyTorch's), the learning-rate
// schedule, and the optimizer state as named tensors for checkpoints.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "distill/io/safetensors.h"

namespace torch::optim {
class Optimizer;
}

namespace distill {

struct OptimConfig;

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& config, const std::vector<at::Tensor>& params);
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

// Learning rate of optimizer step `step` (0-based) of `total_steps`: linear warm-up over warmup_steps, then
// constant, cosine (to min_lr at the last step) or step decay (x gamma every step_size steps).
double learning_rate_at(const OptimConfig& config, int64_t step, int64_t total_steps);

// Per-parameter state ("<param name>.exp_avg", ...) in the order of `param_names` (the model's parameters,
// as passed to make_optimizer), plus "<param name>.step" as int64 scalars.
NamedTensors optimizer_state(torch::optim::Optimizer& optimizer, const std::string& optim_name,
                             const std::vector<std::string>& param_names);
// Restores what optimizer_state() saved; `origin` names the checkpoint in errors.
void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& optim_name,
                          const std::vector<std::string>& param_names, const SafetensorsContents& contents,
                          const std::string& prefix, const std::string& origin);

}  // namespace distill
