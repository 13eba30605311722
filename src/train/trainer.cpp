// The training loop. One optimizer step = forward (teacher under NoGradGuard, student, loss) over
// grad_accum micro-batches, then update (clip, step, schedule); evaluation, checkpoints and log lines are
// "once in a while" blocks around it.
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "distill/io/safetensors.h"
#include "distill/loss/kd_loss.h"
#include "distill/train/checkpoint.h"
#include "distill/train/optim.h"
#include "distill/train/preemption.h"
#include "distill/train/resume.h"
#include "distill/train/run_log.h"
#include "distill/train/trainer.h"

namespace distill {

using json = nlohmann::json;

c10::Device resolve_device(const std::string& name, const std::string& key) {
  if (!is_device_name(name)) throw Error(key + ": '" + name + "' is not one of auto | cpu | cuda | cuda:N");
  if (name == "cpu") return c10::Device(c10::kCPU);
  bool cuda_ok = torch::cuda::is_available();
  if (name == "auto") return cuda_ok ? c10::Device(c10::kCUDA, 0) : c10::Device(c10::kCPU);
  if (!cuda_ok)
    throw Error(key + ": '" + name + "' asked for, but " +
                (torch::cuda::device_count() == 0 && !torch::hasCUDA() ? std::string("this build of LibTorch has no CUDA")
                                                                        : std::string("no CUDA device is visible")) +
                "; use \"cpu\" or \"auto\"");
  int64_t index = name == "cuda" ? 0 : std::stoll(name.substr(5));
  if (index >= static_cast<int64_t>(torch::cuda::device_count()))
    throw Error(key + ": '" + name + "' but only " + std::to_string(torch::cuda::device_count()) + " CUDA devices are visible");
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
  if (config.loss.topk > ws.io.classes)
    throw Error("loss.topk: " + std::to_string(config.loss.topk) + " is more than the " + std::to_string(ws.io.classes) +
                " classes of the data (the student's outputs); use at most " + std::to_string(ws.io.classes) +
                ", or 0 for the whole teacher row");
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
    check_model_io(*ws.teacher, ws.io, "teacher", ws.device, /*allow_wider=*/config.loss.vocab == "truncate");
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

// Where a resumed run picks up: the checkpoint's tensors and its training state.
struct ResumePoint {
  std::string path;
  SafetensorsContents contents;
  int64_t step = 0, epoch = 0, next_row = 0, bad_steps = 0;
  std::vector<std::string> harmless_changes;
};

// Tensors of `c` under `prefix`, with the prefix removed.
SafetensorsContents with_prefix(const SafetensorsContents& c, const std::string& prefix) {
  SafetensorsContents out;
  for (const auto& [name, t] : c.tensors)
    if (name.rfind(prefix, 0) == 0) out.tensors.emplace_back(name.substr(prefix.size()), t);
  return out;
}

int64_t env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoll(v) : 0;
}

class Trainer {
 public:
  Trainer(const Config& config, Workspace& ws, RunLog& log, const std::string& out_dir, ResumePoint* resume)
      : c_(config), ws_(ws), log_(log), out_dir_(out_dir) {
    n_train_ = ws.data.train_x.size(0);
    rows_per_step_ = c_.train.batch_size * c_.train.grad_accum;
    steps_per_epoch_ = (n_train_ + rows_per_step_ - 1) / rows_per_step_;
    total_steps_ = total_steps(c_, n_train_);
    for (auto& [name, t] : ws_.student->state())
      if (t.requires_grad()) param_names_.push_back(name);
    params_ = ws_.student->parameters();
    optimizer_ = make_optimizer(c_.optim, params_);
    loss_options_ = KdLossOptions::from_config(c_.loss);
    if (resume) restore(*resume);
    if (ws_.teacher)
      teacher_val_logits_ = predict_logits(*ws_.teacher, ws_.data.teacher_val_x, c_.train.eval_batch_size, ws_.device);
    stop_after_step_ = env_int("DISTILL_TEST_STOP_AFTER_STEP");
  }

  static int64_t total_steps(const Config& c, int64_t n_train) {
    int64_t per_epoch = (n_train + c.train.batch_size * c.train.grad_accum - 1) / (c.train.batch_size * c.train.grad_accum);
    int64_t total = c.train.epochs > 0 ? c.train.epochs * per_epoch : c.train.max_steps;
    return c.train.max_steps > 0 ? std::min(total, c.train.max_steps) : total;
  }

