// Tabular classification data (data.format "csv"): CSV (optionally gzip) -> float32 features [N, F] and int64
// labels [N], a seeded train/validation split, and feature normalisation fitted on the training split only.
// src/data/csv_source.cpp serves it as batches.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>
#include <nlohmann/json_fwd.hpp>

namespace distill {

// data.format "csv": the keys the format adds to the data section.
struct CsvOptions {
  std::optional<int64_t> label_column;  // default: the last column; negative counts from the end
  double val_fraction = 0.2;            // held out of `path` for validation (without val_path)
  std::string normalize = "none";       // none | standard | scale
  int64_t train_rows = 0;               // 0 = all; else the first N rows of the (split) training set
  int64_t split_seed = 0;               // the train/val split depends on this, not on run.seed
  std::optional<int64_t> num_classes;   // default: largest label + 1 over train and val
};
template <class F> void visit_fields(CsvOptions& c, F&& f) {
  f("label_column", c.label_column, "csv: column holding the integer class label; default last; negative counts from the end");
  f("val_fraction", c.val_fraction, "csv: fraction of `path` held out for validation (ignored with val_path)");
  f("normalize", c.normalize, "csv: none | standard (zero mean, unit variance) | scale (min-max to [0,1]); statistics from the training split, stored with the student");
  f("train_rows", c.train_rows, "csv: use only the first N training rows (a small labelled transfer set); 0 = all");
  f("split_seed", c.split_seed, "csv: seed of the train/validation split");
  f("num_classes", c.num_classes, "csv: number of classes; default largest label + 1");
}
void validate(const CsvOptions& options, const std::string& section);

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

// Loads `path` (and `val_path`), splits, checks labels against the class count, and normalises as `options`
// say. `normalizer` (from a trained student's metadata) replaces fitting when given.
Dataset load_dataset(const std::string& path, const std::optional<std::string>& val_path, const CsvOptions& options,
                     const std::optional<Normalizer>& normalizer = std::nullopt);

// A seeded permutation of 0..n-1, identical on every platform (SplitMix64 + Fisher-Yates).
std::vector<int64_t> seeded_permutation(int64_t n, uint64_t seed);

}  // namespace distill
