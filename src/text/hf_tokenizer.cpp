// A Hugging Face tokenizer.json with a BPE model, run as the Rust tokenizers crate runs it
// (tokenizer/mod.rs, added_vocabulary.rs):
//   1. added tokens that are not "normalized" are cut out of the raw text (leftmost-longest match);
//   2. each remaining section is normalized, and "normalized" added tokens are cut out of that;
//   3. each remaining piece is pre-tokenized into words, and each word goes through the BPE model.
// Decoding maps ids to token strings and runs the decoder chain.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <functional>
#include <unordered_map>

#include "backends.h"
#include "bpe.h"
#include "distill/error.h"
#include "hf_components.h"
#include "json_node.h"
#include "regex.h"
#include "utf8.h"

namespace distill::text {

namespace {

struct AddedToken {
  std::string content;
  std::string match;  // what is searched for: the content, or its normalized form
  int32_t id = 0;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Unicode White_Space, which the reference's \s means when lstrip/rstrip swallow spaces around a token.
bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F ||
         cp == 0x3000;
}

// A trie over the added tokens' bytes, for leftmost-longest matching.
class TokenTrie {
 public:
  bool empty() const { return nodes_.size() == 1; }
  void add(const std::string& pattern, int32_t index) {
    int32_t node = 0;
    for (char c : pattern) {
      const uint8_t b = static_cast<uint8_t>(c);
      int32_t child = -1;
      for (const auto& [byte, next] : nodes_[node].children)
        if (byte == b) child = next;
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.emplace_back(b, child);
        nodes_.emplace_back();
      }
      node = child;
    }
    nodes_[node].index = index;
    starts_[static_cast<uint8_t>(pattern[0])] = true;
  }
  // The longest pattern at text[pos...]: (length, index), or (0, -1).
  std::pair<size_t, int32_t> longest_at(std::string_view text, size_t pos) const {
    std::pair<size_t, int32_t> best{0, -1};
    if (!starts_[static_cast<uint8_t>(text[pos])]) return best;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      const uint8_t b = static_cast<uint8_t>(text[i]);
      int32_t child = -1;
      for (const auto& [byte, next] : nodes_[node].children)
        if (byte == b) child = next;
      if (child < 0) break;
      node = child;
      if (nodes_[node].index >= 0) best = {i + 1 - pos, nodes_[node].index};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;
    int32_t index = -1;
  };
  std::vector<Node> nodes_{1};
  std::array<bool, 256> starts_{};
};

struct Section {
  size_t begin, end;
  int32_t token;  // index into the added tokens, or -1 for text
};

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(std::string_view json_text, const std::string& file);

  std::string decode(const std::vector<int32_t>& ids) const override;
  int64_t vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> token_to_id(std::string_view token) const override;
  std::string id_to_token(int32_t id) const override;
  std::string token_bytes(int32_t id) const override;

 protected:
  std::vector<int32_t> encode_valid_utf8(std::string_view text) const override;

 private:
  void read_added_tokens(const JsonNode& list);
  void find_special_ids(const JsonNode& root);
  std::vector<Section> split_added(std::string_view text, const TokenTrie& trie) const;
  const std::string* token_of(int32_t id) const;

  std::string file_;
  std::unique_ptr<BpeModel> model_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<AddedToken> added_;
  std::unordered_map<std::string, int32_t> added_by_content_;  // content -> index into added_
  std::unordered_map<int32_t, int32_t> added_by_id_;           // id -> index into added_
  TokenTrie raw_trie_, normalized_trie_;
  int64_t vocab_size_ = 0;
};