  TrainSummary run() {
    auto start = std::chrono::steady_clock::now();
    TrainSummary s;
    s.out_dir = out_dir_;
    s.resumed_from_step = resumed_from_step_;
    log_.info("training " + ws_.student->describe() + " (" + std::to_string(ws_.student->parameter_count()) +
              " parameters) on " + std::to_string(n_train_) + " rows, steps " + std::to_string(step_ + 1) + ".." +
              std::to_string(total_steps_) + " (" + std::to_string(steps_per_epoch_) + " per epoch) on " + ws_.device.str());
    StepResult interval;
    int64_t interval_steps = 0;
    auto interval_start = std::chrono::steady_clock::now();
    for (int64_t epoch = epoch_; step_ < total_steps_; ++epoch) {
      at::Tensor order = epoch_order(epoch);
      int64_t first_row = epoch == epoch_ ? next_row_ : 0;
      for (int64_t begin = first_row; begin < n_train_ && step_ < total_steps_; begin += rows_per_step_) {
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
        if (!last && (c_.train.eval_every > 0 ? step_ % c_.train.eval_every == 0 : epoch_end)) run_eval("eval");
        bool checkpointed = false;
        if (c_.checkpoint.every > 0 ? step_ % c_.checkpoint.every == 0 || last : epoch_end || last) {
          s.checkpoint_path = checkpoint(epoch, end);
          checkpointed = true;
        }
        // A stop signal: the step is done; save it and hand back.
        if (step_ == stop_after_step_) PreemptionGuard::request(SIGUSR1);
        if (int signal = PreemptionGuard::requested(); signal != 0 && !last) {
          if (!checkpointed) s.checkpoint_path = checkpoint(epoch, end);
          log_.end_progress();
          log_.warn(std::string("stopped by ") + signal_name(signal) + " after step " + std::to_string(step_) +
                    "; checkpoint " + s.checkpoint_path + "; continue with: distill train --config ... --resume auto");
          log_.event({{"event", "preempted"}, {"step", step_}, {"signal", signal_name(signal)}});
          s.end = RunEnd::preempted;
          s.stop_signal = signal;
          s.steps = step_;
          s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
          return s;
        }
      }
    }
    log_.end_progress();
    s.final_eval = run_eval("final");
    s.steps = step_;
    s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    s.student_path = save_student();
    json summary = s.final_eval.to_json();
    summary["steps"] = s.steps;
    summary["seconds"] = s.seconds;
    summary["bad_steps"] = bad_steps_;
    summary["student"] = s.student_path;
    // Written last: its presence marks a finished run.
    write_file_atomic(paths::join(out_dir_, "summary.json"), summary.dump(2) + "\n");
    return s;
  }

  int64_t step() const { return step_; }
  int64_t total() const { return total_steps_; }
  EvalResult evaluate_now() { return run_eval("final", /*record=*/false); }

 private:
  void restore(ResumePoint& r) {
    load_weights(*ws_.student, with_prefix(r.contents, "model."), r.path);
    load_optimizer_state(*optimizer_, c_.optim.name, param_names_, r.contents, "optim.", r.path);
    const at::Tensor* cpu_rng = r.contents.find("rng.cpu");
    if (!cpu_rng) throw Error(r.path + ": has no rng.cpu state; it is not a complete distill checkpoint");
    at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();  // a handle: shares the global state
    cpu_gen.set_state(*cpu_rng);
    if (ws_.device.is_cuda()) {
      if (const at::Tensor* cuda_rng = r.contents.find("rng.cuda")) {
        at::Generator cuda_gen = at::globalContext().defaultGenerator(ws_.device);
        cuda_gen.set_state(*cuda_rng);
      }
    }
    step_ = logged_step_ = resumed_from_step_ = r.step;
    epoch_ = r.epoch;
    next_row_ = r.next_row;
    bad_steps_ = r.bad_steps;
    lr_ = learning_rate_at(c_.optim, std::max<int64_t>(0, step_ - 1), total_steps_);
  }

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
    if (teacher_logits.defined() && c_.loss.topk > 0) {
      const SparseTeacher sparse = sparse_teacher_topk(teacher_logits, c_.loss.topk, student_logits.size(1), loss_options_);
      return kd_loss_sparse(student_logits, sparse, y, loss_options_, step_rows);
    }
    return kd_loss(student_logits, teacher_logits, y, loss_options_, step_rows);
  }

