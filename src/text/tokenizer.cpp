// Tokenizer::load: which file a path means, which implementation reads it, and the identity (path, SHA-256)
// and bos/eos every tokenizer carries.
#include <fcntl.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>

#include "backends.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/text/tokenizer.h"
#include "utf8.h"

namespace distill {

namespace {

std::string read_file(const std::string& path) {
  std::string bytes, error;
  if (!paths::read_file(path, bytes, &error)) throw Error("cannot read " + error);
  return bytes;
}

bool ends_with(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

bool looks_like_json(const std::string& bytes) {
  for (char c : bytes) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    return c == '{';
  }
  return false;
}

// tokenizer_config.json's bos_token / eos_token: a string, {"content": ...}, or null (no such token).
std::optional<std::optional<int32_t>> config_token(const nlohmann::json& config, const char* key,
                                                   const Tokenizer& tokenizer, const std::string& config_path) {
  auto it = config.find(key);
  if (it == config.end()) return std::nullopt;
  if (it->is_null()) return std::optional<int32_t>();
  std::string name;
  if (it->is_string()) name = it->get<std::string>();
  else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) name = (*it)["content"].get<std::string>();
  else throw Error(config_path + ": " + key + ": expected a token string or {\"content\": ...}, found " + it->dump());
  auto id = tokenizer.token_to_id(name);
  if (!id)
    throw Error(config_path + ": " + key + ": \"" + name + "\" is not a token of " + tokenizer.path() +
                "; fix the name or remove the key");
  return id;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  std::string file = path, config_path;
  if (paths::is_directory(path)) {
    const std::string json = paths::join(path, "tokenizer.json"), model = paths::join(path, "tokenizer.model");
    if (paths::is_regular_file(json)) file = json;
    else if (paths::is_regular_file(model)) file = model;
    else throw Error(path + ": this folder has neither tokenizer.json nor tokenizer.model");
    if (paths::is_regular_file(paths::join(path, "tokenizer_config.json")))
      config_path = paths::join(path, "tokenizer_config.json");
  } else if (!paths::exists(path)) {
    throw Error(path + ": no such file; give a tokenizer.json, a SentencePiece .model, or a folder holding one");
  }

  const std::string bytes = read_file(file);
  const bool is_json = ends_with(file, ".json") || (!ends_with(file, ".model") && looks_like_json(bytes));
  std::unique_ptr<Tokenizer> tokenizer =
      is_json ? text::make_hf_tokenizer(bytes, file) : text::make_sentencepiece_tokenizer(bytes, file);
  tokenizer->set_identity(file, sha256_hex(bytes));

  if (!config_path.empty()) {
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(read_file(config_path));
    } catch (const nlohmann::json::exception& e) {
      throw Error(config_path + ": not valid JSON (" + e.what() + ")");
    }
    if (!config.is_object()) throw Error(config_path + ": expected a JSON object");
    auto bos = config_token(config, "bos_token", *tokenizer, config_path);
    auto eos = config_token(config, "eos_token", *tokenizer, config_path);
    tokenizer->set_special_ids(bos ? *bos : tokenizer->bos_id(), eos ? *eos : tokenizer->eos_id());
  }
  return tokenizer;
}

std::unique_ptr<Tokenizer> Tokenizer::from_json(std::string_view json_text, const std::string& name) {
  std::unique_ptr<Tokenizer> tokenizer = text::make_hf_tokenizer(json_text, name);
  tokenizer->set_identity(name, sha256_hex(json_text));
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const size_t bad = utf8::first_invalid(text);
  if (bad != std::string_view::npos) {
    static const char kHex[] = "0123456789ABCDEF";
    const uint8_t b = static_cast<uint8_t>(text[bad]);
    throw Error(path_ + ": cannot encode text that is not valid UTF-8 (byte 0x" + kHex[b >> 4] + kHex[b & 0xF] +
                " at offset " + std::to_string(bad) + "); decode or clean the input first");
  }
  return encode_valid_utf8(text);
}

}  // namespace distill
