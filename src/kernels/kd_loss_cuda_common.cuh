// The device code that every CUDA distillation-loss kernel shares: the production kernels (kd_loss_cuda.cu,
// whose row code is kd_loss_cuda_rows.cuh) and the experimental variants in dev/cuda. Included only by .cu
// files (and, as C++, by the CUDA emulator of the tests), never by a public header.
//
// What is here: the launch parameters, the base-2 special functions, 16-byte packs of logits and their loads,
// stores and cp.async copies into shared memory, the online-softmax statistics and their merge, the per-row
// constants and the gradient of one element, the team reductions (shuffles, then shared memory), the
// one-launch sum of the row values by the block that finishes last, and the host's argument translation
// (make_params, kind_of). Everything sits in an anonymous namespace: each program that includes it gets its
// own copies, so dev/cuda programs can link the production library beside their own kernels.
//
// Everything runs in base 2: with k = log2(e) / T, exponents are (x - rowmax) * k, so ex2.approx does the
// exp without a rescaling multiply, and the (x - rowmax) difference cancels large common offsets exactly.
//
// The CUDA emulator of the tests (tests/cuda_emulator) compiles this code as C++ with DISTILL_CUDA_EMULATOR
// defined, so that CI runs the kernels' logic without a GPU. It needs four hooks here, each marked with that
// macro: ex2/lg2, dynamic shared memory, 16-byte global accesses (it checks their alignment) and cp.async
// (its copies land only when the issuing thread waits); the launchers add the fifth, the plain launch. The
// `__CUDA_ARCH__ >= 800` fallbacks are what it runs in place of the packed-conversion and packed-max asm.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "distill/kernels/kd_loss_kernels.h"

namespace distill::kernels {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLowest = -3.402823466e38f;  // running-max sentinel: finite, so (-inf) - kLowest = -inf, never NaN
constexpr float kNegInf = -__builtin_huge_valf();

constexpr int kMaxThreads = 512;       // block size of all row kernels
constexpr int kPack = 8;               // elements per vector pack: 16 bytes of 16-bit logits, 32 bytes of fp32
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

// How a kernel makes a family of 16-byte global accesses: a policy type with load and store, passed as a
// template argument (load_pack, store_pack, rows_body's LastAccess). Production uses plain accesses
// everywhere; dev/cuda/kd_loss_block_per_row.cu supplies an evict-first policy for the gradient sweep.
struct PlainAccess {
  static __device__ __forceinline__ uint4 load(const void* p) { return load16(p); }
  static __device__ __forceinline__ void store(void* p, uint4 v) { store16(p, v); }
};

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

// Access: how the 16-byte loads are made (PlainAccess, or a policy like it).
template <class T, class Access = PlainAccess>
__device__ __forceinline__ Pack<T> load_pack(const T* p, bool vec) {
  Pack<T> r;
  if (vec) {
#pragma unroll
    for (int j = 0; j < Pack<T>::kWords / 4; ++j) {
      const uint4* at = reinterpret_cast<const uint4*>(p) + j;
      const uint4 v = Access::load(at);
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

// Access: how the 16-byte stores are made (PlainAccess, or a policy like it).
template <class T, class Access = PlainAccess>
__device__ __forceinline__ void store_pack(T* p, bool vec, const float (&g)[kPack]) {
  const Pack<T> r = pack_of<T>(g);
  if (vec) {
#pragma unroll
    for (int j = 0; j < Pack<T>::kWords / 4; ++j) {
      uint4* at = reinterpret_cast<uint4*>(p) + j;
      const uint4 v = make_uint4(r.u[4 * j], r.u[4 * j + 1], r.u[4 * j + 2], r.u[4 * j + 3]);
      Access::store(at, v);
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
  // instructions per thread: doubling the instruction count of dev/cuda's cluster kernel, whose blocks see
  // 31 elements per thread.)
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

// The row constants from a row's merged statistics (team kernels, and dev/cuda's cluster kernels).
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

// ------------------------------------------------------------------------------------------------------------
// Host side: errors, and the launch parameters of a call

// After a launch: throws std::runtime_error with the CUDA error string.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("kd_loss_forward_cuda: ") + what + " failed: " + cudaGetErrorString(err));
}

inline void check_call(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("kd_loss_forward_cuda: ") + what + ": " + cudaGetErrorString(err));
}

inline int64_t element_bytes(ScalarType t) { return t == ScalarType::f32 ? 4 : 2; }

// Everything but `arrivals` and `async_cache`, which the launcher sets from its plan.
inline Params make_params(const KdLossArgs& a, void* workspace) {
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

// The kernel instantiation a call runs; JSD at beta = 0 or 1 is exactly forward or reverse KL.
inline Kind kind_of(const KdLossArgs& a) {
  if (a.topk_index) return kSparse;
  if (a.kind == Divergence::jsd && a.beta == 0.0f) return kForward;  // exact endpoints
  if (a.kind == Divergence::jsd && a.beta == 1.0f) return kReverse;
  return a.kind == Divergence::forward_kl ? kForward : a.kind == Divergence::reverse_kl ? kReverse : kJsd;
}

}  // namespace
}  // namespace distill::kernels
