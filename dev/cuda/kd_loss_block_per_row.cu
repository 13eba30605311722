// block_per_row's design knobs: the production kernel (kd_rows_kernel, src/kernels/kd_loss_cuda_rows.cuh, one
// block of 512 threads per row) under the plans and access policies that production does not use. Until they
// moved here they were the DISTILL_KD_CUDA_TUNE environment variable of the production launcher; production
// keeps each knob's default hard-wired.
//
// Settings:
//   default          production's plan, through this program's launcher (it should time like "production")
//   async=0|1        fill the shared-memory row cache with cp.async never / always. Production decides per
//                    shape (block_row_async_cache: only when the cache holds at least 3/4 of the row).
//   blocks_per_sm=1  size the cache for one block per SM (twice the cache) instead of two. Slower on the H200
//                    at every shape timed: 7.80 against 5.97 ms at [16384, 128256] bf16, both with cp.async
//                    fills (2026-11-23, before the instruction cuts of docs/kernels.md).
//   hints=1          the gradient sweep's global reads and its gradient stores evict-first (.cs: __ldcs /
//                    __stcs), so that L2 gives their lines up before the uncached packs that sweep 1 read and
//                    the gradient sweep has yet to read again. The profile found 24% L2 hits on the re-reads;
//                    a rough LRU estimate puts the kernel near 4.6 ms (64% of copy bandwidth) with the hints.
//                    Not timed on a GPU yet.
//
//   build/dev/cuda/kd_loss_block_per_row [--rows 16384 --vocab 128256 --dtype bf16] [async=0 hints=1 ...]
#include <string>
#include <vector>

#include "dev/cuda/common.h"
#include "src/kernels/kd_loss_cuda_rows.cuh"

namespace distill::kernels {
namespace {

// Evict-first ("cache streaming") 16-byte accesses, for data a row touches for the last time. Same values; plain
// accesses in the CUDA emulator.
struct EvictFirstAccess {
  static __device__ __forceinline__ uint4 load(const void* p) {
#if defined(DISTILL_CUDA_EMULATOR)
    return load16(p);
#else
    return __ldcs(static_cast<const uint4*>(p));
#endif
  }
  static __device__ __forceinline__ void store(void* p, uint4 v) {
#if defined(DISTILL_CUDA_EMULATOR)
    store16(p, v);
#else
    __stcs(static_cast<uint4*>(p), v);
#endif
  }
};

struct Knobs {
  int async = -1;         // -1: production's choice per shape
  int blocks_per_sm = 2;  // the cache is sized for this many blocks per SM
  bool hints = false;     // evict-first last reads and gradient stores
};

struct RowPlan {
  int64_t cache_packs = 0;
  bool async = false;
  size_t smem = 0;
};

RowPlan plan(const KdLossArgs& a, const Knobs& k) {
  const dev::Device& d = dev::device();
  const int64_t pair_bytes = element_bytes(a.student_dtype) + element_bytes(a.teacher_dtype);
  RowPlan pl;
  pl.cache_packs = block_row_cache_packs(a.vocab, pair_bytes, kScratchBytes, d.smem_optin, d.smem_per_sm, k.blocks_per_sm);
  pl.smem = kScratchBytes + static_cast<size_t>(pl.cache_packs * kPack * pair_bytes);
  pl.async = k.async < 0 ? block_row_async_cache(pl.cache_packs, a.vocab) : k.async == 1;
  return pl;
}

dev::Variant block_per_row(const std::string& setting, Knobs k) {
  dev::Variant v;
  v.setting = setting;
  v.why_not = [](const KdLossArgs& a) {
    return a.vocab > kMaxVocab ? std::string("vocab above the kernels' 32-bit offsets") : std::string();
  };
  v.describe = [k](const KdLossArgs& a) {
    const RowPlan pl = plan(a, k);
    return "block-per-row/" + std::to_string(kMaxThreads) + " threads, " + std::to_string(pl.cache_packs) + " of " +
           std::to_string(a.vocab / kPack) + " packs cached" + (pl.async ? " (cp.async)" : "") +
           (k.hints ? ", evict-first last reads" : "");
  };
  v.launch = [k](const KdLossArgs& a, unsigned* arrivals, cudaStream_t stream) {
    const RowPlan pl = plan(a, k);
    Params p = dev::params_of(a, arrivals);
    p.async_cache = pl.async;
    dev::dispatch(a, [&](auto t, auto kind) {
      using T = typename decltype(t)::type;
      constexpr Kind K = decltype(kind)::value;
      auto kernel = k.hints ? kd_rows_kernel<T, T, K, EvictFirstAccess> : kd_rows_kernel<T, T, K>;
      dev::launch_kernel(kernel, static_cast<unsigned>(a.rows), kMaxThreads, pl.smem, 0, stream, p, kMaxThreads,
                         pl.cache_packs, 0);
    });
  };
  return v;
}

}  // namespace
}  // namespace distill::kernels

int main(int argc, char** argv) {
  using distill::kernels::block_per_row;
  using distill::kernels::Knobs;
  std::vector<dev::Variant> variants;
  variants.push_back(block_per_row("default", Knobs{}));
  variants.push_back(block_per_row("async=0", Knobs{0, 2, false}));
  variants.push_back(block_per_row("async=1", Knobs{1, 2, false}));
  variants.push_back(block_per_row("blocks_per_sm=1", Knobs{-1, 1, false}));
  variants.push_back(block_per_row("hints=1", Knobs{-1, 2, true}));
  return dev::run_program(argc, argv, "kd_loss_block_per_row", "block_per_row under other plans and access policies",
                          variants);
}
