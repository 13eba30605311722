#include "distill/models/registry.h"

#include "distill/error.h"
#include "models/builders.h"

namespace distill {

namespace {

std::map<std::string, ArchEntry> register_builtin_archs() {
  std::map<std::string, ArchEntry> archs;
  for (ArchEntry entry : {models::mlp_arch(), models::cnn_arch(), models::llama_arch()}) archs.emplace(entry.name, std::move(entry));
  return archs;
}

}  // namespace

const std::map<std::string, ArchEntry>& arch_registry() {
  static const auto registry = register_builtin_archs();
  return registry;
}

const ArchEntry& arch_named(const std::string& name, const std::string& key) {
  const auto& archs = arch_registry();
  auto it = archs.find(name);
  if (it != archs.end()) return it->second;
  std::string names;
  for (const auto& [n, entry] : archs) names += (names.empty() ? "" : " | ") + n;
  throw Error(key + ": must be one of " + names + ", got '" + name + "'");
}

}  // namespace distill
