// Private to src/loss: the CUDA side of the fused op (kd_loss_fused_cuda.cpp when LibTorch has CUDA; a
// version that refuses otherwise).
#pragma once

#include <ATen/core/Tensor.h>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill::detail {

// Runs the CUDA kernel on `like`'s device and current stream, with a workspace from ATen's allocator.
void kd_loss_forward_cuda_glue(const kernels::KdLossArgs& args, const at::Tensor& like);
// grad *= grad_output in place, unless grad_output (a device scalar) is exactly 1; no host synchronisation.
void kd_loss_scale_grad_cuda_glue(const at::Tensor& grad, const at::Tensor& grad_output);

}  // namespace distill::detail
