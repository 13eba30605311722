// arch "llama": the Llama family as transformers' LlamaForCausalLM computes it (eager attention), with
// Qwen2's and Mistral's variations: RMSNorm (in float32, then weight * x in the input dtype), rotary
// embeddings (rotate_half layout, rope_theta, "linear" and "llama3" scaling), grouped-query attention
// (kv head j serves query heads j*g .. j*g+g-1), a causal mask (and Mistral's sliding window), softmax in
// float32, a SwiGLU MLP, tied or untied embeddings, and the biases each model type has (Llama:
// attention_bias on q, k, v, o and mlp_bias; Qwen2: q, k, v always). Parameter names are transformers'
// ("model.layers.0.self_attn.q_proj.weight", "lm_head.weight" absent when tied), so a student saved as a
// Hugging Face folder loads with AutoModelForCausalLM.from_pretrained. Built from a config, it initialises
// as transformers does: the modules are constructed in transformers' order (their constructors draw from the
// generator as PyTorch's do), then every Linear and Embedding weight is drawn from N(0, initializer_range)
// children first, biases zeroed, norms one, and lm_head last; with the same seed the weights equal
// `torch.manual_seed(seed); LlamaForCausalLM(config)` (tests/fixtures/llama_ref.py).
//
// The forward hands the loss the final hidden states and the output head (ModelOutput), so that the loss
// runs the head chunk by chunk (include/distill/loss/output_loss.h).
#include <torch/torch.h>

#include <cmath>

#include <nlohmann/json.hpp>

#include "distill/config/schema.h"
#include "distill/error.h"
#include "models/builders.h"
#include "models/llama.h"

namespace distill::models {

namespace {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------- options

void validate_llama(const LlamaOptions& c, const std::string& section) {
  using namespace schema;
  check_one_of(section + ".model_type", c.model_type, {"llama", "qwen2", "mistral"});
  if (c.vocab_size < 0) range_error(section + ".vocab_size", ">= 0 (0 = the data's vocabulary)", std::to_string(c.vocab_size));
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) range_error(section + "." + key, "> 0", std::to_string(v));
  };
  positive("hidden_size", c.hidden_size);
  positive("intermediate_size", c.intermediate_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (c.num_key_value_heads < 0)
    range_error(section + ".num_key_value_heads", ">= 0 (0 = num_attention_heads)", std::to_string(c.num_key_value_heads));
  const int64_t kv = c.kv_heads();
  if (c.num_attention_heads % kv != 0)
    throw Error(section + ".num_key_value_heads: " + std::to_string(kv) + " does not divide num_attention_heads " +
                std::to_string(c.num_attention_heads) + "; grouped-query attention needs a whole number of query "
                "heads per key/value head");
  if (c.head_dim < 0) range_error(section + ".head_dim", ">= 0 (0 = hidden_size / num_attention_heads)", std::to_string(c.head_dim));
  if (c.head_dim == 0 && c.hidden_size % c.num_attention_heads != 0)
    throw Error(section + ".hidden_size: " + std::to_string(c.hidden_size) + " is not a multiple of num_attention_heads " +
                std::to_string(c.num_attention_heads) + "; change one, or give head_dim");
  if (c.dim_per_head() % 2 != 0)
    throw Error(section + ".head_dim: " + std::to_string(c.dim_per_head()) + " is odd; rotary embeddings rotate pairs");
  check_positive(section + ".rms_norm_eps", c.rms_norm_eps);
  check_positive(section + ".rope_theta", c.rope_theta);
  check_positive(section + ".initializer_range", c.initializer_range);
  if (c.hidden_act != "silu" && c.hidden_act != "swish")
    range_error(section + ".hidden_act", "silu (the SwiGLU of the Llama family)", "'" + c.hidden_act + "'");
  if (c.sliding_window < 0) range_error(section + ".sliding_window", ">= 0 (0 = none)", std::to_string(c.sliding_window));
  if (!c.rope_scaling.is_null()) {
    const json& r = c.rope_scaling;
    const std::string key = section + ".rope_scaling";
    std::string type = r.value("rope_type", r.value("type", std::string("default")));
    if (type != "default" && type != "linear" && type != "llama3")
      throw Error(key + ": rope type '" + type + "' is not supported (linear, llama3, or null for none)");
    auto number = [&](const char* name) {
      if (!r.contains(name) || !r[name].is_number()) throw Error(key + "." + name + ": missing; " + type + " scaling needs it");
      return r[name].get<double>();
    };
    if (type == "linear" && !(number("factor") > 0)) throw Error(key + ".factor: must be > 0");
    if (type == "llama3") {
      for (const char* name : {"factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"})
        if (!(number(name) > 0)) throw Error(key + "." + name + ": must be > 0");
      if (number("high_freq_factor") <= number("low_freq_factor"))
        throw Error(key + ".high_freq_factor: must be above low_freq_factor");
    }
  }
}

// ---------------------------------------------------------------------------------------------- modules

struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl(int64_t n, double eps) : eps(eps) { weight = register_parameter("weight", torch::ones({n})); }
  at::Tensor forward(const at::Tensor& x) {
    const at::Tensor h = x.to(at::kFloat);
    const at::Tensor normed = h * at::rsqrt(h.pow(2).mean(-1, /*keepdim=*/true) + eps);
    return weight * normed.to(x.scalar_type());
  }
  at::Tensor weight;
  double eps;
};
TORCH_MODULE(RmsNorm);

