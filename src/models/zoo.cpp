// The built-in zoo. Each architecture is an nn::Sequential so that parameter names ("0.weight", ...) are
// exactly those of the same nn.Sequential in PyTorch (README: "Models"), and a Python user can
// load_state_dict() our safetensors output.
#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "distill/config/schema.h"
#include "distill/error.h"
#include "models/builders.h"

namespace distill::models {

// arch "mlp": hidden Linear + ReLU (+ Dropout) layers, then the output Linear.
struct MlpOptions {
  std::vector<int64_t> hidden;
  double dropout = 0.0;
};
template <class F> void visit_fields(MlpOptions& c, F&& f) {
  f("hidden", c.hidden, "mlp, cnn: hidden layer widths (cnn: of the dense head)");
  f("dropout", c.dropout, "mlp, cnn: dropout probability after each hidden activation");
}

// arch "cnn": conv blocks on the rows reshaped to [C, H, W], then a dense head.
struct CnnOptions {
  std::vector<int64_t> hidden;
  double dropout = 0.0;
  std::vector<int64_t> input_shape;
  std::vector<int64_t> channels;
};
template <class F> void visit_fields(CnnOptions& c, F&& f) {
  f("hidden", c.hidden, "mlp, cnn: hidden layer widths (cnn: of the dense head)");
  f("dropout", c.dropout, "mlp, cnn: dropout probability after each hidden activation");
  f("input_shape", c.input_shape, "cnn: [C, H, W] the features are reshaped to");
  f("channels", c.channels, "cnn: output channels of each 3x3 conv + ReLU + 2x2 max-pool block");
}

namespace {

void check_widths(const std::vector<int64_t>& v, const std::string& key) {
  for (size_t i = 0; i < v.size(); ++i)
    if (v[i] <= 0) schema::range_error(key + "[" + std::to_string(i) + "]", "> 0", std::to_string(v[i]));
}

void check_dropout(double dropout, const std::string& key) {
  if (!(dropout >= 0.0 && dropout < 1.0)) schema::range_error(key, "in [0, 1)", schema::fmt_num(dropout));
}

void validate_mlp(const MlpOptions& c, const std::string& section) {
  check_widths(c.hidden, section + ".hidden");
  check_dropout(c.dropout, section + ".dropout");
}

void validate_cnn(const CnnOptions& c, const std::string& section) {
  check_widths(c.hidden, section + ".hidden");
  check_dropout(c.dropout, section + ".dropout");
  if (c.input_shape.size() != 3)
    throw Error(section + ".input_shape: cnn needs [C, H, W], got " + std::to_string(c.input_shape.size()) + " values");
  check_widths(c.input_shape, section + ".input_shape");
  if (c.channels.empty()) throw Error(section + ".channels: cnn needs at least one conv block, e.g. [16, 32]");
  check_widths(c.channels, section + ".channels");
}

class SequentialModel : public Model {
 public:
  SequentialModel(torch::nn::Sequential net, nlohmann::json arch, std::string description)
      : net_(std::move(net)), arch_(std::move(arch)), description_(std::move(description)) {}

  ModelOutput forward_output(const at::Tensor& x) override { return ModelOutput::of_logits(net_->forward(x.to(dtype_))); }
  NamedTensors state() override {
    NamedTensors out;
    for (const auto& p : net_->named_parameters()) out.emplace_back(p.key(), p.value());
    for (const auto& b : net_->named_buffers()) out.emplace_back(b.key(), b.value());
    return out;
  }
  std::vector<at::Tensor> parameters() override { return net_->parameters(); }
  void set_training(bool on) override { net_->train(on); }
  void to(const c10::Device& device) override { net_->to(device); }
  void cast(c10::ScalarType dtype) override {
    net_->to(dtype);
    dtype_ = dtype;
  }
  nlohmann::json arch_json() const override { return arch_; }
  std::string describe() const override { return description_; }

