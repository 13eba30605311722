// Fused distillation loss on CUDA: forward KL / reverse KL / generalized JSD between the tempered teacher and
// student softmaxes, the T = 1 cross-entropy on the hard labels, the alpha mix and all scalings, and the
// gradient w.r.t. the student logits, in one kernel launch: the block that finishes last sums the per-row
// values in a fixed order (no float atomics: bit-identical results run to run).
//
// Fuses: upcast (bf16/f16 -> fp32), 1/T, both online softmaxes (Milakov & Gimelshein 2018), the divergence,
// the cross-entropy, the gradient (written in the student's dtype in the same launch). Never materialises:
// P, Q, log P, log Q, M, or any fp32 copy of the logits. Global memory traffic per element: read s, read t,
// write ds, plus whatever part of the row the second sweep re-reads (none in cluster_per_row).
//
// Everything runs in base 2: with k = log2(e) / T, exponents are (x - rowmax) * k, so ex2.approx does the
// exp without a rescaling multiply, and the (x - rowmax) difference cancels large common offsets exactly.
// Raw-pointer CUDA: needs only the CUDA runtime (and cuda_bf16.h / cuda_fp16.h, header-only).
//
// The CUDA emulator of the tests (tests/cuda_emulator) compiles this file as C++ with DISTILL_CUDA_EMULATOR
// defined, so that CI runs the kernels' logic without a GPU. It needs five hooks here, each marked with that
// macro: ex2/lg2, dynamic shared memory, 16-byte global accesses (it checks their alignment), cp.async (its
// copies land only when the issuing thread waits) and the plain launch. The `__CUDA_ARCH__ >= 800` fallbacks
// are what it runs in place of the packed-conversion and packed-max asm.
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>

#include "distill/kernels/kd_loss_kernels.h"

namespace cg = cooperative_groups;

namespace distill::kernels {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLowest = -3.402823466e38f;  // running-max sentinel: finite, so (-inf) - kLowest = -inf, never NaN
constexpr float kNegInf = -__builtin_huge_valf();

constexpr int kMaxThreads = 512;       // block size of all row kernels
constexpr int kPack = 8;               // elements per vector pack: 16 bytes of 16-bit logits, 32 bytes of fp32
constexpr int64_t kWarpRowsMaxV = 2048;  // V above this: a block (or a cluster) per row
constexpr int64_t kMaxVocab = (int64_t{1} << 31) - 64;  // offsets within a row are 32-bit

// What the per-element code computes; the kernels are instantiated per kind.
enum Kind : int { kForward = 0, kReverse = 1, kJsd = 2, kSparse = 3 };
// How the hot loops get the T = 1 softmax of the cross-entropy; the kernels are instantiated per mode so that
// the per-element code has no branch on it. kCeNone: no separate sums (no labels, or T = 1, where the T = 1
// softmax is Q itself). kCeSquare: T = 2, where 2^((s - m) log2 e) = (2^((s - m) k))^2, a multiply instead of
// a second exp per element per sweep (the special-function unit, 16 results per clock per SM on Hopper, is
// the kernels' tightest arithmetic limit). kCeExp: any other T, one more exp per element per sweep.
enum CeMode : int { kCeNone = 0, kCeSquare = 1, kCeExp = 2 };

// Everything a launch needs, by value in kernel parameter space.
struct Params {
  int64_t rows, vocab;
  const void* student;
  int64_t s_stride;
  const void* teacher;
  int64_t t_stride;
  const int64_t* topk_index;
  const void* topk_logits;
  int64_t topk;
  const float* teacher_lse;
  bool tail;
  const int64_t* labels;
  int64_t ignore_index;
  void* grad;
  float* row_kd;  // never null: the caller's or the workspace
  float* row_ce;
  float* sums;          // [3]: loss, kd, ce
  unsigned* arrivals;   // blocks done so far; 0 at launch, and the last block leaves it 0
  float alpha, inv_normalizer;
  float k;            // log2(e) / T
  float ck;           // alpha * inv_normalizer * (T^2 or 1) / T
  float cc;           // (1 - alpha) * inv_normalizer, 0 without labels
  float kd_scale;     // T^2 or 1
  float beta, log2_beta, log2_1m_beta;
  bool async_cache;  // block_per_row: fill the shared-memory row cache with cp.async (Plan::async_cache)
  int ce_mode;       // CeMode: kCeNone unless labels and T != 1 (then the cross-entropy has its own sums)
};

// ------------------------------------------------------------------------------------------------------------
// Device helpers

__device__ __forceinline__ float ex2(float x) {
#if defined(DISTILL_CUDA_EMULATOR)
  return emu::ex2_approx_ftz(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}
__device__ __forceinline__ float lg2(float x) {
#if defined(DISTILL_CUDA_EMULATOR)
  return emu::lg2_approx_ftz(x);
#else
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
#endif
}

// The block's dynamic shared memory (16-byte aligned).
__device__ __forceinline__ unsigned char* dynamic_smem() {
#if defined(DISTILL_CUDA_EMULATOR)
  return emu::dynamic_smem();
#else
  extern __shared__ __align__(16) unsigned char smem[];
  return smem;
#endif
}

// 16-byte global loads and stores (p 16-byte aligned).
__device__ __forceinline__ uint4 load16(const void* p) {
#if defined(DISTILL_CUDA_EMULATOR)
  emu::check_aligned16(p, "load");
#endif
  return *static_cast<const uint4*>(p);
}
__device__ __forceinline__ void store16(void* p, uint4 v) {
#if defined(DISTILL_CUDA_EMULATOR)
  emu::check_aligned16(p, "store");
#endif
  *static_cast<uint4*>(p) = v;
}

// Evict-first (".cs", cache streaming) accesses, for data a row touches for the last time: the gradient
// sweep's global reads and its gradient stores (Plan::stream_hints). In L2 those lines give way first, before
// the packs sweep 1 read that the gradient sweep has yet to read again. Same values; plain in the emulator.
__device__ __forceinline__ uint4 load16_last(const void* p) {
#if defined(DISTILL_CUDA_EMULATOR)
  return load16(p);
#else
  return __ldcs(static_cast<const uint4*>(p));
#endif
}
__device__ __forceinline__ void store16_last(void* p, uint4 v) {
#if defined(DISTILL_CUDA_EMULATOR)
  store16(p, v);
#else
  __stcs(static_cast<uint4*>(p), v);
#endif
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }

// Bit patterns of one logit (no type punning through pointers: everything goes through these).
__device__ __forceinline__ uint32_t bits_of(float x) { return __float_as_uint(x); }
__device__ __forceinline__ uint32_t bits_of(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
__device__ __forceinline__ uint32_t bits_of(__half x) { return __half_as_ushort(x); }

template <class T>
__device__ __forceinline__ float bits_to_f32(uint32_t b);
template <>
__device__ __forceinline__ float bits_to_f32<float>(uint32_t b) { return __uint_as_float(b); }
template <>
__device__ __forceinline__ float bits_to_f32<__nv_bfloat16>(uint32_t b) { return __uint_as_float(b << 16); }
template <>
__device__ __forceinline__ float bits_to_f32<__half>(uint32_t b) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(b)));
}

template <class T>
__device__ __forceinline__ T from_bits(uint32_t b);
template <>
__device__ __forceinline__ float from_bits<float>(uint32_t b) { return __uint_as_float(b); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_bits<__nv_bfloat16>(uint32_t b) {
  return __ushort_as_bfloat16(static_cast<unsigned short>(b));
}
template <>
__device__ __forceinline__ __half from_bits<__half>(uint32_t b) {
  return __ushort_as_half(static_cast<unsigned short>(b));
}

// Eight consecutive logits in their own dtype, as 32-bit words: 16 bytes (16-bit dtypes, two per word) or
// 32 bytes (fp32).
template <class T>
struct alignas(16) Pack {
  static constexpr int kWords = static_cast<int>(sizeof(T)) * kPack / 4;
  static constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  uint32_t u[kWords];
  __device__ __forceinline__ uint32_t get(int j) const {
    return kPerWord == 1 ? u[j] : (j & 1) ? u[j >> 1] >> 16 : u[j >> 1] & 0xffffu;
  }
  __device__ __forceinline__ void set(int j, uint32_t b) {
    if (kPerWord == 1) {
      u[j] = b;
    } else if (j & 1) {
      u[j >> 1] |= b << 16;
    } else {
      u[j >> 1] = b & 0xffffu;
    }
  }
};

// kLast: evict-first 16-byte loads (load16_last).
template <class T, bool kLast = false>
__device__ __forceinline__ Pack<T> load_pack(const T* p, bool vec) {
  Pack<T> r;
  if (vec) {
#pragma unroll
    for (int j = 0; j < Pack<T>::kWords / 4; ++j) {
      const uint4* at = reinterpret_cast<const uint4*>(p) + j;
      const uint4 v = kLast ? load16_last(at) : load16(at);
      r.u[4 * j] = v.x, r.u[4 * j + 1] = v.y, r.u[4 * j + 2] = v.z, r.u[4 * j + 3] = v.w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kPack; ++j) r.set(j, bits_of(p[j]));
  }
  return r;
}

// Pack q of a shared-memory row cache, read 16 bytes at a time (member by member, the compiler reads it 4
// bytes at a time).
template <class T>
__device__ __forceinline__ Pack<T> cached_pack(const Pack<T>* cache, int q) {
  return load_pack(reinterpret_cast<const T*>(cache + q), true);
}

template <class T>
__device__ __forceinline__ void unpack(const Pack<T>& r, float (&x)[kPack]) {
#pragma unroll
  for (int j = 0; j < kPack; ++j) x[j] = bits_to_f32<T>(r.get(j));
}

// Eight fp32 values rounded (to nearest even) into a pack of T; 16-bit types two at a time, one cvt each.
template <class T>
__device__ __forceinline__ Pack<T> pack_of(const float (&g)[kPack]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  constexpr bool kPaired = Pack<T>::kPerWord == 2;
#else
  constexpr bool kPaired = false;
#endif
  Pack<T> r;
  if constexpr (kPaired) {
#pragma unroll
    for (int j = 0; j < kPack / 2; ++j) {
      uint32_t w;  // element 2j in the low half, as Pack::set puts it
      if constexpr (std::is_same_v<T, __nv_bfloat16>) {
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(g[2 * j + 1]), "f"(g[2 * j]));
      } else {
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(w) : "f"(g[2 * j + 1]), "f"(g[2 * j]));
      }
      r.u[j] = w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kPack; ++j) r.set(j, bits_of(from_f32<T>(g[j])));
  }
  return r;
}

