#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "distill/train/checkpoint.h"

namespace distill {


namespace {

// Step number of "step-00000042.safetensors"; -1 for any other name (temporaries included).
int64_t step_of(const std::string& name) {
  const std::string prefix = "step-", suffix = ".safetensors";
  if (name.size() <= prefix.size() + suffix.size() || name.rfind(prefix, 0) != 0 ||
      name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return -1;
  std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

}  // namespace

std::string checkpoint_file_name(int64_t step) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "step-%08lld.safetensors", static_cast<long long>(step));
  return buf;
}

std::vector<std::string> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::string error;
  const std::vector<std::string> names = paths::list_dir(dir, &error);
  if (!error.empty())
    throw Error(error + "; distill lists this folder to find the checkpoint to resume from and to prune old ones. "
                        "Make it a readable folder, or move it away to start afresh");
  for (const std::string& name : names) {
    const int64_t step = step_of(name);
    const std::string path = paths::join(dir, name);
    if (step >= 0 && paths::is_regular_file(path)) found.emplace_back(step, path);
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& [step, path] : found) out.push_back(path);
  return out;
}

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  std::ifstream in(paths::join(dir, "latest"));
  std::string name;
  if (in && std::getline(in, name) && step_of(name) >= 0) {
    const std::string p = paths::join(dir, name);
    if (paths::is_regular_file(p)) return p;
  }
  auto all = list_checkpoints(dir);
  if (all.empty()) return std::nullopt;
  return all.back();
}

std::string save_checkpoint(const std::string& dir, int64_t step, const NamedTensors& tensors,
                            const Metadata& metadata, int64_t keep_last) {
  std::string why;
  if (!paths::create_directories(dir, &why)) throw Error(dir + ": cannot create the checkpoint folder (" + why + ")");
  const std::string name = checkpoint_file_name(step);
  const std::string path = paths::join(dir, name);
  // Test hook: DISTILL_TEST_FAIL_CHECKPOINT=K makes the K-th checkpoint of this process fail part-way, as a
  // full disk would.
  static int64_t written = 0;
  static const int64_t fail_at = [] {
    const char* v = std::getenv("DISTILL_TEST_FAIL_CHECKPOINT");
    return v ? std::atoll(v) : int64_t{0};
  }();
  if (++written == fail_at) set_write_failure_after_bytes(4096);
  save_safetensors(path, tensors, metadata);
  write_file_atomic(paths::join(dir, "latest"), name + "\n");
  auto all = list_checkpoints(dir);
  int64_t excess = static_cast<int64_t>(all.size()) - keep_last;
  for (int64_t i = 0; i < excess; ++i)
    if (all[i] != path) paths::remove_file(all[i]);  // best effort: a leftover old checkpoint harms nothing
  return path;
}

}  // namespace distill
