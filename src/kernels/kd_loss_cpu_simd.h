// SIMD wrappers for the CPU distillation-loss kernel: one struct per instruction set with the same static
// interface, so that kd_loss_cpu_rows.inc is written once and compiled once per instruction set.
//
//   R: register type, W lanes; M: comparison mask. and_mask(m, x) is x where m holds, +0 elsewhere (also
//   when x is NaN: masking is how 0 * log 0 and 0 * inf become 0). exp and log are our own: the Cephes
//   polynomials (Moshier 1989), <= 2 ulp over the fp32 range; exp(-inf) = 0, exp(x <= -104) = 0,
//   exp(x > 88.72) = inf, results in the subnormal range are rounded once (2^n is applied as two factors, or
//   by AVX-512 vscalefps); log(0) = -inf, log(x < 0) = NaN, log(inf) = inf; NaN propagates through both.
//   exp_nonpos(x) is exp(x), the same values, for x <= 0 only (the softmax terms exp(x - max)): cheaper.
//
// The AVX2 and AVX-512 structs are compiled under target attributes (push/pop below), so this file builds
// with the project's baseline flags and the dispatcher picks one at run time with __builtin_cpu_supports.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "distill/kernels/kd_loss_reference.h"  // scalar bf16 / f16 conversions

#if defined(__clang__)
#define DISTILL_TARGET_PUSH(isa) _Pragma("clang attribute push(__attribute__((target(" #isa "))), apply_to = function)")
#define DISTILL_TARGET_POP _Pragma("clang attribute pop")
#elif defined(__GNUC__)
#define DISTILL_TARGET_PUSH_STR(x) _Pragma(#x)
#define DISTILL_TARGET_PUSH(isa) _Pragma("GCC push_options") DISTILL_TARGET_PUSH_STR(GCC target(isa))
#define DISTILL_TARGET_POP _Pragma("GCC pop_options")
#endif

// exp and log are big enough that GCC would otherwise call them out of line, once per vector.
#define DISTILL_ALWAYS_INLINE inline __attribute__((always_inline))
#define DISTILL_LAMBDA_INLINE __attribute__((always_inline))  // after a lambda's parameter list

namespace distill::kernels::cpu {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------------------------
// Portable fallback: one lane, libm's exp and log.
struct VecScalar {
  static constexpr int W = 1;
  static constexpr const char* name = "scalar";
  using R = float;
  using M = bool;
  static R zero() { return 0.0f; }
  static R set1(float x) { return x; }
  static R load(const float* p) { return *p; }
  static void store(float* p, R x) { *p = x; }
  static R load_partial(const float* p, int64_t n, float fill) { return n > 0 ? *p : fill; }
  static void store_partial(float* p, R x, int64_t n) {
    if (n > 0) *p = x;
  }
  static R add(R a, R b) { return a + b; }
  static R sub(R a, R b) { return a - b; }
  static R mul(R a, R b) { return a * b; }
  static R div(R a, R b) { return a / b; }
  static R fma(R a, R b, R c) { return a * b + c; }
  static R max(R a, R b) { return a > b ? a : b; }
  static R abs(R a) { return std::fabs(a); }
  static M gt(R a, R b) { return a > b; }
  static M eq(R a, R b) { return a == b; }
  static R and_mask(M m, R x) { return m ? x : 0.0f; }
  static R select(M m, R a, R b) { return m ? a : b; }
  static bool all(M m) { return m; }
  using I = int32_t;  // lane indices for permute
  static I load_idx(const int32_t* p) { return *p; }
  static R permute(R table, I) { return table; }  // lane j <- table[idx[j]]
  static M bits_mask(uint32_t bits) { return (bits & 1u) != 0; }  // lane j <- bit j
  static R exp(R x) { return std::exp(x); }
  static R exp_nonpos(R x) { return std::exp(x); }
  static R log(R x) { return std::log(x); }
  static float hsum(R x) { return x; }
  static float hmax(R x) { return x; }
  static void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
  }
  static void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_bits_to_float(src[i]);
  }
  static void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_bf16_bits(src[i]);
  }
  static void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_to_f16_bits(src[i]);
  }
};

