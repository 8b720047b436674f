#pragma once
// Which keys each query may attend to: causal, optionally within a sliding window (Mistral) and within
// one packed sample (segment ids). Built once per forward and shared by all layers.
#include <ATen/ATen.h>

#include <optional>

namespace qtune::nn {

struct AttentionMask {
  at::Tensor allowed;      // bool [B, 1, Tq, Tk], true = attend; undefined when is_causal or all-visible
  bool is_causal = false;  // plain causal mask over Tq == Tk (lets SDPA pick its fused path)
};

// query_pos [B, Tq] and key_pos [B, Tk] are absolute positions; segments (optional, [B, Tk] with the
// queries being the last Tq keys) separate packed samples.
AttentionMask make_attention_mask(const at::Tensor& query_pos, const at::Tensor& key_pos,
                                  std::optional<int64_t> sliding_window, const at::Tensor& segments = {});

}  // namespace qtune::nn
