// The training loop. One optimizer step = forward (teacher under NoGradGuard, student, loss) over
// grad_accum micro-batches, then update (clip, step, schedule); evaluation, checkpoints and log lines are
// "once in a while" blocks around it.
#include <torch/torch.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <csignal>
#include <cstdlib>
#include <cmath>
#include <thread>

#include <signal.h>

#include <ATen/CPUGeneratorImpl.h>
#include <nlohmann/json.hpp>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/io/safetensors.h"
#include "distill/cache/teacher_cache.h"
#include "distill/config/dtype_names.h"
#include "distill/data/registry.h"
#include "distill/dist/comm.h"
#include "distill/dist/launch.h"
#include "distill/models/hf_folder.h"
#include "distill/models/registry.h"
#include "distill/loss/kd_loss.h"
#include "distill/loss/output_loss.h"
#include "distill/train/checkpoint.h"
#include "distill/train/optim.h"
#include "distill/train/preemption.h"
#include "distill/train/resume.h"
#include "distill/train/run_log.h"
#include "distill/train/trainer.h"
#include "train/autocast.h"

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

namespace {

// What `init` (student.init / student.weights) holds: safetensors written by distill, or a Hugging Face folder.
struct InitWeights {
  SafetensorsContents contents;
  bool hf = false;
};

InitWeights read_init(const std::string& path) {
  if (is_hf_folder(path)) return {map_hf_weights(path, "student.init"), true};
  return {load_safetensors(path), false};
}

// Token data knows the tokenizer it was made with (a pack manifest's hash); a model folder that ships a
// tokenizer must hold that very file, or the ids mean other words to it.
void check_tokenizer(const DataSources& data, const std::optional<std::string>& folder, const std::string& key) {
  if (!data.tokenizer_sha256 || !folder || !is_hf_folder(*folder)) return;
  std::string seen;
  for (const std::string& file : hf_tokenizer_files(*folder)) {
    const std::string name = paths::filename(file);
    if (name != "tokenizer.json" && name != "tokenizer.model") continue;
    const std::string sha = sha256_file(file);
    if (sha == *data.tokenizer_sha256) return;
    seen += (seen.empty() ? "" : ", ") + name + " (sha256 " + sha.substr(0, 12) + "...)";
  }
  if (seen.empty()) return;  // the folder has no tokenizer to compare with
  throw Error(key + ": " + *folder + " has " + seen + ", but the data was tokenised with " +
              (data.tokenizer_path.empty() ? std::string("another tokenizer") : data.tokenizer_path) + " (sha256 " +
              data.tokenizer_sha256->substr(0, 12) + "...); its ids would mean other tokens to this model. Pack the "
              "data with the model's tokenizer: distill data pack --tokenizer " + *folder + " ...");
}

}  // namespace

Workspace prepare_workspace(const Config& config, const Metadata* student_metadata) {
  Workspace ws;
  ws.device = resolve_device(config.run.device);
  ws.data = data_format_named(config.data.format, "data.format").load(config, student_metadata);
  const IoShape& io = ws.data.io;
  if (config.teacher) check_tokenizer(ws.data, config.teacher->path, "teacher.path");
  check_tokenizer(ws.data, config.student.path, "student.path");
  check_tokenizer(ws.data, config.student.init, "student.init");
  if (config.loss.topk > io.classes)
    throw Error("loss.topk: " + std::to_string(config.loss.topk) + " is more than the " + std::to_string(io.classes) +
                (io.tokens() ? " ids of the vocabulary" : " classes of the data") + " (the student's outputs); use at most " +
                std::to_string(io.classes) + ", or 0 for the whole teacher row");
  torch::manual_seed(static_cast<uint64_t>(config.run.seed));
  // With teacher.cache the teacher's outputs come from the cache: no teacher is built, even when named.
  const bool cached_teacher = config.teacher && config.teacher->cache;
  if (config.teacher && !cached_teacher) {
    std::optional<SafetensorsContents> weights;
    if (config.teacher->weights) weights = load_safetensors(*config.teacher->weights);
    ModelConfig teacher_config = *config.teacher;
    if (!teacher_config.path && !teacher_config.arch)
      teacher_config = arch_from_metadata(teacher_config, weights->metadata, *config.teacher->weights);
    ws.teacher = make_model(teacher_config, io, "teacher");
    if (weights) {
      load_weights(*ws.teacher, *weights, *config.teacher->weights);
      if (ws.data.fit_teacher) ws.data.fit_teacher(weights->metadata, *config.teacher->weights);
    }
    ws.teacher->to(ws.device);
    if (const DTypeName dt = dtype_named(config.teacher->dtype, "teacher.dtype"); dt != DTypeName::float32)
      ws.teacher->cast(dt == DTypeName::bfloat16 ? at::kBFloat16 : at::kHalf);
    ws.teacher->set_requires_grad(false);
  }
  // Seed again so the student's initialisation does not depend on whether a teacher was built.
  torch::manual_seed(static_cast<uint64_t>(config.run.seed));
  const auto& init = config.student.init ? config.student.init : config.student.weights;
  std::optional<InitWeights> init_weights;
  if (init) init_weights = read_init(*init);
  ModelConfig student_config = config.student;
  if (!student_config.path && !student_config.arch)
    student_config = init_weights->hf ? hf_model_config(*init, "student.init")
                                      : arch_from_metadata(student_config, init_weights->contents.metadata, *init);
  ws.student = make_model(student_config, io, "student");
  if (init_weights) {
    if (init_weights->hf) load_hf_weights(*ws.student, init_weights->contents, *init);
    else load_weights(*ws.student, init_weights->contents, *init);
  }
  ws.student->to(ws.device);
  ws.student->set_requires_grad(true);
  // A language model may have more outputs than the data has ids (a padded embedding table); the teacher must
  // match the student's, or have more under loss.vocab = truncate.
  const int64_t student_outputs =
      check_model_io(*ws.student, io, "student", ws.device, io.tokens() ? OutputWidth::at_least : OutputWidth::exact);
  ws.student_outputs = student_outputs;
  if (cached_teacher)
    ws.cache = std::make_shared<const TeacherCache>(*config.teacher->cache, *ws.data.train, config.data.format,
                                                    ws.data.tokenizer_sha256, student_outputs,
                                                    io.tokens() ? io.seq_len : 1, config);
  if (ws.teacher) {
    IoShape teacher_io = io;
    teacher_io.classes = student_outputs;
    check_model_io(*ws.teacher, teacher_io, "teacher", ws.device,
                   config.loss.vocab == "truncate" ? OutputWidth::at_least : OutputWidth::exact);
  }
  return ws;
}

