// The binary's contract: one "error: ..." line naming the file or key, a non-zero exit, nothing written.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "distill/kernels/kd_loss_kernels.h"

using distill::test::run_distill;
using nlohmann::json;

namespace {

// A small valid config on 3-class data in `dir`.
std::string write_config(const distill::test::ScratchDir& dir, const json& patch = json::object()) {
  std::string csv;
  for (int i = 0; i < 60; ++i) csv += std::to_string(i % 7) + "," + std::to_string(i % 5) + "," + std::to_string(i % 3) + "\n";
  distill::test::write_text(dir / "d.csv", csv);
  json c = {{"run", {{"out_dir", dir / "out"}, {"threads", 1}}},
            {"data", {{"path", "d.csv"}}},
            {"student", {{"arch", "mlp"}, {"hidden", {4}}}},
            {"train", {{"epochs", 1}, {"batch_size", 8}}}};
  c.merge_patch(patch);
  distill::test::write_text(dir / "run.json", c.dump());
  return dir / "run.json";
}

void check_user_error(const distill::test::CommandResult& r, const std::string& needle) {
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
  CHECK_THAT(r.output, Catch::Contains(needle));
  CHECK_THAT(r.output, !Catch::Contains("terminate called") && !Catch::Contains("Exception raised from"));
}

}  // namespace

TEST_CASE("cli: version, help and usage errors") {
  auto v = run_distill("--version");
  CHECK(v.exit_code == 0);
  CHECK_THAT(v.output, Catch::StartsWith("distill 0."));
  auto h = run_distill("train --help");
  CHECK(h.exit_code == 0);
  CHECK_THAT(h.output, Catch::Contains("--config") && Catch::Contains("--set") && Catch::Contains("--out"));
  auto hc = run_distill("train --help-config");
  CHECK(hc.exit_code == 0);
  CHECK_THAT(hc.output, Catch::Contains("loss.temperature = 4.0"));
  auto none = run_distill("");
  CHECK(none.exit_code == 2);
  auto missing = run_distill("train");
  CHECK(missing.exit_code == 2);
  CHECK_THAT(missing.output, Catch::StartsWith("error: ") && Catch::Contains("--config"));
  CHECK(run_distill("frobnicate").exit_code == 2);
}

TEST_CASE("cli: user errors are one clear line and leave nothing behind") {
  distill::test::ScratchDir dir("cli");
  SECTION("missing config") { check_user_error(run_distill("train --config " + (dir / "none.json")), "config file not found"); }
  SECTION("unknown key") {
    check_user_error(run_distill("train --config " + write_config(dir, {{"train", {{"epoch", 3}}}})),
                     "unknown key 'train.epoch' (did you mean 'train.epochs'?)");
  }
  SECTION("bad --set") {
    check_user_error(run_distill("train --config " + write_config(dir) + " --set loss.alpha=2"),
                     "loss.alpha: must be in [0, 1], got 2");
  }
  SECTION("missing data") {
    check_user_error(run_distill("train --config " + write_config(dir, {{"data", {{"path", "nope.csv"}}}})),
                     "nope.csv: cannot open the data file");
  }
  SECTION("missing teacher weights") {
    check_user_error(run_distill("train --config " + write_config(dir, {{"teacher", {{"weights", "t.safetensors"}}}})),
                     "t.safetensors: cannot open");
  }
  SECTION("teacher/student output size mismatch") {
    // The TorchScript fixture maps 64 features to 10 classes; this data has 2 features and 3 classes.
    std::string ts = distill::test::source_path("tests/fixtures/torchscript/mlp_64_16_10.pt");
    check_user_error(run_distill("train --config " + write_config(dir, {{"teacher", {{"path", ts}}}})), "teacher");
  }
  SECTION("batch larger than the data") {
    check_user_error(run_distill("train --config " + write_config(dir, {{"train", {{"batch_size", 1000}}}})),
                     "train.batch_size: 1000 is larger than the 48 training rows");
  }
  SECTION("unwritable out_dir") {
    check_user_error(run_distill("train --config " + write_config(dir) + " --out /proc/distill-cannot-write"),
                     "run.out_dir");
  }
  SECTION("student init with misshaped tensors") {
    distill::test::write_text(dir / "init.safetensors", "");
    check_user_error(run_distill("train --config " + write_config(dir, {{"student", {{"init", "init.safetensors"}}}})),
                     "init.safetensors: not a valid safetensors file");
  }
  SECTION("unknown CPU instruction set for the loss") {
    check_user_error(run_distill("train --config " + write_config(dir), "DISTILL_CPU_ISA=avx1024"),
                     "DISTILL_CPU_ISA: 'avx1024' is not one of scalar | avx2 | avx512");
  }
  CHECK_FALSE(distill::paths::exists(dir / "out"));
}

