// libFuzzer target for the JSON Lines record parser (distill::parse_jsonl, include/distill/data/pack.h). Any
// input must either parse or throw distill::Error. Parsed records must be consistent: one kind, a
// completion (and its optional ids) per prompt (and none for text records), line numbers rising within the
// input's line count.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "distill/data/pack.h"
#include "distill/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  distill::JsonlRecords records;
  try {
    records = distill::parse_jsonl(text, "fuzz.jsonl");
  } catch (const distill::Error&) {
    return 0;
  }
  if (records.size() == 0 || records.line.size() != records.size()) std::abort();
  const size_t completions = records.kind == distill::RecordKind::text ? 0 : records.size();
  if (records.completion.size() != completions || records.completion_ids.size() != completions) std::abort();
  const int64_t lines = static_cast<int64_t>(std::count(text.begin(), text.end(), '\n')) + 1;
  for (size_t i = 0; i < records.size(); ++i)
    if (records.line[i] < 1 || records.line[i] > lines || (i > 0 && records.line[i] <= records.line[i - 1])) std::abort();
  return 0;
}
