#pragma once
// Σ log p(target) over each row's target tokens: the sequence log-probability of a completion, which every
// preference objective compares (TRL's per_token_logps.sum(dim=1) under the completion mask). One forward over all
// rows; each row's sum goes through the chunked cross-entropy, so no [tokens, vocab] logits are held.
#include <ATen/ATen.h>

#include "qtune/data/collate.h"
#include "qtune/nn/decoder.h"

namespace qtune::train {

struct SequenceLogps {
  at::Tensor logps;   // [rows] fp32, differentiable when grad mode is on
  at::Tensor tokens;  // [rows] int64 (CPU): the target tokens each sum counts
};

// The last hidden states of the batch's rows [B, T, H].
at::Tensor forward_hidden(nn::CausalLMImpl& model, const data::Batch& batch);
// Each row's Σ log p over `targets` [B, T] (-100: none) from those hidden states.
SequenceLogps sequence_logps(nn::CausalLMImpl& model, const at::Tensor& hidden, const at::Tensor& targets);
// Both: one forward, the batch's own targets.
SequenceLogps sequence_logps(nn::CausalLMImpl& model, const data::Batch& batch);
// Every next token of each row's sample as its target, the prompt's included (-100 past its end): ORPO's NLL.
at::Tensor sequence_targets(const data::Batch& batch);

}  // namespace qtune::train
