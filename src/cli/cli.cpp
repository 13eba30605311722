#include "distill/cli/cli.h"

#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "distill/bench/loss_bench.h"
#include "distill/cache/teacher_cache.h"
#include "distill/cli/data_cli.h"
#include "distill/cli/generate_cli.h"
#include "distill/config/config.h"
#include "distill/data/pack.h"
#include "distill/dist/comm.h"
#include "distill/dist/launch.h"
#include "distill/error.h"
#include "distill/train/trainer.h"

namespace distill {

namespace {

struct ConfigArgs {
  std::string path;
  std::vector<std::string> overrides;
};

void add_config_args(CLI::App* cmd, ConfigArgs& args) {
  cmd->add_option("--config,-c", args.path, "run configuration (JSON)")->required();
  cmd->add_option("--set", args.overrides,
                  "override one config key, e.g. --set loss.temperature=2 (repeatable; see --help-config)")
      ->take_last()
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
}

void add_help_config(CLI::App* cmd) {
  cmd->add_flag_callback(
      "--help-config",
      [] {
        std::cout << describe_config();
        throw CLI::Success();
      },
      "list every config key with its type, default and meaning");
}

Config load(const ConfigArgs& args, const std::string& out_dir = "") {
  std::vector<std::string> overrides = args.overrides;
  if (!out_dir.empty()) overrides.push_back("run.out_dir=" + out_dir);
  return load_config(args.path, overrides);
}

std::string percent(double v) {  // "96.66%"
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", 100 * v);
  return buf;
}

}  // namespace

int run_cli(int argc, char** argv) {
  CLI::App app{"distill: knowledge-distillation trainer (LibTorch)", "distill"};
  const std::string backends = dist::available_backends();
  app.set_version_flag("--version", std::string("distill ") + DISTILL_VERSION + " (data parallel: " +
                                        (backends.empty() ? std::string("none in this build") : backends) + ")");
  app.require_subcommand(1);
  app.failure_message([](const CLI::App* failed, const CLI::Error& e) {
    return "error: " + std::string(e.what()) + " (run '" + failed->get_name() + " --help')\n";
  });

  ConfigArgs train_args;
  std::string train_out;
  bool overwrite = false;
  std::string resume;
  CLI::App* train_cmd = app.add_subcommand("train", "train a student (distilled from the teacher, if the config has one)");
  add_config_args(train_cmd, train_args);
  train_cmd->add_option("--out", train_out, "output folder (overrides run.out_dir)");
  train_cmd->add_flag("--overwrite", overwrite, "replace an earlier run in the output folder");
  train_cmd->add_option("--resume", resume,
                        "continue a run: auto (the newest complete checkpoint in the output folder), a checkpoint "
                        "file, or a run folder");
  add_help_config(train_cmd);

  ConfigArgs eval_args;
  std::string weights;
  CLI::App* eval_cmd = app.add_subcommand("eval", "evaluate trained student weights on the config's validation split");
  add_config_args(eval_cmd, eval_args);
  eval_cmd->add_option("--weights,-w", weights, "student weights (.safetensors) written by distill train")->required();

  ConfigArgs validate_args;
  CLI::App* validate_cmd = app.add_subcommand("validate", "check a config, its data and its models without training");
  add_config_args(validate_cmd, validate_args);
  add_help_config(validate_cmd);

  LossBenchOptions bench;
  bool bench_json = false;
  CLI::App* bench_cmd = app.add_subcommand("bench", "benchmarks");
  bench_cmd->require_subcommand(1);
  CLI::App* bench_loss = bench_cmd->add_subcommand(
      "loss", "time forward+backward of the fused KD loss and of the ATen composite, side by side");
  bench_loss->add_option("--rows", bench.rows, "rows N (tokens or examples)")->capture_default_str();
  bench_loss->add_option("--vocab", bench.vocab, "vocabulary / classes V")->capture_default_str();
  bench_loss->add_option("--dtype", bench.dtype, "logit dtype: f32 | bf16 | f16 (or float32, fp32, bfloat16, float16, fp16)")->capture_default_str();
  bench_loss->add_option("--device", bench.device, "cpu | cuda | cuda:N")->capture_default_str();
  bench_loss->add_option("--kind", bench.kind, "forward_kl | reverse_kl | jsd")->capture_default_str();
  bench_loss->add_option("--repeats", bench.repeats, "timed repeats (the median is reported)")->capture_default_str();
  bench_loss->add_option("--warmup", bench.warmup, "untimed repeats first")->capture_default_str();
  bench_loss->add_option("--threads", bench.threads, "CPU threads; 0 = one per core")->capture_default_str();
  bench_loss->add_flag("--json", bench_json, "print one JSON object instead of the table");
  bench_loss->add_flag("!--no-composite", bench.composite, "time only the fused op");
  bench_loss->add_option("--topk", bench.topk, "K > 0: a sparse teacher of each row's K largest logits (forward_kl)")
      ->capture_default_str();
  bench_loss->add_option("--topk-tail", bench.topk_tail, "sparse teacher's tail: ignore | tail")->capture_default_str();
  bench_loss->add_option("--hidden", bench.hidden, "H > 0: from hidden states [N, H] and heads [V, H]: the chunked fused-linear loss against linear + composite")->capture_default_str();

  ConfigArgs cache_args;
  CacheTeacherOptions cache_opts;
  CLI::App* cache_cmd = app.add_subcommand(
      "cache-teacher", "run the config's teacher once over its training data and keep its top-k (train from it with teacher.cache)");
  add_config_args(cache_cmd, cache_args);
  cache_cmd->add_option("--topk", cache_opts.topk, "entries kept per position; 0 = 64, or the vocabulary when smaller")
      ->capture_default_str();
  cache_cmd->add_option("--out", cache_opts.out, "cache folder (default: teacher.cache, else <run.out_dir>/teacher-cache)");
  cache_cmd->add_option("--values", cache_opts.values,
                        "float32 (exact) | log16 (log-probabilities to 1/256 nat: about half the bytes)")
      ->capture_default_str();
  cache_cmd->add_option("--batch-size", cache_opts.batch_size, "examples per teacher forward; 0 = train.batch_size sequences or 1024 rows")
      ->capture_default_str();
  cache_cmd->add_option("--chunk-examples", cache_opts.chunk_examples,
                        "examples per compressed chunk; 0 = about 1 MiB of entries (smaller: less decoded per random batch)")
      ->capture_default_str();
  cache_cmd->add_flag("--overwrite", cache_opts.overwrite, "replace a cache already in the folder");
  cache_cmd->add_option("--from", cache_opts.from,
                        "no teacher run: build the cache from a server's or an API's log-probabilities, one JSON response "
                        "per line, line i for training example i (vLLM prompt_logprobs with prompt_token_ids, or OpenAI-style "
                        "chat completions with logprobs / top_logprobs; --topk 0 keeps every entry given)");
  cache_cmd->add_option("--temperature", cache_opts.from_temperature,
                        "with --from: the temperature the log-probabilities were computed at")
      ->capture_default_str();

  std::string bench_cache_dir;
  int64_t bench_cache_repeats = 5;
  CLI::App* bench_cache = bench_cmd->add_subcommand(
      "cache", "decode a teacher cache (every chunk, random order, one thread): positions per second and bytes per position");
  bench_cache->add_option("--cache", bench_cache_dir, "a folder written by `distill cache-teacher`")->required();
  bench_cache->add_option("--repeats", bench_cache_repeats, "passes over the cache (the median is reported)")->capture_default_str();

  PackOptions pack;
  CLI::App* data_cmd = app.add_subcommand("data", "prepare language-model data");
  data_cmd->require_subcommand(1);
  CLI::App* pack_cmd = data_cmd->add_subcommand(
      "pack", "tokenise a .txt (one document) or .jsonl file into llm.c token shards plus manifest.json (docs/data.md)");
  pack_cmd->add_option("--tokenizer", pack.tokenizer, "tokenizer.json, SentencePiece .model, or a model folder")->required();
  pack_cmd->add_option("--in", pack.input, "FILE.txt (the whole file is one document) or FILE.jsonl")->required();
  pack_cmd->add_option("--out", pack.out_dir, "folder for the shards and manifest.json")->required();
  pack_cmd->add_option("--val-fraction", pack.val_fraction,
                       "the last share of the tokens (.txt) or records (.jsonl) held out for validation")
      ->capture_default_str();
  pack_cmd->add_option("--shard-tokens", pack.shard_tokens, "tokens per shard at most")->capture_default_str();
  pack_cmd->add_option("--threads", pack.threads, "tokenizer threads; 0 = one per core")->capture_default_str();
  pack_cmd->add_flag("--overwrite", pack.overwrite, "replace a packed folder (one that holds manifest.json)");

  std::string tok_in, tok_out;
  int64_t tok_vocab = 1024;
  CLI::App* tokenizer_cmd = data_cmd->add_subcommand(
      "tokenizer", "train a SentencePiece BPE tokenizer (byte fallback; deterministic) on a UTF-8 text file");
  tokenizer_cmd->add_option("--in", tok_in, "training text (UTF-8, one sentence per line)")->required();
  tokenizer_cmd->add_option("--vocab-size", tok_vocab, "pieces, including <unk>, <s>, </s> and the 256 byte pieces")
      ->capture_default_str();
  tokenizer_cmd->add_option("--out", tok_out, "the .model file to write")->required();

  GenerateCliOptions gen;
  CLI::App* generate_cmd = app.add_subcommand("generate", "continue a prompt with a language model (KV cache; greedy unless --temperature > 0)");
  generate_cmd->add_option("--model,-m", gen.model, "a Hugging Face model folder, a run folder (its student/), a TorchScript LM (.pt) or a student.safetensors")->required();
  generate_cmd->add_option("--prompt,-p", gen.prompt, "the text to continue");
  generate_cmd->add_option("--prompts", gen.prompts, "a JSONL file of {\"prompt\": ...} lines: write a completion of each to --out (resumable)");
  generate_cmd->add_option("--out", gen.out, "with --prompts: the JSONL records {prompt, completion, index, sample} (data.format \"jsonl\" trains on them)");
  generate_cmd->add_option("--samples-per-prompt", gen.samples_per_prompt, "with --prompts: completions per prompt")->capture_default_str();
  generate_cmd->add_option("--batch-size", gen.batch_size, "with --prompts: prompts of one token length decoded together")->capture_default_str();
  generate_cmd->add_flag("--overwrite", gen.overwrite, "with --prompts: replace --out instead of continuing it");
  generate_cmd->add_option("--topk,--logprobs", gen.topk, "with --prompts: also write the top K log-probabilities of each generated token "
                           "to OUT.jsonl.logprobs.jsonl, in the same pass (distill cache-teacher --from reads it); 0 = none")->capture_default_str();
  generate_cmd->add_option("--tokenizer", gen.tokenizer, "tokenizer.json, a SentencePiece .model or a folder (default: the model folder's)");
  generate_cmd->add_option("--max-new-tokens", gen.generate.max_new_tokens, "tokens to generate at most")->capture_default_str();
  generate_cmd->add_option("--temperature", gen.generate.temperature, "0 = greedy; > 0 samples from softmax(logits / T)")->capture_default_str();
  generate_cmd->add_option("--top-k", gen.generate.top_k, "> 0: sample among the k most likely tokens")->capture_default_str();
  generate_cmd->add_option("--top-p", gen.generate.top_p, "< 1: nucleus sampling")->capture_default_str();
  generate_cmd->add_option("--seed", gen.generate.seed, "sampling seed")->capture_default_str();
  generate_cmd->add_option("--device", gen.device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  generate_cmd->add_option("--threads", gen.threads, "CPU threads; 0 = one per core")->capture_default_str();

  std::string inspect_path;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "list the tensors of a safetensors or TorchScript file");
  inspect_cmd->add_option("file", inspect_path, "a .safetensors or TorchScript .pt file")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);  // prints help / version / the error line
    return code == 0 ? 0 : static_cast<int>(ExitCode::usage);
  }

  if (train_cmd->parsed()) {
    Config config = load(train_args, train_out);
    TrainOptions options;
    options.existing = overwrite ? ExistingRun::overwrite : ExistingRun::refuse;
    options.resume = resume;
    TrainSummary s = train(config, options);
    if (s.rank != 0) return s.end == RunEnd::preempted ? static_cast<int>(ExitCode::preempted) : 0;  // rank 0 reports
    if (s.end == RunEnd::preempted) {
      std::cout << "stopped after step " << s.steps << "; checkpoint " << s.checkpoint_path
                << "; continue with --resume auto\n";
      return static_cast<int>(ExitCode::preempted);
    }
    const EvalResult& r = s.final_eval;
    if (s.end == RunEnd::already_finished) std::cout << "already finished; ";
    if (r.tokens) {
      std::cout << "student val ppl " << r.student_perplexity();
      if (r.has_teacher) std::cout << " (teacher " << r.teacher_perplexity() << ", agreement " << percent(r.agreement) << ")";
    } else {
      std::cout << "student val accuracy " << percent(r.student_accuracy);
      if (r.has_teacher) std::cout << " (teacher " << percent(r.teacher_accuracy) << ", agreement " << percent(r.agreement) << ")";
    }
    std::cout << " after " << s.steps << " steps in " << static_cast<int64_t>(s.seconds * 10) / 10.0 << " s; student: "
              << s.student_path << "\n";
    return 0;
  }
  if (eval_cmd->parsed()) {
    Config config = load(eval_args);
    EvalResult r = evaluate_weights(config, weights);
    std::cout << eval_summary(r) << " on " << r.examples << (r.tokens ? " sequences" : " rows") << "\n";
    nlohmann::json j = r.to_json();
    j["weights"] = weights;
    std::cout << j.dump() << "\n";
    return 0;
  }
  if (validate_cmd->parsed()) {
    Config config = load(validate_args);
    for (const auto& line : validate_run(config)) std::cout << line << "\n";
    std::cout << validate_args.path << ": ok\n";
    return 0;
  }
  // Only `train` runs as one rank of several; the commands that write one file or folder would have every rank
  // write it at once.
  for (const auto& [cmd, name] : {std::pair{cache_cmd, "cache-teacher"}, std::pair{generate_cmd, "generate"},
                                  std::pair{pack_cmd, "data pack"}, std::pair{tokenizer_cmd, "data tokenizer"}})
    if (cmd->parsed() && dist::launch_from_env().distributed())
      throw Error(std::string(name) + ": runs as one process, but this one was launched as one of several (RANK/"
                  "WORLD_SIZE or SLURM_PROCID/SLURM_NTASKS are set), and every process would write the same output; "
                  "run it without torchrun or srun, or with one process (--nproc_per_node 1, srun -n 1)");
  if (cache_cmd->parsed()) {
    if (cache_opts.topk < 0) throw Error("--topk: must be >= 0 (0 = 64, or the vocabulary when smaller)");
    if (cache_opts.from.empty() && cache_cmd->count("--temperature") > 0)
      throw Error("--temperature: only with --from (a live teacher caches at loss.temperature)");
    if (cache_opts.batch_size < 0) throw Error("--batch-size: must be >= 0");
    if (cache_opts.chunk_examples < 0) throw Error("--chunk-examples: must be >= 0");
    const nlohmann::json r = cache_teacher(load(cache_args), cache_opts);
    std::cout << r["out"].get<std::string>() << ": "
              << (r.value("already_complete", false) ? "already complete, " : "") << r.value("bytes", uint64_t{0})
              << " bytes, " << r.value("bytes_per_position", 0.0) << " bytes per position\n";
    return 0;
  }
  if (bench_cache->parsed()) {
    const nlohmann::json r = bench_teacher_cache(bench_cache_dir, bench_cache_repeats);
    std::cout << r.dump() << "\n";
    return 0;
  }
  if (bench_loss->parsed()) {
    nlohmann::json result = run_loss_bench(bench);
    std::cout << (bench_json ? result.dump() + "\n" : format_loss_bench(result));
    return 0;
  }
  if (tokenizer_cmd->parsed()) {
    train_tokenizer_cli(tok_in, tok_vocab, tok_out, std::cout);
    return 0;
  }
  if (pack_cmd->parsed()) {
    std::cout << pack_tokens(pack).summary() << "\n";
    return 0;
  }
  if (generate_cmd->parsed()) {
    run_generate_cli(gen, std::cout);
    return 0;
  }
  if (inspect_cmd->parsed()) {
    std::cout << inspect_file(inspect_path);
    return 0;
  }
  return 0;
}

}  // namespace distill
