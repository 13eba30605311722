// safetensors (https://github.com/huggingface/safetensors), read and written by our own code:
//   8 bytes   little-endian u64 N = header length
//   N bytes   JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//                   "__metadata__": {"key": "string value", ...}}   (padded with spaces to 8 bytes)
//   rest      the tensors' bytes, little-endian, row-major; offsets are relative to the end of the header.
// Files we write load with Python's safetensors.torch.load_file. The reader refuses anything malformed
// (header beyond the file, absurd header size, unknown dtype, offsets out of bounds, overlapping or leaving
// holes, byte counts that do not match the shape) with a distill::Error naming the file and the tensor.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "distill/io/metadata.h"

namespace distill {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct SafetensorsContents {
  NamedTensors tensors;  // in file order (by data offset)
  Metadata metadata;
  const at::Tensor* find(const std::string& name) const;
};

// Largest header we accept: real files have headers of kilobytes to a few megabytes.
constexpr uint64_t kMaxSafetensorsHeaderBytes = 100ull << 20;

// Serialises to bytes (tensors are made contiguous CPU copies as needed; names must be unique).
std::string encode_safetensors(const NamedTensors& tensors, const Metadata& metadata = {});
// Writes atomically (temporary name + fsync + rename).
void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata = {});

SafetensorsContents decode_safetensors(const uint8_t* data, size_t size, const std::string& origin);
SafetensorsContents load_safetensors(const std::string& path);
// The same checks, without reading the file: it is mapped (privately: writing a tensor never changes the file)
// and each tensor whose bytes are aligned for its dtype is a view into the mapping, which lives as long as
// such a tensor does. For model weights, which may be larger than memory would hold twice.
SafetensorsContents map_safetensors(const std::string& path);

// Safetensors dtype name ("F32", "BF16", ...) of a tensor; throws for dtypes safetensors cannot hold.
std::string safetensors_dtype_name(const at::Tensor& t);

}  // namespace distill
