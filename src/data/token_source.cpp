// data.format "tokens": language-model training on token shards (llm.c's .bin files: layout in
// include/distill/data/token_shards.h), named by data.path as files, globs or a folder written by
// `distill data pack` (its train shards; its val shards are the default validation data).
//
// Example k of a shard is the window of seq_len + 1 tokens at k * seq_len: inputs window[:-1], next-token
// targets window[1:]; a target whose mask byte (the shard's .mask companion) is 0 becomes loss.ignore_index.
// An epoch visits the windows of all training shards in a seeded permutation computed one index at a time
// (a Feistel network keyed by run.seed and the epoch: IndexPermutation), so any range of any epoch can be
// asked for without building the order; data.shuffle false keeps file order. Validation walks its shards
// in order. The shards stay mapped, never read whole: a batch copies its windows' tokens and nothing else.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "data/formats.h"
#include "distill/config/config.h"
#include "distill/data/batch.h"
#include "distill/data/pack.h"
#include "distill/data/token_shards.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/text/tokenizer.h"

namespace distill::data {

// data.format "tokens": the keys the format adds to the data section.
struct TokenOptions {
  int64_t seq_len = 0;                   // required
  int64_t vocab_size = 0;                // 0: the manifest's tokenizer, data.tokenizer's, else the largest id + 1
  std::optional<std::string> tokenizer;  // checked against the manifest's (SHA-256)
};
template <class F> void visit_fields(TokenOptions& c, F&& f) {
  f("seq_len", c.seq_len, "tokens: tokens per training example (the context length); required, e.g. 256");
  f("vocab_size", c.vocab_size, "tokens: the vocabulary (every id must be below it); 0 = the pack manifest's tokenizer's, else data.tokenizer's, else the largest id in the shards + 1");
  f("tokenizer", c.tokenizer, "tokens: the tokenizer (tokenizer.json, .model or a model folder) the shards were made with; checked against a pack manifest's SHA-256");
}
void validate(const TokenOptions& o, const std::string& section) {
  if (o.seq_len == 0) throw Error(section + ".seq_len: set it, e.g. 256 (tokens per training example)");
  if (o.seq_len < 0) schema::range_error(section + ".seq_len", "> 0", std::to_string(o.seq_len));
  if (o.vocab_size < 0) schema::range_error(section + ".vocab_size", ">= 0 (0 = from the data)", std::to_string(o.vocab_size));
  if (o.tokenizer && o.tokenizer->empty()) throw Error(section + ".tokenizer: must not be empty (use null for none)");
}

namespace {

class TokenBatchSource : public BatchSource {
 public:
  TokenBatchSource(std::shared_ptr<const TokenWindows> windows, bool shuffle, int64_t seed, int64_t ignore_index,
                   std::string what)
      : windows_(std::move(windows)), shuffle_(shuffle), seed_(seed), ignore_index_(ignore_index), what_(std::move(what)) {}

  int64_t size() const override { return windows_->size(); }

  Batch batch(int64_t epoch, int64_t begin, int64_t end) const override { return gather(epoch, begin, end, shuffle_); }
  Batch examples(int64_t begin, int64_t end) const override { return gather(0, begin, end, false); }

  std::string describe() const override { return what_; }

 private:
  Batch gather(int64_t epoch, int64_t begin, int64_t end, bool shuffle) const {
    TORCH_CHECK(0 <= begin && begin < end && end <= size(), "windows [", begin, ", ", end, ") of ", size());
    const int64_t rows = end - begin, t = windows_->seq_len();
    at::Tensor inputs = at::empty({rows, t}, at::kLong), targets = at::empty({rows, t}, at::kLong);
    int64_t* in = inputs.data_ptr<int64_t>();
    int64_t* out = targets.data_ptr<int64_t>();
    std::vector<int64_t> valid(static_cast<size_t>(rows));
    at::Tensor ids = at::empty({rows}, at::kLong);
    int64_t* id = ids.data_ptr<int64_t>();
    const IndexPermutation order(static_cast<uint64_t>(size()), epoch_permutation_key(seed_, epoch));
    at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t w = shuffle ? static_cast<int64_t>(order(static_cast<uint64_t>(begin + r))) : begin + r;
        id[r] = w;
        valid[static_cast<size_t>(r)] = windows_->fill(w, in + r * t, out + r * t, ignore_index_);
      }
    });
    Batch b;
    b.student_input = inputs;
    b.teacher_input = inputs;
    b.targets = targets;
    b.examples = rows;
    b.example_ids = ids;
    for (int64_t v : valid) b.valid_targets += v;
    return b;
  }

  std::shared_ptr<const TokenWindows> windows_;
  bool shuffle_;
  int64_t seed_, ignore_index_;
  std::string what_;
};