// Cephes expf / logf coefficients.
namespace poly {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693145751953125f;        // ln 2 split so that n * kLn2Hi is exact for |n| < 2^9
constexpr float kLn2Lo = 1.428606765330187045e-06f;
constexpr float kExpLo = -104.0f;  // clamp: exp(-104) rounds to +0 (below half the smallest subnormal)
constexpr float kExpHi = 88.7228394f;   // above: inf (handled by the two-factor scaling reaching 2^128)
constexpr float kExpP0 = 1.9875691500e-4f, kExpP1 = 1.3981999507e-3f, kExpP2 = 8.3334519073e-3f,
                kExpP3 = 4.1665795894e-2f, kExpP4 = 1.6666665459e-1f, kExpP5 = 5.0000001201e-1f;
constexpr float kSqrtHalf = 0.707106781186547524f;
constexpr float kLogP0 = 7.0376836292e-2f, kLogP1 = -1.1514610310e-1f, kLogP2 = 1.1676998740e-1f,
                kLogP3 = -1.2420140846e-1f, kLogP4 = 1.4249322787e-1f, kLogP5 = -1.6668057665e-1f,
                kLogP6 = 2.0000714765e-1f, kLogP7 = -2.4999993993e-1f, kLogP8 = 3.3333331174e-1f;
constexpr float kLogQ1 = -2.12194440e-4f, kLogQ2 = 0.693359375f;
}  // namespace poly

// ---------------------------------------------------------------------------------------------------------
DISTILL_TARGET_PUSH("avx2,fma,f16c")

struct VecAvx2 {
  static constexpr int W = 8;
  static constexpr const char* name = "avx2";
  using R = __m256;
  using M = __m256;
  static R zero() { return _mm256_setzero_ps(); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  // First n (< 8) lanes from memory, the rest `fill`; never touches memory past p + n.
  static __m256i first_lanes(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static R load_partial(const float* p, int64_t n, float fill) {
    const __m256i m = first_lanes(n);
    return _mm256_blendv_ps(_mm256_set1_ps(fill), _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
  }
  static void store_partial(float* p, R x, int64_t n) { _mm256_maskstore_ps(p, first_lanes(n), x); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R div(R a, R b) { return _mm256_div_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R abs(R a) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), a); }
  static M gt(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_GT_OQ); }
  static M eq(R a, R b) { return _mm256_cmp_ps(a, b, _CMP_EQ_OQ); }
  static R and_mask(M m, R x) { return _mm256_and_ps(m, x); }
  static R select(M m, R a, R b) { return _mm256_blendv_ps(b, a, m); }
  static bool all(M m) { return _mm256_movemask_ps(m) == 0xFF; }
  using I = __m256i;
  static I load_idx(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static R permute(R table, I idx) { return _mm256_permutevar8x32_ps(table, idx); }
  static M bits_mask(uint32_t bits) {
    const __m256i lane_bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i b = _mm256_and_si256(_mm256_set1_epi32(static_cast<int>(bits)), lane_bit);
    return _mm256_castsi256_ps(_mm256_cmpeq_epi32(b, lane_bit));
  }

  // exp(x) = p * 2^n for x clamped to [kExpLo, ...]: n = round(x log2 e), p the polynomial of the rest.
  // max returns its second operand when either is NaN: NaN survives the clamp.
  DISTILL_ALWAYS_INLINE static R exp_reduce(R x, R& n) {
    using namespace poly;
    n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
    R p = _mm256_set1_ps(kExpP0);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP5));
    return _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  }

  DISTILL_ALWAYS_INLINE static R exp(R x) {
    using namespace poly;
    x = _mm256_min_ps(_mm256_set1_ps(kExpHi + 0.5f), _mm256_max_ps(_mm256_set1_ps(kExpLo), x));
    R n;
    const R p = exp_reduce(x, n);
    // 2^n as 2^(n/2) * 2^(n - n/2): both factors are normal for n in [-150, 128].
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i n1 = _mm256_srai_epi32(ni, 1);
    const __m256i n2 = _mm256_sub_epi32(ni, n1);
    const __m256i bias = _mm256_set1_epi32(127);
    const R s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    const R s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
  }

  // exp for x <= 0 (right for x < 43): the softmax terms exp(x - max). n is in [-150, 0], so 2^(n + 64) is
  // normal and one exact factor; the multiply by 2^-64 rounds a subnormal result once, as exp() does. The
  // same values as exp() in five instructions fewer.
  DISTILL_ALWAYS_INLINE static R exp_nonpos(R x) {
    using namespace poly;
    x = _mm256_max_ps(_mm256_set1_ps(kExpLo), x);
    R n;
    const R p = exp_reduce(x, n);
    const __m256i biased = _mm256_cvtps_epi32(_mm256_add_ps(n, _mm256_set1_ps(127.0f + 64.0f)));
    const R s = _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
    return _mm256_mul_ps(_mm256_mul_ps(p, s), _mm256_set1_ps(0x1p-64f));
  }

