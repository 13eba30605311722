// JSON Lines records, their tokens, and `distill data pack` (include/distill/data/pack.h). Torch-free.
#include "distill/data/pack.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "distill/data/token_shards.h"
#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/text/tokenizer.h"

namespace distill {

using nlohmann::json;

namespace {

std::string n(int64_t v) { return std::to_string(v); }

// JSON nested deeper than this in a record is refused while parsing: nothing a record holds needs it, and
// some operations on a parsed value recurse once per level.
constexpr int kMaxRecordDepth = 64;

std::string shown_type(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    default: return "a value";
  }
}

// "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error ..." -> "column 5: syntax error ...".
std::string parse_error_text(const std::string& what) {
  size_t pos = what.find("column ");
  if (pos == std::string::npos) pos = what.find("] ");
  return pos == std::string::npos ? what : what.substr(pos + (what.compare(pos, 2, "] ") == 0 ? 2 : 0));
}

// The key of a record as a string; errors name the line and the key.
const std::string& string_key(const json& record, const char* key, const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end())
    throw Error(where + ": missing key \"" + key + "\"; a record is {\"text\": ...} or {\"prompt\": ..., \"completion\": ...}");
  if (!it->is_string())
    throw Error(where + ": key \"" + key + "\" must be a string, got " + shown_type(*it) + "; write the text as a JSON string");
  return it->get_ref<const std::string&>();
}

std::string utc_now() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Names `distill data pack` writes: train_000000.bin, val_000003.mask, ...
bool is_pack_file_name(const std::string& name) {
  for (const char* prefix : {"train_", "val_"}) {
    const std::string p = prefix;
    if (name.rfind(p, 0) != 0) continue;
    const std::string rest = name.substr(p.size());
    if (rest.size() < 7 || rest.find_first_not_of("0123456789") != 6) continue;
    const std::string ext = rest.substr(6);
    if (ext == ".bin" || ext == ".mask") return true;
  }
  return false;
}

std::string shard_name(const std::string& prefix, size_t index) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%s_%06zu", prefix.c_str(), index);
  return buf;
}

// Token shards of one split, filled in order and written when full.
class ShardSink {
 public:
  ShardSink(std::string dir, std::string prefix, int width, bool masks, int64_t shard_tokens)
      : dir_(std::move(dir)), prefix_(std::move(prefix)), width_(width), masks_(masks), shard_tokens_(shard_tokens) {}

  // Appends tokens whose first `no_target` are not targets (a bos and a prompt).
  void append(const std::vector<uint32_t>& ids, size_t begin, size_t end, int64_t no_target) {
    for (size_t i = begin; i < end;) {
      const size_t room = static_cast<size_t>(shard_tokens_) - ids_.size();
      const size_t take = std::min(room, end - i);
      const auto first = ids.begin() + static_cast<std::ptrdiff_t>(i);
      ids_.insert(ids_.end(), first, first + static_cast<std::ptrdiff_t>(take));
      if (masks_)
        for (size_t k = i; k < i + take; ++k) mask_.push_back(static_cast<int64_t>(k) >= no_target ? 1 : 0);
      i += take;
      if (ids_.size() == static_cast<size_t>(shard_tokens_)) flush();
    }
  }
  void finish() {
    if (!ids_.empty()) flush();
  }

  std::vector<PackManifest::Shard> shards;
  int64_t tokens = 0;

 private:
  void flush() {
    const std::string stem = shard_name(prefix_, shards.size());
    PackManifest::Shard s;
    s.path = stem + ".bin";
    s.tokens = static_cast<int64_t>(ids_.size());
    write_token_shard(paths::join(dir_, s.path), ids_, width_);
    if (masks_) {
      s.mask_path = stem + ".mask";
      write_token_mask(paths::join(dir_, s.mask_path), mask_);
    }
    tokens += s.tokens;
    shards.push_back(s);
    ids_.clear();
    mask_.clear();
  }

  std::string dir_, prefix_;
  int width_;
  bool masks_;
  int64_t shard_tokens_;
  std::vector<uint32_t> ids_;
  std::vector<uint8_t> mask_;
};

