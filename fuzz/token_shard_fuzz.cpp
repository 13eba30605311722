// libFuzzer target for the token shard and mask readers (include/distill/data/token_shards.h) and the windows
// served from a shard. Input: byte 0 picks the reader (bit 0: shard or mask) and a vocabulary limit (bits
// 1-3), byte 1 the seq_len (1..16) or a mask's shard count; the rest is the file. Any input must either parse
// or throw distill::Error. A parsed shard must hold ids below the limit, and every window must give inputs
// and next-token targets equal to the shard's tokens; a parsed mask holds only 0 and 1.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "distill/data/token_shards.h"
#include "distill/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  static const int64_t kLimits[8] = {0, 1, 2, 255, 256, 50257, 65536, int64_t{1} << 32};
  const bool mask_mode = data[0] & 1;
  const int64_t limit = kLimits[(data[0] >> 1) & 7];
  const uint8_t* body = data + 2;
  const size_t body_size = size - 2;
  if (mask_mode) {
    // Counts that match the body's length are the interesting ones; byte 1 gives small others.
    const int64_t count = body_size >= distill::kTokenHeaderBytes
                              ? static_cast<int64_t>(body_size - distill::kTokenHeaderBytes) - (data[1] & 1)
                              : data[1];
    const uint8_t* mask = nullptr;
    try {
      mask = distill::parse_token_mask(body, body_size, "fuzz.mask", count, "fuzz.bin");
    } catch (const distill::Error&) {
      return 0;
    }
    for (int64_t i = 0; i < count; ++i)
      if (mask[i] > 1) std::abort();
    return 0;
  }
  const int64_t seq_len = 1 + (data[1] & 15);
  distill::TokenShardView view;
  try {
    view = distill::parse_token_shard(body, body_size, "fuzz.bin", limit);
  } catch (const distill::Error&) {
    return 0;
  }
  if (view.count <= 0 || (view.width != 2 && view.width != 4) ||
      distill::kTokenHeaderBytes + static_cast<size_t>(view.count) * static_cast<size_t>(view.width) != body_size)
    std::abort();
  int64_t max_token = -1;
  for (int64_t i = 0; i < view.count; ++i) {
    const int64_t id = view.token(i);
    if (limit > 0 && id >= limit) std::abort();
    max_token = id > max_token ? id : max_token;
  }
  if (max_token != view.max_token) std::abort();
  distill::TokenWindows windows({distill::TokenSegment::packed("fuzz.bin", view, nullptr, seq_len, nullptr)}, seq_len);
  std::vector<int64_t> in(static_cast<size_t>(seq_len)), out(static_cast<size_t>(seq_len));
  for (int64_t w = 0; w < windows.size() && w < 256; ++w) {
    if (windows.fill(w, in.data(), out.data(), -100) != seq_len) std::abort();
    for (int64_t i = 0; i < seq_len; ++i)
      if (in[i] != view.token(w * seq_len + i) || out[i] != view.token(w * seq_len + i + 1)) std::abort();
  }
  return 0;
}
