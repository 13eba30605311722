// data.format "jsonl": language-model examples from JSON Lines, tokenised at load with data.tokenizer
// (records as in include/distill/data/pack.h):
//
//   {"text": ...}                         PACKED, pretraining style: every document becomes [bos] ids [eos], the
//                                         documents are concatenated, and the stream is cut into windows of
//                                         seq_len + 1 tokens every seq_len tokens, as token shards are. No
//                                         position is padding, so no compute is spent on it; a window may span
//                                         two documents (the eos between them marks the boundary), as in GPT-2
//                                         and llm.c pretraining.
//   {"prompt": ..., "completion": ...}    PADDED, one record per example: [bos] prompt completion [eos],
//                                         truncated to seq_len + 1 tokens (the end is cut; counted and reported),
//                                         then padded on the right with eos (or 0). Targets of the bos and prompt
//                                         positions and of the padding are loss.ignore_index, so the loss covers
//                                         the completion and its eos only: fine-tuning a student on a teacher's
//                                         answers (sequence-level distillation), as TRL and torchtune do. Packing
//                                         these would let one example attend to another's answer. Right padding
//                                         needs no attention mask under causal attention: real tokens never see
//                                         the padding after them, and the padding's outputs count nowhere.
//
// Validation: data.val_path's records, else the last data.val_fraction of the records of data.path (in file
// order, so the split is the same every run and matches `distill data pack`). Either way it is walked in
// order. Records are tokenised in parallel on run.threads threads (0: one per core); the ids do not depend
// on the count.
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <thread>

#include "data/formats.h"
#include "distill/config/config.h"
#include "distill/data/batch.h"
#include "distill/data/pack.h"
#include "distill/data/token_shards.h"
#include "distill/error.h"
#include "distill/text/tokenizer.h"