// kLast: evict-first 16-byte stores (store16_last).
template <class T, bool kLast = false>
__device__ __forceinline__ void store_pack(T* p, bool vec, const float (&g)[kPack]) {
  const Pack<T> r = pack_of<T>(g);
  if (vec) {
#pragma unroll
    for (int j = 0; j < Pack<T>::kWords / 4; ++j) {
      uint4* at = reinterpret_cast<uint4*>(p) + j;
      const uint4 v = make_uint4(r.u[4 * j], r.u[4 * j + 1], r.u[4 * j + 2], r.u[4 * j + 3]);
      if (kLast) {
        store16_last(at, v);
      } else {
        store16(at, v);
      }
    }
  } else {
#pragma unroll
    for (int j = 0; j < kPack; ++j) p[j] = from_bits<T>(r.get(j));
  }
}

// Pack q of a row: with a 32-bit q, the address is one wide multiply-add (q * 8 in 32 bits, then widened,
// costs five more instructions per pointer and pack).
template <class T>
__device__ __forceinline__ T* at_pack(T* base, int q) {
  return base + static_cast<int64_t>(q) * kPack;
}

__device__ __forceinline__ bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Asynchronous global -> shared copies (cp.async, sm_80 and later): 16 bytes each, holding no registers while
// in flight, so a block can have its whole shared-memory slice of a row in flight at once. (Loading through
// registers, a 512-thread block has at most 16-32 KB in flight, too little to cover the memory latency at
// full bandwidth while the SM's other block computes.) Completion: cp_async_wait_all() in the issuing thread;
// other threads see the data after a barrier that follows it.
__device__ __forceinline__ void cp_async16(void* dst, const void* src) {
#if defined(DISTILL_CUDA_EMULATOR)
  emu::cp_async16(dst, src);  // lands at this thread's cp_async_wait_all
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(d), "l"(src) : "memory");
#else
  store16(dst, load16(src));
#endif
}
__device__ __forceinline__ void cp_async_wait_all() {
#if defined(DISTILL_CUDA_EMULATOR)
  emu::cp_async_wait_all();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_all;" ::: "memory");
#endif
}

// cp.async groups: commit closes the copies this thread issued since the last commit into a group;
// wait_group<N> returns once at most the N newest groups are still in flight.
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

// Packs [first, n) step `step` of a row into shared memory: asynchronously where the row is 16-byte aligned
// (`vec`), else through registers (then complete on return).
template <class T>
__device__ __forceinline__ void cache_packs_async(Pack<T>* dst, const T* src, int64_t n, bool vec, int64_t first,
                                                  int64_t step) {
  for (int64_t q = first; q < n; q += step) {
    if (vec) {
#pragma unroll
      for (int j = 0; j < Pack<T>::kWords / 4; ++j)
        cp_async16(&dst[q].u[4 * j], reinterpret_cast<const unsigned char*>(src + q * kPack) + 16 * j);
    } else {
      dst[q] = load_pack(src + q * kPack, false);
    }
  }
}

// Row layout for packed access: elements [0, head) and [head + 8 * packs, V) one by one, the packs in between
// with 16-byte loads of the student row (and of the teacher / gradient rows where they are aligned too).
struct Layout {
  int64_t head, packs, tail_begin;
  bool t_vec, g_vec;
};

template <class TS, class TT>
__device__ __forceinline__ Layout layout(const TS* s, const TT* t, const TS* g, int64_t n) {
  Layout l;
  const int64_t mis = static_cast<int64_t>((16u - (reinterpret_cast<uintptr_t>(s) & 15u)) & 15u) / sizeof(TS);
  l.head = mis < n ? mis : n;
  l.packs = (n - l.head) / kPack;
  l.tail_begin = l.head + l.packs * kPack;
  l.t_vec = t && aligned16(t + l.head);
  l.g_vec = g && aligned16(g + l.head);
  return l;
}

// Per-thread online statistics; see kd_loss_cpu_rows.inc for the algebra. mt / ms: running maxima of the raw
// logits; sa, sb: sums of 2^((x - m) k); sc: sum of 2^((s - ms) log2 e) (T = 1, when T != 1); w: forward
// sum 2^xa (xa - xb) / reverse sum 2^xb (xb - xa) / sparse tail: student mass outside the top-k.
struct Stats {
  float mt, ms, sa, sb, sc, w;
};

constexpr size_t kScratchBytes = 32 * sizeof(Stats);  // block reductions: one Stats per warp
constexpr size_t kClusterHeader = 1024;                 // scratch + exchange slots, keeps the packs 16-byte aligned
constexpr size_t kSlotBytes = 32;                       // one row's exchange: Stats, then the two JSD sums
static_assert(sizeof(Stats) + 2 * sizeof(float) <= kSlotBytes &&
                  kScratchBytes + 2 * kSlotBytes + sizeof(Stats) <= kClusterHeader,
              "cluster header: scratch, two exchange slots (Stats + JSD sums), merged statistics");
static_assert(2 * 32 * sizeof(double) + sizeof(unsigned) <= kScratchBytes, "sum_rows_if_last scratch");

__device__ __forceinline__ Stats stats_identity() { return Stats{kLowest, kLowest, 0.f, 0.f, 0.f, 0.f}; }

// Merge of two partial statistics. The result does not depend on the order of a and b only if the caller
// always passes them in the same order; team reductions pass (lower lane, higher lane).
template <Kind K>
__device__ __forceinline__ Stats stats_merge(const Stats& a, const Stats& b, float k, bool sep_ce) {
  Stats r;
  r.mt = fmaxf(a.mt, b.mt);
  r.ms = fmaxf(a.ms, b.ms);
  const float da_a = (a.mt - r.mt) * k, da_b = (b.mt - r.mt) * k;
  const float db_a = (a.ms - r.ms) * k, db_b = (b.ms - r.ms) * k;
  const float fb_a = ex2(db_a), fb_b = ex2(db_b);
  r.sb = a.sb * fb_a + b.sb * fb_b;
  r.sa = 0.f;
  r.w = 0.f;
  if (K != kSparse) {
    const float fa_a = ex2(da_a), fa_b = ex2(da_b);
    r.sa = a.sa * fa_a + b.sa * fa_b;
    if (K == kForward)
      r.w = fa_a * (a.w + (a.sa > 0.f ? a.sa * (da_a - db_a) : 0.f)) +
            fa_b * (b.w + (b.sa > 0.f ? b.sa * (da_b - db_b) : 0.f));
    if (K == kReverse)
      r.w = fb_a * (a.w + (a.sb > 0.f ? a.sb * (db_a - da_a) : 0.f)) +
            fb_b * (b.w + (b.sb > 0.f ? b.sb * (db_b - da_b) : 0.f));
  } else {
    r.w = a.w * fb_a + b.w * fb_b;
  }
  r.sc = sep_ce ? a.sc * ex2((a.ms - r.ms) * kLog2e) + b.sc * ex2((b.ms - r.ms) * kLog2e) : 0.f;
  return r;
}