at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

struct AttentionImpl : torch::nn::Module {
  AttentionImpl(const LlamaOptions& c, bool qkv_bias, bool o_bias)
      : heads(c.num_attention_heads), kv_heads(c.kv_heads()), head_dim(c.dim_per_head()) {
    using torch::nn::LinearOptions;
    q_proj = register_module("q_proj", torch::nn::Linear(LinearOptions(c.hidden_size, heads * head_dim).bias(qkv_bias)));
    k_proj = register_module("k_proj", torch::nn::Linear(LinearOptions(c.hidden_size, kv_heads * head_dim).bias(qkv_bias)));
    v_proj = register_module("v_proj", torch::nn::Linear(LinearOptions(c.hidden_size, kv_heads * head_dim).bias(qkv_bias)));
    o_proj = register_module("o_proj", torch::nn::Linear(LinearOptions(heads * head_dim, c.hidden_size).bias(o_bias)));
  }

  // x [B, T, H]; cos, sin [T, head_dim]; mask [T, S] additive (S = past + T). `cache`: this layer's past
  // keys and values, extended in place.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     at::Tensor* past_k = nullptr, at::Tensor* past_v = nullptr) {
    const int64_t B = x.size(0), T = x.size(1);
    at::Tensor q = q_proj(x).view({B, T, heads, head_dim}).transpose(1, 2);
    at::Tensor k = k_proj(x).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    at::Tensor v = v_proj(x).view({B, T, kv_heads, head_dim}).transpose(1, 2);
    q = q * cos + rotate_half(q) * sin;
    k = k * cos + rotate_half(k) * sin;
    if (past_k) {
      if (past_k->defined()) {
        k = at::cat({*past_k, k}, 2);
        v = at::cat({*past_v, v}, 2);
      }
      *past_k = k;
      *past_v = v;
    }
    const int64_t groups = heads / kv_heads;
    if (groups > 1) {  // repeat_kv
      const int64_t S = k.size(2);
      k = k.unsqueeze(2).expand({B, kv_heads, groups, S, head_dim}).reshape({B, heads, S, head_dim});
      v = v.unsqueeze(2).expand({B, kv_heads, groups, S, head_dim}).reshape({B, heads, S, head_dim});
    }
    at::Tensor w = at::matmul(q, k.transpose(2, 3)) * std::pow(static_cast<double>(head_dim), -0.5);  // as head_dim ** -0.5
    w = w + mask;
    w = at::softmax(w, -1, at::kFloat).to(q.scalar_type());
    const at::Tensor o = at::matmul(w, v).transpose(1, 2).contiguous().reshape({B, T, heads * head_dim});
    return o_proj(o);
  }

  int64_t heads, kv_heads, head_dim;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
};
TORCH_MODULE(Attention);

struct MlpImpl : torch::nn::Module {
  explicit MlpImpl(const LlamaOptions& c) {
    using torch::nn::LinearOptions;
    gate_proj = register_module("gate_proj", torch::nn::Linear(LinearOptions(c.hidden_size, c.intermediate_size).bias(c.mlp_bias)));
    up_proj = register_module("up_proj", torch::nn::Linear(LinearOptions(c.hidden_size, c.intermediate_size).bias(c.mlp_bias)));
    down_proj = register_module("down_proj", torch::nn::Linear(LinearOptions(c.intermediate_size, c.hidden_size).bias(c.mlp_bias)));
  }
  at::Tensor forward(const at::Tensor& x) { return down_proj(at::silu(gate_proj(x)) * up_proj(x)); }
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
};
TORCH_MODULE(Mlp);