namespace {

// The tokenizer files a language-model student is written with: those of the Hugging Face folder it (or its
// teacher) came from, else the tokenizer of its data.
std::vector<std::string> student_tokenizer_files(const Config& c, const DataSources& data) {
  for (const auto& p : {c.student.path, c.student.init, c.teacher ? c.teacher->path : std::optional<std::string>()}) {
    if (!p || !is_hf_folder(*p)) continue;
    std::vector<std::string> files = hf_tokenizer_files(*p);
    if (!files.empty()) return files;
  }
  if (data.tokenizer_path.empty()) return {};
  if (paths::is_directory(data.tokenizer_path)) return hf_tokenizer_files(data.tokenizer_path);
  return {data.tokenizer_path};
}

struct StepResult {
  double loss = 0, kd = 0, ce = 0, grad_norm = 0;
  int64_t examples = 0;  // rows or sequences the step read
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
  // `comm`: a data-parallel run (null: one process). Each optimizer step then reads world_size x batch_size x
  // grad_accum examples of the one global order, a rank the part at its rank.
  Trainer(const Config& config, Workspace& ws, RunLog& log, const std::string& out_dir, ResumePoint* resume,
          dist::Communicator* comm = nullptr)
      : c_(config), ws_(ws), log_(log), out_dir_(out_dir), comm_(comm) {
    if (comm_) {
      rank_ = comm_->rank();
      world_ = comm_->world_size();
    }
    n_train_ = ws.data.train->size();
    rank_rows_ = c_.train.batch_size * c_.train.grad_accum;
    rows_per_step_ = rank_rows_ * world_;
    steps_per_epoch_ = (n_train_ + rows_per_step_ - 1) / rows_per_step_;
    total_steps_ = total_steps(c_, n_train_, world_);
    eval_batch_size_ = c_.train.eval_batch_size > 0 ? c_.train.eval_batch_size
                                                    : (ws.data.io.tokens() ? c_.train.batch_size : 1024);
    for (auto& [name, t] : ws_.student->state())
      if (t.requires_grad()) param_names_.push_back(name);
    params_ = ws_.student->parameters();
    for (auto& [name, t] : ws_.student->state()) has_buffers_ = has_buffers_ || !t.requires_grad();
    zero_ = comm_ && c_.dist.zero == 1;
    if (zero_) {
      shard_parameters();
      optimizer_ = make_optimizer(c_.optim, own_params_);
    } else {
      own_params_ = params_;
      own_names_ = param_names_;
      optimizer_ = make_optimizer(c_.optim, params_);
    }
    loss_options_.kd = KdLossOptions::from_config(c_.loss);
    loss_options_.topk = c_.loss.topk;
    loss_options_.chunk_rows = c_.loss.chunk_rows;
    bf16_ = dtype_named(c_.train.precision, "train.precision") == DTypeName::bfloat16;
    if (comm_) {
      if (rank_ > 0) seed_rank_stream(0);
      if (resume) restore(*resume);
      broadcast_student();
    } else if (resume) {
      restore(*resume);
    }
    stop_after_step_ = env_int("DISTILL_TEST_STOP_AFTER_STEP");
    kill_after_step_ = env_int("DISTILL_TEST_KILL_AFTER_STEP");
  }

  // train.max_steps > 0 sets the number of steps (over as many epochs as it takes), as in Hugging Face's
  // Trainer; else train.epochs passes over the data.
  static int64_t total_steps(const Config& c, int64_t n_train, int64_t world_size = 1) {
    if (c.train.max_steps > 0) return c.train.max_steps;
    const int64_t per_step = c.train.batch_size * c.train.grad_accum * world_size;
    return c.train.epochs * ((n_train + per_step - 1) / per_step);
  }

