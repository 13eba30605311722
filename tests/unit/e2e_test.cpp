// End to end on the shipped digits data: a supervised teacher, then a distilled student; the loss falls,
// every output exists, runs are bit-for-bit reproducible, and the saved student evaluates to the accuracy
// the run reported.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>
#include <sstream>

#include "../test_util.h"

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

}  // namespace

TEST_CASE("e2e: teacher, distilled student, eval on digits") {
  distill::test::ScratchDir dir("e2e");
  const std::string data = distill::test::source_path("data/digits.csv.gz");
  json teacher = {{"run", {{"out_dir", dir / "teacher"}, {"seed", 1}, {"threads", 2}}},
                  {"data", {{"path", data}, {"normalize", "scale"}}},
                  {"student", {{"arch", "mlp"}, {"hidden", {64}}}},
                  {"train", {{"epochs", 5}, {"batch_size", 64}, {"log_every", 5}}}};
  distill::test::write_text(dir / "teacher.json", teacher.dump());
  auto t = run_distill("train --config " + (dir / "teacher.json"));
  INFO(t.output);
  REQUIRE(t.exit_code == 0);

  json student = {{"run", {{"out_dir", dir / "student"}, {"seed", 2}, {"threads", 2}}},
                  {"data", {{"path", data}, {"normalize", "standard"}, {"train_rows", 300}}},
                  {"teacher", {{"weights", dir / "teacher/student.safetensors"}}},
                  {"student", {{"arch", "mlp"}, {"hidden", {32}}}},
                  {"loss", {{"temperature", 4.0}, {"alpha", 0.9}}},
                  {"train", {{"epochs", 20}, {"batch_size", 32}, {"log_every", 5}, {"eval_every", 50}}},
                  {"checkpoint", {{"every", 40}, {"keep_last", 2}}}};
  distill::test::write_text(dir / "student.json", student.dump());
  auto s = run_distill("train --config " + (dir / "student.json"));
  INFO(s.output);
  REQUIRE(s.exit_code == 0);

  for (const char* f : {"config.json", "metrics.jsonl", "train.log", "student.safetensors", "summary.json", "checkpoints/latest"})
    CHECK(distill::paths::exists(dir / (std::string("student/") + f)));
  auto train_events = events(dir / "student/metrics.jsonl", "train");
  REQUIRE(train_events.size() > 4);
  CHECK(train_events.back()["loss"].get<double>() < 0.5 * train_events.front()["loss"].get<double>());
  CHECK(train_events.front().contains("kd"));
  auto evals = events(dir / "student/metrics.jsonl", "eval");
  CHECK(evals.size() >= 2);
  auto checkpoints = events(dir / "student/metrics.jsonl", "checkpoint");
  CHECK(checkpoints.size() >= 3);
  CHECK(distill::test::count_files(dir / "student/checkpoints", ".safetensors") == 2);

  json summary = json::parse(distill::test::read_text(dir / "student/summary.json"));
  double reported = summary["val_accuracy"];
  CHECK(reported > 0.85);
  CHECK(summary["teacher_val_accuracy"].get<double>() > 0.85);

  auto e = run_distill("eval --config " + (dir / "student.json") + " --weights " + (dir / "student/student.safetensors"));
  INFO(e.output);
  REQUIRE(e.exit_code == 0);
  std::string last_line = e.output.substr(e.output.rfind('{'));
  json metrics = json::parse(last_line);
  CHECK(metrics["val_accuracy"].get<double>() == reported);
  CHECK(metrics["teacher_val_accuracy"].get<double>() == summary["teacher_val_accuracy"].get<double>());

  // loss.topk: the teacher's 3 largest logits per row, with the tail term. It trains, reaches the dense
  // student's accuracy band, and is not the dense run in disguise.
  json sparse = student;
  sparse["run"]["out_dir"] = dir / "topk";
  sparse["loss"]["topk"] = 3;
  sparse["loss"]["topk_tail"] = "tail";
  distill::test::write_text(dir / "topk.json", sparse.dump());
  auto k = run_distill("train --config " + (dir / "topk.json"));
  INFO(k.output);
  REQUIRE(k.exit_code == 0);
  auto topk_train = events(dir / "topk/metrics.jsonl", "train");
  CHECK(topk_train.back()["loss"].get<double>() < 0.5 * topk_train.front()["loss"].get<double>());
  CHECK(json::parse(distill::test::read_text(dir / "topk/summary.json"))["val_accuracy"].get<double>() > 0.85);
  CHECK(distill::test::read_text(dir / "topk/student.safetensors") != distill::test::read_text(dir / "student/student.safetensors"));
  // More than the data's 10 classes: one error line naming the key, before any training.
  auto bad = run_distill("train --config " + (dir / "topk.json") + " --set loss.topk=11 --out " + (dir / "topk-bad"));
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.output, Catch::Contains("error: loss.topk: 11 is more than the 10 classes"));
  CHECK_FALSE(distill::paths::exists(dir / "topk-bad/student.safetensors"));

  // Same config and seed on the CPU: bit-identical weights.
  auto again = run_distill("train --config " + (dir / "student.json") + " --out " + (dir / "again"));
  REQUIRE(again.exit_code == 0);
  CHECK(distill::test::read_text(dir / "again/student.safetensors") == distill::test::read_text(dir / "student/student.safetensors"));
}

