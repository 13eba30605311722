// `distill data pack`, then `distill validate` and `distill train` on what it wrote, through the binary:
// shards read back with llm.c's own reading convention by a stdlib-only Python script
// (tests/fixtures/tokens/read_llmc_shard.py) must hold the reference tokenizers' golden ids; a tokens and a
// jsonl config validate and train with a TorchScript causal LM (tests/fixtures/tokens/make_causal_lm.py, made
// with Debian's python3-torch when it is installed); user errors are one "error: " line.
#include <catch2/catch.hpp>

#include <cstdlib>

#include <nlohmann/json.hpp>

#include "../test_util.h"

using distill::test::run_distill;
using distill::test::ScratchDir;
using nlohmann::json;

namespace {

const json& golden() {
  static const json g =
      json::parse(distill::test::read_text(distill::test::source_path("tests/fixtures/tokenizers/golden.json")));
  return g;
}
std::vector<int64_t> golden_ids(const char* group, const char* fixture, size_t text) {
  return golden()[group]["fixtures"][fixture]["cases"][text]["ids"].get<std::vector<int64_t>>();
}
std::string golden_text(size_t i) { return golden()["texts"][i].get<std::string>(); }

const std::string kGpt2 = distill::test::source_path("tests/fixtures/tokenizers/gpt2");
const std::string kSpModel = distill::test::source_path("tests/fixtures/tokenizers/shakespeare_bpe.model");

bool have_python(const std::string& module) {
  return std::system(("/usr/bin/python3 -c 'import " + module + "' >/dev/null 2>&1").c_str()) == 0;
}

// Runs a shell command and returns its stdout (and its exit code through `code`).
std::string run_command(const std::string& cmd, int* code) {
  std::string out;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  if (!pipe) return out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, pipe)) > 0) out.append(buf, n);
  const int status = ::pclose(pipe);
  *code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return out;
}

// The shard as llm.c reads it, through the stdlib-only Python reader.
json read_with_python(const std::string& shard) {
  int code = 0;
  const std::string out = run_command(
      "/usr/bin/python3 " + distill::test::source_path("tests/fixtures/tokens/read_llmc_shard.py") + " '" + shard + "'", &code);
  INFO(out);
  REQUIRE(code == 0);
  return json::parse(out);
}

void check_user_error(const distill::test::CommandResult& r, const std::string& needle) {
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
  CHECK_THAT(r.output, Catch::Contains(needle));
  CHECK_THAT(r.output, !Catch::Contains("terminate called") && !Catch::Contains("Exception raised from"));
}

std::string write_config(const ScratchDir& dir, const std::string& name, const json& config) {
  distill::test::write_text(dir / name, config.dump(2));
  return dir / name;
}

}  // namespace

TEST_CASE("data pack: shards that llm.c's reader reads as the reference tokenizer's ids") {
  ScratchDir dir("pack-cli");
  distill::test::write_text(dir / "slice.txt", golden_text(23));
  auto r = run_distill("data pack --tokenizer " + kGpt2 + " --in " + (dir / "slice.txt") + " --out " + (dir / "out") +
                       " --val-fraction 0");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::StartsWith("packed 1 document") && Catch::Contains("manifest.json"));
  std::vector<int64_t> expected = golden_ids("tokenizer_json", "gpt2", 23);
  expected.push_back(50256);  // GPT-2's <|endoftext|> closes the document; it has no bos
  if (!have_python("json")) {
    WARN("no /usr/bin/python3: the llm.c-convention reader was not run");
    return;
  }
  const json shard = read_with_python(dir / "out/train_000000.bin");
  CHECK(shard["version"] == 1);
  CHECK(shard["count"] == expected.size());
  CHECK(shard["tokens"].get<std::vector<int64_t>>() == expected);
  CHECK_FALSE(shard.contains("mask"));

  // prompt/completion: the mask beside the shard, read by the same script; ids from python3-sentencepiece.
  std::string jsonl;
  std::vector<int64_t> ids;
  std::vector<int64_t> mask;
  for (auto [p, c] : {std::pair<size_t, size_t>{0, 1}, {9, 20}}) {
    jsonl += json({{"prompt", golden_text(p)}, {"completion", golden_text(c)}}).dump() + "\n";
    const auto prompt = golden_ids("sentencepiece", "shakespeare_bpe", p);
    const auto completion = golden_ids("sentencepiece", "shakespeare_bpe", c);
    ids.push_back(1);
    ids.insert(ids.end(), prompt.begin(), prompt.end());
    ids.insert(ids.end(), completion.begin(), completion.end());
    ids.push_back(2);
    mask.insert(mask.end(), prompt.size() + 1, 0);
    mask.insert(mask.end(), completion.size() + 1, 1);
  }
  distill::test::write_text(dir / "sft.jsonl", jsonl);
  r = run_distill("data pack --tokenizer " + kSpModel + " --in " + (dir / "sft.jsonl") + " --out " + (dir / "sft") +
                  " --val-fraction 0");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("with loss masks"));
  const json sft = read_with_python(dir / "sft/train_000000.bin");
  CHECK(sft["tokens"].get<std::vector<int64_t>>() == ids);
  CHECK(sft["mask"].get<std::vector<int64_t>>() == mask);
}

