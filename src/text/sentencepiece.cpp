// SentencePiece .model files and the BPE trainer, through Debian's libsentencepiece loaded as a plug-in.
//
// Why a plug-in: Debian's libsentencepiece.so.0 carries and exports its own protobuf-lite (3.14), while
// Debian's LibTorch links libprotobuf.so.32 (3.21). In one process the dynamic linker binds one library's
// protobuf calls to the other's copy: a program linking both crashed before main (libprotobuf's static
// initialisers calling into sentencepiece's copy), whichever came first on the link line, and with
// libprotobuf first sentencepiece aborted on the version check. So nothing in distill links
// libsentencepiece. distill_text dlopens libdistill_spm.so (spm_plugin.cpp, which does) with RTLD_LOCAL, so
// that its symbols stay out of the process's namespace, and RTLD_DEEPBIND, so that sentencepiece binds to its
// own protobuf first. DEEPBIND's price: code in the plug-in must not use std::cout or std::cerr (it would bind
// to libstdc++'s own, never-constructed copies instead of the executable's), so sentencepiece's logging is off.
// AddressSanitizer refuses RTLD_DEEPBIND: sanitized builds load the plug-in without it, which works only while
// no other protobuf is loaded, and say so otherwise.
#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <cstring>

#include "backends.h"
#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "spm_plugin.h"

#ifndef DISTILL_SPM_PLUGIN_PATH
#define DISTILL_SPM_PLUGIN_PATH "libdistill_spm.so"
#endif

#if defined(__SANITIZE_ADDRESS__)
#define DISTILL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define DISTILL_ASAN 1
#endif
#endif

namespace distill {

namespace {

constexpr const char* kPluginName = "libdistill_spm.so";

#ifdef DISTILL_ASAN
bool protobuf_loaded() {
  bool found = false;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        if (info->dlpi_name && std::strstr(info->dlpi_name, "libprotobuf")) *static_cast<bool*>(data) = true;
        return 0;
      },
      &found);
  return found;
}
#endif

// Where the plug-in may be: $DISTILL_SPM_PLUGIN alone when set; else beside the running program, then where
// the build put it.
std::vector<std::string> plugin_candidates() {
  if (const char* env = std::getenv("DISTILL_SPM_PLUGIN"); env && *env) return {env};
  std::vector<std::string> candidates;
  char exe[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) candidates.push_back(paths::join(paths::parent(std::string(exe, static_cast<size_t>(n))), kPluginName));
  candidates.emplace_back(DISTILL_SPM_PLUGIN_PATH);
  return candidates;
}