struct DecoderLayerImpl : torch::nn::Module {
  DecoderLayerImpl(const LlamaOptions& c, bool qkv_bias, bool o_bias) {
    self_attn = register_module("self_attn", Attention(c, qkv_bias, o_bias));
    mlp = register_module("mlp", Mlp(c));
    input_layernorm = register_module("input_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
    post_attention_layernorm = register_module("post_attention_layernorm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  }
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const at::Tensor& mask,
                     at::Tensor* past_k, at::Tensor* past_v) {
    const at::Tensor h = x + self_attn(input_layernorm(x), cos, sin, mask, past_k, past_v);
    return h + mlp(post_attention_layernorm(h));
  }
  Attention self_attn{nullptr};
  Mlp mlp{nullptr};
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
};
TORCH_MODULE(DecoderLayer);

// transformers' LlamaModel: embed_tokens, layers, norm.
struct BodyImpl : torch::nn::Module {
  explicit BodyImpl(const LlamaOptions& c) {
    auto embed = torch::nn::EmbeddingOptions(c.vocab_size, c.hidden_size);
    if (c.pad_token_id && *c.pad_token_id >= 0 && *c.pad_token_id < c.vocab_size) embed.padding_idx(*c.pad_token_id);
    embed_tokens = register_module("embed_tokens", torch::nn::Embedding(embed));
    const bool qwen2 = c.model_type == "qwen2";
    const bool qkv_bias = qwen2 || (c.model_type == "llama" && c.attention_bias);
    const bool o_bias = c.model_type == "llama" && c.attention_bias;
    layers = register_module("layers", torch::nn::ModuleList());
    for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c, qkv_bias, o_bias));
    norm = register_module("norm", RmsNorm(c.hidden_size, c.rms_norm_eps));
  }
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers{nullptr};
  RmsNorm norm{nullptr};
};
TORCH_MODULE(Body);

// transformers' _init_weights over `module`, children first (PreTrainedModel.init_weights' order).
void init_like_transformers(torch::nn::Module& module, double std) {
  for (const auto& child : module.children()) init_like_transformers(*child, std);
  torch::NoGradGuard no_grad;
  if (auto* linear = module.as<torch::nn::Linear>()) {
    linear->weight.normal_(0.0, std);
    if (linear->bias.defined()) linear->bias.zero_();
  } else if (auto* embedding = module.as<torch::nn::Embedding>()) {
    embedding->weight.normal_(0.0, std);
    if (auto pad = embedding->options.padding_idx()) embedding->weight[*pad].zero_();
  } else if (auto* norm = module.as<RmsNorm>()) {
    norm->weight.fill_(1.0);
  }
}

// The rotary inverse frequencies [head_dim / 2] in float32, with the config's scaling.
at::Tensor rope_inv_freq(const LlamaOptions& c) {
  const int64_t d = c.dim_per_head();
  at::Tensor inv = 1.0 / at::pow(c.rope_theta, at::arange(0, d, 2, at::kLong).to(at::kFloat) / static_cast<double>(d));
  if (c.rope_scaling.is_null()) return inv;
  const json& r = c.rope_scaling;
  const std::string type = r.value("rope_type", r.value("type", std::string("default")));
  if (type == "linear") return inv / r["factor"].get<double>();
  if (type == "llama3") {
    const double factor = r["factor"].get<double>(), low = r["low_freq_factor"].get<double>(),
                 high = r["high_freq_factor"].get<double>(),
                 old_len = r["original_max_position_embeddings"].get<double>();
    const double low_wavelen = old_len / low, high_wavelen = old_len / high;
    const at::Tensor wavelen = 2 * M_PI / inv;
    const at::Tensor scaled = at::where(wavelen > low_wavelen, inv / factor, inv);
    const at::Tensor smooth = (old_len / wavelen - low) / (high - low);
    const at::Tensor smoothed = (1 - smooth) * scaled / factor + smooth * scaled;
    const at::Tensor medium = wavelen.ge(high_wavelen).logical_and(wavelen.le(low_wavelen));
    return at::where(medium, smoothed, scaled);
  }
  return inv;
}

