// `distill cache-teacher` and `teacher.cache`: include/distill/cache/teacher_cache.h.
#include "distill/cache/teacher_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <torch/torch.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iostream>
#include <list>
#include <mutex>
#include <random>
#include <unordered_map>

#include "distill/config/config.h"
#include "distill/config/schema.h"
#include "distill/config/dtype_names.h"
#include "distill/error.h"
#include "distill/io/paths.h"
#include "distill/io/sha256.h"
#include "distill/models/hf_folder.h"
#include "distill/loss/output_loss.h"
#include "distill/train/trainer.h"
#include "train/autocast.h"

namespace distill {

namespace {

using nlohmann::json;

// The raw bytes a chunk aims at: big enough for zstd to find the repetition, small enough that a batch in
// random order decodes little it does not use.
constexpr int64_t kChunkRawBytes = int64_t{1} << 20;

// The teacher's identity: its config section and the SHA-256 of the files its weights come from.
json teacher_identity(const ModelConfig& t) {
  json files = json::object();
  auto add = [&](const std::string& path) { files[paths::filename(path)] = sha256_file(path); };
  if (t.path && paths::is_directory(*t.path)) {
    for (const std::string& name : paths::list_dir(*t.path)) {
      const bool weights = name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0;
      if (weights || name == "config.json" || name == "model.safetensors.index.json") add(paths::join(*t.path, name));
    }
  } else if (t.path) {
    add(*t.path);
  }
  if (t.weights) add(*t.weights);
  json model = {{"dtype", t.dtype}};
  if (t.arch) model["arch"] = *t.arch;
  if (!t.options.empty()) model["options"] = t.options;
  return {{"model", model}, {"files", files}};
}

int64_t positions_of(const IoShape& io) { return io.tokens() ? io.seq_len : 1; }


}  // namespace

std::vector<uint32_t> cache_input_hashes(const at::Tensor& inputs) {
  const at::Tensor x = inputs.contiguous().cpu();
  const int64_t n = x.size(0);
  const size_t bytes = static_cast<size_t>(x.numel() / std::max<int64_t>(n, 1)) * x.element_size();
  const auto* p = static_cast<const uint8_t*>(x.data_ptr());
  std::vector<uint32_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = cache::input_hash(p + static_cast<size_t>(i) * bytes, bytes);
  return out;
}

int64_t cache_chunk_examples(int64_t requested, int64_t examples, int64_t positions, int64_t k, int64_t vocab,
                             cache::ValueEncoding encoding) {
  const int64_t id_bytes = vocab <= 65536 ? 2 : 4, value_bytes = encoding == cache::ValueEncoding::float32 ? 4 : 2;
  const int64_t example_bytes = positions * (4 + k * (id_bytes + value_bytes)) + 4;
  if (cache::chunk_raw_bytes(1, positions, k, vocab, encoding) > cache::kMaxChunkRawBytes)
    throw Error("--topk: " + std::to_string(k) + " entries for each of " + std::to_string(positions) +
                " positions make one example larger than a chunk may be (" +
                std::to_string(cache::kMaxChunkRawBytes >> 20) + " MiB); lower --topk");
  int64_t n = std::clamp<int64_t>(requested > 0 ? requested : kChunkRawBytes / example_bytes, 1, examples);
  while (n > 1 && cache::chunk_raw_bytes(n, positions, k, vocab, encoding) > cache::kMaxChunkRawBytes) n /= 2;
  return n;
}

cache::Chunk chunk_at(int64_t index, int64_t chunk_examples, int64_t examples, int64_t positions, int64_t k) {
  cache::Chunk chunk;
  chunk.first_example = index * chunk_examples;
  chunk.examples = std::min(examples, chunk.first_example + chunk_examples) - chunk.first_example;
  chunk.positions = positions;
  chunk.k = k;
  return chunk;
}

std::optional<json> report_if_complete(const cache::Writer& writer, const std::string& out) {
  if (!writer.done()) return std::nullopt;
  std::cerr << "cache-teacher: " << out << " is complete already (" << writer.manifest().chunks() << " chunks); nothing to do\n";
  json r = writer.manifest().raw.value("totals", json::object());
  r["out"] = out;
  r["already_complete"] = true;
  return r;
}

json cache_teacher(const Config& config_in, const CacheTeacherOptions& o) {
  if (!o.from.empty()) return import_teacher_logprobs(config_in, o);
  if (!config_in.teacher || (!config_in.teacher->path && !config_in.teacher->arch && !config_in.teacher->weights))
    throw Error("teacher: cache-teacher runs the teacher, and the config names none; give teacher.path (a Hugging "
                "Face folder or TorchScript file), or teacher.arch with teacher.weights");
  Config config = config_in;
  config.teacher->cache.reset();
  const std::string out = !o.out.empty()                ? o.out
                          : config_in.teacher->cache    ? *config_in.teacher->cache
                                                        : paths::join(config.run.out_dir, "teacher-cache");
  const cache::ValueEncoding encoding = cache::value_encoding_named(o.values, "--values");
  apply_threads(config.run.threads);
  Workspace ws = prepare_workspace(config);
  const IoShape& io = ws.data.io;
  const int64_t vocab = ws.student_outputs, positions = positions_of(io), examples = ws.data.train->size();
  const int64_t k = o.topk == 0 ? std::min<int64_t>(64, vocab) : o.topk;
  if (k < 1 || k > vocab)
    throw Error("--topk: " + std::to_string(k) + " is not in [1, " + std::to_string(vocab) + "] (the student's " +
                (io.tokens() ? "vocabulary" : "classes") + ")");
  const int64_t chunk_examples = cache_chunk_examples(o.chunk_examples, examples, positions, k, vocab, encoding);
  const double temperature = config.loss.temperature;
  json manifest = {
      {"k", k},
      {"vocab", vocab},
      {"positions", positions},
      {"examples", examples},
      {"chunk_examples", chunk_examples},
      {"values", cache::value_encoding_name(encoding)},
      {"temperature", temperature},
      {"vocab_rule", config.loss.vocab},
      {"precision", config.train.precision},
      {"teacher", teacher_identity(*config.teacher)},
      {"tokenizer_sha256", ws.data.tokenizer_sha256 ? json(*ws.data.tokenizer_sha256) : json(nullptr)},
      {"data", {{"format", config.data.format}, {"examples", examples}, {"positions", positions}}},
  };
  cache::Writer writer(out, manifest, o.overwrite);
  const int64_t chunks = writer.manifest().chunks();
  if (auto done = report_if_complete(writer, out)) return *done;
  if (writer.next_chunk() > 0)
    std::cerr << "cache-teacher: continuing " << out << " at chunk " << writer.next_chunk() << " of " << chunks << "\n";
  std::cerr << "cache-teacher: " << ws.teacher->describe() << " over " << ws.data.train->describe() << ", top-" << k
            << " at T = " << schema::fmt_num(temperature) << " (" << cache::value_encoding_name(encoding) << "), " << chunks
            << " chunks of " << chunk_examples << " examples into " << out << "\n";

  const int64_t batch_size = o.batch_size > 0 ? o.batch_size : io.tokens() ? config.train.batch_size : 1024;
  const bool bf16 = dtype_named(config.train.precision, "train.precision") == DTypeName::bfloat16;
  ws.teacher->set_training(false);
  const auto start = std::chrono::steady_clock::now();
  int64_t done_examples = 0;
  for (int64_t c = writer.next_chunk(); c < chunks; ++c) {
    cache::Chunk chunk = chunk_at(c, chunk_examples, examples, positions, k);
    chunk.ids.reserve(static_cast<size_t>(chunk.rows() * k));
    chunk.logprobs.reserve(static_cast<size_t>(chunk.rows() * k));
    for (int64_t b = chunk.first_example; b < chunk.first_example + chunk.examples; b += batch_size) {
      const Batch batch = ws.data.train->examples(b, std::min(chunk.first_example + chunk.examples, b + batch_size));
      const std::vector<uint32_t> hashes = cache_input_hashes(batch.student_input);
      chunk.input_hash.insert(chunk.input_hash.end(), hashes.begin(), hashes.end());
      torch::NoGradGuard no_grad;
      AutocastScope autocast(ws.device, bf16);
      const ModelOutput t = ws.teacher->forward_output(batch.teacher_input.to(ws.device));
      for_each_logits_chunk(t, nullptr, batch.targets.to(ws.device), config.loss.chunk_rows,
                            [&](const at::Tensor& z, const at::Tensor&, const at::Tensor&) {
        // The vocabulary rule, as the live loss applies it: the teacher's first `vocab` logits.
        const at::Tensor fitted = z.slice(1, 0, vocab).to(at::kFloat);
        const at::Tensor logp = at::log_softmax(fitted / temperature, 1);
        const auto [values, index] = logp.topk(k, 1, /*largest=*/true, /*sorted=*/true);
        // The mass outside the top-k, summed over it directly (1 - sum would cancel when it is small).
        const at::Tensor tail = logp.scatter(1, index, -std::numeric_limits<float>::infinity()).logsumexp(1).exp();
        const at::Tensor v = values.contiguous().cpu(), i = index.to(at::kInt).contiguous().cpu(), m = tail.contiguous().cpu();
        chunk.logprobs.insert(chunk.logprobs.end(), v.data_ptr<float>(), v.data_ptr<float>() + v.numel());
        chunk.ids.insert(chunk.ids.end(), i.data_ptr<int32_t>(), i.data_ptr<int32_t>() + i.numel());
        chunk.tail_mass.insert(chunk.tail_mass.end(), m.data_ptr<float>(), m.data_ptr<float>() + m.numel());
      });
    }
    for (float& m : chunk.tail_mass) m = std::clamp(m, 0.0f, 1.0f);
    for (float& v : chunk.logprobs) v = std::min(v, 0.0f);
    writer.append(cache::encode_chunk(chunk, encoding, vocab, /*compression_level=*/9));
    done_examples += chunk.examples;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (c + 1 == chunks || (c + 1) % std::max<int64_t>(1, chunks / 20) == 0)
      std::cerr << "cache-teacher: chunk " << c + 1 << "/" << chunks << ", "
                << static_cast<int64_t>(static_cast<double>(done_examples * positions) / std::max(s, 1e-9))
                << (io.tokens() ? " tokens/s" : " rows/s") << "\n";
  }
  // Totals from the files themselves, so a resumed run counts what an earlier one wrote.
  uint64_t bytes = 0;
  for (const auto& e : cache::read_index(out)) bytes += e.bytes;
  const double per_position = static_cast<double>(bytes) / static_cast<double>(examples * positions);
  json totals = {{"chunks", chunks}, {"bytes", bytes}, {"positions", examples * positions},
                 {"bytes_per_position", per_position}};
  writer.finish(totals);
  std::cerr << "cache-teacher: " << out << " complete: " << bytes << " bytes, " << schema::fmt_num(per_position) << " bytes per "
            << (io.tokens() ? "token" : "row") << " at k = " << k << "\n";
  json r = totals;
  r["out"] = out;
  return r;
}

struct TeacherCache::Impl {
  std::string dir, data_path;
  cache::Manifest manifest;
  std::vector<cache::IndexEntry> index;
  int fd = -1;
  int64_t use_k = 0;
  bool tail = false;
  double temperature = 1.0;
  // Decoded chunks, most recently used first.
  mutable std::mutex mutex;
  mutable std::list<std::pair<int64_t, std::shared_ptr<const cache::Chunk>>> lru;
  size_t capacity = 8;

