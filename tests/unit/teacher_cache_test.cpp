// The teacher cache: its chunk format (round trip, log16's precision, damage detected), its writer (resume
// after a kill, a complete cache left alone, another cache refused), and `distill cache-teacher` +
// `teacher.cache` end to end: a cache of k = V trains as the live teacher does (to float32 rounding), a cache
// of k < V as the live top-k teacher, in any order and batch size, on language models and classifiers; and
// the errors when the cache does not belong to the run.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "../train_compare.h"
#include "distill/cache/cache_format.h"
#include "distill/cache/logprob_import.h"
#include "distill/data/token_shards.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"
#include "distill/loss/kd_loss.h"
#include "distill/text/tokenizer.h"

using distill::test::check_same_training;
using distill::test::run_distill;
using nlohmann::json;
namespace cache = distill::cache;

namespace {

cache::Chunk sample_chunk(int64_t first, int64_t examples, int64_t positions, int64_t k, int64_t vocab, uint32_t seed) {
  cache::Chunk c;
  c.first_example = first;
  c.examples = examples;
  c.positions = positions;
  c.k = k;
  uint64_t s = seed;
  auto next = [&] { s = s * 6364136223846793005ull + 1442695040888963407ull; return static_cast<uint32_t>(s >> 33); };
  for (int64_t e = 0; e < examples; ++e) c.input_hash.push_back(next());
  for (int64_t r = 0; r < examples * positions; ++r) {
    float lp = -0.01f * static_cast<float>(next() % 100);
    for (int64_t j = 0; j < k; ++j) {
      c.ids.push_back(static_cast<int32_t>((next() % static_cast<uint32_t>(vocab / k)) * k + j));  // distinct
      c.logprobs.push_back(lp);
      lp -= 0.001f * static_cast<float>(next() % 3000);
    }
    c.tail_mass.push_back(0.001f * static_cast<float>(next() % 1000));
  }
  return c;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

}  // namespace

TEST_CASE("teacher cache: chunks round trip, log16 keeps 1/512 nat, damage is an error") {
  const cache::Chunk c = sample_chunk(40, 3, 5, 8, 1000, 7);
  SECTION("float32 is exact") {
    const std::string frame = cache::encode_chunk(c, cache::ValueEncoding::float32, 1000);
    const cache::Chunk d = cache::decode_chunk(frame.data(), frame.size(), 1000, "t");
    CHECK(d.first_example == 40);
    CHECK(d.examples == 3);
    CHECK(d.positions == 5);
    CHECK(d.k == 8);
    CHECK(d.input_hash == c.input_hash);
    CHECK(d.ids == c.ids);
    CHECK(d.logprobs == c.logprobs);
    CHECK(d.tail_mass == c.tail_mass);
  }
  SECTION("log16 rounds each log-probability to 1/256 nat, in half the bytes") {
    const std::string f32 = cache::encode_chunk(c, cache::ValueEncoding::float32, 1000);
    const std::string l16 = cache::encode_chunk(c, cache::ValueEncoding::log16, 1000);
    CHECK(l16.size() < f32.size());
    const cache::Chunk d = cache::decode_chunk(l16.data(), l16.size(), 1000, "t");
    // Each row holds the same ids, most probable first (rounding may tie neighbours: then the smaller id first).
    for (int64_t r = 0; r < c.rows(); ++r) {
      std::map<int32_t, float> want;
      for (int64_t j = 0; j < c.k; ++j) want[c.ids[r * c.k + j]] = c.logprobs[r * c.k + j];
      for (int64_t j = 0; j < c.k; ++j) {
        const size_t i = static_cast<size_t>(r * c.k + j);
        REQUIRE(want.count(d.ids[i]));
        CHECK(std::abs(d.logprobs[i] - want[d.ids[i]]) <= 0.5 / 256 + 1e-6);
        if (j > 0) CHECK(d.logprobs[i] <= d.logprobs[i - 1]);
      }
      const double m = c.tail_mass[static_cast<size_t>(r)], got = d.tail_mass[static_cast<size_t>(r)];
      CHECK(std::abs(got - m) <= (m > 0 ? 0.0021 * m : 0.0));
    }
  }
  SECTION("ids above 65535 take 4 bytes") {
    const cache::Chunk big = sample_chunk(0, 2, 3, 4, 200000, 3);
    const std::string frame = cache::encode_chunk(big, cache::ValueEncoding::float32, 200000);
    CHECK(cache::decode_chunk(frame.data(), frame.size(), 200000, "t").ids == big.ids);
  }
  SECTION("a damaged or foreign frame is one clear error") {
    std::string frame = cache::encode_chunk(c, cache::ValueEncoding::float32, 1000);
    CHECK_THROWS_WITH(cache::decode_chunk(frame.data(), frame.size(), 100, "chunks.bin: chunk 3"),
                      Catch::Contains("chunks.bin: chunk 3"));
    frame[frame.size() / 2] ^= 0x5a;
    CHECK_THROWS_AS(cache::decode_chunk(frame.data(), frame.size(), 1000, "x"), distill::Error);
    CHECK_THROWS_AS(cache::decode_chunk(frame.data(), 7, 1000, "x"), distill::Error);
    const std::string junk(64, 'j');
    CHECK_THROWS_WITH(cache::decode_chunk(junk.data(), junk.size(), 1000, "x"), Catch::Contains("not a teacher cache chunk"));
  }
}

TEST_CASE("teacher cache: the writer continues a killed run and refuses another cache") {
  distill::test::ScratchDir dir("cache-writer");
  const std::string out = dir / "c";
  json manifest = {{"k", 8}, {"vocab", 1000}, {"positions", 5}, {"examples", 7}, {"chunk_examples", 3},
                   {"values", "float32"}, {"temperature", 2.0}, {"data", {{"format", "tokens"}}}};
  std::vector<std::string> frames;
  for (int64_t c = 0; c < 3; ++c)
    frames.push_back(cache::encode_chunk(sample_chunk(3 * c, c == 2 ? 1 : 3, 5, 8, 1000, static_cast<uint32_t>(c)),
                                         cache::ValueEncoding::float32, 1000));
  {
    cache::Writer w(out, manifest, false);
    CHECK(w.next_chunk() == 0);
    w.append(frames[0]);
    w.append(frames[1]);
  }
  // A kill between a chunk's data and its index entry: bytes after the last indexed chunk.
  spit(out + "/chunks.bin", slurp(out + "/chunks.bin") + frames[2].substr(0, 10));
  CHECK_FALSE(cache::read_manifest(out).complete);
  {
    cache::Writer w(out, manifest, false);
    CHECK_FALSE(w.done());
    CHECK(w.next_chunk() == 2);
    w.append(frames[2]);
    w.finish({{"bytes", 1}});
  }
  CHECK(slurp(out + "/chunks.bin") == frames[0] + frames[1] + frames[2]);
  CHECK(cache::read_index(out).size() == 3);
  CHECK(cache::read_manifest(out).complete);
  CHECK(cache::Writer(out, manifest, false).done());

  json other = manifest;
  other["k"] = 4;
  CHECK_THROWS_WITH(cache::Writer(out, other, false), Catch::Contains("holds another cache (k: 4 vs 8)") &&
                                                          Catch::Contains("--overwrite"));
  cache::Writer fresh(out, other, true);
  CHECK(fresh.next_chunk() == 0);
  CHECK_THROWS_WITH(cache::Writer(dir.path, manifest, false), Catch::Contains("is not a teacher cache"));
}

TEST_CASE("teacher cache: a language model trains from a cache of k = V as from the live teacher") {
  distill::test::ScratchDir dir("cache-lm");
  const std::string fx = distill::test::source_path("tests/fixtures/lm_parity");
  const std::string config = fx + "/forward_kl.json";
  const std::string tail = " --set loss.topk_tail=tail --set train.max_steps=6 --set data.shuffle=true";

  auto live = run_distill("train --config " + config + " --out " + (dir / "live") + " --set train.max_steps=6 --set data.shuffle=true");
  INFO(live.output);
  REQUIRE(live.exit_code == 0);

  auto c = run_distill("cache-teacher --config " + config + " --topk 128 --out " + (dir / "cache"));
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const cache::Manifest m = cache::read_manifest(dir / "cache");
  CHECK(m.complete);
  CHECK(m.k == 128);
  CHECK(m.vocab == 128);
  CHECK(m.positions == 16);
  CHECK(m.examples == 37);  // (600 - 1) / 16 windows
  CHECK(m.temperature == 2.0);

  auto cached = run_distill("train --config " + config + " --out " + (dir / "cached") + tail + " --set teacher.cache=" +
                            (dir / "cache"));
  INFO(cached.output);
  REQUIRE(cached.exit_code == 0);
  check_same_training(dir / "live", dir / "cached", "student/model.safetensors", 2e-5);

  // Again: a complete cache is left alone.
  auto again = run_distill("cache-teacher --config " + config + " --topk 128 --out " + (dir / "cache"));
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.output, Catch::Contains("already complete"));
}