  DISTILL_ALWAYS_INLINE static R log(R x) {
    using namespace poly;
    const R zero_mask = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_EQ_OQ);
    const R invalid = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ);  // x < 0 or NaN
    const R inf_mask = _mm256_cmp_ps(x, _mm256_set1_ps(std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
    // Subnormals: scale into the normal range first.
    const R small = _mm256_cmp_ps(x, _mm256_set1_ps(std::numeric_limits<float>::min()), _CMP_LT_OQ);
    x = _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(8388608.0f)), small);
    R e_adj = _mm256_and_ps(small, _mm256_set1_ps(-23.0f));
    const __m256i xi = _mm256_castps_si256(x);
    R e = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_srli_epi32(xi, 23), _mm256_set1_epi32(126)));
    e = _mm256_add_ps(e, e_adj);
    // mantissa in [0.5, 1)
    R m = _mm256_castsi256_ps(_mm256_or_si256(_mm256_and_si256(xi, _mm256_set1_epi32(0x007fffff)),
                                              _mm256_set1_epi32(0x3f000000)));
    const R lt = _mm256_cmp_ps(m, _mm256_set1_ps(kSqrtHalf), _CMP_LT_OQ);
    e = _mm256_sub_ps(e, _mm256_and_ps(lt, _mm256_set1_ps(1.0f)));
    m = _mm256_sub_ps(_mm256_add_ps(m, _mm256_and_ps(lt, m)), _mm256_set1_ps(1.0f));
    const R z = _mm256_mul_ps(m, m);
    R y = _mm256_set1_ps(kLogP0);
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP1));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP2));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP3));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP4));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP5));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP6));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP7));
    y = _mm256_fmadd_ps(y, m, _mm256_set1_ps(kLogP8));
    y = _mm256_mul_ps(_mm256_mul_ps(y, m), z);
    y = _mm256_fmadd_ps(e, _mm256_set1_ps(kLogQ1), y);
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    R r = _mm256_add_ps(m, y);
    r = _mm256_fmadd_ps(e, _mm256_set1_ps(kLogQ2), r);
    r = _mm256_blendv_ps(r, _mm256_set1_ps(std::numeric_limits<float>::infinity()), inf_mask);
    r = _mm256_blendv_ps(r, _mm256_set1_ps(kNegInf), zero_mask);
    return _mm256_blendv_ps(r, _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), invalid);
  }

  static float hsum(R x) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(R x) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }

  static void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
  }
  static void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) dst[i] = f16_bits_to_float(src[i]);
  }
  static void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    const __m256i round = _mm256_set1_epi32(0x7fff), one = _mm256_set1_epi32(1), quiet = _mm256_set1_epi32(0x40);
    for (; i + 8 <= n; i += 8) {
      const R x = _mm256_loadu_ps(src + i);
      const __m256i u = _mm256_castps_si256(x);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
      __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(round, lsb)), 16);
      const __m256i nan = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
      r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(nan),
                                               _mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
      const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), packed);
    }
    for (; i < n; ++i) dst[i] = float_to_bf16_bits(src[i]);
  }
  static void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) dst[i] = float_to_f16_bits(src[i]);
  }
};

DISTILL_TARGET_POP

// ---------------------------------------------------------------------------------------------------------
DISTILL_TARGET_PUSH("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")

