// Floating-point dtypes by the names users bring from PyTorch and other trainers: float32 / fp32 / f32,
// bfloat16 / bf16, float16 / fp16 / f16 / half. Light (no ATen): the config layer includes it.
#pragma once

#include <string>

namespace distill {

enum class DTypeName { float32, bfloat16, float16 };

// The dtype `name` spells, or distill::Error "<key>: must be one of float32 | bfloat16 | float16 (...), got '...'".
DTypeName dtype_named(const std::string& name, const std::string& key);
// "float32", "bfloat16", "float16".
const char* canonical_name(DTypeName dtype);

}  // namespace distill