json shards_json(const ShardSink& sink) {
  json list = json::array();
  for (const auto& s : sink.shards) {
    json entry = {{"file", s.path}, {"tokens", s.tokens}};
    if (!s.mask_path.empty()) entry["mask"] = s.mask_path;
    list.push_back(entry);
  }
  return {{"tokens", sink.tokens}, {"shards", list}};
}

json optional_id(const std::optional<int32_t>& id) { return id ? json(*id) : json(nullptr); }

// The held-out count: the last `fraction` of `total`, at least one when the fraction is not 0.
int64_t held_out(int64_t total, double fraction) {
  if (fraction <= 0) return 0;
  return std::max<int64_t>(1, std::llround(static_cast<double>(total) * fraction));
}

// The optional "completion_ids" of a prompt/completion record (what `distill generate` writes): token ids,
// non-negative integers. Empty when absent.
std::vector<int32_t> completion_ids(const json& record, const std::string& where) {
  const auto it = record.find("completion_ids");
  if (it == record.end()) return {};
  if (!it->is_array())
    throw Error(where + ": key \"completion_ids\" must be an array of token ids, got " +
                (it->is_string() ? std::string("a string") : shown_type(*it)) +
                "; write the ids the completion was generated as, or remove the key");
  std::vector<int32_t> ids;
  ids.reserve(it->size());
  for (size_t j = 0; j < it->size(); ++j) {
    const json& v = (*it)[j];
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX)
      throw Error(where + ": completion_ids[" + n(static_cast<int64_t>(j)) + "] is " +
                  (v.is_number() ? v.dump() : v.is_string() ? std::string("a string") : shown_type(v)) +
                  ", not a token id (an integer >= 0); write the ids the completion was generated as, or remove the key");
    ids.push_back(static_cast<int32_t>(v.get<int64_t>()));
  }
  return ids;
}

}  // namespace

const char* record_kind_name(RecordKind kind) { return kind == RecordKind::text ? "text" : "prompt/completion"; }

JsonlRecords parse_jsonl(std::string_view text, const std::string& name) {
  JsonlRecords out;
  out.name = name;
  int64_t first_line = 0;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;  // blank
    const std::string where = name + ":" + n(line_no);
    json record;
    try {
      record = json::parse(line, [&](int depth, json::parse_event_t, json&) {
        if (depth > kMaxRecordDepth)
          throw Error(where + ": nested more than " + n(kMaxRecordDepth) +
                      " levels deep; a record is a flat object of strings");
        return true;
      });
    } catch (const json::exception& e) {
      throw Error(where + ": invalid JSON (" + parse_error_text(e.what()) +
                  "); each line must be one JSON object, e.g. {\"text\": \"...\"}");
    }
    if (!record.is_object())
      throw Error(where + ": expected a JSON object ({\"text\": ...} or {\"prompt\": ..., \"completion\": ...}), got " +
                  shown_type(record) + (record.is_string() ? " (a string)" : ""));
    const bool has_text = record.contains("text");
    const bool has_pc = record.contains("prompt") || record.contains("completion");
    if (has_text && has_pc)
      throw Error(where + ": has both \"text\" and \"" + (record.contains("prompt") ? "prompt" : "completion") +
                  "\"; a record is either {\"text\": ...} or {\"prompt\": ..., \"completion\": ...}");
    if (!has_text && !has_pc) {
      std::string keys;
      for (auto it = record.begin(); it != record.end(); ++it) keys += (keys.empty() ? "\"" : ", \"") + it.key() + "\"";
      throw Error(where + ": missing key \"text\" (or \"prompt\" and \"completion\"); the record has " +
                  (keys.empty() ? std::string("no keys") : "keys " + keys));
    }
    const RecordKind kind = has_text ? RecordKind::text : RecordKind::prompt_completion;
    if (out.line.empty()) {
      out.kind = kind;
      first_line = line_no;
    } else if (kind != out.kind) {
      throw Error(where + ": a " + std::string(record_kind_name(kind)) + " record, but the file's first record (line " +
                  n(first_line) + ") is " + record_kind_name(out.kind) + "; a file holds one kind: split it in two");
    }
    if (kind == RecordKind::text) {
      if (record.contains("completion_ids"))
        throw Error(where + ": \"completion_ids\" belongs to a {\"prompt\", \"completion\"} record, not a \"text\" one; "
                    "remove it");
      out.text.push_back(string_key(record, "text", where));
    } else {
      out.text.push_back(string_key(record, "prompt", where));
      out.completion.push_back(string_key(record, "completion", where));
      out.completion_ids.push_back(completion_ids(record, where));
    }
    out.line.push_back(line_no);
  }
  if (out.line.empty())
    throw Error(name + ": holds no records (the file is empty or blank); write one JSON object per line, "
                "{\"text\": ...} or {\"prompt\": ..., \"completion\": ...}");
  return out;
}

