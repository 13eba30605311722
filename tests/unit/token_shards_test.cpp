// Token shards, masks, JSON Lines records and `distill data pack`, torch-free (distill_tokens): byte layouts,
// every malformed-file error, the per-index window permutation, windows against the file's tokens, and packed
// ids against the reference tokenizers' golden ids (tests/fixtures/tokenizers/golden.json: Hugging Face
// tokenizers for GPT-2's tokenizer.json, python3-sentencepiece for the .model), never against our own encoder.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "distill/data/pack.h"
#include "distill/data/token_shards.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/text/tokenizer.h"

using namespace distill;
using nlohmann::json;

namespace {

std::string source(const std::string& rel) { return std::string(DISTILL_SOURCE_DIR) + "/" + rel; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}
void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

const json& golden() {
  static const json g = json::parse(read_bytes(source("tests/fixtures/tokenizers/golden.json")));
  return g;
}
std::vector<uint32_t> golden_ids(const char* group, const char* fixture, size_t text) {
  return golden()[group]["fixtures"][fixture]["cases"][text]["ids"].get<std::vector<uint32_t>>();
}
std::string golden_text(size_t i) { return golden()["texts"][i].get<std::string>(); }

struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = paths::join(paths::temp_dir(), "distill-token-shards-test-XXXXXX");
    path = ::mkdtemp(pattern.data());
  }
  ~TempDir() { paths::remove_tree(path); }
  std::string operator/(const std::string& name) const { return paths::join(path, name); }
};

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A shard's bytes from scratch: header ints, then raw payload.
std::string shard_bytes(int32_t magic, int32_t version, int32_t count, const std::string& payload) {
  std::string b(1024, '\0');
  const int32_t h[3] = {magic, version, count};
  std::memcpy(b.data(), h, sizeof h);
  return b + payload;
}
std::string u16(std::initializer_list<uint16_t> ids) {
  std::string s;
  for (uint16_t id : ids) s.append(reinterpret_cast<const char*>(&id), 2);
  return s;
}

std::vector<uint32_t> tokens_of(const TokenShardView& v) {
  std::vector<uint32_t> out;
  for (int64_t i = 0; i < v.count; ++i) out.push_back(v.token(i));
  return out;
}

TokenShardView parse(const std::string& bytes, int64_t vocab = 0) {
  return parse_token_shard(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "s.bin", vocab);
}

}  // namespace

TEST_CASE("token shards: llm.c's layout, written and read back (uint16 and uint32)") {
  TempDir dir;
  const std::vector<uint32_t> ids = {0, 1, 65535, 50256, 7};
  write_token_shard(dir / "a.bin", ids, 2);
  const std::string bytes = read_bytes(dir / "a.bin");
  REQUIRE(bytes.size() == 1024 + 2 * ids.size());
  int32_t header[256];
  std::memcpy(header, bytes.data(), 1024);
  CHECK(header[0] == 20240520);
  CHECK(header[1] == 1);
  CHECK(header[2] == 5);
  for (int i = 3; i < 256; ++i) CHECK(header[i] == 0);
  CHECK(static_cast<uint8_t>(bytes[1024 + 4]) == 0xFF);  // 65535, little-endian
  TokenShard s = open_token_shard(dir / "a.bin");
  CHECK(s.view.width == 2);
  CHECK(s.view.max_token == 65535);
  CHECK(tokens_of(s.view) == ids);
  CHECK(s.mask == nullptr);

  const std::vector<uint32_t> wide = {70000, 0, 151935, 3};
  write_token_shard(dir / "b.bin", wide, 4);
  TokenShard w = open_token_shard(dir / "b.bin");
  CHECK(read_bytes(dir / "b.bin").size() == 1024 + 16);
  std::memcpy(header, read_bytes(dir / "b.bin").data(), 12);
  CHECK(header[1] == 2);
  CHECK(w.view.width == 4);
  CHECK(tokens_of(w.view) == wide);
  CHECK(error_of([&] { write_token_shard(dir / "c.bin", wide, 2); }).find("does not fit a uint16 shard") != std::string::npos);
}

