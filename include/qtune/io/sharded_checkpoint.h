#pragma once
// A Hugging Face model directory's weights: `model.safetensors.index.json` with its shards, a single
// `model.safetensors`, or else every `*.safetensors` in the directory. Shards are memory-mapped.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"
#include "qtune/io/weight_source.h"

namespace qtune::io {

class ShardedCheckpoint : public WeightSource {
 public:
  static std::shared_ptr<ShardedCheckpoint> open(const std::string& dir);

  bool has(const std::string& name) const override;
  at::Tensor get(const std::string& name, at::IntArrayRef shape) const override;
  at::Tensor tensor(const std::string& name) const;  // any shape
  at::Tensor get_raw(const std::string& name) const override { return tensor(name); }
  void release(const std::string& name) const override { shard_of(name).release(name); }
  std::string origin(const std::string& name) const override;
  const TensorInfo& info(const std::string& name) const;

  const std::string& dir() const { return dir_; }
  const std::vector<std::shared_ptr<SafetensorsFile>>& shards() const { return shards_; }
  std::vector<std::string> names() const;  // sorted
  uint64_t total_bytes() const;             // bytes of tensor data over all shards

 private:
  const SafetensorsFile& shard_of(const std::string& name) const;
  std::string dir_;
  std::vector<std::shared_ptr<SafetensorsFile>> shards_;
  std::map<std::string, size_t> where_;  // tensor name -> shard index
};

}  // namespace qtune::io
