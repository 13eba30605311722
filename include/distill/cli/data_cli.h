// `distill data tokenizer`.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>

namespace distill {

// Trains a SentencePiece BPE model with byte fallback (include/distill/text/tokenizer.h) on `input` and writes
// it to `out_path`; prints a summary line.
void train_tokenizer_cli(const std::string& input, int64_t vocab_size, const std::string& out_path, std::ostream& out);

}  // namespace distill
