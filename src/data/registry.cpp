#include "distill/data/registry.h"

#include "data/formats.h"
#include "distill/error.h"

namespace distill {

namespace {

std::map<std::string, DataFormatEntry> register_builtin_formats() {
  std::map<std::string, DataFormatEntry> formats;
  for (DataFormatEntry entry : {data::csv_format(), data::token_format(), data::jsonl_format()})
    formats.emplace(entry.name, std::move(entry));
  return formats;
}

}  // namespace

const std::map<std::string, DataFormatEntry>& data_format_registry() {
  static const auto registry = register_builtin_formats();
  return registry;
}

const DataFormatEntry& data_format_named(const std::string& name, const std::string& key) {
  const auto& formats = data_format_registry();
  auto it = formats.find(name);
  if (it != formats.end()) return it->second;
  std::string names;
  for (const auto& [n, entry] : formats) names += (names.empty() ? "" : " | ") + n;
  throw Error(key + ": must be one of " + names + ", got '" + name + "'");
}

}  // namespace distill
