// Two training runs that should have taken the same steps, compared: their "train" events in metrics.jsonl
// and their final weights.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "test_util.h"
#include "distill/io/safetensors.h"

namespace distill::test {

inline std::vector<nlohmann::json> train_events(const std::string& run) {
  std::vector<nlohmann::json> out;
  std::istringstream in(read_text(run + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    nlohmann::json e = nlohmann::json::parse(line);
    if (e["event"] == "train") out.push_back(e);
  }
  return out;
}

// The two runs took the same steps: losses per step equal to `rel` (relative), final weights to 1e-4
// (absolute: AdamW divides each gradient by its own scale, so where the KD gradient q - p is a difference of
// near-equal probabilities, float32 rounding of p moves an update by up to ~1% of lr; 5e-4 on a GPU).
inline void check_same_training(const std::string& a, const std::string& b, const std::string& weights, double rel) {
  const auto ea = train_events(a), eb = train_events(b);
  REQUIRE(ea.size() == eb.size());
  REQUIRE(!ea.empty());
  for (size_t i = 0; i < ea.size(); ++i) {
    INFO("step " << ea[i]["step"]);
    for (const char* key : {"loss", "kd", "ce"}) {
      INFO(key);
      REQUIRE(ea[i].contains(key) == eb[i].contains(key));
      if (!ea[i].contains(key)) continue;  // a supervised run has no kd
      const double x = ea[i][key].get<double>(), y = eb[i][key].get<double>();
      CHECK(std::abs(x - y) <= rel * std::max(1.0, std::abs(x)));
    }
  }
  const auto wa = load_safetensors(a + "/" + weights), wb = load_safetensors(b + "/" + weights);
  REQUIRE(wa.tensors.size() == wb.tensors.size());
  for (size_t i = 0; i < wa.tensors.size(); ++i) {
    INFO(wa.tensors[i].first);
    const at::Tensor& x = wa.tensors[i].second;
    const at::Tensor& y = wb.tensors[i].second;
    INFO("max |a - b| " << (x - y).abs().max().item<double>() << ", max |a| " << x.abs().max().item<double>());
    // On a GPU (run.device auto) the two runs sum in other orders still: seen 1.7e-4 on an H200.
    CHECK((x - y).abs().max().item<double>() <= (torch::cuda::is_available() ? 5e-4 : 1e-4));
  }
}

}  // namespace distill::test
