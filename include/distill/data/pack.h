// Language-model text to tokens: JSON Lines records, their token sequences, and `distill data pack`, which
// writes them as llm.c token shards (include/distill/data/token_shards.h) with a manifest. Torch-free.
//
// Records (one JSON object per line; blank lines are skipped; keys other than these are ignored):
//   {"text": "..."}                          a document, for pretraining-style packing
//   {"prompt": "...", "completion": "..."}   an example whose loss covers the completion only
// A file holds one kind. A text record becomes [bos] + ids + [eos]; a prompt/completion record
// [bos] + ids(prompt) + ids(completion) + [eos], the prompt and completion encoded separately, with the
// bos and the prompt marked as no targets (bos only when the tokenizer has one, eos likewise).
//
// A packed folder (`distill data pack --out DIR`):
//   DIR/train_000000.bin ...  token shards of at most --shard-tokens tokens (uint16 ids when the vocabulary
//                             fits, else uint32); documents run on from one shard into the next
//   DIR/val_000000.bin ...    the held-out part (the last --val-fraction of the tokens or records)
//   DIR/<shard>.mask          beside each shard, for prompt/completion input only
//   DIR/manifest.json         written last: a folder without it is an interrupted pack
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace distill {

class Tokenizer;

enum class RecordKind { text, prompt_completion };
const char* record_kind_name(RecordKind kind);  // "text" | "prompt/completion"

struct JsonlRecords {
  RecordKind kind = RecordKind::text;
  std::vector<std::string> text;        // text records: the documents; prompt/completion: the prompts
  std::vector<std::string> completion;  // prompt/completion records only
  // prompt/completion records only: the optional "completion_ids" (empty when absent), the ids the completion
  // was generated as (`distill generate` writes them). encode_records uses them instead of encoding the
  // completion when they decode to it with the run's tokenizer: re-encoding generated text need not give the
  // generated ids back (SentencePiece's dummy prefix, other merges), and cached teacher log-probabilities of a
  // generation are for those ids. With another tokenizer they decode to other text and the text is encoded.
  std::vector<std::vector<int32_t>> completion_ids;
  std::vector<int64_t> line;            // 1-based line of each record in its file
  std::string name;                     // the file
  size_t size() const { return text.size(); }
};

// Parses JSON Lines text. `name` stands for the file in messages, which name its line (and key): invalid
// JSON, a line that is not an object, a missing or non-string key, a record of the other kind than the
// first, a file with no records. Throws distill::Error.
JsonlRecords parse_jsonl(std::string_view text, const std::string& name);
// The same for a file (read whole).
JsonlRecords read_jsonl(const std::string& path);

// One record's tokens, and how many of them (from the start) are no targets: the bos and the prompt.
struct EncodedRecord {
  std::vector<uint32_t> ids;
  int64_t prompt_tokens = 0;
};
// Encodes records [begin, end) on `threads` threads (0: one per core); the result is in record order and
// does not depend on the thread count. An error names the file and line.
std::vector<EncodedRecord> encode_records(const Tokenizer& tokenizer, const JsonlRecords& records, size_t begin,
                                          size_t end, int threads = 0);

struct PackOptions {
  std::string tokenizer;  // tokenizer.json, .model or a folder
  std::string input;      // .txt (one document) or .jsonl
  std::string out_dir;
  double val_fraction = 0.1;               // the last share of the tokens (.txt) or records (.jsonl) for validation
  int64_t shard_tokens = 100'000'000;      // tokens per shard at most
  bool overwrite = false;                  // replace a folder that holds a manifest
  int threads = 0;                         // tokenizer threads; 0 = one per core
};

struct PackResult {
  std::string manifest_path;
  int64_t train_tokens = 0, val_tokens = 0, train_shards = 0, val_shards = 0;
  int64_t records = 0;  // .jsonl: records read; .txt: 1
  int64_t input_bytes = 0;
  bool masks = false;
  double seconds = 0;
  std::string summary() const;  // one line for the terminal
};

// Tokenises `options.input` and writes the packed folder. Errors (a missing input, an unreadable tokenizer,
// a val fraction out of range, a folder that holds a manifest without `overwrite`, ...) are distill::Error.
PackResult pack_tokens(const PackOptions& options);

// A packed folder's manifest.json, read and checked.
struct PackManifest {
  struct Shard {
    std::string path;       // the shard, with the folder
    std::string mask_path;  // empty: no mask
    int64_t tokens = 0;
  };
  std::string dir, path;
  std::string tokenizer_path, tokenizer_sha256;  // the file the ids come from, at packing time
  std::string tokenizer_source;                  // --tokenizer as given (a folder, or that file)
  int64_t vocab_size = 0;
  std::optional<int32_t> bos_id, eos_id;
  std::string input_path, input_kind;  // input_kind: "text" | "prompt/completion"
  int64_t token_width = 2;
  bool masks = false;
  std::vector<Shard> train, val;
};
constexpr const char* kPackManifestFormat = "distill-tokens";
constexpr int kPackManifestVersion = 1;
// Whether `dir` is a folder that holds manifest.json.
bool is_pack_folder(const std::string& dir);
// Reads DIR/manifest.json; a folder without one, or with shards but no manifest (an interrupted pack), and
// a malformed manifest are errors naming the file and the fix.
PackManifest read_pack_manifest(const std::string& dir);

}  // namespace distill
