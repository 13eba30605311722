// Language models end to end through the CLI: a tokenizer trained on text, the text packed, a llama teacher
// trained from a config, written as a Hugging Face folder and generating text, a student distilled from that
// folder, a run interrupted and resumed bit for bit, bfloat16 autocast, TorchScript language models, and the
// error that binds data to a model's tokenizer.
#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <sstream>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "../train_compare.h"
#include "distill/cache/cache_format.h"
#include "distill/cache/logprob_import.h"
#include "distill/data/pack.h"
#include "distill/text/tokenizer.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"

using distill::test::run_distill;
using nlohmann::json;

namespace {

std::vector<json> events(const std::string& path, const std::string& kind) {
  std::vector<json> out;
  std::istringstream in(distill::test::read_text(path));
  for (std::string line; std::getline(in, line);) {
    json e = json::parse(line);
    if (e["event"] == kind) out.push_back(e);
  }
  return out;
}

json llama(int64_t layers, int64_t hidden) {
  return {{"arch", "llama"},           {"hidden_size", hidden},        {"intermediate_size", 2 * hidden},
          {"num_hidden_layers", layers}, {"num_attention_heads", 4},   {"num_key_value_heads", 2},
          {"max_position_embeddings", 64}, {"tie_word_embeddings", true}};
}

std::string write_config(const distill::test::ScratchDir& dir, const std::string& name, const json& config) {
  distill::test::write_text(dir / name, config.dump(2));
  return dir / name;
}

}  // namespace

