// Inputs that once crashed a reader (found by the fuzz/ targets, see scripts/fuzz.sh, or while writing
// them), replayed exactly as the fuzz target runs them: tests/fixtures/fuzz/<target>-<name> with <target>
// safetensors, csv, config or teacher_cache. Each must now load or throw distill::Error; any other exception fails the
// test, and a build with DISTILL_SANITIZE=ON also catches the undefined behaviour some of them caused.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../../fuzz/fuzz_inputs.h"
#include "../test_util.h"
#include "distill/cache/cache_format.h"
#include "distill/config/config.h"
#include "distill/data/dataset.h"
#include "distill/error.h"
#include "distill/io/safetensors.h"

using distill::test::ScratchDir;
using nlohmann::json;

namespace {

// "ok", or the message of the distill::Error the reader threw; any other exception propagates.
template <class F> std::string outcome(F&& read) {
  try {
    read();
    return "ok";
  } catch (const distill::Error& e) {
    return e.what();
  }
}

distill::SafetensorsContents decode(const std::string& bytes) {
  return distill::decode_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "fuzz.safetensors");
}

// A config that loads is also written back as JSON by the trainer (config.json): do that too.
void save_like_trainer(const distill::Config& config) { (void)distill::to_json(config).dump(2); }

// The outcomes of replaying `bytes` through the reader(s) of `target`, as fuzz/<target>_fuzz.cpp does.
std::vector<std::string> replay(const std::string& target, const std::string& bytes, const ScratchDir& dir) {
  if (target == "safetensors") return {outcome([&] { decode(bytes); })};
  if (target == "csv") {
    if (bytes.empty()) return {};
    auto label_column = distill::fuzz::csv_label_column(static_cast<uint8_t>(bytes[0]));
    return {outcome([&] { distill::parse_csv(bytes.substr(1), "fuzz.csv", label_column); })};
  }
  if (target == "teacher_cache") {
    // fuzz/teacher_cache_fuzz.cpp: byte 0's bit 0 picks the manifest reader, else the chunk decoder.
    if (bytes.empty()) return {};
    const int64_t vocab[4] = {1, 300, 65536, 200000};
    const std::string body = bytes.substr(1);
    if (bytes[0] & 1) {
      const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) return {};
      return {outcome([&] { distill::cache::manifest_from_json(j, "fuzz/manifest.json"); })};
    }
    return {outcome([&] { distill::cache::decode_chunk(body.data(), body.size(), vocab[(bytes[0] >> 1) & 3], "fuzz/chunks.bin"); })};
  }
  REQUIRE(target == "config");
  const distill::fuzz::ConfigInput input = distill::fuzz::split_config_input(bytes);
  std::vector<std::string> outcomes;
  json doc = json::parse(input.json_text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_discarded())
    outcomes.push_back(outcome([&] { save_like_trainer(distill::parse_config(doc, "fuzz.json", "/fuzz/base")); }));
  const std::string path = dir / "fuzz.json";
  distill::test::write_text(path, input.json_text);
  outcomes.push_back(outcome([&] { save_like_trainer(distill::load_config(path, input.overrides)); }));
  return outcomes;
}

// The message each fixed finding must now give (fixtures not listed only need to load or throw Error).
const std::map<std::string, std::string> kExpected = {
    {"config-float-to-int-overflow", "train.epochs: expected an integer"},
    {"config-number-overflow", "invalid JSON: number overflow"},
    {"config-set-invalid-utf8", "not valid UTF-8"},
    {"config-set-on-array", "the config must be a JSON object"},
    {"csv-float32-overflow", "fuzz.csv:1:1: '1e300' is outside the float32 range"},
    {"safetensors-zero-dim-huge-shape", "shape is too large"},
    {"teacher_cache-manifest-float-count", "has the wrong type"},
    {"teacher_cache-manifest-format-number", "not a distill teacher cache manifest"},
};

}  // namespace

