// Reading a tokenizer.json with errors that name the file and the key path
// ("tokenizer.json: pre_tokenizer.pretokenizers[1].type: ...").
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>

#include "distill/error.h"

namespace distill::text {

class JsonNode {
 public:
  JsonNode(const nlohmann::json& value, std::string path, const std::string& file)
      : value_(&value), path_(std::move(path)), file_(&file) {}

  const nlohmann::json& value() const { return *value_; }
  const std::string& path() const { return path_; }
  const std::string& file() const { return *file_; }

  [[noreturn]] void fail(const std::string& message) const {
    throw Error(*file_ + ": " + (path_.empty() ? std::string("top level") : path_) + ": " + message);
  }

  // A key that is absent or null reads as absent.
  std::optional<JsonNode> find(const char* key) const {
    if (!value_->is_object()) fail("expected an object, found " + type_name());
    auto it = value_->find(key);
    if (it == value_->end() || it->is_null()) return std::nullopt;
    return JsonNode(*it, child_path(key), *file_);
  }
  JsonNode at(const char* key) const {
    auto node = find(key);
    if (!node) JsonNode(*value_, child_path(key), *file_).fail("missing (required here)");
    return *node;
  }
  size_t size() const {
    if (!value_->is_array()) fail("expected an array, found " + type_name());
    return value_->size();
  }
  JsonNode operator[](size_t index) const {
    return JsonNode((*value_)[index], path_ + "[" + std::to_string(index) + "]", *file_);
  }

  std::string str() const {
    if (!value_->is_string()) fail("expected a string, found " + type_name());
    return value_->get<std::string>();
  }
  bool boolean() const {
    if (!value_->is_boolean()) fail("expected true or false, found " + type_name());
    return value_->get<bool>();
  }
  int64_t integer() const {
    if (!value_->is_number_integer()) fail("expected an integer, found " + type_name());
    return value_->get<int64_t>();
  }
  double number() const {
    if (!value_->is_number()) fail("expected a number, found " + type_name());
    return value_->get<double>();
  }
  std::string str_or(const char* key, const std::string& fallback) const {
    auto node = find(key);
    return node ? node->str() : fallback;
  }
  bool bool_or(const char* key, bool fallback) const {
    auto node = find(key);
    return node ? node->boolean() : fallback;
  }
  int64_t int_or(const char* key, int64_t fallback) const {
    auto node = find(key);
    return node ? node->integer() : fallback;
  }

  std::string type_name() const { return value_->is_null() ? "null" : value_->type_name(); }

 private:
  std::string child_path(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  const nlohmann::json* value_;
  std::string path_;
  const std::string* file_;
};

}  // namespace distill::text
