#pragma once
// Grouped-query self-attention of Llama/Mistral with rotary embeddings and an optional KV cache.
#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include "qtune/io/hf_config.h"
#include "qtune/nn/attention_mask.h"
#include "qtune/nn/linear.h"

namespace qtune::nn {

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const io::ModelConfig& config, const std::string& prefix, LinearFactory& factory,
                const io::WeightSource& weights);
  // x [B, T, hidden]; cos/sin [B, T, head_dim]. With a cache, appends this step's keys/values to it.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, const AttentionMask& mask,
                     at::Tensor* cached_keys = nullptr, at::Tensor* cached_values = nullptr);

 private:
  int64_t heads_, kv_heads_, head_dim_;
  double dropout_;  // config.attention_dropout, applied in training mode only
  Linear q_proj_, k_proj_, v_proj_, o_proj_;
};

}  // namespace qtune::nn
