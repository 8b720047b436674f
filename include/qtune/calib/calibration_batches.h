#pragma once
// Calibration token sequences as the first decoder layer sees them: embedded once, grouped into batches of equal
// length, each with its rotary tables and causal mask. The layer-by-layer drivers (GPTQ, AWQ) replace `hidden` by
// each layer's outputs as they go.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/io/weight_source.h"
#include "qtune/nn/attention_mask.h"

namespace qtune::calib {

struct CalibrationBatch {
  at::Tensor hidden;    // [b, T, hidden] fp32
  at::Tensor cos, sin;  // rotary tables for positions 0 … T−1
  nn::AttentionMask mask;
};

// Consecutive sequences of one length share a batch of at most `batch`; ids outside the vocabulary are an error.
std::vector<CalibrationBatch> embed_calibration(const io::ModelConfig& config, const io::WeightSource& weights,
                                                const std::vector<std::vector<int64_t>>& seqs, int64_t batch);

}  // namespace qtune::calib