TEST_CASE("cli: bench loss times both paths and reports user errors in one line") {
  const std::string small = "bench loss --rows 64 --vocab 300 --repeats 2 --warmup 1 --threads 1";
  auto r = run_distill(small + " --json");
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const json j = json::parse(r.output.substr(r.output.find('{')));
  CHECK(j["fused"]["median_ms"].get<double>() > 0);
  CHECK(j["composite"]["median_ms"].get<double>() > 0);
  CHECK(j["speedup"].get<double>() > 0);
  CHECK(j["gradient_bytes"] == 64 * 300 * 4);
  // One allocation for the first warm-up step, one after the bench releases it, reuses for the rest.
  CHECK(j["fused"]["gradient_allocations"] == 2);
  CHECK(j["fused"]["gradient_reuses"] == 1);
  CHECK(j["cpu_isa"] == distill::kernels::kd_loss_cpu_isa_name(distill::kernels::CpuIsa::best));
  auto table = run_distill(small + " --no-composite --kind jsd --dtype bf16");
  CHECK(table.exit_code == 0);
  CHECK_THAT(table.output, Catch::Contains("jsd [64, 300] bf16 on cpu") && Catch::Contains("fused"));
  CHECK_THAT(table.output, !Catch::Contains("composite "));

  auto scalar = run_distill(small + " --no-composite --json", "DISTILL_CPU_ISA=scalar");
  REQUIRE(scalar.exit_code == 0);
  CHECK(json::parse(scalar.output.substr(scalar.output.find('{')))["cpu_isa"] == "scalar");
  check_user_error(run_distill(small, "DISTILL_CPU_ISA=sse9"), "DISTILL_CPU_ISA: 'sse9' is not one of");
  check_user_error(run_distill("bench loss --dtype f64"), "--dtype: must be one of float32 | bfloat16 | float16");
  check_user_error(run_distill("bench loss --rows 0"), "--rows: must be > 0");
  check_user_error(run_distill("bench loss --kind kl"), "--kind: must be one of forward_kl | reverse_kl | jsd, got 'kl'");
  check_user_error(run_distill("bench loss --device gpu"), "--device: 'gpu' is not one of auto | cpu | cuda | cuda:N");
  if (!distill::kernels::kd_loss_cuda_compiled())  // with CUDA, this would run the default-size benchmark
    check_user_error(run_distill("bench loss --device cuda"), "--device: 'cuda' asked for");

  // A sparse (top-k) teacher: both paths take it; only forward_kl has one.
  auto sparse = run_distill(small + " --topk 16 --topk-tail tail --json");
  INFO(sparse.output);
  REQUIRE(sparse.exit_code == 0);
  const json js = json::parse(sparse.output.substr(sparse.output.find('{')));
  CHECK(js["topk"] == 16);
  CHECK(js["topk_tail"] == "tail");
  CHECK(js["model_bytes"].get<double>() == 64.0 * 300 * 8 + 64.0 * (16 * 12 + 4));
  CHECK(js["composite"]["median_ms"].get<double>() > 0);
  CHECK_THAT(run_distill(small + " --topk 16 --no-composite").output, Catch::Contains("(top-16 teacher, ignore)"));
  check_user_error(run_distill(small + " --topk 16 --kind jsd"), "--topk: the sparse teacher supports --kind forward_kl");
  check_user_error(run_distill(small + " --topk 301"), "--topk: 301 is not in [0, 300]");
  check_user_error(run_distill(small + " --topk 4 --topk-tail rest"), "--topk-tail: must be one of ignore | tail, got 'rest'");

  // From hidden states and heads: the chunked fused-linear loss against linear + composite.
  auto head = run_distill(small + " --hidden 16 --json");
  INFO(head.output);
  REQUIRE(head.exit_code == 0);
  const json jh = json::parse(head.output.substr(head.output.find('{')));
  CHECK(jh["hidden"] == 16);
  CHECK(jh["chunk_rows"].get<int64_t>() > 0);
  CHECK(jh["head_flops"].get<double>() == 8.0 * 64 * 300 * 16);
  CHECK(jh["logits_bytes"] == 64 * 300 * 4);
  CHECK(jh["parameter_gradient_bytes"] == (64 + 300) * 16 * 4);
  for (const char* path : {"fused", "composite"}) {
    CHECK(jh[path]["median_ms"].get<double>() > 0);
    CHECK(jh[path]["gflop_per_s"].get<double>() > 0);
    CHECK(jh[path].contains("extra_peak_bytes"));
  }
  CHECK(jh["speedup"].get<double>() > 0);
  CHECK_THAT(run_distill(small + " --hidden 16 --no-composite").output,
             Catch::Contains("hidden [64, 16] x head [300, 16] f32") && Catch::Contains("GFLOP/s"));
  check_user_error(run_distill(small + " --hidden -1"), "--hidden: must be >= 0");
  check_user_error(run_distill(small + " --hidden 16 --topk 4"), "--topk: not with --hidden");
}