JsonlRecords read_jsonl(const std::string& path) {
  if (paths::is_directory(path)) throw Error(path + ": is a folder; give a .jsonl file");
  if (!paths::exists(path)) throw Error(path + ": no such file; check the path");
  MappedFile file(path);
  return parse_jsonl(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()), path);
}

namespace {

// Whether `ids` are this tokenizer's tokens of `text`: ids from another tokenizer decode to other text (or
// name no token).
bool decodes_to(const Tokenizer& tokenizer, const std::vector<int32_t>& ids, const std::string& text) {
  for (int32_t id : ids)
    if (id >= tokenizer.vocab_size()) return false;
  try {
    return tokenizer.decode(ids) == text;
  } catch (const Error&) {
    return false;
  }
}

}  // namespace

std::vector<EncodedRecord> encode_records(const Tokenizer& tokenizer, const JsonlRecords& records, size_t begin,
                                          size_t end, int threads) {
  end = std::min(end, records.size());
  std::vector<EncodedRecord> out(end > begin ? end - begin : 0);
  if (out.empty()) return out;
  const auto bos = tokenizer.bos_id(), eos = tokenizer.eos_id();
  auto encode_one = [&](size_t i) {
    EncodedRecord& r = out[i - begin];
    if (bos) r.ids.push_back(static_cast<uint32_t>(*bos));
    auto append = [&](const std::string& text) {
      for (int32_t id : tokenizer.encode(text)) r.ids.push_back(static_cast<uint32_t>(id));
    };
    append(records.text[i]);
    if (records.kind == RecordKind::prompt_completion) {
      r.prompt_tokens = static_cast<int64_t>(r.ids.size());
      const std::vector<int32_t>& given = records.completion_ids[i];
      if (!given.empty() && decodes_to(tokenizer, given, records.completion[i]))
        r.ids.insert(r.ids.end(), given.begin(), given.end());
      else
        append(records.completion[i]);
    }
    if (eos) r.ids.push_back(static_cast<uint32_t>(*eos));
  };
  const size_t chunk = 64;
  const size_t chunks = (out.size() + chunk - 1) / chunk;
  size_t workers = threads > 0 ? static_cast<size_t>(threads) : std::max(1u, std::thread::hardware_concurrency());
  workers = std::min(workers, chunks);
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  size_t error_at = SIZE_MAX;
  std::string error_text;
  auto work = [&] {
    for (size_t c; (c = next.fetch_add(1)) < chunks;) {
      for (size_t i = begin + c * chunk; i < std::min(end, begin + (c + 1) * chunk); ++i) {
        try {
          encode_one(i);
        } catch (const std::exception& e) {
          // The first failing record in file order is reported, whichever thread met it first.
          std::lock_guard<std::mutex> lock(error_mutex);
          if (i < error_at) {
            error_at = i;
            error_text = records.name + ":" + n(records.line[i]) + ": " + e.what();
          }
          break;
        }
      }
    }
  };
  if (workers <= 1) {
    work();
  } else {
    std::vector<std::thread> pool;
    for (size_t t = 0; t < workers; ++t) pool.emplace_back(work);
    for (auto& t : pool) t.join();
  }
  if (error_at != SIZE_MAX) throw Error(error_text);
  return out;
}

std::string PackResult::summary() const {
  char buf[512];
  const double tokens_per_s = seconds > 0 ? static_cast<double>(train_tokens + val_tokens) / seconds : 0.0;
  std::snprintf(buf, sizeof buf,
                "packed %lld %s (%lld bytes) into %lld training tokens in %lld shard%s and %lld validation tokens in %lld "
                "shard%s%s in %.1f s (%.0f tokens/s): %s",
                static_cast<long long>(records), records == 1 ? "document" : "records", static_cast<long long>(input_bytes),
                static_cast<long long>(train_tokens), static_cast<long long>(train_shards), train_shards == 1 ? "" : "s",
                static_cast<long long>(val_tokens), static_cast<long long>(val_shards), val_shards == 1 ? "" : "s",
                masks ? ", with loss masks" : "", seconds, tokens_per_s, manifest_path.c_str());
  return buf;
}

