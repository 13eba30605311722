// The teacher cache's files: layout in include/distill/cache/cache_format.h.
#include "distill/cache/cache_format.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <type_traits>

#include "distill/error.h"
#include "distill/io/atomic_file.h"
#include "distill/io/paths.h"

namespace distill::cache {

namespace {

constexpr uint32_t kChunkMagic = 0x31435444;        // "DTC1"
constexpr uint32_t kChunkMagicCounts = 0x32435444;  // "DTC2": with a count per row
constexpr char kIndexMagic[8] = {'D', 'T', 'C', 'I', 'N', 'D', 'E', 'X'};
constexpr size_t kHeaderBytes = 2 * 4 + 5 * 8;
constexpr size_t kIndexEntryBytes = 24;

std::string errno_text() { return std::strerror(errno); }

// Little-endian appends and reads (the machines distill runs on are little-endian; the layout says so).
template <class T> void put(std::string& out, T v) { out.append(reinterpret_cast<const char*>(&v), sizeof v); }

// `count` values of `width` bytes, byte plane by byte plane: all first bytes, then all second bytes, ...
void put_planes(std::string& out, const uint8_t* values, size_t count, size_t width) {
  const size_t at = out.size();
  out.resize(at + count * width);
  char* dst = out.data() + at;
  for (size_t b = 0; b < width; ++b)
    for (size_t i = 0; i < count; ++i) dst[b * count + i] = static_cast<char>(values[i * width + b]);
}

class Reader {
 public:
  Reader(const std::string& data, const std::string& where) : p_(data.data()), left_(data.size()), where_(where) {}
  template <class T> T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof v);
    p_ += sizeof v;
    left_ -= sizeof v;
    return v;
  }
  void get_planes(uint8_t* values, size_t count, size_t width) {
    if (count != 0 && width > left_ / count) fail();
    need(count * width);
    for (size_t b = 0; b < width; ++b)
      for (size_t i = 0; i < count; ++i) values[i * width + b] = static_cast<uint8_t>(p_[b * count + i]);
    p_ += count * width;
    left_ -= count * width;
  }
  size_t left() const { return left_; }
  [[noreturn]] void fail() const {
    throw Error(where_ + ": the chunk is shorter than its header says; the cache is damaged: run "
                "`distill cache-teacher` again with --overwrite");
  }

 private:
  void need(size_t n) const {
    if (n > left_) fail();
  }
  const char* p_;
  size_t left_;
  std::string where_;
};

int id_bytes_for(int64_t vocab) { return vocab <= 65536 ? 2 : 4; }

// log16: -log(p) in steps of 1/256 nat, clamped to 65535; p = 0 (an empty tail) is 65535 too, which reads
// back as e^-256, nothing a float32 loss can tell from 0.
uint16_t log16_of(double p) {
  if (!(p > 0)) return 65535;
  const double steps = std::round(-std::log(std::min(p, 1.0)) * kLog16Scale);
  return steps >= 65535.0 ? uint16_t{65535} : static_cast<uint16_t>(std::max(0.0, steps));
}
uint16_t log16_of_logprob(float lp) {
  const double steps = std::round(-static_cast<double>(lp) * kLog16Scale);
  return !(steps > 0) ? uint16_t{0} : steps >= 65535.0 ? uint16_t{65535} : static_cast<uint16_t>(steps);
}
double prob_of_log16(uint16_t q) { return q == 65535 ? 0.0 : std::exp(-static_cast<double>(q) / kLog16Scale); }

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Error(path + ": cannot write (" + errno_text() + "); free some space and run the command again: it "
                  "continues where it stopped");
    }
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

std::string read_file(const std::string& path) {
  std::string bytes, error;
  if (!paths::read_file(path, bytes, &error)) throw Error("cannot read " + error);
  return bytes;
}

template <class T> T manifest_get(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) throw Error(where + ": '" + key + "' is missing; this is not a complete distill teacher cache manifest");
  const nlohmann::json& v = j.at(key);
  const bool fits = std::is_same_v<T, int64_t>  ? v.is_number_integer()
                    : std::is_same_v<T, double> ? v.is_number()
                    : std::is_same_v<T, bool>   ? v.is_boolean()
                                                : v.is_string();
  if (!fits) throw Error(where + ": '" + key + "' has the wrong type (" + v.dump() + ")");
  try {
    return v.get<T>();
  } catch (const nlohmann::json::exception&) {
    throw Error(where + ": '" + key + "' has the wrong type (" + j.at(key).dump() + ")");
  }
}

}  // namespace

