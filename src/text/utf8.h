// UTF-8 helpers shared by the tokenizers: validation, stepping over characters, and the lossy decoding that
// Rust's String::from_utf8_lossy (and so the Hugging Face reference) applies to decoded bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace distill::utf8 {

// The length of the well-formed UTF-8 sequence starting at s[i], or 0 when it is not one (a stray
// continuation byte, an overlong form, a surrogate, a code point past U+10FFFF, or a truncated sequence).
inline size_t sequence_length(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  const size_t left = s.size() - i;
  if (c < 0x80) return 1;
  if (c < 0xC2) return 0;
  auto cont = [&](size_t k) { return k < s.size() && (b(k) & 0xC0) == 0x80; };
  if (c < 0xE0) return left >= 2 && cont(i + 1) ? 2 : 0;
  if (c < 0xF0) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c < 0xF5) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;   // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

// The offset of the first byte that does not start a well-formed sequence, or npos when `s` is valid.
inline size_t first_invalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return std::string_view::npos;
}

// The length of the character at s[i] in text already known to be valid.
inline size_t char_length(std::string_view s, size_t i) {
  const uint8_t c = static_cast<uint8_t>(s[i]);
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

// The code point at s[i] in valid text.
inline uint32_t decode_at(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[k])); };
  switch (char_length(s, i)) {
    case 1: return b(i);
    case 2: return (b(i) & 0x1F) << 6 | (b(i + 1) & 0x3F);
    case 3: return (b(i) & 0x0F) << 12 | (b(i + 1) & 0x3F) << 6 | (b(i + 2) & 0x3F);
    default: return (b(i) & 0x07) << 18 | (b(i + 1) & 0x3F) << 12 | (b(i + 2) & 0x3F) << 6 | (b(i + 3) & 0x3F);
  }
}

inline void append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | cp >> 6);
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | cp >> 12);
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | cp >> 18);
    out += static_cast<char>(0x80 | (cp >> 12 & 0x3F));
    out += static_cast<char>(0x80 | (cp >> 6 & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Valid sequences are copied; each maximal ill-formed subsequence becomes one U+FFFD (the Unicode
// "substitution of maximal subparts" practice that Rust and the WHATWG decoder follow).
inline std::string lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const size_t n = sequence_length(s, i);
    if (n > 0) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    // The longest prefix of a valid sequence starting here counts as one bad subsequence.
    const uint8_t c = static_cast<uint8_t>(s[i]);
    size_t bad = 1;
    auto cont = [&](size_t k, uint8_t lo, uint8_t hi) {
      if (k >= s.size()) return false;
      const uint8_t v = static_cast<uint8_t>(s[k]);
      return v >= lo && v <= hi;
    };
    if (c >= 0xC2 && c <= 0xF4) {
      uint8_t lo = 0x80, hi = 0xBF;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
      const size_t need = c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
      if (cont(i + 1, lo, hi)) {
        bad = 2;
        while (bad < need && cont(i + bad, 0x80, 0xBF)) ++bad;
      }
    }
    out.append(kReplacement);
    i += bad;
  }
  return out;
}

}  // namespace distill::utf8
