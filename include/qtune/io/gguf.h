#pragma once
// A GGUF file (llama.cpp's model format), memory-mapped and validated on open (io/gguf_header.h). Metadata is read
// through typed accessors that name the key and the type expected; tensors are dequantized one at a time.
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "qtune/io/gguf_header.h"
#include "qtune/io/mapped_file.h"
#include "qtune/quant/gguf_blocks.h"

namespace qtune::io {

bool is_gguf_path(const std::string& path);  // a regular file named *.gguf

class GgufFile {
 public:
  static std::shared_ptr<GgufFile> open(const std::string& path);

  const std::string& path() const { return map_->path(); }
  const GgufHeader& header() const { return header_; }
  const nlohmann::json& metadata() const { return header_.metadata; }  // the scalars; arrays through array()

  bool has(const std::string& key) const { return header_.value_types.count(key) > 0; }
  // Typed reads: absent → nullopt (or the error for required ones), present with another type → error naming both.
  std::optional<std::string> string(const std::string& key) const;
  std::optional<int64_t> integer(const std::string& key) const;
  std::optional<double> number(const std::string& key) const;  // integers accepted
  std::optional<bool> boolean(const std::string& key) const;
  // Decoded on first use and kept (GgufArray): nullptr when absent.
  const nlohmann::json* array(const std::string& key) const;
  std::string require_string(const std::string& key) const;
  int64_t require_integer(const std::string& key) const;

  const GgufTensorInfo* find_tensor(const std::string& name) const;
  const GgufTensorInfo& tensor_info(const std::string& name) const;  // error naming the tensor when absent
  const uint8_t* data(const GgufTensorInfo& t) const { return map_->data() + t.offset; }
  // The tensor as float32 in torch's shape (dims reversed).
  at::Tensor dequantize(const GgufTensorInfo& t) const;
  void release(const GgufTensorInfo& t) const { map_->release(t.offset, t.nbytes); }

 private:
  std::shared_ptr<MappedFile> map_;
  GgufHeader header_;
  std::map<std::string, size_t> index_;
  mutable std::mutex decoded_mutex_;
  mutable std::map<std::string, std::unique_ptr<const nlohmann::json>> decoded_;  // arrays read so far
};

}  // namespace qtune::io
