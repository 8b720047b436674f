#pragma once
// What a run will hold at its peak, computed from the config and recipe alone (nothing loaded), so `qtune plan`
// can say whether a run fits the card before it starts. Under quant.format keep the kept projections' sizes come from
// the GGUF's header. Each term is a formula over the shapes; the GPU benchmark
// (issue 13) compares the total against the measured peak of the caching allocator.
#include <ATen/ATen.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/quant/quant_plan.h"
#include "qtune/train/recipe.h"

namespace qtune::train {

struct MemoryEstimate {
  int64_t base_weights = 0;        // quantized projections (codes, absmax, nested state) + dense embeddings/norms/head
  int64_t trainable = 0;           // adapters (or all weights in full mode) in fp32
  int64_t gradients = 0;           // their fp32 gradients
  int64_t optimizer_state = 0;
  int64_t activations = 0;         // what backward needs, for the chosen checkpointing setting
  int64_t activations_no_checkpointing = 0;
  int64_t activations_checkpointing = 0;
  int64_t layer_activations = 0;   // what one decoder layer keeps for backward without checkpointing
  int64_t layer_input = 0;         // what it keeps with checkpointing (its input)
  int64_t layers = 0;
  int64_t logits = 0;              // one chunk of fp32 logits and its gradient, plus the hidden-state gradient
  int64_t workspace = 0;           // the largest dequantized weight, twice (forward output and a transient)
  // CPU: the process's own resident memory before any model (LibTorch's code and data, about 0.35 GiB), which a
  // peak RSS includes; set by a caller that measured it (qtune plan, bench), 0 on a GPU (its peak is the allocator's).
  int64_t runtime = 0;
  int64_t trainable_params = 0;
  int64_t total() const {
    return runtime + base_weights + trainable + gradients + optimizer_state + activations + logits + workspace;
  }
  std::vector<std::pair<std::string, int64_t>> rows() const;  // label, bytes (for printing)
};

// tokens_per_micro_batch: batch_size × max_seq_len (padding included: the worst case).
MemoryEstimate estimate_memory(const io::ModelConfig& config, const Recipe& recipe, const quant::QuantPlan& plan,
                               at::ScalarType compute_dtype, bool cuda);

// Activations, and the whole total, when the first `checkpointed` of the estimate's layers recompute and the rest
// keep theirs.
int64_t activations_with(const MemoryEstimate& m, int64_t checkpointed);
int64_t total_with(const MemoryEstimate& m, int64_t checkpointed);
// The fewest layers to checkpoint so that the estimate's total fits `budget_bytes` (all of them when nothing fits:
// the caller says so). Recomputing fewer layers is faster: each one skipped saves its forward pass in backward.
int64_t checkpointed_layers_for_budget(const MemoryEstimate& m, int64_t budget_bytes);
// The layers the recipe recomputes: none without train.gradient_checkpointing, all of them without a
// train.memory_budget_gib, else the fewest that fit it.
int64_t checkpointed_layers(const MemoryEstimate& m, const Recipe& recipe);

}  // namespace qtune::train