BpeSpec read_bpe(const JsonNode& model) {
  BpeSpec spec;
  JsonNode vocab = model.at("vocab");
  if (!vocab.value().is_object()) vocab.fail("expected an object of token -> id, found " + vocab.type_name());
  spec.vocab.reserve(vocab.value().size());
  for (auto it = vocab.value().begin(); it != vocab.value().end(); ++it) {
    if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX)
      vocab.fail("\"" + it.key() + "\": expected an id in [0, 2^31), found " + it->dump());
    spec.vocab[it.key()] = static_cast<int32_t>(it->get<int64_t>());
  }

  JsonNode merges = model.at("merges");
  spec.merges.reserve(merges.size());
  for (size_t i = 0; i < merges.size(); ++i) {
    JsonNode merge = merges[i];
    if (merge.value().is_string()) {
      // The older form: "left right".
      const std::string line = merge.str();
      if (line.rfind("#version", 0) == 0) continue;
      const size_t space = line.find(' ');
      if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
        merge.fail("expected two tokens separated by one space, found \"" + line + "\"");
      spec.merges.emplace_back(line.substr(0, space), line.substr(space + 1));
    } else if (merge.value().is_array() && merge.value().size() == 2) {
      spec.merges.emplace_back(merge[0].str(), merge[1].str());
    } else {
      merge.fail("expected \"left right\" or [\"left\", \"right\"], found " + merge.value().dump());
    }
  }

  if (auto dropout = model.find("dropout"); dropout && dropout->number() > 0)
    dropout->fail("BPE-dropout samples a different encoding each time; distill encodes deterministically, so "
                  "set it to null (it is a training-time setting)");
  if (auto unk = model.find("unk_token")) spec.unk_token = unk->str();
  spec.continuing_subword_prefix = model.str_or("continuing_subword_prefix", "");
  spec.end_of_word_suffix = model.str_or("end_of_word_suffix", "");
  spec.fuse_unk = model.bool_or("fuse_unk", false);
  spec.byte_fallback = model.bool_or("byte_fallback", false);
  spec.ignore_merges = model.bool_or("ignore_merges", false);
  return spec;
}

HfTokenizer::HfTokenizer(std::string_view json_text, const std::string& file) : file_(file) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(file + ": not valid JSON (" + e.what() + ")");
  }
  const JsonNode root(doc, "", file_);
  if (!doc.is_object()) root.fail("expected a tokenizer.json object, found " + root.type_name());
  if (auto version = root.find("version"); version && version->str() != "1.0")
    version->fail("\"" + version->str() + "\" is not a tokenizer.json version distill knows (1.0)");

  JsonNode model = root.at("model");
  const std::string type =
      model.find("type") ? model.at("type").str() : (model.find("merges") ? std::string("BPE") : std::string());
  if (type != "BPE")
    (model.find("type") ? model.at("type") : model)
        .fail("\"" + type + "\" is not supported: distill reads BPE tokenizers only (byte-level ones like GPT-2, "
              "Llama 3 and Qwen2, and SentencePiece-style ones with byte fallback like Llama 2 and Mistral); "
              "WordPiece and Unigram tokenizer.json files are not supported");
  model_ = std::make_unique<BpeModel>(read_bpe(model), file_);

  if (auto node = root.find("normalizer")) normalizer_ = read_normalizer(*node);
  if (auto node = root.find("pre_tokenizer")) pre_tokenizer_ = read_pre_tokenizer(*node);
  if (auto node = root.find("decoder")) decoder_ = read_decoder(*node);
  if (auto node = root.find("added_tokens")) read_added_tokens(*node);

  vocab_size_ = static_cast<int64_t>(model_->max_id()) + 1;
  for (const AddedToken& t : added_) vocab_size_ = std::max<int64_t>(vocab_size_, int64_t{t.id} + 1);
  find_special_ids(root);
}

void HfTokenizer::read_added_tokens(const JsonNode& list) {
  for (size_t i = 0; i < list.size(); ++i) {
    JsonNode entry = list[i];
    AddedToken t;
    t.content = entry.at("content").str();
    if (t.content.empty()) continue;  // the reference ignores empty added tokens
    const int64_t id = entry.at("id").integer();
    if (id < 0 || id > INT32_MAX) entry.at("id").fail("expected an id in [0, 2^31), found " + std::to_string(id));
    // A token the model's vocabulary already has keeps the model's id, as the reference assigns it.
    t.id = model_->token_to_id(t.content).value_or(static_cast<int32_t>(id));
    t.special = entry.bool_or("special", false);
    t.single_word = entry.bool_or("single_word", false);
    t.lstrip = entry.bool_or("lstrip", false);
    t.rstrip = entry.bool_or("rstrip", false);
    t.normalized = entry.bool_or("normalized", !t.special);
    t.match = t.normalized && normalizer_ ? normalizer_->normalize(t.content) : t.content;
    if (t.match.empty()) continue;

    auto existing = added_by_content_.find(t.content);
    const int32_t index = existing != added_by_content_.end() ? existing->second : static_cast<int32_t>(added_.size());
    if (existing != added_by_content_.end()) added_[index] = t;
    else added_.push_back(t);
    added_by_content_[t.content] = index;
    added_by_id_[t.id] = index;
  }
  for (size_t i = 0; i < added_.size(); ++i)
    (added_[i].normalized ? normalized_trie_ : raw_trie_).add(added_[i].match, static_cast<int32_t>(i));
}

