// Tokenizers against their reference implementations: ids and decoded text for tokenizer.json files come
// from npm's @huggingface/tokenizers, those for .model files from python3-sentencepiece
// (tests/fixtures/tokenizers/make_tokenizer_golden.{mjs,py} write golden.json). Behaviour the golden files
// cannot show (settings no shipped file uses) is checked on small hand-written tokenizer.json files, with
// expectations worked out from the Rust tokenizers source.
#include <catch2/catch.hpp>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/text/tokenizer.h"

using distill::Error;
using distill::Tokenizer;
using nlohmann::json;

namespace {

std::string fixture(const std::string& rel) { return std::string(DISTILL_SOURCE_DIR) + "/tests/fixtures/tokenizers/" + rel; }

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

const json& golden() {
  static const json g = json::parse(read_bytes(fixture("golden.json")));
  return g;
}

std::vector<int32_t> ids_of(const json& ids) { return ids.get<std::vector<int32_t>>(); }

// A fresh folder, removed afterwards.
struct TempDir {
  std::string path;
  TempDir() {
    std::string pattern = distill::paths::join(distill::paths::temp_dir(), "distill-tokenizer-test-XXXXXX");
    path = ::mkdtemp(pattern.data());
  }
  ~TempDir() { distill::paths::remove_tree(path); }
  std::string operator/(const std::string& name) const { return distill::paths::join(path, name); }
};

// The message of the distill::Error that `fn` throws ("" when it throws none).
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// The same edits make_tokenizer_golden.mjs applies for its variant fixtures.
json tokenizer_json_variant(const std::string& name, json t) {
  if (name == "llama3_style_no_ignore_merges") t["model"]["ignore_merges"] = false;
  if (name == "llama3_style_nfc") t["normalizer"] = {{"type", "NFC"}};
  if (name == "llama3_style_nfkc") t["normalizer"] = {{"type", "NFKC"}};
  if (name == "mistral_legacy_normalizer") {
    t["normalizer"] = {{"type", "Sequence"},
                       {"normalizers",
                        {{{"type", "Prepend"}, {"prepend", "\xE2\x96\x81"}},
                         {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\xE2\x96\x81"}}}}};
    t["pre_tokenizer"] = nullptr;
  }
  return t;
}

std::unique_ptr<Tokenizer> load_fixture(const std::string& name, const std::string& file) {
  if (name != "gpt2" && name != "mistral" && name != "llama3_style")
    return Tokenizer::from_json(tokenizer_json_variant(name, json::parse(read_bytes(fixture(file)))).dump(), name);
  return Tokenizer::load(fixture(file));
}

// A minimal BPE tokenizer.json to hand-check one setting at a time.
json small_tokenizer(const json& vocab, const json& merges) {
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", nullptr},
          {"decoder", nullptr},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

const std::string kMeta = "\xE2\x96\x81";  // "▁"

}  // namespace

TEST_CASE("sha256: FIPS 180-4 test vectors, in one piece and in pieces") {
  CHECK(distill::sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(distill::sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(distill::sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(distill::sha256_hex("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu") ==
        "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // One million 'a', fed in uneven pieces that straddle the 64-byte blocks.
  distill::Sha256 hash;
  const std::string a(1000000, 'a');
  size_t pos = 0;
  for (size_t piece = 1; pos < a.size(); piece = piece * 3 % 1000 + 1) {
    hash.update(std::string_view(a).substr(pos, piece));
    pos += std::min(piece, a.size() - pos);
  }
  CHECK(hash.hex_digest() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("tokenizer.json: ids and decoded text match the Hugging Face reference") {
  const json& g = golden();
  const json& texts = g["texts"];
  for (const auto& [name, entry] : g["tokenizer_json"]["fixtures"].items()) {
    INFO("fixture " << name);
    auto tokenizer = load_fixture(name, entry["file"].get<std::string>());
    const bool byte_level = name.rfind("gpt2", 0) == 0 || name.rfind("llama3_style", 0) == 0;
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i].get<std::string>();
      INFO("text " << i << ": " << json(text.substr(0, 80)).dump());
      const auto expected = ids_of(entry["cases"][i]["ids"]);
      const auto ids = tokenizer->encode(text);
      CHECK(ids == expected);
      CHECK(tokenizer->decode(expected) == entry["cases"][i]["decoded"].get<std::string>());
      if (byte_level) {
        // Byte-level tokens spell out the decoded text's bytes exactly.
        std::string bytes;
        for (int32_t id : expected) bytes += tokenizer->token_bytes(id);
        CHECK(bytes == entry["cases"][i]["decoded"].get<std::string>());
      }
    }
  }
}

TEST_CASE("SentencePiece .model: ids and decoded text match python's sentencepiece") {
  const json& g = golden();
  const json& texts = g["texts"];
  for (const auto& [name, entry] : g["sentencepiece"]["fixtures"].items()) {
    INFO("fixture " << name);
    auto tokenizer = Tokenizer::load(fixture(entry["file"].get<std::string>()));
    CHECK(tokenizer->vocab_size() == entry["vocab_size"].get<int64_t>());
    CHECK(tokenizer->bos_id().value_or(-1) == entry["bos_id"].get<int>());
    CHECK(tokenizer->eos_id().value_or(-1) == entry["eos_id"].get<int>());
    const auto& pieces = entry["first_pieces"];
    for (size_t id = 0; id < pieces.size(); ++id) {
      CHECK(tokenizer->id_to_token(static_cast<int32_t>(id)) == pieces[id].get<std::string>());
      CHECK(tokenizer->token_to_id(pieces[id].get<std::string>()) == std::optional<int32_t>(static_cast<int32_t>(id)));
    }
    for (size_t i = 0; i < texts.size(); ++i) {
      const std::string text = texts[i].get<std::string>();
      INFO("text " << i << ": " << json(text.substr(0, 80)).dump());
      const auto expected = ids_of(entry["cases"][i]["ids"]);
      CHECK(tokenizer->encode(text) == expected);
      CHECK(tokenizer->decode(expected) == entry["cases"][i]["decoded"].get<std::string>());
    }
  }
}

TEST_CASE("tokenizer: vocabulary, special tokens and token bytes of the shipped files") {
  auto gpt2 = Tokenizer::load(fixture("gpt2/tokenizer.json"));
  CHECK(gpt2->vocab_size() == 50257);
  CHECK(gpt2->bos_id() == std::nullopt);
  CHECK(gpt2->eos_id() == std::optional<int32_t>(50256));
  CHECK(gpt2->token_to_id("\xC4\xA0the") == std::optional<int32_t>(262));  // "Ġthe"
  CHECK(gpt2->token_to_id("<|endoftext|>") == std::optional<int32_t>(50256));
  CHECK(gpt2->token_to_id("no such token") == std::nullopt);
  CHECK(gpt2->id_to_token(262) == "\xC4\xA0the");
  CHECK(gpt2->token_bytes(262) == " the");
  CHECK(gpt2->token_bytes(198) == "\n");               // "Ċ"
  CHECK(gpt2->token_bytes(447) == "\xE2\x80");          // "âĢ": the first two bytes of a three-byte character
  CHECK(gpt2->decode({447}) == "\xEF\xBF\xBD");         // decoded alone it is one U+FFFD, as from_utf8_lossy
  CHECK(gpt2->token_bytes(50256) == "<|endoftext|>");
  CHECK(gpt2->sha256() == distill::sha256_hex(read_bytes(fixture("gpt2/tokenizer.json"))));
  CHECK(gpt2->path() == fixture("gpt2/tokenizer.json"));

  auto mistral = Tokenizer::load(fixture("mistral/tokenizer.json"));
  CHECK(mistral->vocab_size() == 32000);
  CHECK(mistral->bos_id() == std::optional<int32_t>(1));  // the post-processor's template
  CHECK(mistral->eos_id() == std::optional<int32_t>(2));  // "</s>"
  CHECK(mistral->token_to_id(kMeta + "the") == std::optional<int32_t>(272));
  CHECK(mistral->token_bytes(272) == " the");
  CHECK(mistral->token_bytes(68) == "A");  // <0x41>
  CHECK(mistral->token_bytes(1) == "<s>");

  auto llama3 = Tokenizer::load(fixture("llama3_style/tokenizer.json"));
  const auto begin = llama3->token_to_id("<|begin_of_text|>");
  REQUIRE(begin);
  CHECK(llama3->bos_id() == begin);
  CHECK(llama3->eos_id() == llama3->token_to_id("<|end_of_text|>"));
  CHECK(llama3->vocab_size() == *llama3->token_to_id("<|lstrip_mark|>") + 1);

  auto spm = Tokenizer::load(fixture("mistral/tokenizer.model"));
  CHECK(spm->vocab_size() == 32000);
  CHECK(spm->token_bytes(272) == " the");
  CHECK(spm->token_bytes(68) == "A");
  CHECK(spm->token_bytes(1).empty());  // <s> is a control token: sentencepiece decodes it to nothing
  CHECK(spm->token_to_id("<s>") == std::optional<int32_t>(1));
  CHECK(spm->token_to_id("no such piece") == std::nullopt);
}

TEST_CASE("tokenizer: a folder prefers tokenizer.json and takes bos/eos from tokenizer_config.json") {
  auto folder = Tokenizer::load(fixture("mistral"));
  CHECK(folder->path() == distill::paths::join(fixture("mistral"), "tokenizer.json"));
  CHECK(folder->sha256() == distill::sha256_hex(read_bytes(fixture("mistral/tokenizer.json"))));
  CHECK(folder->bos_id() == std::optional<int32_t>(1));
  CHECK(folder->eos_id() == std::optional<int32_t>(2));

  TempDir dir;
  write_bytes(dir / "tokenizer.model", read_bytes(fixture("mistral/tokenizer.model")));
  auto model_only = Tokenizer::load(dir.path);
  CHECK(model_only->path() == dir / "tokenizer.model");
  CHECK(model_only->encode("Hello world") == std::vector<int32_t>{22557, 1526});

  // tokenizer_config.json overrides the file: a string, an AddedToken object, or null.
  write_bytes(dir / "tokenizer_config.json", R"({"bos_token": null, "eos_token": {"content": "<unk>"}})");
  auto configured = Tokenizer::load(dir.path);
  CHECK(configured->bos_id() == std::nullopt);
  CHECK(configured->eos_id() == std::optional<int32_t>(0));
  write_bytes(dir / "tokenizer_config.json", R"({"eos_token": "<|im_end|>"})");
  const std::string message = error_of([&] { Tokenizer::load(dir.path); });
  CHECK_THAT(message, Catch::Contains(dir / "tokenizer_config.json") && Catch::Contains("eos_token") &&
                          Catch::Contains("<|im_end|>"));

  TempDir empty;
  CHECK_THAT(error_of([&] { Tokenizer::load(empty.path); }),
             Catch::Contains(empty.path) && Catch::Contains("neither tokenizer.json nor tokenizer.model"));
}

TEST_CASE("tokenizer: Metaspace split and prepend_scheme, as the reference defines them") {
  // Merges that prefer "▁▁" make the difference visible: unsplit, "▁a▁▁b" keeps "▁▁" whole.
  json t = small_tokenizer({{kMeta, 0}, {"a", 1}, {"b", 2}, {kMeta + kMeta, 3}, {kMeta + "a", 4}, {kMeta + "b", 5}},
                           json::array({json::array({kMeta, kMeta}), json::array({kMeta, "a"}), json::array({kMeta, "b"})}));
  t["added_tokens"] = json::array({{{"id", 6}, {"content", "<s>"}, {"special", true}, {"normalized", false}}});
  t["model"]["vocab"]["<s>"] = 6;
  auto with = [&](const char* scheme, bool split) {
    json v = t;
    v["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", scheme}, {"split", split}};
    return Tokenizer::from_json(v.dump(), "metaspace.json");
  };
  CHECK(with("always", true)->encode("a  b") == std::vector<int32_t>{4, 0, 5});   // "▁a" "▁" "▁b"
  CHECK(with("always", false)->encode("a  b") == std::vector<int32_t>{4, 3, 2});  // "▁a" "▁▁" "b"
  CHECK(with("first", false)->encode("a") == std::vector<int32_t>{4});
  CHECK(with("first", false)->encode("<s>a") == std::vector<int32_t>{6, 1});      // not at the start: no "▁"
  CHECK(with("always", false)->encode("<s>a") == std::vector<int32_t>{6, 4});
  CHECK(with("never", false)->encode("a") == std::vector<int32_t>{1});

  // The Metaspace decoder drops every "▁" of the first token (not just one) unless the scheme is never.
  json d = t;
  d["decoder"] = {{"type", "Metaspace"}, {"replacement", kMeta}, {"prepend_scheme", "always"}};
  CHECK(Tokenizer::from_json(d.dump(), "d.json")->decode({3, 1, 5}) == "a b");
  d["decoder"]["prepend_scheme"] = "never";
  CHECK(Tokenizer::from_json(d.dump(), "d.json")->decode({3, 1, 5}) == "  a b");
}

TEST_CASE("tokenizer: unknown tokens, byte fallback, fusing, and word prefixes and suffixes") {
  json t = small_tokenizer({{"<unk>", 0}, {"a", 1}, {"<0x78>", 2}}, json::array());
  t["model"]["unk_token"] = "<unk>";
  CHECK(Tokenizer::from_json(t.dump(), "t.json")->encode("axyza") == std::vector<int32_t>{1, 0, 0, 0, 1});
  t["model"]["fuse_unk"] = true;
  CHECK(Tokenizer::from_json(t.dump(), "t.json")->encode("axyza") == std::vector<int32_t>{1, 0, 1});
  t["model"]["byte_fallback"] = true;  // "x" has a byte token, "y" and "z" do not
  CHECK(Tokenizer::from_json(t.dump(), "t.json")->encode("axyza") == std::vector<int32_t>{1, 2, 0, 1});

  json prefix = small_tokenizer({{"a", 0}, {"##b", 1}, {"##c", 2}, {"ab", 3}}, json::array({"a ##b"}));
  prefix["model"]["continuing_subword_prefix"] = "##";
  CHECK(Tokenizer::from_json(prefix.dump(), "p.json")->encode("abc") == std::vector<int32_t>{3, 2});
  json suffix = small_tokenizer({{"a", 0}, {"b</w>", 1}, {"ab</w>", 2}}, json::array({"a b</w>"}));
  suffix["model"]["end_of_word_suffix"] = "</w>";
  CHECK(Tokenizer::from_json(suffix.dump(), "s.json")->encode("ab") == std::vector<int32_t>{2});

  // The unknown token is only needed when a character is missing; then its absence is an error.
  json no_unk = small_tokenizer({{"a", 0}}, json::array());
  no_unk["model"]["unk_token"] = "<unk>";
  auto tokenizer = Tokenizer::from_json(no_unk.dump(), "no_unk.json");
  CHECK(tokenizer->encode("aa") == std::vector<int32_t>{0, 0});
  CHECK_THAT(error_of([&] { tokenizer->encode("ab"); }), Catch::Contains("no_unk.json") && Catch::Contains("unk_token"));
  // Without an unknown token a missing character is dropped, as in the reference.
  CHECK(Tokenizer::from_json(small_tokenizer({{"a", 0}}, json::array()).dump(), "x.json")->encode("ab") ==
        std::vector<int32_t>{0});
}

TEST_CASE("tokenizer: single_word added tokens match only as whole words") {
  json t = small_tokenizer({{" ", 0}, {"x", 1}, {"a", 2}, {"b", 3}, {".", 4}}, json::array());
  t["added_tokens"] = json::array({{{"id", 10}, {"content", "ab"}, {"single_word", true}, {"normalized", false}}});
  auto tokenizer = Tokenizer::from_json(t.dump(), "single_word.json");
  CHECK(tokenizer->encode("ab xab ab.") == std::vector<int32_t>{10, 0, 1, 2, 3, 0, 10, 4});
  CHECK(tokenizer->vocab_size() == 11);
  CHECK(tokenizer->id_to_token(10) == "ab");
}

TEST_CASE("tokenizer: ByteFallback decoding of bytes that are not UTF-8, Strip and Replace") {
  json t = small_tokenizer({{"<0xE2>", 0}, {"<0x82>", 1}, {"<0x41>", 2}, {"a", 3}, {kMeta + "b", 4}}, json::array());
  t["decoder"] = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", kMeta}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  auto tokenizer = Tokenizer::from_json(t.dump(), "bytes.json");
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(tokenizer->decode({0, 1, 2}) == fffd + fffd + fffd);  // one U+FFFD per byte token of a bad run
  CHECK(tokenizer->decode({0, 1, 3, 2}) == fffd + fffd + "aA");
  CHECK(tokenizer->decode({4, 4}) == "b b");                 // the first space stripped
  CHECK(tokenizer->decode({}).empty());
  CHECK(tokenizer->token_bytes(0) == "\xE2");
  CHECK(tokenizer->token_bytes(4) == " b");
}

TEST_CASE("tokenizer: files that cannot be read are errors naming the file and the key") {
  TempDir dir;
  const json gpt2 = json::parse(read_bytes(fixture("llama3_style/tokenizer.json")));
  struct Case {
    std::string what;
    std::function<void(json&)> change;
    std::vector<std::string> expected;  // parts of the message
  };
  const std::vector<Case> cases = {
      {"WordPiece", [](json& t) { t["model"]["type"] = "WordPiece"; }, {"model.type", "WordPiece", "BPE"}},
      {"Unigram", [](json& t) { t["model"] = {{"type", "Unigram"}, {"vocab", json::array()}}; }, {"model.type", "Unigram"}},
      {"pre-tokenizer", [](json& t) { t["pre_tokenizer"]["pretokenizers"][1]["type"] = "Whitespace"; },
       {"pre_tokenizer.pretokenizers[1].type", "Whitespace", "supported: Sequence, ByteLevel, Split, Metaspace"}},
      {"normalizer", [](json& t) { t["normalizer"] = {{"type", "BertNormalizer"}}; },
       {"normalizer.type", "BertNormalizer", "supported: Sequence, Prepend, Replace, NFC"}},
      {"decoder", [](json& t) { t["decoder"] = {{"type", "WordPiece"}}; }, {"decoder.type", "WordPiece", "supported:"}},
      {"no vocab", [](json& t) { t["model"].erase("vocab"); }, {"model.vocab", "missing"}},
      {"vocab type", [](json& t) { t["model"]["vocab"] = json::array(); }, {"model.vocab", "expected an object"}},
      {"merge of unknown token", [](json& t) { t["model"]["merges"][3] = {"Zzz", "Q"}; }, {"model.merges[3]", "\"Zzz\" is not in model.vocab"}},
      {"merge result", [](json& t) { t["model"]["merges"].push_back({"Q", "Q"}); }, {"model.merges[1500]", "QQ", "not in model.vocab"}},
      {"merge form", [](json& t) { t["model"]["merges"][0] = 7; }, {"model.merges[0]", "expected"}},
      {"bad regex", [](json& t) { t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed"; },
       {"pre_tokenizer.pretokenizers[0].pattern.Regex", "does not compile"}},
      {"split behavior", [](json& t) { t["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways"; },
       {"pre_tokenizer.pretokenizers[0].behavior", "Sideways"}},
      {"version", [](json& t) { t["version"] = "2.0"; }, {"version", "2.0"}},
      {"dropout", [](json& t) { t["model"]["dropout"] = 0.1; }, {"model.dropout", "null"}},
      {"added token id", [](json& t) { t["added_tokens"][0]["id"] = -5; }, {"added_tokens[0].id", "-5"}},
      {"added token content", [](json& t) { t["added_tokens"][0].erase("content"); }, {"added_tokens[0].content", "missing"}},
      {"not an object", [](json& t) { t = json::array(); }, {"top level", "expected a tokenizer.json object"}},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    json t = gpt2;
    c.change(t);
    const std::string path = dir / "tokenizer.json";
    write_bytes(path, t.dump());
    const std::string message = error_of([&] { Tokenizer::load(path); });
    CHECK_THAT(message, Catch::Contains(path));
    for (const std::string& part : c.expected) CHECK_THAT(message, Catch::Contains(part));
  }

  write_bytes(dir / "broken.json", "{\"model\": {");
  CHECK_THAT(error_of([&] { Tokenizer::load(dir / "broken.json"); }),
             Catch::Contains(dir / "broken.json") && Catch::Contains("not valid JSON"));
  write_bytes(dir / "broken.model", "this is not a protobuf");
  CHECK_THAT(error_of([&] { Tokenizer::load(dir / "broken.model"); }),
             Catch::Contains(dir / "broken.model") && Catch::Contains("not a SentencePiece model"));
  CHECK_THAT(error_of([&] { Tokenizer::load(dir / "absent.json"); }),
             Catch::Contains(dir / "absent.json") && Catch::Contains("no such file"));

  for (const std::string file : {"gpt2/tokenizer.json", "mistral/tokenizer.model"}) {
    INFO(file);
    auto tokenizer = Tokenizer::load(fixture(file));
    CHECK_THAT(error_of([&] { tokenizer->encode("ok \xC3\x28 bad"); }),
               Catch::Contains(fixture(file)) && Catch::Contains("not valid UTF-8") && Catch::Contains("offset 3"));
    CHECK_THAT(error_of([&] { tokenizer->decode({1, 99999999}); }),
               Catch::Contains(fixture(file)) && Catch::Contains("99999999"));
    CHECK_THAT(error_of([&] { tokenizer->id_to_token(-1); }), Catch::Contains(fixture(file)));
  }
}

TEST_CASE("train_sentencepiece_bpe: deterministic, and the model python's sentencepiece trains") {
  TempDir dir;
  const std::string input = fixture("shakespeare_slice.txt");
  const int64_t vocab = golden()["sentencepiece"]["fixtures"]["shakespeare_bpe"]["vocab_size"].get<int64_t>();
  distill::train_sentencepiece_bpe(input, vocab, dir / "a.model");
  distill::train_sentencepiece_bpe(input, vocab, dir / "b.model");
  const std::string a = read_bytes(dir / "a.model");
  CHECK(!a.empty());
  CHECK(a == read_bytes(dir / "b.model"));
  CHECK(distill::paths::list_dir(dir.path) == std::vector<std::string>{"a.model", "b.model"});  // no temporaries left

  // The same pieces and the same ids as the model python trained with the same settings.
  auto ours = Tokenizer::load(dir / "a.model");
  auto python = Tokenizer::load(fixture("shakespeare_bpe.model"));
  REQUIRE(ours->vocab_size() == python->vocab_size());
  for (int32_t id = 0; id < ours->vocab_size(); ++id) CHECK(ours->id_to_token(id) == python->id_to_token(id));
  const json& cases = golden()["sentencepiece"]["fixtures"]["shakespeare_bpe"]["cases"];
  for (size_t i = 0; i < cases.size(); ++i) CHECK(ours->encode(golden()["texts"][i].get<std::string>()) == ids_of(cases[i]["ids"]));
  CHECK(ours->token_to_id("<0x41>").has_value());  // byte fallback is on

  CHECK_THAT(error_of([&] { distill::train_sentencepiece_bpe(dir / "absent.txt", 300, dir / "c.model"); }),
             Catch::Contains(dir / "absent.txt"));
  CHECK_THAT(error_of([&] { distill::train_sentencepiece_bpe(input, 20, dir / "c.model"); }),
             Catch::Contains(input) && Catch::Contains("training failed"));
  CHECK_FALSE(distill::paths::exists(dir / "c.model"));
}

TEST_CASE("tokenizer: encoding is fast and safe to share between threads") {
  // Tiny Shakespeare (1.1 MB) when the shared data sits beside the checkout, else the slice repeated to that size.
  std::string text = read_bytes(std::string(DISTILL_SOURCE_DIR) + "/../shared/data/tinyshakespeare.txt");
  if (text.empty()) {
    const std::string slice = read_bytes(fixture("shakespeare_slice.txt"));
    while (text.size() < 1'100'000) text += slice;
  }
  for (const std::string file : {"gpt2/tokenizer.json", "llama3_style/tokenizer.json", "mistral/tokenizer.json",
                                 "mistral/tokenizer.model"}) {
    auto tokenizer = Tokenizer::load(fixture(file));
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tokenizer->encode(text);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    WARN(file << ": " << text.size() << " bytes -> " << ids.size() << " ids in " << seconds << " s ("
              << text.size() / seconds / 1e6 << " MB/s, first encode, one thread)");
    CHECK(seconds < 20);  // a bound that only catches gross slowness; the figure is in the message
    if (file == "gpt2/tokenizer.json") CHECK(tokenizer->decode(ids) == text);

    // Two threads encoding different parts at once give what one thread gives.
    const std::string_view first = std::string_view(text).substr(0, 200'000), second = std::string_view(text).substr(200'000, 200'000);
    const auto expected_first = tokenizer->encode(first), expected_second = tokenizer->encode(second);
    std::vector<int32_t> got_first, got_second;
    std::thread worker([&] { got_first = tokenizer->encode(first); });
    got_second = tokenizer->encode(second);
    worker.join();
    CHECK(got_first == expected_first);
    CHECK(got_second == expected_second);
  }
}
