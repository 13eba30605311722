#include "hf_components.h"

#include <utf8proc.h>

#include <array>
#include <cstdlib>
#include <optional>

#include "regex.h"
#include "utf8.h"

namespace distill::text {

namespace {

// --- shared pieces ---------------------------------------------------------------------------------

struct ByteLevelTables {
  std::array<std::string, 256> byte_to_char;
  std::array<int16_t, 324> char_to_byte;  // indexed by code point; every mapped code point is below 324
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables tables = [] {
    ByteLevelTables t;
    t.char_to_byte.fill(-1);
    std::array<bool, 256> printable{};
    for (int b = '!'; b <= '~'; ++b) printable[b] = true;
    for (int b = 0xA1; b <= 0xAC; ++b) printable[b] = true;
    for (int b = 0xAE; b <= 0xFF; ++b) printable[b] = true;
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const int cp = printable[b] ? b : next++;
      utf8::append(t.byte_to_char[b], static_cast<uint32_t>(cp));
      t.char_to_byte[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return tables;
}

// The bytes a byte-level token stands for, or nullopt when one of its characters is not in the table.
std::optional<std::string> unmap_byte_level(const std::string& token) {
  if (utf8::first_invalid(token) != std::string::npos) return std::nullopt;  // raw bytes from an earlier decoder
  const auto& table = byte_level_tables().char_to_byte;
  std::string bytes;
  bytes.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    const uint32_t cp = utf8::decode_at(token, i);
    if (cp >= table.size() || table[cp] < 0) return std::nullopt;
    bytes += static_cast<char>(table[cp]);
    i += utf8::char_length(token, i);
  }
  return bytes;
}

std::string replace_literal(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  size_t last = 0;
  for (size_t pos; (pos = text.find(from, last)) != std::string_view::npos; last = pos + from.size())
    out.append(text.substr(last, pos - last)).append(to);
  out.append(text.substr(last));
  return out;
}

// A Replace or Split pattern: {"String": "..."} (matched literally) or {"Regex": "..."}.
struct Pattern {
  std::optional<std::string> literal;
  std::optional<Regex> regex;

  static Pattern read(const JsonNode& node) {
    Pattern p;
    if (auto s = node.find("String")) {
      p.literal = s->str();
    } else if (auto r = node.find("Regex")) {
      p.regex.emplace(r->str(), r->file() + ": " + r->path());
    } else {
      node.fail("expected {\"String\": ...} or {\"Regex\": ...}");
    }
    return p;
  }

  // Non-empty, non-overlapping match ranges in valid UTF-8 text.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const {
    if (regex) return regex->find_all(text);
    std::vector<std::pair<size_t, size_t>> matches;
    if (literal->empty()) return matches;
    for (size_t pos = 0; (pos = text.find(*literal, pos)) != std::string_view::npos; pos += literal->size())
      matches.emplace_back(pos, pos + literal->size());
    return matches;
  }

  std::string replace_all(std::string_view text, std::string_view content) const {
    return regex ? regex->replace_all(text, content) : replace_literal(text, *literal, content);
  }
};

std::string type_of(const JsonNode& node) { return node.at("type").str(); }

[[noreturn]] void unsupported(const JsonNode& node, const std::string& kind, const std::string& supported) {
  node.at("type").fail("\"" + type_of(node) + "\" is not a supported " + kind + " (supported: " + supported + ")");
}

// --- normalizers -----------------------------------------------------------------------------------

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> steps) : steps_(std::move(steps)) {}
  std::string normalize(std::string text) const override {
    for (const auto& step : steps_) text = step->normalize(std::move(text));
    return text;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prefix) : prefix_(std::move(prefix)) {}
  std::string normalize(std::string text) const override { return text.empty() ? text : prefix_ + text; }

 private:
  std::string prefix_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  std::string normalize(std::string text) const override { return pattern_.replace_all(text, content_); }

 private:
  Pattern pattern_;
  std::string content_;
};

