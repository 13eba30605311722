#include "bench/device_memory.h"

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

#else

void cuda_synchronize(const c10::Device&) { throw Error("this build of distill has no CUDA"); }
int64_t cuda_reset_peak(const c10::Device&) { throw Error("this build of distill has no CUDA"); }
int64_t cuda_peak_bytes(const c10::Device&) { throw Error("this build of distill has no CUDA"); }
std::string cuda_device_name(const c10::Device&) { return "none"; }

#endif

}  // namespace distill
