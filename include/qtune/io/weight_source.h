#pragma once
// Where a model's parameters come from when it is built: a checkpoint on disk, or fresh initialisation.
// The caller states the shape it expects, so a mismatched checkpoint fails here with the tensor's name.
#include <ATen/ATen.h>

#include <string>

namespace qtune::io {

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
};

}  // namespace qtune::io
