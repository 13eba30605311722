// Fused distillation loss on CUDA: forward KL / reverse KL / generalized JSD between the tempered teacher and
// student softmaxes, the T = 1 cross-entropy on the hard labels, the alpha mix and all scalings, and the
// gradient w.r.t. the student logits, in one kernel launch: the block that finishes last sums the per-row
// values in a fixed order (no float atomics: bit-identical results run to run).
//
// Fuses: upcast (bf16/f16 -> fp32), 1/T, both online softmaxes (Milakov & Gimelshein 2018), the divergence,
// the cross-entropy, the gradient (written in the student's dtype in the same launch). Never materialises:
// P, Q, log P, log Q, M, or any fp32 copy of the logits. Global memory traffic per element: read s, read t,
// write ds, plus whatever part of the row the second sweep re-reads (block_per_row caches the row's leading
// packs in shared memory and re-reads the rest from L2 in reverse order).
//
// What ships is the automatic plan's two shapes of one kernel, kd_rows_kernel: rows_per_warp (V <= 2048, a
// team of 2^k lanes per row) and block_per_row (a block per row). Its device code is in
// kd_loss_cuda_rows.cuh and kd_loss_cuda_common.cuh, which dev/cuda's experimental variants (cluster_per_row,
// cluster_persistent, the block_per_row design knobs) include too; this file holds the plan and the
// launchers. Raw-pointer CUDA: needs only the CUDA runtime (and cuda_bf16.h / cuda_fp16.h, header-only).
//
// The CUDA emulator of the tests (tests/cuda_emulator) compiles this file as C++ with DISTILL_CUDA_EMULATOR
// defined. Its hook here is the plain launch; kd_loss_cuda_common.cuh has the others.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "distill/kernels/kd_loss_kernels.h"
#include "kd_loss_cuda_rows.cuh"