TEST_CASE("cli: an earlier run is not overwritten without --overwrite") {
  distill::test::ScratchDir dir("cli-rerun");
  std::string config = write_config(dir);
  auto first = run_distill("train --config " + config);
  INFO(first.output);
  REQUIRE(first.exit_code == 0);
  std::string before = distill::test::read_text(dir / "out/student.safetensors");
  check_user_error(run_distill("train --config " + config), "already holds a run");
  CHECK(distill::test::read_text(dir / "out/student.safetensors") == before);
  CHECK(run_distill("train --config " + config + " --overwrite").exit_code == 0);
}

TEST_CASE("cli: validate and inspect") {
  distill::test::ScratchDir dir("cli-inspect");
  auto ok = run_distill("validate --config " + write_config(dir));
  INFO(ok.output);
  CHECK(ok.exit_code == 0);
  CHECK_THAT(ok.output, Catch::Contains("48 training rows, 12 validation rows, 2 features, 3 classes"));
  CHECK_FALSE(distill::paths::exists(dir / "out"));
  auto st = run_distill("inspect " + distill::test::source_path("tests/fixtures/parity/teacher.safetensors"));
  CHECK(st.exit_code == 0);
  CHECK_THAT(st.output, Catch::Contains("0.weight") && Catch::Contains("F32 [32, 6]") && Catch::Contains("356 parameters"));
  auto ts = run_distill("inspect " + distill::test::source_path("tests/fixtures/torchscript/mlp_64_16_10.pt"));
  CHECK(ts.exit_code == 0);
  CHECK_THAT(ts.output, Catch::Contains("TorchScript") && Catch::Contains("2.bias"));
  distill::test::write_text(dir / "junk.safetensors", std::string(16, '\xff'));
  check_user_error(run_distill("inspect " + (dir / "junk.safetensors")), "not a valid safetensors file");
}
