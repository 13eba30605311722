// `distill generate`: a model from a Hugging Face folder, a run folder (its student/), a TorchScript language
// model or a student.safetensors written by distill, and a tokenizer (the folder's, or --tokenizer).
#include <torch/torch.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

#include "distill/cli/generate_cli.h"
#include "distill/config/config.h"
#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/io/safetensors.h"
#include "distill/models/hf_folder.h"
#include "distill/models/model.h"
#include "distill/text/tokenizer.h"
#include "distill/train/trainer.h"

namespace distill {

namespace {

struct LoadedLm {
  std::unique_ptr<Model> model;
  std::string tokenizer_from;  // a folder or file the tokenizer may come from; empty: none known
};

LoadedLm load_lm(const std::string& path) {
  if (!paths::exists(path)) throw Error("--model: " + path + " not found");
  // A run folder: its student, written as a Hugging Face folder.
  if (paths::is_directory(path) && !is_hf_folder(path) && is_hf_folder(paths::join(path, "student")))
    return load_lm(paths::join(path, "student"));
  if (is_hf_folder(path)) return {load_hf_model(path, "--model"), path};
  if (paths::is_directory(path))
    throw Error("--model: " + path + " is a folder without config.json; give a Hugging Face model folder, a run folder "
                "(with student/), a TorchScript .pt or a student.safetensors");
  ModelConfig mc;
  const std::string ext = path.size() >= 12 ? path.substr(path.size() - 12) : "";
  if (ext == ".safetensors") {
    SafetensorsContents weights = load_safetensors(path);
    mc = arch_from_metadata(mc, weights.metadata, path);
    IoShape io;
    io.seq_len = 1;
    auto model = make_model(mc, io, "--model");
    load_weights(*model, weights, path);
    // A student.safetensors sits in its run folder beside student/ (with the tokenizer files).
    const std::string sibling = paths::join(paths::parent(path), "student");
    return {std::move(model), paths::is_directory(sibling) ? sibling : ""};
  }
  mc.path = path;
  return {make_model(mc, IoShape{}, "--model"), ""};
}

// The text of generated ids, without the end-of-sequence token that ended it.
std::string completion_text(const Tokenizer& tokenizer, std::vector<int64_t> ids, const GenerateOptions& g) {
  if (g.eos_id && !ids.empty() && ids.back() == *g.eos_id) ids.pop_back();
  return tokenizer.decode(std::vector<int32_t>(ids.begin(), ids.end()));
}

std::vector<int64_t> prompt_ids(const Tokenizer& tokenizer, const std::string& text) {
  std::vector<int64_t> ids;
  if (tokenizer.bos_id()) ids.push_back(*tokenizer.bos_id());
  for (int32_t id : tokenizer.encode(text)) ids.push_back(id);
  return ids;
}

// One seed per record, from the run's seed and the record's place: a record samples the same text whatever
// batch it is decoded in, and whether the run was resumed (splitmix64 of the three).
uint64_t record_seed(uint64_t seed, int64_t index, int64_t sample) {
  uint64_t z = seed ^ (static_cast<uint64_t>(index) * 0x9E3779B97F4A7C15ull) ^ (static_cast<uint64_t>(sample) << 40);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string read_all(const std::string& path, const std::string& flag) {
  std::string bytes, error;
  if (!paths::read_file(path, bytes, &error)) throw Error(flag + ": cannot read " + error);
  return bytes;
}

// --prompts: the prompts of a JSONL file's `text` (one {"prompt": "..."} per line; blank lines skipped).
std::vector<std::string> read_prompts(const std::string& path, const std::string& text) {
  std::vector<std::string> prompts;
  size_t line_no = 0;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(line_no);
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw Error(where + ": not a JSON object; each line is {\"prompt\": \"...\"}");
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
      throw Error(where + ": needs a string \"prompt\"; each line is {\"prompt\": \"...\"}");
    prompts.push_back(j["prompt"].get<std::string>());
  }
  if (prompts.empty()) throw Error("--prompts: " + path + " holds no prompts");
  return prompts;
}

// The records already in `path` (a resumed run; OUT.jsonl or its logprobs file): complete lines that are the
// expected records in order. Returns how many there are and the bytes they take; a partial last line (a
// killed run) is not counted.
struct CompleteLines {
  int64_t records = 0;
  std::vector<size_t> ends;  // ends[i]: the byte just past line i's newline
};
CompleteLines complete_records(const std::string& path, int64_t samples) {
  CompleteLines out;
  if (!paths::exists(path)) return out;
  // Streamed, a line at a time: a logprobs file holds K entries per generated token and can be far larger
  // than memory. Its lines start {"index":I,"sample":S, so that only that prefix is read; the records' lines
  // are small and parsed whole.
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("--out: cannot read " + path + " (" + std::strerror(errno) + ")");
  std::string line;
  size_t at = 0;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline: the write was cut
    const int64_t n = out.records;
    long long index = -1, sample = -1;
    if (std::sscanf(line.c_str(), "{\"index\":%lld,\"sample\":%lld,", &index, &sample) != 2) {
      const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object()) {
        index = j.value("index", int64_t{-1});
        sample = j.value("sample", int64_t{-1});
      }
    }
    if (index != n / samples || sample != n % samples)
      throw Error("--out: " + path + ": line " + std::to_string(n + 1) + " is not the record this run would write there; "
                  "give another --out, or --overwrite");
    ++out.records;
    at += line.size() + 1;
    out.ends.push_back(at);
  }
  return out;
}

