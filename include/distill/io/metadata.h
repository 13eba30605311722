// String metadata stored with weights (safetensors' "__metadata__"): what a model was built from and what its
// inputs need.
#pragma once

#include <map>
#include <string>

namespace distill {

using Metadata = std::map<std::string, std::string>;

}  // namespace distill
