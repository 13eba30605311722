// The training loop. One optimizer step = forward (teacher under NoGradGuard, student, loss) over
// grad_accum micro-batches, then update (clip, step, schedule); evaluation, checkpoints and log lines are
// "once in a while" blocks around it.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/safetensors.h"
#include "distill/loss/kd_loss.h"
#include "distill/train/checkpoint.h"
#include "distill/train/optim.h"
#include "distill/train/run_log.h"
#include "distill/train/trainer.h"

namespace distill {

namespace fs = std::filesystem;
using json = nlohmann::json;

c10::Device resolve_device(const std::string& name) {
  if (name == "cpu") return c10::Device(c10::kCPU);
  bool cuda_ok = torch::cuda::is_available();
  if (name == "auto") return cuda_ok ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!cuda_ok)
    throw Error("run.device: '" + name + "' asked for, but " +
                (torch::cuda::device_count() == 0 && !torch::hasCUDA() ? std::string("this build of LibTorch has no CUDA")
                                                                        : std::string("no CUDA device is visible")) +
                "; use \"cpu\" or \"auto\"");
  int64_t index = name == "cuda" ? 0 : std::stoll(name.substr(5));
  if (index >= static_cast<int64_t>(torch::cuda::device_count()))
    throw Error("run.device: '" + name + "' but only " + std::to_string(torch::cuda::device_count()) + " CUDA devices are visible");
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(index));
}

int64_t apply_threads(int64_t threads) {
  int64_t n = threads > 0 ? threads : std::max<int64_t>(1, std::thread::hardware_concurrency());
  at::set_num_threads(static_cast<int>(n));
  return n;
}

Workspace prepare_workspace(const Config& config, const std::optional<Normalizer>& normalizer) {
  Workspace ws;
  ws.device = resolve_device(config.run.device);
  ws.data = load_dataset(config.data, normalizer);
  ws.io = {ws.data.num_features, ws.data.num_classes};
  torch::manual_seed(static_cast<uint64_t>(config.run.seed));
  if (config.teacher) {
    std::optional<SafetensorsContents> weights;
    if (config.teacher->weights) weights = load_safetensors(*config.teacher->weights);
    ModelConfig teacher_config = *config.teacher;
    if (!teacher_config.path && !teacher_config.arch)
      teacher_config = arch_from_metadata(teacher_config, weights->metadata, *config.teacher->weights);
    ws.teacher = make_model(teacher_config, ws.io, "teacher");
    if (weights) {
      load_weights(*ws.teacher, *weights, *config.teacher->weights);
      // A teacher trained by distill sees its inputs as it was trained to: normalised by its stored statistics.
      if (auto it = weights->metadata.find("normalizer"); it != weights->metadata.end()) {
        json j = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
        Normalizer own = Normalizer::from_json(j, *config.teacher->weights);
        if (own.shift.size() != 0 && static_cast<int64_t>(own.shift.size()) != ws.io.features)
          throw Error(*config.teacher->weights + ": the teacher was trained on " + std::to_string(own.shift.size()) +
                      " features, the data has " + std::to_string(ws.io.features));
        ws.data.teacher_train_x = own.apply(ws.data.raw_train_x);
        ws.data.teacher_val_x = own.apply(ws.data.raw_val_x);
      }
    }
    ws.teacher->to(ws.device);
    ws.teacher->set_requires_grad(false);
    check_model_io(*ws.teacher, ws.io, "teacher", ws.device);
  }
  // Seed again so the student's initialisation does not depend on whether a teacher was built.
  torch::manual_seed(static_cast<uint64_t>(config.run.seed));
  const auto& init = config.student.init ? config.student.init : config.student.weights;
  std::optional<SafetensorsContents> init_weights;
  if (init) init_weights = load_safetensors(*init);
  ModelConfig student_config = config.student;
  if (!student_config.path && !student_config.arch)
    student_config = arch_from_metadata(student_config, init_weights->metadata, *init);
  ws.student = make_model(student_config, ws.io, "student");
  if (init_weights) load_weights(*ws.student, *init_weights, *init);
  ws.student->to(ws.device);
  ws.student->set_requires_grad(true);
  check_model_io(*ws.student, ws.io, "student", ws.device);
  return ws;
}

