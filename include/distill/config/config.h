// The run configuration: typed structs holding every default in one place. The JSON reader, `--set`
// overrides, `distill train --help-config` and docs/config.md all read the defaults and help texts from the
// visit_fields() lists below; all range checks sit in validate().
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distill {

struct RunConfig {
  std::string out_dir = "runs/default";
  int64_t seed = 0;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  int64_t threads = 0;          // 0 = one per core
};

// A file, a glob ("shards/train-*.bin") or a list of them: what data.path and data.val_path take. JSON: a
// string, or an array of strings. Relative entries are relative to the config file.
struct PathList {
  std::vector<std::string> items;
  bool empty() const { return items.empty(); }
  bool operator==(const PathList& o) const { return items == o.items; }
};
// One entry is written as a string, more as an array.
inline void to_json(nlohmann::json& j, const PathList& p) {
  j = p.items.size() == 1 ? nlohmann::json(p.items[0]) : nlohmann::json(p.items);
}

// The keys every data format has; each format adds its own (`options`, flat in the section beside these),
// declared by its entry in the data format registry (include/distill/data/registry.h).
struct DataConfig {
  std::string format = "csv";
  PathList path;                    // required
  std::optional<PathList> val_path; // a separate validation set
  bool shuffle = true;
  nlohmann::json options = nlohmann::json::object();  // the format's keys, defaults filled in once loaded
};

// The keys every model section has; a built-in `arch` adds its own (`options`), declared by its entry in the
// architecture registry (include/distill/models/registry.h).
struct ModelConfig {
  std::optional<std::string> path;     // a TorchScript module (.pt) or a Hugging Face model folder
  std::optional<std::string> arch;     // a built-in architecture
  std::optional<std::string> weights;  // safetensors to load (teacher: its trained weights)
  std::optional<std::string> init;     // student only: safetensors to start from
  std::optional<std::string> cache;    // teacher only: a `distill cache-teacher` folder to train from
  std::string dtype = "float32";       // the weights' dtype in memory (a teacher may be held in bfloat16)
  nlohmann::json options = nlohmann::json::object();  // the arch's keys, defaults filled in once loaded
};

struct LossConfig {
  std::string kind = "forward_kl";  // forward_kl | reverse_kl | jsd
  double temperature = 4.0;
  double alpha = 0.9;   // weight of the KD term; 1 - alpha weighs the hard-label cross-entropy
  bool t2_scale = true; // multiply the KD term by T^2 (Hinton et al. 2015)
  double beta = 0.5;    // jsd: M = beta P + (1 - beta) Q
  int64_t ignore_index = -100;  // rows with this label count nowhere
  std::string vocab = "error";  // error | truncate: what to do when the teacher has more outputs
  int64_t topk = 0;                  // > 0: a sparse teacher, its k largest logits per row; 0 = the whole row
  std::string topk_tail = "ignore";  // ignore | tail: the teacher mass outside the top-k
  int64_t chunk_rows = 0;            // language models: positions per chunk of the output head; 0 = automatic
};

struct OptimConfig {
  std::string name = "adamw";  // sgd | adam | adamw
  double lr = 1e-3;
  double momentum = 0.9;       // sgd
  bool nesterov = false;       // sgd
  double weight_decay = 0.01;
  std::vector<double> betas = {0.9, 0.999};  // adam, adamw
  double eps = 1e-8;           // adam, adamw
  std::string schedule = "constant";  // constant | cosine | step
  int64_t warmup_steps = 0;    // linear warm-up from 0 before the schedule
  double min_lr = 0.0;         // cosine: the final learning rate
  int64_t step_size = 1000;    // step: decay every step_size optimizer steps
  double gamma = 0.1;          // step: multiply by gamma at each decay
  double grad_clip = 0.0;      // max global L2 norm of the gradient; 0 = off
};

struct TrainConfig {
  int64_t epochs = 10;
  int64_t max_steps = 0;    // > 0: the number of optimizer steps (overrides epochs)
  int64_t batch_size = 64;  // examples (rows or sequences) per micro-batch
  int64_t grad_accum = 1;   // micro-batches per optimizer step
  int64_t eval_every = 0;   // optimizer steps between evaluations; 0 = at the end of every epoch
  int64_t log_every = 10;   // optimizer steps between log lines
  int64_t eval_batch_size = 0;  // 0: 1024 rows, or train.batch_size sequences
  int64_t max_bad_steps = 20;  // consecutive non-finite steps (skipped) before the run stops with an error
  std::string precision = "float32";  // float32 | bfloat16: autocast, with float32 master weights
};

// Data parallel (several processes launched by torchrun or srun; include/distill/dist/launch.h). Ignored by a
// process launched alone.
struct DistConfig {
  std::string backend = "auto";  // auto | gloo | nccl (auto: gloo on CPU)
  double timeout_s = 1800;       // a rendezvous or collective not done by then fails every rank (PyTorch's default)
  int64_t zero = 0;              // 1: ZeRO stage 1, each rank keeps the optimizer state of its share of the weights
};

struct CheckpointConfig {
  int64_t every = 0;      // optimizer steps between checkpoints; 0 = at the end of every epoch
  int64_t keep_last = 2;  // newest checkpoints kept
};

struct Config {
  RunConfig run;
  DataConfig data;
  std::optional<ModelConfig> teacher;  // absent: supervised training with cross-entropy only
  ModelConfig student;
  LossConfig loss;
  OptimConfig optim;
  TrainConfig train;
  CheckpointConfig checkpoint;
  DistConfig dist;
};

// Field lists: f(json_key, member, help). One list per section; the schema of the whole file.
template <class F> void visit_fields(RunConfig& c, F&& f) {
  f("out_dir", c.out_dir, "directory for every output of the run");
  f("seed", c.seed, "seed of model initialisation, dropout and the data order");
  f("device", c.device, "auto | cpu | cuda | cuda:N");
  f("threads", c.threads, "CPU threads for ATen; 0 = one per core");
}
template <class F> void visit_fields(DataConfig& c, F&& f) {
  f("format", c.format, "data format (the formats and their keys are listed below)");
  f("path", c.path, "training data: a file, a glob or a list of them (relative paths are relative to the config file)");
  f("val_path", c.val_path, "separate validation data (a file, a glob or a list)");
  f("shuffle", c.shuffle, "reshuffle the training examples every epoch");
}
template <class F> void visit_fields(ModelConfig& c, F&& f) {
  f("path", c.path, "a TorchScript module (.pt) or a Hugging Face model folder, instead of a built-in arch");
  f("arch", c.arch, "built-in architecture (the architectures and their keys are listed below)");
  f("weights", c.weights, "safetensors file with the model's weights");
  f("init", c.init, "student only: safetensors file or Hugging Face folder to start training from");
  f("cache", c.cache, "teacher only: a folder written by `distill cache-teacher`; the run trains from its top-k (sparse forward_kl) and runs no teacher");
  f("dtype", c.dtype, "the weights' dtype in memory: float32 | bfloat16 | float16; a teacher may be held in bfloat16 (its logits are upcast to float32 in the loss); a student trains in float32 (see train.precision)");
}
template <class F> void visit_fields(LossConfig& c, F&& f) {
  f("kind", c.kind, "divergence: forward_kl (KL(P||Q)) | reverse_kl (KL(Q||P)) | jsd (generalised JSD, see beta)");
  f("temperature", c.temperature, "softmax temperature T applied to both teacher and student logits");
  f("alpha", c.alpha, "weight of the KD term; (1 - alpha) weighs cross-entropy with the labels");
  f("t2_scale", c.t2_scale, "multiply the KD term by T^2");
  f("beta", c.beta, "jsd: mixture M = beta P + (1 - beta) Q; 0 is exactly forward_kl, 1 exactly reverse_kl");
  f("ignore_index", c.ignore_index, "label value of rows that count in neither loss nor normaliser");
  f("vocab", c.vocab, "a teacher with more outputs than the student: error | truncate (use its first outputs)");
  f("topk", c.topk, "> 0: distil from the teacher's k largest logits per row only (the sparse teacher a teacher cache stores; forward_kl only); 0 = the whole row. Validation kd stays the dense divergence");
  f("topk_tail", c.topk_tail, "with topk: ignore (teacher renormalised over its top-k) | tail (exact teacher probabilities on the top-k, plus one term for the mass outside it)");
  f("chunk_rows", c.chunk_rows, "language models: positions per chunk through the output head and the loss (no [positions, vocab] tensor beyond one chunk's is alive); 0 = about 32 MiB of logits per chunk");
}
template <class F> void visit_fields(OptimConfig& c, F&& f) {
  f("name", c.name, "sgd | adam | adamw");
  f("lr", c.lr, "peak learning rate");
  f("momentum", c.momentum, "sgd momentum");
  f("nesterov", c.nesterov, "sgd: Nesterov momentum");
  f("weight_decay", c.weight_decay, "weight decay (decoupled for adamw, L2 for sgd and adam)");
  f("betas", c.betas, "adam/adamw: [beta1, beta2]");
  f("eps", c.eps, "adam/adamw: epsilon");
  f("schedule", c.schedule, "learning-rate schedule: constant | cosine | step");
  f("warmup_steps", c.warmup_steps, "linear warm-up steps from 0 to lr");
  f("min_lr", c.min_lr, "cosine: final learning rate");
  f("step_size", c.step_size, "step: optimizer steps between decays");
  f("gamma", c.gamma, "step: decay factor");
  f("grad_clip", c.grad_clip, "clip the global gradient L2 norm to this; 0 = off");
}
template <class F> void visit_fields(TrainConfig& c, F&& f) {
  f("epochs", c.epochs, "passes over the training data");
  f("max_steps", c.max_steps, "> 0: train this many optimizer steps, over as many epochs as it takes (overrides epochs); 0 = epochs decide");
  f("batch_size", c.batch_size, "examples (rows or sequences) per micro-batch");
  f("grad_accum", c.grad_accum, "micro-batches per optimizer step");
  f("eval_every", c.eval_every, "optimizer steps between evaluations; 0 = every epoch end");
  f("log_every", c.log_every, "optimizer steps between log lines");
  f("eval_batch_size", c.eval_batch_size, "examples per evaluation batch; 0 = 1024 rows, or train.batch_size sequences");
  f("max_bad_steps", c.max_bad_steps, "consecutive steps with a non-finite loss or gradient (each skipped) before the run stops");
  f("precision", c.precision, "float32 | bfloat16 (also fp32, bf16): bfloat16 runs forward passes under autocast (matrix products in bfloat16; float32 master weights, optimizer state and loss)");
}
template <class F> void visit_fields(DistConfig& c, F&& f) {
  f("backend", c.backend, "auto | gloo | nccl: the c10d process group of a data-parallel run (torchrun, srun)");
  f("timeout_s", c.timeout_s, "seconds a rendezvous or collective may take before every rank stops with an error (a rank died)");
  f("zero", c.zero, "0 | 1: ZeRO stage 1, the optimizer state sharded across ranks (each updates its share of the weights, then shares them)");
}
template <class F> void visit_fields(CheckpointConfig& c, F&& f) {
  f("every", c.every, "optimizer steps between checkpoints; 0 = every epoch end");
  f("keep_last", c.keep_last, "number of newest checkpoints kept");
}
// Sections: g(json_key, section, help). Optional sections are std::optional<...>.
template <class G> void visit_sections(Config& c, G&& g) {
  g("run", c.run, "where and how the job runs");
  g("data", c.data, "the dataset");
  g("teacher", c.teacher, "the frozen teacher; omit for supervised training");
  g("student", c.student, "the model being trained");
  g("loss", c.loss, "the distillation loss");
  g("optim", c.optim, "optimizer and learning-rate schedule");
  g("train", c.train, "the training loop");
  g("checkpoint", c.checkpoint, "periodic checkpoints");
  g("dist", c.dist, "data-parallel training across processes (launched by torchrun or srun)");
}

// Reads `path` (JSON), applies `overrides` ("a.b=value", value parsed as JSON where it parses and the field
// is not a string), checks types and ranges. Relative paths inside are resolved against the config's folder.
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from an in-memory document; `origin` names it in messages, `base_dir` resolves relative paths.
Config parse_config(const nlohmann::json& doc, const std::string& origin, const std::string& base_dir = "");
// Range and consistency checks; throws distill::Error naming the key.
void validate(const Config& config);
// auto | cpu | cuda | cuda:N: what run.device (and `distill bench loss --device`) accept.
bool is_device_name(const std::string& name);
nlohmann::json to_json(const Config& config);
// One line per key with type, default and help: `distill train --help-config`.
std::string describe_config();

}  // namespace distill
