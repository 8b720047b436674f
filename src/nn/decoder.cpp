#include "qtune/nn/decoder.h"

#include <fmt/ranges.h>

#include <torch/csrc/autograd/grad_mode.h>

#include "qtune/autograd/checkpoint.h"
#include "qtune/util/error.h"

namespace qtune::nn {

DecoderLayerImpl::DecoderLayerImpl(const io::ModelConfig& c, int64_t index, LinearFactory& factory,
                                   const io::WeightSource& weights, at::TensorOptions options)
    : kind_(c.layer_attention(index)) {
  const std::string prefix = fmt::format("model.layers.{}", index);
  auto norm = [&](const char* name) {
    return register_module(name, std::make_shared<RMSNormImpl>(
                                     load_frozen(weights, prefix + "." + name + ".weight", {c.hidden_size}, options),
                                     c.rms_norm_eps, c.norm_plus_one));
  };
  input_layernorm_ = norm("input_layernorm");
  self_attn_ = register_module("self_attn",
                               std::make_shared<AttentionImpl>(c, prefix + ".self_attn", factory, weights, options));
  post_attention_layernorm_ = norm("post_attention_layernorm");
  mlp_ = register_module("mlp", std::make_shared<MLPImpl>(c, prefix + ".mlp", factory, weights));
  if (c.sandwich_norms) {
    pre_feedforward_layernorm_ = norm("pre_feedforward_layernorm");
    post_feedforward_layernorm_ = norm("post_feedforward_layernorm");
  }
}

at::Tensor DecoderLayerImpl::forward(const at::Tensor& x, const LayerInputs& in, at::Tensor* cached_keys,
                                     at::Tensor* cached_values) {
  const auto& attn_in = in.of(kind_);
  auto a = self_attn_->forward(input_layernorm_->forward(x), attn_in, cached_keys, cached_values);
  if (!pre_feedforward_layernorm_) {
    auto h = x + a;
    return h + mlp_->forward(post_attention_layernorm_->forward(h));
  }
  auto h = x + post_attention_layernorm_->forward(a);
  return h + post_feedforward_layernorm_->forward(mlp_->forward(pre_feedforward_layernorm_->forward(h)));
}

DecoderModelImpl::DecoderModelImpl(const io::ModelConfig& c, LinearFactory& factory, const io::WeightSource& weights,
                                   at::TensorOptions options) {
  embed_tokens = register_module(
      "embed_tokens", std::make_shared<EmbeddingImpl>(
                          load_frozen(weights, "model.embed_tokens.weight", {c.vocab_size, c.hidden_size}, options)));
  torch::nn::ModuleList list;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    layers.push_back(std::make_shared<DecoderLayerImpl>(c, i, factory, weights, options));
    list->push_back(layers.back());
  }
  register_module("layers", list);
  norm = register_module("norm", std::make_shared<RMSNormImpl>(
                                     load_frozen(weights, "model.norm.weight", {c.hidden_size}, options), c.rms_norm_eps,
                                     c.norm_plus_one));
}

CausalLMImpl::CausalLMImpl(io::ModelConfig config, LinearFactory& factory, const io::WeightSource& weights,
                           at::TensorOptions options)
    : config_(std::move(config)),
      options_(options),
      positions_(config_),
      tied_(config_.tie_word_embeddings) {
  model_ = register_module("model", std::make_shared<DecoderModelImpl>(config_, factory, weights, options));
  // A tied checkpoint may or may not store lm_head.weight (transformers ties it to the embeddings either way).
  if (!tied_) {
    if (!weights.has("lm_head.weight"))
      fail("checkpoint has no 'lm_head.weight' but config.json says tie_word_embeddings: false");
    lm_head_ = register_module(
        "lm_head", std::make_shared<DenseLinearImpl>(
                       LinearSpec{"lm_head", config_.hidden_size, config_.vocab_size, false},
                       load_frozen(weights, "lm_head.weight", {config_.vocab_size, config_.hidden_size}, options),
                       at::Tensor()));
  }
}

at::Tensor CausalLMImpl::hidden_states(const at::Tensor& input_ids, const ForwardOptions& opts) {
  if (input_ids.dim() != 2) fail("input_ids must be [batch, seq], got {} dims", input_ids.dim());
  const int64_t b = input_ids.size(0), t = input_ids.size(1);
  const int64_t past = opts.cache ? opts.cache->length() : 0;
  const auto dev = model_->embed_tokens->weight().device();
  auto ids = input_ids.to(dev);
  at::Tensor pos = opts.position_ids.defined()
                       ? opts.position_ids.to(dev)
                       : at::arange(past, past + t, at::TensorOptions().dtype(at::kLong).device(dev)).expand({b, t});
  at::Tensor key_pos = pos;
  if (past > 0)
    key_pos = at::arange(0, past + t, at::TensorOptions().dtype(at::kLong).device(dev)).expand({b, past + t});
  const auto inputs = positions_.inputs(pos, key_pos, opts.segment_ids.defined() ? opts.segment_ids.to(dev) : at::Tensor(),
                                        options_.dtype().toScalarType());
  auto x = embed(ids);
  const bool recompute = checkpointing_ && is_training() && !opts.cache && at::GradMode::is_enabled();
  for (size_t i = 0; i < model_->layers.size(); ++i) {
    if (recompute && (checkpointed_layers_ < 0 || static_cast<int64_t>(i) < checkpointed_layers_)) {
      auto layer = model_->layers[i];
      std::vector<at::Tensor> trainable;
      for (const auto& p : layer->parameters())
        if (p.requires_grad()) trainable.push_back(p);
      x = autograd::checkpoint(
          [layer, inputs](const at::Tensor& in) { return layer->forward(in, inputs, nullptr, nullptr); },
          x, trainable);
      continue;
    }
    at::Tensor* k = opts.cache ? &opts.cache->keys[i] : nullptr;
    at::Tensor* v = opts.cache ? &opts.cache->values[i] : nullptr;
    x = model_->layers[i]->forward(x, inputs, k, v);
  }
  return model_->norm->forward(x);
}

at::Tensor CausalLMImpl::embed(const at::Tensor& ids) {
  // The embeddings may be kept in fp32 (trained as a LoRA modules_to_save); the trunk runs in the model dtype.
  return scale_embeddings(model_->embed_tokens->forward(ids), config_).to(options_.dtype().toScalarType());
}

at::Tensor CausalLMImpl::logits(const at::Tensor& hidden) {
  // A trained lm_head may be fp32 in a 16-bit model: multiply in its dtype, return the model's.
  const auto& w = lm_head_weight();
  auto out = at::linear(hidden.to(w.scalar_type()), w).to(hidden.scalar_type());
  if (const auto cap = config_.final_logit_softcapping) out = at::tanh(out / *cap) * *cap;
  return out;
}

void CausalLMImpl::set_lm_head_weight(at::Tensor weight) {
  if (weight.dim() != 2 || weight.size(0) != config_.vocab_size || weight.size(1) != config_.hidden_size)
    fail("lm_head weight must be [{}, {}], got [{}]", config_.vocab_size, config_.hidden_size,
         fmt::join(weight.sizes(), ", "));
  const bool requires_grad = weight.requires_grad();
  auto head = std::make_shared<DenseLinearImpl>(LinearSpec{"lm_head", config_.hidden_size, config_.vocab_size, false},
                                                std::move(weight), at::Tensor());
  head->weight().set_requires_grad(requires_grad);  // DenseLinearImpl registers its weight frozen
  lm_head_ = lm_head_ ? replace_module("lm_head", head) : register_module("lm_head", head);
  tied_ = false;
}

}  // namespace qtune::nn
