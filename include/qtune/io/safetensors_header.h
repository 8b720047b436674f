#pragma once
// The safetensors header: an 8-byte little-endian length N, then N bytes of JSON mapping each tensor
// name to {dtype, shape, data_offsets: [begin, end)} relative to the data section, plus an optional
// "__metadata__" map of strings. Parsing is torch-free so that it can be fuzzed on its own.
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace qtune::io {

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType dtype);   // "F32", ... as written in the file
size_t dtype_size(DType dtype);        // bytes per element
bool parse_dtype(const std::string& name, DType* out);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets relative to the start of the data section
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // in data order (sorted by begin)
  std::map<std::string, std::string> metadata;
  uint64_t data_start = 0;  // absolute file offset of the data section (8 + N)
};

// Largest header accepted: real headers are a few MB even for 70B shards; anything larger is corrupt.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Validates everything a reader relies on: header length inside the file and under kMaxHeaderBytes, JSON
// object, known dtype, non-negative shape, byte range equal to numel * dtype size, ranges inside the
// data section and not overlapping. Throws qtune::Error naming `path` and the tensor.
SafetensorsHeader parse_safetensors_header(const uint8_t* file, size_t file_size, const std::string& path);

}  // namespace qtune::io
