// `distill cache-teacher --from FILE.jsonl`: a teacher cache from log-probabilities a server or an API
// returned (include/distill/cache/logprob_import.h for the records, teacher_cache.h for the cache).
//
// Record i of the file is training example i, in the order `distill cache-teacher` walks the data (file
// order). Position by position:
//   vLLM prompt_logprobs: the record is the whole sequence; the example's row t (inputs up to token t)
//     takes entry t + 1, the distribution of token t + 1. The record's ids must be the example's tokens.
//   OpenAI chat: entry j is the distribution of the j-th generated token, which is the example's j-th
//     target that counts (the completion of a {"prompt", "completion"} record); its token must be that target.
// Rows the record says nothing about (vLLM's first token, the eos after an answer, padding) have no entries:
// they train with the CE term only. Each row keeps its k most probable entries; its tail mass is 1 - sum p
// of those, so `loss.topk_tail: "tail"` is exact for what the server returned.
//
// The file is read twice: first everything is checked (and k found), then the chunks are written. A file
// that does not parse, map or match is refused before a chunk is written; a killed write continues where it
// stopped, as cache-teacher does.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>

#include "distill/cache/logprob_import.h"
#include "distill/cache/teacher_cache.h"
#include "distill/config/config.h"
#include "distill/config/schema.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/text/tokenizer.h"
#include "distill/train/trainer.h"

namespace distill {

namespace {

using nlohmann::json;

// The file's records in order, blank lines skipped; `where()` names the last one read.
class RecordReader {
 public:
  explicit RecordReader(const std::string& path) : path_(path), in_(path, std::ios::binary) {
    if (!in_) throw Error("--from: cannot open " + path);
  }
  // The next record's text, or false at the end.
  bool next(std::string& line) {
    while (std::getline(in_, line)) {
      ++line_;
      if (line.find_first_not_of(" \t\r") != std::string::npos) {
        ++records_;
        return true;
      }
    }
    if (in_.bad()) throw Error(path_ + ": read error after line " + std::to_string(line_));
    return false;
  }
  std::string where() const { return path_ + ":" + std::to_string(line_); }
  int64_t records() const { return records_; }