TEST_CASE("e2e: a TorchScript student is trained and saved back as TorchScript") {
  distill::test::ScratchDir dir("e2e-ts");
  json c = {{"run", {{"out_dir", dir / "run"}, {"threads", 1}}},
            {"data", {{"path", distill::test::source_path("data/digits.csv.gz")}, {"normalize", "scale"}}},
            {"student", {{"path", distill::test::source_path("tests/fixtures/torchscript/mlp_64_16_10.pt")}}},
            {"optim", {{"lr", 0.01}}},
            {"train", {{"epochs", 5}, {"batch_size", 64}}}};
  distill::test::write_text(dir / "ts.json", c.dump());
  auto r = run_distill("train --config " + (dir / "ts.json"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(distill::paths::exists(dir / "run/student.pt"));
  json summary = json::parse(distill::test::read_text(dir / "run/summary.json"));
  CHECK(summary["val_accuracy"].get<double>() > 0.8);
  auto inspect = run_distill("inspect " + (dir / "run/student.pt"));
  CHECK_THAT(inspect.output, Catch::Contains("0.weight"));
}

TEST_CASE("e2e: the normaliser counts valid targets, and a step with none is skipped with a warning") {
  // Labels 0, 1 and 2; rows labelled 2 are loss.ignore_index. In file order (no shuffle), with 4 rows per step,
  // the first step holds only label-2 rows: nothing to learn from, so it is skipped. The second step holds two
  // valid rows of four: its loss is their mean, not a quarter of their sum.
  distill::test::ScratchDir dir("e2e-ignore");
  std::string text;
  const int labels[] = {2, 2, 2, 2, 0, 2, 1, 2, 0, 1, 0, 1};
  for (int i = 0; i < 12; ++i) text += std::to_string(i % 5) + "," + std::to_string((i * 7) % 3) + "," + std::to_string(labels[i]) + "\n";
  distill::test::write_text(dir / "d.csv", text);
  distill::test::write_text(dir / "v.csv", "1,1,0\n2,0,1\n");
  json config = {{"run", {{"out_dir", dir / "run"}, {"threads", 1}}},
                 {"data", {{"path", dir / "d.csv"}, {"val_path", dir / "v.csv"}, {"shuffle", false}, {"num_classes", 3}}},
                 {"student", {{"arch", "mlp"}, {"hidden", {4}}}},
                 {"loss", {{"ignore_index", 2}}},
                 {"optim", {{"name", "sgd"}, {"lr", 0.0001}, {"momentum", 0.0}, {"weight_decay", 0.0}}},
                 {"train", {{"epochs", 1}, {"batch_size", 2}, {"grad_accum", 2}, {"log_every", 1}}}};
  distill::test::write_text(dir / "c.json", config.dump());
  auto r = run_distill("train --config " + (dir / "c.json"));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.output, Catch::Contains("step 1: every target of the step is loss.ignore_index"));
  auto empty = events(dir / "run/metrics.jsonl", "empty_step");
  REQUIRE(empty.size() == 1);
  CHECK(empty[0]["step"] == 1);
  auto train = events(dir / "run/metrics.jsonl", "train");
  REQUIRE(train.size() == 2);  // steps 2 and 3: step 1 was skipped and logs nothing
  CHECK(train[0]["step"] == 2);
  // A mean over valid rows of a 3-class cross-entropy at near-initial weights is near log 3; a quarter-weighted
  // sum over the step's four rows would be near log(3) / 2.
  CHECK(train[0]["loss"].get<double>() > 0.8);
  CHECK(train[0]["loss"].get<double>() < 1.6);
}