  TrainSummary run() {
    auto start = std::chrono::steady_clock::now();
    TrainSummary s;
    s.out_dir = out_dir_;
    s.resumed_from_step = resumed_from_step_;
    s.rank = rank_;
    log_.info("training " + ws_.student->describe() + " (" + std::to_string(ws_.student->parameter_count()) +
              " parameters) on " + ws_.data.train->describe() + ", steps " + std::to_string(step_ + 1) + ".." +
              std::to_string(total_steps_) + " (" + std::to_string(steps_per_epoch_) + " per epoch) on " + ws_.device.str());
    if (comm_)
      log_.info("data parallel: " + comm_->describe() + "; global batch " + std::to_string(rows_per_step_) + " = " +
                std::to_string(c_.train.batch_size) + " (train.batch_size) x " + std::to_string(c_.train.grad_accum) +
                " (train.grad_accum) x " + std::to_string(world_) + " ranks" +
                (zero_ ? "; ZeRO-1: rank 0 keeps the optimizer state of " + std::to_string(own_params_.size()) + " of " +
                             std::to_string(params_.size()) + " weight tensors"
                       : std::string()));
    StepResult interval;
    int64_t interval_steps = 0;
    auto interval_start = std::chrono::steady_clock::now();
    for (int64_t epoch = epoch_; step_ < total_steps_; ++epoch) {
      int64_t first_row = epoch == epoch_ ? next_row_ : 0;
      for (int64_t begin = first_row; begin < n_train_ && step_ < total_steps_; begin += rows_per_step_) {
        int64_t end = std::min(n_train_, begin + rows_per_step_);
        StepResult r = train_step(epoch, begin, end);
        ++step_;
        bool epoch_end = end == n_train_;
        interval.examples += r.examples;
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
        // A stop signal: the step is done; save it and hand back. In a data-parallel run a signal to any rank
        // stops them all after this step.
        if (step_ == stop_after_step_) PreemptionGuard::request(SIGUSR1);
        if (step_ == kill_after_step_) ::raise(SIGKILL);  // tests: a rank that dies
        if (int signal = agreed_signal(PreemptionGuard::requested()); signal != 0 && !last) {
          if (!checkpointed) s.checkpoint_path = checkpoint(epoch, end);
          log_.end_progress();
          if (rank_ == 0)
            log_.warn(std::string("stopped by ") + signal_name(signal) + " after step " + std::to_string(step_) +
                      "; checkpoint " + s.checkpoint_path + "; continue with: distill train --config ... --resume auto");
          log_.event({{"event", "preempted"}, {"step", step_}, {"signal", signal_name(signal)}});
          // No rank exits before rank 0 has written and said everything: a launcher (srun --kill-on-bad-exit)
          // may end the job at the first exit.
          if (comm_) comm_->barrier();
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
    if (rank_ != 0) {
      comm_->barrier();  // rank 0 writes the student and the summary
      return s;
    }
    s.student_path = save_student();
    json summary = s.final_eval.to_json();
    summary["steps"] = s.steps;
    summary["seconds"] = s.seconds;
    summary["bad_steps"] = bad_steps_;
    summary["student"] = s.student_path;
    // Written last: its presence marks a finished run.
    write_file_atomic(paths::join(out_dir_, "summary.json"), summary.dump(2) + "\n");
    if (comm_) comm_->barrier();  // the other ranks wait for it (see the stop above)
    return s;
  }

  int64_t step() const { return step_; }
  int64_t total() const { return total_steps_; }
  EvalResult evaluate_now() { return run_eval("final", /*record=*/false); }

 private:
  void restore(ResumePoint& r) {
    load_weights(*ws_.student, with_prefix(r.contents, "model."), r.path);
    load_optimizer_state(*optimizer_, c_.optim.name, own_names_, r.contents, "optim.", r.path);
    const at::Tensor* cpu_rng = r.contents.find("rng.cpu");
    if (!cpu_rng) throw Error(r.path + ": has no rng.cpu state; it is not a complete distill checkpoint");
    at::Generator cpu_gen = at::detail::getDefaultCPUGenerator();  // a handle: shares the global state
    cpu_gen.set_state(*cpu_rng);
    // A data-parallel rank continues its own stream; one the checkpoint has none of (more ranks than it was
    // written with) starts a fresh one of its own.
    if (rank_ > 0) {
      if (const at::Tensor* own = r.contents.find("rng.cpu.rank" + std::to_string(rank_))) cpu_gen.set_state(*own);
      else seed_rank_stream(r.step);
    }
    if (ws_.device.is_cuda()) {
      // Likewise on the GPU: rank 0 the one-process stream, every other rank its own.
      at::Generator cuda_gen = at::globalContext().defaultGenerator(ws_.device);
      const std::string key = rank_ > 0 ? "rng.cuda.rank" + std::to_string(rank_) : std::string("rng.cuda");
      if (const at::Tensor* cuda_rng = r.contents.find(key)) cuda_gen.set_state(*cuda_rng);
      else if (rank_ > 0) cuda_gen.set_current_seed(rank_stream_seed(r.step));
    }
    step_ = logged_step_ = resumed_from_step_ = r.step;
    epoch_ = r.epoch;
    next_row_ = r.next_row;
    bad_steps_ = r.bad_steps;
    lr_ = learning_rate_at(c_.optim, std::max<int64_t>(0, step_ - 1), total_steps_);
  }

  // Forward: teacher (no grad), student, loss over one micro-batch; the loss is divided by the valid targets
  // of the whole optimizer step so that micro-batches add up to the step's mean.
  LossTerms forward(const Batch& batch, double step_targets) {
    const at::Tensor x = batch.student_input.to(ws_.device);
    const at::Tensor y = batch.targets.to(ws_.device);
    SparseTeacher cached;
    if (batch.sparse_teacher.index.defined()) {
      cached.index = batch.sparse_teacher.index.to(ws_.device);
      cached.logits = batch.sparse_teacher.logits.to(ws_.device);
      if (batch.sparse_teacher.lse.defined()) cached.lse = batch.sparse_teacher.lse.to(ws_.device);
    }
    AutocastScope autocast(ws_.device, bf16_);
    ModelOutput teacher;
    const bool run_teacher = ws_.teacher && !cached.index.defined();
    if (run_teacher) {
      torch::NoGradGuard no_grad;
      teacher = ws_.teacher->forward_output(batch.teacher_input.is_same(batch.student_input) ? x : batch.teacher_input.to(ws_.device));
    }
    const ModelOutput student = ws_.student->forward_output(x);
    return output_kd_loss(student, run_teacher ? &teacher : nullptr, cached, y, loss_options_, step_targets);
  }

  // One optimizer step over examples [begin, end) of `epoch`, in micro-batches of train.batch_size; in a
  // data-parallel run this rank's part of them (which may be empty at the end of an epoch).
  StepResult train_step(int64_t epoch, int64_t begin, int64_t end) {
    std::vector<Batch> batches;
    int64_t valid = 0;
    const int64_t mine = std::min(end, begin + rank_ * rank_rows_), mine_end = std::min(end, mine + rank_rows_);
    for (int64_t b = mine; b < mine_end; b += c_.train.batch_size) {
      batches.push_back(ws_.data.train->batch(epoch, b, std::min(mine_end, b + c_.train.batch_size)));
      if (ws_.cache) batches.back().sparse_teacher = ws_.cache->lookup(batches.back());
      valid += batches.back().valid_targets;
    }
    // The loss is normalised by the valid targets of the whole step, on every rank.
    if (comm_) valid = static_cast<int64_t>(all_reduce_doubles({static_cast<double>(valid)}, dist::ReduceOp::sum)[0]);
    StepResult r;
    r.examples = end - begin;
    if (valid == 0) {
      r.skipped = true;
      log_.warn("step " + std::to_string(step_ + 1) + ": every target of the step is loss.ignore_index (" +
                std::to_string(c_.loss.ignore_index) + "), nothing to learn from; step skipped");
      log_.event({{"event", "empty_step"}, {"step", step_ + 1}});
      return r;
    }
    ws_.student->set_training(true);
    if (comm_ && has_buffers_) broadcast_buffers();
    zero_grads();
    // The terms add up where they are computed: one device-to-host copy per step, not per micro-batch.
    at::Tensor terms = torch::zeros({3}, torch::TensorOptions().device(ws_.device));
    for (const Batch& batch : batches) {
      LossTerms t = forward(batch, static_cast<double>(valid));
      t.loss.backward();
      terms += torch::stack({t.loss.detach(), t.kd, t.ce});  // float32 scalars
    }
    at::Tensor host = terms.to(torch::kCPU, torch::kDouble);
    if (comm_) {
      reduce_gradients();
      comm_->all_reduce(host, dist::ReduceOp::sum);
    }
    const double* v = host.data_ptr<double>();
    StepResult u = update(v[0], v[1], v[2]);
    u.examples = r.examples;
    return u;
  }

  // In place on every rank: values summed (or their maximum) over the ranks.
  std::vector<double> all_reduce_doubles(const std::vector<double>& values, dist::ReduceOp op) {
    at::Tensor t = torch::tensor(values, torch::kDouble);
    comm_->all_reduce(t, op);
    return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
  }

  // The stop signal every rank acts on: the largest any rank received (0: none), so that all stop at one step.
  int agreed_signal(int local) {
    if (!comm_) return local;
    return static_cast<int>(all_reduce_doubles({static_cast<double>(local)}, dist::ReduceOp::max)[0]);
  }

  // Gradients summed over the ranks, in flat buckets of about 25 MB (one collective each instead of one per
  // tensor), on the CPU for Gloo. A parameter without a gradient on this rank (no examples here) adds zeros.
  void reduce_gradients() {
    torch::NoGradGuard no_grad;
    // A weight no rank computed a gradient for (unused by the graph) keeps none, as with one process, so that
    // the optimizer skips it; one that some rank did not reach gets zeros there.
    at::Tensor has = torch::zeros({static_cast<int64_t>(params_.size())}, torch::kDouble);
    for (size_t i = 0; i < params_.size(); ++i) has[static_cast<int64_t>(i)] = params_[i].grad().defined() ? 1.0 : 0.0;
    comm_->all_reduce(has, dist::ReduceOp::max);
    const double* any = has.data_ptr<double>();
    std::vector<at::Tensor> grads;
    for (size_t i = 0; i < params_.size(); ++i) {
      at::Tensor& p = params_[i];
      if (any[i] == 0.0) continue;
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.mutable_grad());
    }
    in_buckets(grads, [&](at::Tensor& flat) { comm_->all_reduce(flat, dist::ReduceOp::sum); });
  }

  // `collective` on `tensors` (float32 on any device) as flat CPU buckets of about 25 MB, one call each instead
  // of one per tensor; the results copied back in place.
  static void in_buckets(const std::vector<at::Tensor>& tensors, const std::function<void(at::Tensor&)>& collective) {
    constexpr int64_t kBucketBytes = 25 << 20;
    torch::NoGradGuard no_grad;
    for (size_t first = 0; first < tensors.size();) {
      size_t end = first;
      int64_t bytes = 0;
      while (end < tensors.size() && (end == first || bytes < kBucketBytes)) bytes += tensors[end++].numel() * 4;
      std::vector<at::Tensor> parts;
      for (size_t i = first; i < end; ++i) parts.push_back(tensors[i].detach().reshape({-1}).to(torch::kCPU, torch::kFloat));
      at::Tensor flat = torch::cat(parts);
      collective(flat);
      int64_t at = 0;
      for (size_t i = first; i < end; ++i) {
        at::Tensor t = tensors[i].detach();
        t.copy_(flat.narrow(0, at, t.numel()).view(t.sizes()));
        at += t.numel();
      }
      first = end;
    }
  }

  // Under ZeRO-1 this rank's optimizer holds only its share of the weights, but every weight has a gradient.
  void zero_grads() {
    if (!zero_) {
      optimizer_->zero_grad();
      return;
    }
    for (at::Tensor& p : params_)
      if (p.grad().defined()) {
        p.mutable_grad().detach_();
        p.mutable_grad().zero_();
      }
  }

  // ZeRO-1: each weight tensor is one rank's to update, balanced by size (in order, to the rank holding the
  // fewest elements so far); only that rank keeps its optimizer state.
  void shard_parameters() {
    std::vector<int64_t> held(static_cast<size_t>(world_), 0);
    for (size_t i = 0; i < params_.size(); ++i) {
      const int64_t r = std::min_element(held.begin(), held.end()) - held.begin();
      held[static_cast<size_t>(r)] += params_[i].numel();
      owner_.push_back(r);
      if (r == rank_) {
        own_params_.push_back(params_[i]);
        own_names_.push_back(param_names_[i]);
      }
    }
  }

  // ZeRO-1, after each rank updated its share: every rank gets every updated weight, one broadcast per owner
  // and bucket of about 25 MB (Gloo has no reduce-scatter in LibTorch 1.13, so the gradients were all-reduced
  // whole; the saving is the optimizer state's memory).
  void share_updated_weights() {
    for (int64_t r = 0; r < world_; ++r) {
      std::vector<at::Tensor> owned;
      for (size_t i = 0; i < params_.size(); ++i)
        if (owner_[i] == r) owned.push_back(params_[i]);
      in_buckets(owned, [&](at::Tensor& flat) { comm_->broadcast(flat, r); });
    }
  }

  // ZeRO-1: the whole optimizer state on rank 0, in the names a one-process run writes (optimizer_state());
  // empty on the other ranks. Per weight, its owner first says whether it has state (none before a first
  // update), then sends it.
  NamedTensors gather_optimizer_state() {
    const NamedTensors mine = optimizer_state(*optimizer_, c_.optim.name, own_names_);
    auto find = [&](const std::string& key) -> const at::Tensor* {
      for (const auto& [name, t] : mine)
        if (name == key) return &t;
      return nullptr;
    };
    const std::vector<std::string> kinds = c_.optim.name == "sgd" ? std::vector<std::string>{"momentum_buffer"}
                                                                  : std::vector<std::string>{"step", "exp_avg", "exp_avg_sq"};
    NamedTensors out;
    for (size_t i = 0; i < params_.size(); ++i) {
      const int64_t owner = owner_[i];
      const std::string& name = param_names_[i];
      if (owner == 0) {
        if (rank_ == 0)
          for (const std::string& kind : kinds)
            if (const at::Tensor* t = find(name + "." + kind)) out.emplace_back(name + "." + kind, *t);
        continue;
      }
      at::Tensor has = torch::zeros({1}, torch::kDouble);
      if (rank_ == owner) has.fill_(find(name + "." + kinds.back()) ? 1.0 : 0.0);
      comm_->broadcast(has, owner);
      if (has.item<double>() == 0.0) continue;
      for (const std::string& kind : kinds) {
        at::Tensor t;
        if (kind == "step") t = rank_ == owner ? find(name + ".step")->to(torch::kDouble).reshape({1}) : torch::zeros({1}, torch::kDouble);
        else t = rank_ == owner ? find(name + "." + kind)->to(torch::kCPU).contiguous() : torch::zeros(params_[i].sizes(), torch::kFloat);
        comm_->broadcast(t, owner);
        if (rank_ == 0)
          out.emplace_back(name + "." + kind, kind == "step" ? t.to(torch::kInt64).reshape({}) : t);  // kept on the CPU
      }
    }
    return out;
  }

  // Ranks other than 0 draw (dropout) from their own stream, seeded from run.seed, the rank and the step it
  // starts at; rank 0 keeps the one-process stream.
  uint64_t rank_stream_seed(int64_t step) const {
    return static_cast<uint64_t>(c_.run.seed) * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(rank_) * 1000003ull +
           static_cast<uint64_t>(step);
  }
  void seed_rank_stream(int64_t step) { torch::manual_seed(rank_stream_seed(step)); }

  // Rank 0's value of `t` on every rank, through a CPU copy in a type Gloo carries (bool as bytes, 16-bit
  // floats as float32).
  void broadcast_from_rank0(at::Tensor& t) {
    at::Tensor host = t.detach().to(torch::kCPU).contiguous();
    if (host.scalar_type() == at::kBool) host = host.to(at::kByte);
    if (host.scalar_type() == at::kBFloat16 || host.scalar_type() == at::kHalf) host = host.to(at::kFloat);
    comm_->broadcast(host, 0);
    t.detach().copy_(host);
  }

  // Every rank starts from rank 0's weights (the same seed builds the same student, but a resumed or
  // user-initialised one should not depend on it).
  void broadcast_student() {
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : ws_.student->state()) broadcast_from_rank0(t);
  }

  // Buffers (a TorchScript student's batch-norm statistics) follow rank 0's before every step, as PyTorch's
  // DistributedDataParallel does, so that the ranks do not drift apart and what is evaluated and saved is
  // what all ranks hold.
  void broadcast_buffers() {
    torch::NoGradGuard no_grad;
    for (auto& [name, t] : ws_.student->state())
      if (!t.requires_grad()) broadcast_from_rank0(t);
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
      zero_grads();
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
    if (zero_) share_updated_weights();
    return r;
  }

  void log_train(int64_t epoch, const StepResult& sum, int64_t n, double seconds) {
    if (n == 0) return;  // every step of the interval was skipped
    double k = 1.0 / static_cast<double>(n);
    const bool tokens = ws_.data.io.tokens();
    const double per_example = tokens ? static_cast<double>(ws_.data.io.seq_len) : 1.0;
    const double rate = seconds > 0 ? static_cast<double>(sum.examples) * per_example / seconds : 0;
    json e = {{"event", "train"}, {"step", step_}, {"epoch", epoch + 1}, {"loss", sum.loss * k}, {"ce", sum.ce * k},
              {"lr", lr_},        {"grad_norm", sum.grad_norm * k},   {tokens ? "tokens_per_s" : "rows_per_s", rate}};
    if (ws_.teacher || ws_.cache) e["kd"] = sum.kd * k;
    log_.event(e);
    char terms[96] = "";
    if (ws_.teacher || ws_.cache) std::snprintf(terms, sizeof terms, " (kd %.4f ce %.4f)", sum.kd * k, sum.ce * k);
    char line[256];
    std::snprintf(line, sizeof line, "step %lld/%lld  epoch %lld  loss %.4f%s  lr %.3g  |g| %.3g  %.0f %s/s",
                  static_cast<long long>(step_), static_cast<long long>(total_steps_), static_cast<long long>(epoch + 1),
                  sum.loss * k, terms, lr_, sum.grad_norm * k, rate, tokens ? "tokens" : "rows");
    log_.info(line);
  }

  EvalResult run_eval(const char* kind, bool record = true) {
    AutocastScope autocast(ws_.device, bf16_);
    // A data-parallel run splits the validation batches over the ranks and adds up what they scored.
    std::function<void(std::vector<double>&)> add_over_ranks;
    if (comm_)
      add_over_ranks = [this](std::vector<double>& sums) { sums = all_reduce_doubles(sums, dist::ReduceOp::sum); };
    EvalResult r = evaluate(*ws_.student, ws_.teacher.get(), *ws_.data.val, c_.loss, eval_batch_size_,
                            c_.loss.chunk_rows, ws_.device, rank_, world_, add_over_ranks);
    if (!record) return r;
    json e = r.to_json();
    e["event"] = kind;
    e["step"] = step_;
    log_.event(e);
    log_.info(std::string(kind) + " @ step " + std::to_string(step_) + ": " + eval_summary(r));
    return r;
  }

  Metadata student_metadata() const {
    Metadata meta = ws_.data.student_metadata;
    meta["format"] = "pt";
    meta["distill_version"] = DISTILL_VERSION;
    meta["arch"] = ws_.student->arch_json().dump();
    return meta;
  }

  // Everything a bit-exact resume needs: weights, optimizer state, RNG states, and where in the data order
  // the next step starts (epoch, next_row); the learning rate follows from the step.
  std::string checkpoint(int64_t epoch, int64_t next_row) {
    // Rank 0 writes it: every rank holds the same weights, and under ZeRO-1 the ranks first hand rank 0 the
    // optimizer state of their shares, so that one process can resume from it (with any number of ranks).
    NamedTensors optim = zero_ ? gather_optimizer_state() : optimizer_state(*optimizer_, c_.optim.name, param_names_);
    // Each rank's own random stream (dropout), so that a resumed data-parallel run draws what it would have.
    NamedTensors rank_rngs;
    if (comm_) {
      auto gather = [&](const at::Tensor& mine, const std::string& name) {
        for (int64_t r = 1; r < world_; ++r) {
          at::Tensor state = r == rank_ ? mine.clone() : torch::zeros_like(mine);
          comm_->broadcast(state, r);
          rank_rngs.emplace_back(name + ".rank" + std::to_string(r), state);
        }
      };
      gather(at::detail::getDefaultCPUGenerator().get_state(), "rng.cpu");
      // (Every rank is on a GPU or none is: the job fingerprint says so.)
      if (ws_.device.is_cuda()) gather(at::globalContext().defaultGenerator(ws_.device).get_state(), "rng.cuda");
    }
    if (rank_ != 0) return "";
    NamedTensors tensors;
    for (auto& [name, t] : ws_.student->state()) tensors.emplace_back("model." + name, t);
    for (auto& [name, t] : optim) tensors.emplace_back("optim." + name, t);
    tensors.emplace_back("rng.cpu", at::detail::getDefaultCPUGenerator().get_state());
    if (ws_.device.is_cuda()) tensors.emplace_back("rng.cuda", at::globalContext().defaultGenerator(ws_.device).get_state());
    for (auto& [name, t] : rank_rngs) tensors.emplace_back(name, t);
    Metadata meta = student_metadata();
    meta["distill_checkpoint"] = "1";
    meta["state"] = json{{"step", step_}, {"epoch", epoch}, {"next_row", next_row}, {"total_steps", total_steps_},
                         {"bad_steps", bad_steps_}, {"global_batch", rows_per_step_}, {"world_size", world_}}
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
    if (ws_.student->hf_config().is_object()) {
      // A language model also goes out as the folder transformers loads, with the tokenizer it was trained with.
      const std::string folder = paths::join(out_dir_, "student");
      save_hf_folder(*ws_.student, folder, student_tokenizer_files(c_, ws_.data));
      log_.info("student saved as a Hugging Face folder: " + folder);
    }
    return path;
  }

  const Config& c_;
  Workspace& ws_;
  RunLog& log_;
  std::string out_dir_;
  dist::Communicator* comm_ = nullptr;
  int64_t rank_ = 0, world_ = 1;
  int64_t n_train_ = 0, rank_rows_ = 0, rows_per_step_ = 0, steps_per_epoch_ = 0, total_steps_ = 0;
  int64_t step_ = 0, epoch_ = 0, next_row_ = 0, logged_step_ = 0, resumed_from_step_ = -1;
  int64_t bad_steps_ = 0, consecutive_bad_ = 0, stop_after_step_ = 0, kill_after_step_ = 0;
  double lr_ = 0;
  std::vector<std::string> param_names_;
  std::vector<at::Tensor> params_;
  // What this rank's optimizer updates: every weight, or under ZeRO-1 (zero_) its share; owner_[i]: the rank
  // that updates params_[i].
  bool zero_ = false;
  bool has_buffers_ = false;  // the student has buffers (rank 0's are broadcast before each step)
  std::vector<at::Tensor> own_params_;
  std::vector<std::string> own_names_;
  std::vector<int64_t> owner_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  OutputLossOptions loss_options_;
  int64_t eval_batch_size_ = 0;
  bool bf16_ = false;  // train.precision bfloat16: forwards under autocast
};

void check_batch_size(const Config& config, const Workspace& ws) {
  const int64_t n = ws.data.train->size();
  if (config.train.batch_size > n)
    throw Error("train.batch_size: " + std::to_string(config.train.batch_size) + " is larger than the " +
                std::to_string(n) + (ws.data.io.tokens() ? " training sequences" : " training rows") + " (" +
                ws.data.train->describe() + "); lower it or add data");
}

// Every key's default, for the sections, formats and architectures `config` uses: a checkpoint written before
// a key existed holds that key's default.
json config_defaults(const Config& config) {
  Config plain;
  plain.teacher.emplace();
  json d = to_json(plain);
  auto add = [&](const char* section, const std::vector<schema::FieldInfo>& fields) {
    for (const auto& f : fields) d[section][f.key] = f.default_value;
  };
  add("data", data_format_named(config.data.format, "data.format").options.fields);
  if (config.teacher && config.teacher->arch) add("teacher", arch_named(*config.teacher->arch, "teacher.arch").options.fields);
  if (config.student.arch) add("student", arch_named(*config.student.arch, "student.arch").options.fields);
  return d;
}

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

// Finds and checks the checkpoint --resume names. nullopt: "auto" on a folder without a checkpoint, which
// starts the run from step 0 (a new run, or one that never wrote a checkpoint: nothing is lost). So a
// requeued job runs `--resume auto` every time, the first time too.
std::optional<ResumePoint> find_resume(const Config& config, const std::string& how, int64_t world_size) {
  const std::string& out_dir = config.run.out_dir;
  std::optional<std::string> path;
  if (how == "auto") {
    path = latest_checkpoint(paths::join(out_dir, "checkpoints"));
    if (!path) return std::nullopt;
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
  // The global batch (micro-batch x accumulation x ranks) decides the steps and the data each one reads: it
  // must stay, but may be split otherwise, e.g. 2 ranks x 8 resumed as 1 rank x 16 or 1 rank x 8 x 2.
  json now = to_json(config);
  std::vector<std::string> batch_changes;
  std::string global_change;
  try {
    const json& bt = before.at("train");
    const int64_t before_world = state.value("world_size", int64_t{1});
    const int64_t global_before = state.value("global_batch", bt.at("batch_size").get<int64_t>() * bt.at("grad_accum").get<int64_t>());
    const int64_t global_now = config.train.batch_size * config.train.grad_accum * world_size;
    auto split = [](int64_t batch, int64_t accum, int64_t world) {
      return std::to_string(batch) + " x " + std::to_string(accum) + " x " + std::to_string(world) + (world == 1 ? " rank" : " ranks");
    };
    const std::string was = split(bt.at("batch_size").get<int64_t>(), bt.at("grad_accum").get<int64_t>(), before_world);
    const std::string is = split(config.train.batch_size, config.train.grad_accum, world_size);
    if (global_before != global_now) {
      global_change = "the global batch (train.batch_size x train.grad_accum x ranks): " + std::to_string(global_before) +
                      " (" + was + ") -> " + std::to_string(global_now) + " (" + is + "); keep " +
                      std::to_string(global_before) + ", split as you like";
    } else {
      if (was != is) batch_changes.push_back("the global batch " + std::to_string(global_now) + " split as " + is + " (was " + was + ")");
      before["train"]["batch_size"] = now["train"]["batch_size"];
      before["train"]["grad_accum"] = now["train"]["grad_accum"];
    }
  } catch (const json::exception&) {
    // An old checkpoint without these keys: compare_configs below reports what differs.
  }
  ConfigChanges changes = compare_configs(before, now, config_defaults(config));
  changes.harmless.insert(changes.harmless.end(), batch_changes.begin(), batch_changes.end());
  if (!global_change.empty()) changes.incompatible.insert(changes.incompatible.begin(), global_change);
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

TrainSummary train(const Config& config_in, const TrainOptions& options) {
  apply_threads(config_in.run.threads);
  kd_loss_cpu_isa();  // a bad DISTILL_CPU_ISA is reported before anything is written
  // From the start: a stop signal while the models load (or the ranks meet) stops the run after its first
  // step instead of killing it.
  PreemptionGuard preemption;
  const dist::Launch launch = dist::launch_from_env();
  // Each rank of a data-parallel job on a GPU node takes the GPU of its local rank, as torchrun users expect;
  // where a rank sees fewer GPUs (Slurm's --gpus-per-task, CUDA_VISIBLE_DEVICES per rank), one of those.
  Config config = config_in;
  if (launch.distributed() && (config.run.device == "auto" || config.run.device == "cuda") && torch::cuda::is_available())
    config.run.device = "cuda:" + std::to_string(launch.local_rank % static_cast<int64_t>(torch::cuda::device_count()));
  // A data-parallel job: the ranks meet first, so that a rank that cannot start (a bad config, a missing file)
  // stops the others at once instead of leaving them waiting for it.
  std::unique_ptr<dist::Communicator> comm;
  if (launch.distributed()) {
    // A peer that died closes its sockets: a write to one must be Gloo's error (reported), not SIGPIPE.
    ::signal(SIGPIPE, SIG_IGN);
    comm = dist::connect(launch, dist::CommOptions{config.dist.backend, config.dist.timeout_s});
  }
  const std::string& out_dir = config.run.out_dir;
  Workspace ws;
  std::optional<ResumePoint> resume;
  bool finished = false;
  std::exception_ptr failure;
  try {
    ws = prepare_workspace(config);
    check_batch_size(config, ws);
    if (!options.resume.empty()) {
      if (options.existing == ExistingRun::overwrite) throw Error("--resume and --overwrite contradict each other; choose one");
      resume = find_resume(config, options.resume, launch.world_size);
      const bool summarised = paths::exists(paths::join(out_dir, "summary.json"));
      finished = resume && summarised && resume->step >= Trainer::total_steps(config, ws.data.train->size(), launch.world_size);
    }
  } catch (...) {
    failure = std::current_exception();
  }
  if (comm) {
    // One exchange: did a rank fail, did the ranks find the same checkpoint and the same finished run, and do
    // they run the same job (the config but its folder, threads and device; the data; the student)?
    std::string digest(12, '0');
    if (!failure) {
      json job = to_json(config);
      for (const char* key : {"out_dir", "threads", "device"}) job["run"].erase(key);
      job["train_examples"] = ws.data.train->size();
      job["val_examples"] = ws.data.val->size();
      job["student_parameters"] = ws.student->parameter_count();
      job["cuda"] = ws.device.is_cuda();  // all ranks on GPUs or none (the checkpoint gathers their streams)
      digest = sha256_hex(job.dump());
    }
    const double hi = static_cast<double>(std::stoll(digest.substr(0, 6), nullptr, 16));
    const double lo = static_cast<double>(std::stoll(digest.substr(6, 6), nullptr, 16));
    const double step = resume ? static_cast<double>(resume->step) : -1.0, done = finished ? 1.0 : 0.0;
    at::Tensor t = torch::tensor({failure ? 1.0 : 0.0, hi, -hi, lo, -lo, step, -step, done, -done}, torch::kDouble);
    comm->all_reduce(t, dist::ReduceOp::max);
    const double* d = t.data_ptr<double>();
    if (failure) std::rethrow_exception(failure);
    if (d[0] > 0)
      throw Error("dist: another rank could not start this job (its log says why); rank " + std::to_string(launch.rank) +
                  " stops too");
    if (d[1] != -d[2] || d[3] != -d[4])
      throw Error("dist: rank " + std::to_string(launch.rank) + "'s job differs from another rank's (its config, data "
                  "or student: job fingerprint " + digest.substr(0, 12) + "); start every rank with the same --config, "
                  "--set options and data");
    if (d[5] != -d[6] || d[7] != -d[8])
      throw Error("--resume: the ranks found different checkpoints (this rank: step " +
                  std::to_string(static_cast<int64_t>(step)) + "); run.out_dir must be one folder that every rank "
                  "sees (a shared filesystem)");
  } else if (failure) {
    std::rethrow_exception(failure);
  }
  if (finished) {
    // Nothing left to train: report the checkpoint's accuracy and touch no file (rank 0 reports).
    TrainSummary s;
    s.end = RunEnd::already_finished;
    s.out_dir = out_dir;
    s.rank = launch.rank;
    s.steps = s.resumed_from_step = resume->step;
    if (launch.rank != 0) return s;
    RunLog console("");
    Trainer trainer(config, ws, console, out_dir, &*resume);
    console.info("the run already finished at step " + std::to_string(trainer.step()) + "; nothing to do (raise "
                 "train.epochs or train.max_steps to train further)");
    s.final_eval = trainer.evaluate_now();
    s.student_path = paths::join(out_dir, "student.safetensors");
    return s;
  }
  if (launch.rank != 0) {
    std::unique_ptr<RunLog> quiet = RunLog::for_rank(launch.rank);
    Trainer trainer(config, ws, *quiet, out_dir, resume ? &*resume : nullptr, comm.get());
    resume.reset();  // the checkpoint's tensors (under ZeRO-1 all the optimizer state) are not kept for the run
    return trainer.run();
  }
  prepare_out_dir(out_dir, options.existing, /*resuming=*/!options.resume.empty());
  if (!options.resume.empty()) trim_metrics(paths::join(out_dir, "metrics.jsonl"), resume ? resume->step : 0);
  // The config as given (run.device "auto", not the cuda:N a data-parallel rank took).
  write_file_atomic(paths::join(out_dir, "config.json"), to_json(config_in).dump(2) + "\n");
  RunLog log(out_dir, /*append=*/!options.resume.empty());
  log.info(std::string("distill ") + DISTILL_VERSION + ", " + std::to_string(at::get_num_threads()) + " threads, CPU loss " +
           kernels::kd_loss_cpu_isa_name(kd_loss_cpu_isa()) + ", out_dir " + out_dir);
  if (resume) {
    log.info("resuming from " + resume->path + " (step " + std::to_string(resume->step) + ")");
    for (const auto& c : resume->harmless_changes) log.info("config change accepted on resume: " + c);
    log.event({{"event", "resume"}, {"step", resume->step}, {"checkpoint", resume->path}, {"changes", resume->harmless_changes}});
  } else if (!options.resume.empty()) {
    log.info("--resume " + options.resume + ": no checkpoint in " + out_dir + " yet; starting from step 0");
  }
  for (const auto& line : ws.data.summary) log.info(line);
  if (ws.cache)
    log.info("teacher: the cache " + ws.cache->describe() + "; no teacher runs (validation has no teacher terms)");
  else if (ws.teacher)
    log.info("teacher: " + ws.teacher->describe() + " (" + std::to_string(ws.teacher->parameter_count()) + " parameters)");
  else
    log.info("no teacher: supervised training with cross-entropy");
  Trainer trainer(config, ws, log, out_dir, resume ? &*resume : nullptr, comm.get());
  resume.reset();  // the checkpoint's tensors are not kept for the run
  return trainer.run();
}

EvalResult evaluate_weights(const Config& config_in, const std::string& weights_path) {
  apply_threads(config_in.run.threads);
  SafetensorsContents weights = load_safetensors(weights_path);
  Config config = config_in;
  if (!config.student.path && !config.student.arch)
    config.student = arch_from_metadata(config.student, weights.metadata, weights_path);
  config.student.init.reset();
  config.student.weights.reset();
  Workspace ws = prepare_workspace(config, &weights.metadata);
  load_weights(*ws.student, weights, weights_path);
  const int64_t batch = config.train.eval_batch_size > 0 ? config.train.eval_batch_size
                                                         : (ws.data.io.tokens() ? config.train.batch_size : 1024);
  return evaluate(*ws.student, ws.teacher.get(), *ws.data.val, config.loss, batch, config.loss.chunk_rows, ws.device);
}

std::vector<std::string> validate_run(const Config& config) {
  apply_threads(config.run.threads);
  Workspace ws = prepare_workspace(config);
  check_batch_size(config, ws);
  std::vector<std::string> lines;
  if (paths::exists(paths::join(config.run.out_dir, "config.json")))
    lines.push_back("note: run.out_dir " + config.run.out_dir + " already holds a run; `train` will need --overwrite "
                    "or --resume auto");
  for (const auto& line : ws.data.summary) lines.push_back(line);
  if (ws.cache)
    lines.push_back("teacher: the cache " + ws.cache->describe());
  else if (ws.teacher)
    lines.push_back("teacher: " + ws.teacher->describe() + ", " + std::to_string(ws.teacher->parameter_count()) + " parameters");
  else
    lines.push_back("teacher: none (supervised cross-entropy)");
  lines.push_back("student: " + ws.student->describe() + ", " + std::to_string(ws.student->parameter_count()) + " parameters");
  lines.push_back("device: " + ws.device.str());
  return lines;
}

}  // namespace distill
