// CUDA dispatch of the fused loss: the kernels are raw-pointer CUDA (src/kernels/); this file only supplies
// the current stream and a workspace. Without CUDA in LibTorch the functions refuse with a clear message.
#include <torch/torch.h>

#include "loss/fused_dispatch.h"

#if defined(DISTILL_WITH_CUDA)
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "distill/kernels/grad_scale.h"
#endif

namespace distill::detail {

#if defined(DISTILL_WITH_CUDA)

void kd_loss_forward_cuda_glue(const kernels::KdLossArgs& args, const at::Tensor& like) {
  c10::cuda::CUDAGuard guard(like.device());
  int64_t bytes = kernels::kd_loss_cuda_workspace_bytes(args);
  at::Tensor workspace = at::empty({std::max<int64_t>(bytes, 1)}, like.options().dtype(at::kByte));
  try {
    kernels::kd_loss_forward_cuda(args, workspace.data_ptr(), at::cuda::getCurrentCUDAStream().stream());
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "kd_loss CUDA kernel failed: ", e.what());
  }
}

void kd_loss_scale_grad_cuda_glue(const at::Tensor& grad, const at::Tensor& grad_output) {
  c10::cuda::CUDAGuard guard(grad.device());
  at::Tensor g = grad_output.to(at::kFloat).contiguous();
  kernels::ScalarType dtype = grad.scalar_type() == at::kBFloat16 ? kernels::ScalarType::bf16
                              : grad.scalar_type() == at::kHalf   ? kernels::ScalarType::f16
                                                                  : kernels::ScalarType::f32;
  try {
    kernels::scale_by_device_scalar_cuda(grad.data_ptr(), grad.numel(), dtype, g.data_ptr<float>(),
                                         at::cuda::getCurrentCUDAStream().stream());
  } catch (const std::runtime_error& e) {
    TORCH_CHECK(false, "kd_loss gradient scaling failed: ", e.what());
  }
}

#else

void kd_loss_forward_cuda_glue(const kernels::KdLossArgs&, const at::Tensor&) {
  TORCH_CHECK(false, "kd_loss: CUDA tensors, but this build of distill has no CUDA (build with a CUDA LibTorch and "
                     "DISTILL_CUDA=ON)");
}
void kd_loss_scale_grad_cuda_glue(const at::Tensor&, const at::Tensor&) {
  TORCH_CHECK(false, "kd_loss: CUDA tensors, but this build of distill has no CUDA");
}

#endif

}  // namespace distill::detail