// The terms of n elements against the maxima mt, ms: the sums of 2^((t - mt) k), 2^((s - ms) k), of the
// T = 1 softmax's 2^((s - ms) log2 e) (kCeExp) or its square-root form (kCeSquare), and of w's summand.
template <Kind K, int n, int M>
__device__ __forceinline__ void stats_terms(const float* t, const float* s, float mt, float ms, float k,
                                            uint32_t outside, float& la, float& lb, float& lc, float& lw) {
#pragma unroll
  for (int j = 0; j < n; ++j) {
    const float xb = (s[j] - ms) * k;
    const float eb = ex2(xb);
    lb += eb;
    if (M == kCeSquare) lc = fmaf(eb, eb, lc);
    if (M == kCeExp) lc += ex2((s[j] - ms) * kLog2e);
    if (K != kSparse) {
      const float xa = (t[j] - mt) * k;
      const float ea = ex2(xa);
      la += ea;
      // 0 * log 0 = 0 where the weighting distribution has no mass: there the difference is -inf (or NaN,
      // -inf - -inf), which fmaxf turns into kLowest, and 0 * kLowest = 0. Everywhere else the difference is
      // above kLowest, so this equals `t > -inf ? xa - xb : 0` in one instruction instead of two.
      if (K == kForward) lw = fmaf(ea, fmaxf(xa - xb, kLowest), lw);
      if (K == kReverse) lw = fmaf(eb, fmaxf(xb - xa, kLowest), lw);
    } else {
      if ((outside >> j) & 1u) lw += eb;
    }
  }
}

// Adds n elements to a thread's statistics: one rescale per call (to the new maxima), then n exps per row.
// `outside` has bit j set when element j is outside the sparse top-k (tail mode).
template <Kind K, int n, int M>
__device__ __forceinline__ void stats_add(Stats& st, const float* t, const float* s, float k, uint32_t outside) {
  float nt = st.mt, ns = st.ms;
#pragma unroll
  for (int j = 0; j < n; ++j) {
    if (K != kSparse) nt = fmaxf(nt, t[j]);
    ns = fmaxf(ns, s[j]);
  }
  if (nt > st.mt || ns > st.ms) {
    const float da = (st.mt - nt) * k, db = (st.ms - ns) * k;
    const float fb = ex2(db);
    if (K != kSparse) {
      const float fa = ex2(da);
      if (K == kForward) st.w = fa * (st.w + (st.sa > 0.f ? st.sa * (da - db) : 0.f));
      if (K == kReverse) st.w = fb * (st.w + (st.sb > 0.f ? st.sb * (db - da) : 0.f));
      st.sa *= fa;
    } else {
      st.w *= fb;
    }
    st.sb *= fb;
    if (M != kCeNone) st.sc *= ex2((st.ms - ns) * kLog2e);
    st.mt = nt;
    st.ms = ns;
  }
  stats_terms<K, n, M>(t, s, st.mt, st.ms, k, outside, st.sa, st.sb, st.sc, st.w);
}

// Packed maximum of two words of two 16-bit logits each, like fmaxf per half (a NaN half gives the other).
template <class T>
__device__ __forceinline__ uint32_t max2_bits(uint32_t a, uint32_t b) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("max.bf16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  } else {
    asm("max.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  }
  return r;
#else
  uint32_t r = 0;
  for (int h = 0; h < 32; h += 16) {
    const uint32_t x = (a >> h) & 0xffffu, y = (b >> h) & 0xffffu;
    const float fx = bits_to_f32<T>(x), fy = bits_to_f32<T>(y);
    r |= (fy > fx || fx != fx ? y : x) << h;
  }
  return r;
#endif
}

// Whether no element of a 16-bit pack is above m, a value of T or kLowest (which rounds to -inf): three
// packed maxima over the raw words, a fourth with m in both halves, and one compare, instead of eight fp32
// maxima. NaN elements are ignored, as fmaxf ignores them. A false answer is always safe (the caller then
// looks for the maxima in fp32), which is all that -0 against +0 can cause.
template <class T>
__device__ __forceinline__ bool pack_at_most(const Pack<T>& p, float m) {
  const uint32_t x = max2_bits<T>(max2_bits<T>(p.u[0], p.u[1]), max2_bits<T>(p.u[2], p.u[3]));
  uint32_t both;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    asm("cvt.rn.bf16x2.f32 %0, %1, %1;" : "=r"(both) : "f"(m));
  } else {
    asm("cvt.rn.f16x2.f32 %0, %1, %1;" : "=r"(both) : "f"(m));
  }
#else
  const uint32_t one = bits_of(from_f32<T>(m));
  both = one | one << 16;
#endif
  return max2_bits<T>(x, both) == both;
}

// Adds one pack (eight elements) to a thread's statistics. With 16-bit logits, a pack that raises neither
// running maximum (all but a few per thread and row) is summed without the fp32 maxima and the rescale test.
template <Kind K, int M, class TS, class TT>
__device__ __forceinline__ void stats_add_pack(Stats& st, const Pack<TS>& sp, const Pack<TT>& tp, float k,
                                               uint32_t outside) {
  float t[kPack], s[kPack];
  unpack(sp, s);
  if (K != kSparse) unpack(tp, t);
  constexpr bool kPacked = sizeof(TS) == 2 && (K == kSparse || sizeof(TT) == 2);
  if constexpr (kPacked) {
    if (pack_at_most(sp, st.ms) && (K == kSparse || pack_at_most(tp, st.mt))) {
      stats_terms<K, kPack, M>(t, s, st.mt, st.ms, k, outside, st.sa, st.sb, st.sc, st.w);
      return;
    }
  }
  stats_add<K, kPack, M>(st, t, s, k, outside);
}

// Constants of one row once its statistics are known.
struct RowConsts {
  float k, mt, ms, l2sa, l2sb, l2sc;  // log2 of the sums
  float ck, cc, d;                    // d: reverse D / jsd KL(Q||M), in nats
  float l2beta, l2_1mbeta;
  int64_t y;     // label, or -1
  bool kd_grad;  // the row has a KD gradient (teacher mass, alpha > 0)
  // The gradient's coefficients folded into constants (fold_grad_consts, once ck and cc are final), so that
  // each element costs fewer instructions:
  float lp_off;   // forward: l2sa - log2(ck), so that ck P = 2^((t - mt) k - lp_off) (+inf offset when ck = 0)
  float cq;       // coefficient of Q: ck (forward, sparse) plus cc where the cross-entropy's softmax is Q itself
  float ce_base;  // kCeSquare: sqrt(cc) 2^(l2sb - l2sc / 2), so that cc times the T = 1 softmax is (q ce_base)^2
  float l2sc_cc;  // kCeExp: l2sc - log2(cc), so that cc times the T = 1 softmax is 2^((s - ms) log2 e - l2sc_cc)
};

// Needs ck >= 0 and cc >= 0 (alpha in [0, 1] and inv_normalizer >= 0: kd_loss_check_args).
template <Kind K, int M>
__device__ __forceinline__ void fold_grad_consts(RowConsts& c) {
  if (!c.kd_grad) c.ck = 0.f;  // forward / sparse: ck (Q - P) is then 0 without a select
  c.lp_off = c.l2sa - log2f(c.ck);  // log2f(0) = -inf: ck P is then exactly 0
  c.cq = (K == kForward || K == kSparse) ? c.ck : 0.f;
  if (M == kCeNone) c.cq += c.cc;
  c.ce_base = M == kCeSquare ? sqrtf(c.cc) * ex2(c.l2sb - 0.5f * c.l2sc) : 0.f;
  c.l2sc_cc = M == kCeExp ? c.l2sc - log2f(c.cc) : 0.f;
}

// log2(2^x + 2^y), -inf when both are -inf.
__device__ __forceinline__ float logaddexp2(float x, float y) {
  const float hi = fmaxf(x, y);
  return hi + lg2(1.f + ex2(-fabsf(x - y)));
}

// d loss / d s at one element (before the dtype conversion), except the label's -cc, which the caller
// subtracts at the label's element. Needs fold_grad_consts. Forward KL with T = 2 and labels costs two
// exps and seven other floating-point instructions per element.
template <Kind K, int M>
__device__ __forceinline__ float grad_elem(float t, float s, const RowConsts& c) {
  const float lq = (s - c.ms) * c.k - c.l2sb;
  const float q = ex2(lq);
  float g = 0.f;
  if (K == kForward) {
    g = fmaf(c.cq, q, -ex2((t - c.mt) * c.k - c.lp_off));  // (ck + cc?) Q - ck P
  } else if (K == kSparse) {
    g = c.cq * q;
  } else {
    const float lp = (t - c.mt) * c.k - c.l2sa;
    const float lr = K == kReverse ? lp : logaddexp2(lp + c.l2beta, lq + c.l2_1mbeta);  // log2 P or log2 M
    g = s > kNegInf ? c.ck * q * ((lq - lr) * kLn2 - c.d) : 0.f;
    // No KD gradient (no teacher mass, alpha = 0): forward and sparse rows have ck = 0 then; reverse and JSD
    // need the select, since their log-ratio can be infinite.
    if (!c.kd_grad) g = 0.f;
    if (M == kCeNone) g = fmaf(c.cq, q, g);
  }
  // The cross-entropy term is added unconditionally: cc is 0 without labels or with alpha = 1, and the
  // T = 1 softmax is finite.
  if (M == kCeSquare) {
    const float x = q * c.ce_base;
    g = fmaf(x, x, g);
  }
  if (M == kCeExp) g += ex2((s - c.ms) * kLog2e - c.l2sc_cc);
  return g;
}