TEST_CASE("token shards: every malformed file is one clear error naming the file and the position") {
  const std::string ok = shard_bytes(20240520, 1, 3, u16({1, 2, 3}));
  CHECK(tokens_of(parse(ok)) == std::vector<uint32_t>{1, 2, 3});
  CHECK_THAT(error_of([&] { parse(ok.substr(0, 100)); }),
             Catch::StartsWith("s.bin: 100 bytes, shorter than the 1024-byte header") && Catch::Contains("distill data pack"));
  CHECK_THAT(error_of([&] { parse(""); }), Catch::Contains("0 bytes, shorter than the 1024-byte header"));
  CHECK_THAT(error_of([&] { parse(ok.substr(0, ok.size() - 2)); }),
             Catch::Contains("header says 3 uint16 tokens (1024 + 6 = 1030 bytes): the file is truncated"));
  CHECK_THAT(error_of([&] { parse(ok.substr(0, ok.size() - 1)); }),
             Catch::Contains("truncated") && Catch::Contains("5 bytes after the header is not a whole number of uint16 tokens"));
  CHECK_THAT(error_of([&] { parse(ok + "xy"); }), Catch::Contains("the file has bytes after them"));
  CHECK_THAT(error_of([&] { parse(shard_bytes(12345, 1, 3, u16({1, 2, 3}))); }),
             Catch::Contains("s.bin: magic number 12345 at byte 0, expected 20240520"));
  CHECK_THAT(error_of([&] { parse(shard_bytes(20261203, 1, 3, "abc")); }), Catch::Contains("this is a mask file"));
  CHECK_THAT(error_of([&] { parse(shard_bytes(20240520, 3, 3, u16({1, 2, 3}))); }),
             Catch::Contains("version 3 (header int 1, byte 4) is not supported; 1 = uint16 tokens, 2 = uint32 tokens"));
  CHECK_THAT(error_of([&] { parse(shard_bytes(20240520, 1, -4, "")); }), Catch::Contains("is -4, negative"));
  CHECK_THAT(error_of([&] { parse(shard_bytes(20240520, 1, 0, "")); }),
             Catch::Contains("s.bin: the shard holds no tokens"));
  // An id at or above the vocabulary: the shard, the token's index and its byte offset.
  const std::string big = shard_bytes(20240520, 1, 4, u16({5, 9, 50257, 3}));
  CHECK(parse(big, 50258).max_token == 50257);
  CHECK_THAT(error_of([&] { parse(big, 50257); }),
             Catch::StartsWith("s.bin: token 50257 at index 2 (byte offset 1028) is not below the vocabulary size 50257"));
  const std::string big32 = shard_bytes(20240520, 2, 2, std::string("\x01\0\0\0\xFF\xFF\xFF\xFF", 8));
  CHECK_THAT(error_of([&] { parse(big32); }), Catch::Contains("beyond any vocabulary"));
}

