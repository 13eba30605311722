#include "bpe.h"

#include <queue>

#include "distill/error.h"
#include "utf8.h"

namespace distill::text {

namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
}

std::string byte_token(uint8_t byte) {
  static const char kHex[] = "0123456789ABCDEF";
  return std::string("<0x") + kHex[byte >> 4] + kHex[byte & 0xF] + ">";
}

}  // namespace

BpeModel::BpeModel(BpeSpec spec, const std::string& where)
    : vocab_(std::move(spec.vocab)),
      unk_token_(std::move(spec.unk_token)),
      continuing_subword_prefix_(std::move(spec.continuing_subword_prefix)),
      end_of_word_suffix_(std::move(spec.end_of_word_suffix)),
      fuse_unk_(spec.fuse_unk),
      byte_fallback_(spec.byte_fallback),
      ignore_merges_(spec.ignore_merges),
      where_(where) {
  vocab_r_.reserve(vocab_.size());
  for (const auto& [token, id] : vocab_) {
    if (id < 0) throw Error(where + ": model.vocab: \"" + token + "\" has the negative id " + std::to_string(id));
    // Two tokens sharing an id (a broken file) decode as the smaller string, whatever the hash order.
    auto [it, inserted] = vocab_r_.emplace(id, &token);
    if (!inserted && token < *it->second) it->second = &token;
    max_id_ = std::max(max_id_, id);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = vocab_.find(byte_token(static_cast<uint8_t>(b)));
    byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
  }

  merges_.reserve(spec.merges.size());
  const size_t prefix_len = continuing_subword_prefix_.size();
  for (size_t rank = 0; rank < spec.merges.size(); ++rank) {
    const auto& [left, right] = spec.merges[rank];
    const std::string at = where + ": model.merges[" + std::to_string(rank) + "]: ";
    auto left_it = vocab_.find(left), right_it = vocab_.find(right);
    if (left_it == vocab_.end()) throw Error(at + "\"" + left + "\" is not in model.vocab");
    if (right_it == vocab_.end()) throw Error(at + "\"" + right + "\" is not in model.vocab");
    // The merged token drops the right part's continuing-subword prefix, as the reference builds it.
    std::string merged = left + (right.size() >= prefix_len ? right.substr(prefix_len) : right);
    auto merged_it = vocab_.find(merged);
    if (merged_it == vocab_.end())
      throw Error(at + "the merge of \"" + left + "\" and \"" + right + "\" gives \"" + merged +
                  "\", which is not in model.vocab");
    // A pair listed twice keeps its last rank, as the reference's map does.
    merges_[pair_key(left_it->second, right_it->second)] = {static_cast<int32_t>(rank), merged_it->second};
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  auto it = vocab_r_.find(id);
  return it == vocab_r_.end() ? nullptr : it->second;
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    auto it = vocab_.find(std::string(word));
    if (it != vocab_.end()) {
      ids.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() < kCacheMaxWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    auto it = cache_.find(std::string(word));
    if (it != cache_.end()) {
      ids.insert(ids.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t> word_ids = merge_word(word);
  ids.insert(ids.end(), word_ids.begin(), word_ids.end());
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kCacheCapacity) cache_.clear();  // a bounded cache that keeps recent words
    cache_.emplace(std::string(word), std::move(word_ids));
  }
}

std::vector<int32_t> BpeModel::merge_word(std::string_view word) const {
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  auto add = [&](int32_t id) {
    const int32_t index = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, index - 1, index + 1, false});
  };

  int32_t pending_unk = -1;  // an unknown token not yet added (it grows while fuse_unk)
  auto unk_id = [&]() -> int32_t {
    auto it = vocab_.find(*unk_token_);
    if (it == vocab_.end())
      throw Error(where_ + ": model.unk_token \"" + *unk_token_ + "\" is needed but is not in model.vocab");
    return it->second;
  };

  std::string piece;
  for (size_t i = 0; i < word.size();) {
    const size_t n = utf8::char_length(word, i);
    const bool first = i == 0, last = i + n >= word.size();
    piece.assign(word.substr(i, n));
    i += n;
    if (!first && !continuing_subword_prefix_.empty()) piece.insert(0, continuing_subword_prefix_);
    if (last && !end_of_word_suffix_.empty()) piece += end_of_word_suffix_;

    auto it = vocab_.find(piece);
    if (it != vocab_.end()) {
      if (pending_unk >= 0) add(pending_unk);
      pending_unk = -1;
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      bool all_bytes = true;
      for (char c : piece) all_bytes = all_bytes && byte_ids_[static_cast<uint8_t>(c)] >= 0;
      if (all_bytes) {
        // As the reference: a pending unknown token stays pending across byte tokens.
        for (char c : piece) add(byte_ids_[static_cast<uint8_t>(c)]);
        continue;
      }
    }
    if (unk_token_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      if (pending_unk < 0 || !fuse_unk_) pending_unk = unk_id();
    }
  }
  if (pending_unk >= 0) add(pending_unk);
  if (!symbols.empty()) symbols.back().next = -1;

  // Lowest rank first, then leftmost; entries made stale by an earlier merge are skipped when popped.
  struct Candidate {
    int32_t rank, pos, merged_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> queue;
  auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    auto it = merges_.find(pair_key(symbols[pos].id, symbols[next].id));
    if (it != merges_.end()) queue.push({it->second.first, pos, it->second.second});
  };
  for (int32_t pos = 0; pos + 1 < static_cast<int32_t>(symbols.size()); ++pos) push_pair(pos);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (left.removed || left.next < 0) continue;
    Symbol& right = symbols[left.next];
    auto it = merges_.find(pair_key(left.id, right.id));
    if (it == merges_.end() || it->second.second != top.merged_id) continue;
    left.id = top.merged_id;
    right.removed = true;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }

  std::vector<int32_t> ids;
  for (const Symbol& s : symbols)
    if (!s.removed) ids.push_back(s.id);
  return ids;
}

}  // namespace distill::text
