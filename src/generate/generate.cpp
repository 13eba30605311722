#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "distill/error.h"
#include "distill/generate/generate.h"
#include "distill/models/model.h"

namespace distill {

namespace {

// The next id from the last position's logits [V] (float32).
int64_t pick(const at::Tensor& logits_in, const GenerateOptions& o, at::Generator& gen) {
  if (o.temperature <= 0.0) return logits_in.argmax().item<int64_t>();
  at::Tensor logits = logits_in / o.temperature;
  const int64_t V = logits.size(0);
  if (o.top_k > 0 && o.top_k < V) {
    const at::Tensor kth = std::get<0>(logits.topk(o.top_k)).select(0, o.top_k - 1);
    logits = logits.masked_fill(logits.lt(kth), -std::numeric_limits<float>::infinity());
  }
  if (o.top_p < 1.0) {
    auto [sorted, order] = logits.sort(/*dim=*/0, /*descending=*/true);
    const at::Tensor cumulative = sorted.softmax(0).cumsum(0);
    // Drop a token when the tokens before it already reach top_p (the most likely one always stays).
    at::Tensor drop = (cumulative - sorted.softmax(0)).ge(o.top_p);
    logits = logits.index_put({order.masked_select(drop)}, at::scalar_tensor(-std::numeric_limits<float>::infinity()));
  }
  const at::Tensor probs = logits.softmax(0);
  return at::multinomial(probs, 1, /*replacement=*/false, gen).item<int64_t>();
}

}  // namespace

void check_generate_options(const GenerateOptions& o) {
  if (o.max_new_tokens < 1) throw Error("--max-new-tokens: must be >= 1, got " + std::to_string(o.max_new_tokens));
  if (!(o.temperature >= 0.0) || !std::isfinite(o.temperature))
    throw Error("--temperature: must be >= 0 (0 = greedy), got " + std::to_string(o.temperature));
  if (o.top_k < 0) throw Error("--top-k: must be >= 0 (0 = all tokens), got " + std::to_string(o.top_k));
  if (!(o.top_p > 0.0 && o.top_p <= 1.0)) throw Error("--top-p: must be in (0, 1], got " + std::to_string(o.top_p));
}

std::vector<int64_t> generate_ids(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                                  const c10::Device& device, const std::function<void(int64_t)>& on_token) {
  check_generate_options(o);
  if (prompt.empty()) throw Error("generate: the prompt has no tokens; give a prompt (or a tokenizer with a bos token)");
  torch::NoGradGuard no_grad;
  model.set_training(false);
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  std::vector<int64_t> all = prompt, out;
  const int64_t limit = model.max_positions() > 0 ? model.max_positions() : std::numeric_limits<int64_t>::max();
  KvCache cache;
  at::Tensor next = torch::tensor(prompt, torch::kInt64).unsqueeze(0).to(device);
  for (int64_t step = 0; step < o.max_new_tokens && static_cast<int64_t>(all.size()) < limit; ++step) {
    at::Tensor logits;
    if (model.has_kv_cache()) {
      logits = model.forward_cached(next, cache);
    } else {
      logits = model.forward(torch::tensor(all, torch::kInt64).unsqueeze(0).to(device));
    }
    const at::Tensor last = logits.select(0, 0).select(0, logits.size(1) - 1).to(torch::kCPU, torch::kFloat);
    const int64_t id = pick(last, o, gen);
    out.push_back(id);
    all.push_back(id);
    if (on_token) on_token(id);
    if (o.eos_id && id == *o.eos_id) break;
    next = torch::tensor({id}, torch::kInt64).unsqueeze(0).to(device);
  }
  return out;
}

}  // namespace distill
