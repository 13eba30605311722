// How the fuzz targets cut their input bytes into reader arguments. Shared with
// tests/unit/fuzz_regression_test.cpp so that a saved finding replays exactly as the fuzzer ran it.
#pragma once

#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

namespace distill::fuzz {

// csv: the first byte picks data.label_column (unset, the int64 extremes, else the byte as int8); the rest
// is the CSV text.
inline std::optional<int64_t> csv_label_column(uint8_t first_byte) {
  switch (first_byte) {
    case 0x7f: return std::nullopt;
    case 0x7e: return std::numeric_limits<int64_t>::max();
    case 0x7d: return std::numeric_limits<int64_t>::min();
    default: return static_cast<int8_t>(first_byte);
  }
}

// config: "<config JSON>\0<override>\n<override>...": the JSON text, then --set overrides one per line.
struct ConfigInput {
  std::string json_text;
  std::vector<std::string> overrides;
};

inline ConfigInput split_config_input(const std::string& input) {
  ConfigInput out;
  size_t nul = input.find('\0');
  out.json_text = input.substr(0, nul);
  if (nul == std::string::npos) return out;
  for (size_t pos = nul + 1; pos < input.size();) {
    size_t eol = input.find('\n', pos);
    if (eol == std::string::npos) eol = input.size();
    out.overrides.push_back(input.substr(pos, eol - pos));
    pos = eol + 1;
  }
  return out;
}

}  // namespace distill::fuzz
