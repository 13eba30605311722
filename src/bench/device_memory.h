// Private to src/bench: CUDA synchronisation and allocator statistics (device_memory.cpp; refuses without
// CUDA in LibTorch).
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill {

void cuda_synchronize(const c10::Device& device);
// Resets the caching allocator's peak and returns the bytes allocated now.
int64_t cuda_reset_peak(const c10::Device& device);
int64_t cuda_peak_bytes(const c10::Device& device);
std::string cuda_device_name(const c10::Device& device);

// Median milliseconds of the raw CUDA kernel alone (no autograd, no allocation; workspace preallocated),
// timed with CUDA events over `repeats` launches after a warm-up, for kernels::CudaVariant `variant`.
double cuda_kernel_median_ms(const kernels::KdLossArgs& args, int variant, int64_t repeats, const c10::Device& device);

}  // namespace distill
