#include "distill/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "distill/error.h"
#include "distill/io/atomic_file.h"

namespace distill {

using json = nlohmann::json;

namespace {

struct DtypeInfo {
  const char* name;
  at::ScalarType type;
  size_t bytes;
};

const DtypeInfo kDtypes[] = {
    {"F64", at::kDouble, 8}, {"F32", at::kFloat, 4}, {"F16", at::kHalf, 2},  {"BF16", at::kBFloat16, 2},
    {"I64", at::kLong, 8},   {"I32", at::kInt, 4},   {"I16", at::kShort, 2}, {"I8", at::kChar, 1},
    {"U8", at::kByte, 1},    {"BOOL", at::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& d : kDtypes)
    if (name == d.name) return &d;
  return nullptr;
}

const DtypeInfo& dtype_by_type(at::ScalarType t, const std::string& tensor_name) {
  for (const auto& d : kDtypes)
    if (d.type == t) return d;
  throw Error("tensor '" + tensor_name + "': dtype " + std::string(c10::toString(t)) +
              " cannot be stored in safetensors; convert it to float32");
}

// a * b without overflow; false on overflow.
bool mul_ok(uint64_t a, uint64_t b, uint64_t& out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  out = a * b;
  return true;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace

const at::Tensor* SafetensorsContents::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

std::string safetensors_dtype_name(const at::Tensor& t) { return dtype_by_type(t.scalar_type(), "?").name; }

std::string encode_safetensors(const NamedTensors& tensors, const Metadata& metadata) {
  json header = json::object();
  std::vector<at::Tensor> blobs;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__") throw Error("tensor name '__metadata__' is reserved by safetensors");
    if (!names.insert(name).second) throw Error("tensor '" + name + "' appears twice; names must be unique");
    const DtypeInfo& d = dtype_by_type(tensor.scalar_type(), name);
    at::Tensor blob = tensor.detach().to(at::kCPU).contiguous();
    uint64_t bytes = static_cast<uint64_t>(blob.numel()) * d.bytes;
    header[name] = {{"dtype", d.name}, {"shape", blob.sizes().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    blobs.push_back(blob);
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string head = header.dump();
  head.append((8 - head.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + head.size() + offset);
  uint64_t n = head.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += head;
  for (const auto& blob : blobs)
    out.append(static_cast<const char*>(blob.data_ptr()), blob.numel() * blob.element_size());
  return out;
}

void save_safetensors(const std::string& path, const NamedTensors& tensors, const Metadata& metadata) {
  std::string bytes;
  try {
    bytes = encode_safetensors(tensors, metadata);
  } catch (const Error& e) {
    throw Error(path + ": " + e.what());
  }
  write_file_atomic(path, bytes);
}

namespace {

// `decode` with each tensor either copied out of `data` (keep_alive null) or, where its bytes are aligned
// for its dtype, a view into `data` that holds `keep_alive` (a mapping) until the last such tensor goes.
SafetensorsContents decode(const uint8_t* data, size_t size, const std::string& origin,
                           const std::shared_ptr<void>& keep_alive) {
  auto fail = [&](const std::string& why) -> Error {
    return Error(origin + ": not a valid safetensors file: " + why);
  };
  if (size < 8) throw fail("only " + std::to_string(size) + " bytes; the 8-byte header length is missing");
  uint64_t header_len = read_u64_le(data);
  if (header_len > kMaxSafetensorsHeaderBytes)
    throw fail("header length " + std::to_string(header_len) + " bytes is absurd (limit " +
               std::to_string(kMaxSafetensorsHeaderBytes) + "); the file is corrupt or not safetensors");
  if (header_len > size - 8)
    throw fail("header length " + std::to_string(header_len) + " runs past the end of the file (" +
               std::to_string(size) + " bytes); the file is truncated");
  json header;
  try {
    header = json::parse(data + 8, data + 8 + header_len);
  } catch (const json::exception& e) {
    throw fail(std::string("header is not valid JSON (") + e.what() + ")");
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const uint64_t buffer_size = size - 8 - header_len;
  const uint8_t* buffer = data + 8 + header_len;

  SafetensorsContents out;
  struct Entry {
    std::string name;
    const DtypeInfo* dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) throw fail("__metadata__." + m.key() + " must be a string");
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "'";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw fail(where + " needs dtype, shape and data_offsets");
    if (!v["dtype"].is_string()) throw fail(where + ": dtype must be a string");
    const DtypeInfo* d = dtype_by_name(v["dtype"].get<std::string>());
    if (!d)
      throw fail(where + ": unsupported dtype '" + v["dtype"].get<std::string>() +
                 "' (supported: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)");
    const json& shape = v["shape"];
    if (!shape.is_array()) throw fail(where + ": shape must be an array");
    // ATen computes an empty tensor's contiguous strides from its non-zero dims in int64, so those must
    // multiply within int64 even when a zero dim makes numel 0 (e.g. [0, 2^62, 2^62]).
    std::vector<int64_t> dims;
    uint64_t nonzero_product = 1;
    bool has_zero_dim = false;
    for (const auto& s : shape) {
      if (!s.is_number_unsigned() && !(s.is_number_integer() && s.get<int64_t>() >= 0))
        throw fail(where + ": shape entries must be non-negative integers");
      uint64_t dim = s.get<uint64_t>();
      if (dim == 0) has_zero_dim = true;
      if (dim > 0 && (!mul_ok(nonzero_product, dim, nonzero_product) ||
                      nonzero_product > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())))
        throw fail(where + ": shape is too large (its non-zero dimensions multiply past 2^63 - 1)");
      dims.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t numel = has_zero_dim ? 0 : nonzero_product;
    const json& offs = v["data_offsets"];
    if (!offs.is_array() || offs.size() != 2 || !offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
      throw fail(where + ": data_offsets must be [begin, end] with non-negative integers");
    uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
    if (begin > end) throw fail(where + ": data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
    if (end > buffer_size)
      throw fail(where + ": data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                 "] run past the data section (" + std::to_string(buffer_size) + " bytes); the file is truncated");
    uint64_t expected = 0;
    if (!mul_ok(numel, d->bytes, expected) || expected != end - begin)
      throw fail(where + ": holds " + std::to_string(end - begin) + " bytes but shape and dtype need " +
                 (expected ? std::to_string(expected) : std::string("more")));
    entries.push_back({name, d, std::move(dims), begin, end});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const auto& e : entries) {
    if (e.begin < cursor) throw fail("tensor '" + e.name + "' overlaps the tensor before it");
    if (e.begin > cursor) throw fail("bytes " + std::to_string(cursor) + ".." + std::to_string(e.begin) +
                                     " belong to no tensor (a hole before '" + e.name + "')");
    cursor = e.end;
  }
  if (cursor != buffer_size)
    throw fail(std::to_string(buffer_size - cursor) + " trailing bytes belong to no tensor");
  for (const auto& e : entries) {
    const uint8_t* src = buffer + e.begin;
    const bool aligned = reinterpret_cast<uintptr_t>(src) % e.dtype->bytes == 0;
    if (keep_alive && aligned && e.dtype->type != at::kBool && e.end > e.begin) {
      at::Tensor t = at::from_blob(const_cast<uint8_t*>(src), e.shape, [keep_alive](void*) {},
                                   at::TensorOptions().dtype(e.dtype->type));
      out.tensors.emplace_back(e.name, std::move(t));
      continue;
    }
    at::Tensor t = at::empty(e.shape, at::TensorOptions().dtype(e.dtype->type));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), src, e.end - e.begin);
    if (e.dtype->type == at::kBool) {
      // Any byte other than 0/1 is not a valid bool; normalise instead of handing ATen an invalid value.
      auto* p = static_cast<uint8_t*>(t.data_ptr());
      for (int64_t i = 0; i < t.numel(); ++i) p[i] = p[i] != 0;
    }
    out.tensors.emplace_back(e.name, std::move(t));
  }
  return out;
}

}  // namespace

SafetensorsContents decode_safetensors(const uint8_t* data, size_t size, const std::string& origin) {
  return decode(data, size, origin, nullptr);
}

SafetensorsContents map_safetensors(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path + ": cannot open (" + std::string(std::strerror(errno)) + "); check the path");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error(path + ": not a regular file; give a .safetensors file");
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size == 0) {
    ::close(fd);
    return decode_safetensors(nullptr, 0, path);
  }
  // Private and writable: a tensor written in place (a parameter being trained) gets its own copy of the
  // page, and the file never changes.
  void* base = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (base == MAP_FAILED) throw Error(path + ": cannot map the file (" + std::string(std::strerror(errno)) + ")");
  std::shared_ptr<void> mapping(base, [size](void* p) { ::munmap(p, size); });
  return decode(static_cast<const uint8_t*>(base), size, path, mapping);
}

SafetensorsContents load_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw Error(path + ": cannot open (missing or unreadable); check the path");
  std::streamoff size = in.tellg();
  if (size < 0) throw Error(path + ": cannot read (is it a directory?)");
  in.seekg(0);
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
    throw Error(path + ": read failed");
  return decode_safetensors(bytes.data(), bytes.size(), path);
}

}  // namespace distill