TEST_CASE("token masks: companions checked against their shard") {
  TempDir dir;
  write_token_shard(dir / "t.bin", {1, 2, 3, 4}, 2);
  write_token_mask(dir / "t.mask", {0, 0, 1, 1});
  CHECK(token_mask_path(dir / "t.bin") == dir / "t.mask");
  TokenShard s = open_token_shard(dir / "t.bin");
  REQUIRE(s.mask != nullptr);
  CHECK(s.mask_path == dir / "t.mask");
  CHECK(std::vector<uint8_t>(s.mask, s.mask + 4) == std::vector<uint8_t>{0, 0, 1, 1});
  const std::string mask = read_bytes(dir / "t.mask");
  CHECK(mask.size() == 1028);
  int32_t h[3];
  std::memcpy(h, mask.data(), 12);
  CHECK(h[0] == 20261203);
  CHECK(h[1] == 1);
  CHECK(h[2] == 4);

  write_token_mask(dir / "t.mask", {0, 1, 1});
  CHECK_THAT(error_of([&] { open_token_shard(dir / "t.bin"); }),
             Catch::Contains("t.mask: a mask of 3 tokens, but its shard") && Catch::Contains("t.bin has 4 tokens"));
  write_token_mask(dir / "t.mask", {0, 1, 2, 1});
  CHECK_THAT(error_of([&] { open_token_shard(dir / "t.bin"); }),
             Catch::Contains("t.mask: byte 2 for token 2 (byte offset 1026) is neither 0"));
  write_bytes(dir / "t.mask", shard_bytes(20240520, 1, 4, u16({1, 2, 3, 4})));
  CHECK_THAT(error_of([&] { open_token_shard(dir / "t.bin"); }), Catch::Contains("magic number 20240520 at byte 0, expected 20261203"));
  write_bytes(dir / "t.mask", shard_bytes(20261203, 1, 4, "\1\1"));
  CHECK_THAT(error_of([&] { open_token_shard(dir / "t.bin"); }), Catch::Contains("t.mask: 1026 bytes") && Catch::Contains("truncated"));
}

TEST_CASE("token paths: files, sorted globs, and globs matching nothing") {
  TempDir dir;
  for (const char* name : {"train_2.bin", "train_10.bin", "train_1.bin", "val_1.bin"}) write_token_shard(dir / name, {1, 2}, 2);
  const auto files = expand_token_paths({dir / "train_*.bin", dir / "val_1.bin"}, "data.path");
  CHECK(files == std::vector<std::string>{dir / "train_1.bin", dir / "train_10.bin", dir / "train_2.bin", dir / "val_1.bin"});
  CHECK_THAT(error_of([&] { expand_token_paths({dir / "nope_*.bin"}, "data.path"); }),
             Catch::StartsWith("data.path: the glob " + dir / "nope_*.bin" + " matches no file"));
  CHECK_THAT(error_of([&] { expand_token_paths({dir / "missing.bin"}, "data.val_path"); }),
             Catch::StartsWith("data.val_path: " + dir / "missing.bin" + ": no such file"));
}

TEST_CASE("window permutation: a bijection that depends only on the key, computed per index") {
  for (uint64_t n : {1ull, 2ull, 3ull, 5ull, 16ull, 17ull, 255ull, 256ull, 257ull, 1000ull, 4097ull, 65537ull}) {
    const IndexPermutation p(n, epoch_permutation_key(7, 3));
    std::vector<char> seen(n, 0);
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t j = p(i);
      REQUIRE(j < n);
      REQUIRE(!seen[j]);
      seen[j] = 1;
    }
  }
  const uint64_t n = 100003;
  const IndexPermutation a(n, epoch_permutation_key(1, 0)), a2(n, epoch_permutation_key(1, 0));
  const IndexPermutation b(n, epoch_permutation_key(1, 1)), c(n, epoch_permutation_key(2, 0));
  int same_b = 0, same_c = 0, fixed = 0;
  for (uint64_t i = 0; i < n; ++i) {
    REQUIRE(a(i) == a2(i));
    same_b += a(i) == b(i);
    same_c += a(i) == c(i);
    fixed += a(i) == i;
  }
  // Another epoch or seed is another order (a random permutation agrees with another in ~1 place).
  CHECK(same_b < 20);
  CHECK(same_c < 20);
  CHECK(fixed < 20);
  // Random access: the end of a huge epoch costs what its start does.
  const IndexPermutation huge(uint64_t{1} << 40, 42);
  CHECK(huge((uint64_t{1} << 40) - 1) < (uint64_t{1} << 40));
  // Fixed values: the order is part of the resume contract (a checkpoint stores a position in it).
  const IndexPermutation fixed_order(10, epoch_permutation_key(0, 0));
  std::vector<uint64_t> order;
  for (uint64_t i = 0; i < 10; ++i) order.push_back(fixed_order(i));
  std::vector<uint64_t> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted == std::vector<uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(order != sorted);
}