int64_t chunk_raw_bytes(int64_t examples, int64_t positions, int64_t k, int64_t vocab, ValueEncoding encoding) {
  const int64_t value = encoding == ValueEncoding::float32 ? 4 : 2;
  const long double bytes = static_cast<long double>(kHeaderBytes) + static_cast<long double>(examples) * 4 +
                            static_cast<long double>(examples) * positions * (value + id_bytes_for(vocab) + k * (id_bytes_for(vocab) + value));
  return bytes > static_cast<long double>(int64_t{1} << 62) ? int64_t{1} << 62 : static_cast<int64_t>(bytes);
}

ValueEncoding value_encoding_named(const std::string& name, const std::string& key) {
  if (name == "float32" || name == "f32" || name == "fp32") return ValueEncoding::float32;
  if (name == "log16") return ValueEncoding::log16;
  throw Error(key + ": must be one of float32 | log16, got '" + name + "'");
}

std::string value_encoding_name(ValueEncoding e) { return e == ValueEncoding::log16 ? "log16" : "float32"; }

uint64_t fnv1a64(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

uint32_t input_hash(const void* data, size_t bytes) {
  const uint64_t h = fnv1a64(data, bytes);
  return static_cast<uint32_t>(h ^ (h >> 32));
}

std::string encode_chunk(const Chunk& c, ValueEncoding encoding, int64_t vocab, int compression_level) {
  const int64_t rows = c.rows();
  if (c.examples <= 0 || c.positions <= 0 || c.k <= 0 || c.first_example < 0 || chunk_raw_bytes(c.examples, c.positions, c.k, vocab, encoding) > kMaxChunkRawBytes ||
      static_cast<int64_t>(c.input_hash.size()) != c.examples || static_cast<int64_t>(c.tail_mass.size()) != rows ||
      static_cast<int64_t>(c.ids.size()) != rows * c.k || static_cast<int64_t>(c.logprobs.size()) != rows * c.k ||
      (!c.counts.empty() && static_cast<int64_t>(c.counts.size()) != rows))
    throw Error("teacher cache: a chunk's columns do not match its shape (internal)");
  const bool ragged = std::any_of(c.counts.begin(), c.counts.end(), [&](uint32_t n) { return n != static_cast<uint64_t>(c.k); });
  auto count_of = [&](int64_t r) { return ragged ? static_cast<int64_t>(c.counts[static_cast<size_t>(r)]) : c.k; };
  for (int64_t r = 0; r < rows; ++r)
    if (count_of(r) > c.k) throw Error("teacher cache: a row holds more than k entries (internal)");
  const int width = id_bytes_for(vocab);
  std::string raw;
  raw.reserve(kHeaderBytes + static_cast<size_t>(c.examples) * 4 + static_cast<size_t>(rows) * (4 + c.k * (width + 4)));
  put<uint32_t>(raw, ragged ? kChunkMagicCounts : kChunkMagic);
  put<uint32_t>(raw, static_cast<uint32_t>(encoding));
  for (int64_t v : {c.first_example, c.examples, c.positions, c.k, static_cast<int64_t>(width)}) put<int64_t>(raw, v);
  put_planes(raw, reinterpret_cast<const uint8_t*>(c.input_hash.data()), c.input_hash.size(), 4);
  // The entries present, row after row (all of them unless ragged).
  std::vector<int32_t> ids;
  std::vector<float> logprobs;
  ids.reserve(c.ids.size());
  logprobs.reserve(c.ids.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < count_of(r); ++j) {
      const size_t i = static_cast<size_t>(r * c.k + j);
      if (c.ids[i] < 0 || c.ids[i] >= vocab) throw Error("teacher cache: token id " + std::to_string(c.ids[i]) + " outside the vocabulary (internal)");
      ids.push_back(c.ids[i]);
      logprobs.push_back(c.logprobs[i]);
    }
  const size_t n = ids.size();
  auto put_column = [&](const std::vector<int64_t>& v64) {
    if (width == 2) {
      std::vector<uint16_t> v(v64.size());
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint16_t>(v64[i]);
      put_planes(raw, reinterpret_cast<const uint8_t*>(v.data()), v.size(), 2);
    } else {
      std::vector<uint32_t> v(v64.size());
      for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint32_t>(v64[i]);
      put_planes(raw, reinterpret_cast<const uint8_t*>(v.data()), v.size(), 4);
    }
  };
  if (ragged) put_column(std::vector<int64_t>(c.counts.begin(), c.counts.end()));
  if (encoding == ValueEncoding::float32) {
    put_planes(raw, reinterpret_cast<const uint8_t*>(c.tail_mass.data()), c.tail_mass.size(), 4);
    put_column(std::vector<int64_t>(ids.begin(), ids.end()));
    put_planes(raw, reinterpret_cast<const uint8_t*>(logprobs.data()), n, 4);
  } else {
    std::vector<uint16_t> tail(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) tail[static_cast<size_t>(r)] = log16_of(c.tail_mass[static_cast<size_t>(r)]);
    put_planes(raw, reinterpret_cast<const uint8_t*>(tail.data()), tail.size(), 2);
    // Each row in id order: the ids as differences (the set of k ids costs a few bits per id), the values
    // as absolute steps beside them (they carry the order).
    std::vector<int64_t> deltas(n);
    std::vector<uint16_t> q(n);
    std::vector<std::pair<int32_t, float>> row;
    size_t at = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const size_t m = static_cast<size_t>(count_of(r));
      row.assign(m, {});
      for (size_t j = 0; j < m; ++j) row[j] = {ids[at + j], logprobs[at + j]};
      std::sort(row.begin(), row.end());
      int64_t prev = 0;
      for (size_t j = 0; j < m; ++j) {
        const auto& [id, lp] = row[j];
        if (j > 0 && id == prev) throw Error("teacher cache: a row repeats token id " + std::to_string(id) + " (internal)");
        deltas[at + j] = id - prev;
        prev = id;
        q[at + j] = log16_of_logprob(lp);
      }
      at += m;
    }
    put_column(deltas);
    put_planes(raw, reinterpret_cast<const uint8_t*>(q.data()), n, 2);
  }
  std::string out(ZSTD_compressBound(raw.size()), '\0');
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, compression_level);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  const size_t z = ZSTD_compress2(cctx, out.data(), out.size(), raw.data(), raw.size());
  ZSTD_freeCCtx(cctx);
  if (ZSTD_isError(z)) throw Error(std::string("teacher cache: zstd failed: ") + ZSTD_getErrorName(z));
  out.resize(z);
  return out;
}