std::string count_text(int64_t v, const char* unit) {
  return std::to_string(v) + " " + unit + (v == 1 ? "" : "s");
}

// The shards a PathList names: a folder written by `distill data pack` (its `split` shards), or files and globs.
struct ShardList {
  std::vector<std::string> paths;
  std::vector<int64_t> manifest_tokens;  // per shard from the manifest; empty without one
  std::optional<PackManifest> manifest;
  std::string where;                     // "data/tok", or the first file
};

ShardList shard_list(const PathList& list, const std::string& key, bool val_split) {
  ShardList out;
  if (list.items.size() == 1 && paths::is_directory(list.items[0])) {
    out.manifest = read_pack_manifest(list.items[0]);
    for (const auto& s : val_split ? out.manifest->val : out.manifest->train) {
      out.paths.push_back(s.path);
      out.manifest_tokens.push_back(s.tokens);
    }
    out.where = list.items[0];
    if (out.paths.empty())
      throw Error(key + ": " + out.manifest->path + " lists no validation shards (packed with --val-fraction 0); give "
                  "data.val_path, or pack again with --val-fraction > 0");
    return out;
  }
  for (const auto& item : list.items)
    if (paths::is_directory(item))
      throw Error(key + ": " + item + " is a folder; a folder written by `distill data pack` must be " + key +
                  "'s only entry, and a list names shard files or globs");
  out.paths = expand_token_paths(list.items, key);
  out.where = out.paths.size() == 1 ? out.paths[0] : paths::parent(out.paths[0]);
  if (out.where.empty()) out.where = ".";
  return out;
}

struct OpenedShards {
  std::vector<TokenShard> shards;
  int64_t tokens = 0, max_token = -1, masked = 0;
};

OpenedShards open_shards(const ShardList& list, int64_t vocab_limit) {
  OpenedShards out;
  for (size_t i = 0; i < list.paths.size(); ++i) {
    TokenShard s = open_token_shard(list.paths[i], vocab_limit);
    if (!list.manifest_tokens.empty() && s.view.count != list.manifest_tokens[i])
      throw Error(list.paths[i] + ": holds " + std::to_string(s.view.count) + " tokens, but " + list.manifest->path +
                  " says " + std::to_string(list.manifest_tokens[i]) + "; the folder was changed after packing: pack it "
                  "again with `distill data pack --overwrite`");
    if (list.manifest && list.manifest->masks && !s.mask)
      throw Error(list.paths[i] + ": " + list.manifest->path + " says the shards have loss masks, but " +
                  token_mask_path(list.paths[i]) + " is missing; pack the folder again");
    out.tokens += s.view.count;
    out.max_token = std::max(out.max_token, s.view.max_token);
    out.masked += s.mask ? 1 : 0;
    out.shards.push_back(std::move(s));
  }
  return out;
}

std::shared_ptr<const TokenWindows> windows_of(const OpenedShards& opened, int64_t seq_len) {
  std::vector<TokenSegment> segments;
  for (const TokenShard& s : opened.shards) {
    auto owner = std::make_shared<std::pair<std::shared_ptr<MappedFile>, std::shared_ptr<MappedFile>>>(s.file, s.mask_file);
    segments.push_back(TokenSegment::packed(s.path, s.view, s.mask, seq_len, owner));
  }
  return std::make_shared<const TokenWindows>(std::move(segments), seq_len);
}

