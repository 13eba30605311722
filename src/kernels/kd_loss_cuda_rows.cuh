// The row code of the production CUDA kernels (kd_loss_cuda.cu): rows_per_warp and block_per_row are one
// kernel, kd_rows_kernel, with a team of 2^k <= 32 lanes or the whole block per row. Shared with dev/cuda,
// whose block_per_row program launches it under other plans (cp.async forced on or off, one block per SM)
// and with an evict-first LastAccess; it includes this header rather than a copy.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kd_loss_cuda_common.cuh"

namespace distill::kernels {
namespace {

// Rows in teams of `team_size` threads (a power of two <= 32, or the whole block). LastAccess: how the gradient
// sweep makes the row's last global reads and its gradient stores (PlainAccess in production). Dynamic shared
// memory: [32 Stats of reduction scratch][sparse tail: top-k bitmaps, one per team][block teams: the first
// `cache_packs` packs of the student and teacher rows, so that later sweeps read them from shared memory].
template <class TS, class TT, Kind K, int M, class LastAccess>
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
  // compile time (`from_cache`); JSD's sweep 2 asks get_pack. `last`: the row's last read of the pack, made
  // through LastAccess.
  auto fetch_pack = [&](int q, float (&t)[kPack], float (&s)[kPack], bool t_vec, auto from_cache, auto last) {
    using Access = std::conditional_t<decltype(last)::value, LastAccess, PlainAccess>;
    if (decltype(from_cache)::value) {
      unpack(cached_pack(s_cache, q), s);
      if (K != kSparse) unpack(cached_pack(t_cache, q), t);
    } else {
      unpack(load_pack<TS, Access>(at_pack(s0, q), true), s);
      if (K != kSparse) unpack(load_pack<TT, Access>(at_pack(t0, q), t_vec), t);
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
    for (int64_t q = tm.rank; q < p.topk; q += tm.size) in_range = in_range && topk_index[q] >= -1 && topk_index[q] < V;  // -1: absent
    in_range = team_reduce<1>(tm, in_range ? 0.f : 1.f) == 0.f;
    auto lq_at = [&](int64_t v) { return (to_f32(srow[v]) - c.ms) * c.k - c.l2sb; };
    if (!in_range) {
      D = __int_as_float(0x7fc00000);
    } else if (!p.tail) {
      float mk = kNegInf;
      for (int64_t q = tm.rank; q < p.topk; q += tm.size)
        if (topk_index[q] >= 0) mk = fmaxf(mk, to_f32(kl[q]));
      mk = team_reduce<1>(tm, mk);
      if (mk > kNegInf) {
        float sk = 0.f;
        for (int64_t q = tm.rank; q < p.topk; q += tm.size)
          if (topk_index[q] >= 0) sk += ex2((to_f32(kl[q]) - mk) * p.k);
        sk = team_reduce<0>(tm, sk);
        sparse_max = mk;
        sparse_l2s = log2f(sk);
        float d = 0.f;
        for (int64_t q = tm.rank; q < p.topk; q += tm.size) {
          if (topk_index[q] < 0) continue;
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
        if (topk_index[q] < 0) continue;
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
      fetch_pack(q, t, s, t_vec, from_cache, std::true_type{});
#pragma unroll
      for (int j = 0; j < kPack; ++j) g[j] = grad_elem<K, M>(t[j], s[j], c);
      if (q == label_pack) {  // one pack in V / 8
#pragma unroll
        for (int j = 0; j < kPack; ++j)
          if (j == label_j) g[j] -= c.cc;
      }
      store_pack<TS, LastAccess>(at_pack(g0, q), g_vec, g);
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
      if (v < 0) continue;  // an absent entry
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

// rows_per_warp and block_per_row: one kernel, `team_size` lanes per row. Two blocks per SM (64 registers).
template <class TS, class TT, Kind K, class LastAccess = PlainAccess>
__global__ void __launch_bounds__(kMaxThreads, 2) kd_rows_kernel(Params p, int team_size, int64_t cache_packs,
                                                              int bitmap_words) {
  kernel_main(p, [&](auto m) {
    rows_body<TS, TT, K, decltype(m)::value, LastAccess>(p, team_size, cache_packs, bitmap_words);
  });
}

// ------------------------------------------------------------------------------------------------------------
// block_per_row's plan, shared by the production launcher and dev/cuda

// How many leading packs of a row block_per_row keeps in shared memory when `blocks_per_sm` blocks share an SM
// (production: 2, which the register budget allows), after `fixed` bytes of scratch and top-k bitmaps.
inline int64_t block_row_cache_packs(int64_t vocab, int64_t pair_bytes, size_t fixed, int smem_optin, int smem_per_sm,
                                     int blocks_per_sm) {
  const int64_t budget =
      std::min<int64_t>(smem_optin, smem_per_sm / blocks_per_sm - 1024) - static_cast<int64_t>(fixed);
  const int64_t packs = vocab / kPack;
  return std::max<int64_t>(0, std::min<int64_t>(packs, budget / (kPack * pair_bytes)));
}

// Whether block_per_row fills its cache with cp.async: only when the cache holds most of the row (H200,
// 2026-11-23: [4096, 32000] bf16, 90% cached, 0.398 -> 0.380 ms; [16384, 32001] bf16 1.569 -> 1.428 ms). Where
// it holds less it costs ([4096, 32000] f32, 45%: 0.618 -> 0.700 ms; [16384, 128256] bf16, 22%: 5.20 -> 5.32
// ms): sweep 1's register loads of the uncached rest compete with the copies.
inline bool block_row_async_cache(int64_t cache_packs, int64_t vocab) { return cache_packs * 4 >= vocab / kPack * 3; }

}  // namespace
}  // namespace distill::kernels
