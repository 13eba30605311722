#include "distill/models/model.h"

#include <torch/torch.h>

#include <set>

#include <nlohmann/json.hpp>
#include <sstream>

#include "distill/config/config.h"
#include "distill/error.h"
#include "models/builders.h"

namespace distill {

std::string shape_text(at::IntArrayRef s) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < s.size(); ++i) out << (i ? ", " : "") << s[i];
  out << "]";
  return out.str();
}

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
  if (config.path) return models::load_torchscript_model(*config.path, role);
  const auto& registry = models::builtin_models();
  auto it = registry.find(*config.arch);
  if (it == registry.end()) {
    std::string names;
    for (const auto& [name, factory] : registry) names += (names.empty() ? "" : ", ") + name;
    throw Error(role + ".arch: unknown architecture '" + *config.arch + "'; built-in: " + names);
  }
  return it->second(config, io, role);
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
  try {
    std::string kind = arch.at("arch").get<std::string>();
    if (kind == "torchscript")
      throw Error(origin + ": holds the weights of a TorchScript model; give its module as 'path' in the config");
    out.arch = kind;
    out.hidden = arch.at("hidden").get<std::vector<int64_t>>();
    out.dropout = arch.value("dropout", 0.0);
    if (kind == "cnn") {
      out.input_shape = arch.at("input_shape").get<std::vector<int64_t>>();
      out.channels = arch.at("channels").get<std::vector<int64_t>>();
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(origin + ": the 'arch' metadata is malformed (" + std::string(e.what()) + "); give the arch in the config");
  }
  return out;
}

void check_model_io(Model& model, const IoShape& io, const std::string& role, const c10::Device& device,
                    bool allow_wider) {
  torch::NoGradGuard no_grad;
  model.set_training(false);
  at::Tensor probe = torch::zeros({2, io.features}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  at::Tensor out;
  try {
    out = model.forward(probe);
  } catch (const Error&) {
    throw;
  } catch (const c10::Error& e) {
    std::string what = e.what_without_backtrace();
    throw Error(role + ": the model cannot take rows of " + std::to_string(io.features) + " features (the data's width): " +
                what.substr(0, what.find('\n')));
  }
  bool fits = out.dim() == 2 && out.size(0) == 2 && (out.size(1) == io.classes || (allow_wider && out.size(1) > io.classes));
  if (!fits)
    throw Error(role + ": " + model.describe() + " outputs " + shape_text(out.sizes()) + " for a batch of 2 rows, but the data has " +
                std::to_string(io.classes) + " classes (expected [2, " + std::to_string(io.classes) + "]" +
                (out.dim() == 2 && out.size(1) > io.classes && !allow_wider
                     ? "; if the extra outputs are padding, set loss.vocab to \"truncate\")"
                     : ")"));
}

}  // namespace distill