namespace distill::kernels {
namespace {

constexpr int64_t kWarpRowsMaxV = 2048;  // V above this: a block per row

// ------------------------------------------------------------------------------------------------------------
// Launchers

// The device properties the plan needs.
struct Device {
  int smem_optin = 48 << 10, smem_per_sm = 48 << 10;
};

// What each device keeps for the life of the process, under one lock: its properties (queried once; small
// shapes are launch-bound, so a launch makes no attribute queries), what each kernel was allowed (asked of
// the driver once, not at every launch) and the arrival counters of sum_rows_if_last. A counter serves one
// stream: zeroed on that stream before its first use and left at zero by every launch. Launches on one stream run in order and can share it; launches on different streams may
// overlap and must not (cudaStreamPerThread is a different stream in every host thread). Counters come from
// slabs of 256, one cudaMalloc each. Never freed: a launch may still be queued when static destructors run.
struct DeviceState {
  Device props;
  std::map<const void*, size_t> smem_allowed;  // kernel -> the dynamic shared memory it may use
  std::map<std::pair<cudaStream_t, std::thread::id>, unsigned*> counters;
  unsigned* slab = nullptr;
  int slab_used = 0;
};
constexpr int kSlab = 256;

std::mutex& state_mutex() {
  static std::mutex mutex;
  return mutex;
}

// The current device's state; the caller holds state_mutex().
DeviceState& current_state() {
  int dev = 0;
  check_call(cudaGetDevice(&dev), "cudaGetDevice");
  static auto* states = new std::map<int, DeviceState>();
  if (const auto found = states->find(dev); found != states->end()) return found->second;
  Device d;
  const char* what = "cudaDeviceGetAttribute";
  check_call(cudaDeviceGetAttribute(&d.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), what);
  check_call(cudaDeviceGetAttribute(&d.smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev), what);
  DeviceState& state = (*states)[dev];
  state.props = d;
  return state;
}

Device current_device() {
  const std::lock_guard<std::mutex> lock(state_mutex());
  return current_state().props;
}

// Lets `kernel` use `smem` bytes of dynamic shared memory on the current device (48 KiB needs no opt-in).
template <class Kernel>
void allow_dynamic_smem(Kernel kernel, size_t smem) {
  if (smem <= (48u << 10)) return;
  const std::lock_guard<std::mutex> lock(state_mutex());
  size_t& allowed = current_state().smem_allowed[reinterpret_cast<const void*>(kernel)];
  if (smem <= allowed) return;
  check_call(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "cudaFuncSetAttribute");
  allowed = smem;
}

// The current device's properties and `stream`'s arrival counter.
std::pair<Device, unsigned*> launch_context(cudaStream_t stream) {
  const std::lock_guard<std::mutex> lock(state_mutex());
  DeviceState& state = current_state();
  const std::thread::id thread = stream == cudaStreamPerThread ? std::this_thread::get_id() : std::thread::id();
  unsigned*& counter = state.counters[{stream, thread}];
  if (!counter) {
    if (!state.slab || state.slab_used == kSlab) {
      unsigned* slab = nullptr;
      check_call(cudaMalloc(&slab, kSlab * sizeof(unsigned)), "cudaMalloc (arrival counters)");
      state.slab = slab;
      state.slab_used = 0;
    }
    check_call(cudaMemsetAsync(state.slab + state.slab_used, 0, sizeof(unsigned), stream),
               "cudaMemsetAsync (arrival counter)");
    counter = state.slab + state.slab_used++;
  }
  return {state.props, counter};
}

// The concrete launch shape of one call.
struct Plan {
  CudaVariant variant = CudaVariant::rows_per_warp;
  int threads = kMaxThreads;
  int team = 32;             // rows_per_warp: lanes per row
  int64_t cache_packs = 0;   // block_per_row
  bool async_cache = false;  // fill the shared-memory cache with cp.async
  int bitmap_words = 0;      // sparse tail
  size_t smem = 0;
  int64_t grid = 0;
};

Plan make_plan(const KdLossArgs& a, CudaVariant want, const Device& dev) {
  Plan pl;
  const int64_t V = a.vocab, N = a.rows;
  if (V > kMaxVocab)
    throw std::invalid_argument("kd_loss_forward_cuda: vocab " + std::to_string(V) + " is above the kernels' " +
                                std::to_string(kMaxVocab) + " (32-bit offsets within a row)");
  const bool sparse = a.topk_index != nullptr;
  const int64_t pair_bytes = element_bytes(a.student_dtype) + (sparse ? 0 : element_bytes(a.teacher_dtype));
  // Top-k bitmap words, a multiple of 4 so that what follows stays 16-byte aligned.
  const int64_t words = a.topk_index && a.topk_tail == TopkTail::tail ? ((V + 31) / 32 + 3) / 4 * 4 : 0;
  if (want == CudaVariant::automatic) {
    // Measured on an H100 and an H200 (docs/benchmarks.md): block_per_row beat both cluster kernels
    // (dev/cuda) at every dense shape from V = 32000 to 128256.
    want = V <= kWarpRowsMaxV ? CudaVariant::rows_per_warp : CudaVariant::block_per_row;
  }
  pl.bitmap_words = static_cast<int>(words);
  if (want == CudaVariant::rows_per_warp) {
    // Lanes per row: about 8 elements each, a power of two in [1, 32]; 512 threads per block.
    int team = 1;
    while (team < 32 && team * 8 < V) team *= 2;
    pl.variant = CudaVariant::rows_per_warp;
    pl.team = team;
    pl.threads = kMaxThreads;
    const int64_t rows_per_block = kMaxThreads / team;
    pl.grid = (N + rows_per_block - 1) / rows_per_block;
    pl.smem = kScratchBytes + sizeof(uint32_t) * static_cast<size_t>(words) * rows_per_block;
    if (pl.smem <= static_cast<size_t>(dev.smem_optin)) return pl;
    pl = Plan{};  // too many top-k bitmaps for one block: one row per block instead
    pl.bitmap_words = static_cast<int>(words);
  }
  // block_per_row: cache as many leading packs as fit while two blocks share an SM.
  pl.variant = CudaVariant::block_per_row;
  pl.team = kMaxThreads;
  pl.threads = kMaxThreads;
  pl.grid = N;
  const size_t fixed = kScratchBytes + sizeof(uint32_t) * static_cast<size_t>(words);
  if (fixed > static_cast<size_t>(dev.smem_optin))
    throw std::invalid_argument(
        "kd_loss_forward_cuda: TopkTail::tail keeps a V-bit map of the top-k in shared memory; V = " +
        std::to_string(V) + " needs " + std::to_string(fixed) + " bytes, the device has " +
        std::to_string(dev.smem_optin));
  pl.cache_packs = block_row_cache_packs(V, pair_bytes, fixed, dev.smem_optin, dev.smem_per_sm, 2);
  pl.smem = fixed + static_cast<size_t>(pl.cache_packs * kPack * pair_bytes);
  pl.async_cache = block_row_async_cache(pl.cache_packs, V);
  return pl;
}

template <class TS, class TT, Kind K>
void launch_rows(const Plan& pl, const Params& p, cudaStream_t stream) {
  auto kernel = kd_rows_kernel<TS, TT, K>;
  allow_dynamic_smem(kernel, pl.smem);
#if defined(DISTILL_CUDA_EMULATOR)
  emu::launch(kernel, dim3(static_cast<unsigned>(pl.grid)), dim3(pl.threads), pl.smem, stream, p, pl.team, pl.cache_packs,
              pl.bitmap_words);
#else
  kernel<<<static_cast<unsigned>(pl.grid), pl.threads, pl.smem, stream>>>(p, pl.team, pl.cache_packs, pl.bitmap_words);
#endif
  check_launch("kd_rows_kernel");
}

template <class TS, class TT>
void launch_kind(Kind kind, const Plan& pl, const Params& p, cudaStream_t stream) {
  switch (kind) {
    case kForward: launch_rows<TS, TT, kForward>(pl, p, stream); break;
    case kReverse: launch_rows<TS, TT, kReverse>(pl, p, stream); break;
    case kJsd: launch_rows<TS, TT, kJsd>(pl, p, stream); break;
    case kSparse: launch_rows<TS, TT, kSparse>(pl, p, stream); break;
  }
}

template <class TS>
void launch_teacher(ScalarType tdt, Kind kind, const Plan& pl, const Params& p, cudaStream_t stream) {
  switch (tdt) {
    case ScalarType::f32: launch_kind<TS, float>(kind, pl, p, stream); break;
    case ScalarType::bf16: launch_kind<TS, __nv_bfloat16>(kind, pl, p, stream); break;
    case ScalarType::f16: launch_kind<TS, __half>(kind, pl, p, stream); break;
  }
}

}  // namespace

bool kd_loss_cuda_compiled() { return true; }

int64_t kd_loss_cuda_workspace_bytes(const KdLossArgs& args) {
  const int64_t bytes = 2 * std::max<int64_t>(args.rows, 1) * static_cast<int64_t>(sizeof(float));
  return (bytes + 255) / 256 * 256;
}

std::string kd_loss_cuda_describe(const KdLossArgs& args, CudaVariant variant) {
  const Plan pl = make_plan(args, variant, current_device());
  switch (pl.variant) {
    case CudaVariant::rows_per_warp: return "rows-per-warp/" + std::to_string(pl.team) + " lanes";
    case CudaVariant::block_per_row:
      return "block-per-row/" + std::to_string(pl.threads) + " threads, " + std::to_string(pl.cache_packs) + " of " +
             std::to_string(args.vocab / kPack) + " packs cached" + (pl.async_cache ? " (cp.async)" : "");
    default: return "?";
  }
}

void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream) {
  kd_loss_forward_cuda(args, workspace, stream, CudaVariant::automatic);
}

