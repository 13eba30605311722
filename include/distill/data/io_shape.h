// What the data asks of a model: the one contract between data formats and architectures.
#pragma once

#include <cstdint>

namespace distill {

// What the data asks of a model.
struct IoShape {
  int64_t features = 0;  // rows: inputs per example ([N, features] float32); 0 for token sequences
  int64_t classes = 0;   // rows: classes; token sequences: the vocabulary (every id is below it)
  int64_t seq_len = 0;   // token sequences: positions per example ([N, seq_len] int64); 0 for rows
  bool tokens() const { return seq_len > 0; }
};

}  // namespace distill
