// Teacher log-probabilities from servers and APIs: include/distill/cache/logprob_import.h.
#include "distill/cache/logprob_import.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include <nlohmann/json.hpp>

#include "distill/error.h"

namespace distill::cache {

namespace {

using nlohmann::json;

constexpr double kSentinel = -9999.0;      // APIs' "negligible": at or below it, the entry is dropped
constexpr double kPositiveSlack = 1e-4;    // log p up to this above 0 is rounding (taken as 0)
constexpr double kSumSlack = 1e-3;         // a position's probabilities may sum to 1 + this
constexpr double kDuplicateSlack = 1e-4;   // two entries for one id must agree to this

bool is_byte_piece(const std::string& piece) {
  return piece.size() == 6 && piece[0] == '<' && piece[1] == '0' && piece[2] == 'x' && piece[5] == '>';
}

// A short, printable rendering of a token for messages.
std::string shown(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s.substr(0, 40)) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch == 0x7f) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[ch >> 4];
      out += hex[ch & 15];
    } else {
      out += static_cast<char>(ch);
    }
  }
  if (s.size() > 40) out += "...";
  return out + "\"";
}

class Parser {
 public:
  Parser(const TokenVocabulary& vocab, const std::string& where) : vocab_(vocab), where_(where) {}

  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw Error(where_ + ": " + (path.empty() ? "" : path + ": ") + what);
  }

  const json& member(const json& o, const char* key, const std::string& path) const {
    if (!o.is_object() || !o.contains(key)) fail(path, std::string("'") + key + "' is missing");
    return o.at(key);
  }

  // A log-probability; nullopt for the sentinel.
  std::optional<float> logprob(const json& v, const std::string& path) const {
    if (!v.is_number()) fail(path, "the log-probability is not a number (" + v.dump().substr(0, 40) + ")");
    const double x = v.get<double>();
    if (std::isnan(x)) fail(path, "the log-probability is NaN");
    if (x <= kSentinel) return std::nullopt;
    if (x > kPositiveSlack)
      fail(path, "log-probability " + std::to_string(x) + " is above 0 (a probability above 1); these are not log-probabilities");
    return static_cast<float>(std::min(x, 0.0));
  }

  int32_t id_of_number(const json& v, const std::string& path) const {
    if (!v.is_number_integer()) fail(path, "a token id must be an integer, got " + v.dump().substr(0, 40));
    const int64_t id = v.is_number_unsigned() ? static_cast<int64_t>(std::min<uint64_t>(v.get<uint64_t>(), uint64_t{1} << 40))
                                              : v.get<int64_t>();
    return checked_id(id, path);
  }

  int32_t checked_id(int64_t id, const std::string& path) const {
    if (id < 0 || id >= vocab_.size())
      fail(path, "token id " + std::to_string(id) + " is outside the student's vocabulary of " + std::to_string(vocab_.size()) +
                 "; the student must share the teacher's vocabulary");
    return static_cast<int32_t>(id);
  }

  int32_t id_of_key(const std::string& key, const std::string& path) const {
    if (key.empty() || key.size() > 12 || !std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; }))
      fail(path, "key " + shown(key) + " is not a token id (vLLM's prompt_logprobs are keyed by ids)");
    return checked_id(std::strtoll(key.c_str(), nullptr, 10), path);
  }

  // An OpenAI-style token object: {"token": s, "bytes": [..] | null, "logprob": x}.
  int32_t id_of_token(const json& t, const std::string& path) const {
    const json& token = member(t, "token", path);
    if (!token.is_string()) fail(path + ".token", "is not a string");
    const std::string& s = token.get_ref<const std::string&>();
    if (s.rfind("token_id:", 0) == 0) {
      const std::string digits = s.substr(9);
      if (digits.empty() || digits.size() > 12 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        fail(path + ".token", shown(s) + " is not token_id:N");
      return checked_id(std::strtoll(digits.c_str(), nullptr, 10), path + ".token");
    }
    std::string bytes;
    const bool has_bytes = t.contains("bytes") && !t.at("bytes").is_null();
    if (has_bytes) {
      const json& b = t.at("bytes");
      if (!b.is_array()) fail(path + ".bytes", "is not an array of byte values");
      for (const json& x : b) {
        if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() > 255)
          fail(path + ".bytes", "holds " + x.dump().substr(0, 20) + ", not a byte value 0..255");
        bytes += static_cast<char>(x.get<int64_t>());
      }
    } else {
      bytes = s;
    }
    const std::optional<int32_t> id = vocab_.id_of_bytes(bytes);
    if (!id) {
      std::string listed;
      for (unsigned char c : bytes.substr(0, 16)) listed += (listed.empty() ? "" : ",") + std::to_string(c);
      fail(path, "token " + shown(s) + " (bytes [" + listed + (bytes.size() > 16 ? ",..." : "") +
                     "]) is not in the student's vocabulary; the student's tokenizer must be the teacher's "
                     "(the import is refused)");
    }
    return *id;
  }

  // Sorted most probable first, duplicates merged, probabilities summing to at most 1 (+ slack).
  void finish(std::vector<std::pair<int32_t, float>>& e, const std::string& path) const {
    std::sort(e.begin(), e.end());
    size_t out = 0;
    for (size_t i = 0; i < e.size(); ++i) {
      if (out > 0 && e[out - 1].first == e[i].first) {
        if (std::abs(e[out - 1].second - e[i].second) > kDuplicateSlack)
          fail(path, "token id " + std::to_string(e[i].first) + " appears twice with log-probabilities " +
                         std::to_string(e[out - 1].second) + " and " + std::to_string(e[i].second));
        continue;
      }
      e[out++] = e[i];
    }
    e.resize(out);
    std::sort(e.begin(), e.end(), [](const auto& a, const auto& b) { return a.second > b.second || (a.second == b.second && a.first < b.first); });
    double sum = 0;
    for (const auto& [id, lp] : e) sum += std::exp(static_cast<double>(lp));
    if (sum > 1.0 + kSumSlack)
      fail(path, "the probabilities sum to " + std::to_string(sum) + ", above 1; these are not one distribution's log-probabilities");
  }

  ImportedRecord vllm(const json& r) const {
    ImportedRecord out;
    out.format = LogprobFormat::vllm_prompt;
    const json& ids = member(r, "prompt_token_ids", "");
    const json& lps = member(r, "prompt_logprobs", "");
    if (!ids.is_array()) fail("prompt_token_ids", "is not an array of token ids");
    if (!lps.is_array()) fail("prompt_logprobs", "is not an array (one entry per prompt token, the first null)");
    if (lps.size() != ids.size())
      fail("prompt_logprobs", "has " + std::to_string(lps.size()) + " entries for " + std::to_string(ids.size()) +
                                  " prompt_token_ids; vLLM gives one per token");
    out.ids.reserve(ids.size());
    for (size_t j = 0; j < ids.size(); ++j) out.ids.push_back(id_of_number(ids[j], "prompt_token_ids[" + std::to_string(j) + "]"));
    out.positions.resize(ids.size());
    for (size_t j = 0; j < lps.size(); ++j) {
      ImportedPosition& p = out.positions[j];
      p.token = out.ids[j];
      const json& d = lps[j];
      const std::string path = "prompt_logprobs[" + std::to_string(j) + "]";
      if (d.is_null()) continue;
      if (!d.is_object()) fail(path, "is neither null nor an object of token id -> log-probability");
      p.present = true;
      for (const auto& [key, v] : d.items()) {
        const std::string at = path + "[\"" + key.substr(0, 12) + "\"]";
        const int32_t id = id_of_key(key, at);
        const std::optional<float> lp = logprob(v.is_object() ? member(v, "logprob", at) : v, at);
        if (lp) p.entries.emplace_back(id, *lp);
      }
      finish(p.entries, path);
    }
    return out;
  }

  ImportedRecord openai(const json& r) const {
    ImportedRecord out;
    out.format = LogprobFormat::openai_chat;
    const json& choices = member(r, "choices", "");
    if (!choices.is_array() || choices.empty()) fail("choices", "is not a non-empty array");
    if (choices.size() != 1)
      fail("choices", "holds " + std::to_string(choices.size()) + " choices; a record is one answer, one training "
                      "example: write each choice as its own line (n = 1)");
    const json& lp = member(choices[0], "logprobs", "choices[0]");
    if (lp.is_null()) return out;  // no log-probabilities asked for: every position absent
    const json& content = member(lp, "content", "choices[0].logprobs");
    if (content.is_null()) return out;
    if (!content.is_array()) fail("choices[0].logprobs.content", "is not an array");
    out.positions.resize(content.size());
    for (size_t j = 0; j < content.size(); ++j) {
      const std::string path = "choices[0].logprobs.content[" + std::to_string(j) + "]";
      const json& c = content[j];
      if (!c.is_object()) fail(path, "is not an object");
      ImportedPosition& p = out.positions[j];
      p.token = id_of_token(c, path);
      p.present = true;
      const std::optional<float> own = logprob(member(c, "logprob", path), path + ".logprob");
      bool own_listed = false;
      if (c.contains("top_logprobs") && !c.at("top_logprobs").is_null()) {
        const json& top = c.at("top_logprobs");
        if (!top.is_array()) fail(path + ".top_logprobs", "is not an array");
        for (size_t e = 0; e < top.size(); ++e) {
          const std::string at = path + ".top_logprobs[" + std::to_string(e) + "]";
          const int32_t id = id_of_token(top[e], at);
          const std::optional<float> v = logprob(member(top[e], "logprob", at), at + ".logprob");
          own_listed = own_listed || id == p.token;
          if (v) p.entries.emplace_back(id, *v);
        }
      }
      if (!own_listed && own) p.entries.emplace_back(p.token, *own);
      finish(p.entries, path);
    }
    return out;
  }

 private:
  const TokenVocabulary& vocab_;
  const std::string& where_;
};

}  // namespace

