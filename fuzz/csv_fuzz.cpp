// libFuzzer target for distill::parse_csv. The first input byte picks data.label_column (unset, small
// positive and negative values, the int64 extremes: fuzz_inputs.h); the rest is the CSV text. Any input must
// either parse or throw distill::Error; anything else is a bug. A parsed table must be consistent and hold
// only finite features (the training loop cannot recover from an inf read from the data).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "distill/data/dataset.h"
#include "distill/error.h"
#include "fuzz_inputs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::optional<int64_t> label_column = distill::fuzz::csv_label_column(data[0]);
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  distill::Table table;
  try {
    table = distill::parse_csv(text, "fuzz.csv", label_column);
  } catch (const distill::Error&) {
    return 0;
  }
  if (table.features.dim() != 2 || table.labels.dim() != 1 || table.features.size(0) != table.labels.size(0) ||
      table.labels.size(0) == 0 || table.features.size(1) < 1 || table.max_label < 0)
    std::abort();
  const float* x = static_cast<const float*>(table.features.data_ptr());
  for (int64_t i = 0; i < table.features.numel(); ++i)
    if (!std::isfinite(x[i])) std::abort();
  return 0;
}
