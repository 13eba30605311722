// The pieces of a Hugging Face tokenizer.json pipeline that distill runs: normalizers, pre-tokenizers and
// decoders, each built from its JSON object and behaving as the Rust tokenizers crate does.
//
//   normalizers:     Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD
//   pre-tokenizers:  Sequence, ByteLevel, Split, Metaspace
//   decoders:        Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip
//
// Any other type is an error naming the file, the key and the supported types.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "json_node.h"

namespace distill::text {

// A stretch of text between pre-tokenization steps. `at_origin`: it starts where the encoded text starts,
// which Metaspace's prepend_scheme "first" asks about.
struct Piece {
  std::string text;
  bool at_origin = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  // The tokens of a whole decode, transformed in place (some decoders fuse them into one).
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
  // One token on its own, reduced to the bytes it stands for: what decode_chain does to a token in the
  // middle of a text, without stripping and without repairing partial UTF-8.
  virtual void token_bytes(std::string& token) const = 0;
};

std::unique_ptr<Normalizer> read_normalizer(const JsonNode& node);
std::unique_ptr<PreTokenizer> read_pre_tokenizer(const JsonNode& node);
std::unique_ptr<Decoder> read_decoder(const JsonNode& node);

// GPT-2's byte-to-character table (bytes_to_unicode): every byte as a printable character, in UTF-8.
const std::string& byte_level_char(uint8_t byte);

}  // namespace distill::text