namespace distill::data {

// data.format "jsonl": the keys the format adds to the data section.
struct JsonlOptions {
  int64_t seq_len = 0;                   // required
  std::optional<std::string> tokenizer;  // required
  double val_fraction = 0.1;             // the last records of `path`, without val_path
};
template <class F> void visit_fields(JsonlOptions& c, F&& f) {
  f("seq_len", c.seq_len, "jsonl: tokens per training example (the context length); required, e.g. 256");
  f("tokenizer", c.tokenizer, "jsonl: the tokenizer (tokenizer.json, a SentencePiece .model, or a model folder); required");
  f("val_fraction", c.val_fraction, "jsonl: the last fraction of the records of `path` held out for validation (ignored with val_path)");
}
void validate(const JsonlOptions& o, const std::string& section) {
  if (o.seq_len == 0) throw Error(section + ".seq_len: set it, e.g. 256 (tokens per training example)");
  if (o.seq_len < 0) schema::range_error(section + ".seq_len", "> 0", std::to_string(o.seq_len));
  if (!o.tokenizer || o.tokenizer->empty())
    throw Error(section + ".tokenizer: required for data.format \"jsonl\"; give a tokenizer.json, a SentencePiece .model "
                "or a model folder holding one");
  if (!(o.val_fraction >= 0.0 && o.val_fraction < 1.0))
    schema::range_error(section + ".val_fraction", "in [0, 1)", schema::fmt_num(o.val_fraction));
}

namespace {

struct Split {
  std::vector<EncodedRecord> records;
  std::string where;  // for messages and summaries
};

// Tokens held in memory, owned by the windows' segments.
struct Stream {
  std::vector<uint32_t> ids;
  std::vector<uint8_t> mask;
};

struct Built {
  std::shared_ptr<const TokenWindows> windows;
  int64_t tokens = 0, truncated = 0, no_target = 0;
};

Built pack_text(const Split& split, int64_t seq_len) {
  auto stream = std::make_shared<Stream>();
  for (const EncodedRecord& r : split.records) stream->ids.insert(stream->ids.end(), r.ids.begin(), r.ids.end());
  TokenShardView view;
  view.tokens = reinterpret_cast<const uint8_t*>(stream->ids.data());
  view.count = static_cast<int64_t>(stream->ids.size());
  view.width = 4;
  Built b;
  b.tokens = view.count;
  b.windows = std::make_shared<const TokenWindows>(
      std::vector<TokenSegment>{TokenSegment::packed(split.where, view, nullptr, seq_len, stream)}, seq_len);
  return b;
}

Built pad_records(const Split& split, int64_t seq_len, uint32_t pad) {
  const size_t width = static_cast<size_t>(seq_len + 1);
  auto stream = std::make_shared<Stream>();
  stream->ids.assign(split.records.size() * width, pad);
  stream->mask.assign(split.records.size() * width, 0);
  Built b;
  for (size_t i = 0; i < split.records.size(); ++i) {
    const EncodedRecord& r = split.records[i];
    const size_t kept = std::min(r.ids.size(), width);
    b.truncated += r.ids.size() > width;
    b.no_target += r.prompt_tokens >= static_cast<int64_t>(kept);
    b.tokens += static_cast<int64_t>(kept);
    std::copy(r.ids.begin(), r.ids.begin() + static_cast<std::ptrdiff_t>(kept),
              stream->ids.begin() + static_cast<std::ptrdiff_t>(i * width));
    for (size_t k = static_cast<size_t>(std::max<int64_t>(r.prompt_tokens, 0)); k < kept; ++k) stream->mask[i * width + k] = 1;
  }
  TokenShardView view;
  view.tokens = reinterpret_cast<const uint8_t*>(stream->ids.data());
  view.count = static_cast<int64_t>(stream->ids.size());
  view.width = 4;
  const uint8_t* mask = stream->mask.data();
  b.windows = std::make_shared<const TokenWindows>(
      std::vector<TokenSegment>{TokenSegment::padded(split.where, view, mask, seq_len, stream)}, seq_len);
  return b;
}

std::string files_text(const std::vector<std::string>& files) {
  return files.size() == 1 ? files[0] : std::to_string(files.size()) + " files (" + files[0] + ", ...)";
}

// Reads and encodes every record of `files` (one kind throughout).
std::vector<EncodedRecord> encode_files(const std::vector<std::string>& files, const Tokenizer& tokenizer, int threads,
                                        std::optional<RecordKind>& kind, std::string& kind_origin) {
  std::vector<EncodedRecord> out;
  for (const std::string& file : files) {
    JsonlRecords records = read_jsonl(file);
    if (kind && records.kind != *kind)
      throw Error(file + ":" + std::to_string(records.line[0]) + ": " + record_kind_name(records.kind) + " records, but " +
                  kind_origin + " holds " + record_kind_name(*kind) +
                  " records; the training and validation data are one kind");
    kind = records.kind;
    kind_origin = file;
    std::vector<EncodedRecord> encoded = encode_records(tokenizer, records, 0, records.size(), threads);
    out.insert(out.end(), std::make_move_iterator(encoded.begin()), std::make_move_iterator(encoded.end()));
  }
  return out;
}

DataSources load_jsonl(const Config& config, const Metadata* student_metadata) {
  const auto start = std::chrono::steady_clock::now();
  const JsonlOptions options = schema::read_fields<JsonlOptions>(config.data.options, "data");
  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = Tokenizer::load(*options.tokenizer);
  } catch (const Error& e) {
    throw Error("data.tokenizer: " + std::string(e.what()));
  }
  if (student_metadata) {
    auto it = student_metadata->find("tokenizer_sha256");
    if (it != student_metadata->end() && !it->second.empty() && it->second != tokenizer->sha256())
      throw Error("data.tokenizer: " + tokenizer->path() + " (sha256 " + tokenizer->sha256() + ") is not the tokenizer "
                  "the student was trained with (sha256 " + it->second + ")");
  }
  const std::vector<std::string> train_files = expand_token_paths(config.data.path.items, "data.path");
  // run.threads (0: one per core), whether or not ATen's pool is set up yet.
  const int threads = config.run.threads > 0 ? static_cast<int>(config.run.threads)
                                             : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  std::optional<RecordKind> kind;
  std::string kind_origin;
  Split train, val;
  train.records = encode_files(train_files, *tokenizer, threads, kind, kind_origin);
  train.where = files_text(train_files);
  int64_t held_out = 0;
  if (config.data.val_path) {
    const std::vector<std::string> val_files = expand_token_paths(config.data.val_path->items, "data.val_path");
    val.records = encode_files(val_files, *tokenizer, threads, kind, kind_origin);
    val.where = files_text(val_files);
  } else {
    const int64_t total = static_cast<int64_t>(train.records.size());
    held_out = options.val_fraction > 0
                   ? std::max<int64_t>(1, std::llround(static_cast<double>(total) * options.val_fraction))
                   : 0;
    if (held_out == 0)
      throw Error("data.val_fraction: 0 and no data.val_path, so there is no validation data; set data.val_fraction "
                  "(e.g. 0.1) or give data.val_path");
    if (held_out >= total)
      throw Error("data.val_fraction: " + schema::fmt_num(options.val_fraction) + " of the " + std::to_string(total) +
                  " records of " + train.where + " leaves none for training; lower it or give data.val_path");
    val.records.assign(std::make_move_iterator(train.records.end() - held_out), std::make_move_iterator(train.records.end()));
    train.records.resize(static_cast<size_t>(total - held_out));
    val.where = "the last " + std::to_string(held_out) + " records of " + train.where;
  }

