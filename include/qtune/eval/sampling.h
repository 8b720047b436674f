#pragma once
#include <ATen/ATen.h>

#include <cstdint>

namespace qtune::eval {

// Temperatures below this sample greedily: exp(-Δ/T) is below 1e-43 for any logit gap Δ above 1e-2.
inline constexpr double kGreedyBelow = 1e-4;

struct SamplingOptions {
  double temperature = 0.0;  // 0 (or anything below kGreedyBelow): greedy (argmax)
  int64_t top_k = 0;         // 0: off
  double top_p = 1.0;        // 1: off
  uint64_t seed = 0;
};

// Picks the next token from fp32 logits [vocab]: argmax when temperature is 0, else temperature, then
// top-k, then top-p (nucleus) filtering as transformers' logits warpers apply them, and a draw from `gen`.
int64_t sample_token(const at::Tensor& logits, const SamplingOptions& options, at::Generator& gen);

}  // namespace qtune::eval