 private:
  std::string path_;
  std::ifstream in_;
  int64_t line_ = 0, records_ = 0;
};

// One row of the cache before truncation to k.
struct Row {
  const std::vector<std::pair<int32_t, float>>* entries = nullptr;  // null: nothing known here
};

// The rows of example `e` (batch row `b`) from its record; checks that the record is that example.
void align(const cache::ImportedRecord& rec, const at::Tensor& inputs, const at::Tensor& targets, int64_t b,
           int64_t ignore_index, int64_t example, const std::string& where, std::vector<Row>& rows) {
  const int64_t P = inputs.size(1);
  const int64_t* x = inputs.data_ptr<int64_t>() + b * P;
  const int64_t* y = targets.data_ptr<int64_t>() + b * P;
  rows.assign(static_cast<size_t>(P), Row{});
  auto mismatch = [&](const std::string& what, int64_t got, int64_t want) {
    return Error(where + ": " + what + " is token " + std::to_string(got) + ", training example " + std::to_string(example) +
                 " has " + std::to_string(want) + " there; record i of --from must be the teacher's output for "
                 "training example i (data.path's records or windows in file order, the validation split excluded)");
  };
  if (rec.format == cache::LogprobFormat::vllm_prompt) {
    const int64_t L = static_cast<int64_t>(rec.ids.size());
    for (int64_t t = 0; t < P; ++t) {
      if (t < L && x[t] != rec.ids[static_cast<size_t>(t)])
        throw mismatch("prompt_token_ids[" + std::to_string(t) + "]", rec.ids[static_cast<size_t>(t)], x[t]);
      if (t + 1 >= L) continue;
      const cache::ImportedPosition& p = rec.positions[static_cast<size_t>(t + 1)];
      if (y[t] != ignore_index && y[t] != p.token)
        throw mismatch("prompt_token_ids[" + std::to_string(t + 1) + "]", p.token, y[t]);
      if (p.present) rows[static_cast<size_t>(t)].entries = &p.entries;
    }
    return;
  }
  size_t j = 0;
  for (int64_t t = 0; t < P && j < rec.positions.size(); ++t) {
    if (y[t] == ignore_index) continue;
    const cache::ImportedPosition& p = rec.positions[j];
    if (p.token != y[t]) throw mismatch("choices[0].logprobs.content[" + std::to_string(j) + "]", p.token, y[t]);
    if (p.present) rows[static_cast<size_t>(t)].entries = &p.entries;
    ++j;
  }
}

cache::TokenVocabulary vocabulary_of(const std::string& tokenizer_path, int64_t vocab) {
  std::vector<std::string> bytes(static_cast<size_t>(vocab)), pieces(static_cast<size_t>(vocab));
  if (!tokenizer_path.empty()) {
    const std::unique_ptr<Tokenizer> tok = Tokenizer::load(tokenizer_path);
    const int64_t n = std::min<int64_t>(vocab, tok->vocab_size());
    for (int32_t id = 0; id < n; ++id) {
      bytes[static_cast<size_t>(id)] = tok->token_bytes(id);
      pieces[static_cast<size_t>(id)] = tok->id_to_token(id);
    }
  }
  return cache::TokenVocabulary(bytes, pieces);
}

}  // namespace

json import_teacher_logprobs(const Config& config_in, const CacheTeacherOptions& o) {
  Config config = config_in;
  config.teacher.reset();  // nothing of the teacher runs: its outputs are in the file
  const std::string out = !o.out.empty()                                    ? o.out
                          : config_in.teacher && config_in.teacher->cache ? *config_in.teacher->cache
                                                                            : paths::join(config.run.out_dir, "teacher-cache");
  const cache::ValueEncoding encoding = cache::value_encoding_named(o.values, "--values");
  if (!(o.from_temperature > 0) || !std::isfinite(o.from_temperature))
    throw Error("--temperature: must be > 0, got " + schema::fmt_num(o.from_temperature));
  if (!paths::is_regular_file(o.from)) throw Error("--from: " + o.from + " is not a file (a JSON Lines file of server or API responses)");
  apply_threads(config.run.threads);
  Workspace ws = prepare_workspace(config);
  const IoShape& io = ws.data.io;
  if (!io.tokens())
    throw Error("--from: log-probabilities come per token; data.format \"" + config.data.format +
                "\" is not language-model data (use jsonl, tokens or pack data)");
  const int64_t vocab = ws.student_outputs, P = io.seq_len, examples = ws.data.train->size();
  const int64_t ignore = config.loss.ignore_index;
  const cache::TokenVocabulary vocabulary = vocabulary_of(ws.data.tokenizer_path, vocab);
  const int64_t batch_examples = 256;

  // Walks records and examples together from example `first`, handing each aligned batch to `use`.
  auto walk = [&](int64_t first, int64_t end, RecordReader& reader,
                  const std::function<void(int64_t, const Batch&, const std::vector<std::vector<Row>>&)>& use) {
    std::string line;
    std::vector<cache::ImportedRecord> recs;
    std::vector<std::vector<Row>> rows;
    for (int64_t b = first; b < end; b += batch_examples) {
      const int64_t n = std::min(end, b + batch_examples) - b;
      const Batch batch = ws.data.train->examples(b, b + n);
      const at::Tensor x = batch.student_input.to(at::kLong).contiguous().cpu();
      const at::Tensor y = batch.targets.to(at::kLong).contiguous().cpu();
      recs.resize(static_cast<size_t>(n));
      rows.resize(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) {
        if (!reader.next(line))
          throw Error("--from: " + o.from + " ends after " + std::to_string(reader.records()) + " records; the training data has " +
                      std::to_string(examples) + " examples (" + ws.data.train->describe() + "): one record per example, in order");
        recs[static_cast<size_t>(i)] = cache::parse_logprob_record(line, vocabulary, reader.where());
        align(recs[static_cast<size_t>(i)], x, y, i, ignore, b + i, reader.where(), rows[static_cast<size_t>(i)]);
      }
      use(b, batch, rows);
    }
  };

  // Pass 1: everything checked; the most entries a row holds, and how many rows have any.
  int64_t most = 0, rows_with = 0;
  {
    RecordReader reader(o.from);
    walk(0, examples, reader, [&](int64_t, const Batch&, const std::vector<std::vector<Row>>& rows) {
      for (const auto& ex : rows)
        for (const Row& r : ex)
          if (r.entries) {
            ++rows_with;
            most = std::max<int64_t>(most, static_cast<int64_t>(r.entries->size()));
          }
    });
  }
  if (rows_with == 0)
    throw Error("--from: " + o.from + " gives log-probabilities for none of the training data's positions (records without "
                "logprobs, or answers that the data does not hold); ask the server for logprobs");
  const int64_t k = o.topk > 0 ? o.topk : std::max<int64_t>(1, most);
  if (k > vocab) throw Error("--topk: " + std::to_string(k) + " is more than the student's vocabulary of " + std::to_string(vocab));

  const int64_t chunk_examples = cache_chunk_examples(o.chunk_examples, examples, P, k, vocab, encoding);
  json manifest = {
      {"k", k},
      {"vocab", vocab},
      {"positions", P},
      {"examples", examples},
      {"chunk_examples", chunk_examples},
      {"values", cache::value_encoding_name(encoding)},
      {"temperature", o.from_temperature},
      {"vocab_rule", config.loss.vocab},
      {"precision", "float32"},
      {"teacher", {{"import", {{"file", paths::filename(o.from)}, {"sha256", sha256_file(o.from)}}}}},
      {"tokenizer_sha256", ws.data.tokenizer_sha256 ? json(*ws.data.tokenizer_sha256) : json(nullptr)},
      {"data", {{"format", config.data.format}, {"examples", examples}, {"positions", P}}},
  };
  cache::Writer writer(out, manifest, o.overwrite);
  const int64_t chunks = writer.manifest().chunks();
  if (auto done = report_if_complete(writer, out)) return *done;
  std::cerr << "cache-teacher: " << o.from << ": " << rows_with << " of " << examples * P << " positions with log-probabilities, "
            << "up to " << most << " entries each; keeping " << k << " (" << cache::value_encoding_name(encoding) << ") in "
            << chunks << " chunks of " << chunk_examples << " examples into " << out << "\n";

  // Pass 2: the chunks, from the first one not yet written.
  RecordReader reader(o.from);
  std::string skipped;
  for (int64_t i = 0; i < writer.next_chunk() * chunk_examples; ++i) reader.next(skipped);
  for (int64_t c = writer.next_chunk(); c < chunks; ++c) {
    cache::Chunk chunk = chunk_at(c, chunk_examples, examples, P, k);
    chunk.ids.assign(static_cast<size_t>(chunk.rows() * k), -1);
    chunk.logprobs.assign(static_cast<size_t>(chunk.rows() * k), -std::numeric_limits<float>::infinity());
    chunk.tail_mass.assign(static_cast<size_t>(chunk.rows()), 1.0f);
    chunk.counts.assign(static_cast<size_t>(chunk.rows()), 0);
    walk(chunk.first_example, chunk.first_example + chunk.examples, reader,
         [&](int64_t b, const Batch& batch, const std::vector<std::vector<Row>>& rows) {
      const std::vector<uint32_t> hashes = cache_input_hashes(batch.student_input);
      chunk.input_hash.insert(chunk.input_hash.end(), hashes.begin(), hashes.end());
      for (size_t e = 0; e < rows.size(); ++e)
        for (int64_t t = 0; t < P; ++t) {
          const Row& r = rows[e][static_cast<size_t>(t)];
          if (!r.entries) continue;
          const size_t row = static_cast<size_t>((b - chunk.first_example + static_cast<int64_t>(e)) * P + t);
          const size_t m = std::min(static_cast<size_t>(k), r.entries->size());
          double kept = 0;
          for (size_t j = 0; j < m; ++j) {
            chunk.ids[row * static_cast<size_t>(k) + j] = (*r.entries)[j].first;
            chunk.logprobs[row * static_cast<size_t>(k) + j] = (*r.entries)[j].second;
            kept += std::exp(static_cast<double>((*r.entries)[j].second));
          }
          chunk.counts[row] = static_cast<uint32_t>(m);
          chunk.tail_mass[row] = static_cast<float>(std::clamp(1.0 - kept, 0.0, 1.0));
        }
    });
    writer.append(cache::encode_chunk(chunk, encoding, vocab, /*compression_level=*/9));
  }
  uint64_t bytes = 0;
  for (const auto& e : cache::read_index(out)) bytes += e.bytes;
  const double per_position = static_cast<double>(bytes) / static_cast<double>(examples * P);
  json totals = {{"chunks", chunks}, {"bytes", bytes}, {"positions", examples * P}, {"positions_with_logprobs", rows_with},
                 {"bytes_per_position", per_position}};
  writer.finish(totals);
  std::cerr << "cache-teacher: " << out << " complete: " << bytes << " bytes, " << schema::fmt_num(per_position)
            << " bytes per token at k = " << k << "\n";
  json r = totals;
  r["out"] = out;
  return r;
}

}  // namespace distill