Chunk decode_chunk(const void* frame, size_t bytes, int64_t vocab, const std::string& where) {
  const unsigned long long size = ZSTD_getFrameContentSize(frame, bytes);
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size < kHeaderBytes ||
      size > static_cast<unsigned long long>(kMaxChunkRawBytes))
    throw Error(where + ": not a teacher cache chunk (bad zstd frame); the cache is damaged: run `distill "
                "cache-teacher` again with --overwrite");
  std::string raw(static_cast<size_t>(size), '\0');
  const size_t got = ZSTD_decompress(raw.data(), raw.size(), frame, bytes);
  if (ZSTD_isError(got) || got != raw.size())
    throw Error(where + ": the chunk does not decompress (" +
                std::string(ZSTD_isError(got) ? ZSTD_getErrorName(got) : "short") +
                "); the cache is damaged: run `distill cache-teacher` again with --overwrite");
  Reader in(raw, where);
  const uint32_t magic = in.get<uint32_t>();
  if (magic != kChunkMagic && magic != kChunkMagicCounts) throw Error(where + ": not a teacher cache chunk (bad magic)");
  const bool ragged = magic == kChunkMagicCounts;
  const uint32_t encoding = in.get<uint32_t>();
  if (encoding > 1) throw Error(where + ": unknown value encoding " + std::to_string(encoding));
  Chunk c;
  c.first_example = in.get<int64_t>();
  c.examples = in.get<int64_t>();
  c.positions = in.get<int64_t>();
  c.k = in.get<int64_t>();
  const int64_t width = in.get<int64_t>();
  if (c.first_example < 0 || c.examples <= 0 || c.positions <= 0 || c.k <= 0 || width != id_bytes_for(vocab) ||
      c.examples > (int64_t{1} << 32) || c.positions > (int64_t{1} << 32) || c.k > vocab)
    throw Error(where + ": the chunk's header is inconsistent (examples " + std::to_string(c.examples) + ", positions " +
                std::to_string(c.positions) + ", k " + std::to_string(c.k) + ", id bytes " + std::to_string(width) + ")");
  const auto damaged = [&] {
    return Error(where + ": the chunk's size does not match its header; the cache is damaged: run `distill "
                 "cache-teacher` again with --overwrite");
  };
  // Every column must fit in what is left before anything is allocated.
  const int64_t value_bytes = encoding ? 2 : 4, tail_bytes = encoding ? 2 : 4;
  const long double rows_ld = static_cast<long double>(c.examples) * c.positions;
  const long double fixed = static_cast<long double>(c.examples) * 4 + rows_ld * (tail_bytes + (ragged ? width : 0));
  if (fixed > static_cast<long double>(in.left()) ||
      (!ragged && fixed + rows_ld * c.k * (width + value_bytes) != static_cast<long double>(in.left())))
    throw damaged();
  const size_t rows = static_cast<size_t>(c.rows()), k = static_cast<size_t>(c.k);
  c.input_hash.resize(static_cast<size_t>(c.examples));
  in.get_planes(reinterpret_cast<uint8_t*>(c.input_hash.data()), c.input_hash.size(), 4);
  auto get_column = [&](size_t count) {
    std::vector<int64_t> out(count);
    if (width == 2) {
      std::vector<uint16_t> v(count);
      in.get_planes(reinterpret_cast<uint8_t*>(v.data()), count, 2);
      for (size_t i = 0; i < count; ++i) out[i] = v[i];
    } else {
      std::vector<uint32_t> v(count);
      in.get_planes(reinterpret_cast<uint8_t*>(v.data()), count, 4);
      for (size_t i = 0; i < count; ++i) out[i] = v[i];
    }
    return out;
  };
  size_t n = rows * k;  // entries stored
  if (ragged) {
    const std::vector<int64_t> counts = get_column(rows);
    c.counts.resize(rows);
    n = 0;
    for (size_t r = 0; r < rows; ++r) {
      if (counts[r] > c.k)
        throw Error(where + ": row " + std::to_string(r) + " claims " + std::to_string(counts[r]) + " entries, more than k = " +
                    std::to_string(c.k) + "; the cache is damaged");
      c.counts[r] = static_cast<uint32_t>(counts[r]);
      n += static_cast<size_t>(counts[r]);
    }
    if (static_cast<long double>(rows) * tail_bytes + static_cast<long double>(n) * (width + value_bytes) !=
        static_cast<long double>(in.left()))
      throw damaged();
  }
  auto count_of = [&](size_t r) { return ragged ? static_cast<size_t>(c.counts[r]) : k; };
  c.tail_mass.resize(rows);
  if (encoding == 0) {
    in.get_planes(reinterpret_cast<uint8_t*>(c.tail_mass.data()), rows, 4);
  } else {
    std::vector<uint16_t> tail16(rows);
    in.get_planes(reinterpret_cast<uint8_t*>(tail16.data()), rows, 2);
    for (size_t r = 0; r < rows; ++r) c.tail_mass[r] = static_cast<float>(prob_of_log16(tail16[r]));
  }
  const std::vector<int64_t> ids = get_column(n);
  c.ids.assign(rows * k, -1);
  c.logprobs.assign(rows * k, -std::numeric_limits<float>::infinity());
  if (encoding == 0) {
    std::vector<float> lp(n);
    in.get_planes(reinterpret_cast<uint8_t*>(lp.data()), n, 4);
    size_t at = 0;
    for (size_t r = 0; r < rows; ++r)
      for (size_t j = 0; j < count_of(r); ++j, ++at) {
        if (ids[at] >= vocab)
          throw Error(where + ": token id " + std::to_string(ids[at]) + " at entry " + std::to_string(at) +
                      " is outside the cache's vocabulary of " + std::to_string(vocab));
        if (!(lp[at] <= 0.0f))
          throw Error(where + ": log-probability " + std::to_string(lp[at]) + " at entry " + std::to_string(at) +
                      " is not <= 0; the cache is damaged");
        c.ids[r * k + j] = static_cast<int32_t>(ids[at]);
        c.logprobs[r * k + j] = lp[at];
      }
  } else {
    std::vector<uint16_t> q(n);
    in.get_planes(reinterpret_cast<uint8_t*>(q.data()), n, 2);
    std::vector<std::pair<uint16_t, int32_t>> row;
    size_t at = 0;
    for (size_t r = 0; r < rows; ++r) {
      const size_t m = count_of(r);
      row.assign(m, {});
      int64_t id = 0;
      for (size_t j = 0; j < m; ++j, ++at) {
        if (j > 0 && ids[at] == 0) throw Error(where + ": row " + std::to_string(r) + " repeats a token id; the cache is damaged");
        id += ids[at];
        if (id >= vocab)
          throw Error(where + ": token id " + std::to_string(id) + " in row " + std::to_string(r) +
                      " is outside the cache's vocabulary of " + std::to_string(vocab));
        row[j] = {q[at], static_cast<int32_t>(id)};
      }
      // Back to most probable first (ties: the smaller id first).
      std::sort(row.begin(), row.end());
      for (size_t j = 0; j < m; ++j) {
        c.ids[r * k + j] = row[j].second;
        c.logprobs[r * k + j] = static_cast<float>(-static_cast<double>(row[j].first) / kLog16Scale);
      }
    }
  }
  for (size_t r = 0; r < rows; ++r)
    if (!(c.tail_mass[r] >= 0.0f && c.tail_mass[r] <= 1.0f))
      throw Error(where + ": tail mass " + std::to_string(c.tail_mass[r]) + " of row " + std::to_string(r) +
                  " is not in [0, 1]; the cache is damaged");
  return c;
}

