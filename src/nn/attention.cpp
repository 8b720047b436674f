#include "qtune/nn/attention.h"

#include <cmath>

#include "qtune/nn/rope.h"

namespace qtune::nn {
namespace {

// [B, kv, S, D] -> [B, kv * groups, S, D], each kv head repeated for its query group (transformers' repeat_kv).
at::Tensor repeat_kv(const at::Tensor& x, int64_t groups) {
  if (groups == 1) return x;
  const auto b = x.size(0), kv = x.size(1), s = x.size(2), d = x.size(3);
  return x.unsqueeze(2).expand({b, kv, groups, s, d}).reshape({b, kv * groups, s, d});
}

}  // namespace

AttentionImpl::AttentionImpl(const io::ModelConfig& c, const std::string& prefix, LinearFactory& factory,
                             const io::WeightSource& weights)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim),
      dropout_(c.attention_dropout) {
  const int64_t q_out = heads_ * head_dim_, kv_out = kv_heads_ * head_dim_;
  const bool bias = c.attention_bias;
  q_proj_ = register_module("q_proj", factory.make({prefix + ".q_proj", c.hidden_size, q_out, bias}, weights));
  k_proj_ = register_module("k_proj", factory.make({prefix + ".k_proj", c.hidden_size, kv_out, bias}, weights));
  v_proj_ = register_module("v_proj", factory.make({prefix + ".v_proj", c.hidden_size, kv_out, bias}, weights));
  o_proj_ = register_module("o_proj", factory.make({prefix + ".o_proj", q_out, c.hidden_size, bias}, weights));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin,
                                  const AttentionMask& mask, at::Tensor* cached_keys, at::Tensor* cached_values) {
  const auto b = x.size(0), t = x.size(1);
  auto q = q_proj_->forward(x).view({b, t, heads_, head_dim_}).transpose(1, 2);
  auto k = k_proj_->forward(x).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
  auto v = v_proj_->forward(x).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rotary(q, cos, sin);
  k = apply_rotary(k, cos, sin);
  if (cached_keys != nullptr) {
    if (cached_keys->defined()) {
      k = at::cat({*cached_keys, k}, 2);
      v = at::cat({*cached_values, v}, 2);
    }
    *cached_keys = k;
    *cached_values = v;
  }
  const int64_t groups = heads_ / kv_heads_;
  auto out = at::scaled_dot_product_attention(q, repeat_kv(k, groups), repeat_kv(v, groups),
                                              mask.allowed.defined() ? std::optional<at::Tensor>(mask.allowed)
                                                                     : std::nullopt,
                                              /*dropout_p=*/is_training() ? dropout_ : 0.0, mask.is_causal,
                                              /*scale=*/1.0 / std::sqrt(static_cast<double>(head_dim_)));
  out = out.transpose(1, 2).reshape({b, t, heads_ * head_dim_});
  return o_proj_->forward(out);
}

}  // namespace qtune::nn