TokenVocabulary::TokenVocabulary(const std::vector<std::string>& token_bytes, const std::vector<std::string>& pieces)
    : size_(static_cast<int64_t>(token_bytes.size())) {
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    const std::string& b = token_bytes[id];
    if (b.empty()) continue;  // control pieces decode to nothing: no API token names them by bytes
    auto [it, fresh] = by_bytes_.emplace(b, static_cast<int32_t>(id));
    if (!fresh && id < pieces.size() && is_byte_piece(pieces[static_cast<size_t>(it->second)]) && !is_byte_piece(pieces[id]))
      it->second = static_cast<int32_t>(id);
  }
}

std::optional<int32_t> TokenVocabulary::id_of_bytes(std::string_view bytes) const {
  const auto it = by_bytes_.find(std::string(bytes));
  if (it == by_bytes_.end()) return std::nullopt;
  return it->second;
}

const char* logprob_format_name(LogprobFormat f) { return f == LogprobFormat::vllm_prompt ? "vllm" : "openai"; }

ImportedRecord parse_logprob_record(std::string_view line, const TokenVocabulary& vocab, const std::string& where) {
  const json r = json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
  if (r.is_discarded() || !r.is_object())
    throw Error(where + ": not a JSON object; each line of the file must be one response (vLLM prompt_logprobs or an "
                "OpenAI-style chat completion with logprobs)");
  Parser p(vocab, where);
  if (r.contains("prompt_logprobs")) return p.vllm(r);
  if (r.contains("choices")) return p.openai(r);
  if (r.contains("response") && r.at("response").is_object() && r.at("response").contains("body")) {
    const json& body = r.at("response").at("body");
    if (body.is_object() && body.contains("choices")) return p.openai(body);
  }
  throw Error(where + ": holds neither 'prompt_logprobs' (vLLM) nor 'choices' (an OpenAI-style chat completion, or a "
              "Batch API line with response.body); see `distill cache-teacher --help`");
}

}  // namespace distill::cache
