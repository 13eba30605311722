// The row code that dev/cuda's two cluster kernels share (kd_loss_cluster_per_row.cu,
// kd_loss_cluster_persistent.cu): one row per thread-block cluster of 1, 2, 4 or 8 blocks (sm_90). Block r owns
// the slice [r * slice, (r + 1) * slice) of the row and keeps all of its packs in shared memory, so the
// gradient sweep reads nothing from global memory: the row costs one read of s, one of t and one write of
// ds. Statistics are merged across the cluster through distributed shared memory, in rank order (identical
// bits in every block). Dense teachers only.
//
// Dynamic shared memory: [kClusterHeader bytes: 32 Stats scratch, two exchange slots (Stats + JSD sums), the
// merged Stats][slice packs of s][slice packs of t], and for cluster_persistent a second [s][t] pair (the
// next row's).
//
// Not shipped: on an H100 and an H200 the one-shot kernel was slower than block_per_row at every dense shape
// measured (docs/benchmarks.md). The device code they share with production is
// src/kernels/kd_loss_cuda_common.cuh.
#pragma once

#include <cooperative_groups.h>

#include <cstdint>
#include <string>

#include "dev/cuda/common.h"
#include "src/kernels/kd_loss_cuda_common.cuh"

namespace cg = cooperative_groups;