TEST_CASE("data pack: user errors are one clear line") {
  ScratchDir dir("pack-cli-errors");
  distill::test::write_text(dir / "a.txt", "Some text to pack, and some more.\n");
  const std::string base = "data pack --tokenizer " + kGpt2 + " --in " + (dir / "a.txt") + " --out " + (dir / "out");
  CHECK(run_distill("data pack --tokenizer " + kGpt2 + " --out " + (dir / "out")).exit_code == 2);  // --in missing
  CHECK(run_distill("data").exit_code == 2);
  check_user_error(run_distill("data pack --tokenizer " + kGpt2 + " --in " + (dir / "none.txt") + " --out " + (dir / "o")),
                   "--in " + (dir / "none.txt") + ": no such file");
  check_user_error(run_distill(base + " --val-fraction 1"), "--val-fraction: must be in [0, 1)");
  check_user_error(run_distill("data pack --tokenizer " + (dir / "none") + " --in " + (dir / "a.txt") + " --out " + (dir / "o")),
                   "--tokenizer: " + (dir / "none") + ": no such file");
  REQUIRE(run_distill(base).exit_code == 0);
  check_user_error(run_distill(base), "already holds a packed dataset (manifest.json); pass --overwrite");
  CHECK(run_distill(base + " --overwrite").exit_code == 0);
}

TEST_CASE("data pack, then validate and train a tokens config and a jsonl config") {
  ScratchDir dir("pack-validate");
  const std::string slice = distill::test::source_path("tests/fixtures/tokenizers/shakespeare_slice.txt");
  auto r = run_distill("data pack --tokenizer " + kSpModel + " --in " + slice + " --out " + (dir / "tok"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const json manifest = json::parse(distill::test::read_text(dir / "tok/manifest.json"));
  const std::string sha = manifest["tokenizer"]["sha256"];

  // Data errors come before any model is built, so a row model is enough to see them.
  json config = {{"run", {{"out_dir", dir / "run"}, {"threads", 1}, {"seed", 3}}},
                 {"data", {{"format", "tokens"}, {"path", "tok"}, {"seq_len", 32}, {"tokenizer", kGpt2}}},
                 {"student", {{"arch", "mlp"}, {"hidden", {4}}}},
                 {"train", {{"max_steps", 4}, {"batch_size", 4}, {"log_every", 1}, {"eval_batch_size", 64}}},
                 {"checkpoint", {{"every", 2}}}};
  check_user_error(run_distill("validate --config " + write_config(dir, "bad.json", config)),
                   "is not the tokenizer " + (dir / "tok/manifest.json") + " was packed with");
  config["data"].erase("tokenizer");
  config["data"]["path"] = "nowhere";
  check_user_error(run_distill("validate --config " + write_config(dir, "bad.json", config)), "nowhere: no such file");
  config["data"]["path"] = "tok";

  if (!have_python("torch")) {
    WARN("no python3-torch: the TorchScript causal LM fixture cannot be made; validate and train not run");
    return;
  }
  int code = 0;
  const std::string made = run_command("/usr/bin/python3 " + distill::test::source_path("tests/fixtures/tokens/make_causal_lm.py") +
                                           " " + (dir / "lm.pt") + " 1000 8 2>&1", &code);
  INFO(made);
  REQUIRE(code == 0);
  config["student"] = {{"path", dir / "lm.pt"}};
  const std::string tokens_config = write_config(dir, "tokens.json", config);
  r = run_distill("validate --config " + tokens_config);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("windows of 32 + 1 tokens") && Catch::Contains("vocabulary 1000 (the tokenizer of") &&
                           Catch::Contains(sha) && Catch::Contains("tokens.json: ok"));

  // Trained straight through, or stopped after 2 steps and resumed: the same weights (the batch source hands
  // over any range of any epoch).
  r = run_distill("train --config " + tokens_config);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("student val ppl"));
  const std::string straight = distill::test::read_text(dir / "run/student.safetensors");
  r = run_distill("train --config " + tokens_config + " --out " + (dir / "run2") + " --set train.max_steps=2");
  REQUIRE(r.exit_code == 0);
  r = run_distill("train --config " + tokens_config + " --out " + (dir / "run2") + " --resume auto");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(distill::test::read_text(dir / "run2/student.safetensors") == straight);

  // jsonl: the same text as records, tokenised at load.
  std::string jsonl;
  for (size_t i : {1, 9, 10, 20, 23, 11, 12}) jsonl += json({{"text", golden_text(i)}}).dump() + "\n";
  distill::test::write_text(dir / "docs.jsonl", jsonl);
  config["data"] = {{"format", "jsonl"}, {"path", "docs.jsonl"}, {"tokenizer", kSpModel}, {"seq_len", 16}, {"val_fraction", 0.3}};
  config["train"]["batch_size"] = 2;
  r = run_distill("validate --config " + write_config(dir, "jsonl.json", config));
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("5 text records") && Catch::Contains("vocabulary 1000 (the tokenizer's)"));
}
