// Every bad input: one "error: ..." line naming the file or key, exit code 1, no crash, and nothing in an
// existing run folder changed, even with --overwrite (inputs are all checked before anything is removed).
#include <catch2/catch.hpp>

#include <map>

#include <nlohmann/json.hpp>

#include "../test_util.h"

using distill::test::run_distill;
using distill::test::ScratchDir;
using nlohmann::json;

namespace {

std::map<std::string, std::string> snapshot(const std::string& dir) {
  std::map<std::string, std::string> files;
  for (const std::string& rel : distill::paths::list_files_recursive(dir))
    files[rel] = distill::test::read_text(distill::paths::join(dir, rel));
  return files;
}

std::string safetensors_bytes(const std::string& header, size_t data_bytes, int64_t claimed = -1) {
  std::string out(8, '\0');
  uint64_t n = claimed >= 0 ? static_cast<uint64_t>(claimed) : header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\0');
}

struct BadCase {
  const char* name;
  json patch;             // merged into the good config
  std::string expected;   // part of the error line
};

}  // namespace

TEST_CASE("bad input: one error line, exit 1, the existing run untouched") {
  ScratchDir dir("bad");
  // Data: 64 features (digits), 3 classes.
  std::string csv;
  for (int i = 0; i < 90; ++i) {
    for (int f = 0; f < 64; ++f) csv += std::to_string((i * 7 + f) % 17) + ",";
    csv += std::to_string(i % 3) + "\n";
  }
  distill::test::write_text(dir / "d.csv", csv);
  distill::test::write_text(dir / "ragged.csv", "1,2,0\n1,2,3,0\n");
  distill::test::write_text(dir / "text.csv", "1,2,0\n1,two,1\n");
  distill::test::write_text(dir / "empty.csv", "");
  distill::test::write_text(dir / "bad.json", "{\"data\": {\"path\": \"d.csv\"},\n \"student\": {\"arch\": \"mlp\",}\n}\n");
  distill::test::write_text(dir / "junk.pt", "PK\x03\x04 not really a zip archive");
  const std::string good_weights_header = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  distill::test::write_text(dir / "truncated.safetensors", safetensors_bytes(good_weights_header, 8).substr(0, 30));
  distill::test::write_text(dir / "beyond.safetensors", safetensors_bytes("{}", 0, 1 << 20));
  distill::test::write_text(dir / "absurd.safetensors", safetensors_bytes("{}", 0, int64_t{1} << 50));
  distill::test::write_text(dir / "offsets.safetensors", safetensors_bytes(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
  distill::test::write_text(dir / "overlap.safetensors", safetensors_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6));
  distill::test::write_text(dir / "dtype.safetensors", safetensors_bytes(R"({"w":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}})", 8));
  distill::test::write_text(dir / "shape.safetensors", safetensors_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8));

  json good = {{"run", {{"out_dir", dir / "run"}, {"threads", 1}}},
               {"data", {{"path", "d.csv"}}},
               {"student", {{"arch", "mlp"}, {"hidden", {8}}}},
               {"train", {{"epochs", 1}, {"batch_size", 16}}}};
  distill::test::write_text(dir / "good.json", good.dump());
  auto first = run_distill("train --config " + (dir / "good.json"));
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  // A student trained on this data, to give misshaped init files.
  json wide = good;
  wide.merge_patch({{"run", {{"out_dir", dir / "wide"}}}, {"student", {{"hidden", {12}}}}});
  distill::test::write_text(dir / "wide.json", wide.dump());
  REQUIRE(run_distill("train --config " + (dir / "wide.json")).exit_code == 0);
  const auto before = snapshot(dir / "run");
  const std::string ts_64_10 = distill::test::source_path("tests/fixtures/torchscript/mlp_64_16_10.pt");

  const std::vector<BadCase> cases = {
      {"unknown key", {{"train", {{"epoch", 2}}}}, "unknown key 'train.epoch'"},
      {"wrong type", {{"train", {{"batch_size", "16"}}}}, "train.batch_size: expected an integer, got a string"},
      {"out of range", {{"loss", {{"temperature", -1}}}}, "loss.temperature: must be > 0, got -1"},
      {"missing model file", {{"teacher", {{"path", "missing.pt"}}}}, "teacher.path:"},
      {"not TorchScript", {{"teacher", {{"path", "junk.pt"}}}}, "is not a TorchScript module"},
      {"truncated safetensors", {{"teacher", {{"arch", "mlp"}, {"hidden", {4}}, {"weights", "truncated.safetensors"}}}}, "truncated"},
      {"header beyond the file", {{"teacher", {{"arch", "mlp"}, {"hidden", {4}}, {"weights", "beyond.safetensors"}}}}, "runs past the end of the file"},
      {"absurd header size", {{"student", {{"init", "absurd.safetensors"}}}}, "is absurd"},
      {"offsets out of bounds", {{"student", {{"init", "offsets.safetensors"}}}}, "run past the data section"},
      {"overlapping offsets", {{"student", {{"init", "overlap.safetensors"}}}}, "overlaps"},
      {"unknown dtype", {{"student", {{"init", "dtype.safetensors"}}}}, "unsupported dtype 'C64'"},
      {"bytes not matching the shape", {{"student", {{"init", "shape.safetensors"}}}}, "holds 8 bytes but shape and dtype need 12"},
      {"teacher/student output sizes", {{"teacher", {{"path", ts_64_10}}}}, "outputs [2, 10] for a batch of 2 rows, but the data has 3 classes"},
      {"student.init misshaped", {{"student", {{"init", dir / "wide/student.safetensors"}}}},
       "wrong shape: 0.weight is [12, 64], the model needs [8, 64]; 0.bias is [12]"},
      {"student.init missing tensors", {{"student", {{"hidden", {8, 8}}, {"init", dir / "run/student.safetensors"}}}},
       "missing: 4.weight [3, 8]; 4.bias [3]"},
      {"ragged CSV", {{"data", {{"path", "ragged.csv"}}}}, "ragged.csv:2: has 4 columns, the rows before have 3"},
      {"non-numeric CSV", {{"data", {{"path", "text.csv"}}}}, "text.csv:2:2: 'two' is not a number"},
      {"labels outside [0, C)", {{"data", {{"num_classes", 2}}}}, "labels must lie in [0, num_classes)"},
      {"empty data", {{"data", {{"path", "empty.csv"}}}}, "empty.csv: holds no data rows"},
      {"batch larger than the data", {{"train", {{"batch_size", 500}}}}, "train.batch_size: 500 is larger than the 72 training rows"},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      json doc = good;
      doc.merge_patch(c.patch);
      distill::test::write_text(dir / "case.json", doc.dump());
      auto r = run_distill("train --config " + (dir / "case.json") + " --overwrite");
      INFO(r.output);
      CHECK(r.exit_code == 1);
      CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
      CHECK_THAT(r.output, Catch::Contains(c.expected));
      CHECK_THAT(r.output, !Catch::Contains("terminate called") && !Catch::Contains("Exception raised from"));
      CHECK(snapshot(dir / "run") == before);
    }
  }
  SECTION("missing config") {
    auto r = run_distill("train --config " + (dir / "nope.json") + " --out " + (dir / "run") + " --overwrite");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::StartsWith("error: ") && Catch::Contains("config file not found"));
  }
  SECTION("unreadable config (a folder)") {
    auto r = run_distill("train --config " + dir.path + " --overwrite");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains("is a directory"));
  }
  SECTION("invalid JSON: line and column") {
    auto r = run_distill("train --config " + (dir / "bad.json") + " --out " + (dir / "run") + " --overwrite");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains("bad.json:2:") && Catch::Contains("invalid JSON"));
    CHECK(snapshot(dir / "run") == before);
  }
  SECTION("unwritable out_dir") {
    auto r = run_distill("train --config " + (dir / "good.json") + " --out /proc/self/distill-run");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::StartsWith("error: run.out_dir: cannot create"));
  }
}

