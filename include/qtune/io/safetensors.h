#pragma once
// Reading and writing safetensors files as ATen tensors. Reading is zero-copy: tensors view the
// memory-mapped file (kept alive by the tensor), so loading a model touches one tensor's pages at a time.
#include <ATen/ATen.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/mapped_file.h"
#include "qtune/io/safetensors_header.h"

namespace qtune::io {

at::ScalarType to_scalar_type(DType dtype);
DType from_scalar_type(at::ScalarType type);  // throws for types safetensors cannot hold

class SafetensorsFile {
 public:
  static std::shared_ptr<SafetensorsFile> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const TensorInfo* find(const std::string& name) const;

  // A CPU tensor over the mapped bytes (copied only when misaligned for its dtype). Throws naming the file
  // when the tensor is absent.
  at::Tensor tensor(const std::string& name) const;
  // Drops the resident pages of `name` (see MappedFile::release); views of it stay valid, reading from disk.
  void release(const std::string& name) const;

 private:
  std::shared_ptr<MappedFile> file_;
  SafetensorsHeader header_;
  std::map<std::string, size_t> index_;
};

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

// Writes `tensors` (any device; made contiguous on CPU) with `metadata` as __metadata__. Written to
// `path`.tmp, fsynced, then renamed, so a crash never leaves a half-written file under the final name.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace qtune::io