TEST_CASE("lm e2e: tokenizer, pack, teacher, Hugging Face folder, generate, distilled student") {
  distill::test::ScratchDir dir("lm-e2e");
  const std::string text = distill::test::source_path("tests/fixtures/tokenizers/shakespeare_slice.txt");
  auto t = run_distill("data tokenizer --in " + text + " --vocab-size 400 --out " + (dir / "tok.model"));
  INFO(t.output);
  REQUIRE(t.exit_code == 0);
  auto p = run_distill("data pack --tokenizer " + (dir / "tok.model") + " --in " + text + " --out " + (dir / "tokens") +
                       " --val-fraction 0.05");
  INFO(p.output);
  REQUIRE(p.exit_code == 0);

  json teacher = {{"run", {{"out_dir", dir / "teacher"}, {"seed", 1}, {"threads", 2}}},
                  {"data", {{"format", "tokens"}, {"path", dir / "tokens"}, {"seq_len", 32}}},
                  {"student", llama(2, 32)},
                  {"optim", {{"lr", 0.01}}},
                  {"train", {{"max_steps", 30}, {"batch_size", 8}, {"log_every", 10}, {"eval_every", 15}}}};
  auto r = run_distill("train --config " + write_config(dir, "teacher.json", teacher));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  auto train = events(dir / "teacher/metrics.jsonl", "train");
  REQUIRE(train.size() == 3);
  CHECK(train.back()["loss"].get<double>() < train.front()["loss"].get<double>());
  CHECK(train.front().contains("tokens_per_s"));
  const json summary = json::parse(distill::test::read_text(dir / "teacher/summary.json"));
  CHECK(summary["val_ppl"].get<double>() < 400.0);  // below the uniform distribution's 400
  CHECK(summary["val_tokens"].get<int64_t>() > 0);

  // The student folder: what transformers loads, with the tokenizer it was trained with.
  for (const char* file : {"config.json", "model.safetensors", "generation_config.json", "tokenizer.model",
                           "tokenizer_config.json"})
    CHECK(distill::paths::exists(dir / "teacher/student/" + std::string(file)));
  const json hf = json::parse(distill::test::read_text(dir / "teacher/student/config.json"));
  CHECK(hf["architectures"][0] == "LlamaForCausalLM");
  CHECK(hf["vocab_size"] == 400);

  // Greedy generation from the run folder prints the prompt and its continuation; twice the same.
  auto g1 = run_distill("generate --model " + (dir / "teacher") + " --prompt 'ROMEO:' --max-new-tokens 12");
  auto g2 = run_distill("generate --model " + (dir / "teacher/student") + " --prompt 'ROMEO:' --max-new-tokens 12");
  INFO(g1.output);
  REQUIRE(g1.exit_code == 0);
  CHECK(g1.output.rfind("ROMEO:", 0) == 0);
  CHECK(g1.output.size() > std::string("ROMEO:\n").size());
  CHECK(g1.output == g2.output);
  auto s1 = run_distill("generate --model " + (dir / "teacher") + " --prompt 'ROMEO:' --temperature 1 --top-k 20 --seed 3");
  auto s2 = run_distill("generate --model " + (dir / "teacher") + " --prompt 'ROMEO:' --temperature 1 --top-k 20 --seed 3");
  CHECK(s1.exit_code == 0);
  CHECK(s1.output == s2.output);
  auto bad = run_distill("generate --model " + (dir / "teacher") + " --prompt x --top-p 1.5");
  CHECK(bad.exit_code == 1);
  CHECK_THAT(bad.output, Catch::Contains("error: --top-p: must be in (0, 1]"));

  // --prompts: JSONL records of sampled completions, the same whatever the batch size, continued after a
  // kill (a partial last line cut off), refused with other settings; a prompt line that is not JSON named.
  distill::test::write_text(dir / "prompts.jsonl", "{\"prompt\": \"ROMEO:\"}\n{\"prompt\": \"JULIET: O\"}\n\n"
                                                   "{\"prompt\": \"ROMEO:\", \"id\": 7}\n");
  const std::string gen = "generate --model " + (dir / "teacher") + " --prompts " + (dir / "prompts.jsonl") +
                          " --samples-per-prompt 2 --max-new-tokens 10 --temperature 1 --top-k 20 --seed 5";
  auto p1 = run_distill(gen + " --out " + (dir / "gen1.jsonl") + " --batch-size 4");
  INFO(p1.output);
  REQUIRE(p1.exit_code == 0);
  auto p2 = run_distill(gen + " --out " + (dir / "gen2.jsonl") + " --batch-size 1");
  REQUIRE(p2.exit_code == 0);
  const std::string records = distill::test::read_text(dir / "gen1.jsonl");
  CHECK(records == distill::test::read_text(dir / "gen2.jsonl"));
  std::vector<json> lines;
  {
    std::istringstream in(records);
    for (std::string line; std::getline(in, line);) lines.push_back(json::parse(line));
  }
  REQUIRE(lines.size() == 6);
  CHECK(lines[4]["prompt"] == "ROMEO:");
  CHECK(lines[4]["index"] == 2);
  CHECK(lines[5]["sample"] == 1);
  CHECK(lines[0]["completion"] != lines[1]["completion"]);  // two samples of one prompt
  const json settings = json::parse(distill::test::read_text(dir / "gen1.jsonl.settings.json"));
  CHECK(settings["temperature"] == 1.0);
  CHECK(settings["top_k"] == 20);
  CHECK(settings["seed"] == 5);
  // Killed after three records and a half: the rerun keeps them, cuts the half, and writes the same file.
  const size_t third = records.find('\n', records.find('\n', records.find('\n') + 1) + 1) + 1;
  distill::test::write_text(dir / "gen1.jsonl", records.substr(0, third) + records.substr(third, 9));
  auto p3 = run_distill(gen + " --out " + (dir / "gen1.jsonl") + " --batch-size 3");
  INFO(p3.output);
  REQUIRE(p3.exit_code == 0);
  CHECK_THAT(p3.output, Catch::Contains("3 new, continued"));
  CHECK(distill::test::read_text(dir / "gen1.jsonl") == records);
  auto other = run_distill(gen + " --out " + (dir / "gen1.jsonl") + " --top-p 0.5");
  CHECK(other.exit_code == 1);
  CHECK_THAT(other.output, Catch::Contains("error: --out: ") && Catch::Contains("top_p: 1.0 vs 0.5"));
  distill::test::write_text(dir / "bad.jsonl", "{\"prompt\": \"a\"}\n{\"text\": \"b\"}\n");
  auto badp = run_distill("generate --model " + (dir / "teacher") + " --prompts " + (dir / "bad.jsonl") + " --out " +
                          (dir / "gen3.jsonl"));
  CHECK(badp.exit_code == 1);
  CHECK_THAT(badp.output, Catch::Contains("bad.jsonl:2: needs a string \"prompt\""));
  auto wrong = run_distill("generate --model " + distill::test::source_path("tests/fixtures/llama/tiny-gqa") + " --tokenizer " +
                           distill::test::source_path("tests/fixtures/tokenizers/mistral") + " --prompt hello");
  CHECK(wrong.exit_code == 1);
  CHECK_THAT(wrong.output, Catch::Contains("error: --tokenizer: ") && Catch::Contains("has a vocabulary of 128"));
  // The completions are training data as they are.
  json sft = {{"run", {{"out_dir", dir / "sft"}, {"seed", 1}, {"threads", 2}}},
              {"data", {{"format", "jsonl"}, {"path", dir / "gen1.jsonl"}, {"tokenizer", dir / "tok.model"}, {"seq_len", 32}}},
              {"student", llama(1, 16)},
              {"train", {{"max_steps", 2}, {"batch_size", 2}, {"log_every", 1}}}};
  auto t2 = run_distill("train --config " + write_config(dir, "sft.json", sft));
  INFO(t2.output);
  CHECK(t2.exit_code == 0);

  // The teacher's answers with OpenAI-style logprobs, written here from a cache of the live teacher: token
  // strings given by their bytes (or as token_id:N where bytes name no single id, as vLLM writes them),
  // the sampled token's own log-probability a -9999 sentinel where it is outside the top-k. Imported, they
  // train the student as the cache they came from: the rows they leave out (bos, prompt) count nowhere.
  json kd = sft;
  kd["run"]["out_dir"] = dir / "kd";
  kd["teacher"] = {{"path", dir / "teacher/student"}};
  kd["loss"] = {{"temperature", 1.0}, {"alpha", 0.5}, {"topk_tail", "tail"}};
  write_config(dir, "kd.json", kd);
  auto lc = run_distill("cache-teacher --config " + (dir / "kd.json") + " --topk 8 --out " + (dir / "live-cache"));
  INFO(lc.output);
  REQUIRE(lc.exit_code == 0);
  {
    const auto tok = distill::Tokenizer::load(dir / "tok.model");
    std::vector<std::string> bytes, pieces;
    for (int32_t id = 0; id < tok->vocab_size(); ++id) {
      bytes.push_back(tok->token_bytes(id));
      pieces.push_back(tok->id_to_token(id));
    }
    const distill::cache::TokenVocabulary vocab(bytes, pieces);
    auto token = [&](int32_t id, double lp) {
      json e = {{"logprob", lp}};
      if (vocab.id_of_bytes(bytes[static_cast<size_t>(id)]) == id) {
        e["token"] = pieces[static_cast<size_t>(id)];  // the text (an API's may be a partial character); the bytes decide
        e["bytes"] = json::array();
        for (unsigned char ch : bytes[static_cast<size_t>(id)]) e["bytes"].push_back(static_cast<int>(ch));
      } else {
        e["token"] = "token_id:" + std::to_string(id);
        e["bytes"] = nullptr;
      }
      return e;
    };
    const distill::cache::Manifest mf = distill::cache::read_manifest(dir / "live-cache");
    const std::string frames = distill::test::read_text(dir / "live-cache/chunks.bin");
    std::vector<distill::cache::Chunk> chunks;
    for (const auto& e : distill::cache::read_index(dir / "live-cache"))
      chunks.push_back(distill::cache::decode_chunk(frames.data() + e.offset, e.bytes, mf.vocab, "chunk"));
    const distill::JsonlRecords recs = distill::read_jsonl(dir / "gen1.jsonl");
    const auto enc = distill::encode_records(*tok, recs, 0, recs.size(), 1);
    std::string lines;
    for (size_t r = 0; r < enc.size(); ++r) {
      json content = json::array();
      const int64_t ex = static_cast<int64_t>(r);
      const auto& ids = enc[r].ids;
      for (int64_t t = enc[r].prompt_tokens - 1; ex < mf.examples && t < std::min<int64_t>(32, static_cast<int64_t>(ids.size()) - 1); ++t) {
        const distill::cache::Chunk& ch = chunks[static_cast<size_t>(ex / mf.chunk_examples)];
        const int64_t row = (ex - ch.first_example) * mf.positions + t;
        const int32_t target = static_cast<int32_t>(ids[static_cast<size_t>(t + 1)]);
        json top = json::array();
        double own = -9999.0;
        for (int64_t j = 0; j < mf.k; ++j) {
          const int32_t id = ch.ids[static_cast<size_t>(row * mf.k + j)];
          const double lp = ch.logprobs[static_cast<size_t>(row * mf.k + j)];
          top.push_back(token(id, lp));
          if (id == target) own = lp;
        }
        json c = token(target, own);
        c["top_logprobs"] = top;
        content.push_back(c);
      }
      json message = {{"role", "assistant"}, {"content", recs.completion[r]}};
      lines += json{{"object", "chat.completion"},
                    {"choices", json::array({{{"index", 0}, {"message", message}, {"logprobs", {{"content", content}}}}})}}
                   .dump() + "\n";
    }
    distill::test::write_text(dir / "openai.jsonl", lines);
  }
  auto imp = run_distill("cache-teacher --config " + (dir / "kd.json") + " --from " + (dir / "openai.jsonl") + " --out " + (dir / "imported"));
  INFO(imp.output);
  REQUIRE(imp.exit_code == 0);
  CHECK(distill::cache::read_manifest(dir / "imported").k == 8);
  auto ka = run_distill("train --config " + (dir / "kd.json") + " --out " + (dir / "kd-a") + " --set train.max_steps=3 --set teacher.cache=" + (dir / "live-cache"));
  INFO(ka.output);
  REQUIRE(ka.exit_code == 0);
  auto kb = run_distill("train --config " + (dir / "kd.json") + " --out " + (dir / "kd-b") + " --set train.max_steps=3 --set teacher.cache=" + (dir / "imported"));
  INFO(kb.output);
  REQUIRE(kb.exit_code == 0);
  distill::test::check_same_training(dir / "kd-a", dir / "kd-b", "student/model.safetensors", 2e-5);

  // generate --topk: the teacher's top-k log-probabilities of its own generations, in the same pass, as
  // OUT.logprobs.jsonl (vLLM's layout over each record's training tokens). The records are the same as without
  // --topk, and their completion_ids are the training data's completion tokens (not a re-encoding of the text,
  // which SentencePiece's dummy prefix changes). Imported, the cache holds the live teacher's top-k at every
  // generated position (the same ids; the same stored log-probability, within one log16 step for the KV
  // cache's rounding) and nothing at the prompt's positions.
  auto gk = run_distill(gen + " --out " + (dir / "gen4.jsonl") + " --batch-size 4 --topk 8");
  INFO(gk.output);
  REQUIRE(gk.exit_code == 0);
  CHECK(distill::test::read_text(dir / "gen4.jsonl") == records);
  {
    // Killed with two records and half a logprobs line written: the rerun keeps the two, cuts both files back
    // to them, and writes the same records and log-probabilities (to float rounding: other batches).
    const std::string lp_path = dir / "gen4.jsonl.logprobs.jsonl";
    const std::string lp = distill::test::read_text(lp_path);
    const size_t two = lp.find('\n', lp.find('\n') + 1) + 1;
    distill::test::write_text(lp_path, lp.substr(0, two) + lp.substr(two, 40));
    auto again = run_distill(gen + " --out " + (dir / "gen4.jsonl") + " --batch-size 4 --topk 8");
    INFO(again.output);
    REQUIRE(again.exit_code == 0);
    CHECK_THAT(again.output, Catch::Contains("keeping 2 of its 6 records"));
    CHECK(distill::test::read_text(dir / "gen4.jsonl") == records);
    std::istringstream want(lp), got(distill::test::read_text(lp_path));
    int compared_lines = 0;
    for (std::string a, b; std::getline(want, a) && std::getline(got, b); ++compared_lines) {
      const json ja = json::parse(a), jb = json::parse(b);
      CHECK(ja["prompt_token_ids"] == jb["prompt_token_ids"]);
      REQUIRE(ja["prompt_logprobs"].size() == jb["prompt_logprobs"].size());
      for (size_t t = 0; t < ja["prompt_logprobs"].size(); ++t) {
        const json& ea = ja["prompt_logprobs"][t];
        const json& eb = jb["prompt_logprobs"][t];
        REQUIRE(ea.is_null() == eb.is_null());
        if (ea.is_null()) continue;
        for (auto it = ea.begin(); it != ea.end(); ++it) {
          REQUIRE(eb.contains(it.key()));
          CHECK(std::abs(it.value().get<double>() - eb[it.key()].get<double>()) <= 1e-5);
        }
      }
    }
    CHECK(compared_lines == 6);
  }
  {
    const auto tok = distill::Tokenizer::load(dir / "tok.model");
    const distill::JsonlRecords recs = distill::read_jsonl(dir / "gen1.jsonl");
    const auto enc = distill::encode_records(*tok, recs, 0, recs.size(), 1);
    for (size_t r = 0; r < enc.size(); ++r) {
      const std::vector<uint32_t> completion(enc[r].ids.begin() + enc[r].prompt_tokens, enc[r].ids.end() - 1);
      CHECK(completion == std::vector<uint32_t>(lines[r]["completion_ids"].begin(), lines[r]["completion_ids"].end()));
    }
  }
  auto ik = run_distill("cache-teacher --config " + (dir / "kd.json") + " --from " + (dir / "gen4.jsonl.logprobs.jsonl") +
                        " --topk 8 --out " + (dir / "from-generate"));
  INFO(ik.output);
  REQUIRE(ik.exit_code == 0);
  {
    auto chunks_of = [](const std::string& cache_dir) {
      const distill::cache::Manifest mf = distill::cache::read_manifest(cache_dir);
      const std::string frames = distill::test::read_text(cache_dir + "/chunks.bin");
      std::vector<distill::cache::Chunk> chunks;
      for (const auto& e : distill::cache::read_index(cache_dir))
        chunks.push_back(distill::cache::decode_chunk(frames.data() + e.offset, e.bytes, mf.vocab, "chunk"));
      return std::make_pair(mf, chunks);
    };
    const auto [live_mf, live] = chunks_of(dir / "live-cache");
    const auto [gen_mf, got] = chunks_of(dir / "from-generate");
    REQUIRE(gen_mf.examples == live_mf.examples);
    REQUIRE(gen_mf.positions == live_mf.positions);
    REQUIRE(gen_mf.k == 8);
    const double step = 1.0 / distill::cache::kLog16Scale + 1e-5;
    int64_t compared = 0, absent = 0;
    for (int64_t ex = 0; ex < gen_mf.examples; ++ex) {
      const auto& lc = live[static_cast<size_t>(ex / live_mf.chunk_examples)];
      const auto& gc = got[static_cast<size_t>(ex / gen_mf.chunk_examples)];
      for (int64_t t = 0; t < gen_mf.positions; ++t) {
        const int64_t lrow = (ex - lc.first_example) * live_mf.positions + t, grow = (ex - gc.first_example) * gen_mf.positions + t;
        if (gc.ids[static_cast<size_t>(grow * 8)] == -1) {
          ++absent;
          continue;
        }
        ++compared;
        for (int64_t j = 0; j < 8; ++j) {
          const size_t l = static_cast<size_t>(lrow * 8 + j), g = static_cast<size_t>(grow * 8 + j);
          INFO("example " << ex << " position " << t << " entry " << j);
          CHECK(gc.ids[g] == lc.ids[l]);
          CHECK(std::abs(gc.logprobs[g] - lc.logprobs[l]) <= step);
        }
      }
    }
    CHECK(compared >= gen_mf.examples * 9);  // each training record's generated tokens (10; the last may be the eos)
    CHECK(absent > 0);         // the bos and the prompt
  }
  // Continued without --topk: refused, naming the setting the earlier run had.
  auto notopk = run_distill(gen + " --out " + (dir / "gen4.jsonl"));
  CHECK(notopk.exit_code == 1);
  CHECK_THAT(notopk.output, Catch::Contains("logprobs_topk: 8 vs absent"));
  auto tk = run_distill("generate --model " + (dir / "teacher") + " --prompt hi --topk 4");
  CHECK(tk.exit_code == 1);
  CHECK_THAT(tk.output, Catch::Contains("error: --topk: ") && Catch::Contains("give --prompts"));


  // A student distilled from the teacher's folder; the folder's tokenizer is the data's, so it is accepted.
  json student = {{"run", {{"out_dir", dir / "student"}, {"seed", 2}, {"threads", 2}}},
                  {"data", {{"format", "tokens"}, {"path", dir / "tokens"}, {"seq_len", 32}}},
                  {"teacher", {{"path", dir / "teacher/student"}, {"dtype", "bf16"}}},
                  {"student", llama(1, 16)},
                  {"loss", {{"temperature", 2.0}, {"alpha", 0.5}}},
                  {"optim", {{"lr", 0.01}}},
                  {"train", {{"max_steps", 6}, {"batch_size", 4}, {"grad_accum", 2}, {"log_every", 3}}}};
  auto d = run_distill("train --config " + write_config(dir, "student.json", student));
  INFO(d.output);
  REQUIRE(d.exit_code == 0);
  const json ds = json::parse(distill::test::read_text(dir / "student/summary.json"));
  CHECK(ds.contains("teacher_val_ppl"));
  CHECK(ds.contains("val_kd"));
  CHECK(ds["agreement"].get<double>() >= 0.0);

  // Data packed with another tokenizer than the teacher folder's: refused, naming both.
  distill::test::write_text(dir / "teacher/student/tokenizer.model",
                            distill::test::read_text(distill::test::source_path("tests/fixtures/tokenizers/shakespeare_bpe.model")));
  auto m = run_distill("train --config " + (dir / "student.json") + " --overwrite");
  CHECK(m.exit_code == 1);
  CHECK(distill::test::count_lines_starting(m.output, "error: ") == 1);
  CHECK_THAT(m.output, Catch::Contains("teacher.path") && Catch::Contains("tokenizer.model") &&
                           Catch::Contains("distill data pack --tokenizer"));
}

