#pragma once
// Writes a GGUF v3 file (the layout io/gguf_header.h reads): the metadata in the order it was set, the tensor infos,
// then each tensor's bytes aligned to 32. The header is written first, so every tensor's name, shape and type is
// declared up front and the data then streams in one tensor at a time (the bytes of a quantized tensor follow from
// its shape and type alone). The file appears complete or not at all: it is written to a temporary sibling and
// renamed by finish(); a writer destroyed unfinished removes the temporary.
#include <nlohmann/json.hpp>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "qtune/io/gguf_header.h"

namespace qtune::io {

struct GgufValue {
  GgufValueType type = GgufValueType::STRING;
  nlohmann::json value;
  GgufValueType element_type = GgufValueType::UINT8;  // arrays only
};

// Key/value pairs in insertion order; setting a key again replaces its value in place.
class GgufMetadata {
 public:
  void set(const std::string& key, GgufValue value);
  void set_string(const std::string& key, const std::string& v) { set(key, {GgufValueType::STRING, v}); }
  void set_u32(const std::string& key, uint32_t v) { set(key, {GgufValueType::UINT32, v}); }
  void set_f32(const std::string& key, float v) { set(key, {GgufValueType::FLOAT32, v}); }
  void set_bool(const std::string& key, bool v) { set(key, {GgufValueType::BOOL, v}); }
  void set_array(const std::string& key, GgufValueType element_type, nlohmann::json values) {
    set(key, {GgufValueType::ARRAY, std::move(values), element_type});
  }
  // The value `key` holds in a parsed file, with its stored type; false when the file lacks it.
  bool copy_from(const GgufHeader& header, const std::string& key);
  bool contains(const std::string& key) const;
  const std::vector<std::pair<std::string, GgufValue>>& entries() const { return entries_; }

 private:
  std::vector<std::pair<std::string, GgufValue>> entries_;
};

struct GgufTensorDecl {
  std::string name;
  std::vector<int64_t> shape;  // torch order ([out, in]); written reversed, as ggml's ne
  quant::GgmlType type = quant::GgmlType::F32;
};

class GgufWriter {
 public:
  // `path` must not exist. Checks the tensors (unique names, whole blocks per row) and writes the header.
  GgufWriter(std::string path, const GgufMetadata& metadata, std::vector<GgufTensorDecl> tensors);
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // The next declared tensor's bytes (ggml_nbytes of its shape and type); tensors come in declared order.
  void write(const std::string& name, const uint8_t* data, uint64_t nbytes);
  // After the last tensor: flush, fsync, rename into place. Returns the file's size.
  uint64_t finish();
  const std::vector<GgufTensorDecl>& tensors() const { return tensors_; }

 private:
  std::string path_, tmp_;
  std::vector<GgufTensorDecl> tensors_;
  std::vector<uint64_t> nbytes_;
  size_t next_ = 0;
  std::ofstream out_;
  uint64_t written_ = 0;
  bool finished_ = false;
};

constexpr uint64_t kGgufAlignment = 32;

}  // namespace qtune::io
