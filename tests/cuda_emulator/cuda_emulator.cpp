// The CUDA emulator's machine: fibers, barriers, device memory and the runtime API (see cuda_emulator.h).
//
// Fibers start through ucontext and then switch with _setjmp/_longjmp between their stacks, which costs no
// system call (swapcontext saves the signal mask with one). _FORTIFY_SOURCE would turn _longjmp into
// __longjmp_chk, which refuses to jump to another stack, so it is off in this file.
#undef _FORTIFY_SOURCE

#include "cuda_emulator.h"

#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <memory>
#include <vector>

dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {
namespace {

constexpr size_t kStackBytes = 256 << 10;  // per thread; pages never touched cost nothing
constexpr unsigned char kFreshByte = 0xFF;  // fresh device and shared memory: NaN as any float type

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "EMU: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

size_t page_bytes() {
  static const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
  return page;
}

struct Barrier {
  unsigned expected = 0, arrived = 0;
  uint64_t generation = 0;
};

struct Warp {
  uint64_t slots[32] = {};
  std::map<unsigned, Barrier> barriers;  // one per member mask
};

struct Block {
  std::vector<unsigned char> storage;
  unsigned char* smem = nullptr;
  size_t smem_bytes = 0;
  Barrier barrier;
  std::vector<Warp> warps;
};

struct Fiber {
  ucontext_t context;
  jmp_buf resume;
  bool done = false;
  ThreadState state;
  Block* block = nullptr;
  // cp.async: (shared dst, global src) copies, oldest group first; the last group is still open.
  std::deque<std::vector<std::pair<void*, const void*>>> copy_groups{1};
};

struct Cluster {
  std::vector<std::unique_ptr<Block>> blocks;
  Barrier barrier;
};

// The launch in progress (one at a time: launches are synchronous here).
Fiber* g_fiber = nullptr;
Cluster* g_cluster = nullptr;
jmp_buf g_scheduler;
ucontext_t g_creator;
const std::function<void()>* g_body = nullptr;
uint64_t g_events = 0;  // barrier arrivals and thread exits: none in a whole round means deadlock
uint64_t g_launches = 0;
cudaError_t g_last_error = cudaSuccess;
long g_driver_queries = 0;  // attribute and occupancy queries (driver_queries)

std::map<const void*, size_t>& kernel_smem_limits() {
  static std::map<const void*, size_t> limits;
  return limits;
}

struct Allocation {
  char* map_base;
  size_t map_bytes;
};
std::map<const void*, Allocation>& allocations() {
  static std::map<const void*, Allocation> live;
  return live;
}

// Stacks with an inaccessible lowest page, so that an overflow faults instead of corrupting a neighbour.
char* stack_at(size_t index) {
  static std::vector<char*> pool;
  while (pool.size() <= index) {
    const size_t page = page_bytes();
    void* p = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1,
                   0);
    if (p == MAP_FAILED) die("cannot map a thread stack");
    mprotect(p, page, PROT_NONE);
    pool.push_back(static_cast<char*>(p) + page);
  }
  return pool[index];
}

void load_thread_registers(const Fiber& f) {
  threadIdx = f.state.thread;
  blockIdx = f.state.block;
  blockDim = f.state.block_dim;
  gridDim = f.state.grid_dim;
}

// The jumps live in small functions of their own: a variable of the caller that changes between _setjmp and
// the _longjmp back would be lost.
void yield() {
  if (!_setjmp(g_fiber->resume)) _longjmp(g_scheduler, 1);
  load_thread_registers(*g_fiber);  // the scheduler set g_fiber before jumping back
}

// Runs fiber f until it yields or exits.
__attribute__((noinline)) void enter(Fiber* f) {
  g_fiber = f;
  if (!_setjmp(g_scheduler)) _longjmp(f->resume, 1);
}

// A fiber's first step: save where to resume it, then return to the creator (still inside swapcontext, so this
// frame stays on the fiber's stack until the scheduler jumps back into it).
__attribute__((noinline)) void park(Fiber* f) {
  if (!_setjmp(f->resume)) swapcontext(&f->context, &g_creator);
}

void wait(Barrier& b) {
  ++g_events;
  const uint64_t generation = b.generation;
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  while (b.generation == generation) yield();
}

// A thread that exits stops counting in its block's and cluster's barriers (as on the hardware), which may
// release the threads already waiting there.
void leave(Barrier& b) {
  --b.expected;
  if (b.expected > 0 && b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
  }
}

void fiber_main() {
  park(g_fiber);
  Fiber* const f = g_fiber;
  load_thread_registers(*f);
  (*g_body)();
  cp_async_wait_all();  // copies still in flight at exit land anyway
  f->done = true;
  ++g_events;
  leave(f->block->barrier);
  leave(g_cluster->barrier);
  _longjmp(g_scheduler, 1);
}

void describe_fault(int sig, siginfo_t* info, void*) {
  char line[200];
  if (g_fiber)
    std::snprintf(line, sizeof line,
                  "EMU: invalid memory access at %p in block %u thread %u (past a device buffer, or a stack overflow)\n",
                  info->si_addr, g_fiber->state.block.x, g_fiber->state.thread.x);
  else
    std::snprintf(line, sizeof line, "EMU: invalid memory access at %p outside any kernel\n", info->si_addr);
  if (write(STDERR_FILENO, line, std::strlen(line)) < 0) {
  }
  signal(sig, SIG_DFL);  // the faulting access repeats and ends the process
}

void install_fault_reporter() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  static std::vector<char> alt(1 << 16);  // the handler must run even when a fiber stack overflowed
  stack_t ss = {};
  ss.ss_sp = alt.data();
  ss.ss_size = alt.size();
  sigaltstack(&ss, nullptr);
  struct sigaction sa = {};
  sa.sa_sigaction = describe_fault;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

__attribute__((noinline)) std::unique_ptr<Fiber> make_fiber(const ThreadState& state, Block* block, char* stack) {
  auto f = std::make_unique<Fiber>();
  f->state = state;
  f->block = block;
  getcontext(&f->context);
  f->context.uc_stack.ss_sp = stack;
  f->context.uc_stack.ss_size = kStackBytes;
  f->context.uc_link = nullptr;
  makecontext(&f->context, fiber_main, 0);
  g_fiber = f.get();
  swapcontext(&g_creator, &f->context);  // runs to park() in fiber_main
  g_fiber = nullptr;
  return f;
}

// Runs one cluster's threads to completion.
void run_cluster(unsigned first_block, dim3 grid, dim3 block, size_t smem, unsigned cluster_blocks) {
  Cluster cluster;
  g_cluster = &cluster;
  cluster.barrier.expected = cluster_blocks * block.x;
  std::vector<std::unique_ptr<Fiber>> fibers;
  fibers.reserve(static_cast<size_t>(cluster_blocks) * block.x);
  for (unsigned r = 0; r < cluster_blocks; ++r) {
    auto b = std::make_unique<Block>();
    b->storage.assign(smem + 64, kFreshByte);
    const auto misalign = reinterpret_cast<uintptr_t>(b->storage.data()) & 63u;
    b->smem = b->storage.data() + (misalign ? 64 - misalign : 0);
    b->smem_bytes = smem;
    b->barrier.expected = block.x;
    b->warps.resize((block.x + 31) / 32);
    for (unsigned t = 0; t < block.x; ++t) {
      ThreadState state;
      state.thread = dim3(t);
      state.block = dim3(first_block + r);
      state.block_dim = block;
      state.grid_dim = grid;
      state.cluster_rank = r;
      state.cluster_blocks = cluster_blocks;
      fibers.push_back(make_fiber(state, b.get(), stack_at(fibers.size())));
    }
    cluster.blocks.push_back(std::move(b));
  }
  // Each block runs as far as it can before the next one runs at all (until its threads all wait for
  // another block, at cluster.sync, or exit), so a block gets several barriers ahead of the others: reads
  // of another block's shared memory that a missing cluster barrier leaves unordered then see the wrong row.
  // Blocks, and threads within a block, run in forward order on even launches and in reverse on odd ones.
  std::vector<std::vector<Fiber*>> blocks(cluster_blocks);
  for (auto& f : fibers) blocks[f->state.cluster_rank].push_back(f.get());
  if (g_launches % 2 == 1) {
    std::reverse(blocks.begin(), blocks.end());
    for (auto& b : blocks) std::reverse(b.begin(), b.end());
  }
  size_t live = fibers.size();
  while (live) {
    const uint64_t events = g_events;
    for (auto& block_fibers : blocks) {
      for (;;) {
        const uint64_t round = g_events;
        for (Fiber* f : block_fibers) {
          if (f->done) continue;
          enter(f);
          if (f->done) --live;
        }
        if (g_events == round) break;  // every thread of this block waits for another block, or is done
      }
    }
    if (live && g_events == events) {
      std::fprintf(stderr, "EMU: deadlock in the cluster of block %u: %zu threads wait at barriers that cannot open:",
                   first_block, live);
      int shown = 0;
      for (auto& f : fibers)
        if (!f->done && shown++ < 8) std::fprintf(stderr, " (block %u thread %u)", f->state.block.x, f->state.thread.x);
      std::fprintf(stderr, "\n");
      die("a barrier (__syncthreads, __syncwarp, a shuffle or cluster.sync) that not all its threads reach");
    }
  }
  g_fiber = nullptr;
  g_cluster = nullptr;
}

}  // namespace

