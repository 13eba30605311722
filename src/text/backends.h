// The two tokenizer implementations behind distill::Tokenizer, built by Tokenizer::load.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "distill/text/tokenizer.h"

namespace distill::text {

// From the text of a tokenizer.json; `file` names it in messages.
std::unique_ptr<Tokenizer> make_hf_tokenizer(std::string_view json_text, const std::string& file);
// From the bytes of a SentencePiece .model file.
std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(std::string_view model_bytes, const std::string& file);

}  // namespace distill::text
