#include <catch2/catch.hpp>

#include <torch/torch.h>
#include <zlib.h>

#include "../test_util.h"
#include "distill/config/config.h"
#include "distill/data/dataset.h"
#include "distill/error.h"

using distill::parse_csv;

TEST_CASE("csv: features and labels, label column by index") {
  auto t = parse_csv("1,2,0\n3,4,1\n\n5.5,-6e-1,2\n", "a.csv", std::nullopt);
  CHECK(t.features.sizes() == at::IntArrayRef({3, 2}));
  CHECK(t.features[2][1].item<float>() == Approx(-0.6f));
  CHECK(t.labels[2].item<int64_t>() == 2);
  CHECK(t.max_label == 2);
  auto first = parse_csv("0,1,2\n1,3,4\n", "a.csv", 0);
  CHECK(first.labels[1].item<int64_t>() == 1);
  CHECK(first.features[1][0].item<float>() == 3.0f);
  auto crlf = parse_csv("f1,f2,label\r\n1,2,0\r\n3,4,1\r\n", "a.csv", std::nullopt);
  CHECK(crlf.features.size(0) == 2);
}

TEST_CASE("csv: bad input names the file, line and column") {
  CHECK_THROWS_WITH(parse_csv("1,2,0\n3,4\n", "r.csv", std::nullopt), Catch::Contains("r.csv:2: has 2 columns, the rows before have 3"));
  CHECK_THROWS_WITH(parse_csv("1,2,0\n3,x,1\n", "r.csv", std::nullopt), Catch::Contains("r.csv:2:2: 'x' is not a number"));
  CHECK_THROWS_WITH(parse_csv("1,2,0\n3,4,-1\n", "r.csv", std::nullopt), Catch::Contains("r.csv:2:3: label '-1' must be a non-negative integer"));
  CHECK_THROWS_WITH(parse_csv("1,2,0.5\n", "r.csv", std::nullopt), Catch::Contains("label '0.5'"));
  CHECK_THROWS_WITH(parse_csv("1,nan,0\n", "r.csv", std::nullopt), Catch::Contains("not finite"));
  CHECK_THROWS_WITH(parse_csv("", "r.csv", std::nullopt), Catch::Contains("r.csv: holds no data rows"));
  CHECK_THROWS_WITH(parse_csv("a,b\n", "r.csv", std::nullopt), Catch::Contains("holds no data rows"));
  CHECK_THROWS_WITH(parse_csv("1,2\n", "r.csv", 5), Catch::Contains("data.label_column: 5 is outside the 2 columns"));
  CHECK_THROWS_WITH(parse_csv("1;2;3\n", "r.csv", std::nullopt), Catch::Contains("found 1 column"));
}

TEST_CASE("csv: gzip files read transparently, the shipped digits data") {
  auto t = distill::read_csv(distill::test::source_path("data/digits.csv.gz"), std::nullopt);
  CHECK(t.features.sizes() == at::IntArrayRef({1797, 64}));
  CHECK(t.max_label == 9);
  CHECK(t.features.max().item<float>() == 16.0f);
  distill::test::ScratchDir dir("csv");
  CHECK_THROWS_WITH(distill::read_csv(dir / "missing.csv", std::nullopt), Catch::Contains("cannot open the data file"));
  // A truncated gzip stream is an error, not silently fewer rows.
  std::string gz = distill::test::read_text(distill::test::source_path("data/digits.csv.gz"));
  distill::test::write_text(dir / "cut.csv.gz", gz.substr(0, gz.size() / 2));
  CHECK_THROWS(distill::read_csv(dir / "cut.csv.gz", std::nullopt));
}

TEST_CASE("dataset: split is seeded, disjoint, and normalisation uses training rows only") {
  distill::test::ScratchDir dir("ds");
  std::string text;
  for (int i = 0; i < 100; ++i) text += std::to_string(i) + "," + std::to_string(i * 2) + "," + std::to_string(i % 3) + "\n";
  distill::test::write_text(dir / "d.csv", text);
  distill::CsvOptions c;
  const std::string path = dir / "d.csv";
  c.val_fraction = 0.25;
  c.normalize = "standard";
  auto a = distill::load_dataset(path, std::nullopt, c);
  auto b = distill::load_dataset(path, std::nullopt, c);
  CHECK(a.train_x.size(0) == 75);
  CHECK(a.val_x.size(0) == 25);
  CHECK(torch::equal(a.raw_val_x, b.raw_val_x));
  CHECK(a.num_classes == 3);
  // Train and val rows are disjoint: feature 0 identifies the row.
  auto tr = a.raw_train_x.select(1, 0), va = a.raw_val_x.select(1, 0);
  CHECK(std::get<0>(torch::_unique(torch::cat({tr, va}))).numel() == 100);
  CHECK(a.train_x.mean(0).abs().max().item<float>() < 1e-4f);
  c.split_seed = 1;
  auto other = distill::load_dataset(path, std::nullopt, c);
  CHECK_FALSE(torch::equal(other.raw_val_x, a.raw_val_x));
  c.train_rows = 10;
  CHECK(distill::load_dataset(path, std::nullopt, c).train_x.size(0) == 10);
  c.train_rows = 500;
  CHECK_THROWS_WITH(distill::load_dataset(path, std::nullopt, c), Catch::Contains("data.train_rows: 500 is more than the 75 training rows"));
  c.train_rows = 0;
  c.num_classes = 2;
  CHECK_THROWS_WITH(distill::load_dataset(path, std::nullopt, c), Catch::Contains("labels must lie in [0, num_classes)"));
}

TEST_CASE("seeded_permutation is a fixed, platform-independent permutation") {
  auto p = distill::seeded_permutation(10, 42);
  auto sorted = p;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 10; ++i) CHECK(sorted[i] == i);
  CHECK(p == distill::seeded_permutation(10, 42));
  CHECK(p != distill::seeded_permutation(10, 43));
}
