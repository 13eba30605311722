#include "distill/train/resume.h"

#include <fstream>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "distill/io/atomic_file.h"

namespace distill {

using json = nlohmann::json;

namespace {

const std::set<std::string> kHarmless = {"train.epochs",      "train.max_steps",       "train.log_every",
                                         "train.eval_every",  "train.eval_batch_size", "train.max_bad_steps",
                                         "checkpoint.every",  "checkpoint.keep_last",  "run.threads",
                                         "loss.chunk_rows",
                                         "run.device",        "run.out_dir",
                                         "dist.backend",      "dist.timeout_s",        "dist.zero"};

}  // namespace

ConfigChanges compare_configs(const json& before_in, const json& after, const json& defaults) {
  json before = before_in;
  // A section the checkpoint lacks was added to distill after it was written: it held the defaults. (The
  // teacher is the exception: an absent teacher means a supervised run.)
  for (auto sec = after.begin(); sec != after.end(); ++sec)
    if (sec.key() != "teacher" && !before.contains(sec.key()) && defaults.contains(sec.key()))
      before[sec.key()] = defaults[sec.key()];
  for (auto sec = after.begin(); sec != after.end(); ++sec) {
    if (!sec.value().is_object() || !before.contains(sec.key()) || !before[sec.key()].is_object()) continue;
    const json d = defaults.value(sec.key(), json::object());
    for (auto it = sec.value().begin(); it != sec.value().end(); ++it)
      if (!before[sec.key()].contains(it.key()) && d.is_object() && d.contains(it.key()))
        before[sec.key()][it.key()] = d[it.key()];
  }
  ConfigChanges changes;
  std::set<std::string> sections;
  for (auto it = before.begin(); it != before.end(); ++it) sections.insert(it.key());
  for (auto it = after.begin(); it != after.end(); ++it) sections.insert(it.key());
  for (const auto& section : sections) {
    json a = before.value(section, json(nullptr)), b = after.value(section, json(nullptr));
    if (a == b) continue;
    if (!a.is_object() || !b.is_object()) {
      changes.incompatible.push_back(section + ": " + (a.is_null() ? "absent" : "present") + " -> " +
                                     (b.is_null() ? "absent" : "present"));
      continue;
    }
    std::set<std::string> keys;
    for (auto it = a.begin(); it != a.end(); ++it) keys.insert(it.key());
    for (auto it = b.begin(); it != b.end(); ++it) keys.insert(it.key());
    for (const auto& key : keys) {
      json va = a.value(key, json(nullptr)), vb = b.value(key, json(nullptr));
      if (va == vb) continue;
      const std::string dotted = section + "." + key;
      std::string line = dotted + ": " + va.dump() + " -> " + vb.dump();
      (kHarmless.count(dotted) ? changes.harmless : changes.incompatible).push_back(line);
    }
  }
  return changes;
}

void trim_metrics(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::ostringstream kept;
  for (std::string line; std::getline(in, line);) {
    json e = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (e.is_discarded()) continue;  // a line cut short by a crash
    if (e.contains("step") && e["step"].is_number_integer() && e["step"].get<int64_t>() > step) continue;
    kept << line << '\n';
  }
  in.close();
  write_file_atomic(path, kept.str());
}

}  // namespace distill
