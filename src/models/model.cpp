#include "distill/models/model.h"

#include <torch/torch.h>

#include <set>

#include <nlohmann/json.hpp>
#include <sstream>

#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/models/hf_folder.h"
#include "distill/models/registry.h"
#include "models/builders.h"

namespace distill {

std::string shape_text(at::IntArrayRef s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

at::Tensor ModelOutput::full_logits() const {
  if (logits.defined()) return logits;
  TORCH_INTERNAL_ASSERT(hidden.defined() && head_weight.defined(), "a model output needs logits or hidden + head");
  return head_bias.defined() ? at::linear(hidden, head_weight, head_bias) : at::linear(hidden, head_weight);
}

at::Tensor Model::forward(const at::Tensor& x) { return forward_output(x).full_logits(); }

at::Tensor Model::forward_cached(const at::Tensor& ids, KvCache& cache) {
  throw Error(describe() + ": has no KV cache; generate by running forward() over the whole sequence");
}

nlohmann::json Model::hf_config() const { return nullptr; }

void Model::save_torchscript(const std::string& path) {
  throw Error(path + ": only TorchScript models can be saved as TorchScript; built-in models are saved as safetensors");
}

int64_t Model::parameter_count() {
  int64_t n = 0;
  for (const auto& p : parameters()) n += p.numel();
  return n;
}

void Model::set_requires_grad(bool on) {
  for (auto& p : parameters()) p.requires_grad_(on);
}

std::unique_ptr<Model> make_model(const ModelConfig& config, const IoShape& io, const std::string& role) {
  if (config.path && is_hf_folder(*config.path)) return load_hf_model(*config.path, role + ".path");
  if (config.path) return models::load_torchscript_model(*config.path, role);
  const ArchEntry& entry = arch_named(*config.arch, role + ".arch");
  ModelConfig checked = config;
  checked.options = entry.options.check(config.options, role);
  return entry.build(checked, io, role);
}

void load_weights(Model& model, const SafetensorsContents& weights, const std::string& origin) {
  std::vector<std::string> missing, misshaped, unexpected;
  std::set<std::string> wanted;
  NamedTensors state = model.state();
  for (auto& [name, dst] : state) {
    wanted.insert(name);
    const at::Tensor* src = weights.find(name);
    if (!src) {
      missing.push_back(name + " " + shape_text(dst.sizes()));
    } else if (src->sizes() != dst.sizes()) {
      misshaped.push_back(name + " is " + shape_text(src->sizes()) + ", the model needs " + shape_text(dst.sizes()));
    } else if (!at::isFloatingType(src->scalar_type()) && at::isFloatingType(dst.scalar_type())) {
      misshaped.push_back(name + " has dtype " + std::string(c10::toString(src->scalar_type())) + ", the model needs floating point");
    }
  }
  for (const auto& [name, t] : weights.tensors)
    if (!wanted.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !misshaped.empty() || !unexpected.empty()) {
    std::ostringstream msg;
    msg << origin << ": weights do not fit " << model.describe() << ":";
    auto list = [&](const char* what, const std::vector<std::string>& items) {
      if (items.empty()) return;
      msg << " " << what << ": ";
      for (size_t i = 0; i < items.size(); ++i) msg << (i ? "; " : "") << items[i];
      msg << ".";
    };
    list("missing", missing);
    list("wrong shape", misshaped);
    list("not in the model", unexpected);
    msg << " Check that the architecture in the config matches the one the weights were trained with.";
    throw Error(msg.str());
  }
  torch::NoGradGuard no_grad;
  for (auto& [name, dst] : state) dst.copy_(*weights.find(name));
}

ModelConfig arch_from_metadata(const ModelConfig& config, const Metadata& metadata, const std::string& origin) {
  auto it = metadata.find("arch");
  if (it == metadata.end())
    throw Error(origin + ": carries no 'arch' metadata (it was not written by distill); give the model's arch in the config");
  nlohmann::json arch = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  ModelConfig out = config;
  if (!arch.is_object() || !arch.contains("arch") || !arch["arch"].is_string())
    throw Error(origin + ": the 'arch' metadata is malformed (no \"arch\" name); give the arch in the config");
  const std::string kind = arch["arch"].get<std::string>();
  if (kind == "torchscript")
    throw Error(origin + ": holds the weights of a TorchScript model; give its module as 'path' in the config");
  const ArchEntry* entry = arch_registry().count(kind) ? &arch_registry().at(kind) : nullptr;
  if (!entry) throw Error(origin + ": the 'arch' metadata names '" + kind + "', which this build does not know");
  // The arch's own keys, as stored; what the data decides (in/out sizes) is not an option.
  out.arch = kind;
  out.options = nlohmann::json::object();
  for (const auto& f : entry->options.fields)
    if (arch.contains(f.key)) out.options[f.key] = arch[f.key];
  try {
    out.options = entry->options.check(out.options, origin + " arch");
  } catch (const Error& e) {
    throw Error(origin + ": the 'arch' metadata is malformed (" + std::string(e.what()) + "); give the arch in the config");
  }
  return out;
}

int64_t check_model_io(Model& model, const IoShape& io, const std::string& role, const c10::Device& device,
                       OutputWidth width) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  if (io.tokens() && model.max_positions() > 0 && io.seq_len > model.max_positions())
    throw Error(role + ": " + model.describe() + " takes at most " + std::to_string(model.max_positions()) +
                " positions (max_position_embeddings), below data.seq_len " + std::to_string(io.seq_len) +
                "; shorten data.seq_len");
  // Rows: [2, features] float32 -> [2, classes]. Tokens: [2, T] int64 (a short T) -> [2, T, vocab].
  const int64_t t = std::min<int64_t>(io.seq_len, 4);
  at::Tensor probe = io.tokens() ? torch::zeros({2, t}, torch::TensorOptions().dtype(torch::kInt64).device(device))
                                 : torch::zeros({2, io.features}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  const std::string input = io.tokens() ? "token sequences [2, " + std::to_string(t) + "] (int64)"
                                        : "rows of " + std::to_string(io.features) + " features (the data's width)";
  at::Tensor out;
  try {
    out = model.forward(probe);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    throw Error(role + ": the model cannot take " + input + ": " + what.substr(0, what.find('\n')));
  }
  const std::vector<int64_t> expected = io.tokens() ? std::vector<int64_t>{2, t, io.classes} : std::vector<int64_t>{2, io.classes};
  const int64_t dims = static_cast<int64_t>(expected.size());
  bool leading = out.dim() == dims;
  for (int64_t d = 0; leading && d + 1 < dims; ++d) leading = out.size(d) == expected[d];
  const int64_t got = leading ? out.size(dims - 1) : -1;
  if (leading && (got == io.classes || (width == OutputWidth::at_least && got > io.classes))) return got;
  const std::string what = io.tokens() ? " for tokens [2, " + std::to_string(t) + "], but "
                                       : " for a batch of 2 rows, but the data has ";
  const std::string need = io.tokens() ? std::to_string(io.classes) + " outputs are needed" : std::to_string(io.classes) + " classes";
  std::string hint = ")";
  if (leading && got > io.classes && width == OutputWidth::exact) hint = "; if the extra outputs are padding, set loss.vocab to \"truncate\")";
  if (leading && got < io.classes && io.tokens()) hint = "; the model's vocabulary is smaller than the ids it must score)";
  throw Error(role + ": " + model.describe() + " outputs " + shape_text(out.sizes()) + what + need + " (expected " +
              shape_text(expected) + hint);
}

}  // namespace distill
