#pragma once
// Rotary position embeddings in Hugging Face's rotate-half layout (the two halves of each head rotate
// together), with the default, linear, llama3 and longrope frequency schedules of transformers' modeling_rope_utils.
#include <ATen/ATen.h>

#include <utility>

#include "qtune/io/hf_config.h"

namespace qtune::nn {

class RotaryEmbedding {
 public:
  RotaryEmbedding(const io::RopeConfig& rope, int64_t head_dim);
  // cos, sin of shape [B, T, head_dim] in `dtype` for integer position_ids [B, T].
  std::pair<at::Tensor, at::Tensor> cos_sin(const at::Tensor& position_ids, at::ScalarType dtype) const;
  const at::Tensor& inv_freq() const { return inv_freq_; }

 private:
  at::Tensor inv_freq_;  // fp32 [head_dim / 2], on CPU
  at::Tensor long_inv_freq_;  // LongRoPE's, for positions at or past long_after_; undefined otherwise
  int64_t long_after_ = 0;
  double attention_scaling_ = 1.0;
};

// x: [B, heads, T, head_dim]; cos, sin: [B, T, head_dim].
at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace qtune::nn
