// Private to src/models: the entry of each built-in architecture, collected by register_builtin_archs()
// (src/models/registry.cpp), and the TorchScript loader.
#pragma once

#include <memory>
#include <string>

#include "distill/config/config.h"
#include "distill/models/model.h"
#include "distill/models/registry.h"

namespace distill::models {

ArchEntry mlp_arch();  // src/models/zoo.cpp
ArchEntry cnn_arch();  // src/models/zoo.cpp
ArchEntry llama_arch();  // src/models/llama.cpp

std::unique_ptr<Model> load_torchscript_model(const std::string& path, const std::string& role);

}  // namespace distill::models