// NFC, NFD, NFKC, NFKD (Qwen2 and GPT-NeoX files use NFC), by utf8proc.
class UnicodeNormalizer final : public Normalizer {
 public:
  UnicodeNormalizer(utf8proc_option_t options, std::string where) : options_(options), where_(std::move(where)) {}
  std::string normalize(std::string text) const override {
    if (text.empty()) return text;
    utf8proc_uint8_t* out = nullptr;
    const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                            static_cast<utf8proc_ssize_t>(text.size()), &out, options_);
    if (n < 0) throw Error(where_ + ": Unicode normalization failed (" + utf8proc_errmsg(n) + ")");
    std::string normalized(reinterpret_cast<const char*>(out), static_cast<size_t>(n));
    std::free(out);
    return normalized;
  }

 private:
  utf8proc_option_t options_;
  std::string where_;
};

// --- pre-tokenizers --------------------------------------------------------------------------------

enum class SplitBehavior { removed, isolated, merged_with_previous, merged_with_next, contiguous };

SplitBehavior read_behavior(const JsonNode& node) {
  const std::string name = node.str();
  if (name == "Removed") return SplitBehavior::removed;
  if (name == "Isolated") return SplitBehavior::isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::merged_with_previous;
  if (name == "MergedWithNext") return SplitBehavior::merged_with_next;
  if (name == "Contiguous") return SplitBehavior::contiguous;
  node.fail("\"" + name + "\" is not a split behavior (Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous)");
}

// Splits one piece at `matches` (sorted, non-overlapping) the way NormalizedString::split does.
void split_piece(const Piece& piece, const std::vector<std::pair<size_t, size_t>>& matches, bool invert,
                 SplitBehavior behavior, std::vector<Piece>& out) {
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  size_t last = 0;
  for (const auto& [begin, end] : matches) {
    if (begin > last) spans.push_back({last, begin, invert});
    spans.push_back({begin, end, !invert});
    last = end;
  }
  if (last < piece.text.size()) spans.push_back({last, piece.text.size(), invert});

  std::vector<Span> kept;  // is_match now means "remove"
  switch (behavior) {
    case SplitBehavior::removed:
      kept = spans;
      break;
    case SplitBehavior::isolated:
      for (Span s : spans) kept.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::contiguous: {
      bool previous = false;
      for (const Span& s : spans) {
        if (s.is_match == previous && !kept.empty()) kept.back().end = s.end;
        else kept.push_back({s.begin, s.end, false});
        previous = s.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_previous: {
      bool previous = false;
      for (const Span& s : spans) {
        if (s.is_match && !previous && !kept.empty()) kept.back().end = s.end;
        else kept.push_back({s.begin, s.end, false});
        previous = s.is_match;
      }
      break;
    }
    case SplitBehavior::merged_with_next: {
      bool previous = false;  // whether the span after this one (in text order) is a match
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous && !kept.empty()) kept.back().begin = it->begin;
        else kept.push_back({it->begin, it->end, false});
        previous = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
  }
  for (const Span& s : kept) {
    if (s.is_match || s.end == s.begin) continue;
    out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
  }
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> steps) : steps_(std::move(steps)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& step : steps_) step->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(Pattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size() * 4);
    for (const Piece& piece : pieces) split_piece(piece, pattern_.find_all(piece.text), invert_, behavior_, out);
    pieces.swap(out);
  }

 private:
  Pattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// GPT-2's pre-tokenizer: optionally a leading space, the GPT-2 regex (use_regex), then every byte as its
// printable character.
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    static const Regex gpt2(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)",
                            "ByteLevel pre-tokenizer");
    std::vector<Piece> out;
    out.reserve(pieces.size() * (use_regex_ ? 4 : 1));
    for (Piece& piece : pieces) {
      if (add_prefix_space_ && (piece.text.empty() || piece.text[0] != ' ')) piece.text.insert(0, " ");
      if (use_regex_) split_piece(piece, gpt2.find_all(piece.text), false, SplitBehavior::isolated, out);
      else out.push_back(std::move(piece));
    }
    const auto& table = byte_level_tables().byte_to_char;
    for (Piece& piece : out) {
      std::string mapped;
      mapped.reserve(piece.text.size() * 2);
      for (char c : piece.text) mapped += table[static_cast<uint8_t>(c)];
      piece.text.swap(mapped);
    }
    pieces.swap(out);
  }

 private:
  bool add_prefix_space_, use_regex_;
};

enum class PrependScheme { always, first, never };

