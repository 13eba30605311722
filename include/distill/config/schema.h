// Typed reading and writing of config values, driven by visit_fields() lists: the config sections
// (config.h) and the option structs of each architecture and data format (their registries) use it.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace distill {
struct PathList;
}

namespace distill::schema {

using json = nlohmann::json;

std::string type_name(const json& v);
[[noreturn]] void throw_wrong_type(const json& v, const std::string& path, const char* expected);
void read_value(const json& v, std::string& out, const std::string& path);
void read_value(const json& v, bool& out, const std::string& path);
void read_value(const json& v, int64_t& out, const std::string& path);
void read_value(const json& v, double& out, const std::string& path);
void read_value(const json& v, PathList& out, const std::string& path);  // a string or an array of strings
void read_value(const json& v, json& out, const std::string& path);      // an object, or null

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
                                              std::is_same_v<T, std::optional<std::string>> ||
                                              std::is_same_v<T, PathList> ||
                                              std::is_same_v<T, std::optional<PathList>>;

// One key of a section: what --help-config prints and what `--set` needs to know (text is taken verbatim).
struct FieldInfo {
  std::string key;
  json default_value;
  std::string help;
  bool text = false;
};

template <class S> std::vector<FieldInfo> field_infos() {
  S defaults{};
  std::vector<FieldInfo> out;
  visit_fields(defaults, [&](const char* key, auto& member, const char* help) {
    out.push_back({key, write_value(member), help, is_text_v<std::decay_t<decltype(member)>>});
  });
  return out;
}

// The keys of `options` that S declares, read with strict types (errors name `section.key`); keys S does not
// declare are the caller's to report.
template <class S> S read_fields(const json& options, const std::string& section) {
  S s{};
  visit_fields(s, [&](const char* key, auto& member, const char*) {
    auto it = options.find(key);
    if (it != options.end()) read_value(*it, member, section + "." + key);
  });
  return s;
}

template <class S> json write_fields(const S& s) {
  json out = json::object();
  visit_fields(const_cast<S&>(s), [&](const char* key, auto& member, const char*) { out[key] = write_value(member); });
  return out;
}

// The options an architecture or a data format adds to its section (flat beside the section's common keys):
// their schema, and `check`, which reads them strictly, checks their ranges (errors name `section.key`) and
// returns them with every default filled in.
struct OptionsSchema {
  std::vector<FieldInfo> fields;
  std::function<json(const json& options, const std::string& section)> check;
};

// The schema of option struct S, whose range checks are `validate(s, section)`.
template <class S> OptionsSchema options_schema(void (*validate)(const S&, const std::string& section)) {
  return {field_infos<S>(), [validate](const json& options, const std::string& section) {
            S s = read_fields<S>(options, section);
            validate(s, section);
            return write_fields(s);
          }};
}

// Range-check helpers: each throws distill::Error "<key>: must be <rule>, got <value>".
[[noreturn]] void range_error(const std::string& key, const std::string& rule, const std::string& got);
void check_positive(const std::string& key, double v);
void check_non_negative(const std::string& key, double v);
void check_one_of(const std::string& key, const std::string& v, const std::vector<std::string>& allowed);
std::string fmt_num(double v);

size_t edit_distance(const std::string& a, const std::string& b);
std::string unknown_key_message(const std::string& prefix, const std::string& key,
                                const std::vector<std::string>& known);

}  // namespace distill::schema
