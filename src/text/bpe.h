// The BPE model of a tokenizer.json ("model": {"type": "BPE", ...}), as the Hugging Face tokenizers crate
// runs it (models/bpe/model.rs): a word is split into characters (with continuing_subword_prefix and
// end_of_word_suffix), characters missing from the vocabulary become <0xNN> byte tokens (byte_fallback) or
// the unknown token (fused when fuse_unk), then the pair of adjacent tokens with the lowest merge rank is
// merged, leftmost first, until no pair has a merge. With ignore_merges a word that is itself in the
// vocabulary is one token.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace distill::text {

struct BpeSpec {
  std::unordered_map<std::string, int32_t> vocab;
  std::vector<std::pair<std::string, std::string>> merges;  // in rank order
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix;
  std::string end_of_word_suffix;
  bool fuse_unk = false;
  bool byte_fallback = false;
  bool ignore_merges = false;
};

class BpeModel {
 public:
  // `where` names the file; a merge naming a token missing from the vocabulary is an error.
  BpeModel(BpeSpec spec, const std::string& where);

  // Appends the ids of one pre-tokenized word. Thread-safe.
  void tokenize(std::string_view word, std::vector<int32_t>& ids) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // null when no token has this id
  int32_t max_id() const { return max_id_; }  // -1 for an empty vocabulary

 private:
  std::vector<int32_t> merge_word(std::string_view word) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::unordered_map<int32_t, const std::string*> vocab_r_;  // into vocab_'s keys; ids may be sparse
  int32_t max_id_ = -1;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
  int32_t byte_ids_[256];  // the id of "<0xNN>", or -1
  std::optional<std::string> unk_token_;
  std::string continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_, byte_fallback_, ignore_merges_;
  std::string where_;

  // Words seen before, as the reference keeps them: short words only, a bounded number.
  static constexpr size_t kCacheMaxWordBytes = 256;
  static constexpr size_t kCacheCapacity = 10'000;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace distill::text