class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)), scheme_(scheme), split_(split) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    std::vector<Piece> out;
    out.reserve(pieces.size());
    for (Piece& piece : pieces) {
      piece.text = replace_literal(piece.text, " ", replacement_);
      const bool starts = piece.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::always || (scheme_ == PrependScheme::first && piece.at_origin)))
        piece.text.insert(0, replacement_);
      if (!split_) {
        out.push_back(std::move(piece));
        continue;
      }
      std::vector<std::pair<size_t, size_t>> matches;
      for (size_t pos = 0; (pos = piece.text.find(replacement_, pos)) != std::string::npos; pos += replacement_.size())
        matches.emplace_back(pos, pos + replacement_.size());
      split_piece(piece, matches, false, SplitBehavior::merged_with_next, out);
    }
    pieces.swap(out);
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
};

std::string read_replacement_char(const JsonNode& node) {
  const std::string r = node.at("replacement").str();
  if (r.empty() || utf8::first_invalid(r) != std::string::npos || utf8::char_length(r, 0) != r.size())
    node.at("replacement").fail("expected exactly one character");
  return r;
}

PrependScheme read_prepend_scheme(const JsonNode& node) {
  std::optional<PrependScheme> scheme;
  if (auto s = node.find("prepend_scheme")) {
    const std::string name = s->str();
    if (name == "always") scheme = PrependScheme::always;
    else if (name == "first") scheme = PrependScheme::first;
    else if (name == "never") scheme = PrependScheme::never;
    else s->fail("\"" + name + "\" is not a prepend scheme (always, first, never)");
  }
  // Files written before prepend_scheme existed say add_prefix_space instead.
  if (auto legacy = node.find("add_prefix_space"); legacy && !legacy->boolean()) {
    if (scheme && *scheme != PrependScheme::never)
      legacy->fail("false contradicts prepend_scheme; drop one of them");
    return PrependScheme::never;
  }
  return scheme.value_or(PrependScheme::always);
}

// --- decoders --------------------------------------------------------------------------------------

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> steps) : steps_(std::move(steps)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& step : steps_) step->decode_chain(tokens);
  }
  void token_bytes(std::string& token) const override {
    for (const auto& step : steps_) step->token_bytes(token);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

// Every token's characters back to bytes (a token with a character outside the table, such as an added
// token, is taken as its own UTF-8), then the whole as one string with invalid UTF-8 replaced.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    for (const std::string& token : tokens) {
      auto unmapped = unmap_byte_level(token);
      bytes += unmapped ? *unmapped : token;
    }
    tokens.assign(1, utf8::lossy(bytes));
  }
  void token_bytes(std::string& token) const override {
    if (auto unmapped = unmap_byte_level(token)) token = std::move(*unmapped);
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, PrependScheme scheme)
      : replacement_(std::move(replacement)), scheme_(scheme) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i)
      tokens[i] = replace_literal(tokens[i], replacement_, i == 0 && scheme_ != PrependScheme::never ? "" : " ");
  }
  void token_bytes(std::string& token) const override { token = replace_literal(token, replacement_, " "); }

 private:
  std::string replacement_;
  PrependScheme scheme_;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content) : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) token_bytes(token);
  }
  void token_bytes(std::string& token) const override {
    // A regex needs valid UTF-8; a token that is not (a raw byte) has nothing it could match anyway.
    if (pattern_.regex && utf8::first_invalid(token) != std::string::npos) return;
    token = pattern_.replace_all(token, content_);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

std::optional<uint8_t> parse_byte_token(const std::string& token) {
  if (token.size() != 6 || token.compare(0, 3, "<0x") != 0 || token[5] != '>') return std::nullopt;
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(token[3]), lo = hex(token[4]);
  if (hi < 0 || lo < 0) return std::nullopt;
  return static_cast<uint8_t>(hi * 16 + lo);
}

// Runs of <0xNN> tokens become the text they spell; a run that is not valid UTF-8 becomes one U+FFFD per
// byte token.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens.size());
    std::string run;
    size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (utf8::first_invalid(run) == std::string::npos) {
        out.push_back(run);
      } else {
        for (size_t i = 0; i < run_tokens; ++i) out.emplace_back(utf8::kReplacement);
      }
      run.clear();
      run_tokens = 0;
    };
    for (std::string& token : tokens) {
      if (auto byte = parse_byte_token(token)) {
        run += static_cast<char>(*byte);
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(token));
      }
    }
    flush();
    tokens.swap(out);
  }
  void token_bytes(std::string& token) const override {
    if (auto byte = parse_byte_token(token)) token.assign(1, static_cast<char>(*byte));
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const std::string& token : tokens) all += token;
    tokens.assign(1, std::move(all));
  }
  void token_bytes(std::string&) const override {}
};