  StepResult train_step(const at::Tensor& step_rows) {
    ws_.student->set_training(true);
    optimizer_->zero_grad();
    const double n_rows = static_cast<double>(step_rows.size(0));
    // The terms add up where they are computed: one device-to-host copy per step, not per micro-batch.
    at::Tensor terms = torch::zeros({3}, torch::TensorOptions().device(ws_.device));
    for (int64_t b = 0; b < step_rows.size(0); b += c_.train.batch_size) {
      LossTerms t = forward(step_rows.slice(0, b, std::min(step_rows.size(0), b + c_.train.batch_size)), n_rows);
      t.loss.backward();
      terms += torch::stack({t.loss.detach(), t.kd, t.ce});  // float32 scalars
    }
    const at::Tensor host = terms.to(torch::kCPU, torch::kDouble);
    const double* v = host.data_ptr<double>();
    return update(v[0], v[1], v[2]);
  }

  // Update: clip, check, learning rate, step. A non-finite loss or gradient norm skips the step.
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
      ++consecutive_bad_;
      log_.warn("step " + std::to_string(step_ + 1) + ": non-finite " + (std::isfinite(loss) ? "gradient norm" : "loss") +
                "; step skipped (" + std::to_string(consecutive_bad_) + " in a row, limit train.max_bad_steps = " +
                std::to_string(c_.train.max_bad_steps) + ")");
      log_.event({{"event", "bad_step"}, {"step", step_ + 1}, {"bad_steps", bad_steps_},
                  {"loss", std::isfinite(loss) ? json(loss) : json(nullptr)}});
      optimizer_->zero_grad();
      if (consecutive_bad_ >= c_.train.max_bad_steps) {
        auto last_good = latest_checkpoint(paths::join(out_dir_, "checkpoints"));
        throw Error("train.max_bad_steps: " + std::to_string(consecutive_bad_) +
                    " consecutive steps had a non-finite loss or gradient (up to step " + std::to_string(step_ + 1) +
                    "); the run stopped" + (last_good ? "; its last good checkpoint is " + *last_good : std::string()) +
                    ". Lower optim.lr, set optim.grad_clip, or check the data for extreme values");
      }
      return r;
    }
    consecutive_bad_ = 0;
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
    char terms[96] = "";
    if (ws_.teacher) std::snprintf(terms, sizeof terms, " (kd %.4f ce %.4f)", sum.kd * k, sum.ce * k);
    char line[256];
    std::snprintf(line, sizeof line, "step %lld/%lld  epoch %lld  loss %.4f%s  lr %.3g  |g| %.3g  %.0f rows/s",
                  static_cast<long long>(step_), static_cast<long long>(total_steps_), static_cast<long long>(epoch + 1),
                  sum.loss * k, terms, lr_, sum.grad_norm * k, rows_per_s);
    log_.info(line);
  }

  EvalResult run_eval(const char* kind, bool record = true) {
    at::Tensor student_logits = predict_logits(*ws_.student, ws_.data.val_x, c_.train.eval_batch_size, ws_.device);
    EvalResult r = evaluate_logits(student_logits, teacher_val_logits_, ws_.data.val_y, c_.loss);
    if (!record) return r;
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

  // Everything a bit-exact resume needs: weights, optimizer state, RNG states, and where in the data order
  // the next step starts (epoch, next_row); the learning rate follows from the step.
  std::string checkpoint(int64_t epoch, int64_t next_row) {
    NamedTensors tensors;
    for (auto& [name, t] : ws_.student->state()) tensors.emplace_back("model." + name, t);
    for (auto& [name, t] : optimizer_state(*optimizer_, c_.optim.name, param_names_)) tensors.emplace_back("optim." + name, t);
    tensors.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    if (ws_.device.is_cuda()) tensors.emplace_back("rng.cuda", at::globalContext().defaultGenerator(ws_.device).get_state());
    Metadata meta = student_metadata();
    meta["distill_checkpoint"] = "1";
    meta["state"] = json{{"step", step_}, {"epoch", epoch}, {"next_row", next_row}, {"total_steps", total_steps_},
                         {"bad_steps", bad_steps_}}
                        .dump();
    meta["config"] = to_json(c_).dump();
    std::string path = save_checkpoint(paths::join(out_dir_, "checkpoints"), step_, tensors, meta,
                                       c_.checkpoint.keep_last);
    log_.event({{"event", "checkpoint"}, {"step", step_}, {"path", path}});
    return path;
  }

  std::string save_student() {
    const std::string path = paths::join(out_dir_, "student.safetensors");
    save_safetensors(path, ws_.student->state(), student_metadata());
    if (ws_.student->is_torchscript()) ws_.student->save_torchscript(paths::join(out_dir_, "student.pt"));
    log_.info("student saved to " + path);
    return path;
  }

  const Config& c_;
  Workspace& ws_;
  RunLog& log_;
  std::string out_dir_;
  int64_t n_train_ = 0, rows_per_step_ = 0, steps_per_epoch_ = 0, total_steps_ = 0;
  int64_t step_ = 0, epoch_ = 0, next_row_ = 0, logged_step_ = 0, resumed_from_step_ = -1;
  int64_t bad_steps_ = 0, consecutive_bad_ = 0, stop_after_step_ = 0;
  double lr_ = 0;
  std::vector<std::string> param_names_;
  std::vector<at::Tensor> params_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  KdLossOptions loss_options_;
  at::Tensor teacher_val_logits_;
};

