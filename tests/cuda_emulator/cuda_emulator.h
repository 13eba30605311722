// A CUDA emulator for testing kernel logic on a CPU: the subset of the CUDA runtime API, device built-ins and
// cooperative groups that src/kernels/kd_loss_cuda.cu (and dev/cuda's programs) use, so that CI (which has no GPU) runs the CUDA
// kernels against the same tests as a GPU does. The shim headers in include/ (cuda_runtime.h, cuda_bf16.h,
// cuda_fp16.h, cooperative_groups.h) all resolve here; the kernel file is compiled as C++ with
// DISTILL_CUDA_EMULATOR defined (see its hooks).
//
// How it runs a launch: every CUDA thread is a fiber (ucontext) on the calling OS thread. The fibers of one
// cluster (one block without clusters) run round-robin, each until it waits at a barrier (__syncthreads,
// __syncwarp, a shuffle, cluster.sync) or exits; each block of a cluster runs as far as it can before the
// next one runs; clusters run one after another. The order of blocks and of threads alternates between
// launches (forward, then reverse), so that a thread reading what another wrote without a barrier in between
// sees the stale value in one of the two orders.
//
// What it checks: 16-byte global accesses are aligned; cp.async copies land only at the issuing thread's
// wait; device buffers end (and start) at an inaccessible page, so gross overruns fault; fresh device and
// shared memory hold 0xFF bytes (NaN as floats), so reading what was never written shows; a launch whose
// configuration a GPU would refuse fails like on a GPU (cudaGetLastError); barrier deadlocks abort with a
// message. It also counts attribute and occupancy queries (driver_queries), for tests of launch overhead.
//
// What it does not model (a GPU run is still the final word): the memory model (everything is sequentially
// consistent, so a missing __threadfence or a race between blocks cannot show), warp divergence and
// independent-thread-scheduling hazards beyond the barriers above, bank conflicts and all timing, the exact
// ex2.approx / lg2.approx results (it uses the exact functions, flushing denormals like .ftz), and the
// sm_80+ packed-conversion asm (the kernel file's portable fallbacks run instead).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <tuple>
#include <utility>

#include "distill/kernels/kd_loss_reference.h"  // bf16 / f16 bit conversions

// ---- Types and qualifiers --------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3() = default;
  dim3(unsigned a, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint4 {
  unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }

struct __nv_bfloat16 {
  uint16_t x;
};
struct __half {
  uint16_t x;
};
inline float __bfloat162float(__nv_bfloat16 v) { return distill::kernels::bf16_bits_to_float(v.x); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return {distill::kernels::float_to_bf16_bits(f)}; }
inline float __half2float(__half v) { return distill::kernels::f16_bits_to_float(v.x); }
inline __half __float2half_rn(float f) { return {distill::kernels::float_to_f16_bits(f)}; }
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 v) { return v.x; }
inline unsigned short __half_as_ushort(__half v) { return v.x; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short b) { return {b}; }
inline __half __ushort_as_half(unsigned short b) { return {b}; }
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline float __uint_as_float(unsigned i) {
  float f;
  std::memcpy(&f, &i, 4);
  return f;
}
inline unsigned __float_as_uint(float f) {
  unsigned i;
  std::memcpy(&i, &f, 4);
  return i;
}

// ---- Runtime API types -----------------------------------------------------------------------------------
typedef void* cudaStream_t;
enum cudaError_t {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevicePointer = 17,
};
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaDeviceAttr {
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrMultiProcessorCount,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrMaxSharedMemoryPerMultiprocessor,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize };
enum cudaLaunchAttributeID { cudaLaunchAttributeClusterDimension = 4 };
struct cudaLaunchAttributeValue {
  struct {
    unsigned x, y, z;
  } clusterDim;
};
struct cudaLaunchAttribute {
  cudaLaunchAttributeID id;
  cudaLaunchAttributeValue val;
};
struct cudaLaunchConfig_t {
  dim3 gridDim, blockDim;
  size_t dynamicSmemBytes = 0;
  cudaStream_t stream = nullptr;
  cudaLaunchAttribute* attrs = nullptr;
  unsigned numAttrs = 0;
};
#define cudaStreamNonBlocking 1u
#define cudaStreamPerThread (reinterpret_cast<cudaStream_t>(0x2))

