// Text generation from a causal language model: greedy or sampled decoding, one token at a time, with the
// model's KV cache where it has one (built-in language models) and a full forward per token otherwise
// (TorchScript language models).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include <c10/core/Device.h>

namespace distill {

class Model;

struct GenerateOptions {
  int64_t max_new_tokens = 64;
  double temperature = 0.0;  // 0: greedy (the most likely token; ties to the lowest id, as torch.argmax)
  int64_t top_k = 0;         // > 0: sample among the k most likely tokens only
  double top_p = 1.0;        // < 1: sample among the fewest most likely tokens whose probability reaches p
  uint64_t seed = 0;         // sampling is reproducible for a seed
  std::optional<int64_t> eos_id;  // generation stops after this token
};

// The model's own distribution at one generated position (temperature 1, before top-k / top-p): its k most
// likely ids and their log-probabilities, most likely first.
struct TopLogprobs {
  std::vector<int64_t> ids;
  std::vector<float> logprobs;
};

// The new ids after `prompt` (which must not be empty). `on_token` (optional) sees each new id as it comes.
std::vector<int64_t> generate_ids(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& options,
                                  const c10::Device& device, const std::function<void(int64_t)>& on_token = {});

// Prompts of one length decoded together, in lockstep, with one KV cache: row b samples from its own generator,
// seeded seeds[b], so that what a prompt gets does not depend on the batch it went in (generate_ids(p, o)
// equals generate_batch({p}, o, {o.seed})). Rows stop at eos_id (or max_new_tokens, or the model's positions).
// With `logprobs` and logprobs_k > 0, (*logprobs)[b][i] is the top logprobs_k of the distribution that new
// token i of row b was drawn from, in the same pass.
std::vector<std::vector<int64_t>> generate_batch(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerateOptions& options, const std::vector<uint64_t>& seeds,
                                                 const c10::Device& device,
                                                 const std::function<void(size_t, int64_t)>& on_token = {},
                                                 int64_t logprobs_k = 0,
                                                 std::vector<std::vector<TopLogprobs>>* logprobs = nullptr);

// Checks the options' ranges (distill::Error naming the command-line flag).
void check_generate_options(const GenerateOptions& options);

}  // namespace distill