namespace {

struct StepResult {
  double loss = 0, kd = 0, ce = 0, grad_norm = 0;
  bool skipped = false;
};

class Trainer {
 public:
  Trainer(const Config& config, Workspace& ws, RunLog& log, const std::string& out_dir)
      : c_(config), ws_(ws), log_(log), out_dir_(out_dir) {
    n_train_ = ws.data.train_x.size(0);
    rows_per_step_ = c_.train.batch_size * c_.train.grad_accum;
    steps_per_epoch_ = (n_train_ + rows_per_step_ - 1) / rows_per_step_;
    total_steps_ = c_.train.epochs > 0 ? c_.train.epochs * steps_per_epoch_ : c_.train.max_steps;
    if (c_.train.max_steps > 0) total_steps_ = std::min(total_steps_, c_.train.max_steps);
    for (auto& [name, t] : ws_.student->state())
      if (t.requires_grad()) param_names_.push_back(name);
    params_ = ws_.student->parameters();
    optimizer_ = make_optimizer(c_.optim, params_);
    if (ws_.teacher)
      teacher_val_logits_ = predict_logits(*ws_.teacher, ws_.data.teacher_val_x, c_.train.eval_batch_size, ws_.device);
  }

  TrainSummary run() {
    auto start = std::chrono::steady_clock::now();
    log_.info("training " + ws_.student->describe() + " (" + std::to_string(ws_.student->parameter_count()) +
              " parameters) on " + std::to_string(n_train_) + " rows for " + std::to_string(total_steps_) + " steps (" +
              std::to_string(steps_per_epoch_) + " per epoch) on " + ws_.device.str());
    StepResult interval;
    int64_t interval_steps = 0;
    auto interval_start = std::chrono::steady_clock::now();
    for (int64_t epoch = 0; step_ < total_steps_; ++epoch) {
      at::Tensor order = epoch_order(epoch);
      for (int64_t begin = 0; begin < n_train_ && step_ < total_steps_; begin += rows_per_step_) {
        int64_t end = std::min(n_train_, begin + rows_per_step_);
        StepResult r = train_step(order.slice(0, begin, end));
        ++step_;
        bool epoch_end = end == n_train_;
        if (!r.skipped) {
          interval.loss += r.loss; interval.kd += r.kd; interval.ce += r.ce; interval.grad_norm += r.grad_norm;
          ++interval_steps;
        }
        // Once in a while: log, evaluate, checkpoint.
        double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - interval_start).count();
        double steps_per_s = seconds > 0 ? static_cast<double>(step_ - logged_step_) / seconds : 0;
        log_.progress(step_, total_steps_, r.loss, steps_per_s);
        if (step_ % c_.train.log_every == 0 || step_ == total_steps_) {
          log_train(epoch, interval, interval_steps, seconds);
          interval = {};
          interval_steps = 0;
          interval_start = std::chrono::steady_clock::now();
          logged_step_ = step_;
        }
        bool last = step_ == total_steps_;
        if (!last && (c_.train.eval_every > 0 ? step_ % c_.train.eval_every == 0 : epoch_end)) run_eval(epoch, "eval");
        if (c_.checkpoint.every > 0 ? step_ % c_.checkpoint.every == 0 || last : epoch_end || last)
          checkpoint(epoch, end);
      }
    }
    log_.end_progress();
    EvalResult final_eval = run_eval(-1, "final");
    TrainSummary s;
    s.out_dir = out_dir_;
    s.steps = step_;
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    s.final_eval = final_eval;
    s.student_path = save_student();
    json summary = final_eval.to_json();
    summary["steps"] = s.steps;
    summary["seconds"] = s.seconds;
    summary["bad_steps"] = bad_steps_;
    summary["student"] = s.student_path;
    write_file_atomic((fs::path(out_dir_) / "summary.json").string(), summary.dump(2) + "\n");
    return s;
  }

 private:
  at::Tensor epoch_order(int64_t epoch) const {
    if (!c_.data.shuffle) return torch::arange(n_train_, torch::kInt64);
    uint64_t seed = static_cast<uint64_t>(c_.run.seed) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(epoch) + 1;
    auto order = seeded_permutation(n_train_, seed);
    return torch::tensor(order, torch::kInt64);
  }