const ThreadState& current() {
  if (!g_fiber) die("a device built-in called outside a kernel");
  return g_fiber->state;
}

void sync_block() {
  current();
  wait(g_fiber->block->barrier);
}

void sync_cluster() {
  current();
  wait(g_cluster->barrier);
}

void sync_warp(unsigned mask) {
  const unsigned lane = current().thread.x % 32;
  if (!((mask >> lane) & 1u)) die("__syncwarp / shuffle by a lane outside its own member mask");
  Barrier& b = g_fiber->block->warps[g_fiber->state.thread.x / 32].barriers[mask];
  b.expected = static_cast<unsigned>(__builtin_popcount(mask));
  wait(b);
}

uint64_t shuffle_xor(unsigned mask, uint64_t value, int lane_mask, int width) {
  const unsigned lane = current().thread.x % 32;
  if (width <= 0 || width > 32 || (width & (width - 1)) || lane_mask < 0 || lane_mask >= width)
    die("__shfl_xor_sync with a width that is not a power of two <= 32, or a lane mask outside it");
  const unsigned source = lane ^ static_cast<unsigned>(lane_mask);
  if (!((mask >> source) & 1u)) die("__shfl_xor_sync reads a lane outside the member mask");
  Warp& w = g_fiber->block->warps[g_fiber->state.thread.x / 32];
  w.slots[lane] = value;
  sync_warp(mask);  // every member has written
  const uint64_t result = w.slots[source];
  sync_warp(mask);  // every member has read before anyone writes again
  return result;
}