// Cuts `path` after its first `keep` complete lines (what a resumed run keeps).
void keep_lines(const std::string& path, const CompleteLines& lines, int64_t keep) {
  if (!paths::exists(path)) return;
  const size_t bytes = keep > 0 ? lines.ends[static_cast<size_t>(keep - 1)] : 0;
  if (::truncate(path.c_str(), static_cast<off_t>(bytes)) != 0)
    throw Error("--out: cannot cut " + path + " back to its complete records (" + std::strerror(errno) + ")");
}

// One record's line of the logprobs file: its training tokens as data.format "jsonl" makes them (bos, prompt,
// the completion's ids, eos) and, at each generated position, the top-k of the distribution it was drawn
// from; null where nothing was generated (the prompt, and an eos appended after a completion cut at
// --max-new-tokens). vLLM's prompt_logprobs layout, which `cache-teacher --from` reads.
std::string logprobs_record(int64_t index, int64_t sample, const std::vector<int64_t>& prompt,
                               const std::vector<int64_t>& completion_ids, const std::vector<TopLogprobs>& steps,
                               std::optional<int32_t> data_eos, bool eos_generated) {
  nlohmann::json ids = nlohmann::json::array(), lps = nlohmann::json::array();
  for (int64_t id : prompt) {
    ids.push_back(id);
    lps.push_back(nullptr);
  }
  auto entry = [](const TopLogprobs& t) {
    nlohmann::json e = nlohmann::json::object();
    for (size_t i = 0; i < t.ids.size(); ++i) e[std::to_string(t.ids[i])] = static_cast<double>(t.logprobs[i]);
    return e;
  };
  for (size_t i = 0; i < completion_ids.size(); ++i) {
    ids.push_back(completion_ids[i]);
    lps.push_back(entry(steps[i]));
  }
  if (data_eos) {
    ids.push_back(*data_eos);
    lps.push_back(eos_generated ? entry(steps.back()) : nlohmann::json(nullptr));
  }
  // "index" and "sample" first (complete_records reads only them); nlohmann sorts an object's keys.
  const std::string rest = nlohmann::json{{"prompt_token_ids", ids}, {"prompt_logprobs", lps}}.dump();
  return "{\"index\":" + std::to_string(index) + ",\"sample\":" + std::to_string(sample) + "," + rest.substr(1);
}

