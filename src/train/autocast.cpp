#include "train/autocast.h"

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace distill {

// LibTorch 2.4 replaced the per-device-type functions with ones that take the device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define DISTILL_AUTOCAST_BY_DEVICE_TYPE 1
#endif

namespace {

bool autocast_enabled(bool cuda) {
#ifdef DISTILL_AUTOCAST_BY_DEVICE_TYPE
  return at::autocast::is_autocast_enabled(cuda ? at::kCUDA : at::kCPU);
#else
  return cuda ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
#endif
}

void set_autocast(bool cuda, bool on) {
#ifdef DISTILL_AUTOCAST_BY_DEVICE_TYPE
  at::autocast::set_autocast_dtype(cuda ? at::kCUDA : at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(cuda ? at::kCUDA : at::kCPU, on);
#else
  if (cuda) {
    at::autocast::set_autocast_gpu_dtype(at::kBFloat16);
    at::autocast::set_enabled(on);
  } else {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(on);
  }
#endif
}

}  // namespace

AutocastScope::AutocastScope(const c10::Device& device, bool enabled) : enabled_(enabled), cuda_(device.is_cuda()) {
  if (!enabled_) return;
  was_enabled_ = autocast_enabled(cuda_);
  set_autocast(cuda_, true);
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  set_autocast(cuda_, was_enabled_);
  if (!was_enabled_) at::autocast::clear_cache();  // the bfloat16 copies of the weights made in the scope
}

}  // namespace distill
