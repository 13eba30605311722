// libdistill_spm.so: Debian's libsentencepiece behind the small interface of spm_plugin.h. Loaded by
// src/text/sentencepiece.cpp with RTLD_LOCAL | RTLD_DEEPBIND; nothing here may write to std::cout or
// std::cerr (the process's copies are not the ones this library would bind to), hence sentencepiece's own
// logging is switched off and every failure comes back as a message.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <exception>
#include <memory>
#include <unordered_map>

#include "spm_plugin.h"

namespace sentencepiece::logging {
void SetMinLogLevel(int level);  // exported by libsentencepiece, not declared in its public headers
}

namespace distill::spm {

namespace {

constexpr int kLogFatalOnly = 3;  // sentencepiece's LOG_FATAL: INFO, WARNING and ERROR are not printed

class SpmModel final : public Model {
 public:
  bool init(std::string_view bytes, std::string& error) {
    const auto status = processor_.LoadFromSerializedProto(bytes);
    if (!status.ok()) error = status.ToString();
    return status.ok();
  }
  bool encode(std::string_view text, std::vector<int>& ids, std::string& error) const override {
    const auto status = processor_.Encode(text, &ids);
    if (!status.ok()) error = status.ToString();
    return status.ok();
  }
  bool decode(const std::vector<int>& ids, std::string& text, std::string& error) const override {
    const auto status = processor_.Decode(ids, &text);
    if (!status.ok()) error = status.ToString();
    return status.ok();
  }
  int piece_size() const override { return processor_.GetPieceSize(); }
  int piece_to_id(std::string_view piece) const override {
    const int id = processor_.PieceToId(piece);
    return id >= 0 && id < processor_.GetPieceSize() && processor_.IdToPiece(id) == piece ? id : -1;
  }
  std::string id_to_piece(int id) const override { return processor_.IdToPiece(id); }
  PieceKind kind(int id) const override {
    if (processor_.IsUnknown(id)) return PieceKind::unknown;
    if (processor_.IsControl(id)) return PieceKind::control;
    if (processor_.IsByte(id)) return PieceKind::byte;
    if (processor_.IsUnused(id)) return PieceKind::unused;
    return PieceKind::normal;
  }
  int bos_id() const override { return processor_.bos_id(); }
  int eos_id() const override { return processor_.eos_id(); }

 private:
  sentencepiece::SentencePieceProcessor processor_;
};

Model* load(std::string_view bytes, std::string& error) {
  try {
    sentencepiece::logging::SetMinLogLevel(kLogFatalOnly);
    auto model = std::make_unique<SpmModel>();
    if (!model->init(bytes, error)) return nullptr;
    return model.release();
  } catch (const std::exception& e) {
    error = e.what();
    return nullptr;
  }
}

bool train(const std::vector<std::pair<std::string, std::string>>& settings, unsigned seed, std::string& model_bytes,
           std::string& error) {
  try {
    sentencepiece::logging::SetMinLogLevel(kLogFatalOnly);
    sentencepiece::SetRandomGeneratorSeed(seed);
    std::unordered_map<std::string, std::string> kwargs(settings.begin(), settings.end());
    kwargs["minloglevel"] = std::to_string(kLogFatalOnly);
    const auto status = sentencepiece::SentencePieceTrainer::Train(kwargs, nullptr, &model_bytes);
    if (!status.ok()) error = status.ToString();
    return status.ok();
  } catch (const std::exception& e) {
    error = e.what();
    return false;
  }
}

const Plugin kPlugin{kPluginVersion, &load, &train};

}  // namespace

}  // namespace distill::spm

extern "C" __attribute__((visibility("default"))) const distill::spm::Plugin* distill_spm_plugin() {
  return &distill::spm::kPlugin;
}