TEST_CASE("teacher cache: k < V equals the live top-k teacher, a killed cache-teacher continues") {
  distill::test::ScratchDir dir("cache-topk");
  const std::string fx = distill::test::source_path("tests/fixtures/lm_parity");
  const std::string config = fx + "/forward_kl.json";
  const std::string common = " --set train.max_steps=5 --set data.shuffle=true --set train.batch_size=3 --set train.grad_accum=1";

  auto c = run_distill("cache-teacher --config " + config + " --topk 12 --out " + (dir / "cache") + " --batch-size 5 --chunk-examples 7");
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  for (const char* rule : {"tail", "ignore"}) {
    INFO(rule);
    const std::string loss = " --set loss.topk=12 --set loss.topk_tail=" + std::string(rule);
    auto live = run_distill("train --config " + config + " --out " + (dir / "live") + common + loss + " --overwrite");
    INFO(live.output);
    REQUIRE(live.exit_code == 0);
    auto cached = run_distill("train --config " + config + " --out " + (dir / "cached") + common + loss +
                              " --overwrite --set teacher.cache=" + (dir / "cache"));
    INFO(cached.output);
    REQUIRE(cached.exit_code == 0);
    check_same_training(dir / "live", dir / "cached", "student/model.safetensors", 2e-5);
  }

  // A cache of 12 trains a top-4 student: the first 4 entries, the rest in the tail.
  auto four = run_distill("train --config " + config + " --out " + (dir / "four") + common +
                          " --set loss.topk=4 --set loss.topk_tail=tail --set teacher.cache=" + (dir / "cache"));
  INFO(four.output);
  CHECK(four.exit_code == 0);
  auto live4 = run_distill("train --config " + config + " --out " + (dir / "live4") + common +
                           " --set loss.topk=4 --set loss.topk_tail=tail");
  REQUIRE(live4.exit_code == 0);
  check_same_training(dir / "live4", dir / "four", "student/model.safetensors", 2e-5);

  // Killed after its first chunk (index and manifest as a kill leaves them): the rerun continues and
  // writes the same bytes.
  const std::string whole = slurp(dir / "cache/chunks.bin");
  const auto index = cache::read_index(dir / "cache");
  REQUIRE(index.size() >= 2);
  json mf = json::parse(slurp(dir / "cache/manifest.json"));
  mf["complete"] = false;
  mf.erase("totals");
  spit(dir / "cache/manifest.json", mf.dump(2));
  spit(dir / "cache/index.bin", slurp(dir / "cache/index.bin").substr(0, 8 + 24));
  spit(dir / "cache/chunks.bin", whole.substr(0, index[0].bytes + 5));
  auto incomplete = run_distill("train --config " + config + " --out " + (dir / "x") + " --set teacher.cache=" + (dir / "cache"));
  CHECK(incomplete.exit_code == 1);
  CHECK_THAT(incomplete.output, Catch::Contains("is incomplete") && Catch::Contains("run `distill cache-teacher` again"));
  auto resumed = run_distill("cache-teacher --config " + config + " --topk 12 --out " + (dir / "cache") + " --batch-size 5 --chunk-examples 7");
  INFO(resumed.output);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("continuing"));
  CHECK(slurp(dir / "cache/chunks.bin") == whole);
}