namespace distill::kernels {
namespace {

constexpr size_t kClusterHeader = 1024;  // scratch + exchange slots, keeps the packs 16-byte aligned
constexpr size_t kSlotBytes = 32;        // one row's exchange: Stats, then the two JSD sums
static_assert(sizeof(Stats) + 2 * sizeof(float) <= kSlotBytes &&
                  kScratchBytes + 2 * kSlotBytes + sizeof(Stats) <= kClusterHeader,
              "cluster header: scratch, two exchange slots (Stats + JSD sums), merged statistics");

// This block's slice of row i.
template <class TS, class TT>
struct Slice {
  int64_t i, lo, n, y;
  bool ignored;
  const TS* srow_full;
  const TS* srow;
  const TT* trow;
  TS* grow;
  Layout L;
};

template <class TS, class TT>
__device__ __forceinline__ Slice<TS, TT> slice_of(const Params& p, int64_t i, int rank, int64_t slice) {
  Slice<TS, TT> r;
  const int64_t V = p.vocab;
  r.i = i;
  r.lo = rank * slice < V ? rank * slice : V;
  const int64_t hi = r.lo + slice < V ? r.lo + slice : V;
  r.n = hi - r.lo;
  r.srow_full = static_cast<const TS*>(p.student) + i * p.s_stride;
  r.srow = r.srow_full + r.lo;
  r.trow = static_cast<const TT*>(p.teacher) + i * p.t_stride + r.lo;
  r.grow = p.grad ? static_cast<TS*>(p.grad) + i * V + r.lo : nullptr;
  r.L = layout(r.srow, r.trow, r.grow, r.n);
  r.y = p.labels ? p.labels[i] : -1;
  r.ignored = p.labels && r.y == p.ignore_index;
  return r;
}

// Cache packs per slice: an upper bound for any alignment of the slice start (make_plan sizes shared memory
// with it too).
__host__ __device__ __forceinline__ int64_t cluster_slice_packs(int64_t slice) { return slice / kPack + 1; }

// Cache b (0, or 1 for cluster_persistent's second) of a block's slice: [packs of s][packs of t].
template <class TS, class TT>
struct SliceCache {
  Pack<TS>* s;
  Pack<TT>* t;
};
template <class TS, class TT>
__device__ __forceinline__ SliceCache<TS, TT> slice_cache(unsigned char* smem, int64_t slice, int b) {
  const int64_t packs = cluster_slice_packs(slice);
  unsigned char* const base = smem + kClusterHeader + b * packs * (sizeof(Pack<TS>) + sizeof(Pack<TT>));
  return {reinterpret_cast<Pack<TS>*>(base), reinterpret_cast<Pack<TT>*>(base + packs * sizeof(Pack<TS>))};
}

// Requests the slice's packs into the shared-memory cache: the whole slice in flight at once (cp.async). Each
// thread later reads back the packs it requested itself, so no barrier is needed before the statistics.
// (Through registers, two packs ahead, measured the same on an H200; this is the simpler of the two.)
template <class TS, class TT>
__device__ __forceinline__ void cluster_fill(const Slice<TS, TT>& r, Pack<TS>* s_cache, Pack<TT>* t_cache) {
  if (r.ignored) return;
  cache_packs_async(s_cache, r.srow + r.L.head, r.L.packs, true, threadIdx.x, blockDim.x);
  cache_packs_async(t_cache, r.trow + r.L.head, r.L.packs, r.L.t_vec, threadIdx.x, blockDim.x);
}

// How a cluster row ends. cluster_barrier: no block reads another's shared memory afterwards (the one-shot
// kernel, whose blocks then exit). block_barrier: only this block is done with its cache and scratch; the
// persistent kernel alternates exchange slots between rows, so a block may start writing the next row's
// slot while others still read this row's: the slot it writes next was last read two rows back, before
// every block arrived at the previous row's first cluster barrier, which it has passed.
enum class RowEnd { cluster_barrier, block_barrier };

// Everything after the slice's packs have landed in this thread's part of the cache: the statistics, the
// cluster-wide merge (through exchange slot `slot_parity`), the row's loss values and the gradient.
template <class TS, class TT, Kind K, int M>
__device__ __forceinline__ void cluster_row(const Params& p, const Slice<TS, TT>& r, const Pack<TS>* s_cache,
                                            const Pack<TT>* t_cache, unsigned char* smem, int slot_parity,
                                            RowEnd end) {
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int nblocks = static_cast<int>(cluster.num_blocks());
  Team tm;
  tm.block = true;
  tm.size = blockDim.x;
  tm.rank = threadIdx.x;
  tm.mask = 0xffffffffu;
  tm.scratch = reinterpret_cast<float*>(smem);
  unsigned char* const exchange = smem + kScratchBytes + slot_parity * kSlotBytes;
  Stats* slot = reinterpret_cast<Stats*>(exchange);
  float* jsd_slot = reinterpret_cast<float*>(exchange + sizeof(Stats));
  const int64_t i = r.i, lo = r.lo, n = r.n, y = r.y, V = p.vocab;
  const bool ignored = r.ignored;
  const TS* srow_full = r.srow_full;
  const TS* srow = r.srow;
  const TT* trow = r.trow;
  TS* grow = r.grow;
  const Layout& L = r.L;
  const int packs = static_cast<int>(L.packs);

  Stats st = stats_identity();
  if (!ignored) {
    for (int q = tm.rank; q < packs; q += tm.size)
      stats_add_pack<K, M>(st, cached_pack(s_cache, q), cached_pack(t_cache, q), p.k, 0u);
    for (int64_t e = tm.rank; e < L.head; e += tm.size) {
      const float s = to_f32(srow[e]), t = to_f32(trow[e]);
      stats_add<K, 1, M>(st, &t, &s, p.k, 0u);
    }
    for (int64_t e = L.tail_begin + tm.rank; e < n; e += tm.size) {
      const float s = to_f32(srow[e]), t = to_f32(trow[e]);
      stats_add<K, 1, M>(st, &t, &s, p.k, 0u);
    }
  }
  st = team_merge<K>(tm, st, p.k, M != kCeNone);
  if (threadIdx.x == 0) *slot = st;
  cluster.sync();
  // Thread 0 merges the blocks' statistics in rank order and publishes them to its block.
  Stats* merged = reinterpret_cast<Stats*>(smem + kScratchBytes + 2 * kSlotBytes);  // not scratch: reused below
  if (threadIdx.x == 0) {
    st = *cluster.map_shared_rank(slot, 0);
    for (int r = 1; r < nblocks; ++r) st = stats_merge<K>(st, *cluster.map_shared_rank(slot, r), p.k, M != kCeNone);
    *merged = st;
  }
  __syncthreads();
  st = *merged;

  RowConsts c;
  const bool live = !ignored && row_consts<K>(p, st, y, st.sa > 0.f, c);
  float D = 0.f;
  if (live && st.sa > 0.f) {
    if (K == kForward) D = (st.w / st.sa + c.l2sb - c.l2sa) * kLn2;
    if (K == kReverse) D = (st.w / st.sb + c.l2sa - c.l2sb) * kLn2, c.d = D;
  }
  if (K == kJsd) {
    float pm = 0.f, qm = 0.f;
    if (live && st.sa > 0.f) {
      for (int q = tm.rank; q < packs; q += tm.size) {
        float t[kPack], s[kPack];
        unpack(cached_pack(s_cache, q), s);
        unpack(cached_pack(t_cache, q), t);
#pragma unroll
        for (int j = 0; j < kPack; ++j) jsd_terms(t[j], s[j], c, pm, qm);
      }
      for (int64_t e = tm.rank; e < L.head; e += tm.size) jsd_terms(to_f32(trow[e]), to_f32(srow[e]), c, pm, qm);
      for (int64_t e = L.tail_begin + tm.rank; e < n; e += tm.size)
        jsd_terms(to_f32(trow[e]), to_f32(srow[e]), c, pm, qm);
    }
    pm = team_reduce<0>(tm, pm);
    qm = team_reduce<0>(tm, qm);
    if (threadIdx.x == 0) jsd_slot[0] = pm, jsd_slot[1] = qm;
    cluster.sync();
    pm = 0.f, qm = 0.f;
    for (int r = 0; r < nblocks; ++r) {
      const float* o = cluster.map_shared_rank(jsd_slot, r);
      pm += o[0];
      qm += o[1];
    }
    if (live && st.sa > 0.f) {
      D = p.beta * pm * kLn2 + (1.f - p.beta) * qm * kLn2;
      c.d = qm * kLn2;
      c.ck *= 1.f - p.beta;
    }
  }
  if (rank == 0 && threadIdx.x == 0) {
    float ce = 0.f;
    if (live && p.labels)
      ce = y >= 0 && y < V ? c.l2sc * kLn2 - (to_f32(srow_full[y]) - c.ms) : __int_as_float(0x7fc00000);
    p.row_kd[i] = D != D ? D : fmaxf(D, 0.f) * p.kd_scale;
    p.row_ce[i] = ce;
  }
  if (grow) {
    // Other threads wrote the cached packs.
    __syncthreads();
    TS* g0 = grow + L.head;
    if (!live) {  // ignored row, or the student row is all -inf: a zero gradient
      const float zero[kPack] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int q = tm.rank; q < packs; q += tm.size) store_pack(at_pack(g0, q), L.g_vec, zero);
      for (int64_t e = tm.rank; e < L.head; e += tm.size) grow[e] = from_f32<TS>(0.f);
      for (int64_t e = L.tail_begin + tm.rank; e < n; e += tm.size) grow[e] = from_f32<TS>(0.f);
    } else {
      if (p.ck == 0.f) c.kd_grad = false;  // alpha == 0
      fold_grad_consts<K, M>(c);
      // The label's pack in this slice (-1: none) and its place in the pack.
      const int64_t yl = c.y - lo - L.head;
      const int label_pack = yl >= 0 && yl < L.packs * kPack ? static_cast<int>(yl / kPack) : -1;
      const int label_j = static_cast<int>(yl & (kPack - 1));
      auto sweep = [&](auto g_vec) {
        for (int q = tm.rank; q < packs; q += tm.size) {
          float t[kPack], s[kPack], g[kPack];
          unpack(cached_pack(s_cache, q), s);
          unpack(cached_pack(t_cache, q), t);
#pragma unroll
          for (int j = 0; j < kPack; ++j) g[j] = grad_elem<K, M>(t[j], s[j], c);
          if (q == label_pack) {
#pragma unroll
            for (int j = 0; j < kPack; ++j)
              if (j == label_j) g[j] -= c.cc;
          }
          store_pack(at_pack(g0, q), decltype(g_vec)::value, g);
        }
      };
      if (L.g_vec) {
        sweep(std::true_type{});
      } else {
        sweep(std::false_type{});
      }
      auto one = [&](int64_t e) {
        float g = grad_elem<K, M>(to_f32(trow[e]), to_f32(srow[e]), c);
        if (lo + e == c.y) g -= c.cc;
        grow[e] = from_f32<TS>(g);
      };
      for (int64_t e = tm.rank; e < L.head; e += tm.size) one(e);
      for (int64_t e = L.tail_begin + tm.rank; e < n; e += tm.size) one(e);
    }
  }
  if (end == RowEnd::cluster_barrier) {
    cluster.sync();
  } else {
    __syncthreads();  // this block's cache and scratch are free again
  }
}

// cp.async groups (cluster_persistent's double buffering): commit closes the copies this thread issued since the
// last commit into a group; wait_group<N> returns once at most the N newest groups are still in flight.
__device__ __forceinline__ void cp_async_commit() {
#if defined(DISTILL_CUDA_EMULATOR)
  emu::cp_async_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait_group() {
#if defined(DISTILL_CUDA_EMULATOR)
  emu::cp_async_wait_group(N);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// ------------------------------------------------------------------------------------------------------------
// Plan

struct ClusterPlan {
  int cluster = 0;     // blocks per row; 0: it cannot run (why_not says why)
  int64_t slice = 0;   // elements per block
  size_t smem = 0;
  std::string why_not;
};

// The smallest cluster (<= 8, the portable maximum; or exactly `want` when it is not 0) whose slices let two
// blocks share an SM (the register budget allows two 512-thread blocks), else the smallest whose slices fit
// one block per SM. `caches`: row caches per block (cluster_persistent keeps two, this row's and the next's,
// and runs one block per SM).
inline ClusterPlan cluster_plan(const KdLossArgs& a, const dev::Device& d, int caches, bool two_per_sm, int want) {
  ClusterPlan pl;
  if (a.topk_index) {
    pl.why_not = "sparse teacher";
    return pl;
  }
  if (d.sm_major < 9) {
    pl.why_not = "thread-block clusters need sm_90";
    return pl;
  }
  if (a.vocab > kMaxVocab) {
    pl.why_not = "vocab above the kernels' 32-bit offsets";
    return pl;
  }
  const int64_t V = a.vocab;
  const int64_t pair_bytes = element_bytes(a.student_dtype) + element_bytes(a.teacher_dtype);
  // Shared-memory limits per block to try in order: two blocks per SM, then one.
  const int64_t one_per_sm = d.smem_optin;
  const int64_t first = two_per_sm ? d.smem_per_sm / 2 - 1024 : one_per_sm;
  for (const int64_t limit : {first, one_per_sm}) {
    for (int cl : {1, 2, 4, 8}) {
      if (want != 0 && cl != want) continue;
      const int64_t slice = (V + cl - 1) / cl;
      const int64_t smem = static_cast<int64_t>(kClusterHeader) + caches * cluster_slice_packs(slice) * kPack * pair_bytes;
      if (smem <= limit) {
        pl.cluster = cl, pl.slice = slice, pl.smem = static_cast<size_t>(smem);
        return pl;
      }
    }
  }
  pl.why_not = "a row of " + std::to_string(V) + " elements does not fit the shared memory of a cluster of " +
               std::to_string(want ? want : 8) + " blocks";
  return pl;
}

}  // namespace
}  // namespace distill::kernels
