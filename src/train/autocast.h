// Private to src/train: train.precision "bfloat16" as an RAII scope. Inside it, ATen's autocast runs matrix
// products (linear, matmul, ...) in bfloat16 on the scope's device type while the weights, the optimizer
// state and the loss stay float32, as torch.autocast(device_type, dtype=torch.bfloat16) does in PyTorch.
#pragma once

#include <c10/core/Device.h>

namespace distill {

class AutocastScope {
 public:
  AutocastScope(const c10::Device& device, bool enabled);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool enabled_ = false, cuda_ = false, was_enabled_ = false;
};

}  // namespace distill