TEST_CASE("teacher cache: a classifier trains from its cache in any order and batch size") {
  distill::test::ScratchDir dir("cache-csv");
  const std::string fx = distill::test::source_path("tests/fixtures/parity");
  const std::string config = fx + "/adamw.json";
  auto c = run_distill("cache-teacher --config " + config + " --out " + (dir / "cache"));
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const cache::Manifest m = cache::read_manifest(dir / "cache");
  CHECK(m.positions == 1);
  CHECK(m.k == m.vocab);  // 0 = 64, or all the classes when fewer
  const std::string common = " --set loss.topk_tail=tail --set data.shuffle=true --set run.seed=3 --set train.batch_size=10";
  auto live = run_distill("train --config " + config + " --out " + (dir / "live") + common);
  INFO(live.output);
  REQUIRE(live.exit_code == 0);
  auto cached = run_distill("train --config " + config + " --out " + (dir / "cached") + common + " --set teacher.cache=" +
                            (dir / "cache"));
  INFO(cached.output);
  REQUIRE(cached.exit_code == 0);
  check_same_training(dir / "live", dir / "cached", "student.safetensors", 2e-5);
}

TEST_CASE("teacher cache: a cache that does not belong to the run is one clear error") {
  distill::test::ScratchDir dir("cache-bad");
  const std::string fx = distill::test::source_path("tests/fixtures/lm_parity");
  const std::string config = fx + "/forward_kl.json";
  auto c = run_distill("cache-teacher --config " + config + " --topk 8 --out " + (dir / "cache"));
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const std::string use = " --set teacher.cache=" + (dir / "cache") + " --set train.max_steps=2";
  auto fails = [&](const std::string& extra, const std::string& message) {
    auto r = run_distill("train --config " + config + " --out " + (dir / "run") + use + extra + " --overwrite");
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains("error: ") && Catch::Contains(message));
    CHECK_FALSE(distill::paths::exists(dir / "run/summary.json"));
  };
  fails(" --set data.seq_len=8", "positions per example");
  fails(" --set loss.topk=9", "loss.topk: 9 is more than the 8 entries");
  fails(" --set loss.topk_tail=tail --set loss.temperature=1", "differs from the 2 that");
  fails(" --set loss.kind=jsd", "forward_kl");
  // Other tokens in the same shape: the input hashes differ.
  std::string tokens = slurp(fx + "/tokens.bin");
  tokens[1024 + 2 * 20] ^= 1;
  spit(dir / "tokens.bin", tokens);
  fails(" --set data.path=" + (dir / "tokens.bin") + " --set data.shuffle=false", "is not the one");
  // A damaged chunk.
  std::string chunks = slurp(dir / "cache/chunks.bin");
  chunks[chunks.size() / 2] ^= 0x10;
  spit(dir / "cache/chunks.bin", chunks);
  fails("", "checksum mismatch");
  // cache-teacher's own bad input.
  auto none = run_distill("cache-teacher --config " + distill::test::source_path("tests/fixtures/parity/adam_supervised.json") +
                          " --out " + (dir / "c2"));
  CHECK(none.exit_code == 1);
  CHECK_THAT(none.output, Catch::Contains("error: teacher: cache-teacher runs the teacher"));
  auto values = run_distill("cache-teacher --config " + config + " --values bf8 --out " + (dir / "c3"));
  CHECK(values.exit_code == 1);
  CHECK_THAT(values.output, Catch::Contains("error: --values: must be one of float32 | log16, got 'bf8'"));
  auto big = run_distill("cache-teacher --config " + config + " --topk 129 --out " + (dir / "c4"));
  CHECK(big.exit_code == 1);
  CHECK_THAT(big.output, Catch::Contains("error: --topk: 129 is not in [1, 128]"));
  auto other = run_distill("cache-teacher --config " + config + " --topk 4 --out " + (dir / "cache"));
  CHECK(other.exit_code == 1);
  CHECK_THAT(other.output, Catch::Contains("holds another cache (k: 4 vs 8)"));
  for (const char* name : {"c2", "c3", "c4"}) CHECK_FALSE(distill::paths::exists(dir / name));
  // Not a cache at all.
  auto r = run_distill("train --config " + config + " --out " + (dir / "run") + " --set teacher.cache=" + dir.path);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("manifest.json: missing"));
}