// bos and eos: the post-processor's template (a special token before or after the text), then the tokens
// that conventionally play the part. A folder's tokenizer_config.json overrides both (Tokenizer::load).
void HfTokenizer::find_special_ids(const JsonNode& root) {
  std::optional<int32_t> bos, eos;
  std::function<void(const JsonNode&)> visit = [&](const JsonNode& node) {
    const std::string type = node.str_or("type", "");
    if (type == "Sequence") {
      if (auto list = node.find("processors"))
        for (size_t i = 0; i < list->size(); ++i) visit((*list)[i]);
    } else if (type == "TemplateProcessing") {
      auto single = node.find("single");
      if (!single || !single->value().is_array() || single->value().empty()) return;
      auto special_id = [&](const nlohmann::json& item) -> std::optional<int32_t> {
        if (!item.is_object() || !item.contains("SpecialToken") || !item["SpecialToken"].is_object()) return std::nullopt;
        const auto& token = item["SpecialToken"];
        if (!token.contains("id") || !token["id"].is_string()) return std::nullopt;
        const std::string name = token["id"].get<std::string>();
        // The template's own table gives the id; else the name is a token.
        if (auto table = node.find("special_tokens"); table && table->value().is_object() && table->value().contains(name)) {
          const auto& entry = table->value()[name];
          if (entry.is_object() && entry.contains("ids") && entry["ids"].is_array() && entry["ids"].size() == 1 &&
              entry["ids"][0].is_number_integer())
            return static_cast<int32_t>(entry["ids"][0].get<int64_t>());
        }
        return token_to_id(name);
      };
      const auto& items = single->value();
      if (!bos) bos = special_id(items.front());
      if (!eos && items.size() > 1) eos = special_id(items.back());
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      auto pair_id = [&](const char* key) -> std::optional<int32_t> {
        auto pair = node.find(key);
        if (!pair || !pair->value().is_array() || pair->value().size() != 2 || !pair->value()[1].is_number_integer())
          return std::nullopt;
        return pair->value()[1].get<int32_t>();
      };
      if (!bos) bos = pair_id("cls");
      if (!eos) eos = pair_id("sep");
    }
  };
  if (auto processor = root.find("post_processor"); processor && processor->value().is_object()) visit(*processor);
  for (const char* name : {"<s>", "<|begin_of_text|>", "<|startoftext|>", "<bos>"})
    if (!bos) bos = token_to_id(name);
  for (const char* name : {"</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"})
    if (!eos) eos = token_to_id(name);
  // A template may name an id that no token has (a broken file): then there is no such token.
  if (bos && !token_of(*bos)) bos.reset();
  if (eos && !token_of(*eos)) eos.reset();
  set_special_ids(bos, eos);
}

