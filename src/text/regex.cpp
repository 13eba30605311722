#include "regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "distill/error.h"
#include "utf8.h"

namespace distill::text {

namespace {

// Bounds on the backtracking work of one match, so that a hostile pattern in a tokenizer.json fails with
// an error instead of hanging. The patterns of real tokenizers stay far below them.
constexpr uint32_t kMatchLimit = 10'000'000;
constexpr uint32_t kDepthLimit = 100'000;

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

struct Regex::Compiled {
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
  ~Compiled() {
    pcre2_match_context_free(context);
    pcre2_code_free(code);
  }
};

Regex::Regex(const std::string& pattern, const std::string& where) : where_(where) {
  auto compiled = std::make_shared<Compiled>();
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE, &error_code, &error_offset, nullptr);
  if (!compiled->code)
    throw Error(where + ": the regular expression does not compile (" + pcre2_message(error_code) +
                " at offset " + std::to_string(error_offset) + "): " + pattern);
  pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);  // without JIT (unsupported CPU) PCRE2 interprets
  compiled->context = pcre2_match_context_create(nullptr);
  pcre2_set_match_limit(compiled->context, kMatchLimit);
  pcre2_set_depth_limit(compiled->context, kDepthLimit);
  compiled_ = std::move(compiled);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
      pcre2_match_data_create_from_pattern(compiled_->code, nullptr), &pcre2_match_data_free);
  size_t pos = 0;
  while (pos <= text.size()) {
    // NO_UTF_CHECK: the text was checked once; PCRE2 would otherwise re-check the rest of it at every match.
    const int rc = pcre2_match(compiled_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), pos,
                               PCRE2_NO_UTF_CHECK, data.get(), compiled_->context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) throw Error(where_ + ": the regular expression failed on the text (" + pcre2_message(rc) + ")");
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
    const size_t begin = ovector[0], end = ovector[1];
    if (end > begin) {
      matches.emplace_back(begin, end);
      pos = end;
    } else {
      // The reference drops empty matches; step over one character and search on.
      if (begin >= text.size()) break;
      pos = begin + utf8::char_length(text, begin);
    }
  }
  return matches;
}

std::string Regex::replace_all(std::string_view text, std::string_view content) const {
  std::string out;
  size_t last = 0;
  for (const auto& [begin, end] : find_all(text)) {
    out.append(text.substr(last, begin - last)).append(content);
    last = end;
  }
  out.append(text.substr(last));
  return out;
}

}  // namespace distill::text