TEST_CASE("teacher cache: rows with fewer than k entries round trip in both encodings") {
  cache::Chunk c = sample_chunk(0, 2, 4, 6, 1000, 11);
  c.counts.assign(static_cast<size_t>(c.rows()), 6);
  c.counts[1] = 2;  // two entries, the rest absent
  c.counts[5] = 0;  // no entries at all: everything in the tail
  for (int64_t r : {1, 5})
    for (int64_t j = c.counts[static_cast<size_t>(r)]; j < c.k; ++j) {
      c.ids[static_cast<size_t>(r * c.k + j)] = -1;
      c.logprobs[static_cast<size_t>(r * c.k + j)] = -std::numeric_limits<float>::infinity();
    }
  c.tail_mass[5] = 1.0f;
  for (auto enc : {cache::ValueEncoding::float32, cache::ValueEncoding::log16}) {
    const std::string frame = cache::encode_chunk(c, enc, 1000);
    const cache::Chunk d = cache::decode_chunk(frame.data(), frame.size(), 1000, "t");
    CHECK(d.counts == c.counts);
    for (int64_t r = 0; r < c.rows(); ++r)
      for (int64_t j = 0; j < c.k; ++j) {
        const size_t i = static_cast<size_t>(r * c.k + j);
        if (j >= c.counts[static_cast<size_t>(r)]) {
          CHECK(d.ids[i] == -1);
          CHECK(d.logprobs[i] == -std::numeric_limits<float>::infinity());
        } else if (enc == cache::ValueEncoding::float32) {
          CHECK(d.ids[i] == c.ids[i]);
          CHECK(d.logprobs[i] == c.logprobs[i]);
        }
      }
    CHECK(d.tail_mass[5] == 1.0f);
  }
  // A full chunk keeps the first format: no counts.
  const cache::Chunk full = sample_chunk(0, 2, 4, 6, 1000, 12);
  const std::string frame = cache::encode_chunk(full, cache::ValueEncoding::float32, 1000);
  CHECK(cache::decode_chunk(frame.data(), frame.size(), 1000, "t").counts.empty());
}

