#include "bench/device_memory.h"

#include <algorithm>
#include <vector>

#include "distill/error.h"

#if defined(DISTILL_WITH_CUDA)
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>
#endif

namespace distill {

#if defined(DISTILL_WITH_CUDA)

void cuda_synchronize(const c10::Device& device) {
  c10::cuda::set_device(device.index());
  c10::cuda::device_synchronize();
}

int64_t cuda_reset_peak(const c10::Device& device) {
  c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  return stats.allocated_bytes[0].current;
}

int64_t cuda_peak_bytes(const c10::Device& device) {
  auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
  return stats.allocated_bytes[0].peak;
}

std::string cuda_device_name(const c10::Device& device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device.index()) != cudaSuccess) return "?";
  return prop.name;
}

double cuda_kernel_median_ms(const kernels::KdLossArgs& args, int variant, int64_t repeats, const c10::Device& device) {
  c10::cuda::set_device(device.index());
  void* workspace = nullptr;
  int64_t bytes = kernels::kd_loss_cuda_workspace_bytes(args);
  if (cudaMalloc(&workspace, std::max<int64_t>(bytes, 256)) != cudaSuccess) throw Error("cudaMalloc failed");
  auto v = static_cast<kernels::CudaVariant>(variant);
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats + 3; ++i) {
    cudaEventRecord(start, nullptr);
    kernels::kd_loss_forward_cuda(args, workspace, nullptr, v);
    cudaEventRecord(stop, nullptr);
    cudaEventSynchronize(stop);
    float t = 0;
    cudaEventElapsedTime(&t, start, stop);
    if (i >= 3) ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(workspace);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

#else

double cuda_kernel_median_ms(const kernels::KdLossArgs&, int, int64_t, const c10::Device&) {
  throw Error("this build of distill has no CUDA");
}

void cuda_synchronize(const c10::Device&) { throw Error("this build of distill has no CUDA"); }
int64_t cuda_reset_peak(const c10::Device&) { throw Error("this build of distill has no CUDA"); }
int64_t cuda_peak_bytes(const c10::Device&) { throw Error("this build of distill has no CUDA"); }
std::string cuda_device_name(const c10::Device&) { return "none"; }

#endif

}  // namespace distill
