// TorchScript models (torch.jit.save output): usable as teachers and as trainable students; a TorchScript
// student is saved back as TorchScript.
#include <torch/script.h>
#include <torch/torch.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "models/builders.h"

namespace distill::models {

namespace {

std::string first_line(const std::string& text) {
  auto nl = text.find('\n');
  return nl == std::string::npos ? text : text.substr(0, nl);
}

// The TorchScript interpreter puts the Python-style error ("RuntimeError: mat1 and mat2 shapes ...") last,
// after a traceback; that line is the one a user needs.
std::string useful_line(const std::string& text) {
  std::string best;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    if (line.find_first_not_of(" \t") != std::string::npos) best = line;
    if (line.find("Error: ") != std::string::npos) return line.substr(line.find_first_not_of(" \t"));
    pos = nl + 1;
  }
  return best;
}

class TorchScriptModel : public Model {
 public:
  TorchScriptModel(torch::jit::Module module, std::string path, std::string role)
      : module_(std::move(module)), path_(std::move(path)), role_(std::move(role)) {}

  ModelOutput forward_output(const at::Tensor& x) override {
    c10::IValue out;
    try {
      out = module_.forward({x});
    } catch (const c10::Error& e) {
      throw Error(role_ + ".path: " + path_ + ": forward() failed on input " + shape_text(x.sizes()) + ": " +
                  useful_line(e.what_without_backtrace()));
    } catch (const std::exception& e) {
      throw Error(role_ + ".path: " + path_ + ": forward() failed on input " + shape_text(x.sizes()) + ": " +
                  useful_line(e.what()));
    }
    if (!out.isTensor())
      throw Error(role_ + ".path: " + path_ + ": forward() must return one Tensor of logits ([N, classes], or [B, T, "
                  "vocab] for a language model), returned " + out.tagKind());
    return ModelOutput::of_logits(out.toTensor());
  }
  NamedTensors state() override {
    NamedTensors out;
    for (const auto& p : module_.named_parameters(/*recurse=*/true)) out.emplace_back(p.name, p.value);
    for (const auto& b : module_.named_buffers(/*recurse=*/true)) out.emplace_back(b.name, b.value);
    return out;
  }
  std::vector<at::Tensor> parameters() override {
    std::vector<at::Tensor> out;
    for (const auto& p : module_.parameters(/*recurse=*/true)) out.push_back(p);
    return out;
  }
  void set_training(bool on) override { module_.train(on); }
  void to(const c10::Device& device) override { module_.to(device); }
  void cast(c10::ScalarType dtype) override { module_.to(dtype); }
  nlohmann::json arch_json() const override { return {{"arch", "torchscript"}, {"source", path_}}; }
  std::string describe() const override { return "TorchScript " + path_; }
  bool is_torchscript() const override { return true; }
  void save_torchscript(const std::string& path) override {
    std::ostringstream bytes;
    module_.save(bytes);
    write_file_atomic(path, bytes.str());
  }

 private:
  torch::jit::Module module_;
  std::string path_;
  std::string role_;
};

}  // namespace

std::unique_ptr<Model> load_torchscript_model(const std::string& path, const std::string& role) {
  if (!paths::exists(path))
    throw Error(role + ".path: " + path + " not found; check the path (relative paths are relative to the config file)");
  torch::jit::Module module;
  try {
    module = torch::jit::load(path, torch::kCPU);
  } catch (const c10::Error& e) {
    throw Error(role + ".path: " + path + " is not a TorchScript module (save one with torch.jit.save(torch.jit.script(m), path)): " +
                first_line(e.what_without_backtrace()));
  } catch (const std::exception& e) {
    throw Error(role + ".path: " + path + " is not a TorchScript module: " + first_line(e.what()));
  }
  return std::make_unique<TorchScriptModel>(std::move(module), path, role);
}

}  // namespace distill::models
