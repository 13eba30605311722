// `distill generate`: prints the prompt and its continuation.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

#include "distill/generate/generate.h"

namespace distill {

struct GenerateCliOptions {
  std::string model;      // a Hugging Face folder, a run folder, a TorchScript .pt, or a student.safetensors
  std::string prompt;
  // --prompts FILE.jsonl --out OUT.jsonl: one {"prompt": ...} per line in, {"prompt", "completion",
  // "completion_ids", "index", "sample"} records out (what data.format "jsonl" trains on), resumable; the settings go to
  // OUT.jsonl.settings.json.
  std::string prompts, out;
  int64_t samples_per_prompt = 1;
  int64_t batch_size = 8;   // prompts of one token length decoded together
  // > 0: the top `topk` log-probabilities (temperature 1) of each generated token go to OUT.jsonl.logprobs.jsonl,
  // one vLLM-style line per record ({"prompt_token_ids", "prompt_logprobs"} over the record's training tokens),
  // which `distill cache-teacher --from` turns into a teacher cache for OUT.jsonl.
  int64_t topk = 0;
  bool overwrite = false;
  std::string tokenizer;  // empty: the model folder's
  std::string device = "auto";
  int64_t threads = 0;
  GenerateOptions generate;
};

// --prompt: prints the prompt and its continuation. --prompts: writes the records and prints a summary line.
void run_generate_cli(const GenerateCliOptions& options, std::ostream& out);

}  // namespace distill