// vLLM's prompt_logprobs for the lm_parity windows, written from a cache of the live teacher: importing
// them gives a cache that trains as the original does. -9999 sentinels and plain-number entries are mixed in.
TEST_CASE("teacher cache: --from vLLM prompt_logprobs trains as the cache of the same k, bad files are refused") {
  distill::test::ScratchDir dir("cache-vllm");
  const std::string fx = distill::test::source_path("tests/fixtures/lm_parity");
  const std::string config = fx + "/forward_kl.json";
  const std::string common = " --set train.max_steps=5 --set data.shuffle=true --set loss.topk_tail=tail";
  auto c = run_distill("cache-teacher --config " + config + " --topk 12 --out " + (dir / "live-cache") + " --chunk-examples 8");
  INFO(c.output);
  REQUIRE(c.exit_code == 0);
  const cache::Manifest mf = cache::read_manifest(dir / "live-cache");
  const distill::TokenShard shard = distill::open_token_shard(fx + "/tokens.bin");
  const std::string frames = slurp(dir / "live-cache/chunks.bin");
  std::string lines;
  std::vector<std::string> records;
  for (const auto& e : cache::read_index(dir / "live-cache")) {
    const cache::Chunk ch = cache::decode_chunk(frames.data() + e.offset, e.bytes, mf.vocab, "chunk");
    for (int64_t x = 0; x < ch.examples; ++x) {
      const int64_t ex = ch.first_example + x;
      json ids = json::array(), lps = json::array({nullptr});
      for (int64_t t = 0; t <= mf.positions; ++t) ids.push_back(shard.view.token(ex * mf.positions + t));
      for (int64_t t = 0; t < mf.positions; ++t) {
        json d = json::object();
        for (int64_t j = 0; j < mf.k; ++j) {
          const size_t i = static_cast<size_t>((x * mf.positions + t) * mf.k + j);
          const std::string id = std::to_string(ch.ids[i]);
          if (ex % 2) d[id] = ch.logprobs[i];
          else d[id] = {{"logprob", ch.logprobs[i]}, {"rank", j + 1}, {"decoded_token", "?"}};
        }
        if (t % 5 == 0) {  // an id outside the top-k at the sentinel: dropped
          for (int32_t v = 0; v < mf.vocab; ++v)
            if (!d.contains(std::to_string(v))) {
              d[std::to_string(v)] = -9999.0;
              break;
            }
        }
        lps.push_back(d);
      }
      records.push_back(json{{"prompt_token_ids", ids}, {"prompt_logprobs", lps}}.dump());
    }
  }
  REQUIRE(static_cast<int64_t>(records.size()) == mf.examples);
  for (const auto& r : records) lines += r + "\n";
  distill::test::write_text(dir / "vllm.jsonl", lines + "\n" + records[0] + "\n");  // a blank line; a record past the training data

  // The live cache holds log-probabilities at the config's temperature: the import says so.
  auto imp = run_distill("cache-teacher --config " + config + " --from " + (dir / "vllm.jsonl") + " --temperature " +
                         std::to_string(mf.temperature) + " --out " + (dir / "imported"));
  INFO(imp.output);
  REQUIRE(imp.exit_code == 0);
  CHECK(cache::read_manifest(dir / "imported").k == 12);
  auto a = run_distill("train --config " + config + " --out " + (dir / "a") + common + " --set teacher.cache=" + (dir / "live-cache"));
  INFO(a.output);
  REQUIRE(a.exit_code == 0);
  auto b = run_distill("train --config " + config + " --out " + (dir / "b") + common + " --set teacher.cache=" + (dir / "imported"));
  INFO(b.output);
  REQUIRE(b.exit_code == 0);
  check_same_training(dir / "a", dir / "b", "student/model.safetensors", 2e-5);

  // Bad files: one error line naming the file and line, and no cache written.
  auto refused = [&](const std::string& name, const std::string& text, const std::string& message) {
    INFO(name);
    distill::test::write_text(dir / name, text);
    auto r = run_distill("cache-teacher --config " + config + " --from " + (dir / name) + " --out " + (dir / ("out-" + name)));
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
    CHECK_THAT(r.output, Catch::Contains(message));
    CHECK_FALSE(distill::paths::exists(dir / ("out-" + name) + "/manifest.json"));
  };
  json changed = json::parse(records[3]);
  changed["prompt_token_ids"][4] = (changed["prompt_token_ids"][4].get<int>() + 1) % 128;
  std::string text;
  for (size_t i = 0; i < records.size(); ++i) text += (i == 3 ? changed.dump() : records[i]) + "\n";
  refused("changed.jsonl", text, "changed.jsonl:4: prompt_token_ids[4] is token");
  refused("short.jsonl", records[0] + "\n" + records[1] + "\n", "ends after 2 records");
  refused("notjson.jsonl", records[0] + "\n{\"prompt_logprobs\": [\n", "notjson.jsonl:2: not a JSON object");
  json positive = json::parse(records[0]);
  positive["prompt_logprobs"][2] = {{"7", 0.5}};
  refused("positive.jsonl", positive.dump() + "\n", "positive.jsonl:1: prompt_logprobs[2][\"7\"]: log-probability 0.5");
  json sum = json::parse(records[0]);
  sum["prompt_logprobs"][3] = {{"7", -0.1}, {"8", -0.2}};
  refused("sum.jsonl", sum.dump() + "\n", "prompt_logprobs[3]: the probabilities sum to 1.7");
  refused("neither.jsonl", "{\"text\": \"hi\"}\n", "neither.jsonl:1: holds neither 'prompt_logprobs'");
}