bool holds_run(const std::string& out_dir) {
  return paths::exists(paths::join(out_dir, "config.json"));
}

// Creates out_dir (refusing to replace an earlier run unless asked) and checks that it is writable. A resumed
// run keeps what is there.
void prepare_out_dir(const std::string& out_dir, ExistingRun existing, bool resuming) {
  if (holds_run(out_dir) && existing == ExistingRun::refuse && !resuming)
    throw Error("run.out_dir: " + out_dir + " already holds a run (config.json); continue it with --resume auto, "
                "replace it with --overwrite, or choose another folder with --out");
  if (paths::exists(out_dir) && !paths::is_directory(out_dir))
    throw Error("run.out_dir: " + out_dir + " exists and is not a folder; choose another --out");
  std::string why;
  if (!paths::create_directories(out_dir, &why))
    throw Error("run.out_dir: cannot create " + out_dir + " (" + why + "); choose a writable folder with --out");
  const std::string probe = paths::join(out_dir, ".write-test");
  try {
    write_file_atomic(probe, "ok\n");
  } catch (const Error&) {
    throw Error("run.out_dir: " + out_dir + " is not writable; choose a writable folder with --out");
  }
  paths::remove_file(probe);
  if (resuming) {
    paths::remove_file(paths::join(out_dir, "summary.json"));  // the run is unfinished again until it ends
    // Temporaries of writers killed mid-write ("name.tmp.<pid>") are garbage now.
    for (const std::string& folder : {out_dir, paths::join(out_dir, "checkpoints")})
      for (const std::string& name : paths::list_dir(folder))
        if (name.find(".tmp.") != std::string::npos) paths::remove_file(paths::join(folder, name));
  } else if (existing == ExistingRun::overwrite) {
    for (const char* name : {"summary.json", "student.safetensors", "student.pt", "metrics.jsonl", "train.log"})
      paths::remove_file(paths::join(out_dir, name));
    paths::remove_tree(paths::join(out_dir, "checkpoints"));
  }
}

// Finds and checks the checkpoint --resume names. nullopt: "auto" on a run that never wrote one (it starts
// over: nothing is lost).
std::optional<ResumePoint> find_resume(const Config& config, const std::string& how) {
  const std::string& out_dir = config.run.out_dir;
  std::optional<std::string> path;
  if (how == "auto") {
    path = latest_checkpoint(paths::join(out_dir, "checkpoints"));
    if (!path) {
      if (holds_run(out_dir)) return std::nullopt;
      throw Error("--resume auto: " + out_dir + " holds no run to resume (no checkpoints/, no config.json); "
                  "start it without --resume, or point --out at the run's folder");
    }
  } else if (paths::is_directory(how)) {
    path = latest_checkpoint(paths::join(how, "checkpoints"));
    if (!path) path = latest_checkpoint(how);
    if (!path) throw Error("--resume " + how + ": no checkpoint (step-N.safetensors) in this folder or its checkpoints/");
  } else if (paths::exists(how)) {
    path = how;
  } else {
    throw Error("--resume " + how + ": no such file or folder; give a checkpoint, a run folder, or auto");
  }
  ResumePoint r;
  r.path = *path;
  r.contents = load_safetensors(*path);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = r.contents.metadata.find(key);
    if (it == r.contents.metadata.end())
      throw Error(*path + ": not a distill checkpoint (no '" + std::string(key) + "' metadata); resume from a "
                  "checkpoints/step-N.safetensors file");
    return it->second;
  };
  meta("distill_checkpoint");
  json state = json::parse(meta("state"), nullptr, false);
  json before = json::parse(meta("config"), nullptr, false);
  if (state.is_discarded() || before.is_discarded() || !state.is_object())
    throw Error(*path + ": the checkpoint's state metadata is corrupt; resume from an older checkpoint");
  try {
    r.step = state.at("step").get<int64_t>();
    r.epoch = state.at("epoch").get<int64_t>();
    r.next_row = state.at("next_row").get<int64_t>();
    r.bad_steps = state.value("bad_steps", int64_t{0});
  } catch (const json::exception&) {
    throw Error(*path + ": the checkpoint's state metadata is incomplete; resume from an older checkpoint");
  }
  ConfigChanges changes = compare_configs(before, to_json(config));
  if (!changes.incompatible.empty()) {
    std::string list;
    for (const auto& c : changes.incompatible) list += (list.empty() ? "" : "; ") + c;
    throw Error("--resume: the config differs from the one " + *path + " was trained with in ways a resumed run "
                "cannot absorb: " + list + ". Restore those keys, or start a new run in another --out");
  }
  r.harmless_changes = changes.harmless;
  return r;
}

}  // namespace

