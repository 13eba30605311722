// The built-in architectures, by name. Each entry holds the option keys the architecture adds to its model
// section (flat beside path / arch / weights / init), their checks, and its builder: adding an architecture
// touches its own file and register_builtin_archs() (src/models/registry.cpp). The config check,
// `--help-config` and `distill validate` all ask this registry.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "distill/config/schema.h"

namespace distill {

class Model;
struct IoShape;
struct ModelConfig;

struct ArchEntry {
  std::string name;
  std::string help;
  schema::OptionsSchema options;
  // Builds the model of `config` (its options already checked) for data shaped `io`; `role` ("teacher",
  // "student") names the section in errors. Initialises from ATen's global generator (seed it first).
  std::function<std::unique_ptr<Model>(const ModelConfig& config, const IoShape& io, const std::string& role)> build;
};

const std::map<std::string, ArchEntry>& arch_registry();
// The entry called `name`; an unknown name throws distill::Error "<key>: unknown architecture ...; built-in: ...".
const ArchEntry& arch_named(const std::string& name, const std::string& key);

}  // namespace distill