unsigned char* dynamic_smem() {
  current();
  return g_fiber->block->smem;
}

unsigned char* cluster_smem(unsigned rank, const void* own) {
  current();
  const Block& mine = *g_fiber->block;
  const auto* p = static_cast<const unsigned char*>(own);
  if (p < mine.smem || p > mine.smem + mine.smem_bytes) die("map_shared_rank of a pointer outside shared memory");
  if (rank >= g_cluster->blocks.size()) die("map_shared_rank to a rank outside the cluster");
  return g_cluster->blocks[rank]->smem + (p - mine.smem);
}

void check_aligned16(const void* p, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) & 15u) {
    std::fprintf(stderr, "EMU: misaligned 16-byte %s at %p in block %u thread %u\n", what, p,
                 g_fiber ? g_fiber->state.block.x : 0u, g_fiber ? g_fiber->state.thread.x : 0u);
    die("a 16-byte access must be 16-byte aligned (a GPU raises 'misaligned address')");
  }
}

void cp_async16(void* shared_dst, const void* global_src) {
  current();
  const Block& b = *g_fiber->block;
  const auto* d = static_cast<const unsigned char*>(shared_dst);
  if (d < b.smem || d + 16 > b.smem + b.smem_bytes) die("cp.async to an address outside the block's shared memory");
  check_aligned16(shared_dst, "cp.async destination");
  check_aligned16(global_src, "cp.async source");
  g_fiber->copy_groups.back().emplace_back(shared_dst, global_src);
}

void cp_async_commit() {
  current();
  g_fiber->copy_groups.emplace_back();
}

void cp_async_wait_group(int n) {
  current();
  auto& groups = g_fiber->copy_groups;
  // Committed groups are all but the open last one.
  while (groups.size() - 1 > static_cast<size_t>(n)) {
    for (const auto& [dst, src] : groups.front()) std::memcpy(dst, src, 16);
    groups.pop_front();
  }
}

void cp_async_wait_all() {
  current();
  for (const auto& group : g_fiber->copy_groups)
    for (const auto& [dst, src] : group) std::memcpy(dst, src, 16);
  g_fiber->copy_groups.assign(1, {});
}

// ex2.approx.ftz / lg2.approx.ftz: denormal inputs and results are zero.
float ex2_approx_ftz(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = 0.f;
  const float y = std::exp2(x);
  return std::fpclassify(y) == FP_SUBNORMAL ? 0.f : y;
}
float lg2_approx_ftz(float x) {
  if (std::fpclassify(x) == FP_SUBNORMAL) x = std::signbit(x) ? -0.f : 0.f;
  return std::log2(x);
}

