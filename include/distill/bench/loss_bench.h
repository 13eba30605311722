// `distill bench loss`: forward + backward of the fused loss and of the ATen composite, timed side by side in
// one process (median of repeats after warm-up), with the effective bandwidth under the
// read-student + read-teacher + write-gradient model and the extra peak memory each path needs.
// With `hidden` > 0 the two paths start from hidden states and output heads instead of logits: the chunked
// fused-linear loss that language models train with (output_loss.h) against linear -> full logits ->
// composite, with the head's matrix products counted in the rate (GFLOP/s) instead of bytes.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace distill {

struct LossBenchOptions {
  int64_t rows = 4096;
  int64_t vocab = 32000;
  std::string dtype = "f32";     // f32 | bf16 | f16
  std::string device = "cpu";    // cpu | cuda | cuda:N
  std::string kind = "forward_kl";
  int64_t repeats = 20;
  int64_t warmup = 3;
  int64_t threads = 0;           // CPU: 0 = one per core
  bool composite = true;         // also time the composite
  int64_t topk = 0;              // > 0: a sparse teacher of the K largest logits per row (forward_kl only)
  std::string topk_tail = "ignore";  // ignore | tail
  int64_t hidden = 0;            // > 0: hidden states [rows, H] and heads [vocab, H] (student's and teacher's)
};

// Returns one JSON object: shape, dtype, device, fused and composite {median_ms, min_ms, gb_per_s,
// extra_peak_bytes}, speedup, gradient bytes. With topk > 0 both paths take the sparse teacher, built once
// before timing (as a teacher cache would hand it over). With hidden > 0: "hidden", "chunk_rows", the rate as
// gflop_per_s, "parameter_gradient_bytes", and "peak_ratio" (fused / composite extra peak). Throws
// distill::Error for bad options.
nlohmann::json run_loss_bench(const LossBenchOptions& options);

// The human table of a run_loss_bench() result.
std::string format_loss_bench(const nlohmann::json& result);

}  // namespace distill
