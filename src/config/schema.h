// Private to src/config: typed reading and writing of one JSON value, used by the field visitors.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distill::schema {

using json = nlohmann::json;

std::string type_name(const json& v);
[[noreturn]] void throw_wrong_type(const json& v, const std::string& path, const char* expected);
void read_value(const json& v, std::string& out, const std::string& path);
void read_value(const json& v, bool& out, const std::string& path);
void read_value(const json& v, int64_t& out, const std::string& path);
void read_value(const json& v, double& out, const std::string& path);

template <class T> void read_value(const json& v, std::vector<T>& out, const std::string& path);
template <class T> void read_value(const json& v, std::optional<T>& out, const std::string& path) {
  if (v.is_null()) {
    out.reset();
    return;
  }
  T value{};
  read_value(v, value, path);
  out = std::move(value);
}
template <class T> void read_value(const json& v, std::vector<T>& out, const std::string& path) {
  if (!v.is_array()) throw_wrong_type(v, path, "an array");
  out.clear();
  for (size_t i = 0; i < v.size(); ++i) {
    T value{};
    read_value(v[i], value, path + "[" + std::to_string(i) + "]");
    out.push_back(std::move(value));
  }
}

template <class T> json write_value(const T& v) { return json(v); }
template <class T> json write_value(const std::optional<T>& v) { return v ? json(*v) : json(nullptr); }

// Whether a field holds text (so that `--set key=value` takes value verbatim instead of parsing JSON).
template <class T> constexpr bool is_text_v = std::is_same_v<T, std::string> ||
                                              std::is_same_v<T, std::optional<std::string>>;

size_t edit_distance(const std::string& a, const std::string& b);
std::string unknown_key_message(const std::string& prefix, const std::string& key,
                                const std::vector<std::string>& known);

}  // namespace distill::schema