  // Forward: teacher (no grad), student, loss over one micro-batch; the loss is divided by the rows of the
  // whole optimizer step so that micro-batches add up to the step's mean.
  LossTerms forward(const at::Tensor& rows, double step_rows) {
    at::Tensor x = ws_.data.train_x.index_select(0, rows).to(ws_.device);
    at::Tensor y = ws_.data.train_y.index_select(0, rows).to(ws_.device);
    at::Tensor teacher_logits;
    if (ws_.teacher) {
      torch::NoGradGuard no_grad;
      const bool same_inputs = ws_.data.teacher_train_x.is_same(ws_.data.train_x);
      teacher_logits = ws_.teacher->forward(same_inputs ? x : ws_.data.teacher_train_x.index_select(0, rows).to(ws_.device));
    }
    at::Tensor student_logits = ws_.student->forward(x);
    return kd_loss_reference(student_logits, teacher_logits, y, c_.loss, step_rows);
  }

  StepResult train_step(const at::Tensor& step_rows) {
    ws_.student->set_training(true);
    optimizer_->zero_grad();
    const double n_rows = static_cast<double>(step_rows.size(0));
    at::Tensor loss = torch::zeros({}), kd = torch::zeros({}), ce = torch::zeros({});
    for (int64_t b = 0; b < step_rows.size(0); b += c_.train.batch_size) {
      LossTerms t = forward(step_rows.slice(0, b, std::min(step_rows.size(0), b + c_.train.batch_size)), n_rows);
      t.loss.backward();
      loss += t.loss.detach().cpu();
      kd += t.kd.cpu();
      ce += t.ce.cpu();
    }
    return update(loss.item<double>(), kd.item<double>(), ce.item<double>());
  }

  // Update: clip, check, learning rate, step.
  StepResult update(double loss, double kd, double ce) {
    StepResult r{loss, kd, ce, 0, false};
    if (c_.optim.grad_clip > 0) {
      r.grad_norm = torch::nn::utils::clip_grad_norm_(params_, c_.optim.grad_clip);
    } else {
      std::vector<at::Tensor> norms;
      for (const auto& p : params_)
        if (p.grad().defined()) norms.push_back(p.grad().detach().norm(2).cpu());
      r.grad_norm = norms.empty() ? 0.0 : torch::stack(norms).norm(2).item<double>();
    }
    if (!std::isfinite(loss) || !std::isfinite(r.grad_norm)) {
      r.skipped = true;
      ++bad_steps_;
      log_.warn("step " + std::to_string(step_ + 1) + ": non-finite loss or gradient norm; step skipped");
      log_.event({{"event", "bad_step"}, {"step", step_ + 1}, {"loss", std::isfinite(loss) ? json(loss) : json(nullptr)}});
      optimizer_->zero_grad();
      return r;
    }
    lr_ = learning_rate_at(c_.optim, step_, total_steps_);
    set_learning_rate(*optimizer_, lr_);
    optimizer_->step();
    return r;
  }

  void log_train(int64_t epoch, const StepResult& sum, int64_t n, double seconds) {
    if (n == 0) return;
    double k = 1.0 / static_cast<double>(n);
    double rows_per_s = seconds > 0 ? static_cast<double>((step_ - logged_step_) * rows_per_step_) / seconds : 0;
    json e = {{"event", "train"}, {"step", step_}, {"epoch", epoch + 1}, {"loss", sum.loss * k}, {"ce", sum.ce * k},
              {"lr", lr_},        {"grad_norm", sum.grad_norm * k},   {"rows_per_s", rows_per_s}};
    if (ws_.teacher) e["kd"] = sum.kd * k;
    log_.event(e);
    char line[256];
    std::snprintf(line, sizeof line, "step %lld/%lld  epoch %lld  loss %.4f%s  lr %.3g  |g| %.3g  %.0f rows/s",
                  static_cast<long long>(step_), static_cast<long long>(total_steps_), static_cast<long long>(epoch + 1),
                  sum.loss * k,
                  ws_.teacher ? (" (kd " + std::to_string(sum.kd * k).substr(0, 6) + " ce " + std::to_string(sum.ce * k).substr(0, 6) + ")").c_str() : "",
                  lr_, sum.grad_norm * k, rows_per_s);
    log_.info(line);
  }