Manifest manifest_from_json(const nlohmann::json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("format") || j["format"] != "distill-teacher-cache")
    throw Error(where + ": not a distill teacher cache manifest (\"format\" is not \"distill-teacher-cache\")");
  if (manifest_get<int64_t>(j, "version", where) != 1)
    throw Error(where + ": cache version " + j["version"].dump() + " is not one this distill reads (1)");
  Manifest m;
  m.k = manifest_get<int64_t>(j, "k", where);
  m.vocab = manifest_get<int64_t>(j, "vocab", where);
  m.positions = manifest_get<int64_t>(j, "positions", where);
  m.examples = manifest_get<int64_t>(j, "examples", where);
  m.chunk_examples = manifest_get<int64_t>(j, "chunk_examples", where);
  m.temperature = manifest_get<double>(j, "temperature", where);
  m.encoding = value_encoding_named(manifest_get<std::string>(j, "values", where), where + ": values");
  m.complete = manifest_get<bool>(j, "complete", where);
  if (m.vocab <= 0 || m.k <= 0 || m.k > m.vocab || m.positions <= 0 || m.examples <= 0 || m.chunk_examples <= 0 ||
      !(m.temperature > 0))
    throw Error(where + ": k " + std::to_string(m.k) + ", vocab " + std::to_string(m.vocab) + ", positions " +
                std::to_string(m.positions) + ", examples " + std::to_string(m.examples) + ", chunk_examples " +
                std::to_string(m.chunk_examples) + " are inconsistent");
  m.raw = j;
  return m;
}

