#pragma once
// Where a model's parameters come from when it is built: a checkpoint on disk, or fresh initialisation.
// The caller states the shape it expects, so a mismatched checkpoint fails here with the tensor's name.
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "qtune/quant/ggml_types.h"

namespace qtune::io {

// A tensor as a GGUF stores it: its ggml type and the raw bytes of its rows (blocks run along a row), in the model's
// row order (for q_proj/k_proj, llama.cpp's rotary permutation undone by moving whole rows).
struct StoredBlocks {
  quant::GgmlType type = quant::GgmlType::F32;
  std::vector<int64_t> shape;  // torch order: [rows, values per row]
  at::Tensor bytes;            // uint8 [rows, ggml_nbytes(type, values per row)] on the CPU
  std::string origin;          // "FILE: tensor 'NAME'", for messages
};

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) const = 0;
  // A CPU tensor with exactly `shape`, in whatever dtype the source stores it.
  virtual at::Tensor get(const std::string& name, at::IntArrayRef shape) const = 0;
  // Any stored tensor as it is (quantization state, whose shapes the model config does not determine).
  virtual at::Tensor get_raw(const std::string& name) const { return get(name, {}); }
  // The caller is done with `name` (it kept a quantized copy): a memory-mapped source may drop its pages.
  virtual void release(const std::string& name) const {}
  // The 2-D tensor `name` as stored ggml blocks, where the source holds such (a GGUF); nullopt elsewhere.
  virtual std::optional<StoredBlocks> stored_blocks(const std::string& name) const { return std::nullopt; }
  // Where `name` is stored, for messages: "FILE: tensor 'NAME'" where the source knows its file.
  virtual std::string origin(const std::string& name) const { return "tensor '" + name + "'"; }
};

}  // namespace qtune::io
