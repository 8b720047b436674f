#include "qtune/nn/attention.h"

#include <cmath>
#include <limits>

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
                             const io::WeightSource& weights, at::TensorOptions options)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim),
      dropout_(c.attention_dropout), scale_(c.attention_scale()), softcap_(c.attn_logit_softcapping) {
  const int64_t q_out = heads_ * head_dim_, kv_out = kv_heads_ * head_dim_;
  const bool qkv_bias = c.has_qkv_bias();
  if (c.fused_qkv) {
    qkv_proj_ = register_module(
        "qkv_proj", factory.make({prefix + ".qkv_proj", c.hidden_size, q_out + 2 * kv_out, qkv_bias}, weights));
  } else {
    q_proj_ = register_module("q_proj", factory.make({prefix + ".q_proj", c.hidden_size, q_out, qkv_bias}, weights));
    k_proj_ = register_module("k_proj", factory.make({prefix + ".k_proj", c.hidden_size, kv_out, qkv_bias}, weights));
    v_proj_ = register_module("v_proj", factory.make({prefix + ".v_proj", c.hidden_size, kv_out, qkv_bias}, weights));
  }
  o_proj_ = register_module("o_proj", factory.make({prefix + ".o_proj", q_out, c.hidden_size, c.has_o_bias()}, weights));
  if (c.qk_norm) {
    auto norm = [&](const char* name) {
      return register_module(name, std::make_shared<RMSNormImpl>(
                                       load_frozen(weights, prefix + "." + name + ".weight", {head_dim_}, options),
                                       c.rms_norm_eps, c.norm_plus_one));
    };
    q_norm_ = norm("q_norm");
    k_norm_ = norm("k_norm");
  }
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const AttentionInputs& in, at::Tensor* cached_keys,
                                  at::Tensor* cached_values) {
  const auto b = x.size(0), t = x.size(1);
  at::Tensor q, k, v;
  if (qkv_proj_) {
    // Phi-3's [q; k; v] rows: views of one output, as transformers slices it.
    const int64_t q_out = heads_ * head_dim_, kv_out = kv_heads_ * head_dim_;
    const auto qkv = qkv_proj_->forward(x);
    q = qkv.narrow(-1, 0, q_out);
    k = qkv.narrow(-1, q_out, kv_out);
    v = qkv.narrow(-1, q_out + kv_out, kv_out);
  } else {
    q = q_proj_->forward(x), k = k_proj_->forward(x), v = v_proj_->forward(x);
  }
  q = q.view({b, t, heads_, head_dim_});
  k = k.view({b, t, kv_heads_, head_dim_});
  if (q_norm_) q = q_norm_->forward(q), k = k_norm_->forward(k);
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  v = v.view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
  q = apply_rotary(q, in.cos, in.sin);
  k = apply_rotary(k, in.cos, in.sin);
  if (cached_keys != nullptr) {
    if (cached_keys->defined()) {
      k = at::cat({*cached_keys, k}, 2);
      v = at::cat({*cached_values, v}, 2);
    }
    *cached_keys = k;
    *cached_values = v;
  }
  auto out = attend(q, k, v, in.mask);
  out = out.transpose(1, 2).reshape({b, t, heads_ * head_dim_});
  return o_proj_->forward(out);
}

at::Tensor AttentionImpl::attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const AttentionMask& mask) {
  const int64_t groups = heads_ / kv_heads_;
  const double dropout = is_training() ? dropout_ : 0.0;
  if (!softcap_)
    return at::scaled_dot_product_attention(
        q, repeat_kv(k, groups), repeat_kv(v, groups),
        mask.allowed.defined() ? std::optional<at::Tensor>(mask.allowed) : std::nullopt, dropout, mask.is_causal,
        scale_);
  // Soft-capped scores (Gemma 2) have no fused kernel: transformers' eager attention, step for step (the scores in the
  // model dtype, the softmax in fp32).
  auto scores = at::matmul(q, repeat_kv(k, groups).transpose(2, 3)) * scale_;
  scores = at::tanh(scores / *softcap_) * *softcap_;
  at::Tensor allowed = mask.allowed;
  if (!allowed.defined() && mask.is_causal)
    allowed = at::ones({q.size(2), k.size(2)}, q.options().dtype(at::kBool)).tril();
  if (allowed.defined())
    scores = scores.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  auto probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  if (dropout > 0) probs = at::dropout(probs, dropout, /*train=*/true);
  return at::matmul(probs, repeat_kv(v, groups));
}

}  // namespace qtune::nn
