#include <torch/script.h>
#include <torch/torch.h>

#include <fstream>
#include <sstream>

#include "distill/cli/cli.h"
#include "distill/error.h"
#include "distill/io/safetensors.h"
#include "distill/models/model.h"

namespace distill {

namespace {

std::string dtype_text(const at::Tensor& t) {
  try {
    return safetensors_dtype_name(t);
  } catch (const Error&) {
    return std::string(c10::toString(t.scalar_type()));
  }
}

void list_tensors(std::ostringstream& out, const std::vector<std::tuple<std::string, at::Tensor, std::string>>& rows) {
  size_t width = 4;
  for (const auto& [name, t, kind] : rows) width = std::max(width, name.size());
  int64_t total = 0;
  for (const auto& [name, t, kind] : rows) {
    out << "  " << name << std::string(width - name.size() + 2, ' ') << dtype_text(t) << " " << shape_text(t.sizes())
        << (kind.empty() ? "" : "  (" + kind + ")") << "\n";
    if (kind != "buffer") total += t.numel();
  }
  out << rows.size() << " tensors, " << total << " parameters\n";
}

}  // namespace

std::string inspect_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(path + ": cannot open (missing or unreadable)");
  char magic[4] = {0, 0, 0, 0};
  in.read(magic, 4);
  std::ostringstream out;
  if (in.gcount() == 4 && magic[0] == 'P' && magic[1] == 'K' && magic[2] == 3 && magic[3] == 4) {
    torch::jit::Module module;
    try {
      module = torch::jit::load(path, torch::kCPU);
    } catch (const c10::Error& e) {
      std::string what = e.what_without_backtrace();
      throw Error(path + ": a zip file but not a TorchScript module: " + what.substr(0, what.find('\n')));
    }
    out << path << ": TorchScript module\n";
    std::vector<std::tuple<std::string, at::Tensor, std::string>> rows;
    for (const auto& p : module.named_parameters(true)) rows.emplace_back(p.name, p.value, "");
    for (const auto& b : module.named_buffers(true)) rows.emplace_back(b.name, b.value, "buffer");
    list_tensors(out, rows);
    return out.str();
  }
  SafetensorsContents c = load_safetensors(path);
  out << path << ": safetensors\n";
  for (const auto& [key, value] : c.metadata) {
    std::string v = value.size() > 200 ? value.substr(0, 197) + "..." : value;
    out << "  metadata " << key << " = " << v << "\n";
  }
  std::vector<std::tuple<std::string, at::Tensor, std::string>> rows;
  for (const auto& [name, t] : c.tensors) rows.emplace_back(name, t, "");
  list_tensors(out, rows);
  return out.str();
}

}  // namespace distill