// ---- The emulated machine: an sm_90 part with H100 limits but only 16 SMs, so that kernels sized to the
// device (one wave of persistent clusters) loop over rows even in tests with few rows -------------------------
namespace emu {

constexpr int kSmCount = 16;
constexpr int kRegistersPerSm = 65536;
constexpr int kAssumedRegistersPerThread = 64;  // for occupancy, which needs a register count it cannot know
constexpr unsigned kMaxThreadsPerSm = 2048;
constexpr int kMaxSmemPerBlock = 232448;  // opt-in maximum, bytes
constexpr int kMaxSmemPerSm = 233472;
constexpr int kDefaultSmemPerBlock = 48 << 10;  // without cudaFuncSetAttribute
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxClusterBlocks = 16;  // non-portable maximum on sm_90

// Per-thread state of the running fiber (threadIdx and friends read it).
struct ThreadState {
  dim3 thread, block, block_dim, grid_dim;
  unsigned cluster_rank = 0, cluster_blocks = 1;
};
const ThreadState& current();

// Barriers the running fiber waits at: the block's, the cluster's, and one per warp and member mask.
void sync_block();
void sync_cluster();
void sync_warp(unsigned mask);
// __shfl_xor_sync: exchange through the warp's slot array between two warp barriers.
uint64_t shuffle_xor(unsigned mask, uint64_t value, int lane_mask, int width);

unsigned char* dynamic_smem();
unsigned char* cluster_smem(unsigned rank, const void* own);  // the same offset in block `rank`'s memory
void check_aligned16(const void* p, const char* what);
// cp.async.cg 16-byte global -> shared copies: queued per thread, done at its cp_async_wait_all (the latest a
// GPU may complete them), so reading the destination before the wait (or, in another thread, before a barrier
// that follows the wait) sees the old bytes.
void cp_async16(void* shared_dst, const void* global_src);
void cp_async_commit();            // closes the copies issued since the last commit into a group
void cp_async_wait_group(int n);   // completes the oldest groups until at most n are left
void cp_async_wait_all();          // completes every copy, committed or not
float ex2_approx_ftz(float x);
float lg2_approx_ftz(float x);

void set_last_error(cudaError_t e);  // what the next cudaGetLastError returns (the first error sticks)
// Runs `body` as every thread of the grid; reports a configuration a GPU would refuse through the last error.
void run(const std::function<void()>& body, dim3 grid, dim3 block, size_t smem, unsigned cluster);
// Records the dynamic shared memory a kernel was allowed (cudaFuncSetAttribute); keyed by its address.
void set_max_dynamic_smem(const void* kernel, int bytes);
size_t max_dynamic_smem(const void* kernel);
// Attribute and occupancy queries made so far (cudaDeviceGetAttribute, cudaFuncSetAttribute,
// cudaOccupancyMaxActiveClusters): a GPU answers each in microseconds, so a launch path that is meant to make
// none is tested by this count standing still.
long driver_queries();
void count_driver_query();

// The <<<grid, block, smem, stream>>> launch (declared here, defined after cudaLaunchKernelEx).
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args);

}  // namespace emu

// ---- Device built-ins ------------------------------------------------------------------------------------
extern dim3 threadIdx, blockIdx, blockDim, gridDim;  // the running fiber's, set whenever one resumes

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { emu::sync_warp(mask); }
inline void __threadfence() {}
// Any 4- or 8-byte type (CUDA has overloads for int, unsigned, float, double and their 64-bit kin).
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__shfl_xor_sync of a 4- or 8-byte value");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof v);
  bits = emu::shuffle_xor(mask, bits, lane_mask, width);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}