TEST_CASE("teacher cache: OpenAI-style token strings map through a real tokenizer.json, bad records are refused") {
  const auto tok = distill::Tokenizer::load(distill::test::source_path("tests/fixtures/tokenizers/gpt2/tokenizer.json"));
  std::vector<std::string> bytes, pieces;
  for (int32_t id = 0; id < tok->vocab_size(); ++id) {
    bytes.push_back(tok->token_bytes(id));
    pieces.push_back(tok->id_to_token(id));
  }
  const cache::TokenVocabulary vocab(bytes, pieces);
  // GPT-2's own ids: " the" 262, " a" 257, "Hello" 15496, "<|endoftext|>" 50256.
  REQUIRE(tok->encode(" the") == std::vector<int32_t>{262});
  auto entry = [](const std::string& token, const json& b, double lp) { return json{{"token", token}, {"bytes", b}, {"logprob", lp}}; };
  json content = json::array();
  content.push_back(entry(" the", json::array({32, 116, 104, 101}), -0.5));
  content.back()["top_logprobs"] = json::array({entry(" the", json::array({32, 116, 104, 101}), -0.5),
                                                entry(" a", nullptr, -1.25),  // no bytes: the string's UTF-8
                                                entry("token_id:50256", nullptr, -9999.0)});
  content.push_back(entry("Hello", json::array({72, 101, 108, 108, 111}), -2.0));  // not in its top_logprobs
  content.back()["top_logprobs"] = json::array({entry(" a", nullptr, -0.5)});
  content.push_back(entry("token_id:50256", nullptr, -9999.0));  // a position with nothing usable
  const json response = {{"id", "x"}, {"choices", json::array({{{"index", 0}, {"logprobs", {{"content", content}}}}})}};
  for (const json& line : {response, json{{"custom_id", "r1"}, {"response", {{"status_code", 200}, {"body", response}}}}}) {
    const cache::ImportedRecord r = cache::parse_logprob_record(line.dump(), vocab, "f.jsonl:1");
    CHECK(r.format == cache::LogprobFormat::openai_chat);
    REQUIRE(r.positions.size() == 3);
    CHECK(r.positions[0].token == 262);
    CHECK(r.positions[0].entries == std::vector<std::pair<int32_t, float>>{{262, -0.5f}, {257, -1.25f}});
    CHECK(r.positions[1].token == 15496);
    CHECK(r.positions[1].entries == std::vector<std::pair<int32_t, float>>{{257, -0.5f}, {15496, -2.0f}});
    CHECK(r.positions[2].token == 50256);
    CHECK(r.positions[2].present);
    CHECK(r.positions[2].entries.empty());
  }
  const json no_logprobs = {{"choices", json::array({{{"message", {{"content", "hi"}}}, {"logprobs", nullptr}}})}};
  CHECK(cache::parse_logprob_record(no_logprobs.dump(), vocab, "f").positions.empty());

  auto refused = [&](json c, const std::string& message) {
    const json r = {{"choices", json::array({{{"logprobs", {{"content", c}}}}})}};
    CHECK_THROWS_WITH(cache::parse_logprob_record(r.dump(), vocab, "f.jsonl:7"), Catch::Contains("f.jsonl:7: ") && Catch::Contains(message));
  };
  refused(json::array({entry("zqxjzqxjzqxj", nullptr, -0.1)}),
          "choices[0].logprobs.content[0]: token \"zqxjzqxjzqxj\" (bytes [122,113,120");
  refused(json::array({entry(" the", nullptr, 0.3)}), "log-probability 0.300000 is above 0");
  json dup = json::array({entry(" the", nullptr, -0.1)});
  dup[0]["top_logprobs"] = json::array({entry(" the", nullptr, -0.1), entry(" the", json::array({32, 116, 104, 101}), -0.7)});
  refused(dup, "token id 262 appears twice");
  json bad_bytes = json::array({entry(" the", json::array({32, 300}), -0.1)});
  refused(bad_bytes, "bytes: holds 300");
  refused(json::array({entry("token_id:99999", nullptr, -0.1)}), "token id 99999 is outside the student's vocabulary of 50257");
  json two = {{"choices", json::array({{{"logprobs", nullptr}}, {{"logprobs", nullptr}}})}};
  CHECK_THROWS_WITH(cache::parse_logprob_record(two.dump(), vocab, "f"), Catch::Contains("holds 2 choices"));
}

