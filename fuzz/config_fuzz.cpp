// libFuzzer target for the config reader. The input is "<config JSON>\0<override>\n<override>...": the JSON
// part goes through nlohmann::json::parse + distill::parse_config, and (written to a scratch file) through
// distill::load_config together with the --set overrides after the NUL byte. Any input must either load or
// throw distill::Error; anything else (nlohmann::json::type_error, std::out_of_range, ...) escapes and is a
// bug. A config that loads must serialise (the trainer writes it to config.json) and read back unchanged.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "distill/config/config.h"
#include "distill/error.h"
#include "fuzz_inputs.h"

namespace {

using nlohmann::json;

// One scratch file per process, reused by every input, under $TMPDIR (scripts/fuzz.sh gives each run a
// fresh folder on tmpfs and removes it afterwards, also after a crash).
const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string p = std::string(dir && *dir ? dir : "/tmp") + "/distill-config-fuzz-" +
                    std::to_string(::getpid()) + ".json";
    std::atexit([] { std::remove(scratch_path().c_str()); });
    return p;
  }();
  return path;
}

void check_round_trip(const distill::Config& config) {
  json written = distill::to_json(config);
  written.dump(2);  // throws json::type_error on text that is not UTF-8
  try {
    distill::Config again = distill::parse_config(written, "round trip");
    if (distill::to_json(again) != written) std::abort();
  } catch (const distill::Error& e) {
    std::fprintf(stderr, "a config that loaded does not load again from to_json(): %s\n", e.what());
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const distill::fuzz::ConfigInput input =
      distill::fuzz::split_config_input(std::string(reinterpret_cast<const char*>(data), size));

  json doc = json::parse(input.json_text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_discarded()) {
    try {
      check_round_trip(distill::parse_config(doc, "fuzz.json", "/fuzz/base"));
    } catch (const distill::Error&) {
    }
  }

  { std::ofstream(scratch_path(), std::ios::binary | std::ios::trunc) << input.json_text; }
  try {
    check_round_trip(distill::load_config(scratch_path(), input.overrides));
  } catch (const distill::Error&) {
  }
  return 0;
}