void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream_ptr, CudaVariant variant) {
  kd_loss_check_args(args);
  if (variant != CudaVariant::automatic && variant != CudaVariant::rows_per_warp &&
      variant != CudaVariant::block_per_row)
    throw std::invalid_argument("kd_loss_forward_cuda: CudaVariant " + std::to_string(static_cast<int>(variant)) +
                                " is not one of automatic, rows_per_warp, block_per_row");
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  if (args.rows == 0) {
    check_call(cudaMemsetAsync(args.sums, 0, 3 * sizeof(float), stream), "cudaMemsetAsync");
    return;
  }
  if (!workspace && (!args.row_kd || !args.row_ce))
    throw std::invalid_argument(
        "kd_loss_forward_cuda: workspace of kd_loss_cuda_workspace_bytes(args) bytes is required");
  const auto [device, arrivals] = launch_context(stream);
  const Plan pl = make_plan(args, variant, device);
  Params p = make_params(args, workspace);
  p.arrivals = arrivals;
  p.async_cache = pl.async_cache;
  const Kind kind = kind_of(args);
  switch (args.student_dtype) {
    case ScalarType::f32: launch_teacher<float>(args.teacher_dtype, kind, pl, p, stream); break;
    case ScalarType::bf16: launch_teacher<__nv_bfloat16>(args.teacher_dtype, kind, pl, p, stream); break;
    case ScalarType::f16: launch_teacher<__half>(args.teacher_dtype, kind, pl, p, stream); break;
  }
}

}  // namespace distill::kernels
