// cluster_persistent: the cluster kernel's row code (kd_loss_cluster.cuh) in one wave. The grid is as many
// clusters as cudaOccupancyMaxActiveClusters says fit at once (never more than the rows), and each cluster
// loops over rows i, i + clusters, and so on. Every block keeps two caches of its slice: while it computes a
// row from one, the next row's packs are in flight into the other (cp.async groups, with cp.async.wait_group 1
// before each row). So each block overlaps its memory traffic with its arithmetic, rather than relying on a
// second co-resident block to do so, and the cluster launch and the arrival of the one-launch sum are paid
// once per cluster, not once per row.
//
// Rows end with a block barrier, not a cluster barrier. The statistics exchange slots alternate between rows,
// so a block may write row i + 2's slot while a slower block still reads row i + 1's: the slot it writes was
// last read two rows back, before every block arrived at the previous row's first cluster barrier. One
// cluster barrier per row remains (two for JSD), plus one at exit.
//
// Not timed on a GPU yet. It might beat block_per_row at large V: the one-shot cluster kernel's 6 bytes per
// element would take ~2.9 ms at copy speed on an H200 and its ~30 instructions per element ~1.9 ms of issue,
// yet it takes 7.95 ms, spent in 496 waves of blocks that load, then compute, then synchronise in sequence.
//
// Settings: cluster=auto (the smallest cluster whose two caches fit one block per SM: bf16 V = 128256 takes 8
// blocks of 128 KiB; fp32 V = 128256 fits no portable cluster) or cluster=1|2|4|8.
//
//   build/dev/cuda/kd_loss_cluster_persistent [--rows 16384 --vocab 128256 --dtype bf16] [cluster=8 ...]
#include <algorithm>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "dev/cuda/common.h"
#include "dev/cuda/kd_loss_cluster.cuh"

namespace distill::kernels {
namespace {

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

// How many clusters of the plan's shape the device runs at once (asked of the driver once per shape).
template <class Kernel>
int clusters_that_fit(Kernel kernel, const ClusterPlan& pl) {
  static std::map<std::tuple<const void*, size_t, int>, int> fit;
  const auto key = std::make_tuple(reinterpret_cast<const void*>(kernel), pl.smem, pl.cluster);
  if (const auto found = fit.find(key); found != fit.end()) return found->second;
  dev::allow_dynamic_smem(kernel, pl.smem);
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(pl.cluster));
  cfg.blockDim = dim3(kMaxThreads);
  cfg.dynamicSmemBytes = pl.smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = static_cast<unsigned>(pl.cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  dev::cuda_check(cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg), "cudaOccupancyMaxActiveClusters");
  fit.emplace(key, clusters);
  return clusters;
}

// The one-wave grid of these arguments, in clusters (0: none fits).
int wave_clusters(const KdLossArgs& a, const ClusterPlan& pl) {
  int fit = 0;
  dev::dispatch(a, [&](auto t, auto k) {
    using T = typename decltype(t)::type;
    fit = clusters_that_fit(kd_cluster_persistent_kernel<T, T, decltype(k)::value>, pl);
  });
  return static_cast<int>(std::min<int64_t>(a.rows, fit));
}

// want: blocks per row, 0 for the smallest whose two caches fit one block per SM.
dev::Variant cluster_persistent(int want) {
  auto plan = [want](const KdLossArgs& a) { return cluster_plan(a, dev::device(), 2, false, want); };
  dev::Variant v;
  v.setting = want ? "cluster=" + std::to_string(want) : "cluster=auto";
  v.why_not = [plan](const KdLossArgs& a) {
    const ClusterPlan pl = plan(a);
    if (!pl.why_not.empty()) return pl.why_not;
    if (wave_clusters(a, pl) < 1)
      return "no cluster of " + std::to_string(pl.cluster) + " blocks with " + std::to_string(pl.smem) +
             " bytes of shared memory each fits the device";
    return std::string();
  };
  v.describe = [plan](const KdLossArgs& a) {
    const ClusterPlan pl = plan(a);
    return "cluster-persistent/" + std::to_string(pl.cluster) + " blocks x " + std::to_string(kMaxThreads) +
           " threads, " + std::to_string(wave_clusters(a, pl)) + " clusters in one wave, next row prefetched";
  };
  v.launch = [plan](const KdLossArgs& a, unsigned* arrivals, cudaStream_t stream) {
    const ClusterPlan pl = plan(a);
    const unsigned grid = static_cast<unsigned>(wave_clusters(a, pl) * pl.cluster);
    const Params p = dev::params_of(a, arrivals);
    dev::dispatch(a, [&](auto t, auto k) {
      using T = typename decltype(t)::type;
      dev::launch_kernel(kd_cluster_persistent_kernel<T, T, decltype(k)::value>, grid, kMaxThreads, pl.smem,
                         static_cast<unsigned>(pl.cluster), stream, p, pl.slice);
    });
  };
  return v;
}

}  // namespace
}  // namespace distill::kernels

int main(int argc, char** argv) {
  std::vector<dev::Variant> variants;
  for (int cluster : {0, 1, 2, 4, 8}) variants.push_back(distill::kernels::cluster_persistent(cluster));
  return dev::run_program(argc, argv, "kd_loss_cluster_persistent",
                          "the cluster kernel in one wave of resident clusters, the next row in flight", variants);
}
