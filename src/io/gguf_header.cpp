#include "qtune/io/gguf_header.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>

#include "qtune/util/error.h"

namespace qtune::io {
namespace {

constexpr uint32_t kMaxArrayDepth = 2;  // arrays of arrays occur (merges as pairs in some writers); deeper is corrupt
constexpr uint32_t kMaxDims = 4;        // GGML_MAX_DIMS

class Cursor {
 public:
  Cursor(const uint8_t* data, uint64_t size, const std::string& path) : data_(data), size_(size), path_(path) {}

  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  const std::string& path() const { return path_; }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(const std::string& what) {
    const auto n = read<uint64_t>(what.c_str());
    if (n > kMaxGgufStringBytes) fail("{}: {} is {} bytes long at offset {} (corrupt file?)", path_, what, n, pos_ - 8);
    need(n, what.c_str());
    std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
    pos_ += n;
    return s;
  }

  const uint8_t* here() const { return data_ + pos_; }
  void skip(uint64_t n) { pos_ += n; }  // after need(n)

  void need(uint64_t n, const char* what) const {
    if (n > left()) fail("{}: file truncated: {} needs {} bytes at offset {}, {} left", path_, what, n, pos_, left());
  }

 private:
  const uint8_t* data_;
  uint64_t size_;
  std::string path_;
  uint64_t pos_ = 0;
};

// Smallest encoding of one value of `type`, to bound array counts by the bytes left before reading them.
uint64_t min_value_bytes(GgufValueType type) {
  switch (type) {
    case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16: case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32: case GgufValueType::INT32: case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64: case GgufValueType::INT64: case GgufValueType::FLOAT64: return 8;
    case GgufValueType::STRING: return 8;
    case GgufValueType::ARRAY: return 12;
  }
  return 1;
}

GgufValueType value_type(uint32_t raw, const Cursor& c, const std::string& key) {
  if (raw > static_cast<uint32_t>(GgufValueType::FLOAT64))
    fail("{}: metadata '{}' has unknown value type {} (expected 0..12)", c.path(), key, raw);
  return static_cast<GgufValueType>(raw);
}

// RFC 3629 UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF): what nlohmann::json accepts when it
// writes a string out, so that every string the header holds can be shown and copied.
bool valid_utf8(const uint8_t* p, uint64_t n) {
  for (uint64_t i = 0; i < n;) {
    const uint8_t b = p[i];
    if (b < 0x80) {
      ++i;
      continue;
    }
    uint64_t len;
    uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b == 0xE0) len = 3, lo = 0xA0;
    else if (b == 0xED) len = 3, hi = 0x9F;
    else if (b >= 0xE1 && b <= 0xEF) len = 3;
    else if (b == 0xF0) len = 4, lo = 0x90;
    else if (b == 0xF4) len = 4, hi = 0x8F;
    else if (b >= 0xF1 && b <= 0xF3) len = 4;
    else return false;
    if (n - i < len || p[i + 1] < lo || p[i + 1] > hi) return false;
    for (uint64_t k = 2; k < len; ++k)
      if ((p[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

// Checks one value and moves past it, keeping nothing: arrays are kept as their bytes (GgufArray).
void skip_value(Cursor& c, GgufValueType type, const std::string& key, uint32_t depth) {
  switch (type) {
    case GgufValueType::BOOL: {
      const auto b = c.read<uint8_t>("a bool value");
      if (b > 1) fail("{}: metadata '{}': bool value {} (expected 0 or 1)", c.path(), key, b);
      return;
    }
    case GgufValueType::STRING: {
      // The message is built only on failure: an array may hold millions of strings.
      auto what = [&key] { return "the string value of metadata '" + key + "'"; };
      if (c.left() < 8) c.need(8, what().c_str());
      const auto n = c.read<uint64_t>("a string length");
      if (n > kMaxGgufStringBytes)
        fail("{}: {} is {} bytes long at offset {} (corrupt file?)", c.path(), what(), n, c.pos() - 8);
      if (n > c.left()) c.need(n, what().c_str());
      if (!valid_utf8(c.here(), n)) fail("{}: metadata '{}' holds a string that is not valid UTF-8", c.path(), key);
      c.skip(n);
      return;
    }
    case GgufValueType::ARRAY: {
      if (depth >= kMaxArrayDepth) fail("{}: metadata '{}' nests arrays deeper than {}", c.path(), key, kMaxArrayDepth);
      const auto elem = value_type(c.read<uint32_t>("an array type"), c, key);
      const auto n = c.read<uint64_t>("an array length");
      if (n > c.left() / min_value_bytes(elem))
        fail("{}: metadata '{}': array of {} values cannot fit in the {} bytes left (corrupt file?)", c.path(), key, n,
             c.left());
      if (elem == GgufValueType::STRING || elem == GgufValueType::ARRAY || elem == GgufValueType::BOOL) {
        for (uint64_t i = 0; i < n; ++i) skip_value(c, elem, key, depth + 1);
      } else {
        c.skip(n * min_value_bytes(elem));  // plain numbers: any bytes are a value
      }
      return;
    }
    default:
      c.need(min_value_bytes(type), "a metadata value");
      c.skip(min_value_bytes(type));
  }
}

// Reads one value of a type other than ARRAY from bytes the header parser checked.
nlohmann::json decode_scalar(const uint8_t*& p, GgufValueType type) {
  auto get = [&p](auto v) {
    std::memcpy(&v, p, sizeof(v));
    p += sizeof(v);
    return v;
  };
  switch (type) {
    case GgufValueType::UINT8: return get(uint8_t{});
    case GgufValueType::INT8: return get(int8_t{});
    case GgufValueType::UINT16: return get(uint16_t{});
    case GgufValueType::INT16: return get(int16_t{});
    case GgufValueType::UINT32: return get(uint32_t{});
    case GgufValueType::INT32: return get(int32_t{});
    case GgufValueType::UINT64: return get(uint64_t{});
    case GgufValueType::INT64: return get(int64_t{});
    case GgufValueType::FLOAT32: return get(float{});
    case GgufValueType::FLOAT64: return get(double{});
    case GgufValueType::BOOL: return get(uint8_t{}) == 1;
    case GgufValueType::STRING: {
      const auto n = get(uint64_t{});
      std::string s(reinterpret_cast<const char*>(p), n);
      p += n;
      return s;
    }
    case GgufValueType::ARRAY: break;
  }
  return nullptr;
}

nlohmann::json decode_array(const uint8_t*& p, GgufValueType elem, uint64_t n) {
  nlohmann::json arr = nlohmann::json::array();
  auto& items = arr.get_ref<nlohmann::json::array_t&>();
  items.reserve(n);
  for (uint64_t i = 0; i < n; ++i) {
    if (elem != GgufValueType::ARRAY) {
      items.push_back(decode_scalar(p, elem));
      continue;
    }
    uint32_t inner = 0;
    uint64_t count = 0;
    std::memcpy(&inner, p, 4);
    std::memcpy(&count, p + 4, 8);
    p += 12;
    items.push_back(decode_array(p, static_cast<GgufValueType>(inner), count));
  }
  return arr;
}

}  // namespace

nlohmann::json GgufArray::to_json() const {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  return decode_array(p, element_type, size);
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : dims) n *= d;
  return n;
}

GgufHeader parse_gguf_header(const uint8_t* data, uint64_t size, const std::string& path) {
  Cursor c(data, size, path);
  if (size < 4 || std::memcmp(data, "GGUF", 4) != 0) fail("{}: not a GGUF file (the first 4 bytes are not \"GGUF\")", path);
  c.read<uint32_t>("the magic");
  GgufHeader h;
  h.version = c.read<uint32_t>("the version");
  if (h.version != 2 && h.version != 3)
    fail("{}: GGUF version {} is not supported (expected 2 or 3; version 1 predates 64-bit counts)", path, h.version);
  const auto n_tensors = c.read<uint64_t>("the tensor count");
  const auto n_kv = c.read<uint64_t>("the metadata count");
  if (n_tensors > kMaxGgufTensors || n_tensors > c.left() / 24)
    fail("{}: {} tensors cannot fit in a file of {} bytes (corrupt header?)", path, n_tensors, size);
  if (n_kv > c.left() / 12) fail("{}: {} metadata entries cannot fit in a file of {} bytes (corrupt header?)", path, n_kv, size);

  for (uint64_t i = 0; i < n_kv; ++i) {
    auto key = c.string("a metadata key");
    if (key.empty()) fail("{}: metadata entry {} has an empty key", path, i);
    if (h.value_types.count(key)) fail("{}: metadata key '{}' appears twice", path, key);
    const auto type = value_type(c.read<uint32_t>("a value type"), c, key);
    const uint64_t start = c.pos();
    skip_value(c, type, key, 0);
    const uint8_t* p = data + start;
    if (type == GgufValueType::ARRAY) {
      GgufArray a;
      std::memcpy(&a.element_type, p, 4);
      std::memcpy(&a.size, p + 4, 8);
      a.bytes.assign(reinterpret_cast<const char*>(p + 12), c.pos() - start - 12);
      h.arrays.emplace(key, std::move(a));
    } else {
      h.metadata[key] = decode_scalar(p, type);
    }
    h.value_types[key] = type;
  }
  if (auto it = h.metadata.find("general.alignment"); it != h.metadata.end()) {
    if (!it->is_number_unsigned() || it->get<uint64_t>() == 0 || (it->get<uint64_t>() & (it->get<uint64_t>() - 1)) != 0)
      fail("{}: general.alignment must be a power of two, got {}", path, it->dump());
    h.alignment = it->get<uint64_t>();
  }

  std::set<std::string> names;
  h.tensors.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.string("a tensor name");
    if (!names.insert(t.name).second) fail("{}: tensor '{}' appears twice", path, t.name);
    const auto n_dims = c.read<uint32_t>("a tensor's dimension count");
    if (n_dims == 0 || n_dims > kMaxDims)
      fail("{}: tensor '{}' has {} dimensions (expected 1 to {})", path, t.name, n_dims, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const auto dim = c.read<uint64_t>("a tensor dimension");
      constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
      if (dim == 0 || dim > kMax || numel > kMax / dim)
        fail("{}: tensor '{}': dimension {} is {} (expected positive, product within int64)", path, t.name, d, dim);
      numel *= dim;
      t.dims.push_back(static_cast<int64_t>(dim));
    }
    const auto raw_type = c.read<uint32_t>("a tensor type");
    const auto* info = quant::ggml_type_info(raw_type);
    if (info == nullptr) fail("{}: tensor '{}' has unknown ggml type {}", path, t.name, raw_type);
    t.type = info->type;
    if (t.dims[0] % info->block_elems != 0)
      fail("{}: tensor '{}' ({}): its first dimension {} is not a multiple of the {}-value block", path, t.name,
           info->name, t.dims[0], info->block_elems);
    // Dimensions within int64 can still multiply past 2^64 bytes ([2^31, 2^31] of F32): a wrapped size would pass
    // the bounds and overlap checks below.
    if (numel / info->block_elems > std::numeric_limits<uint64_t>::max() / info->block_bytes)
      fail("{}: tensor '{}' ({}): {} values take more than 2^64 bytes (corrupt dimensions?)", path, t.name, info->name,
           numel);
    t.nbytes = quant::ggml_nbytes(t.type, static_cast<int64_t>(numel));
    t.offset = c.read<uint64_t>("a tensor offset");
    if (t.offset % h.alignment != 0)
      fail("{}: tensor '{}': offset {} is not a multiple of the alignment {}", path, t.name, t.offset, h.alignment);
    h.tensors.push_back(std::move(t));
  }
  h.data_start = (c.pos() + h.alignment - 1) / h.alignment * h.alignment;
  if (h.data_start > size && !h.tensors.empty()) fail("{}: file truncated: no tensor data after the header", path);

  // Offsets are relative to the data section; every tensor must lie inside the file and not overlap another.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& t : h.tensors) {
    const uint64_t room = size > h.data_start ? size - h.data_start : 0;
    if (t.offset > room || t.nbytes > room - t.offset)
      fail("{}: tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} bytes): file truncated?",
           path, t.name, t.nbytes, t.offset, size);
    t.offset += h.data_start;
    ranges.emplace_back(t.offset, t.offset + t.nbytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("{}: two tensors overlap at file offset {}", path, ranges[i].first);
  return h;
}

}  // namespace qtune::io
