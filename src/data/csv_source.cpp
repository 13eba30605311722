// data.format "csv": the rows of a CSV table (include/distill/data/dataset.h) served as batches. Each epoch's
// order is a seeded permutation of the training rows (run.seed and the epoch; none without data.shuffle), so
// that any range of any epoch can be asked for: a resumed run continues bit for bit.
#include <torch/torch.h>

#include <mutex>

#include <nlohmann/json.hpp>

#include "data/formats.h"
#include "distill/config/config.h"
#include "distill/data/batch.h"
#include "distill/data/dataset.h"
#include "distill/error.h"

namespace distill::data {

namespace {

class RowSource : public BatchSource {
 public:
  RowSource(at::Tensor x, at::Tensor y, bool shuffle, int64_t seed, int64_t ignore_index, std::string what)
      : x_(std::move(x)), teacher_x_(x_), y_(std::move(y)), shuffle_(shuffle), seed_(seed),
        ignore_index_(ignore_index), what_(std::move(what)) {}

  int64_t size() const override { return x_.size(0); }

  Batch batch(int64_t epoch, int64_t begin, int64_t end) const override {
    TORCH_CHECK(0 <= begin && begin < end && end <= size(), "rows [", begin, ", ", end, ") of ", size());
    return gather(order(epoch).slice(0, begin, end));
  }
  Batch examples(int64_t begin, int64_t end) const override {
    TORCH_CHECK(0 <= begin && begin < end && end <= size(), "rows [", begin, ", ", end, ") of ", size());
    return gather(torch::arange(begin, end, torch::kInt64));
  }

  std::string describe() const override { return what_; }

  void set_teacher_inputs(at::Tensor teacher_x) { teacher_x_ = std::move(teacher_x); }

 private:
  Batch gather(const at::Tensor& rows) const {
    Batch b;
    b.example_ids = rows;
    b.student_input = x_.index_select(0, rows);
    b.teacher_input = teacher_x_.is_same(x_) ? b.student_input : teacher_x_.index_select(0, rows);
    b.targets = y_.index_select(0, rows);
    b.examples = rows.size(0);
    b.valid_targets = b.targets.ne(ignore_index_).sum().item<int64_t>();
    return b;
  }

  // The rows of `epoch` in training order (cached: a run asks for one epoch at a time).
  at::Tensor order(int64_t epoch) const {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!order_.defined() || order_epoch_ != epoch) {
      const int64_t n = size();
      if (!shuffle_) {
        order_ = torch::arange(n, torch::kInt64);
      } else {
        const uint64_t seed = static_cast<uint64_t>(seed_) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1;
        order_ = torch::tensor(seeded_permutation(n, seed), torch::kInt64);
      }
      order_epoch_ = epoch;
    }
    return order_;
  }

  at::Tensor x_, teacher_x_, y_;
  bool shuffle_;
  int64_t seed_, ignore_index_;
  std::string what_;
  mutable std::mutex mutex_;
  mutable at::Tensor order_;
  mutable int64_t order_epoch_ = -1;
};

std::string single_file(const PathList& paths, const std::string& key) {
  if (paths.items.size() != 1)
    throw Error(key + ": data.format \"csv\" reads one file, got a list of " + std::to_string(paths.items.size()) +
                "; concatenate them, or give one");
  return paths.items[0];
}

std::optional<Normalizer> stored_normalizer(const Metadata* metadata, const std::string& origin) {
  if (!metadata) return std::nullopt;
  auto it = metadata->find("normalizer");
  if (it == metadata->end()) return std::nullopt;
  nlohmann::json j = nlohmann::json::parse(it->second, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw Error(origin + ": metadata 'normalizer' is not valid JSON");
  return Normalizer::from_json(j, origin);
}

DataSources load_csv(const Config& config, const Metadata* student_metadata) {
  CsvOptions options = schema::read_fields<CsvOptions>(config.data.options, "data");
  const std::string path = single_file(config.data.path, "data.path");
  std::optional<std::string> val_path;
  if (config.data.val_path) val_path = single_file(*config.data.val_path, "data.val_path");
  // A trained student (distill eval) brings its normalisation and class count.
  if (student_metadata && !options.num_classes) {
    if (auto it = student_metadata->find("num_classes"); it != student_metadata->end()) {
      try {
        options.num_classes = std::stoll(it->second);
      } catch (const std::exception&) {
        throw Error("the student's metadata 'num_classes' is not an integer");
      }
    }
  }
  Dataset d = load_dataset(path, val_path, options, stored_normalizer(student_metadata, "the student's weights"));

  DataSources out;
  const int64_t ignore = config.loss.ignore_index;
  auto train = std::make_unique<RowSource>(d.train_x, d.train_y, config.data.shuffle, config.run.seed, ignore,
                                           std::to_string(d.train_x.size(0)) + " rows of " + path);
  auto val = std::make_unique<RowSource>(d.val_x, d.val_y, /*shuffle=*/false, 0, ignore,
                                         std::to_string(d.val_x.size(0)) + " rows of " + (val_path ? *val_path : path));
  RowSource* train_rows = train.get();
  RowSource* val_rows = val.get();
  at::Tensor raw_train = d.raw_train_x, raw_val = d.raw_val_x;
  const int64_t features = d.num_features;
  // A teacher trained by distill sees its inputs as it was trained to: normalised by its stored statistics.
  out.fit_teacher = [train_rows, val_rows, raw_train, raw_val, features](const Metadata& teacher_metadata,
                                                                         const std::string& origin) {
    std::optional<Normalizer> own = stored_normalizer(&teacher_metadata, origin);
    if (!own) return;
    if (own->shift.size() != 0 && static_cast<int64_t>(own->shift.size()) != features)
      throw Error(origin + ": the teacher was trained on " + std::to_string(own->shift.size()) + " features, the data has " +
                  std::to_string(features));
    train_rows->set_teacher_inputs(own->apply(raw_train));
    val_rows->set_teacher_inputs(own->apply(raw_val));
  };
  out.train = std::move(train);
  out.val = std::move(val);
  out.io.features = d.num_features;
  out.io.classes = d.num_classes;
  out.student_metadata = {{"normalizer", d.normalizer.to_json().dump()},
                          {"num_features", std::to_string(d.num_features)},
                          {"num_classes", std::to_string(d.num_classes)}};
  out.summary.push_back("data: " + std::to_string(d.train_x.size(0)) + " training rows, " +
                        std::to_string(d.val_x.size(0)) + " validation rows, " + std::to_string(d.num_features) +
                        " features, " + std::to_string(d.num_classes) + " classes, normalize " + d.normalizer.kind);
  return out;
}

}  // namespace

DataFormatEntry csv_format() {
  return {"csv", "a CSV table (plain or gzip): numeric features and an integer class label per row",
          schema::options_schema<CsvOptions>(validate), load_csv};
}

}  // namespace distill::data
