#pragma once
// What each decoder layer's attention needs besides its input, built once per forward and shared by the layers: the
// rotary tables and the mask of full-attention layers and, in models that have them, of sliding-window layers (with
// their window, and Gemma 3's RoPE base of their own). A layer picks the set of its kind (ModelConfig::layer_types).
#include <ATen/ATen.h>

#include <optional>

#include "qtune/io/hf_config.h"
#include "qtune/nn/attention_mask.h"
#include "qtune/nn/rope.h"

namespace qtune::nn {

struct AttentionInputs {
  at::Tensor cos, sin;  // [B, T, head_dim] in the model dtype
  AttentionMask mask;
};

struct LayerInputs {
  AttentionInputs full;     // undefined tables when no layer attends in full
  AttentionInputs sliding;  // undefined tables when no layer slides
  const AttentionInputs& of(io::LayerAttention kind) const {
    return kind == io::LayerAttention::Sliding ? sliding : full;
  }
};

// The rotary tables of a model and its masks, from positions. Builds only the kinds of layer the model has.
class PositionEncoding {
 public:
  explicit PositionEncoding(const io::ModelConfig& config);
  // query_pos [B, Tq] and key_pos [B, Tk] are absolute positions; segments (optional, [B, Tk]) separate packed
  // samples (see make_attention_mask).
  LayerInputs inputs(const at::Tensor& query_pos, const at::Tensor& key_pos, const at::Tensor& segments,
                     at::ScalarType dtype) const;

 private:
  RotaryEmbedding rope_;
  std::optional<RotaryEmbedding> local_rope_;  // the sliding layers' own, when they have one
  std::optional<int64_t> window_;
  bool has_full_ = false, has_sliding_ = false;
};

}  // namespace qtune::nn