void run_prompts(const GenerateCliOptions& o, LoadedLm& lm, const Tokenizer& tokenizer, const GenerateOptions& g,
                 const c10::Device& device, std::ostream& log) {
  if (o.out.empty()) throw Error("--out: --prompts writes its records to a file; give --out OUT.jsonl");
  if (o.samples_per_prompt < 1) throw Error("--samples-per-prompt: must be >= 1, got " + std::to_string(o.samples_per_prompt));
  if (o.batch_size < 1) throw Error("--batch-size: must be >= 1, got " + std::to_string(o.batch_size));
  const std::string prompts_text = read_all(o.prompts, "--prompts");
  const std::vector<std::string> prompts = read_prompts(o.prompts, prompts_text);
  if (o.topk < 0) throw Error("--topk: must be >= 0 (0 = no log-probabilities), got " + std::to_string(o.topk));
  const std::string settings_path = o.out + ".settings.json";
  const std::string logprobs_path = o.out + ".logprobs.jsonl";
  nlohmann::json settings = {
      {"model", paths::absolute(o.model)},
      {"prompts", paths::absolute(o.prompts)},
      {"prompts_sha256", sha256_hex(prompts_text)},
      {"samples_per_prompt", o.samples_per_prompt},
      {"max_new_tokens", g.max_new_tokens},
      {"temperature", g.temperature},
      {"top_k", g.top_k},
      {"top_p", g.top_p},
      {"seed", g.seed},
      {"eos_id", g.eos_id ? nlohmann::json(*g.eos_id) : nlohmann::json(nullptr)},
  };
  if (o.topk > 0) settings["logprobs_topk"] = o.topk;  // absent without --topk: earlier runs' settings still match
  if (o.overwrite) {
    paths::remove_file(o.out);
    paths::remove_file(settings_path);
    paths::remove_file(logprobs_path);
  }
  if (paths::exists(o.out) || paths::exists(settings_path)) {
    if (!paths::exists(settings_path))
      throw Error("--out: " + o.out + " exists and was not written by `distill generate --prompts` (no " + settings_path +
                  "); give another --out, or --overwrite");
    const nlohmann::json old = nlohmann::json::parse(read_all(settings_path, "--out"), nullptr, false);
    if (old != settings) {
      std::string diff = "the file is not JSON";
      if (old.is_object()) {
        for (auto it = settings.begin(); it != settings.end() && diff == "the file is not JSON"; ++it)
          if (!old.contains(it.key()) || old[it.key()] != it.value())
            diff = it.key() + ": " + (old.contains(it.key()) ? old[it.key()].dump() : "absent") + " vs " + it.value().dump();
        for (auto it = old.begin(); it != old.end() && diff == "the file is not JSON"; ++it)
          if (!settings.contains(it.key())) diff = it.key() + ": " + it.value().dump() + " vs absent";
      }
      throw Error("--out: " + o.out + " was written with other settings (" + diff + "); give another --out, or --overwrite");
    }
  } else {
    write_file_atomic(settings_path, settings.dump(2) + "\n");
  }
  const int64_t total = static_cast<int64_t>(prompts.size()) * o.samples_per_prompt;
  // The logprobs line of a window is written before its records, so a killed run may leave more of them; both
  // files keep the records they both hold complete.
  const CompleteLines done_records = complete_records(o.out, o.samples_per_prompt);
  int64_t next = done_records.records;
  if (o.topk > 0) {
    const CompleteLines done_logprobs = complete_records(logprobs_path, o.samples_per_prompt);
    next = std::min(next, done_logprobs.records);
    if (next < done_records.records)
      log << o.out << ": keeping " << next << " of its " << done_records.records << " records, those " << logprobs_path
          << " has too; the rest are generated again (the same text: each record has its own seed)\n";
    keep_lines(logprobs_path, done_logprobs, next);
  }
  keep_lines(o.out, done_records, next);
  const int64_t resumed = next;
  std::ofstream file(o.out, std::ios::binary | std::ios::app);
  if (!file) throw Error("--out: cannot write " + o.out + " (" + std::strerror(errno) + ")");
  std::ofstream logprobs_file;
  if (o.topk > 0) {
    logprobs_file.open(logprobs_path, std::ios::binary | std::ios::app);
    if (!logprobs_file) throw Error("--out: cannot write " + logprobs_path + " (" + std::strerror(errno) + ")");
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t new_tokens = 0;
  // A window of records at a time: grouped by prompt length into batches, then written in order, so that a
  // killed run loses at most one window.
  const int64_t window = o.batch_size * 8;
  while (next < total) {
    const int64_t end = std::min(total, next + window);
    std::vector<std::vector<int64_t>> ids(static_cast<size_t>(end - next));
    std::map<size_t, std::vector<int64_t>> by_length;
    for (int64_t r = next; r < end; ++r) {
      ids[static_cast<size_t>(r - next)] = prompt_ids(tokenizer, prompts[static_cast<size_t>(r / o.samples_per_prompt)]);
      by_length[ids[static_cast<size_t>(r - next)].size()].push_back(r);
    }
    std::vector<std::vector<int64_t>> outs(ids.size());
    std::vector<std::vector<TopLogprobs>> steps(ids.size());
    for (const auto& [length, records] : by_length) {
      for (size_t b = 0; b < records.size(); b += static_cast<size_t>(o.batch_size)) {
        std::vector<std::vector<int64_t>> batch;
        std::vector<uint64_t> seeds;
        const size_t e = std::min(records.size(), b + static_cast<size_t>(o.batch_size));
        for (size_t i = b; i < e; ++i) {
          batch.push_back(ids[static_cast<size_t>(records[i] - next)]);
          seeds.push_back(record_seed(g.seed, records[i] / o.samples_per_prompt, records[i] % o.samples_per_prompt));
        }
        std::vector<std::vector<TopLogprobs>> got_logprobs;
        std::vector<std::vector<int64_t>> got = generate_batch(*lm.model, batch, g, seeds, device, {}, o.topk, &got_logprobs);
        for (size_t i = b; i < e; ++i) {
          new_tokens += static_cast<int64_t>(got[i - b].size());
          outs[static_cast<size_t>(records[i] - next)] = std::move(got[i - b]);
          if (o.topk > 0) steps[static_cast<size_t>(records[i] - next)] = std::move(got_logprobs[i - b]);
        }
      }
    }
    std::string lines, logprobs_lines;
    for (int64_t r = next; r < end; ++r) {
      const size_t w = static_cast<size_t>(r - next);
      const std::vector<int64_t>& generated = outs[w];
      const bool ended_at_eos = g.eos_id && !generated.empty() && generated.back() == *g.eos_id;
      const std::vector<int64_t> completion_ids(generated.begin(), generated.end() - (ended_at_eos ? 1 : 0));
      const nlohmann::json record = {{"prompt", prompts[static_cast<size_t>(r / o.samples_per_prompt)]},
                                     {"completion", completion_text(tokenizer, generated, g)},
                                     {"completion_ids", completion_ids},
                                     {"index", r / o.samples_per_prompt},
                                     {"sample", r % o.samples_per_prompt}};
      lines += record.dump() + "\n";
      if (o.topk > 0) {
        const std::optional<int32_t> data_eos = tokenizer.eos_id();
        const bool eos_generated = ended_at_eos && data_eos && *data_eos == *g.eos_id;
        logprobs_lines += logprobs_record(r / o.samples_per_prompt, r % o.samples_per_prompt, ids[w], completion_ids,
                                          steps[w], data_eos, eos_generated) + "\n";
      }
    }
    if (o.topk > 0) {
      logprobs_file << logprobs_lines;
      logprobs_file.flush();
      if (!logprobs_file) throw Error("--out: cannot write " + logprobs_path + " (disk full?); run the command again to continue");
    }
    file << lines;
    file.flush();
    if (!file) throw Error("--out: cannot write " + o.out + " (disk full?); run the command again to continue");
    next = end;
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log << o.out << ": " << total << " records (" << total - resumed << " new" << (resumed ? ", continued" : "") << "), "
      << new_tokens << " tokens in " << static_cast<int64_t>(s * 10) / 10.0 << " s; settings in " << settings_path
      << (o.topk > 0 ? "; top-" + std::to_string(o.topk) + " log-probabilities in " + logprobs_path +
                           " (distill cache-teacher --from " + logprobs_path + ")"
                     : std::string())
      << "\n";
}

}  // namespace

void run_generate_cli(const GenerateCliOptions& o, std::ostream& out) {
  check_generate_options(o.generate);
  if (o.prompt.empty() == o.prompts.empty())
    throw Error("--prompt / --prompts: give one: a text to continue, or a JSONL file of prompts (with --out)");
  if (o.topk != 0 && o.prompts.empty())
    throw Error("--topk: writes the log-probabilities of --prompts' completions beside --out; give --prompts FILE.jsonl "
                "--out OUT.jsonl, or drop --topk");
  apply_threads(o.threads);
  const c10::Device device = resolve_device(o.device, "--device");
  LoadedLm lm = load_lm(o.model);
  const std::string tokenizer_path = !o.tokenizer.empty() ? o.tokenizer : lm.tokenizer_from;
  if (tokenizer_path.empty())
    throw Error("--tokenizer: " + o.model + " carries no tokenizer; give one (tokenizer.json, a .model file, or a folder)");
  std::unique_ptr<Tokenizer> tokenizer = Tokenizer::load(tokenizer_path);
  torch::manual_seed(o.generate.seed);
  lm.model->to(device);

  // A tokenizer whose ids run past the model's vocabulary is the wrong tokenizer for it.
  const nlohmann::json hf = lm.model->hf_config();
  const int64_t vocab = hf.is_object() && hf.contains("vocab_size") && hf["vocab_size"].is_number_integer()
                            ? hf["vocab_size"].get<int64_t>()
                            : 0;
  if (vocab > 0 && tokenizer->vocab_size() > vocab)
    throw Error("--tokenizer: " + tokenizer_path + " has " + std::to_string(tokenizer->vocab_size()) + " tokens, but " +
                o.model + " has a vocabulary of " + std::to_string(vocab) + "; give the tokenizer the model was trained with");
  GenerateOptions g = o.generate;
  if (!g.eos_id) {
    if (tokenizer->eos_id()) g.eos_id = *tokenizer->eos_id();
    const nlohmann::json cfg = lm.model->hf_config();
    if (!g.eos_id && cfg.is_object() && cfg.contains("eos_token_id") && cfg["eos_token_id"].is_number_integer())
      g.eos_id = cfg["eos_token_id"].get<int64_t>();
  }
  if (!o.prompts.empty()) {
    run_prompts(o, lm, *tokenizer, g, device, out);
    return;
  }
  const std::vector<int64_t> ids = generate_ids(*lm.model, prompt_ids(*tokenizer, o.prompt), g, device);
  out << o.prompt << completion_text(*tokenizer, ids, g) << "\n";
}

}  // namespace distill
