// The teacher cache: its chunk format (round trip, log16's precision, damage detected), its writer (resume
// after a kill, a complete cache left alone, another cache refused), and `distill cache-teacher` +
// `teacher.cache` end to end: a cache of k = V trains as the live teacher does (to float32 rounding), a cache
// of k < V as the live top-k teacher, in any order and batch size, on language models and classifiers; and
// the errors when the cache does not belong to the run.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "distill/cache/cache_format.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"

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

std::vector<json> train_events(const std::string& run) {
  std::vector<json> out;
  std::istringstream in(distill::test::read_text(run + "/metrics.jsonl"));
  for (std::string line; std::getline(in, line);) {
    json e = json::parse(line);
    if (e["event"] == "train") out.push_back(e);
  }
  return out;
}

// The two runs took the same steps: losses per step equal to `rel` (relative), final weights to 1e-4
// (absolute: AdamW divides each gradient by its own scale, so where the KD gradient q - p is a difference of
// near-equal probabilities, float32 rounding of p moves an update by up to ~1% of lr).
void check_same_training(const std::string& a, const std::string& b, const std::string& weights, double rel) {
  const auto ea = train_events(a), eb = train_events(b);
  REQUIRE(ea.size() == eb.size());
  REQUIRE(!ea.empty());
  for (size_t i = 0; i < ea.size(); ++i) {
    INFO("step " << ea[i]["step"]);
    for (const char* key : {"loss", "kd", "ce"}) {
      INFO(key);
      const double x = ea[i][key].get<double>(), y = eb[i][key].get<double>();
      CHECK(std::abs(x - y) <= rel * std::max(1.0, std::abs(x)));
    }
  }
  const auto wa = distill::load_safetensors(a + "/" + weights), wb = distill::load_safetensors(b + "/" + weights);
  REQUIRE(wa.tensors.size() == wb.tensors.size());
  for (size_t i = 0; i < wa.tensors.size(); ++i) {
    INFO(wa.tensors[i].first);
    const at::Tensor& x = wa.tensors[i].second;
    const at::Tensor& y = wb.tensors[i].second;
    INFO("max |a - b| " << (x - y).abs().max().item<double>() << ", max |a| " << x.abs().max().item<double>());
    CHECK((x - y).abs().max().item<double>() <= 1e-4);
  }
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

TEST_CASE("teacher cache: k < V equals the live top-k teacher; a killed cache-teacher continues") {
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
