#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include "../test_util.h"
#include "distill/config/config.h"
#include "distill/error.h"

using distill::Config;
using distill::Error;
using nlohmann::json;

namespace {

json minimal() {
  return json::parse(R"({"data": {"path": "d.csv"}, "student": {"arch": "mlp", "hidden": [4]}})");
}

std::string error_of(const json& doc) {
  try {
    distill::parse_config(doc, "run.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("config: defaults fill every key the file leaves out") {
  Config c = distill::parse_config(minimal(), "run.json");
  CHECK(c.loss.kind == "forward_kl");
  CHECK(c.loss.temperature == 4.0);
  CHECK(c.loss.t2_scale);
  CHECK(c.optim.name == "adamw");
  CHECK(c.train.batch_size == 64);
  CHECK_FALSE(c.teacher.has_value());
  // The format's and the arch's own keys get their defaults too.
  CHECK(c.data.options.at("val_fraction").get<double>() == Approx(0.2));
  CHECK(c.student.options.at("dropout").get<double>() == 0.0);
}

TEST_CASE("config: errors name the exact JSON path") {
  json doc = minimal();
  SECTION("unknown key, with a suggestion") {
    doc["loss"] = {{"temprature", 2}};
    std::string e = error_of(doc);
    CHECK_THAT(e, Catch::Contains("run.json: unknown key 'loss.temprature'"));
    CHECK_THAT(e, Catch::Contains("did you mean 'loss.temperature'"));
  }
  SECTION("unknown section") {
    doc["optimizer"] = json::object();
    CHECK_THAT(error_of(doc), Catch::Contains("unknown key 'optimizer'"));
  }
  SECTION("wrong type") {
    doc["train"] = {{"epochs", "ten"}};
    CHECK_THAT(error_of(doc), Catch::Contains("train.epochs: expected an integer, got a string \"ten\""));
  }
  SECTION("fractional integer") {
    doc["train"] = {{"batch_size", 1.5}};
    CHECK_THAT(error_of(doc), Catch::Contains("train.batch_size: expected an integer"));
  }
  SECTION("wrong type inside an array") {
    doc["student"]["hidden"] = json::array({4, "x"});
    CHECK_THAT(error_of(doc), Catch::Contains("student.hidden[1]: expected an integer"));
  }
  SECTION("out of range") {
    doc["loss"] = {{"temperature", -1}};
    CHECK_THAT(error_of(doc), Catch::Contains("loss.temperature: must be > 0, got -1"));
  }
  SECTION("alpha out of range") {
    doc["loss"] = {{"alpha", 1.5}};
    CHECK_THAT(error_of(doc), Catch::Contains("loss.alpha: must be in [0, 1], got 1.5"));
  }
  SECTION("enum value") {
    doc["optim"] = {{"name", "lamb"}};
    CHECK_THAT(error_of(doc), Catch::Contains("optim.name: must be one of sgd | adam | adamw, got 'lamb'"));
  }
  SECTION("model needs an arch or a path") {
    doc["student"] = json::object();
    CHECK_THAT(error_of(doc), Catch::Contains("student: needs 'path'"));
  }
  SECTION("cnn without input_shape") {
    doc["student"] = {{"arch", "cnn"}, {"channels", {8}}};
    CHECK_THAT(error_of(doc), Catch::Contains("student.input_shape: cnn needs [C, H, W]"));
  }
  SECTION("teacher arch without weights") {
    doc["teacher"] = {{"arch", "mlp"}, {"hidden", {8}}};
    CHECK_THAT(error_of(doc), Catch::Contains("teacher.weights: missing"));
  }
  SECTION("nothing to train") {
    doc["train"] = {{"epochs", 0}};
    CHECK_THAT(error_of(doc), Catch::Contains("set train.epochs or train.max_steps"));
  }
  SECTION("section of the wrong type") {
    doc["train"] = 3;
    CHECK_THAT(error_of(doc), Catch::Contains("train: expected an object"));
  }
}

TEST_CASE("config: file errors") {
  distill::test::ScratchDir dir("config");
  SECTION("missing file") {
    CHECK_THROWS_WITH(distill::load_config(dir / "nope.json"), Catch::Contains("config file not found"));
  }
  SECTION("invalid JSON reports line and column") {
    distill::test::write_text(dir / "bad.json", "{\n  \"data\": {\"path\": \"x\"},\n  \"student\": {\"arch\": }\n}\n");
    CHECK_THROWS_WITH(distill::load_config(dir / "bad.json"), Catch::Contains("bad.json:3:") && Catch::Contains("invalid JSON"));
  }
  SECTION("not an object") {
    distill::test::write_text(dir / "list.json", "[1, 2]");
    CHECK_THROWS_WITH(distill::load_config(dir / "list.json"), Catch::Contains("must be a JSON object"));
  }
}

TEST_CASE("config: --set overrides are typed by the schema") {
  distill::test::ScratchDir dir("config-set");
  distill::test::write_text(dir / "run.json", minimal().dump());
  Config c = distill::load_config(dir / "run.json", {"loss.temperature=2.5", "train.epochs=3", "data.shuffle=false",
                                                     "student.hidden=[16,8]", "run.out_dir=123", "teacher.weights=t.safetensors"});
  CHECK(c.loss.temperature == 2.5);
  CHECK(c.train.epochs == 3);
  CHECK_FALSE(c.data.shuffle);
  CHECK(c.student.options.at("hidden") == json::array({16, 8}));
  CHECK(c.run.out_dir == "123");  // a string field takes the text verbatim
  REQUIRE(c.teacher.has_value());
  CHECK(c.teacher->weights.value().find("t.safetensors") != std::string::npos);
  // Relative input paths in the file resolve against the config's folder.
  CHECK(c.data.path.items == std::vector<std::string>{dir / "d.csv"});

  CHECK_THROWS_WITH(distill::load_config(dir / "run.json", {"loss.temp=2"}),
                    Catch::Contains("--set loss.temp=2") && Catch::Contains("unknown key 'loss.temp'"));
  CHECK_THROWS_WITH(distill::load_config(dir / "run.json", {"train.epochs=many"}),
                    Catch::Contains("'many' is not a valid value for train.epochs"));
  CHECK_THROWS_WITH(distill::load_config(dir / "run.json", {"train.epochs"}), Catch::Contains("expected key.path=value"));
  CHECK_THROWS_WITH(distill::load_config(dir / "run.json", {"loss.temperature=0"}),
                    Catch::Contains("loss.temperature: must be > 0, got 0"));
}

TEST_CASE("config: to_json round-trips and describe lists every key") {
  Config c = distill::parse_config(minimal(), "run.json");
  c.loss.alpha = 0.25;
  Config back = distill::parse_config(distill::to_json(c), "again.json");
  CHECK(distill::to_json(back) == distill::to_json(c));
  std::string text = distill::describe_config();
  for (const char* key : {"run.out_dir", "data.normalize", "teacher.path", "student.init", "loss.t2_scale", "optim.betas",
                          "train.grad_accum", "checkpoint.keep_last"})
    CHECK_THAT(text, Catch::Contains(key));
}
