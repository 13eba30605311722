// Tokenizers for language-model data, read from the files models ship with:
//   - a Hugging Face tokenizer.json whose model is BPE: byte-level (GPT-2, Llama 3, Qwen2) or
//     SentencePiece-style with "▁" and <0xNN> byte fallback (Llama 2, Mistral, TinyLlama);
//   - a SentencePiece .model file (through Debian's libsentencepiece, loaded as a plug-in: see
//     src/text/sentencepiece.cpp for why it is not linked directly).
// Token ids are what the reference implementation gives (Hugging Face tokenizers for tokenizer.json, the
// sentencepiece library for .model), which tests/unit/tokenizer_test.cpp checks against golden ids.
//
// Torch-free: this header and its library (distill_text) include no LibTorch header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distill {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // A tokenizer.json, a SentencePiece .model, or a folder holding tokenizer.json (preferred) or
  // tokenizer.model; a folder's tokenizer_config.json, when present, names the bos and eos tokens.
  // Anything unreadable or unsupported is a distill::Error naming the file (and the JSON key).
  static std::unique_ptr<Tokenizer> load(const std::string& path);
  // The text of a tokenizer.json; `name` stands for the file in messages and path().
  static std::unique_ptr<Tokenizer> from_json(std::string_view json_text, const std::string& name);

  // The ids of `text`, with no bos or eos added (the caller decides). Special tokens written in the text
  // ("<|endoftext|>") become their ids, as in the reference. Text that is not valid UTF-8 is an error.
  // Thread-safe.
  std::vector<int32_t> encode(std::string_view text) const;
  // The text of `ids` as the reference decodes them with special tokens kept. An id outside
  // [0, vocab_size()) that names no token is an error.
  virtual std::string decode(const std::vector<int32_t>& ids) const = 0;

  // The number of ids: the largest id + 1, added tokens included.
  virtual int64_t vocab_size() const = 0;
  // A vocabulary string ("Ġthe", "▁the", "<s>") to its id.
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  virtual std::string id_to_token(int32_t id) const = 0;
  // The bytes a token stands for in decoded text: byte-level characters unmapped, "▁" as a space, <0xNN>
  // as that byte, a special token as its text (an empty string for SentencePiece control tokens, which
  // sentencepiece decodes to nothing). A token may be part of a UTF-8 character.
  virtual std::string token_bytes(int32_t id) const = 0;

  std::optional<int32_t> bos_id() const { return bos_id_; }
  std::optional<int32_t> eos_id() const { return eos_id_; }
  // Hex SHA-256 of the file's bytes: the tokenizer's identity in data manifests.
  const std::string& sha256() const { return sha256_; }
  const std::string& path() const { return path_; }

 protected:
  virtual std::vector<int32_t> encode_valid_utf8(std::string_view text) const = 0;
  void set_identity(std::string path, std::string sha256) {
    path_ = std::move(path);
    sha256_ = std::move(sha256);
  }
  void set_special_ids(std::optional<int32_t> bos, std::optional<int32_t> eos) {
    bos_id_ = bos;
    eos_id_ = eos;
  }

 private:
  std::string path_, sha256_;
  std::optional<int32_t> bos_id_, eos_id_;
};

// Settings of train_sentencepiece_bpe beyond the vocabulary size; the defaults are sentencepiece's own.
struct SentencePieceTrainOptions {
  double character_coverage = 0.9995;  // the share of characters that get their own piece; the rest byte-fall-back
  int64_t max_sentence_length = 4192;  // lines longer than this (bytes) are skipped in training
  bool split_digits = false;           // every digit its own piece (Llama's tokenizer does this)
  std::vector<std::string> user_defined_symbols;  // always kept whole ("<|endoftext|>")
  // Text as it is, as Llama's tokenizer keeps it: no NFKC normalisation, runs of spaces kept, whitespace-only
  // pieces allowed; a newline (never inside a training sentence: lines are sentences) becomes the byte piece
  // <0x0A> instead of a space. false: sentencepiece's defaults (nmt_nfkc, extra whitespace removed).
  bool keep_whitespace = false;
};

// Trains a SentencePiece BPE model with byte fallback on a UTF-8 text file (one sentence per line) and
// writes it atomically to `out_model_path`. Deterministic: one thread and a fixed seed, so the same input
// and settings give the same bytes. ids 0, 1, 2 are <unk>, <s>, </s>.
void train_sentencepiece_bpe(const std::string& input_text_path, int64_t vocab_size, const std::string& out_model_path,
                             const SentencePieceTrainOptions& options = {});

}  // namespace distill