void set_last_error(cudaError_t e) {
  if (g_last_error == cudaSuccess) g_last_error = e;
}

void set_max_dynamic_smem(const void* kernel, int bytes) { kernel_smem_limits()[kernel] = static_cast<size_t>(bytes); }

long driver_queries() { return g_driver_queries; }
void count_driver_query() { ++g_driver_queries; }

size_t max_dynamic_smem(const void* kernel) {
  const auto it = kernel_smem_limits().find(kernel);
  return it == kernel_smem_limits().end() ? kDefaultSmemPerBlock : it->second;
}

void run(const std::function<void()>& body, dim3 grid, dim3 block, size_t smem, unsigned cluster) {
  if (g_fiber) die("a kernel launched from inside a kernel");
  if (grid.y != 1 || grid.z != 1 || block.y != 1 || block.z != 1) die("only 1-D grids and blocks are emulated");
  if (grid.x == 0 || block.x == 0 || block.x > kMaxThreadsPerBlock || cluster == 0 || cluster > kMaxClusterBlocks ||
      grid.x % cluster != 0 || smem > static_cast<size_t>(kMaxSmemPerBlock)) {
    set_last_error(cudaErrorInvalidConfiguration);
    return;
  }
  install_fault_reporter();
  g_body = &body;
  for (unsigned first = 0; first < grid.x; first += cluster) run_cluster(first, grid, block, smem, cluster);
  g_body = nullptr;
  ++g_launches;
}

}  // namespace emu

// ---- Runtime API -----------------------------------------------------------------------------------------

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  emu::count_driver_query();
  if (device != 0) return cudaErrorInvalidValue;
  switch (attr) {
    case cudaDevAttrComputeCapabilityMajor: *value = 9; return cudaSuccess;
    case cudaDevAttrMultiProcessorCount: *value = emu::kSmCount; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = emu::kMaxSmemPerBlock; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *value = emu::kMaxSmemPerSm; return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}

const char* cudaGetErrorString(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
  }
  return "unknown error";
}

cudaError_t cudaGetLastError() {
  const cudaError_t e = emu::g_last_error;
  emu::g_last_error = cudaSuccess;
  return e;
}

// Each buffer ends at an inaccessible page (overruns of 16 bytes or more fault) and starts after another; it is
// 16-byte aligned (cudaMalloc gives 256) and filled with kFreshByte.
cudaError_t cudaMalloc(void** p, size_t bytes) {
  const size_t page = emu::page_bytes();
  const size_t body = (std::max<size_t>(bytes, 1) + 15) / 16 * 16;
  const size_t span = (body + page - 1) / page * page;
  const size_t total = span + 2 * page;
  void* base = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) return cudaErrorMemoryAllocation;
  char* b = static_cast<char*>(base);
  mprotect(b, page, PROT_NONE);
  mprotect(b + page + span, page, PROT_NONE);
  char* user = b + page + (span - body);
  std::memset(user, emu::kFreshByte, body);
  emu::allocations()[user] = {b, total};
  *p = user;
  return cudaSuccess;
}

cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  const auto it = emu::allocations().find(p);
  if (it == emu::allocations().end()) return cudaErrorInvalidDevicePointer;
  munmap(it->second.map_base, it->second.map_bytes);
  emu::allocations().erase(it);
  return cudaSuccess;
}

cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  if (bytes) std::memmove(dst, src, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemset(void* dst, int value, size_t bytes) {
  if (bytes) std::memset(dst, value, bytes);
  return cudaSuccess;
}

cudaError_t cudaMemsetAsync(void* dst, int value, size_t bytes, cudaStream_t) { return cudaMemset(dst, value, bytes); }

cudaError_t cudaStreamCreate(cudaStream_t* stream) {
  static char streams[64];
  static unsigned next = 0;
  *stream = &streams[next++ % sizeof streams];
  return cudaSuccess;
}

cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }

struct EmuEvent {
  std::chrono::steady_clock::time_point at;
};
cudaError_t cudaEventCreate(cudaEvent_t* event) {
  *event = new EmuEvent{std::chrono::steady_clock::now()};
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t event) {
  delete event;
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  event->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(end->at - start->at).count();
  return cudaSuccess;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidValue;
  std::snprintf(prop->name, sizeof prop->name, "CUDA emulator (sm_90, %d SMs)", emu::kSmCount);
  return cudaSuccess;
}
