// libFuzzer target for the tokenizer.json reader (distill::Tokenizer::from_json) and the pipeline it builds.
// Input: "<tokenizer.json text>\0<text to encode>" (without a NUL, a fixed sample text is encoded). Any input
// must either load or throw distill::Error. A loaded tokenizer must encode the text or throw distill::Error
// (text that is not UTF-8, a needed unk_token missing, a regex over its work limit), give ids inside
// [0, vocab_size()), and decode and name those ids; anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "distill/error.h"
#include "distill/text/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const std::string json_text = input.substr(0, nul);
  const std::string text =
      nul == std::string::npos ? std::string("Hello world, it's 2025!\n\t<s>caf\xC3\xA9 \xF0\x9F\x99\x82") : input.substr(nul + 1);

  std::unique_ptr<distill::Tokenizer> tokenizer;
  std::vector<int32_t> ids;
  try {
    tokenizer = distill::Tokenizer::from_json(json_text, "fuzz.json");
    ids = tokenizer->encode(text);
  } catch (const distill::Error&) {
    return 0;
  }
  for (int32_t id : ids)
    if (id < 0 || id >= tokenizer->vocab_size()) std::abort();
  try {
    tokenizer->decode(ids);
    for (size_t i = 0; i < ids.size() && i < 64; ++i) {
      tokenizer->id_to_token(ids[i]);
      tokenizer->token_bytes(ids[i]);
    }
  } catch (const distill::Error& e) {
    // Only a Replace decoder's regex may refuse (PCRE2's work limits); every id from encode has a token.
    if (std::string(e.what()).find("regular expression") == std::string::npos) std::abort();
  }
  return 0;
}
