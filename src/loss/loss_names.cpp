#include "distill/loss/loss_names.h"

#include <utility>

#include "distill/error.h"

namespace distill {
namespace {

template <class T, size_t N>
T named(const std::string& name, const std::string& key, const std::pair<const char*, T> (&words)[N]) {
  std::string list;
  for (const auto& [word, value] : words) {
    if (name == word) return value;
    list += (list.empty() ? "" : " | ") + std::string(word);
  }
  throw Error(key + ": must be one of " + list + ", got '" + name + "'");
}

}  // namespace

kernels::Divergence divergence_named(const std::string& name, const std::string& key) {
  static const std::pair<const char*, kernels::Divergence> words[] = {{"forward_kl", kernels::Divergence::forward_kl},
                                                                      {"reverse_kl", kernels::Divergence::reverse_kl},
                                                                      {"jsd", kernels::Divergence::jsd}};
  return named(name, key, words);
}

kernels::TopkTail topk_tail_named(const std::string& name, const std::string& key) {
  static const std::pair<const char*, kernels::TopkTail> words[] = {{"ignore", kernels::TopkTail::ignore},
                                                                    {"tail", kernels::TopkTail::tail}};
  return named(name, key, words);
}

VocabPolicy vocab_policy_named(const std::string& name, const std::string& key) {
  static const std::pair<const char*, VocabPolicy> words[] = {{"error", VocabPolicy::error},
                                                              {"truncate", VocabPolicy::truncate}};
  return named(name, key, words);
}

}  // namespace distill