TEST_CASE("token windows: seq_len + 1 tokens every seq_len, never across a shard, masks to ignore_index") {
  TempDir dir;
  std::vector<uint32_t> a(23), b(9), c(4);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<uint32_t>(100 + i);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint32_t>(200 + i);
  for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<uint32_t>(300 + i);
  write_token_shard(dir / "a.bin", a, 2);
  write_token_shard(dir / "b.bin", b, 4);
  write_token_shard(dir / "c.bin", c, 2);
  std::vector<uint8_t> mask(b.size(), 1);
  mask[3] = 0;
  write_token_mask(dir / "b.mask", mask);
  const int64_t t = 4;
  std::vector<TokenSegment> segments;
  std::vector<TokenShard> shards;
  for (const char* name : {"a.bin", "c.bin", "b.bin"}) {
    shards.push_back(open_token_shard(dir / name));
    segments.push_back(TokenSegment::packed(name, shards.back().view, shards.back().mask, t, nullptr));
  }
  TokenWindows w(segments, t);
  // a: (23 - 1) / 4 = 5 windows; c: 4 tokens < 5, none; b: (9 - 1) / 4 = 2.
  REQUIRE(w.size() == 7);
  CHECK(w.tokens() == 36);
  std::vector<int64_t> in(t), out(t);
  for (int64_t k = 0; k < 5; ++k) {
    CHECK(w.fill(k, in.data(), out.data(), -100) == t);
    for (int64_t i = 0; i < t; ++i) {
      CHECK(in[i] == 100 + k * t + i);
      CHECK(out[i] == 100 + k * t + i + 1);
    }
  }
  CHECK(w.locate(5) == std::pair<size_t, int64_t>{2, 0});
  CHECK(w.fill(5, in.data(), out.data(), -100) == 3);  // target 2 is token 3 of b, masked
  CHECK(in == std::vector<int64_t>{200, 201, 202, 203});
  CHECK(out == std::vector<int64_t>{201, 202, -100, 204});
  CHECK(w.fill(6, in.data(), out.data(), -7) == 4);
  CHECK(in == std::vector<int64_t>{204, 205, 206, 207});
  CHECK(out == std::vector<int64_t>{205, 206, 207, 208});
  CHECK_THAT(error_of([&] { w.locate(7); }), Catch::Contains("outside [0, 7)"));

  // Padded: whole examples of seq_len + 1 back to back.
  std::vector<uint32_t> rows = {1, 2, 3, 9, 9, 4, 5, 6, 7, 8};
  std::vector<uint8_t> row_mask = {0, 0, 1, 0, 0, 0, 1, 1, 1, 1};
  TokenShardView v{reinterpret_cast<const uint8_t*>(rows.data()), 10, 4, 9};
  TokenWindows p({TokenSegment::padded("rows", v, row_mask.data(), 4, nullptr)}, 4);
  REQUIRE(p.size() == 2);
  CHECK(p.fill(0, in.data(), out.data(), -100) == 1);
  CHECK(in == std::vector<int64_t>{1, 2, 3, 9});
  CHECK(out == std::vector<int64_t>{-100, 3, -100, -100});
  CHECK(p.fill(1, in.data(), out.data(), -100) == 4);
  CHECK(out == std::vector<int64_t>{5, 6, 7, 8});
}