Manifest read_manifest(const std::string& dir) {
  const std::string path = paths::join(dir, "manifest.json");
  if (!paths::is_regular_file(path))
    throw Error(path + ": missing; " + dir + " is not a teacher cache (make one with `distill cache-teacher`)");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(path + ": not valid JSON (" + e.what() + ")");
  }
  return manifest_from_json(j, path);
}

std::vector<IndexEntry> read_index(const std::string& dir) {
  const std::string path = paths::join(dir, "index.bin");
  if (!paths::is_regular_file(path)) return {};
  const std::string bytes = read_file(path);
  if (bytes.size() < sizeof kIndexMagic || std::memcmp(bytes.data(), kIndexMagic, sizeof kIndexMagic) != 0)
    throw Error(path + ": not a teacher cache index (bad magic)");
  std::vector<IndexEntry> out((bytes.size() - sizeof kIndexMagic) / kIndexEntryBytes);
  for (size_t i = 0; i < out.size(); ++i) std::memcpy(&out[i], bytes.data() + sizeof kIndexMagic + i * kIndexEntryBytes, kIndexEntryBytes);
  return out;
}

std::string identity_difference(const nlohmann::json& a, const nlohmann::json& b) {
  for (auto it = a.begin(); it != a.end(); ++it) {
    const std::string& key = it.key();
    if (key == "complete" || key == "totals") continue;
    const nlohmann::json other = b.contains(key) ? b.at(key) : nlohmann::json();
    if (it.value() != other) return key + ": " + it.value().dump() + " vs " + other.dump();
  }
  for (auto it = b.begin(); it != b.end(); ++it)
    if (!a.contains(it.key()) && it.key() != "complete" && it.key() != "totals")
      return it.key() + ": absent vs " + it.value().dump();
  return "";
}