PackResult pack_tokens(const PackOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  if (!(options.val_fraction >= 0.0 && options.val_fraction < 1.0))
    throw Error("--val-fraction: must be in [0, 1), got " + std::to_string(options.val_fraction) +
                " (the share of the input held out for validation)");
  if (options.shard_tokens <= 0 || options.shard_tokens > INT32_MAX)
    throw Error("--shard-tokens: must be in [1, 2147483647] (a shard's header holds its count as an int32), got " +
                n(options.shard_tokens));
  if (options.input.empty()) throw Error("--in: missing; give a .txt or .jsonl file");
  if (options.out_dir.empty()) throw Error("--out: missing; give the folder to write the shards to");
  if (paths::is_directory(options.input)) throw Error("--in " + options.input + ": is a folder; give a .txt or .jsonl file");
  if (!paths::exists(options.input)) throw Error("--in " + options.input + ": no such file");
  const bool jsonl = ends_with(options.input, ".jsonl");
  if (!jsonl && !ends_with(options.input, ".txt"))
    throw Error("--in " + options.input + ": expected a .txt file (the whole file is one document) or a .jsonl file "
                "(one {\"text\": ...} or {\"prompt\": ..., \"completion\": ...} per line); rename it to say which");
  if (paths::exists(options.out_dir) && !paths::is_directory(options.out_dir))
    throw Error("--out " + options.out_dir + ": exists and is not a folder");
  const std::string manifest_path = paths::join(options.out_dir, "manifest.json");
  if (paths::exists(manifest_path) && !options.overwrite)
    throw Error("--out " + options.out_dir + ": already holds a packed dataset (manifest.json); pass --overwrite to "
                "replace it, or choose another folder");

  std::unique_ptr<Tokenizer> tokenizer;
  try {
    tokenizer = Tokenizer::load(options.tokenizer);
  } catch (const Error& e) {
    throw Error("--tokenizer: " + std::string(e.what()));
  }
  const int64_t vocab = tokenizer->vocab_size();
  const int width = vocab <= 65536 ? 2 : 4;

  // Read (and hash) the input before touching the folder, so that a bad input leaves it as it was.
  MappedFile input(options.input);
  const std::string_view bytes(reinterpret_cast<const char*>(input.data()), input.size());
  const std::string input_sha256 = sha256_hex(bytes);
  std::optional<JsonlRecords> records;
  std::vector<uint32_t> document;  // .txt
  if (jsonl) {
    records = parse_jsonl(bytes, options.input);
  } else {
    if (bytes.empty()) throw Error("--in " + options.input + ": the file is empty; there is nothing to pack");
    if (auto bos = tokenizer->bos_id()) document.push_back(static_cast<uint32_t>(*bos));
    try {
      for (int32_t id : tokenizer->encode(bytes)) document.push_back(static_cast<uint32_t>(id));
    } catch (const Error& e) {
      throw Error("--in " + options.input + ": " + e.what());
    }
    if (auto eos = tokenizer->eos_id()) document.push_back(static_cast<uint32_t>(*eos));
  }
  const int64_t units = jsonl ? static_cast<int64_t>(records->size()) : static_cast<int64_t>(document.size());
  const int64_t val_units = held_out(units, options.val_fraction);
  if (val_units >= units)
    throw Error("--val-fraction " + std::to_string(options.val_fraction) + ": " + options.input + " has only " + n(units) +
                (jsonl ? " records" : " tokens") + ", too few to hold out a validation part and keep training data; "
                "lower --val-fraction (0 holds out nothing)");

  // The folder: an old manifest goes first, so that an interrupted overwrite reads as incomplete.
  std::string mkdir_error;
  if (!paths::create_directories(options.out_dir, &mkdir_error)) throw Error("--out " + options.out_dir + ": " + mkdir_error);
  if (paths::exists(manifest_path)) {
    if (!paths::remove_file(manifest_path)) throw Error(manifest_path + ": cannot remove the old manifest");
    fsync_directory(options.out_dir);
  }
  for (const std::string& name : paths::list_dir(options.out_dir))
    if (is_pack_file_name(name)) paths::remove_file(paths::join(options.out_dir, name));

  const bool masks = jsonl && records->kind == RecordKind::prompt_completion;
  ShardSink train(options.out_dir, "train", width, masks, options.shard_tokens);
  ShardSink val(options.out_dir, "val", width, masks, options.shard_tokens);
  if (jsonl) {
    const size_t total = records->size(), first_val = total - static_cast<size_t>(val_units);
    const size_t block = 16384;  // records encoded together; bounds the memory held at once
    for (size_t begin = 0; begin < total; begin += block) {
      const size_t end = std::min(total, begin + block);
      std::vector<EncodedRecord> encoded = encode_records(*tokenizer, *records, begin, end, options.threads);
      for (size_t i = begin; i < end; ++i) {
        const EncodedRecord& r = encoded[i - begin];
        (i < first_val ? train : val).append(r.ids, 0, r.ids.size(), r.prompt_tokens);
      }
    }
  } else {
    const size_t first_val = document.size() - static_cast<size_t>(val_units);
    train.append(document, 0, first_val, 0);
    val.append(document, first_val, document.size(), 0);
  }
  train.finish();
  val.finish();

  auto absolute = [](const std::string& p) { return paths::absolute(p); };
  json manifest = {
      {"format", kPackManifestFormat},
      {"version", kPackManifestVersion},
      {"created", utc_now()},
      {"tokenizer",
       {{"path", absolute(tokenizer->path())},
        {"source", absolute(options.tokenizer)},
        {"sha256", tokenizer->sha256()},
        {"vocab_size", vocab},
        {"bos_id", optional_id(tokenizer->bos_id())},
        {"eos_id", optional_id(tokenizer->eos_id())}}},
      {"input",
       {{"path", absolute(options.input)},
        {"bytes", static_cast<int64_t>(bytes.size())},
        {"sha256", input_sha256},
        {"kind", jsonl ? record_kind_name(records->kind) : "text"},
        {"records", jsonl ? units : 1},
        {"documents", jsonl ? "one per record" : "the whole file is one document"}}},
      {"val_fraction", options.val_fraction},
      {"val_split", jsonl ? "the last records" : "the last tokens"},
      {"token_width", width},
      {"token_dtype", width == 2 ? "uint16" : "uint32"},
      {"masks", masks},
      {"train", shards_json(train)},
      {"val", shards_json(val)},
  };
  write_file_atomic(manifest_path, manifest.dump(2) + "\n");

  PackResult result;
  result.manifest_path = manifest_path;
  result.train_tokens = train.tokens;
  result.val_tokens = val.tokens;
  result.train_shards = static_cast<int64_t>(train.shards.size());
  result.val_shards = static_cast<int64_t>(val.shards.size());
  result.records = jsonl ? units : 1;
  result.input_bytes = static_cast<int64_t>(bytes.size());
  result.masks = masks;
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

bool is_pack_folder(const std::string& dir) {
  return paths::is_directory(dir) && paths::is_regular_file(paths::join(dir, "manifest.json"));
}

PackManifest read_pack_manifest(const std::string& dir) {
  const std::string path = paths::join(dir, "manifest.json");
  if (!paths::is_directory(dir)) throw Error(dir + ": not a folder written by `distill data pack`");
  if (!paths::is_regular_file(path)) {
    bool has_shards = false;
    for (const std::string& name : paths::list_dir(dir)) has_shards = has_shards || ends_with(name, ".bin");
    if (has_shards)
      throw Error(dir + ": has token shards but no manifest.json: `distill data pack` writes the manifest last, so "
                  "this pack was interrupted (or is still running); run it again with --overwrite, or name the shards "
                  "themselves (e.g. " + paths::join(dir, "train_*.bin") + ")");
    throw Error(dir + ": a folder without manifest.json; give a folder written by `distill data pack`, or token shard "
                "files or a glob (e.g. " + paths::join(dir, "*.bin") + ")");
  }
  json doc;
  try {
    MappedFile file(path);
    doc = json::parse(std::string_view(reinterpret_cast<const char*>(file.data()), file.size()));
  } catch (const json::exception& e) {
    throw Error(path + ": invalid JSON (" + parse_error_text(e.what()) + "); pack the folder again");
  }
  const std::string fix = "; the manifest is damaged: pack the folder again with `distill data pack --overwrite`";
  auto field = [&](const json& obj, const char* key, const std::string& dotted) -> const json& {
    if (!obj.is_object() || !obj.contains(key)) throw Error(path + ": key \"" + dotted + "\" is missing" + fix);
    return obj[key];
  };
  auto text = [&](const json& obj, const char* key, const std::string& dotted) {
    const json& v = field(obj, key, dotted);
    if (!v.is_string()) throw Error(path + ": key \"" + dotted + "\" must be a string" + fix);
    return v.get<std::string>();
  };
  auto integer = [&](const json& obj, const char* key, const std::string& dotted) {
    const json& v = field(obj, key, dotted);
    if (!v.is_number_integer() || v.get<int64_t>() < 0) throw Error(path + ": key \"" + dotted + "\" must be a count" + fix);
    return v.get<int64_t>();
  };
  if (!doc.is_object() || !doc.contains("format") || doc["format"] != kPackManifestFormat)
    throw Error(path + ": not a manifest of `distill data pack` (its \"format\" is not \"" + kPackManifestFormat + "\")");
  const int64_t version = integer(doc, "version", "version");
  if (version != kPackManifestVersion)
    throw Error(path + ": manifest version " + n(version) + ", but this distill reads version " + n(kPackManifestVersion) +
                "; pack the data again with this distill");
  PackManifest m;
  m.dir = dir;
  m.path = path;
  const json& tok = field(doc, "tokenizer", "tokenizer");
  m.tokenizer_path = text(tok, "path", "tokenizer.path");
  m.tokenizer_sha256 = text(tok, "sha256", "tokenizer.sha256");
  m.tokenizer_source = tok.contains("source") ? text(tok, "source", "tokenizer.source") : m.tokenizer_path;
  m.vocab_size = integer(tok, "vocab_size", "tokenizer.vocab_size");
  for (auto [key, out] : {std::pair{"bos_id", &m.bos_id}, std::pair{"eos_id", &m.eos_id}}) {
    const json& v = field(tok, key, std::string("tokenizer.") + key);
    if (v.is_number_integer()) *out = v.get<int32_t>();
    else if (!v.is_null()) throw Error(path + ": key \"tokenizer." + key + "\" must be an id or null" + fix);
  }
  const json& input = field(doc, "input", "input");
  m.input_path = text(input, "path", "input.path");
  m.input_kind = text(input, "kind", "input.kind");
  m.token_width = integer(doc, "token_width", "token_width");
  const json& masks = field(doc, "masks", "masks");
  if (!masks.is_boolean()) throw Error(path + ": key \"masks\" must be true or false" + fix);
  m.masks = masks.get<bool>();
  for (auto [split, out] : {std::pair{"train", &m.train}, std::pair{"val", &m.val}}) {
    const json& shards = field(field(doc, split, split), "shards", std::string(split) + ".shards");
    if (!shards.is_array()) throw Error(path + ": key \"" + std::string(split) + ".shards\" must be a list" + fix);
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string at = std::string(split) + ".shards[" + n(static_cast<int64_t>(i)) + "]";
      PackManifest::Shard s;
      const std::string file = text(shards[i], "file", at + ".file");
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
        throw Error(path + ": key \"" + at + ".file\" must be a file name in the folder, got \"" + file + "\"" + fix);
      s.path = paths::join(dir, file);
      s.tokens = integer(shards[i], "tokens", at + ".tokens");
      if (shards[i].contains("mask")) {
        const std::string mask = text(shards[i], "mask", at + ".mask");
        if (mask.empty() || mask.find('/') != std::string::npos)
          throw Error(path + ": key \"" + at + ".mask\" must be a file name in the folder" + fix);
        s.mask_path = paths::join(dir, mask);
      }
      for (const std::string& file : {s.path, s.mask_path})
        if (!file.empty() && !paths::is_regular_file(file))
          throw Error(file + ": listed in " + path + " but missing; pack the folder again with `distill data pack --overwrite`");
      out->push_back(s);
    }
  }
  if (m.train.empty()) throw Error(path + ": lists no training shards" + fix);
  return m;
}

}  // namespace distill
