#include <catch2/catch.hpp>

#include <torch/torch.h>

#include <cstring>

#include "../test_util.h"
#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/safetensors.h"

using distill::decode_safetensors;
using distill::encode_safetensors;

namespace {

distill::SafetensorsContents decode(const std::string& bytes) {
  return decode_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "f.safetensors");
}

// A file with a hand-written header and `data_bytes` bytes of data.
std::string handmade(const std::string& header, size_t data_bytes, int64_t claimed_len = -1) {
  std::string out(8, '\0');
  uint64_t n = claimed_len >= 0 ? static_cast<uint64_t>(claimed_len) : header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + std::string(data_bytes, '\x01');
}

}  // namespace

TEST_CASE("safetensors: round trip of every dtype, shapes and metadata") {
  distill::NamedTensors in = {
      {"f32", torch::randn({3, 5})},
      {"f64", torch::randn({2}, torch::kFloat64)},
      {"f16", torch::randn({4, 1}).to(torch::kHalf)},
      {"bf16", torch::randn({7}).to(torch::kBFloat16)},
      {"i64", torch::arange(6, torch::kInt64).reshape({2, 3})},
      {"i32", torch::arange(5, torch::kInt32)},
      {"i16", torch::arange(3, torch::kInt16)},
      {"i8", torch::arange(-2, 2, torch::kInt8)},
      {"u8", torch::arange(4, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(3.5f)},
      {"empty", torch::zeros({0, 4})},
      {"strided", torch::randn({4, 6}).t()},
  };
  distill::test::ScratchDir dir("st");
  const std::string path = dir / "all.safetensors";
  distill::save_safetensors(path, in, {{"arch", "{\"arch\": \"mlp\"}"}, {"format", "pt"}});
  auto out = distill::load_safetensors(path);
  REQUIRE(out.tensors.size() == in.size());
  for (const auto& [name, t] : in) {
    const at::Tensor* got = out.find(name);
    REQUIRE(got);
    CHECK(got->scalar_type() == t.scalar_type());
    CHECK(got->sizes() == t.sizes());
    CHECK(torch::equal(*got, t));
  }
  CHECK(out.metadata.at("format") == "pt");
  CHECK(out.metadata.at("arch") == "{\"arch\": \"mlp\"}");
  // The header is padded to 8 bytes, as the format recommends.
  std::string bytes = distill::test::read_text(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);
  // No temporary files are left behind.
  CHECK(distill::test::count_files(dir.path) == 1);
}

TEST_CASE("safetensors: reads a file written by the Python fixture writer") {
  auto c = distill::load_safetensors(distill::test::source_path("tests/fixtures/parity/teacher.safetensors"));
  REQUIRE(c.find("0.weight"));
  CHECK(c.find("0.weight")->sizes() == at::IntArrayRef({32, 6}));
  CHECK(c.find("2.bias")->sizes() == at::IntArrayRef({4}));
}

TEST_CASE("safetensors: malformed files are refused with a clear reason") {
  const std::string good = encode_safetensors({{"w", torch::ones({2, 2})}});
  SECTION("too short") { CHECK_THROWS_WITH(decode(good.substr(0, 5)), Catch::Contains("8-byte header length is missing")); }
  SECTION("truncated data") { CHECK_THROWS_WITH(decode(good.substr(0, good.size() - 3)), Catch::Contains("truncated")); }
  SECTION("header length beyond the file") {
    CHECK_THROWS_WITH(decode(handmade("{}", 0, 4096)), Catch::Contains("runs past the end of the file"));
  }
  SECTION("absurd header size") {
    CHECK_THROWS_WITH(decode(handmade("{}", 0, int64_t{1} << 40)), Catch::Contains("is absurd"));
  }
  SECTION("header not JSON") { CHECK_THROWS_WITH(decode(handmade("{nope", 0)), Catch::Contains("not valid JSON")); }
  SECTION("unknown dtype") {
    CHECK_THROWS_WITH(decode(handmade(R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", 2)),
                      Catch::Contains("unsupported dtype 'F8_E4M3'"));
  }
  SECTION("offsets out of bounds") {
    CHECK_THROWS_WITH(decode(handmade(R"({"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}})", 4)),
                      Catch::Contains("run past the data section"));
  }
  SECTION("overlapping tensors") {
    CHECK_THROWS_WITH(decode(handmade(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6)),
                      Catch::Contains("overlaps"));
  }
  SECTION("a hole between tensors") {
    CHECK_THROWS_WITH(decode(handmade(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})", 6)),
                      Catch::Contains("belong to no tensor"));
  }
  SECTION("bytes do not match the shape") {
    CHECK_THROWS_WITH(decode(handmade(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)),
                      Catch::Contains("holds 8 bytes but shape and dtype need 12"));
  }
  SECTION("shape overflow") {
    CHECK_THROWS_WITH(decode(handmade(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})", 8)),
                      Catch::Contains("too large"));
  }
  SECTION("negative offsets") {
    CHECK_THROWS_WITH(decode(handmade(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}})", 1)),
                      Catch::Contains("data_offsets must be"));
  }
  SECTION("metadata must be strings") {
    CHECK_THROWS_WITH(decode(handmade(R"({"__metadata__":{"a":1}})", 0)), Catch::Contains("__metadata__.a must be a string"));
  }
  SECTION("missing file") {
    CHECK_THROWS_WITH(distill::load_safetensors("/nonexistent/x.safetensors"), Catch::Contains("cannot open"));
  }
}

TEST_CASE("safetensors: a failed write leaves the previous file intact") {
  distill::test::ScratchDir dir("st-fail");
  const std::string path = dir / "w.safetensors";
  distill::save_safetensors(path, {{"w", torch::ones({4})}});
  distill::set_write_failure_after_bytes(16);
  CHECK_THROWS_WITH(distill::save_safetensors(path, {{"w", torch::zeros({1000})}}), Catch::Contains("No space left"));
  distill::set_write_failure_after_bytes(0);
  auto c = distill::load_safetensors(path);
  CHECK(torch::equal(*c.find("w"), torch::ones({4})));
  CHECK(distill::test::count_files(dir.path) == 1);
}