TEST_CASE("jsonl records: both kinds, and errors that name the file, the line and the key") {
  JsonlRecords t = parse_jsonl("{\"text\": \"a\"}\n\n  \n{\"text\": \"b\", \"id\": 3}\r\n", "t.jsonl");
  CHECK(t.kind == RecordKind::text);
  CHECK(t.text == std::vector<std::string>{"a", "b"});
  CHECK(t.line == std::vector<int64_t>{1, 4});
  JsonlRecords pc = parse_jsonl("{\"prompt\": \"p\", \"completion\": \"c\"}", "p.jsonl");
  CHECK(pc.kind == RecordKind::prompt_completion);
  CHECK(pc.text[0] == "p");
  CHECK(pc.completion[0] == "c");
  auto err = [](const std::string& text) { return error_of([&] { parse_jsonl(text, "d.jsonl"); }); };
  CHECK_THAT(err("{\"text\": \"a\"}\n{\"text\": \"b\"\n"), Catch::StartsWith("d.jsonl:2: invalid JSON (column"));
  CHECK_THAT(err("[1, 2]"), Catch::StartsWith("d.jsonl:1: expected a JSON object"));
  CHECK_THAT(err("{\"text\": 5}"), Catch::StartsWith("d.jsonl:1: key \"text\" must be a string, got a number"));
  CHECK_THAT(err("{\"prompt\": \"x\"}"), Catch::StartsWith("d.jsonl:1: missing key \"completion\""));
  CHECK_THAT(err("{\"completion\": \"x\", \"prompt\": null}"), Catch::StartsWith("d.jsonl:1: key \"prompt\" must be a string, got null"));
  CHECK_THAT(err("{\"body\": \"x\"}"), Catch::StartsWith("d.jsonl:1: missing key \"text\"") && Catch::Contains("keys \"body\""));
  CHECK_THAT(err("{\"text\": \"x\", \"prompt\": \"y\"}"), Catch::StartsWith("d.jsonl:1: has both \"text\" and \"prompt\""));
  CHECK_THAT(err("{\"text\": \"x\"}\n{\"prompt\": \"y\", \"completion\": \"z\"}"),
             Catch::StartsWith("d.jsonl:2: a prompt/completion record, but the file's first record (line 1) is text"));
  CHECK_THAT(err(""), Catch::StartsWith("d.jsonl: holds no records"));
  CHECK_THAT(err("\n  \n"), Catch::StartsWith("d.jsonl: holds no records"));
  CHECK_THAT(err(std::string(100000, '[')), Catch::StartsWith("d.jsonl:1: "));
  CHECK_THAT(err("{\"text\": \"\xff\"}"), Catch::StartsWith("d.jsonl:1: invalid JSON"));
}

TEST_CASE("jsonl records: completion_ids are the completion's tokens when they decode to it with the run's tokenizer") {
  const auto gpt2 = Tokenizer::load(source("tests/fixtures/tokenizers/gpt2"));
  // " there" as GPT-2 encodes it, and as two tokens " " + "there" that decode to the same text (what a sampled
  // generation may produce).
  const std::vector<int32_t> whole = gpt2->encode(" there");
  std::vector<int32_t> split = gpt2->encode(" ");
  for (int32_t id : gpt2->encode("there")) split.push_back(id);
  REQUIRE(split != whole);
  REQUIRE(gpt2->decode(split) == " there");
  auto line = [](const std::vector<int32_t>& ids) {
    return json{{"prompt", "Hi"}, {"completion", " there"}, {"completion_ids", ids}}.dump() + "\n";
  };
  const JsonlRecords recs = parse_jsonl(line(split) + line({}) + line({9999}) + line({50256, 50256, 60000}), "g.jsonl");
  REQUIRE(recs.completion_ids.size() == 4);
  CHECK(recs.completion_ids[0] == split);
  const auto enc = encode_records(*gpt2, recs, 0, recs.size(), 1);
  const std::vector<int32_t> prompt = gpt2->encode("Hi");
  auto completion_of = [&](const EncodedRecord& r) {
    CHECK(r.prompt_tokens == static_cast<int64_t>(prompt.size()));  // GPT-2 has no bos
    REQUIRE(r.ids.back() == 50256);                                  // its eos ends every record
    return std::vector<int32_t>(r.ids.begin() + r.prompt_tokens, r.ids.end() - 1);
  };
  CHECK(completion_of(enc[0]) == split);  // the generated ids, not a re-encoding of the text
  CHECK(completion_of(enc[1]) == whole);  // none given: the text's tokens
  CHECK(completion_of(enc[2]) == whole);  // ids that decode to other text (another tokenizer's): the text's tokens
  CHECK(completion_of(enc[3]) == whole);  // an id past the vocabulary: the text's tokens

  auto err = [](const std::string& text) { return error_of([&] { parse_jsonl(text, "d.jsonl"); }); };
  CHECK_THAT(err("{\"prompt\": \"p\", \"completion\": \"c\", \"completion_ids\": \"12\"}"),
             Catch::StartsWith("d.jsonl:1: key \"completion_ids\" must be an array of token ids, got a string"));
  CHECK_THAT(err("{\"prompt\": \"p\", \"completion\": \"c\"}\n{\"prompt\": \"p\", \"completion\": \"c\", \"completion_ids\": [1, -2]}"),
             Catch::StartsWith("d.jsonl:2: completion_ids[1] is -2, not a token id"));
  CHECK_THAT(err("{\"prompt\": \"p\", \"completion\": \"c\", \"completion_ids\": [1.5]}"),
             Catch::StartsWith("d.jsonl:1: completion_ids[0] is 1.5, not a token id"));
  CHECK_THAT(err("{\"text\": \"t\", \"completion_ids\": [1]}"),
             Catch::StartsWith("d.jsonl:1: \"completion_ids\" belongs to a {\"prompt\", \"completion\"} record"));
}

