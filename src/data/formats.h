// Private to src/data: the entry of each built-in data format, collected by register_builtin_formats().
#pragma once

#include <memory>

#include "distill/data/registry.h"

namespace distill {
class BatchSource;
class TokenWindows;
}  // namespace distill

namespace distill::data {

DataFormatEntry csv_format();  // src/data/csv_source.cpp
DataFormatEntry token_format();  // src/data/token_source.cpp
DataFormatEntry jsonl_format();  // src/data/jsonl_source.cpp

// Token windows (include/distill/data/token_shards.h) as batches, in a per-epoch seeded order of run.seed
// (in order without `shuffle`): the batch source of both token formats (src/data/token_source.cpp).
std::unique_ptr<BatchSource> token_batch_source(std::shared_ptr<const TokenWindows> windows, bool shuffle, int64_t seed,
                                                int64_t ignore_index, std::string what);

}  // namespace distill::data