  EvalResult run_eval(int64_t epoch, const char* kind) {
    at::Tensor student_logits = predict_logits(*ws_.student, ws_.data.val_x, c_.train.eval_batch_size, ws_.device);
    EvalResult r = evaluate_logits(student_logits, teacher_val_logits_, ws_.data.val_y, c_.loss);
    json e = r.to_json();
    e["event"] = kind;
    e["step"] = step_;
    log_.event(e);
    char line[256];
    if (r.has_teacher)
      std::snprintf(line, sizeof line, "%s @ step %lld: val accuracy %.2f%% (teacher %.2f%%, agreement %.2f%%), val kd %.4f, val ce %.4f",
                    kind, static_cast<long long>(step_), 100 * r.student_accuracy, 100 * r.teacher_accuracy,
                    100 * r.agreement, r.kd_loss, r.ce_loss);
    else
      std::snprintf(line, sizeof line, "%s @ step %lld: val accuracy %.2f%%, val ce %.4f", kind,
                    static_cast<long long>(step_), 100 * r.student_accuracy, r.ce_loss);
    log_.info(line);
    return r;
  }

  Metadata student_metadata() const {
    return {{"format", "pt"},
            {"distill_version", DISTILL_VERSION},
            {"arch", ws_.student->arch_json().dump()},
            {"normalizer", ws_.data.normalizer.to_json().dump()},
            {"num_features", std::to_string(ws_.io.features)},
            {"num_classes", std::to_string(ws_.io.classes)}};
  }

  void checkpoint(int64_t epoch, int64_t next_row) {
    NamedTensors tensors;
    for (auto& [name, t] : ws_.student->state()) tensors.emplace_back("model." + name, t);
    for (auto& [name, t] : optimizer_state(*optimizer_, c_.optim.name, param_names_)) tensors.emplace_back("optim." + name, t);
    tensors.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    Metadata meta = student_metadata();
    meta["distill_checkpoint"] = "1";
    meta["state"] = json{{"step", step_}, {"epoch", epoch}, {"next_row", next_row}, {"total_steps", total_steps_},
                         {"bad_steps", bad_steps_}, {"lr", lr_}}
                        .dump();
    meta["config"] = to_json(c_).dump();
    std::string path = save_checkpoint((fs::path(out_dir_) / "checkpoints").string(), step_, tensors, meta,
                                       c_.checkpoint.keep_last);
    log_.event({{"event", "checkpoint"}, {"step", step_}, {"path", path}});
  }

  std::string save_student() {
    const std::string path = (fs::path(out_dir_) / "student.safetensors").string();
    save_safetensors(path, ws_.student->state(), student_metadata());
    if (ws_.student->is_torchscript()) ws_.student->save_torchscript((fs::path(out_dir_) / "student.pt").string());
    log_.info("student saved to " + path);
    return path;
  }

  const Config& c_;
  Workspace& ws_;
  RunLog& log_;
  std::string out_dir_;
  int64_t n_train_ = 0, rows_per_step_ = 0, steps_per_epoch_ = 0, total_steps_ = 0;
  int64_t step_ = 0, logged_step_ = 0, bad_steps_ = 0;
  double lr_ = 0;
  std::vector<std::string> param_names_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  at::Tensor teacher_val_logits_;
};

// Creates out_dir (refusing to replace an earlier run unless asked) and checks that it is writable.
void prepare_out_dir(const std::string& out_dir, ExistingRun existing) {
  std::error_code ec;
  fs::path dir(out_dir);
  if (fs::exists(dir / "config.json", ec) && existing == ExistingRun::refuse)
    throw Error("run.out_dir: " + out_dir + " already holds a run (config.json); pass --overwrite to replace it, "
                "or choose another folder with --out");
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw Error("run.out_dir: " + out_dir + " exists and is not a folder; choose another --out");
  fs::create_directories(dir, ec);
  if (ec) throw Error("run.out_dir: cannot create " + out_dir + " (" + ec.message() + "); choose a writable folder with --out");
  const std::string probe = (dir / ".write-test").string();
  try {
    write_file_atomic(probe, "ok\n");
  } catch (const Error&) {
    throw Error("run.out_dir: " + out_dir + " is not writable; choose a writable folder with --out");
  }
  fs::remove(probe, ec);
  if (existing == ExistingRun::overwrite) {
    for (const char* name : {"summary.json", "student.safetensors", "student.pt", "metrics.jsonl", "train.log"})
      fs::remove(dir / name, ec);
    fs::remove_all(dir / "checkpoints", ec);
  }
}

}  // namespace