 private:
  torch::nn::Sequential net_;
  c10::ScalarType dtype_ = c10::kFloat;  // rows are given in float32 and cast to the weights' dtype
  nlohmann::json arch_;
  std::string description_;
};

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

// Hidden Linear + ReLU (+ Dropout) layers, then the output Linear.
void append_dense(torch::nn::Sequential& net, int64_t in, const std::vector<int64_t>& hidden, double dropout,
                  int64_t out) {
  for (int64_t h : hidden) {
    net->push_back(torch::nn::Linear(in, h));
    net->push_back(torch::nn::ReLU());
    if (dropout > 0) net->push_back(torch::nn::Dropout(dropout));
    in = h;
  }
  net->push_back(torch::nn::Linear(in, out));
}

// Rows only: a token model needs an arch that embeds tokens.
void require_rows(const IoShape& io, const std::string& role, const std::string& arch) {
  if (io.tokens())
    throw Error(role + ".arch: \"" + arch + "\" classifies rows of features; the data is token sequences, which need a "
                "language model (arch \"llama\", a Hugging Face folder or a TorchScript LM)");
}

std::unique_ptr<Model> make_mlp(const ModelConfig& config, const IoShape& io, const std::string& role) {
  require_rows(io, role, "mlp");
  const MlpOptions c = schema::read_fields<MlpOptions>(config.options, role);
  torch::nn::Sequential net;
  append_dense(net, io.features, c.hidden, c.dropout, io.classes);
  nlohmann::json arch = {{"arch", "mlp"}, {"in_features", io.features}, {"hidden", c.hidden},
                         {"dropout", c.dropout}, {"out_features", io.classes}};
  return std::make_unique<SequentialModel>(
      net, arch, "mlp " + std::to_string(io.features) + " -> " + list_text(c.hidden) + " -> " + std::to_string(io.classes));
}

std::unique_ptr<Model> make_cnn(const ModelConfig& config, const IoShape& io, const std::string& role) {
  require_rows(io, role, "cnn");
  const CnnOptions c = schema::read_fields<CnnOptions>(config.options, role);
  const auto& s = c.input_shape;
  int64_t volume = s[0] * s[1] * s[2];
  if (volume != io.features)
    throw Error(role + ".input_shape: " + list_text(s) + " holds " + std::to_string(volume) +
                " values but the data has " + std::to_string(io.features) + " features per row");
  int64_t h = s[1], w = s[2];
  for (size_t i = 0; i < c.channels.size(); ++i) {
    if (h < 2 || w < 2)
      throw Error(role + ".channels: " + std::to_string(c.channels.size()) + " conv blocks each halve H and W, but " +
                  list_text(s) + " is down to " + std::to_string(h) + "x" + std::to_string(w) +
                  " before block " + std::to_string(i + 1) + "; use fewer channels entries");
    h /= 2;
    w /= 2;
  }
  torch::nn::Sequential net;
  net->push_back(torch::nn::Unflatten(torch::nn::UnflattenOptions(1, {s[0], s[1], s[2]})));
  int64_t in = s[0];
  for (int64_t ch : c.channels) {
    net->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, ch, 3).padding(1)));
    net->push_back(torch::nn::ReLU());
    net->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2)));
    in = ch;
  }
  net->push_back(torch::nn::Flatten());
  append_dense(net, in * h * w, c.hidden, c.dropout, io.classes);
  nlohmann::json arch = {{"arch", "cnn"},       {"input_shape", s},        {"channels", c.channels},
                         {"hidden", c.hidden},  {"dropout", c.dropout},    {"out_features", io.classes}};
  return std::make_unique<SequentialModel>(
      net, arch, "cnn " + list_text(s) + " channels " + list_text(c.channels) + " head " + list_text(c.hidden) +
                     " -> " + std::to_string(io.classes));
}

}  // namespace

ArchEntry mlp_arch() {
  return {"mlp", "a multilayer perceptron on rows of features (nn.Sequential of Linear, ReLU, Dropout)",
          schema::options_schema<MlpOptions>(validate_mlp), make_mlp};
}

ArchEntry cnn_arch() {
  return {"cnn", "conv blocks on rows reshaped to [C, H, W], then a dense head (nn.Sequential)",
          schema::options_schema<CnnOptions>(validate_cnn), make_cnn};
}

}  // namespace distill::models