Writer::Writer(std::string dir, nlohmann::json manifest, bool overwrite) : dir_(std::move(dir)) {
  manifest["format"] = "distill-teacher-cache";
  manifest["version"] = 1;
  manifest["complete"] = false;
  manifest_ = manifest_from_json(manifest, dir_ + "/manifest.json");
  const std::string manifest_path = paths::join(dir_, "manifest.json");
  const std::string data_path = paths::join(dir_, "chunks.bin"), index_path = paths::join(dir_, "index.bin");
  bool resume = false;
  if (paths::exists(manifest_path) && !overwrite) {
    Manifest old = read_manifest(dir_);
    const std::string diff = identity_difference(manifest, old.raw);
    if (!diff.empty())
      throw Error(manifest_path + ": holds another cache (" + diff + "); give another --out, or --overwrite to replace it");
    if (old.complete) {
      done_ = true;
      manifest_ = old;
      return;
    }
    resume = true;
  } else if (!overwrite && paths::is_directory(dir_) && !paths::list_dir(dir_).empty()) {
    throw Error(dir_ + ": exists and is not a teacher cache; give an empty or new folder as --out");
  }
  std::string error;
  if (!paths::create_directories(dir_, &error)) throw Error(dir_ + ": cannot create (" + error + ")");
  if (resume) {
    index_ = read_index(dir_);
    index_.resize(std::min<size_t>(index_.size(), static_cast<size_t>(manifest_.chunks())));
    for (const IndexEntry& e : index_) data_end_ = std::max<uint64_t>(data_end_, e.offset + e.bytes);
  } else {
    paths::remove_file(data_path);
    paths::remove_file(index_path);
    write_file_atomic(manifest_path, manifest.dump(2) + "\n");
  }
  data_fd_ = ::open(data_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  index_fd_ = ::open(index_path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (data_fd_ < 0 || index_fd_ < 0) throw Error(dir_ + ": cannot open the cache files for writing (" + errno_text() + ")");
  // Keep exactly the indexed chunks: cut what a killed writer left after them.
  struct stat st {};
  if (::fstat(data_fd_, &st) != 0 || static_cast<uint64_t>(st.st_size) < data_end_)
    throw Error(data_path + ": shorter than its index says; run again with --overwrite");
  if (::ftruncate(data_fd_, static_cast<off_t>(data_end_)) != 0 ||
      ::ftruncate(index_fd_, static_cast<off_t>(sizeof kIndexMagic + index_.size() * kIndexEntryBytes)) != 0)
    throw Error(dir_ + ": cannot truncate the cache files (" + errno_text() + ")");
  ::lseek(data_fd_, static_cast<off_t>(data_end_), SEEK_SET);
  ::lseek(index_fd_, 0, SEEK_SET);
  write_all(index_fd_, kIndexMagic, sizeof kIndexMagic, index_path);
  ::lseek(index_fd_, 0, SEEK_END);
}

Writer::~Writer() {
  if (data_fd_ >= 0) ::close(data_fd_);
  if (index_fd_ >= 0) ::close(index_fd_);
}

void Writer::append(const std::string& frame) {
  if (done_ || next_chunk() >= manifest_.chunks()) throw Error(dir_ + ": more chunks than the manifest's (internal)");
  const std::string data_path = paths::join(dir_, "chunks.bin"), index_path = paths::join(dir_, "index.bin");
  write_all(data_fd_, frame.data(), frame.size(), data_path);
  if (::fdatasync(data_fd_) != 0) throw Error(data_path + ": cannot sync (" + errno_text() + ")");
  IndexEntry e{data_end_, frame.size(), fnv1a64(frame.data(), frame.size())};
  write_all(index_fd_, &e, kIndexEntryBytes, index_path);
  if (::fdatasync(index_fd_) != 0) throw Error(index_path + ": cannot sync (" + errno_text() + ")");
  data_end_ += frame.size();
  index_.push_back(e);
}

void Writer::finish(const nlohmann::json& totals) {
  if (next_chunk() != manifest_.chunks())
    throw Error(dir_ + ": " + std::to_string(next_chunk()) + " of " + std::to_string(manifest_.chunks()) +
                " chunks written (internal)");
  nlohmann::json m = manifest_.raw;
  m["complete"] = true;
  m["totals"] = totals;
  write_file_atomic(paths::join(dir_, "manifest.json"), m.dump(2) + "\n");
  manifest_ = manifest_from_json(m, dir_ + "/manifest.json");
  done_ = true;
}

}  // namespace distill::cache
