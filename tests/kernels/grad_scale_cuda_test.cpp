// The backward's in-place gradient scaling (grad_scale.cu) against the same arithmetic on the CPU: fp32 multiply,
// then round to nearest even into the gradient's dtype; and, for a scale of exactly 1, not a bit changed (NaNs
// and all). Host code: the CUDA runtime API only. Without a device every test prints "SKIPPED: no CUDA device".
#include <cuda_runtime.h>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "distill/kernels/grad_scale.h"
#include "kd_loss_test_util.h"

using namespace distill::kernels;
using kd_test::element_bytes;

namespace {

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(e));
}

// n elements of dtype t: a spread of magnitudes and signs, a NaN, infinities, zeros of both signs.
std::vector<uint8_t> sample(ScalarType t, int64_t n) {
  std::vector<uint8_t> v(static_cast<size_t>(n * element_bytes(t)));
  uint32_t h = 12345u;
  for (int64_t i = 0; i < n; ++i) {
    h = h * 1664525u + 1013904223u;
    float f = (static_cast<float>(h >> 8) / 16777216.0f - 0.5f) * static_cast<float>(1 << (h % 12));
    if (i % 97 == 5) f = __builtin_nanf("");
    if (i % 89 == 7) f = (i & 1) ? __builtin_inff() : -__builtin_inff();
    if (i % 83 == 11) f = (i & 1) ? 0.0f : -0.0f;
    kd_test::put(v, t, i, f);
  }
  return v;
}

}  // namespace

TEST_CASE("grad scale cuda: x *= scale in every dtype, bit-exact against the CPU", "[grad_scale][cuda]") {
  if (!have_device()) {
    std::puts("SKIPPED: no CUDA device");
    return;
  }
  for (ScalarType t : {ScalarType::f32, ScalarType::bf16, ScalarType::f16}) {
    // 0, one element, less than a block, and more than the capped grid covers in one stride.
    for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{255}, int64_t{1000}, int64_t{600001}}) {
      for (float scale : {1.0f, 0.5f, -3.0f, 0.0f, 1e-3f}) {
        INFO(kd_test::name(t) << " n " << n << " scale " << scale);
        const std::vector<uint8_t> host = sample(t, n);
        const size_t bytes = host.size();
        void* data = nullptr;
        float* dscale = nullptr;
        cuda_ok(cudaMalloc(&data, bytes ? bytes : 1), "cudaMalloc");
        cuda_ok(cudaMalloc(&dscale, sizeof(float)), "cudaMalloc");
        if (bytes) cuda_ok(cudaMemcpy(data, host.data(), bytes, cudaMemcpyHostToDevice), "H2D");
        cuda_ok(cudaMemcpy(dscale, &scale, sizeof(float), cudaMemcpyHostToDevice), "H2D");
        scale_by_device_scalar_cuda(data, n, t, dscale, nullptr);
        cuda_ok(cudaDeviceSynchronize(), "kernel");
        std::vector<uint8_t> got(bytes);
        if (bytes) cuda_ok(cudaMemcpy(got.data(), data, bytes, cudaMemcpyDeviceToHost), "D2H");
        cudaFree(data);
        cudaFree(dscale);

        const int64_t eb = element_bytes(t);
        std::vector<uint8_t> want = host;
        if (scale != 1.0f) {
          for (int64_t i = 0; i < n; ++i)
            kd_test::put(want, t, i, static_cast<float>(kd_test::get(host.data(), t, i)) * scale);
        }
        // Bit comparison, signed zeros included; a NaN only has to stay a NaN when scaled (a GPU multiply
        // returns the canonical NaN), and must keep its bits when the scale is 1 (nothing is written).
        int64_t first_bad = -1;
        for (int64_t i = 0; i < n && first_bad < 0; ++i) {
          const double gv = kd_test::get(got.data(), t, i), wv = kd_test::get(want.data(), t, i);
          const bool both_nan = gv != gv && wv != wv && scale != 1.0f;
          if (!both_nan && std::memcmp(got.data() + i * eb, want.data() + i * eb, static_cast<size_t>(eb)) != 0)
            first_bad = i;
        }
        INFO("first differing element " << first_bad);
        CHECK(first_bad == -1);
      }
    }
  }
}

#if defined(DISTILL_CUDA_EMULATOR)
// The scaling runs at every backward: after the first launch on a device it asks the driver nothing (the
// emulator counts attribute queries; a GPU answers each in microseconds of host time).
TEST_CASE("grad scale cuda: repeated launches make no driver queries", "[grad_scale][cuda]") {
  const std::vector<uint8_t> host = sample(ScalarType::bf16, 3000);
  void* data = nullptr;
  float* dscale = nullptr;
  const float scale = 0.5f;
  cuda_ok(cudaMalloc(&data, host.size()), "cudaMalloc");
  cuda_ok(cudaMalloc(&dscale, sizeof(float)), "cudaMalloc");
  cuda_ok(cudaMemcpy(data, host.data(), host.size(), cudaMemcpyHostToDevice), "H2D");
  cuda_ok(cudaMemcpy(dscale, &scale, sizeof(float), cudaMemcpyHostToDevice), "H2D");
  scale_by_device_scalar_cuda(data, 3000, ScalarType::bf16, dscale, nullptr);
  const long queries = emu::driver_queries();
  for (ScalarType t : {ScalarType::f32, ScalarType::bf16, ScalarType::f16})
    scale_by_device_scalar_cuda(data, 1000, t, dscale, nullptr);
  cuda_ok(cudaDeviceSynchronize(), "kernel");
  CHECK(emu::driver_queries() == queries);
  cudaFree(data);
  cudaFree(dscale);
}
#endif