// Removes up to `start` leading and `stop` trailing copies of one character from every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(std::string content, int64_t start, int64_t stop)
      : content_(std::move(content)), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& token : tokens) {
      size_t begin = 0, end = token.size();
      for (int64_t i = 0; i < start_ && token.compare(begin, content_.size(), content_) == 0 && begin < end; ++i)
        begin += content_.size();
      for (int64_t i = 0; i < stop_ && end >= begin + content_.size() &&
                          token.compare(end - content_.size(), content_.size(), content_) == 0;
           ++i)
        end -= content_.size();
      token = token.substr(begin, end - begin);
    }
  }
  void token_bytes(std::string&) const override {}

 private:
  std::string content_;
  int64_t start_, stop_;
};

}  // namespace

const std::string& byte_level_char(uint8_t byte) { return byte_level_tables().byte_to_char[byte]; }

std::unique_ptr<Normalizer> read_normalizer(const JsonNode& node) {
  const std::string type = type_of(node);
  if (type == "Sequence") {
    JsonNode list = node.at("normalizers");
    std::vector<std::unique_ptr<Normalizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(read_normalizer(list[i]));
    return std::make_unique<SequenceNormalizer>(std::move(steps));
  }
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(node.at("prepend").str());
  const auto unicode = [&](int options) {
    return std::make_unique<UnicodeNormalizer>(static_cast<utf8proc_option_t>(UTF8PROC_STABLE | options),
                                               node.file() + ": " + node.path());
  };
  if (type == "NFC") return unicode(UTF8PROC_COMPOSE);
  if (type == "NFD") return unicode(UTF8PROC_DECOMPOSE);
  if (type == "NFKC") return unicode(UTF8PROC_COMPOSE | UTF8PROC_COMPAT);
  if (type == "NFKD") return unicode(UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT);
  if (type == "Replace")
    return std::make_unique<ReplaceNormalizer>(Pattern::read(node.at("pattern")), node.at("content").str());
  unsupported(node, "normalizer", "Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD");
}

std::unique_ptr<PreTokenizer> read_pre_tokenizer(const JsonNode& node) {
  const std::string type = type_of(node);
  if (type == "Sequence") {
    JsonNode list = node.at("pretokenizers");
    std::vector<std::unique_ptr<PreTokenizer>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(read_pre_tokenizer(list[i]));
    return std::make_unique<SequencePreTokenizer>(std::move(steps));
  }
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(node.bool_or("add_prefix_space", true), node.bool_or("use_regex", true));
  if (type == "Split")
    return std::make_unique<SplitPreTokenizer>(Pattern::read(node.at("pattern")), read_behavior(node.at("behavior")),
                                               node.at("invert").boolean());
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(read_replacement_char(node), read_prepend_scheme(node),
                                                   node.bool_or("split", true));
  unsupported(node, "pre-tokenizer", "Sequence, ByteLevel, Split, Metaspace");
}

std::unique_ptr<Decoder> read_decoder(const JsonNode& node) {
  const std::string type = type_of(node);
  if (type == "Sequence") {
    JsonNode list = node.at("decoders");
    std::vector<std::unique_ptr<Decoder>> steps;
    for (size_t i = 0; i < list.size(); ++i) steps.push_back(read_decoder(list[i]));
    return std::make_unique<SequenceDecoder>(std::move(steps));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(read_replacement_char(node), read_prepend_scheme(node));
  if (type == "Replace")
    return std::make_unique<ReplaceDecoder>(Pattern::read(node.at("pattern")), node.at("content").str());
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    const std::string content = node.at("content").str();
    if (content.empty() || utf8::first_invalid(content) != std::string::npos ||
        utf8::char_length(content, 0) != content.size())
      node.at("content").fail("expected exactly one character");
    const int64_t start = node.int_or("start", 0), stop = node.int_or("stop", 0);
    if (start < 0 || stop < 0) node.fail("start and stop must be >= 0");
    return std::make_unique<StripDecoder>(content, start, stop);
  }
  unsupported(node, "decoder", "Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip");
}

}  // namespace distill::text
