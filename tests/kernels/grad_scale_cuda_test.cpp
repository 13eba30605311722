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
#include "distill/kernels/kd_loss_reference.h"

using namespace distill::kernels;

namespace {

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(what << ": " << cudaGetErrorString(e));
}

int64_t element_bytes(ScalarType t) { return t == ScalarType::f32 ? 4 : 2; }

float to_float(ScalarType t, const uint8_t* p) {
  if (t == ScalarType::f32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, p, 2);
  return t == ScalarType::bf16 ? bf16_bits_to_float(b) : f16_bits_to_float(b);
}

void from_float(ScalarType t, float f, uint8_t* p) {
  if (t == ScalarType::f32) {
    std::memcpy(p, &f, 4);
    return;
  }
  const uint16_t b = t == ScalarType::bf16 ? float_to_bf16_bits(f) : float_to_f16_bits(f);
  std::memcpy(p, &b, 2);
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
    from_float(t, f, v.data() + i * element_bytes(t));
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
        INFO("dtype " << static_cast<int>(t) << " n " << n << " scale " << scale);
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
          for (int64_t i = 0; i < n; ++i) from_float(t, to_float(t, host.data() + i * eb) * scale, want.data() + i * eb);
        }
        // Bit comparison, signed zeros included; a NaN only has to stay a NaN when scaled (a GPU multiply
        // returns the canonical NaN), and must keep its bits when the scale is 1 (nothing is written).
        int64_t first_bad = -1;
        for (int64_t i = 0; i < n && first_bad < 0; ++i) {
          const uint8_t* g = got.data() + i * eb;
          const uint8_t* w = want.data() + i * eb;
          const float gf = to_float(t, g), wf = to_float(t, w);
          const bool both_nan = gf != gf && wf != wf && scale != 1.0f;
          if (!both_nan && std::memcmp(g, w, static_cast<size_t>(eb)) != 0) first_bad = i;
        }
        INFO("first differing element " << first_bad);
        CHECK(first_bad == -1);
      }
    }
  }
}
