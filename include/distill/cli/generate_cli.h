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
  std::string tokenizer;  // empty: the model folder's
  std::string device = "auto";
  int64_t threads = 0;
  GenerateOptions generate;
};

void run_generate_cli(const GenerateCliOptions& options, std::ostream& out);

}  // namespace distill
