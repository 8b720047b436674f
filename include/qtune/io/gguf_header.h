#pragma once
// The GGUF header (v2 and v3, little-endian): magic "GGUF", version, tensor and metadata counts, the metadata
// key/value pairs, the tensor infos, then tensor data aligned to general.alignment. Parsing works on bytes, so it can
// be fuzzed on its own, and validates everything a reader relies on: counts and lengths bounded by the bytes left,
// known value and tensor types, at most 4 dimensions, sizes that match the type's blocks, offsets aligned and inside
// the file, no two tensors overlapping. Every error names the file and what was expected.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "qtune/quant/ggml_types.h"

namespace qtune::io {

// gguf_type: the value types of GGUF metadata.
enum class GgufValueType : uint32_t {
  UINT8 = 0, INT8 = 1, UINT16 = 2, INT16 = 3, UINT32 = 4, INT32 = 5, FLOAT32 = 6, BOOL = 7, STRING = 8,
  ARRAY = 9, UINT64 = 10, INT64 = 11, FLOAT64 = 12,
};

struct GgufTensorInfo {
  std::string name;
  std::vector<int64_t> dims;  // ggml order: dims[0] is the contiguous one (a torch shape reversed)
  quant::GgmlType type = quant::GgmlType::F32;
  uint64_t offset = 0;        // absolute file offset of the data
  uint64_t nbytes = 0;
  int64_t numel() const;
  std::vector<int64_t> torch_shape() const { return {dims.rbegin(), dims.rend()}; }
};

// A metadata array as the file stores it: the element type, the count and the encoded elements (strings as length
// and bytes, nested arrays with their own type and count), checked when the header is parsed. Arrays stay bytes until
// read, as llama.cpp keeps them: as JSON, each value takes 16 bytes or more (50 MB of uint8 would take gigabytes).
struct GgufArray {
  GgufValueType element_type = GgufValueType::UINT8;
  uint64_t size = 0;
  std::string bytes;
  nlohmann::json to_json() const;  // the elements decoded
};

struct GgufHeader {
  uint32_t version = 0;
  nlohmann::json metadata = nlohmann::json::object();  // key → value of the scalars
  std::map<std::string, GgufArray> arrays;             // key → value of the arrays
  std::map<std::string, GgufValueType> value_types;    // key → its type, for both (arrays: ARRAY)
  std::vector<GgufTensorInfo> tensors;                 // in file order
  uint64_t alignment = 32;
  uint64_t data_start = 0;
};

// Metadata values and strings are bounded: real files hold ~150k-entry vocabularies, never gigabytes of metadata.
constexpr uint64_t kMaxGgufStringBytes = 64ull << 20;
constexpr uint64_t kMaxGgufTensors = 1ull << 20;

GgufHeader parse_gguf_header(const uint8_t* data, uint64_t size, const std::string& path);

}  // namespace qtune::io
