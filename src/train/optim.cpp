#include <torch/torch.h>

#include <sstream>
#include <type_traits>

#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/train/optim.h"

namespace distill {

namespace {

// torch::optim keys per-parameter state by the parameter's TensorImpl: as a string of the pointer in
// LibTorch 1.x, as the pointer itself in later versions. Build whichever this LibTorch uses.
using StateMap = std::remove_reference_t<decltype(std::declval<torch::optim::Optimizer&>().state())>;
template <class Key = StateMap::key_type> Key param_key(const at::Tensor& p) {
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream key;
    key << p.unsafeGetTensorImpl();
    return key.str();
  } else {
    return static_cast<Key>(p.unsafeGetTensorImpl());
  }
}

std::vector<at::Tensor> optimizer_params(torch::optim::Optimizer& optimizer) {
  std::vector<at::Tensor> out;
  for (auto& group : optimizer.param_groups())
    for (auto& p : group.params()) out.push_back(p);
  return out;
}

// The state tensors of one optimizer kind, by suffix, with accessors.
template <class State> void save_adam_like(State& s, const std::string& name, NamedTensors& out) {
  out.emplace_back(name + ".step", torch::tensor(s.step(), torch::kInt64));
  out.emplace_back(name + ".exp_avg", s.exp_avg());
  out.emplace_back(name + ".exp_avg_sq", s.exp_avg_sq());
}

const at::Tensor& need(const SafetensorsContents& c, const std::string& key, const at::Tensor& like,
                       const std::string& origin) {
  const at::Tensor* t = c.find(key);
  if (!t) throw Error(origin + ": optimizer state '" + key + "' is missing; the checkpoint does not match this run's optimizer");
  if (like.defined() && t->sizes() != like.sizes())
    throw Error(origin + ": optimizer state '" + key + "' has the wrong shape for its parameter");
  return *t;
}

}  // namespace

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const OptimConfig& c, const std::vector<at::Tensor>& params) {
  if (c.name == "sgd")
    return std::make_unique<torch::optim::SGD>(
        params, torch::optim::SGDOptions(c.lr).momentum(c.momentum).nesterov(c.nesterov).weight_decay(c.weight_decay));
  if (c.name == "adam")
    return std::make_unique<torch::optim::Adam>(
        params, torch::optim::AdamOptions(c.lr).betas({c.betas[0], c.betas[1]}).eps(c.eps).weight_decay(c.weight_decay));
  if (c.name == "adamw")
    return std::make_unique<torch::optim::AdamW>(
        params, torch::optim::AdamWOptions(c.lr).betas({c.betas[0], c.betas[1]}).eps(c.eps).weight_decay(c.weight_decay));
  throw Error("optim.name: unknown optimizer '" + c.name + "' (sgd | adam | adamw)");
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

NamedTensors optimizer_state(torch::optim::Optimizer& optimizer, const std::string& optim_name,
                             const std::vector<std::string>& param_names) {
  NamedTensors out;
  auto params = optimizer_params(optimizer);
  TORCH_INTERNAL_ASSERT(params.size() == param_names.size());
  auto& state = optimizer.state();
  for (size_t i = 0; i < params.size(); ++i) {
    auto it = state.find(param_key(params[i]));
    if (it == state.end()) continue;  // no step taken yet for this parameter
    const std::string& name = param_names[i];
    if (optim_name == "sgd") {
      auto& s = static_cast<torch::optim::SGDParamState&>(*it->second);
      if (s.momentum_buffer().defined()) out.emplace_back(name + ".momentum_buffer", s.momentum_buffer());
    } else if (optim_name == "adam") {
      save_adam_like(static_cast<torch::optim::AdamParamState&>(*it->second), name, out);
    } else {
      save_adam_like(static_cast<torch::optim::AdamWParamState&>(*it->second), name, out);
    }
  }
  return out;
}

void load_optimizer_state(torch::optim::Optimizer& optimizer, const std::string& optim_name,
                          const std::vector<std::string>& param_names, const SafetensorsContents& c,
                          const std::string& prefix, const std::string& origin) {
  auto params = optimizer_params(optimizer);
  TORCH_INTERNAL_ASSERT(params.size() == param_names.size());
  auto& state = optimizer.state();
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < params.size(); ++i) {
    const std::string name = prefix + param_names[i];
    const at::Tensor& p = params[i];
    auto copy_of = [&](const at::Tensor& t) { return t.to(p.device(), p.scalar_type()).clone(); };
    if (optim_name == "sgd") {
      const at::Tensor* buf = c.find(name + ".momentum_buffer");
      if (!buf) continue;
      auto s = std::make_unique<torch::optim::SGDParamState>();
      s->momentum_buffer(copy_of(need(c, name + ".momentum_buffer", p, origin)));
      state[param_key(p)] = std::move(s);
      continue;
    }
    if (!c.find(name + ".step")) continue;
    int64_t step = need(c, name + ".step", at::Tensor(), origin).item<int64_t>();
    auto fill = [&](auto s) {
      s->step(step);
      s->exp_avg(copy_of(need(c, name + ".exp_avg", p, origin)));
      s->exp_avg_sq(copy_of(need(c, name + ".exp_avg_sq", p, origin)));
      state[param_key(p)] = std::move(s);
    };
    if (optim_name == "adam") fill(std::make_unique<torch::optim::AdamParamState>());
    else fill(std::make_unique<torch::optim::AdamWParamState>());
  }
}

}  // namespace distill
