// Jobs that survive: exact resume at any step, kill -9 at random moments, stop signals, config changes on
// resume, a full disk while checkpointing, and non-finite steps.
#include <catch2/catch.hpp>

#include <chrono>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include <torch/torch.h>

#include "distill/io/safetensors.h"

using distill::test::run_distill;
using distill::test::ScratchDir;
using nlohmann::json;

namespace {

// Dropout, shuffling, gradient accumulation with a short last step, cosine warm-up and clipping: every
// piece of state a resume must restore.
json run_config(const std::string& out_dir, const std::string& optim = "adamw") {
  return {{"run", {{"out_dir", out_dir}, {"seed", 3}, {"threads", 1}}},
          {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"normalize", "standard"}, {"train_rows", 600}}},
          {"student", {{"arch", "mlp"}, {"hidden", {32, 16}}, {"dropout", 0.2}}},
          {"optim", {{"name", optim}, {"lr", 0.003}, {"schedule", "cosine"}, {"warmup_steps", 4}, {"grad_clip", 1.0}}},
          {"train", {{"epochs", 3}, {"batch_size", 40}, {"grad_accum", 2}, {"log_every", 4}}},
          {"checkpoint", {{"every", 3}, {"keep_last", 2}}}};
}

std::string write_config(const ScratchDir& dir, const std::string& name, const json& c) {
  distill::test::write_text(dir / name, c.dump());
  return dir / name;
}

// Waits until the run's log says it trains (its signal handlers are in place long before), up to 2 minutes:
// a fixed sleep was too short on a loaded machine that also loads CUDA's libraries.
void wait_for_training(const std::string& log) {
  for (int i = 0; i < 1200; ++i) {
    if (distill::paths::exists(log) && distill::test::read_text(log).find("training ") != std::string::npos) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  FAIL("the run did not start training within 2 minutes; its log:\n" +
       (distill::paths::exists(log) ? distill::test::read_text(log) : std::string("(none)")));
}

std::string student_bytes(const std::string& run_dir) { return distill::test::read_text(run_dir + "/student.safetensors"); }

}  // namespace

TEST_CASE("resume: interrupted at any step, the run ends bit-identical to an uninterrupted one") {
  for (const char* optim : {"adamw", "sgd"}) {
    INFO("optimizer " << optim);
    ScratchDir dir(std::string("resume-exact-") + optim);
    std::string config = write_config(dir, "c.json", run_config(dir / "full", optim));
    auto full = run_distill("train --config " + config);
    INFO(full.output);
    REQUIRE(full.exit_code == 0);
    // 600 rows / 80 per step = 8 steps per epoch (the last one 40 rows), 24 in all.
    for (int stop : {1, 3, 8, 13, 23}) {
      INFO("stopped after step " << stop);
      std::string out = dir / ("part" + std::to_string(stop));
      auto first = run_distill("train --config " + config + " --out " + out, "DISTILL_TEST_STOP_AFTER_STEP=" + std::to_string(stop));
      INFO(first.output);
      REQUIRE(first.exit_code == 75);
      CHECK_THAT(first.output, Catch::Contains("--resume auto"));
      CHECK_FALSE(distill::paths::exists(out + "/student.safetensors"));
      auto second = run_distill("train --config " + config + " --out " + out + " --resume auto");
      INFO(second.output);
      REQUIRE(second.exit_code == 0);
      CHECK_THAT(second.output, Catch::Contains("resuming from"));
      CHECK(student_bytes(out) == student_bytes(dir / "full"));
    }
  }
}

TEST_CASE("resume: kill -9 at random moments, resume each time, same result") {
  ScratchDir dir("resume-kill");
  json c = run_config(dir / "full");
  c["train"]["epochs"] = 150;  // ~1200 steps, several seconds: most kills land mid-run
  c["student"]["hidden"] = {256, 256};
  c["checkpoint"] = {{"every", 1}, {"keep_last", 2}};
  std::string config = write_config(dir, "c.json", c);
  auto full = run_distill("train --config " + config);
  INFO(full.output);
  REQUIRE(full.exit_code == 0);

  std::mt19937 rng(20261122);
  std::uniform_int_distribution<int> delay_ms(300, 1500);
  const std::string out = dir / "killed";
  int kills = 0, attempts = 0;
  for (; attempts < 60; ++attempts) {
    std::vector<std::string> args = {"train", "--config", config, "--out", out};
    if (distill::paths::exists(out + "/config.json")) args.push_back("--resume"), args.push_back("auto");
    pid_t pid = distill::test::spawn_distill(args, {}, dir / "log.txt");
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms(rng)));
    bool killed = ::kill(pid, SIGKILL) == 0;
    int code = distill::test::wait_exit(pid);
    if (code == 0) break;  // it reached the end before the kill
    INFO(distill::test::read_text(dir / "log.txt"));
    REQUIRE((killed && code == 128 + SIGKILL));
    ++kills;
    // Whatever the moment, what is on disk is complete: every checkpoint listed loads.
    for (const std::string& name : distill::paths::list_dir(out + "/checkpoints"))
      if (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors")
        CHECK_NOTHROW(distill::load_safetensors(out + "/checkpoints/" + name));
  }
  CHECK(kills >= 3);
  if (!distill::paths::exists(out + "/summary.json")) {
    auto last = run_distill("train --config " + config + " --out " + out + " --resume auto");
    INFO(last.output);
    REQUIRE(last.exit_code == 0);
  }
  CHECK(student_bytes(out) == student_bytes(dir / "full"));
}

