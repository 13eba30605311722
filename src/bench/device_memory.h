// Private to src/bench: CUDA synchronisation and allocator statistics (device_memory.cpp; refuses without
// CUDA in LibTorch).
#pragma once

#include <cstdint>
#include <string>

#include <c10/core/Device.h>

namespace distill {

void cuda_synchronize(const c10::Device& device);
// Resets the caching allocator's peak and returns the bytes allocated now.
int64_t cuda_reset_peak(const c10::Device& device);
int64_t cuda_peak_bytes(const c10::Device& device);
std::string cuda_device_name(const c10::Device& device);

}  // namespace distill