// JSD sweep 2 terms of one element: P (log P - log M) and Q (log Q - log M), in bits.
__device__ __forceinline__ void jsd_terms(float t, float s, const RowConsts& c, float& pm, float& qm) {
  const float lp = (t - c.mt) * c.k - c.l2sa, lq = (s - c.ms) * c.k - c.l2sb;
  const float lm = logaddexp2(lp + c.l2beta, lq + c.l2_1mbeta);
  pm += t > kNegInf ? ex2(lp) * (lp - lm) : 0.f;
  qm += s > kNegInf ? ex2(lq) * (lq - lm) : 0.f;
}

// ------------------------------------------------------------------------------------------------------------
// Teams: the threads that share a row. A sub-warp team (2^k <= 32 lanes, several rows per warp) reduces with
// shuffles; a block team adds a pass through shared memory. Every reduction is a fixed pattern, and every
// thread of the team ends with the same bits.

struct Team {
  int size, rank;
  unsigned mask;  // the team's lanes in the warp (sub-warp teams)
  bool block;
  float* scratch;  // block teams: 32 * sizeof(Stats) bytes of shared memory
};

__device__ __forceinline__ void team_sync(const Team& tm) {
  if (tm.block) {
    __syncthreads();
  } else {
    __syncwarp(tm.mask);
  }
}

__device__ __forceinline__ float shfl_xor(const Team& tm, float v, int off) {
  return __shfl_xor_sync(tm.block ? 0xffffffffu : tm.mask, v, off, 32);
}

__device__ __forceinline__ Stats shfl_xor(const Team& tm, const Stats& s, int off) {
  return Stats{shfl_xor(tm, s.mt, off), shfl_xor(tm, s.ms, off), shfl_xor(tm, s.sa, off),
               shfl_xor(tm, s.sb, off), shfl_xor(tm, s.sc, off), shfl_xor(tm, s.w, off)};
}

template <Kind K>
__device__ Stats team_merge(const Team& tm, Stats st, float k, bool sep_ce) {
  const int lane = threadIdx.x & 31;
  const int width = tm.block ? 32 : tm.size;
  for (int off = width / 2; off > 0; off >>= 1) {
    const Stats other = shfl_xor(tm, st, off);
    st = (lane & off) ? stats_merge<K>(other, st, k, sep_ce) : stats_merge<K>(st, other, k, sep_ce);
  }
  if (!tm.block) return st;
  // Across warps: warp 0 merges the warps' results with the same butterfly (blockDim.x / 32 is a power of
  // two) and publishes the result. (Every thread merging all 16 in turn cost a 512-thread block ~500
  // instructions per thread: doubling the cluster kernel's instruction count, whose blocks see 31 elements
  // per thread.)
  Stats* part = reinterpret_cast<Stats*>(tm.scratch);
  const int warps = blockDim.x / 32;
  if (lane == 0) part[threadIdx.x / 32] = st;
  __syncthreads();
  if (threadIdx.x < 32) {
    st = part[lane & (warps - 1)];
    for (int off = warps / 2; off > 0; off >>= 1) {
      const Stats other = shfl_xor(tm, st, off);
      st = (lane & off) ? stats_merge<K>(other, st, k, sep_ce) : stats_merge<K>(st, other, k, sep_ce);
    }
    __syncwarp();
    if (lane == 0) part[0] = st;
  }
  __syncthreads();
  st = part[0];
  __syncthreads();
  return st;
}

// op: 0 sum, 1 max.
template <int op>
__device__ float team_reduce(const Team& tm, float v) {
  const int width = tm.block ? 32 : tm.size;
  for (int off = width / 2; off > 0; off >>= 1) {
    const float o = shfl_xor(tm, v, off);
    v = op == 0 ? v + o : fmaxf(v, o);  // a + b == b + a exactly: every lane gets the same bits
  }
  if (!tm.block) return v;
  const int warps = blockDim.x / 32;
  if ((threadIdx.x & 31) == 0) tm.scratch[threadIdx.x / 32] = v;
  __syncthreads();
  v = tm.scratch[0];
  for (int w = 1; w < warps; ++w) v = op == 0 ? v + tm.scratch[w] : fmaxf(v, tm.scratch[w]);
  __syncthreads();
  return v;
}

// ------------------------------------------------------------------------------------------------------------
// Kernels

// Shared per-row finishing steps for the team and cluster kernels: the row constants from merged statistics.
// Returns false when the student row is all -inf (the row counts nowhere).
template <Kind K>
__device__ __forceinline__ bool row_consts(const Params& p, const Stats& st, int64_t y, bool has_teacher_mass,
                                           RowConsts& c) {
  c.k = p.k;
  c.mt = st.mt;
  c.ms = st.ms;
  c.l2sb = log2f(st.sb);
  c.l2sa = st.sa > 0.f ? log2f(st.sa) : 0.f;
  c.l2sc = p.ce_mode != kCeNone ? log2f(st.sc) : c.l2sb;
  c.ck = p.ck;
  c.cc = p.cc;
  c.d = 0.f;
  c.l2beta = p.log2_beta;
  c.l2_1mbeta = p.log2_1m_beta;
  c.y = y;
  c.kd_grad = K != kSparse && has_teacher_mass;  // sparse rows: set once their top-k terms are known
  return st.sb > 0.f;
}