TEST_CASE("data pack: a .txt is one document, ids equal GPT-2's reference ids, the manifest comes last") {
  TempDir dir;
  const std::string text = golden_text(23);  // a slice of Tiny Shakespeare
  std::vector<uint32_t> expected = golden_ids("tokenizer_json", "gpt2", 23);
  expected.push_back(50256);  // GPT-2 has no bos; its eos is <|endoftext|>
  write_bytes(dir / "in.txt", text);
  PackOptions o;
  o.tokenizer = source("tests/fixtures/tokenizers/gpt2");
  o.input = dir / "in.txt";
  o.out_dir = dir / "out";
  o.val_fraction = 0.25;
  o.shard_tokens = 20;
  const PackResult r = pack_tokens(o);
  const int64_t total = static_cast<int64_t>(expected.size());
  const int64_t val = std::llround(total * 0.25);
  CHECK(r.train_tokens == total - val);
  CHECK(r.val_tokens == val);
  CHECK(r.train_shards == (total - val + 19) / 20);
  CHECK_FALSE(r.masks);
  PackManifest m = read_pack_manifest(dir / "out");
  CHECK(m.vocab_size == 50257);
  CHECK_FALSE(m.bos_id);
  CHECK(m.eos_id == 50256);
  CHECK(m.tokenizer_sha256 == "8414cab924d8b9b33013f0d221c5862f365ee9be39c5c2bfae8a5a9e970478a6");
  CHECK(m.token_width == 2);
  std::vector<uint32_t> got;
  for (const auto& split : {m.train, m.val})
    for (const auto& s : split) {
      TokenShard shard = open_token_shard(s.path);
      CHECK(shard.view.count == s.tokens);
      CHECK(shard.view.count <= 20);
      const auto ids = tokens_of(shard.view);
      got.insert(got.end(), ids.begin(), ids.end());
    }
  CHECK(got == expected);
  const json manifest = json::parse(read_bytes(dir / "out/manifest.json"));
  CHECK(manifest["format"] == "distill-tokens");
  CHECK(manifest["input"]["bytes"] == text.size());
  CHECK(manifest["input"]["sha256"].get<std::string>().size() == 64);
  CHECK(manifest["input"]["kind"] == "text");
  CHECK(manifest["val_fraction"] == 0.25);
  CHECK(manifest["masks"] == false);
  CHECK(manifest["train"]["tokens"] == total - val);

  // Written last: without it the folder is an interrupted pack, and nothing reads it.
  paths::remove_file(dir / "out/manifest.json");
  CHECK_THAT(error_of([&] { read_pack_manifest(dir / "out"); }),
             Catch::Contains("has token shards but no manifest.json") && Catch::Contains("interrupted"));
}

