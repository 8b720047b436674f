#pragma once
// Keys and values of the tokens seen so far, per layer, for incremental decoding. Cached keys sit at
// positions 0 .. length()-1.
#include <ATen/ATen.h>

#include <vector>

namespace qtune::nn {

struct KVCache {
  explicit KVCache(int64_t num_layers) : keys(num_layers), values(num_layers) {}
  std::vector<at::Tensor> keys;    // [B, kv_heads, S, head_dim]
  std::vector<at::Tensor> values;
  int64_t length() const { return keys.empty() || !keys[0].defined() ? 0 : keys[0].size(2); }
};

}  // namespace qtune::nn
