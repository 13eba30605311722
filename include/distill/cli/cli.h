// The `distill` command line. main() calls run_cli() and turns what it throws into one "error: ..." line.
#pragma once

#include <string>

namespace distill {

// Parses argv and runs the subcommand; returns the process exit code. Throws distill::Error for user errors.
int run_cli(int argc, char** argv);

// `distill inspect FILE`: a readable listing of a safetensors or TorchScript file.
std::string inspect_file(const std::string& path);

}  // namespace distill