void require_windows(const TokenWindows& w, const ShardList& list, const std::string& key, int64_t seq_len) {
  if (w.size() > 0) return;
  int64_t longest = 0;
  for (const auto& s : w.segments()) longest = std::max(longest, s.view.count);
  const std::string shards = list.paths.size() == 1
                                 ? "the shard " + list.paths[0] + " holds"
                                 : "the " + std::to_string(list.paths.size()) + " shards in " + list.where + " hold";
  throw Error(key + ": " + shards + " no window of seq_len + 1 = " + std::to_string(seq_len + 1) + " tokens (" +
              (list.paths.size() == 1 ? "it has " : "the longest has ") + std::to_string(longest) +
              "); lower data.seq_len or add data");
}

DataSources load_tokens(const Config& config, const Metadata* student_metadata) {
  const auto start = std::chrono::steady_clock::now();
  const TokenOptions options = schema::read_fields<TokenOptions>(config.data.options, "data");
  const ShardList train_list = shard_list(config.data.path, "data.path", /*val_split=*/false);
  ShardList val_list;
  if (config.data.val_path) val_list = shard_list(*config.data.val_path, "data.val_path", /*val_split=*/true);
  else if (train_list.manifest) val_list = shard_list(config.data.path, "data.path", /*val_split=*/true);
  else
    throw Error("data.val_path: missing; shards named by data.path need validation shards beside them (e.g. "
                "\"val_*.bin\"), or give data.path a folder written by `distill data pack`, which holds both");

  // The tokenizer: the manifests', checked against data.tokenizer and each other.
  std::optional<std::string> sha256;
  std::string tokenizer_path, vocab_from;
  int64_t vocab = options.vocab_size;
  if (options.vocab_size > 0) vocab_from = "data.vocab_size";
  std::unique_ptr<Tokenizer> tokenizer;
  if (options.tokenizer) {
    try {
      tokenizer = Tokenizer::load(*options.tokenizer);
    } catch (const Error& e) {
      throw Error("data.tokenizer: " + std::string(e.what()));
    }
  }
  for (const ShardList* list : {&train_list, static_cast<const ShardList*>(&val_list)}) {
    if (!list->manifest) continue;
    const PackManifest& m = *list->manifest;
    if (tokenizer && tokenizer->sha256() != m.tokenizer_sha256)
      throw Error("data.tokenizer: " + tokenizer->path() + " (sha256 " + tokenizer->sha256() + ") is not the tokenizer " +
                  m.path + " was packed with: " + m.tokenizer_path + " (sha256 " + m.tokenizer_sha256 +
                  "); give that tokenizer, or pack the data again with this one");
    if (sha256 && *sha256 != m.tokenizer_sha256)
      throw Error("data.val_path: " + m.path + " was packed with tokenizer " + m.tokenizer_path + " (sha256 " +
                  m.tokenizer_sha256 + "), the training data with " + tokenizer_path + " (sha256 " + *sha256 +
                  "); pack both with the same tokenizer");
    sha256 = m.tokenizer_sha256;
    tokenizer_path = m.tokenizer_path;
    if (vocab == 0) {
      vocab = m.vocab_size;
      vocab_from = "the tokenizer of " + m.path;
    }
  }
  // Where the tokenizer is now (to be shipped with the student): data.tokenizer as given, else the manifest's
  // when its file is still there and unchanged.
  std::string tokenizer_note;
  if (sha256 && !tokenizer) {
    const PackManifest& m = train_list.manifest ? *train_list.manifest : *val_list.manifest;
    std::string now;
    if (paths::is_regular_file(m.tokenizer_path)) {
      MappedFile file(m.tokenizer_path);
      now = sha256_hex(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()));
    }
    if (now == *sha256) {
      tokenizer_path = paths::exists(m.tokenizer_source) ? m.tokenizer_source : m.tokenizer_path;
    } else {
      tokenizer_note = " (" + m.tokenizer_path + (now.empty() ? " is gone" : " has changed since packing") +
                       "; give data.tokenizer to ship the tokenizer with the student)";
      tokenizer_path.clear();
    }
  }
  if (tokenizer) {
    sha256 = tokenizer->sha256();
    tokenizer_path = *options.tokenizer;
    if (vocab == 0) {
      vocab = tokenizer->vocab_size();
      vocab_from = "data.tokenizer";
    }
  }
  if (student_metadata && sha256) {
    auto it = student_metadata->find("tokenizer_sha256");
    if (it != student_metadata->end() && !it->second.empty() && it->second != *sha256)
      throw Error("the student was trained on data of tokenizer sha256 " + it->second + ", this data comes from " +
                  (tokenizer ? tokenizer->path() : std::string("its tokenizer")) + " (sha256 " + *sha256 +
                  "); evaluate it on data made with its own tokenizer");
  }

  const OpenedShards train = open_shards(train_list, vocab);
  const OpenedShards val = open_shards(val_list, vocab);
  if (vocab == 0) {
    vocab = std::max(train.max_token, val.max_token) + 1;
    vocab_from = "the largest id in the shards + 1";
  }
  const int64_t seq_len = options.seq_len;
  auto train_windows = windows_of(train, seq_len);
  auto val_windows = windows_of(val, seq_len);
  require_windows(*train_windows, train_list, "data.path", seq_len);
  require_windows(*val_windows, val_list, config.data.val_path ? "data.val_path" : "data.path (its validation shards)",
                  seq_len);

  auto describe = [&](const TokenWindows& w, const ShardList& list) {
    return std::to_string(w.size()) + " windows of " + std::to_string(seq_len) + " tokens from " +
           count_text(static_cast<int64_t>(list.paths.size()), "shard") + " in " + list.where;
  };
  DataSources out;
  const int64_t ignore = config.loss.ignore_index;
  out.train = token_batch_source(train_windows, config.data.shuffle, config.run.seed, ignore,
                                 describe(*train_windows, train_list));
  out.val = token_batch_source(val_windows, /*shuffle=*/false, 0, ignore, describe(*val_windows, val_list));
  out.io.features = 0;
  out.io.classes = vocab;
  out.io.seq_len = seq_len;
  out.tokenizer_sha256 = sha256;
  out.tokenizer_path = tokenizer_path;
  out.student_metadata = {{"vocab_size", std::to_string(vocab)}, {"seq_len", std::to_string(seq_len)}};
  if (sha256) out.student_metadata["tokenizer_sha256"] = *sha256;

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  auto split_line = [&](const char* split, const OpenedShards& s, const TokenWindows& w, const ShardList& list) {
    // Tokens no window reads as an input: each shard's tail after its last window.
    int64_t unread = 0;
    for (const TokenSegment& seg : w.segments()) unread += seg.view.count - seg.windows * seq_len;
    std::string line = std::string("data: ") + split + ": " + count_text(static_cast<int64_t>(s.shards.size()), "shard") +
                       " in " + list.where + ", " + std::to_string(s.tokens) + " tokens (uint" +
                       std::to_string(s.shards.front().view.width * 8) + "), " + std::to_string(w.size()) +
                       " windows of " + std::to_string(seq_len) + " + 1 tokens (" + std::to_string(unread) +
                       " tokens at shard ends are no input)";
    if (s.masked) line += ", loss masks on " + std::to_string(s.masked) + " of the shards";
    return line;
  };
  out.summary.push_back(split_line("train", train, *train_windows, train_list));
  out.summary.push_back(split_line("validation", val, *val_windows, val_list));
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.2f", seconds);
  out.summary.push_back("data: vocabulary " + std::to_string(vocab) + " (" + vocab_from + "), largest id " +
                        std::to_string(std::max(train.max_token, val.max_token)) + "; tokenizer " +
                        (sha256 ? (tokenizer_path.empty() ? std::string("of the manifest") : tokenizer_path) + " sha256 " +
                                      *sha256 + tokenizer_note
                                : std::string("unknown (no manifest, no data.tokenizer)")) +
                        "; mapped and checked in " + secs + " s");
  return out;
}

}  // namespace

std::unique_ptr<BatchSource> token_batch_source(std::shared_ptr<const TokenWindows> windows, bool shuffle, int64_t seed,
                                                int64_t ignore_index, std::string what) {
  return std::make_unique<TokenBatchSource>(std::move(windows), shuffle, seed, ignore_index, std::move(what));
}

DataFormatEntry token_format() {
  return {"tokens",
          "language-model token shards (llm.c .bin: uint16/uint32 ids, optional .mask companions) or a folder written "
          "by `distill data pack`; windows of seq_len + 1 tokens, next-token targets",
          schema::options_schema<TokenOptions>(validate), load_tokens};
}

}  // namespace distill::data
