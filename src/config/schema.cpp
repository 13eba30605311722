// Generic JSON <-> struct plumbing driven by the visit_fields() lists in config.h: strict types, unknown
// keys named with a suggestion, and the --set override syntax.
#include "distill/config/schema.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include <nlohmann/json.hpp>

#include "distill/config/config.h"
#include "distill/error.h"

namespace distill::schema {

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a value";
  }
}

namespace {
std::string shown(const json& v) {
  std::string s = v.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}
}  // namespace

[[noreturn]] void throw_wrong_type(const json& v, const std::string& path, const char* expected) {
  throw Error(path + ": expected " + expected + ", got " + type_name(v) + " " + shown(v));
}

void read_value(const json& v, std::string& out, const std::string& path) {
  if (!v.is_string()) throw_wrong_type(v, path, "a string");
  out = v.get<std::string>();
}
void read_value(const json& v, bool& out, const std::string& path) {
  if (!v.is_boolean()) throw_wrong_type(v, path, "true or false");
  out = v.get<bool>();
}
void read_value(const json& v, int64_t& out, const std::string& path) {
  if (v.is_number_integer()) {
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      throw Error(path + ": integer " + shown(v) + " is too large");
    out = v.get<int64_t>();
    return;
  }
  if (v.is_number_float()) {
    // Range first: converting a double outside int64's range to int64 is undefined behaviour.
    double d = v.get<double>();
    if (d > -9.2e18 && d < 9.2e18 && d == std::trunc(d)) {
      out = static_cast<int64_t>(d);
      return;
    }
  }
  throw_wrong_type(v, path, "an integer");
}
void read_value(const json& v, PathList& out, const std::string& path) {
  out.items.clear();
  if (v.is_string()) {
    out.items.push_back(v.get<std::string>());
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (!v[i].is_string()) throw_wrong_type(v[i], path + "[" + std::to_string(i) + "]", "a file name");
      out.items.push_back(v[i].get<std::string>());
    }
  } else {
    throw_wrong_type(v, path, "a file name, a glob or a list of them");
  }
  for (size_t i = 0; i < out.items.size(); ++i)
    if (out.items[i].empty()) throw Error(path + (v.is_array() ? "[" + std::to_string(i) + "]" : "") + ": must not be empty");
}
void read_value(const json& v, json& out, const std::string& path) {
  if (!v.is_object() && !v.is_null()) throw_wrong_type(v, path, "an object or null");
  out = v;
}
void read_value(const json& v, double& out, const std::string& path) {
  if (!v.is_number()) throw_wrong_type(v, path, "a number");
  out = v.get<double>();
}

std::string fmt_num(double v) {
  std::ostringstream s;
  s << v;
  return s.str();
}
void range_error(const std::string& key, const std::string& rule, const std::string& got) {
  throw Error(key + ": must be " + rule + ", got " + got);
}
void check_positive(const std::string& key, double v) {
  if (!(v > 0) || !std::isfinite(v)) range_error(key, "> 0", fmt_num(v));
}
void check_non_negative(const std::string& key, double v) {
  if (!(v >= 0) || !std::isfinite(v)) range_error(key, ">= 0", fmt_num(v));
}
void check_one_of(const std::string& key, const std::string& v, const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return;
  std::string list;
  for (size_t i = 0; i < allowed.size(); ++i) list += (i ? " | " : "") + allowed[i];
  range_error(key, "one of " + list, "'" + v + "'");
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t prev = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cur = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, prev + (a[i - 1] == b[j - 1] ? 0 : 1)});
      prev = cur;
    }
  }
  return row[b.size()];
}

std::string unknown_key_message(const std::string& prefix, const std::string& key,
                                const std::vector<std::string>& known) {
  std::ostringstream msg;
  msg << "unknown key '" << prefix << key << "'";
  std::string best;
  size_t best_d = 3;  // suggest only close matches
  for (const auto& k : known) {
    size_t d = edit_distance(key, k);
    if (d < best_d) { best_d = d; best = k; }
  }
  if (!best.empty()) msg << " (did you mean '" << prefix << best << "'?)";
  msg << "; known keys" << (prefix.empty() ? "" : " in " + prefix.substr(0, prefix.size() - 1)) << ": ";
  for (size_t i = 0; i < known.size(); ++i) msg << (i ? ", " : "") << known[i];
  return msg.str();
}

}  // namespace distill::schema
