#pragma once
// Writes a Hugging Face checkpoint shard by shard: tensors are collected until a shard would pass max_shard_bytes,
// then written as one safetensors file, so only one shard is ever held in memory. finish() gives the shards their
// final names (model.safetensors, or model-0000i-of-0000n.safetensors with model.safetensors.index.json).
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <vector>

#include "qtune/io/safetensors.h"

namespace qtune::io {

class ShardedWriter {
 public:
  ShardedWriter(std::string dir, int64_t max_shard_bytes) : dir_(std::move(dir)), max_bytes_(max_shard_bytes) {}
  void add(const std::string& name, const at::Tensor& t);

  struct Result {
    int64_t shards = 0, tensors = 0, bytes = 0;
  };
  Result finish();

 private:
  void flush();
  std::string dir_;
  int64_t max_bytes_;
  std::vector<std::pair<std::string, std::vector<std::string>>> shards_;  // temporary file, tensor names
  NamedTensors pending_;
  int64_t pending_bytes_ = 0;
  Result result_;
};

}  // namespace qtune::io