class LlamaModel : public Model {
 public:
  LlamaModel(LlamaOptions options, bool init_like_hf) : c_(std::move(options)) {
    body_ = Body(c_);
    if (init_like_hf) init_like_transformers(*body_, c_.initializer_range);
    if (!c_.tie_word_embeddings) {
      lm_head_ = torch::nn::Linear(torch::nn::LinearOptions(c_.hidden_size, c_.vocab_size).bias(false));
      if (init_like_hf) init_like_transformers(*lm_head_, c_.initializer_range);
    }
    inv_freq_ = rope_inv_freq(c_);
  }

  ModelOutput forward_output(const at::Tensor& ids) override {
    ModelOutput out;
    out.hidden = run(ids, nullptr);
    out.head_weight = head_weight();
    return out;
  }

  bool has_kv_cache() const override { return true; }

  at::Tensor forward_cached(const at::Tensor& ids, KvCache& cache) override {
    if (cache.keys.empty()) {
      cache.keys.resize(static_cast<size_t>(c_.num_hidden_layers));
      cache.values.resize(static_cast<size_t>(c_.num_hidden_layers));
    }
    const at::Tensor hidden = run(ids, &cache);
    return at::linear(hidden, head_weight());
  }

  NamedTensors state() override {
    NamedTensors out;
    for (const auto& p : body_->named_parameters()) out.emplace_back("model." + p.key(), p.value());
    if (lm_head_) out.emplace_back("lm_head.weight", lm_head_->weight);
    return out;
  }
  std::vector<at::Tensor> parameters() override {
    std::vector<at::Tensor> out = body_->parameters();
    if (lm_head_) out.push_back(lm_head_->weight);
    return out;
  }
  void set_training(bool on) override {
    body_->train(on);
    if (lm_head_) lm_head_->train(on);
  }
  void to(const c10::Device& device) override {
    body_->to(device);
    if (lm_head_) lm_head_->to(device);
    inv_freq_ = inv_freq_.to(device);
  }
  // The rotary frequencies stay float32, as in transformers.
  void cast(c10::ScalarType dtype) override {
    body_->to(dtype);
    if (lm_head_) lm_head_->to(dtype);
  }
  json arch_json() const override {
    json j = schema::write_fields(c_);
    j["arch"] = "llama";
    return j;
  }
  std::string describe() const override {
    return c_.model_type + " " + std::to_string(c_.num_hidden_layers) + " layers, hidden " + std::to_string(c_.hidden_size) +
           ", " + std::to_string(c_.num_attention_heads) + "/" + std::to_string(c_.kv_heads()) + " heads, vocab " +
           std::to_string(c_.vocab_size) + (c_.tie_word_embeddings ? ", tied" : "");
  }
  json hf_config() const override { return llama_hf_config(c_); }
  int64_t max_positions() const override { return c_.max_position_embeddings; }

 private:
  at::Tensor head_weight() const { return lm_head_ ? lm_head_->weight : body_->embed_tokens->weight; }

  // The final hidden states of `ids` [B, T] (after the final norm), at positions cache->length.. when cached.
  at::Tensor run(const at::Tensor& ids, KvCache* cache) {
    TORCH_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong, "llama takes token ids [B, T] int64, got ",
                ids.sizes(), " ", ids.scalar_type());
    const int64_t T = ids.size(1), past = cache ? cache->length : 0, S = past + T;
    if (S > c_.max_position_embeddings)
      throw Error("llama: " + std::to_string(S) + " positions is more than max_position_embeddings " +
                  std::to_string(c_.max_position_embeddings));
    at::Tensor x = body_->embed_tokens(ids);
    const at::Tensor positions = at::arange(past, S, ids.options().dtype(at::kFloat));
    const at::Tensor freqs = positions.unsqueeze(1) * inv_freq_.unsqueeze(0);  // [T, d/2]: one product each, as matmul
    const at::Tensor emb = at::cat({freqs, freqs}, -1);
    const at::Tensor cos = emb.cos().to(x.scalar_type()), sin = emb.sin().to(x.scalar_type());
    // Additive mask [T, S]: 0 where query t (at past + t) may see key s, the dtype's lowest value elsewhere.
    const at::Tensor q_pos = at::arange(past, S, ids.options()).unsqueeze(1);
    const at::Tensor k_pos = at::arange(0, S, ids.options()).unsqueeze(0);
    at::Tensor hidden_mask = k_pos.gt(q_pos);
    if (c_.sliding_window > 0) hidden_mask = hidden_mask.logical_or(q_pos.sub(k_pos).ge(c_.sliding_window));
    const double lowest = x.scalar_type() == at::kBFloat16 ? -3.3895313892515355e38
                          : x.scalar_type() == at::kHalf   ? -65504.0
                                                           : static_cast<double>(std::numeric_limits<float>::lowest());
    const at::Tensor mask = at::zeros({T, S}, x.options()).masked_fill(hidden_mask, lowest);
    for (size_t i = 0; i < body_->layers->size(); ++i) {
      auto layer = body_->layers->ptr<DecoderLayerImpl>(i);
      x = layer->forward(x, cos, sin, mask, cache ? &cache->keys[i] : nullptr, cache ? &cache->values[i] : nullptr);
    }
    if (cache) cache->length = S;
    return body_->norm(x);
  }

  LlamaOptions c_;
  Body body_{nullptr};
  torch::nn::Linear lm_head_{nullptr};
  at::Tensor inv_freq_;
};

