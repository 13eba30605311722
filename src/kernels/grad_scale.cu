// Fuses: the backward's "gradient x grad_output" into a no-op when grad_output is exactly 1.
// Never materialises: a second copy of the gradient (it scales in place).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "distill/kernels/grad_scale.h"

namespace distill::kernels {

namespace {

// ---- kernels ----

template <class T> __device__ float load(const T* p);
template <> __device__ float load(const float* p) { return *p; }
template <> __device__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
template <> __device__ float load(const __half* p) { return __half2float(*p); }
template <class T> __device__ T store(float x);
template <> __device__ float store(float x) { return x; }
template <> __device__ __nv_bfloat16 store(float x) { return __float2bfloat16_rn(x); }
template <> __device__ __half store(float x) { return __float2half_rn(x); }

template <class T>
__global__ void scale_kernel(T* __restrict__ data, int64_t n, const float* __restrict__ scale) {
  const float s = *scale;
  if (s == 1.0f) return;  // the usual case: loss.backward() with grad_output = 1
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    data[i] = store<T>(load(data + i) * s);
}

// ---- launchers ----

// Grid-stride blocks at most: 1024 x 256 threads fill any current GPU (an H100 holds 132 x 2048), and a fixed
// cap needs no device query in the backward, which runs every step.
constexpr int64_t kMaxBlocks = 1024;

template <class T> void launch(void* data, int64_t n, const float* scale, cudaStream_t stream) {
  if (n == 0) return;
  const int threads = 256;
  const int64_t blocks = std::min((n + threads - 1) / threads, kMaxBlocks);
#if defined(DISTILL_CUDA_EMULATOR)  // tests/cuda_emulator: the same kernel on the CPU
  emu::launch(scale_kernel<T>, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, stream, static_cast<T*>(data), n,
              scale);
#else
  scale_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(static_cast<T*>(data), n, scale);
#endif
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("scale_by_device_scalar: ") + cudaGetErrorString(err));
}

}  // namespace

void scale_by_device_scalar_cuda(void* data, int64_t n, ScalarType dtype, const float* scale, void* stream) {
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case ScalarType::f32: launch<float>(data, n, scale, s); break;
    case ScalarType::bf16: launch<__nv_bfloat16>(data, n, scale, s); break;
    case ScalarType::f16: launch<__half>(data, n, scale, s); break;
  }
}

}  // namespace distill::kernels
