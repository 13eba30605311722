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
  // --prompts FILE.jsonl --out OUT.jsonl: one {"prompt": ...} per line in, {"prompt", "completion", "index",
  // "sample"} records out (what data.format "jsonl" trains on), resumable; the settings go to
  // OUT.jsonl.settings.json.
  std::string prompts, out;
  int64_t samples_per_prompt = 1;
  int64_t batch_size = 8;   // prompts of one token length decoded together
  bool overwrite = false;
  std::string tokenizer;  // empty: the model folder's
  std::string device = "auto";
  int64_t threads = 0;
  GenerateOptions generate;
};

// --prompt: prints the prompt and its continuation. --prompts: writes the records and prints a summary line.
void run_generate_cli(const GenerateCliOptions& options, std::ostream& out);

}  // namespace distill
