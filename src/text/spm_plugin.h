// The interface between distill_text and libdistill_spm.so, the plug-in that holds Debian's libsentencepiece
// (src/text/sentencepiece.cpp says why it is a plug-in). Only standard-library types cross it; the plug-in
// never throws across it and never writes to std::cout or std::cerr (see sentencepiece.cpp).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace distill::spm {

constexpr int kPluginVersion = 1;

enum class PieceKind { normal, unknown, control, byte, unused };

class Model {
 public:
  virtual ~Model() = default;
  virtual bool encode(std::string_view text, std::vector<int>& ids, std::string& error) const = 0;
  virtual bool decode(const std::vector<int>& ids, std::string& text, std::string& error) const = 0;
  virtual int piece_size() const = 0;
  virtual int piece_to_id(std::string_view piece) const = 0;  // -1 when no piece is spelled so
  virtual std::string id_to_piece(int id) const = 0;          // id in [0, piece_size())
  virtual PieceKind kind(int id) const = 0;
  virtual int bos_id() const = 0;  // -1 when the model has none
  virtual int eos_id() const = 0;
};

struct Plugin {
  int version;
  // A model from the bytes of a .model file; null with `error` set when they are not one.
  Model* (*load)(std::string_view model_bytes, std::string& error);
  // Trains with sentencepiece's own setting names and values ({"vocab_size", "8000"}, ...); the serialized
  // model goes to `model_bytes`. False with `error` set on failure.
  bool (*train)(const std::vector<std::pair<std::string, std::string>>& settings, unsigned seed,
                std::string& model_bytes, std::string& error);
};

}  // namespace distill::spm

extern "C" const distill::spm::Plugin* distill_spm_plugin();
