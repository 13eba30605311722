// The training job behind `distill train`, and the shared set-up that `eval` and `validate` use.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <c10/core/Device.h>

#include "distill/config/config.h"
#include "distill/data/batch.h"
#include "distill/models/model.h"
#include "distill/train/evaluate.h"

namespace distill {

class TeacherCache;

// Everything a run needs before its first step, every input checked.
struct Workspace {
  c10::Device device = c10::Device(c10::kCPU);
  DataSources data;
  std::unique_ptr<Model> teacher;  // null: supervised
  std::unique_ptr<Model> student;
  int64_t student_outputs = 0;               // the student's output width (its vocabulary or classes)
  std::shared_ptr<const TeacherCache> cache;  // teacher.cache: the sparse teacher comes from here, no teacher runs
};

// "auto" -> cuda when a CUDA device is usable, else cpu; errors name `key` (the config key or the option the
// name came from).
c10::Device resolve_device(const std::string& name, const std::string& key = "run.device");
// at::set_num_threads(threads, or one per core when 0); returns the count applied.
int64_t apply_threads(int64_t threads);

// Opens the data (through the data format registry) and builds the models, loads teacher weights and the
// student's init, checks output sizes. `student_metadata` (eval: stored with the trained student) gives the
// data transform instead of fitting one. Seeds ATen first.
Workspace prepare_workspace(const Config& config, const Metadata* student_metadata = nullptr);

enum class ExistingRun { refuse, overwrite };

struct TrainOptions {
  ExistingRun existing = ExistingRun::refuse;
  // "auto" (the newest complete checkpoint in run.out_dir), a checkpoint file, or a folder holding
  // checkpoints; empty: a new run.
  std::string resume;
};

enum class RunEnd {
  finished,          // trained to the last step; student and summary written
  already_finished,  // --resume on a run that had nothing left to do; nothing written
  preempted,         // a stop signal: the step finished, a checkpoint was written
};

struct TrainSummary {
  RunEnd end = RunEnd::finished;
  std::string out_dir;
  int64_t steps = 0;
  int64_t resumed_from_step = -1;  // -1: a fresh run
  double seconds = 0;
  EvalResult final_eval;
  std::string student_path;
  std::string checkpoint_path;  // the newest checkpoint written
  int stop_signal = 0;
  int64_t rank = 0;  // a data-parallel run: this process's rank (only rank 0 writes files and reports)
};

TrainSummary train(const Config& config, const TrainOptions& options = {});

// `distill eval`: the student described by `config`, with `weights_path`, on the config's validation split
// (normalised as stored in the weights' metadata).
EvalResult evaluate_weights(const Config& config, const std::string& weights_path);

// `distill validate`: everything that can be checked without training; returns a human summary.
std::vector<std::string> validate_run(const Config& config);

}  // namespace distill