// Rows in teams of `team_size` threads (a power of two <= 32, or the whole block). kLast: the gradient sweep's
// global reads and gradient stores are evict-first (Plan::stream_hints). Dynamic shared memory:
// [32 Stats of reduction scratch][sparse tail: top-k bitmaps, one per team][block teams: the first
// `cache_packs` packs of the student and teacher rows, so that later sweeps read them from shared memory].
template <class TS, class TT, Kind K, int M, bool kLast>
__device__ __forceinline__ void rows_body(const Params& p, int team_size, int64_t cache_packs, int bitmap_words) {
  unsigned char* const smem = dynamic_smem();
  Team tm;
  tm.block = team_size > 32;
  tm.size = team_size;
  tm.rank = threadIdx.x % team_size;
  const int team = threadIdx.x / team_size;
  tm.mask = tm.block || team_size == 32 ? 0xffffffffu
                                        : ((1u << team_size) - 1u) << ((threadIdx.x & 31) / team_size * team_size);
  tm.scratch = reinterpret_cast<float*>(smem);
  uint32_t* bitmap = reinterpret_cast<uint32_t*>(smem + 32 * sizeof(Stats)) + team * bitmap_words;
  unsigned char* cache = smem + 32 * sizeof(Stats) + sizeof(uint32_t) * bitmap_words * (blockDim.x / team_size);
  Pack<TS>* s_cache = reinterpret_cast<Pack<TS>*>(cache);
  Pack<TT>* t_cache = reinterpret_cast<Pack<TT>*>(cache + cache_packs * sizeof(Pack<TS>));

  const int64_t i = static_cast<int64_t>(blockIdx.x) * (blockDim.x / team_size) + team;
  if (i >= p.rows) return;  // whole teams only; block teams have one row per block
  const int64_t V = p.vocab;
  const TS* srow = static_cast<const TS*>(p.student) + i * p.s_stride;
  const TT* trow = K != kSparse ? static_cast<const TT*>(p.teacher) + i * p.t_stride : nullptr;
  TS* grow = p.grad ? static_cast<TS*>(p.grad) + i * V : nullptr;
  const Layout L = layout(srow, trow, grow, V);
  const int64_t y = p.labels ? p.labels[i] : -1;
  const float zero[kPack] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};

  auto zero_row = [&]() {
    if (grow) {
      for (int64_t q = tm.rank; q < L.packs; q += tm.size) store_pack(grow + L.head + q * kPack, L.g_vec, zero);
      for (int64_t e = tm.rank; e < L.head; e += tm.size) grow[e] = from_f32<TS>(0.f);
      for (int64_t e = L.tail_begin + tm.rank; e < V; e += tm.size) grow[e] = from_f32<TS>(0.f);
    }
    if (tm.rank == 0) p.row_kd[i] = 0.f, p.row_ce[i] = 0.f;
  };
  if (p.labels && y == p.ignore_index) {
    zero_row();
    return;
  }

  // Sparse tail mode: the team's bitmap of top-k membership for this row.
  const int64_t* topk_index = K == kSparse ? p.topk_index + i * p.topk : nullptr;
  const bool tail = K == kSparse && p.tail;
  if (tail) {
    for (int w = tm.rank; w < bitmap_words; w += tm.size) bitmap[w] = 0u;
    team_sync(tm);
    for (int64_t q = tm.rank; q < p.topk; q += tm.size) {
      const int64_t v = topk_index[q];
      if (v >= 0 && v < V) atomicOr(&bitmap[v >> 5], 1u << (v & 31));
    }
    team_sync(tm);
  }
  auto outside = [&](int64_t e, int n) -> uint32_t {  // n bits starting at element e
    if (!tail) return 0u;
    uint32_t bits = 0u;
    for (int j = 0; j < n; ++j) bits |= (((bitmap[(e + j) >> 5] >> ((e + j) & 31)) & 1u) ^ 1u) << j;
    return bits;
  };

  // Sweep 1: statistics (and the shared-memory copy of the row's first packs). With `async_cache`, the cached
  // packs are requested first with cp.async, the uncached ones are read through registers while they fly,
  // and the cached ones are added from shared memory last (each thread reads back the packs it requested).
  // Pack indices are 32-bit (V < 2^31: make_plan) and the cached and uncached ranges are separate loops, so
  // that a pack costs one address computation per row and no predicated-off code of the other range.
  // (Loading two packs ahead, as the cluster kernel once did, costs this kernel spills at 64 registers.)
  const int packs = static_cast<int>(L.packs);
  const int cached = static_cast<int>(cache_packs < L.packs ? cache_packs : L.packs);
  const TS* s0 = srow + L.head;
  const TT* t0 = K != kSparse ? trow + L.head : nullptr;
  const bool async = p.async_cache && cached > 0;
  if (async) {
    cache_packs_async(s_cache, s0, cached, true, tm.rank, tm.size);
    if (K != kSparse) cache_packs_async(t_cache, t0, cached, L.t_vec, tm.rank, tm.size);
  }
  Stats st = stats_identity();
  // Instantiated for aligned teacher rows and for the others, like the gradient sweep below.
  auto stats_sweep = [&](auto aligned) {
    const bool t_vec = decltype(aligned)::value || L.t_vec;
    auto add = [&](int q, auto keep) {
      const Pack<TS> sp = load_pack(at_pack(s0, q), true);
      Pack<TT> tp;
      if (K != kSparse) tp = load_pack(at_pack(t0, q), t_vec);
      if (decltype(keep)::value) {
        s_cache[q] = sp;
        if (K != kSparse) t_cache[q] = tp;
      }
      stats_add_pack<K, M>(st, sp, tp, p.k, outside(L.head + q * kPack, kPack));
    };
    int q = tm.rank;
    if (async) {
      q += cached;
    } else {
      for (; q < cached; q += tm.size) add(q, std::true_type{});
    }
    for (; q < packs; q += tm.size) add(q, std::false_type{});
  };
  if (L.t_vec || K == kSparse) {
    stats_sweep(std::true_type{});
  } else {
    stats_sweep(std::false_type{});
  }
  if (async) {
    cp_async_wait_all();
    for (int q = tm.rank; q < cached; q += tm.size)
      stats_add_pack<K, M>(st, cached_pack(s_cache, q), K != kSparse ? cached_pack(t_cache, q) : Pack<TT>{}, p.k,
                           outside(L.head + q * kPack, kPack));
  }
  auto scalar_elems = [&](auto&& f) {
    for (int64_t e = tm.rank; e < L.head; e += tm.size) f(e);
    for (int64_t e = L.tail_begin + tm.rank; e < V; e += tm.size) f(e);
  };
  scalar_elems([&](int64_t e) {
    const float s = to_f32(srow[e]);
    const float t = K != kSparse ? to_f32(trow[e]) : 0.f;
    stats_add<K, 1, M>(st, &t, &s, p.k, outside(e, 1));
  });
  st = team_merge<K>(tm, st, p.k, M != kCeNone);

  RowConsts c;
  if (!row_consts<K>(p, st, y, st.sa > 0.f, c)) {  // the student row is all -inf
    team_sync(tm);
    zero_row();
    return;
  }
  const bool label_ok = y >= 0 && y < V;
  float ce = 0.f;
  if (p.labels) ce = label_ok ? c.l2sc * kLn2 - (to_f32(srow[y]) - c.ms) : __int_as_float(0x7fc00000);

  // Fetch pack q of the later sweeps: from shared memory when cached. The gradient sweep's loops know that at
  // compile time (`from_cache`); JSD's sweep 2 asks get_pack. `last`: the row's last read of the pack.
  auto fetch_pack = [&](int q, float (&t)[kPack], float (&s)[kPack], bool t_vec, auto from_cache, auto last) {
    constexpr bool kFinal = decltype(last)::value;
    if (decltype(from_cache)::value) {
      unpack(cached_pack(s_cache, q), s);
      if (K != kSparse) unpack(cached_pack(t_cache, q), t);
    } else {
      unpack(load_pack<TS, kFinal>(at_pack(s0, q), true), s);
      if (K != kSparse) unpack(load_pack<TT, kFinal>(at_pack(t0, q), t_vec), t);
    }
  };
  auto get_pack = [&](int q, float (&t)[kPack], float (&s)[kPack], bool t_vec) {
    if (q < cached) {
      fetch_pack(q, t, s, t_vec, std::true_type{}, std::false_type{});
    } else {
      fetch_pack(q, t, s, t_vec, std::false_type{}, std::false_type{});
    }
  };
  if (cache_packs > 0) __syncthreads();  // cached packs are read by other threads below

  float D = 0.f;
  float sparse_max = 0.f, sparse_l2s = 0.f;
  bool overwrite_topk = false;
  if (K == kForward) {
    if (st.sa > 0.f) D = (st.w / st.sa + c.l2sb - c.l2sa) * kLn2;
  } else if (K == kReverse) {
    if (st.sa > 0.f) D = (st.w / st.sb + c.l2sa - c.l2sb) * kLn2;
    c.d = D;
  } else if (K == kJsd) {
    if (st.sa > 0.f) {
      // Sweep 2: KL(P||M), KL(Q||M). Block teams walk backwards: the packs read last are still in L2.
      float pm = 0.f, qm = 0.f;
      for (int q = packs - 1 - tm.rank; q >= 0; q -= tm.size) {
        float t[kPack], s[kPack];
        get_pack(q, t, s, L.t_vec);
#pragma unroll
        for (int j = 0; j < kPack; ++j) jsd_terms(t[j], s[j], c, pm, qm);
      }
      scalar_elems([&](int64_t e) { jsd_terms(to_f32(trow[e]), to_f32(srow[e]), c, pm, qm); });
      pm = team_reduce<0>(tm, pm) * kLn2;
      qm = team_reduce<0>(tm, qm) * kLn2;
      D = p.beta * pm + (1.f - p.beta) * qm;
      c.d = qm;
      c.ck *= 1.f - p.beta;
    }
  } else {
    // Sparse teacher: K (index, logit) pairs, spread over the team.
    const TT* kl = static_cast<const TT*>(p.topk_logits) + i * p.topk;
    bool in_range = true;
    for (int64_t q = tm.rank; q < p.topk; q += tm.size) in_range = in_range && topk_index[q] >= 0 && topk_index[q] < V;
    in_range = team_reduce<1>(tm, in_range ? 0.f : 1.f) == 0.f;
    auto lq_at = [&](int64_t v) { return (to_f32(srow[v]) - c.ms) * c.k - c.l2sb; };
    if (!in_range) {
      D = __int_as_float(0x7fc00000);
    } else if (!p.tail) {
      float mk = kNegInf;
      for (int64_t q = tm.rank; q < p.topk; q += tm.size) mk = fmaxf(mk, to_f32(kl[q]));
      mk = team_reduce<1>(tm, mk);
      if (mk > kNegInf) {
        float sk = 0.f;
        for (int64_t q = tm.rank; q < p.topk; q += tm.size) sk += ex2((to_f32(kl[q]) - mk) * p.k);
        sk = team_reduce<0>(tm, sk);
        sparse_max = mk;
        sparse_l2s = log2f(sk);
        float d = 0.f;
        for (int64_t q = tm.rank; q < p.topk; q += tm.size) {
          const float lp = (to_f32(kl[q]) - mk) * p.k - sparse_l2s;
          if (lp > kNegInf) d += ex2(lp) * (lp - lq_at(topk_index[q]));
        }
        D = team_reduce<0>(tm, d) * kLn2;
        c.kd_grad = true;
        overwrite_topk = true;
      }
    } else {
      const float l2lse = p.teacher_lse[i] * kLog2e;
      float sum_p = 0.f, d = 0.f;
      for (int64_t q = tm.rank; q < p.topk; q += tm.size) {
        const float lp = to_f32(kl[q]) * p.k - l2lse;
        const float pk = ex2(lp);
        if (pk > 0.f) d += pk * (lp - lq_at(topk_index[q]));
        sum_p += pk;
      }
      sum_p = team_reduce<0>(tm, sum_p);
      D = team_reduce<0>(tm, d) * kLn2;
      float m_t = 1.f - sum_p;
      if (m_t < static_cast<float>(kd_loss_tail_mass_floor)) m_t = 0.f;
      const float m_s = st.w / st.sb;
      if (m_t > 0.f) D += m_t * (logf(m_t) - logf(m_s));
      c.ck *= 1.f - (m_s > 0.f ? m_t / m_s : 0.f);
      c.kd_grad = true;
      overwrite_topk = true;
    }
  }
  if (tm.rank == 0) {
    p.row_kd[i] = fmaxf(D, 0.f) * p.kd_scale;  // fmaxf(NaN, 0) would be 0: keep NaN
    if (D != D) p.row_kd[i] = D;
    p.row_ce[i] = ce;
  }
  if (!grow) return;
  if (p.ck == 0.f) c.kd_grad = false, overwrite_topk = false;  // alpha == 0

  // Gradient sweep. Walks forwards after JSD's backward sweep 2 and backwards otherwise, so that in a block
  // team the packs read first are the ones read most recently (still in L2): the uncached range first when
  // walking backwards, the cached one first when walking forwards.
  // The loop is instantiated twice: for rows whose teacher and gradient are 16-byte aligned with the student
  // (every row when V is a multiple of 8), and for the others, so that the aligned loop carries no
  // predicated-off scalar loads and stores of the other path.
  fold_grad_consts<K, M>(c);
  // The label's pack (-1: none, or the label is in the head or tail) and its place in the pack.
  const int label_pack = c.y >= L.head && c.y < L.tail_begin ? static_cast<int>((c.y - L.head) / kPack) : -1;
  const int label_j = static_cast<int>((c.y - L.head) & (kPack - 1));
  TS* g0 = grow + L.head;
  auto gradient_sweep = [&](auto aligned) {
    constexpr bool kAligned = decltype(aligned)::value;
    const bool t_vec = kAligned || L.t_vec, g_vec = kAligned || L.g_vec;
    auto one_pack = [&](int q, auto from_cache) {
      float t[kPack], s[kPack], g[kPack];
      fetch_pack(q, t, s, t_vec, from_cache, std::integral_constant<bool, kLast>{});
#pragma unroll
      for (int j = 0; j < kPack; ++j) g[j] = grad_elem<K, M>(t[j], s[j], c);
      if (q == label_pack) {  // one pack in V / 8
#pragma unroll
        for (int j = 0; j < kPack; ++j)
          if (j == label_j) g[j] -= c.cc;
      }
      store_pack<TS, kLast>(at_pack(g0, q), g_vec, g);
    };
    if (K != kJsd) {
      int q = packs - 1 - tm.rank;
      for (; q >= cached; q -= tm.size) one_pack(q, std::false_type{});
      for (; q >= 0; q -= tm.size) one_pack(q, std::true_type{});
    } else {
      int q = tm.rank;
      for (; q < cached; q += tm.size) one_pack(q, std::true_type{});
      for (; q < packs; q += tm.size) one_pack(q, std::false_type{});
    }
  };
  if (L.t_vec && L.g_vec) {
    gradient_sweep(std::true_type{});
  } else {
    gradient_sweep(std::false_type{});
  }
  scalar_elems([&](int64_t e) {
    const float t = K != kSparse ? to_f32(trow[e]) : 0.f;
    float g = grad_elem<K, M>(t, to_f32(srow[e]), c);
    if (e == c.y) g -= c.cc;
    grow[e] = from_f32<TS>(g);
  });
  if (K == kSparse && overwrite_topk) {
    // On the top-k the gradient is ck0 (Q - P) (ck0: before the tail factor), recomputed whole so that it is
    // rounded to the student's dtype once. The barrier orders it after the dense stores of other threads.
    team_sync(tm);
    const TT* kl = static_cast<const TT*>(p.topk_logits) + i * p.topk;
    const float l2lse = p.tail ? p.teacher_lse[i] * kLog2e : 0.f;
    for (int64_t q = tm.rank; q < p.topk; q += tm.size) {
      const int64_t v = topk_index[q];
      const float sv = to_f32(srow[v]);
      const float qv = ex2((sv - c.ms) * c.k - c.l2sb);
      const float tk = to_f32(kl[q]);
      const float lp = p.tail ? tk * p.k - l2lse : (tk - sparse_max) * p.k - sparse_l2s;
      float g = p.ck * (qv - ex2(lp));
      if (p.cc != 0.f) {
        g += p.cc * (M != kCeNone ? ex2((sv - c.ms) * kLog2e - c.l2sc) : qv);
        if (v == y) g -= p.cc;
      }
      grow[v] = from_f32<TS>(g);
    }
  }
}

