// Teacher log-probabilities collected from an inference server or an API, one JSON object per line, read
// into positions of (token id, log p) entries for `distill cache-teacher --from FILE.jsonl`. Torch-free
// (fuzzed: fuzz/logprob_import_fuzz.cpp).
//
// A line is one of (detected per line):
//   vLLM, ids ("prompt_logprobs"): the whole sequence scored, as vLLM returns it for prompt_logprobs = k:
//     {"prompt_token_ids": [ids...], "prompt_logprobs": [null, {"<id>": {"logprob": x, ...} | x, ...}, ...]}
//     Entry j (j >= 1) is the distribution of token j given tokens 0..j-1; vLLM adds the actual token when it
//     is not among the top k, so a position may hold k + 1 entries.
//   OpenAI-style chat completion (the response object, or a Batch API output line {"response": {"body": ...}}):
//     {"choices": [{"logprobs": {"content": [{"token": s, "bytes": [..], "logprob": x,
//                                              "top_logprobs": [{"token", "bytes", "logprob"}, ...]}, ...]}}]}
//     Entry j is the distribution of the j-th generated token. Tokens are strings: each is mapped to an id of
//     the student's vocabulary by its bytes ("bytes", else the string's UTF-8), or "token_id:N" as vLLM's
//     return_tokens_as_token_ids writes them. A token that maps to no id refuses the whole import.
// In both: a log-probability <= -9999 is the APIs' "negligible" sentinel and dropped (probability 0); one
// above 0 (beyond 1e-4 of rounding) or not a number is an error, as is a position whose probabilities sum
// above 1 + 1e-3. The sampled token's own log-probability counts as an entry when top_logprobs lacks it.
// Duplicate ids within a position must agree (to 1e-4) and count once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace distill::cache {

// The student's vocabulary as the import maps token strings: the bytes of each id (Tokenizer::token_bytes).
// Bytes shared by several ids (a byte-fallback piece and a normal piece) map to the smallest such id that is
// not a byte-fallback piece "<0xXX>", else the smallest.
class TokenVocabulary {
 public:
  TokenVocabulary() = default;
  // token_bytes[id]: the id's bytes; pieces[id]: its piece string (to recognise byte-fallback pieces).
  TokenVocabulary(const std::vector<std::string>& token_bytes, const std::vector<std::string>& pieces);
  int64_t size() const { return size_; }
  std::optional<int32_t> id_of_bytes(std::string_view bytes) const;

 private:
  int64_t size_ = 0;
  std::unordered_map<std::string, int32_t> by_bytes_;
};

enum class LogprobFormat { vllm_prompt, openai_chat };
const char* logprob_format_name(LogprobFormat f);

struct ImportedPosition {
  int32_t token = -1;   // the token this position's distribution predicts (the actual / sampled one)
  bool present = false;  // false: the record gives no log-probabilities here
  std::vector<std::pair<int32_t, float>> entries;  // (id, log p): most probable first (ties: smaller id)
};

struct ImportedRecord {
  LogprobFormat format = LogprobFormat::vllm_prompt;
  // vllm_prompt: the whole sequence's ids; position j predicts ids[j] (position 0 has nothing before it).
  std::vector<int32_t> ids;
  // vllm_prompt: one per id; openai_chat: one per generated token.
  std::vector<ImportedPosition> positions;
};

// Parses one line. `where` ("FILE:LINE") starts every error message (distill::Error).
ImportedRecord parse_logprob_record(std::string_view line, const TokenVocabulary& vocab, const std::string& where);

}  // namespace distill::cache