std::unique_ptr<Model> make_llama(const ModelConfig& config, const IoShape& io, const std::string& role) {
  if (!io.tokens())
    throw Error(role + ".arch: \"llama\" is a language model; the data is rows of features (data.format \"" +
                std::string("csv") + "\"), which need a classifier arch (mlp, cnn)");
  LlamaOptions c = schema::read_fields<LlamaOptions>(config.options, role);
  if (c.vocab_size == 0) c.vocab_size = io.classes;
  if (c.vocab_size < io.classes)
    throw Error(role + ".vocab_size: " + std::to_string(c.vocab_size) + " is below the data's vocabulary (" +
                std::to_string(io.classes) + " ids); use at least that, or 0 for the data's");
  if (io.seq_len > c.max_position_embeddings)
    throw Error(role + ".max_position_embeddings: " + std::to_string(c.max_position_embeddings) +
                " is below data.seq_len " + std::to_string(io.seq_len) + "; raise it or shorten data.seq_len");
  return make_llama_model(c, /*init_like_hf=*/true);
}

}  // namespace

std::unique_ptr<Model> make_llama_model(const LlamaOptions& options, bool init_like_hf) {
  return std::make_unique<LlamaModel>(options, init_like_hf);
}

json llama_hf_config(const LlamaOptions& c) {
  const char* arch = c.model_type == "qwen2" ? "Qwen2ForCausalLM" : c.model_type == "mistral" ? "MistralForCausalLM"
                                                                                                : "LlamaForCausalLM";
  json j = {{"architectures", {arch}},
            {"model_type", c.model_type},
            {"vocab_size", c.vocab_size},
            {"hidden_size", c.hidden_size},
            {"intermediate_size", c.intermediate_size},
            {"num_hidden_layers", c.num_hidden_layers},
            {"num_attention_heads", c.num_attention_heads},
            {"num_key_value_heads", c.kv_heads()},
            {"head_dim", c.dim_per_head()},
            {"hidden_act", c.hidden_act},
            {"max_position_embeddings", c.max_position_embeddings},
            {"initializer_range", c.initializer_range},
            {"rms_norm_eps", c.rms_norm_eps},
            {"rope_theta", c.rope_theta},
            {"rope_scaling", c.rope_scaling},
            {"tie_word_embeddings", c.tie_word_embeddings},
            {"torch_dtype", "float32"},
            {"use_cache", true}};
  if (c.model_type == "llama") {
    j["attention_bias"] = c.attention_bias;
    j["attention_dropout"] = 0.0;
    j["mlp_bias"] = c.mlp_bias;
  }
  if (c.model_type == "qwen2") {
    j["use_sliding_window"] = false;
    j["attention_dropout"] = 0.0;
  }
  if (c.model_type == "mistral") j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  if (c.pad_token_id) j["pad_token_id"] = *c.pad_token_id;
  return j;
}

ArchEntry llama_arch() {
  return {"llama",
          "a Llama-family causal language model (transformers' LlamaForCausalLM; model_type qwen2 and mistral too); "
          "keys as in a Hugging Face config.json",
          schema::options_schema<LlamaOptions>(validate_llama), make_llama};
}

}  // namespace distill::models