TEST_CASE("lm e2e: interrupted and resumed, a language-model run ends bit-identical") {
  distill::test::ScratchDir dir("lm-resume");
  const std::string fixtures = distill::test::source_path("tests/fixtures/lm_parity");
  json config = json::parse(distill::test::read_text(fixtures + "/forward_kl.json"));
  config["data"]["path"] = fixtures + "/tokens.bin";
  config["data"]["val_path"] = fixtures + "/tokens.bin";
  config["data"]["shuffle"] = true;
  config["teacher"]["path"] = distill::test::source_path("tests/fixtures/llama/tiny-gqa");
  config["student"] = llama(1, 16);
  config["student"]["max_position_embeddings"] = 128;
  config["train"] = {{"max_steps", 8}, {"batch_size", 2}, {"grad_accum", 2}, {"log_every", 2}};
  config["checkpoint"] = {{"every", 2}};
  config["run"] = {{"out_dir", dir / "whole"}, {"threads", 1}, {"seed", 4}};
  const std::string path = write_config(dir, "c.json", config);
  REQUIRE(run_distill("train --config " + path).exit_code == 0);
  auto stopped = run_distill("train --config " + path + " --out " + (dir / "parts"), "DISTILL_TEST_STOP_AFTER_STEP=3");
  INFO(stopped.output);
  REQUIRE(stopped.exit_code == 75);
  auto resumed = run_distill("train --config " + path + " --out " + (dir / "parts") + " --resume auto");
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  const auto a = distill::load_safetensors(dir / "whole/student/model.safetensors");
  const auto b = distill::load_safetensors(dir / "parts/student/model.safetensors");
  REQUIRE(a.tensors.size() == b.tensors.size());
  for (const auto& [name, t] : a.tensors) {
    INFO(name);
    REQUIRE(b.find(name));
    CHECK(torch::equal(t, *b.find(name)));
  }
}

