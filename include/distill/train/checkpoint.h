// Checkpoint files: <dir>/step-<00000042>.safetensors holding "model.*", "optim.*" and "rng.*" tensors with
// the training state in the metadata, and <dir>/latest naming the newest complete one. Each file is written
// to a temporary name, fsynced and renamed, so a checkpoint is either complete or absent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "distill/io/safetensors.h"

namespace distill {

std::string checkpoint_file_name(int64_t step);

// Writes the checkpoint, then the `latest` pointer, then removes all but the newest `keep_last` checkpoints
// (never the one `latest` names). Returns the checkpoint's path.
std::string save_checkpoint(const std::string& dir, int64_t step, const NamedTensors& tensors,
                            const Metadata& metadata, int64_t keep_last);

// Complete checkpoints in `dir`, oldest first (by step).
std::vector<std::string> list_checkpoints(const std::string& dir);
// The checkpoint `latest` names if it exists, else the newest complete one; nullopt when there is none.
std::optional<std::string> latest_checkpoint(const std::string& dir);

}  // namespace distill
