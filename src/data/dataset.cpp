#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include "distill/config/schema.h"
#include "distill/data/dataset.h"
#include "distill/error.h"

namespace distill {

namespace {

uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

at::Tensor take_rows(const at::Tensor& t, const std::vector<int64_t>& rows) {
  return t.index_select(0, torch::tensor(rows, torch::kInt64));
}

}  // namespace

std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed) {
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[i] = i;
  uint64_t state = seed;
  for (int64_t i = n - 1; i > 0; --i) {
    // Lemire's multiply-shift maps 64 random bits onto [0, i]; the bias is below 2^-40 for any n we hold.
    uint64_t j = static_cast<uint64_t>((static_cast<unsigned __int128>(splitmix64(state)) * static_cast<uint64_t>(i + 1)) >> 64);
    std::swap(p[i], p[j]);
  }
  return p;
}

Normalizer Normalizer::fit(const std::string& kind, const at::Tensor& x) {
  Normalizer n;
  n.kind = kind;
  if (kind == "none") return n;
  at::Tensor shift, scale;
  if (kind == "standard") {
    shift = x.mean(0);
    at::Tensor std = x.std(0, /*unbiased=*/false);
    scale = torch::where(std > 1e-12, 1.0 / std, torch::ones_like(std));
  } else if (kind == "scale") {
    shift = std::get<0>(x.min(0));
    at::Tensor range = std::get<0>(x.max(0)) - shift;
    scale = torch::where(range > 1e-12, 1.0 / range, torch::ones_like(range));
  } else {
    throw Error("data.normalize: unknown kind '" + kind + "' (none | standard | scale)");
  }
  shift = shift.contiguous();
  scale = scale.contiguous();
  n.shift.assign(shift.data_ptr<float>(), shift.data_ptr<float>() + shift.numel());
  n.scale.assign(scale.data_ptr<float>(), scale.data_ptr<float>() + scale.numel());
  return n;
}

at::Tensor Normalizer::apply(const at::Tensor& x) const {
  if (kind == "none") return x;
  if (static_cast<int64_t>(shift.size()) != x.size(1))
    throw Error("the stored normalisation has " + std::to_string(shift.size()) + " features but the data has " +
                std::to_string(x.size(1)));
  auto s = torch::from_blob(const_cast<float*>(shift.data()), {x.size(1)}, torch::kFloat32);
  auto k = torch::from_blob(const_cast<float*>(scale.data()), {x.size(1)}, torch::kFloat32);
  return ((x - s) * k).contiguous();
}

nlohmann::json Normalizer::to_json() const { return {{"kind", kind}, {"shift", shift}, {"scale", scale}}; }

Normalizer Normalizer::from_json(const nlohmann::json& j, const std::string& origin) {
  Normalizer n;
  try {
    n.kind = j.at("kind").get<std::string>();
    n.shift = j.at("shift").get<std::vector<float>>();
    n.scale = j.at("scale").get<std::vector<float>>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(origin + ": the stored normalisation is malformed (" + e.what() + ")");
  }
  if (n.kind != "none" && n.kind != "standard" && n.kind != "scale")
    throw Error(origin + ": unknown stored normalisation '" + n.kind + "'");
  if (n.shift.size() != n.scale.size())
    throw Error(origin + ": the stored normalisation has mismatched shift and scale");
  return n;
}

void validate(const CsvOptions& c, const std::string& section) {
  using namespace schema;
  if (!(c.val_fraction >= 0.0 && c.val_fraction < 1.0))
    range_error(section + ".val_fraction", "in (0, 1) (or give data.val_path)", fmt_num(c.val_fraction));
  check_one_of(section + ".normalize", c.normalize, {"none", "standard", "scale"});
  if (c.train_rows < 0) range_error(section + ".train_rows", ">= 0 (0 = all)", std::to_string(c.train_rows));
  if (c.split_seed < 0) range_error(section + ".split_seed", ">= 0", std::to_string(c.split_seed));
  if (c.num_classes && *c.num_classes < 2) range_error(section + ".num_classes", ">= 2", std::to_string(*c.num_classes));
}

Dataset load_dataset(const std::string& path, const std::optional<std::string>& val_path, const CsvOptions& config,
                     const std::optional<Normalizer>& normalizer) {
  Table all = read_csv(path, config.label_column);
  at::Tensor train_x, train_y, val_x, val_y;
  int64_t max_label = all.max_label;
  if (val_path) {
    Table val = read_csv(*val_path, config.label_column);
    if (val.features.size(1) != all.features.size(1))
      throw Error(*val_path + ": has " + std::to_string(val.features.size(1)) + " features per row, " +
                  path + " has " + std::to_string(all.features.size(1)) + "; both files need the same columns");
    max_label = std::max(max_label, val.max_label);
    train_x = all.features;
    train_y = all.labels;
    val_x = val.features;
    val_y = val.labels;
    // "first N training rows" is a random subset when the training file is in its own order: shuffle by split_seed.
    if (config.train_rows > 0) {
      auto order = seeded_permutation(train_x.size(0), static_cast<uint64_t>(config.split_seed));
      train_x = take_rows(train_x, order);
      train_y = take_rows(train_y, order);
    }
  } else {
    if (!(config.val_fraction > 0.0))
      schema::range_error("data.val_fraction", "in (0, 1) (or give data.val_path)", schema::fmt_num(config.val_fraction));
    int64_t n = all.features.size(0);
    int64_t n_val = static_cast<int64_t>(std::llround(static_cast<double>(n) * config.val_fraction));
    if (n_val < 1 || n - n_val < 1)
      throw Error("data.val_fraction: " + std::to_string(config.val_fraction) + " of " + std::to_string(n) + " rows in " +
                  path + " leaves an empty training or validation split; give more rows or another fraction");
    auto order = seeded_permutation(n, static_cast<uint64_t>(config.split_seed));
    std::vector<int64_t> val_rows(order.begin(), order.begin() + n_val), train_rows(order.begin() + n_val, order.end());
    train_x = take_rows(all.features, train_rows);
    train_y = take_rows(all.labels, train_rows);
    val_x = take_rows(all.features, val_rows);
    val_y = take_rows(all.labels, val_rows);
  }
  if (config.train_rows > 0) {
    if (config.train_rows > train_x.size(0))
      throw Error("data.train_rows: " + std::to_string(config.train_rows) + " is more than the " +
                  std::to_string(train_x.size(0)) + " training rows of " + path);
    train_x = train_x.slice(0, 0, config.train_rows).contiguous();
    train_y = train_y.slice(0, 0, config.train_rows).contiguous();
  }

  Dataset d;
  d.num_features = train_x.size(1);
  d.num_classes = config.num_classes.value_or(max_label + 1);
  if (d.num_classes < 2)
    throw Error(path + ": every label is " + std::to_string(max_label) + "; classification needs at least 2 classes");
  if (max_label >= d.num_classes)
    throw Error("data.num_classes: is " + std::to_string(d.num_classes) + " but " + path + " has label " +
                std::to_string(max_label) + "; labels must lie in [0, num_classes)");
  d.normalizer = normalizer ? *normalizer : Normalizer::fit(config.normalize, train_x);
  d.train_x = d.normalizer.apply(train_x);
  d.val_x = d.normalizer.apply(val_x);
  d.train_y = train_y;
  d.val_y = val_y;
  d.raw_train_x = train_x;
  d.raw_val_x = val_x;
  d.teacher_train_x = d.train_x;
  d.teacher_val_x = d.val_x;
  return d;
}

}  // namespace distill