TEST_CASE("fuzz regressions: every saved finding loads or throws distill::Error") {
  const std::string fixtures = distill::test::source_path("tests/fixtures/fuzz");
  std::vector<std::string> files;
  for (const std::string& name : distill::paths::list_dir(fixtures))
    if (distill::paths::is_regular_file(distill::paths::join(fixtures, name))) files.push_back(name);
  REQUIRE(files.size() >= kExpected.size());
  ScratchDir dir("fuzz-regression");
  for (const std::string& name : files) {
    const std::string target = name.substr(0, name.find('-'));  // teacher_cache-..., config-..., ...
    INFO(name);
    REQUIRE((target == "safetensors" || target == "csv" || target == "config" || target == "teacher_cache"));
    const std::vector<std::string> outcomes = replay(target, distill::test::read_text(distill::paths::join(fixtures, name)), dir);
    auto expected = kExpected.find(name);
    if (expected == kExpected.end()) continue;
    // config replays through parse_config and load_config: one of them must give the message (only
    // load_config sees the --set overrides and reads numbers beyond double's range).
    std::string all;
    for (const auto& o : outcomes) all += o + "\n";
    CHECK_THAT(all, Catch::Contains(expected->second));
  }
}

TEST_CASE("fuzz regressions: a config nested 100000 levels deep is refused, not a stack overflow") {
  // Copying or printing a json value recurses once per level; parse_config now measures the depth first.
  // Generated rather than saved: the input is 200 KB of brackets.
  ScratchDir dir("fuzz-deep");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  for (const std::string& text : {"{\"x\": " + deep + "}", "{\"run\": {\"seed\": " + deep + "}}"}) {
    INFO(text.substr(0, 20));
    json doc = json::parse(text);
    CHECK_THROWS_WITH(distill::parse_config(doc, "deep.json"), Catch::Contains("deep.json: nested more than 16 levels"));
    distill::test::write_text(dir / "deep.json", text);
    CHECK_THROWS_WITH(distill::load_config(dir / "deep.json", {"train.epochs=" + deep}), Catch::Contains("nested more than"));
  }
}

TEST_CASE("fuzz regressions: the limits of the fixes sit where they should") {
  SECTION("csv: float32's largest magnitude still parses, the next double up does not") {
    distill::Table t = distill::parse_csv("3.4028234e38,-3.4e38,1\n", "edge.csv", std::nullopt);
    CHECK(t.features.size(1) == 2);
    CHECK_THROWS_WITH(distill::parse_csv("3.41e38,1\n", "edge.csv", std::nullopt),
                      Catch::Contains("edge.csv:1:1: '3.41e38' is outside the float32 range"));
  }
  SECTION("safetensors: an empty tensor's other dims may reach int64's limit but not multiply past it") {
    auto file = [](const std::string& shape) {
      std::string header = R"({"a":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})";
      std::string out(8, '\0');
      for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
      return out + header;
    };
    CHECK(decode(file("[0,9223372036854775807]")).tensors.at(0).second.numel() == 0);
    CHECK(decode(file("[3,0,3074457345618258602]")).tensors.at(0).second.numel() == 0);
    CHECK_THROWS_WITH(decode(file("[0,9223372036854775807,2]")), Catch::Contains("shape is too large"));
    CHECK_THROWS_WITH(decode(file("[4611686018427387904,4611686018427387904,0]")), Catch::Contains("shape is too large"));
  }
  SECTION("config: integers written as floats convert only inside int64") {
    json doc = {{"data", {{"path", "d.csv"}}}, {"student", {{"arch", "mlp"}}}, {"train", {{"epochs", 3.0}}}};
    CHECK(distill::parse_config(doc, "c.json").train.epochs == 3);
    for (double bad : {1e19, -1e19, 2.5}) {
      doc["train"]["epochs"] = bad;
      CHECK_THROWS_WITH(distill::parse_config(doc, "c.json"), Catch::Contains("train.epochs: expected an integer"));
    }
  }
}
