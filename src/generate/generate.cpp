#include <torch/torch.h>

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
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

std::vector<std::vector<int64_t>> generate_batch(Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                                 const GenerateOptions& o, const std::vector<uint64_t>& seeds,
                                                 const c10::Device& device,
                                                 const std::function<void(size_t, int64_t)>& on_token,
                                                 int64_t logprobs_k, std::vector<std::vector<TopLogprobs>>* logprobs) {
  check_generate_options(o);
  TORCH_CHECK(!prompts.empty() && seeds.size() == prompts.size(), "generate_batch: one seed per prompt");
  const size_t B = prompts.size();
  const size_t T = prompts[0].size();
  if (T == 0) throw Error("generate: the prompt has no tokens; give a prompt (or a tokenizer with a bos token)");
  for (const auto& p : prompts) TORCH_CHECK(p.size() == T, "generate_batch: prompts of one batch have one length");
  torch::NoGradGuard no_grad;
  model.set_training(false);
  std::vector<at::Generator> gens;
  for (uint64_t seed : seeds) gens.push_back(at::detail::createCPUGenerator(seed));
  std::vector<std::vector<int64_t>> all = prompts, out(B);
  std::vector<bool> done(B, false);
  const bool record = logprobs != nullptr && logprobs_k > 0;
  if (record) logprobs->assign(B, {});
  const int64_t limit = model.max_positions() > 0 ? model.max_positions() : std::numeric_limits<int64_t>::max();
  auto ids_tensor = [&](size_t from) {
    at::Tensor t = at::empty({static_cast<int64_t>(B), static_cast<int64_t>(all[0].size() - from)}, at::kLong);
    for (size_t b = 0; b < B; ++b)
      std::copy(all[b].begin() + static_cast<std::ptrdiff_t>(from), all[b].end(), t[static_cast<int64_t>(b)].data_ptr<int64_t>());
    return t.to(device);
  };
  KvCache cache;
  at::Tensor next = ids_tensor(0);
  for (int64_t step = 0; step < o.max_new_tokens && static_cast<int64_t>(all[0].size()) < limit; ++step) {
    const at::Tensor logits = model.has_kv_cache() ? model.forward_cached(next, cache) : model.forward(ids_tensor(0));
    const at::Tensor last = logits.select(1, logits.size(1) - 1).to(torch::kCPU, torch::kFloat);
    at::Tensor top_values, top_ids;
    if (record) {
      std::tie(top_values, top_ids) = last.log_softmax(1).topk(std::min<int64_t>(logprobs_k, last.size(1)), 1);
      top_values = top_values.contiguous();
      top_ids = top_ids.contiguous();
    }
    // Rows decode in lockstep; a row past its end of sequence keeps a place in the batch but adds nothing.
    for (size_t b = 0; b < B; ++b) {
      const int64_t id = done[b] ? all[b].back() : pick(last[static_cast<int64_t>(b)], o, gens[b]);
      all[b].push_back(id);
      if (done[b]) continue;
      out[b].push_back(id);
      if (record) {
        const int64_t k = top_ids.size(1);
        const int64_t* ti = top_ids.data_ptr<int64_t>() + static_cast<int64_t>(b) * k;
        const float* tv = top_values.data_ptr<float>() + static_cast<int64_t>(b) * k;
        (*logprobs)[b].push_back(TopLogprobs{std::vector<int64_t>(ti, ti + k), std::vector<float>(tv, tv + k)});
      }
      if (on_token) on_token(b, id);
      if (o.eos_id && id == *o.eos_id) done[b] = true;
    }
    if (std::all_of(done.begin(), done.end(), [](bool d) { return d; })) break;
    next = ids_tensor(all[0].size() - 1);
  }
  return out;
}

std::vector<int64_t> generate_ids(Model& model, const std::vector<int64_t>& prompt, const GenerateOptions& o,
                                  const c10::Device& device, const std::function<void(int64_t)>& on_token) {
  if (prompt.empty()) throw Error("generate: the prompt has no tokens; give a prompt (or a tokenizer with a bos token)");
  return generate_batch(model, {prompt}, o, {o.seed}, device,
                        [&](size_t, int64_t id) {
                          if (on_token) on_token(id);
                        })[0];
}

}  // namespace distill
