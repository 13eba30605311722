// libFuzzer target for the teacher cache's chunk decoder and manifest reader (include/distill/cache/
// cache_format.h). Input: byte 0 picks the reader (bit 0: chunk or manifest) and a vocabulary (bits 1-2);
// the rest is a zstd frame or manifest JSON. Any input must decode or throw distill::Error; a decoded chunk
// must hold ids below the vocabulary (or -1 for a row's absent entries), log-probabilities <= 0 and tail masses in [0, 1], in columns of the
// sizes its header states, and must encode back to a frame that decodes to the same columns.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>

#include <nlohmann/json.hpp>

#include "distill/cache/cache_format.h"
#include "distill/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const int64_t kVocab[4] = {1, 300, 65536, 200000};
  const int64_t vocab = kVocab[(data[0] >> 1) & 3];
  const uint8_t* body = data + 1;
  const size_t n = size - 1;
  namespace cache = distill::cache;
  if (data[0] & 1) {
    const auto j = nlohmann::json::parse(body, body + n, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return 0;
    try {
      const cache::Manifest m = cache::manifest_from_json(j, "fuzz/manifest.json");
      if (m.k < 1 || m.k > m.vocab || m.chunk_examples < 1 || m.chunks() < 1) std::abort();
    } catch (const distill::Error&) {
    }
    return 0;
  }
  cache::Chunk c;
  try {
    c = cache::decode_chunk(body, n, vocab, "fuzz/chunks.bin");
  } catch (const distill::Error&) {
    return 0;
  }
  const size_t rows = static_cast<size_t>(c.rows()), entries = rows * static_cast<size_t>(c.k);
  if (c.input_hash.size() != static_cast<size_t>(c.examples) || c.tail_mass.size() != rows ||
      c.ids.size() != entries || c.logprobs.size() != entries)
    std::abort();
  if (!c.counts.empty() && c.counts.size() != rows) std::abort();
  for (size_t i = 0; i < entries; ++i) {
    const size_t r = i / static_cast<size_t>(c.k), j = i % static_cast<size_t>(c.k);
    const bool present = c.counts.empty() || j < c.counts[r];
    if (present && (c.ids[i] < 0 || c.ids[i] >= vocab || !(c.logprobs[i] <= 0.0f))) std::abort();
    if (!present && (c.ids[i] != -1 || c.logprobs[i] != -std::numeric_limits<float>::infinity())) std::abort();
  }
  for (float m : c.tail_mass)
    if (!(m >= 0.0f && m <= 1.0f)) std::abort();
  const std::string again = cache::encode_chunk(c, cache::ValueEncoding::float32, vocab, 1);
  const cache::Chunk d = cache::decode_chunk(again.data(), again.size(), vocab, "fuzz/again");
  if (d.ids != c.ids || d.logprobs != c.logprobs || d.tail_mass != c.tail_mass || d.input_hash != c.input_hash) std::abort();
  const bool full = std::all_of(c.counts.begin(), c.counts.end(), [&](uint32_t m) { return m == static_cast<uint32_t>(c.k); });
  if (full ? !d.counts.empty() : d.counts != c.counts) std::abort();
  return 0;
}