TrainSummary train(const Config& config, const TrainOptions& options) {
  apply_threads(config.run.threads);
  kd_loss_cpu_isa();  // a bad DISTILL_CPU_ISA is reported before anything is written
  Workspace ws = prepare_workspace(config);
  if (config.train.batch_size > ws.data.train_x.size(0))
    throw Error("train.batch_size: " + std::to_string(config.train.batch_size) + " is larger than the " +
                std::to_string(ws.data.train_x.size(0)) + " training rows; lower it or add data");
  const std::string& out_dir = config.run.out_dir;
  std::optional<ResumePoint> resume;
  if (!options.resume.empty()) {
    if (options.existing == ExistingRun::overwrite) throw Error("--resume and --overwrite contradict each other; choose one");
    resume = find_resume(config, options.resume);
    bool summarised = paths::exists(paths::join(out_dir, "summary.json"));
    if (resume && summarised && resume->step >= Trainer::total_steps(config, ws.data.train_x.size(0))) {
      // Nothing left to train: report the checkpoint's accuracy and touch no file.
      RunLog console("");
      Trainer trainer(config, ws, console, out_dir, &*resume);
      console.info("the run already finished at step " + std::to_string(trainer.step()) + "; nothing to do (raise "
                   "train.epochs or train.max_steps to train further)");
      TrainSummary s;
      s.end = RunEnd::already_finished;
      s.out_dir = out_dir;
      s.steps = s.resumed_from_step = trainer.step();
      s.final_eval = trainer.evaluate_now();
      s.student_path = paths::join(out_dir, "student.safetensors");
      return s;
    }
  }
  prepare_out_dir(out_dir, options.existing, /*resuming=*/!options.resume.empty());
  if (!options.resume.empty()) trim_metrics(paths::join(out_dir, "metrics.jsonl"), resume ? resume->step : 0);
  write_file_atomic(paths::join(out_dir, "config.json"), to_json(config).dump(2) + "\n");
  RunLog log(out_dir, /*append=*/!options.resume.empty());
  log.info(std::string("distill ") + DISTILL_VERSION + ", " + std::to_string(at::get_num_threads()) + " threads, CPU loss " +
           kernels::kd_loss_cpu_isa_name(kd_loss_cpu_isa()) + ", out_dir " + out_dir);
  if (resume) {
    log.info("resuming from " + resume->path + " (step " + std::to_string(resume->step) + ")");
    for (const auto& c : resume->harmless_changes) log.info("config change accepted on resume: " + c);
    log.event({{"event", "resume"}, {"step", resume->step}, {"checkpoint", resume->path}, {"changes", resume->harmless_changes}});
  } else if (!options.resume.empty()) {
    log.info("no checkpoint in " + out_dir + " yet: starting from step 0");
  }
  if (ws.teacher)
    log.info("teacher: " + ws.teacher->describe() + " (" + std::to_string(ws.teacher->parameter_count()) + " parameters)");
  else
    log.info("no teacher: supervised training with cross-entropy");
  Trainer trainer(config, ws, log, out_dir, resume ? &*resume : nullptr);
  PreemptionGuard preemption;
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
  if (paths::exists(paths::join(config.run.out_dir, "config.json")))
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
