// libFuzzer target for the import of server and API log-probabilities (include/distill/cache/
// logprob_import.h): one JSON Lines record against a small vocabulary (the 256 single bytes, " the", "Hello").
// Any input must parse or throw distill::Error; a parsed record must hold ids inside the vocabulary,
// finite log-probabilities <= 0 summing to at most 1 + 1e-3 per position, most probable first, no id twice,
// and (vLLM) one position per prompt id.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "distill/cache/logprob_import.h"
#include "distill/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace cache = distill::cache;
  static const cache::TokenVocabulary vocab = [] {
    std::vector<std::string> bytes, pieces;
    for (int b = 0; b < 256; ++b) {
      bytes.push_back(std::string(1, static_cast<char>(b)));
      pieces.push_back("b" + std::to_string(b));
    }
    for (const char* t : {" the", "Hello", ""}) {
      bytes.push_back(t);
      pieces.push_back(t);
    }
    return cache::TokenVocabulary(bytes, pieces);
  }();
  cache::ImportedRecord r;
  try {
    r = cache::parse_logprob_record(std::string_view(reinterpret_cast<const char*>(data), size), vocab, "fuzz.jsonl:1");
  } catch (const distill::Error&) {
    return 0;
  }
  if (r.format == cache::LogprobFormat::vllm_prompt && r.positions.size() != r.ids.size()) std::abort();
  for (int32_t id : r.ids)
    if (id < 0 || id >= vocab.size()) std::abort();
  for (const cache::ImportedPosition& p : r.positions) {
    if (p.token < 0 || p.token >= vocab.size()) std::abort();
    if (!p.present && !p.entries.empty()) std::abort();
    double sum = 0;
    std::set<int32_t> seen;
    for (size_t j = 0; j < p.entries.size(); ++j) {
      const auto& [id, lp] = p.entries[j];
      if (id < 0 || id >= vocab.size() || !seen.insert(id).second) std::abort();
      if (!std::isfinite(lp) || lp > 0.0f) std::abort();
      if (j > 0 && lp > p.entries[j - 1].second) std::abort();
      sum += std::exp(static_cast<double>(lp));
    }
    if (sum > 1.0 + 1e-3 + 1e-6) std::abort();
  }
  return 0;
}