  std::shared_ptr<const cache::Chunk> chunk(int64_t c) const {
    {
      std::lock_guard<std::mutex> lock(mutex);
      for (auto it = lru.begin(); it != lru.end(); ++it)
        if (it->first == c) {
          lru.splice(lru.begin(), lru, it);
          return lru.front().second;
        }
    }
    const cache::IndexEntry& e = index[static_cast<size_t>(c)];
    std::string frame(static_cast<size_t>(e.bytes), '\0');
    size_t got = 0;
    while (got < frame.size()) {
      const ssize_t n = ::pread(fd, frame.data() + got, frame.size() - got, static_cast<off_t>(e.offset + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) throw Error(data_path + ": cannot read chunk " + std::to_string(c) + " (" + (n < 0 ? std::strerror(errno) : "short file") + ")");
      got += static_cast<size_t>(n);
    }
    const std::string where = data_path + ": chunk " + std::to_string(c);
    if (cache::fnv1a64(frame.data(), frame.size()) != e.checksum)
      throw Error(where + ": checksum mismatch (the file was changed or damaged); make the cache again with "
                  "`distill cache-teacher --overwrite`");
    auto decoded = std::make_shared<const cache::Chunk>(cache::decode_chunk(frame.data(), frame.size(), manifest.vocab, where));
    const int64_t first = c * manifest.chunk_examples;
    if (decoded->first_example != first || decoded->positions != manifest.positions || decoded->k != manifest.k ||
        decoded->examples != std::min(manifest.chunk_examples, manifest.examples - first))
      throw Error(where + ": holds examples from " + std::to_string(decoded->first_example) + " (" +
                  std::to_string(decoded->examples) + " of " + std::to_string(decoded->positions) + " positions, k " +
                  std::to_string(decoded->k) + "), not what manifest.json says; make the cache again");
    std::lock_guard<std::mutex> lock(mutex);
    lru.emplace_front(c, decoded);
    while (lru.size() > capacity) lru.pop_back();
    return decoded;
  }
};

TeacherCache::TeacherCache(const std::string& dir, const BatchSource& train, const std::string& data_format,
                           const std::optional<std::string>& tokenizer_sha256, int64_t student_vocab,
                           int64_t positions, const Config& config)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.dir = dir;
  const std::string key = "teacher.cache";
  if (!paths::is_directory(dir)) throw Error(key + ": " + dir + " is not a folder; make the cache with `distill cache-teacher`");
  m.manifest = cache::read_manifest(dir);
  const cache::Manifest& mf = m.manifest;
  m.index = cache::read_index(dir);
  if (!mf.complete)
    throw Error(key + ": " + dir + " is incomplete (" + std::to_string(m.index.size()) + " of " +
                std::to_string(mf.chunks()) + " chunks); run `distill cache-teacher` again with the same config to finish it");
  if (static_cast<int64_t>(m.index.size()) != mf.chunks())
    throw Error(key + ": " + dir + "/index.bin lists " + std::to_string(m.index.size()) + " chunks, manifest.json " +
                std::to_string(mf.chunks()) + "; the cache is damaged: make it again with --overwrite");
  m.data_path = paths::join(dir, "chunks.bin");
  m.fd = ::open(m.data_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (m.fd < 0) throw Error(m.data_path + ": cannot open (" + std::strerror(errno) + ")");
  struct stat st {};
  ::fstat(m.fd, &st);
  for (const auto& e : m.index)
    if (e.offset + e.bytes > static_cast<uint64_t>(st.st_size) || e.bytes == 0)
      throw Error(m.data_path + ": shorter than index.bin says (truncated?); make the cache again with --overwrite");
  // The run must train on the data the cache was made from, through the same vocabulary.
  const json& data_id = mf.raw.contains("data") ? mf.raw["data"] : json();
  const std::string data = data_id.is_object() && data_id.contains("format") && data_id["format"].is_string()
                               ? data_id["format"].get<std::string>()
                               : std::string("?");
  if (data != data_format)
    throw Error(key + ": " + dir + " was made from data.format \"" + data + "\", the run's is \"" + data_format + "\"");
  if (mf.positions != positions)
    throw Error(key + ": " + dir + " holds " + std::to_string(mf.positions) + " positions per example, the run's data " +
                std::to_string(positions) + (positions > 1 ? " (data.seq_len)" : "") + "; make the cache from this config");
  if (mf.examples != train.size())
    throw Error(key + ": " + dir + " holds " + std::to_string(mf.examples) + " examples, the run's training data has " +
                std::to_string(train.size()) + " (" + train.describe() + "); it was made from other data or another "
                "data.seq_len: make the cache from this config with `distill cache-teacher`");
  const json& tok = mf.raw.contains("tokenizer_sha256") ? mf.raw["tokenizer_sha256"] : json();
  if (tokenizer_sha256 && tok.is_string() && tok.get<std::string>() != *tokenizer_sha256)
    throw Error(key + ": " + dir + " was made from data tokenised with another tokenizer (sha256 " +
                tok.get<std::string>().substr(0, 12) + "..., the run's data " + tokenizer_sha256->substr(0, 12) + "...)");
  if (mf.vocab != student_vocab)
    throw Error(key + ": " + dir + " holds ids of a " + std::to_string(mf.vocab) + "-entry vocabulary, the student has " +
                std::to_string(student_vocab) + " outputs; the teacher and the student must share the vocabulary "
                "(loss.vocab \"truncate\" when caching fits a larger teacher to the student)");
  if (config.loss.kind != "forward_kl")
    throw Error("loss.kind: a teacher cache holds a sparse (top-k) teacher, which trains with \"forward_kl\" only, "
                "got \"" + config.loss.kind + "\"");
  if (config.loss.topk > mf.k)
    throw Error("loss.topk: " + std::to_string(config.loss.topk) + " is more than the " + std::to_string(mf.k) +
                " entries per position that " + dir + " holds; use at most " + std::to_string(mf.k) + " (0 = all)");
  m.use_k = config.loss.topk > 0 ? config.loss.topk : mf.k;
  m.tail = config.loss.topk_tail == "tail";
  m.temperature = mf.temperature;
  if (m.tail && std::abs(config.loss.temperature - mf.temperature) > 1e-12 * mf.temperature)
    throw Error("loss.temperature: " + schema::fmt_num(config.loss.temperature) + " differs from the " + schema::fmt_num(mf.temperature) +
                " that " + dir + " was made at; with loss.topk_tail \"tail\" the stored tail mass holds at that "
                "temperature only: train at T = " + schema::fmt_num(mf.temperature) + ", use loss.topk_tail \"ignore\", or cache again");
  const int64_t chunk_bytes = mf.chunk_examples * mf.positions * mf.k * 8;
  m.capacity = static_cast<size_t>(std::clamp<int64_t>((int64_t{256} << 20) / std::max<int64_t>(chunk_bytes, 1), 4, 4096));
}

TeacherCache::~TeacherCache() {
  if (impl_ && impl_->fd >= 0) ::close(impl_->fd);
}

const cache::Manifest& TeacherCache::manifest() const { return impl_->manifest; }

std::string TeacherCache::describe() const {
  const cache::Manifest& mf = impl_->manifest;
  return impl_->dir + " (top-" + std::to_string(mf.k) + " of " + std::to_string(mf.vocab) + " at T = " +
         schema::fmt_num(mf.temperature) + ", " + cache::value_encoding_name(mf.encoding) + ", " + std::to_string(mf.examples) +
         " examples; training with top-" + std::to_string(impl_->use_k) + ")";
}

SparseTeacher TeacherCache::lookup(const Batch& batch) const {
  const Impl& m = *impl_;
  const cache::Manifest& mf = m.manifest;
  TORCH_CHECK(batch.example_ids.defined(), "teacher cache: the batch has no example ids");
  const at::Tensor ids = batch.example_ids.to(at::kLong).contiguous().cpu();
  const int64_t n = ids.size(0), P = mf.positions, K = m.use_k, rows = n * P;
  const std::vector<uint32_t> hashes = cache_input_hashes(batch.student_input);
  SparseTeacher s;
  s.index = at::empty({rows, K}, at::kLong);
  s.logits = at::empty({rows, K}, at::kFloat);
  if (m.tail) s.lse = at::empty({rows}, at::kFloat);
  int64_t* index = s.index.data_ptr<int64_t>();
  float* logits = s.logits.data_ptr<float>();
  float* lse = m.tail ? s.lse.data_ptr<float>() : nullptr;
  const int64_t* id = ids.data_ptr<int64_t>();
  const float T = static_cast<float>(m.temperature);
  for (int64_t e = 0; e < n; ++e) {
    const int64_t ex = id[e];
    if (ex < 0 || ex >= mf.examples)
      throw Error("teacher.cache: example " + std::to_string(ex) + " is outside the cache's " + std::to_string(mf.examples));
    const auto chunk = m.chunk(ex / mf.chunk_examples);
    const int64_t local = ex - chunk->first_example;
    if (chunk->input_hash[static_cast<size_t>(local)] != hashes[static_cast<size_t>(e)])
      throw Error("teacher.cache: example " + std::to_string(ex) + " of the training data is not the one " + m.dir +
                  " was made from (its inputs differ); the data changed since `distill cache-teacher` ran: make the "
                  "cache again from this data");
    for (int64_t p = 0; p < P; ++p) {
      const int64_t src = local * P + p, dst = e * P + p;
      const float* lp = chunk->logprobs.data() + src * mf.k;
      const int32_t* tok = chunk->ids.data() + src * mf.k;
      double kept = 0, dropped = 0;
      for (int64_t j = 0; j < mf.k; ++j) {
        if (j < K) {
          index[dst * K + j] = tok[j];
          logits[dst * K + j] = T * lp[j];
          kept += std::exp(static_cast<double>(lp[j]));
        } else {
          dropped += std::exp(static_cast<double>(lp[j]));
        }
      }
      if (lse) {
        // The k probabilities, rescaled so that with the tail they sum to 1 exactly.
        const double tail = std::min(1.0, static_cast<double>(chunk->tail_mass[static_cast<size_t>(src)]) + dropped);
        lse[dst] = static_cast<float>(std::log(std::max(kept, 1e-300)) - std::log(std::max(1.0 - tail, 1e-300)));
      }
    }
  }
  return s;
}

}  // namespace distill

namespace distill {

json bench_teacher_cache(const std::string& dir, int64_t repeats) {
  const cache::Manifest mf = cache::read_manifest(dir);
  if (!mf.complete) throw Error(dir + ": the cache is incomplete; finish it with `distill cache-teacher` first");
  const auto index = cache::read_index(dir);
  const std::string data_path = paths::join(dir, "chunks.bin");
  std::ifstream in(data_path, std::ios::binary);
  if (!in) throw Error(data_path + ": cannot open (" + std::strerror(errno) + ")");
  std::vector<std::string> frames;
  uint64_t bytes = 0;
  for (const auto& e : index) {
    std::string f(static_cast<size_t>(e.bytes), '\0');
    in.seekg(static_cast<std::streamoff>(e.offset));
    if (!in.read(f.data(), static_cast<std::streamsize>(f.size()))) throw Error(data_path + ": shorter than its index");
    bytes += e.bytes;
    frames.push_back(std::move(f));
  }
  // Chunks in a seeded random order, as a shuffled run meets them; each decoded and turned into the loss's
  // inputs (index, T * log p, log-normaliser), which is all the trainer does with a cache.
  std::vector<size_t> order(frames.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::mt19937_64 rng(1);
  std::vector<double> seconds;
  for (int64_t r = 0; r < std::max<int64_t>(1, repeats); ++r) {
    std::shuffle(order.begin(), order.end(), rng);
    const auto t0 = std::chrono::steady_clock::now();
    double checksum = 0;
    for (size_t i : order) {
      const cache::Chunk c = cache::decode_chunk(frames[i].data(), frames[i].size(), mf.vocab, data_path);
      const int64_t n = c.rows() * c.k;
      std::vector<int64_t> idx(static_cast<size_t>(n));
      std::vector<float> logits(static_cast<size_t>(n));
      const float T = static_cast<float>(mf.temperature);
      for (int64_t row = 0; row < c.rows(); ++row) {
        double kept = 0;
        for (int64_t j = 0; j < c.k; ++j) {
          const size_t e = static_cast<size_t>(row * c.k + j);
          idx[e] = c.ids[e];
          logits[e] = T * c.logprobs[e];
          kept += std::exp(static_cast<double>(c.logprobs[e]));
        }
        if (kept > 0) checksum += std::log(kept) - std::log1p(-static_cast<double>(c.tail_mass[static_cast<size_t>(row)]));
      }
    }
    seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    if (!std::isfinite(checksum)) seconds.back() = std::numeric_limits<double>::infinity();
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];
  const int64_t positions = mf.examples * mf.positions;
  return {{"cache", dir},
          {"k", mf.k},
          {"vocab", mf.vocab},
          {"values", cache::value_encoding_name(mf.encoding)},
          {"positions", positions},
          {"chunks", index.size()},
          {"bytes", bytes},
          {"bytes_per_position", static_cast<double>(bytes) / static_cast<double>(positions)},
          {"median_s", median},
          {"positions_per_s", static_cast<double>(positions) / median},
          {"threads", 1}};
}

}  // namespace distill