// Cuts the added tokens out of `text` as the reference's AddedVocabulary::find_matches does.
std::vector<Section> HfTokenizer::split_added(std::string_view text, const TokenTrie& trie) const {
  std::vector<Section> sections;
  if (trie.empty()) {
    if (!text.empty()) sections.push_back({0, text.size(), -1});
    return sections;
  }
  static const Regex word_char(R"([\p{Alphabetic}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}])", "added-token word check");
  auto is_word_char_at = [&](size_t pos) {
    return !word_char.find_all(text.substr(pos, utf8::char_length(text, pos))).empty();
  };
  auto starts_word = [&](size_t pos) { return pos < text.size() && is_word_char_at(pos); };
  auto ends_word = [&](size_t pos) {
    if (pos == 0) return false;
    size_t start = pos - 1;
    while (start > 0 && (static_cast<uint8_t>(text[start]) & 0xC0) == 0x80) --start;
    return is_word_char_at(start);
  };

  size_t start_offset = 0;
  for (size_t pos = 0; pos < text.size();) {
    auto [length, index] = trie.longest_at(text, pos);
    if (length == 0) {
      ++pos;
      continue;
    }
    size_t start = pos, stop = pos + length;
    pos = stop;
    const AddedToken& token = added_[index];
    if (token.single_word && (ends_word(start) || starts_word(stop))) continue;
    if (token.lstrip) {
      size_t new_start = start;
      while (new_start > start_offset) {
        size_t prev = new_start - 1;
        while (prev > 0 && (static_cast<uint8_t>(text[prev]) & 0xC0) == 0x80) --prev;
        if (!is_white_space(utf8::decode_at(text, prev))) break;
        new_start = prev;
      }
      start = new_start;
    }
    if (token.rstrip) {
      while (stop < text.size() && is_white_space(utf8::decode_at(text, stop))) stop += utf8::char_length(text, stop);
      pos = stop;
    }
    if (start_offset < start) sections.push_back({start_offset, start, -1});
    sections.push_back({start, stop, index});
    start_offset = stop;
  }
  if (start_offset < text.size()) sections.push_back({start_offset, text.size(), -1});
  return sections;
}

std::vector<int32_t> HfTokenizer::encode_valid_utf8(std::string_view text) const {
  std::vector<int32_t> ids;
  std::vector<Piece> pieces;
  for (const Section& section : split_added(text, raw_trie_)) {
    if (section.token >= 0) {
      ids.push_back(added_[section.token].id);
      continue;
    }
    std::string normalized(text.substr(section.begin, section.end - section.begin));
    if (normalizer_) normalized = normalizer_->normalize(std::move(normalized));
    for (const Section& sub : split_added(normalized, normalized_trie_)) {
      if (sub.token >= 0) {
        ids.push_back(added_[sub.token].id);
        continue;
      }
      pieces.clear();
      pieces.push_back({normalized.substr(sub.begin, sub.end - sub.begin), section.begin == 0 && sub.begin == 0});
      if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(pieces);
      for (const Piece& piece : pieces) model_->tokenize(piece.text, ids);
    }
  }
  return ids;
}

const std::string* HfTokenizer::token_of(int32_t id) const {
  if (auto it = added_by_id_.find(id); it != added_by_id_.end()) return &added_[it->second].match;
  return model_->id_to_token(id);
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = token_of(id);
    if (!token)
      throw Error(file_ + ": cannot decode id " + std::to_string(id) + ": no token has it (vocab_size " +
                  std::to_string(vocab_size_) + ")");
    tokens.push_back(*token);
  }
  if (!decoder_) {
    std::string joined;
    for (size_t i = 0; i < tokens.size(); ++i) joined += (i ? " " : "") + tokens[i];
    return joined;
  }
  decoder_->decode_chain(tokens);
  std::string text;
  for (const std::string& t : tokens) text += t;
  return text;
}

std::optional<int32_t> HfTokenizer::token_to_id(std::string_view token) const {
  if (auto it = added_by_content_.find(std::string(token)); it != added_by_content_.end()) return added_[it->second].id;
  return model_->token_to_id(token);
}

std::string HfTokenizer::id_to_token(int32_t id) const {
  const std::string* token = token_of(id);
  if (!token) throw Error(file_ + ": no token has id " + std::to_string(id) + " (vocab_size " + std::to_string(vocab_size_) + ")");
  return *token;
}

std::string HfTokenizer::token_bytes(int32_t id) const {
  std::string token = id_to_token(id);
  if (decoder_) decoder_->token_bytes(token);
  return token;
}

}  // namespace

std::unique_ptr<Tokenizer> make_hf_tokenizer(std::string_view json_text, const std::string& file) {
  return std::make_unique<HfTokenizer>(json_text, file);
}

}  // namespace distill::text