struct VecAvx512 {
  static constexpr int W = 16;
  static constexpr const char* name = "avx512";
  using R = __m512;
  using M = __mmask16;
  static R zero() { return _mm512_setzero_ps(); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R x) { _mm512_storeu_ps(p, x); }
  static __mmask16 first_lanes(int64_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static R load_partial(const float* p, int64_t n, float fill) {
    return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), first_lanes(n), p);
  }
  static void store_partial(float* p, R x, int64_t n) { _mm512_mask_storeu_ps(p, first_lanes(n), x); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R div(R a, R b) { return _mm512_div_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R abs(R a) { return _mm512_abs_ps(a); }
  static M gt(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
  static M eq(R a, R b) { return _mm512_cmp_ps_mask(a, b, _CMP_EQ_OQ); }
  static bool all(M m) { return m == 0xFFFF; }
  using I = __m512i;
  static I load_idx(const int32_t* p) { return _mm512_loadu_si512(p); }
  static R permute(R table, I idx) { return _mm512_permutexvar_ps(idx, table); }
  static R and_mask(M m, R x) { return _mm512_maskz_mov_ps(m, x); }
  static R select(M m, R a, R b) { return _mm512_mask_blend_ps(m, b, a); }
  static M bits_mask(uint32_t bits) { return static_cast<M>(bits & 0xffffu); }

  DISTILL_ALWAYS_INLINE static R exp(R x) {
    return exp_nonpos(_mm512_min_ps(_mm512_set1_ps(poly::kExpHi + 0.5f), x));
  }

  // exp without its upper clamp, for the softmax terms exp(x - max), x <= 0. Right for any x < 354, where
  // the range reduction stays exact (vscalefps itself overflows to inf above 88.72).
  DISTILL_ALWAYS_INLINE static R exp_nonpos(R x) {
    using namespace poly;
    x = _mm512_max_ps(_mm512_set1_ps(kExpLo), x);
    const R n =
        _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    R r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
    R p = _mm512_set1_ps(kExpP0);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kExpP5));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    // p * 2^n in one instruction, rounded once also where the result is subnormal or overflows: the same
    // value as the two-factor scaling of the AVX2 path, in one instruction instead of nine.
    return _mm512_scalef_ps(p, n);
  }

  DISTILL_ALWAYS_INLINE static R log(R x) {
    using namespace poly;
    const M zero_mask = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_EQ_OQ);
    const M invalid = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NGE_UQ);
    const M inf_mask = _mm512_cmp_ps_mask(x, _mm512_set1_ps(std::numeric_limits<float>::infinity()), _CMP_EQ_OQ);
    const M small = _mm512_cmp_ps_mask(x, _mm512_set1_ps(std::numeric_limits<float>::min()), _CMP_LT_OQ);
    x = _mm512_mask_mul_ps(x, small, x, _mm512_set1_ps(8388608.0f));
    const R e_adj = _mm512_maskz_mov_ps(small, _mm512_set1_ps(-23.0f));
    const __m512i xi = _mm512_castps_si512(x);
    R e = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(xi, 23), _mm512_set1_epi32(126)));
    e = _mm512_add_ps(e, e_adj);
    R m = _mm512_castsi512_ps(_mm512_or_si512(_mm512_and_si512(xi, _mm512_set1_epi32(0x007fffff)),
                                              _mm512_set1_epi32(0x3f000000)));
    const M lt = _mm512_cmp_ps_mask(m, _mm512_set1_ps(kSqrtHalf), _CMP_LT_OQ);
    e = _mm512_mask_sub_ps(e, lt, e, _mm512_set1_ps(1.0f));
    m = _mm512_sub_ps(_mm512_mask_add_ps(m, lt, m, m), _mm512_set1_ps(1.0f));
    const R z = _mm512_mul_ps(m, m);
    R y = _mm512_set1_ps(kLogP0);
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP1));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP2));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP3));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP4));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP5));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP6));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP7));
    y = _mm512_fmadd_ps(y, m, _mm512_set1_ps(kLogP8));
    y = _mm512_mul_ps(_mm512_mul_ps(y, m), z);
    y = _mm512_fmadd_ps(e, _mm512_set1_ps(kLogQ1), y);
    y = _mm512_fnmadd_ps(z, _mm512_set1_ps(0.5f), y);
    R r = _mm512_add_ps(m, y);
    r = _mm512_fmadd_ps(e, _mm512_set1_ps(kLogQ2), r);
    r = _mm512_mask_mov_ps(r, inf_mask, _mm512_set1_ps(std::numeric_limits<float>::infinity()));
    r = _mm512_mask_mov_ps(r, zero_mask, _mm512_set1_ps(kNegInf));
    return _mm512_mask_mov_ps(r, invalid, _mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()));
  }

  static float hsum(R x) {
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
    return VecAvx2::hsum(h);
  }
  static float hmax(R x) {
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(x), _mm512_extractf32x8_ps(x, 1));
    return VecAvx2::hmax(h);
  }

  static void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    VecAvx2::bf16_to_f32(src + i, dst + i, n - i);
  }
  static void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
    VecAvx2::f16_to_f32(src + i, dst + i, n - i);
  }
  static void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    const __m512i round = _mm512_set1_epi32(0x7fff), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
    for (; i + 16 <= n; i += 16) {
      const R x = _mm512_loadu_ps(src + i);
      const __m512i u = _mm512_castps_si512(x);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), one);
      __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(round, lsb)), 16);
      const __m512i nan = _mm512_or_si512(_mm512_srli_epi32(u, 16), quiet);
      r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), nan);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(r));
    }
    VecAvx2::f32_to_bf16(src + i, dst + i, n - i);
  }
  static void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    VecAvx2::f32_to_f16(src + i, dst + i, n - i);
  }
};

DISTILL_TARGET_POP

}  // namespace distill::kernels::cpu
