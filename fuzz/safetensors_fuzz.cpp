// libFuzzer target for distill::decode_safetensors. Any input must either decode or throw distill::Error;
// anything else (another exception type, a sanitizer report, a hang, a huge allocation) is a bug. A file
// that decodes must also survive a round trip through encode_safetensors with the same names, dtypes,
// shapes, bytes and metadata.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "distill/error.h"
#include "distill/io/safetensors.h"

namespace {

bool same_tensor(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  size_t bytes = a.numel() * a.element_size();
  return bytes == 0 || std::memcmp(a.data_ptr(), b.data_ptr(), bytes) == 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  distill::SafetensorsContents contents;
  try {
    contents = distill::decode_safetensors(data, size, "fuzz.safetensors");
  } catch (const distill::Error&) {
    return 0;  // refused with a message: the expected outcome for most inputs
  }
  std::string bytes = distill::encode_safetensors(contents.tensors, contents.metadata);
  distill::SafetensorsContents again =
      distill::decode_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "re-encoded");
  if (again.tensors.size() != contents.tensors.size() || again.metadata != contents.metadata) std::abort();
  // Zero-byte tensors share a data offset, so their order may differ: compare by name.
  for (const auto& [name, tensor] : contents.tensors) {
    const at::Tensor* other = again.find(name);
    if (!other || !same_tensor(tensor, *other)) std::abort();
  }
  return 0;
}