TEST_CASE("data pack: prompt/completion records keep a mask, ids equal sentencepiece's reference ids") {
  TempDir dir;
  const std::vector<std::pair<size_t, size_t>> pairs = {{0, 1}, {20, 9}, {12, 22}, {7, 10}};
  std::string jsonl;
  std::vector<uint32_t> expected;
  std::vector<uint8_t> expected_mask;
  for (auto [p, c] : pairs) {
    jsonl += json({{"prompt", golden_text(p)}, {"completion", golden_text(c)}, {"source", "golden"}}).dump() + "\n";
    const auto prompt = golden_ids("sentencepiece", "shakespeare_bpe", p);
    const auto completion = golden_ids("sentencepiece", "shakespeare_bpe", c);
    expected.push_back(1);  // <s>
    expected.insert(expected.end(), prompt.begin(), prompt.end());
    expected.insert(expected.end(), completion.begin(), completion.end());
    expected.push_back(2);  // </s>
    expected_mask.insert(expected_mask.end(), 1 + prompt.size(), 0);
    expected_mask.insert(expected_mask.end(), completion.size() + 1, 1);
  }
  write_bytes(dir / "sft.jsonl", jsonl);
  PackOptions o;
  o.tokenizer = source("tests/fixtures/tokenizers/shakespeare_bpe.model");
  o.input = dir / "sft.jsonl";
  o.out_dir = dir / "out";
  o.val_fraction = 0.25;  // the last record
  o.threads = 3;
  const PackResult r = pack_tokens(o);
  CHECK(r.masks);
  CHECK(r.records == 4);
  PackManifest m = read_pack_manifest(dir / "out");
  CHECK(m.masks);
  CHECK(m.input_kind == "prompt/completion");
  REQUIRE(m.train.size() == 1);
  REQUIRE(m.val.size() == 1);
  std::vector<uint32_t> got;
  std::vector<uint8_t> got_mask;
  for (const auto& s : {m.train[0], m.val[0]}) {
    CHECK(s.mask_path == token_mask_path(s.path));
    TokenShard shard = open_token_shard(s.path, m.vocab_size);
    REQUIRE(shard.mask != nullptr);
    const auto ids = tokens_of(shard.view);
    got.insert(got.end(), ids.begin(), ids.end());
    got_mask.insert(got_mask.end(), shard.mask, shard.mask + shard.view.count);
  }
  CHECK(got == expected);
  CHECK(got_mask == expected_mask);
  const auto last_prompt = golden_ids("sentencepiece", "shakespeare_bpe", 7);
  const auto last_completion = golden_ids("sentencepiece", "shakespeare_bpe", 10);
  CHECK(m.val[0].tokens == static_cast<int64_t>(last_prompt.size() + last_completion.size() + 2));

  // Text records are documents: [bos] ids [eos] each, no mask.
  write_bytes(dir / "docs.jsonl", json({{"text", golden_text(1)}}).dump() + "\n" + json({{"text", golden_text(20)}}).dump());
  o.input = dir / "docs.jsonl";
  o.out_dir = dir / "docs";
  o.val_fraction = 0;
  const PackResult d = pack_tokens(o);
  CHECK_FALSE(d.masks);
  CHECK(d.val_shards == 0);
  PackManifest dm = read_pack_manifest(dir / "docs");
  TokenShard docs = open_token_shard(dm.train[0].path);
  CHECK(docs.mask == nullptr);
  std::vector<uint32_t> want = {1};
  for (uint32_t id : golden_ids("sentencepiece", "shakespeare_bpe", 1)) want.push_back(id);
  want.push_back(2);
  want.push_back(1);
  for (uint32_t id : golden_ids("sentencepiece", "shakespeare_bpe", 20)) want.push_back(id);
  want.push_back(2);
  CHECK(tokens_of(docs.view) == want);
}