TEST_CASE("preemption: SIGTERM checkpoints and exits 75, a second SIGINT exits at once") {
  ScratchDir dir("preempt");
  json c = run_config(dir / "full");
  c["train"]["epochs"] = 400;
  c["data"]["train_rows"] = 0;
  c["checkpoint"]["every"] = 100000;
  std::string config = write_config(dir, "c.json", c);
  SECTION("SIGTERM") {
    pid_t pid = distill::test::spawn_distill({"train", "--config", config}, {}, dir / "log.txt");
    wait_for_training(dir / "log.txt");
    ::kill(pid, SIGTERM);
    int code = distill::test::wait_exit(pid);
    std::string log = distill::test::read_text(dir / "log.txt");
    INFO(log);
    CHECK(code == 75);
    CHECK_THAT(log, Catch::Contains("stopped by SIGTERM"));
    CHECK(distill::paths::exists(dir / "full/checkpoints/latest"));
  }
  SECTION("SIGUSR1 (Slurm --signal)") {
    pid_t pid = distill::test::spawn_distill({"train", "--config", config}, {}, dir / "log.txt");
    wait_for_training(dir / "log.txt");
    ::kill(pid, SIGUSR1);
    CHECK(distill::test::wait_exit(pid) == 75);
    CHECK_THAT(distill::test::read_text(dir / "log.txt"), Catch::Contains("stopped by SIGUSR1"));
  }
  SECTION("second SIGINT") {
    pid_t pid = distill::test::spawn_distill({"train", "--config", config}, {}, dir / "log.txt");
    wait_for_training(dir / "log.txt");
    ::kill(pid, SIGINT);
    ::kill(pid, SIGINT);
    int code = distill::test::wait_exit(pid);
    INFO(distill::test::read_text(dir / "log.txt"));
    CHECK((code == 130 || code == 75));  // 75 only if the step ended between the two signals
  }
}

TEST_CASE("resume: config changes") {
  ScratchDir dir("resume-config");
  std::string config = write_config(dir, "c.json", run_config(dir / "run"));
  REQUIRE(run_distill("train --config " + config, "DISTILL_TEST_STOP_AFTER_STEP=5").exit_code == 75);
  SECTION("incompatible changes are refused with the list of differences") {
    auto r = run_distill("train --config " + config + " --resume auto --set student.hidden=[8] --set train.batch_size=20");
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains("student.hidden: [32,16] -> [8]") && Catch::Contains("train.batch_size: 40 -> 20"));
    CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
  }
  SECTION("harmless changes are accepted and logged") {
    auto r = run_distill("train --config " + config + " --resume auto --set train.log_every=2 --set train.epochs=4");
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("config change accepted on resume: train.epochs: 3 -> 4"));
  }
  SECTION("a finished run is neither retrained nor overwritten") {
    REQUIRE(run_distill("train --config " + config + " --resume auto").exit_code == 0);
    std::string before = student_bytes(dir / "run");
    auto again = run_distill("train --config " + config + " --resume auto");
    CHECK(again.exit_code == 0);
    CHECK_THAT(again.output, Catch::Contains("already finished"));
    auto refused = run_distill("train --config " + config);
    CHECK(refused.exit_code == 1);
    CHECK_THAT(refused.output, Catch::Contains("already holds a run"));
    CHECK(student_bytes(dir / "run") == before);
    auto both = run_distill("train --config " + config + " --resume auto --overwrite");
    CHECK(both.exit_code == 1);
  }
}

