// The regular expressions of tokenizer.json files (pre-tokenizer Split patterns, Replace patterns), compiled
// with PCRE2 in UTF + UCP mode so that \p{L}, \p{N}, \s and case-insensitive groups follow Unicode as the
// reference's Oniguruma does. ^ and $ match at line breaks, as Oniguruma's Ruby syntax makes them. One known
// difference: PCRE2's \s also matches U+180E (MONGOLIAN VOWEL SEPARATOR), which Oniguruma's does not.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distill::text {

class Regex {
 public:
  // Throws distill::Error naming `where` (file and JSON key) when the pattern does not compile.
  Regex(const std::string& pattern, const std::string& where);

  // The [begin, end) byte ranges of the non-overlapping, non-empty matches, left to right. `text` must be
  // valid UTF-8 (it is not checked again). Throws distill::Error when a match exceeds PCRE2's work limits.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Every match replaced by `content`.
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  struct Compiled;
  std::shared_ptr<const Compiled> compiled_;
  std::string where_;
};

}  // namespace distill::text
