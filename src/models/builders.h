// Private to src/models: the constructors make_model() dispatches to by name.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <unordered_map>

#include "distill/config/config.h"
#include "distill/models/model.h"

namespace distill::models {

using ModelFactory = std::function<std::unique_ptr<Model>(const ModelConfig&, const IoShape&, const std::string& role)>;

// Built-in architectures by name ("mlp", "cnn"), filled by register_builtin_models().
const std::unordered_map<std::string, ModelFactory>& builtin_models();

std::unique_ptr<Model> load_torchscript_model(const std::string& path, const std::string& role);

}  // namespace distill::models
