#pragma once
// Calibration token sequences as the first decoder layer sees them: embedded once, grouped into batches of equal
// length, each with its rotary tables and causal mask. The layer-by-layer drivers (GPTQ, AWQ) replace `hidden` by
// each layer's outputs as they go.
#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "qtune/io/hf_config.h"
#include "qtune/io/weight_source.h"
#include "qtune/nn/layer_inputs.h"
#include "qtune/nn/linear.h"

namespace qtune::calib {

struct CalibrationBatch {
  at::Tensor hidden;       // [b, T, hidden] fp32
  nn::LayerInputs inputs;  // rotary tables and masks for positions 0 … T−1
};

// A linear's weight (and bias) as the layer-by-layer drivers hold it: fp32 copies of their own, the memory-mapped
// 16-bit pages released as soon as they are read.
struct CalibrationWeights {
  at::Tensor weight, bias;  // bias undefined without one
};
CalibrationWeights load_calibration_weights(const nn::LinearSpec& spec, const io::WeightSource& weights);

// Consecutive sequences of one length share a batch of at most `batch`; ids outside the vocabulary are an error.
std::vector<CalibrationBatch> embed_calibration(const io::ModelConfig& config, const io::WeightSource& weights,
                                                const std::vector<std::vector<int64_t>>& seqs, int64_t batch);

}  // namespace qtune::calib