TEST_CASE("data pack: errors are one line each, and a packed folder is not overwritten by accident") {
  TempDir dir;
  write_bytes(dir / "in.txt", "To be, or not to be, that is the question.\n");
  PackOptions o;
  o.tokenizer = source("tests/fixtures/tokenizers/gpt2/tokenizer.json");
  o.input = dir / "in.txt";
  o.out_dir = dir / "out";
  auto err = [&](const PackOptions& p) { return error_of([&] { pack_tokens(p); }); };
  PackOptions bad = o;
  bad.input = dir / "none.txt";
  CHECK_THAT(err(bad), Catch::StartsWith("--in " + dir / "none.txt" + ": no such file"));
  bad = o;
  bad.tokenizer = dir / "nope.json";
  CHECK_THAT(err(bad), Catch::StartsWith("--tokenizer: " + dir / "nope.json" + ": no such file"));
  bad = o;
  write_bytes(dir / "broken.json", "{\"model\": 3}");
  bad.tokenizer = dir / "broken.json";
  CHECK_THAT(err(bad), Catch::StartsWith("--tokenizer: " + dir / "broken.json"));
  for (double f : {-0.1, 1.0, 2.0}) {
    bad = o;
    bad.val_fraction = f;
    CHECK_THAT(err(bad), Catch::StartsWith("--val-fraction: must be in [0, 1)"));
  }
  bad = o;
  bad.shard_tokens = 0;
  CHECK_THAT(err(bad), Catch::StartsWith("--shard-tokens: must be in [1, 2147483647]"));
  write_bytes(dir / "in.csv", "a,b\n");
  bad = o;
  bad.input = dir / "in.csv";
  CHECK_THAT(err(bad), Catch::Contains("expected a .txt file (the whole file is one document) or a .jsonl file"));
  write_bytes(dir / "empty.txt", "");
  bad = o;
  bad.input = dir / "empty.txt";
  CHECK_THAT(err(bad), Catch::Contains("empty.txt: the file is empty"));
  bad = o;
  bad.val_fraction = 0.99;
  write_bytes(dir / "one.jsonl", "{\"text\": \"a\"}\n");
  bad.input = dir / "one.jsonl";
  CHECK_THAT(err(bad), Catch::Contains("has only 1 records, too few to hold out a validation part"));
  write_bytes(dir / "bad.jsonl", "{\"text\": \"a\"}\n{\"text\": 7}\n");
  bad = o;
  bad.input = dir / "bad.jsonl";
  CHECK_THAT(err(bad), Catch::StartsWith(dir / "bad.jsonl" + ":2: key \"text\" must be a string"));
  CHECK_FALSE(paths::exists(dir / "out"));  // nothing was written by any of these

  o.shard_tokens = 3;
  const PackResult first = pack_tokens(o);
  CHECK(first.train_shards >= 3);
  CHECK_THAT(err(o), Catch::Contains("already holds a packed dataset (manifest.json); pass --overwrite"));
  o.overwrite = true;
  o.shard_tokens = 1000;
  const PackResult second = pack_tokens(o);
  CHECK(second.train_shards == 1);
  int bins = 0;
  for (const auto& name : paths::list_dir(dir / "out")) bins += name.size() > 4 && name.substr(name.size() - 4) == ".bin";
  CHECK(bins == 2);  // the earlier pack's extra shards are gone
  // A manifest that names a missing shard.
  paths::remove_file(dir / "out/val_000000.bin");
  CHECK_THAT(error_of([&] { read_pack_manifest(dir / "out"); }), Catch::Contains("val_000000.bin: listed in") && Catch::Contains("but missing"));
  CHECK_THAT(error_of([&] { read_pack_manifest(dir / "in.txt"); }), Catch::Contains("not a folder written by `distill data pack`"));
  paths::create_directories(dir / "emptydir");
  CHECK_THAT(error_of([&] { read_pack_manifest(dir / "emptydir"); }), Catch::Contains("a folder without manifest.json"));
}
