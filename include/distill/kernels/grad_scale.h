// In-place scaling of a gradient by a scalar that lives in device memory, for the fused loss's backward:
// x *= *scale, and nothing at all when *scale == 1 (each block reads the scalar and returns), so the common
// loss.backward() costs one empty launch instead of a pass over [N, V] and the host never synchronises.
#pragma once

#include <cstdint>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill::kernels {

// `data` holds n elements of `dtype` (device memory); `scale` points to one float in device memory.
// Launched on `stream` (a cudaStream_t) and checked; throws std::runtime_error on a CUDA error.
void scale_by_device_scalar_cuda(void* data, int64_t n, ScalarType dtype, const float* scale, void* stream);

}  // namespace distill::kernels