// The loss with absent entries (index -1): the fused op against the ATen composite, both tail rules.
TEST_CASE("teacher cache: sparse rows with absent entries, fused op against the composite") {
  at::manual_seed(3);
  const int64_t N = 6, V = 50, K = 5;
  const at::Tensor student = at::randn({N, V}) * 2;
  const at::Tensor teacher = at::randn({N, V}) * 3;
  const at::Tensor labels = at::tensor({3, 7, -100, 11, 0, 49}, at::kLong);
  for (const char* rule : {"ignore", "tail"}) {
    INFO(rule);
    distill::KdLossOptions o;
    o.temperature = 1.0;
    o.alpha = 0.6;
    o.topk_tail = std::string(rule) == "tail" ? distill::kernels::TopkTail::tail : distill::kernels::TopkTail::ignore;
    distill::SparseTeacher t = distill::sparse_teacher_topk(teacher, K, V, o);
    t.index = t.index.clone();
    t.index[1].slice(0, 2, K).fill_(-1);  // 2 of 5 present
    t.index[3].fill_(-1);                 // none present: CE only
    t.index[4][0] = -1;                   // the most probable missing
    const auto fused = distill::kd_loss_sparse(student, t, labels, o, 5.0);
    const auto composite = distill::kd_loss_sparse_composite(student, t, labels, o, 5.0);
    CHECK(fused.loss.item<double>() == Approx(composite.loss.item<double>()).epsilon(1e-5));
    CHECK(fused.kd.item<double>() == Approx(composite.kd.item<double>()).epsilon(1e-5));
    CHECK(std::isfinite(fused.loss.item<double>()));
    const at::Tensor s1 = student.clone().requires_grad_(true), s2 = student.clone().requires_grad_(true);
    distill::kd_loss_sparse(s1, t, labels, o, 5.0).loss.backward();
    distill::kd_loss_sparse_composite(s2, t, labels, o, 5.0).loss.backward();
    CHECK((s1.grad() - s2.grad()).abs().max().item<double>() < 1e-6);
  }
}
