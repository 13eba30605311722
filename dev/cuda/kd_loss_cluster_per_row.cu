// cluster_per_row: one row per thread-block cluster of 1, 2, 4 or 8 blocks (sm_90), each block keeping its whole
// slice of the row (student and teacher, in their own dtypes) in shared memory, so the row moves exactly the
// 6 bytes per element (bf16) of the bandwidth model. Sweep 1 requests the whole slice with cp.async and then
// reads back, from shared memory, the packs each thread requested (no barrier needed before the exchange).
//
// Not shipped: slower than block_per_row at every dense shape measured, 11.1 vs 6.7 ms on an H100 and 7.95
// vs 4.98 ms on an H200 at [16384, 128256] bf16 (docs/benchmarks.md); with 31 elements per thread at that
// shape, the per-block work (statistics merges, barriers, the arrival) is a large share of its time.
//
// Settings: cluster=auto, the smallest cluster whose slices let two 64-register blocks share an SM (2 blocks
// for bf16 V = 32000, 8 for bf16 V = 128256; fp32 V = 128256 needs 8 blocks of 128 KiB, one per SM), or
// cluster=1|2|4|8 (what DISTILL_KD_CUDA_TUNE=cluster=N pinned until the variant moved here).
//
//   cmake -DDISTILL_CUDA_DEV=ON ... && cmake --build build --target kd_loss_cluster_per_row
//   build/dev/cuda/kd_loss_cluster_per_row [--rows 16384 --vocab 128256 --dtype bf16] [cluster=8 ...]
#include <string>
#include <vector>

#include "dev/cuda/common.h"
#include "dev/cuda/kd_loss_cluster.cuh"

namespace distill::kernels {
namespace {

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

// want: blocks per row, 0 for the smallest that fits two blocks per SM.
dev::Variant cluster_per_row(int want) {
  auto plan = [want](const KdLossArgs& a) { return cluster_plan(a, dev::device(), 1, true, want); };
  dev::Variant v;
  v.setting = want ? "cluster=" + std::to_string(want) : "cluster=auto";
  v.why_not = [plan](const KdLossArgs& a) { return plan(a).why_not; };
  v.describe = [plan](const KdLossArgs& a) {
    return "cluster-per-row/" + std::to_string(plan(a).cluster) + " blocks x " + std::to_string(kMaxThreads) +
           " threads";
  };
  v.launch = [plan](const KdLossArgs& a, unsigned* arrivals, cudaStream_t stream) {
    const ClusterPlan pl = plan(a);
    const Params p = dev::params_of(a, arrivals);
    dev::dispatch(a, [&](auto t, auto k) {
      using T = typename decltype(t)::type;
      dev::launch_kernel(kd_cluster_kernel<T, T, decltype(k)::value>, static_cast<unsigned>(a.rows * pl.cluster),
                         kMaxThreads, pl.smem, static_cast<unsigned>(pl.cluster), stream, p, pl.slice);
    });
  };
  return v;
}

}  // namespace
}  // namespace distill::kernels

int main(int argc, char** argv) {
  std::vector<dev::Variant> variants;
  for (int cluster : {0, 1, 2, 4, 8}) variants.push_back(distill::kernels::cluster_per_row(cluster));
  return dev::run_program(argc, argv, "kd_loss_cluster_per_row", "one row per thread-block cluster, the row on chip",
                          variants);
}