// The step's sums in the same launch as the rows (the "one launch per step" of small, launch-bound shapes).
// Every block arrives once its threads are done (barrier, then thread 0 fences and counts itself in
// `arrivals`: the cooperative-groups grid-sync pattern); the block that arrives last reads every row value
// back from L2 and sums them in a fixed order (strided sums per thread in double, a butterfly within each
// warp, then the warps in order), so the result is bit-identical whichever block finished last. It re-arms
// the counter for the next launch on the stream. Uses the first 516 bytes of dynamic shared memory, which the
// caller no longer needs. Every thread of the block must call it.
__device__ void sum_rows_if_last(const Params& p, unsigned char* smem) {
  double* part = reinterpret_cast<double*>(smem);  // [kd of each warp][ce of each warp]
  unsigned* last = reinterpret_cast<unsigned*>(smem + 2 * 32 * sizeof(double));
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();  // this block's row values are visible device-wide before it counts as arrived
    *last = atomicAdd(p.arrivals, 1u) == gridDim.x - 1 ? 1u : 0u;
  }
  __syncthreads();
  if (*last == 0u) return;
  __threadfence();  // and every other block's, before they are read
  double kd = 0.0, ce = 0.0;
#pragma unroll 8
  for (int64_t i = threadIdx.x; i < p.rows; i += blockDim.x) {
    kd += __ldcg(p.row_kd + i);
    ce += __ldcg(p.row_ce + i);
  }
  for (int off = 16; off > 0; off >>= 1) {
    kd += __shfl_xor_sync(0xffffffffu, kd, off, 32);
    ce += __shfl_xor_sync(0xffffffffu, ce, off, 32);
  }
  const int warp = static_cast<int>(threadIdx.x) / 32, warps = static_cast<int>(blockDim.x) / 32;
  if (threadIdx.x % 32 == 0) part[warp] = kd, part[32 + warp] = ce;
  __syncthreads();
  if (threadIdx.x == 0) {
    double kd_sum = 0.0, ce_sum = 0.0;
    for (int w = 0; w < warps; ++w) kd_sum += part[w], ce_sum += part[32 + w];
    const double alpha = p.alpha, inv_n = p.inv_normalizer;
    p.sums[0] = static_cast<float>((alpha * kd_sum + (1.0 - alpha) * ce_sum) * inv_n);
    p.sums[1] = static_cast<float>(kd_sum * inv_n);
    p.sums[2] = static_cast<float>(ce_sum * inv_n);
    *p.arrivals = 0u;
  }
}

// Every kernel's entry: the row code instantiated for the launch's cross-entropy mode (the per-element code
// then has no branch on it), called as body(std::integral_constant<int, M>{}), then the last block's sums.
template <class Body>
__device__ __forceinline__ void kernel_main(const Params& p, Body body) {
  switch (p.ce_mode) {
    case kCeSquare: body(std::integral_constant<int, kCeSquare>{}); break;
    case kCeExp: body(std::integral_constant<int, kCeExp>{}); break;
    default: body(std::integral_constant<int, kCeNone>{}); break;
  }
  sum_rows_if_last(p, dynamic_smem());
}

template <class TS, class TT, Kind K, bool kLast>
__global__ void __launch_bounds__(kMaxThreads, 2) kd_rows_kernel(Params p, int team_size, int64_t cache_packs,
                                                              int bitmap_words) {
  kernel_main(p, [&](auto m) {
    rows_body<TS, TT, K, decltype(m)::value, kLast>(p, team_size, cache_packs, bitmap_words);
  });
}

// One row per thread-block cluster of `cluster` blocks (sm_90): block r owns the slice
// [r * slice, (r + 1) * slice) of the row and keeps all of its packs in shared memory, so the gradient sweep
// reads nothing from global memory. Statistics are merged across the cluster through distributed shared
// memory, in rank order (identical bits in every block). Dense teachers only.
// Dynamic shared memory: [kClusterHeader bytes: 32 Stats scratch, two exchange slots (Stats + JSD sums),
// the merged Stats]
// [slice packs of s][slice packs of t], and for cluster_persistent a second [s][t] pair (the next row's).

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

