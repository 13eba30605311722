// The CUDA entry points of kd_loss_kernels.h in a build without the CUDA kernels (DISTILL_CUDA_KERNELS off).
#include <stdexcept>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill::kernels {

bool kd_loss_cuda_compiled() { return false; }

int64_t kd_loss_cuda_workspace_bytes(const KdLossArgs&) { return 0; }

void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream) {
  kd_loss_forward_cuda(args, workspace, stream, CudaVariant::automatic);
}

void kd_loss_forward_cuda(const KdLossArgs&, void*, void*, CudaVariant) {
  throw std::runtime_error(
      "kd_loss_forward_cuda: this build has no CUDA kernels (configure with nvcc available, DISTILL_CUDA=AUTO or ON)");
}

std::string kd_loss_cuda_describe(const KdLossArgs&, CudaVariant) { return "none"; }

}  // namespace distill::kernels