  const int64_t seq_len = options.seq_len;
  const bool padded = *kind == RecordKind::prompt_completion;
  const uint32_t pad = tokenizer->eos_id() ? static_cast<uint32_t>(*tokenizer->eos_id()) : 0;
  Built built_train = padded ? pad_records(train, seq_len, pad) : pack_text(train, seq_len);
  Built built_val = padded ? pad_records(val, seq_len, pad) : pack_text(val, seq_len);
  for (auto [built, split, key] : {std::tuple{&built_train, &train, "data.path"},
                                   std::tuple{&built_val, &val, config.data.val_path ? "data.val_path" : "data.val_fraction"}})
    if (built->windows->size() == 0)
      throw Error(std::string(key) + ": " + split->where + " holds " + std::to_string(built->tokens) +
                  " tokens, fewer than one window of seq_len + 1 = " + std::to_string(seq_len + 1) +
                  "; lower data.seq_len or add text");

  auto describe = [&](const Built& b, const Split& s) {
    std::string what = std::to_string(b.windows->size()) + (padded ? " examples of " : " windows of ") +
                       std::to_string(seq_len) + " tokens from " +
                       (padded ? "prompt/completion records of " : std::to_string(s.records.size()) + " documents of ") +
                       s.where;
    if (b.truncated) what += " (" + std::to_string(b.truncated) + " truncated)";
    return what;
  };
  DataSources out;
  const int64_t ignore = config.loss.ignore_index;
  out.train = token_batch_source(built_train.windows, config.data.shuffle, config.run.seed, ignore,
                                 describe(built_train, train));
  out.val = token_batch_source(built_val.windows, /*shuffle=*/false, 0, ignore, describe(built_val, val));
  out.io.features = 0;
  out.io.classes = tokenizer->vocab_size();
  out.io.seq_len = seq_len;
  out.tokenizer_sha256 = tokenizer->sha256();
  out.tokenizer_path = *options.tokenizer;  // as given: a model folder carries its tokenizer_config.json too
  out.student_metadata = {{"vocab_size", std::to_string(out.io.classes)},
                          {"seq_len", std::to_string(seq_len)},
                          {"tokenizer_sha256", tokenizer->sha256()}};

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto split_line = [&](const char* name, const Built& b, const Split& s) {
    std::string line = std::string("data: ") + name + ": " + std::to_string(s.records.size()) + " " +
                       record_kind_name(*kind) + " records of " + s.where + ", " + std::to_string(b.tokens) + " tokens, ";
    if (padded) {
      line += std::to_string(b.windows->size()) + " examples padded to " + std::to_string(seq_len + 1) + " tokens, " +
              std::to_string(b.truncated) + " truncated";
      if (b.no_target) line += ", " + std::to_string(b.no_target) + " with no completion token left (their loss is empty)";
    } else {
      line += "packed into " + std::to_string(b.windows->size()) + " windows of " + std::to_string(seq_len) + " + 1 tokens";
    }
    return line;
  };
  out.summary.push_back(split_line("train", built_train, train));
  out.summary.push_back(split_line("validation", built_val, val));
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", seconds);
  out.summary.push_back("data: vocabulary " + std::to_string(out.io.classes) + " (the tokenizer's), tokenizer " +
                        tokenizer->path() + " sha256 " + tokenizer->sha256() + ", bos " +
                        (tokenizer->bos_id() ? std::to_string(*tokenizer->bos_id()) : "none") + ", eos " +
                        (tokenizer->eos_id() ? std::to_string(*tokenizer->eos_id()) : "none") + "; tokenised in " + secs +
                        " s on " + std::to_string(threads) + (threads == 1 ? " thread" : " threads"));
  return out;
}

}  // namespace

DataFormatEntry jsonl_format() {
  return {"jsonl",
          "language-model text as JSON Lines, tokenised at load: {\"text\"} records packed into windows, "
          "{\"prompt\", \"completion\"} records padded one per example with the loss on the completion only",
          schema::options_schema<JsonlOptions>(validate), load_jsonl};
}

}  // namespace distill::data