template <class TS, class TT, Kind K, int M>
__device__ __forceinline__ void cluster_body(const Params& p, int64_t slice) {
  unsigned char* const smem = dynamic_smem();
  cg::cluster_group cluster = cg::this_cluster();
  const int nblocks = static_cast<int>(cluster.num_blocks());
  const SliceCache<TS, TT> c = slice_cache<TS, TT>(smem, slice, 0);
  const Slice<TS, TT> r =
      slice_of<TS, TT>(p, static_cast<int64_t>(blockIdx.x) / nblocks, static_cast<int>(cluster.block_rank()), slice);
  cluster_fill(r, c.s, c.t);
  cp_async_wait_all();
  cluster_row<TS, TT, K, M>(p, r, c.s, c.t, smem, 0, RowEnd::cluster_barrier);
}

template <class TS, class TT, Kind K>
__global__ void __launch_bounds__(kMaxThreads, 2) kd_cluster_kernel(Params p, int64_t slice) {
  kernel_main(p, [&](auto m) { cluster_body<TS, TT, K, decltype(m)::value>(p, slice); });
}

// cluster_persistent: as many clusters as fit on the device at once, each looping over rows i, i + clusters,
// ... with two caches: while a row is computed from one, the next row's slice is in flight into the other
// (cp.async groups), so each SM overlaps its memory traffic with its arithmetic within one block, and the
// kernel pays the cluster launch and the final arrival once per cluster instead of once per row.
template <class TS, class TT, Kind K, int M>
__device__ __forceinline__ void cluster_persistent_body(const Params& p, int64_t slice) {
  unsigned char* const smem = dynamic_smem();
  cg::cluster_group cluster = cg::this_cluster();
  const int nblocks = static_cast<int>(cluster.num_blocks());
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t stride = gridDim.x / nblocks;
  int64_t i = static_cast<int64_t>(blockIdx.x) / nblocks;
  if (i < p.rows) {
    const SliceCache<TS, TT> first = slice_cache<TS, TT>(smem, slice, 0);
    cluster_fill(slice_of<TS, TT>(p, i, rank, slice), first.s, first.t);
  }
  cp_async_commit();
  for (int b = 0; i < p.rows; i += stride, b ^= 1) {
    // The other cache was last read by this block's previous row, which ended with a block barrier.
    if (i + stride < p.rows) {
      const SliceCache<TS, TT> next = slice_cache<TS, TT>(smem, slice, b ^ 1);
      cluster_fill(slice_of<TS, TT>(p, i + stride, rank, slice), next.s, next.t);
    }
    cp_async_commit();
    cp_async_wait_group<1>();  // this row's copies (the group before the one just committed) have landed
    const SliceCache<TS, TT> c = slice_cache<TS, TT>(smem, slice, b);
    cluster_row<TS, TT, K, M>(p, slice_of<TS, TT>(p, i, rank, slice), c.s, c.t, smem, b, RowEnd::block_barrier);
  }
  cluster.sync();  // no block may exit while another still reads its exchange slots
}

// One block per SM (the plan sizes its two caches for that), so up to 128 registers: at 64, the forward and
// reverse kernels spilled 36-48 bytes (ptxas, CUDA 13.0), which the one-shot cluster kernel does not.
template <class TS, class TT, Kind K>
__global__ void __launch_bounds__(kMaxThreads, 1) kd_cluster_persistent_kernel(Params p, int64_t slice) {
  kernel_main(p, [&](auto m) { cluster_persistent_body<TS, TT, K, decltype(m)::value>(p, slice); });
}

// ------------------------------------------------------------------------------------------------------------
// Launchers

void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("kd_loss_forward_cuda: ") + what + " failed: " + cudaGetErrorString(err));
}

void check_call(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("kd_loss_forward_cuda: ") + what + ": " + cudaGetErrorString(err));
}

int64_t element_bytes(ScalarType t) { return t == ScalarType::f32 ? 4 : 2; }

struct Device {
  int sm_major = 0, sms = 1, smem_optin = 48 << 10, smem_per_sm = 48 << 10;
};

// What each device keeps for the life of the process, under one lock: its properties (queried once; small
// shapes are launch-bound, so a launch makes no attribute queries), what each kernel was allowed and how many
// of its clusters fit (both asked of the driver once, not at every launch) and the arrival counters of
// sum_rows_if_last. A counter serves one stream: zeroed on that stream before its first use and left at zero
// by every launch. Launches on one stream run in order and can share it; launches on different streams may
// overlap and must not (cudaStreamPerThread is a different stream in every host thread). Counters come from
// slabs of 256, one cudaMalloc each. Never freed: a launch may still be queued when static destructors run.
struct DeviceState {
  Device props;
  std::map<const void*, size_t> smem_allowed;  // kernel -> the dynamic shared memory it may use
  // (kernel, dynamic shared memory, threads, cluster size) -> clusters resident at once
  std::map<std::tuple<const void*, size_t, unsigned, unsigned>, int> clusters_fit;
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
  check_call(cudaDeviceGetAttribute(&d.sm_major, cudaDevAttrComputeCapabilityMajor, dev), what);
  check_call(cudaDeviceGetAttribute(&d.sms, cudaDevAttrMultiProcessorCount, dev), what);
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

// How many clusters of `cfg`'s shape (its cluster-dimension attribute, block size and shared memory) the
// current device runs at once.
template <class Kernel>
int clusters_that_fit(Kernel kernel, const cudaLaunchConfig_t& cfg) {
  unsigned cluster = 1;
  for (unsigned a = 0; a < cfg.numAttrs; ++a)
    if (cfg.attrs[a].id == cudaLaunchAttributeClusterDimension) cluster = cfg.attrs[a].val.clusterDim.x;
  const std::lock_guard<std::mutex> lock(state_mutex());
  auto& fit = current_state().clusters_fit;
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), cfg.dynamicSmemBytes, cfg.blockDim.x, cluster);
  if (const auto found = fit.find(key); found != fit.end()) return found->second;
  int clusters = 0;
  check_call(cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg), "cudaOccupancyMaxActiveClusters");
  fit.emplace(key, clusters);
  return clusters;
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

// Design knobs, for benchmarks that compare kernel designs side by side in one process: the environment
// variable DISTILL_KD_CUDA_TUNE, e.g. "async=0,cluster=4,blocks_per_sm=1", read at the first launch. Unset,
// the defaults; anything else in it is an error (std::invalid_argument at every launch).
// Which rows have an evict-first kd_rows_kernel (Plan::stream_hints): dense rows of one dtype, the shapes it is
// timed at; 9 more instantiations of the 36 instead of all of them twice. make_plan asks it of the arguments,
// the launcher of its template parameters.
constexpr bool has_hinted_rows_kernel(bool sparse, bool same_dtype) { return !sparse && same_dtype; }

struct Tune {
  int async = -1;         // block_per_row's cp.async fills of its row cache: 0 off, 1 on, -1 automatic
  int cluster = 0;        // cluster_per_row: blocks per row (0: the smallest that fits two blocks per SM)
  int blocks_per_sm = 2;  // block_per_row: shared memory sized for this many blocks per SM (1 or 2)
  int hints = 0;          // block_per_row: 1 evict-first hints on the gradient sweep (Plan::stream_hints)
};

const Tune& tune() {
  static const Tune t = [] {  // a throw leaves it unset: the next launch reports the same error
    Tune r;
    const char* env = std::getenv("DISTILL_KD_CUDA_TUNE");
    for (std::string rest = env ? env : ""; !rest.empty();) {
      const size_t comma = rest.find(',');
      const std::string item = rest.substr(0, comma);
      rest = comma == std::string::npos ? "" : rest.substr(comma + 1);
      const size_t eq = item.find('=');
      const std::string key = item.substr(0, eq), value = eq == std::string::npos ? "" : item.substr(eq + 1);
      const bool ok = (key == "async" && (value == "0" || value == "1")) ||
                      (key == "cluster" && (value == "1" || value == "2" || value == "4" || value == "8")) ||
                      (key == "blocks_per_sm" && (value == "1" || value == "2")) ||
                      (key == "hints" && (value == "0" || value == "1"));
      if (!ok)
        throw std::invalid_argument("DISTILL_KD_CUDA_TUNE: '" + item +
                                    "' is not one of async=0|1, cluster=1|2|4|8, blocks_per_sm=1|2, hints=0|1 (unset it "
                                    "for the defaults)");
      const int v = std::stoi(value);
      if (key == "async") r.async = v;
      if (key == "cluster") r.cluster = v;
      if (key == "blocks_per_sm") r.blocks_per_sm = v;
      if (key == "hints") r.hints = v;
    }
    return r;
  }();
  return t;
}

