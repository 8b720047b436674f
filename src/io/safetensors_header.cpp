#include "qtune/io/safetensors_header.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <limits>

#include "qtune/util/error.h"
#include "qtune/util/json_show.h"

namespace qtune::io {
namespace {

struct DTypeEntry {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr DTypeEntry kDTypes[] = {
    {DType::F64, "F64", 8}, {DType::F32, "F32", 4}, {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2},
    {DType::I64, "I64", 8}, {DType::I32, "I32", 4}, {DType::I16, "I16", 2}, {DType::I8, "I8", 1},
    {DType::U8, "U8", 1},   {DType::BOOL, "BOOL", 1},
};


const DTypeEntry& entry(DType dtype) {
  for (const auto& e : kDTypes)
    if (e.dtype == dtype) return e;
  fail("internal: unknown dtype enum {}", static_cast<int>(dtype));
}

TensorInfo parse_entry(const std::string& path, const std::string& name, const nlohmann::json& value,
                       uint64_t data_size) {
  if (!value.is_object()) fail("{}: tensor '{}': expected a JSON object with dtype/shape/data_offsets", path, name);
  TensorInfo info;
  info.name = name;

  auto dtype_it = value.find("dtype");
  if (dtype_it == value.end() || !dtype_it->is_string())
    fail("{}: tensor '{}': missing string key 'dtype'", path, name);
  const auto dtype = dtype_it->get<std::string>();
  if (!parse_dtype(dtype, &info.dtype))
    fail("{}: tensor '{}': unsupported dtype '{}' (expected one of F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL)",
         path, name, dtype);

  auto shape_it = value.find("shape");
  if (shape_it == value.end() || !shape_it->is_array())
    fail("{}: tensor '{}': missing array key 'shape'", path, name);
  uint64_t numel = 1;
  for (const auto& dim : *shape_it) {
    if (!dim.is_number_unsigned())
      fail("{}: tensor '{}': shape entries must be non-negative integers, got {}", path, name, json_show(dim));
    const auto d = dim.get<uint64_t>();
    // Every running product must fit int64: TensorInfo::numel() and at::empty(shape) multiply in int64, and a
    // later 0 dim ([2^32, 2^31, 0]) would otherwise hide an intermediate overflow from the byte-size check.
    constexpr auto kMax = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (d > kMax || (d != 0 && numel > kMax / d))
      fail("{}: tensor '{}': shape {} overflows", path, name, json_show(*shape_it));
    numel *= d;
    info.shape.push_back(static_cast<int64_t>(d));
  }

  auto off_it = value.find("data_offsets");
  if (off_it == value.end() || !off_it->is_array() || off_it->size() != 2 || !(*off_it)[0].is_number_unsigned() ||
      !(*off_it)[1].is_number_unsigned())
    fail("{}: tensor '{}': 'data_offsets' must be [begin, end] of non-negative integers", path, name);
  info.begin = (*off_it)[0].get<uint64_t>();
  info.end = (*off_it)[1].get<uint64_t>();
  if (info.begin > info.end)
    fail("{}: tensor '{}': data_offsets [{}, {}] has begin after end", path, name, info.begin, info.end);
  if (info.end > data_size)
    fail("{}: tensor '{}': data_offsets [{}, {}] run past the data section ({} bytes): file truncated?", path, name,
         info.begin, info.end, data_size);
  const size_t esize = dtype_size(info.dtype);
  if (numel > std::numeric_limits<uint64_t>::max() / esize || numel * esize != info.nbytes())
    fail("{}: tensor '{}': shape {} of {} needs {} bytes but data_offsets give {}", path, name, shape_it->dump(),
         dtype, numel * esize, info.nbytes());
  return info;
}

}  // namespace

const char* dtype_name(DType dtype) { return entry(dtype).name; }
size_t dtype_size(DType dtype) { return entry(dtype).size; }

bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& e : kDTypes) {
    if (name == e.name) {
      *out = e.dtype;
      return true;
    }
  }
  return false;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsHeader parse_safetensors_header(const uint8_t* file, size_t file_size, const std::string& path) {
  if (file_size < 8) fail("{}: {} bytes is too short for a safetensors file (needs an 8-byte header length)", path, file_size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | file[i];
  if (header_len > kMaxHeaderBytes)
    fail("{}: header length {} exceeds the {} byte limit: not a safetensors file or corrupt", path, header_len,
         kMaxHeaderBytes);
  if (header_len > file_size - 8)
    fail("{}: header length {} runs past the end of the file ({} bytes): truncated or not safetensors", path,
         header_len, file_size);

  nlohmann::json json;
  try {
    json = nlohmann::json::parse(file + 8, file + 8 + header_len);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: header is not valid JSON: {}", path, e.what());
  }
  if (!json.is_object()) fail("{}: header must be a JSON object, got {}", path, json.type_name());

  SafetensorsHeader header;
  header.data_start = 8 + header_len;
  const uint64_t data_size = file_size - header.data_start;
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail("{}: '__metadata__' must be an object of strings", path);
      for (const auto& [k, v] : value.items()) {
        if (!v.is_string()) fail("{}: '__metadata__' key '{}' must be a string, got {}", path, k, v.type_name());
        header.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    header.tensors.push_back(parse_entry(path, name, value, data_size));
  }
  std::sort(header.tensors.begin(), header.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  // Empty tensors occupy no bytes, so they are skipped: comparing with the immediate predecessor would let
  // [0,10) [5,5) [6,8) through. Among non-empty ranges in begin order, the last one has the largest end.
  const TensorInfo* prev = nullptr;
  for (const auto& cur : header.tensors) {
    if (cur.nbytes() == 0) continue;
    if (prev != nullptr && cur.begin < prev->end)
      fail("{}: tensors '{}' [{}, {}) and '{}' [{}, {}) overlap", path, prev->name, prev->begin, prev->end, cur.name,
           cur.begin, cur.end);
    prev = &cur;
  }
  return header;
}

}  // namespace qtune::io