// Atomics: fibers switch only at barriers, so a plain read-modify-write is atomic here.
inline unsigned atomicOr(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old | v;
  return old;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
template <class T>
inline T __ldcg(const T* p) {
  return *p;
}

namespace cooperative_groups {
struct cluster_group {
  unsigned block_rank() const { return emu::current().cluster_rank; }
  unsigned num_blocks() const { return emu::current().cluster_blocks; }
  void sync() const { emu::sync_cluster(); }
  template <class T>
  T* map_shared_rank(T* p, int rank) const {
    return reinterpret_cast<T*>(emu::cluster_smem(static_cast<unsigned>(rank), p));
  }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cooperative_groups

// ---- Runtime API -----------------------------------------------------------------------------------------
cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
const char* cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError();
cudaError_t cudaMalloc(void** p, size_t bytes);
template <class T>
cudaError_t cudaMalloc(T** p, size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(p), bytes);
}
cudaError_t cudaFree(void* p);
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemset(void* dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t stream);
cudaError_t cudaStreamCreate(cudaStream_t* stream);
inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* stream, unsigned) { return cudaStreamCreate(stream); }
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaDeviceSynchronize();

// Events record the host's clock: launches are synchronous here, so two records time what the emulator took
// (the dev/cuda programs' timing loops run; their figures mean nothing).
struct EmuEvent;
typedef EmuEvent* cudaEvent_t;
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);
struct cudaDeviceProp {
  char name[256];
};
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);

template <class... Params>
cudaError_t cudaFuncSetAttribute(void (*kernel)(Params...), cudaFuncAttribute attr, int value) {
  emu::count_driver_query();
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > emu::kMaxSmemPerBlock)
    return cudaErrorInvalidValue;
  emu::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), value);
  return cudaSuccess;
}

// Clusters resident at once: blocks per SM from threads, shared memory (1 KiB reserved per block, as on
// sm_90) and registers (kAssumedRegistersPerThread), times SMs, over the cluster size; SMs are not grouped
// into GPCs here.
template <class... Params>
cudaError_t cudaOccupancyMaxActiveClusters(int* clusters, void (*kernel)(Params...), const cudaLaunchConfig_t* cfg) {
  emu::count_driver_query();
  unsigned cluster = 1;
  for (unsigned i = 0; i < cfg->numAttrs; ++i)
    if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) cluster = cfg->attrs[i].val.clusterDim.x;
  const unsigned threads = cfg->blockDim.x;
  if (threads == 0 || threads > emu::kMaxThreadsPerBlock || cluster == 0 || cluster > emu::kMaxClusterBlocks ||
      cfg->dynamicSmemBytes > emu::max_dynamic_smem(reinterpret_cast<const void*>(kernel)))
    return cudaErrorInvalidConfiguration;
  const size_t by_threads = emu::kMaxThreadsPerSm / threads;
  const size_t by_smem = emu::kMaxSmemPerSm / (cfg->dynamicSmemBytes + 1024);
  const size_t by_registers = emu::kRegistersPerSm / (threads * emu::kAssumedRegistersPerThread);
  const size_t per_sm = std::min(by_threads, std::min(by_smem, by_registers));
  *clusters = static_cast<int>(emu::kSmCount * per_sm / cluster);
  return cudaSuccess;
}

template <class... Params, class... Args>
cudaError_t cudaLaunchKernelEx(const cudaLaunchConfig_t* cfg, void (*kernel)(Params...), Args&&... args) {
  unsigned cluster = 1;
  for (unsigned i = 0; i < cfg->numAttrs; ++i)
    if (cfg->attrs[i].id == cudaLaunchAttributeClusterDimension) {
      const auto& d = cfg->attrs[i].val.clusterDim;
      if (d.y != 1 || d.z != 1) return cudaErrorInvalidConfiguration;
      cluster = d.x;
    }
  if (cfg->dynamicSmemBytes > emu::max_dynamic_smem(reinterpret_cast<const void*>(kernel)))
    return cudaErrorInvalidConfiguration;
  std::tuple<std::decay_t<Params>...> bound(std::forward<Args>(args)...);
  emu::run([kernel, bound]() { std::apply(kernel, bound); }, cfg->gridDim, cfg->blockDim, cfg->dynamicSmemBytes,
           cluster);
  return cudaGetLastError();
}

// A configuration error of a plain launch surfaces through cudaGetLastError, as on a GPU.
template <class... Params, class... Args>
void emu::launch(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, Args&&... args) {
  cudaLaunchConfig_t cfg;
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
  if (e != cudaSuccess) emu::set_last_error(e);
}