// The concrete launch shape of one call.
struct Plan {
  CudaVariant variant = CudaVariant::rows_per_warp;
  int threads = kMaxThreads;
  int team = 32;             // rows_per_warp: lanes per row
  int64_t cache_packs = 0;   // block_per_row
  bool async_cache = false;  // fill the shared-memory cache with cp.async
  // block_per_row: the gradient sweep's global reads and gradient stores evict-first, so that L2 keeps the
  // uncached packs of sweep 1 for their second read instead (the profile: 24% L2 hits, ~9.6 bytes moved per
  // element at [16384, 128256] bf16 against the model's 6). Off until measured: DISTILL_KD_CUDA_TUNE=hints=1.
  bool stream_hints = false;  // only where has_hinted_rows_kernel
  int bitmap_words = 0;      // sparse tail
  int cluster = 1;           // cluster variants: blocks per row
  int64_t slice = 0;         // cluster variants: elements per block
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
    // Measured on an H100 (docs/benchmarks.md, 2026-11-22): block-per-row beat cluster-per-row at every
    // dense shape from V = 32000 to 128256 (6.7 vs 11.2 ms at [16384, 128256] bf16), so the cluster kernel
    // is only used when asked for.
    want = V <= kWarpRowsMaxV ? CudaVariant::rows_per_warp : CudaVariant::block_per_row;
  }
  if (want == CudaVariant::cluster_per_row || want == CudaVariant::cluster_persistent) {
    // The smallest cluster (<= 8, the portable maximum) whose slices let two blocks share an SM (the register
    // budget allows two 512-thread blocks), else the smallest whose slice fits in one SM's shared memory.
    // cluster_persistent keeps two slices per block (this row's and the next's) and runs one block per SM.
    const bool persistent = want == CudaVariant::cluster_persistent;
    const int64_t caches = persistent ? 2 : 1;
    pl.cluster = 0;
    if (!sparse && dev.sm_major >= 9) {
      // Shared-memory limits per block to try in order: two blocks per SM (not for persistent), then one.
      const int64_t one_per_sm = dev.smem_optin;
      const int64_t first = persistent ? one_per_sm : dev.smem_per_sm / 2 - 1024;
      for (const int64_t limit : {first, one_per_sm}) {
        for (int cl : {1, 2, 4, 8}) {
          if (tune().cluster != 0 && cl != tune().cluster) continue;
          const int64_t slice = (V + cl - 1) / cl;
          const int64_t smem =
              static_cast<int64_t>(kClusterHeader) + caches * cluster_slice_packs(slice) * kPack * pair_bytes;
          if (smem <= limit) {
            pl.cluster = cl, pl.slice = slice, pl.smem = static_cast<size_t>(smem);
            break;
          }
        }
        if (pl.cluster > 0) break;
      }
    }
    if (pl.cluster > 0) {
      pl.variant = want;
      pl.threads = kMaxThreads;
      pl.grid = N * pl.cluster;  // cluster_persistent: at most this; the launcher fits it to the device
      return pl;
    }
    want = CudaVariant::block_per_row;
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
  const int64_t budget =
      std::min<int64_t>(dev.smem_optin, dev.smem_per_sm / tune().blocks_per_sm - 1024) - static_cast<int64_t>(fixed);
  const int64_t packs = V / kPack;
  pl.cache_packs = std::max<int64_t>(0, std::min<int64_t>(packs, budget / (kPack * pair_bytes)));
  pl.smem = fixed + static_cast<size_t>(pl.cache_packs * kPack * pair_bytes);
  // cp.async pays when the cache holds most of the row (H200, 2026-11-23: [4096, 32000] bf16, 90% cached,
  // 0.398 -> 0.380 ms; [16384, 32001] bf16 1.569 -> 1.428 ms) and costs where it holds less ([4096, 32000]
  // f32, 45%: 0.618 -> 0.700 ms; [16384, 128256] bf16, 22%: 5.20 -> 5.32 ms), where sweep 1's register loads
  // of the uncached rest compete with the copies.
  pl.async_cache = tune().async < 0 ? pl.cache_packs * 4 >= packs * 3 : tune().async == 1;
  pl.stream_hints = tune().hints == 1 && has_hinted_rows_kernel(sparse, a.student_dtype == a.teacher_dtype);
  return pl;
}

Params make_params(const KdLossArgs& a, void* workspace) {
  Params p{};
  p.rows = a.rows;
  p.vocab = a.vocab;
  p.student = a.student;
  p.s_stride = a.student_row_stride;
  p.teacher = a.teacher;
  p.t_stride = a.teacher_row_stride;
  p.topk_index = a.topk_index;
  p.topk_logits = a.topk_logits;
  p.topk = a.topk;
  p.teacher_lse = a.teacher_lse;
  p.tail = a.topk_tail == TopkTail::tail;
  p.labels = a.labels;
  p.ignore_index = a.ignore_index;
  p.grad = a.grad;
  float* ws = static_cast<float*>(workspace);
  p.row_kd = a.row_kd ? a.row_kd : ws;
  p.row_ce = a.row_ce ? a.row_ce : ws + a.rows;
  p.sums = a.sums;
  p.alpha = a.alpha;
  p.inv_normalizer = a.inv_normalizer;
  const double T = a.temperature;
  p.k = static_cast<float>(1.4426950408889634 / T);
  p.kd_scale = static_cast<float>(a.t2_scale ? T * T : 1.0);
  p.ck = static_cast<float>(a.alpha * static_cast<double>(a.inv_normalizer) * (a.t2_scale ? T : 1.0 / T));
  p.cc = a.labels ? static_cast<float>((1.0 - a.alpha) * static_cast<double>(a.inv_normalizer)) : 0.0f;
  p.beta = a.beta;
  p.log2_beta = static_cast<float>(std::log2(static_cast<double>(a.beta)));
  p.log2_1m_beta = static_cast<float>(std::log2(1.0 - static_cast<double>(a.beta)));
  p.ce_mode = !a.labels || a.temperature == 1.0f ? kCeNone : a.temperature == 2.0f ? kCeSquare : kCeExp;
  return p;
}

Kind kind_of(const KdLossArgs& a) {
  if (a.topk_index) return kSparse;
  if (a.kind == Divergence::jsd && a.beta == 0.0f) return kForward;  // exact endpoints
  if (a.kind == Divergence::jsd && a.beta == 1.0f) return kReverse;
  return a.kind == Divergence::forward_kl ? kForward : a.kind == Divergence::reverse_kl ? kReverse : kJsd;
}

template <class TS, class TT, Kind K>
void launch_rows(const Plan& pl, const Params& p, cudaStream_t stream) {
  if (pl.variant == CudaVariant::cluster_per_row || pl.variant == CudaVariant::cluster_persistent) {
    if constexpr (K != kSparse) {
      const bool persistent = pl.variant == CudaVariant::cluster_persistent;
      auto kernel = persistent ? kd_cluster_persistent_kernel<TS, TT, K> : kd_cluster_kernel<TS, TT, K>;
      allow_dynamic_smem(kernel, pl.smem);
      cudaLaunchConfig_t cfg = {};
      cfg.gridDim = dim3(static_cast<unsigned>(pl.grid));
      cfg.blockDim = dim3(pl.threads);
      cfg.dynamicSmemBytes = pl.smem;
      cfg.stream = stream;
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = pl.cluster;
      attr[0].val.clusterDim.y = 1;
      attr[0].val.clusterDim.z = 1;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      if (persistent) {
        // One wave: every cluster resident at once, each looping over its rows.
        cfg.gridDim = dim3(static_cast<unsigned>(pl.cluster));
        const int fit = clusters_that_fit(kernel, cfg);
        if (fit < 1)
          throw std::runtime_error("kd_loss_forward_cuda: no cluster of " + std::to_string(pl.cluster) +
                                   " blocks with " + std::to_string(pl.smem) + " bytes of shared memory fits the device");
        cfg.gridDim = dim3(static_cast<unsigned>(std::min<int64_t>(p.rows, fit) * pl.cluster));
      }
      check_call(cudaLaunchKernelEx(&cfg, kernel, p, pl.slice), "cluster launch");
      check_launch(persistent ? "kd_cluster_persistent_kernel" : "kd_cluster_kernel");
    }
    return;
  }
  constexpr bool kHinted = has_hinted_rows_kernel(K == kSparse, std::is_same_v<TS, TT>);
  auto kernel = kd_rows_kernel<TS, TT, K, false>;
  if constexpr (kHinted) {
    if (pl.stream_hints) kernel = kd_rows_kernel<TS, TT, K, true>;
  }
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
             std::to_string(args.vocab / kPack) + " packs cached" + (pl.async_cache ? " (cp.async)" : "") +
             (pl.stream_hints ? ", evict-first last reads" : "");
    case CudaVariant::cluster_per_row:
      return "cluster-per-row/" + std::to_string(pl.cluster) + " blocks x " + std::to_string(pl.threads) + " threads";
    case CudaVariant::cluster_persistent:
      return "cluster-persistent/" + std::to_string(pl.cluster) + " blocks x " + std::to_string(pl.threads) +
             " threads, one wave, next row prefetched";
    default: return "?";
  }
}

void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream) {
  kd_loss_forward_cuda(args, workspace, stream, CudaVariant::automatic);
}

void kd_loss_forward_cuda(const KdLossArgs& args, void* workspace, void* stream_ptr, CudaVariant variant) {
  kd_loss_check_args(args);
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