TrainSummary train(const Config& config, const TrainOptions& options) {
  apply_threads(config.run.threads);
  Workspace ws = prepare_workspace(config);
  if (config.train.batch_size > ws.data.train_x.size(0))
    throw Error("train.batch_size: " + std::to_string(config.train.batch_size) + " is larger than the " +
                std::to_string(ws.data.train_x.size(0)) + " training rows; lower it or add data");
  prepare_out_dir(config.run.out_dir, options.existing);
  write_file_atomic((fs::path(config.run.out_dir) / "config.json").string(), to_json(config).dump(2) + "\n");
  RunLog log(config.run.out_dir);
  log.info(std::string("distill ") + DISTILL_VERSION + ", " + std::to_string(at::get_num_threads()) + " threads, out_dir " +
           config.run.out_dir);
  if (ws.teacher)
    log.info("teacher: " + ws.teacher->describe() + " (" + std::to_string(ws.teacher->parameter_count()) + " parameters)");
  else
    log.info("no teacher: supervised training with cross-entropy");
  Trainer trainer(config, ws, log, config.run.out_dir);
  return trainer.run();
}

EvalResult evaluate_weights(const Config& config_in, const std::string& weights_path) {
  apply_threads(config_in.run.threads);
  SafetensorsContents weights = load_safetensors(weights_path);
  std::optional<Normalizer> normalizer;
  Config config = config_in;
  if (auto it = weights.metadata.find("normalizer"); it != weights.metadata.end()) {
    json j = json::parse(it->second, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw Error(weights_path + ": metadata 'normalizer' is not valid JSON");
    normalizer = Normalizer::from_json(j, weights_path);
  }
  if (auto it = weights.metadata.find("num_classes"); it != weights.metadata.end() && !config.data.num_classes) {
    try {
      config.data.num_classes = std::stoll(it->second);
    } catch (const std::exception&) {
      throw Error(weights_path + ": metadata 'num_classes' is not an integer");
    }
  }
  if (!config.student.path && !config.student.arch)
    config.student = arch_from_metadata(config.student, weights.metadata, weights_path);
  config.student.init.reset();
  config.student.weights.reset();
  Workspace ws = prepare_workspace(config, normalizer);
  load_weights(*ws.student, weights, weights_path);
  at::Tensor student_logits = predict_logits(*ws.student, ws.data.val_x, config.train.eval_batch_size, ws.device);
  at::Tensor teacher_logits;
  if (ws.teacher) teacher_logits = predict_logits(*ws.teacher, ws.data.teacher_val_x, config.train.eval_batch_size, ws.device);
  return evaluate_logits(student_logits, teacher_logits, ws.data.val_y, config.loss);
}

std::vector<std::string> validate_run(const Config& config) {
  Workspace ws = prepare_workspace(config);
  std::vector<std::string> lines;
  int64_t n_train = ws.data.train_x.size(0);
  if (config.train.batch_size > n_train)
    throw Error("train.batch_size: " + std::to_string(config.train.batch_size) + " is larger than the " +
                std::to_string(n_train) + " training rows; lower it or add data");
  std::error_code ec;
  if (fs::exists(fs::path(config.run.out_dir) / "config.json", ec))
    lines.push_back("note: run.out_dir " + config.run.out_dir + " already holds a run; `train` will need --overwrite");
  lines.push_back("data: " + std::to_string(n_train) + " training rows, " + std::to_string(ws.data.val_x.size(0)) +
                  " validation rows, " + std::to_string(ws.io.features) + " features, " + std::to_string(ws.io.classes) +
                  " classes, normalize " + ws.data.normalizer.kind);
  if (ws.teacher)
    lines.push_back("teacher: " + ws.teacher->describe() + ", " + std::to_string(ws.teacher->parameter_count()) + " parameters");
  else
    lines.push_back("teacher: none (supervised cross-entropy)");
  lines.push_back("student: " + ws.student->describe() + ", " + std::to_string(ws.student->parameter_count()) + " parameters");
  lines.push_back("device: " + ws.device.str());
  return lines;
}

}  // namespace distill
