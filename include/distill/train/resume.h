// Resuming a run: which config changes a checkpoint tolerates, and tidying the run's logs back to the
// checkpoint's step.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distill {

struct ConfigChanges {
  std::vector<std::string> harmless;      // "train.epochs: 10 -> 20": allowed, logged
  std::vector<std::string> incompatible;  // "student.hidden: [64] -> [32]": the resume is refused
};

// Compares two resolved configs (to_json output) key by key. Harmless: how long to train (train.epochs,
// train.max_steps), how often to log, evaluate and checkpoint, the loss's chunk size, threads, device and
// out_dir. Everything else (models, data, loss, optimizer, batch size, seed) would make the resumed run a
// different run. A key absent from `before` (a checkpoint written before the key existed) counts as holding
// its value in `defaults` (same layout), when that has one.
ConfigChanges compare_configs(const nlohmann::json& before, const nlohmann::json& after,
                              const nlohmann::json& defaults = nlohmann::json::object());

// Rewrites metrics.jsonl (atomically) keeping only events at or before `step`, so that a resumed run's
// metrics read as one run. A missing file is fine.
void trim_metrics(const std::string& path, int64_t step);

}  // namespace distill