TEST_CASE("lm e2e: bfloat16 autocast and TorchScript language models") {
  distill::test::ScratchDir dir("lm-variants");
  const std::string fixtures = distill::test::source_path("tests/fixtures/lm_parity");
  const json expected = json::parse(distill::test::read_text(fixtures + "/expected.json"));
  const std::string config = fixtures + "/forward_kl.json";
  // bfloat16 matrix products, float32 weights: the reference's losses to bfloat16's precision.
  auto bf = run_distill("train --config " + config + " --out " + (dir / "bf16") +
                        " --set train.precision=bfloat16 --set teacher.dtype=bf16");
  INFO(bf.output);
  REQUIRE(bf.exit_code == 0);
  auto steps = events(dir / "bf16/metrics.jsonl", "train");
  REQUIRE(steps.size() == 4);
  for (size_t i = 0; i < steps.size(); ++i)
    CHECK(steps[i]["loss"].get<double>() == Approx(expected["steps"][i]["loss"].get<double>()).epsilon(0.01));

  // A TorchScript language model as the teacher, then as the student (saved back as TorchScript).
  const std::string lm = distill::test::source_path("tests/fixtures/torchscript/causal_lm_128.pt");
  auto t = run_distill("train --config " + config + " --out " + (dir / "ts-teacher") + " --set teacher.path=" + lm);
  INFO(t.output);
  CHECK(t.exit_code == 0);
  auto s = run_distill("train --config " + config + " --out " + (dir / "ts-student") +
                       " --set student.init=null --set student.path=" + lm);
  INFO(s.output);
  REQUIRE(s.exit_code == 0);
  CHECK(distill::paths::exists(dir / "ts-student/student.pt"));
  CHECK_FALSE(distill::paths::exists(dir / "ts-student/student"));  // not a built-in LM: no Hugging Face folder
}