TEST_CASE("bad input, language models: one error line, exit 1, the existing run untouched") {
  distill::test::ScratchDir dir("bad-lm");
  const std::string lm = distill::test::source_path("tests/fixtures/lm_parity");
  const std::string llama = distill::test::source_path("tests/fixtures/llama");
  json good = {{"run", {{"out_dir", dir / "run"}, {"threads", 1}}},
               {"data", {{"format", "tokens"}, {"path", lm + "/tokens.bin"}, {"val_path", lm + "/tokens.bin"}, {"seq_len", 16}, {"vocab_size", 128}}},
               {"teacher", {{"path", llama + "/tiny-gqa"}}},
               {"student", {{"arch", "llama"}, {"hidden_size", 16}, {"intermediate_size", 32}, {"num_hidden_layers", 1},
                            {"num_attention_heads", 2}, {"max_position_embeddings", 64}}},
               {"train", {{"max_steps", 2}, {"batch_size", 2}}}};
  distill::test::write_text(dir / "good.json", good.dump());
  auto first = run_distill("train --config " + (dir / "good.json"));
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  const auto before = snapshot(dir / "run");

  // Model folders and shards that are wrong in one way each.
  auto copy_folder = [&](const std::string& from, const std::string& to) {
    distill::paths::create_directories(to);
    for (const auto& name : distill::paths::list_dir(from))
      distill::test::write_text(to + "/" + name, distill::test::read_text(from + "/" + name));
  };
  copy_folder(llama + "/tiny-gqa", dir / "gpt2");
  distill::test::write_text(dir / "gpt2/config.json", R"({"model_type": "gpt2", "vocab_size": 128, "n_embd": 64})");
  copy_folder(llama + "/tiny-gqa", dir / "noweights");
  distill::paths::remove_file(dir / "noweights/model.safetensors");
  copy_folder(llama + "/tiny-sharded", dir / "noshard");
  distill::paths::remove_file(dir / "noshard/model-00001-of-00002.safetensors");
  const std::string tokens = distill::test::read_text(lm + "/tokens.bin");
  distill::test::write_text(dir / "cut.bin", tokens.substr(0, tokens.size() - 3));
  std::string magic = tokens;
  magic[0] = 'X';
  distill::test::write_text(dir / "magic.bin", magic);

  const std::vector<BadCase> cases = {
      {"seq_len above the student's positions", {{"student", {{"max_position_embeddings", 8}}}},
       "student.max_position_embeddings: 8 is below data.seq_len 16"},
      {"seq_len above the teacher's positions", {{"data", {{"seq_len", 300}}}, {"student", {{"max_position_embeddings", 512}}}},
       "teacher: llama 2 layers"},
      {"a wider teacher without loss.vocab truncate", {{"teacher", {{"path", llama + "/tiny-tied"}}}},
       "set loss.vocab to \"truncate\""},
      {"a narrower teacher", {{"student", {{"vocab_size", 200}}}}, "outputs [2, 4, 128]"},
      {"an unsupported model_type", {{"teacher", {{"path", dir / "gpt2"}}}},
       "model_type 'gpt2' is not supported; supported: llama, mistral, qwen2"},
      {"a model folder without weights", {{"teacher", {{"path", dir / "noweights"}}}}, "has config.json but no weights"},
      {"an index naming a missing shard", {{"teacher", {{"path", dir / "noshard"}}}},
       "names shard model-00001-of-00002.safetensors, which is missing"},
      {"a truncated shard", {{"data", {{"path", dir / "cut.bin"}}}}, "cut.bin"},
      {"a shard with a wrong magic", {{"data", {{"path", dir / "magic.bin"}}}}, "magic.bin"},
      {"a token id above the vocabulary", {{"data", {{"vocab_size", 64}}}}, "tokens.bin"},
      {"a language model on rows", {{"data", {{"format", "csv"}, {"path", distill::test::source_path("data/digits.csv.gz")}, {"val_path", nullptr}, {"seq_len", nullptr}, {"vocab_size", nullptr}}}, {"teacher", nullptr}},
       "\"llama\" is a language model"},
      {"a classifier on tokens", {{"teacher", nullptr}, {"student", {{"arch", "mlp"}, {"hidden", {8}}, {"hidden_size", nullptr}, {"intermediate_size", nullptr}, {"num_hidden_layers", nullptr}, {"num_attention_heads", nullptr}, {"max_position_embeddings", nullptr}}}},
       "\"mlp\" classifies rows of features"},
  };
  for (const auto& c : cases) {
    DYNAMIC_SECTION(c.name) {
      json doc = good;
      doc.merge_patch(c.patch);
      distill::test::write_text(dir / "case.json", doc.dump());
      auto r = run_distill("train --config " + (dir / "case.json") + " --overwrite");
      INFO(r.output);
      CHECK(r.exit_code == 1);
      CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
      CHECK_THAT(r.output, Catch::Contains(c.expected));
      CHECK_THAT(r.output, !Catch::Contains("terminate called") && !Catch::Contains("Exception raised from"));
      CHECK(snapshot(dir / "run") == before);
    }
  }
}
