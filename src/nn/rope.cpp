#include "qtune/nn/rope.h"

#include <cmath>

namespace qtune::nn {

RotaryEmbedding::RotaryEmbedding(const io::RopeConfig& rope, int64_t head_dim) {
  // Same float32 arithmetic as transformers: base ** (arange(0, dim, 2) / dim).
  auto exponents = at::arange(0, head_dim, 2, at::kLong).to(at::kFloat) / static_cast<double>(head_dim);
  inv_freq_ = 1.0 / at::pow(rope.theta, exponents);
  if (rope.type == "longrope") {
    auto base = at::pow(rope.theta, exponents);
    long_inv_freq_ = 1.0 / (at::tensor(rope.long_factor, at::kDouble).to(at::kFloat) * base);
    inv_freq_ = 1.0 / (at::tensor(rope.short_factor, at::kDouble).to(at::kFloat) * base);
    long_after_ = rope.original_max_position_embeddings;
    attention_scaling_ = rope.attention_factor;
  } else if (rope.type == "linear") {
    inv_freq_ = inv_freq_ / rope.factor;
  } else if (rope.type == "llama3") {
    const double old_len = static_cast<double>(rope.original_max_position_embeddings);
    const double low_freq_wavelen = old_len / rope.low_freq_factor;
    const double high_freq_wavelen = old_len / rope.high_freq_factor;
    auto wavelen = 2 * M_PI / inv_freq_;
    auto scaled = at::where(wavelen > low_freq_wavelen, inv_freq_ / rope.factor, inv_freq_);
    auto smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
    auto smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled;
    auto medium = at::logical_not(wavelen < high_freq_wavelen) & at::logical_not(wavelen > low_freq_wavelen);
    inv_freq_ = at::where(medium, smoothed, scaled);
  }
}

std::pair<at::Tensor, at::Tensor> RotaryEmbedding::cos_sin(const at::Tensor& position_ids, at::ScalarType dtype) const {
  // LongRoPE: one set of frequencies for the whole call, the long one once a position reaches the original length
  // (transformers' longrope_frequency_update: max(position_ids) + 1 > original_max_position_embeddings).
  const bool long_rope = long_inv_freq_.defined() && position_ids.numel() > 0 &&
                         position_ids.max().item<int64_t>() + 1 > long_after_;
  auto inv = (long_rope ? long_inv_freq_ : inv_freq_).to(position_ids.device());
  auto freqs = position_ids.to(at::kFloat).unsqueeze(-1) * inv;  // [B, T, D/2]
  auto emb = at::cat({freqs, freqs}, -1);
  auto cos = emb.cos(), sin = emb.sin();
  if (attention_scaling_ != 1.0) {
    cos = cos * attention_scaling_;
    sin = sin * attention_scaling_;
  }
  return {cos.to(dtype), sin.to(dtype)};
}

at::Tensor apply_rotary(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  auto x1 = x.narrow(-1, 0, half), x2 = x.narrow(-1, half, half);
  auto rotated = at::cat({-x2, x1}, -1);
  return x * cos.unsqueeze(1) + rotated * sin.unsqueeze(1);
}

}  // namespace qtune::nn
