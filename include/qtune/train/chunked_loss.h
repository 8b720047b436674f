#pragma once
// Cross-entropy of the LM head without the logits of the batch: only rows that have a target are projected, a
// chunk at a time in fp32, and each chunk's gradient (softmax − one-hot) is turned into the hidden (and head weight)
// gradients right away, so no [tokens, vocab] tensor outlives its chunk. For a 32k vocabulary and 4×2048 tokens
// that is 1 GiB of fp32 logits (2 GiB with their gradient) never held.
#include <ATen/ATen.h>

#include <cstdint>

namespace qtune::train {

struct LossSum {
  at::Tensor sum;      // scalar fp32: Σ −log p(target), differentiable w.r.t. hidden and head weight
  int64_t tokens = 0;  // targets counted
};

// hidden [B, T, H] (any float dtype), head_weight [V, H], targets [B, T] int64 with −100 = no target.
// rows_per_chunk 0: chosen so that a chunk's logits take about 64 MiB. softcap > 0: the logits are cap·tanh(l / cap)
// first (Gemma's final_logit_softcapping), the gradient through it taken chunk by chunk as well.
LossSum chunked_cross_entropy(const at::Tensor& hidden, const at::Tensor& head_weight, const at::Tensor& targets,
                              int64_t rows_per_chunk = 0, double softcap = 0);

}  // namespace qtune::train
