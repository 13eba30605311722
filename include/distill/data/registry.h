// The data formats, by name. Each entry holds the option keys the format adds to the data section (flat
// beside format / path / val_path / shuffle), their checks, and its loader: adding a format touches its own
// file and register_builtin_formats() (src/data/registry.cpp). The config check, `--help-config` and
// `distill validate` all ask this registry.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "distill/config/schema.h"
#include "distill/io/metadata.h"

namespace distill {

struct Config;
struct DataSources;

struct DataFormatEntry {
  std::string name;
  std::string help;
  schema::OptionsSchema options;
  // Opens the training and validation sources of `config` (its data options already checked).
  // `student_metadata`: the metadata stored with a trained student (`distill eval`), whose data transform
  // (e.g. a CSV normalisation) replaces fitting one; null for a run.
  std::function<DataSources(const Config& config, const Metadata* student_metadata)> load;
};

const std::map<std::string, DataFormatEntry>& data_format_registry();
// The entry called `name`; an unknown name throws distill::Error "<key>: must be one of ...".
const DataFormatEntry& data_format_named(const std::string& name, const std::string& key);

}  // namespace distill
