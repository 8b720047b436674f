#pragma once
// Perplexity, as transformers' perplexity guide computes it (sliding window over one long token stream),
// and per document (each scored on its own from its BOS, as llama2.c-style evaluations do).
#include <cmath>
#include <cstdint>
#include <vector>

#include "qtune/nn/decoder.h"

namespace qtune::eval {

struct PerplexityResult {
  double nll_sum = 0.0;        // nats
  int64_t predicted_tokens = 0;
  double mean_nll() const { return predicted_tokens ? nll_sum / predicted_tokens : 0.0; }
  double perplexity() const { return std::exp(mean_nll()); }
};

// NLL (nats, fp32) of each token ids[1..] given the tokens before it: [T - 1]; with last >= 0 only the last `last`
// of them (a sliding window scores only the tokens no earlier window did: the vocabulary head then runs on those rows
// alone, which is a fifth of a small model's forward).
at::Tensor next_token_nll(nn::CausalLMImpl& model, const std::vector<int64_t>& ids, int64_t last = -1);

// Windows of `max_length` tokens advanced by `stride`; each window scores only the tokens that the previous
// window did not (the first window scores all but its first token), so every token after the first is
// predicted exactly once with up to max_length - stride tokens of context.
PerplexityResult sliding_window_perplexity(nn::CausalLMImpl& model, const std::vector<int64_t>& ids,
                                           int64_t max_length, int64_t stride);

// Each document (already starting with BOS) truncated to max_length and scored on its own.
PerplexityResult document_perplexity(nn::CausalLMImpl& model, const std::vector<std::vector<int64_t>>& docs,
                                     int64_t max_length);

}  // namespace qtune::eval
