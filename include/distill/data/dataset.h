// Tabular classification data: CSV (optionally gzip) -> float32 features [N, F] and int64 labels [N],
// a seeded train/validation split, and feature normalisation fitted on the training split only.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

namespace distill {

struct DataConfig;

struct Table {
  at::Tensor features;  // [N, F] float32
  at::Tensor labels;    // [N] int64
  int64_t max_label = -1;
};

// Parses CSV text: numeric cells, one label column (default last; negative counts from the end). A first
// line whose cells are all non-numeric is taken as a header and skipped. `origin` names the file in errors
// ("digits.csv:12:5: ...").
Table parse_csv(const std::string& text, const std::string& origin, std::optional<int64_t> label_column);
// Reads a .csv or .csv.gz file (gzip is detected from the content, not the name).
Table read_csv(const std::string& path, std::optional<int64_t> label_column);

// Per-feature affine transform x' = (x - shift) * scale, fitted on the training split.
struct Normalizer {
  std::string kind = "none";  // none | standard | scale
  std::vector<float> shift, scale;

  static Normalizer fit(const std::string& kind, const at::Tensor& features);
  at::Tensor apply(const at::Tensor& features) const;
  nlohmann::json to_json() const;
  static Normalizer from_json(const nlohmann::json& j, const std::string& origin);
};

struct Dataset {
  at::Tensor train_x, train_y, val_x, val_y;  // features normalised for the student, labels
  at::Tensor raw_train_x, raw_val_x;          // features as read
  // What the teacher sees: normalised by the teacher's own stored normaliser when it has one, else the
  // student's (then these alias train_x / val_x).
  at::Tensor teacher_train_x, teacher_val_x;
  int64_t num_features = 0;
  int64_t num_classes = 0;
  Normalizer normalizer;
};

// Loads, splits, checks labels against the class count, and normalises as `config` says.
// `normalizer` (from a trained student's metadata) replaces fitting when given.
Dataset load_dataset(const DataConfig& config, const std::optional<Normalizer>& normalizer = std::nullopt);

// A seeded permutation of 0..n-1, identical on every platform (SplitMix64 + Fisher-Yates).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

}  // namespace distill
