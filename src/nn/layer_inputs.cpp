#include "qtune/nn/layer_inputs.h"

namespace qtune::nn {

PositionEncoding::PositionEncoding(const io::ModelConfig& c) : rope_(c.rope, c.head_dim), window_(c.sliding_window) {
  if (c.local_rope) local_rope_.emplace(*c.local_rope, c.head_dim);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i)
    (c.layer_attention(i) == io::LayerAttention::Sliding ? has_sliding_ : has_full_) = true;
}

LayerInputs PositionEncoding::inputs(const at::Tensor& query_pos, const at::Tensor& key_pos, const at::Tensor& segments,
                                     at::ScalarType dtype) const {
  LayerInputs in;
  at::Tensor cos, sin;
  std::tie(cos, sin) = rope_.cos_sin(query_pos, dtype);
  if (has_full_) {
    in.full.cos = cos, in.full.sin = sin;
    in.full.mask = make_attention_mask(query_pos, key_pos, std::nullopt, segments);
  }
  if (has_sliding_) {
    if (local_rope_) std::tie(in.sliding.cos, in.sliding.sin) = local_rope_->cos_sin(query_pos, dtype);
    else in.sliding.cos = cos, in.sliding.sin = sin;
    in.sliding.mask = make_attention_mask(query_pos, key_pos, window_, segments);
  }
  return in;
}

}  // namespace qtune::nn