const spm::Plugin& plugin() {
  struct Loaded {
    const spm::Plugin* plugin = nullptr;
    std::string error;
  };
  static const Loaded loaded = [] {
    Loaded result;
#ifdef DISTILL_ASAN
    const int flags = RTLD_NOW | RTLD_LOCAL;
    if (protobuf_loaded()) {
      result.error = "SentencePiece files cannot be read in an AddressSanitizer build of a program that also loads "
                     "libprotobuf (LibTorch): the plug-in needs RTLD_DEEPBIND, which ASan refuses; use a build "
                     "without DISTILL_SANITIZE";
      return result;
    }
#else
    const int flags = RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND;
#endif
    std::string tried;
    for (const std::string& candidate : plugin_candidates()) {
      if (!paths::is_regular_file(candidate)) {
        tried += (tried.empty() ? "" : ", ") + candidate;
        continue;
      }
      void* handle = ::dlopen(candidate.c_str(), flags);  // never closed: its objects live as long as the process
      if (!handle) {
        result.error = candidate + ": cannot load the SentencePiece plug-in (" + ::dlerror() + ")";
        return result;
      }
      auto entry = reinterpret_cast<const spm::Plugin* (*)()>(::dlsym(handle, "distill_spm_plugin"));
      if (!entry || entry()->version != spm::kPluginVersion) {
        result.error = candidate + ": not a SentencePiece plug-in of this distill version; rebuild the distill_spm target";
        return result;
      }
      result.plugin = entry();
      return result;
    }
    result.error = std::string("the SentencePiece plug-in ") + kPluginName + " was not found (looked at " + tried +
                   "); build the distill_spm target or set DISTILL_SPM_PLUGIN to its path";
    return result;
  }();
  if (!loaded.plugin) throw Error(loaded.error);
  return *loaded.plugin;
}

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(std::string_view bytes, const std::string& file) : file_(file) {
    const spm::Plugin* loaded = nullptr;
    try {
      loaded = &plugin();
    } catch (const Error& e) {
      throw Error(file + ": cannot read a SentencePiece model: " + e.what());
    }
    std::string error;
    model_.reset(loaded->load(bytes, error));
    if (!model_) throw Error(file + ": not a SentencePiece model (" + error + ")");
    const int bos = model_->bos_id(), eos = model_->eos_id();
    set_special_ids(bos >= 0 ? std::optional<int32_t>(bos) : std::nullopt,
                    eos >= 0 ? std::optional<int32_t>(eos) : std::nullopt);
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    for (int32_t id : ids) check_id(id);
    std::string text, error;
    if (!model_->decode(std::vector<int>(ids.begin(), ids.end()), text, error))
      throw Error(file_ + ": cannot decode (" + error + ")");
    return text;
  }
  int64_t vocab_size() const override { return model_->piece_size(); }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    const int id = model_->piece_to_id(token);
    return id >= 0 ? std::optional<int32_t>(id) : std::nullopt;
  }
  std::string id_to_token(int32_t id) const override {
    check_id(id);
    return model_->id_to_piece(id);
  }
  std::string token_bytes(int32_t id) const override {
    check_id(id);
    const std::string piece = model_->id_to_piece(id);
    switch (model_->kind(id)) {
      case spm::PieceKind::control: return "";
      case spm::PieceKind::unknown: return " \xE2\x81\x87 ";  // sentencepiece's default unk_surface, " ⁇ "
      case spm::PieceKind::byte: return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
      default: break;
    }
    std::string bytes;
    static const std::string kSpace = "\xE2\x96\x81";  // "▁"
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpace.size(), kSpace) == 0) {
        bytes += ' ';
        i += kSpace.size();
      } else {
        bytes += piece[i++];
      }
    }
    return bytes;
  }

 protected:
  std::vector<int32_t> encode_valid_utf8(std::string_view text) const override {
    std::vector<int> ids;
    std::string error;
    if (!model_->encode(text, ids, error)) throw Error(file_ + ": cannot encode (" + error + ")");
    return std::vector<int32_t>(ids.begin(), ids.end());
  }

 private:
  void check_id(int32_t id) const {
    if (id < 0 || id >= model_->piece_size())
      throw Error(file_ + ": no token has id " + std::to_string(id) + " (vocab_size " +
                  std::to_string(model_->piece_size()) + ")");
  }

  std::string file_;
  std::unique_ptr<spm::Model> model_;
};

}  // namespace

namespace text {

std::unique_ptr<Tokenizer> make_sentencepiece_tokenizer(std::string_view model_bytes, const std::string& file) {
  return std::make_unique<SentencePieceTokenizer>(model_bytes, file);
}

}  // namespace text

void train_sentencepiece_bpe(const std::string& input_text_path, int64_t vocab_size, const std::string& out_model_path,
                             const SentencePieceTrainOptions& options) {
  if (!paths::is_regular_file(input_text_path))
    throw Error(input_text_path + ": no such file (the text to train the SentencePiece model on)");
  if (vocab_size < 1 || vocab_size > INT32_MAX)
    throw Error("vocab_size: must be in [1, 2^31), got " + std::to_string(vocab_size));
  if (!(options.character_coverage > 0 && options.character_coverage <= 1))
    throw Error("character_coverage: must be in (0, 1], got " + std::to_string(options.character_coverage));
  if (options.max_sentence_length < 1)
    throw Error("max_sentence_length: must be >= 1, got " + std::to_string(options.max_sentence_length));
  std::string symbols;
  for (const std::string& symbol : options.user_defined_symbols) {
    if (symbol.empty() || symbol.find(',') != std::string::npos)
      throw Error("user_defined_symbols: \"" + symbol + "\" cannot be passed to sentencepiece (empty, or has a comma)");
    symbols += (symbols.empty() ? "" : ",") + symbol;
  }

  // One thread and a fixed seed: sentencepiece's BPE trainer then gives the same model for the same input.
  std::vector<std::pair<std::string, std::string>> settings = {
      {"input", input_text_path},
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"num_threads", "1"},
      {"character_coverage", std::to_string(options.character_coverage)},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      {"split_digits", options.split_digits ? "true" : "false"},
  };
  if (!symbols.empty()) settings.emplace_back("user_defined_symbols", symbols);
  if (options.keep_whitespace) {
    settings.emplace_back("normalization_rule_name", "identity");
    settings.emplace_back("remove_extra_whitespaces", "false");
    settings.emplace_back("allow_whitespace_only_pieces", "true");
  }
  std::string model_bytes, error;
  if (!plugin().train(settings, /*seed=*/1, model_bytes, error))
    throw Error(input_text_path + ": SentencePiece training failed (" + error + ")");
  write_file_atomic(out_model_path, model_bytes);
}

}  // namespace distill