TEST_CASE("resume: nothing to resume, and bad checkpoints") {
  ScratchDir dir("resume-none");
  std::string config = write_config(dir, "c.json", run_config(dir / "run"));
  // --resume auto on a folder that holds no run yet starts it: a requeued job needs no wrapper.
  auto r = run_distill("train --config " + config + " --resume auto --set train.max_steps=3");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("no checkpoint in") && Catch::Contains("starting from step 0"));
  CHECK(distill::paths::exists(dir / "run/summary.json"));
  auto p = run_distill("train --config " + config + " --resume " + (dir / "nope.safetensors"));
  CHECK_THAT(p.output, Catch::Contains("no such file or folder"));
  auto w = run_distill("train --config " + config + " --resume " +
                       distill::test::source_path("tests/fixtures/parity/teacher.safetensors"));
  CHECK(w.exit_code == 1);
  CHECK_THAT(w.output, Catch::Contains("not a distill checkpoint"));
  // A run whose checkpoints/ cannot be listed is not silently started afresh: one error naming the folder.
  const std::string metrics = distill::test::read_text(dir / "run/metrics.jsonl");
  distill::paths::remove_tree(dir / "run/checkpoints");
  distill::test::write_text(dir / "run/checkpoints", "not a folder\n");
  auto f = run_distill("train --config " + config + " --resume auto");
  INFO(f.output);
  CHECK(f.exit_code == 1);
  CHECK(distill::test::count_lines_starting(f.output, "error: ") == 1);
  CHECK_THAT(f.output, Catch::Contains("error: " + dir / "run/checkpoints: Not a directory; distill lists this folder"));
  CHECK(distill::test::read_text(dir / "run/metrics.jsonl") == metrics);  // nothing trained, nothing appended
}

TEST_CASE("crash safety: a failed checkpoint write keeps the previous checkpoint") {
  ScratchDir dir("disk-full");
  std::string config = write_config(dir, "c.json", run_config(dir / "run"));
  auto r = run_distill("train --config " + config, "DISTILL_TEST_FAIL_CHECKPOINT=3");
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK(distill::test::count_lines_starting(r.output, "error: ") == 1);
  CHECK_THAT(r.output, Catch::Contains("No space left on device"));
  // Checkpoints at steps 3 and 6 were written; the one at 9 failed and left nothing behind.
  CHECK(distill::test::read_text(dir / "run/checkpoints/latest") == "step-00000006.safetensors\n");
  CHECK_FALSE(distill::paths::exists(dir / "run/checkpoints/step-00000009.safetensors"));
  for (const std::string& name : distill::paths::list_dir(dir / "run/checkpoints"))
    CHECK(name.find(".tmp.") == std::string::npos);
  CHECK_NOTHROW(distill::load_safetensors(dir / "run/checkpoints/step-00000006.safetensors"));
  // The run continues from it.
  auto resumed = run_distill("train --config " + config + " --resume auto");
  INFO(resumed.output);
  CHECK(resumed.exit_code == 0);
  CHECK_THAT(resumed.output, Catch::Contains("(step 6)"));
}

TEST_CASE("numerical faults: non-finite steps are skipped, then the run stops keeping its last good checkpoint") {
  ScratchDir dir("nonfinite");
  // Rows 0..19 are ordinary; the rest overflow float32 in the first layer (8 features of 3.4e38 into 256
  // units: some unit's pre-activation is infinite), so their loss is NaN.
  std::string csv;
  for (int i = 0; i < 20; ++i) csv += "1,2,3,4,5,6,7," + std::to_string(i % 3) + "," + std::to_string(i % 2) + "\n";
  for (int i = 0; i < 200; ++i) csv += "3.4e38,3.4e38,3.4e38,3.4e38,3.4e38,3.4e38,3.4e38,3.4e38," + std::to_string(i % 2) + "\n";
  distill::test::write_text(dir / "d.csv", csv);
  json c = {{"run", {{"out_dir", dir / "run"}, {"threads", 1}}},
            {"data", {{"path", "d.csv"}, {"val_fraction", 0.1}, {"shuffle", false}, {"split_seed", 5}}},
            {"student", {{"arch", "mlp"}, {"hidden", {256}}}},
            {"train", {{"epochs", 50}, {"batch_size", 5}, {"max_bad_steps", 6}}},
            {"checkpoint", {{"every", 1}}}};
  std::string config = write_config(dir, "c.json", c);
  auto r = run_distill("train --config " + config);
  INFO(r.output);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.output, Catch::Contains("step skipped"));
  CHECK_THAT(r.output, Catch::Contains("train.max_bad_steps: 6 consecutive steps") && Catch::Contains("last good checkpoint"));
  CHECK_THAT(distill::test::read_text(dir / "run/metrics.jsonl"), Catch::Contains("\"bad_step\""));
  REQUIRE(distill::paths::exists(dir / "run/checkpoints/latest"));
  auto latest = distill::load_safetensors(dir / ("run/checkpoints/" + [&] {
    std::string s = distill::test::read_text(dir / "run/checkpoints/latest");
    return s.substr(0, s.size() - 1);
  }()));
  for (auto& [name, t] : latest.tensors)
    if (name.rfind("model.", 0) == 0) CHECK(torch::isfinite(t).all().item<bool>());
}
