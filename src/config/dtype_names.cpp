#include "distill/config/dtype_names.h"

#include "distill/error.h"

namespace distill {

DTypeName dtype_named(const std::string& name, const std::string& key) {
  if (name == "float32" || name == "fp32" || name == "f32" || name == "float") return DTypeName::float32;
  if (name == "bfloat16" || name == "bf16") return DTypeName::bfloat16;
  if (name == "float16" || name == "fp16" || name == "f16" || name == "half") return DTypeName::float16;
  throw Error(key + ": must be one of float32 | bfloat16 | float16 (also fp32, f32, bf16, fp16, f16), got '" + name + "'");
}

const char* canonical_name(DTypeName dtype) {
  switch (dtype) {
    case DTypeName::bfloat16: return "bfloat16";
    case DTypeName::float16: return "float16";
    default: return "float32";
  }
}

}  // namespace distill
