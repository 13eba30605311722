// Private to src/data: the entry of each built-in data format, collected by register_builtin_formats().
#pragma once

#include "distill/data/registry.h"

namespace distill::data {

DataFormatEntry csv_format();  // src/data/csv_source.cpp

}  // namespace distill::data
