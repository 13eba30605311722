// `distill data tokenizer`: a SentencePiece BPE tokenizer trained on the user's text.
#include <chrono>
#include <iostream>

#include "distill/cli/data_cli.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/text/tokenizer.h"

namespace distill {

void train_tokenizer_cli(const std::string& input, int64_t vocab_size, const std::string& out_path, std::ostream& out) {
  if (!paths::is_regular_file(input)) throw Error("--in: " + input + " is not a readable file");
  // 3 control pieces and 256 byte pieces come first; a vocabulary must have room beyond them.
  if (vocab_size < 260 || vocab_size > 1000000)
    throw Error("--vocab-size: must be in [260, 1000000] (the 3 control and 256 byte pieces come first), got " +
                std::to_string(vocab_size));
  const std::string dir = paths::parent(paths::absolute(out_path));
  std::string why;
  if (!paths::create_directories(dir, &why)) throw Error("--out: cannot create " + dir + " (" + why + ")");
  const auto start = std::chrono::steady_clock::now();
  SentencePieceTrainOptions options;
  options.character_coverage = 1.0;  // small corpora: every character gets a piece, nothing falls back to bytes
  options.keep_whitespace = true;    // newlines and indentation survive (as in Llama's tokenizer)
  train_sentencepiece_bpe(input, vocab_size, out_path, options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto tok = Tokenizer::load(out_path);
  out << "trained a SentencePiece BPE tokenizer of " << tok->vocab_size() << " pieces on " << input << " in "
      << static_cast<int64_t>(seconds * 10) / 10.0 << " s: " << out_path << " (sha256 " << tok->sha256().substr(0, 12)
      << "...)\n";
}

}  // namespace distill
